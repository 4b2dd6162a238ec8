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
import type { Connection, PeerId } from '@libp2p/interface'
import type { SomaConfig } from '../config.ts'
import { ChainStore, type ChainStoreOptions } from '../store/chain-store.ts'
import { CommitExecutor } from '../executor/commit-executor.ts'
import type { GenesisBundle } from '../chain/genesis.ts'
import { ConfigError } from '../errors.ts'
import { toHex } from '../crypto/hash.ts'
import { createLogger, type Logger } from '../utils/logger.ts'
import { createLibp2pNode, parseEntrypoints, releaseLibp2pMetrics, type Entrypoint, type ServiceFactory, type SomaLibp2p } from './libp2p.ts'
import { loadOrCreatePeerKey, type PeerKey } from './peer-key.ts'
import { StatusServer, type StatusReport } from './status-server.ts'
import { findGenesisFile, readGenesisFile } from './genesis-file.ts'
import { commitSyncServices, stateSyncConfig, type StateSync } from '../sync/state-sync.ts'
import { snapshotSyncConfig, snapshotSyncServices, type SnapshotSyncService } from '../snapshot/sync/service.ts'
import { SyncState } from '../snapshot/sync/sync-state.ts'
import type { SnapshotCandidate, SnapshotCandidateSource } from '../snapshot/sync/candidates.ts'
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
export async function resolveSyncMode (config: Pick<SomaConfig, 'syncMode'>, store: ChainStore): Promise<{ snapshot: boolean, reason: string }> {
  const state = new SyncState(store)
  if (await state.stateReplaced()) return { snapshot: true, reason: 'the state is being replaced by a snapshot' }
  if (await state.read() !== undefined) return { snapshot: true, reason: 'a snapshot sync is in progress' }
  const mode = config.syncMode ?? 'auto'
  if (mode === 'snapshot') return { snapshot: true, reason: '--sync-mode snapshot' }
  if (mode === 'commits') return { snapshot: false, reason: '--sync-mode commits' }
  return store.highestSynced === 0
    ? { snapshot: true, reason: 'empty store (--sync-mode auto)' }
    : { snapshot: false, reason: `store at commit ${store.highestSynced} (--sync-mode auto)` }
}

/** How often unconnected entrypoints are redialed. */
export const ENTRYPOINT_REDIAL_MS = 5000

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
  private redialTimer?: NodeJS.Timeout
  private readonly dialing = new Set<string>()

  /** Use createNode(). */
  constructor (init: { config: SomaConfig, store: ChainStore, executor: CommitExecutor, libp2p: SomaLibp2p, peerKey: PeerKey, log: Logger, statusServer?: StatusServer, epoch: number, phase: NodePhase, components: NodeComponent[] }) {
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
    this.executor.on('executed', r => { this.epoch = r.nextEpoch ?? r.epoch })
    this.libp2p.addEventListener('peer:connect', evt => { this.log.info('peer connected: %s (%d peers)', evt.detail.toString(), this.peerCount()) })
    this.libp2p.addEventListener('peer:disconnect', evt => { this.log.info('peer disconnected: %s (%d peers)', evt.detail.toString(), this.peerCount()) })
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
      await this.libp2p.start()
      await this.statusServer?.start()
      for (const c of this.components) await c.start?.()
    } catch (err) {
      await this.stop()
      throw err
    }
    this.state = 'started'
    this.log.info('chain %s, peer id %s, listening on %s', toHex(this.chainId).slice(0, 16), this.peerId.toString(), this.multiaddrs().join(', ') || '(nothing)')
    if (this.statusServer !== undefined) this.log.info('status on %s/status, metrics on %s/metrics', this.statusServer.url, this.statusServer.url)
    if (this.entrypoints.length > 0) {
      this.dialEntrypoints()
      this.redialTimer = setInterval(() => { this.dialEntrypoints() }, ENTRYPOINT_REDIAL_MS)
      this.redialTimer.unref()
    }
  }

  /** Dials every entrypoint that is not connected (libp2p's bootstrap dials once only). */
  private dialEntrypoints (): void {
    for (const e of this.entrypoints) {
      const id = e.peerId.toString()
      if (e.peerId.equals(this.peerId) || this.dialing.has(id) || this.libp2p.getConnections(e.peerId).length > 0) continue
      this.dialing.add(id)
      this.libp2p.dial(e.multiaddr)
        .then((c: Connection) => { this.log.debug('connected to entrypoint %s', c.remoteAddr.toString()) })
        .catch((err: Error) => { if (this.started) this.log.warn('entrypoint %s unreachable: %s', e.multiaddr.toString(), err.message) })
        .finally(() => this.dialing.delete(id))
    }
  }

  /** Stops components (reverse order), the status server and libp2p, and closes the store. Idempotent. */
  async stop (): Promise<void> {
    this.stopping ??= this.stopNow()
    await this.stopping
  }

  private async stopNow (): Promise<void> {
    this.state = 'stopped'
    this.phase = 'stopped'
    if (this.redialTimer !== undefined) clearInterval(this.redialTimer)
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

  /** The /status object: progress, state root, epoch, peers, phase, plus the components' fields. */
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
    report.healthy = healthy
    return report
  }
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
      if (n !== undefined && n.phase !== 'stopped') n.phase = p.phase
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
      if (n !== undefined && n.phase !== 'stopped' && s.running) n.phase = 'snapshot'
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
  parseEntrypoints(config.entrypoints) // fail on bad entrypoints before touching the data dir
  mkdirSync(config.dataDir, { recursive: true })
  const store = await ChainStore.openDataDir(config.dataDir, { writeBufferSize: config.storeWriteBufferBytes, cacheSize: config.storeCacheBytes, ...opts.store, genesis })
  let libp2p: SomaLibp2p | undefined
  try {
    const peerKey = await loadOrCreatePeerKey(config.dataDir)
    const executor = new CommitExecutor(store, { maxBatchCommits: config.executionBatchCommits })
    const mode = opts.commitSync ?? 'sync'
    const snapshot = mode === 'sync' ? await resolveSyncMode(config, store) : { snapshot: false, reason: '' }
    if (snapshot.snapshot) log.info('snapshot sync first: %s', snapshot.reason)
    else if (mode === 'sync' && config.syncMode === 'snapshot') log.info('%s', snapshot.reason)
    // discovery (gossip / DHT), when the node runs it, adds snapshot candidates to asking connected peers
    const discovered: SnapshotCandidateSource = async ({ signal }) => {
      const d = (libp2p?.services as any)?.snapshotDiscovery as { candidateSource?: () => SnapshotCandidateSource, discover?: (o: { signal?: AbortSignal }) => Promise<SnapshotCandidate[]> } | undefined
      if (d?.candidateSource !== undefined) return await d.candidateSource()({ signal })
      if (d?.discover !== undefined) return await d.discover({ signal })
      return []
    }
    const rpc = {
      timeoutMs: config.timeoutMs,
      handlerTimeoutMs: config.handlerTimeoutMs,
      requestsPerSecond: config.inboundRequestsPerSecond,
      maxInboundStreams: config.maxInboundStreams,
      maxOutboundStreams: config.maxOutboundStreams,
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
            startPaused: snapshot.snapshot,
            verifyWorkers: config.verifyWorkers,
            handlerTimeoutMs: config.handlerTimeoutMs,
            inboundRequestsPerSecond: config.inboundRequestsPerSecond,
            maxInboundStreams: config.maxInboundStreams,
            maxOutboundStreams: config.maxOutboundStreams,
            rpc
          }),
          ...snapshotSyncServices({
            ...snapshotSyncConfig(config),
            store,
            sync: snapshot.snapshot,
            rpc,
            candidates: [discovered],
            onDone: (r) => {
              if (r?.outcome === 'synced') void currentEpoch(store).then(e => { if (node !== undefined) node.epoch = e }).catch(() => {})
            }
          })
        }
    libp2p = await createLibp2pNode({ config, chainId: store.chainId, privateKey: peerKey.privateKey, services: { ...syncServices, ...opts.services } })
    const components = [...(opts.components ?? [])]
    components.push({ name: 'serve-quota', status: () => ({ serveQuota: rpc.quota.stats }) })
    if (mode === 'sync') components.unshift(stateSyncComponent(libp2p, () => node), snapshotSyncComponent(libp2p, () => node, log.child('snapshot')))
    let node: SomaNode | undefined
    const where = opts.statusServer === undefined
      ? (config.statusPort === 0 ? undefined : { host: config.statusHost, port: config.statusPort })
      : (opts.statusServer === false ? undefined : { host: opts.statusServer.host ?? config.statusHost, port: opts.statusServer.port })
    const statusServer = where === undefined
      ? undefined
      : new StatusServer({ host: where.host, port: where.port, logger: log, getStatus: async () => await node!.status() })
    node = new SomaNode({ config, store, executor, libp2p, peerKey, log, statusServer, epoch: await currentEpoch(store), phase: opts.phase ?? 'idle', components })
    return node
  } catch (err) {
    if (libp2p !== undefined) releaseLibp2pMetrics(libp2p)
    await store.close()
    throw err
  }
}
