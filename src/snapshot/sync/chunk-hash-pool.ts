/**
 * A chunk's **partial state hash**: the LtHash (lane-wise sum) of the state elements of its entries,
 * elements exactly as src/executor/state-hash.ts makes them (`shake256(bucket tag ‖ key ‖ stored
 * value)`, tag 0x07 for accounts, 0x08 for embeddings). The state root of a snapshot is the checksum of
 * the sum of its chunks' partials, so snapshot sync computes each chunk's partial as the chunk arrives
 * (off the main thread, overlapped with the download) and the load only adds them up.
 *
 * ChunkHashPool computes partials on a pool of worker threads (chunk-hash-worker.ts), modelled on
 * src/crypto/verify-pool.ts: one chunk at a time per worker, its bytes copied into that worker's input
 * buffer (a SharedArrayBuffer, grown to the largest chunk seen), 2048 bytes back; chunks wait in a queue
 * for a free worker. Nothing is allocated or transferred per chunk, so the memory does not depend on
 * when the workers collect garbage (transferring a copy of each chunk left ~100 MiB of dead copies in
 * the workers' heaps). With `workers: 0` every partial is computed on the calling thread. Workers start
 * on first use (or `warm()`) and are unref'd while idle.
 */
import { Worker } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { Bucket } from '../../store/keys.ts'
import { LtHash } from '../../crypto/lthash.ts'
import { ChunkKind, parseOwnChunk, type DecodedChunk } from '../chunk-format.ts'

const ACCOUNT_TAG = Uint8Array.of(Bucket.ACCOUNT)
const EMBEDDING_TAG = Uint8Array.of(Bucket.EMBEDDING)

/** The partial state hash of a decoded chunk (a fresh LtHash). */
export function entriesPartial (chunk: DecodedChunk): LtHash {
  const tag = chunk.kind === ChunkKind.ACCOUNTS ? ACCOUNT_TAG : EMBEDDING_TAG
  const h = new LtHash()
  for (const e of chunk.entries) h.addLanes(LtHash.element(tag, e.id, e.value))
  return h
}

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
  /** the job it runs (one at a time) */
  job?: Job
  /** its input buffer, shared with it: chunk bytes are copied in, nothing is allocated per chunk */
  sab?: SharedArrayBuffer
}

/** To a worker: hash the first `len` bytes of its input buffer (`sab`: from now on, this one). */
export interface HashWorkerRequest { len: number, sab?: SharedArrayBuffer }
/** From a worker: the partial (null: the bytes are not a chunk), or what went wrong. */
export interface HashWorkerResponse { out?: Uint8Array | null, error?: string }

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
  private closed = false

  constructor (init: ChunkHashPoolInit = {}) {
    this.workers = init.workers ?? Math.min(2, availableParallelism())
    if (!Number.isInteger(this.workers) || this.workers < 0) throw new RangeError(`workers must be an integer >= 0, got ${init.workers}`)
  }

  private ensureWorkers (): void {
    while (this.pool.length < this.workers) {
      const worker = new Worker(workerUrl, { resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB } })
      const pw: PoolWorker = { worker }
      worker.unref()
      worker.on('message', (msg: HashWorkerResponse) => {
        const job = pw.job
        if (job === undefined) return
        pw.job = undefined
        if (msg.error !== undefined) job.reject(new Error(`chunk hash worker: ${msg.error}`))
        else job.resolve(msg.out ?? undefined)
        this.dispatch()
        if (pw.job === undefined) worker.unref()
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
      if (pw.job !== undefined) continue
      const job = this.queue.shift()!
      const len = job.bytes.byteLength
      let fresh: SharedArrayBuffer | undefined
      if (pw.sab === undefined || pw.sab.byteLength < len) {
        fresh = new SharedArrayBuffer(Math.max(MIN_INPUT_BYTES, len))
        pw.sab = fresh
      }
      new Uint8Array(pw.sab, 0, len).set(job.bytes)
      pw.job = job
      pw.worker.ref()
      pw.worker.postMessage({ len, sab: fresh } satisfies HashWorkerRequest)
    }
  }

  /** A worker died: its job fails (the caller falls back), and another worker takes the queue. */
  private failWorker (pw: PoolWorker, err: Error): void {
    const i = this.pool.indexOf(pw)
    if (i < 0) return
    this.pool.splice(i, 1)
    const job = pw.job
    pw.job = undefined
    job?.reject(err)
    void pw.worker.terminate()
    if (!this.closed && this.queue.length > 0) {
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

  /**
   * Stops the idle workers, giving their memory back (the next `partial` starts them again): when no
   * more chunks are expected for a while.
   */
  async release (): Promise<void> {
    const idle = this.pool.filter(w => w.job === undefined)
    this.pool = this.pool.filter(w => w.job !== undefined)
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
    if (this.workers === 0) return chunkPartial(bytes)
    this.ensureWorkers()
    return await new Promise((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject })
      this.dispatch()
    })
  }

  async close (): Promise<void> {
    this.closed = true
    const err = new Error('ChunkHashPool closed')
    const jobs = [...this.queue, ...this.pool.map(w => w.job)]
    this.queue = []
    const pool = this.pool
    this.pool = []
    for (const j of jobs) j?.reject(err)
    await Promise.all(pool.map(async w => await w.worker.terminate()))
  }
}
