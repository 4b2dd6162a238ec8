/**
 * Fetch and verify commits (seed 000, "Commit Synchronization"): a range from one peer, checked for
 * index sequence, previous-digest chaining and epoch continuity from our highest stored commit,
 * truncated at the epoch boundary, and certified by signature-checked blocks of that epoch's committee
 * voting for the last commit with 2f+1 stake.
 */
import type { AbortOptions, PeerId } from '@libp2p/interface'
import { parseCommit, verifyChain, verifyCertification, type ParsedCommit, type TrustedCommit } from '../chain/commit.ts'
import type { ParsedBlock, VerifiedBlock } from '../chain/block.ts'
import type { ChainStore } from '../store/chain-store.ts'
import type { FetchCommits } from './protocols/fetch-commits.ts'
import type { SignedBlockVerifier } from './block-verifier.ts'
import { InsufficientVotesError, StoreError } from '../errors.ts'

export interface VerifiedCommitRange {
  commits: TrustedCommit[]
  /** blocks of the last commit's epoch voting for it */
  certifiers: VerifiedBlock[]
}

/** The commit a range is chained to: the one right before its first commit. */
export interface CommitAnchor { index: number, digest: Uint8Array, epoch: number, endOfEpoch: boolean }

/** The commit before `start` as the chain anchor: genesis for 1, else a stored commit. */
export async function chainAnchor (store: ChainStore, start: number): Promise<CommitAnchor> {
  if (start === 1) return { index: 0, digest: store.chainId, epoch: 0, endOfEpoch: false }
  const prev = await store.getCommit(start - 1)
  if (prev === undefined) throw new StoreError(`commit ${start - 1}, the anchor of a fetch from ${start}, is not stored`)
  return { index: prev.index, digest: prev.digest, epoch: prev.epoch, endOfEpoch: prev.isEndOfEpoch }
}

export async function fetchAndVerifyCommits (
  peer: PeerId,
  start: number,
  end: number,
  deps: { store: ChainStore, fetchCommits: FetchCommits, blockVerifier: SignedBlockVerifier },
  options: AbortOptions = {},
  /** the verified commit `start - 1` when it is not stored yet (a pipelined range); else read from the store */
  anchor?: CommitAnchor
): Promise<VerifiedCommitRange> {
  const { store, fetchCommits, blockVerifier } = deps
  const res = await fetchCommits.fetch(peer, start, end, options)
  let commits: ParsedCommit[] = res.commits.map(b => parseCommit(b))
  if (anchor !== undefined && anchor.index !== start - 1) throw new RangeError(`the anchor of a range from ${start} is commit ${start - 1}, got ${anchor.index}`)
  verifyChain(anchor ?? await chainAnchor(store, start), commits)
  // epoch boundary: keep commits up to the first end-of-epoch commit
  const eoe = commits.findIndex(c => c.isEndOfEpoch)
  if (eoe >= 0 && eoe < commits.length - 1) commits = commits.slice(0, eoe + 1)
  const last = commits[commits.length - 1]
  const committee = await store.getCommittee(last.epoch)
  if (committee === undefined) throw new StoreError(`no committee stored for epoch ${last.epoch}`)
  const parsed: ParsedBlock[] = res.certifierBlocks.map(b => blockVerifier.parse(b)).filter(b => b.epoch === last.epoch)
  if (parsed.length === 0) throw new InsufficientVotesError(`commit ${last.index}: no certifier blocks of epoch ${last.epoch}`)
  const certifiers = await blockVerifier.verify(parsed, committee)
  verifyCertification(last, certifiers, committee)
  return { commits: commits as TrustedCommit[], certifiers }
}
