import { Codecs } from './codecs.ts'
import type { SignedTransaction, Transaction } from './types.ts'
import { sha256, utf8, bytesEqual } from '../crypto/hash.ts'
import { sign, type KeyPair } from '../crypto/keys.ts'
import type { SignatureCheck } from '../crypto/verify-pack.ts'
import { InvalidTransactionError } from '../errors.ts'

const TX_DOMAIN = utf8.encode('soma/tx/v1')
export const MAX_MODEL_TAG_BYTES = 64

export interface ParsedTransaction {
  readonly signed: SignedTransaction
  readonly tx: Transaction
  readonly digest: Uint8Array
  /**
   * `tx.kind`, read once: on a decoded message it is protobufjs's oneof getter, which lists the
   * object's keys on every read
   */
  readonly kind: NonNullable<Transaction['kind']>
}

export function txSigningMessage (digest: Uint8Array): Uint8Array {
  const m = new Uint8Array(TX_DOMAIN.length + digest.length)
  m.set(TX_DOMAIN); m.set(digest, TX_DOMAIN.length)
  return m
}

/** Encodes and signs a user transaction with the sender's key. */
export function signTransaction (tx: Transaction, key: KeyPair): SignedTransaction {
  const bytes = Codecs.Transaction.encode(tx)
  return { tx: bytes, signature: sign(key, txSigningMessage(sha256(bytes))) }
}

/** A ChangeEpoch system transaction: no sender, no signature; the block signature covers it. */
export function systemTransaction (tx: Transaction): SignedTransaction {
  return { tx: Codecs.Transaction.encode(tx), signature: new Uint8Array(0) }
}

/**
 * Parse results by SignedTransaction object: sync's TxVerifier parses every transaction of a block
 * and the executor parses the same objects again; the second parse is a lookup. Weak: it holds nothing.
 */
const parsed = new WeakMap<SignedTransaction, { p: ParsedTransaction, chainId: Uint8Array, dim: number }>()

/**
 * Decodes a transaction and checks everything but its signature: chain id, kind, field sizes.
 * Throws InvalidTransactionError naming what is wrong.
 */
export function parseTransaction (signed: SignedTransaction, chainId: Uint8Array, embeddingDim: number): ParsedTransaction {
  const hit = parsed.get(signed)
  if (hit !== undefined && hit.dim === embeddingDim && (hit.chainId === chainId || bytesEqual(hit.chainId, chainId))) return hit.p
  const p = parseUncached(signed, chainId, embeddingDim)
  parsed.set(signed, { p, chainId, dim: embeddingDim })
  return p
}

function parseUncached (signed: SignedTransaction, chainId: Uint8Array, embeddingDim: number): ParsedTransaction {
  let tx: Transaction
  try {
    tx = Codecs.Transaction.decode(signed.tx)
  } catch (err: any) {
    throw new InvalidTransactionError(`transaction does not decode: ${err.message}`)
  }
  const digest = sha256(signed.tx)
  if (!bytesEqual(tx.chainId, chainId)) throw new InvalidTransactionError('transaction is for another chain')
  const kind = tx.kind
  switch (kind) {
    case 'transfer':
      if (tx.sender.byteLength !== 32) throw new InvalidTransactionError('transfer sender is not a 32-byte key')
      if (tx.transfer!.to.byteLength !== 32) throw new InvalidTransactionError('transfer recipient is not a 32-byte address')
      if (!Number.isSafeInteger(tx.transfer!.amount) || tx.transfer!.amount <= 0) throw new InvalidTransactionError('transfer amount must be a positive integer')
      break
    case 'submitEmbedding': {
      if (tx.sender.byteLength !== 32) throw new InvalidTransactionError('embedding sender is not a 32-byte key')
      const v = tx.submitEmbedding!.vector
      if (v.byteLength !== embeddingDim * 4) throw new InvalidTransactionError(`embedding has ${v.byteLength / 4} dimensions, the chain requires ${embeddingDim}`)
      if (utf8.encode(tx.submitEmbedding!.model ?? '').byteLength > MAX_MODEL_TAG_BYTES) throw new InvalidTransactionError('embedding model tag is longer than 64 bytes')
      break
    }
    case 'changeEpoch':
      if (tx.sender.byteLength !== 0 || signed.signature.byteLength !== 0) throw new InvalidTransactionError('ChangeEpoch must have no sender and no signature')
      break
    default:
      throw new InvalidTransactionError('transaction has no kind')
  }
  if (!Number.isSafeInteger(tx.nonce) || tx.nonce < 0) throw new InvalidTransactionError('nonce out of range')
  return { signed, tx, digest, kind }
}

/** The signature check of a user transaction; null for system transactions (no account signature). */
export function txSignatureCheck (p: ParsedTransaction): SignatureCheck | null {
  if (p.kind === 'changeEpoch') return null
  return { publicKey: p.tx.sender, message: txSigningMessage(p.digest), signature: p.signed.signature }
}
