/**
 * The allocation-free canonical checks of chunk entry values (src/snapshot/canonical-values.ts) against
 * the protobufjs round trip they stand in for: whenever they say canonical, the round trip reproduces
 * the bytes and decode() accepts them (soundness, on random, mutated and hand-made values), and they
 * say canonical for what the node's own encoder writes (so the fast path is the one taken).
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { Codecs } from '../../src/chain/codecs.ts'
import { bytesEqual, compareBytes } from '../../src/crypto/hash.ts'
import { isCanonicalAccountState, isCanonicalEmbedding } from '../../src/snapshot/canonical-values.ts'
import { ChunkKind, accountEntry, decodeChunk, parseOwnChunk, encodeChunk, isEncodingOf, type ChunkEntry } from '../../src/snapshot/chunk-format.ts'

const RUNS = 3000

function roundTrips (codec: { encode: (v: any) => Uint8Array, decode: (b: Uint8Array) => any }, b: Uint8Array): boolean {
  try { return bytesEqual(codec.encode(codec.decode(b)), b) } catch { return false }
}

const u53 = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 300 }), fc.maxSafeNat())
const account = fc.record({ balance: u53, nonce: u53, lastModifiedEpoch: u53 })
const embedding = fc.record({
  owner: fc.uint8Array({ maxLength: 40 }),
  commitIndex: u53,
  vector: fc.uint8Array({ maxLength: 200 }),
  model: fc.string({ unit: 'binary', maxLength: 12 }),
  epoch: u53
})

/** random edits of valid bytes: byte flips, insertions, deletions, truncation */
function mutate (b: Uint8Array, edits: Array<[number, number, number]>): Uint8Array {
  let out = Array.from(b)
  for (const [op, at, v] of edits) {
    const i = out.length === 0 ? 0 : at % (out.length + 1)
    if (op === 0 && out.length > 0) out[i % out.length] = v
    else if (op === 1) out.splice(i, 0, v)
    else if (op === 2) out.splice(i, 1)
    else out = out.slice(0, i)
  }
  return Uint8Array.from(out)
}
const edits = fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 })

describe('canonical entry values', () => {
  it('what the encoder writes is canonical', () => {
    fc.assert(fc.property(account, (a) => {
      assert.ok(isCanonicalAccountState(Codecs.AccountState.encode(a)))
    }), { numRuns: RUNS })
    fc.assert(fc.property(embedding, (e) => {
      const b = Codecs.Embedding.encode(e)
      // strings that are not well-formed UTF-16 do not survive; the round trip decides those
      if (roundTrips(Codecs.Embedding, b)) assert.ok(isCanonicalEmbedding(b))
    }), { numRuns: RUNS })
    assert.ok(isCanonicalAccountState(new Uint8Array(0)))
    assert.ok(isCanonicalEmbedding(new Uint8Array(0)))
  })

  it('canonical only when the protobufjs round trip reproduces the bytes (mutations and random bytes)', () => {
    fc.assert(fc.property(account, edits, (a, ed) => {
      const b = mutate(Codecs.AccountState.encode(a), ed)
      if (isCanonicalAccountState(b)) assert.ok(roundTrips(Codecs.AccountState, b), `accepted ${Buffer.from(b).toString('hex')}`)
    }), { numRuns: RUNS })
    fc.assert(fc.property(embedding, edits, (e, ed) => {
      const b = mutate(Codecs.Embedding.encode(e), ed)
      if (isCanonicalEmbedding(b)) assert.ok(roundTrips(Codecs.Embedding, b), `accepted ${Buffer.from(b).toString('hex')}`)
    }), { numRuns: RUNS })
    fc.assert(fc.property(fc.uint8Array({ maxLength: 24 }), (b) => {
      if (isCanonicalAccountState(b)) assert.ok(roundTrips(Codecs.AccountState, b))
      if (isCanonicalEmbedding(b)) assert.ok(roundTrips(Codecs.Embedding, b))
    }), { numRuns: RUNS })
  })

  it('refuses the non-canonical forms by name', () => {
    const no = (b: number[], f = isCanonicalAccountState): void => { assert.equal(f(Uint8Array.from(b)), false, Buffer.from(b).toString('hex')) }
    no([0x08, 0x81, 0x00]) // 2-byte varint for 1
    no([0x10, 0x01, 0x08, 0x01]) // out of order
    no([0x08, 0x01, 0x08, 0x02]) // twice
    no([0x20, 0x01]) // unknown field 4
    no([0x0a, 0x01, 0x00]) // field 1 as bytes
    no([0x88, 0x00, 0x01]) // non-minimal tag
    no([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x10]) // beyond 2^53 - 1
    no([0x08]) // truncated
    no([0x22, 0x02, 0xc3, 0x28], isCanonicalEmbedding) // model not UTF-8
    no([0x1a, 0x05, 0x00], isCanonicalEmbedding) // vector past the end
    no([0x1a, 0x80, 0x00], isCanonicalEmbedding) // non-minimal length
    no([0x30, 0x01], isCanonicalEmbedding) // unknown field 6
    no([0x08, 0x00]) // a default written explicitly: protobufjs drops it
    assert.equal(roundTrips(Codecs.AccountState, Uint8Array.of(0x08, 0x00)), false)
    no([0x0a, 0x00], isCanonicalEmbedding)
  })

  it('isEncodingOf is encodeChunk compared with the bytes, without encoding', () => {
    const entries = fc.uniqueArray(fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 300 })), { minLength: 1, maxLength: 8, selector: ([id]) => Buffer.from(id).toString('hex') })
      .map(xs => xs.map(([id, v]) => accountEntry(id, v)).sort((a, b) => compareBytes(a.key, b.key)))
    fc.assert(fc.property(entries, fc.integer({ min: 0, max: 300 }), edits, (es: ChunkEntry[], group, ed) => {
      const good = encodeChunk(ChunkKind.ACCOUNTS, group, es)
      assert.ok(isEncodingOf(good, ChunkKind.ACCOUNTS, group, es))
      const b = mutate(good, ed)
      assert.equal(isEncodingOf(b, ChunkKind.ACCOUNTS, group, es), Buffer.from(b).equals(good))
      assert.equal(isEncodingOf(good, ChunkKind.EMBEDDINGS, group, es), false)
      // the entries as decodeChunk makes them: views into the chunk bytes
      const views = parseOwnChunk(good).entries
      assert.ok(isEncodingOf(good, ChunkKind.ACCOUNTS, group, views))
    }), { numRuns: RUNS })
    // a decoded real chunk: its entries are views
    const es = [accountEntry(new Uint8Array(32).fill(1), Codecs.AccountState.encode({ balance: 5, nonce: 1, lastModifiedEpoch: 0 }))]
    const bytes = encodeChunk(ChunkKind.ACCOUNTS, 0, es)
    assert.equal(decodeChunk(bytes).entries.length, 1)
  })
})
