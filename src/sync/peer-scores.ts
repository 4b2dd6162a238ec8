/**
 * Peer scores: every error a peer causes costs it the penalty of src/errors.ts' table; a peer whose
 * score reaches PEER_BAN_SCORE is banned for `banMs` (not asked again, disconnected by the caller).
 * Successful requests slowly restore the score.
 */
import type { PeerId } from '@libp2p/interface'
import { penaltyFor, PEER_BAN_SCORE } from '../errors.ts'
import type { Logger } from '../utils/logger.ts'

export interface PenaltyRecord { peer: string, error: string, penalty: number, score: number, at: number }

export class PeerScores {
  private readonly banMs: number
  private readonly scores = new Map<string, number>()
  private readonly bannedUntil = new Map<string, number>()
  /** recent penalties, newest last (bounded), for status and tests */
  readonly history: PenaltyRecord[] = []
  /** when set, every penalty and ban is logged at warn (peer, reason, points, score; ban end) */
  logger?: Logger

  constructor (banMs: number) {
    this.banMs = banMs
  }

  score (peer: PeerId): number { return this.scores.get(peer.toString()) ?? 0 }

  /**
   * Applies the penalty for `err`, times `weight` (repeated failures of one kind cost more: e.g. the
   * n-th withdrawn claim costs 2^(n-1) times the table's penalty); returns true when the peer is now banned.
   */
  penalize (peer: PeerId, err: unknown, weight = 1): boolean {
    const key = peer.toString()
    const penalty = penaltyFor(err) * weight
    if (penalty === 0) return false
    const score = this.score(peer) - penalty
    this.scores.set(key, score)
    this.history.push({ peer: key, error: (err as any)?.name ?? 'Error', penalty, score, at: Date.now() })
    if (this.history.length > 1000) this.history.shift()
    const reason = (err as any)?.name ?? 'Error'
    for (const fn of this.penaltyListeners) fn(key, reason, penalty)
    this.logger?.warn('penalty: peer %s, %s, %d points (score %d): %s', key, reason, penalty, score, (err as any)?.message ?? String(err))
    if (score <= PEER_BAN_SCORE) {
      const until = Date.now() + this.banMs
      this.bannedUntil.set(key, until)
      this.scores.set(key, 0)
      this.logger?.warn('ban: peer %s banned until %s (%s)', key, new Date(until).toISOString(), reason)
      for (const fn of this.banListeners) fn(key, reason, until)
      return true
    }
    return false
  }

  private readonly banListeners: Array<(peer: string, reason: string, until: number) => void> = []
  private readonly penaltyListeners: Array<(peer: string, reason: string, points: number) => void> = []

  /** Calls `fn` at each ban (metrics). */
  onBan (fn: (peer: string, reason: string, until: number) => void): void { this.banListeners.push(fn) }

  /** Calls `fn` at each penalty (metrics). */
  onPenalty (fn: (peer: string, reason: string, points: number) => void): void { this.penaltyListeners.push(fn) }

  /** When the peer's ban ends (ms since the epoch), or undefined when it is not banned. */
  bannedUntilOf (peer: PeerId | string): number | undefined {
    const until = this.bannedUntil.get(peer.toString())
    return until !== undefined && until > Date.now() ? until : undefined
  }

  reward (peer: PeerId): void {
    const s = this.score(peer)
    if (s < 0) this.scores.set(peer.toString(), Math.min(0, s + 1))
  }

  isBanned (peer: PeerId): boolean {
    const until = this.bannedUntil.get(peer.toString())
    if (until === undefined) return false
    if (Date.now() >= until) { this.bannedUntil.delete(peer.toString()); return false }
    return true
  }

  /** When the peer's ban ends (undefined: not banned). */
  banEnd (peer: PeerId): number | undefined {
    return this.isBanned(peer) ? this.bannedUntil.get(peer.toString()) : undefined
  }

  /** Peers banned now, with when each ban ends. */
  banned (): Array<{ peer: string, until: number }> {
    const now = Date.now()
    return [...this.bannedUntil.entries()].filter(([, until]) => until > now).map(([peer, until]) => ({ peer, until }))
  }

  penaltiesOf (peer: PeerId): PenaltyRecord[] {
    return this.history.filter(h => h.peer === peer.toString())
  }
}
