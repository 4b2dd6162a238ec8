import { test } from 'node:test'
import assert from 'node:assert/strict'
import { sha256, toHex, fromHex, bytesEqual, compareBytes, short, utf8, bytesKey } from '../../src/crypto/hash.ts'

test('sha256 matches the FIPS 180-2 vectors', () => {
  assert.equal(toHex(sha256(utf8.encode('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  assert.equal(toHex(sha256(new Uint8Array(0))), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  assert.equal(toHex(sha256(utf8.encode('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'))), '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1')
})

test('sha256 of several parts = sha256 of their concatenation', () => {
  assert.equal(toHex(sha256(utf8.encode('a'), utf8.encode('bc'))), toHex(sha256(utf8.encode('abc'))))
  assert.equal(toHex(sha256(utf8.encode('ab'), new Uint8Array(0), utf8.encode('c'))), toHex(sha256(utf8.encode('abc'))))
})

test('hex helpers and byte comparison respect views (offset/length)', () => {
  const buf = Uint8Array.from([9, 1, 2, 3, 9])
  const view = buf.subarray(1, 4)
  assert.equal(toHex(view), '010203')
  assert.deepEqual([...fromHex('010203')], [1, 2, 3])
  assert.throws(() => fromHex('0g'), TypeError)
  assert.throws(() => fromHex('abc'), TypeError)
  assert.ok(bytesEqual(view, Uint8Array.from([1, 2, 3])))
  assert.ok(!bytesEqual(view, Uint8Array.from([1, 2])))
  assert.ok(!bytesEqual(view, Uint8Array.from([1, 2, 4])))
  assert.ok(compareBytes(Uint8Array.from([1, 2]), Uint8Array.from([1, 3])) < 0)
  assert.equal(compareBytes(view, Uint8Array.from([1, 2, 3])), 0)
  assert.equal(short(fromHex('deadbeef0011')), 'deadbeef')
})

test('compareBytes orders like Buffer.compare: prefixes, lengths, high bytes, views', () => {
  let seed = 7
  const rnd = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed % n }
  const backing = Uint8Array.from({ length: 4096 }, () => rnd(256))
  for (let i = 0; i < 20_000; i++) {
    const la = rnd(6); const lb = rnd(6)
    const a = backing.subarray(rnd(64), rnd(64) + la)
    const b = rnd(3) === 0 ? Uint8Array.from(a.subarray(0, Math.min(lb, a.length))) : Uint8Array.from({ length: lb }, () => rnd(3) === 0 ? 255 : rnd(256))
    assert.equal(compareBytes(a, b), Buffer.compare(a, b), `${Buffer.from(a).toString('hex')} vs ${Buffer.from(b).toString('hex')}`)
  }
})

test('bytesKey: one latin1 char per byte of a view, equal for equal bytes wherever they sit', () => {
  const backing = Uint8Array.from({ length: 64 }, (_, i) => (i * 37) & 0xff)
  const view = backing.subarray(5, 37)
  const key = bytesKey(view)
  assert.equal(key.length, 32)
  for (let i = 0; i < 32; i++) assert.equal(key.charCodeAt(i), view[i])
  assert.equal(bytesKey(new Uint8Array(view)), key, 'a copy in another buffer')
  assert.notEqual(bytesKey(backing.subarray(6, 38)), key)
  assert.equal(bytesKey(new Uint8Array(0)), '')
})
