/**
 * Worker side of ChunkHashPool (chunk-hash-pool.ts): hashes the chunks laid one after another at the
 * start of its input buffer (shared with the pool) and answers with their partial state hashes (2048
 * bytes each, transferred; null for bytes that do not parse as a chunk). Says `ready` once loaded.
 */
import { parentPort } from 'node:worker_threads'
import { chunkPartial, type HashWorkerRequest, type HashWorkerResponse } from './chunk-hash-pool.ts'

let input: SharedArrayBuffer | undefined

parentPort?.on('message', (msg: HashWorkerRequest) => {
  if (msg.sab !== undefined) input = msg.sab
  let res: HashWorkerResponse
  const transfer: ArrayBuffer[] = []
  try {
    const buf = input
    if (buf === undefined) throw new Error('no input buffer')
    const outs: Array<Uint8Array | null> = []
    let at = 0
    for (const len of msg.lens) {
      if (at + len > buf.byteLength) throw new Error('chunks past the input buffer')
      const out = chunkPartial(new Uint8Array(buf, at, len))
      at += len
      outs.push(out ?? null)
      if (out !== undefined) transfer.push(out.buffer as ArrayBuffer)
    }
    res = { outs }
  } catch (err: any) {
    res = { error: String(err?.message ?? err) }
  }
  parentPort!.postMessage(res, transfer)
})
parentPort?.postMessage({ ready: true } satisfies HashWorkerResponse)
