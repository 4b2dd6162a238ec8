/**
 * ArchiveWriter: writes the closed epochs of a ChainStore as archive segments into a directory (format:
 * ./format.ts). Every file is written to a temporary name and renamed, segments and epoch indexes first,
 * the manifest last, so a crash leaves the previous manifest valid (a segment written but not yet listed
 * is rewritten byte for byte on the next run). Segments and epoch indexes are never rewritten once listed.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs'
import path from 'node:path'
import type { ChainStore } from '../store/chain-store.ts'
import { sha256, toHex } from '../crypto/hash.ts'
import { InvalidArchiveError, StoreError } from '../errors.ts'
import {
  ARCHIVE_FORMAT_VERSION, MANIFEST_NAME, encodeSegment, epochIndexName, jsonBytes, parseManifest, segmentName, segmentRanges,
  type ArchiveManifest, type Compression, type EpochIndex, type SegmentEntry
} from './format.ts'

export interface ArchiveWriterOptions {
  /** @default 1000 */
  segmentCommits?: number
  /** @default 'none' */
  compression?: Compression
}

export interface WriteResult {
  epochs: number
  segments: SegmentEntry[]
  highestCommit: number
}

/** Writes `bytes` to `file` atomically (temp file, fsync, rename). */
export function writeFileAtomic (file: string, bytes: Uint8Array): void {
  mkdirSync(path.dirname(file), { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, bytes)
  const fd = openSync(tmp, 'r')
  try { fsyncSync(fd) } finally { closeSync(fd) }
  renameSync(tmp, file)
}

/**
 * The certifier blocks of commit `index` (digest `digest`) the format prescribes: among the stored blocks
 * voting for it, in key order (round, author, digest), the first of each author until 2f+1 stake.
 */
export async function canonicalCertifiers (store: ChainStore, index: number, digest: Uint8Array, epoch: number): Promise<Uint8Array[]> {
  const committee = await store.getCommittee(epoch)
  if (committee === undefined) throw new StoreError(`no committee stored for epoch ${epoch}`)
  const q = await store.quorumVotes(index, digest, committee)
  if ('short' in q) throw new StoreError(`commit ${index}: the store holds votes of ${q.short} stake, 2f+1 needs ${committee.quorumThreshold}`)
  const blocks = await store.getBlocks(q.votes.map(v => v.ref))
  if (blocks.some(b => b === undefined)) throw new StoreError(`commit ${index}: a certifier block is indexed but not stored`)
  return blocks as Uint8Array[]
}

/** The bytes of the segment of commits first..last (all of one epoch) from the store. */
export async function buildSegment (store: ChainStore, first: number, last: number, compression: Compression): Promise<{ bytes: Uint8Array, entry: SegmentEntry }> {
  const commits = await store.getCommitRange(first, last)
  if (commits.length !== last - first + 1) throw new StoreError(`commit ${first + commits.length} is not stored: cannot archive ${first}..${last}`)
  const blocks: Uint8Array[] = []
  for (const c of commits) {
    const raw = await store.getBlocks(c.commit.blocks)
    const missing = raw.findIndex(b => b === undefined)
    if (missing >= 0) throw new StoreError(`commit ${c.index}: block ${missing} is not stored`)
    blocks.push(...raw as Uint8Array[])
  }
  const lastCommit = commits[commits.length - 1]
  const epoch = lastCommit.epoch
  if (commits[0].epoch !== epoch) throw new StoreError(`commits ${first}..${last} span epochs ${commits[0].epoch}..${epoch}`)
  const certifierBlocks = await canonicalCertifiers(store, last, lastCommit.digest, epoch)
  const bytes = encodeSegment({ chainId: store.chainId, compression, epoch, firstCommit: first, lastCommit: last, endsEpoch: lastCommit.isEndOfEpoch }, {
    commits: commits.map(c => c.bytes),
    blocks,
    certifierBlocks
  })
  const hash = toHex(sha256(bytes))
  return { bytes, entry: { name: segmentName(first, last, hash), epoch, firstCommit: first, lastCommit: last, endsEpoch: lastCommit.isEndOfEpoch, sha256: hash, size: bytes.byteLength } }
}

export class ArchiveWriter {
  readonly dir: string
  readonly store: ChainStore
  readonly segmentCommits: number
  readonly compression: Compression

  constructor (store: ChainStore, dir: string, opts: ArchiveWriterOptions = {}) {
    this.store = store
    this.dir = dir
    this.segmentCommits = opts.segmentCommits ?? 1000
    this.compression = opts.compression ?? 'none'
  }

  /** The manifest in the directory, or a fresh empty one; refuses one of another chain or settings. */
  readManifest (): ArchiveManifest {
    const file = path.join(this.dir, MANIFEST_NAME)
    const fresh: ArchiveManifest = { format: 'soma-archive', version: ARCHIVE_FORMAT_VERSION, chainId: toHex(this.store.chainId), segmentCommits: this.segmentCommits, compression: this.compression, highestCommit: 0, epochs: [], segments: [] }
    if (!existsSync(file)) return fresh
    const m = parseManifest(readFileSync(file), file, this.store.chainId)
    if (m.segmentCommits !== this.segmentCommits || m.compression !== this.compression) {
      throw new InvalidArchiveError(`${file} was written with ${m.segmentCommits} commits per segment and ${m.compression} compression, not ${this.segmentCommits} and ${this.compression}: use another directory or the same settings`)
    }
    return m
  }

  /**
   * Writes every epoch that closed in the store (its end-of-epoch commit synced) and is not archived
   * yet, up to `maxEpochs`; returns what it added.
   */
  async writeClosedEpochs (opts: { maxEpochs?: number, signal?: AbortSignal } = {}): Promise<WriteResult> {
    const manifest = this.readManifest()
    const added: SegmentEntry[] = []
    let epochs = 0
    let epoch = manifest.epochs.length === 0 ? 0 : manifest.epochs[manifest.epochs.length - 1].epoch + 1
    while (epochs < (opts.maxEpochs ?? Infinity)) {
      opts.signal?.throwIfAborted()
      const last = await this.store.getLastCommitIndexOfEpoch(epoch)
      if (last === undefined || last > this.store.highestSynced) break
      const first = manifest.highestCommit + 1
      if (first < this.store.lowestAvailable) {
        throw new StoreError(`an archive needs every commit from ${first}, this store holds commits from ${this.store.lowestAvailable} (it synced a snapshot): archive from an archival store`)
      }
      const segs: SegmentEntry[] = []
      for (const [a, b] of segmentRanges(first, last, this.segmentCommits)) {
        const { bytes, entry } = await buildSegment(this.store, a, b, this.compression)
        const file = path.join(this.dir, entry.name)
        if (!existsSync(file)) writeFileAtomic(file, bytes)
        segs.push(entry)
      }
      const index: EpochIndex = { format: 'soma-archive-epoch', version: ARCHIVE_FORMAT_VERSION, chainId: manifest.chainId, epoch, firstCommit: first, lastCommit: last, segments: segs }
      const ib = jsonBytes(index)
      writeFileAtomic(path.join(this.dir, epochIndexName(epoch)), ib)
      manifest.epochs.push({ epoch, firstCommit: first, lastCommit: last, name: epochIndexName(epoch), sha256: toHex(sha256(ib)), size: ib.byteLength })
      manifest.segments.push(...segs)
      manifest.highestCommit = last
      writeFileAtomic(path.join(this.dir, MANIFEST_NAME), jsonBytes(manifest))
      added.push(...segs)
      epochs++
      epoch++
    }
    return { epochs, segments: added, highestCommit: manifest.highestCommit }
  }
}
