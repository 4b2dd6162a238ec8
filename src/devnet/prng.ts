/** A small deterministic PRNG (xorshift128+ seeded from sha256) for the devnet's workload. */
import { sha256, utf8 } from '../crypto/hash.ts'

export class Prng {
  private s0: bigint
  private s1: bigint

  constructor (seed: string) {
    const h = sha256(utf8.encode(seed))
    const dv = new DataView(h.buffer, h.byteOffset, 32)
    this.s0 = dv.getBigUint64(0) | 1n
    this.s1 = dv.getBigUint64(8) | 2n
  }

  /** uniform 53-bit float in [0, 1) */
  next (): number {
    let s1 = this.s0
    const s0 = this.s1
    this.s0 = s0
    s1 ^= (s1 << 23n) & 0xffffffffffffffffn
    s1 ^= s1 >> 17n
    s1 ^= s0
    s1 ^= s0 >> 26n
    this.s1 = s1
    return Number(((this.s0 + this.s1) & 0xffffffffffffffffn) >> 11n) / 2 ** 53
  }

  /** integer in [0, n) */
  int (n: number): number {
    return Math.floor(this.next() * n)
  }
}
