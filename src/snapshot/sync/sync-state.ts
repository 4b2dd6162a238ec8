/**
 * The persisted state of a snapshot sync in progress (buckets 0x16–0x1a, src/snapshot/store-keys.ts).
 * Everything verified so far is here, written atomically with what it describes, so that a restart at
 * any point (even SIGKILL) resumes without fetching again what was stored and verified:
 *
 * | meta name          | value                                   | written                                   |
 * |--------------------|-----------------------------------------|-------------------------------------------|
 * | phase              | utf8 persisted phase (below)            | with each phase's results                 |
 * | attestation        | the verified SnapshotAttestation bytes  | when the attestation verified (→ filter)  |
 * | filter             | the verified filter bytes               | when the filter verified (→ chunks)       |
 * | listing-next       | u64 rows stored so far                  | with each page of rows                    |
 * | listing-bytes      | u64 sum of their sizes                  | with each page                            |
 * | listing-multiset   | 2048 LtHash lanes over their hashes     | with each page                            |
 * | listing-last       | the last row stored (order check)       | with each page                            |
 * | listing-sources    | utf8 peer ids the rows came from        | with each page                            |
 * | listing-verified   | 0x01                                    | once the whole listing matched the manifest |
 * | load-next          | u64 rows whose entries are loaded       | with each batch of entries                |
 * | load-lthash        | 2048 LtHash lanes of the loaded entries | with each batch                           |
 * | load-entries       | u64 accounts ‖ u64 embeddings loaded    | with each batch                           |
 * | state-replaced     | 0x01                                    | before the state buckets are first cleared; |
 * |                    |                                         | removed by the anchor batch               |
 *
 * Besides the meta rows: listing rows (0x17, 0x18), one HAVE row per stored and verified chunk (0x19)
 * and, written in the same batch, the chunk's partial state hash (0x1a; chunk-hash-pool.ts).
 *
 * Persisted phases: `filter` → `chunks` → `final-check` → `load` → `anchor`; no phase row: nothing in
 * progress. `state-replaced` outlives an abandoned sync: once the node's accounts and embeddings have
 * been cleared for a snapshot, it must complete a snapshot sync before it may execute commits again.
 */
import type { ChainStore, StoreBatch } from '../../store/chain-store.ts'
import { u64, readU64 } from '../../store/keys.ts'
import { LtHash, LTHASH_BYTES } from '../../crypto/lthash.ts'
import { SnapshotBucket, SnapshotKeys } from '../store-keys.ts'
import { SnapshotCodecs } from '../manifest.ts'
import type { ChunkInfo } from '../chunk-format.ts'
import { CorruptStoreError } from '../../errors.ts'

/** entries per page of SyncState's scans (rows and HAVE rows are ~50–100 bytes) */
const PAGE_ENTRIES = 1024

export type PersistedPhase = 'filter' | 'chunks' | 'final-check' | 'load' | 'anchor'
const PHASES: readonly PersistedPhase[] = ['filter', 'chunks', 'final-check', 'load', 'anchor']

export const SYNC_BUCKETS = [SnapshotBucket.SYNC_META, SnapshotBucket.SYNC_ROW, SnapshotBucket.SYNC_LISTED, SnapshotBucket.SYNC_HAVE, SnapshotBucket.SYNC_PARTIAL] as const

const META = {
  phase: SnapshotKeys.syncMeta('phase'),
  attestation: SnapshotKeys.syncMeta('attestation'),
  filter: SnapshotKeys.syncMeta('filter'),
  listingNext: SnapshotKeys.syncMeta('listing-next'),
  listingBytes: SnapshotKeys.syncMeta('listing-bytes'),
  listingMultiset: SnapshotKeys.syncMeta('listing-multiset'),
  listingLast: SnapshotKeys.syncMeta('listing-last'),
  listingSources: SnapshotKeys.syncMeta('listing-sources'),
  listingVerified: SnapshotKeys.syncMeta('listing-verified'),
  loadNext: SnapshotKeys.syncMeta('load-next'),
  loadLtHash: SnapshotKeys.syncMeta('load-lthash'),
  loadEntries: SnapshotKeys.syncMeta('load-entries'),
  stateReplaced: SnapshotKeys.syncMeta('state-replaced')
}

const utf8 = new TextEncoder()
const utf8d = new TextDecoder()

export interface ListingProgress {
  /** rows stored */
  next: number
  /** sum of their sizes */
  bytes: number
  /** LtHash over their hashes */
  multiset: LtHash
  /** the last row stored (its successor must sort after it) */
  last?: ChunkInfo
  /** peers the rows came from (blamed if the whole listing does not match) */
  sources: string[]
  verified: boolean
}

export interface LoadProgress {
  next: number
  lthash: LtHash
  accounts: number
  embeddings: number
}

export interface PersistedSync {
  phase: PersistedPhase
  attestation: Uint8Array
  filter?: Uint8Array
}

export function encodeRow (row: ChunkInfo): Uint8Array {
  return SnapshotCodecs.ChunkInfo.encode(row)
}

export function decodeRow (bytes: Uint8Array): ChunkInfo {
  return SnapshotCodecs.ChunkInfo.decode(bytes)
}

/** HAVE row value: size u32 ‖ peer id bytes (empty: reused from a chunk already stored). */
export function haveValue (size: number, peer?: Uint8Array): Uint8Array {
  const v = new Uint8Array(4 + (peer?.byteLength ?? 0))
  new DataView(v.buffer).setUint32(0, size)
  if (peer !== undefined) v.set(peer, 4)
  return v
}

export function parseHave (v: Uint8Array): { size: number, peer?: Uint8Array } {
  const size = new DataView(v.buffer, v.byteOffset, v.byteLength).getUint32(0)
  return v.byteLength > 4 ? { size, peer: v.subarray(4) } : { size }
}

export class SyncState {
  readonly store: ChainStore

  constructor (store: ChainStore) {
    this.store = store
  }

  private get db (): ChainStore['db'] { return this.store.db }

  /** The sync in progress, if any. */
  async read (): Promise<PersistedSync | undefined> {
    const p = await this.db.get(META.phase)
    if (p === undefined) return undefined
    const phase = utf8d.decode(p) as PersistedPhase
    if (!PHASES.includes(phase)) throw new CorruptStoreError(`${this.store.dir}: unknown snapshot sync phase ${JSON.stringify(phase)}`)
    const attestation = await this.db.get(META.attestation)
    if (attestation === undefined) throw new CorruptStoreError(`${this.store.dir}: a snapshot sync is in progress but its attestation is missing`)
    const filter = await this.db.get(META.filter)
    return filter === undefined ? { phase, attestation } : { phase, attestation, filter }
  }

  /** Whether the node's state was (partly) replaced by a snapshot that is not loaded yet. */
  async stateReplaced (): Promise<boolean> {
    return (await this.db.get(META.stateReplaced)) !== undefined
  }

  setPhase (batch: StoreBatch, phase: PersistedPhase): StoreBatch {
    return batch.put(META.phase, utf8.encode(phase))
  }

  /** Starts a sync of a verified attestation (after `clear`). */
  async begin (attestation: Uint8Array): Promise<void> {
    await this.setPhase(this.store.batch().put(META.attestation, attestation), 'filter').write()
  }

  async saveFilter (filter: Uint8Array): Promise<void> {
    await this.setPhase(this.store.batch().put(META.filter, filter), 'chunks').write()
  }

  async enter (phase: PersistedPhase): Promise<void> {
    await this.setPhase(this.store.batch(), phase).write()
  }

  // ------------------------------------------------------------------------------------------------
  // listing

  async listing (): Promise<ListingProgress> {
    const [next, bytes, ms, last, sources, verified] = await this.db.getMany([META.listingNext, META.listingBytes, META.listingMultiset, META.listingLast, META.listingSources, META.listingVerified])
    return {
      next: next === undefined ? 0 : readU64(next, 0),
      bytes: bytes === undefined ? 0 : readU64(bytes, 0),
      multiset: ms === undefined ? new LtHash() : LtHash.fromBytes(ms),
      last: last === undefined ? undefined : decodeRow(last),
      sources: sources === undefined || sources.byteLength === 0 ? [] : utf8d.decode(sources).split(','),
      verified: verified !== undefined
    }
  }

  /** Adds to `batch` a page of rows (already checked) and the listing progress after it. */
  putRows (batch: StoreBatch, first: number, rows: readonly ChunkInfo[], after: ListingProgress): void {
    rows.forEach((r, i) => {
      batch.put(SnapshotKeys.syncRow(first + i), encodeRow(r))
      batch.put(SnapshotKeys.syncListed(r.hash), u64(first + i))
    })
    batch.put(META.listingNext, u64(after.next))
    batch.put(META.listingBytes, u64(after.bytes))
    batch.put(META.listingMultiset, after.multiset.toBytes())
    if (after.last !== undefined) batch.put(META.listingLast, encodeRow(after.last))
    batch.put(META.listingSources, utf8.encode(after.sources.join(',')))
  }

  async setListingVerified (): Promise<void> {
    await this.store.batch().put(META.listingVerified, Uint8Array.of(1)).write()
  }

  /** Forgets the listing (rows, hash index, progress); HAVE rows and chunks stay. */
  async resetListing (): Promise<void> {
    await this.store.batch()
      .del(META.listingNext).del(META.listingBytes).del(META.listingMultiset).del(META.listingLast).del(META.listingSources).del(META.listingVerified)
      .write()
    for (const b of [SnapshotBucket.SYNC_ROW, SnapshotBucket.SYNC_LISTED]) {
      const [gte, lt] = SnapshotKeys.range(b)
      await this.db.clear({ gte, lt })
    }
  }

  /**
   * The entries of [gte, lt) in key order, read in pages of `PAGE_ENTRIES`, each by its own iterator that
   * is closed before the page is yielded. A LevelDB iterator pins the memtables that exist when it is
   * made, until it is closed: one held open by a consumer that writes meanwhile (the load writes a GiB
   * of state between its first row and its last) kept the chunks phase's memtables in memory next to
   * the load's own, ~270 MiB of them at the peak of a snapshot sync with 64 MiB write buffers.
   */
  private async * paged (gte: Uint8Array, lt: Uint8Array): AsyncGenerator<[Uint8Array, Uint8Array]> {
    let range: { gte: Uint8Array } | { gt: Uint8Array } = { gte }
    for (;;) {
      const page: Array<[Uint8Array, Uint8Array]> = await this.db.iterator({ ...range, lt, limit: PAGE_ENTRIES }).all()
      yield * page
      if (page.length < PAGE_ENTRIES) return
      range = { gt: page[page.length - 1][0] }
    }
  }

  /** Rows [from, to) in listing order. */
  async * rows (from = 0, to = Number.MAX_SAFE_INTEGER): AsyncGenerator<[number, ChunkInfo]> {
    for await (const [k, v] of this.paged(SnapshotKeys.syncRow(from), SnapshotKeys.syncRow(to))) {
      yield [readU64(k, 1), decodeRow(v)]
    }
  }

  /** The raw encoded rows in listing order (listing hash, registration). */
  async * rowBytes (): AsyncGenerator<Uint8Array> {
    const [gte, lt] = SnapshotKeys.range(SnapshotBucket.SYNC_ROW)
    for await (const [, v] of this.paged(gte, lt)) yield v
  }

  /** Listed hashes, ascending. */
  async * listedHashes (): AsyncGenerator<Uint8Array> {
    const [gte, lt] = SnapshotKeys.range(SnapshotBucket.SYNC_LISTED)
    for await (const [k] of this.paged(gte, lt)) yield k.subarray(1)
  }

  async listed (hashes: readonly Uint8Array[]): Promise<boolean[]> {
    if (hashes.length === 0) return []
    return await this.db.hasMany(hashes.map(h => SnapshotKeys.syncListed(h)))
  }

  // ------------------------------------------------------------------------------------------------
  // chunks

  async have (hashes: readonly Uint8Array[]): Promise<boolean[]> {
    if (hashes.length === 0) return []
    return await this.db.hasMany(hashes.map(h => SnapshotKeys.syncHave(h)))
  }

  /** The HAVE row of a stored, verified chunk and, when known, its partial state hash (2048 bytes). */
  putHave (batch: StoreBatch, hash: Uint8Array, size: number, peer?: Uint8Array, partial?: Uint8Array): void {
    batch.put(SnapshotKeys.syncHave(hash), haveValue(size, peer))
    if (partial !== undefined) this.putPartial(batch, hash, partial)
  }

  /** Deletes a chunk's HAVE row and its partial state hash. */
  delHave (batch: StoreBatch, hash: Uint8Array): StoreBatch {
    return batch.del(SnapshotKeys.syncHave(hash)).del(SnapshotKeys.syncPartial(hash))
  }

  putPartial (batch: StoreBatch, hash: Uint8Array, partial: Uint8Array): void {
    if (partial.byteLength !== LTHASH_BYTES) throw new TypeError(`a partial state hash is ${LTHASH_BYTES} bytes, got ${partial.byteLength}`)
    batch.put(SnapshotKeys.syncPartial(hash), partial)
  }

  /** The stored partial state hashes of chunks (undefined: none, or not 2048 bytes). */
  async partials (hashes: readonly Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    if (hashes.length === 0) return []
    const vs = await this.db.getMany(hashes.map(h => SnapshotKeys.syncPartial(h)))
    return vs.map(v => v !== undefined && v.byteLength === LTHASH_BYTES ? v : undefined)
  }

  /** HAVE rows, ascending by hash. */
  async * haves (): AsyncGenerator<{ hash: Uint8Array, size: number, peer?: Uint8Array }> {
    const [gte, lt] = SnapshotKeys.range(SnapshotBucket.SYNC_HAVE)
    for await (const [k, v] of this.paged(gte, lt)) yield { hash: k.subarray(1), ...parseHave(v) }
  }

  /** Chunks stored and verified, and their bytes. */
  async haveTotals (): Promise<{ chunks: number, bytes: number }> {
    let chunks = 0
    let bytes = 0
    for await (const h of this.haves()) { chunks++; bytes += h.size }
    return { chunks, bytes }
  }

  // ------------------------------------------------------------------------------------------------
  // load

  async load (): Promise<LoadProgress> {
    const [next, lt, entries] = await this.db.getMany([META.loadNext, META.loadLtHash, META.loadEntries])
    return {
      next: next === undefined ? 0 : readU64(next, 0),
      lthash: lt === undefined ? new LtHash() : LtHash.fromBytes(lt),
      accounts: entries === undefined ? 0 : readU64(entries, 0),
      embeddings: entries === undefined ? 0 : readU64(entries, 8)
    }
  }

  putLoad (batch: StoreBatch, p: LoadProgress): void {
    const entries = new Uint8Array(16)
    entries.set(u64(p.accounts), 0)
    entries.set(u64(p.embeddings), 8)
    batch.put(META.loadNext, u64(p.next)).put(META.loadLtHash, p.lthash.toBytes()).put(META.loadEntries, entries)
  }

  /**
   * Marks the state as being replaced and starts the load progress at row 0 unless a load has begun
   * (chunks loaded as they arrived, loader.ts: their rows are rows of the verified listing, so the cursor
   * stays valid); then the loader clears the state when its cursor is 0.
   */
  async prepareLoad (batch = this.store.batch()): Promise<StoreBatch> {
    batch.put(META.stateReplaced, Uint8Array.of(1))
    if (await this.db.get(META.loadNext) === undefined) this.putLoad(batch, { next: 0, lthash: new LtHash(), accounts: 0, embeddings: 0 })
    return batch
  }

  /** prepareLoad, and the phase `load`. */
  async beginLoad (): Promise<void> {
    await this.setPhase(await this.prepareLoad(), 'load').write()
  }

  /** In the anchor batch: the sync is over (its other rows are cleared right after by `clear`). */
  finish (batch: StoreBatch): void {
    batch.del(META.phase).del(META.stateReplaced).del(META.attestation)
  }

  /**
   * Deletes every row of the sync (meta, listing, HAVE, partials); chunks stay in the packs (a later sync reuses
   * them, the next snapshot registration sweeps those no snapshot lists). `keepStateReplaced` keeps
   * the state-replaced flag (an abandoned sync after the state was cleared).
   */
  async clear (opts: { keepStateReplaced?: boolean } = {}): Promise<void> {
    for (const b of [SnapshotBucket.SYNC_HAVE, SnapshotBucket.SYNC_PARTIAL, SnapshotBucket.SYNC_LISTED, SnapshotBucket.SYNC_ROW]) {
      const [gte, lt] = SnapshotKeys.range(b)
      await this.db.clear({ gte, lt })
    }
    // meta last (the phase row goes with it), keeping the state-replaced flag if asked: never a moment
    // without it
    const batch = this.store.batch()
    const [gte, lt] = SnapshotKeys.range(SnapshotBucket.SYNC_META)
    for await (const k of this.db.keys({ gte, lt })) {
      if (opts.keepStateReplaced === true && Buffer.compare(k, META.stateReplaced) === 0) continue
      batch.del(k)
    }
    await batch.write()
  }

  /**
   * Rows of a sync that is over: a kill between the anchor batch (which deletes the phase row) and the
   * `clear` after it leaves the listing, HAVE and partial rows with no phase row, which nothing would read
   * again. With no sync in progress, deletes every sync row but the state-replaced flag (an abandoned
   * sync's, which must stay). Returns whether there was anything to delete. Run at every start.
   */
  async sweepOrphans (): Promise<boolean> {
    if ((await this.db.get(META.phase)) !== undefined) return false
    let found = false
    for (const b of SYNC_BUCKETS) {
      const [gte, lt] = SnapshotKeys.range(b)
      for (const k of await this.db.keys({ gte, lt, limit: 2 }).all()) {
        if (Buffer.compare(k, META.stateReplaced) !== 0) found = true
      }
      if (found) break
    }
    if (found) await this.clear({ keepStateReplaced: true })
    return found
  }
}
