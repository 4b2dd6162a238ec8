/**
 * Typed codecs and protocol ids of the snapshot sync wire protocols (protocols/snapshot.proto, "Snapshot
 * sync wire protocols").
 *
 * Two responses have hand-written codecs, because they carry bulk data:
 * - GetSnapshotChunksResponse: the chunks are encoded straight from the stored bytes and decoded as
 *   views into the received message (no per-chunk copy); the bytes are exactly what protobufjs
 *   produces/accepts (tests compare).
 * - GetSnapshotListingResponse: a server may send a page as the already-encoded rows of its stored
 *   SnapshotListing (`rows`: field 1 of SnapshotListing is field 1 of the response, same framing), so a
 *   page is a slice of the stored bytes, never decoded and re-encoded on the server.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import { codec, type Codec } from '../../chain/proto.ts'
import { MalformedMessageError } from '../../errors.ts'
import type { ChunkInfo } from '../chunk-format.ts'
import { readVarint, varintLength, writeVarint } from '../../chain/varint.ts'

export const PROTOCOL_SNAPSHOT_MANIFEST = '/soma/snapshot-manifest/1.0.0'
export const PROTOCOL_SNAPSHOT_FILTER = '/soma/snapshot-filter/1.0.0'
export const PROTOCOL_SNAPSHOT_LISTING = '/soma/snapshot-listing/1.0.0'
export const PROTOCOL_SNAPSHOT_CHUNKS = '/soma/snapshot-chunks/1.0.0'

export interface GetSnapshotManifestRequest { commitIndex: number }
export interface GetSnapshotManifestResponse { attestation: Uint8Array, snapshots: number[], error?: string }
export interface GetSnapshotFilterRequest { commitIndex: number }
export interface GetSnapshotFilterResponse { filter: Uint8Array, error?: string }
export interface GetSnapshotListingRequest { commitIndex: number, start: number, limit: number, maxBytes?: number }
export interface GetSnapshotListingResponse {
  /** decoded rows (what a client receives) */
  chunks: ChunkInfo[]
  /** server side only: the rows already encoded as `repeated ChunkInfo chunks = 1` (a listing slice) */
  rows?: Uint8Array
  error?: string
}
export interface GetSnapshotChunksRequest { hashes: Uint8Array[], maxBytes?: number }
export interface GetSnapshotChunksResponse { chunks: Uint8Array[], error?: string }

const ListingResponsePb = codec<GetSnapshotListingResponse>('soma.GetSnapshotListingResponse')
const ChunksResponsePb = codec<GetSnapshotChunksResponse>('soma.GetSnapshotChunksResponse')

/** Bytes `repeated bytes field = n` (n < 16) adds for one value of `len` bytes. */
export function lengthDelimitedSize (len: number): number {
  return 1 + varintLength(len) + len
}

const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })

/** Writes `tag ‖ varint(len) ‖ bytes`; returns the new position. */
function writeField (buf: Uint8Array, pos: number, tag: number, bytes: Uint8Array): number {
  buf[pos++] = tag
  pos = writeVarint(buf, pos, bytes.byteLength)
  buf.set(bytes, pos)
  return pos + bytes.byteLength
}

function encodeError (error: string | undefined): Uint8Array | undefined {
  return error === undefined || error === '' ? undefined : utf8Encoder.encode(error)
}

const TAG_FIELD_1 = 0x0a // field 1, wire type 2
const TAG_ERROR = 0x7a // field 15, wire type 2

/**
 * Parses a message made of field 1 (repeated, length-delimited) and field 15 (string); other fields are
 * skipped. Returns views into `buf`.
 */
function parseRepeatedBytes (buf: Uint8Array, what: string): { items: Uint8Array[], error?: string } {
  const items: Uint8Array[] = []
  let error: string | undefined
  let pos = 0
  while (pos < buf.length) {
    let key: number
    [key, pos] = readVarint(buf, pos, what)
    const field = Math.floor(key / 8)
    const wire = key % 8
    if (wire === 2) {
      let len: number
      [len, pos] = readVarint(buf, pos, what)
      if (pos + len > buf.length) throw new MalformedMessageError(`malformed ${what}: a field runs past the end`)
      const v = buf.subarray(pos, pos + len)
      pos += len
      if (field === 1) items.push(v)
      else if (field === 15) {
        try { error = utf8Decoder.decode(v) } catch { throw new MalformedMessageError(`malformed ${what}: error is not UTF-8`) }
      }
    } else if (wire === 0) {
      [, pos] = readVarint(buf, pos, what)
    } else if (wire === 1) {
      pos += 8
    } else if (wire === 5) {
      pos += 4
    } else {
      throw new MalformedMessageError(`malformed ${what}: wire type ${wire}`)
    }
    if (pos > buf.length) throw new MalformedMessageError(`malformed ${what}: truncated`)
  }
  return error === undefined ? { items } : { items, error }
}

/** GetSnapshotChunksResponse: encoded from the stored chunk bytes, decoded as views (no copies). */
export const ChunksResponseCodec: Codec<GetSnapshotChunksResponse> = {
  name: 'GetSnapshotChunksResponse',
  encode (value: GetSnapshotChunksResponse): Uint8Array {
    const err = encodeError(value.error)
    const chunks = value.chunks ?? [] // a refusal ({ error }) has none
    let size = err === undefined ? 0 : lengthDelimitedSize(err.byteLength)
    for (const c of chunks) size += lengthDelimitedSize(c.byteLength)
    const buf = new Uint8Array(size)
    let pos = 0
    for (const c of chunks) pos = writeField(buf, pos, TAG_FIELD_1, c)
    if (err !== undefined) pos = writeField(buf, pos, TAG_ERROR, err)
    return buf
  },
  decode (data: Uint8Array | Uint8ArrayList): GetSnapshotChunksResponse {
    const buf = data instanceof Uint8Array ? data : data.subarray()
    const { items, error } = parseRepeatedBytes(buf, 'GetSnapshotChunksResponse')
    return error === undefined ? { chunks: items } : { chunks: items, error }
  }
}

/**
 * GetSnapshotChunksResponse as a list of views: the field headers and the chunks themselves, not copied
 * (a server writes it to the stream as it is: its bytes are ChunksResponseCodec.encode's).
 */
export function encodeChunksResponseList (value: GetSnapshotChunksResponse): Uint8ArrayList {
  const out = new Uint8ArrayList()
  for (const c of value.chunks ?? []) {
    const head = new Uint8Array(1 + varintLength(c.byteLength))
    head[0] = TAG_FIELD_1
    writeVarint(head, 1, c.byteLength)
    out.append(head, c)
  }
  const err = encodeError(value.error)
  if (err !== undefined) {
    const buf = new Uint8Array(lengthDelimitedSize(err.byteLength))
    writeField(buf, 0, TAG_ERROR, err)
    out.append(buf)
  }
  return out
}

/** GetSnapshotListingResponse: `rows` (pre-encoded) are sent as they are; decoding is protobufjs'. */
export const ListingResponseCodec: Codec<GetSnapshotListingResponse> = {
  name: 'GetSnapshotListingResponse',
  encode (value: GetSnapshotListingResponse): Uint8Array {
    if (value.rows === undefined) return ListingResponsePb.encode(value)
    const err = encodeError(value.error)
    const buf = new Uint8Array(value.rows.byteLength + (err === undefined ? 0 : lengthDelimitedSize(err.byteLength)))
    buf.set(value.rows, 0)
    if (err !== undefined) writeField(buf, value.rows.byteLength, TAG_ERROR, err)
    return buf
  },
  decode (data: Uint8Array | Uint8ArrayList): GetSnapshotListingResponse {
    return ListingResponsePb.decode(data)
  }
}

/**
 * Offsets of the rows of SnapshotListing bytes: row i is `bytes[offsets[i] .. offsets[i+1])` including
 * its field tag and length, so a page is one subarray. Throws MalformedMessageError on anything else
 * than a sequence of field-1 length-delimited values.
 */
export function listingRowOffsets (bytes: Uint8Array): Float64Array {
  const out: number[] = []
  let pos = 0
  while (pos < bytes.length) {
    out.push(pos)
    if (bytes[pos] !== TAG_FIELD_1) throw new MalformedMessageError('malformed SnapshotListing: unexpected field')
    let len: number
    [len, pos] = readVarint(bytes, pos + 1, 'SnapshotListing')
    pos += len
    if (pos > bytes.length) throw new MalformedMessageError('malformed SnapshotListing: a row runs past the end')
  }
  out.push(bytes.length)
  return Float64Array.from(out)
}

/** One ChunkInfo's bytes framed as a SnapshotListing row (`0x0a ‖ varint(len) ‖ row`). */
export function frameListingRow (row: Uint8Array): Uint8Array {
  const buf = new Uint8Array(lengthDelimitedSize(row.byteLength))
  writeField(buf, 0, TAG_FIELD_1, row)
  return buf
}

export const SnapshotSyncCodecs = {
  GetSnapshotManifestRequest: codec<GetSnapshotManifestRequest>('soma.GetSnapshotManifestRequest'),
  GetSnapshotManifestResponse: codec<GetSnapshotManifestResponse>('soma.GetSnapshotManifestResponse'),
  GetSnapshotFilterRequest: codec<GetSnapshotFilterRequest>('soma.GetSnapshotFilterRequest'),
  GetSnapshotFilterResponse: codec<GetSnapshotFilterResponse>('soma.GetSnapshotFilterResponse'),
  GetSnapshotListingRequest: codec<GetSnapshotListingRequest>('soma.GetSnapshotListingRequest'),
  GetSnapshotListingResponse: ListingResponseCodec,
  GetSnapshotChunksRequest: codec<GetSnapshotChunksRequest>('soma.GetSnapshotChunksRequest'),
  GetSnapshotChunksResponse: ChunksResponseCodec,
  /** protobufjs' own codecs of the two hand-written ones (tests compare) */
  reference: { GetSnapshotListingResponse: ListingResponsePb, GetSnapshotChunksResponse: ChunksResponsePb }
}
