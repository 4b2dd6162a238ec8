/**
 * SomaNode: one node of a Soma chain. It owns the ChainStore (`<dataDir>/chain`), the CommitExecutor,
 * the libp2p host (identity from `<dataDir>/peer.key`) and the status server, and starts and stops
 * them in order.
 *
 * Sync code plugs in two ways:
 * - libp2p services (protocol handlers) through `createNode(config, { services })`, reachable later as
 *   `node.libp2p.services.<name>`;
 * - `NodeComponent`s (`{ name, start, stop, status }`, through `opts.components` or `node.use()`):
 *   started after libp2p and the status server, stopped before them in reverse order; what their
 *   `status()` returns is merged into `/status`. Sync code sets `node.phase` as it goes.
 */
import { existsSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import type { PeerId } from '@libp2p/interface'
import type { SomaConfig } from '../config.ts'
import { ChainStore, type ChainStoreOptions } from '../store/chain-store.ts'
import { CommitExecutor } from '../executor/commit-executor.ts'
import type { GenesisBundle } from '../chain/genesis.ts'
import { ConfigError } from '../errors.ts'
import { toHex } from '../crypto/hash.ts'
import { createLogger, type Logger } from '../utils/logger.ts'
import { createLibp2pNode, parseEntrypoints, releaseLibp2pMetrics, validateAddresses, type Entrypoint, type ServiceFactory, type SomaLibp2p } from './libp2p.ts'
import { loadOrCreatePeerKey, type PeerKey } from './peer-key.ts'
import { StatusServer, type StatusReport } from './status-server.ts'
import { keepEntrypointsConnected, type EntrypointDialer } from './entrypoints.ts'
import { findGenesisFile, readGenesisFile } from './genesis-file.ts'
import { commitSyncServices, stateSyncConfig, type StateSync } from '../sync/state-sync.ts'
import { snapshotSyncConfig, snapshotSyncServices, type SnapshotSyncService } from '../snapshot/sync/service.ts'
import { SyncState } from '../snapshot/sync/sync-state.ts'
import { abandonSnapshotSync } from '../snapshot/sync/snapshot-sync.ts'
import type { WaitingReason } from '../sync/waiting.ts'
import { healthOf, mergeWaiting, NodeWatch, type Health, type WatchedPeer } from './health.ts'
import { VERSION } from '../version.ts'
import { NodeMetrics } from './metrics.ts'
import type { PeerScores } from '../sync/peer-scores.ts'
import type { SnapshotCandidateSource } from '../snapshot/sync/candidates.ts'
import { snapshotDiscoveryConfig, snapshotDiscoveryService, type SnapshotDiscovery } from '../snapshot/discovery.ts'
import { SnapshotRecordChecker } from '../snapshot/discovery/records.ts'
import { snapshotExchange, snapshotExchangeConfig, type SnapshotExchange } from '../snapshot/discovery/exchange.ts'
import { SnapshotStore } from '../snapshot/snapshot-store.ts'
import { prepareArchivalStore } from '../sync/archival.ts'
import { archivalDiscoveryConfig, archivalDiscoveryService, type ArchivalDiscovery, type HistoryMissing } from '../sync/archival-discovery.ts'
import { InboundGuard } from '../net/inbound-guard.ts'
import { archiveSyncComponent, archiveWriterComponent } from '../archive/service.ts'
import { serveQuota } from '../net/rate-limit.ts'

/** Known phases; sync code may use others. */
export type NodePhase = 'idle' | 'syncing' | 'snapshot' | 'producing' | 'synced' | 'done' | 'stopped' | (string & {})

/** A part of the node with a lifecycle (e.g. a sync service). */
export interface NodeComponent {
  readonly name: string
  start?: () => void | Promise<void>
  stop?: () => void | Promise<void>
  /** fields merged into /status */
  status?: () => Record<string, unknown> | Promise<Record<string, unknown>>
  /** false makes /health answer 503 */
  healthy?: () => boolean
}

export interface CreateNodeOptions {
  /** genesis; otherwise `config.genesisFile`, `<dataDir>/genesis.pb`, or the one in an existing store */
  genesis?: GenesisBundle
  /** extra libp2p services (merged over identify, ping, dht, pubsub) */
  services?: Record<string, ServiceFactory>
  /** components started after libp2p, stopped before it */
  components?: NodeComponent[]
  /** @default a logger named 'node' at config.logLevel */
  logger?: Logger
  /**
   * Where the status server listens, overriding `config.statusHost/statusPort`; here port 0 binds an
   * ephemeral port (tests). `false`: no status server. @default config (statusPort 0 disables it)
   */
  statusServer?: { host?: string, port: number } | false
  /** initial phase. @default 'idle' */
  phase?: NodePhase
  /** LevelDB tuning */
  store?: Omit<ChainStoreOptions, 'genesis'>
  /**
   * Commit sync: `'sync'` serves the sync protocols and syncs from peers (a full node); `'serve'` only
   * serves them (the devnet producer); `false` adds neither. The snapshot protocols come with them: every
   * node serves the snapshots it stores, and a syncing node snapshot-syncs first when `config.syncMode`
   * says so (see `resolveSyncMode`). @default 'sync'
   */
  commitSync?: 'sync' | 'serve' | false
}

/**
 * Whether a syncing node starts with snapshot sync: `config.syncMode` 'snapshot', or 'auto' on a store
 * that has synced nothing yet (highest synced 0), and always when a snapshot sync is in progress in the
 * data dir or the store's state was cleared for a snapshot that is not loaded yet (it must be finished
 * before any commit executes). Commit sync then waits for it.
 */
export async function resolveSyncMode (config: Pick<SomaConfig, 'syncMode'> & { archiveUrl?: string }, store: ChainStore): Promise<{ snapshot: boolean, reason: string }> {
  // an archival node never snapshot-syncs (prepareArchivalStore refused a data dir with one in progress)
  if (config.syncMode === 'archival') return { snapshot: false, reason: '--sync-mode archival: every commit from genesis' }
  if (store.archival) return { snapshot: false, reason: 'archival data dir: commit sync from its tip, the full history kept' }
  const state = new SyncState(store)
  if (await state.stateReplaced()) return { snapshot: true, reason: 'the state is being replaced by a snapshot' }
  if (await state.read() !== undefined) return { snapshot: true, reason: 'a snapshot sync is in progress' }
  // archive fast mode (src/archive/) syncs the whole history from genesis: no snapshot
  if (config.archiveUrl !== undefined && config.archiveUrl !== '') return { snapshot: false, reason: '--archive-url' }
  const mode = config.syncMode ?? 'auto'
  if (mode === 'snapshot') return { snapshot: true, reason: '--sync-mode snapshot' }
  if (mode === 'commits') return { snapshot: false, reason: '--sync-mode commits' }
  return store.highestSynced === 0
    ? { snapshot: true, reason: 'empty store (--sync-mode auto)' }
    : { snapshot: false, reason: `store at commit ${store.highestSynced} (--sync-mode auto)` }
}

export { ENTRYPOINT_REDIAL_MS } from './entrypoints.ts'

/** How often the node samples its health (peers, progress, faults) and logs what changed. */
export const WATCH_INTERVAL_MS = 1000

/** Longest back-off between restarts of a failed executor. */
export const MAX_FATAL_RETRY_MS = 5 * 60_000

/** One peer in /status `peerList`. */
export interface PeerStatus {
  id: string
  /** remote address of its connection ('' when not connected) */
  address: string
  connected: boolean
  /** highest synced commit it claims (undefined before it answered) */
  height?: number
  lowestAvailable?: number
  /** smoothed round-trip time of availability queries */
  rttMs?: number
  /** commit-sync peer score (0 is clean; a ban at -100) */
  score: number
  /** ISO time its ban ends, when banned */
  bannedUntil?: string
  /** on another chain (different genesis digest) */
  wrongChain: boolean
}

/** A fault that stopped the node's progress: the executor or a store write failed. */
export interface NodeFault {
  error: Error
  at: number
  /** what failed: 'executor' or 'store write' */
  source: string
  reason: WaitingReason
}

/** ENOSPC, EIO and LevelDB's IO errors: faults of the disk, which may pass (space freed). */
export function isStorageFault (err: any): boolean {
  const text = `${err?.code ?? ''} ${err?.message ?? ''} ${err?.cause?.code ?? ''} ${err?.cause?.message ?? ''}`
  return /ENOSPC|EIO|EROFS|EDQUOT|No space left|Input\/output error|IO error|Read-only file system|quota exceeded/i.test(text)
}

/** Disk full: ENOSPC (or LevelDB's "No space left on device"), EDQUOT. */
export function isDiskFull (err: any): boolean {
  const text = `${err?.code ?? ''} ${err?.message ?? ''} ${err?.cause?.code ?? ''} ${err?.cause?.message ?? ''}`
  return /ENOSPC|EDQUOT|No space left|quota exceeded/i.test(text)
}

export class SomaNode {
  readonly config: SomaConfig
  readonly store: ChainStore
  readonly executor: CommitExecutor
  readonly libp2p: SomaLibp2p
  readonly peerKey: PeerKey
  readonly log: Logger
  /** sync phase shown in /status: 'idle' | 'syncing' | 'producing' | 'synced' | ... */
  phase: NodePhase
  /** current epoch (of the next commit to execute); updated as commits execute */
  epoch: number
  private readonly components: NodeComponent[] = []
  private readonly statusServer?: StatusServer
  private readonly entrypoints: Entrypoint[]
  private state: 'created' | 'starting' | 'started' | 'stopped' = 'created'
  private stopping?: Promise<void>
  private dialer?: EntrypointDialer
  /** when start() completed */
  startedAt = 0
  /** the node's own health checks (peers, stall) */
  readonly watch: NodeWatch
  /** the fault that moved the node to its `failed` phase (cleared when a retry restarts it) */
  fault?: NodeFault
  /** faults since the last executed batch (the back-off doubles with each) */
  private faultRetries = 0
  private retryTimer?: NodeJS.Timeout
  private watchTimer?: NodeJS.Timeout
  private readonly faultListeners: Array<(fault: NodeFault) => void> = []
  /** peers met recently (id -> PeerId), for the wrong-chain check after they were dropped */
  private readonly recentPeers = new Map<string, { peer: PeerId, at: number }>()
  private lastLogged: { health?: string, waiting?: string } = {}
  /** the node's soma_* series beyond the status server's own (src/node/metrics.ts) */
  readonly metrics: NodeMetrics
  /** peer scores already given the node's logger and metrics */
  private readonly attachedScores = new WeakSet<PeerScores>()

  /** Use createNode(). */
  /** whether this node syncs from peers (commitSync 'sync'): then it needs usable peers to be healthy */
  readonly syncing: boolean

  constructor (init: { config: SomaConfig, store: ChainStore, executor: CommitExecutor, libp2p: SomaLibp2p, peerKey: PeerKey, log: Logger, statusServer?: StatusServer, epoch: number, phase: NodePhase, components: NodeComponent[], syncing?: boolean, metrics?: NodeMetrics }) {
    this.syncing = init.syncing ?? false
    this.metrics = init.metrics ?? new NodeMetrics()
    this.config = init.config
    this.store = init.store
    this.executor = init.executor
    this.libp2p = init.libp2p
    this.peerKey = init.peerKey
    this.log = init.log
    this.statusServer = init.statusServer
    this.epoch = init.epoch
    this.phase = init.phase
    this.components.push(...init.components)
    this.entrypoints = parseEntrypoints(init.config.entrypoints)
    this.executor.on('executed', r => { this.epoch = r.nextEpoch ?? r.epoch; this.faultRetries = 0 })
    this.watch = new NodeWatch({ thresholds: init.config, chainId: toHex(init.store.chainId), height: init.store.highestSynced })
    // a store write that fails for the disk (ENOSPC, EIO) stops the node's progress, whoever wrote
    this.store.writeObservers.onError = err => { if (isStorageFault(err) && this.state === 'started') this.enterFailed(err, 'store write') }
    this.store.writeObservers.onWrite = ms => { this.metrics.histogram('soma_leveldb_write_seconds').observe(ms / 1000) }
    this.executor.on('batch', b => {
      this.metrics.histogram('soma_executor_batch_seconds').observe(b.ms / 1000)
      this.metrics.histogram('soma_executor_batch_commits').observe(b.commits)
    })
    this.libp2p.addEventListener('peer:connect', evt => {
      this.recentPeers.set(evt.detail.toString(), { peer: evt.detail, at: Date.now() })
      if (this.recentPeers.size > 1000) this.recentPeers.delete(this.recentPeers.keys().next().value as string)
      this.log.info('peer connected: %s (%d peers)', evt.detail.toString(), this.peerCount())
    })
    this.libp2p.addEventListener('peer:disconnect', evt => { this.log.info('peer disconnected: %s (%d peers)', evt.detail.toString(), this.peerCount()) })
    // a connection closed for an error (a ping that failed, a reset, a muxer error) says why: without
    // this the operator only sees the peer leave, and the requests on it fail
    this.libp2p.addEventListener('connection:open', evt => {
      const conn = evt.detail
      conn.addEventListener('close', (e: Event & { error?: Error, local?: boolean }) => {
        if (e.error === undefined || this.state !== 'started') return
        // `local`: this side aborted it (its own failure, or a write that found the peer gone: EPIPE)
        this.log.warn('connection %s %s (%s) closed%s: %s', conn.direction === 'inbound' ? 'from' : 'to', conn.remotePeer.toString(), conn.remoteAddr.toString(), e.local === true ? ' here' : ' by the peer or the network', e.error.message ?? String(e.error))
      }, { once: true })
    })
  }

  get genesis (): GenesisBundle { return this.store.genesis }
  get chainId (): Uint8Array { return this.store.chainId }
  get peerId (): PeerId { return this.libp2p.peerId }
  get started (): boolean { return this.state === 'started' }

  /** Listen addresses with /p2p/<peer id> (after start()). */
  multiaddrs (): string[] {
    return this.libp2p.getMultiaddrs().map(m => m.toString())
  }

  peerCount (): number {
    return this.libp2p.getPeers().length
  }

  /** The status server's URL, if it runs. */
  get statusUrl (): string | undefined {
    return this.statusServer?.listening === true ? this.statusServer.url : undefined
  }

  /** The status server's bound port, if it runs. */
  get statusPort (): number | undefined {
    return this.statusServer?.listening === true ? this.statusServer.port : undefined
  }

  /** Adds a component; it starts now if the node already runs. */
  async use (component: NodeComponent): Promise<void> {
    this.components.push(component)
    if (this.state === 'started') await component.start?.()
  }

  /** Starts libp2p, the status server, then the components; dials the entrypoints. */
  async start (): Promise<void> {
    if (this.state !== 'created') throw new Error(`node cannot start: it is ${this.state}`)
    this.state = 'starting'
    try {
      try {
        await this.libp2p.start()
      } catch (err: any) {
        throw listenError(err) ?? err
      }
      await this.statusServer?.start()
      for (const c of this.components) await c.start?.()
    } catch (err) {
      await this.stop()
      throw err
    }
    this.state = 'started'
    this.startedAt = Date.now()
    this.watch.lastProgressAt = this.startedAt
    this.watchTimer = setInterval(() => { this.sample() }, WATCH_INTERVAL_MS)
    this.watchTimer.unref()
    this.log.info('chain %s, peer id %s, listening on %s', toHex(this.chainId).slice(0, 16), this.peerId.toString(), this.multiaddrs().join(', ') || '(nothing)')
    if (this.statusServer !== undefined) this.log.info('status on %s/status, metrics on %s/metrics', this.statusServer.url, this.statusServer.url)
    if (this.entrypoints.length > 0) this.dialer = keepEntrypointsConnected(this.libp2p, this.entrypoints, { logger: this.log, dialTimeoutMs: this.config.timeoutMs })
  }

  /** Stops components (reverse order), the status server and libp2p, and closes the store. Idempotent. */
  async stop (): Promise<void> {
    this.stopping ??= this.stopNow()
    await this.stopping
  }

  private async stopNow (): Promise<void> {
    this.state = 'stopped'
    this.phase = 'stopped'
    this.dialer?.stop()
    if (this.watchTimer !== undefined) clearInterval(this.watchTimer)
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer)
    let first: unknown
    const attempt = async (what: string, fn: () => unknown): Promise<void> => {
      try {
        await fn()
      } catch (err: any) {
        this.log.warn('stopping %s failed: %s', what, err?.message ?? err)
        first ??= err
      }
    }
    for (const c of [...this.components].reverse()) await attempt(c.name, () => c.stop?.())
    await attempt('status server', () => this.statusServer?.stop())
    await attempt('libp2p', () => this.libp2p.stop())
    releaseLibp2pMetrics(this.libp2p)
    await attempt('store', () => this.store.close())
    if (first !== undefined) throw first
  }

  /**
   * Calls `fn` when the node enters its `failed` phase. With `exitOnFatal` a listener is expected to end
   * the process (the CLI exits 3) and the node does not retry; without a listener, or without
   * `exitOnFatal`, the node restarts commit sync with back-off.
   */
  onFault (fn: (fault: NodeFault) => void): void { this.faultListeners.push(fn) }

  /**
   * Moves the node to its `failed` phase: logs the error, tells the fault listeners, and (without
   * `exitOnFatal`, when the process does not exit on it) restarts commit sync after a back-off.
   */
  enterFailed (error: Error, source: string): void {
    if (this.fault !== undefined || this.state !== 'started') return
    const at = Date.now()
    const full = isDiskFull(error)
    const code = (error as any)?.code ?? (error as any)?.cause?.code
    const reason: WaitingReason = {
      code: full ? 'disk-full' : 'executor-failed',
      message: `${source} failed: ${error.message}${full ? ' (disk full: free space in ' + this.config.dataDir + ')' : ''}`,
      since: at,
      evidence: { source, error: error.message, code }
    }
    this.fault = { error, at, source, reason }
    this.phase = 'failed'
    this.metrics.counter('soma_node_faults_total').inc({ source, code: reason.code })
    const delay = Math.min(this.config.fatalRetryMs * 2 ** this.faultRetries, MAX_FATAL_RETRY_MS)
    const exits = this.config.exitOnFatal && this.faultListeners.length > 0
    this.log.error('FAILED: %s failed: %s; %s', source, error.message,
      exits ? 'exiting (--exit-on-fatal) so that the supervisor restarts the node' : `restarting commit sync in ${Math.round(delay / 1000)} s (attempt ${this.faultRetries + 1})`)
    for (const fn of this.faultListeners) fn(this.fault)
    if (!exits) {
      this.retryTimer = setTimeout(() => { void this.restartAfterFault() }, delay)
      this.retryTimer.unref()
    }
  }

  /** Restarts commit sync (and so the executor) after a fault, from what the store holds. */
  private async restartAfterFault (): Promise<void> {
    if (this.state !== 'started' || this.fault === undefined) return
    const sync = (this.libp2p.services as any).stateSync as StateSync | undefined
    const fault = this.fault
    this.faultRetries++
    try {
      if (sync !== undefined) {
        await sync.stop()
        this.executor.resetCaches()
        await sync.start()
        sync.afterStart()
      }
      this.log.info('restarted commit sync after the %s failure (attempt %d)', fault.source, this.faultRetries)
      this.fault = undefined
      this.phase = 'syncing'
    } catch (err: any) {
      this.fault = undefined
      this.enterFailed(err, `restart after the ${fault.source} failure`)
    }
  }

  /** Gives a sync's PeerScores the node's logger (penalties and bans at warn) and metrics. */
  private attachScores (scores: PeerScores | undefined, sync: 'commit' | 'snapshot'): void {
    if (scores === undefined || this.attachedScores.has(scores) || typeof scores.onPenalty !== 'function') return
    this.attachedScores.add(scores)
    scores.logger ??= this.log.child(`${sync}-sync:peers`)
    const failures = this.metrics.counter(sync === 'commit' ? 'soma_range_failures_total' : 'soma_chunk_failures_total')
    scores.onPenalty((_peer, reason) => {
      this.metrics.counter('soma_penalties_total').inc({ sync, reason })
      failures.inc({ reason })
    })
    scores.onBan((_peer, reason) => { this.metrics.counter('soma_bans_total').inc({ sync, reason }) })
  }

  /** What the node's own checks see of its peers. */
  private watchedPeers (): WatchedPeer[] {
    const loop = ((this.libp2p.services as any).stateSync as StateSync | undefined)?.eventLoop
    const out: WatchedPeer[] = []
    const connected = new Set<string>()
    for (const peer of this.libp2p.getPeers()) {
      connected.add(peer.toString())
      out.push({ id: peer.toString(), wrongChain: loop?.heights?.isWrongChain?.(peer) === true, banned: loop?.scores?.isBanned?.(peer) === true })
    }
    const now = Date.now()
    for (const [id, r] of this.recentPeers) {
      if (now - r.at > 10 * 60_000) { this.recentPeers.delete(id); continue }
      if (!connected.has(id) && loop?.heights?.isWrongChain?.(r.peer) === true) out.push({ id, wrongChain: true, banned: false })
    }
    return out
  }

  /** Samples faults, peers and progress; logs when the health or the reason the node waits changes. */
  sample (): { waiting?: WaitingReason, health: Health } {
    const sync = (this.libp2p.services as any).stateSync as StateSync | undefined
    this.attachScores(sync?.eventLoop?.scores, 'commit')
    this.attachScores(((this.libp2p.services as any).snapshotSync as SnapshotSyncService | undefined)?.snapshotSync?.scores, 'snapshot')
    const loopError = sync?.eventLoop?.fatalError
    if (loopError !== undefined && this.fault === undefined && this.state === 'started') this.enterFailed(loopError, 'executor')
    const snap = (this.libp2p.services as any).snapshotSync as SnapshotSyncService | undefined
    const snapRunning = snap?.running === true
    const peers = this.watchedPeers()
    const checkPeers = this.syncing
    const progress = sync?.progress()
    if (this.phase !== 'stopped' && this.phase !== 'failed' && this.syncing) {
      if (snapRunning) this.phase = 'snapshot'
      else if (progress !== undefined && !progress.paused) this.phase = progress.phase
    }
    const height = this.store.highestSynced
    this.watch.sample({ height, peers, checkPeers, snapshotBytes: snapRunning ? snap?.progress()?.bytes.done : undefined })
    const machines: Array<WaitingReason | undefined> = snapRunning
      ? [(snap as any).waiting?.(), (sync as any)?.waiting?.()]
      : [(sync as any)?.waiting?.(), snap?.error !== undefined ? { code: 'snapshot-stalled', message: `snapshot sync failed: ${snap.error.message}`, since: this.startedAt, evidence: { error: snap.error.message } } : undefined]
    const waiting = this.state === 'started'
      ? mergeWaiting(this.fault?.reason, machines, this.watch.reasons({ peers, checkPeers, height, phase: this.phase }))
      : undefined
    const health = this.state === 'started' ? healthOf(this.phase, waiting, this.config) : { state: 'stuck' as const, httpStatus: 503 }
    if (this.state === 'started') {
      const w = waiting === undefined ? '' : `${waiting.code}: ${waiting.message}`
      if (w !== (this.lastLogged.waiting ?? '') && waiting?.code !== this.lastLogged.waiting?.split(':')[0]) {
        if (waiting !== undefined) this.log.warn('waiting: %s', w)
        else if (this.lastLogged.waiting !== undefined && this.lastLogged.waiting !== '') this.log.info('no longer waiting (was %s)', this.lastLogged.waiting.split(':')[0])
      }
      this.lastLogged.waiting = w
      if (health.state !== this.lastLogged.health) {
        if (health.state === 'stuck') this.log.error('health: stuck (503): %s', waiting === undefined ? 'unhealthy' : `${waiting.code}: ${waiting.message}`)
        else if (this.lastLogged.health !== undefined) this.log.info('health: %s (%d)', health.state, health.httpStatus)
        this.lastLogged.health = health.state
      }
    }
    return { waiting, health }
  }

  /** Each connected peer (and each peer commit sync knows) with its heights, RTT, score and ban. */
  peerList (limit = 200): PeerStatus[] {
    const loop = ((this.libp2p.services as any).stateSync as StateSync | undefined)?.eventLoop
    const byId = new Map<string, { peer: PeerId, address: string, connected: boolean }>()
    for (const c of this.libp2p.getConnections()) {
      if (!byId.has(c.remotePeer.toString())) byId.set(c.remotePeer.toString(), { peer: c.remotePeer, address: c.remoteAddr.toString(), connected: true })
    }
    for (const h of loop?.heights?.all?.() ?? []) {
      if (!byId.has(h.peer.toString())) byId.set(h.peer.toString(), { peer: h.peer, address: '', connected: false })
    }
    return [...byId.values()].slice(0, limit).map(({ peer, address, connected }) => {
      const h = loop?.heights?.get?.(peer)
      const until = loop?.scores?.bannedUntilOf?.(peer)
      return {
        id: peer.toString(),
        address,
        connected,
        height: h?.height,
        lowestAvailable: h?.lowest,
        rttMs: h === undefined ? undefined : Math.round(h.rttMs),
        score: loop?.scores?.score?.(peer) ?? 0,
        bannedUntil: until === undefined ? undefined : new Date(until).toISOString(),
        wrongChain: loop?.heights?.isWrongChain?.(peer) === true
      }
    })
  }

  /**
   * The /status object: progress, state root, epoch, peers, phase, plus the components' fields; `waiting`
   * (why the node does not progress, with evidence), `health` (what /health answers), `peerList`,
   * `lastCommitAt`, `version`, `uptimeSeconds`.
   */
  async status (): Promise<StatusReport> {
    const p = this.store.getProgress()
    const root = this.store.isClosed ? undefined : await this.store.getStateRoot(p.highestExecuted)
    let healthy = this.state === 'started' && this.libp2p.status === 'started' && !this.store.isClosed
    const report: StatusReport = {
      chainId: toHex(this.chainId),
      peerId: this.peerId.toString(),
      listen: this.multiaddrs(),
      highestSynced: p.highestSynced,
      highestExecuted: p.highestExecuted,
      lowestAvailable: p.lowestAvailable,
      archival: this.store.isClosed ? false : this.store.archival,
      stateRoot: root === undefined ? '' : toHex(root),
      epoch: this.epoch,
      peers: this.peerCount(),
      phase: this.phase,
      executedTransactions: this.executor.stats.transactions,
      healthy
    }
    for (const c of this.components) {
      if (c.status !== undefined) Object.assign(report, await c.status())
      if (c.healthy !== undefined && !c.healthy()) healthy = false
    }
    const { waiting, health } = this.sample()
    if (health.state === 'stuck') healthy = false
    if (!healthy && health.httpStatus !== 503) Object.assign(health, { state: 'stuck', httpStatus: 503 })
    report.phase = this.phase
    report.healthy = healthy
    report.health = health.state
    report.healthStatus = health.httpStatus
    report.waiting = waiting
    report.peerList = this.peerList()
    report.lastCommitAt = this.watch.lastCommitAt === undefined ? undefined : new Date(this.watch.lastCommitAt).toISOString()
    report.version = VERSION
    report.uptimeSeconds = this.startedAt === 0 ? 0 : Math.round((Date.now() - this.startedAt) / 1000)
    const peers = this.watchedPeers()
    this.metrics.update(report, {
      connected: report.peers,
      usable: peers.filter(p => !p.wrongChain && !p.banned).length,
      banned: peers.filter(p => p.banned).length,
      wrong_chain: peers.filter(p => p.wrongChain).length
    })
    return report
  }
}

/**
 * libp2p's error for addresses it cannot listen on (a multi-line message with stack traces) as one line
 * naming each address and why: `cannot listen on /ip4/127.0.0.1/tcp/7700: the address is in use …`.
 */
export function listenError (err: any): ConfigError | undefined {
  const text = String(err?.message ?? '')
  if (err?.name !== 'UnsupportedListenAddressesError' && !/EADDRINUSE|EADDRNOTAVAIL|EACCES/.test(text)) return undefined
  const parts: string[] = []
  for (const m of text.matchAll(/^\s*(\/\S+): (?:\w*Error: )?(.*)$/gm)) {
    const why = /EADDRINUSE/.test(m[2]) ? 'the address is in use (another soma-sync running?)' : /EADDRNOTAVAIL/.test(m[2]) ? 'no such local address' : /EACCES/.test(m[2]) ? 'permission denied (a port below 1024?)' : m[2]
    parts.push(`${m[1]}: ${why}`)
  }
  return new ConfigError(`cannot listen on ${parts.length > 0 ? parts.join('; ') : text.split('\n')[0]}: choose another --listen address`, { cause: err })
}

/** Reports commit-sync progress in /status and keeps `node.phase` in step with the sync loop. */
function stateSyncComponent (libp2p: SomaLibp2p, node: () => SomaNode | undefined): NodeComponent {
  const sync = (): StateSync | undefined => (libp2p.services as any).stateSync as StateSync | undefined
  return {
    name: 'state-sync',
    status: () => {
      const p = sync()?.progress()
      if (p === undefined) return {}
      const n = node()
      if (n !== undefined && n.phase !== 'stopped' && n.phase !== 'failed' && !p.paused) n.phase = p.phase
      return { sync: { target: p.target, knownPeers: p.peers, commitsPerSecond: Math.round(p.commitsPerSecond * 10) / 10, syncedCommits: p.syncedCommits } }
    },
    healthy: () => sync()?.eventLoop?.fatalError === undefined
  }
}

/**
 * Reports snapshot-sync progress in /status (`snapshot`: phase, commit, chunks, bytes, rate, peers,
 * ETA), keeps `node.phase` at 'snapshot' while it runs, logs its milestones, and updates the node's epoch
 * once the snapshot is loaded.
 */
function snapshotSyncComponent (libp2p: SomaLibp2p, node: () => SomaNode | undefined, log: Logger): NodeComponent {
  const svc = (): SnapshotSyncService | undefined => (libp2p.services as any).snapshotSync as SnapshotSyncService | undefined
  let lastPhase = ''
  return {
    name: 'snapshot-sync',
    start: () => {
      const sync = svc()?.snapshotSync
      if (sync === undefined) return
      sync.on('chosen', (m, resumed) => { log.info('%s the snapshot of commit %d (epoch %d): %d chunks, %d bytes', resumed ? 'resuming' : 'syncing', m.commitIndex, m.epoch, m.chunkCount, m.totalBytes) })
      sync.on('phase', p => {
        if (p === lastPhase) return
        lastPhase = p
        if (p === 'done') log.info('snapshot loaded: %d chunks fetched (%d bytes), %d reused; commit sync catches up from its commit + 1', sync.stats.fetchedChunks, sync.stats.fetchedBytes, sync.stats.reusedChunks)
        else if (p === 'none') log.info('no snapshot ahead of this store: commit sync')
        else log.debug('snapshot sync: %s', p)
      })
    },
    status: () => {
      const s = svc()
      const p = s?.progress()
      if (s === undefined || p === undefined) return {}
      const n = node()
      if (n !== undefined && n.phase !== 'stopped' && n.phase !== 'failed' && s.running) n.phase = 'snapshot'
      return {
        snapshot: {
          phase: p.phase,
          commit: p.commit,
          epoch: p.epoch,
          chunks: p.chunks,
          bytes: p.bytes,
          fetched: p.fetched,
          reused: p.reused,
          mbPerSecond: Math.round(p.bytesPerSecond / 1e5) / 10,
          peers: p.peers,
          etaSeconds: p.etaSeconds === undefined ? undefined : Math.ceil(p.etaSeconds),
          listing: p.listing,
          load: p.load,
          error: s.error?.message
        }
      }
    },
    healthy: () => svc()?.error === undefined
  }
}

/** The epoch of the next commit to execute, from the highest executed commit (0 if none). */
async function currentEpoch (store: ChainStore): Promise<number> {
  if (store.highestExecuted === 0) return 0
  const c = await store.getCommit(store.highestExecuted)
  if (c === undefined) return 0
  return c.isEndOfEpoch ? c.epoch + 1 : c.epoch
}

/** Finds the genesis: opts, then config.genesisFile, then `<dataDir>/genesis.pb`. */
function resolveGenesis (config: SomaConfig, opts: CreateNodeOptions): GenesisBundle | undefined {
  if (opts.genesis !== undefined) return opts.genesis
  if (config.genesisFile !== '') return readGenesisFile(config.genesisFile)
  const file = findGenesisFile(config.dataDir)
  return file === undefined ? undefined : readGenesisFile(file)
}

/**
 * Opens the node's store (creating it from the genesis if empty), its peer key, executor, libp2p host
 * and status server. Nothing listens until `start()`.
 * Errors: ConfigError (no genesis, bad addresses, corrupt key), ForeignStoreError (data dir of another
 * chain), StoreError (locked, corrupt).
 */
export async function createNode (config: SomaConfig, opts: CreateNodeOptions = {}): Promise<SomaNode> {
  const log = opts.logger ?? createLogger('node', { level: config.logLevel })
  const genesis = resolveGenesis(config, opts)
  if (genesis === undefined && !existsSync(path.join(config.dataDir, 'chain', 'CURRENT'))) {
    throw new ConfigError(`no genesis for ${path.resolve(config.dataDir)}: pass --genesis-file <file> (a devnet writes <its data dir>/genesis.pb) or copy it to ${path.join(config.dataDir, 'genesis.pb')}`)
  }
  validateAddresses(config) // fail on bad addresses before touching the data dir
  const firstStart = !existsSync(path.join(config.dataDir, 'chain', 'CURRENT'))
  mkdirSync(config.dataDir, { recursive: true })
  const t0 = Date.now()
  if (firstStart && genesis !== undefined) {
    const big = genesis.genesis.accounts.length >= 100_000
    log.info('first start: creating the store in %s from the genesis (%d accounts, %d validators)%s', path.join(config.dataDir, 'chain'), genesis.genesis.accounts.length, genesis.genesis.committee.authorities.length, big ? '; a big genesis takes a while' : '')
  }
  const store = await ChainStore.openDataDir(config.dataDir, { writeBufferSize: config.storeWriteBufferBytes, cacheSize: config.storeCacheBytes, logger: log.child('store'), ...opts.store, genesis })
  if (firstStart && genesis !== undefined && Date.now() - t0 >= 1000) log.info('genesis written in %s s', ((Date.now() - t0) / 1000).toFixed(1))
  let libp2p: SomaLibp2p | undefined
  try {
    const peerKey = await loadOrCreatePeerKey(config.dataDir)
    const executor = new CommitExecutor(store, { maxBatchCommits: config.executionBatchCommits })
    const mode = opts.commitSync ?? 'sync'
    if (config.snapshotAbandon === true) await abandonSnapshotSync(store, log)
    if (mode !== false && config.syncMode === 'archival') await prepareArchivalStore(store, log.child('archival'))
    else if (mode !== false && store.archival) log.info('archival data dir: it keeps its full history and advertises lowest available commit 0 whatever --sync-mode says')
    const snapshot = mode === 'sync' ? await resolveSyncMode(config, store) : { snapshot: false, reason: '' }
    if (snapshot.snapshot) log.info('snapshot sync first: %s', snapshot.reason)
    else if (mode === 'sync' && config.syncMode === 'snapshot') log.info('%s', snapshot.reason)
    // archive fast mode: history from --archive-url first, commit sync held until it ends
    const archiveFast = mode === 'sync' && !snapshot.snapshot && config.archiveUrl !== ''
    // snapshot discovery finds serving peers to connect to: it asks the connected peers which snapshots
    // they know of and who serves them (/soma/snapshot-peers, answered by every node from the gossip
    // announcements it verified), adds the announcers and DHT providers it knows, and dials them. The
    // snapshot itself is always what a connected peer offers on /soma/snapshot-manifest (asked by the
    // sync each round, and at once when a peer connects), so nothing it learns is taken on trust.
    const snapshotDiscovery = (): SnapshotDiscovery | undefined => (libp2p?.services as any)?.snapshotDiscovery as SnapshotDiscovery | undefined
    const discovered: SnapshotCandidateSource = async ({ signal, penalize }) => {
      const x = (libp2p?.services as any)?.snapshotExchange as SnapshotExchange | undefined
      if (x !== undefined) await x.find({ signal, penalize, extraTargets: snapshotDiscovery()?.servingPeers(x.config.intervalMs) })
      return []
    }
    const archivalDiscovery = (): ArchivalDiscovery | undefined => (libp2p?.services as any)?.archivalDiscovery as ArchivalDiscovery | undefined
    const rpc = {
      timeoutMs: config.timeoutMs,
      handlerTimeoutMs: config.handlerTimeoutMs,
      requestsPerSecond: config.inboundRequestsPerSecond,
      maxInboundStreams: config.maxInboundStreams,
      maxOutboundStreams: config.maxOutboundStreams,
      // one score per peer over every protocol it breaks as a client (framing, undecodable requests)
      guard: new InboundGuard({ banMs: config.peerBanMs, log: log.child('inbound') }),
      logger: log.child('rpc'),
      // one byte quota (per peer and total) over every protocol this node serves
      quota: serveQuota(config, log.child('quota'))
    }
    const syncServices = mode === false
      ? {}
      : {
          ...commitSyncServices({
            ...stateSyncConfig(config),
            store,
            executor,
            sync: mode === 'sync',
            startPaused: snapshot.snapshot || archiveFast,
            logger: log.child('commit-sync'),
            verifyWorkers: config.verifyWorkers,
            handlerTimeoutMs: config.handlerTimeoutMs,
            inboundRequestsPerSecond: config.inboundRequestsPerSecond,
            maxInboundStreams: config.maxInboundStreams,
            maxOutboundStreams: config.maxOutboundStreams,
            // history below every peer's lowest available commit: find and dial archival peers
            onHistoryMissing: (m: HistoryMissing) => { archivalDiscovery()?.historyMissing(m) },
            rpc
          }),
          // archival nodes announce themselves; every node listens (and forwards), and looks them up
          archivalDiscovery: archivalDiscoveryService({ store, config: archivalDiscoveryConfig(config), logger: log.child('archival') }),
          // every node listens to snapshot announcements (and forwards them), announces the snapshots it
          // serves, and tells peers which snapshots it knows of and who serves them
          snapshotDiscovery: snapshotDiscoveryService({ store, snapshotStore: new SnapshotStore(store), config: snapshotDiscoveryConfig(config), logger: log.child('snapshot-discovery') }),
          snapshotExchange: snapshotExchange({
            ...rpc,
            checker: new SnapshotRecordChecker({ chainId: store.chainId, committee: async e => store.isClosed ? undefined : await store.getCommittee(e) }),
            book: async max => await snapshotDiscovery()?.book(max) ?? [],
            config: snapshotExchangeConfig(config),
            logger: log.child('snapshot-discovery')
          }),
          ...snapshotSyncServices({
            ...snapshotSyncConfig(config),
            store,
            sync: snapshot.snapshot,
            rpc,
            logger: log.child('snapshot-sync'),
            candidates: [discovered],
            onDone: (r) => {
              if (r?.outcome === 'synced') void currentEpoch(store).then(e => { if (node !== undefined) node.epoch = e }).catch(() => {})
            }
          })
        }
    libp2p = await createLibp2pNode({ config, chainId: store.chainId, privateKey: peerKey.privateKey, services: { ...syncServices, ...opts.services } })
    const components = [...(opts.components ?? [])]
    components.push({ name: 'serve-quota', status: () => ({ serveQuota: rpc.quota.stats }) })
    const metrics = new NodeMetrics()
    if (mode === 'sync') components.unshift(stateSyncComponent(libp2p, () => node), snapshotSyncComponent(libp2p, () => node, log.child('snapshot')))
    if (mode !== false) components.push({ name: 'archival-discovery', status: () => archivalDiscovery()?.status() ?? {} })
    if (mode !== false) components.push({ name: 'snapshot-discovery', status: () => ({ ...snapshotDiscovery()?.status(), snapshotExchange: ((libp2p?.services as any)?.snapshotExchange as SnapshotExchange | undefined)?.stats }) })
    if (config.archiveDir !== '') components.push(archiveWriterComponent({ config, store, executor, log }))
    if (archiveFast) {
      const l = libp2p
      components.push(archiveSyncComponent({
        config,
        store,
        executor,
        log,
        fetchCommits: () => (l.services as any).fetchCommits,
        fetchBlocks: () => (l.services as any).fetchBlocks,
        connectedPeers: () => [...new Map(l.getConnections().map(c => [c.remotePeer.toString(), c.remotePeer])).values()],
        resumeCommitSync: () => { ((l.services as any).stateSync as StateSync | undefined)?.resume() },
        setPhase: (p) => { if (node !== undefined && node.phase !== 'stopped') node.phase = p }
      }))
    }
    let node: SomaNode | undefined
    const where = opts.statusServer === undefined
      ? (config.statusPort === 0 ? undefined : { host: config.statusHost, port: config.statusPort })
      : (opts.statusServer === false ? undefined : { host: opts.statusServer.host ?? config.statusHost, port: opts.statusServer.port })
    const statusServer = where === undefined
      ? undefined
      : new StatusServer({ host: where.host, port: where.port, logger: log, getStatus: async () => await node!.status(), registries: [metrics.registry] })
    node = new SomaNode({ metrics, config, store, executor, libp2p, peerKey, log, statusServer, epoch: await currentEpoch(store), phase: opts.phase ?? 'idle', components, syncing: mode === 'sync' })
    return node
  } catch (err) {
    if (libp2p !== undefined) releaseLibp2pMetrics(libp2p)
    await store.close()
    throw err
  }
}
