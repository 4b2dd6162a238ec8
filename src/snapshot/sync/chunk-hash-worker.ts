/**
 * Worker side of ChunkHashPool (chunk-hash-pool.ts): hashes the chunk bytes at the start of its input
 * buffer (shared with the pool) and answers with their partial state hash (2048 bytes, transferred),
 * null when they do not parse as a chunk.
 */
import { parentPort } from 'node:worker_threads'
import { chunkPartial, type HashWorkerRequest, type HashWorkerResponse } from './chunk-hash-pool.ts'

let input: SharedArrayBuffer | undefined

parentPort?.on('message', (msg: HashWorkerRequest) => {
  if (msg.sab !== undefined) input = msg.sab
  let res: HashWorkerResponse
  let transfer: ArrayBuffer[] = []
  try {
    if (input === undefined || msg.len > input.byteLength) throw new Error('no input buffer')
    const out = chunkPartial(new Uint8Array(input, 0, msg.len))
    res = { out: out ?? null }
    if (out !== undefined) transfer = [out.buffer as ArrayBuffer]
  } catch (err: any) {
    res = { error: String(err?.message ?? err) }
  }
  parentPort!.postMessage(res, transfer)
})
