/**
 * Protobuf varints for the hand-written fast paths over protocols/ messages (snapshot chunks, listing and
 * chunk responses, the scan of an encoded Embedding), where protobufjs' reflection would cost too much.
 * Values are JS numbers: at most 2^53 - 1, as everywhere on the wire (src/chain/proto.ts).
 */
import { MalformedMessageError } from '../errors.ts'

/** Bytes of the unsigned varint encoding of n. */
export function varintLength (n: number): number {
  let len = 1
  while (n >= 128) { n = Math.floor(n / 128); len++ }
  return len
}

/** Writes n as an unsigned varint at pos; returns the position after it. */
export function writeVarint (buf: Uint8Array, pos: number, n: number): number {
  while (n >= 128) {
    buf[pos++] = (n % 128) | 0x80
    n = Math.floor(n / 128)
  }
  buf[pos++] = n
  return pos
}

/**
 * Reads an unsigned varint at pos; returns [value, position after it]. A truncated varint or one beyond
 * 2^53 - 1 throws `error` (MalformedMessageError by default) with a message naming `what`.
 */
export function readVarint (b: Uint8Array, pos: number, what: string, error: new (message: string) => Error = MalformedMessageError): [number, number] {
  let v = 0
  let mul = 1
  // 8 bytes hold 56 bits: every value up to 2^53 - 1, and more, which the check below refuses
  for (let i = 0; i < 8; i++) {
    if (pos >= b.length) throw new error(`malformed ${what}: truncated varint`)
    const byte = b[pos++]
    v += (byte & 0x7f) * mul
    if ((byte & 0x80) === 0) {
      if (!Number.isSafeInteger(v)) throw new error(`malformed ${what}: varint beyond 2^53-1`)
      return [v, pos]
    }
    mul *= 128
  }
  throw new error(`malformed ${what}: varint beyond 2^53-1`)
}
