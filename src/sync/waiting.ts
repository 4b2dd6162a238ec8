/**
 * Why a sync is not progressing, with the evidence an operator needs: what `/status` shows as `waiting`,
 * what `/health` answers 503 with, and what the log says when it begins. Each sync state machine (commit
 * sync's StateSyncEventLoop, SnapshotSync, the archive reader) reports its own through `waiting()`; the
 * node picks the one that holds it back.
 */
export type WaitingCode =
  /** no connected peer at all */
  | 'no-peers'
  /** every connected peer is on another chain (their genesis digests in the evidence) */
  | 'peers-other-chain'
  /** every usable peer is at or below our height */
  | 'peers-behind'
  /** the peers that have the range are banned, or have pruned it (lowest available above it) */
  | 'range-unavailable'
  /** snapshot discovery found no snapshot ahead of the store */
  | 'no-snapshot'
  /** the snapshot being synced has no serving peer (or none makes progress) */
  | 'snapshot-stalled'
  /** the CommitExecutor failed (the error in the evidence, e.g. ENOSPC) */
  | 'executor-failed'
  /** a store write failed for lack of space */
  | 'disk-full'
  /** no new commit for longer than the stall threshold although peers are connected */
  | 'no-progress'
  /** the archive source (bucket or archival peer) cannot serve what is needed */
  | 'archive-unavailable'

export interface WaitingReason {
  code: WaitingCode
  /** one line for the operator, e.g. "the only peer serving the snapshot of commit 400 left 35 s ago" */
  message: string
  /** when this began (ms since the epoch) */
  since: number
  /** what shows it: peer ids, heights, genesis digests, the error, … (JSON-serializable) */
  evidence?: Record<string, unknown>
}
