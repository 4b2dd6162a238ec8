/**
 * The state root: an LtHash over every state entry, so that an update costs O(changed entries).
 * Entry element = shake256(bucket byte || key || value bytes) where value is the canonical encoding
 * of AccountState / Embedding. state root = sha256(LtHash lanes).
 */
import { LtHash } from '../crypto/lthash.ts'
import { bytesKey } from '../crypto/hash.ts'
import { Bucket } from './keys.ts'
import { Codecs } from '../chain/codecs.ts'
import type { AccountState, Embedding } from '../chain/types.ts'

const ACCOUNT_TAG = Uint8Array.of(Bucket.ACCOUNT)
const EMBEDDING_TAG = Uint8Array.of(Bucket.EMBEDDING)

/**
 * Elements of recently written account states, by address: the executor removes an account's old
 * element and adds its new one, so the old one is almost always the element it computed last time.
 * Bounded (ELEMENT_CACHE_SIZE entries of 2 KiB); a hit is checked against the exact encoded state.
 */
const ELEMENT_CACHE_SIZE = 8192
const elementCache = new Map<string, { enc: Buffer, lanes: Uint16Array }>()

/** `key`: bytesKey(address), when the caller has it already */
export function accountElement (address: Uint8Array, encodedState: Uint8Array, key = bytesKey(address)): Uint16Array {
  const hit = elementCache.get(key)
  if (hit !== undefined && hit.enc.equals(encodedState)) return hit.lanes
  const lanes = LtHash.element(ACCOUNT_TAG, address, encodedState)
  if (hit === undefined && elementCache.size >= ELEMENT_CACHE_SIZE) elementCache.delete(elementCache.keys().next().value as string)
  elementCache.set(key, { enc: Buffer.from(encodedState), lanes })
  return lanes
}

export function embeddingElement (id: Uint8Array, encodedEmbedding: Uint8Array): Uint16Array {
  return LtHash.element(EMBEDDING_TAG, id, encodedEmbedding)
}

/**
 * The sum of the elements of entries of one bucket (Bucket.ACCOUNT or Bucket.EMBEDDING): a snapshot
 * chunk's share of the state root. Bulk work: it bypasses the cache of recent account elements.
 */
export function elementSum (bucket: number, entries: Iterable<{ id: Uint8Array, value: Uint8Array }>): LtHash {
  const tag = bucket === Bucket.ACCOUNT ? ACCOUNT_TAG : EMBEDDING_TAG
  const h = new LtHash()
  for (const e of entries) h.addLanes(LtHash.element(tag, e.id, e.value))
  return h
}

export function encodeAccount (s: AccountState): Uint8Array {
  return Codecs.AccountState.encode(s)
}

export function encodeEmbedding (e: Embedding): Uint8Array {
  return Codecs.Embedding.encode(e)
}
