/**
 * LtHash16: a homomorphic multiset hash (Bellare–Micciancio; as used by Facebook and Solana).
 * An element hashes to 1024 16-bit lanes (shake256 with 2048 bytes of output); the multiset's hash is
 * the lane-wise sum mod 2^16. Adding or removing an element is O(1) in the set size, and the result is
 * independent of order. `checksum()` condenses it to 32 bytes with sha256.
 */
import { createHash, hash } from 'node:crypto'
import { sha256 } from './hash.ts'

export const LTHASH_LANES = 1024
export const LTHASH_BYTES = LTHASH_LANES * 2

const SHAKE_OPTIONS = { outputEncoding: 'buffer', outputLength: LTHASH_BYTES } as const

const oneShot = hash as unknown as (algorithm: string, data: Uint8Array, options: typeof SHAKE_OPTIONS) => Buffer

/**
 * shake256 with 2048 bytes of output: the one-shot `crypto.hash` where it takes an output length for
 * XOFs (Node 24), else a Hash object (an older runtime would silently give 32 bytes: checked once).
 */
const shake: (data: Uint8Array) => Buffer = (() => {
  const probe = Uint8Array.of(1, 2, 3)
  let ok = false
  try {
    ok = oneShot('shake256', probe, SHAKE_OPTIONS).equals(createHash('shake256', { outputLength: LTHASH_BYTES }).update(probe).digest())
  } catch {}
  return ok
    ? (data: Uint8Array) => oneShot('shake256', data, SHAKE_OPTIONS)
    : (data: Uint8Array) => createHash('shake256', { outputLength: LTHASH_BYTES }).update(data).digest()
})()

/** LtHash.element's input buffer (one per thread: each worker has its own module instance) */
let scratch = new Uint8Array(16 * 1024)

export class LtHash {
  readonly lanes: Uint16Array

  constructor (lanes?: Uint16Array) {
    if (lanes !== undefined && lanes.length !== LTHASH_LANES) throw new TypeError(`an LtHash has ${LTHASH_LANES} lanes`)
    this.lanes = lanes ?? new Uint16Array(LTHASH_LANES)
  }

  static fromBytes (bytes: Uint8Array): LtHash {
    if (bytes.byteLength !== LTHASH_BYTES) throw new TypeError(`an LtHash is ${LTHASH_BYTES} bytes, got ${bytes.byteLength}`)
    const copy = new Uint8Array(bytes) // aligned copy
    return new LtHash(new Uint16Array(copy.buffer, 0, LTHASH_LANES))
  }

  /**
   * The element's lanes: shake256(parts..., 2048 bytes), little-endian u16. The parts are joined in a
   * scratch buffer reused from call to call (a fresh Buffer.concat per element cost the snapshot sync's
   * chunk-hash workers a 4 KiB allocation per embedding and ~20 % more CPU) and hashed with the one-shot
   * `crypto.hash` (~10 % faster than a Hash object for an account's element).
   */
  static element (...parts: Uint8Array[]): Uint16Array {
    let input: Uint8Array
    if (parts.length === 1) input = parts[0]
    else {
      let n = 0
      for (const p of parts) n += p.byteLength
      if (n > scratch.byteLength) scratch = new Uint8Array(Math.max(n, 2 * scratch.byteLength))
      let o = 0
      for (const p of parts) { scratch.set(p, o); o += p.byteLength }
      input = scratch.subarray(0, n)
    }
    const out = shake(input)
    // a digest Buffer may sit in Node's shared pool at any offset: view it in place when the offset is
    // even (it is: pool offsets are 8-byte aligned), else copy into an aligned array
    if (out.byteOffset % 2 === 0) return new Uint16Array(out.buffer, out.byteOffset, LTHASH_LANES)
    const lanes = new Uint16Array(LTHASH_LANES)
    new Uint8Array(lanes.buffer).set(out)
    return lanes
  }

  add (...parts: Uint8Array[]): this {
    return this.addLanes(LtHash.element(...parts))
  }

  remove (...parts: Uint8Array[]): this {
    return this.removeLanes(LtHash.element(...parts))
  }

  addLanes (e: Uint16Array): this {
    const l = this.lanes
    for (let i = 0; i < LTHASH_LANES; i++) l[i] = (l[i] + e[i]) & 0xffff
    return this
  }

  removeLanes (e: Uint16Array): this {
    const l = this.lanes
    for (let i = 0; i < LTHASH_LANES; i++) l[i] = (l[i] - e[i]) & 0xffff
    return this
  }

  /** Adds (or with sign -1 removes) another multiset hash. */
  merge (other: LtHash, sign: 1 | -1 = 1): this {
    return sign === 1 ? this.addLanes(other.lanes) : this.removeLanes(other.lanes)
  }

  clone (): LtHash {
    return new LtHash(new Uint16Array(this.lanes))
  }

  toBytes (): Uint8Array {
    return new Uint8Array(this.lanes.buffer.slice(this.lanes.byteOffset, this.lanes.byteOffset + LTHASH_BYTES))
  }

  checksum (): Uint8Array {
    return sha256(new Uint8Array(this.lanes.buffer, this.lanes.byteOffset, LTHASH_BYTES))
  }

  isZero (): boolean {
    return this.lanes.every(v => v === 0)
  }
}
