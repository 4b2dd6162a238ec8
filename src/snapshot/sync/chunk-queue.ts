/**
 * The shared work queue of snapshot chunk downloads (seed 002: "process every incoming chunk using a
 * parallel work stealing pattern").
 *
 * One queue for all peers. It is fed from the listing rows stored so far (sync-state.ts), a bounded
 * window at a time (`windowRows`), so memory does not grow with the snapshot: rows whose chunk is already
 * verified (a HAVE row: resumed sync) are skipped, rows whose chunk is already stored (in the packs: an
 * older snapshot's chunk, a delta) get their HAVE row at once without any fetch, and the rest become
 * work items. Each peer's workers `take` items as fast as they get through them, so a faster peer takes
 * more work. A failed item goes back (`release`), excluded from the peer that failed it when that peer
 * lied or lacks it; when the queue is empty, an idle peer `steal`s items that another peer has held for
 * too long (the end game: the first answer wins, the other is discarded).
 */
import { toHex } from '../../crypto/hash.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import type { SyncState } from './sync-state.ts'

/** Bytes a chunk of `size` takes in a GetSnapshotChunksResponse (tag, length varint, bytes). */
function framed (size: number): number {
  return size + (size < 128 ? 2 : size < 16384 ? 3 : size < 2097152 ? 4 : size < 268435456 ? 5 : 6)
}

export interface ChunkItem {
  /** listing row index */
  index: number
  hash: Uint8Array
  /** hex of the hash */
  key: string
  /** listed size */
  size: number
  /** peers that must not be asked for it again (they failed it or lack it) */
  excluded?: Set<string>
}

interface Inflight {
  item: ChunkItem
  /** peers asked for it (two when stolen) */
  peers: Set<string>
  since: number
  /** delivered and being written */
  claimed?: boolean
}

export interface QueueSource {
  state: SyncState
  store: ChainStore
  /** listing rows stored so far */
  rowsAvailable: () => number
  /** the snapshot's chunk count */
  total: number
}

export class ChunkQueue {
  readonly inflight = new Map<string, Inflight>()
  /** chunks found already stored (delta, or stored before a crash without their HAVE row) */
  readonly reused = { chunks: 0, bytes: 0 }
  private readonly src: QueueSource
  private readonly windowRows: number
  private pending: ChunkItem[] = []
  private head = 0
  private retry: ChunkItem[] = []
  private cursor = 0
  private filling?: Promise<void>
  private waiters: Array<() => void> = []
  private readonly completedDuringRefill = new Set<string>()
  /** bumped by reset(): a refill of the old listing does not feed the queue */
  private generation = 0

  constructor (src: QueueSource, opts: { windowRows?: number } = {}) {
    this.src = src
    this.windowRows = opts.windowRows ?? 4096
  }

  /** Forgets everything queued (the listing was replaced); in-flight requests finish on their own. */
  reset (): void {
    this.generation++
    this.pending = []
    this.head = 0
    this.retry = []
    this.cursor = 0
    this.notify()
  }

  /** Rows of the listing not yet read into the queue. */
  get unread (): number { return Math.max(0, this.src.rowsAvailable() - this.cursor) }
  get queued (): number { return this.pending.length - this.head + this.retry.length }
  /** every row read, nothing queued or in flight (the listing may still be growing) */
  get idle (): boolean { return this.unread === 0 && this.queued === 0 && this.inflight.size === 0 }
  get allRead (): boolean { return this.cursor >= this.src.total }
  /** whether `refill` would read rows now */
  get canRefill (): boolean { return this.unread > 0 && this.queued < this.windowRows }

  /** Reads the next window of rows into the queue (one refill at a time). */
  async refill (): Promise<void> {
    if (this.filling !== undefined) { await this.filling; return }
    if (!this.canRefill) return
    this.filling = this.doRefill().finally(() => { this.filling = undefined })
    await this.filling
  }

  private async doRefill (): Promise<void> {
    const gen = this.generation
    this.completedDuringRefill.clear()
    const from = this.cursor
    const to = Math.min(this.src.rowsAvailable(), from + this.windowRows)
    const rows: ChunkItem[] = []
    for await (const [index, r] of this.src.state.rows(from, to)) rows.push({ index, hash: r.hash, key: toHex(r.hash), size: r.size })
    if (gen !== this.generation) return
    const have = await this.src.state.have(rows.map(r => r.hash))
    const candidates = rows.filter((r, i) => !have[i])
    const stored = candidates.length === 0 ? [] : await this.src.store.packs.has(candidates.map(r => r.hash))
    if (gen !== this.generation) return
    const batch = this.src.store.batch()
    candidates.forEach((r, i) => {
      // in flight, or delivered while the rows were being read: not work
      if (this.inflight.has(r.key) || this.completedDuringRefill.has(r.key)) return
      if (stored[i]) {
        // content-addressed: the stored bytes hash to their key (every chunk written to a pack is checked)
        this.src.state.putHave(batch, r.hash, r.size)
        this.reused.chunks++
        this.reused.bytes += r.size
      } else {
        this.pending.push(r)
      }
    })
    if (batch.length > 0) await batch.write()
    if (gen !== this.generation) return
    this.cursor = to
    if (this.head > 4096 && this.head * 2 > this.pending.length) { this.pending = this.pending.slice(this.head); this.head = 0 }
    this.notify()
  }

  /**
   * Up to `maxCount` items whose chunks, framed in a response, total at most `maxBytes` (at least one
   * item) for `peer`; now in flight.
   */
  take (peer: string, maxCount: number, maxBytes: number): ChunkItem[] {
    const out: ChunkItem[] = []
    let bytes = 0
    const fits = (it: ChunkItem): boolean => out.length === 0 || bytes + framed(it.size) <= maxBytes
    const now = Date.now()
    const add = (it: ChunkItem): void => {
      out.push(it)
      bytes += framed(it.size)
      this.inflight.set(it.key, { item: it, peers: new Set([peer]), since: now })
    }
    if (this.retry.length > 0) {
      const keep: ChunkItem[] = []
      for (const it of this.retry) {
        if (out.length < maxCount && it.excluded?.has(peer) !== true && !this.inflight.has(it.key) && fits(it)) add(it)
        else if (!this.inflight.has(it.key)) keep.push(it)
      }
      this.retry = keep
    }
    while (out.length < maxCount && this.head < this.pending.length) {
      const it = this.pending[this.head]
      if (this.inflight.has(it.key)) { this.head++; continue }
      if (!fits(it)) break
      this.head++
      add(it)
    }
    return out
  }

  /**
   * End game: items other peers have held for at least `minAgeMs`, not yet asked of `peer` nor of two
   * peers, for `peer` to fetch too.
   */
  steal (peer: string, maxCount: number, maxBytes: number, minAgeMs: number): ChunkItem[] {
    const out: ChunkItem[] = []
    let bytes = 0
    const now = Date.now()
    for (const f of this.inflight.values()) {
      if (out.length >= maxCount) break
      if (now - f.since < minAgeMs) break // oldest first: the rest are younger
      if (f.claimed === true || f.peers.has(peer) || f.peers.size >= 2 || f.item.excluded?.has(peer) === true) continue
      if (out.length > 0 && bytes + framed(f.item.size) > maxBytes) break
      f.peers.add(peer)
      out.push(f.item)
      bytes += framed(f.item.size)
    }
    return out
  }

  /** Whether `peer` still holds `key` (false: another peer delivered it first, or it was released). */
  holds (peer: string, key: string): boolean {
    const f = this.inflight.get(key)
    return f !== undefined && f.claimed !== true && f.peers.has(peer)
  }

  /** A verified chunk is being written: other answers for it are duplicates from now on. */
  claim (key: string): void {
    const f = this.inflight.get(key)
    if (f !== undefined) f.claimed = true
  }

  /** The chunk is stored and verified. */
  complete (key: string): void {
    this.inflight.delete(key)
    if (this.filling !== undefined) this.completedDuringRefill.add(key)
    this.notify()
  }

  /** `peer` gives the item back (failed, not served, or cut off); `exclude`: never ask it again. */
  release (item: ChunkItem, peer: string, exclude: boolean): void {
    if (exclude) (item.excluded ??= new Set()).add(peer)
    const f = this.inflight.get(item.key)
    if (f === undefined) return
    f.peers.delete(peer)
    if (f.peers.size === 0 && f.claimed !== true) {
      this.inflight.delete(item.key)
      this.retry.push(item)
    }
    this.notify()
  }

  /** Items nobody can be asked for: every peer in `peers` excluded. */
  stranded (peers: readonly string[]): number {
    return this.retry.filter(it => peers.every(p => it.excluded?.has(p) === true)).length
  }

  /** Resolves on the next change (item completed or released, rows read, reset) or after `ms`. */
  async changed (ms: number, signal?: AbortSignal): Promise<void> {
    await new Promise<void>(resolve => {
      const timer = setTimeout(done, ms)
      function done (): void { clearTimeout(timer); signal?.removeEventListener('abort', done); resolve() }
      signal?.addEventListener('abort', done, { once: true })
      this.waiters.push(done)
    })
  }

  private notify (): void {
    const w = this.waiters
    this.waiters = []
    for (const fn of w) fn()
  }
}
