/**
 * Fuzzing of the framing (src/net/framing.ts) over real stream pairs: frames written in pieces split at
 * random points read back exactly; any byte sequence read as a frame ends in a message, a
 * MalformedFrameError / OversizedFrameError raised before the stream ends (so never held until a
 * timeout), or the end of the stream; and the prefix decoder agrees with the varint reader.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { fcParams, RUNS, pairedStreams } from './harness.ts'
import { FrameStream, decodeFrameLength } from '../../src/net/framing.ts'
import { readVarint, varintLength, writeVarint } from '../../src/chain/varint.ts'
import { MalformedFrameError, OversizedFrameError, MalformedMessageError, SomaError } from '../../src/errors.ts'

function frame (msg: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintLength(msg.length) + msg.length)
  out.set(msg, writeVarint(out, 0, msg.length))
  return out
}

describe('fuzz: framing', () => {
  it('the prefix decoder agrees with readVarint and never takes more bytes than the limit needs', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 12 }), fc.integer({ min: 1, max: 2 ** 40 }), (b, max) => {
      let r: ReturnType<typeof decodeFrameLength>
      try {
        r = decodeFrameLength(b, max)
      } catch (err) {
        assert.ok(err instanceof MalformedFrameError || err instanceof OversizedFrameError, String(err))
        return
      }
      if (r === undefined) {
        assert.ok(b.length < varintLength(max) && b.every(x => (x & 0x80) !== 0))
        return
      }
      assert.ok(r.size <= varintLength(max) && r.length <= max)
      assert.deepEqual(readVarint(b, 0, 'x'), [r.length, r.size])
    }), fcParams(RUNS * 5))
  })

  it('frames written in random pieces over a stream pair read back exactly', async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 1000 }), { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 8 }), async (msgs, cuts) => {
      const [a, b] = await pairedStreams()
      const bytes = Uint8Array.from(msgs.flatMap(m => [...frame(m)]))
      const at = [...new Set(cuts.map(c => c % (bytes.length + 1)))].sort((x, y) => x - y)
      let prev = 0
      for (const c of [...at, bytes.length]) { if (c > prev) a.send(bytes.subarray(prev, c)); prev = c }
      const reader = new FrameStream(b, { maxDataLength: 4096 })
      for (const m of msgs) assert.deepEqual((await reader.read({ signal: AbortSignal.timeout(5000) })).subarray(), m)
      a.abort(new Error('done'))
    }), fcParams())
  })

  it('any bytes: a message, a framing error before the stream ends, or the end of the stream', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ minLength: 1, maxLength: 12 }).map(b => b.fill(0xff, 0, Math.max(1, b.length - 1)))), fc.integer({ min: 1, max: 70_000 }), async (bytes, max) => {
      const [a, b] = await pairedStreams()
      a.send(bytes)
      // the writer keeps its end open: a bad prefix must fail without waiting for more bytes
      const reader = new FrameStream(b, { maxDataLength: max })
      let expected: 'message' | 'error' | 'more' = 'more'
      try {
        const r = decodeFrameLength(bytes.subarray(0, varintLength(max) + 1), max)
        if (r !== undefined && r.size + r.length <= bytes.length) expected = 'message'
      } catch { expected = 'error' }
      try {
        const msg: Uint8Array = await reader.readPb({ decode: x => x.subarray() }, { signal: AbortSignal.timeout(expected === 'more' ? 50 : 5000) })
        assert.equal(expected, 'message')
        assert.ok(msg.length <= max)
      } catch (err: any) {
        if (expected === 'error') assert.ok(err instanceof MalformedFrameError || err instanceof OversizedFrameError, String(err))
        else if (expected === 'more') assert.ok(err?.name === 'TimeoutError' || err?.name === 'AbortError', String(err))
        else throw err
      }
      a.abort(new Error('done'))
    }), fcParams())
  })

  it('a decoder failure is a MalformedMessageError naming the messages', async () => {
    const [a, b] = await pairedStreams()
    a.send(frame(Uint8Array.of(1, 2, 3)))
    const reader = new FrameStream(b, { maxDataLength: 100, what: '/soma/x request' })
    await assert.rejects(reader.readPb({ decode: () => { throw new RangeError('index out of range') } }), (err: Error) => err instanceof MalformedMessageError && err instanceof SomaError && /\/soma\/x request/.test(err.message))
    a.abort(new Error('done'))
  })
})
