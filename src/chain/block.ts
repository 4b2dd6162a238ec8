import { Codecs } from './codecs.ts'
import type { Block, BlockRef, SignedBlock } from './types.ts'
import type { CommitteeInfo } from './committee.ts'
import { sha256, utf8, bytesEqual, toHex } from '../crypto/hash.ts'
import { sign, verify, type KeyPair } from '../crypto/keys.ts'
import type { SignatureCheck } from '../crypto/verify-pack.ts'
import { InvalidSignatureError, MalformedMessageError } from '../errors.ts'

const BLOCK_DOMAIN = utf8.encode('soma/block/v1')
export const MAX_TRANSACTIONS_PER_BLOCK = 10_000
export const MAX_ANCESTORS = 1024
export const MAX_VOTES_PER_BLOCK = 1024

/** A block decoded from its SignedBlock bytes, with its digest. Not yet signature-checked. */
export class ParsedBlock {
  readonly bytes: Uint8Array
  readonly signed: SignedBlock
  readonly block: Block
  readonly digest: Uint8Array

  constructor (bytes: Uint8Array, signed: SignedBlock, block: Block) {
    this.bytes = bytes
    this.signed = signed
    this.block = block
    this.digest = sha256(bytes)
  }

  get ref (): BlockRef {
    return { round: this.block.round, author: this.block.author, digest: this.digest }
  }

  get epoch (): number { return this.block.epoch }
  get round (): number { return this.block.round }
  get author (): number { return this.block.author }
}

/** A block whose signature was checked against its epoch's committee. */
export type VerifiedBlock = ParsedBlock & { readonly __verified: true }

export function blockSigningMessage (blockBytes: Uint8Array): Uint8Array {
  const d = sha256(blockBytes)
  const m = new Uint8Array(BLOCK_DOMAIN.length + d.length)
  m.set(BLOCK_DOMAIN); m.set(d, BLOCK_DOMAIN.length)
  return m
}

export function signBlock (block: Block, key: KeyPair): ParsedBlock {
  const blockBytes = Codecs.Block.encode(block)
  const signed: SignedBlock = { block: blockBytes, signature: sign(key, blockSigningMessage(blockBytes)) }
  const bytes = Codecs.SignedBlock.encode(signed)
  return new ParsedBlock(bytes, Codecs.SignedBlock.decode(bytes), Codecs.Block.decode(blockBytes))
}

/** Decodes SignedBlock bytes and checks the block's structure (not its signature). */
export function parseBlock (bytes: Uint8Array, chainId: Uint8Array): ParsedBlock {
  const signed = Codecs.SignedBlock.decode(bytes)
  const block = Codecs.Block.decode(signed.block)
  const p = new ParsedBlock(bytes, signed, block)
  const where = `block ${refString(p.ref)}`
  if (!bytesEqual(block.chainId, chainId)) throw new MalformedMessageError(`${where} is for another chain`)
  if (signed.signature.byteLength !== 64) throw new MalformedMessageError(`${where}: signature is not 64 bytes`)
  if (block.transactions.length > MAX_TRANSACTIONS_PER_BLOCK) throw new MalformedMessageError(`${where} has ${block.transactions.length} transactions (max ${MAX_TRANSACTIONS_PER_BLOCK})`)
  if (block.ancestors.length > MAX_ANCESTORS) throw new MalformedMessageError(`${where} has too many ancestors`)
  if (block.commitVotes.length > MAX_VOTES_PER_BLOCK) throw new MalformedMessageError(`${where} has too many commit votes`)
  for (const a of block.ancestors) {
    if (a.digest.byteLength !== 32) throw new MalformedMessageError(`${where}: ancestor digest is not 32 bytes`)
    if (a.round >= block.round) throw new MalformedMessageError(`${where}: ancestor round ${a.round} is not below the block's`)
  }
  for (const v of block.commitVotes) {
    if (v.digest.byteLength !== 32) throw new MalformedMessageError(`${where}: commit vote digest is not 32 bytes`)
  }
  return p
}

/** The signature check of a block by its author in `committee` (its epoch's). */
export function blockSignatureCheck (p: ParsedBlock, committee: CommitteeInfo): SignatureCheck {
  if (p.block.epoch !== committee.epoch) {
    throw new InvalidSignatureError(`block ${refString(p.ref)} is of epoch ${p.block.epoch}, checked against the committee of epoch ${committee.epoch}`)
  }
  const pk = committee.publicKey(p.block.author)
  if (pk === undefined) throw new InvalidSignatureError(`block ${refString(p.ref)}: author ${p.block.author} is not in the committee of epoch ${committee.epoch}`)
  return { publicKey: pk, message: blockSigningMessage(p.signed.block), signature: p.signed.signature }
}

/** Checks one block's signature inline; throws InvalidSignatureError. */
export function verifyBlock (p: ParsedBlock, committee: CommitteeInfo): VerifiedBlock {
  const c = blockSignatureCheck(p, committee)
  if (!verify(c.publicKey, c.message, c.signature)) throw new InvalidSignatureError(`block ${refString(p.ref)}: bad signature`)
  return p as VerifiedBlock
}

export function refString (r: BlockRef): string {
  return `${r.round}/${r.author}/${toHex(r.digest.subarray(0, 4))}`
}

export function refsEqual (a: BlockRef, b: BlockRef): boolean {
  return a.round === b.round && a.author === b.author && bytesEqual(a.digest, b.digest)
}

export function compareRefs (a: BlockRef, b: BlockRef): number {
  return a.round - b.round || a.author - b.author || Buffer.compare(a.digest, b.digest)
}
