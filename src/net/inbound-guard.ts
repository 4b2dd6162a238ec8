/**
 * The serving side's peer scores. A peer that breaks a protocol on a stream it opened to us (a length
 * prefix that is no valid varint, a declared length beyond the protocol's limit, a request that does
 * not decode) loses the points of src/errors.ts' table (PEER_PENALTIES), the event is logged at warn,
 * and at PEER_BAN_SCORE the peer is banned: its connections are closed and, for `banMs`, every stream
 * it opens to a /soma/* protocol is reset before anything is read.
 *
 * One guard per node, shared by every protocol service (RpcInit.guard); a service given none makes its
 * own (library use, tests).
 */
import type { PeerId } from '@libp2p/interface'
import { PeerScores } from '../sync/peer-scores.ts'
import { penaltyFor } from '../errors.ts'
import { silentLogger, type Logger } from '../utils/logger.ts'
import { DEFAULTS } from '../config.ts'

export interface InboundGuardInit {
  /** How long a banned peer's streams are refused. @default config peerBanMs */
  banMs?: number
  /** where penalties and bans go (at warn). @default silent */
  log?: Logger
}

export class InboundGuard {
  readonly scores: PeerScores
  private readonly banMs: number
  private readonly log: Logger

  constructor (init: InboundGuardInit = {}) {
    this.banMs = init.banMs ?? DEFAULTS.peerBanMs
    this.scores = new PeerScores(this.banMs)
    this.log = init.log ?? silentLogger('inbound')
  }

  /**
   * A peer broke `protocol` on an inbound stream: applies the penalty for `err`, logs it at warn, and
   * on a ban calls `disconnect`. Returns true when the peer is now banned. Errors that are no peer's
   * fault (penalty 0) are ignored.
   */
  penalize (peer: PeerId, protocol: string, err: unknown, disconnect?: () => Promise<void>): boolean {
    if (penaltyFor(err) === 0) return false
    const banned = this.scores.penalize(peer, err)
    const name = (err as any)?.name ?? 'Error'
    this.log.warn('peer %s on %s: %s: %s (-%d, score %d)', peer.toString(), protocol, name, (err as any)?.message ?? String(err), penaltyFor(err), this.scores.score(peer))
    if (banned) {
      this.log.warn('peer %s banned for %d s: its streams are refused and its connections closed', peer.toString(), Math.round(this.banMs / 1000))
      void disconnect?.().catch(() => {})
    }
    return banned
  }

  isBanned (peer: PeerId): boolean { return this.scores.isBanned(peer) }

  /** The peer's score (0 when it never misbehaved; it restarts at 0 after a ban). */
  score (peer: PeerId): number { return this.scores.score(peer) }
}
