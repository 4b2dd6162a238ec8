/**
 * The snapshot part of the LevelDB key layout (prefixes 0x11–0x1f; 0x10, the state change log the
 * executor writes, is in src/store/keys.ts). Integers are big-endian u64 so keys sort numerically.
 *
 * | prefix | bucket                 | key after the prefix | value                                                  |
 * |--------|------------------------|----------------------|--------------------------------------------------------|
 * | 0x11   | (schema 1: chunks)     | chunk hash 32        | chunk bytes; since schema 2 chunks are in pack files   |
 * |        |                        |                      | (src/store/packs.ts, index 0x0c/0x0d in keys.ts) and   |
 * |        |                        |                      | these rows are moved there when a store is opened      |
 * | 0x12   | snapshot attestations  | commit index u64     | SnapshotAttestation bytes (manifest + signatures); one |
 * |        |                        |                      | row per stored snapshot: this bucket is the index      |
 * | 0x13   | snapshot listings      | commit index u64     | SnapshotListing bytes (ChunkInfo rows, canonical order)|
 * | 0x14   | snapshot filters       | commit index u64     | Cuckoo filter bytes (format SCF1)                      |
 * | 0x15   | snapshot multiset      | commit index u64     | the 2048 LtHash lane bytes over the chunk hashes (the  |
 * |        |                        |                      | manifest has only their sha256): build state for the   |
 * |        |                        |                      | next incremental update                                |
 *
 * Chunks (encode(StateChunk)) are content-addressed blobs in the store's pack files, shared by every
 * snapshot that lists them (src/store/packs.ts). A snapshot's rows (0x12–0x15) are written together,
 * with its last chunks' index rows, in one atomic batch (the chunk bytes are appended to a pack before
 * it), and are deleted together when it is pruned; the index rows of chunks no kept snapshot lists are
 * then deleted in the same batch, and pack files left without any indexed chunk are deleted after it.
 *
 * ## Snapshot sync in progress (0x16–0x1a; src/snapshot/sync/sync-state.ts)
 *
 * A node syncing a snapshot keeps everything it has verified so far here, so that a restart (even after
 * SIGKILL) resumes without fetching it again. At most one sync is in progress; its rows are cleared in
 * the same atomic batch that registers the snapshot (0x12–0x15) and anchors the chain at its commit.
 *
 * | prefix | bucket                 | key after the prefix | value                                                  |
 * |--------|------------------------|----------------------|--------------------------------------------------------|
 * | 0x16   | sync meta              | utf8 name            | phase, attestation, filter, listing and load progress  |
 * |        |                        |                      | (names in sync-state.ts)                               |
 * | 0x17   | sync listing rows      | row index u64        | encode(ChunkInfo), canonical order; authenticated once |
 * |        |                        |                      | the meta row `listing-verified` is set                 |
 * | 0x18   | sync listed hashes     | chunk hash 32        | row index u64: sorted by hash, so iterating it gives   |
 * |        |                        |                      | the final checksum's order in O(1) memory              |
 * | 0x19   | sync have              | chunk hash 32        | size u32 ‖ the serving peer's id bytes (empty: reused   |
 * |        |                        |                      | from a chunk already stored): the chunk is in a pack,  |
 * |        |                        |                      | indexed and verified; written in the batch of its      |
 * |        |                        |                      | index rows                                             |
 * | 0x1a   | sync chunk partial     | chunk hash 32        | the chunk's partial state hash: 2048 LtHash lane bytes,|
 * |        |                        |                      | the lane-wise sum of the state elements of its entries |
 * |        |                        |                      | (as src/store/state-hash.ts makes them). Written    |
 * |        |                        |                      | with the chunk's HAVE row, in the same batch; a HAVE   |
 * |        |                        |                      | row without one (a chunk already stored, a chunk that  |
 * |        |                        |                      | does not decode, an older store) is computed by the    |
 * |        |                        |                      | load. A function of the chunk bytes, hence of the key: |
 * |        |                        |                      | never from a peer, and checked by the state root       |
 *
 * A HAVE row and its partial are deleted together (a chunk found missing or unlisted); the load adds up
 * the partials instead of hashing every entry, and recomputes them from the chunk bytes if the sum is
 * not the manifest's state root (a damaged partial is replaced, no peer blamed).
 */
import { indexed, hashed, named } from '../store/keys.ts'

export const SnapshotBucket = {
  CHUNK: 0x11,
  ATTESTATION: 0x12,
  LISTING: 0x13,
  FILTER: 0x14,
  MULTISET: 0x15,
  SYNC_META: 0x16,
  SYNC_ROW: 0x17,
  SYNC_LISTED: 0x18,
  SYNC_HAVE: 0x19,
  SYNC_PARTIAL: 0x1a
} as const

export const SnapshotKeys = {
  /** schema 1's chunk rows (moved into packs at open); the snapshot-sync bench's raw-into-LevelDB floor writes here */
  chunk: (hash: Uint8Array) => hashed(SnapshotBucket.CHUNK, hash),
  attestation: (commit: number) => indexed(SnapshotBucket.ATTESTATION, commit),
  listing: (commit: number) => indexed(SnapshotBucket.LISTING, commit),
  filter: (commit: number) => indexed(SnapshotBucket.FILTER, commit),
  multiset: (commit: number) => indexed(SnapshotBucket.MULTISET, commit),
  syncMeta: (name: string) => named(SnapshotBucket.SYNC_META, name),
  syncRow: (index: number) => indexed(SnapshotBucket.SYNC_ROW, index),
  syncListed: (hash: Uint8Array) => hashed(SnapshotBucket.SYNC_LISTED, hash),
  syncHave: (hash: Uint8Array) => hashed(SnapshotBucket.SYNC_HAVE, hash),
  syncPartial: (hash: Uint8Array) => hashed(SnapshotBucket.SYNC_PARTIAL, hash),
  /** [gte, lt) over a whole bucket */
  range: (bucket: number): [Uint8Array, Uint8Array] => [Uint8Array.of(bucket), Uint8Array.of(bucket + 1)]
}
