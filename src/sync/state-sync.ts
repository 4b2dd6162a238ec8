/**
 * The commit-sync libp2p services. A host application adds them to its own libp2p node:
 *
 * ```ts
 * const node = await createLibp2p({
 *   transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()],
 *   services: { identify: identify(), ...commitSyncServices({ store, executor }) }
 * })
 * ```
 *
 * `commitAvailability`, `fetchCommits`, `fetchBlocks` and `pushCommit` are the wire protocols (each
 * also usable alone); `stateSync` is the sync logic (StateSyncEventLoop) and finds the protocol
 * services among the node's components by those names. `epochProofs` serves (and fetches) the trust
 * chain of committees (src/sync/committee-sync.ts); the event loop does not use it.
 */
import { serviceCapabilities, serviceDependencies, type ComponentLogger, type Libp2pEvents, type PeerId, type Startable, type TypedEventTarget } from '@libp2p/interface'
import type { ConnectionManager } from '@libp2p/interface-internal'
import type { ChainStore } from '../store/chain-store.ts'
import type { CommitExecutor } from '../executor/commit-executor.ts'
import { VerifyPool } from '../crypto/verify-pool.ts'
import { DEFAULTS, type SomaConfig } from '../config.ts'
import { commitAvailability, type CommitAvailability } from './protocols/commit-availability.ts'
import { fetchCommits, type FetchCommits } from './protocols/fetch-commits.ts'
import { fetchBlocks, type FetchBlocks } from './protocols/fetch-blocks.ts'
import { pushCommit, type PushCommit } from './protocols/push-commit.ts'
import { epochProofs } from './protocols/epoch-proofs.ts'
import { StateSyncEventLoop, STATE_SYNC_KEYS, type EventLoopDeps, type StateSyncConfig, type SyncProgress } from './event-loop.ts'
import { SignedBlockVerifier } from './block-verifier.ts'
import { TxVerifier } from './tx-verifier.ts'
import type { RpcInit } from '../net/rpc.ts'
import { createLogger, type Logger } from '../utils/logger.ts'
import { prepareArchivalStore } from './archival.ts'
import type { WaitingReason } from './waiting.ts'

export interface StateSyncInit extends Partial<StateSyncConfig> {
  store: ChainStore
  executor: CommitExecutor
  /** Signature verification pool; one with `verifyWorkers` threads is made (and closed) when absent. */
  verifyPool?: VerifyPool
  /** @default 2 */
  verifyWorkers?: number
  /** Sync (false: serve only, e.g. on the devnet producer). @default true */
  sync?: boolean
  /**
   * Do not start the sync loop with the node: it starts on `resume()` (snapshot sync holds commit sync
   * until the snapshot is loaded). @default false
   */
  startPaused?: boolean
  /**
   * Where the sync logic logs (phase changes, penalties, fallbacks, failures at info/warn/error).
   * @default a logger named 'commit-sync' at level info, to stderr
   */
  logger?: Logger
  /**
   * Archival mode (src/sync/archival.ts): the store keeps its full history (pruned embeddings too) and
   * advertises lowest available commit 0. `start()` marks the store archival, or rejects with an
   * ArchivalStoreError when history is missing from it (snapshot-synced or pruned). @default false
   */
  archival?: boolean
  /**
   * Called when no connected peer has the history the sync needs (every peer holding the next commit
   * has only later ones): e.g. `ArchivalDiscovery.historyMissing`, which finds and dials archival peers.
   */
  onHistoryMissing?: EventLoopDeps['onHistoryMissing']
}

export interface StateSyncComponents {
  connectionManager: ConnectionManager
  events: TypedEventTarget<Libp2pEvents>
  logger: ComponentLogger
  commitAvailability: CommitAvailability
  fetchCommits: FetchCommits
  fetchBlocks: FetchBlocks
  pushCommit: PushCommit
}

const SYNC_KEYS: ReadonlyArray<keyof StateSyncConfig> = STATE_SYNC_KEYS

/** StateSyncConfig from a SomaConfig (or defaults). */
export function stateSyncConfig (config: Partial<SomaConfig> = {}): StateSyncConfig {
  const out: any = {}
  for (const k of SYNC_KEYS) out[k] = (config as any)[k] ?? DEFAULTS[k]
  return out
}

export class StateSync implements Startable {
  readonly [Symbol.toStringTag] = '@soma/state-sync'
  readonly [serviceCapabilities] = ['@soma/state-sync']
  readonly [serviceDependencies] = ['@soma/commit-availability', '@soma/fetch-commits', '@soma/fetch-blocks', '@soma/push-commit']
  private readonly components: StateSyncComponents
  private readonly init: StateSyncInit
  private readonly config: StateSyncConfig
  private loop?: StateSyncEventLoop
  private pool?: VerifyPool
  private ownsPool = false
  private paused: boolean
  private started = false
  private readonly onConnect = (evt: CustomEvent<PeerId>): void => { this.loop?.post({ type: 'peer-connected', peer: evt.detail }) }
  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => { this.loop?.post({ type: 'peer-disconnected', peer: evt.detail }) }
  private readonly onIdentify = (evt: CustomEvent<{ peerId: PeerId }>): void => { this.loop?.post({ type: 'peer-connected', peer: evt.detail.peerId }) }
  private readonly onPush = (evt: CustomEvent<any>): void => { this.loop?.post({ type: 'push', ...evt.detail }) }

  constructor (components: StateSyncComponents, init: StateSyncInit) {
    this.components = components
    this.init = init
    this.paused = init.startPaused === true
    this.config = { ...stateSyncConfig(), ...Object.fromEntries(Object.entries(init).filter(([k, v]) => SYNC_KEYS.includes(k as any) && v !== undefined)) }
  }

  /** The event loop (created at start). */
  get eventLoop (): StateSyncEventLoop | undefined { return this.loop }

  async start (): Promise<void> {
    if (this.init.archival === true && this.loop === undefined) await prepareArchivalStore(this.init.store, this.init.logger)
    if (this.loop !== undefined || this.init.sync === false) return
    const c = this.components
    const store = this.init.store
    this.pool = this.init.verifyPool
    if (this.pool === undefined) {
      this.pool = new VerifyPool({ workers: this.init.verifyWorkers ?? 2 })
      this.ownsPool = true
    }
    this.loop = new StateSyncEventLoop({
      store,
      executor: this.init.executor,
      availability: c.commitAvailability,
      fetchCommits: c.fetchCommits,
      fetchBlocks: c.fetchBlocks,
      pushCommit: c.pushCommit,
      blockVerifier: new SignedBlockVerifier(this.pool, store.chainId),
      txVerifier: new TxVerifier(this.pool, store.chainId, store.genesis.genesis.embeddingDim),
      connectedPeers: () => [...new Map(c.connectionManager.getConnections().map(conn => [conn.remotePeer.toString(), conn.remotePeer])).values()],
      disconnect: async (peer) => { await c.connectionManager.closeConnections(peer) },
      onHistoryMissing: this.init.onHistoryMissing,
      logger: this.init.logger ?? createLogger('commit-sync')
    }, this.config)
    c.events.addEventListener('peer:connect', this.onConnect)
    c.events.addEventListener('peer:disconnect', this.onDisconnect)
    c.events.addEventListener('peer:identify', this.onIdentify as any)
    c.pushCommit.addEventListener('push', this.onPush)
  }

  /** The loop starts after libp2p is up so that connected peers are seen (unless startPaused). */
  afterStart (): void {
    this.started = true
    if (!this.paused) this.loop?.start()
  }

  /** Whether the loop is held (startPaused and not resumed yet). */
  get isPaused (): boolean { return this.paused }

  /** Starts a loop held by `startPaused` (idempotent; before the node started, it starts with it). */
  resume (): void {
    if (!this.paused) return
    this.paused = false
    if (this.started) this.loop?.start()
  }

  async stop (): Promise<void> {
    const loop = this.loop
    if (loop === undefined) return
    const c = this.components
    c.events.removeEventListener('peer:connect', this.onConnect)
    c.events.removeEventListener('peer:disconnect', this.onDisconnect)
    c.events.removeEventListener('peer:identify', this.onIdentify as any)
    c.pushCommit.removeEventListener('push', this.onPush)
    await loop.stop()
    this.loop = undefined
    this.started = false
    if (this.ownsPool) await this.pool?.close()
    this.pool = undefined
  }

  /**
   * The loop's progress; while it is held by startPaused (a snapshot syncs first) its phase is 'stopped'
   * and `paused` is true. undefined only when there is no loop (not started, or serve-only).
   */
  progress (): (SyncProgress & { paused: boolean }) | undefined {
    const p = this.loop?.progress()
    return p === undefined ? undefined : { ...p, paused: this.paused }
  }

  /** Why commit sync is not progressing, with evidence (undefined while it progresses, is synced, or is held). */
  waiting (): WaitingReason | undefined { return this.paused ? undefined : this.loop?.waiting() }
}

export function stateSync (init: StateSyncInit): (components: StateSyncComponents) => StateSync {
  return (components) => new StateSync(components, init)
}

export interface CommitSyncServicesInit extends StateSyncInit {
  /** Limits of the wire protocols; from the config when omitted. */
  rpc?: RpcInit
  /** Requests one peer may make per second, per protocol. @default 50 */
  inboundRequestsPerSecond?: number
  /** @default 30 s */
  handlerTimeoutMs?: number
  /** @default 32 */
  maxInboundStreams?: number
  /** @default 64 */
  maxOutboundStreams?: number
  /** Most epoch proofs per /soma/epoch-proofs response. @default 100 */
  maxEpochsPerRequest?: number
}

/** The protocol services and the state-sync service, under the names `stateSync` expects. */
export function commitSyncServices (init: CommitSyncServicesInit): {
  commitAvailability: ReturnType<typeof commitAvailability>
  fetchCommits: ReturnType<typeof fetchCommits>
  fetchBlocks: ReturnType<typeof fetchBlocks>
  pushCommit: ReturnType<typeof pushCommit>
  epochProofs: ReturnType<typeof epochProofs>
  stateSync: ReturnType<typeof stateSync>
} {
  const cfg = { ...stateSyncConfig(), ...Object.fromEntries(Object.entries(init).filter(([, v]) => v !== undefined)) } as StateSyncConfig & CommitSyncServicesInit
  const rpc: RpcInit = {
    timeoutMs: cfg.timeoutMs,
    handlerTimeoutMs: init.handlerTimeoutMs ?? DEFAULTS.handlerTimeoutMs,
    requestsPerSecond: init.inboundRequestsPerSecond ?? DEFAULTS.inboundRequestsPerSecond,
    maxInboundStreams: init.maxInboundStreams ?? DEFAULTS.maxInboundStreams,
    maxOutboundStreams: init.maxOutboundStreams ?? DEFAULTS.maxOutboundStreams,
    ...init.rpc
  }
  return {
    commitAvailability: commitAvailability({ ...rpc, store: init.store }),
    fetchCommits: fetchCommits({ ...rpc, store: init.store, commitSyncBatchSize: cfg.commitSyncBatchSize, maxFetchResponseBytes: cfg.maxFetchResponseBytes }),
    fetchBlocks: fetchBlocks({ ...rpc, store: init.store, maxBlocksPerFetch: cfg.maxBlocksPerFetch, maxFetchResponseBytes: cfg.maxFetchResponseBytes }),
    pushCommit: pushCommit(rpc),
    epochProofs: epochProofs({ ...rpc, store: init.store, maxEpochsPerRequest: init.maxEpochsPerRequest, maxFetchResponseBytes: cfg.maxFetchResponseBytes }),
    stateSync: stateSync(init)
  }
}
