/**
 * The snapshot part of the LevelDB key layout (prefixes 0x11–0x1f; 0x10, the state change log the
 * executor writes, is in src/store/keys.ts). Integers are big-endian u64 so keys sort numerically.
 *
 * | prefix | bucket                 | key after the prefix | value                                                  |
 * |--------|------------------------|----------------------|--------------------------------------------------------|
 * | 0x11   | chunks                 | chunk hash 32        | chunk bytes (encode(StateChunk)); content-addressed,   |
 * |        |                        |                      | shared by every snapshot that lists it                 |
 * | 0x12   | snapshot attestations  | commit index u64     | SnapshotAttestation bytes (manifest + signatures); one |
 * |        |                        |                      | row per stored snapshot: this bucket is the index      |
 * | 0x13   | snapshot listings      | commit index u64     | SnapshotListing bytes (ChunkInfo rows, canonical order)|
 * | 0x14   | snapshot filters       | commit index u64     | Cuckoo filter bytes (format SCF1)                      |
 * | 0x15   | snapshot multiset      | commit index u64     | the 2048 LtHash lane bytes over the chunk hashes (the  |
 * |        |                        |                      | manifest has only their sha256): build state for the   |
 * |        |                        |                      | next incremental update                                |
 *
 * A snapshot's rows (0x12–0x15) are written together, with its new chunks, in one atomic batch, and are
 * deleted together when it is pruned; chunks no kept snapshot lists are then deleted in the same batch.
 */
import { writeU64 } from '../store/keys.ts'

export const SnapshotBucket = {
  CHUNK: 0x11,
  ATTESTATION: 0x12,
  LISTING: 0x13,
  FILTER: 0x14,
  MULTISET: 0x15
} as const

function indexed (bucket: number, n: number): Uint8Array {
  const k = new Uint8Array(9)
  k[0] = bucket; writeU64(k, 1, n)
  return k
}

export const SnapshotKeys = {
  chunk: (hash: Uint8Array) => {
    const k = new Uint8Array(33)
    k[0] = SnapshotBucket.CHUNK; k.set(hash, 1)
    return k
  },
  attestation: (commit: number) => indexed(SnapshotBucket.ATTESTATION, commit),
  listing: (commit: number) => indexed(SnapshotBucket.LISTING, commit),
  filter: (commit: number) => indexed(SnapshotBucket.FILTER, commit),
  multiset: (commit: number) => indexed(SnapshotBucket.MULTISET, commit)
}
