/**
 * PeerBalancer (seed 000): the peers that can serve the requested commit, ordered by measured
 * throughput of the verified ranges they served (commits per second, fastest first; peers not measured
 * yet come first, so that each gets tried, then by RTT); each `next()` picks at random within the first
 * SELECTION_WINDOW (2) remaining peers, and falls back through the rest. Random picks within the window
 * spread load and avoid hotspots; a peer measured at less than half the throughput of the one before it
 * is left out of the window (a peer that answers just before the timeout is asked last).
 */
import type { PeerId } from '@libp2p/interface'
import type { PeerStateSyncInfo } from './peer-heights.ts'

export const SELECTION_WINDOW = 2

/** A peer slower than this fraction of the best in the window is not picked at random with it. */
export const SLOW_PEER_RATIO = 0.5

type BalancedPeer = Pick<PeerStateSyncInfo, 'peer' | 'height' | 'lowest' | 'rttMs'> & { throughput?: number }

export class PeerBalancer implements Iterator<PeerId>, Iterable<PeerId> {
  private readonly peers: BalancedPeer[]
  private readonly random: () => number

  constructor (peers: readonly BalancedPeer[], requestedCommit?: number, random: () => number = Math.random) {
    const req = requestedCommit ?? 0
    const tp = (p: BalancedPeer): number => (p.throughput === undefined || p.throughput === 0) ? Infinity : p.throughput
    this.peers = peers.filter(p => p.height >= req && p.lowest <= req)
      .sort((a, b) => (tp(b) === tp(a) ? 0 : tp(b) > tp(a) ? 1 : -1) || a.rttMs - b.rttMs)
    this.random = random
  }

  next (): IteratorResult<PeerId> {
    if (this.peers.length === 0) return { value: undefined, done: true }
    let window = Math.min(SELECTION_WINDOW, this.peers.length)
    const first = this.peers[0].throughput ?? 0
    const second = this.peers[1]?.throughput ?? 0
    if (window > 1 && first > 0 && second > 0 && second < first * SLOW_PEER_RATIO) window = 1
    const idx = Math.floor(this.random() * window)
    const [info] = this.peers.splice(idx, 1)
    return { value: info.peer, done: false }
  }

  [Symbol.iterator] (): Iterator<PeerId> { return this }
}
