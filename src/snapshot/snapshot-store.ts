/**
 * Snapshot storage inside the node's ChainStore (layout in ./store-keys.ts): content-addressed chunks
 * shared between snapshots, kept in the store's pack files (src/store/packs.ts; LevelDB holds only
 * their index), and per snapshot (by commit index) its attestation, listing, filter and multiset
 * accumulator. Pruning keeps the newest `keep` snapshots and sweeps the index rows of the chunks that no
 * kept snapshot lists (mark-and-sweep), in the same atomic batch as the new snapshot's rows; then
 * `collectPacks` deletes the pack files no index row points into (and compacts mostly-dead ones).
 */
import type { ChainStore, StoreBatch } from '../store/chain-store.ts'
import { Keys, readU64 } from '../store/keys.ts'
import { LtHash } from '../crypto/lthash.ts'
import { bytesKey, toHex } from '../crypto/hash.ts'
import { CorruptStoreError, StoreError } from '../errors.ts'
import { SnapshotBucket, SnapshotKeys } from './store-keys.ts'
import { decodeAttestation, decodeListing, decodeManifest, type SnapshotAttestation, type SnapshotManifest } from './manifest.ts'
import type { ChunkInfo } from './chunk-format.ts'
import type { Blob, CollectStats, PackStore } from '../store/packs.ts'

export interface StoredSnapshot {
  commit: number
  attestationBytes: Uint8Array
  attestation: SnapshotAttestation
  manifest: SnapshotManifest
}

/** The rows of one snapshot, to be written. */
export interface SnapshotRows {
  commit: number
  attestation: Uint8Array
  listing: Uint8Array
  filter: Uint8Array
  multiset: Uint8Array
}

export class SnapshotStore {
  readonly store: ChainStore

  constructor (store: ChainStore) {
    this.store = store
  }

  private get db (): ChainStore['db'] { return this.store.db }

  /** Commit indices of the stored snapshots, ascending. */
  async list (): Promise<number[]> {
    const out: number[] = []
    for await (const k of this.db.keys({ gte: Uint8Array.of(SnapshotBucket.ATTESTATION), lt: Uint8Array.of(SnapshotBucket.ATTESTATION + 1) })) out.push(readU64(k, 1))
    return out
  }

  /** The newest stored snapshot's commit (optionally the newest strictly below `before`). */
  async latest (before?: number): Promise<number | undefined> {
    const lt = before === undefined ? Uint8Array.of(SnapshotBucket.ATTESTATION + 1) : SnapshotKeys.attestation(before)
    for await (const k of this.db.keys({ gte: Uint8Array.of(SnapshotBucket.ATTESTATION), lt, reverse: true, limit: 1 })) return readU64(k, 1)
    return undefined
  }

  async has (commit: number): Promise<boolean> {
    return (await this.db.get(SnapshotKeys.attestation(commit))) !== undefined
  }

  /** The stored snapshot of `commit`, or undefined. Its manifest is decoded, not verified. */
  async get (commit: number): Promise<StoredSnapshot | undefined> {
    const attestationBytes = await this.db.get(SnapshotKeys.attestation(commit))
    if (attestationBytes === undefined) return undefined
    const attestation = decodeAttestation(attestationBytes)
    return { commit, attestationBytes, attestation, manifest: decodeManifest(attestation.manifest) }
  }

  private async need (key: Uint8Array, what: string, commit: number): Promise<Uint8Array> {
    const v = await this.db.get(key)
    if (v === undefined) throw new CorruptStoreError(`${this.store.dir}: the snapshot of commit ${commit} has no ${what}`)
    return v
  }

  async getListingBytes (commit: number): Promise<Uint8Array> { return await this.need(SnapshotKeys.listing(commit), 'listing', commit) }
  async getListing (commit: number): Promise<ChunkInfo[]> { return decodeListing(await this.getListingBytes(commit)) }
  async getFilterBytes (commit: number): Promise<Uint8Array> { return await this.need(SnapshotKeys.filter(commit), 'filter', commit) }
  async getMultiset (commit: number): Promise<LtHash> {
    const b = await this.need(SnapshotKeys.multiset(commit), 'multiset accumulator', commit)
    try {
      return LtHash.fromBytes(b)
    } catch (err: any) {
      throw new CorruptStoreError(`${this.store.dir}: the snapshot of commit ${commit} has a bad multiset accumulator: ${err.message}`)
    }
  }

  private get packs (): PackStore { return this.store.packs }

  /** A stored chunk's bytes, read from its pack (undefined: not stored). */
  async getChunk (hash: Uint8Array): Promise<Uint8Array | undefined> {
    return await this.packs.get(hash)
  }

  async getChunks (hashes: readonly Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    return await this.packs.getMany(hashes)
  }

  async hasChunks (hashes: readonly Uint8Array[]): Promise<boolean[]> {
    return await this.packs.has(hashes)
  }

  /**
   * Stored chunk hashes, ascending: the pack index read in pages, each by an iterator closed before the
   * page is yielded (an open iterator pins LevelDB's memtables; one `next()` per key cost ~50 µs each, and
   * the sweep of every snapshot build walks them all).
   */
  async * chunkHashes (): AsyncGenerator<Uint8Array> {
    for await (const e of this.packs.entries()) yield e.hash
  }

  /**
   * Stores chunks (sha256-checked by the caller): their bytes appended to a pack, then `batch` written
   * with their index rows. Already stored ones are skipped. Returns the number written.
   */
  async commitChunks (batch: StoreBatch, chunks: readonly Blob[]): Promise<number> {
    return await this.packs.commit(batch, chunks)
  }

  /** Adds to `batch` the deletion of chunks (index rows; their pack space is reclaimed by collectPacks). */
  async delChunks (batch: StoreBatch, hashes: readonly Uint8Array[]): Promise<void> {
    await this.packs.del(batch, hashes)
  }

  /** Deletes the pack files no stored chunk is in any more (after a batch that swept chunks). */
  async collectPacks (): Promise<CollectStats> {
    return await this.packs.collect()
  }

  putRows (batch: StoreBatch, r: SnapshotRows): void {
    batch.put(SnapshotKeys.attestation(r.commit), r.attestation)
    batch.put(SnapshotKeys.listing(r.commit), r.listing)
    batch.put(SnapshotKeys.filter(r.commit), r.filter)
    batch.put(SnapshotKeys.multiset(r.commit), r.multiset)
  }

  /** Replaces the attestation of a stored snapshot (e.g. with more signatures). */
  async putAttestation (commit: number, attestation: Uint8Array): Promise<void> {
    if (!await this.has(commit)) throw new StoreError(`no snapshot of commit ${commit}`)
    await this.store.batch().put(SnapshotKeys.attestation(commit), attestation).write()
  }

  /**
   * Adds to `batch` the deletion of every stored snapshot except the newest `keep` of `stored ∪ added`
   * (added: the snapshot being written, with its listing), and of every chunk that no kept snapshot
   * lists (including orphans of an interrupted build). Returns the kept commits and the counts. After
   * writing the batch, call collectPacks.
   */
  async prune (batch: StoreBatch, keep: number, added?: { commit: number, listing: readonly ChunkInfo[] }): Promise<{ kept: number[], prunedSnapshots: number[], sweptChunks: number }> {
    if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`keep must be an integer >= 1, got ${keep}`)
    const stored = await this.list()
    const all = [...new Set([...stored, ...(added !== undefined ? [added.commit] : [])])].sort((a, b) => a - b)
    const kept = all.slice(-keep)
    const prunedSnapshots = all.slice(0, Math.max(0, all.length - keep))
    for (const c of prunedSnapshots) {
      batch.del(SnapshotKeys.attestation(c)).del(SnapshotKeys.listing(c)).del(SnapshotKeys.filter(c)).del(SnapshotKeys.multiset(c))
    }
    // mark
    const live = new Set<string>()
    for (const c of kept) {
      const listing = added !== undefined && c === added.commit ? added.listing : await this.getListing(c)
      for (const info of listing) live.add(bytesKey(info.hash))
    }
    // sweep (the index rows; the caller runs collectPacks after writing the batch)
    let sweptChunks = 0
    for await (const e of this.packs.entries()) {
      if (!live.has(bytesKey(e.hash))) { this.packs.delAt(batch, e.hash, e.loc); sweptChunks++ }
    }
    return { kept, prunedSnapshots, sweptChunks }
  }

  /**
   * Deletes the state change log rows of commits <= `commit` (an incremental update needs the rows after
   * its base snapshot only). Not atomic with anything, and need not be: rows below every kept snapshot
   * are never read, and a crash here only leaves some for the next call.
   */
  async trimChangeLog (commit: number): Promise<void> {
    const [lo] = Keys.changeRange(0, 0)
    const [, hi] = Keys.changeRange(commit, commit)
    await this.db.clear({ gte: lo, lt: hi })
  }

  /** Deletes one snapshot's rows and sweeps the chunks no other snapshot lists. */
  async delete (commit: number): Promise<void> {
    if (!await this.has(commit)) throw new StoreError(`no snapshot of commit ${commit}`)
    const others = (await this.list()).filter(c => c !== commit)
    const batch = this.store.batch()
    batch.del(SnapshotKeys.attestation(commit)).del(SnapshotKeys.listing(commit)).del(SnapshotKeys.filter(commit)).del(SnapshotKeys.multiset(commit))
    const live = new Set<string>()
    for (const c of others) for (const info of await this.getListing(c)) live.add(toHex(info.hash))
    for await (const e of this.packs.entries()) if (!live.has(toHex(e.hash))) this.packs.delAt(batch, e.hash, e.loc)
    await batch.write()
    await this.collectPacks()
  }

  /** The number of stored chunks. */
  async countChunks (): Promise<number> {
    return await this.packs.count()
  }
}

export function commitOfKey (k: Uint8Array): number {
  return readU64(k, 1)
}
