/**
 * The archive format, version 1 (issue 14; protocols/archive.proto, protocols/README.md "Archive").
 *
 * An archive is a set of objects under one root (a directory, an HTTP prefix, an S3 prefix):
 * - `segments/<first>-<last>-<sha256>.seg`: immutable, content-addressed segment files, each a range of
 *   commits of one epoch with every block they reference and the certifier blocks that vote for the
 *   range's last commit with 2f+1 stake (what commit sync verifies a range with);
 * - `epochs/<epoch>.json`: one immutable index per closed epoch, listing its segments;
 * - `manifest.json`: the one mutable object, listing every segment with its sha256 and byte size.
 *
 * Segment boundaries are a pure function of the chain: an epoch's commits are cut after every commit
 * whose index is a multiple of `segmentCommits`, and at the epoch's end. With the canonical choice of
 * certifier blocks (archive.proto) two archival nodes write byte-identical segments.
 */
import { brotliCompressSync, brotliDecompressSync, gzipSync, gunzipSync, zstdCompressSync, zstdDecompressSync, constants as zlibConstants } from 'node:zlib'
import { codec } from '../chain/proto.ts'
import { toHex, fromHex } from '../crypto/hash.ts'
import { InvalidArchiveError } from '../errors.ts'

export const ARCHIVE_FORMAT_VERSION = 1
export const SEGMENT_MAGIC = new TextEncoder().encode('SOMA-ARC')
export const MANIFEST_NAME = 'manifest.json'
export const COMPRESSIONS = ['none', 'gzip', 'brotli', 'zstd'] as const
export type Compression = typeof COMPRESSIONS[number]
/** Most bytes a segment body may decompress to (a bound against decompression bombs). */
export const MAX_SEGMENT_BODY_BYTES = 1024 * 1024 * 1024

export interface SegmentHeader {
  formatVersion: number
  chainId: Uint8Array
  compression: string
  epoch: number
  firstCommit: number
  lastCommit: number
  endsEpoch: boolean
  bodyBytes: number
}

export interface SegmentBody {
  commits: Uint8Array[]
  blocks: Uint8Array[]
  certifierBlocks: Uint8Array[]
}

const HeaderCodec = codec<SegmentHeader>('soma.archive.SegmentHeader')
const BodyCodec = codec<SegmentBody>('soma.archive.SegmentBody')

/** One segment as the manifest and the epoch indexes list it. */
export interface SegmentEntry {
  name: string
  epoch: number
  firstCommit: number
  lastCommit: number
  endsEpoch: boolean
  /** hex sha256 of the whole file */
  sha256: string
  size: number
}

export interface EpochEntry {
  epoch: number
  firstCommit: number
  lastCommit: number
  /** the epoch index object */
  name: string
  sha256: string
  size: number
}

export interface ArchiveManifest {
  format: 'soma-archive'
  version: number
  /** hex */
  chainId: string
  segmentCommits: number
  compression: Compression
  /** the last commit of the last closed epoch archived */
  highestCommit: number
  epochs: EpochEntry[]
  segments: SegmentEntry[]
}

export interface EpochIndex {
  format: 'soma-archive-epoch'
  version: number
  chainId: string
  epoch: number
  firstCommit: number
  lastCommit: number
  segments: SegmentEntry[]
}

/**
 * The ranges [first, last] an epoch of commits first..last is cut into: after every multiple of
 * `segmentCommits`, except right before the epoch's last commit, and at the epoch's end.
 */
export function segmentRanges (first: number, last: number, segmentCommits: number): Array<[number, number]> {
  if (!Number.isSafeInteger(segmentCommits) || segmentCommits < 1) throw new RangeError(`segment size must be >= 1 commit, got ${segmentCommits}`)
  const out: Array<[number, number]> = []
  let a = first
  while (a <= last) {
    const cut = Math.ceil(a / segmentCommits) * segmentCommits
    // no cut right before the epoch's last commit: the votes certifying that commit are in blocks of
    // the end-of-epoch round, which no commit includes, so not every store holds them
    const b = cut >= last - 1 ? last : cut
    out.push([a, b])
    a = b + 1
  }
  return out
}

const pad = (n: number): string => String(n).padStart(12, '0')

export function segmentName (first: number, last: number, sha256Hex: string): string {
  return `segments/${pad(first)}-${pad(last)}-${sha256Hex}.seg`
}

export function epochIndexName (epoch: number): string {
  return `epochs/${pad(epoch)}.json`
}

function compress (body: Uint8Array, c: Compression): Uint8Array {
  switch (c) {
    case 'none': return body
    case 'gzip': return gzipSync(body, { level: 6 })
    case 'brotli': return brotliCompressSync(body, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 5 } })
    case 'zstd': return zstdCompressSync(body)
  }
}

function decompress (data: Uint8Array, c: string, maxBytes: number, what: string): Uint8Array {
  try {
    switch (c) {
      case 'none': return data
      case 'gzip': return gunzipSync(data, { maxOutputLength: maxBytes })
      case 'brotli': return brotliDecompressSync(data, { maxOutputLength: maxBytes })
      case 'zstd': return zstdDecompressSync(data, { maxOutputLength: maxBytes } as any)
    }
  } catch (err: any) {
    throw new InvalidArchiveError(`${what}: the ${c} body does not decompress: ${err.message}`)
  }
  throw new InvalidArchiveError(`${what}: unknown compression ${JSON.stringify(c)}`)
}

export function isCompression (c: string): c is Compression {
  return (COMPRESSIONS as readonly string[]).includes(c)
}

/** The bytes of a segment file. */
export function encodeSegment (h: Omit<SegmentHeader, 'formatVersion' | 'bodyBytes' | 'compression'> & { compression: Compression }, body: SegmentBody): Uint8Array {
  const raw = BodyCodec.encode(body)
  const header = HeaderCodec.encode({ ...h, formatVersion: ARCHIVE_FORMAT_VERSION, bodyBytes: raw.byteLength })
  const packed = compress(raw, h.compression)
  const out = new Uint8Array(SEGMENT_MAGIC.byteLength + 4 + header.byteLength + packed.byteLength)
  out.set(SEGMENT_MAGIC, 0)
  new DataView(out.buffer).setUint32(SEGMENT_MAGIC.byteLength, header.byteLength)
  out.set(header, SEGMENT_MAGIC.byteLength + 4)
  out.set(packed, SEGMENT_MAGIC.byteLength + 4 + header.byteLength)
  return out
}

/** Decodes a segment file; `what` names it in errors (InvalidArchiveError). Checks only the shape. */
export function decodeSegment (bytes: Uint8Array, what: string): { header: SegmentHeader, body: SegmentBody } {
  const m = SEGMENT_MAGIC.byteLength
  if (bytes.byteLength < m + 4 || !SEGMENT_MAGIC.every((b, i) => bytes[i] === b)) throw new InvalidArchiveError(`${what} is not a soma archive segment (no SOMA-ARC magic)`)
  const hlen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(m)
  if (m + 4 + hlen > bytes.byteLength || hlen > 4096) throw new InvalidArchiveError(`${what}: header length ${hlen} does not fit the ${bytes.byteLength}-byte file`)
  let header: SegmentHeader
  try {
    header = HeaderCodec.decode(bytes.subarray(m + 4, m + 4 + hlen))
  } catch (err: any) {
    throw new InvalidArchiveError(`${what}: header does not decode: ${err.message}`)
  }
  if (header.formatVersion !== ARCHIVE_FORMAT_VERSION) throw new InvalidArchiveError(`${what}: format version ${header.formatVersion}, this soma-sync reads ${ARCHIVE_FORMAT_VERSION}`)
  if (header.bodyBytes > MAX_SEGMENT_BODY_BYTES) throw new InvalidArchiveError(`${what}: body of ${header.bodyBytes} bytes is over the ${MAX_SEGMENT_BODY_BYTES}-byte limit`)
  const raw = decompress(bytes.subarray(m + 4 + hlen), header.compression, header.bodyBytes, what)
  if (raw.byteLength !== header.bodyBytes) throw new InvalidArchiveError(`${what}: body is ${raw.byteLength} bytes, the header says ${header.bodyBytes}`)
  let body: SegmentBody
  try {
    body = BodyCodec.decode(raw)
  } catch (err: any) {
    throw new InvalidArchiveError(`${what}: body does not decode: ${err.message}`)
  }
  if (body.commits.length !== header.lastCommit - header.firstCommit + 1) {
    throw new InvalidArchiveError(`${what}: holds ${body.commits.length} commits, its header says ${header.firstCommit}..${header.lastCommit}`)
  }
  return { header, body }
}

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0
const isHex = (x: unknown, len: number): x is string => typeof x === 'string' && x.length === len && /^[0-9a-f]+$/.test(x)

function checkSegmentEntry (s: any, what: string): SegmentEntry {
  if (typeof s !== 'object' || s === null) throw new InvalidArchiveError(`${what}: a segment entry is not an object`)
  if (typeof s.name !== 'string' || !/^segments\/[0-9a-z.-]+\.seg$/.test(s.name)) throw new InvalidArchiveError(`${what}: bad segment name ${JSON.stringify(s.name)}`)
  for (const k of ['epoch', 'firstCommit', 'lastCommit', 'size']) if (!isInt(s[k])) throw new InvalidArchiveError(`${what}: segment ${s.name}: ${k} is not a non-negative integer`)
  if (!isHex(s.sha256, 64)) throw new InvalidArchiveError(`${what}: segment ${s.name}: sha256 is not 64 hex digits`)
  if (typeof s.endsEpoch !== 'boolean') throw new InvalidArchiveError(`${what}: segment ${s.name}: endsEpoch is not a boolean`)
  if (s.firstCommit < 1 || s.lastCommit < s.firstCommit) throw new InvalidArchiveError(`${what}: segment ${s.name}: bad range ${s.firstCommit}..${s.lastCommit}`)
  return { name: s.name, epoch: s.epoch, firstCommit: s.firstCommit, lastCommit: s.lastCommit, endsEpoch: s.endsEpoch, sha256: s.sha256, size: s.size }
}

/**
 * Parses and checks a manifest: its chain (when `chainId` is given), and that its segments are
 * contiguous from commit 1, each inside one epoch and cut where the format says.
 */
export function parseManifest (bytes: Uint8Array, what: string, chainId?: Uint8Array): ArchiveManifest {
  let m: any
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err: any) {
    throw new InvalidArchiveError(`${what} is not JSON: ${err.message}`)
  }
  if (m?.format !== 'soma-archive') throw new InvalidArchiveError(`${what} is not a soma archive manifest (format ${JSON.stringify(m?.format)})`)
  if (m.version !== ARCHIVE_FORMAT_VERSION) throw new InvalidArchiveError(`${what}: archive version ${m.version}, this soma-sync reads ${ARCHIVE_FORMAT_VERSION}`)
  if (!isHex(m.chainId, 64)) throw new InvalidArchiveError(`${what}: chainId is not 64 hex digits`)
  if (chainId !== undefined && m.chainId !== toHex(chainId)) throw new InvalidArchiveError(`${what} is an archive of chain ${m.chainId.slice(0, 16)}…, not of this chain ${toHex(chainId).slice(0, 16)}…`)
  if (!isInt(m.segmentCommits) || m.segmentCommits < 1) throw new InvalidArchiveError(`${what}: segmentCommits is not a positive integer`)
  if (!isCompression(m.compression)) throw new InvalidArchiveError(`${what}: unknown compression ${JSON.stringify(m.compression)}`)
  if (!isInt(m.highestCommit)) throw new InvalidArchiveError(`${what}: highestCommit is not a non-negative integer`)
  if (!Array.isArray(m.segments) || !Array.isArray(m.epochs)) throw new InvalidArchiveError(`${what}: segments and epochs must be arrays`)
  const segments = m.segments.map((s: any) => checkSegmentEntry(s, what))
  let next = 1
  let epoch = 0
  let epochStart = 1
  for (const s of segments as SegmentEntry[]) {
    if (s.firstCommit !== next) throw new InvalidArchiveError(`${what}: segment ${s.name} starts at commit ${s.firstCommit}, expected ${next} (missing or reordered segments)`)
    if (s.epoch !== epoch) throw new InvalidArchiveError(`${what}: segment ${s.name} is of epoch ${s.epoch}, expected ${epoch}`)
    const cutOk = s.endsEpoch || s.lastCommit % m.segmentCommits === 0
    const tooLong = s.lastCommit - s.firstCommit >= m.segmentCommits + (s.endsEpoch ? 1 : 0)
    const cutBeforeEnd = s.endsEpoch && s.firstCommit === s.lastCommit && s.firstCommit !== epochStart
    if (!cutOk || tooLong || cutBeforeEnd || (s.firstCommit !== epochStart && (s.firstCommit - 1) % m.segmentCommits !== 0)) {
      throw new InvalidArchiveError(`${what}: segment ${s.name} (${s.firstCommit}..${s.lastCommit}) is not cut at the format's boundaries`)
    }
    next = s.lastCommit + 1
    if (s.endsEpoch) { epoch++; epochStart = next }
  }
  if (next - 1 !== m.highestCommit) throw new InvalidArchiveError(`${what}: segments end at commit ${next - 1}, highestCommit says ${m.highestCommit}`)
  const epochs: EpochEntry[] = m.epochs.map((e: any) => {
    if (!isInt(e?.epoch) || !isInt(e?.firstCommit) || !isInt(e?.lastCommit) || !isInt(e?.size) || typeof e?.name !== 'string' || !isHex(e?.sha256, 64)) throw new InvalidArchiveError(`${what}: bad epoch entry ${JSON.stringify(e)?.slice(0, 80)}`)
    return { epoch: e.epoch, firstCommit: e.firstCommit, lastCommit: e.lastCommit, name: e.name, sha256: e.sha256, size: e.size }
  })
  return { format: 'soma-archive', version: m.version, chainId: m.chainId, segmentCommits: m.segmentCommits, compression: m.compression, highestCommit: m.highestCommit, epochs, segments }
}

export function parseEpochIndex (bytes: Uint8Array, what: string): EpochIndex {
  let m: any
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err: any) {
    throw new InvalidArchiveError(`${what} is not JSON: ${err.message}`)
  }
  if (m?.format !== 'soma-archive-epoch' || m.version !== ARCHIVE_FORMAT_VERSION) throw new InvalidArchiveError(`${what} is not a version ${ARCHIVE_FORMAT_VERSION} epoch index`)
  if (!isInt(m.epoch) || !Array.isArray(m.segments)) throw new InvalidArchiveError(`${what}: bad epoch index`)
  return { format: 'soma-archive-epoch', version: m.version, chainId: m.chainId, epoch: m.epoch, firstCommit: m.firstCommit, lastCommit: m.lastCommit, segments: m.segments.map((s: any) => checkSegmentEntry(s, what)) }
}

/** Stable JSON (keys in the order the types list them) with a trailing newline. */
export function jsonBytes (x: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(x, null, 1) + '\n')
}

export { fromHex }
