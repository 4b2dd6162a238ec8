/**
 * Rate limits that price work: a serving node admits an inbound request only when the bytes it will
 * cost fit both the requesting peer's quota and the node's total quota. Each quota is a GCRA (generic
 * cell rate algorithm, the leaky-bucket form Lodestar's req/resp rate limiter uses): a rate in bytes per
 * second and a burst in bytes, kept as one number per key, the theoretical arrival time (TAT).
 *
 *   emission interval  T   = 1000 / rate          (ms per byte)
 *   tolerance          tau = burst · T
 *   admit(cost):  tat' = max(TAT, now) + cost · T;  admitted iff tat' − now ≤ tau  (then TAT = tat')
 *   refused:      retry after tat' − now − tau ms  (the time until the same request would be admitted)
 *
 * A request is priced up front by its worst case (its protocol's response limit, or the client's byte
 * budget for chunks), plus `requestBytes` for the work of any request; once the response is built the
 * charge is settled to what it really cost (the difference refunded). A cost above the burst is charged
 * as the burst (it is admitted when the bucket is empty, never refused for good).
 *
 * A refusal is answered as `error = "rate limited; retry after <ms> ms"` (protocols/README.md): clients
 * parse the hint with `parseRateLimited` and leave that peer alone for that long (RateLimitedError
 * carries it as `retryAfterMs`).
 */
import { RateLimitedError } from '../errors.ts'
import type { Logger } from '../utils/logger.ts'
import { DEFAULTS, type SomaConfig } from '../config.ts'

/** The refusal text's prefix (an old server sends it alone, without a hint). */
export const RATE_LIMITED = 'rate limited'
/** Hint assumed when a refusal carries none. */
export const DEFAULT_RETRY_AFTER_MS = 1000
/** Longest hint a client honours (a server cannot park us for longer). */
export const MAX_RETRY_AFTER_MS = 60_000

/** The refusal text with a retry hint. */
export function rateLimitedText (retryAfterMs: number): string {
  return `${RATE_LIMITED}; retry after ${Math.max(1, Math.ceil(retryAfterMs))} ms`
}

/**
 * The hint of a refusal text (ms, clamped to [1, MAX_RETRY_AFTER_MS]); undefined when the text is not a
 * rate-limit refusal.
 */
export function parseRateLimited (error: string | undefined): number | undefined {
  if (error === undefined || !error.startsWith(RATE_LIMITED)) return undefined
  if (error === RATE_LIMITED) return DEFAULT_RETRY_AFTER_MS
  const m = /^rate limited; retry after (\d{1,9}) ms$/.exec(error)
  if (m === null) return DEFAULT_RETRY_AFTER_MS
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(1, Number(m[1])))
}

/** The client's error for a refusal text, or undefined when it is another refusal. */
export function rateLimitedError (error: string | undefined, peer: string, protocol: string): RateLimitedError | undefined {
  const ms = parseRateLimited(error)
  if (ms === undefined) return undefined
  const err = new RateLimitedError(`${peer} rate-limited ${protocol}: retry after ${ms} ms`)
  err.retryAfterMs = ms
  return err
}

/** One GCRA: per key, the theoretical arrival time. */
export class Gcra {
  readonly bytesPerSecond: number
  readonly burstBytes: number
  private readonly msPerByte: number
  private readonly tau: number
  private readonly tat = new Map<string, number>()

  constructor (bytesPerSecond: number, burstBytes: number) {
    if (!(bytesPerSecond > 0) || !(burstBytes > 0)) throw new RangeError('a GCRA needs a positive rate and burst')
    this.bytesPerSecond = bytesPerSecond
    this.burstBytes = burstBytes
    this.msPerByte = 1000 / bytesPerSecond
    this.tau = burstBytes * this.msPerByte
  }

  /** Charges `cost` bytes to `key` and returns 0, or returns the ms to wait and charges nothing. */
  take (key: string, cost: number, now: number): number {
    const charged = Math.min(cost, this.burstBytes)
    const next = Math.max(this.tat.get(key) ?? now, now) + charged * this.msPerByte
    const over = next - now - this.tau
    if (over > 0) return over
    this.tat.set(key, next)
    if (this.tat.size > 4096) this.sweep(now)
    return 0
  }

  /** Adds (or, negative, refunds) `bytes` to what `key` was charged. */
  adjust (key: string, bytes: number): void {
    const t = this.tat.get(key)
    if (t !== undefined) this.tat.set(key, t + bytes * this.msPerByte)
  }

  /** Keys tracked (those whose bucket is not empty, after a sweep). */
  get size (): number { return this.tat.size }

  /** Forgets keys whose bucket has drained (their TAT is in the past). */
  sweep (now: number): void {
    for (const [k, t] of this.tat) if (t <= now) this.tat.delete(k)
  }
}

export interface ServeQuotaInit {
  /** Bytes per second one peer may be served (0: no per-peer byte limit). */
  peerBytesPerSecond: number
  /** Bytes one peer may be served at once after a pause. */
  peerBurstBytes: number
  /** Bytes per second all peers together may be served (0: no total limit). */
  totalBytesPerSecond: number
  /** Bytes all peers together may be served at once. */
  totalBurstBytes: number
  /** Price of any request besides its response bytes (its reading, lookup and framing). */
  requestBytes: number
  /**
   * Response bytes all admitted requests may hold at once, from admission until their response is
   * written (0: no limit). A request past it waits its turn (first come, first served) instead of
   * being refused: this is what bounds the serving node's memory (see `admit`, `hold`).
   */
  maxInflightBytes?: number
  /** Refusals are logged here at info (at most once per peer per `logEveryMs`). */
  log?: Logger
  /** @default 10 s */
  logEveryMs?: number
  /** @default performance.now */
  now?: () => number
}

/** Why a request was refused. */
export type RefusalReason = 'requests' | 'peer-bytes' | 'total-bytes'

export interface QuotaStats {
  admitted: number
  /** response bytes held by admitted requests now, and at most */
  inflightBytes: number
  peakInflightBytes: number
  /** requests that waited for in-flight room */
  queued: number
  /** bytes charged after settling (what was served, plus requestBytes per request) */
  chargedBytes: number
  refused: Record<RefusalReason, number>
}

/** What `admit` charged: settle it with the response's real size, release it once written. */
export interface QuotaTicket { peer: string, charged: number, held?: number }

/**
 * The node's serving quota, shared by every protocol it serves (src/net/rpc.ts and the chunk sessions
 * of src/snapshot/protocols/snapshot-chunks.ts). Counts refusals by reason; the request-count limit of
 * each protocol (RateLimiter, `--inbound-requests-per-second`) reports its refusals here as `requests`.
 */
export class ServeQuota {
  readonly init: Readonly<ServeQuotaInit>
  readonly stats: QuotaStats = { admitted: 0, inflightBytes: 0, peakInflightBytes: 0, queued: 0, chargedBytes: 0, refused: { requests: 0, 'peer-bytes': 0, 'total-bytes': 0 } }
  private readonly waiting: Array<{ bytes: number, resolve: () => void }> = []
  private readonly peer?: Gcra
  private readonly total?: Gcra
  private readonly now: () => number
  private readonly lastLog = new Map<string, { at: number, count: number }>()

  constructor (init: ServeQuotaInit) {
    this.init = init
    if (init.peerBytesPerSecond > 0) this.peer = new Gcra(init.peerBytesPerSecond, Math.max(1, init.peerBurstBytes))
    if (init.totalBytesPerSecond > 0) this.total = new Gcra(init.totalBytesPerSecond, Math.max(1, init.totalBurstBytes))
    this.now = init.now ?? (() => performance.now())
  }

  /**
   * Admits a request expected to cost at most `responseBytes` (plus `requestBytes`) to `peer`: a ticket,
   * or the ms after which the same request would be admitted (and the reason).
   */
  admit (peer: string, responseBytes: number, protocol = ''): QuotaTicket | { retryAfterMs: number, reason: RefusalReason } {
    const cost = this.init.requestBytes + Math.max(0, responseBytes)
    const now = this.now()
    if (this.peer !== undefined) {
      const wait = this.peer.take(peer, cost, now)
      if (wait > 0) return this.refused(peer, 'peer-bytes', wait, protocol)
    }
    if (this.total !== undefined) {
      const wait = this.total.take('', cost, now)
      if (wait > 0) {
        this.peer?.adjust(peer, -Math.min(cost, this.peer.burstBytes))
        return this.refused(peer, 'total-bytes', wait, protocol)
      }
    }
    this.stats.admitted++
    return { peer, charged: cost }
  }

  /** Settles an admitted request to what its response really was (refunds or charges the difference). */
  settle (ticket: QuotaTicket, responseBytes: number): void {
    const real = this.init.requestBytes + Math.max(0, responseBytes)
    const charged = Math.min(ticket.charged, this.peer?.burstBytes ?? Infinity)
    const chargedTotal = Math.min(ticket.charged, this.total?.burstBytes ?? Infinity)
    this.peer?.adjust(ticket.peer, real - charged)
    this.total?.adjust('', real - chargedTotal)
    this.stats.chargedBytes += real
  }

  /**
   * Holds `bytes` (at most `maxInflightBytes`) of in-flight room for an admitted request, waiting first
   * come, first served while there is none; `release` gives it back. Throws the signal's reason.
   */
  async hold (ticket: QuotaTicket, bytes: number, signal?: AbortSignal): Promise<void> {
    const max = this.init.maxInflightBytes ?? 0
    const want = max > 0 ? Math.min(Math.max(0, bytes), max) : Math.max(0, bytes)
    if (max > 0 && (this.waiting.length > 0 || this.stats.inflightBytes + want > max)) {
      this.stats.queued++
      await new Promise<void>((resolve, reject) => {
        const entry = { bytes: want, resolve: () => { signal?.removeEventListener('abort', onAbort); resolve() } }
        const onAbort = (): void => {
          const i = this.waiting.indexOf(entry)
          if (i >= 0) this.waiting.splice(i, 1)
          this.drain()
          reject(signal!.reason)
        }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.waiting.push(entry)
      })
    } else {
      this.stats.inflightBytes += want
    }
    ticket.held = want
    this.stats.peakInflightBytes = Math.max(this.stats.peakInflightBytes, this.stats.inflightBytes)
  }

  /** Shrinks (or grows) what a ticket holds to `bytes`: the response's real size, once it is built. */
  resize (ticket: QuotaTicket, bytes: number): void {
    if (ticket.held === undefined) return
    this.stats.inflightBytes += bytes - ticket.held
    ticket.held = bytes
    this.stats.peakInflightBytes = Math.max(this.stats.peakInflightBytes, this.stats.inflightBytes)
    this.drain()
  }

  /** Gives a ticket's in-flight room back (idempotent). */
  release (ticket: QuotaTicket): void {
    if (ticket.held === undefined) return
    this.stats.inflightBytes -= ticket.held
    ticket.held = undefined
    this.drain()
  }

  private drain (): void {
    const max = this.init.maxInflightBytes ?? 0
    while (this.waiting.length > 0 && (max <= 0 || this.stats.inflightBytes + this.waiting[0].bytes <= max)) {
      const w = this.waiting.shift()!
      this.stats.inflightBytes += w.bytes
      w.resolve()
    }
  }

  /** Records a refusal by the request-count limiter. */
  refusedRequests (peer: string, retryAfterMs: number, protocol = ''): number {
    return this.refused(peer, 'requests', retryAfterMs, protocol).retryAfterMs
  }

  private refused (peer: string, reason: RefusalReason, retryAfterMs: number, protocol: string): { retryAfterMs: number, reason: RefusalReason } {
    this.stats.refused[reason]++
    const log = this.init.log
    if (log !== undefined) {
      const now = this.now()
      const every = this.init.logEveryMs ?? 10_000
      const last = this.lastLog.get(peer)
      if (last === undefined || now - last.at >= every) {
        const more = last === undefined || last.count === 0 ? '' : ` (${last.count} more refusals since the last line)`
        log.info('rate limited %s on %s (%s): retry after %d ms%s', peer, protocol, reason, Math.ceil(retryAfterMs), more)
        this.lastLog.set(peer, { at: now, count: 0 })
        if (this.lastLog.size > 4096) this.lastLog.clear()
      } else {
        last.count++
      }
    }
    return { retryAfterMs: Math.ceil(retryAfterMs), reason }
  }
}

/** The node's serving quota from its config (`--serve-*` options). */
export function serveQuota (config: Partial<SomaConfig> = {}, log?: Logger): ServeQuota {
  const v = <K extends keyof SomaConfig>(k: K): number => (config[k] ?? DEFAULTS[k]) as number
  return new ServeQuota({
    peerBytesPerSecond: v('servePeerBytesPerSecond'),
    peerBurstBytes: v('servePeerBurstBytes'),
    totalBytesPerSecond: v('serveTotalBytesPerSecond'),
    totalBurstBytes: v('serveTotalBurstBytes'),
    requestBytes: v('serveRequestBytes'),
    maxInflightBytes: v('serveMaxInflightBytes'),
    log
  })
}

/** Per-peer "not before" times from rate-limit hints: a client leaves a peer alone until its hint passes. */
export class PeerBackoff {
  private readonly until = new Map<string, number>()
  private readonly now: () => number
  /** hints honoured so far */
  holds = 0

  constructor (now: () => number = Date.now) {
    this.now = now
  }

  /** Leaves `peer` alone for `ms`. */
  hold (peer: string, ms: number): void {
    this.holds++
    const t = this.now() + Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms))
    if (t > (this.until.get(peer) ?? 0)) this.until.set(peer, t)
  }

  /** Ms left before `peer` may be asked again (0: now). */
  remaining (peer: string): number {
    const t = this.until.get(peer)
    if (t === undefined) return 0
    const left = t - this.now()
    if (left <= 0) { this.until.delete(peer); return 0 }
    return left
  }

  isHeld (peer: string): boolean { return this.remaining(peer) > 0 }
}
