/**
 * What `/health` answers, from the node's phase and the reason it waits (src/sync/waiting.ts):
 * - 200 `ok`: synced (or producing) and progressing;
 * - 206 `syncing`: syncing normally (snapshot, commits, discovering peers), or waiting for a reason that
 *   has not lasted long enough to call the node stuck;
 * - 503 `stuck: <code>: <message>`: the node cannot progress by itself: the executor or a store write
 *   failed (phase `failed`), every peer is on another chain, no new commit for longer than
 *   `healthStallMs`, or no usable peer (none, none serving the range or snapshot) for longer than
 *   `healthNoPeersMs`.
 *
 * The node's own reasons (no peers, peers of another chain, a stall, a fatal fault) are computed by
 * `NodeWatch` from what the node sees; the sync state machines report theirs through `waiting()`;
 * `mergeWaiting` picks the one that holds the node back.
 */
import type { WaitingCode, WaitingReason } from '../sync/waiting.ts'

export type HealthState = 'ok' | 'syncing' | 'stuck'

export interface HealthThresholds {
  /** no usable peer for longer than this: stuck */
  healthNoPeersMs: number
  /** no new commit for longer than this: stuck (NodeWatch reports `no-progress` once it has lasted this long) */
  healthStallMs: number
}

export interface Health {
  state: HealthState
  /** 200, 206 or 503 */
  httpStatus: number
  /** the reason, when stuck or waiting */
  waiting?: WaitingReason
}

/** Reasons that make the node stuck as soon as they hold. */
export const STUCK_AT_ONCE: readonly WaitingCode[] = ['executor-failed', 'disk-full', 'peers-other-chain', 'no-progress']
/** Reasons that make it stuck once they have lasted `healthNoPeersMs`. */
export const STUCK_AFTER_NO_PEERS: readonly WaitingCode[] = ['no-peers', 'range-unavailable', 'snapshot-stalled', 'no-snapshot', 'archive-unavailable']

/** Phases in which a node that does not wait is healthy (200). */
const SETTLED_PHASES = new Set(['synced', 'producing', 'idle', 'done'])

/** The /health answer for a node in `phase` that waits for `waiting` (if anything). */
export function healthOf (phase: string, waiting: WaitingReason | undefined, thresholds: HealthThresholds, now = Date.now()): Health {
  if (phase === 'stopped') return { state: 'stuck', httpStatus: 503, waiting }
  if (waiting !== undefined) {
    const lasted = now - waiting.since
    if (phase === 'failed' || phase === 'error' || STUCK_AT_ONCE.includes(waiting.code) || (STUCK_AFTER_NO_PEERS.includes(waiting.code) && lasted >= thresholds.healthNoPeersMs)) {
      return { state: 'stuck', httpStatus: 503, waiting }
    }
    return { state: 'syncing', httpStatus: 206, waiting }
  }
  if (phase === 'failed' || phase === 'error') return { state: 'stuck', httpStatus: 503 }
  if (SETTLED_PHASES.has(phase)) return { state: 'ok', httpStatus: 200 }
  return { state: 'syncing', httpStatus: 206 }
}

/** The /health body: `ok`, `syncing` (with the reason it waits, if any) or `stuck: <code>: <message>`. */
export function healthBody (h: Health): string {
  const why = h.waiting === undefined ? '' : `: ${h.waiting.code}: ${h.waiting.message}`
  return `${h.state}${why}\n`
}

/**
 * The reason that holds the node back: a fatal fault first, then the sync machines' own reasons (in the
 * order given: the running one first), then the node's peer and stall checks.
 */
export function mergeWaiting (fatal: WaitingReason | undefined, machines: Array<WaitingReason | undefined>, node: Array<WaitingReason | undefined>): WaitingReason | undefined {
  if (fatal !== undefined) return fatal
  for (const w of machines) if (w !== undefined) return w
  for (const w of node) if (w !== undefined) return w
  return undefined
}

/** What NodeWatch sees of a peer. */
export interface WatchedPeer {
  id: string
  /** on another chain (its genesis digest differs) */
  wrongChain: boolean
  banned: boolean
}

/**
 * The node's own checks, sampled every second by the node (and at each /status): how long it has had no
 * usable peer, whether every peer it met is on another chain, and how long since its last new commit.
 * `since` of each reason is when the condition began, so /health can apply its thresholds.
 */
export class NodeWatch {
  private readonly thresholds: HealthThresholds
  private readonly chainId: string
  private noUsableSince?: number
  /** when highestSynced last rose (or a snapshot download last progressed) */
  lastProgressAt: number
  /** when highestSynced last rose, undefined before the first commit seen by this process */
  lastCommitAt?: number
  private lastHeight: number
  private lastSnapshotBytes = -1
  /** peers met recently that are on another chain (id -> last seen) */
  private readonly otherChain = new Map<string, number>()

  constructor (init: { thresholds: HealthThresholds, chainId: string, height: number, now?: number }) {
    this.thresholds = init.thresholds
    this.chainId = init.chainId
    this.lastHeight = init.height
    this.lastProgressAt = init.now ?? Date.now()
  }

  /**
   * Updates the clocks from what the node sees now. `peers`: connected peers (and peers known to the
   * sync); `checkPeers`: false for a node that needs no peers (the devnet producer); `snapshotBytes`:
   * bytes of the running snapshot download (progress too).
   */
  sample (s: { height: number, peers: WatchedPeer[], checkPeers: boolean, snapshotBytes?: number, now?: number }): void {
    const now = s.now ?? Date.now()
    if (s.height > this.lastHeight) {
      this.lastHeight = s.height
      this.lastCommitAt = now
      this.lastProgressAt = now
    }
    if (s.snapshotBytes !== undefined && s.snapshotBytes !== this.lastSnapshotBytes) {
      if (this.lastSnapshotBytes >= 0 && s.snapshotBytes > this.lastSnapshotBytes) this.lastProgressAt = now
      this.lastSnapshotBytes = s.snapshotBytes
    }
    for (const p of s.peers) if (p.wrongChain) this.otherChain.set(p.id, now)
    for (const [id, at] of this.otherChain) if (now - at > 10 * 60_000) this.otherChain.delete(id)
    const usable = s.peers.filter(p => !p.wrongChain && !p.banned)
    if (!s.checkPeers || usable.length > 0) this.noUsableSince = undefined
    else this.noUsableSince ??= now
  }

  /** The node's reasons, most telling first: peers (none usable / other chain), then a stall. */
  reasons (s: { peers: WatchedPeer[], checkPeers: boolean, height: number, phase: string, now?: number }): WaitingReason[] {
    const now = s.now ?? Date.now()
    const out: WaitingReason[] = []
    if (s.checkPeers && this.noUsableSince !== undefined) {
      const banned = s.peers.filter(p => p.banned && !p.wrongChain).map(p => p.id)
      if (this.otherChain.size > 0) {
        out.push({
          code: 'peers-other-chain',
          message: `every peer met is on another chain (${this.otherChain.size} peer(s) with a genesis digest other than ours, ${this.chainId.slice(0, 16)}…)`,
          since: this.noUsableSince,
          evidence: { ourGenesis: this.chainId, otherChainPeers: [...this.otherChain.keys()] }
        })
      } else {
        out.push({
          code: 'no-peers',
          message: s.peers.length === 0 ? 'no connected peer' : `no usable peer: ${banned.length} connected peer(s) banned`,
          since: this.noUsableSince,
          evidence: { connected: s.peers.length, banned }
        })
      }
    }
    const stalled = now - this.lastProgressAt
    if (stalled >= this.thresholds.healthStallMs && s.phase !== 'done' && s.phase !== 'stopped') {
      out.push({
        code: 'no-progress',
        message: `no new commit for ${Math.round(stalled / 1000)} s (at commit ${s.height}${this.lastCommitAt === undefined ? ', none since start' : ''}; threshold ${Math.round(this.thresholds.healthStallMs / 1000)} s): is the chain producing?`,
        since: this.lastProgressAt + this.thresholds.healthStallMs,
        evidence: { highestSynced: s.height, lastCommitAt: this.lastCommitAt === undefined ? undefined : new Date(this.lastCommitAt).toISOString(), connected: s.peers.length }
      })
    }
    return out
  }
}
