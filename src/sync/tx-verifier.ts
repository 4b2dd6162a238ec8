/**
 * TxVerifier (seed 000): every transaction in fetched blocks is decoded and checked (chain id, kind,
 * sizes) and its signature verified, in batches spread over the VerifyPool's worker threads.
 */
import type { ParsedBlock } from '../chain/block.ts'
import { refString } from '../chain/block.ts'
import { parseTransaction, txSignatureCheck } from '../chain/transaction.ts'
import type { SignatureCheck, VerifyPool } from '../crypto/verify-pool.ts'
import { InvalidTransactionError } from '../errors.ts'

export class TxVerifier {
  private readonly pool: VerifyPool
  private readonly chainId: Uint8Array
  private readonly embeddingDim: number
  verified = 0

  constructor (pool: VerifyPool, chainId: Uint8Array, embeddingDim: number) {
    this.pool = pool
    this.chainId = chainId
    this.embeddingDim = embeddingDim
  }

  /** Throws InvalidTransactionError naming the block and transaction that fail. */
  async verifyBlocks (blocks: readonly ParsedBlock[]): Promise<void> {
    const checks: SignatureCheck[] = []
    // where each check comes from: block index and transaction index (the error names them, if any)
    const where: number[] = []
    for (let bi = 0; bi < blocks.length; bi++) {
      const txs = blocks[bi].block.transactions
      for (let i = 0; i < txs.length; i++) {
        let parsed
        try {
          parsed = parseTransaction(txs[i], this.chainId, this.embeddingDim)
        } catch (err: any) {
          throw new InvalidTransactionError(`block ${refString(blocks[bi].ref)} transaction ${i}: ${err.message}`)
        }
        const c = txSignatureCheck(parsed)
        if (c !== null) { checks.push(c); where.push(bi, i) }
      }
    }
    const bad = await this.pool.firstInvalid(checks)
    if (bad >= 0) throw new InvalidTransactionError(`block ${refString(blocks[where[2 * bad]].ref)} transaction ${where[2 * bad + 1]}: bad signature`)
    this.verified += checks.length
  }
}
