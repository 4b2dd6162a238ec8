/**
 * Snapshot sync (seed 002, "Syncing Using Snapshots"): a node that knows only genesis reaches the state
 * of a recent commit without replaying history, trusting no single peer. An explicit state machine;
 * every phase's result is persisted (sync-state.ts) so that a node killed at any point resumes where it
 * was, without fetching again what it stored and verified:
 *
 *     idle → discover → committees → attestation ─┬→ filter → chunks (+ listing) → final-check → load → anchor → done
 *                 ↑         (not persisted)        │   (persisted from here on: a restart resumes the phase)
 *                 └──── attested but wrong (abandoned; verified chunks stay) ─┘
 *     discover ──→ none (no usable snapshot within findTimeoutMs: the caller commit-syncs instead)
 *     filter | chunks | anchor ⇄ waiting (no serving peer, or no progress for stallTimeoutMs)
 *     waiting → filter of a newer attested snapshot (superseded: delta from the chunks stored)
 *
 * A serving-peer outage never throws the snapshot away: after `stallTimeoutMs` without a serving peer
 * (or without progress) the sync turns `waiting` — the snapshot and everything verified for it kept —
 * says so (warn once, info every `waitReminderMs`; `waiting()` gives the reason and evidence), asks the
 * connected peers and discovery again with a back-off (up to `waitMaxBackoffMs`), and resumes at once
 * when a serving peer (re)connects: a known serving peer that reconnects counts again without a probe,
 * and the chunk downloader gives it a fresh worker (no back-off carried over from the outage). Only a
 * newer attested snapshot (which then syncs as a delta of the chunks stored) or the operator
 * (`--snapshot-abandon`, abandonSnapshotSync) ends it. Serving peers count only while connected.
 *
 * - discover: candidates from the discovery sources and from every connected peer
 *   (/soma/snapshot-manifest/1.0.0), newest first, only those past the store's highest synced commit.
 * - committees: the committee of the candidate's epoch, learned from genesis through certified
 *   end-of-epoch commits (src/sync/committee-sync.ts), each verified by the committee before it.
 * - attestation: the candidate's signatures must carry 2f+1 of that committee's stake. A forged one is
 *   refused and every peer that offered it penalized (InvalidSnapshotError).
 * - filter: fetched from a serving peer and checked against the manifest's filter hash (a wrong one:
 *   InvalidSnapshotError, penalized, another peer asked).
 * - chunks: listing and chunks in parallel from every serving peer (downloader.ts, chunk-queue.ts); each
 *   verified chunk's partial state hash computed on the `hashWorkers` pool (chunk-hash-pool.ts) and stored
 *   with it, for the load to add up; once the listing verified, chunks are loaded as they arrive
 *   (ArrivalLoader, loader.ts).
 * - final-check, load, anchor: loader.ts.
 * After `done`, commit sync (the node's stateSync) catches up from S+1.
 *
 * Peers serving the chosen snapshot are those that offered it, plus any connected peer that answers
 * the manifest request for its commit with the same manifest bytes (probed every `probeIntervalMs` and
 * when a peer connects), so peers found later join the download.
 */
import type { PeerId } from '@libp2p/interface'
import type { Logger } from '../../utils/logger.ts'
import type { WaitingReason } from '../../sync/waiting.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { sha256, bytesEqual, toHex } from '../../crypto/hash.ts'
import { WrongChainError, InvalidSnapshotError, StoreError } from '../../errors.ts'
import { PeerScores } from '../../sync/peer-scores.ts'
import { syncCommittees } from '../../sync/committee-sync.ts'
import type { EpochProofs } from '../../sync/protocols/epoch-proofs.ts'
import type { FetchCommits } from '../../sync/protocols/fetch-commits.ts'
import type { SignedBlockVerifier } from '../../sync/block-verifier.ts'
import type { ParsedCommit } from '../../chain/commit.ts'
import { verifyAttestation } from '../attestation.ts'
import { verifyFilter } from '../verify.ts'
import { decodeAttestation, decodeManifest, type SnapshotManifest } from '../manifest.ts'
import type { SnapshotManifestService } from '../protocols/snapshot-manifest.ts'
import { filterBytesFor, type SnapshotFilterService } from '../protocols/snapshot-filter.ts'
import type { SnapshotListingService } from '../protocols/snapshot-listing.ts'
import type { SnapshotChunksService } from '../protocols/snapshot-chunks.ts'
import { DEFAULT_CHUNK_RESPONSE_BYTES, DEFAULT_MAX_CHUNKS_PER_REQUEST } from '../protocols/snapshot-chunks.ts'
import { DEFAULT_LISTING_PAGE_ROWS } from '../protocols/snapshot-listing.ts'
import { collectCandidates, mergeCandidates, peerCandidates, type SnapshotCandidateSource, type SnapshotCandidate } from './candidates.ts'
import { ChunkDownloader, SnapshotUnavailableError, type DownloadConfig, type DownloadStats } from './downloader.ts'
import { ARRIVED_CHUNK_BYTES, ArrivalLoader, ArrivedChunks, BadSnapshotError, MissingChunksError, anchorCommit, anchorSnapshot, finalCheck, loadState } from './loader.ts'
import { SyncState, type PersistedPhase } from './sync-state.ts'
import { ChunkHashPool } from './chunk-hash-pool.ts'

export type SnapshotSyncPhase =
  | 'idle' | 'discover' | 'committees' | 'attestation' | 'filter' | 'chunks' | 'final-check' | 'load' | 'anchor'
  | 'done' | 'none' | 'stopped' | 'failed'
  /** the snapshot in progress has no serving peer (or none made progress for `stallTimeoutMs`): kept, waiting */
  | 'waiting'

export interface SnapshotSyncConfig extends DownloadConfig {
  /** serving peers to wait for before the chunks phase starts (up to `peerWaitMs`). @default 1 */
  minPeers: number
  /** @default 3 s */
  peerWaitMs: number
  /** how long `discover` looks for a usable snapshot before giving up (0: forever). @default 10 s */
  findTimeoutMs: number
  /** how often connected peers are asked whether they serve the snapshot being synced. @default 2 s */
  probeIntervalMs: number
  /** how long a peer that lied is not asked again. @default 10 min */
  peerBanMs: number
  /** snapshots this node keeps (the synced one counts): older ones are pruned when it is registered. @default 3 */
  keep: number
  /** entry bytes per write batch when loading the state (batches end at chunk boundaries). @default 8 MiB */
  loadBatchBytes: number
  /**
   * load verified chunks into the state as they arrive, once the listing has verified (ArrivalLoader,
   * loader.ts); false: all of them in the load phase, after the download. @default true
   */
  loadOnArrival: boolean
  /**
   * worker threads that compute each chunk's partial state hash as it arrives (chunk-hash-pool.ts);
   * 0: on the main thread. @default 2
   */
  hashWorkers: number
  /**
   * while `waiting` (no peer serves the snapshot in progress), how often an info line says so again (the
   * first says it at warn). @default 60 s
   */
  waitReminderMs: number
  /** while `waiting`, the longest back-off between two rounds of asking peers (and discovery). @default 30 s */
  waitMaxBackoffMs: number
}

export const SNAPSHOT_SYNC_DEFAULTS: Readonly<SnapshotSyncConfig> = Object.freeze({
  maxRequestsPerPeer: 8,
  initialRequestsPerPeer: 2,
  maxChunksPerRequest: DEFAULT_MAX_CHUNKS_PER_REQUEST,
  maxChunkResponseBytes: DEFAULT_CHUNK_RESPONSE_BYTES,
  maxInflightBytes: 64 * 1024 * 1024,
  listingPageRows: DEFAULT_LISTING_PAGE_ROWS,
  timeoutMs: 30_000,
  latencyTargetMs: 300,
  stallTimeoutMs: 60_000,
  minPeers: 1,
  peerWaitMs: 3000,
  findTimeoutMs: 10_000,
  probeIntervalMs: 2000,
  peerBanMs: 10 * 60_000,
  keep: 3,
  loadBatchBytes: 8 * 1024 * 1024,
  loadOnArrival: true,
  hashWorkers: 2,
  waitReminderMs: 60_000,
  waitMaxBackoffMs: 30_000
})

export interface SnapshotSyncDeps {
  store: ChainStore
  manifest: SnapshotManifestService
  filter: SnapshotFilterService
  listing: SnapshotListingService
  chunks: SnapshotChunksService
  epochProofs: EpochProofs
  fetchCommits: FetchCommits
  blockVerifier: SignedBlockVerifier
  /** currently connected peers */
  connectedPeers: () => PeerId[]
  /** closes connections to a banned peer */
  disconnect?: (peer: PeerId) => Promise<void>
  /** discovery (gossip, DHT, …): more candidates besides asking connected peers */
  candidates?: SnapshotCandidateSource[]
  /** the node's logger (operator-facing: info/warn/error reach the log without DEBUG) */
  logger: Logger
}

export interface SnapshotSyncProgress {
  phase: SnapshotSyncPhase
  /** the snapshot being synced */
  commit?: number
  epoch?: number
  /** chunks stored and verified (fetched or reused) of the snapshot's */
  chunks: { done: number, total: number }
  bytes: { done: number, total: number }
  /** fetched from peers by this run */
  fetched: { chunks: number, bytes: number }
  /** already stored (resumed, or shared with an older snapshot) */
  reused: { chunks: number, bytes: number }
  /** fetch rate over the last seconds */
  bytesPerSecond: number
  /** peers serving the snapshot */
  peers: number
  /** seconds to the end of the chunks phase at the current rate */
  etaSeconds?: number
  listing: { rows: number, total: number, verified: boolean }
  load: { done: number, total: number }
}

export interface SnapshotSyncResult {
  /** 'synced': the snapshot of `commit` is loaded and anchored; 'none': no usable snapshot was found */
  outcome: 'synced' | 'none'
  commit?: number
  manifest?: SnapshotManifest
}

export interface SnapshotSyncEvents {
  phase: (phase: SnapshotSyncPhase) => void
  /** a snapshot's attestation verified and its sync begins (or resumes) */
  chosen: (manifest: SnapshotManifest, resumed: boolean) => void
}

/** A newer attested snapshot (verified) supersedes the one in progress while it waits for peers. */
class SupersededError extends Error {
  override readonly name = 'SupersededError'
  readonly candidate: SnapshotCandidate
  constructor (candidate: SnapshotCandidate, message: string) {
    super(message)
    this.candidate = candidate
  }
}

const sleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
  await new Promise<void>(resolve => {
    const t = setTimeout(done, ms)
    function done (): void { clearTimeout(t); signal?.removeEventListener('abort', done); resolve() }
    signal?.addEventListener('abort', done, { once: true })
  })
}

interface Current {
  manifest: SnapshotManifest
  /** sha256 of the manifest bytes */
  digest: Uint8Array
  servers: Map<string, PeerId>
  probed: Map<string, number>
}

export class SnapshotSync {
  readonly config: SnapshotSyncConfig
  readonly scores: PeerScores
  readonly state: SyncState
  /** totals over every chunks phase of this run */
  readonly stats = { fetchedChunks: 0, fetchedBytes: 0, reusedChunks: 0, reusedBytes: 0, duplicates: 0, rejected: 0, requests: 0, abandoned: 0 }
  /** per serving peer: chunks and bytes it delivered in this run */
  readonly perPeer = new Map<string, { chunks: number, bytes: number, requests: number, failures: number }>()
  private readonly deps: SnapshotSyncDeps
  private readonly log: Logger
  private _phase: SnapshotSyncPhase = 'idle'
  private current?: Current
  /** ends discover's wait between rounds early (a peer connected) */
  private wakeDiscover?: () => void
  private downloader?: ChunkDownloader
  private hashPool = new ChunkHashPool({ workers: 0 })
  /** verified chunks handed from the download to the load (not read back from the packs, not re-hashed) */
  private readonly arrived = new ArrivedChunks(ARRIVED_CHUNK_BYTES)
  private haveAtStart = { chunks: 0, bytes: 0 }
  private loadDone = 0
  private readonly rejected = new Set<string>()
  private readonly rate: Array<[number, number]> = []
  /** why the sync waits (phase `waiting`, or discover finding nothing), for `waiting()` */
  private waitingReason?: WaitingReason
  /** ends a `waiting` back-off early (a peer connected) */
  private wakeWaiting?: () => void
  /** when discover began, and how many peers were asked / snapshots offered in its last round */
  private discoverInfo?: { since: number, asked: number, offered: number, behind: number }
  private readonly listeners: { [K in keyof SnapshotSyncEvents]: Array<SnapshotSyncEvents[K]> } = { phase: [], chosen: [] }

  constructor (deps: SnapshotSyncDeps, config: Partial<SnapshotSyncConfig> = {}) {
    this.deps = deps
    this.config = { ...SNAPSHOT_SYNC_DEFAULTS, ...Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)) }
    this.scores = new PeerScores(this.config.peerBanMs)
    this.state = new SyncState(deps.store)
    this.log = deps.logger
  }

  on<K extends keyof SnapshotSyncEvents>(event: K, fn: SnapshotSyncEvents[K]): void { (this.listeners[event] as any[]).push(fn) }

  get phase (): SnapshotSyncPhase { return this._phase }

  private setPhase (p: SnapshotSyncPhase): void {
    if (p === this._phase) return
    this.log.info('phase %s -> %s', this._phase, p)
    this._phase = p
    for (const fn of this.listeners.phase) fn(p)
  }

  /** The snapshot being synced, if any. */
  get manifest (): SnapshotManifest | undefined { return this.current?.manifest }

  /**
   * Peers serving the snapshot being synced that are connected now and not banned. A serving peer that
   * disconnects stays known (it serves again as soon as it reconnects) but does not count.
   */
  servers (): PeerId[] {
    if (this.current === undefined) return []
    const connected = new Set(this.deps.connectedPeers().map(p => p.toString()))
    return [...this.current.servers.values()].filter(p => connected.has(p.toString()) && !this.scores.isBanned(p))
  }

  /** Every peer known to serve the snapshot being synced, connected or not (not banned). */
  knownServers (): PeerId[] {
    if (this.current === undefined) return []
    return [...this.current.servers.values()].filter(p => !this.scores.isBanned(p))
  }

  /**
   * Why the sync is not progressing, with evidence (undefined while it progresses): `snapshot-stalled`
   * while it waits for a serving peer, `no-peers` / `no-snapshot` while discover finds nothing usable.
   */
  waiting (): WaitingReason | undefined {
    if (this._phase === 'waiting') return this.waitingReason
    const d = this.discoverInfo
    if (this._phase === 'discover' && d !== undefined && Date.now() - d.since >= 1000) {
      if (this.deps.connectedPeers().length === 0) return { code: 'no-peers', message: 'snapshot discovery: no peer is connected', since: d.since }
      // peers connected since the last round: asked in the next one
      if (d.asked === 0) return undefined
      return {
        code: 'no-snapshot',
        message: d.offered === 0
          ? `snapshot discovery: none of the ${d.asked} peers asked offers a snapshot`
          : `snapshot discovery: no usable snapshot ahead of this store (at commit ${this.deps.store.highestSynced}) among the ${d.offered} offered`,
        since: d.since,
        evidence: { asked: d.asked, offered: d.offered, notAhead: d.behind, highestSynced: this.deps.store.highestSynced }
      }
    }
    return undefined
  }

  /** Applies the penalty for `err`; a banned peer is dropped and disconnected. Returns whether banned. */
  penalize (peer: PeerId, err: unknown): boolean {
    this.log.warn('peer %p: %s', peer, (err as any)?.message ?? err)
    const banned = this.scores.penalize(peer, err)
    if (banned) {
      this.log.warn('peer %p banned for %d s', peer, Math.round(this.config.peerBanMs / 1000))
      this.current?.servers.delete(peer.toString())
      void this.deps.disconnect?.(peer).catch(() => {})
    }
    return banned
  }

  /** A peer connected: it may offer a snapshot (discover asks it at once) or serve the one being synced. */
  peerConnected (peer: PeerId): void {
    this.wakeDiscover?.()
    const c = this.current
    if (c === undefined || this.scores.isBanned(peer)) return
    // a known serving peer that reconnects counts again at once (servers() filters by connection); the
    // chunk downloader gives it a fresh worker (no back-off left from the outage)
    if (c.servers.has(peer.toString())) { this.wakeWaiting?.(); return }
    c.probed.delete(peer.toString())
    void this.probe(c, [peer], AbortSignal.timeout(10_000)).then(() => { if (c.servers.has(peer.toString())) this.wakeWaiting?.() })
  }

  progress (): SnapshotSyncProgress {
    const m = this.current?.manifest
    const d = this.downloader
    const fetchedChunks = this.stats.fetchedChunks + (d?.stats.chunks ?? 0)
    const fetchedBytes = this.stats.fetchedBytes + (d?.stats.bytes ?? 0)
    const reusedChunks = this.stats.reusedChunks + (d?.queue.reused.chunks ?? 0)
    const reusedBytes = this.stats.reusedBytes + (d?.queue.reused.bytes ?? 0)
    const now = Date.now()
    this.rate.push([now, fetchedBytes])
    while (this.rate.length > 2 && now - this.rate[0][0] > 5000) this.rate.shift()
    const first = this.rate[0]
    const bps = now - first[0] > 200 ? (fetchedBytes - first[1]) / ((now - first[0]) / 1000) : 0
    const total = m?.totalBytes ?? 0
    // stored before this chunks phase, plus what it fetched or found stored since
    const doneBytes = Math.min(total, this.haveAtStart.bytes + (d?.stats.bytes ?? 0) + (d?.queue.reused.bytes ?? 0))
    const doneChunks = Math.min(m?.chunkCount ?? 0, this.haveAtStart.chunks + (d?.stats.chunks ?? 0) + (d?.queue.reused.chunks ?? 0))
    const afterChunks = this._phase === 'final-check' || this._phase === 'load' || this._phase === 'anchor' || this._phase === 'done'
    const out: SnapshotSyncProgress = {
      phase: this._phase,
      commit: m?.commitIndex,
      epoch: m?.epoch,
      chunks: { done: afterChunks ? (m?.chunkCount ?? 0) : doneChunks, total: m?.chunkCount ?? 0 },
      bytes: { done: afterChunks ? total : doneBytes, total },
      fetched: { chunks: fetchedChunks, bytes: fetchedBytes },
      reused: { chunks: reusedChunks, bytes: reusedBytes },
      bytesPerSecond: bps,
      peers: this.servers().length,
      listing: afterChunks ? { rows: m?.chunkCount ?? 0, total: m?.chunkCount ?? 0, verified: true } : { rows: d?.listing.rows ?? 0, total: m?.chunkCount ?? 0, verified: d?.listing.verified ?? false },
      load: { done: this._phase === 'anchor' || this._phase === 'done' ? (m?.chunkCount ?? 0) : this.loadDone, total: m?.chunkCount ?? 0 }
    }
    if (this._phase === 'chunks' && bps > 0 && total > doneBytes) out.etaSeconds = (total - doneBytes) / bps
    return out
  }

  /**
   * Runs the state machine until a snapshot is loaded and anchored ('synced'), or no usable snapshot is
   * found within `findTimeoutMs` ('none': the caller falls back to commit sync). A sync in progress
   * (persisted) is resumed first. Rejects with the abort reason when `signal` aborts.
   */
  async run (signal: AbortSignal): Promise<SnapshotSyncResult> {
    this.hashPool = new ChunkHashPool({ workers: this.config.hashWorkers })
    // the workers load while the snapshot is found and verified, ready for the first chunks
    this.hashPool.warm()
    // a newer attested snapshot that superseded the one in progress: synced next (delta: the chunks
    // stored for the old one that it lists too are reused, not fetched)
    let superseding: SnapshotCandidate | undefined
    // the serving peers known when the sync in progress stalled: it resumes with them
    let known: PeerId[] = []
    try {
      while (true) {
        signal.throwIfAborted()
        let persisted = await this.state.read()
        let offered: PeerId[] = known
        known = []
        let resumed = persisted !== undefined
        if (superseding !== undefined) {
          await this.state.clear({ keepStateReplaced: true })
          await this.state.begin(superseding.attestationBytes)
          persisted = await this.state.read()
          offered = superseding.peers
          resumed = false
          superseding = undefined
        }
        if (persisted !== undefined) {
          const m = decodeManifest(decodeAttestation(persisted.attestation).manifest)
          if (m.commitIndex <= this.deps.store.highestSynced && !await this.state.stateReplaced()) {
            this.log.info('dropping the sync of the snapshot of commit %d: the store is at commit %d already', m.commitIndex, this.deps.store.highestSynced)
            await this.state.clear()
            persisted = undefined
            resumed = false
          }
        }
        if (persisted === undefined) {
          const chosen = await this.choose(signal)
          if (chosen === undefined) {
            this.setPhase('none')
            return { outcome: 'none' }
          }
          await this.state.clear({ keepStateReplaced: true })
          await this.state.begin(chosen.attestationBytes)
          persisted = await this.state.read()
          offered = chosen.peers
        }
        try {
          const manifest = await this.syncPersisted(persisted!, offered, resumed, signal)
          this.setPhase('done')
          return { outcome: 'synced', commit: manifest.commitIndex, manifest }
        } catch (err: any) {
          if (signal.aborted) throw err
          if (err instanceof SnapshotUnavailableError && this.current !== undefined) {
            // no serving peer, or none made progress: the snapshot and its verified chunks are kept;
            // wait for a serving peer (or a newer attested snapshot, which supersedes it), then resume
            // the persisted phase
            const c = this.current
            // the anchor's commit S can come from any peer of the chain, the rest only from serving peers
            const anchoring = (await this.state.read())?.phase === 'anchor'
            try {
              await this.waitForServers(c, err, signal, anchoring ? () => this.eligible(this.deps.connectedPeers()) : () => this.servers())
              known = [...c.servers.values()]
            } catch (e) {
              if (!(e instanceof SupersededError)) throw e
              this.log.info('%s', e.message)
              this.current = undefined
              superseding = e.candidate
            }
            continue
          }
          if (err instanceof BadSnapshotError) {
            if (this.current !== undefined) this.rejected.add(toHex(this.current.digest))
            this.log.error('abandoning the snapshot of commit %d: %s', this.current?.manifest.commitIndex, err.message)
            this.stats.abandoned++
            this.current = undefined
            await this.state.clear({ keepStateReplaced: true })
            continue
          }
          throw err
        } finally {
          this.downloader = undefined
        }
      }
    } catch (err) {
      this.setPhase(signal.aborted ? 'stopped' : 'failed')
      throw err
    } finally {
      this.arrived.clear()
      await this.hashPool.close()
    }
  }

  // ------------------------------------------------------------------------------------------------
  // discover, committees, attestation

  private eligible (peers: readonly PeerId[]): PeerId[] {
    const seen = new Set<string>()
    return peers.filter(p => {
      const k = p.toString()
      if (seen.has(k) || this.scores.isBanned(p)) return false
      seen.add(k)
      return true
    })
  }

  private async collect (signal: AbortSignal): Promise<SnapshotCandidate[]> {
    const lists = await Promise.all([
      peerCandidates(this.deps.manifest, this.eligible(this.deps.connectedPeers()), {
        signal,
        timeoutMs: Math.min(this.config.timeoutMs, 5000),
        onError: (p, e) => { this.penalize(p, e) }
      }),
      // a discovery source (DHT queries) gets at most timeoutMs per round
      ...(this.deps.candidates ?? []).map(async src => {
        const limit = AbortSignal.any([signal, AbortSignal.timeout(Math.min(this.config.timeoutMs, 10_000))])
        return await Promise.race([
          collectCandidates(src, limit, (p, e) => { this.penalize(p, e) }),
          new Promise<SnapshotCandidate[]>(resolve => { limit.addEventListener('abort', () => { resolve([]) }, { once: true }) })
        ])
      })
    ])
    return mergeCandidates(lists)
  }

  /** A verified candidate newer than the store, or undefined (nothing usable within findTimeoutMs). */
  private async choose (signal: AbortSignal): Promise<SnapshotCandidate | undefined> {
    this.setPhase('discover')
    const store = this.deps.store
    const t0 = Date.now()
    this.discoverInfo = { since: t0, asked: 0, offered: 0, behind: 0 }
    while (true) {
      signal.throwIfAborted()
      const asked = this.eligible(this.deps.connectedPeers()).length
      const all = await this.collect(signal)
      // offered snapshots of this chain not refused before, and those of them ahead of the store
      const offered: SnapshotCandidate[] = []
      for (const c of all) {
        if (!bytesEqual(c.manifest.chainId, store.chainId)) {
          for (const p of c.peers) this.penalize(p, new WrongChainError(`${p.toString()} offers a snapshot of chain ${toHex(c.manifest.chainId)}`))
          continue
        }
        if (this.rejected.has(toHex(sha256(decodeAttestation(c.attestationBytes).manifest)))) continue
        if (this.rejected.has(toHex(sha256(c.attestationBytes)))) continue
        offered.push(c)
      }
      const usable = offered.filter(c => c.manifest.commitIndex > store.highestSynced)
      this.discoverInfo = { since: t0, asked, offered: offered.length, behind: offered.length - usable.length }
      usable.sort((a, b) => b.manifest.commitIndex - a.manifest.commitIndex || b.peers.length - a.peers.length)
      for (const c of usable) {
        if (await this.verifyCandidate(c, signal)) return c
        this.setPhase('discover')
      }
      const replaced = await this.state.stateReplaced()
      // snapshots exist but none is ahead of us: commit sync is the way
      if (offered.length > 0 && usable.length === 0 && !replaced) return undefined
      if (this.config.findTimeoutMs > 0 && Date.now() - t0 >= this.config.findTimeoutMs && !replaced) return undefined
      // ask again in a second, or as soon as a peer connects
      await new Promise<void>(resolve => {
        this.wakeDiscover = resolve
        void sleep(1000, signal).then(resolve)
      })
      this.wakeDiscover = undefined
    }
  }

  /** Committees up to the candidate's epoch, then its attestation. */
  private async verifyCandidate (c: SnapshotCandidate, signal: AbortSignal, setPhases = true): Promise<boolean> {
    const store = this.deps.store
    const epoch = c.manifest.epoch
    if (await store.highestCommitteeEpoch() < epoch) {
      if (setPhases) this.setPhase('committees')
      const peers = this.eligible([...c.peers, ...this.deps.connectedPeers()])
      const got = await syncCommittees({ store, epochProofs: this.deps.epochProofs, blockVerifier: this.deps.blockVerifier }, peers, {
        signal,
        upToEpoch: epoch,
        timeoutMs: this.config.timeoutMs,
        onPeerError: (p, e) => { this.penalize(p, e) }
      })
      if (got < epoch) {
        this.log.info('the snapshot of commit %d is of epoch %d; the committees are known up to epoch %d only: cannot verify it yet', c.manifest.commitIndex, epoch, got)
        return false
      }
    }
    const committee = await store.getCommittee(epoch)
    if (committee === undefined) return false
    if (setPhases) this.setPhase('attestation')
    try {
      verifyAttestation(c.attestationBytes, committee, { chainId: store.chainId })
      return true
    } catch (err) {
      if (!(err instanceof InvalidSnapshotError)) throw err
      this.rejected.add(toHex(sha256(c.attestationBytes)))
      for (const p of c.peers) this.penalize(p, err)
      return false
    }
  }

  // ------------------------------------------------------------------------------------------------
  // the persisted phases

  private async probe (c: Current, peers: readonly PeerId[], signal: AbortSignal): Promise<void> {
    const now = Date.now()
    const todo = peers.filter(p => {
      const k = p.toString()
      if (c.servers.has(k) || this.scores.isBanned(p)) return false
      if (now - (c.probed.get(k) ?? 0) < 5 * this.config.probeIntervalMs) return false
      c.probed.set(k, now)
      return true
    })
    await Promise.all(todo.map(async peer => {
      try {
        const a = await this.deps.manifest.get(peer, c.manifest.commitIndex, { signal: AbortSignal.any([signal, AbortSignal.timeout(5000)]) })
        if (bytesEqual(sha256(decodeAttestation(a.attestationBytes).manifest), c.digest) && !this.scores.isBanned(peer)) {
          if (!c.servers.has(peer.toString())) this.log.info('%p serves the snapshot of commit %d', peer, c.manifest.commitIndex)
          c.servers.set(peer.toString(), peer)
        }
      } catch {}
    }))
  }

  private async probeLoop (c: Current, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.probe(c, this.deps.connectedPeers(), signal)
      await sleep(this.config.probeIntervalMs, signal)
    }
  }

  private async syncPersisted (p: { phase: PersistedPhase, attestation: Uint8Array, filter?: Uint8Array }, offered: readonly PeerId[], resumed: boolean, signal: AbortSignal): Promise<SnapshotManifest> {
    const store = this.deps.store
    const manifestBytes = decodeAttestation(p.attestation).manifest
    const manifest = decodeManifest(manifestBytes)
    const committee = await store.getCommittee(manifest.epoch)
    if (committee === undefined) throw new StoreError(`the committee of epoch ${manifest.epoch} of the snapshot being synced is not stored`)
    verifyAttestation(p.attestation, committee, { chainId: store.chainId })
    const c: Current = { manifest, digest: sha256(manifestBytes), servers: new Map(offered.map(x => [x.toString(), x])), probed: new Map() }
    this.current = c
    for (const fn of this.listeners.chosen) fn(manifest, resumed)
    this.log.info('%s the snapshot of commit %d (epoch %d, %d chunks, %d bytes) at phase %s', resumed ? 'resuming' : 'syncing', manifest.commitIndex, manifest.epoch, manifest.chunkCount, manifest.totalBytes, p.phase)
    const probing = new AbortController()
    const probeSignal = AbortSignal.any([signal, probing.signal])
    const prober = this.probeLoop(c, probeSignal)
    try {
      let phase = p.phase
      let filterBytes = p.filter
      while (true) {
        signal.throwIfAborted()
        if (phase === 'filter') {
          this.setPhase('filter')
          let size: number
          try {
            size = filterBytesFor(manifest.filter)
          } catch (err: any) {
            throw new BadSnapshotError(`the snapshot of commit ${manifest.commitIndex}: ${err.message}`)
          }
          if (size > this.deps.filter.maxFilterBytes) throw new BadSnapshotError(`the snapshot of commit ${manifest.commitIndex} has a ${size}-byte filter, above this node's limit of ${this.deps.filter.maxFilterBytes} (--snapshot-max-filter-bytes)`)
          filterBytes = await this.fetchFilter(c, signal)
          signal.throwIfAborted()
          await this.state.saveFilter(filterBytes)
          phase = 'chunks'
        } else if (phase === 'chunks') {
          this.setPhase('chunks')
          const filter = verifyFilter(manifest, filterBytes!)
          await this.waitForPeers(c, signal)
          this.haveAtStart = await this.state.haveTotals()
          const d = new ChunkDownloader({
            store,
            state: this.state,
            manifest,
            filter,
            chunks: this.deps.chunks,
            listing: this.deps.listing,
            servers: () => this.servers(),
            penalize: (peer, err) => this.penalize(peer, err),
            reward: (peer) => { this.scores.reward(peer) },
            log: (msg, ...args) => { this.log.warn(msg, ...args) },
            hashPool: this.hashPool,
            arrived: this.arrived
          }, this.config)
          this.downloader = d
          // verified chunks are loaded as they arrive, once the listing has verified (loader.ts)
          const arrival = new ArrivalLoader(store, this.state, manifest, { batchBytes: this.config.loadBatchBytes, hashPool: this.hashPool, arrived: this.arrived, ready: () => d.listing.verified, onProgress: (done) => { this.loadDone = done }, log: (msg, ...args) => { this.log.warn(msg, ...args) } })
          if (this.config.loadOnArrival) arrival.start(signal)
          try {
            await d.run(signal)
            signal.throwIfAborted()
          } finally {
            await arrival.stop()
            // the workers' heaps are given back for the load (which starts them again only for chunks
            // stored without a partial)
            await this.hashPool.release()
            this.absorb(d.stats)
            this.haveAtStart = await this.state.haveTotals().catch(() => this.haveAtStart)
            this.downloader = undefined
          }
          await this.state.enter('final-check')
          phase = 'final-check'
        } else if (phase === 'final-check') {
          this.setPhase('final-check')
          try {
            await finalCheck(this.state, manifest)
            signal.throwIfAborted()
          } catch (err) {
            if (!(err instanceof MissingChunksError)) throw err
            this.log.warn('final check: %s; back to the chunks', err.message)
            await this.state.enter('chunks')
            phase = 'chunks'
            continue
          }
          await this.state.beginLoad()
          phase = 'load'
        } else if (phase === 'load') {
          this.setPhase('load')
          try {
            const r = await loadState(store, this.state, manifest, { batchBytes: this.config.loadBatchBytes, hashPool: this.hashPool, arrived: this.arrived, signal, onProgress: (done) => { this.loadDone = done }, log: (msg, ...args) => { this.log.warn(msg, ...args) } })
            this.log.info('loaded %d accounts and %d embeddings from %d chunks (partial state hashes: %d stored, %d computed, %d repaired; %d chunks handed over by the download, the others read back from the packs)', r.accounts, r.embeddings, r.chunks, r.storedPartials, r.computedPartials, r.repairedPartials, this.arrived.taken)
            this.arrived.clear()
            signal.throwIfAborted()
          } catch (err) {
            if (!(err instanceof MissingChunksError)) throw err
            this.log.warn('load: %s; back to the chunks', err.message)
            await this.state.enter('chunks')
            phase = 'chunks'
            continue
          }
          await this.state.enter('anchor')
          phase = 'anchor'
        } else {
          this.setPhase('anchor')
          const commit = await this.waitForAnchor(c, signal)
          signal.throwIfAborted()
          const r = await anchorSnapshot(store, this.state, manifest, commit, { attestation: p.attestation, filter: filterBytes!, keep: this.config.keep })
          this.log.info('anchored at commit %d (pruned snapshots %o, swept %d chunks)', manifest.commitIndex, r.prunedSnapshots, r.sweptChunks)
          return manifest
        }
      }
    } finally {
      probing.abort()
      await prober.catch(() => {})
    }
  }

  private absorb (s: DownloadStats): void {
    this.stats.fetchedChunks += s.chunks
    this.stats.fetchedBytes += s.bytes
    this.stats.reusedChunks += s.reusedChunks
    this.stats.reusedBytes += s.reusedBytes
    this.stats.duplicates += s.duplicates
    this.stats.rejected += s.rejected
    this.stats.requests += s.requests
    for (const [k, v] of s.perPeer) {
      const p = this.perPeer.get(k) ?? { chunks: 0, bytes: 0, requests: 0, failures: 0 }
      p.chunks += v.chunks; p.bytes += v.bytes; p.requests += v.requests; p.failures += v.failures
      this.perPeer.set(k, p)
    }
  }

  /**
   * Phase `waiting`: the snapshot in progress is kept with everything verified so far while no peer
   * serves it (or none made progress for `stallTimeoutMs`). Says so at warn once and at info every
   * `waitReminderMs`; asks the connected peers again (and discovery for a newer snapshot) with a back-off
   * from `probeIntervalMs` doubling up to `waitMaxBackoffMs`. Returns as soon as a serving peer that was
   * not connected at the stall is (a reconnect wakes it at once), or after a back-off round when serving
   * peers are connected; throws SupersededError when a newer attested snapshot verifies.
   */
  private async waitForServers (c: Current, cause: Error, signal: AbortSignal, usable: () => PeerId[] = () => this.servers()): Promise<void> {
    const S = c.manifest.commitIndex
    const since = Date.now()
    const stalledWith = new Set(usable().map(p => p.toString()))
    const reason = (): WaitingReason => {
      const p = this.progress()
      const known = this.knownServers().map(x => x.toString())
      const connected = this.servers().map(x => x.toString())
      return {
        code: 'snapshot-stalled',
        message: `the snapshot of commit ${S} is stalled (${cause.message}); kept with its ${p.chunks.done} of ${p.chunks.total} verified chunks, waiting for a peer that serves it`,
        since,
        evidence: { commit: S, cause: cause.message, knownServers: known, connectedServers: connected, chunks: p.chunks }
      }
    }
    this.waitingReason = reason()
    this.setPhase('waiting')
    this.log.warn('snapshot sync waiting: %s', this.waitingReason.message)
    let backoff = Math.max(100, this.config.probeIntervalMs)
    let nextRound = since + backoff
    let nextReminder = since + this.config.waitReminderMs
    try {
      while (true) {
        signal.throwIfAborted()
        const servers = usable()
        const now = Date.now()
        if (servers.some(p => !stalledWith.has(p.toString())) || (servers.length > 0 && now >= nextRound)) {
          this.log.info('snapshot sync resumes the snapshot of commit %d after %d ms: %d usable peers connected (%s)', S, now - since, servers.length, servers.map(p => p.toString()).join(', '))
          return
        }
        if (now >= nextReminder) {
          this.log.info('snapshot sync still waiting (%d s) for a peer serving the snapshot of commit %d: %d known serving peers, %d connected', Math.round((now - since) / 1000), S, this.knownServers().length, servers.length)
          nextReminder = now + this.config.waitReminderMs
        }
        if (now >= nextRound) {
          c.probed.clear()
          await this.probe(c, this.deps.connectedPeers(), signal)
          await this.findSuperseding(c, signal)
          backoff = Math.min(backoff * 2, Math.max(this.config.waitMaxBackoffMs, this.config.probeIntervalMs))
          nextRound = Date.now() + backoff
        }
        this.waitingReason = reason()
        await new Promise<void>(resolve => {
          this.wakeWaiting = resolve
          void sleep(100, signal).then(resolve)
        })
        this.wakeWaiting = undefined
      }
    } finally {
      this.wakeWaiting = undefined
      this.waitingReason = undefined
    }
  }

  /** Throws SupersededError when a connected peer or discovery offers a newer snapshot that verifies. */
  private async findSuperseding (c: Current, signal: AbortSignal): Promise<void> {
    const store = this.deps.store
    const all = await this.collect(signal)
    const newer = all.filter(x => bytesEqual(x.manifest.chainId, store.chainId) && x.manifest.commitIndex > c.manifest.commitIndex &&
      !this.rejected.has(toHex(sha256(decodeAttestation(x.attestationBytes).manifest))) && !this.rejected.has(toHex(sha256(x.attestationBytes))))
    newer.sort((a, b) => b.manifest.commitIndex - a.manifest.commitIndex || b.peers.length - a.peers.length)
    for (const x of newer) {
      if (await this.verifyCandidate(x, signal, false)) {
        throw new SupersededError(x, `the snapshot of commit ${c.manifest.commitIndex} is superseded by the attested snapshot of commit ${x.manifest.commitIndex} (offered by ${x.peers.length} peers): syncing that one; the chunks stored that it lists too are reused`)
      }
    }
  }

  /** Waits (up to peerWaitMs) for minPeers serving peers, and (up to stallTimeoutMs) for at least one. */
  private async waitForPeers (c: Current, signal: AbortSignal): Promise<void> {
    const t0 = Date.now()
    while (true) {
      const n = this.servers().length
      if (n >= this.config.minPeers) return
      if (n > 0 && Date.now() - t0 >= this.config.peerWaitMs) return
      if (n === 0 && Date.now() - t0 >= this.config.stallTimeoutMs) throw new SnapshotUnavailableError(`no peer serves the snapshot of commit ${c.manifest.commitIndex}`)
      await this.probe(c, this.deps.connectedPeers(), signal)
      await sleep(100, signal)
    }
  }

  private async fetchFilter (c: Current, signal: AbortSignal): Promise<Uint8Array> {
    const S = c.manifest.commitIndex
    const tried = new Set<string>()
    let last = Date.now()
    while (true) {
      signal.throwIfAborted()
      const peer = this.servers().find(p => !tried.has(p.toString()))
      if (peer === undefined) {
        if (Date.now() - last > this.config.stallTimeoutMs) throw new SnapshotUnavailableError(`no peer served a valid filter of the snapshot of commit ${S}`)
        await sleep(200, signal)
        if (tried.size > 0 && this.servers().every(p => tried.has(p.toString()))) { await sleep(1000, signal); tried.clear() }
        continue
      }
      tried.add(peer.toString())
      try {
        const bytes = await this.deps.filter.fetch(peer, S, c.manifest.filter, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.config.timeoutMs)]) })
        verifyFilter(c.manifest, bytes)
        this.scores.reward(peer)
        return bytes
      } catch (err) {
        if (signal.aborted) throw err
        this.penalize(peer, err)
        last = Math.max(last, Date.now() - this.config.stallTimeoutMs / 2)
      }
    }
  }

  private async waitForAnchor (c: Current, signal: AbortSignal): Promise<ParsedCommit> {
    const store = this.deps.store
    const deps = {
      store,
      fetchCommits: this.deps.fetchCommits,
      blockVerifier: this.deps.blockVerifier,
      peers: () => this.eligible([...this.servers(), ...this.deps.connectedPeers()]),
      penalize: (p: PeerId, e: unknown) => { this.penalize(p, e) },
      timeoutMs: this.config.timeoutMs
    }
    const t0 = Date.now()
    let triedProofs = false
    while (true) {
      const commit = await anchorCommit(deps, c.manifest, signal)
      if (commit !== undefined) return commit
      if (!triedProofs) {
        // S may end its epoch: then the proof of that epoch is commit S with its certificate
        triedProofs = true
        await syncCommittees({ store, epochProofs: this.deps.epochProofs, blockVerifier: this.deps.blockVerifier }, deps.peers(), {
          signal, upToEpoch: c.manifest.epoch + 1, timeoutMs: this.config.timeoutMs, onPeerError: (p, e) => { this.penalize(p, e) }
        }).catch(err => { if (signal.aborted) throw err })
        continue
      }
      if (Date.now() - t0 > this.config.stallTimeoutMs) throw new SnapshotUnavailableError(`no peer could give certified commit ${c.manifest.commitIndex}`)
      await sleep(1000, signal)
      if (Date.now() - t0 > this.config.stallTimeoutMs / 2) triedProofs = false
    }
  }
}

/**
 * Abandons the snapshot sync in progress in `store`, at the operator's request (`--snapshot-abandon`):
 * its rows go; the chunks it stored stay (a later snapshot sync reuses those its snapshot lists, the next
 * snapshot registration sweeps the rest). When the state was already cleared for it, the flag that says
 * so stays: the node must then sync another snapshot before it executes commits. Returns the commit of
 * the abandoned snapshot (undefined: none in progress).
 */
export async function abandonSnapshotSync (store: ChainStore, log: Logger): Promise<number | undefined> {
  const state = new SyncState(store)
  const p = await state.read()
  if (p === undefined) {
    log.info('--snapshot-abandon: no snapshot sync in progress')
    return undefined
  }
  const m = decodeManifest(decodeAttestation(p.attestation).manifest)
  const have = await state.haveTotals()
  const replaced = await state.stateReplaced()
  await state.clear({ keepStateReplaced: true })
  log.warn('abandoning the snapshot sync of commit %d (phase %s) at the operator\'s request (--snapshot-abandon): its %d verified chunks (%d bytes) stay stored for reuse%s', m.commitIndex, p.phase, have.chunks, have.bytes, replaced ? '; the state was already cleared for it, so the node syncs another snapshot' : '')
  return m.commitIndex
}
