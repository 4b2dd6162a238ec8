/**
 * The crypto that Noise (`@chainsafe/libp2p-noise`) encrypts a connection's messages with: its default,
 * except that a message of 1 KiB or more goes through node:crypto's ChaCha20-Poly1305 with a KeyObject
 * made once per session key, instead of one made from the raw key for every message.
 *
 * Making a key for each message costs the default ~10 µs a message: measured here (Node 24), encrypting
 * 1,500 bytes takes ~17–21 µs with the raw key and ~6 µs with a KeyObject, a 64 KiB message ~58 µs
 * against ~44 µs (decrypting: ~43 against ~31 µs). Below 1 KiB the default's WebAssembly implementation
 * is the faster one (2.2 against 4.6 µs for 100 bytes) and is kept. End to end, a snapshot sync moves
 * ~16,000 such 64 KiB messages per GiB each way: ~0.4 CPU seconds of its ~50 per GiB.
 *
 * Session keys are new arrays the handshake derives and never changes; the cache is keyed by the array
 * (weakly: a closed connection's keys go with it) and still checks the bytes on every use.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'

const ALGORITHM = 'chacha20-poly1305'
const TAG_BYTES = 16
/** Messages at least this long use node:crypto with a cached KeyObject. */
export const NODE_CIPHER_MIN_BYTES = 1024

/** A message as Noise hands it over: one Uint8Array or a list of them (Noise's own uint8arraylist). */
type Message = Parameters<ICryptoInterface['chaCha20Poly1305Encrypt']>[0]
type Output = ReturnType<ICryptoInterface['chaCha20Poly1305Encrypt']>

const keys = new WeakMap<Uint8Array, { bytes: Buffer, key: KeyObject }>()

function keyObject (k: Uint8Array): KeyObject {
  const hit = keys.get(k)
  if (hit !== undefined && hit.bytes.equals(k)) return hit.key
  const bytes = Buffer.from(k) // a copy: what the KeyObject was made from
  const key = createSecretKey(bytes)
  keys.set(k, { bytes, key })
  return key
}

function encrypt (plaintext: Message, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array): Output {
  if (plaintext.byteLength < NODE_CIPHER_MIN_BYTES) return defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k)
  const cipher = createCipheriv(ALGORITHM, keyObject(k), nonce, { authTagLength: TAG_BYTES })
  cipher.setAAD(ad, { plaintextLength: plaintext.byteLength })
  // always one Uint8Array out (the interface allows it): pieces in, their ciphertexts joined
  const parts: Buffer[] = []
  if (plaintext instanceof Uint8Array) parts.push(cipher.update(plaintext))
  else for (const buf of plaintext) parts.push(cipher.update(buf))
  parts.push(cipher.final(), cipher.getAuthTag())
  return Buffer.concat(parts, plaintext.byteLength + TAG_BYTES)
}

function decrypt (ciphertext: Message, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array, dst?: Uint8Array): Output {
  if (ciphertext.byteLength < NODE_CIPHER_MIN_BYTES) return defaultCrypto.chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst)
  const sealed = ciphertext instanceof Uint8Array ? ciphertext : ciphertext.subarray()
  const text = sealed.subarray(0, sealed.byteLength - TAG_BYTES)
  const decipher = createDecipheriv(ALGORITHM, keyObject(k), nonce, { authTagLength: TAG_BYTES })
  decipher.setAAD(ad, { plaintextLength: text.byteLength })
  decipher.setAuthTag(sealed.subarray(sealed.byteLength - TAG_BYTES))
  const output = decipher.update(text)
  const final = decipher.final() // throws when the tag does not authenticate
  return final.byteLength > 0 ? Buffer.concat([output, final], output.byteLength + final.byteLength) : output
}

/** Noise's default crypto with the cached-KeyObject cipher for messages of 1 KiB and more. */
export const nodeNoiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt: encrypt,
  chaCha20Poly1305Decrypt: decrypt
}

/** The connection encrypter of a Soma node: `noise()` with nodeNoiseCrypto. */
export function somaNoise (init: Parameters<typeof noise>[0] = {}): ReturnType<typeof noise> {
  return noise({ crypto: nodeNoiseCrypto, ...init })
}
