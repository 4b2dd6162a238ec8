import { test } from 'node:test'
import assert from 'node:assert/strict'
import { deriveKeyPair, keyPairFromSeed, generateKeyPair, sign, verify, publicKeyObject } from '../../src/crypto/keys.ts'
import { fromHex, toHex, utf8 } from '../../src/crypto/hash.ts'

test('RFC 8032 test vector 1 (empty message)', () => {
  const k = keyPairFromSeed(fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'))
  assert.equal(toHex(k.publicKey), 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a')
  const sig = sign(k, new Uint8Array(0))
  assert.equal(toHex(sig), 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b')
  assert.ok(verify(k.publicKey, new Uint8Array(0), sig))
})

test('derivation is deterministic and label/seed-separated', () => {
  const a = deriveKeyPair('seed', 'validator/0')
  const b = deriveKeyPair('seed', 'validator/0')
  assert.equal(toHex(a.publicKey), toHex(b.publicKey))
  assert.equal(toHex(a.secret), toHex(b.secret))
  assert.equal(a.publicKey.byteLength, 32)
  assert.notEqual(toHex(deriveKeyPair('seed', 'validator/1').publicKey), toHex(a.publicKey))
  assert.notEqual(toHex(deriveKeyPair('seed2', 'validator/0').publicKey), toHex(a.publicKey))
  assert.notEqual(toHex(generateKeyPair().publicKey), toHex(generateKeyPair().publicKey))
  assert.throws(() => keyPairFromSeed(new Uint8Array(31)), TypeError)
})

test('sign/verify; another key, message or signature fails', () => {
  const k = deriveKeyPair('s', 'a')
  const other = deriveKeyPair('s', 'b')
  const msg = utf8.encode('hello soma')
  const sig = sign(k, msg)
  assert.equal(sig.byteLength, 64)
  assert.ok(verify(k.publicKey, msg, sig))
  assert.ok(!verify(other.publicKey, msg, sig))
  assert.ok(!verify(k.publicKey, utf8.encode('hello somb'), sig))
  for (let i = 0; i < 64; i += 7) {
    const bad = new Uint8Array(sig); bad[i] ^= 0x01
    assert.ok(!verify(k.publicKey, msg, bad), `sig byte ${i}`)
  }
  // a signature is deterministic (ed25519)
  assert.equal(toHex(sign(k, msg)), toHex(sig))
})

test('bad key or signature lengths, or an invalid key, return false and never throw', () => {
  const k = deriveKeyPair('s', 'a')
  const msg = utf8.encode('m')
  const sig = sign(k, msg)
  assert.equal(verify(k.publicKey.subarray(0, 31), msg, sig), false)
  assert.equal(verify(new Uint8Array(33), msg, sig), false)
  assert.equal(verify(k.publicKey, msg, sig.subarray(0, 63)), false)
  assert.equal(verify(k.publicKey, msg, new Uint8Array(65)), false)
  assert.equal(verify(k.publicKey, msg, new Uint8Array(0)), false)
  assert.equal(verify(new Uint8Array(32).fill(0xff), msg, sig), false) // not a curve point
  assert.equal(verify(new Uint8Array(32), msg, new Uint8Array(64)), false)
  assert.throws(() => publicKeyObject(new Uint8Array(31)), TypeError)
})

test('verify works on views into larger buffers', () => {
  const k = deriveKeyPair('s', 'view')
  const msg = utf8.encode('view test')
  const sig = sign(k, msg)
  const big = new Uint8Array(200)
  big.set(k.publicKey, 3); big.set(sig, 40); big.set(msg, 110)
  assert.ok(verify(big.subarray(3, 35), big.subarray(110, 110 + msg.length), big.subarray(40, 104)))
})
