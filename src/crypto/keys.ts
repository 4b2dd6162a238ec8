/**
 * ed25519 through node:crypto. Public keys are the raw 32 bytes; private keys are 32-byte seeds.
 * KeyObjects for verification are cached per public key (building one per call costs ~35%: 7.4k/s vs
 * 4.9k/s measured here).
 */
import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, randomBytes, type KeyObject } from 'node:crypto'
import { bytesKey, sha256, utf8 } from './hash.ts'

const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

export interface KeyPair {
  /** 32-byte seed */
  readonly secret: Uint8Array
  /** 32-byte raw public key */
  readonly publicKey: Uint8Array
  readonly privateKeyObject: KeyObject
}

export function keyPairFromSeed (seed32: Uint8Array): KeyPair {
  if (seed32.byteLength !== 32) throw new TypeError(`an ed25519 seed is 32 bytes, got ${seed32.byteLength}`)
  const privateKeyObject = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed32]), format: 'der', type: 'pkcs8' })
  const spki = createPublicKey(privateKeyObject).export({ format: 'der', type: 'spki' })
  return { secret: new Uint8Array(seed32), publicKey: new Uint8Array(spki.subarray(spki.length - 32)), privateKeyObject }
}

/** Deterministic key pair from a seed phrase and a label, e.g. ('devnet', 'validator/3'). */
export function deriveKeyPair (seed: string, label: string): KeyPair {
  return keyPairFromSeed(sha256(utf8.encode(`soma/keygen/v1/${seed}/${label}`)))
}

export function generateKeyPair (): KeyPair {
  return keyPairFromSeed(randomBytes(32))
}

export function sign (key: KeyPair, message: Uint8Array): Uint8Array {
  return new Uint8Array(nodeSign(null, message, key.privateKeyObject))
}

const MAX_CACHED_KEYS = 65536
const keyCache = new Map<string, KeyObject>()

/** A cached verification KeyObject; throws TypeError for a key that is not 32 bytes. */
export function publicKeyObject (publicKey: Uint8Array): KeyObject {
  if (publicKey.byteLength !== 32) throw new TypeError(`an ed25519 public key is 32 bytes, got ${publicKey.byteLength}`)
  const id = bytesKey(publicKey)
  let ko = keyCache.get(id)
  if (ko === undefined) {
    ko = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' })
    if (keyCache.size >= MAX_CACHED_KEYS) keyCache.delete(keyCache.keys().next().value as string)
    keyCache.set(id, ko)
  }
  return ko
}

/** Verifies one ed25519 signature; false (never a throw) for a malformed key or signature. */
export function verify (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (signature.byteLength !== 64 || publicKey.byteLength !== 32) return false
  try {
    return nodeVerify(null, message, publicKeyObject(publicKey), signature)
  } catch {
    return false
  }
}
