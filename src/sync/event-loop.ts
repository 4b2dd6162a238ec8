/**
 * StateSyncEventLoop (seed 000): one loop fed by a bounded mailbox (`mailboxCapacity`), a tick every
 * `tickIntervalMs`, peer connect/disconnect events and finished tasks. It keeps PeerHeights fresh
 * (height discovery), starts one sync task at a time when a peer is ahead, feeds verified commits to
 * the CommitExecutor through a bounded channel (backpressure), notifies lower peers with PushCommit,
 * and stops gracefully (cancels tasks, closes streams, drains the executor).
 *
 * States: stopped → replaying (stored but unexecuted commits go to the executor first) → discovering
 * (no peer heights yet) ⇄ syncing ⇄ waiting-for-peers / synced.
 *
 * The sync target (`progress().target`) follows verified data only (PeerHeights.target): the highest
 * height claimed by a peer that has served verified commits, never falling when peers leave. A claimed
 * range a peer then fails to serve withdraws its claim, with a penalty that doubles per repeated failure
 * (a peer that claims 10^9 and times out is banned at the 4th), and the PeerBalancer asks peers by
 * measured throughput. Phases have hysteresis: a `synced` node stays `synced` while it is at most
 * `syncedLagCommits` behind the target for at most `syncedLagMs` (it keeps fetching the new commits); it
 * turns `syncing` past either. `waiting()` says why the loop is not progressing, with evidence.
 */
import type { PeerId } from '@libp2p/interface'
import type { Logger } from '../utils/logger.ts'
import type { ChainStore } from '../store/chain-store.ts'
import type { CommitExecutor } from '../executor/commit-executor.ts'
import type { CommittedSubDag } from '../chain/subdag.ts'
import { parseBlock, type ParsedBlock } from '../chain/block.ts'
import { BoundedChannel } from './channel.ts'
import { PeerHeights } from './peer-heights.ts'
import { PeerBalancer } from './peer-balancer.ts'
import { PeerScores } from './peer-scores.ts'
import { fetchAndVerifyCommits, type CommitAnchor, type VerifiedCommitRange } from './commit-fetcher.ts'
import { BlockDownloader, type ReadyCommit } from './block-downloader.ts'
import type { SignedBlockVerifier } from './block-verifier.ts'
import type { TxVerifier } from './tx-verifier.ts'
import type { CommitAvailability } from './protocols/commit-availability.ts'
import type { FetchCommits } from './protocols/fetch-commits.ts'
import type { FetchBlocks } from './protocols/fetch-blocks.ts'
import type { PushCommit } from './protocols/push-commit.ts'
import { RateLimitedError, WrongChainError, penaltyFor } from '../errors.ts'
import { PeerBackoff } from '../net/rate-limit.ts'
import type { SomaConfig } from '../config.ts'
import { toHex } from '../crypto/hash.ts'
import type { WaitingReason } from './waiting.ts'

export type SyncPhase = 'stopped' | 'replaying' | 'discovering' | 'syncing' | 'waiting-for-peers' | 'synced'

/** The options of the one config object (src/config.ts) the sync loop uses. */
export const STATE_SYNC_KEYS = [
  'mailboxCapacity', 'syncedCommitBroadcastChannelCapacity', 'waitIntervalWhenNoPeerToSyncContentMs', 'timeoutMs',
  'commitSyncBatchSize', 'maxBlocksPerFetch', 'maxFetchResponseBytes', 'maxTotalFetchedBytes',
  'commitSummaryDownloadConcurrency', 'tickIntervalMs', 'blockFetchStaggerMs', 'peerHeightQueryIntervalMs', 'peerBanMs',
  'syncRangesInFlight', 'syncedLagCommits', 'syncedLagMs', 'pushFanout'
] as const satisfies ReadonlyArray<keyof SomaConfig>

export type StateSyncConfig = Pick<SomaConfig, typeof STATE_SYNC_KEYS[number]>

export type MailboxMessage =
  | { type: 'peer-connected', peer: PeerId }
  | { type: 'peer-disconnected', peer: PeerId }
  | { type: 'push', peer: PeerId, highestSynced: number, lowestAvailable: number, genesisDigest: Uint8Array }
  | { type: 'wake' }

export interface EventLoopDeps {
  store: ChainStore
  executor: CommitExecutor
  availability: CommitAvailability
  fetchCommits: FetchCommits
  fetchBlocks: FetchBlocks
  pushCommit: PushCommit
  blockVerifier: SignedBlockVerifier
  txVerifier: TxVerifier
  /** currently connected peers */
  connectedPeers: () => PeerId[]
  /** closes connections to a banned peer */
  disconnect: (peer: PeerId) => Promise<void>
  /**
   * Every peer that has the next commit needed has history only from a higher commit (a snapshot-synced
   * node's lowest available commit): called when a range finds no peer, so that archival peers can be
   * looked for (src/sync/archival-discovery.ts). `to`: the last commit below all their lowest ones.
   */
  onHistoryMissing?: (m: { from: number, to: number, peers: Array<{ peer: PeerId, lowest: number, height: number }> }) => void
  /** the node's logger (operator-facing: info/warn/error reach the log without DEBUG) */
  logger: Logger
}

export interface SyncProgress {
  phase: SyncPhase
  highestSynced: number
  highestExecuted: number
  target: number
  peers: number
  commitsPerSecond: number
  syncedCommits: number
}

export interface StateSyncEvents {
  /** verified commits were stored */
  synced: (highest: number) => void
  phase: (phase: SyncPhase) => void
}

export class StateSyncEventLoop {
  readonly config: StateSyncConfig
  readonly heights: PeerHeights
  readonly scores: PeerScores
  /** peers that refused us with a rate-limit hint, until the hint passes */
  readonly backoff = new PeerBackoff()
  readonly downloader: BlockDownloader
  private readonly deps: EventLoopDeps
  private readonly log: Logger
  private mailbox!: BoundedChannel<MailboxMessage>
  private channel!: BoundedChannel<CommittedSubDag>
  private controller?: AbortController
  private loop?: Promise<void>
  private executorTask?: Promise<void>
  private syncTask?: Promise<void>
  private queryTask?: Promise<void>
  private replayTask?: Promise<void>
  private lastQuery = 0
  private noPeerUntil = 0
  private _phase: SyncPhase = 'stopped'
  private readonly listeners: { [K in keyof StateSyncEvents]: Array<StateSyncEvents[K]> } = { synced: [], phase: [] }
  /** commits synced by this loop (not replayed), and a rate window */
  syncedCommits = 0
  private rate: Array<[number, number]> = []
  droppedMessages = 0
  fatalError?: Error
  /** why the loop is not progressing (updated every tick) */
  private _waiting?: WaitingReason
  /** while `synced`: since when the node has been behind the target (hysteresis) */
  private behindSince?: number
  /** when a peer of this chain was last known (wrong-chain evidence is what came after) */
  private lastSameChainPeerAt = 0

  constructor (deps: EventLoopDeps, config: StateSyncConfig) {
    this.deps = deps
    this.config = config
    // a withdrawn claim stays withdrawn for a few height queries, doubling per repeated failure
    this.heights = new PeerHeights(deps.store.chainId, { withdrawMs: Math.max(1000, 2 * config.peerHeightQueryIntervalMs), maxWithdrawMs: Math.max(config.peerBanMs, 1000) })
    this.scores = new PeerScores(config.peerBanMs)
    this.log = deps.logger
    this.downloader = new BlockDownloader({
      store: deps.store,
      fetchBlocks: deps.fetchBlocks,
      blockVerifier: deps.blockVerifier,
      txVerifier: deps.txVerifier,
      onPeerError: (peer, err) => { this.penalize(peer, err) },
      onPeerSuccess: (peer) => { this.scores.reward(peer) },
      heldFor: (peer) => this.backoff.remaining(peer.toString())
    }, {
      maxBlocksPerFetch: config.maxBlocksPerFetch,
      maxFetchResponseBytes: config.maxFetchResponseBytes,
      maxTotalFetchedBytes: config.maxTotalFetchedBytes,
      blockFetchStaggerMs: config.blockFetchStaggerMs,
      concurrency: config.commitSummaryDownloadConcurrency,
      timeoutMs: config.timeoutMs
    })
  }

  on<K extends keyof StateSyncEvents>(event: K, fn: StateSyncEvents[K]): void { (this.listeners[event] as any[]).push(fn) }
  off<K extends keyof StateSyncEvents>(event: K, fn: StateSyncEvents[K]): void {
    const l = this.listeners[event] as any[]; const i = l.indexOf(fn); if (i >= 0) l.splice(i, 1)
  }

  get phase (): SyncPhase { return this._phase }

  private setPhase (p: SyncPhase): void {
    if (p === this._phase) return
    this.log.info('phase %s -> %s', this._phase, p)
    this._phase = p
    for (const fn of this.listeners.phase) fn(p)
  }

  get isRunning (): boolean { return this.controller !== undefined }

  /** Posts a message; when the mailbox is full it is dropped (the next tick catches up). */
  post (msg: MailboxMessage): void {
    if (this.mailbox === undefined || !this.mailbox.trySend(msg)) this.droppedMessages++
  }

  start (): void {
    if (this.controller !== undefined) return
    this.controller = new AbortController()
    const signal = this.controller.signal
    this.mailbox = new BoundedChannel(this.config.mailboxCapacity)
    this.channel = new BoundedChannel(this.config.syncedCommitBroadcastChannelCapacity)
    this.executorTask = this.deps.executor.run(this.channel, signal).catch(err => {
      if (signal.aborted) return
      this.fatalError = err
      this.log.error('executor stopped: %s', err.message)
      this.controller?.abort(err)
    })
    this.setPhase('replaying')
    this.replayTask = this.replay(signal).catch(err => {
      if (!signal.aborted) this.log.error('replay failed: %s', err.message)
    })
    this.loop = this.run(signal)
  }

  async stop (): Promise<void> {
    const c = this.controller
    if (c === undefined) return
    c.abort(new Error('state sync stopping'))
    this.mailbox.close()
    await this.loop
    await Promise.allSettled([this.syncTask, this.queryTask, this.replayTask])
    this.channel.close()
    await this.executorTask
    this.controller = undefined
    this.setPhase('stopped')
  }

  progress (): SyncProgress {
    const now = Date.now()
    this.rate = this.rate.filter(([t]) => now - t < 10_000)
    const first = this.rate[0]
    const last = this.rate[this.rate.length - 1]
    const cps = first !== undefined && last !== first ? (last[1] - first[1]) / ((last[0] - first[0]) / 1000) : 0
    const p = this.deps.store.getProgress()
    return {
      phase: this._phase,
      highestSynced: p.highestSynced,
      highestExecuted: p.highestExecuted,
      target: Math.max(this.heights.target(), p.highestSynced),
      peers: this.heights.size,
      commitsPerSecond: cps,
      syncedCommits: this.syncedCommits
    }
  }

  /** Commits stored but not executed (after a restart) go to the executor first, from the store. */
  private async replay (signal: AbortSignal): Promise<void> {
    const store = this.deps.store
    for (let i = store.highestExecuted + 1; i <= store.highestSynced; i++) {
      signal.throwIfAborted()
      const commit = await store.getCommit(i)
      if (commit === undefined) throw new Error(`commit ${i} is marked synced but not stored`)
      const raw = await store.getBlocks(commit.commit.blocks)
      const blocks = raw.map((b, j) => {
        if (b === undefined) throw new Error(`commit ${i}: block ${j} is marked synced but not stored`)
        return parseBlock(b, store.chainId)
      })
      await this.channel.send({ commit, blocks }, signal)
    }
    this.setPhase('discovering')
  }

  private async run (signal: AbortSignal): Promise<void> {
    for (const peer of this.deps.connectedPeers()) this.post({ type: 'peer-connected', peer })
    // one read of the mailbox stays pending across ticks: a fresh next() per tick would leave the
    // losing reads registered, and the channel hands each message to the oldest of them (lost)
    let pending: Promise<IteratorResult<MailboxMessage>> | undefined
    while (!signal.aborted) {
      pending ??= this.mailbox.next()
      let timer: ReturnType<typeof setTimeout> | undefined
      const msg = await Promise.race([
        pending,
        new Promise<'tick'>(resolve => { timer = setTimeout(() => resolve('tick'), this.config.tickIntervalMs) })
      ])
      clearTimeout(timer)
      if (signal.aborted) break
      if (msg !== 'tick') {
        pending = undefined
        if (msg.done === true) break
        this.handleMessage(msg.value)
      }
      this.handleTick()
      this.maybeStartSyncTask(signal)
    }
  }

  private handleMessage (msg: MailboxMessage): void {
    switch (msg.type) {
      case 'peer-connected':
        if (!this.heights.isWrongChain(msg.peer) && !this.scores.isBanned(msg.peer)) void this.queryPeer(msg.peer)
        break
      case 'peer-disconnected':
        this.heights.remove(msg.peer)
        break
      case 'push':
        if (this.heights.isWrongChain(msg.peer) || this.scores.isBanned(msg.peer)) break
        if (!this.heights.update(msg.peer, msg)) this.penalize(msg.peer, new WrongChainError(`${msg.peer.toString()} pushed a commit of another chain`))
        this.noPeerUntil = 0
        break
      case 'wake':
        this.noPeerUntil = 0
        break
    }
  }

  /**
   * Why the loop is not progressing, with evidence (undefined while it progresses or is synced): the
   * executor failed; no peer; every peer on another chain; every peer that has the range banned or
   * pruned below it; every usable peer behind us while the target is ahead.
   */
  waiting (): WaitingReason | undefined {
    // the loop stops when the executor fails: no tick updates it any more
    if (this.fatalError !== undefined && this._waiting?.code !== 'executor-failed') this.updateWaiting()
    return this._waiting
  }

  private computeWaiting (): Omit<WaitingReason, 'since'> | undefined {
    if (this.fatalError !== undefined) {
      const e = this.fatalError as Error & { code?: string }
      return { code: 'executor-failed', message: `the commit executor failed: ${e.message}`, evidence: { error: e.message, errorCode: e.code, highestExecuted: this.deps.store.highestExecuted, highestSynced: this.deps.store.highestSynced } }
    }
    if (this._phase === 'stopped' || this._phase === 'replaying') return undefined
    const store = this.deps.store
    const connected = this.deps.connectedPeers()
    const target = Math.max(this.heights.target(), store.highestSynced)
    // peers found on another chain since a peer of ours was last known (they are dropped at once)
    const wrong = [...this.heights.wrongChainDigests()].filter(([, w]) => w.at >= this.lastSameChainPeerAt)
    const wrongKeys = new Set(wrong.map(([k]) => k))
    if (this.heights.size === 0 && wrong.length > 0 && connected.every(p => wrongKeys.has(p.toString()))) {
      return {
        code: 'peers-other-chain',
        message: `every peer found (${wrong.length}) is on another chain (genesis ${[...new Set(wrong.map(([, w]) => w.genesisDigest.slice(0, 16)))].join(', ')}…, ours ${toHex(store.chainId).slice(0, 16)}…)`,
        evidence: { genesisDigest: toHex(store.chainId), peers: wrong.map(([peer, w]) => ({ peer, genesisDigest: w.genesisDigest, connected: connected.some(p => p.toString() === peer) })) }
      }
    }
    if (connected.length === 0) {
      return { code: 'no-peers', message: `no peer is connected (at commit ${store.highestSynced}, target ${target})`, evidence: { highestSynced: store.highestSynced, target } }
    }
    if (this._phase === 'synced') return undefined
    const start = store.highestSynced + 1
    const known = this.heights.all()
    const usable = known.filter(p => !this.scores.isBanned(p.peer))
    if (usable.some(p => p.height >= start && p.lowest <= start)) return undefined
    const banned = this.scores.banned()
    const pruned = usable.filter(p => p.height >= start && p.lowest > start)
    if (pruned.length > 0 || (banned.length > 0 && target >= start)) {
      return {
        code: 'range-unavailable',
        message: `no usable peer serves commit ${start}: ${pruned.length} pruned below it, ${banned.length} banned`,
        evidence: {
          needed: start,
          pruned: pruned.map(p => ({ peer: p.peer.toString(), height: p.height, lowestAvailable: p.lowest })),
          banned: banned.map(b => ({ peer: b.peer, bannedUntil: new Date(b.until).toISOString() }))
        }
      }
    }
    if (known.length === 0) {
      return { code: 'no-peers', message: `none of the ${connected.length} connected peers serves commit sync (or answered yet)`, evidence: { connected: connected.length } }
    }
    if (target >= start) {
      return {
        code: 'peers-behind',
        message: `every usable peer is behind the sync target ${target} (at commit ${store.highestSynced})`,
        evidence: { highestSynced: store.highestSynced, target, peers: usable.map(p => ({ peer: p.peer.toString(), height: p.height })) }
      }
    }
    return undefined
  }

  private updateWaiting (): void {
    if (this.heights.size > 0) this.lastSameChainPeerAt = Date.now()
    const w = this.computeWaiting()
    if (w === undefined) {
      if (this._waiting !== undefined) this.log.info('no longer waiting (%s)', this._waiting.code)
      this._waiting = undefined
      return
    }
    if (this._waiting?.code !== w.code) {
      this._waiting = { ...w, since: Date.now() }
      // the executor's failure is logged at error when it happens
      if (w.code !== 'executor-failed') this.log.info('waiting: %s', w.message)
    } else {
      this._waiting = { ...w, since: this._waiting.since }
    }
  }

  private handleTick (): void {
    this.updateWaiting()
    const now = Date.now()
    if (now - this.lastQuery >= this.config.peerHeightQueryIntervalMs && this.queryTask === undefined) {
      this.lastQuery = now
      const peers = this.deps.connectedPeers().filter(p => !this.heights.isWrongChain(p) && !this.scores.isBanned(p) && !this.backoff.isHeld(p.toString()))
      this.queryTask = Promise.allSettled(peers.map(async p => await this.queryPeer(p))).then(() => { this.queryTask = undefined })
    }
  }

  /** Height discovery: ask one peer for its commit availability. */
  private async queryPeer (peer: PeerId): Promise<void> {
    const t0 = Date.now()
    try {
      const info = await this.deps.availability.query(peer, { signal: AbortSignal.timeout(Math.min(this.config.timeoutMs, 10_000)) })
      if (!this.heights.update(peer, info, Date.now() - t0)) {
        this.penalize(peer, new WrongChainError(`${peer.toString()} is on another chain`))
        this.log.warn('peer %p is on another chain: dropped', peer)
      }
    } catch (err: any) {
      if (err instanceof RateLimitedError) this.backoff.hold(peer.toString(), err.retryAfterMs)
      // a peer without our protocols, or unreachable: not a lie, just not a sync peer
      this.log.debug('availability query to %p failed: %s', peer, err.message)
    }
  }

  private penalize (peer: PeerId, err: unknown, weight = 1): void {
    const penalty = penaltyFor(err) * weight
    this.log.warn('peer %p: %s (penalty %d)', peer, (err as any)?.message ?? err, penalty)
    // a rate-limit refusal: leave that peer alone for its hint (other peers are picked meanwhile)
    if (err instanceof RateLimitedError) this.backoff.hold(peer.toString(), err.retryAfterMs)
    const banned = this.scores.penalize(peer, err, weight)
    if (banned) this.log.warn('peer %p banned for %d s', peer, Math.round(this.config.peerBanMs / 1000))
    if (banned || err instanceof WrongChainError) {
      this.heights.remove(peer)
      void this.deps.disconnect(peer).catch(() => {})
    }
  }

  /**
   * A peer failed to serve the range from `start` it claims to have: its claim is withdrawn for a
   * back-off that doubles per repeated failure, and the penalty doubles with it.
   */
  private claimFailed (peer: PeerId, start: number, end: number, err: unknown): void {
    // a local failure (the store, an abort) is not the peer's
    if (penaltyFor(err) === 0) { this.penalize(peer, err); return }
    const w = this.heights.withdraw(peer, start)
    if (w.failures === 0) { this.penalize(peer, err); return }
    const weight = 2 ** Math.min(w.failures - 1, 10)
    this.log.warn('peer %p failed to serve commits %d..%d of its claimed height %d (failure %d): claim withdrawn for %d s, penalty x%d', peer, start, end, w.claimed, w.failures, Math.round(w.forMs / 1000), weight)
    this.penalize(peer, err, weight)
  }

  private eligiblePeers (): ReturnType<PeerHeights['all']> {
    return this.heights.all().filter(p => !this.scores.isBanned(p.peer) && !this.backoff.isHeld(p.peer.toString()))
  }

  private maybeStartSyncTask (signal: AbortSignal): void {
    if (this.syncTask !== undefined || this._phase === 'replaying' || signal.aborted) return
    if (Date.now() < this.noPeerUntil) return
    const store = this.deps.store
    const start = store.highestSynced + 1
    const target = this.heights.highest()
    if (target < start) {
      this.behindSince = undefined
      if (this.heights.size === 0) {
        if (this._phase !== 'synced') this.setPhase('discovering')
        return
      }
      // every known peer is at or below us: synced, unless the verified target (kept when the peer that
      // vouched for it left) is still ahead, when the peers found are only behind it
      const lag = this.heights.target() - store.highestSynced
      if (lag <= 0 || (this._phase === 'synced' && lag <= this.config.syncedLagCommits)) this.setPhase('synced')
      else this.setPhase('waiting-for-peers')
      return
    }
    if (this._phase === 'synced') {
      // hysteresis: a node at the tip stays synced while it is a little behind for a little while (it
      // fetches the new commits all the same); only the verified target counts
      const lag = this.heights.target() - store.highestSynced
      const now = Date.now()
      if (lag <= 0) this.behindSince = undefined
      else this.behindSince ??= now
      const behindMs = this.behindSince === undefined ? 0 : now - this.behindSince
      if (lag > this.config.syncedLagCommits || behindMs > this.config.syncedLagMs) {
        this.log.info('%d commits behind the sync target %d for %d ms: syncing', lag, this.heights.target(), behindMs)
        this.behindSince = undefined
        this.setPhase('syncing')
      }
    } else {
      this.setPhase('syncing')
    }
    this.syncTask = this.syncOnce(start, target, signal)
      .catch(err => {
        if (signal.aborted) return
        this.log.warn('sync task failed: %s', err.message)
        // back off: retrying at once hammers the peers that just failed (a rate-limited peer would
        // be penalized until banned)
        this.noPeerUntil = Date.now() + this.config.waitIntervalWhenNoPeerToSyncContentMs
      })
      .finally(() => {
        this.syncTask = undefined
        // wake the loop at once only when no back-off is in effect: 'wake' clears it
        if (Date.now() >= this.noPeerUntil) this.post({ type: 'wake' })
      })
  }

  /**
   * Sync from `start` towards `target`, range after range (each at most commitSyncBatchSize commits,
   * from one peer chosen by the PeerBalancer). Pipelined, Lodestar-style: up to `syncRangesInFlight`
   * ranges are in flight at once. The commits of range k+1 are fetched and verified (chained to range
   * k's last commit, held in memory) as soon as range k's commits are, and its blocks download and
   * verify while range k's do; ranges are stored strictly in order (range k+1 waits for range k to be
   * stored), and a range is stored only once the one before it is entirely in the executor's channel
   * (which blocks while the executor is behind). Ranges never cross an epoch boundary in flight: the
   * next epoch's committee is stored with the end-of-epoch commit. The block memory budget
   * (`maxTotalFetchedBytes`) is shared evenly by the ranges in flight.
   */
  private async syncOnce (start: number, target: number, signal: AbortSignal): Promise<void> {
    let feeding: Promise<void> = Promise.resolve()
    const depth = this.config.syncRangesInFlight
    // ranges in flight, oldest first; a range that fails aborts the ranges after it (they can no longer
    // be stored), never the ones before it
    const inflight: Array<{ task: Promise<void>, abort: AbortController }> = []
    let firstError: unknown
    let stored: Promise<void> = Promise.resolve() // resolves once the latest range started is stored
    let anchor: CommitAnchor | undefined
    let previousCertifiers: readonly ParsedBlock[] = []
    const settleOldest = async (): Promise<void> => {
      const r = inflight.shift()!
      try {
        await r.task
      } catch (err) {
        firstError ??= err
        for (const later of inflight) later.abort.abort(err)
      }
    }
    try {
      let next = start
      while (next <= target && !signal.aborted && firstError === undefined) {
        const range = await this.fetchRange(next, Math.min(target, next + this.config.commitSyncBatchSize - 1), anchor, signal)
        if (range === undefined) break
        const abort = new AbortController()
        const before = stored
        const task = this.downloadRange(range.range, range.source, previousCertifiers, AbortSignal.any([signal, abort.signal]), async (ready, certifiers) => {
          await before // the previous range is stored first
          await feeding
          await this.persist(ready, certifiers)
          feeding = this.feed(ready, signal)
          feeding.catch(() => {}) // awaited below; an abort is handled by the caller
        }).then(() => { this.notifyLowerPeers() })
        task.catch(() => {}) // settled in order by settleOldest
        stored = task
        inflight.push({ task, abort })
        previousCertifiers = range.range.certifiers
        const last = range.range.commits[range.range.commits.length - 1]
        anchor = { index: last.index, digest: last.digest, epoch: last.epoch, endOfEpoch: last.isEndOfEpoch }
        next = last.index + 1
        // the next epoch's committee comes with this range's last commit: store it before going on
        while (inflight.length >= depth || (last.isEndOfEpoch && inflight.length > 0)) await settleOldest()
        // newer heights may have arrived (pushes) while this range synced
        target = Math.max(target, this.heights.highest())
      }
    } catch (err) {
      firstError ??= err
      for (const r of inflight) r.abort.abort(err)
    } finally {
      while (inflight.length > 0) await settleOldest()
      await feeding
    }
    if (firstError !== undefined) throw firstError
  }

  private async feed (ready: ReadyCommit[], signal: AbortSignal): Promise<void> {
    for (const r of ready) await this.channel.send({ commit: r.commit, blocks: r.blocks }, signal)
  }

  /**
   * The verified commits of one range from one peer (the PeerBalancer's pick, falling back through the
   * others), chained to `anchor` (the range before, when not stored yet). Undefined when no peer could
   * serve it.
   */
  private async fetchRange (start: number, end: number, anchor: CommitAnchor | undefined, signal: AbortSignal): Promise<{ range: VerifiedCommitRange, source: PeerId } | undefined> {
    for (const peer of new PeerBalancer(this.eligiblePeers(), start)) {
      // held since the candidates were listed (another range's request was refused)
      if (this.backoff.isHeld(peer.toString())) continue
      const t0 = Date.now()
      try {
        const range = await fetchAndVerifyCommits(peer, start, end, this.deps, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.config.timeoutMs)]) }, anchor)
        // the certifier blocks are stored with the range, and later count as stored blocks of the next
        // commits (the downloader does not fetch or verify those again): verify their transactions now
        await this.deps.txVerifier.verifyBlocks(range.certifiers)
        this.scores.reward(peer)
        this.heights.served(peer, range.commits[range.commits.length - 1].index, range.commits.length, Date.now() - t0)
        return { range, source: peer }
      } catch (err) {
        if (signal.aborted) throw err
        this.claimFailed(peer, start, end, err)
      }
    }
    if (this._phase !== 'synced') this.setPhase('waiting-for-peers')
    this.noPeerUntil = Date.now() + this.config.waitIntervalWhenNoPeerToSyncContentMs
    const holders = this.eligiblePeers().filter(p => p.height >= start)
    if (holders.length > 0 && holders.every(p => p.lowest > start)) {
      this.log.warn('history missing: commits from %d are only held from %d on', start, Math.min(...holders.map(p => p.lowest)))
      this.deps.onHistoryMissing?.({ from: start, to: Math.min(...holders.map(p => p.lowest)) - 1, peers: holders.map(p => ({ peer: p.peer, lowest: p.lowest, height: p.height })) })
    }
    return undefined
  }

  /**
   * The blocks of a verified range, from the peer that served its commits first, then others that have
   * them (`verified`: the range before's certifier blocks, which may not be stored yet); `store` is
   * called with complete commit prefixes in order (the range's certifier blocks with its last commit).
   */
  private async downloadRange (range: VerifiedCommitRange, source: PeerId, verified: readonly ParsedBlock[], signal: AbortSignal, store: (ready: ReadyCommit[], certifiers: readonly ParsedBlock[]) => Promise<void>): Promise<void> {
    const last = range.commits[range.commits.length - 1]
    const others = [...new PeerBalancer(this.eligiblePeers(), last.index)].filter(p => !p.equals(source))
    const certifiers = range.certifiers
    await this.downloader.download(range.commits, [source, ...others], async (ready) => {
      await store(ready, ready[ready.length - 1].commit.index === last.index ? certifiers : [])
    }, signal, Math.floor(this.config.maxTotalFetchedBytes / this.config.syncRangesInFlight), verified)
  }

  /** Blocks, votes, commits (and certifiers of the range's last commit) and highest synced: one batch. */
  private async persist (ready: ReadyCommit[], certifiers: readonly ParsedBlock[]): Promise<void> {
    const batch = this.deps.store.batch()
    for (const r of ready) {
      for (const b of r.blocks) batch.putBlock(b.ref, b.bytes).putVotes(b.ref, b.block.commitVotes)
      batch.putCommit(r.commit)
    }
    for (const b of certifiers) batch.putBlock(b.ref, b.bytes).putVotes(b.ref, b.block.commitVotes)
    const highest = ready[ready.length - 1].commit.index
    batch.setHighestSynced(highest)
    await batch.write()
    this.syncedCommits += ready.length
    this.rate.push([Date.now(), this.syncedCommits])
    for (const fn of this.listeners.synced) fn(highest)
  }

  /** PushCommit to at most `pushFanout` peers known to be lower than us (PeerHeights.pushTargets). */
  notifyLowerPeers (): void {
    const store = this.deps.store
    const info = { highestSynced: store.highestSynced, lowestAvailable: store.lowestAvailable, genesisDigest: store.chainId }
    for (const p of this.heights.pushTargets(store.highestSynced, this.config.pushFanout)) {
      void this.deps.pushCommit.push(p.peer, info, { signal: AbortSignal.timeout(Math.min(5000, this.config.timeoutMs)) }).catch(() => {})
    }
  }
}
