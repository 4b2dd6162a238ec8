/**
 * The snapshot-sync libp2p services. A host application adds them next to commit sync's:
 *
 * ```ts
 * const node = await createLibp2p({
 *   transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()],
 *   services: {
 *     identify: identify(),
 *     ...commitSyncServices({ store, executor, startPaused: true }),
 *     ...snapshotSyncServices({ store, sync: true })
 *   }
 * })
 * ```
 *
 * `snapshotManifest`, `snapshotFilter`, `snapshotListing` and `snapshotChunks` are the wire protocols
 * (servers backed by the store's SnapshotStore, and clients); every node serves the snapshots it
 * stores. `snapshotSync` runs snapshot sync when `sync` is set: it finds the protocol services, and
 * commit sync's `epochProofs` and `fetchCommits`, among the node's components by those names, and
 * when the snapshot is loaded (or none is found) it resumes the `stateSync` service (held with
 * `startPaused`), which catches up from the snapshot's commit + 1.
 */
import { serviceCapabilities, serviceDependencies, type ComponentLogger, type Libp2pEvents, type PeerId, type Startable, type TypedEventTarget } from '@libp2p/interface'
import type { ConnectionManager } from '@libp2p/interface-internal'
import type { ChainStore } from '../../store/chain-store.ts'
import { DEFAULTS, type SomaConfig } from '../../config.ts'
import type { RpcInit } from '../../net/rpc.ts'
import { createLogger, type Logger } from '../../utils/logger.ts'
import type { WaitingReason } from '../../sync/waiting.ts'
import { SyncState } from './sync-state.ts'
import { VerifyPool } from '../../crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../../sync/block-verifier.ts'
import type { EpochProofs } from '../../sync/protocols/epoch-proofs.ts'
import type { FetchCommits } from '../../sync/protocols/fetch-commits.ts'
import type { StateSync } from '../../sync/state-sync.ts'
import { snapshotManifest, type SnapshotManifestService } from '../protocols/snapshot-manifest.ts'
import { snapshotFilter, type SnapshotFilterService } from '../protocols/snapshot-filter.ts'
import { snapshotListing, type SnapshotListingService } from '../protocols/snapshot-listing.ts'
import { snapshotChunks, type SnapshotChunksService } from '../protocols/snapshot-chunks.ts'
import type { SnapshotCandidateSource } from './candidates.ts'
import { SnapshotSync, type SnapshotSyncConfig, type SnapshotSyncProgress, type SnapshotSyncResult } from './snapshot-sync.ts'

export interface SnapshotSyncInit extends Partial<SnapshotSyncConfig> {
  store: ChainStore
  /** Run snapshot sync when the node starts (false: serve only). @default false */
  sync?: boolean
  /** Discovery: candidate sources besides asking connected peers. */
  candidates?: SnapshotCandidateSource[]
  /** Signature checks of certifier blocks (committee sync, commit S). @default a main-thread pool */
  verifyPool?: VerifyPool
  /** Called when snapshot sync ends (synced, none found, or failed). */
  onDone?: (result: SnapshotSyncResult | undefined, err?: Error) => void
  /**
   * Where the sync logic logs (phases, chosen snapshot, penalties, fallbacks, failures at info/warn/error).
   * @default a logger named 'snapshot-sync' at level info, to stderr
   */
  logger?: Logger
}

export interface SnapshotSyncComponents {
  connectionManager: ConnectionManager
  events: TypedEventTarget<Libp2pEvents>
  logger: ComponentLogger
  snapshotManifest: SnapshotManifestService
  snapshotFilter: SnapshotFilterService
  snapshotListing: SnapshotListingService
  snapshotChunks: SnapshotChunksService
  epochProofs: EpochProofs
  fetchCommits: FetchCommits
}

export class SnapshotSyncService implements Startable {
  readonly [Symbol.toStringTag] = '@soma/snapshot-sync'
  readonly [serviceCapabilities] = ['@soma/snapshot-sync']
  /** what a syncing node needs; none when it only serves */
  readonly [serviceDependencies]: string[]
  private readonly components: SnapshotSyncComponents
  private readonly init: SnapshotSyncInit
  private readonly log: Logger
  private sync?: SnapshotSync
  private controller?: AbortController
  private task?: Promise<void>
  private pool?: VerifyPool
  /** how the last run ended */
  result?: SnapshotSyncResult
  error?: Error
  private readonly onConnect = (evt: CustomEvent<PeerId>): void => { this.sync?.peerConnected(evt.detail) }
  private readonly onIdentify = (evt: CustomEvent<{ peerId: PeerId }>): void => { this.sync?.peerConnected(evt.detail.peerId) }

  constructor (components: SnapshotSyncComponents, init: SnapshotSyncInit) {
    this.components = components
    this.init = init
    this.log = init.logger ?? createLogger('snapshot-sync')
    this[serviceDependencies] = init.sync === true
      ? ['@soma/snapshot-manifest', '@soma/snapshot-filter', '@soma/snapshot-listing', '@soma/snapshot-chunks', '@soma/epoch-proofs', '@soma/fetch-commits']
      : []
  }

  /** The state machine (created at start when `sync` is set). */
  get snapshotSync (): SnapshotSync | undefined { return this.sync }
  /** Resolves when the run ends (undefined when not running). */
  get done (): Promise<void> | undefined { return this.task }
  get running (): boolean { return this.controller !== undefined && this.result === undefined && this.error === undefined }

  async start (): Promise<void> {
    // rows left by a sync that ended (anchored) right before a kill: nothing reads them again
    if (this.sync === undefined && await new SyncState(this.init.store).sweepOrphans()) this.log.info('deleted the rows of a finished snapshot sync left by an interrupted cleanup')
    if (this.init.sync !== true || this.sync !== undefined) return
    const c = this.components
    const store = this.init.store
    this.pool = this.init.verifyPool ?? new VerifyPool({ workers: 0 })
    this.sync = new SnapshotSync({
      store,
      manifest: c.snapshotManifest,
      filter: c.snapshotFilter,
      listing: c.snapshotListing,
      chunks: c.snapshotChunks,
      epochProofs: c.epochProofs,
      fetchCommits: c.fetchCommits,
      blockVerifier: new SignedBlockVerifier(this.pool, store.chainId),
      connectedPeers: () => [...new Map(c.connectionManager.getConnections().map(conn => [conn.remotePeer.toString(), conn.remotePeer])).values()],
      disconnect: async (peer) => { await c.connectionManager.closeConnections(peer) },
      candidates: this.init.candidates,
      logger: this.log
    }, this.init)
    c.events.addEventListener('peer:connect', this.onConnect)
    c.events.addEventListener('peer:identify', this.onIdentify as any)
  }

  /** Snapshot sync starts once libp2p is up, so that connected peers are seen. */
  afterStart (): void {
    const sync = this.sync
    if (sync === undefined || this.controller !== undefined) return
    this.controller = new AbortController()
    const signal = this.controller.signal
    this.task = sync.run(signal).then(r => {
      this.result = r
      this.resumeCommitSync()
      this.init.onDone?.(r)
    }, (err: Error) => {
      if (signal.aborted) return
      this.error = err
      this.log.error('snapshot sync failed: %s', err.message)
      this.init.onDone?.(undefined, err)
    })
  }

  /**
   * Stops the snapshot sync run now (the node keeps running; commit sync stays held). What it stored is
   * kept: the next start resumes it.
   */
  cancel (reason: Error = new Error('snapshot sync cancelled')): void {
    this.controller?.abort(reason)
  }

  /** Lets the node's commit sync (held with startPaused) run. */
  private resumeCommitSync (): void {
    let stateSync: StateSync | undefined
    try { stateSync = (this.components as any).stateSync as StateSync | undefined } catch {}
    stateSync?.resume()
  }

  async stop (): Promise<void> {
    const c = this.components
    c.events.removeEventListener('peer:connect', this.onConnect)
    c.events.removeEventListener('peer:identify', this.onIdentify as any)
    this.controller?.abort(new Error('snapshot sync stopping'))
    await this.task
    this.controller = undefined
    this.task = undefined
    if (this.init.verifyPool === undefined) await this.pool?.close()
    this.pool = undefined
    this.sync = undefined
  }

  progress (): SnapshotSyncProgress | undefined { return this.sync?.progress() }

  /** Why snapshot sync is not progressing (undefined while it progresses, or when it does not run). */
  waiting (): WaitingReason | undefined { return this.running ? this.sync?.waiting() : undefined }
}

export function snapshotSync (init: SnapshotSyncInit): (components: SnapshotSyncComponents) => SnapshotSyncService {
  return (components) => new SnapshotSyncService(components, init)
}

export interface SnapshotSyncServicesInit extends SnapshotSyncInit {
  /** Limits of the wire protocols (rate, streams, timeouts); from the config when omitted. */
  rpc?: RpcInit
  /** Inbound chunk requests one peer may make per second. @default 200 */
  chunkRequestsPerSecond?: number
  /** Largest filter served or accepted. @default 128 MiB */
  maxFilterBytes?: number
}

/** snapshotSync's config (and the protocol limits) from a SomaConfig. */
export function snapshotSyncConfig (config: Partial<SomaConfig> = {}): Partial<SnapshotSyncServicesInit> {
  const v = <K extends keyof SomaConfig>(k: K): SomaConfig[K] => (config[k] ?? DEFAULTS[k]) as SomaConfig[K]
  return {
    maxRequestsPerPeer: v('snapshotMaxRequestsPerPeer'),
    maxChunksPerRequest: v('snapshotMaxChunksPerRequest'),
    maxChunkResponseBytes: v('snapshotChunkResponseBytes'),
    maxInflightBytes: v('snapshotMaxInflightBytes'),
    listingPageRows: v('snapshotListingPageRows'),
    maxFilterBytes: v('snapshotMaxFilterBytes'),
    minPeers: v('snapshotWaitForPeers'),
    peerWaitMs: v('snapshotPeerWaitMs'),
    findTimeoutMs: v('snapshotFindTimeoutMs'),
    chunkRequestsPerSecond: v('snapshotChunkRequestsPerSecond'),
    keep: v('snapshotKeep'),
    hashWorkers: v('verifyWorkers'),
    timeoutMs: v('timeoutMs'),
    peerBanMs: v('peerBanMs'),
    stallTimeoutMs: v('snapshotStallTimeoutMs'),
    waitReminderMs: v('snapshotWaitReminderMs')
  }
}

/** The four protocol services and the snapshot-sync service, under the names `snapshotSync` expects. */
export function snapshotSyncServices (init: SnapshotSyncServicesInit): {
  snapshotManifest: ReturnType<typeof snapshotManifest>
  snapshotFilter: ReturnType<typeof snapshotFilter>
  snapshotListing: ReturnType<typeof snapshotListing>
  snapshotChunks: ReturnType<typeof snapshotChunks>
  snapshotSync: ReturnType<typeof snapshotSync>
} {
  const rpc: RpcInit = {
    timeoutMs: init.timeoutMs ?? DEFAULTS.timeoutMs,
    handlerTimeoutMs: DEFAULTS.handlerTimeoutMs,
    requestsPerSecond: DEFAULTS.inboundRequestsPerSecond,
    maxInboundStreams: DEFAULTS.maxInboundStreams,
    maxOutboundStreams: DEFAULTS.maxOutboundStreams,
    ...init.rpc
  }
  const store = init.store
  return {
    snapshotManifest: snapshotManifest({ ...rpc, store }),
    // a filter is asked once per sync and can be large: a tighter rate
    snapshotFilter: snapshotFilter({ ...rpc, requestsPerSecond: Math.min(rpc.requestsPerSecond ?? 50, 5), store, maxFilterBytes: init.maxFilterBytes }),
    snapshotListing: snapshotListing({ ...rpc, store, maxRowsPerPage: init.listingPageRows }),
    snapshotChunks: snapshotChunks({ ...rpc, requestsPerSecond: init.chunkRequestsPerSecond ?? 200, store, maxChunksPerRequest: init.maxChunksPerRequest, maxChunkResponseBytes: init.maxChunkResponseBytes, maxServeBytes: init.maxInflightBytes }),
    snapshotSync: snapshotSync(init)
  }
}
