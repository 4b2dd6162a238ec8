/**
 * A request/response protocol over libp2p streams: one length-prefixed protobuf request, one response,
 * then the stream is closed (or aborted on any error). The base of every /soma/* protocol service.
 *
 * Server side: per-peer rate limit (RateLimiter from @libp2p/utils), a time limit on every handler,
 * `maxDataLength` on every read, inbound/outbound stream limits per connection.
 * Client side: every request takes an AbortSignal, and gets a timeout when the caller gives none.
 */
import { RateLimiter } from '@libp2p/utils'
import type { AbortOptions, ComponentLogger, Connection, Logger, PeerId, Startable, Stream } from '@libp2p/interface'
import type { ConnectionManager, Registrar } from '@libp2p/interface-internal'
import type { Codec } from '../chain/proto.ts'
import { MalformedMessageError, OversizedFrameError, PeerRequestFailedError, PeerTimeoutError, RateLimitedError, OversizedResponseError } from '../errors.ts'
import { FrameStream } from './framing.ts'
import { InboundGuard } from './inbound-guard.ts'
import type { Logger as NodeLogger } from '../utils/logger.ts'
import { rateLimitedError, rateLimitedText, type QuotaTicket, type ServeQuota } from './rate-limit.ts'

export interface RpcComponents {
  registrar: Registrar
  connectionManager: ConnectionManager
  logger: ComponentLogger
}

export interface RpcInit {
  /** Inbound streams per connection. @default 32 */
  maxInboundStreams?: number
  /** Outbound streams per connection. @default 64 */
  maxOutboundStreams?: number
  /** Largest request accepted. @default 64 KiB */
  maxRequestBytes?: number
  /** Largest response accepted (and sent). @default 4 MiB + 64 KiB of framing */
  maxResponseBytes?: number
  /** Client timeout when the caller passes no signal. @default 30 s */
  timeoutMs?: number
  /** Time limit of one inbound request. @default 30 s */
  handlerTimeoutMs?: number
  /** Inbound requests one peer may make per second. @default 50 */
  requestsPerSecond?: number
  /** Serve inbound requests (false: client only). @default true */
  serve?: boolean
  /** Scores of peers that break the framing or send undecodable requests (one per node). @default a guard of its own */
  guard?: InboundGuard
  /**
   * The node's logger: inbound failures worth an operator's attention (a malformed request, a handler
   * that failed on our side) are logged there at info/warn; the rest (resets, timeouts) at debug.
   * @default only libp2p's debug logger (DEBUG=soma:rpc:*)
   */
  logger?: NodeLogger
  /** The node's byte quota (per peer and total, src/net/rate-limit.ts), shared by every protocol it serves. */
  quota?: ServeQuota
  /** Worst-case response bytes of a request, charged to the quota up front. @default 0 (only the quota's per-request price) */
  price?: (req: any) => number
}

/** Logs a failed inbound request or session on the node's logger, at a level by what failed. */
export function logInboundFailure (log: NodeLogger | undefined, protocol: string, peer: PeerId, err: any): void {
  if (log === undefined) return
  const what = `${protocol}: inbound request from ${peer.toString()} failed: ${errorText(err)}`
  if (err instanceof MalformedMessageError || err?.name === 'InvalidDataLengthError' || err?.name === 'InvalidMessageLengthError') log.info('%s (peer sent a malformed request)', what)
  else if (err instanceof OversizedResponseError || (err?.code !== undefined && /^ERR_(STORE|CORRUPT_STORE)/.test(err.code))) log.warn('%s', what)
  else log.debug('%s', what)
}

export interface RequestOptions extends AbortOptions {
  /** response limit of this request. @default the protocol's maxResponseBytes */
  maxResponseBytes?: number
}

export interface RequestContext {
  peer: PeerId
  connection: Connection
  signal: AbortSignal
}

export type Handler<Req, Res> = (req: Req, ctx: RequestContext) => Promise<Res>

export interface RpcStats {
  inbound: number
  inboundErrors: number
  rateLimited: number
  outbound: number
  outboundErrors: number
}

/** A response type with an optional refusal message. */
interface WithError { error?: string }

export class RpcProtocol<Req, Res extends WithError> implements Startable {
  readonly protocol: string
  readonly maxInboundStreams: number
  readonly maxOutboundStreams: number
  readonly maxRequestBytes: number
  readonly maxResponseBytes: number
  readonly timeoutMs: number
  readonly handlerTimeoutMs: number
  readonly stats: RpcStats = { inbound: 0, inboundErrors: 0, rateLimited: 0, outbound: 0, outboundErrors: 0 }
  /** penalizes peers that break the framing or send undecodable requests */
  readonly guard: InboundGuard
  private readonly components: RpcComponents
  private readonly reqCodec: Codec<Req>
  private readonly resCodec: Codec<Res>
  private readonly handler?: Handler<Req, Res>
  private readonly serve: boolean
  private readonly limiter: RateLimiter
  private readonly quota?: ServeQuota
  private readonly price?: (req: Req) => number
  private readonly log: Logger
  private readonly nodeLog?: NodeLogger
  private started = false

  constructor (components: RpcComponents, protocol: string, codecs: { request: Codec<Req>, response: Codec<Res> }, init: RpcInit, handler?: Handler<Req, Res>) {
    this.components = components
    this.protocol = protocol
    this.reqCodec = codecs.request
    this.resCodec = codecs.response
    this.handler = handler
    this.maxInboundStreams = init.maxInboundStreams ?? 32
    this.maxOutboundStreams = init.maxOutboundStreams ?? 64
    this.maxRequestBytes = init.maxRequestBytes ?? 64 * 1024
    this.maxResponseBytes = init.maxResponseBytes ?? 4 * 1024 * 1024 + 64 * 1024
    this.timeoutMs = init.timeoutMs ?? 30_000
    this.handlerTimeoutMs = init.handlerTimeoutMs ?? 30_000
    this.serve = init.serve ?? true
    this.guard = init.guard ?? new InboundGuard()
    this.limiter = new RateLimiter({ points: init.requestsPerSecond ?? 50, duration: 1 })
    this.quota = init.quota
    this.price = init.price
    this.log = components.logger.forComponent(`soma:rpc:${protocol}`)
    this.nodeLog = init.logger
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    if (this.serve && this.handler !== undefined) {
      await this.components.registrar.handle(this.protocol, (stream, connection) => {
        void this.onStream(stream, connection)
      }, { maxInboundStreams: this.maxInboundStreams, maxOutboundStreams: this.maxOutboundStreams })
    }
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    if (this.serve && this.handler !== undefined) await this.components.registrar.unhandle(this.protocol)
  }

  isStarted (): boolean { return this.started }

  private async onStream (stream: Stream, connection: Connection): Promise<void> {
    this.stats.inbound++
    const peer = connection.remotePeer
    if (this.guard.isBanned(peer)) {
      this.stats.inboundErrors++
      stream.abort(new PeerRequestFailedError(`${peer.toString()} is banned`))
      return
    }
    const signal = AbortSignal.timeout(this.handlerTimeoutMs)
    // one request per stream: buffer little more than one request, so unread bytes cannot pile up
    const frames = new FrameStream(stream, { maxDataLength: this.maxRequestBytes, maxBufferSize: this.maxRequestBytes + 1024, what: `${this.protocol} request` })
    let req: Req
    try {
      // the request is read (it is bounded by maxRequestBytes) even when the peer is over its rate: a
      // refusal written before it would race the client's write and reach it as a reset stream. A
      // malformed length prefix or request resets the stream at once and costs the peer its penalty.
      req = await frames.readPb(this.reqCodec, { signal })
    } catch (err: any) {
      this.stats.inboundErrors++
      stream.abort(err)
      if (err instanceof MalformedMessageError || err instanceof OversizedResponseError) {
        this.guard.penalize(peer, this.protocol, err, async () => { await this.components.connectionManager.closeConnections(peer) })
      } else {
        this.log('inbound request from %p failed: %s', peer, err.message)
        logInboundFailure(this.nodeLog, this.protocol, peer, err)
      }
      return
    }
    let ticket: QuotaTicket | undefined
    try {
      const price = this.price?.(req) ?? 0
      const admitted = admitRequest(this.limiter, this.quota, peer.toString(), this.protocol, price)
      if (typeof admitted === 'number') {
        this.stats.rateLimited++
        await frames.writePb({ error: rateLimitedText(admitted) } as Res, this.resCodec, { signal })
        await stream.close({ signal })
        return
      }
      // the response's worst case is held in the node's in-flight room until it is written
      if (admitted !== undefined) { ticket = admitted; await this.quota!.hold(ticket, price, signal) }
      const res = await this.handler!(req, { peer, connection, signal })
      const bytes = this.resCodec.encode(res)
      if (ticket !== undefined) { this.quota!.settle(ticket, bytes.byteLength); this.quota!.resize(ticket, bytes.byteLength) }
      if (bytes.byteLength > this.maxResponseBytes) throw new OversizedResponseError(`${this.protocol}: response of ${bytes.byteLength} bytes exceeds ${this.maxResponseBytes}`)
      await frames.write(bytes, { signal })
      await stream.close({ signal })
    } catch (err: any) {
      this.stats.inboundErrors++
      this.log('inbound request from %p failed: %s', peer, err.message)
      logInboundFailure(this.nodeLog, this.protocol, peer, err)
      stream.abort(err)
    } finally {
      if (ticket !== undefined) this.quota!.release(ticket)
    }
  }

  /**
   * Sends one request and reads the response. Throws PeerTimeoutError, PeerRequestFailedError (the
   * peer refused or the stream failed), MalformedMessageError or OversizedResponseError.
   * `maxResponseBytes` overrides the protocol's response limit for this request (e.g. a snapshot filter,
   * whose size the attested manifest gives).
   */
  async request (peer: PeerId, req: Req, options: RequestOptions = {}): Promise<Res> {
    this.stats.outbound++
    const timeout = options.signal === undefined ? AbortSignal.timeout(this.timeoutMs) : undefined
    const signal = options.signal ?? timeout!
    let stream: Stream | undefined
    try {
      stream = await this.components.connectionManager.openStream(peer, this.protocol, { signal })
      const max = options.maxResponseBytes ?? this.maxResponseBytes
      const frames = new FrameStream(stream, { maxDataLength: max, maxBufferSize: bufferFor(max), what: `${this.protocol} response` })
      await frames.writePb(req, this.reqCodec, { signal })
      const res = await frames.readPb(this.resCodec, { signal })
      await stream.close({ signal })
      if (res.error != null && res.error !== '') {
        const limited = rateLimitedError(res.error, peer.toString(), this.protocol)
        if (limited !== undefined) throw limited
        throw new PeerRequestFailedError(`${peer.toString()} refused ${this.protocol}: ${res.error}`)
      }
      return res
    } catch (err: any) {
      this.stats.outboundErrors++
      stream?.abort(err)
      throw classifyError(err, signal, peer, this.protocol, timeout !== undefined ? this.timeoutMs : undefined)
    }
  }
}

/**
 * The rate-limit check of one inbound request: the protocol's request count per peer, then the node's
 * byte quota priced by `price` (the request's worst-case response bytes). Returns the quota's ticket
 * (settle it with the response size; undefined without a quota) or the ms the peer should wait.
 */
export function admitRequest (limiter: RateLimiter, quota: ServeQuota | undefined, peer: string, protocol: string, price: number): QuotaTicket | number | undefined {
  try {
    limiter.consume(peer)
  } catch (err: any) {
    const wait = typeof err?.msBeforeNext === 'number' && err.msBeforeNext > 0 ? err.msBeforeNext : 1000
    return quota === undefined ? Math.ceil(wait) : quota.refusedRequests(peer, wait, protocol)
  }
  if (quota === undefined) return undefined
  const t = quota.admit(peer, price, protocol)
  return 'retryAfterMs' in t ? t.retryAfterMs : t
}

/**
 * The read buffer a stream needs to receive one message of up to `maxDataLength` bytes (@libp2p/utils
 * buffers a whole message and refuses more than 4 MiB by default: a larger filter or chunk would fail).
 */
export function bufferFor (maxDataLength: number): number {
  return Math.max(4 * 1024 * 1024, maxDataLength + 64 * 1024)
}

/**
 * An error's message for a log line. libp2p rejects some waits (a stream's drain, a read) with the
 * stream's `close` Event itself rather than an Error, whose String() is "[object Event]": that is said
 * as the stream closing, with the error it closed with, if any.
 */
export function errorText (err: any): string {
  if (err instanceof Event) {
    const cause = (err as Event & { error?: Error }).error
    return `the stream ${err.type === 'close' ? 'closed' : `sent "${err.type}"`}${cause?.message !== undefined ? ` (${cause.message})` : ' (its connection was closed or reset)'}`
  }
  return err?.message ?? String(err)
}

/** Turns stream and codec errors into our named errors. */
export function classifyError (err: any, signal: AbortSignal, peer: PeerId, protocol: string, timeoutMs?: number): Error {
  // a response whose length prefix declares more than the client reads: the response is oversized
  if (err instanceof OversizedFrameError) return new OversizedResponseError(`${peer.toString()} sent a ${protocol} message over the size limit (${err.message})`, { cause: err })
  if (err instanceof MalformedMessageError || err instanceof PeerRequestFailedError || err instanceof RateLimitedError || err instanceof OversizedResponseError) return err
  if (err?.name === 'InvalidDataLengthError' || err?.code === 'ERR_MSG_DATA_TOO_LONG') {
    return new OversizedResponseError(`${peer.toString()} sent a ${protocol} message over the size limit`, { cause: err })
  }
  if (signal.aborted) {
    const reason = signal.reason
    if (reason?.name === 'TimeoutError' || timeoutMs !== undefined) return new PeerTimeoutError(`${peer.toString()} did not answer ${protocol}${timeoutMs !== undefined ? ` within ${timeoutMs} ms` : ''}`, { cause: err })
    return reason instanceof Error ? reason : err
  }
  if (err?.name === 'UnexpectedEOFError' || /end of stream|EOF/i.test(String(err?.message))) {
    return new PeerRequestFailedError(`${peer.toString()} closed the ${protocol} stream without answering`, { cause: err })
  }
  if (err?.name === 'RangeError' || /invalid wire type|index out of range/i.test(String(err?.message))) {
    return new MalformedMessageError(`${peer.toString()} sent a malformed ${protocol} message: ${err.message}`, { cause: err })
  }
  return new PeerRequestFailedError(`${protocol} request to ${peer.toString()} failed: ${errorText(err)}`, { cause: err })
}
