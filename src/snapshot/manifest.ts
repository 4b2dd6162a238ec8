/**
 * Snapshot manifest, listing and attestation messages (protocols/snapshot.proto): codecs, the chunking
 * parameters, and the checksums over chunk hashes (final checksum, multiset hash, listing hash).
 */
import { codec } from '../chain/proto.ts'
import { sha256, compareBytes, toHex } from '../crypto/hash.ts'
import { LtHash } from '../crypto/lthash.ts'
import { InvalidSnapshotError } from '../errors.ts'
import { ChunkKind, NOMINAL_ACCOUNT_ENTRY_BYTES, nominalEmbeddingEntryBytes, type ChunkInfo } from './chunk-format.ts'

export const SNAPSHOT_FORMAT_VERSION = 1
export const DEFAULT_TARGET_CHUNK_BYTES = 1024 * 1024
export const DEFAULT_HOT_EPOCHS = 2
export const DEFAULT_EMBEDDING_WINDOW_COMMITS = 1000
/** max chunk bytes = this × target, unless given */
export const MAX_CHUNK_FACTOR = 4

export interface FilterParams {
  log2Buckets: number
  fingerprintBits: number
  bucketSize: number
  /** items held: slots used + stashed hashes (= chunk count) */
  count: number
  /** hashes in the filter's stash (cuckoo-filter.ts); 0 (absent on the wire) for nearly every snapshot */
  stash?: number
}

export interface ChunkingParams {
  targetChunkBytes: number
  maxChunkBytes: number
  hotEpochs: number
  embeddingWindowCommits: number
  accountBoundaryModulus: number
  embeddingBoundaryModulus: number
}

export interface SnapshotManifest {
  formatVersion: number
  chainId: Uint8Array
  epoch: number
  commitIndex: number
  stateRoot: Uint8Array
  chunkCount: number
  totalBytes: number
  filter: FilterParams
  filterHash: Uint8Array
  finalChecksum: Uint8Array
  multisetHash: Uint8Array
  listingHash: Uint8Array
  chunking: ChunkingParams
}

export interface AttestationSignature {
  authority: number
  signature: Uint8Array
}

export interface SnapshotAttestation {
  /** encode(SnapshotManifest), as signed */
  manifest: Uint8Array
  signatures: AttestationSignature[]
}

export const SnapshotCodecs = {
  ChunkInfo: codec<ChunkInfo>('soma.ChunkInfo'),
  SnapshotListing: codec<{ chunks: ChunkInfo[] }>('soma.SnapshotListing'),
  SnapshotManifest: codec<SnapshotManifest>('soma.SnapshotManifest'),
  SnapshotAttestation: codec<SnapshotAttestation>('soma.SnapshotAttestation')
}

export interface ChunkingOptions {
  /** @default 1 MiB */
  targetChunkBytes?: number
  /** @default 4 × targetChunkBytes */
  maxChunkBytes?: number
  /** @default 2 */
  hotEpochs?: number
  /** @default 1000 */
  embeddingWindowCommits?: number
}

/** The chunking parameters for these options and the chain's embedding dimension (see snapshot.proto). */
export function chunkingParams (opts: ChunkingOptions, embeddingDim: number): ChunkingParams {
  const target = opts.targetChunkBytes ?? DEFAULT_TARGET_CHUNK_BYTES
  const max = opts.maxChunkBytes ?? MAX_CHUNK_FACTOR * target
  const hot = opts.hotEpochs ?? DEFAULT_HOT_EPOCHS
  const window = opts.embeddingWindowCommits ?? DEFAULT_EMBEDDING_WINDOW_COMMITS
  if (!Number.isSafeInteger(target) || target < 64) throw new RangeError(`target chunk bytes must be an integer >= 64, got ${target}`)
  if (!Number.isSafeInteger(max) || max < target) throw new RangeError(`max chunk bytes must be an integer >= the target (${target}), got ${max}`)
  if (!Number.isInteger(hot) || hot < 1 || hot > 1_000_000) throw new RangeError(`hot epochs must be an integer >= 1, got ${hot}`)
  if (!Number.isSafeInteger(window) || window < 1) throw new RangeError(`embedding window must be an integer >= 1 commits, got ${window}`)
  const modulus = (nominal: number): number => Math.min(2 ** 31, Math.max(1, Math.round(target / nominal)))
  return {
    targetChunkBytes: target,
    maxChunkBytes: max,
    hotEpochs: hot,
    embeddingWindowCommits: window,
    accountBoundaryModulus: modulus(NOMINAL_ACCOUNT_ENTRY_BYTES),
    embeddingBoundaryModulus: modulus(nominalEmbeddingEntryBytes(embeddingDim))
  }
}

export function sameChunking (a: ChunkingParams, b: ChunkingParams): boolean {
  return a.targetChunkBytes === b.targetChunkBytes && a.maxChunkBytes === b.maxChunkBytes && a.hotEpochs === b.hotEpochs &&
    a.embeddingWindowCommits === b.embeddingWindowCommits && a.accountBoundaryModulus === b.accountBoundaryModulus &&
    a.embeddingBoundaryModulus === b.embeddingBoundaryModulus
}

/** An account is hot at a snapshot of `epoch` when last modified in the last `hotEpochs` epochs. */
export function isHot (lastModifiedEpoch: number, epoch: number, hotEpochs: number): boolean {
  return lastModifiedEpoch >= epoch - hotEpochs + 1
}

/** The group of an embedding created at `commitIndex`. */
export function embeddingGroup (commitIndex: number, windowCommits: number): number {
  return Math.floor(commitIndex / windowCommits)
}

// ---------------------------------------------------------------------------------------------------
// checksums over the chunk hashes

/** sha256 of the chunk hashes sorted bytewise and concatenated (seed 002's final checksum). */
export function finalChecksum (hashes: readonly Uint8Array[]): Uint8Array {
  const sorted = [...hashes].sort(compareBytes)
  const all = new Uint8Array(sorted.length * 32)
  sorted.forEach((h, i) => all.set(h, i * 32))
  return sha256(all)
}

/** The multiset hash accumulator (LtHash16) of a set of chunk hashes. */
export function multisetOf (hashes: Iterable<Uint8Array>): LtHash {
  const lt = new LtHash()
  for (const h of hashes) lt.add(h)
  return lt
}

/** The listing's canonical bytes. */
export function encodeListing (chunks: readonly ChunkInfo[]): Uint8Array {
  return SnapshotCodecs.SnapshotListing.encode({ chunks: chunks as ChunkInfo[] })
}

export function decodeListing (bytes: Uint8Array): ChunkInfo[] {
  try {
    return SnapshotCodecs.SnapshotListing.decode(bytes).chunks
  } catch (err: any) {
    throw new InvalidSnapshotError(`snapshot listing does not decode: ${err.message}`)
  }
}

export function encodeManifest (m: SnapshotManifest): Uint8Array {
  return SnapshotCodecs.SnapshotManifest.encode(m)
}

/** Decodes manifest bytes and checks their shape; InvalidSnapshotError naming the problem. */
export function decodeManifest (bytes: Uint8Array): SnapshotManifest {
  let m: SnapshotManifest
  try {
    m = SnapshotCodecs.SnapshotManifest.decode(bytes)
  } catch (err: any) {
    throw new InvalidSnapshotError(`snapshot manifest does not decode: ${err.message}`)
  }
  if (m.formatVersion !== SNAPSHOT_FORMAT_VERSION) throw new InvalidSnapshotError(`snapshot manifest has format version ${m.formatVersion}, expected ${SNAPSHOT_FORMAT_VERSION}`)
  for (const [name, v] of [['chain id', m.chainId], ['state root', m.stateRoot], ['filter hash', m.filterHash], ['final checksum', m.finalChecksum], ['multiset hash', m.multisetHash], ['listing hash', m.listingHash]] as const) {
    if (v.byteLength !== 32) throw new InvalidSnapshotError(`snapshot manifest: ${name} is ${v.byteLength} bytes, not 32`)
  }
  if (m.filter == null) throw new InvalidSnapshotError('snapshot manifest has no filter parameters')
  if (m.chunking == null) throw new InvalidSnapshotError('snapshot manifest has no chunking parameters')
  return m
}

export function decodeAttestation (bytes: Uint8Array): SnapshotAttestation {
  try {
    return SnapshotCodecs.SnapshotAttestation.decode(bytes)
  } catch (err: any) {
    throw new InvalidSnapshotError(`snapshot attestation does not decode: ${err.message}`)
  }
}

export function encodeAttestation (a: SnapshotAttestation): Uint8Array {
  return SnapshotCodecs.SnapshotAttestation.encode(a)
}

export function kindName (kind: number): string {
  return kind === ChunkKind.ACCOUNTS ? 'accounts' : kind === ChunkKind.EMBEDDINGS ? 'embeddings' : `kind ${kind}`
}

/** "accounts/hot", "accounts/cold", "embeddings/12". */
export function groupName (kind: number, group: number): string {
  if (kind === ChunkKind.ACCOUNTS) return `accounts/${group === 1 ? 'hot' : group === 0 ? 'cold' : group}`
  return `${kindName(kind)}/${group}`
}

export function manifestSummary (m: SnapshotManifest): string {
  return `snapshot of commit ${m.commitIndex} (epoch ${m.epoch}, ${m.chunkCount} chunks, state root ${toHex(m.stateRoot).slice(0, 16)}…)`
}
