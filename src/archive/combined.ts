/**
 * The combined download (issue 14, "Beyond every anchor"): one download of an archive's segments from
 * the archive and from P2P peers together. Each source (the archive; each connected peer, through
 * /soma/fetch-commits and /soma/fetch-blocks) pulls the next segment when it has a free slot, the source
 * with the best measured throughput first, so faster sources take more ranges (work stealing); when the
 * segment the store waits for is still in flight on one source while another is idle, the idle one
 * fetches it too and the first to arrive wins, so a slow bucket or a slow peer never sets the pace.
 * What a source sends is verified by the reader exactly as an archive segment is (src/archive/reader.ts);
 * a source whose data fails is dropped and its segment goes to the others.
 */
import type { PeerId } from '@libp2p/interface'
import { parseCommit } from '../chain/commit.ts'
import type { BlockRef } from '../chain/types.ts'
import type { FetchCommits } from '../sync/protocols/fetch-commits.ts'
import type { FetchBlocks } from '../sync/protocols/fetch-blocks.ts'
import type { Logger } from '../utils/logger.ts'
import type { SegmentBody, SegmentEntry, SegmentHeader } from './format.ts'

/** A segment's content from some source, not yet verified. */
export interface FetchedSegment {
  header?: SegmentHeader
  body: SegmentBody
  /** names the object or the peer and range in errors */
  what: string
  /** the source's id */
  source: string
  /** bytes received */
  bytes: number
}

export interface SegmentSource {
  readonly id: string
  /** segments fetched at once */
  readonly slots: number
  /** the archive (spot-checked) or a P2P peer */
  readonly kind: 'archive' | 'peer'
  fetch: (entry: SegmentEntry, signal: AbortSignal) => Promise<FetchedSegment>
}

/** The commits first..last of `entry` with their blocks and the last commit's certifiers, from one peer. */
export async function fetchSegmentFromPeer (peer: PeerId, entry: SegmentEntry, deps: { fetchCommits: FetchCommits, fetchBlocks: FetchBlocks, maxBlocksPerFetch: number }, signal: AbortSignal): Promise<FetchedSegment> {
  const commits: Uint8Array[] = []
  let certifierBlocks: Uint8Array[] = []
  let bytes = 0
  let next = entry.firstCommit
  while (next <= entry.lastCommit) {
    const res = await deps.fetchCommits.fetch(peer, next, entry.lastCommit, { signal })
    commits.push(...res.commits)
    certifierBlocks = res.certifierBlocks
    next += res.commits.length
    bytes += res.commits.reduce((s, c) => s + c.byteLength, 0)
  }
  bytes += certifierBlocks.reduce((s, b) => s + b.byteLength, 0)
  const refs: BlockRef[] = commits.flatMap(b => parseCommit(b).commit.blocks)
  const blocks: Uint8Array[] = []
  while (blocks.length < refs.length) {
    const got = await deps.fetchBlocks.fetch(peer, refs.slice(blocks.length, blocks.length + deps.maxBlocksPerFetch), { signal })
    blocks.push(...got)
    bytes += got.reduce((s, b) => s + b.byteLength, 0)
  }
  return { body: { commits, blocks, certifierBlocks }, what: `peer ${peer.toString()} (commits ${entry.firstCommit}..${entry.lastCommit})`, source: peer.toString(), bytes }
}

interface Slot {
  status: 'queued' | 'fetching' | 'done'
  /** sources fetching it now */
  working: Set<string>
  /** sources not to ask again for it */
  excluded: Set<string>
  result?: FetchedSegment
  waiters: Array<{ resolve: (f: FetchedSegment) => void, reject: (e: unknown) => void }>
  lastError?: unknown
}

interface SourceState {
  src: SegmentSource
  active: number
  bytes: number
  ms: number
  failures: number
  retired: boolean
  segments: number
}

/**
 * Hands out the segments of `todo` to the sources; `get(i)` resolves with segment i from whichever
 * source delivered it first; `reject(i, source, err)` (the data did not verify) drops that source and
 * fetches the segment elsewhere; `release(i)` frees its bytes once stored.
 */
export class SegmentScheduler {
  private readonly todo: readonly SegmentEntry[]
  private readonly slots: Slot[]
  private readonly sources = new Map<string, SourceState>()
  private readonly maxInflightBytes: number
  private readonly log: Logger
  private readonly signal: AbortSignal
  private readonly controller = new AbortController()
  private readonly tasks = new Set<Promise<void>>()
  private readonly discover?: () => SegmentSource[]
  private inflightBytes = 0
  /** the lowest segment not yet released: the one the store waits for */
  private front = 0

  constructor (todo: readonly SegmentEntry[], sources: SegmentSource[], opts: { maxInflightBytes: number, log: Logger, signal: AbortSignal, discover?: () => SegmentSource[] }) {
    this.todo = todo
    this.slots = todo.map(() => ({ status: 'queued', working: new Set(), excluded: new Set(), waiters: [] }))
    this.maxInflightBytes = opts.maxInflightBytes
    this.log = opts.log
    this.signal = AbortSignal.any([opts.signal, this.controller.signal])
    this.discover = opts.discover
    for (const s of sources) this.add(s)
  }

  private add (src: SegmentSource): void {
    if (!this.sources.has(src.id)) this.sources.set(src.id, { src, active: 0, bytes: 0, ms: 0, failures: 0, retired: false, segments: 0 })
  }

  /** Per source: segments delivered and measured bytes/s. */
  stats (): Array<{ id: string, kind: string, segments: number, bytesPerSecond: number, retired: boolean }> {
    return [...this.sources.values()].map(s => ({ id: s.src.id, kind: s.src.kind, segments: s.segments, bytesPerSecond: s.ms > 0 ? s.bytes / (s.ms / 1000) : 0, retired: s.retired }))
  }

  async get (i: number): Promise<FetchedSegment> {
    const slot = this.slots[i]
    if (slot.result !== undefined) return slot.result
    const p = new Promise<FetchedSegment>((resolve, reject) => { slot.waiters.push({ resolve, reject }) })
    this.pump()
    return await p
  }

  /** Segment i from `source` did not verify: that source is dropped, the segment fetched elsewhere. */
  reject (i: number, source: string, err: unknown): void {
    const slot = this.slots[i]
    const s = this.sources.get(source)
    if (s !== undefined && !s.retired) {
      s.retired = true
      this.log.warn('combined download: dropped source %s: %s', source, (err as Error)?.message ?? err)
    }
    slot.excluded.add(source)
    slot.result = undefined
    slot.status = slot.working.size > 0 ? 'fetching' : 'queued'
    slot.lastError = err
    this.failIfStuck(i)
    this.pump()
  }

  release (i: number): void {
    this.inflightBytes -= this.todo[i].size
    this.slots[i].result = undefined
    this.front = i + 1
    this.pump()
  }

  async close (): Promise<void> {
    this.controller.abort(new Error('combined download stopped'))
    await Promise.allSettled([...this.tasks])
  }

  private usable (): SourceState[] {
    if (this.discover !== undefined) for (const s of this.discover()) this.add(s)
    // the best measured throughput first; unmeasured sources are tried first
    const rate = (s: SourceState): number => s.ms === 0 ? Infinity : s.bytes / s.ms
    return [...this.sources.values()].filter(s => !s.retired).sort((a, b) => rate(b) - rate(a))
  }

  private failIfStuck (i: number): void {
    const slot = this.slots[i]
    if (slot.status === 'done' || slot.working.size > 0) return
    this.usable() // peers that connected meanwhile count
    const left = [...this.sources.values()].filter(s => !s.retired && !slot.excluded.has(s.src.id))
    if (left.length > 0) return
    const err = slot.lastError ?? new Error(`no source left for commits ${this.todo[i].firstCommit}..${this.todo[i].lastCommit}`)
    for (const w of slot.waiters.splice(0)) w.reject(err)
  }

  private pump (): void {
    if (this.signal.aborted) return
    for (const s of this.usable()) {
      while (s.active < s.src.slots) {
        const i = this.pick(s)
        if (i === undefined) break
        this.start(s, i)
      }
    }
  }

  /** The next segment for source `s`: the lowest queued one within the byte window, else a hedge of the front. */
  private pick (s: SourceState): number | undefined {
    let window = this.inflightBytes
    for (let i = this.front; i < this.todo.length; i++) {
      const slot = this.slots[i]
      if (slot.status !== 'queued') continue
      if (slot.excluded.has(s.src.id)) continue
      const counted = this.countsInWindow(i)
      if (!counted && window > 0 && window + this.todo[i].size > this.maxInflightBytes) return this.hedge(s)
      if (!counted) window += this.todo[i].size
      return i
    }
    return this.hedge(s)
  }

  private readonly counted = new Set<number>()
  private countsInWindow (i: number): boolean { return this.counted.has(i) }

  /** An idle source also fetches the segment the store waits for, when another source still has it. */
  private hedge (s: SourceState): number | undefined {
    const i = this.front
    if (i >= this.todo.length) return undefined
    const slot = this.slots[i]
    if (slot.status !== 'fetching' || slot.working.has(s.src.id) || slot.excluded.has(s.src.id)) return undefined
    return i
  }

  private start (s: SourceState, i: number): void {
    const slot = this.slots[i]
    if (!this.counted.has(i)) { this.counted.add(i); this.inflightBytes += this.todo[i].size }
    if (slot.status === 'fetching') this.log.debug('combined download: %s also fetches commits %d..%d', s.src.id, this.todo[i].firstCommit, this.todo[i].lastCommit)
    slot.status = 'fetching'
    slot.working.add(s.src.id)
    s.active++
    const t0 = Date.now()
    const task = s.src.fetch(this.todo[i], this.signal).then((f) => {
      s.bytes += f.bytes
      s.ms += Math.max(1, Date.now() - t0)
      s.failures = 0
      if (slot.status === 'done') return // another source was first
      s.segments++
      slot.status = 'done'
      slot.result = f
      for (const w of slot.waiters.splice(0)) w.resolve(f)
    }, (err) => {
      if (this.signal.aborted) return
      s.failures++
      slot.excluded.add(s.src.id)
      slot.lastError = err
      this.log.warn('combined download: %s could not fetch commits %d..%d: %s', s.src.id, this.todo[i].firstCommit, this.todo[i].lastCommit, err?.message ?? err)
      if (s.failures >= 3 && !s.retired) {
        s.retired = true
        this.log.warn('combined download: dropped source %s after %d failures in a row', s.src.id, s.failures)
      }
    }).finally(() => {
      s.active--
      slot.working.delete(s.src.id)
      if (slot.status === 'fetching' && slot.working.size === 0) slot.status = 'queued'
      this.tasks.delete(task)
      this.failIfStuck(i)
      this.pump()
    })
    this.tasks.add(task)
  }
}
