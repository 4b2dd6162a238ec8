/**
 * PackStore: immutable, content-addressed blobs (snapshot chunks) in append-only pack files beside the
 * LevelDB store, with only a small index in LevelDB, as geth's freezer and Sui's formal snapshot files
 * keep immutable data out of the LSM tree (every byte written once, no WAL copy, no compaction of it).
 *
 * ## Files
 *
 * `<store dir>/packs/<id>.pack`, id a u32 in 8 hex digits. Packs are shared segments: every writer
 * (the snapshot builder, snapshot sync's downloader) appends to the one active pack, which is sealed
 * when it reaches `maxPackBytes` (256 MiB) and at every open (a new process never appends to an older
 * pack). A pack is a 16-byte header (`SOMAPACK`, u32 version 1, u32 0) and records
 * `length u32 ‖ sha256 32 ‖ bytes`, so a pack describes itself (its index can be rebuilt by reading it).
 * A blob's key is the sha256 of its bytes; the caller has checked it.
 *
 * ## Index (src/store/keys.ts)
 *
 * - 0x0c pack index: hash 32 → pack u32 ‖ offset u64 ‖ length u32 (offset of the bytes in the pack);
 * - 0x0d pack records: pack u32 ‖ offset u64 → hash 32: the blobs of each pack in file order. A row
 *   whose 0x0c row points elsewhere is stale (two writers appended the same blob at once; the last
 *   index row won) and counts for nothing.
 *
 * ## Write order and crash safety
 *
 * `commit(batch, blobs)` writes the bytes to the pack file (positional writes at offsets reserved in
 * order), then the caller's batch with both index rows (and whatever the caller put in it, e.g. a
 * snapshot's rows or snapshot sync's HAVE rows), atomically. So after a kill -9 at any point every
 * indexed blob's bytes were written before its index row; bytes written without an index row are
 * garbage. On open, each pack's tail is checked against the index: bytes after its last indexed blob
 * are truncated; the last indexed blob must lie inside the file (its length checked) and hash to its
 * key (read and sha256'd: one blob per pack); one that does not is dropped from the index (and the check
 * repeats on the one before), with a warning — only a failing disk or an OS crash (LevelDB and the packs
 * are written without fsync, as the rest of the store) can cause that. A pack with no indexed blob is
 * deleted. Unindexed bytes inside a pack (two concurrent writers, one killed before its index row) are
 * dead space, reclaimed by compaction.
 *
 * ## Refcounting and pruning
 *
 * Blobs are shared, never copied per owner: snapshots that list the same chunk share its one index row
 * (the owners' mark-and-sweep — SnapshotStore.prune — deletes the index rows no owner needs). A pack's
 * refcount is its number of live 0x0d rows: `collect()` (after a sweep, and at open) deletes every pack
 * that has none, whole files, and compacts a sealed pack whose live blobs fill less than half of it
 * (they are appended to the active pack and re-indexed in one batch, then the old file is deleted), so
 * the dead space stays below about half the packs' size.
 *
 * ## Reads
 *
 * `getMany` looks the locations up in LevelDB (16-byte rows) and reads the byte ranges from the pack
 * files with positional reads on file handles kept open (never a LevelDB read of a blob). A pack being
 * deleted is closed once its reads finish.
 */
import { mkdirSync, readdirSync } from 'node:fs'
import { open, stat, unlink, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import type { ClassicLevel } from 'classic-level'
import { sha256, bytesEqual, toHex } from '../crypto/hash.ts'
import { CorruptStoreError, StoreError } from '../errors.ts'
import { Bucket, readU32, readU64, writeU32, writeU64 } from './keys.ts'
import type { StoreBatch } from './chain-store.ts'

export const PACK_MAGIC = Buffer.from('SOMAPACK', 'latin1')
export const PACK_VERSION = 1
export const PACK_HEADER_BYTES = 16
/** length u32 ‖ sha256 32 before each blob */
export const PACK_RECORD_HEADER_BYTES = 36
export const DEFAULT_MAX_PACK_BYTES = 256 * 1024 * 1024

/** rows per page of index scans */
const PAGE_ROWS = 1024

export interface PackLocation { pack: number, offset: number, length: number }

export interface PackLog {
  info: (msg: string, ...args: unknown[]) => void
  warn: (msg: string, ...args: unknown[]) => void
}

export interface PackStoreOptions {
  /** an active pack is sealed when it reaches this size. @default 256 MiB */
  maxPackBytes?: number
  /** recovery and collection messages (truncated tails, dropped rows, deleted packs) */
  log?: PackLog
}

/** What the pack store needs of its ChainStore: batches that index rows go in. */
export interface PackStoreDeps {
  db: ClassicLevel<Uint8Array, Uint8Array>
  batch: () => StoreBatch
}

export interface PackRecovery {
  /** packs checked at open */
  packs: number
  /** unindexed tail bytes truncated */
  truncatedBytes: number
  /** index rows dropped (blob outside its file, or not hashing to its key) */
  droppedRows: number
  /** packs deleted (no indexed blob) */
  deletedPacks: number
}

export interface CollectStats { deletedPacks: number, compactedPacks: number, movedBlobs: number, staleRows: number }

type Level = ClassicLevel<Uint8Array, Uint8Array>

export const PackKeys = {
  index: (hash: Uint8Array): Uint8Array => {
    const k = new Uint8Array(33); k[0] = Bucket.PACK_INDEX; k.set(hash, 1); return k
  },
  record: (pack: number, offset: number): Uint8Array => {
    const k = new Uint8Array(13); k[0] = Bucket.PACK_RECORD; writeU32(k, 1, pack); writeU64(k, 5, offset); return k
  },
  /** [gte, lt) over one pack's record rows */
  records: (pack: number): [Uint8Array, Uint8Array] => {
    const lo = new Uint8Array(5); lo[0] = Bucket.PACK_RECORD; writeU32(lo, 1, pack)
    const hi = new Uint8Array(5); hi[0] = Bucket.PACK_RECORD; writeU32(hi, 1, pack + 1)
    return [lo, hi]
  }
}

export function encodeLocation (l: PackLocation): Uint8Array {
  const v = new Uint8Array(16); writeU32(v, 0, l.pack); writeU64(v, 4, l.offset); writeU32(v, 12, l.length); return v
}

export function decodeLocation (v: Uint8Array): PackLocation {
  if (v.byteLength !== 16) throw new CorruptStoreError(`a pack index row is ${v.byteLength} bytes, not 16`)
  return { pack: readU32(v, 0), offset: readU64(v, 4), length: readU32(v, 12) }
}

function sameLocation (a: PackLocation, b: PackLocation): boolean {
  return a.pack === b.pack && a.offset === b.offset && a.length === b.length
}

export function packFileName (id: number): string {
  return `${id.toString(16).padStart(8, '0')}.pack`
}

function parsePackFileName (name: string): number | undefined {
  const m = /^([0-9a-f]{8})\.pack$/.exec(name)
  return m === null ? undefined : parseInt(m[1], 16)
}

interface OpenPack { fh: FileHandle, reads: number, doomed: boolean }

export interface Blob { hash: Uint8Array, bytes: Uint8Array }

export class PackStore {
  readonly dir: string
  readonly maxPackBytes: number
  readonly recovery: PackRecovery = { packs: 0, truncatedBytes: 0, droppedRows: 0, deletedPacks: 0 }
  private readonly db: Level
  private readonly newBatch: () => StoreBatch
  readonly log?: PackLog
  private readonly readers = new Map<number, Promise<OpenPack>>()
  /** the pack appended to, its handle and size (bytes reserved so far) */
  private active?: { id: number, fh: FileHandle, size: number }
  private nextId = 1
  /** appends whose index rows are not written yet, per pack: such a pack is not collected */
  private readonly unsettled = new Map<number, number>()
  private creating?: Promise<void>
  private collecting?: Promise<CollectStats>
  private closed = false

  private constructor (dir: string, deps: PackStoreDeps, opts: PackStoreOptions) {
    this.dir = dir
    this.db = deps.db
    this.newBatch = deps.batch
    this.log = opts.log
    this.maxPackBytes = opts.maxPackBytes ?? DEFAULT_MAX_PACK_BYTES
    if (!Number.isInteger(this.maxPackBytes) || this.maxPackBytes < 4096) throw new RangeError(`maxPackBytes must be an integer >= 4096, got ${opts.maxPackBytes}`)
  }

  /** Opens the packs of a store (creating the directory), checking every pack's tail against the index. */
  static async open (dir: string, deps: PackStoreDeps, opts: PackStoreOptions = {}): Promise<PackStore> {
    mkdirSync(dir, { recursive: true })
    const p = new PackStore(dir, deps, opts)
    await p.recover()
    return p
  }

  private file (id: number): string { return path.join(this.dir, packFileName(id)) }

  private fileIds (): number[] {
    return readdirSync(this.dir).map(parsePackFileName).filter((x): x is number => x !== undefined).sort((a, b) => a - b)
  }

  /** Pack ids that have record rows, ascending (one seek per pack). */
  private async indexedIds (): Promise<number[]> {
    const out: number[] = []
    let from = 0
    for (;;) {
      const [gte] = PackKeys.records(from)
      let found: number | undefined
      for await (const k of this.db.keys({ gte, lt: Uint8Array.of(Bucket.PACK_RECORD + 1), limit: 1 })) found = readU32(k, 1)
      if (found === undefined) return out
      out.push(found)
      from = found + 1
    }
  }

  private async recover (): Promise<void> {
    const files = this.fileIds()
    const ids = [...new Set([...files, ...await this.indexedIds()])].sort((a, b) => a - b)
    this.nextId = (ids.length > 0 ? ids[ids.length - 1] : 0) + 1
    for (const id of ids) {
      this.recovery.packs++
      let size = -1
      try { size = (await stat(this.file(id))).size } catch (err: any) { if (err.code !== 'ENOENT') throw err }
      let fh: FileHandle | undefined
      try {
        if (size >= 0) fh = await open(this.file(id), 'r+')
        for (;;) {
          const [gte, lt] = PackKeys.records(id)
          let last: [Uint8Array, Uint8Array] | undefined
          for await (const kv of this.db.iterator({ gte, lt, reverse: true, limit: 1 })) last = kv
          if (last === undefined) {
            if (fh !== undefined) {
              await fh.close(); fh = undefined
              await unlink(this.file(id))
              this.recovery.deletedPacks++
              if (size > PACK_HEADER_BYTES) this.log?.info('pack %s: no indexed blob, %d bytes deleted', packFileName(id), size)
            }
            break
          }
          const [rk, hash] = last
          const offset = readU64(rk, 5)
          const idx = await this.db.get(PackKeys.index(hash))
          const loc = idx === undefined ? undefined : decodeLocation(idx)
          if (loc === undefined || loc.pack !== id || loc.offset !== offset) {
            // stale: the blob is indexed elsewhere (or not at all)
            await this.db.del(rk)
            continue
          }
          const end = loc.offset + loc.length
          let why: string | undefined
          if (fh === undefined) why = 'its pack file is missing'
          else if (end > size) why = `it ends at byte ${end}, the file has ${size}`
          else {
            const buf = Buffer.allocUnsafe(loc.length)
            await readFully(fh, buf, loc.offset)
            if (!bytesEqual(sha256(buf), hash)) why = 'its bytes do not hash to its key'
          }
          if (why !== undefined) {
            this.log?.warn('pack %s: blob %s dropped from the index: %s', packFileName(id), toHex(hash), why)
            await this.db.batch().del(rk).del(PackKeys.index(hash)).write()
            this.recovery.droppedRows++
            continue
          }
          if (size > end) {
            await fh!.truncate(end)
            this.recovery.truncatedBytes += size - end
            this.log?.info('pack %s: %d unindexed tail bytes truncated (a write cut off before its index row)', packFileName(id), size - end)
          }
          break
        }
      } finally {
        await fh?.close()
      }
    }
  }

  // ------------------------------------------------------------------------------------------------
  // reads

  /** The locations of blobs (undefined: not stored). */
  async locate (hashes: readonly Uint8Array[]): Promise<Array<PackLocation | undefined>> {
    if (hashes.length === 0) return []
    const vs = await this.db.getMany(hashes.map(h => PackKeys.index(h)))
    return vs.map(v => v === undefined ? undefined : decodeLocation(v))
  }

  async has (hashes: readonly Uint8Array[]): Promise<boolean[]> {
    if (hashes.length === 0) return []
    return await this.db.hasMany(hashes.map(h => PackKeys.index(h)))
  }

  async get (hash: Uint8Array): Promise<Uint8Array | undefined> {
    return (await this.getMany([hash]))[0]
  }

  /**
   * The bytes of blobs, read from their packs (undefined: not stored, or its pack is gone). Not checked
   * against their hashes here: the reader does (as it did with LevelDB).
   */
  async getMany (hashes: readonly Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    const locs = await this.locate(hashes)
    return await Promise.all(locs.map(async l => l === undefined ? undefined : await this.read(l)))
  }

  /** The bytes at a location (undefined: its pack is gone or too short). */
  async read (l: PackLocation): Promise<Uint8Array | undefined> {
    if (this.closed) throw new StoreError('pack store is closed')
    let p: OpenPack
    try {
      p = await this.reader(l.pack)
    } catch (err: any) {
      if (err.code === 'ENOENT') return undefined
      throw err
    }
    p.reads++
    try {
      const buf = Buffer.allocUnsafe(l.length)
      const n = await readFully(p.fh, buf, l.offset)
      return n === l.length ? buf : undefined
    } finally {
      if (--p.reads === 0 && p.doomed) void p.fh.close().catch(() => {})
    }
  }

  private async reader (id: number): Promise<OpenPack> {
    let r = this.readers.get(id)
    if (r === undefined) {
      r = open(this.file(id), 'r').then(fh => ({ fh, reads: 0, doomed: false }))
      this.readers.set(id, r)
      r.catch(() => { if (this.readers.get(id) === r) this.readers.delete(id) })
    }
    return await r
  }

  /** Index rows in hash order, read in pages (for a mark-and-sweep over the stored blobs). */
  async * entries (): AsyncGenerator<{ hash: Uint8Array, loc: PackLocation }> {
    let range: { gte: Uint8Array } | { gt: Uint8Array } = { gte: Uint8Array.of(Bucket.PACK_INDEX) }
    const lt = Uint8Array.of(Bucket.PACK_INDEX + 1)
    for (;;) {
      const page: Array<[Uint8Array, Uint8Array]> = await this.db.iterator({ ...range, lt, limit: PAGE_ROWS }).all()
      for (const [k, v] of page) yield { hash: k.subarray(1), loc: decodeLocation(v) }
      if (page.length < PAGE_ROWS) return
      range = { gt: page[page.length - 1][0] }
    }
  }

  /** The number of indexed blobs. */
  async count (): Promise<number> {
    let n = 0
    for await (const _ of this.db.keys({ gte: Uint8Array.of(Bucket.PACK_INDEX), lt: Uint8Array.of(Bucket.PACK_INDEX + 1) })) n++
    return n
  }

  // ------------------------------------------------------------------------------------------------
  // writes

  /** Reserves `len` bytes in the active pack (sealing it and starting another when full). */
  private async reserve (len: number): Promise<{ id: number, fh: FileHandle, offset: number }> {
    while (this.creating !== undefined) await this.creating
    const a = this.active
    if (a === undefined || (a.size > PACK_HEADER_BYTES && a.size + len > this.maxPackBytes)) {
      this.creating = this.startPack().finally(() => { this.creating = undefined })
      await this.creating
      return await this.reserve(len)
    }
    const offset = a.size
    a.size += len
    return { id: a.id, fh: a.fh, offset }
  }

  private async startPack (): Promise<void> {
    const id = this.nextId++
    const fh = await open(this.file(id), 'wx+')
    const header = Buffer.alloc(PACK_HEADER_BYTES)
    PACK_MAGIC.copy(header, 0)
    header.writeUInt32BE(PACK_VERSION, 8)
    await writeFully(fh, [header], 0)
    const old = this.active
    this.active = { id, fh, size: PACK_HEADER_BYTES }
    // the sealed pack's writes hold their own reference to the handle; they are awaited by their commit
    if (old !== undefined) this.sealed.push(old.fh)
  }

  private sealed: FileHandle[] = []

  /**
   * Stores blobs: their bytes appended to the active pack, then `batch` written with their index rows
   * (and the caller's rows) atomically. Blobs already indexed are skipped (content-addressed), unless
   * `replace` (compaction). Returns the blobs written.
   */
  async commit (batch: StoreBatch, blobs: readonly Blob[], opts: { replace?: boolean } = {}): Promise<number> {
    if (this.closed) throw new StoreError('pack store is closed')
    let todo = blobs
    if (opts.replace !== true && blobs.length > 0) {
      const have = await this.has(blobs.map(b => b.hash))
      todo = blobs.filter((_, i) => !have[i])
    }
    const touched: number[] = []
    try {
      if (todo.length > 0) {
        // reserve all ranges in order, then write them (one writev per pack run)
        const runs: Array<{ fh: FileHandle, offset: number, bufs: Uint8Array[] }> = []
        for (const b of todo) {
          const len = PACK_RECORD_HEADER_BYTES + b.bytes.byteLength
          const r = await this.reserve(len)
          touched.push(r.id)
          this.unsettled.set(r.id, (this.unsettled.get(r.id) ?? 0) + 1)
          const head = new Uint8Array(PACK_RECORD_HEADER_BYTES)
          writeU32(head, 0, b.bytes.byteLength)
          head.set(b.hash, 4)
          const last = runs[runs.length - 1]
          if (last !== undefined && last.fh === r.fh && last.offset + last.bufs.reduce((s, x) => s + x.byteLength, 0) === r.offset) last.bufs.push(head, b.bytes)
          else runs.push({ fh: r.fh, offset: r.offset, bufs: [head, b.bytes] })
          const loc = { pack: r.id, offset: r.offset + PACK_RECORD_HEADER_BYTES, length: b.bytes.byteLength }
          batch.put(PackKeys.index(b.hash), encodeLocation(loc))
          batch.put(PackKeys.record(loc.pack, loc.offset), b.hash)
        }
        await Promise.all(runs.map(async r => { await writeFully(r.fh, r.bufs, r.offset) }))
      }
      await batch.write()
    } finally {
      for (const id of touched) {
        const n = (this.unsettled.get(id) ?? 1) - 1
        if (n <= 0) this.unsettled.delete(id)
        else this.unsettled.set(id, n)
      }
    }
    return todo.length
  }

  /** Adds to `batch` the deletion of a blob's index rows. */
  delAt (batch: StoreBatch, hash: Uint8Array, loc: PackLocation): void {
    batch.del(PackKeys.index(hash)).del(PackKeys.record(loc.pack, loc.offset))
  }

  /** Adds to `batch` the deletion of blobs' index rows (those stored). */
  async del (batch: StoreBatch, hashes: readonly Uint8Array[]): Promise<void> {
    const locs = await this.locate(hashes)
    locs.forEach((l, i) => { if (l !== undefined) this.delAt(batch, hashes[i], l) })
  }

  // ------------------------------------------------------------------------------------------------
  // collection

  /**
   * Deletes the packs no index row points into (whole files), and compacts sealed packs whose live
   * blobs fill less than half of them. Call after writing a batch that deleted index rows. Never
   * touches the active pack or one with appends in flight.
   */
  async collect (): Promise<CollectStats> {
    while (this.collecting !== undefined) await this.collecting.catch(() => {})
    this.collecting = this.doCollect().finally(() => { this.collecting = undefined })
    return await this.collecting
  }

  private async doCollect (): Promise<CollectStats> {
    const stats: CollectStats = { deletedPacks: 0, compactedPacks: 0, movedBlobs: 0, staleRows: 0 }
    for (const id of this.fileIds()) {
      if (this.closed) break
      if (id === this.active?.id || this.unsettled.has(id)) continue
      const live = await this.liveRows(id, stats)
      let size: number
      try { size = (await stat(this.file(id))).size } catch { continue }
      if (live.length === 0) {
        await this.deleteFile(id)
        stats.deletedPacks++
        this.log?.info('pack %s deleted: no snapshot lists its %d bytes any more', packFileName(id), size)
        continue
      }
      const liveBytes = live.reduce((s, l) => s + PACK_RECORD_HEADER_BYTES + l.loc.length, PACK_HEADER_BYTES)
      if (liveBytes * 2 >= size) continue
      // compact: the live blobs move to the active pack, their old rows go in the same batch
      const moved: Blob[] = []
      const batch = this.newBatch()
      for (let i = 0; i < live.length; i += 256) {
        const part = live.slice(i, i + 256)
        const bytes = await Promise.all(part.map(async l => await this.read(l.loc)))
        part.forEach((l, j) => {
          const b = bytes[j]
          if (b === undefined || !bytesEqual(sha256(b), l.hash)) throw new CorruptStoreError(`pack ${packFileName(id)}: blob ${toHex(l.hash)} is damaged`)
          batch.del(PackKeys.record(l.loc.pack, l.loc.offset))
          moved.push({ hash: l.hash, bytes: b })
        })
      }
      await this.commit(batch, moved, { replace: true })
      await this.deleteFile(id)
      stats.compactedPacks++
      stats.movedBlobs += moved.length
      this.log?.info('pack %s compacted: %d live blobs (%d of its %d bytes) moved to pack %s', packFileName(id), moved.length, liveBytes, size, packFileName(this.active!.id))
    }
    return stats
  }

  /** A pack's live rows (stale record rows, pointing at blobs indexed elsewhere, are deleted). */
  private async liveRows (id: number, stats: CollectStats): Promise<Array<{ hash: Uint8Array, loc: PackLocation }>> {
    const [gte, lt] = PackKeys.records(id)
    const rows: Array<[Uint8Array, Uint8Array]> = await this.db.iterator({ gte, lt }).all()
    const out: Array<{ hash: Uint8Array, loc: PackLocation }> = []
    const stale = this.db.batch()
    for (let i = 0; i < rows.length; i += PAGE_ROWS) {
      const part = rows.slice(i, i + PAGE_ROWS)
      const locs = await this.locate(part.map(([, h]) => h))
      part.forEach(([k, h], j) => {
        const l = locs[j]
        const at = { pack: id, offset: readU64(k, 5), length: l?.length ?? 0 }
        if (l !== undefined && sameLocation(l, at)) out.push({ hash: h, loc: l })
        else { stale.del(k); stats.staleRows++ }
      })
    }
    if (stale.length > 0) await stale.write()
    else await stale.close()
    return out
  }

  private async deleteFile (id: number): Promise<void> {
    const r = this.readers.get(id)
    this.readers.delete(id)
    if (r !== undefined) {
      const p = await r.catch(() => undefined)
      if (p !== undefined) {
        p.doomed = true
        if (p.reads === 0) await p.fh.close().catch(() => {})
      }
    }
    await unlink(this.file(id)).catch((err: any) => { if (err.code !== 'ENOENT') throw err })
  }

  async close (): Promise<void> {
    if (this.closed) return
    await this.collecting?.catch(() => {})
    this.closed = true
    const handles: FileHandle[] = [...this.sealed]
    if (this.active !== undefined) handles.push(this.active.fh)
    for (const r of this.readers.values()) {
      const p = await r.catch(() => undefined)
      if (p !== undefined) handles.push(p.fh)
    }
    this.readers.clear()
    this.sealed = []
    this.active = undefined
    await Promise.all(handles.map(async fh => await fh.close().catch(() => {})))
  }
}

async function readFully (fh: FileHandle, buf: Uint8Array, position: number): Promise<number> {
  let done = 0
  while (done < buf.byteLength) {
    const { bytesRead } = await fh.read(buf, done, buf.byteLength - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return done
}

async function writeFully (fh: FileHandle, bufs: Uint8Array[], position: number): Promise<void> {
  let pos = position
  let rest = bufs
  while (rest.length > 0) {
    const total = rest.reduce((s, b) => s + b.byteLength, 0)
    const { bytesWritten } = await fh.writev(rest as any, pos)
    if (bytesWritten === total) return
    if (bytesWritten <= 0) throw new StoreError('a pack write made no progress')
    pos += bytesWritten
    // drop what was written
    let skip = bytesWritten
    const next: Uint8Array[] = []
    for (const b of rest) {
      if (skip >= b.byteLength) { skip -= b.byteLength; continue }
      next.push(skip > 0 ? b.subarray(skip) : b)
      skip = 0
    }
    rest = next
  }
}
