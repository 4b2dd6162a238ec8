/**
 * Snapshot verification, in the order a syncing node meets the pieces (seed 002, "Syncing Using
 * Snapshots"): the attestation (./attestation.ts), then the filter against the manifest's filter hash,
 * each chunk against the filter as it arrives, the listing against the manifest's counts and
 * checksums and the filter against the listing (it must be the canonical filter of the listed hashes,
 * {@link canonicalFilterCheck}), and finally the state rebuilt from the chunks against the manifest's state root
 * (./rebuild.ts). `verifyStoredSnapshot` runs all of it over a snapshot in the local store.
 *
 * Every failure is an InvalidSnapshotError (or InvalidChunkError for one chunk) whose message names the
 * snapshot and what does not match.
 */
import type { ChainStore } from '../store/chain-store.ts'
import type { CommitteeInfo } from '../chain/committee.ts'
import { sha256, bytesEqual, compareBytes, toHex } from '../crypto/hash.ts'
import { InvalidChunkError, InvalidSnapshotError } from '../errors.ts'
import { CuckooFilter } from './cuckoo-filter.ts'
import { ChunkKind, compareChunkInfo, type ChunkInfo } from './chunk-format.ts'
import { decodeListing, encodeListing, finalChecksum, multisetOf, type SnapshotManifest } from './manifest.ts'
import { verifyAttestation, type AttestationCheck } from './attestation.ts'
import { SnapshotStore } from './snapshot-store.ts'
import { rebuildState, checkChunkContent } from './rebuild.ts'

export { checkChunkContent }

function what (m: SnapshotManifest): string { return `snapshot of commit ${m.commitIndex}` }

/**
 * Checks filter bytes against the manifest (hash, then parameters, count and stash) and that the table
 * has the size the count gives (the canonical sizing); returns the filter. Whether the placement is
 * the canonical one needs the listing: {@link canonicalFilterCheck}.
 */
export function verifyFilter (manifest: SnapshotManifest, filterBytes: Uint8Array): CuckooFilter {
  const h = sha256(filterBytes)
  if (!bytesEqual(h, manifest.filterHash)) {
    throw new InvalidSnapshotError(`${what(manifest)}: wrong filter hash: the filter bytes hash to ${toHex(h)}, the manifest says ${toHex(manifest.filterHash)}`)
  }
  let f: CuckooFilter
  try {
    f = CuckooFilter.fromBytes(filterBytes)
  } catch (err: any) {
    throw new InvalidSnapshotError(`${what(manifest)}: the filter does not load: ${err.message}`)
  }
  const p = manifest.filter
  if (f.log2Buckets !== p.log2Buckets || f.fingerprintBits !== p.fingerprintBits || f.bucketSize !== p.bucketSize || f.count !== p.count) {
    throw new InvalidSnapshotError(`${what(manifest)}: the filter's parameters (2^${f.log2Buckets} buckets, ${f.fingerprintBits}-bit fingerprints, ${f.count} items) differ from the manifest's (2^${p.log2Buckets}, ${p.fingerprintBits}-bit, ${p.count})`)
  }
  if (f.count !== manifest.chunkCount) throw new InvalidSnapshotError(`${what(manifest)}: the filter holds ${f.count} items for ${manifest.chunkCount} chunks`)
  if (f.stashed !== (p.stash ?? 0)) throw new InvalidSnapshotError(`${what(manifest)}: the filter stashes ${f.stashed} hashes, the manifest says ${p.stash ?? 0}`)
  const canonical = CuckooFilter.forCapacity(f.count, { fingerprintBits: f.fingerprintBits }).log2Buckets
  if (f.log2Buckets !== canonical) throw new InvalidSnapshotError(`${what(manifest)}: the filter is not in canonical form: ${f.count} items take 2^${canonical} buckets, it has 2^${f.log2Buckets}`)
  return f
}

/**
 * The check that the attested filter is the canonical filter of the listing's chunk hashes
 * (`CuckooFilter.build`: the table sized by the count, the hashes inserted in ascending order, failed
 * kick chains stashed): `push` every listed hash in strictly ascending bytewise order (the order the
 * final checksum reads them in), then `finish`, which throws InvalidSnapshotError unless the filter so
 * built hashes to the manifest's `filterHash`. One pass, no sort, the memory of one filter. A filter
 * that is not canonical was attested by signers who did not build it from this set: an honest
 * committee never signs one, so the snapshot is refused.
 */
export function canonicalFilterCheck (manifest: SnapshotManifest): { push: (hash: Uint8Array) => void, finish: () => void } {
  const w = what(manifest)
  let b: ReturnType<typeof CuckooFilter.canonicalBuilder>
  try {
    b = CuckooFilter.canonicalBuilder(manifest.chunkCount, { fingerprintBits: manifest.filter.fingerprintBits })
  } catch (err: any) {
    throw new InvalidSnapshotError(`${w}: no canonical filter for ${manifest.chunkCount} chunks with ${manifest.filter.fingerprintBits}-bit fingerprints: ${err.message}`)
  }
  return {
    push (hash: Uint8Array): void {
      try {
        b.push(hash)
      } catch (err: any) {
        throw new InvalidSnapshotError(`${w}: listed hashes for the canonical filter check: ${err.message}`)
      }
    },
    finish (): void {
      let h: Uint8Array
      try {
        h = b.finish().hash()
      } catch (err: any) {
        throw new InvalidSnapshotError(`${w}: listed hashes for the canonical filter check: ${err.message}`)
      }
      if (!bytesEqual(h, manifest.filterHash)) {
        throw new InvalidSnapshotError(`${w}: the attested filter (hash ${toHex(manifest.filterHash)}) is not the canonical filter of the listed chunk hashes (hash ${toHex(h)})`)
      }
    }
  }
}

/** Throws InvalidChunkError unless the filter may hold the chunk hash. */
export function checkChunk (hash: Uint8Array, filter: CuckooFilter): void {
  if (!filter.contains(hash)) throw new InvalidChunkError(`chunk ${toHex(hash)} is not in the snapshot's filter`)
}

/** Hashes chunk bytes, checks the hash against the filter (and the expected hash if given); returns it. */
export function verifyChunkBytes (bytes: Uint8Array, filter: CuckooFilter, expected?: Uint8Array): Uint8Array {
  const h = sha256(bytes)
  if (expected !== undefined && !bytesEqual(h, expected)) throw new InvalidChunkError(`chunk ${toHex(expected)} is corrupt: its bytes hash to ${toHex(h)}`)
  checkChunk(h, filter)
  return h
}

/**
 * Checks a listing (its exact bytes, or rows) against the manifest: listing hash, chunk count, total
 * bytes, row shapes, canonical order, distinct hashes, final checksum, multiset hash, and that the
 * manifest's filter hash is that of the canonical filter of the listed hashes. Returns rows.
 */
export function verifyListing (manifest: SnapshotManifest, listing: Uint8Array | readonly ChunkInfo[]): ChunkInfo[] {
  const w = what(manifest)
  const bytes = listing instanceof Uint8Array ? listing : encodeListing(listing)
  const rows = listing instanceof Uint8Array ? decodeListing(listing) : [...listing]
  if (rows.length !== manifest.chunkCount) throw new InvalidSnapshotError(`${w}: the listing has ${rows.length} chunks, the manifest says ${manifest.chunkCount}`)
  let total = 0
  const seen = new Set<string>()
  rows.forEach((r, i) => {
    if (r.hash.byteLength !== 32) throw new InvalidSnapshotError(`${w}: listing row ${i} has a ${r.hash.byteLength}-byte hash`)
    if (r.kind !== ChunkKind.ACCOUNTS && r.kind !== ChunkKind.EMBEDDINGS) throw new InvalidSnapshotError(`${w}: listing row ${i} has unknown kind ${r.kind}`)
    const keyLength = r.kind === ChunkKind.ACCOUNTS ? 32 : 40
    if (r.firstKey.byteLength !== keyLength) throw new InvalidSnapshotError(`${w}: listing row ${i} has a ${r.firstKey.byteLength}-byte first key, expected ${keyLength}`)
    if (r.size < 1 || r.entries < 1) throw new InvalidSnapshotError(`${w}: listing row ${i} is empty`)
    if (i > 0 && compareChunkInfo(rows[i - 1], r) >= 0) throw new InvalidSnapshotError(`${w}: listing rows ${i - 1} and ${i} are not in canonical order (kind, group, first key)`)
    const h = toHex(r.hash)
    if (seen.has(h)) throw new InvalidSnapshotError(`${w}: chunk ${h} is listed twice`)
    seen.add(h)
    total += r.size
  })
  if (total !== manifest.totalBytes) throw new InvalidSnapshotError(`${w}: the listed chunks total ${total} bytes, the manifest says ${manifest.totalBytes}`)
  const hashes = rows.map(r => r.hash)
  const fc = finalChecksum(hashes)
  if (!bytesEqual(fc, manifest.finalChecksum)) {
    throw new InvalidSnapshotError(`${w}: wrong final checksum: the sorted chunk hashes give ${toHex(fc)}, the manifest says ${toHex(manifest.finalChecksum)}`)
  }
  const canonical = canonicalFilterCheck(manifest)
  for (const h of [...hashes].sort(compareBytes)) canonical.push(h)
  canonical.finish()
  const ms = multisetOf(hashes).checksum()
  if (!bytesEqual(ms, manifest.multisetHash)) {
    throw new InvalidSnapshotError(`${w}: wrong multiset hash: the chunk hashes give ${toHex(ms)}, the manifest says ${toHex(manifest.multisetHash)}`)
  }
  const lh = sha256(bytes)
  if (!bytesEqual(lh, manifest.listingHash)) {
    throw new InvalidSnapshotError(`${w}: wrong listing hash: the listing hashes to ${toHex(lh)}, the manifest says ${toHex(manifest.listingHash)}`)
  }
  if (listing instanceof Uint8Array && !bytesEqual(encodeListing(rows), bytes)) throw new InvalidSnapshotError(`${w}: the listing is not canonically encoded`)
  return rows
}

export interface SnapshotReport {
  manifest: SnapshotManifest
  /** null: the snapshot carries no signatures */
  attestation: AttestationCheck | null
  chunks: number
  bytes: number
  accounts: number
  embeddings: number
  /** whether the manifest's state root equals the store's state root of that commit (undefined: not stored) */
  matchesStoreRoot?: boolean
}

export interface VerifyStoredOptions {
  /** @default the store's committee of the manifest's epoch */
  committee?: CommitteeInfo
  /** an unsigned snapshot is an error. @default false */
  requireAttestation?: boolean
  /** progress callback, per chunk verified */
  onChunk?: (done: number, total: number) => void
}

/**
 * Verifies a stored snapshot end to end: attestation (when signed, or required), the manifest's chain
 * and state root against the store, filter, listing and stored multiset accumulator, every chunk (present,
 * hash, filter, strict decoding, grouping) and the state root rebuilt from the chunks.
 */
export async function verifyStoredSnapshot (store: ChainStore, commit: number, opts: VerifyStoredOptions = {}): Promise<SnapshotReport> {
  const snaps = new SnapshotStore(store)
  const s = await snaps.get(commit)
  if (s === undefined) throw new InvalidSnapshotError(`no snapshot of commit ${commit} is stored`)
  const m = s.manifest
  const w = what(m)
  if (!bytesEqual(m.chainId, store.chainId)) throw new InvalidSnapshotError(`${w} is for chain ${toHex(m.chainId)}, the store holds ${toHex(store.chainId)}`)
  if (m.commitIndex !== commit) throw new InvalidSnapshotError(`the snapshot stored under commit ${commit} is of commit ${m.commitIndex}`)
  let attestation: AttestationCheck | null = null
  if (s.attestation.signatures.length > 0 || opts.requireAttestation === true) {
    const committee = opts.committee ?? await store.getCommittee(m.epoch)
    if (committee === undefined) throw new InvalidSnapshotError(`${w}: the committee of epoch ${m.epoch} is not in the store`)
    attestation = verifyAttestation(s.attestation, committee, { chainId: store.chainId })
  }
  const storeRoot = await store.getStateRoot(commit)
  if (storeRoot !== undefined && !bytesEqual(storeRoot, m.stateRoot)) {
    throw new InvalidSnapshotError(`${w}: state root ${toHex(m.stateRoot)} differs from the store's state root of commit ${commit} (${toHex(storeRoot)})`)
  }
  const filter = verifyFilter(m, await snaps.getFilterBytes(commit))
  const listing = verifyListing(m, await snaps.getListingBytes(commit))
  const acc = await snaps.getMultiset(commit)
  if (!bytesEqual(acc.checksum(), m.multisetHash)) throw new InvalidSnapshotError(`${w}: the stored multiset accumulator does not match the manifest's multiset hash`)

  let done = 0
  async function * chunks (): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < listing.length; i += 8) {
      const part = listing.slice(i, i + 8)
      const raw = await snaps.getChunks(part.map(r => r.hash))
      for (let j = 0; j < part.length; j++) {
        const b = raw[j]
        if (b === undefined) throw new InvalidChunkError(`${w}: chunk ${toHex(part[j].hash)} is missing from the store`)
        verifyChunkBytes(b, filter, part[j].hash)
        yield b
        opts.onChunk?.(++done, listing.length)
      }
    }
  }
  const r = await rebuildState(m, chunks(), { listing })
  return { manifest: m, attestation, chunks: listing.length, bytes: m.totalBytes, accounts: r.accounts, embeddings: r.embeddings, matchesStoreRoot: storeRoot === undefined ? undefined : true }
}

/** Sorted copy of chunk hashes (bytewise). */
export function sortedHashes (listing: readonly ChunkInfo[]): Uint8Array[] {
  return listing.map(i => i.hash).sort(compareBytes)
}
