/**
 * Consistency checks over a whole ChainStore written by the devnet producer + executor (used by the
 * crash and producer tests). Throws an AssertionError naming the first broken invariant.
 */
import assert from 'node:assert/strict'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { Bucket, keySuffix, readU64 } from '../../src/store/keys.ts'
import { verifyChain, verifyCertification, type ParsedCommit } from '../../src/chain/commit.ts'
import { parseBlock, verifyBlock, type ParsedBlock } from '../../src/chain/block.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { sha256, toHex } from '../../src/crypto/hash.ts'
import { accountElement, embeddingElement } from '../../src/store/state-hash.ts'
import { Codecs } from '../../src/chain/codecs.ts'

export interface InvariantReport {
  highestSynced: number
  highestExecuted: number
  storedCommits: number
  /** epochs that have commits */
  epochs: number
  transactions: number
  embeddings: number
}

/**
 * `certification: false`: only the chain is checked for the commits (a commit synced in a range is
 * certified through the chain); `rootPerCommit: false`: the executor ran in batches (one state root per
 * batch, the last commit's).
 */
export async function checkStoreInvariants (store: ChainStore, opts: { certification?: boolean, rootPerCommit?: boolean } = {}): Promise<InvariantReport> {
  const { highestSynced, highestExecuted } = store.getProgress()
  assert.ok(highestExecuted <= highestSynced, `executed ${highestExecuted} <= synced ${highestSynced}`)

  // commits: 1..synced all stored (at most one more, uncertified), and they chain from genesis
  const storedCommits = await store.countBucket(Bucket.COMMIT)
  assert.ok(storedCommits === highestSynced || storedCommits === highestSynced + 1, `${storedCommits} commits stored, synced ${highestSynced}`)
  const commits = await store.getCommitRange(1, storedCommits)
  assert.equal(commits.length, storedCommits, 'stored commits are 1..n with no gap')
  verifyChain({ index: 0, digest: store.chainId, epoch: 0, endOfEpoch: false }, commits)

  // blocks: every block of every stored commit is stored, has its digest, and is signed by its epoch's committee
  const blocksOf = new Map<number, ParsedBlock[]>()
  for (const c of commits) {
    const committee = await store.getCommittee(c.epoch)
    assert.ok(committee !== undefined, `committee of epoch ${c.epoch} stored`)
    const raw = await store.getBlocks(c.commit.blocks)
    const blocks = raw.map((b, i) => {
      assert.ok(b !== undefined, `commit ${c.index}: block ${i} stored`)
      const p = parseBlock(b, store.chainId)
      assert.equal(toHex(p.digest), toHex(c.commit.blocks[i].digest), `commit ${c.index}: block ${i} digest`)
      assert.equal(p.epoch, c.epoch)
      return verifyBlock(p, committee)
    })
    blocksOf.set(c.index, blocks)
    if (c.isEndOfEpoch) {
      const next = await store.getCommittee(c.epoch + 1)
      assert.ok(next !== undefined, `commit ${c.index} ends epoch ${c.epoch}: next committee stored`)
      assert.equal(toHex(Codecs.Committee.encode(next.committee)), toHex(Codecs.Committee.encode(c.commit.endOfEpoch!.nextCommittee)))
      assert.equal(await store.getLastCommitIndexOfEpoch(c.epoch), c.index)
    }
  }

  // certification: every synced commit has stored votes of >= 2f+1 of its epoch's stake
  if (opts.certification !== false) {
    for (const c of commits.slice(0, highestSynced)) await checkCertified(store, c)
  }

  // state root of highest executed = sha256(stored accumulator) = recomputation from scratch
  const root = await store.getStateRoot(highestExecuted)
  assert.ok(root !== undefined, `state root of commit ${highestExecuted} stored`)
  const acc = await store.getLtHash()
  assert.equal(toHex(acc.checksum()), toHex(root), 'stored accumulator matches the stored state root')
  const fresh = new LtHash()
  for await (const [k, v] of store.iterateBucket(Bucket.ACCOUNT)) fresh.addLanes(accountElement(keySuffix(k), v))
  let embeddings = 0
  for await (const [k, v] of store.iterateBucket(Bucket.EMBEDDING)) {
    fresh.addLanes(embeddingElement(keySuffix(k), v))
    const e = Codecs.Embedding.decode(v)
    assert.ok(e.commitIndex >= 1 && e.commitIndex <= highestExecuted, `embedding of commit ${e.commitIndex} (executed ${highestExecuted})`)
    embeddings++
  }
  assert.equal(toHex(fresh.checksum()), toHex(root), 'recomputed state root matches')
  // state roots exactly for 0..executed
  let roots = 0
  let maxRoot = -1
  for await (const [k] of store.iterateBucket(Bucket.STATE_ROOT)) { roots++; maxRoot = Math.max(maxRoot, readU64(k, 1)) }
  assert.equal(maxRoot, highestExecuted, 'no state root beyond highest executed')
  if (opts.rootPerCommit !== false) assert.equal(roots, highestExecuted + 1, 'a state root for every executed commit (and genesis)')

  // effects: for every transaction of executed commits, for none of later ones
  const executedTx = new Set<string>()
  let transactions = 0
  for (const c of commits) {
    const digests = blocksOf.get(c.index)!.flatMap(b => b.block.transactions.map(t => sha256(t.tx)))
    transactions += digests.length
    const mask = await store.executedMask(digests)
    digests.forEach((d, i) => {
      const k = toHex(d)
      if (c.index <= highestExecuted) {
        assert.ok(mask[i], `commit ${c.index} (executed): tx ${i} has effects`)
        executedTx.add(k)
      } else if (!executedTx.has(k)) {
        assert.ok(!mask[i], `commit ${c.index} (not executed, executed is ${highestExecuted}): tx ${i} has no effects`)
      }
    })
    if (c.index <= highestExecuted) {
      for (const d of digests) {
        const e = await store.getEffects(d)
        assert.ok(e!.commitIndex <= c.index)
      }
    }
  }
  assert.equal(await store.countBucket(Bucket.EFFECTS), executedTx.size, 'no effects for transactions outside executed commits')
  const epochs = commits.length === 0 ? 0 : commits[commits.length - 1].epoch + 1
  return { highestSynced, highestExecuted, storedCommits, epochs, transactions, embeddings }
}

/** The stored votes for commit `c` come from blocks of its epoch's committee and carry >= 2f+1 stake. */
export async function checkCertified (store: ChainStore, c: ParsedCommit): Promise<number> {
  const committee = (await store.getCommittee(c.epoch))!
  const votes = await store.getVotes(c.index)
  const raw = await store.getBlocks(votes.map(v => v.ref))
  const certifiers = raw.map((b, i) => {
    assert.ok(b !== undefined, `commit ${c.index}: voting block ${i} stored`)
    return verifyBlock(parseBlock(b, store.chainId), committee)
  })
  verifyCertification(c, certifiers, committee)
  const authors = new Set(votes.filter(v => toHex(v.voteDigest) === toHex(c.digest)).map(v => v.ref.author))
  const stake = committee.stakeOf(authors)
  assert.ok(stake >= committee.quorumThreshold, `commit ${c.index}: ${stake} >= ${committee.quorumThreshold}`)
  return stake
}
