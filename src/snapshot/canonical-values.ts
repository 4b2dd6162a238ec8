/**
 * Allocation-free checks that AccountState and Embedding bytes are canonical: what decodeChunk used to
 * establish for every entry of every chunk by decoding the value with protobufjs and encoding it again
 * (`encode(decode(b))` equal to `b`), which cost a 4 KiB allocation and copy per embedding and was the
 * largest single cost of the snapshot load on the syncing node's main thread.
 *
 * They are sound, not complete: `true` only for bytes the protobufjs round trip reproduces exactly and
 * that decode() accepts (fields in field-number order, each at most once, exactly the tag byte
 * protobufjs writes, minimal varints of at most 2^53 - 1, lengths inside the value, `model` valid UTF-8,
 * no field holding its default (zero, empty: protobufjs does not write those), nothing else). `false` means "not shown canonical here": the caller then runs the protobufjs round
 * trip, which decides (and names the problem). test/snapshot/canonical-values.test.ts compares both on
 * random and mutated values.
 */
import { isUtf8 } from 'node:buffer'

const MAX_SAFE = Number.MAX_SAFE_INTEGER

/** The position after a minimal varint of at most 2^53 - 1 at `pos`, or -1. */
function varintEnd (b: Uint8Array, pos: number, nonZero = false): number {
  let v = 0
  let mul = 1
  for (let i = 0; i < 8; i++) {
    if (pos >= b.length) return -1
    const byte = b[pos++]
    v += (byte & 0x7f) * mul
    if ((byte & 0x80) === 0) {
      // minimal: a multi-byte varint does not end in a zero group
      if (i > 0 && byte === 0) return -1
      if (nonZero && v === 0) return -1
      return v <= MAX_SAFE ? pos : -1
    }
    mul *= 128
  }
  return -1
}

/** The length of a length-delimited field at `pos` and the position after its length prefix, or undefined. */
function lengthAt (b: Uint8Array, pos: number): [number, number] | undefined {
  const end = varintEnd(b, pos)
  if (end < 0) return undefined
  let len = 0
  let mul = 1
  for (let i = pos; i < end; i++) { len += (b[i] & 0x7f) * mul; mul *= 128 }
  if (end + len > b.length) return undefined
  return [len, end]
}

/** AccountState { uint64 balance = 1; uint64 nonce = 2; uint64 last_modified_epoch = 3 }. */
export function isCanonicalAccountState (b: Uint8Array): boolean {
  let pos = 0
  let last = 0
  while (pos < b.length) {
    const tag = b[pos++]
    // 0x08, 0x10, 0x18: fields 1..3, wire type 0, in order, each once
    if ((tag & 7) !== 0) return false
    const field = tag >>> 3
    if (field <= last || field > 3) return false
    last = field
    // a zero is not written (proto3 defaults)
    pos = varintEnd(b, pos, true)
    if (pos < 0) return false
  }
  return true
}

/** Embedding { bytes owner = 1; uint64 commit_index = 2; bytes vector = 3; string model = 4; uint64 epoch = 5 }. */
export function isCanonicalEmbedding (b: Uint8Array): boolean {
  let pos = 0
  let last = 0
  while (pos < b.length) {
    const tag = b[pos++]
    const field = tag >>> 3
    if (field <= last || field > 5) return false
    last = field
    if (field === 2 || field === 5) {
      if ((tag & 7) !== 0) return false
      pos = varintEnd(b, pos, true)
      if (pos < 0) return false
    } else {
      if ((tag & 7) !== 2) return false
      const l = lengthAt(b, pos)
      if (l === undefined) return false
      const [len, start] = l
      if (len === 0) return false
      if (field === 4 && !isUtf8(b.subarray(start, start + len))) return false
      pos = start + len
    }
  }
  return true
}
