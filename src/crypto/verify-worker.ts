/**
 * Worker side of VerifyPool: receives a packed batch of (public key, signature, message) and answers
 * with one byte per item (1 = valid).
 */
import { parentPort } from 'node:worker_threads'
import { verify } from './keys.ts'
import { unpackBatch } from './verify-pack.ts'

parentPort?.on('message', (msg: { id: number, buf: Uint8Array }) => {
  const items = unpackBatch(msg.buf)
  const out = new Uint8Array(items.length)
  for (let i = 0; i < items.length; i++) {
    const it = items[i]
    out[i] = verify(it.publicKey, it.message, it.signature) ? 1 : 0
  }
  parentPort!.postMessage({ id: msg.id, out }, [out.buffer as ArrayBuffer])
})
