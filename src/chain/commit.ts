import { Codecs } from './codecs.ts'
import type { Commit } from './types.ts'
import type { CommitteeInfo } from './committee.ts'
import { validateCommittee } from './committee.ts'
import type { ParsedBlock, VerifiedBlock } from './block.ts'
import { sha256, bytesEqual, short } from '../crypto/hash.ts'
import { BrokenChainError, InsufficientVotesError, MalformedMessageError } from '../errors.ts'

export const MAX_BLOCKS_PER_COMMIT = 100_000

/** A commit decoded from its bytes, with its digest. */
export class ParsedCommit {
  readonly bytes: Uint8Array
  readonly commit: Commit
  readonly digest: Uint8Array

  constructor (bytes: Uint8Array, commit: Commit) {
    this.bytes = bytes
    this.commit = commit
    this.digest = sha256(bytes)
  }

  get index (): number { return this.commit.index }
  get epoch (): number { return this.commit.epoch }
  get isEndOfEpoch (): boolean { return this.commit.endOfEpoch != null }
}

/** A commit whose chain link and certification were verified. */
export type TrustedCommit = ParsedCommit & { readonly __trusted: true }

export function encodeCommit (c: Commit): ParsedCommit {
  const bytes = Codecs.Commit.encode(c)
  return new ParsedCommit(bytes, Codecs.Commit.decode(bytes))
}

/** Decodes commit bytes and checks its structure. */
export function parseCommit (bytes: Uint8Array): ParsedCommit {
  const commit = Codecs.Commit.decode(bytes)
  const p = new ParsedCommit(bytes, commit)
  if (!Number.isSafeInteger(commit.index) || commit.index < 1) throw new MalformedMessageError(`commit index ${commit.index} is out of range`)
  if (commit.previousDigest.byteLength !== 32) throw new MalformedMessageError(`commit ${commit.index}: previous digest is not 32 bytes`)
  if (commit.leader == null || commit.leader.digest.byteLength !== 32) throw new MalformedMessageError(`commit ${commit.index}: no valid leader ref`)
  if (commit.blocks.length === 0 || commit.blocks.length > MAX_BLOCKS_PER_COMMIT) throw new MalformedMessageError(`commit ${commit.index}: ${commit.blocks.length} blocks`)
  for (let i = 0; i < commit.blocks.length; i++) {
    const r = commit.blocks[i]
    if (r.digest.byteLength !== 32) throw new MalformedMessageError(`commit ${commit.index}: block ref digest is not 32 bytes`)
    if (i > 0) {
      const q = commit.blocks[i - 1]
      if (q.round > r.round || (q.round === r.round && q.author >= r.author)) {
        throw new MalformedMessageError(`commit ${commit.index}: block refs are not sorted by (round, author)`)
      }
    }
  }
  if (commit.endOfEpoch != null) {
    validateCommittee(commit.endOfEpoch.nextCommittee)
    if (commit.endOfEpoch.nextCommittee.epoch !== commit.epoch + 1) {
      throw new MalformedMessageError(`commit ${commit.index}: next committee is for epoch ${commit.endOfEpoch.nextCommittee.epoch}, expected ${commit.epoch + 1}`)
    }
  }
  return p
}

/**
 * Checks that `commits` continue the chain after `previous` (index + 1, previous-digest link, same
 * epoch unless `previous` ends its epoch, no commit after an end-of-epoch commit).
 */
export function verifyChain (previous: { index: number, digest: Uint8Array, epoch: number, endOfEpoch: boolean }, commits: readonly ParsedCommit[]): void {
  let prev = previous
  for (const c of commits) {
    if (c.index !== prev.index + 1) throw new BrokenChainError(`expected commit ${prev.index + 1}, got ${c.index}`)
    if (!bytesEqual(c.commit.previousDigest, prev.digest)) {
      throw new BrokenChainError(`commit ${c.index}: previous digest ${short(c.commit.previousDigest)} does not match commit ${prev.index} (${short(prev.digest)})`)
    }
    const expectedEpoch = prev.endOfEpoch ? prev.epoch + 1 : prev.epoch
    if (c.epoch !== expectedEpoch) throw new BrokenChainError(`commit ${c.index} is in epoch ${c.epoch}, expected ${expectedEpoch}`)
    prev = { index: c.index, digest: c.digest, epoch: c.epoch, endOfEpoch: c.isEndOfEpoch }
  }
}

/**
 * Checks that signature-verified certifier blocks of `committee` vote for `commit` with 2f+1 stake.
 * Blocks of other epochs or voting for other digests do not count.
 */
export function verifyCertification (commit: ParsedCommit, certifiers: readonly (ParsedBlock | VerifiedBlock)[], committee: CommitteeInfo): void {
  if (committee.epoch !== commit.epoch) throw new InsufficientVotesError(`commit ${commit.index} is of epoch ${commit.epoch}, the committee is of epoch ${committee.epoch}`)
  const voters = new Set<number>()
  for (const b of certifiers) {
    if (b.block.epoch !== commit.epoch) continue
    for (const v of b.block.commitVotes) {
      if (v.index === commit.index && bytesEqual(v.digest, commit.digest)) voters.add(b.block.author)
    }
  }
  const stake = committee.stakeOf(voters)
  if (stake < committee.quorumThreshold) {
    throw new InsufficientVotesError(`commit ${commit.index}: votes carry ${stake} of ${committee.totalStake} stake, 2f+1 needs ${committee.quorumThreshold}`)
  }
}
