/** Helpers to build chain objects by hand in tests. */
import { createGenesis, validatorKey, accountKey, type GenesisBundle } from '../../src/chain/genesis.ts'
import { signBlock, type ParsedBlock } from '../../src/chain/block.ts'
import { signTransaction } from '../../src/chain/transaction.ts'
import type { Authority, Committee, CommitVote, SignedTransaction, BlockRef, Transaction } from '../../src/chain/types.ts'
import { deriveKeyPair, type KeyPair } from '../../src/crypto/keys.ts'
import { sha256, utf8 } from '../../src/crypto/hash.ts'

export interface TestChain {
  seed: string
  g: GenesisBundle
  chainId: Uint8Array
  validators: KeyPair[]
  accounts: KeyPair[]
}

export function testChain (seed: string, opts: { validators?: number, accounts?: number, initialBalance?: number, embeddingDim?: number } = {}): TestChain {
  const validators = opts.validators ?? 4
  const accounts = opts.accounts ?? 4
  const g = createGenesis({ seed, validators, accounts, initialBalance: opts.initialBalance ?? 1000, embeddingDim: opts.embeddingDim ?? 4 })
  return {
    seed,
    g,
    chainId: g.chainId,
    validators: Array.from({ length: validators }, (_, i) => validatorKey(seed, i)),
    accounts: Array.from({ length: accounts }, (_, i) => accountKey(seed, i))
  }
}

export function fakeDigest (label: string): Uint8Array {
  return sha256(utf8.encode(label))
}

export function transfer (c: TestChain, from: number, to: number, amount: number, nonce: number, chainId = c.chainId): SignedTransaction {
  const k = c.accounts[from]
  return signTransaction({ sender: k.publicKey, nonce, chainId, transfer: { to: c.accounts[to].publicKey, amount } }, k)
}

export function embedding (c: TestChain, from: number, nonce: number, dim: number, fill = 0.5): SignedTransaction {
  const k = c.accounts[from]
  const v = new Float32Array(dim).fill(fill)
  const tx: Transaction = { sender: k.publicKey, nonce, chainId: c.chainId, submitEmbedding: { vector: new Uint8Array(v.buffer), model: 'test' } }
  return signTransaction(tx, k)
}

export function block (c: TestChain, fields: { epoch?: number, round: number, author: number, transactions?: SignedTransaction[], commitVotes?: CommitVote[], ancestors?: BlockRef[], key?: KeyPair, chainId?: Uint8Array }): ParsedBlock {
  return signBlock({
    epoch: fields.epoch ?? 0,
    round: fields.round,
    author: fields.author,
    timestampMs: 1_700_000_000_000 + fields.round,
    ancestors: fields.ancestors ?? [],
    transactions: fields.transactions ?? [],
    commitVotes: fields.commitVotes ?? [],
    chainId: fields.chainId ?? c.chainId
  }, fields.key ?? c.validators[fields.author])
}

/** A committee of `stakes.length` fresh keys with the given stakes. */
export function committeeWithStakes (label: string, epoch: number, stakes: number[]): { committee: Committee, keys: KeyPair[] } {
  const keys = stakes.map((_, i) => deriveKeyPair(label, `member/${i}`))
  const authorities: Authority[] = stakes.map((stake, i) => ({ publicKey: keys[i].publicKey, stake, address: '', name: `m${i}` }))
  return { committee: { epoch, authorities }, keys }
}

/** Flips bit `bit` of byte `i` in a copy of `bytes`. */
export function flipBit (bytes: Uint8Array, i: number, bit: number): Uint8Array {
  const x = new Uint8Array(bytes)
  x[i] ^= 1 << bit
  return x
}

/** Hex of bytes, for comparisons that ignore Buffer vs Uint8Array. */
export function hex (b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
}
