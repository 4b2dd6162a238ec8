/**
 * The `chunks` phase of snapshot sync: the listing, streamed page by page, and the chunks, fetched in
 * parallel from every peer serving the snapshot, both straight into the store (listing rows in LevelDB,
 * chunk bytes in pack files).
 *
 * ## Listing
 *
 * Pages come from one peer at a time (another after a failure). Every row is checked as it arrives —
 * shape, canonical order after the previous row, a hash not listed before, and a hash the (verified)
 * filter holds — and stored with the running count, total bytes and multiset hash (LtHash over the
 * hashes) in one batch. A page that fails a check is refused and its peer penalized. After the last row
 * the whole listing is checked against the attested manifest in O(1) memory: count, total bytes,
 * multiset hash, the listing hash (sha256 over the stored rows in index order, as framed in
 * SnapshotListing) and the final checksum (sha256 over the listed hashes, which the 0x18 bucket yields
 * sorted). If any differs, every peer the rows came from is penalized and excluded, and the listing is
 * fetched again from the others. Once it verifies, HAVE rows of chunks that are not listed (they could
 * only have passed the filter as false positives) are dropped and their peers penalized.
 *
 * ## Chunks
 *
 * A worker per serving peer runs "lanes", each one request in flight: take up to `maxChunksPerRequest`
 * items of at most `maxChunkResponseBytes` from the shared ChunkQueue, fetch them, check each chunk —
 * sha256 of its bytes equal to the hash it was asked by, and in the filter — and write the good ones: their
 * bytes appended to the store's pack file (src/store/packs.ts), then their index rows, HAVE rows and
 * partial state hashes in one batch. The number of lanes adapts per peer: it starts at
 * `initialRequestsPerPeer` and grows by one after each answer faster than `latencyTargetMs` (up to
 * `maxRequestsPerPeer`), and halves on a failure, so fast peers carry more requests and take more work.
 * Chunks in flight are bounded by `maxInflightBytes` over all peers. A chunk that fails is discarded, its
 * peer penalized (InvalidChunkError) and excluded for that chunk, and the chunk goes back to the queue for
 * another peer. Before the listing verifies, the hash asked by comes from an unverified row, so the filter
 * check is what vouches for a chunk (seed 002); afterwards the hash is attested and the check exact.
 */
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { createHash } from 'node:crypto'
import type { ChainStore } from '../../store/chain-store.ts'
import { sha256, bytesEqual, toHex } from '../../crypto/hash.ts'
import { LtHash } from '../../crypto/lthash.ts'
import { InvalidChunkError, InvalidSnapshotError, RateLimitedError } from '../../errors.ts'
import type { CuckooFilter } from '../cuckoo-filter.ts'
import { ChunkKind, compareChunkInfo, type ChunkInfo } from '../chunk-format.ts'
import type { SnapshotManifest } from '../manifest.ts'
import type { PackStore } from '../../store/packs.ts'
import { frameListingRow } from '../protocols/messages.ts'
import { ChunkNotServedError, type ChunkSession, type SnapshotChunksService } from '../protocols/snapshot-chunks.ts'
import type { SnapshotListingService } from '../protocols/snapshot-listing.ts'
import { ChunkQueue, type ChunkItem } from './chunk-queue.ts'
import type { ChunkHashPool } from './chunk-hash-pool.ts'
import type { ListingProgress, SyncState } from './sync-state.ts'
import { canonicalFilterCheck } from '../verify.ts'
import { BadSnapshotError, type ArrivedChunks } from './loader.ts'

export interface DownloadConfig {
  /** most chunk requests in flight per peer. @default 8 */
  maxRequestsPerPeer: number
  /** chunk requests in flight per peer at first. @default 2 */
  initialRequestsPerPeer: number
  /** @default 1024 */
  maxChunksPerRequest: number
  /** @default 4 MiB */
  maxChunkResponseBytes: number
  /** chunk bytes in flight over all peers. @default 64 MiB */
  maxInflightBytes: number
  /** listing rows per request. @default 8192 */
  listingPageRows: number
  /** one request's time limit. @default 30 s */
  timeoutMs: number
  /** a lane is added while answers come faster than this. @default 300 ms */
  latencyTargetMs: number
  /** no progress and no serving peer for this long: the snapshot is unavailable. @default 60 s */
  stallTimeoutMs: number
}

export interface DownloadDeps {
  store: ChainStore
  state: SyncState
  manifest: SnapshotManifest
  filter: CuckooFilter
  chunks: SnapshotChunksService
  listing: SnapshotListingService
  /** peers serving the snapshot now (not banned) */
  servers: () => PeerId[]
  /** applies the penalty of `err`; true when the peer is now banned */
  penalize: (peer: PeerId, err: unknown) => boolean
  reward: (peer: PeerId) => void
  log: (msg: string, ...args: unknown[]) => void
  /** computes each verified chunk's partial state hash, stored with its HAVE row (none: the load does) */
  hashPool?: ChunkHashPool
  /** verified, stored chunks handed to the load (once the listing has verified: the load follows it) */
  arrived?: ArrivedChunks
}

export interface PeerDownloadStats {
  requests: number
  chunks: number
  bytes: number
  failures: number
  /** lanes (requests in flight) it runs now */
  lanes: number
  /** the most lanes it ran at once */
  maxLanes: number
}

export interface DownloadStats {
  /** chunks fetched, verified and stored by this run */
  chunks: number
  bytes: number
  /** chunks already stored (older snapshot, or an earlier run) that were not fetched */
  reusedChunks: number
  reusedBytes: number
  /** answers discarded: a stolen chunk that another peer delivered first */
  duplicates: number
  /** chunks refused (hash or filter mismatch) */
  rejected: number
  requests: number
  perPeer: Map<string, PeerDownloadStats>
}

/** No peer serves the snapshot (any more): the sync abandons it and looks for another. */
export class SnapshotUnavailableError extends Error {
  override readonly name = 'SnapshotUnavailableError'
}

interface Lane {
  session?: ChunkSession
}

interface Worker {
  peer: PeerId
  key: string
  idBytes: Uint8Array
  target: number
  lanes: number
  active: boolean
  ewmaMs: number
  failures: number
  misses: number
  pausedUntil: number
  stats: PeerDownloadStats
}

const sleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
  await new Promise<void>(resolve => {
    const t = setTimeout(done, ms)
    function done (): void { clearTimeout(t); signal?.removeEventListener('abort', done); resolve() }
    signal?.addEventListener('abort', done, { once: true })
  })
}

export class ChunkDownloader {
  readonly stats: DownloadStats = { chunks: 0, bytes: 0, reusedChunks: 0, reusedBytes: 0, duplicates: 0, rejected: 0, requests: 0, perPeer: new Map() }
  readonly queue: ChunkQueue
  private readonly deps: DownloadDeps
  private readonly cfg: DownloadConfig
  private readonly workers = new Map<string, Worker>()
  private listingProgress?: ListingProgress
  private listingVerified = false
  private readonly listingExcluded = new Set<string>()
  private listingPeer?: string
  private inflightBytes = 0
  private lastProgress = Date.now()
  private readonly lanes = new Set<Promise<void>>()
  private readonly writes = new Set<Promise<void>>()
  /** a chunk batch that failed to write (the store's problem, not a peer's): fails the phase */
  private writeError?: Error

  constructor (deps: DownloadDeps, cfg: DownloadConfig) {
    this.deps = deps
    this.cfg = cfg
    this.queue = new ChunkQueue({
      state: deps.state,
      store: deps.store,
      total: deps.manifest.chunkCount,
      rowsAvailable: () => this.listingProgress?.next ?? 0
    })
  }

  /** Rows of the listing stored so far, and whether the whole listing verified. */
  get listing (): { rows: number, verified: boolean } {
    return { rows: this.listingProgress?.next ?? 0, verified: this.listingVerified }
  }

  private get finished (): boolean {
    return this.listingVerified && this.queue.allRead && this.queue.idle
  }

  /** Runs until every listed chunk is stored and verified (HAVE) and the listing verified. */
  async run (signal: AbortSignal): Promise<void> {
    this.listingProgress = await this.deps.state.listing()
    this.listingVerified = this.listingProgress.verified
    const ctrl = new AbortController()
    const sig = AbortSignal.any([signal, ctrl.signal])
    const listing = this.runListing(sig)
    let listingError: unknown
    listing.catch(err => { listingError = err ?? new Error('listing failed') })
    try {
      while (!this.finished) {
        signal.throwIfAborted()
        if (listingError !== undefined) throw listingError
        if (this.writeError !== undefined) throw this.writeError
        this.superviseWorkers(sig)
        if (this.queue.canRefill) void this.queue.refill().catch(() => {})
        if (Date.now() - this.lastProgress > this.cfg.stallTimeoutMs) {
          throw new SnapshotUnavailableError(`no progress on the snapshot of commit ${this.deps.manifest.commitIndex} for ${this.cfg.stallTimeoutMs} ms (${this.deps.servers().length} serving peers)`)
        }
        await this.queue.changed(100, sig)
      }
      await listing
    } finally {
      ctrl.abort()
      await Promise.allSettled([listing, ...this.lanes])
      await Promise.allSettled([...this.writes])
      this.stats.reusedChunks = this.queue.reused.chunks
      this.stats.reusedBytes = this.queue.reused.bytes
    }
  }

  private progressed (): void { this.lastProgress = Date.now() }

  private get packs (): PackStore { return this.deps.store.packs }

  // ------------------------------------------------------------------------------------------------
  // listing

  private pickListingPeer (): PeerId | undefined {
    const servers = this.deps.servers().filter(p => !this.listingExcluded.has(p.toString()))
    if (servers.length === 0) return undefined
    return servers.find(p => p.toString() === this.listingPeer) ?? servers[0]
  }

  private async runListing (signal: AbortSignal): Promise<void> {
    const total = this.deps.manifest.chunkCount
    while (!this.listingVerified) {
      signal.throwIfAborted()
      const prog = this.listingProgress!
      if (prog.next >= total) {
        try {
          await this.verifyListing(prog)
        } catch (err) {
          if (!(err instanceof InvalidSnapshotError) || err instanceof BadSnapshotError) throw err
          this.deps.log('the listing does not match the manifest (%s); it came from %s: fetched again from others', err.message, prog.sources.join(', '))
          for (const s of prog.sources) {
            this.listingExcluded.add(s)
            this.deps.penalize(peerIdFromString(s), err)
          }
          await this.deps.state.resetListing()
          this.queue.reset()
          this.listingProgress = await this.deps.state.listing()
          continue
        }
        await this.deps.state.setListingVerified()
        this.listingVerified = true
        await this.purgeUnlisted()
        this.progressed()
        return
      }
      const peer = this.pickListingPeer()
      if (peer === undefined) { await sleep(200, signal); continue }
      const key = peer.toString()
      this.listingPeer = key
      let rows: ChunkInfo[]
      try {
        rows = await this.deps.listing.fetch(peer, this.deps.manifest.commitIndex, prog.next, Math.min(this.cfg.listingPageRows, total - prog.next), { signal: AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeoutMs)]) })
        if (rows.length === 0) throw new InvalidSnapshotError(`${key} ends the listing of the snapshot of commit ${this.deps.manifest.commitIndex} at row ${prog.next}, the manifest lists ${total} chunks`)
      } catch (err) {
        if (signal.aborted) throw err
        this.deps.penalize(peer, err)
        this.listingPeer = undefined
        if (err instanceof InvalidSnapshotError) this.listingExcluded.add(key)
        else await sleep(100, signal)
        continue
      }
      let next: ListingProgress
      try {
        next = await this.checkRows(prog, rows, key)
      } catch (err) {
        if (!(err instanceof InvalidSnapshotError)) throw err
        this.deps.log('listing page from %s refused: %s', key, err.message)
        this.deps.penalize(peer, err)
        this.listingExcluded.add(key)
        this.listingPeer = undefined
        continue
      }
      const batch = this.deps.store.batch()
      this.deps.state.putRows(batch, prog.next, rows, next)
      await batch.write()
      this.listingProgress = next
      this.deps.reward(peer)
      this.progressed()
      void this.queue.refill().catch(() => {})
    }
  }

  /** Checks a page of rows following `prog`; returns the progress after it. InvalidSnapshotError. */
  private async checkRows (prog: ListingProgress, rows: readonly ChunkInfo[], source: string): Promise<ListingProgress> {
    const m = this.deps.manifest
    const w = `listing of the snapshot of commit ${m.commitIndex}`
    if (prog.next + rows.length > m.chunkCount) throw new InvalidSnapshotError(`${w}: ${prog.next + rows.length} rows, the manifest lists ${m.chunkCount}`)
    const multiset = LtHash.fromBytes(prog.multiset.toBytes())
    let bytes = prog.bytes
    let last = prog.last
    const seen = new Set<string>()
    rows.forEach((r, j) => {
      const i = prog.next + j
      if (r.hash.byteLength !== 32) throw new InvalidSnapshotError(`${w}: row ${i} has a ${r.hash.byteLength}-byte hash`)
      if (r.kind !== ChunkKind.ACCOUNTS && r.kind !== ChunkKind.EMBEDDINGS) throw new InvalidSnapshotError(`${w}: row ${i} has unknown kind ${r.kind}`)
      const keyLength = r.kind === ChunkKind.ACCOUNTS ? 32 : 40
      if (r.firstKey.byteLength !== keyLength) throw new InvalidSnapshotError(`${w}: row ${i} has a ${r.firstKey.byteLength}-byte first key`)
      if (r.size < 1 || r.entries < 1) throw new InvalidSnapshotError(`${w}: row ${i} is empty`)
      if (last !== undefined && compareChunkInfo(last, r) >= 0) throw new InvalidSnapshotError(`${w}: row ${i} is not after row ${i - 1} in canonical order`)
      if (!this.deps.filter.contains(r.hash)) throw new InvalidSnapshotError(`${w}: row ${i} lists chunk ${toHex(r.hash)}, which is not in the snapshot's filter`)
      const h = toHex(r.hash)
      if (seen.has(h)) throw new InvalidSnapshotError(`${w}: chunk ${h} is listed twice`)
      seen.add(h)
      bytes += r.size
      multiset.add(r.hash)
      last = r
    })
    if (bytes > m.totalBytes) throw new InvalidSnapshotError(`${w}: the rows total ${bytes} bytes, more than the manifest's ${m.totalBytes}`)
    const listed = await this.deps.state.listed(rows.map(r => r.hash))
    const dup = listed.findIndex(x => x)
    if (dup >= 0) throw new InvalidSnapshotError(`${w}: chunk ${toHex(rows[dup].hash)} is listed twice`)
    const sources = prog.sources.includes(source) ? prog.sources : [...prog.sources, source]
    return { next: prog.next + rows.length, bytes, multiset, last, sources, verified: false }
  }

  /** The complete listing against the manifest, in O(1) memory. InvalidSnapshotError naming the mismatch. */
  private async verifyListing (prog: ListingProgress): Promise<void> {
    const m = this.deps.manifest
    const w = `listing of the snapshot of commit ${m.commitIndex}`
    if (prog.next !== m.chunkCount) throw new InvalidSnapshotError(`${w} has ${prog.next} rows, the manifest lists ${m.chunkCount}`)
    if (prog.bytes !== m.totalBytes) throw new InvalidSnapshotError(`${w}: the rows total ${prog.bytes} bytes, the manifest says ${m.totalBytes}`)
    const ms = prog.multiset.checksum()
    if (!bytesEqual(ms, m.multisetHash)) throw new InvalidSnapshotError(`${w}: wrong multiset hash ${toHex(ms)}, the manifest says ${toHex(m.multisetHash)}`)
    const lh = createHash('sha256')
    for await (const row of this.deps.state.rowBytes()) lh.update(frameListingRow(row))
    const listingHash = lh.digest()
    if (!bytesEqual(listingHash, m.listingHash)) throw new InvalidSnapshotError(`${w}: wrong listing hash ${toHex(listingHash)}, the manifest says ${toHex(m.listingHash)}`)
    const fc = createHash('sha256')
    // the filter must be the canonical filter of the listed hashes, built in the same sorted pass
    const canonical = canonicalFilterCheck(m)
    let n = 0
    for await (const h of this.deps.state.listedHashes()) { fc.update(h); if (n < m.chunkCount) canonical.push(h); n++ }
    const finalChecksum = fc.digest()
    if (n !== m.chunkCount) throw new InvalidSnapshotError(`${w}: ${n} distinct hashes for ${m.chunkCount} rows`)
    if (!bytesEqual(finalChecksum, m.finalChecksum)) throw new InvalidSnapshotError(`${w}: wrong final checksum ${toHex(finalChecksum)}, the manifest says ${toHex(m.finalChecksum)}`)
    // the listing is now the attested one: a filter that does not match it was attested as it is
    try {
      canonical.finish()
    } catch (err: any) {
      throw new BadSnapshotError(err.message)
    }
  }

  /** Drops HAVE rows of chunks the verified listing does not list; penalizes the peers that sent them. */
  private async purgeUnlisted (): Promise<void> {
    let batch: Array<{ hash: Uint8Array, peer?: Uint8Array }> = []
    const flush = async (): Promise<void> => {
      const listed = await this.deps.state.listed(batch.map(b => b.hash))
      const del = this.deps.store.batch()
      batch.forEach((b, i) => {
        if (listed[i]) return
        this.deps.state.delHave(del, b.hash)
        const err = new InvalidChunkError(`chunk ${toHex(b.hash)} passed the filter but is not in the snapshot's listing`)
        this.deps.log('%s', err.message)
        if (b.peer !== undefined) {
          try { this.deps.penalize(peerIdFromString(new TextDecoder().decode(b.peer)), err) } catch {}
        }
      })
      if (del.length > 0) await del.write()
      batch = []
    }
    for await (const h of this.deps.state.haves()) {
      batch.push({ hash: new Uint8Array(h.hash), peer: h.peer === undefined ? undefined : new Uint8Array(h.peer) })
      if (batch.length >= 1024) await flush()
    }
    await flush()
  }

  // ------------------------------------------------------------------------------------------------
  // chunks

  private superviseWorkers (signal: AbortSignal): void {
    const servers = this.deps.servers()
    const live = new Set(servers.map(p => p.toString()))
    for (const w of this.workers.values()) if (!live.has(w.key)) w.active = false
    for (const peer of servers) {
      const key = peer.toString()
      let w = this.workers.get(key)
      // a peer back (reconnected, or unbanned) gets a fresh worker at once: no back-off left from its
      // outage (the old worker's lanes see it inactive and end)
      if (w === undefined || (!w.active && w.misses < 3)) {
        const stats = this.stats.perPeer.get(key) ?? { requests: 0, chunks: 0, bytes: 0, failures: 0, lanes: 0, maxLanes: 0 }
        this.stats.perPeer.set(key, stats)
        w = { peer, key, idBytes: new TextEncoder().encode(key), target: this.cfg.initialRequestsPerPeer, lanes: 0, active: true, ewmaMs: 0, failures: 0, misses: w?.misses ?? 0, pausedUntil: 0, stats }
        this.workers.set(key, w)
      }
      while (w.active && w.lanes < w.target) this.spawnLane(w, signal)
    }
  }

  private spawnLane (w: Worker, signal: AbortSignal): void {
    w.lanes++
    w.stats.lanes = w.lanes
    w.stats.maxLanes = Math.max(w.stats.maxLanes, w.lanes)
    const p = this.lane(w, signal).catch(err => { if (!signal.aborted) this.deps.log('lane of %s failed: %s', w.key, err.message) }).finally(() => {
      w.lanes--
      w.stats.lanes = w.lanes
      this.lanes.delete(p)
    })
    this.lanes.add(p)
  }

  private async lane (w: Worker, signal: AbortSignal): Promise<void> {
    // each lane keeps one chunk session (a long-lived stream) to its peer
    const lane: Lane = {}
    try {
      await this.laneLoop(w, lane, signal)
    } finally {
      if (lane.session !== undefined) await lane.session.close()
    }
  }

  private async laneLoop (w: Worker, lane: Lane, signal: AbortSignal): Promise<void> {
    const cfg = this.cfg
    while (!signal.aborted && w.active && !this.finished) {
      if (w.lanes > w.target) return // shrink
      if (Date.now() < w.pausedUntil) { await sleep(w.pausedUntil - Date.now(), signal); continue }
      if (this.inflightBytes >= cfg.maxInflightBytes) { await this.queue.changed(50, signal); continue }
      const budget = Math.max(1, Math.min(cfg.maxChunkResponseBytes, cfg.maxInflightBytes - this.inflightBytes))
      let items = this.queue.take(w.key, cfg.maxChunksPerRequest, budget)
      if (items.length === 0 && this.queue.canRefill) {
        await this.queue.refill()
        items = this.queue.take(w.key, cfg.maxChunksPerRequest, budget)
      }
      // the end game: help with what another peer holds too long
      if (items.length === 0) items = this.queue.steal(w.key, cfg.maxChunksPerRequest, budget, Math.max(500, 3 * w.ewmaMs))
      if (items.length === 0) { await this.queue.changed(100, signal); continue }
      await this.fetch(w, lane, items, signal)
    }
  }

  private async fetch (w: Worker, lane: Lane, items: ChunkItem[], signal: AbortSignal): Promise<void> {
    const size = items.reduce((s, it) => s + it.size, 0)
    this.inflightBytes += size
    const t0 = Date.now()
    w.stats.requests++
    this.stats.requests++
    let chunks: Uint8Array[]
    try {
      const sig = AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeoutMs)])
      if (lane.session === undefined || lane.session.isClosed) lane.session = await this.deps.chunks.session(w.peer, { signal: sig })
      chunks = await lane.session.fetch(items.map(it => it.hash), {
        signal: sig,
        maxBytes: this.cfg.maxChunkResponseBytes,
        largest: Math.max(...items.map(it => it.size))
      })
    } catch (err) {
      this.inflightBytes -= size
      if (signal.aborted) { for (const it of items) this.queue.release(it, w.key, false); return }
      if (err instanceof ChunkNotServedError) {
        // it lacks the first chunk (pruned the snapshot?): not a lie, but do not ask it for that one again
        this.queue.release(items[0], w.key, true)
        for (const it of items.slice(1)) this.queue.release(it, w.key, false)
        if (++w.misses >= 3) { w.active = false; this.deps.log('%s stopped serving chunks of the snapshot', w.key) }
        return
      }
      for (const it of items) this.queue.release(it, w.key, false)
      w.failures++
      w.stats.failures++
      w.target = Math.max(1, Math.floor(w.target / 2))
      if (this.deps.penalize(w.peer, err)) { w.active = false; return }
      // a rate-limit refusal: its hint (the other peers' lanes take the work meanwhile)
      const backoff = err instanceof RateLimitedError ? err.retryAfterMs : Math.min(10_000, 100 * 2 ** Math.min(w.failures, 7))
      w.pausedUntil = Date.now() + backoff
      return
    }
    // hash and check on arrival; the good ones land with their HAVE rows and partial state hashes
    // (computed by the hash pool's workers) in one batch, written in the background while this lane asks
    // for more (the bytes count as in flight until written)
    const batch = this.deps.store.batch()
    const good: ChunkItem[] = []
    const goodChunks: Array<[Uint8Array, Uint8Array]> = []
    let bad: InvalidChunkError | undefined
    let goodBytes = 0
    for (let i = 0; i < chunks.length; i++) {
      const it = items[i]
      const bytes = chunks[i]
      if (!this.queue.holds(w.key, it.key)) { this.stats.duplicates++; continue }
      const h = sha256(bytes)
      if (!bytesEqual(h, it.hash)) {
        bad = new InvalidChunkError(`chunk ${it.key} from ${w.key} is corrupt: its bytes hash to ${toHex(h)}`)
      } else if (!this.deps.filter.contains(h)) {
        bad = new InvalidChunkError(`chunk ${it.key} from ${w.key} is not in the snapshot's filter`)
      } else {
        this.queue.claim(it.key) // a duplicate (stolen) answer arriving now is discarded
        this.deps.state.putHave(batch, h, bytes.byteLength, w.idBytes)
        good.push(it)
        goodChunks.push([h, bytes])
        goodBytes += bytes.byteLength
        continue
      }
      this.stats.rejected++
      this.queue.release(it, w.key, true)
    }
    for (const it of items.slice(chunks.length)) this.queue.release(it, w.key, false)
    const pool = this.deps.hashPool
    const write = (async () => {
      try {
        if (pool !== undefined && goodChunks.length > 0) {
          // a chunk whose partial could not be computed (it does not decode, or a worker failed) is
          // stored without one: the load computes it (and refuses a chunk that does not decode)
          const partials = await Promise.all(goodChunks.map(async ([, bytes]) => await pool.partial(bytes).catch(() => undefined)))
          partials.forEach((p, i) => { if (p !== undefined) this.deps.state.putPartial(batch, goodChunks[i][0], p) })
        }
        // the bytes to a pack file, then the batch with their index rows and HAVE rows
        if (batch.length > 0 || goodChunks.length > 0) await this.packs.commit(batch, goodChunks.map(([hash, bytes]) => ({ hash, bytes })))
        if (this.listingVerified && this.deps.arrived !== undefined) for (const [hash, bytes] of goodChunks) this.deps.arrived.put(hash, bytes)
      } catch (err: any) {
        this.writeError ??= err
        return
      } finally {
        this.inflightBytes -= size
      }
      for (const it of good) this.queue.complete(it.key)
      this.stats.chunks += good.length
      this.stats.bytes += goodBytes
      w.stats.chunks += good.length
      w.stats.bytes += goodBytes
      if (good.length > 0) this.progressed()
    })()
    this.writes.add(write)
    void write.finally(() => this.writes.delete(write))
    if (bad !== undefined) {
      this.deps.log('%s', bad.message)
      w.target = 1
      if (this.deps.penalize(w.peer, bad)) w.active = false
      return
    }
    this.deps.reward(w.peer)
    w.failures = 0
    w.misses = 0
    const ms = Date.now() - t0
    w.ewmaMs = w.ewmaMs === 0 ? ms : w.ewmaMs * 0.8 + ms * 0.2
    if (ms < this.cfg.latencyTargetMs && w.target < this.cfg.maxRequestsPerPeer && this.queue.queued + this.queue.unread > 0) {
      w.target++
      this.spawnLane(w, signal)
    } else if (ms > 2 * this.cfg.latencyTargetMs && w.target > 1) {
      w.target--
    }
  }
}
