/**
 * A chunk's **partial state hash**: the LtHash (lane-wise sum) of the state elements of its entries,
 * elements exactly as src/store/state-hash.ts makes them (`shake256(bucket tag ‖ key ‖ stored
 * value)`, tag 0x07 for accounts, 0x08 for embeddings). The state root of a snapshot is the checksum of
 * the sum of its chunks' partials, so snapshot sync computes each chunk's partial as the chunk arrives
 * (off the main thread, overlapped with the download) and the load only adds them up.
 *
 * ChunkHashPool computes partials on a pool of worker threads (chunk-hash-worker.ts), modelled on
 * src/crypto/verify-pool.ts: one message at a time per worker, the chunk bytes copied into that worker's
 * input buffer (a SharedArrayBuffer of at least 1 MiB, grown to the largest chunk seen), 2048 bytes back
 * per chunk; chunks wait in a queue for a free worker, which takes as many as fit its buffer; until the first worker has loaded its modules, partials are computed on the
 * calling thread. Nothing is allocated or transferred per chunk, so the memory does not depend on
 * when the workers collect garbage (transferring a copy of each chunk left ~100 MiB of dead copies in
 * the workers' heaps). With `workers: 0` every partial is computed on the calling thread. Workers start
 * on first use (or `warm()`) and are unref'd while idle.
 */
import { Worker } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { parseOwnChunk, type DecodedChunk } from '../chunk-format.ts'
import { entriesPartial } from '../rebuild.ts'

/**
 * The partial state hash of encoded chunk bytes (2048 LtHash lane bytes), or undefined when they do not
 * parse as a chunk. Parsed without decodeChunk's canonical-encoding checks (parseOwnChunk, a fraction of
 * its cost): for every chunk decodeChunk accepts, it gives the same kind and (id, value) entries, hence
 * the same partial; a chunk it does not accept is refused by the load, whatever its partial.
 */
export function chunkPartial (bytes: Uint8Array): Uint8Array | undefined {
  let chunk: DecodedChunk
  try {
    chunk = parseOwnChunk(bytes)
  } catch {
    return undefined
  }
  return entriesPartial(chunk).toBytes()
}

export interface ChunkHashPoolInit {
  /** Worker threads (0: on the calling thread). @default min(2, os.availableParallelism()) */
  workers?: number
}

interface Job { bytes: Uint8Array, resolve: (out: Uint8Array | undefined) => void, reject: (err: Error) => void }

interface PoolWorker {
  worker: Worker
  /** its modules are loaded (it said so): until then it gets no job */
  ready: boolean
  /** the jobs it runs (one message at a time: the queued chunks that fit its input buffer) */
  jobs?: Job[]
  /** its input buffer, shared with it: chunk bytes are copied in, nothing is allocated per chunk */
  sab?: SharedArrayBuffer
}

/**
 * To a worker: hash the chunks at the start of its input buffer, one after another, of these lengths
 * (`sab`: from now on, this input buffer).
 */
export interface HashWorkerRequest { lens: number[], sab?: SharedArrayBuffer }
/**
 * From a worker: ready (once, at its start), or one partial per chunk (null: the bytes are not a chunk),
 * or what went wrong.
 */
export interface HashWorkerResponse { ready?: true, outs?: Array<Uint8Array | null>, error?: string }

const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './chunk-hash-worker.ts' : './chunk-hash-worker.js', import.meta.url)

const MIN_INPUT_BYTES = 1024 * 1024
/**
 * A worker's garbage is ~2 KiB of shake256 output per entry; with V8's default young generation it kept
 * some 200 MiB each of it before collecting (the syncing process's peak RSS in the snapshot-sync bench:
 * ~930 MiB in the chunks phase, ~560 MiB with this limit, for no measurable loss of speed)
 */
const WORKER_YOUNG_GENERATION_MB = 4

export class ChunkHashPool {
  readonly workers: number
  private pool: PoolWorker[] = []
  /** jobs waiting for a free worker, in order */
  private queue: Job[] = []
  private readyWaiters: Array<() => void> = []
  private startFailures = 0
  private broken = false
  private closed = false

  constructor (init: ChunkHashPoolInit = {}) {
    this.workers = init.workers ?? Math.min(2, availableParallelism())
    if (!Number.isInteger(this.workers) || this.workers < 0) throw new RangeError(`workers must be an integer >= 0, got ${init.workers}`)
  }

  private ensureWorkers (): void {
    while (this.pool.length < this.workers) {
      const worker = new Worker(workerUrl, { resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } })
      const pw: PoolWorker = { worker, ready: false }
      worker.unref()
      worker.on('message', (msg: HashWorkerResponse) => {
        if (msg.ready === true) {
          pw.ready = true
          for (const fn of this.readyWaiters.splice(0)) fn()
          this.dispatch()
          return
        }
        const jobs = pw.jobs
        if (jobs === undefined) return
        pw.jobs = undefined
        jobs.forEach((job, i) => {
          if (msg.error !== undefined || msg.outs === undefined) job.reject(new Error(`chunk hash worker: ${msg.error ?? 'no answer'}`))
          else job.resolve(msg.outs[i] ?? undefined)
        })
        this.dispatch()
        if (pw.jobs === undefined) worker.unref()
      })
      worker.on('error', (err) => { this.failWorker(pw, err) })
      worker.on('exit', (code) => { this.failWorker(pw, new Error(`chunk hash worker exited with code ${code}`)) })
      this.pool.push(pw)
    }
  }

  /** Gives queued jobs to idle workers. */
  private dispatch (): void {
    for (const pw of this.pool) {
      if (this.queue.length === 0) return
      if (pw.jobs !== undefined || !pw.ready) continue
      // the first queued chunk, and those after it that still fit the input buffer (one message for
      // many small chunks)
      const first = this.queue[0].bytes.byteLength
      let fresh: SharedArrayBuffer | undefined
      if (pw.sab === undefined || pw.sab.byteLength < first) {
        fresh = new SharedArrayBuffer(Math.max(MIN_INPUT_BYTES, first))
        pw.sab = fresh
      }
      const jobs: Job[] = []
      const lens: number[] = []
      let at = 0
      while (this.queue.length > 0 && at + this.queue[0].bytes.byteLength <= pw.sab.byteLength) {
        const job = this.queue.shift()!
        new Uint8Array(pw.sab, at, job.bytes.byteLength).set(job.bytes)
        at += job.bytes.byteLength
        jobs.push(job)
        lens.push(job.bytes.byteLength)
      }
      pw.jobs = jobs
      pw.worker.ref()
      pw.worker.postMessage({ lens, sab: fresh } satisfies HashWorkerRequest)
    }
  }

  /** A worker died: its job fails (the caller falls back), and another worker takes the queue. */
  private failWorker (pw: PoolWorker, err: Error): void {
    const i = this.pool.indexOf(pw)
    if (i < 0) return
    this.pool.splice(i, 1)
    const jobs = pw.jobs ?? []
    pw.jobs = undefined
    for (const job of jobs) job.reject(err)
    void pw.worker.terminate()
    // workers that cannot even start: from now on, everything on this thread
    if (!pw.ready && ++this.startFailures >= 3) this.broken = true
    for (const fn of this.readyWaiters.splice(0)) fn()
    if (this.closed) return
    if (this.broken || !this.pool.some(w => w.ready)) {
      // no worker to wait for: the queue is computed here
      for (const j of this.queue.splice(0)) {
        try { j.resolve(chunkPartial(j.bytes)) } catch (e: any) { j.reject(e) }
      }
    } else if (this.queue.length > 0) {
      this.ensureWorkers()
      this.dispatch()
    }
  }

  /**
   * Starts the workers now (a worker takes a few hundred ms to load its modules): chunks that arrive
   * later are not held back by that.
   */
  warm (): void {
    if (!this.closed && this.workers > 0) this.ensureWorkers()
  }

  /** Resolves when every worker has started (they start now if they have not). */
  async started (): Promise<void> {
    this.warm()
    while (!this.closed && !this.broken && this.pool.some(w => !w.ready)) await new Promise<void>(resolve => this.readyWaiters.push(resolve))
  }

  /**
   * Stops the idle workers, giving their memory back (the next `partial` starts them again): when no
   * more chunks are expected for a while.
   */
  async release (): Promise<void> {
    const idle = this.pool.filter(w => w.jobs === undefined)
    this.pool = this.pool.filter(w => w.jobs !== undefined)
    await Promise.all(idle.map(async w => await w.worker.terminate()))
  }

  /**
   * The partial state hash of a chunk's bytes (2048 bytes; see chunkPartial), or undefined when they do
   * not parse as a chunk. `bytes` must not change until this resolves (they are copied into a worker's
   * input buffer when a worker is free); they are not modified. Rejects if the worker fails or the pool
   * is closed.
   */
  async partial (bytes: Uint8Array): Promise<Uint8Array | undefined> {
    if (this.closed) throw new Error('ChunkHashPool is closed')
    if (this.workers === 0 || this.broken) return chunkPartial(bytes)
    this.ensureWorkers()
    // while no worker has loaded yet (a few hundred ms, more on a busy machine), on this thread: chunks
    // are not held back, unstored, until the workers are up
    if (!this.pool.some(w => w.ready)) return chunkPartial(bytes)
    return await new Promise((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject })
      this.dispatch()
    })
  }

  async close (): Promise<void> {
    this.closed = true
    const err = new Error('ChunkHashPool closed')
    const jobs = [...this.queue, ...this.pool.flatMap(w => w.jobs ?? [])]
    this.queue = []
    const pool = this.pool
    this.pool = []
    for (const j of jobs) j.reject(err)
    for (const fn of this.readyWaiters.splice(0)) fn()
    await Promise.all(pool.map(async w => await w.worker.terminate()))
  }
}
