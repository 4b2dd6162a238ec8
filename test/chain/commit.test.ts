import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { encodeCommit, parseCommit, verifyChain, verifyCertification, type ParsedCommit } from '../../src/chain/commit.ts'
import { CommitteeInfo } from '../../src/chain/committee.ts'
import { signBlock, type ParsedBlock } from '../../src/chain/block.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import type { Commit, CommitVote, Committee } from '../../src/chain/types.ts'
import type { KeyPair } from '../../src/crypto/keys.ts'
import { BrokenChainError, InsufficientVotesError, MalformedMessageError } from '../../src/errors.ts'
import { committeeWithStakes, fakeDigest, hex } from '../helpers/chain.ts'

const chainId = fakeDigest('commit-test chain')
const ref = (round: number, author: number) => ({ round, author, digest: fakeDigest(`${round}/${author}`) })

function commitFields (index: number, previousDigest: Uint8Array, epoch: number, extra: Partial<Commit> = {}): Commit {
  return { index, previousDigest, leader: ref(index, 0), blocks: [ref(index - 1, 1), ref(index, 0)], epoch, timestampMs: 1000 + index, ...extra }
}

/** A linked chain of `n` commits from genesis; commit `eoeAt` (if given) ends epoch 0. */
function chain (n: number, eoeAt?: number, next?: Committee): ParsedCommit[] {
  const out: ParsedCommit[] = []
  let prev = chainId
  let epoch = 0
  for (let i = 1; i <= n; i++) {
    const eoe = i === eoeAt ? { nextCommittee: next! } : null
    const c = encodeCommit(commitFields(i, prev, epoch, { endOfEpoch: eoe }))
    out.push(c)
    prev = c.digest
    if (eoe !== null) epoch++
  }
  return out
}

const GENESIS = { index: 0, digest: chainId, epoch: 0, endOfEpoch: false }

describe('commit digest', () => {
  test('digest = sha256(Commit bytes as they travel)', () => {
    const c = encodeCommit(commitFields(1, chainId, 0))
    assert.equal(hex(c.digest), hex(sha256(c.bytes)))
    const p = parseCommit(c.bytes)
    assert.equal(hex(p.digest), hex(c.digest))
    assert.equal(p.index, 1)
  })
})

describe('verifyChain', () => {
  const { committee: next } = committeeWithStakes('vc', 1, [5, 6, 7, 8])

  test('accepts a linked chain from genesis (commit 1 links to the chain id), across an epoch change', () => {
    const cs = chain(6, 3, next)
    verifyChain(GENESIS, cs)
    assert.equal(cs[3].epoch, 1)
    // in pieces too
    verifyChain(GENESIS, cs.slice(0, 2))
    verifyChain({ index: 2, digest: cs[1].digest, epoch: 0, endOfEpoch: false }, cs.slice(2))
  })

  test('catches a gap', () => {
    const cs = chain(5)
    assert.throws(() => verifyChain(GENESIS, [cs[0], cs[1], cs[3]]), (e: any) => e instanceof BrokenChainError && /expected commit 3, got 4/.test(e.message))
    assert.throws(() => verifyChain(GENESIS, cs.slice(1)), BrokenChainError)
  })

  test('catches a wrong previous digest', () => {
    const cs = chain(3)
    const forged = encodeCommit(commitFields(3, fakeDigest('not commit 2'), 0))
    assert.throws(() => verifyChain(GENESIS, [cs[0], cs[1], forged]), (e: any) => e instanceof BrokenChainError && /previous digest/.test(e.message))
    // commit 1 must link to the chain id
    const firstWrong = encodeCommit(commitFields(1, fakeDigest('another chain'), 0))
    assert.throws(() => verifyChain(GENESIS, [firstWrong]), BrokenChainError)
    // a commit 2 that links to a sibling commit 1 with different content
    const sibling = encodeCommit(commitFields(1, chainId, 0, { timestampMs: 5 }))
    assert.throws(() => verifyChain(GENESIS, [cs[0], encodeCommit(commitFields(2, sibling.digest, 0))]), BrokenChainError)
  })

  test('catches a wrong epoch: epoch change without end-of-epoch, and no change after one', () => {
    const cs = chain(2)
    const jumped = encodeCommit(commitFields(3, cs[1].digest, 1))
    assert.throws(() => verifyChain(GENESIS, [...cs, jumped]), (e: any) => e instanceof BrokenChainError && /epoch 1, expected 0/.test(e.message))
    const eoe = chain(2, 2, next)
    const stayed = encodeCommit(commitFields(3, eoe[1].digest, 0))
    assert.throws(() => verifyChain(GENESIS, [...eoe, stayed]), (e: any) => e instanceof BrokenChainError && /expected 1/.test(e.message))
  })
})

describe('verifyCertification', () => {
  // uneven stakes: total 100, 2f+1 = floor(200/3)+1 = 67. {0,1} = 67 (2 authors), {1,2,3} = 60 (3 authors).
  const STAKES = [40, 27, 26, 7]
  const { committee, keys } = committeeWithStakes('cert', 3, STAKES)
  const info = new CommitteeInfo(committee)
  const commit = encodeCommit(commitFields(10, fakeDigest('commit 9'), 3))

  const voter = (author: number, votes: CommitVote[], opts: { epoch?: number, key?: KeyPair, round?: number } = {}): ParsedBlock =>
    signBlock({ epoch: opts.epoch ?? 3, round: opts.round ?? 11, author, timestampMs: 1, ancestors: [], transactions: [], commitVotes: votes, chainId }, opts.key ?? keys[author])
  const good = (author: number, round?: number) => voter(author, [{ index: 10, digest: commit.digest }], { round })

  test('the threshold is floor(2*total/3)+1', () => {
    assert.equal(info.totalStake, 100)
    assert.equal(info.quorumThreshold, 67)
    for (const [stakes, q] of [[[33, 33, 33], 67], [[1, 1, 1], 3], [[1, 1, 1, 1], 3], [[34, 33, 34], 68], [[5], 4]] as const) {
      assert.equal(new CommitteeInfo(committeeWithStakes('q', 0, [...stakes]).committee).quorumThreshold, q, `stakes ${stakes}`)
    }
  })

  test('accepts exactly 2f+1 stake', () => {
    verifyCertification(commit, [good(0), good(1)], info)
    verifyCertification(commit, [good(0), good(2), good(3)], info) // 73
  })

  test('rejects just below 2f+1 even with more authors', () => {
    // 40 + 26 = 66
    assert.throws(() => verifyCertification(commit, [good(0), good(2)], info), (e: any) => e instanceof InsufficientVotesError && /66 of 100/.test(e.message))
    // 3 of 4 authors, 60 stake
    assert.throws(() => verifyCertification(commit, [good(1), good(2), good(3)], info), InsufficientVotesError)
    assert.throws(() => verifyCertification(commit, [], info), InsufficientVotesError)
  })

  test('ignores votes for another digest or another index', () => {
    const otherDigest = voter(1, [{ index: 10, digest: fakeDigest('a different commit 10') }])
    assert.throws(() => verifyCertification(commit, [good(0), otherDigest], info), InsufficientVotesError)
    const otherIndex = voter(1, [{ index: 9, digest: commit.digest }])
    assert.throws(() => verifyCertification(commit, [good(0), otherIndex], info), InsufficientVotesError)
    // a block with several votes, one of them right, counts
    const mixed = voter(1, [{ index: 9, digest: fakeDigest('9') }, { index: 10, digest: commit.digest }])
    verifyCertification(commit, [good(0), mixed], info)
  })

  test('counts an author once however many votes or blocks it has', () => {
    // 40 counted once: 40 + 26 = 66
    assert.throws(() => verifyCertification(commit, [good(0), good(0, 12), good(0, 13), good(2)], info), InsufficientVotesError)
    const doubleVote = voter(0, [{ index: 10, digest: commit.digest }, { index: 10, digest: commit.digest }])
    assert.throws(() => verifyCertification(commit, [doubleVote, good(2)], info), InsufficientVotesError)
  })

  test('ignores blocks of another epoch, and a committee of another epoch fails', () => {
    const wrongEpoch = voter(1, [{ index: 10, digest: commit.digest }], { epoch: 4 })
    assert.throws(() => verifyCertification(commit, [good(0), wrongEpoch], info), InsufficientVotesError)
    const info4 = new CommitteeInfo({ ...committee, epoch: 4 })
    assert.throws(() => verifyCertification(commit, [good(0), good(1), good(2), good(3)], info4), (e: any) => e instanceof InsufficientVotesError && /epoch/.test(e.message))
  })

  test('votes from authors outside the committee carry no stake', () => {
    const outsider = voter(7, [{ index: 10, digest: commit.digest }], { key: keys[1] })
    assert.throws(() => verifyCertification(commit, [good(0), outsider, good(3)], info), InsufficientVotesError) // 47
  })
})

describe('parseCommit', () => {
  const base = commitFields(4, fakeDigest('3'), 0)
  const reject = (c: Commit, re: RegExp): void => {
    const bytes = Codecs.Commit.encode(c)
    assert.throws(() => parseCommit(bytes), (e: any) => e instanceof MalformedMessageError && re.test(e.message), re.source)
  }

  test('accepts a well-formed commit', () => {
    assert.equal(parseCommit(Codecs.Commit.encode(base)).index, 4)
  })

  test('rejects block refs that are not sorted by (round, author), or repeated', () => {
    reject({ ...base, blocks: [ref(4, 0), ref(3, 1)] }, /not sorted/)
    reject({ ...base, blocks: [ref(3, 2), ref(3, 1)] }, /not sorted/)
    reject({ ...base, blocks: [ref(3, 1), ref(3, 1)] }, /not sorted/)
    parseCommit(Codecs.Commit.encode({ ...base, blocks: [ref(3, 1), ref(3, 2), ref(4, 0)] }))
  })

  test('rejects a next committee of the wrong epoch, or an invalid one', () => {
    const { committee } = committeeWithStakes('pc', 1, [3, 4, 5])
    parseCommit(Codecs.Commit.encode({ ...base, endOfEpoch: { nextCommittee: committee } }))
    reject({ ...base, endOfEpoch: { nextCommittee: { ...committee, epoch: 2 } } }, /epoch 2, expected 1/)
    reject({ ...base, endOfEpoch: { nextCommittee: { ...committee, epoch: 0 } } }, /expected 1/)
    reject({ ...base, endOfEpoch: { nextCommittee: { epoch: 1, authorities: [] } } }, /no authorities/)
    reject({ ...base, endOfEpoch: { nextCommittee: { epoch: 1, authorities: [committee.authorities[0], committee.authorities[0]] } } }, /duplicate/)
    reject({ ...base, endOfEpoch: { nextCommittee: { epoch: 1, authorities: [{ ...committee.authorities[0], stake: 0 }] } } }, /stake/)
  })

  test('rejects index 0, a short previous digest, a missing leader, no blocks, a short block digest', () => {
    reject({ ...base, index: 0 }, /out of range/)
    reject({ ...base, previousDigest: new Uint8Array(31) }, /previous digest/)
    reject({ ...base, leader: null as any }, /leader/)
    reject({ ...base, blocks: [] }, /0 blocks/)
    reject({ ...base, blocks: [{ round: 3, author: 1, digest: new Uint8Array(8) }] }, /not 32 bytes/)
  })
})
