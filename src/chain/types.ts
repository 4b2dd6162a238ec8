/**
 * TypeScript shapes of the messages in protocols/chain.proto (protobufjs camelCases field names).
 * 64-bit fields are numbers (see src/chain/proto.ts). Absent sub-messages decode as null.
 */

export interface Authority {
  publicKey: Uint8Array
  stake: number
  address?: string
  name?: string
}

export interface Committee {
  epoch: number
  authorities: Authority[]
}

export interface Account {
  address: Uint8Array
  balance: number
}

export interface Genesis {
  chainName: string
  timestampMs: number
  committee: Committee
  accounts: Account[]
  embeddingDim: number
  /** absent (null/undefined): no pruning */
  embeddingPruning?: EmbeddingPruning | null
}

export const EmbeddingPruneMode = {
  NONE: 0,
  AGE: 1,
  DISTANCE: 2,
  HYBRID: 3
} as const
export type EmbeddingPruneMode = typeof EmbeddingPruneMode[keyof typeof EmbeddingPruneMode]

/** The chain-wide embedding pruning rule (see EmbeddingPruning in protocols/chain.proto). */
export interface EmbeddingPruning {
  mode: EmbeddingPruneMode
  /** age and hybrid: pruned iff embedding.epoch + maxAgeEpochs < the end-of-epoch commit's epoch */
  maxAgeEpochs: number
  /** distance and hybrid: pruned iff the L2 distance from the live centroid > maxDistance */
  maxDistance: number
}

export interface Transfer { to: Uint8Array, amount: number }
export interface SubmitEmbedding { vector: Uint8Array, model?: string }
export interface ChangeEpoch { nextEpoch: number, nextCommittee: Committee }

export interface Transaction {
  sender: Uint8Array
  nonce: number
  chainId: Uint8Array
  transfer?: Transfer | null
  submitEmbedding?: SubmitEmbedding | null
  changeEpoch?: ChangeEpoch | null
  /** set by protobufjs on decode: which oneof member is present */
  kind?: 'transfer' | 'submitEmbedding' | 'changeEpoch'
}

export interface SignedTransaction {
  tx: Uint8Array
  signature: Uint8Array
}

export interface BlockRef {
  round: number
  author: number
  digest: Uint8Array
}

export interface CommitVote {
  index: number
  digest: Uint8Array
}

export interface Block {
  epoch: number
  round: number
  author: number
  timestampMs: number
  ancestors: BlockRef[]
  transactions: SignedTransaction[]
  commitVotes: CommitVote[]
  chainId: Uint8Array
}

export interface SignedBlock {
  block: Uint8Array
  signature: Uint8Array
}

export interface EndOfEpoch {
  nextCommittee: Committee
}

export interface Commit {
  index: number
  previousDigest: Uint8Array
  leader: BlockRef
  blocks: BlockRef[]
  epoch: number
  timestampMs: number
  endOfEpoch?: EndOfEpoch | null
}

/**
 * The end-of-epoch commit of one epoch and blocks of that epoch voting for it with 2f+1 stake: the proof
 * of the next committee (served on /soma/epoch-proofs/1.0.0, kept by the store).
 */
export interface EpochProof { commit: Uint8Array, certifierBlocks: Uint8Array[] }

export interface CommittedSubDagMessage {
  commit: Uint8Array
  blocks: Uint8Array[]
}

export interface AccountState {
  balance: number
  nonce: number
  lastModifiedEpoch: number
}

export interface Embedding {
  owner: Uint8Array
  commitIndex: number
  vector: Uint8Array
  model?: string
  epoch: number
}

export const ExecutionStatus = {
  SUCCESS: 0,
  INSUFFICIENT_BALANCE: 1,
  BAD_NONCE: 2,
  INVALID_TRANSACTION: 3
} as const
export type ExecutionStatus = typeof ExecutionStatus[keyof typeof ExecutionStatus]

export interface TransactionEffects {
  txDigest: Uint8Array
  commitIndex: number
  status: ExecutionStatus
  error?: string
}
