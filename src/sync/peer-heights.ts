/**
 * PeerHeights: what each peer can serve — highest synced and lowest available commit — its genesis
 * digest and measured RTT, plus what it has proven: the highest commit it served us verified, and its
 * measured throughput. A peer of another chain is dropped and never asked again (its genesis digest is
 * kept as evidence).
 *
 * Claims are evidence only once backed by verified data:
 * - a claimed height that the peer then fails to serve (a range within its claim times out, comes back
 *   empty or wrong) is **withdrawn**: its height is capped below the range it failed for a back-off that
 *   doubles with each failure (`withdraw`), and the caller's penalty grows with the same count;
 * - the **sync target** (`target()`) follows verified data only: it is the highest height claimed by a
 *   peer that has served us verified data, and a claim above every other such claim (and above the target
 *   reached so far) counts only once its peer served verified data above them (so a peer that serves the
 *   honest prefix and claims 10^9 does not move it, even after the honest peers leave). It never falls
 *   when peers leave (the highest value reached is kept), only when the claim that set it is withdrawn.
 *   A node whose only peer lies about its height believes it until the peer fails to serve it.
 */
import type { PeerId } from '@libp2p/interface'
import { bytesEqual, toHex } from '../crypto/hash.ts'

export interface PeerStateSyncInfo {
  peer: PeerId
  /** highest synced commit (as usable for requests: capped while a claim is withdrawn) */
  height: number
  /** lowest available commit */
  lowest: number
  /** smoothed round-trip time of availability queries, ms */
  rttMs: number
  lastUpdated: number
  /** highest commit this peer served us verified (0: none yet) */
  served: number
  /** smoothed commits per second of its verified ranges (0: not measured yet) */
  throughput: number
  /** claimed ranges it failed to serve since it last served above the failed one */
  claimFailures: number
  /** while now < this, its claim is withdrawn (height capped below the range it failed) */
  cappedUntil: number
  /** the cap while withdrawn */
  cap: number
}

export interface HeightsOptions {
  /** first withdrawal's length; doubled per further failure. @default 5 s */
  withdrawMs?: number
  /** longest withdrawal. @default 10 min */
  maxWithdrawMs?: number
}

export class PeerHeights {
  private readonly chainId: Uint8Array
  private readonly peers = new Map<string, PeerStateSyncInfo>()
  /** peers of another chain, with the genesis digest (hex) they announced and when */
  private readonly wrongChain = new Map<string, { genesisDigest: string, at: number }>()
  private readonly withdrawMs: number
  private readonly maxWithdrawMs: number
  /** what a peer that left had proven or failed (a reconnect does not wipe a withdrawal) */
  private readonly departed = new Map<string, Pick<PeerStateSyncInfo, 'served' | 'throughput' | 'claimFailures' | 'cappedUntil' | 'cap'>>()
  /** the highest target reached, and the peer whose claim set it */
  private floor = 0
  private floorPeer?: string

  constructor (chainId: Uint8Array, opts: HeightsOptions = {}) {
    this.chainId = chainId
    this.withdrawMs = opts.withdrawMs ?? 5000
    this.maxWithdrawMs = opts.maxWithdrawMs ?? 10 * 60_000
  }

  /**
   * Records a peer's availability. Returns false (and forgets the peer for good) when its genesis
   * digest is of another chain.
   */
  update (peer: PeerId, info: { highestSynced: number, lowestAvailable: number, genesisDigest: Uint8Array }, rttMs?: number): boolean {
    const key = peer.toString()
    if (!bytesEqual(info.genesisDigest, this.chainId)) {
      this.wrongChain.set(key, { genesisDigest: toHex(info.genesisDigest), at: Date.now() })
      this.peers.delete(key)
      return false
    }
    const prev = this.peers.get(key) ?? this.departedInfo(key)
    const rtt = rttMs === undefined ? (prev?.rttMs ?? 1000) : prev === undefined ? rttMs : prev.rttMs * 0.7 + rttMs * 0.3
    const now = Date.now()
    // heights only rise: a stale answer racing a push never lowers what we know; a withdrawn claim is
    // capped until its withdrawal ends
    let height = Math.max(prev?.height ?? 0, info.highestSynced)
    if (prev !== undefined && now < prev.cappedUntil) height = Math.min(height, prev.cap)
    this.peers.set(key, {
      peer,
      height,
      lowest: info.lowestAvailable,
      rttMs: rtt,
      lastUpdated: now,
      served: prev?.served ?? 0,
      throughput: prev?.throughput ?? 0,
      claimFailures: prev?.claimFailures ?? 0,
      cappedUntil: prev?.cappedUntil ?? 0,
      cap: prev?.cap ?? 0
    })
    return true
  }

  /** The peer served commits up to `upTo`, verified, `commits` of them in `ms`. */
  served (peer: PeerId, upTo: number, commits: number, ms: number): void {
    const p = this.peers.get(peer.toString())
    if (p === undefined) return
    p.served = Math.max(p.served, upTo)
    const rate = commits / Math.max(ms, 1) * 1000
    p.throughput = p.throughput === 0 ? rate : p.throughput * 0.7 + rate * 0.3
    // served above where it failed: its claims are good again
    if (p.claimFailures > 0 && upTo >= p.cap + 1) { p.claimFailures = 0; p.cappedUntil = 0 }
  }

  /**
   * The peer failed to serve the range from `start`, within its claim: the claim is withdrawn (height
   * capped at `start - 1`) for withdrawMs · 2^(failures - 1). Returns the failure count (the caller
   * multiplies the penalty by the same power of two) and the withdrawal's length.
   */
  withdraw (peer: PeerId, start: number): { failures: number, claimed: number, forMs: number } {
    const key = peer.toString()
    const p = this.peers.get(key)
    if (p === undefined) return { failures: 0, claimed: 0, forMs: 0 }
    const claimed = p.height
    p.claimFailures++
    const forMs = Math.min(this.maxWithdrawMs, this.withdrawMs * 2 ** (p.claimFailures - 1))
    p.cap = Math.max(0, Math.min(p.height, start - 1))
    p.height = p.cap
    p.cappedUntil = Date.now() + forMs
    if (this.floorPeer === key) { this.floor = 0; this.floorPeer = undefined }
    return { failures: p.claimFailures, claimed, forMs }
  }

  isWrongChain (peer: PeerId): boolean { return this.wrongChain.has(peer.toString()) }

  /** Peers found on another chain: id → the genesis digest (hex) they announced, and when. */
  wrongChainDigests (): Map<string, { genesisDigest: string, at: number }> { return new Map(this.wrongChain) }

  remove (peer: PeerId): void {
    const key = peer.toString()
    const p = this.peers.get(key)
    if (p !== undefined && (p.served > 0 || p.claimFailures > 0)) {
      this.departed.set(key, { served: p.served, throughput: p.throughput, claimFailures: p.claimFailures, cappedUntil: p.cappedUntil, cap: p.cap })
      if (this.departed.size > 10_000) this.departed.delete(this.departed.keys().next().value!)
    }
    this.peers.delete(key)
  }

  private departedInfo (key: string): PeerStateSyncInfo | undefined {
    const d = this.departed.get(key)
    if (d === undefined) return undefined
    this.departed.delete(key)
    // a returning peer's height is learned afresh; what it proved or failed is kept
    return { peer: undefined as any, height: 0, lowest: 0, rttMs: 1000, lastUpdated: 0, ...d }
  }

  get (peer: PeerId): PeerStateSyncInfo | undefined { return this.peers.get(peer.toString()) }

  all (): PeerStateSyncInfo[] { return [...this.peers.values()] }

  get size (): number { return this.peers.size }

  /** Highest commit any known peer claims (withdrawn claims capped): what sync asks for. */
  highest (): number {
    let h = 0
    for (const p of this.peers.values()) h = Math.max(h, p.height)
    return h
  }

  /**
   * The sync target: the highest claim backed by verified data (see the file comment); never lower than
   * what it was, unless the claim that set it was withdrawn.
   */
  target (): number {
    const now = Date.now()
    const vouched = [...this.peers.entries()].filter(([, p]) => p.served > 0 && now >= p.cappedUntil).sort((a, b) => b[1].height - a[1].height)
    for (let i = 0; i < vouched.length; i++) {
      const [key, p] = vouched[i]
      if (p.height <= this.floor) break
      // the claim to beat: the next lower verified claim, and the target reached so far (set by another
      // peer, maybe one that left)
      const lower = vouched.slice(i + 1).find(([, q]) => q.height < p.height)?.[1].height ?? 0
      const bar = Math.max(lower, this.floorPeer === key ? 0 : this.floor)
      if (p.served > bar) {
        this.floor = p.height
        this.floorPeer = key
        break
      }
    }
    return this.floor
  }

  /** Peers known to be below `height`. */
  lowerThan (height: number): PeerStateSyncInfo[] {
    return this.all().filter(p => p.height < height)
  }

  /**
   * PushCommit's fan-out: at most `fanout` of the peers known to be below `height`, a fresh random
   * choice each time (all of them when there are no more than `fanout`). Pushing to every lower peer
   * makes every neighbour of a node that has a new commit first (a validator, a well-connected
   * entrypoint) fetch it from that node, so its load grows with its connection count; with a bounded
   * fan-out each node starts at most `fanout` fetches per new height, the others learn it from the
   * peers that fetched it (an epidemic: O(log N) hops) or from their next availability query.
   */
  pushTargets (height: number, fanout: number, random: () => number = Math.random): PeerStateSyncInfo[] {
    return randomSubset(this.lowerThan(height), fanout, random)
  }
}

/** At most `k` of `items`, a uniform random choice (all of them when there are no more than `k`). */
export function randomSubset<T> (items: readonly T[], k: number, random: () => number = Math.random): T[] {
  const a = [...items]
  const n = Math.max(0, Math.min(Math.floor(k), a.length))
  // a partial Fisher–Yates shuffle: the first n are a uniform random choice
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(random() * (a.length - i))
    const t = a[i]; a[i] = a[j]; a[j] = t
  }
  return a.slice(0, n)
}
