/**
 * A chunk's **partial state hash**: the LtHash (lane-wise sum) of the state elements of its entries,
 * elements exactly as src/executor/state-hash.ts makes them (`shake256(bucket tag ‖ key ‖ stored
 * value)`, tag 0x07 for accounts, 0x08 for embeddings). The state root of a snapshot is the checksum of
 * the sum of its chunks' partials, so snapshot sync computes each chunk's partial as the chunk arrives
 * (off the main thread, overlapped with the download) and the load only adds them up.
 *
 * ChunkHashPool computes partials on a pool of worker threads (chunk-hash-worker.ts), modelled on
 * src/crypto/verify-pool.ts: one chunk per message, its bytes copied into a buffer of their own that is
 * transferred, 2048 bytes back; each goes to the worker with the fewest in flight. With `workers: 0`
 * every partial is computed on the calling thread. Workers start on first use (or `warm()`) and are
 * unref'd while idle.
 */
import { Worker } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { Bucket } from '../../store/keys.ts'
import { LtHash } from '../../crypto/lthash.ts'
import { ChunkKind, decodeChunk, type DecodedChunk } from '../chunk-format.ts'

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
 * decode (strictly) as a chunk: such a chunk has no partial, and the load refuses it.
 */
export function chunkPartial (bytes: Uint8Array): Uint8Array | undefined {
  let chunk: DecodedChunk
  try {
    chunk = decodeChunk(bytes)
  } catch {
    return undefined
  }
  return entriesPartial(chunk).toBytes()
}

export interface ChunkHashPoolInit {
  /** Worker threads (0: on the calling thread). @default min(2, os.availableParallelism()) */
  workers?: number
}

interface Pending { resolve: (out: Uint8Array | undefined) => void, reject: (err: Error) => void, worker: PoolWorker }

interface PoolWorker { worker: Worker, inflight: number }

export interface HashWorkerRequest { id: number, buf: Uint8Array }
export interface HashWorkerResponse { id: number, out?: Uint8Array | null, error?: string }

const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './chunk-hash-worker.ts' : './chunk-hash-worker.js', import.meta.url)

export class ChunkHashPool {
  readonly workers: number
  private pool: PoolWorker[] = []
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private closed = false

  constructor (init: ChunkHashPoolInit = {}) {
    this.workers = init.workers ?? Math.min(2, availableParallelism())
    if (!Number.isInteger(this.workers) || this.workers < 0) throw new RangeError(`workers must be an integer >= 0, got ${init.workers}`)
  }

  private ensureWorkers (): void {
    while (this.pool.length < this.workers) {
      const worker = new Worker(workerUrl)
      const pw: PoolWorker = { worker, inflight: 0 }
      worker.unref()
      worker.on('message', (msg: HashWorkerResponse) => {
        const p = this.pending.get(msg.id)
        if (p === undefined) return
        this.pending.delete(msg.id)
        pw.inflight--
        if (pw.inflight === 0) worker.unref()
        if (msg.error !== undefined) p.reject(new Error(`chunk hash worker: ${msg.error}`))
        else p.resolve(msg.out ?? undefined)
      })
      worker.on('error', (err) => { this.failWorker(pw, err) })
      worker.on('exit', (code) => { this.failWorker(pw, new Error(`chunk hash worker exited with code ${code}`)) })
      this.pool.push(pw)
    }
  }

  /** A worker died: what it held fails (the callers fall back), and a new one starts on the next call. */
  private failWorker (pw: PoolWorker, err: Error): void {
    const i = this.pool.indexOf(pw)
    if (i < 0) return
    this.pool.splice(i, 1)
    for (const [id, p] of this.pending) {
      if (p.worker !== pw) continue
      this.pending.delete(id)
      p.reject(err)
    }
    void pw.worker.terminate()
  }

  /**
   * Starts the workers now (a worker takes a few hundred ms to load its modules): chunks that arrive
   * later are not held back by that.
   */
  warm (): void {
    if (!this.closed && this.workers > 0) this.ensureWorkers()
  }

  /**
   * The partial state hash of a chunk's bytes (2048 bytes; see chunkPartial), or undefined when they do
   * not decode as a chunk. `bytes` is not modified nor kept (a copy goes to the worker). Rejects if the
   * worker fails or the pool is closed.
   */
  async partial (bytes: Uint8Array): Promise<Uint8Array | undefined> {
    if (this.closed) throw new Error('ChunkHashPool is closed')
    if (this.workers === 0) return chunkPartial(bytes)
    this.ensureWorkers()
    let best = this.pool[0]
    for (const w of this.pool) if (w.inflight < best.inflight) best = w
    const id = this.nextId++
    // a copy in an ArrayBuffer of its own (bytes may be a Buffer, whose slice() is a view, or a view into
    // a larger response: transferring that would detach it)
    const buf = new Uint8Array(bytes.byteLength)
    buf.set(bytes)
    best.inflight++
    best.worker.ref()
    return await new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker: best })
      best.worker.postMessage({ id, buf } satisfies HashWorkerRequest, [buf.buffer as ArrayBuffer])
    })
  }

  async close (): Promise<void> {
    this.closed = true
    const err = new Error('ChunkHashPool closed')
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
    const pool = this.pool
    this.pool = []
    await Promise.all(pool.map(async w => await w.worker.terminate()))
  }
}
