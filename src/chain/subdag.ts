import type { ParsedBlock } from './block.ts'
import type { ParsedCommit } from './commit.ts'
import { Codecs } from './codecs.ts'

/** A commit with its blocks, in commit order: what sync hands to the CommitExecutor. */
export interface CommittedSubDag {
  commit: ParsedCommit
  /** same order as commit.commit.blocks */
  blocks: ParsedBlock[]
}

export function encodeSubDag (s: CommittedSubDag): Uint8Array {
  return Codecs.CommittedSubDag.encode({ commit: s.commit.bytes, blocks: s.blocks.map(b => b.bytes) })
}
