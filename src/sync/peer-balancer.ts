/**
 * PeerBalancer (seed 000): peers ordered by measured RTT; each `next()` picks at random within the
 * first SELECTION_WINDOW (2) remaining peers, skipping those that cannot serve the requested commit,
 * and falls back through the rest. Random picks within the window spread load and avoid hotspots.
 */
import type { PeerId } from '@libp2p/interface'
import type { PeerStateSyncInfo } from './peer-heights.ts'

export const SELECTION_WINDOW = 2

export class PeerBalancer implements Iterator<PeerId>, Iterable<PeerId> {
  private readonly peers: PeerStateSyncInfo[]
  private readonly requestedCommit: number
  private readonly random: () => number

  constructor (peers: readonly PeerStateSyncInfo[], requestedCommit?: number, random: () => number = Math.random) {
    this.peers = [...peers].sort((a, b) => a.rttMs - b.rttMs)
    this.requestedCommit = requestedCommit ?? 0
    this.random = random
  }

  next (): IteratorResult<PeerId> {
    while (this.peers.length > 0) {
      const idx = Math.floor(this.random() * Math.min(SELECTION_WINDOW, this.peers.length))
      const [info] = this.peers.splice(idx, 1)
      if (info.height >= this.requestedCommit && info.lowest <= this.requestedCommit) return { value: info.peer, done: false }
    }
    return { value: undefined, done: true }
  }

  [Symbol.iterator] (): Iterator<PeerId> { return this }
}
