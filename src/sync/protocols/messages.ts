/** Typed codecs of protocols/sync.proto. */
import { codec } from '../../chain/proto.ts'
import type { BlockRef, EpochProof } from '../../chain/types.ts'

export interface GetCommitAvailabilityRequest { timestampMs: number }
export interface GetCommitAvailabilityResponse { highestSyncedCommit: number, lowestAvailableCommit: number, genesisDigest: Uint8Array, error?: string }
export interface FetchCommitsRequest { start: number, end: number }
export interface FetchCommitsResponse { commits: Uint8Array[], certifierBlocks: Uint8Array[], error?: string }
export interface FetchBlocksRequest { blockRefs: BlockRef[] }
export interface FetchBlocksResponse { blocks: Uint8Array[], error?: string }
export interface PushCommitRequest { highestSyncedCommit: number, lowestAvailableCommit: number, genesisDigest: Uint8Array }
export interface PushCommitResponse { error?: string }

export const SyncCodecs = {
  GetCommitAvailabilityRequest: codec<GetCommitAvailabilityRequest>('soma.GetCommitAvailabilityRequest'),
  GetCommitAvailabilityResponse: codec<GetCommitAvailabilityResponse>('soma.GetCommitAvailabilityResponse'),
  FetchCommitsRequest: codec<FetchCommitsRequest>('soma.FetchCommitsRequest'),
  FetchCommitsResponse: codec<FetchCommitsResponse>('soma.FetchCommitsResponse'),
  FetchBlocksRequest: codec<FetchBlocksRequest>('soma.FetchBlocksRequest'),
  FetchBlocksResponse: codec<FetchBlocksResponse>('soma.FetchBlocksResponse'),
  PushCommitRequest: codec<PushCommitRequest>('soma.PushCommitRequest'),
  PushCommitResponse: codec<PushCommitResponse>('soma.PushCommitResponse'),
  GetEpochProofsRequest: codec<GetEpochProofsRequest>('soma.GetEpochProofsRequest'),
  EpochProof: codec<EpochProof>('soma.EpochProof'),
  GetEpochProofsResponse: codec<GetEpochProofsResponse>('soma.GetEpochProofsResponse')
}

export const PROTOCOL_COMMIT_AVAILABILITY = '/soma/commit-availability/1.0.0'
export const PROTOCOL_FETCH_COMMITS = '/soma/fetch-commits/1.0.0'
export const PROTOCOL_FETCH_BLOCKS = '/soma/fetch-blocks/1.0.0'
export const PROTOCOL_PUSH_COMMIT = '/soma/push-commit/1.0.0'

// /soma/epoch-proofs/1.0.0 (committee sync: the trust chain of committees from genesis)
export interface GetEpochProofsRequest { fromEpoch: number }
/** (defined in src/chain/types.ts: the store keeps them too) */
export type { EpochProof }
export interface GetEpochProofsResponse { proofs: EpochProof[], error?: string }

export const PROTOCOL_EPOCH_PROOFS = '/soma/epoch-proofs/1.0.0'
