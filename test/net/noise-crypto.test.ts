import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { yamux } from '@chainsafe/libp2p-yamux'
import { Uint8ArrayList } from 'uint8arraylist'
import { nodeNoiseCrypto, somaNoise, NODE_CIPHER_MIN_BYTES } from '../../src/net/noise-crypto.ts'

const SIZES = [0, 1, 100, NODE_CIPHER_MIN_BYTES - 1, NODE_CIPHER_MIN_BYTES, 1500, 65535 - 16]
const bytes = (x: Uint8Array | { subarray: () => Uint8Array }): Uint8Array => new Uint8Array(x instanceof Uint8Array ? x : x.subarray())
// a message in pieces, as Noise hands over a list (a structurally compatible uint8arraylist)
const split = (b: Uint8Array): any => new Uint8ArrayList(b.subarray(0, b.length / 3), b.subarray(b.length / 3, b.length / 2), b.subarray(b.length / 2))

test('nodeNoiseCrypto encrypts exactly as Noise\'s default and each decrypts the other, whole or in pieces', () => {
  const k = randomBytes(32)
  const ad = randomBytes(32)
  for (const size of SIZES) {
    const nonce = randomBytes(12)
    const plain = randomBytes(size)
    const ours = bytes(nodeNoiseCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
    const theirs = bytes(defaultCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
    assert.deepEqual(ours, theirs, `${size} bytes: the same ciphertext`)
    assert.equal(ours.byteLength, size + 16)
    assert.deepEqual(bytes(nodeNoiseCrypto.chaCha20Poly1305Encrypt(split(plain), nonce, ad, k)), theirs, `${size} bytes in pieces`)
    assert.deepEqual(bytes(nodeNoiseCrypto.chaCha20Poly1305Decrypt(theirs, nonce, ad, k)), new Uint8Array(plain))
    assert.deepEqual(bytes(nodeNoiseCrypto.chaCha20Poly1305Decrypt(split(theirs), nonce, ad, k)), new Uint8Array(plain))
    assert.deepEqual(bytes(defaultCrypto.chaCha20Poly1305Decrypt(ours, nonce, ad, k)), new Uint8Array(plain))
  }
})

test('nodeNoiseCrypto refuses a tampered message, a wrong key and a wrong nonce, below and above the threshold', () => {
  const k = randomBytes(32)
  const ad = new Uint8Array(0)
  for (const size of [100, NODE_CIPHER_MIN_BYTES, 5000]) {
    const nonce = randomBytes(12)
    const sealed = bytes(nodeNoiseCrypto.chaCha20Poly1305Encrypt(randomBytes(size), nonce, ad, k))
    const tampered = new Uint8Array(sealed); tampered[size >> 1] ^= 1
    assert.throws(() => nodeNoiseCrypto.chaCha20Poly1305Decrypt(tampered, nonce, ad, k), `${size}: tampered`)
    assert.throws(() => nodeNoiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, randomBytes(32)), `${size}: wrong key`)
    assert.throws(() => nodeNoiseCrypto.chaCha20Poly1305Decrypt(sealed, randomBytes(12), ad, k), `${size}: wrong nonce`)
  }
})

test('a key array changed in place is not served from the cache', () => {
  const k = randomBytes(32)
  const nonce = randomBytes(12)
  const plain = randomBytes(4096)
  const first = bytes(nodeNoiseCrypto.chaCha20Poly1305Encrypt(plain, nonce, new Uint8Array(0), k))
  randomBytes(32).copy(k)
  const second = bytes(nodeNoiseCrypto.chaCha20Poly1305Encrypt(plain, nonce, new Uint8Array(0), k))
  assert.notDeepEqual(second, first)
  assert.deepEqual(second, bytes(defaultCrypto.chaCha20Poly1305Encrypt(plain, nonce, new Uint8Array(0), k)))
})

test('a somaNoise node and a stock noise() node talk over 127.0.0.1: 4 MiB echoed intact', { timeout: 30_000 }, async (t) => {
  const mk = async (encrypter: any) => await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [encrypter], streamMuxers: [yamux()] })
  const a = await mk(somaNoise())
  const b = await mk(noise())
  t.after(async () => { await a.stop(); await b.stop() })
  const PROTOCOL = '/soma-test/echo/1'
  await b.handle(PROTOCOL, async (stream) => {
    for await (const chunk of stream) stream.send(chunk)
    await stream.close()
  })
  const data = randomBytes(4 * 1024 * 1024)
  const stream = await a.dialProtocol(b.getMultiaddrs()[0], PROTOCOL)
  const received = new Uint8ArrayList()
  const reading = (async () => { for await (const chunk of stream) received.append(chunk) })()
  // writes of many sizes, so that Noise messages fall on both sides of the threshold
  let o = 0
  for (let i = 0; o < data.length; i++) {
    const n = Math.min([17, 900, 1024, 3000, 65536][i % 5], data.length - o)
    if (!stream.send(data.subarray(o, o + n))) await new Promise(resolve => stream.addEventListener('drain', resolve, { once: true }))
    o += n
  }
  await stream.close()
  await reading
  assert.equal(received.byteLength, data.length)
  assert.deepEqual(received.subarray(), new Uint8Array(data))
})
