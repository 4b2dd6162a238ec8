/**
 * The state chunk format (protocols/snapshot.proto, `StateChunk`, format version 1): encoding, strict
 * decoding, sort keys, the content-defined boundary rule and the streaming {@link Chunker}.
 *
 * Encoding is hand-written for speed (a full snapshot encodes every account and embedding) and produces
 * exactly the canonical protobuf bytes protobufjs would (fields in number order, defaults omitted); the
 * tests check both agree. Decoding goes through protobufjs and then refuses anything that is not the
 * canonical encoding of a well-formed chunk, so bytes ↔ chunk is one-to-one.
 */
import { codec } from '../chain/proto.ts'
import { Codecs } from '../chain/codecs.ts'
import { sha256, bytesEqual, compareBytes, toHex } from '../crypto/hash.ts'
import { writeU64, readU64 } from '../store/keys.ts'
import { embeddingMeta } from '../executor/pruning.ts'
import { InvalidChunkError } from '../errors.ts'
import { readVarint, varintLength, writeVarint } from '../chain/varint.ts'
import { isCanonicalAccountState, isCanonicalEmbedding } from './canonical-values.ts'

export const CHUNK_FORMAT_VERSION = 1

export const ChunkKind = {
  ACCOUNTS: 1,
  EMBEDDINGS: 2
} as const
export type ChunkKind = typeof ChunkKind[keyof typeof ChunkKind]

/** Groups of ACCOUNTS chunks. */
export const AccountGroup = { COLD: 0, HOT: 1 } as const

/** Nominal encoded sizes of one entry, from which the boundary moduli derive (see snapshot.proto). */
export const NOMINAL_ACCOUNT_ENTRY_BYTES = 56
export function nominalEmbeddingEntryBytes (embeddingDim: number): number { return 4 * embeddingDim + 96 }

export interface ChunkEntry {
  /** sort key: the address (32 bytes) for an account, commit u64 BE ‖ id (40 bytes) for an embedding */
  key: Uint8Array
  /** identity: the address or the embedding id (32 bytes); the boundary hash is over it */
  id: Uint8Array
  /** the AccountState or Embedding bytes, exactly as stored */
  value: Uint8Array
}

/** A row of the listing (`ChunkInfo` in snapshot.proto). */
export interface ChunkInfo {
  hash: Uint8Array
  size: number
  kind: ChunkKind
  group: number
  firstKey: Uint8Array
  entries: number
}

export interface DecodedChunk {
  kind: ChunkKind
  group: number
  entries: ChunkEntry[]
}

interface StateChunkMessage {
  formatVersion: number
  kind: number
  group: number
  accounts: Array<{ address: Uint8Array, state: Uint8Array }>
  embeddings: Array<{ id: Uint8Array, embedding: Uint8Array }>
}

const StateChunkCodec = codec<StateChunkMessage>('soma.StateChunk')

// ---------------------------------------------------------------------------------------------------
// keys

export function accountEntry (address: Uint8Array, state: Uint8Array): ChunkEntry {
  return { key: address, id: address, value: state }
}

/** commit u64 BE ‖ id */
export function embeddingSortKey (commitIndex: number, id: Uint8Array): Uint8Array {
  const k = new Uint8Array(8 + id.byteLength)
  writeU64(k, 0, commitIndex)
  k.set(id, 8)
  return k
}

export function embeddingEntry (id: Uint8Array, encoded: Uint8Array, commitIndex = embeddingMeta(encoded).commitIndex): ChunkEntry {
  const key = embeddingSortKey(commitIndex, id)
  return { key, id: key.subarray(8), value: encoded }
}

/** The creation commit of an embedding sort key. */
export function sortKeyCommit (key: Uint8Array): number {
  return readU64(key, 0)
}

// ---------------------------------------------------------------------------------------------------
// boundary hash: MurmurHash3_x86_32, seed 0, over a 32-byte key

export function boundaryHash (k: Uint8Array): number {
  let h = 0
  const n = k.byteLength
  const blocks = n >>> 2
  for (let i = 0; i < blocks; i++) {
    const o = i * 4
    let w = k[o] | (k[o + 1] << 8) | (k[o + 2] << 16) | (k[o + 3] << 24)
    w = Math.imul(w, 0xcc9e2d51)
    w = (w << 15) | (w >>> 17)
    w = Math.imul(w, 0x1b873593)
    h ^= w
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  const tail = n & 3
  if (tail > 0) {
    const o = blocks * 4
    let w = 0
    if (tail === 3) w ^= k[o + 2] << 16
    if (tail >= 2) w ^= k[o + 1] << 8
    w ^= k[o]
    w = Math.imul(w, 0xcc9e2d51)
    w = (w << 15) | (w >>> 17)
    w = Math.imul(w, 0x1b873593)
    h ^= w
  }
  h ^= n
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** Whether a chunk ends after this entry by the content-defined rule. */
export function isBoundary (id: Uint8Array, modulus: number): boolean {
  return boundaryHash(id) % modulus === 0
}

// ---------------------------------------------------------------------------------------------------
// encoding

function innerEntryLength (e: ChunkEntry): number {
  const v = e.value.byteLength
  return 2 + e.id.byteLength + (v > 0 ? 1 + varintLength(v) + v : 0)
}

/** Encoded bytes one entry adds to a chunk (its field tag, length and body). */
export function entryEncodedLength (e: ChunkEntry): number {
  const inner = innerEntryLength(e)
  return 1 + varintLength(inner) + inner
}

/** Encoded bytes of a chunk header (format version, kind, group). */
export function headerLength (group: number): number {
  return 4 + (group > 0 ? 1 + varintLength(group) : 0)
}

/** The canonical `StateChunk` bytes of (kind, group, entries). Entries must be sorted and non-empty. */
export function encodeChunk (kind: ChunkKind, group: number, entries: readonly ChunkEntry[]): Uint8Array {
  let size = headerLength(group)
  for (const e of entries) size += entryEncodedLength(e)
  const buf = new Uint8Array(size)
  let p = 0
  buf[p++] = 0x08; buf[p++] = CHUNK_FORMAT_VERSION
  buf[p++] = 0x10; buf[p++] = kind
  if (group > 0) { buf[p++] = 0x18; p = writeVarint(buf, p, group) }
  const outerTag = kind === ChunkKind.ACCOUNTS ? 0x22 : 0x2a
  for (const e of entries) {
    buf[p++] = outerTag
    p = writeVarint(buf, p, innerEntryLength(e))
    buf[p++] = 0x0a
    buf[p++] = e.id.byteLength
    buf.set(e.id, p); p += e.id.byteLength
    const v = e.value.byteLength
    if (v > 0) {
      buf[p++] = 0x12
      p = writeVarint(buf, p, v)
      buf.set(e.value, p); p += v
    }
  }
  if (p !== size) throw new Error(`chunk encoding wrote ${p} bytes, expected ${size}`)
  return buf
}

/**
 * Whether `bytes` are exactly `encodeChunk(kind, group, entries)`, without encoding: the framing is
 * compared in place, and an id or value is compared only when it is not already a view of `bytes` at
 * the position its encoding takes (decodeChunk's entries are views into the chunk, so a canonical
 * chunk costs O(entries), not a 1 MiB allocation, copy and compare).
 */
export function isEncodingOf (bytes: Uint8Array, kind: ChunkKind, group: number, entries: readonly ChunkEntry[]): boolean {
  let size = headerLength(group)
  for (const e of entries) size += entryEncodedLength(e)
  if (size !== bytes.byteLength) return false
  const head = new Uint8Array(headerLength(group))
  let h = 0
  head[h++] = 0x08; head[h++] = CHUNK_FORMAT_VERSION
  head[h++] = 0x10; head[h++] = kind
  if (group > 0) { head[h++] = 0x18; writeVarint(head, h, group) }
  for (let i = 0; i < head.length; i++) if (bytes[i] !== head[i]) return false
  let p = head.length
  const outerTag = kind === ChunkKind.ACCOUNTS ? 0x22 : 0x2a
  const varint = new Uint8Array(10)
  const same = (x: Uint8Array, at: number): boolean => {
    if (x.buffer === bytes.buffer && x.byteOffset === bytes.byteOffset + at) return true
    for (let i = 0; i < x.byteLength; i++) if (bytes[at + i] !== x[i]) return false
    return true
  }
  const sameVarint = (n: number): boolean => {
    const end = writeVarint(varint, 0, n)
    for (let i = 0; i < end; i++) if (bytes[p++] !== varint[i]) return false
    return true
  }
  for (const e of entries) {
    if (bytes[p++] !== outerTag) return false
    if (!sameVarint(innerEntryLength(e))) return false
    if (bytes[p++] !== 0x0a || bytes[p++] !== e.id.byteLength) return false
    if (!same(e.id, p)) return false
    p += e.id.byteLength
    const v = e.value.byteLength
    if (v > 0) {
      if (bytes[p++] !== 0x12) return false
      if (!sameVarint(v)) return false
      if (!same(e.value, p)) return false
      p += v
    }
  }
  return p === size
}

/** The same chunk through protobufjs (tests compare it with {@link encodeChunk}). */
export function encodeChunkReference (kind: ChunkKind, group: number, entries: readonly ChunkEntry[]): Uint8Array {
  const msg: StateChunkMessage = {
    formatVersion: CHUNK_FORMAT_VERSION,
    kind,
    group,
    accounts: kind === ChunkKind.ACCOUNTS ? entries.map(e => ({ address: e.id, state: e.value })) : [],
    embeddings: kind === ChunkKind.EMBEDDINGS ? entries.map(e => ({ id: e.id, embedding: e.value })) : []
  }
  return StateChunkCodec.encode(msg)
}

// ---------------------------------------------------------------------------------------------------
// decoding

/**
 * Decodes chunk bytes and checks them: format version 1, a known kind, only that kind's entries, at
 * least one, 32-byte ids, values that are canonical AccountState / Embedding encodings, strictly
 * ascending sort keys, account group 0 or 1, and canonical bytes. Throws InvalidChunkError naming the
 * chunk (`what`, e.g. its hash) and the problem.
 */
export function decodeChunk (bytes: Uint8Array, what = 'chunk'): DecodedChunk {
  let msg: StateChunkMessage
  try {
    msg = StateChunkCodec.decode(bytes)
  } catch (err: any) {
    throw new InvalidChunkError(`${what} does not decode: ${err.message}`)
  }
  if (msg.formatVersion !== CHUNK_FORMAT_VERSION) throw new InvalidChunkError(`${what}: format version ${msg.formatVersion}, expected ${CHUNK_FORMAT_VERSION}`)
  const kind = msg.kind as ChunkKind
  const entries: ChunkEntry[] = []
  if (kind === ChunkKind.ACCOUNTS) {
    if (msg.embeddings.length > 0) throw new InvalidChunkError(`${what}: an accounts chunk holds embeddings`)
    if (msg.group !== AccountGroup.COLD && msg.group !== AccountGroup.HOT) throw new InvalidChunkError(`${what}: account group ${msg.group} is neither 0 (cold) nor 1 (hot)`)
    for (const a of msg.accounts) {
      if (a.address.byteLength !== 32) throw new InvalidChunkError(`${what}: an account address is ${a.address.byteLength} bytes, not 32`)
      // the allocation-free check first; the protobufjs round trip decides (and names the problem) otherwise
      let canonical = isCanonicalAccountState(a.state)
      if (!canonical) {
        try {
          canonical = bytesEqual(Codecs.AccountState.encode(Codecs.AccountState.decode(a.state)), a.state)
        } catch (err: any) {
          throw new InvalidChunkError(`${what}: account ${toHex(a.address)} state does not decode: ${err.message}`)
        }
      }
      if (!canonical) throw new InvalidChunkError(`${what}: account ${toHex(a.address)} state is not canonically encoded`)
      entries.push(accountEntry(a.address, a.state))
    }
  } else if (kind === ChunkKind.EMBEDDINGS) {
    if (msg.accounts.length > 0) throw new InvalidChunkError(`${what}: an embeddings chunk holds accounts`)
    for (const e of msg.embeddings) {
      if (e.id.byteLength !== 32) throw new InvalidChunkError(`${what}: an embedding id is ${e.id.byteLength} bytes, not 32`)
      let commitIndex: number
      try {
        commitIndex = embeddingMeta(e.embedding).commitIndex
        if (!isCanonicalEmbedding(e.embedding) && !bytesEqual(Codecs.Embedding.encode(Codecs.Embedding.decode(e.embedding)), e.embedding)) throw new Error('not canonically encoded')
      } catch (err: any) {
        throw new InvalidChunkError(`${what}: embedding ${toHex(e.id)}: ${err.message}`)
      }
      entries.push(embeddingEntry(e.id, e.embedding, commitIndex))
    }
  } else {
    throw new InvalidChunkError(`${what}: unknown chunk kind ${msg.kind}`)
  }
  if (entries.length === 0) throw new InvalidChunkError(`${what} has no entries`)
  for (let i = 1; i < entries.length; i++) {
    if (compareBytes(entries[i - 1].key, entries[i].key) >= 0) throw new InvalidChunkError(`${what}: entries are not in strictly ascending order (entry ${i})`)
  }
  if (!isEncodingOf(bytes, kind, msg.group, entries)) throw new InvalidChunkError(`${what} is not canonically encoded`)
  return { kind, group: msg.group, entries }
}

/**
 * Parses chunk bytes this node encoded itself (their hash already checked against its listing) without
 * the canonical-encoding checks of {@link decodeChunk}: the builder's fast path for re-reading chunks.
 */
export function parseOwnChunk (bytes: Uint8Array, what = 'chunk'): DecodedChunk {
  let pos = 0
  let kind = 0
  let group = 0
  const raw: Array<[Uint8Array, Uint8Array]> = []
  while (pos < bytes.length) {
    let tag: number
    [tag, pos] = readVarint(bytes, pos, what, InvalidChunkError)
    const field = tag >>> 3
    const wire = tag & 7
    if (wire === 0) {
      let v: number
      [v, pos] = readVarint(bytes, pos, what, InvalidChunkError)
      if (field === 2) kind = v
      else if (field === 3) group = v
    } else if (wire === 2) {
      let len: number
      [len, pos] = readVarint(bytes, pos, what, InvalidChunkError)
      const end = pos + len
      if (end > bytes.length) throw new InvalidChunkError(`${what}: length past the end`)
      if (field === 4 || field === 5) {
        let id: Uint8Array = new Uint8Array(0)
        let value: Uint8Array = new Uint8Array(0)
        let q = pos
        while (q < end) {
          let t: number
          [t, q] = readVarint(bytes, q, what, InvalidChunkError)
          if ((t & 7) !== 2) throw new InvalidChunkError(`${what}: bad entry field`)
          let l: number
          [l, q] = readVarint(bytes, q, what, InvalidChunkError)
          if (q + l > end) throw new InvalidChunkError(`${what}: entry field past its end`)
          if ((t >>> 3) === 1) id = bytes.subarray(q, q + l)
          else if ((t >>> 3) === 2) value = bytes.subarray(q, q + l)
          q += l
        }
        raw.push([id, value])
      }
      pos = end
    } else {
      throw new InvalidChunkError(`${what}: wire type ${wire}`)
    }
  }
  if (kind !== ChunkKind.ACCOUNTS && kind !== ChunkKind.EMBEDDINGS) throw new InvalidChunkError(`${what}: unknown chunk kind ${kind}`)
  const entries = kind === ChunkKind.ACCOUNTS ? raw.map(([id, v]) => accountEntry(id, v)) : raw.map(([id, v]) => embeddingEntry(id, v))
  return { kind: kind as ChunkKind, group, entries }
}

/** last_modified_epoch (field 3) of AccountState bytes, without a full decode. */
export function accountLastModifiedEpoch (b: Uint8Array): number {
  let pos = 0
  let epoch = 0
  while (pos < b.length) {
    let tag: number
    [tag, pos] = readVarint(b, pos, 'AccountState', InvalidChunkError)
    if ((tag & 7) !== 0) throw new InvalidChunkError(`AccountState: unexpected wire type ${tag & 7}`)
    let v: number
    [v, pos] = readVarint(b, pos, 'AccountState', InvalidChunkError)
    if ((tag >>> 3) === 3) epoch = v
  }
  return epoch
}

// ---------------------------------------------------------------------------------------------------
// chunking

export interface BuiltChunk {
  info: ChunkInfo
  bytes: Uint8Array
}

export interface ChunkerParams {
  /** boundary modulus M of this kind */
  modulus: number
  /** a chunk is cut when its encoded size reaches this */
  maxBytes: number
}

/**
 * Cuts one (kind, group)'s entries, fed in ascending sort-key order, into chunks by the content-defined
 * rule; emits each chunk (encoded and hashed) as soon as it is cut.
 */
export class Chunker {
  readonly kind: ChunkKind
  readonly group: number
  private readonly params: ChunkerParams
  private readonly emit: (c: BuiltChunk) => void
  private entries: ChunkEntry[] = []
  private size: number
  /** chunks emitted, entries and bytes encoded */
  chunks = 0
  entriesEncoded = 0
  bytesEncoded = 0

  constructor (kind: ChunkKind, group: number, params: ChunkerParams, emit: (c: BuiltChunk) => void) {
    this.kind = kind
    this.group = group
    this.params = params
    this.emit = emit
    this.size = headerLength(group)
  }

  /** Adds the next entry; returns true when it ended a chunk. */
  add (e: ChunkEntry): boolean {
    this.entries.push(e)
    this.size += entryEncodedLength(e)
    if (this.size >= this.params.maxBytes || isBoundary(e.id, this.params.modulus)) {
      this.cut()
      return true
    }
    return false
  }

  /** True when no entry is pending (the next entry starts a chunk). */
  get atBoundary (): boolean { return this.entries.length === 0 }

  /** Emits the pending entries as the group's last chunk. */
  finish (): void {
    if (this.entries.length > 0) this.cut()
  }

  private cut (): void {
    const entries = this.entries
    const bytes = encodeChunk(this.kind, this.group, entries)
    this.entries = []
    this.size = headerLength(this.group)
    this.chunks++
    this.entriesEncoded += entries.length
    this.bytesEncoded += bytes.byteLength
    this.emit({
      bytes,
      info: { hash: sha256(bytes), size: bytes.byteLength, kind: this.kind, group: this.group, firstKey: entries[0].key, entries: entries.length }
    })
  }
}

/** Canonical listing order: kind, group, first key. */
export function compareChunkInfo (a: ChunkInfo, b: ChunkInfo): number {
  return (a.kind - b.kind) || (a.group - b.group) || compareBytes(a.firstKey, b.firstKey)
}
