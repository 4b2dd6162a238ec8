/**
 * Worker side of ChunkHashPool (chunk-hash-pool.ts): receives one chunk's bytes and answers with its
 * partial state hash (2048 bytes, transferred), null when the bytes do not decode as a chunk.
 */
import { parentPort } from 'node:worker_threads'
import { chunkPartial, type HashWorkerRequest, type HashWorkerResponse } from './chunk-hash-pool.ts'

parentPort?.on('message', (msg: HashWorkerRequest) => {
  let res: HashWorkerResponse
  let transfer: ArrayBuffer[] = []
  try {
    const out = chunkPartial(msg.buf)
    res = { id: msg.id, out: out ?? null }
    if (out !== undefined) transfer = [out.buffer as ArrayBuffer]
  } catch (err: any) {
    res = { id: msg.id, error: String(err?.message ?? err) }
  }
  parentPort!.postMessage(res, transfer)
})
