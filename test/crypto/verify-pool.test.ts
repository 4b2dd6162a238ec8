import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { Worker } from 'node:worker_threads'
import { VerifyPool, type SignatureCheck } from '../../src/crypto/verify-pool.ts'
import { deriveKeyPair, sign, verify } from '../../src/crypto/keys.ts'
import { packBatch, unpackBatch } from '../../src/crypto/verify-pack.ts'
import { utf8 } from '../../src/crypto/hash.ts'

const N = 2000
const keys = Array.from({ length: 8 }, (_, i) => deriveKeyPair('pool', `k${i}`))
const good: SignatureCheck[] = Array.from({ length: N }, (_, i) => {
  const k = keys[i % keys.length]
  const message = utf8.encode(`message ${i} ${'x'.repeat(i % 97)}`)
  return { publicKey: k.publicKey, message, signature: sign(k, message) }
})

/** Corruptions at known indices, each a different way of being invalid. */
const CORRUPT: Record<number, (c: SignatureCheck) => SignatureCheck> = {
  17: c => { const s = new Uint8Array(c.signature); s[5] ^= 0x10; return { ...c, signature: s } },
  255: c => ({ ...c, message: utf8.encode('tampered') }),
  256: c => ({ ...c, publicKey: keys[(keys.findIndex(k => k.publicKey === c.publicKey) + 1) % keys.length].publicKey }),
  1024: c => ({ ...c, signature: c.signature.subarray(0, 63) }),
  1500: c => ({ ...c, publicKey: c.publicKey.subarray(0, 31) }),
  1999: c => ({ ...c, signature: new Uint8Array(64) })
}
const BAD = Object.keys(CORRUPT).map(Number)

function withCorruptions (indices: number[]): SignatureCheck[] {
  const items = [...good]
  for (const i of indices) items[i] = CORRUPT[i](good[i])
  return items
}

const inline = (items: SignatureCheck[]): boolean[] => items.map(it => verify(it.publicKey, it.message, it.signature))

test('packBatch/unpackBatch round trip; malformed keys/signatures are packed so they fail', () => {
  const items = withCorruptions(BAD).slice(1000, 1030)
  items.push(CORRUPT[1024](good[1024]), CORRUPT[1500](good[1500]))
  const back = unpackBatch(packBatch(items))
  assert.equal(back.length, items.length)
  back.forEach((b, i) => {
    assert.deepEqual([...b.message], [...items[i].message])
    assert.equal(verify(b.publicKey, b.message, b.signature), verify(items[i].publicKey, items[i].message, items[i].signature))
  })
})

describe('VerifyPool', { timeout: 60_000 }, () => {
  const pools: VerifyPool[] = []
  after(async () => { for (const p of pools) await p.close() })
  const pool = (init: ConstructorParameters<typeof VerifyPool>[0]): VerifyPool => { const p = new VerifyPool(init); pools.push(p); return p }

  const expected = inline(withCorruptions(BAD))

  test('inline verification finds exactly the corrupted indices', () => {
    assert.deepEqual(expected.flatMap((v, i) => v ? [] : [i]), BAD)
  })

  for (const workers of [0, 2]) {
    test(`workers: ${workers} gives the same results as inline verify; firstInvalid is exact`, async () => {
      const p = pool({ workers, batchSize: 256 })
      assert.deepEqual(await p.verifyBatch(withCorruptions(BAD)), expected)
      assert.equal(await p.firstInvalid(good), -1)
      // drop corruptions from the front, one at a time
      for (const k of [0, 2, BAD.length - 1]) {
        assert.equal(await p.firstInvalid(withCorruptions(BAD.slice(k))), BAD[k], `corrupted ${BAD.slice(k)}`)
      }
      assert.deepEqual(await p.verifyBatch([]), [])
    })
  }

  test('a batch size that does not divide the batch keeps order across chunks', async () => {
    const p = pool({ workers: 2, batchSize: 333, minBatchForWorkers: 1 })
    assert.deepEqual(await p.verifyBatch(withCorruptions(BAD)), expected)
    // small batches go to the workers too with minBatchForWorkers 1
    assert.deepEqual(await p.verifyBatch(withCorruptions([17]).slice(10, 20)), inline(withCorruptions([17]).slice(10, 20)))
  })

  test('concurrent batches each get their own results', async () => {
    const p = pool({ workers: 2, batchSize: 100 })
    const a = withCorruptions([17, 1999])
    const b = withCorruptions([255, 1500])
    const [ra, rb] = await Promise.all([p.verifyBatch(a), p.verifyBatch(b)])
    assert.deepEqual(ra, inline(a))
    assert.deepEqual(rb, inline(b))
  })

  test('close() terminates the workers; the pool refuses work after', async () => {
    const p = pool({ workers: 2 })
    assert.deepEqual(await p.verifyBatch(good.slice(0, 600)), good.slice(0, 600).map(() => true))
    const workers: Worker[] = (p as any).pool.map((w: any) => w.worker)
    assert.equal(workers.length, 2)
    const exits = workers.map(async w => await once(w, 'exit'))
    await p.close()
    await Promise.all(exits)
    for (const w of workers) assert.equal(w.threadId, -1)
    await assert.rejects(p.verifyBatch(good.slice(0, 600)), /closed/)
  })

  test('invalid settings are refused', () => {
    assert.throws(() => new VerifyPool({ workers: -1 }), RangeError)
    assert.throws(() => new VerifyPool({ batchSize: 0 }), RangeError)
  })
})
