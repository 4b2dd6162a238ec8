/**
 * Rebuilding state from a snapshot's chunks: the last step of verification (seed 002: the state the
 * chunks hold must have the attested state root), and how a syncing node loads a snapshot.
 *
 * Each chunk is decoded strictly and checked against its listing row and the manifest's grouping; its
 * entries are added to an LtHash exactly as the executor does (shake256(bucket byte ‖ key ‖ value),
 * src/store/state-hash.ts), so the checksum equals the executed state root iff the chunks hold the
 * same state. Optionally the entries are written into a store's account and embedding buckets.
 */
import type { ChainStore } from '../store/chain-store.ts'
import { Keys, Bucket } from '../store/keys.ts'
import { LtHash } from '../crypto/lthash.ts'
import { sha256, bytesEqual, toHex } from '../crypto/hash.ts'
import { elementSum } from '../store/state-hash.ts'
import { InvalidChunkError, InvalidSnapshotError } from '../errors.ts'
import { AccountGroup, ChunkKind, accountLastModifiedEpoch, decodeChunk, sortKeyCommit, type ChunkInfo, type DecodedChunk } from './chunk-format.ts'
import { embeddingGroup, isHot, type SnapshotManifest } from './manifest.ts'

export interface RebuildOptions {
  /** the snapshot's (verified) listing: every chunk must be listed, once, and all must come */
  listing?: readonly ChunkInfo[]
  /**
   * A store to load the state into: its account and embedding buckets are cleared first, then filled
   * from the chunks; when the root matches, the state root of the manifest's commit and the LtHash are
   * written too. Progress markers (highest executed, ...) are left to the caller.
   */
  into?: ChainStore
}

export interface RebuildResult {
  stateRoot: Uint8Array
  lthash: LtHash
  chunks: number
  accounts: number
  embeddings: number
}

/**
 * Rebuilds the state of `chunks` (bytes, any order) and checks its root against the manifest's;
 * InvalidSnapshotError on a mismatch, InvalidChunkError for a bad or unlisted chunk.
 */
/**
 * A chunk's partial state hash: the sum of its entries' state elements (a fresh LtHash). The state root
 * of a snapshot is the checksum of the sum over its chunks.
 */
export function entriesPartial (chunk: DecodedChunk): LtHash {
  return elementSum(chunk.kind === ChunkKind.ACCOUNTS ? Bucket.ACCOUNT : Bucket.EMBEDDING, chunk.entries)
}

export async function rebuildState (manifest: SnapshotManifest, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, opts: RebuildOptions = {}): Promise<RebuildResult> {
  const rows = opts.listing === undefined ? undefined : new Map(opts.listing.map(r => [toHex(r.hash), r]))
  const seen = new Set<string>()
  const lthash = new LtHash()
  let accounts = 0
  let embeddings = 0
  let n = 0
  const target = opts.into
  if (target !== undefined) {
    for (const b of [Bucket.ACCOUNT, Bucket.EMBEDDING]) {
      const [gte, lt] = Keys.bucketRange(b)
      await target.db.clear({ gte, lt })
    }
  }
  let batch = target?.batch()
  for await (const bytes of chunks) {
    const h = toHex(sha256(bytes))
    const what = `chunk ${h}`
    if (seen.has(h)) throw new InvalidChunkError(`${what} comes twice`)
    seen.add(h)
    const chunk = decodeChunk(bytes, what)
    if (rows !== undefined) {
      const row = rows.get(h)
      if (row === undefined) throw new InvalidChunkError(`${what} is not in the snapshot's listing`)
      checkChunkContent(manifest, row, chunk)
    }
    lthash.merge(entriesPartial(chunk))
    for (const e of chunk.entries) {
      if (chunk.kind === ChunkKind.ACCOUNTS) {
        batch?.putAccount(e.id, e.value)
        accounts++
      } else {
        batch?.putEmbedding(e.id, e.value)
        embeddings++
      }
    }
    n++
    if (batch !== undefined && batch.byteLength > 64 * 1024 * 1024) { await batch.write(); batch = target!.batch() }
  }
  if (rows !== undefined && seen.size !== rows.size) {
    throw new InvalidSnapshotError(`snapshot of commit ${manifest.commitIndex}: ${rows.size - seen.size} of ${rows.size} listed chunks did not come`)
  }
  const stateRoot = lthash.checksum()
  if (!bytesEqual(stateRoot, manifest.stateRoot)) {
    throw new InvalidSnapshotError(`snapshot of commit ${manifest.commitIndex}: the state rebuilt from ${n} chunks has root ${toHex(stateRoot)}, the manifest says ${toHex(manifest.stateRoot)}`)
  }
  if (batch !== undefined) {
    batch.putStateRoot(manifest.commitIndex, stateRoot, lthash)
    await batch.write()
  }
  return { stateRoot, lthash, chunks: n, accounts, embeddings }
}

/**
 * Checks a decoded chunk against its listing row and the manifest's grouping: kind, group, first key,
 * entry count; accounts in the hot group iff modified in the last `hot_epochs` epochs; embeddings in
 * the window of their creation commit, created at or before the snapshot's commit.
 */
export function checkChunkContent (manifest: SnapshotManifest, info: ChunkInfo, chunk: DecodedChunk): void {
  const c = `chunk ${toHex(info.hash)}`
  if (chunk.kind !== info.kind || chunk.group !== info.group) throw new InvalidChunkError(`${c} is ${chunk.kind}/${chunk.group}, listed as ${info.kind}/${info.group}`)
  if (chunk.entries.length !== info.entries) throw new InvalidChunkError(`${c} has ${chunk.entries.length} entries, listed with ${info.entries}`)
  if (!bytesEqual(chunk.entries[0].key, info.firstKey)) throw new InvalidChunkError(`${c}: its first key differs from its listing row's`)
  const p = manifest.chunking
  for (const e of chunk.entries) {
    if (chunk.kind === ChunkKind.ACCOUNTS) {
      const hot = isHot(accountLastModifiedEpoch(e.value), manifest.epoch, p.hotEpochs)
      if (hot !== (chunk.group === AccountGroup.HOT)) throw new InvalidChunkError(`${c}: account ${toHex(e.id)} belongs to the ${hot ? 'hot' : 'cold'} group`)
    } else {
      const commit = sortKeyCommit(e.key)
      if (commit > manifest.commitIndex) throw new InvalidChunkError(`${c}: embedding ${toHex(e.id)} was created at commit ${commit}, after the snapshot's`)
      if (embeddingGroup(commit, p.embeddingWindowCommits) !== chunk.group) throw new InvalidChunkError(`${c}: embedding ${toHex(e.id)} of commit ${commit} is not in window ${chunk.group}`)
    }
  }
}
