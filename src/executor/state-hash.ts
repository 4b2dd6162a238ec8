/**
 * The state root: an LtHash over every state entry, so that an update costs O(changed entries).
 * Entry element = shake256(bucket byte || key || value bytes) where value is the canonical encoding
 * of AccountState / Embedding. state root = sha256(LtHash lanes).
 */
import { LtHash } from '../crypto/lthash.ts'
import { Bucket } from '../store/keys.ts'
import { Codecs } from '../chain/codecs.ts'
import type { AccountState, Embedding } from '../chain/types.ts'

const ACCOUNT_TAG = Uint8Array.of(Bucket.ACCOUNT)
const EMBEDDING_TAG = Uint8Array.of(Bucket.EMBEDDING)

export function accountElement (address: Uint8Array, encodedState: Uint8Array): Uint16Array {
  return LtHash.element(ACCOUNT_TAG, address, encodedState)
}

export function embeddingElement (id: Uint8Array, encodedEmbedding: Uint8Array): Uint16Array {
  return LtHash.element(EMBEDDING_TAG, id, encodedEmbedding)
}

export function encodeAccount (s: AccountState): Uint8Array {
  return Codecs.AccountState.encode(s)
}

export function encodeEmbedding (e: Embedding): Uint8Array {
  return Codecs.Embedding.encode(e)
}
