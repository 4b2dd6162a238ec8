import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import {
  AccountGroup, ChunkKind, Chunker, accountEntry, boundaryHash, decodeChunk, embeddingEntry, encodeChunk, encodeChunkReference,
  isBoundary, parseOwnChunk, accountLastModifiedEpoch, type BuiltChunk, type ChunkEntry
} from '../../src/snapshot/chunk-format.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { codec } from '../../src/chain/proto.ts'
import { sha256, utf8, compareBytes } from '../../src/crypto/hash.ts'
import { InvalidChunkError } from '../../src/errors.ts'
import { Prng } from '../../src/devnet/prng.ts'
import { hex } from '../helpers/chain.ts'

const rng = new Prng('chunk-format-test')
function bytes (n: number): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = rng.int(256)
  return b
}

function accounts (n: number, opts: { zero?: boolean } = {}): ChunkEntry[] {
  const out = Array.from({ length: n }, (_, i) => accountEntry(bytes(32), Codecs.AccountState.encode(opts.zero === true && i === 0
    ? { balance: 0, nonce: 0, lastModifiedEpoch: 0 }
    : { balance: rng.int(1e9) * 1000, nonce: rng.int(300), lastModifiedEpoch: rng.int(50) })))
  return out.sort((a, b) => compareBytes(a.key, b.key))
}

function embeddings (n: number, dim = 8): ChunkEntry[] {
  const out = Array.from({ length: n }, () => {
    const v = new Float32Array(dim).map(() => rng.next() - 0.5)
    return embeddingEntry(bytes(32), Codecs.Embedding.encode({ owner: bytes(32), commitIndex: 1 + rng.int(100), vector: new Uint8Array(v.buffer), model: 'm', epoch: rng.int(5) }))
  })
  return out.sort((a, b) => compareBytes(a.key, b.key))
}

const RawChunk = codec<any>('soma.StateChunk')

describe('chunk encoding', () => {
  test('the hand-written encoder produces exactly the protobufjs canonical bytes', () => {
    for (const group of [0, 1, 127, 128, 300_000]) {
      const a = accounts(40, { zero: true })
      assert.equal(hex(encodeChunk(ChunkKind.ACCOUNTS, group, a)), hex(encodeChunkReference(ChunkKind.ACCOUNTS, group, a)), `accounts, group ${group}`)
      const e = embeddings(7, 64)
      assert.equal(hex(encodeChunk(ChunkKind.EMBEDDINGS, group, e)), hex(encodeChunkReference(ChunkKind.EMBEDDINGS, group, e)), `embeddings, group ${group}`)
    }
    // an all-default AccountState encodes to zero bytes: the entry then has no state field
    const z = accounts(1, { zero: true })
    assert.equal(z[0].value.byteLength, 0)
    assert.equal(hex(encodeChunk(ChunkKind.ACCOUNTS, 0, z)), hex(encodeChunkReference(ChunkKind.ACCOUNTS, 0, z)))
  })

  test('round trip: decodeChunk(encodeChunk(x)) gives x back; parseOwnChunk agrees', () => {
    const a = accounts(100)
    const b = encodeChunk(ChunkKind.ACCOUNTS, AccountGroup.HOT, a)
    const d = decodeChunk(b)
    assert.equal(d.kind, ChunkKind.ACCOUNTS)
    assert.equal(d.group, AccountGroup.HOT)
    assert.deepEqual(d.entries.map(e => [hex(e.key), hex(e.value)]), a.map(e => [hex(e.key), hex(e.value)]))
    assert.deepEqual(parseOwnChunk(b).entries.map(e => hex(e.value)), a.map(e => hex(e.value)))

    const e = embeddings(20)
    const eb = encodeChunk(ChunkKind.EMBEDDINGS, 3, e)
    const ed = decodeChunk(eb)
    assert.equal(ed.kind, ChunkKind.EMBEDDINGS)
    assert.equal(ed.group, 3)
    assert.deepEqual(ed.entries.map(x => hex(x.key)), e.map(x => hex(x.key)), 'sort key = commit ‖ id')
    assert.deepEqual(parseOwnChunk(eb).entries.map(x => hex(x.key)), e.map(x => hex(x.key)))
    for (const x of ed.entries) assert.equal(x.key.byteLength, 40)
    assert.equal(accountLastModifiedEpoch(a[5].value), Codecs.AccountState.decode(a[5].value).lastModifiedEpoch)
  })

  test('malformed chunks are rejected with InvalidChunkError naming the problem', () => {
    const a = accounts(5)
    const good = encodeChunk(ChunkKind.ACCOUNTS, 0, a)
    const bad = (b: Uint8Array, re: RegExp): void => {
      assert.throws(() => decodeChunk(b, 'chunk X'), (e: any) => e instanceof InvalidChunkError && re.test(e.message) && /chunk X/.test(e.message), re.source)
    }
    bad(good.subarray(0, good.length - 3), /does not decode/)
    const raw = (m: any): Uint8Array => RawChunk.encode({ formatVersion: 1, kind: 1, group: 0, accounts: [], embeddings: [], ...m })
    const acc = (e: ChunkEntry): any => ({ address: e.id, state: e.value })
    bad(raw({ formatVersion: 2, accounts: a.map(acc) }), /format version 2/)
    bad(raw({ kind: 7, accounts: a.map(acc) }), /unknown chunk kind 7/)
    bad(raw({ kind: 0, accounts: a.map(acc) }), /unknown chunk kind 0/)
    bad(raw({ accounts: [] }), /no entries/)
    bad(raw({ accounts: [a[1], a[0]].map(acc) }), /ascending/)
    bad(raw({ accounts: [a[0], a[0]].map(acc) }), /ascending/)
    bad(raw({ group: 2, accounts: a.map(acc) }), /group 2/)
    bad(raw({ accounts: [{ address: a[0].id.subarray(0, 31), state: a[0].value }] }), /31 bytes/)
    bad(raw({ accounts: [{ address: a[0].id, state: Uint8Array.of(0x08, 0x80) }] }), /does not decode/)
    // a non-canonical AccountState (balance written as a 2-byte varint for 1)
    bad(raw({ accounts: [{ address: a[0].id, state: Uint8Array.of(0x08, 0x81, 0x00) }] }), /not canonically encoded/)
    const e = embeddings(2)
    bad(raw({ accounts: a.map(acc), embeddings: e.map(x => ({ id: x.id, embedding: x.value })) }), /holds embeddings/)
    bad(raw({ kind: 2, accounts: a.map(acc) }), /holds accounts/)
    // embeddings in id order instead of (commit, id) order, when the two differ
    const byId = [...e].sort((x, y) => compareBytes(x.id, y.id))
    if (hex(byId[0].key) !== hex(e[0].key)) bad(raw({ kind: 2, embeddings: byId.map(x => ({ id: x.id, embedding: x.value })) }), /ascending/)
    // trailing garbage, and a default field written explicitly (non-canonical chunk bytes)
    const trailing = new Uint8Array(good.length + 2); trailing.set(good); trailing.set([0x08, 0x01], good.length)
    bad(trailing, /not canonically encoded/)
    bad(Uint8Array.of(...good.subarray(0, 4), 0x18, 0x00, ...good.subarray(4)), /not canonically encoded/)
  })
})

describe('content-defined boundaries', () => {
  test('boundaryHash is MurmurHash3_x86_32 (seed 0): known test vectors', () => {
    assert.equal(boundaryHash(new Uint8Array(0)), 0)
    assert.equal(boundaryHash(utf8.encode('hello')), 0x248bfa47)
    assert.equal(boundaryHash(utf8.encode('The quick brown fox jumps over the lazy dog')), 0x2e4ff723)
    assert.equal(boundaryHash(Uint8Array.of(0, 0, 0, 0)), 0x2362f9de)
  })

  test('the chunker cuts after boundary entries and at the size limit, and nowhere else', () => {
    const modulus = 8
    const entries = accounts(2000)
    const out: BuiltChunk[] = []
    const maxBytes = 1500
    const c = new Chunker(ChunkKind.ACCOUNTS, 0, { modulus, maxBytes }, x => out.push(x))
    for (const e of entries) c.add(e)
    c.finish()
    assert.equal(out.reduce((s, x) => s + x.info.entries, 0), entries.length)
    let i = 0
    let forced = 0
    for (const [n, x] of out.entries()) {
      const chunkEntries = entries.slice(i, i + x.info.entries)
      i += x.info.entries
      assert.equal(hex(x.info.hash), hex(sha256(x.bytes)))
      assert.equal(x.info.size, x.bytes.byteLength)
      assert.equal(hex(x.info.firstKey), hex(chunkEntries[0].key))
      // no boundary inside a chunk
      for (const e of chunkEntries.slice(0, -1)) assert.ok(!isBoundary(e.id, modulus))
      const last = chunkEntries[chunkEntries.length - 1]
      if (!isBoundary(last.id, modulus) && n < out.length - 1) {
        forced++
        assert.ok(x.bytes.byteLength >= maxBytes, 'a cut that is not at a boundary is forced by the size limit')
      }
      assert.ok(x.bytes.byteLength < maxBytes + 100)
      assert.deepEqual(decodeChunk(x.bytes).entries.map(e => hex(e.key)), chunkEntries.map(e => hex(e.key)))
    }
    assert.ok(forced > 0, 'some cuts were forced')
    assert.ok(out.length > 2000 / 8 * 0.7 && out.length < 2000 / 8 * 1.5, `about n/M chunks: ${out.length}`)
  })
})
