/**
 * The LevelDB key layout. Every key starts with a 1-byte bucket prefix; integers are big-endian so
 * keys sort numerically. This module is the only place that knows the layout.
 *
 * | prefix | bucket              | key after the prefix                      | value                         |
 * |--------|---------------------|-------------------------------------------|-------------------------------|
 * | 0x00   | meta                | utf8 name                                 | see META_*                    |
 * | 0x01   | blocks              | round u64, author u32, digest 32          | SignedBlock bytes             |
 * | 0x02   | commits             | index u64                                 | Commit bytes                  |
 * | 0x03   | epoch last commit   | epoch u64                                 | index u64                     |
 * | 0x04   | committees          | epoch u64                                 | Committee bytes               |
 * | 0x05   | progress            | utf8 name (synced, executed, lowest)      | u64                           |
 * | 0x06   | effects             | tx digest 32                              | TransactionEffects bytes      |
 * | 0x07   | accounts            | address 32                                | AccountState bytes            |
 * | 0x08   | embeddings          | id 32 (tx digest)                         | Embedding bytes               |
 * | 0x09   | state roots         | commit index u64                          | root 32                       |
 * | 0x0a   | commit votes        | commit index u64, round u64, author u32, block digest 32 | vote digest 32 |
 * | 0x0b   | epoch proofs        | epoch u64                                 | EpochProof bytes (sync.proto) |
 * | 0x0c   | pack index          | blob hash 32 (sha256 of its bytes)        | pack u32, offset u64, length u32 |
 * | 0x0d   | pack records        | pack u32, offset u64                      | blob hash 32                  |
 * | 0x0f   | pruned embeddings   | id 32 (tx digest)                         | pruned at u64 ‖ Embedding bytes |
 * | 0x10   | state change log    | commit index u64, kind u8 (0x07/0x08), key 32 | prior value summary, see below |
 * | 0x11-0x1f | snapshots        | owned by src/snapshot/store-keys.ts       |                               |
 *
 * 0x0c/0x0d index the immutable blobs (snapshot chunks) kept in append-only pack files beside the
 * database (src/store/packs.ts): 0x0c finds a blob's bytes, 0x0d lists each pack's blobs in file order
 * (its refcount, its tail check at open). Schema 1 kept chunk bytes in LevelDB under 0x11; opening a
 * schema-1 store moves them into a pack (ChainStore.open) and makes it schema 2.
 *
 * The state change log (0x10) is written by the CommitExecutor in each execution batch's atomic write
 * (a batch is one or more consecutive commits): one row per state entry the batch changed, at the index
 * of the batch's first commit that changed it, kind = the entry's bucket byte (0x07 account, 0x08
 * embedding), key = address or embedding id. The value summarizes the entry as it was *before* that
 * commit (= before the batch): `0x00` if it did not exist, else `0x01 ‖ AccountState bytes` for an account and
 * `0x01 ‖ creation commit index u64` for an embedding (embeddings are immutable: added, then maybe
 * pruned). Snapshots read it to update a previous snapshot in O(changes) and trim it below the
 * oldest snapshot they keep (src/snapshot/); a node that never takes a snapshot keeps all of it (about
 * 45 bytes per changed entry per commit).
 *
 * Pruned embeddings (0x0f) are kept by archival nodes only (`META_ARCHIVAL` set, see
 * src/sync/archival.ts): when the genesis' pruning rule deletes an embedding from the state (0x08) at an
 * end-of-epoch commit, the same execution batch writes it here, with the index of that end-of-epoch
 * commit, so that the embedding history stays retrievable (ChainStore.getEmbeddingHistory). It is not
 * part of the state: the state root never covers it.
 *
 * An epoch proof (0x0b) is the end-of-epoch commit of `epoch` with certifier blocks of that epoch voting
 * for it with 2f+1 stake, written by committee sync (src/sync/committee-sync.ts) in one batch with the
 * committee of epoch + 1 it proves, once verified against the committee of `epoch`. It lets a node that
 * learned the committees without the commits serve them on /soma/epoch-proofs/1.0.0.
 */

export const Bucket = {
  META: 0x00,
  BLOCK: 0x01,
  COMMIT: 0x02,
  EPOCH_LAST_COMMIT: 0x03,
  COMMITTEE: 0x04,
  PROGRESS: 0x05,
  EFFECTS: 0x06,
  ACCOUNT: 0x07,
  EMBEDDING: 0x08,
  STATE_ROOT: 0x09,
  VOTE: 0x0a,
  CHANGE_LOG: 0x10,
  EPOCH_PROOF: 0x0b,
  PACK_INDEX: 0x0c,
  PACK_RECORD: 0x0d,
  /** schema 1 only: chunk hash 32 → chunk bytes (moved into packs on open) */
  LEGACY_CHUNK: 0x11,
  PRUNED_EMBEDDING: 0x0f
} as const

export const META_SCHEMA = 'schema'     // u32 schema version
export const META_CHAIN_ID = 'chain-id' // 32 bytes
export const META_GENESIS = 'genesis'   // Genesis bytes
export const META_INIT_PENDING = 'init-pending' // present while a genesis import is under way
export const META_LTHASH = 'lthash'     // 2048-byte LtHash of the executed state
export const META_ARCHIVAL = 'archival' // present (u64 0) on an archival store: full history kept since genesis
export const SCHEMA_VERSION = 2

export const PROGRESS_SYNCED = 'synced'
export const PROGRESS_EXECUTED = 'executed'
export const PROGRESS_LOWEST = 'lowest'

const TWO32 = 2 ** 32

export function writeU64 (buf: Uint8Array, offset: number, n: number): void {
  const hi = Math.floor(n / TWO32)
  const lo = n >>> 0
  buf[offset] = hi >>> 24; buf[offset + 1] = hi >>> 16; buf[offset + 2] = hi >>> 8; buf[offset + 3] = hi
  buf[offset + 4] = lo >>> 24; buf[offset + 5] = lo >>> 16; buf[offset + 6] = lo >>> 8; buf[offset + 7] = lo
}

export function readU64 (buf: Uint8Array, offset: number): number {
  const hi = ((buf[offset] << 24) | (buf[offset + 1] << 16) | (buf[offset + 2] << 8) | buf[offset + 3]) >>> 0
  const lo = ((buf[offset + 4] << 24) | (buf[offset + 5] << 16) | (buf[offset + 6] << 8) | buf[offset + 7]) >>> 0
  return hi * TWO32 + lo
}

export function writeU32 (buf: Uint8Array, offset: number, n: number): void {
  buf[offset] = n >>> 24; buf[offset + 1] = n >>> 16; buf[offset + 2] = n >>> 8; buf[offset + 3] = n
}

export function readU32 (buf: Uint8Array, offset: number): number {
  return ((buf[offset] << 24) | (buf[offset + 1] << 16) | (buf[offset + 2] << 8) | buf[offset + 3]) >>> 0
}

export function u64 (n: number): Uint8Array {
  const b = new Uint8Array(8); writeU64(b, 0, n); return b
}

export function named (bucket: number, name: string): Uint8Array {
  const s = Buffer.from(name, 'utf8')
  const k = new Uint8Array(1 + s.length)
  k[0] = bucket; k.set(s, 1)
  return k
}

/** bucket byte ‖ u64 */
export function indexed (bucket: number, n: number): Uint8Array {
  const k = new Uint8Array(9)
  k[0] = bucket; writeU64(k, 1, n)
  return k
}

/** bucket byte ‖ 32-byte hash (or any bytes) */
export function hashed (bucket: number, h: Uint8Array): Uint8Array {
  const k = new Uint8Array(1 + h.byteLength)
  k[0] = bucket; k.set(h, 1)
  return k
}

export const Keys = {
  meta: (name: string) => named(Bucket.META, name),
  block: (round: number, author: number, digest: Uint8Array) => {
    const k = new Uint8Array(1 + 8 + 4 + 32)
    k[0] = Bucket.BLOCK; writeU64(k, 1, round); writeU32(k, 9, author); k.set(digest, 13)
    return k
  },
  commit: (index: number) => indexed(Bucket.COMMIT, index),
  epochLastCommit: (epoch: number) => indexed(Bucket.EPOCH_LAST_COMMIT, epoch),
  committee: (epoch: number) => indexed(Bucket.COMMITTEE, epoch),
  progress: (name: string) => named(Bucket.PROGRESS, name),
  effects: (txDigest: Uint8Array) => hashed(Bucket.EFFECTS, txDigest),
  account: (address: Uint8Array) => hashed(Bucket.ACCOUNT, address),
  embedding: (id: Uint8Array) => hashed(Bucket.EMBEDDING, id),
  stateRoot: (index: number) => indexed(Bucket.STATE_ROOT, index),
  vote: (commitIndex: number, round: number, author: number, blockDigest: Uint8Array) => {
    const k = new Uint8Array(1 + 8 + 8 + 4 + 32)
    k[0] = Bucket.VOTE; writeU64(k, 1, commitIndex); writeU64(k, 9, round); writeU32(k, 17, author); k.set(blockDigest, 21)
    return k
  },
  /** [gte, lt) range over all vote keys of one commit */
  voteRange: (commitIndex: number): [Uint8Array, Uint8Array] => {
    const lo = new Uint8Array(9); lo[0] = Bucket.VOTE; writeU64(lo, 1, commitIndex)
    const hi = new Uint8Array(9); hi[0] = Bucket.VOTE; writeU64(hi, 1, commitIndex + 1)
    return [lo, hi]
  },
  /** a state change log row (see the table above) */
  change: (commitIndex: number, kind: number, key: Uint8Array) => {
    const k = new Uint8Array(1 + 8 + 1 + key.byteLength)
    k[0] = Bucket.CHANGE_LOG; writeU64(k, 1, commitIndex); k[9] = kind; k.set(key, 10)
    return k
  },
  /** [gte, lt) range over the change log rows of commits from..to inclusive */
  changeRange: (from: number, to: number): [Uint8Array, Uint8Array] => [indexed(Bucket.CHANGE_LOG, from), indexed(Bucket.CHANGE_LOG, to + 1)],
  epochProof: (epoch: number) => indexed(Bucket.EPOCH_PROOF, epoch),
  prunedEmbedding: (id: Uint8Array) => hashed(Bucket.PRUNED_EMBEDDING, id),
  /** [gte, lt) range over a whole bucket */
  bucketRange: (bucket: number): [Uint8Array, Uint8Array] => [Uint8Array.of(bucket), Uint8Array.of(bucket + 1)]
}

/** Decodes a vote key back into its parts. */
export function parseVoteKey (k: Uint8Array): { commitIndex: number, round: number, author: number, digest: Uint8Array } {
  return { commitIndex: readU64(k, 1), round: readU64(k, 9), author: readU32(k, 17), digest: k.subarray(21, 53) }
}

/** The account address of an account key, the id of an embedding key. */
export function keySuffix (k: Uint8Array): Uint8Array {
  return k.subarray(1)
}

/** Decodes a change log key back into its parts. */
export function parseChangeKey (k: Uint8Array): { commitIndex: number, kind: number, key: Uint8Array } {
  return { commitIndex: readU64(k, 1), kind: k[9], key: k.subarray(10) }
}

/** Change log value: 0x00 when the entry did not exist before the commit, else 0x01 ‖ summary. */
export function encodeChangeValue (before: Uint8Array | undefined): Uint8Array {
  if (before === undefined) return Uint8Array.of(0)
  const v = new Uint8Array(1 + before.byteLength)
  v[0] = 1; v.set(before, 1)
  return v
}

/** The summary of a change log value, undefined when the entry did not exist before. */
export function decodeChangeValue (v: Uint8Array): Uint8Array | undefined {
  return v[0] === 1 ? v.subarray(1) : undefined
}
