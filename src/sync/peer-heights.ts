/**
 * PeerHeights: what each peer can serve — highest synced and lowest available commit — its genesis
 * digest and measured RTT. A peer of another chain is dropped and never asked again.
 */
import type { PeerId } from '@libp2p/interface'
import { bytesEqual } from '../crypto/hash.ts'

export interface PeerStateSyncInfo {
  peer: PeerId
  /** highest synced commit */
  height: number
  /** lowest available commit */
  lowest: number
  /** smoothed round-trip time of availability queries, ms */
  rttMs: number
  lastUpdated: number
}

export class PeerHeights {
  private readonly chainId: Uint8Array
  private readonly peers = new Map<string, PeerStateSyncInfo>()
  private readonly wrongChain = new Set<string>()

  constructor (chainId: Uint8Array) {
    this.chainId = chainId
  }

  /**
   * Records a peer's availability. Returns false (and forgets the peer for good) when its genesis
   * digest is of another chain.
   */
  update (peer: PeerId, info: { highestSynced: number, lowestAvailable: number, genesisDigest: Uint8Array }, rttMs?: number): boolean {
    const key = peer.toString()
    if (!bytesEqual(info.genesisDigest, this.chainId)) {
      this.wrongChain.add(key)
      this.peers.delete(key)
      return false
    }
    const prev = this.peers.get(key)
    const rtt = rttMs === undefined ? (prev?.rttMs ?? 1000) : prev === undefined ? rttMs : prev.rttMs * 0.7 + rttMs * 0.3
    this.peers.set(key, {
      peer,
      // heights only rise: a stale answer racing a push never lowers what we know
      height: Math.max(prev?.height ?? 0, info.highestSynced),
      lowest: info.lowestAvailable,
      rttMs: rtt,
      lastUpdated: Date.now()
    })
    return true
  }

  isWrongChain (peer: PeerId): boolean { return this.wrongChain.has(peer.toString()) }

  remove (peer: PeerId): void { this.peers.delete(peer.toString()) }

  get (peer: PeerId): PeerStateSyncInfo | undefined { return this.peers.get(peer.toString()) }

  all (): PeerStateSyncInfo[] { return [...this.peers.values()] }

  get size (): number { return this.peers.size }

  /** Highest commit any known peer has. */
  highest (): number {
    let h = 0
    for (const p of this.peers.values()) h = Math.max(h, p.height)
    return h
  }

  /** Peers known to be below `height`: the ones to notify with PushCommit. */
  lowerThan (height: number): PeerStateSyncInfo[] {
    return this.all().filter(p => p.height < height)
  }
}
