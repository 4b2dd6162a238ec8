/**
 * SignedBlockVerifier: decodes blocks, checks their structure and their authors' signatures against
 * the committee of their epoch, batched over the VerifyPool.
 */
import { parseBlock, blockSignatureCheck, refString, type ParsedBlock, type VerifiedBlock } from '../chain/block.ts'
import type { CommitteeInfo } from '../chain/committee.ts'
import type { VerifyPool } from '../crypto/verify-pool.ts'
import { InvalidSignatureError } from '../errors.ts'

export class SignedBlockVerifier {
  private readonly pool: VerifyPool
  private readonly chainId: Uint8Array

  constructor (pool: VerifyPool, chainId: Uint8Array) {
    this.pool = pool
    this.chainId = chainId
  }

  parse (bytes: Uint8Array): ParsedBlock {
    return parseBlock(bytes, this.chainId)
  }

  /** Verifies the signatures of blocks all of `committee`'s epoch; throws InvalidSignatureError. */
  async verify (blocks: readonly ParsedBlock[], committee: CommitteeInfo): Promise<VerifiedBlock[]> {
    const checks = blocks.map(b => blockSignatureCheck(b, committee))
    const bad = await this.pool.firstInvalid(checks)
    if (bad >= 0) throw new InvalidSignatureError(`block ${refString(blocks[bad].ref)}: bad signature`)
    return blocks as VerifiedBlock[]
  }
}
