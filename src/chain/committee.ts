import type { Committee } from './types.ts'
import { MalformedMessageError } from '../errors.ts'

/** Stake arithmetic over a committee: quorum = 2f+1 = floor(2·total/3) + 1. */
export class CommitteeInfo {
  readonly committee: Committee
  readonly epoch: number
  readonly totalStake: number
  readonly quorumThreshold: number
  readonly validityThreshold: number

  constructor (committee: Committee) {
    validateCommittee(committee)
    this.committee = committee
    this.epoch = committee.epoch
    this.totalStake = committee.authorities.reduce((s, a) => s + a.stake, 0)
    this.quorumThreshold = Math.floor(2 * this.totalStake / 3) + 1
    this.validityThreshold = Math.floor(this.totalStake / 3) + 1
  }

  get size (): number { return this.committee.authorities.length }

  publicKey (author: number): Uint8Array | undefined {
    return this.committee.authorities[author]?.publicKey
  }

  stake (author: number): number {
    return this.committee.authorities[author]?.stake ?? 0
  }

  /** Sum of the stake of a set of distinct authority indices. */
  stakeOf (authors: Iterable<number>): number {
    let s = 0
    for (const a of new Set(authors)) s += this.stake(a)
    return s
  }

  reachesQuorum (authors: Iterable<number>): boolean {
    return this.stakeOf(authors) >= this.quorumThreshold
  }
}

export function validateCommittee (c: Committee): void {
  if (c == null || !Array.isArray(c.authorities) || c.authorities.length === 0) {
    throw new MalformedMessageError('committee has no authorities')
  }
  if (c.authorities.length > 1024) throw new MalformedMessageError(`committee has ${c.authorities.length} authorities (max 1024)`)
  const seen = new Set<string>()
  let total = 0
  c.authorities.forEach((a, i) => {
    if (a.publicKey?.byteLength !== 32) throw new MalformedMessageError(`authority ${i}: public key is not 32 bytes`)
    if (!Number.isSafeInteger(a.stake) || a.stake <= 0) throw new MalformedMessageError(`authority ${i}: stake must be a positive integer`)
    const k = Buffer.from(a.publicKey).toString('hex')
    if (seen.has(k)) throw new MalformedMessageError(`authority ${i}: duplicate public key`)
    seen.add(k)
    total += a.stake
  })
  if (!Number.isSafeInteger(total)) throw new MalformedMessageError('committee total stake overflows')
}
