import { test } from 'node:test'
import { createHash } from 'node:crypto'
import assert from 'node:assert/strict'
import { LtHash, LTHASH_BYTES, LTHASH_LANES } from '../../src/crypto/lthash.ts'
import { sha256, toHex, utf8 } from '../../src/crypto/hash.ts'

const el = (s: string): Uint8Array => utf8.encode(s)
const items = Array.from({ length: 50 }, (_, i) => el(`item-${i}`))

test('an empty LtHash is zero; its checksum is sha256 of 2048 zero bytes', () => {
  const h = new LtHash()
  assert.ok(h.isZero())
  assert.equal(toHex(h.checksum()), toHex(sha256(new Uint8Array(LTHASH_BYTES))))
  assert.equal(LTHASH_LANES * 2, LTHASH_BYTES)
})

test('order independence', () => {
  const a = new LtHash(); for (const x of items) a.add(x)
  const b = new LtHash(); for (const x of [...items].reverse()) b.add(x)
  const shuffled = [...items].sort((x, y) => sha256(x)[0] - sha256(y)[0])
  const c = new LtHash(); for (const x of shuffled) c.add(x)
  assert.equal(toHex(a.checksum()), toHex(b.checksum()))
  assert.equal(toHex(a.checksum()), toHex(c.checksum()))
  assert.ok(!a.isZero())
})

test('add then remove gives zero; remove then add too', () => {
  const h = new LtHash()
  for (const x of items) h.add(x)
  for (const x of items) h.remove(x)
  assert.ok(h.isZero())
  const g = new LtHash().remove(el('x')).add(el('x'))
  assert.ok(g.isZero())
})

test('multi-part elements: parts are concatenated (element of (a, b) = element of (ab))', () => {
  assert.deepEqual(LtHash.element(el('ab'), el('c')), LtHash.element(el('abc')))
})

test('an element is shake256 with 2048 bytes of output, read as little-endian u16 lanes', () => {
  for (const parts of [[el('one part')], [el('tag'), el('key'), new Uint8Array(4096).fill(7)]]) {
    const want = createHash('shake256', { outputLength: LTHASH_BYTES })
    for (const p of parts) want.update(p)
    const bytes = want.digest()
    const lanes = LtHash.element(...parts)
    assert.equal(lanes.length, LTHASH_LANES)
    for (const i of [0, 1, 511, 1023]) assert.equal(lanes[i], bytes.readUInt16LE(2 * i))
  }
})

test('fromBytes/toBytes round trip, also from an unaligned view', () => {
  const h = new LtHash(); for (const x of items.slice(0, 10)) h.add(x)
  const bytes = h.toBytes()
  assert.equal(bytes.byteLength, LTHASH_BYTES)
  const back = LtHash.fromBytes(bytes)
  assert.equal(toHex(back.toBytes()), toHex(bytes))
  assert.equal(toHex(back.checksum()), toHex(h.checksum()))
  const padded = new Uint8Array(LTHASH_BYTES + 1); padded.set(bytes, 1)
  assert.equal(toHex(LtHash.fromBytes(padded.subarray(1)).checksum()), toHex(h.checksum()))
  // toBytes is a copy
  bytes[0] ^= 1
  assert.notEqual(toHex(h.toBytes()), toHex(bytes))
  assert.throws(() => LtHash.fromBytes(new Uint8Array(LTHASH_BYTES - 1)), TypeError)
  assert.throws(() => new LtHash(new Uint16Array(3)), TypeError)
})

test('equal multisets have equal checksums, different ones differ', () => {
  // {a, a, b} built two ways
  const x = new LtHash().add(el('a')).add(el('b')).add(el('a'))
  const y = new LtHash().add(el('b')).add(el('c')).add(el('a')).add(el('a')).remove(el('c'))
  assert.equal(toHex(x.checksum()), toHex(y.checksum()))
  // multiplicity matters
  const z = new LtHash().add(el('a')).add(el('b'))
  assert.notEqual(toHex(x.checksum()), toHex(z.checksum()))
  // merge of two halves = the whole; merge with -1 undoes
  const whole = new LtHash(); for (const e of items) whole.add(e)
  const h1 = new LtHash(); for (const e of items.slice(0, 20)) h1.add(e)
  const h2 = new LtHash(); for (const e of items.slice(20)) h2.add(e)
  assert.equal(toHex(h1.clone().merge(h2).checksum()), toHex(whole.checksum()))
  assert.equal(toHex(whole.clone().merge(h2, -1).checksum()), toHex(h1.checksum()))
  // clone is independent
  const cl = h1.clone(); cl.add(el('extra'))
  assert.notEqual(toHex(cl.checksum()), toHex(h1.checksum()))
})

test('lanes wrap mod 2^16', () => {
  const e = LtHash.element(el('wrap'))
  const h = new LtHash()
  for (let i = 0; i < 65536; i++) h.addLanes(e) // 65536 * e ≡ 0 (mod 2^16)
  assert.ok(h.isZero())
})
