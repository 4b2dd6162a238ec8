/**
 * /soma/snapshot-chunks/1.0.0 — chunks by hash. Content-addressed: the server answers from every chunk
 * it stores (bucket 0x11), whichever of its snapshots lists it. At most `maxChunksPerRequest` hashes per
 * request; the answer is the longest prefix of the hashes, in the order asked, that the server stores
 * and whose encoding fits its `maxChunkResponseBytes` and the client's budget — but always the first
 * chunk when it is stored, however large (a chunk is at most the manifest's max_chunk_bytes plus one
 * entry), up to `maxChunkBytes`.
 *
 * Unlike the other /soma/* protocols (one request per stream, src/net/rpc.ts), a chunk stream is a
 * *session*: the client sends requests one after another on the same stream and the server answers each
 * in order, until the client closes it (or it stays idle for `handlerTimeoutMs`). A fresh stream starts
 * with yamux's 256 KiB window and needs several round trips to grow it; measured here, one stream per
 * 4 MiB response delivers ~80 MiB/s where long-lived streams approach the raw stream rate. Every request
 * is still rate limited (per peer), size limited and time limited like an RPC, and a failed request
 * aborts its session (the client opens another).
 *
 * Responses are encoded straight from the stored bytes (messages.ts) and decoded as views into the
 * received message.
 */
import { RateLimiter } from '@libp2p/utils'
import { serviceCapabilities, type AbortOptions, type Connection, type Logger, type PeerId, type Startable, type Stream } from '@libp2p/interface'
import { admitRequest, bufferFor, classifyError, logInboundFailure, type RpcComponents, type RpcInit, type RpcStats } from '../../net/rpc.ts'
import { parseRateLimited, rateLimitedError, rateLimitedText, type QuotaTicket, type ServeQuota } from '../../net/rate-limit.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { SnapshotStore } from '../snapshot-store.ts'
import { MalformedMessageError, OversizedResponseError, PeerRequestFailedError, ProtocolViolationError, RateLimitedError, SomaError } from '../../errors.ts'
import { FrameStream } from '../../net/framing.ts'
import { InboundGuard } from '../../net/inbound-guard.ts'
import { DEFAULTS } from '../../config.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_CHUNKS, lengthDelimitedSize, encodeChunksResponseList, type GetSnapshotChunksRequest, type GetSnapshotChunksResponse } from './messages.ts'

export const DEFAULT_MAX_CHUNKS_PER_REQUEST = 1024
export const DEFAULT_CHUNK_RESPONSE_BYTES = 4 * 1024 * 1024
/** Largest single chunk served or accepted (4 × the default 1 MiB target is 4 MiB; room for one entry). */
export const DEFAULT_MAX_CHUNK_BYTES = 32 * 1024 * 1024

export interface SnapshotChunksInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
  /** Most hashes per request (served and asked). @default 1024 */
  maxChunksPerRequest?: number
  /** Most chunk bytes per response, unless the first chunk alone is larger. @default 4 MiB */
  maxChunkResponseBytes?: number
  /** Largest chunk served or accepted. @default 32 MiB */
  maxChunkBytes?: number
  /**
   * Most chunk bytes held for responses over all sessions this node serves (read from the store and not
   * yet taken by the streams), half of it for one peer: a session waits for its part.
   * @default config snapshotMaxInflightBytes
   */
  maxServeBytes?: number
}

/** The peer does not store the first chunk asked for (it may have pruned the snapshot): no lie. */
export class ChunkNotServedError extends SomaError { static override readonly code: string = 'ERR_CHUNK_NOT_SERVED' }

const NOT_STORED = 'chunk not stored'

/**
 * Bytes held over all sessions, bounded by `limit`, and per key (a peer) by `limit × keyShare`:
 * `acquire` waits until the bytes fit. Waiters are served first come, first served, except that one
 * waiting only for its key's share does not hold up others (one peer's sessions cannot take the whole
 * budget and make every other peer wait). A request for more than a key's share gets that share.
 */
export class ByteBudget {
  readonly limit: number
  /** most bytes one key may hold */
  readonly keyLimit: number
  /** bytes held now */
  held = 0
  /** most bytes held at once */
  peak = 0
  private readonly byKey = new Map<string, number>()
  private readonly waiters: Array<{ n: number, key: string, resolve: (n: number) => void }> = []

  constructor (limit: number, keyShare = 0.5) {
    this.limit = limit
    this.keyLimit = Math.max(1, Math.floor(limit * keyShare))
  }

  /** Bytes `key` holds now. */
  heldBy (key: string): number { return this.byKey.get(key) ?? 0 }

  /** Waits until `n` bytes (at most the key's share) are free and takes them; returns how many it took. */
  async acquire (n: number, signal?: AbortSignal, key = ''): Promise<number> {
    n = Math.max(0, Math.min(n, this.keyLimit))
    signal?.throwIfAborted()
    return await new Promise<number>((resolve, reject) => {
      const w = { n, key, resolve: (got: number) => { signal?.removeEventListener('abort', onAbort); resolve(got) } }
      const onAbort = (): void => {
        const i = this.waiters.indexOf(w)
        if (i < 0) return
        this.waiters.splice(i, 1)
        this.wake()
        reject(signal!.reason)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(w)
      this.wake()
    })
  }

  release (n: number, key = ''): void {
    if (n <= 0) return
    this.held -= n
    const k = this.heldBy(key) - n
    if (k > 0) this.byKey.set(key, k)
    else this.byKey.delete(key)
    this.wake()
  }

  private wake (): void {
    for (let i = 0; i < this.waiters.length;) {
      const w = this.waiters[i]
      // first come, first served over the whole budget: nobody passes a waiter the budget cannot fit
      if (this.held + w.n > this.limit) return
      if (this.heldBy(w.key) + w.n > this.keyLimit) { i++; continue }
      this.waiters.splice(i, 1)
      this.held += w.n
      this.byKey.set(w.key, this.heldBy(w.key) + w.n)
      if (this.held > this.peak) this.peak = this.held
      w.resolve(w.n)
    }
  }
}

/** Resolves when everything written to the stream has left its write buffer (to the muxer). */
async function flushed (stream: Stream, signal: AbortSignal): Promise<void> {
  while (stream.writeBufferLength > 0) {
    if (stream.status !== 'open') throw new PeerRequestFailedError(`the ${PROTOCOL_SNAPSHOT_CHUNKS} stream closed with ${stream.writeBufferLength} bytes unsent`)
    signal.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        stream.removeEventListener('idle', done)
        stream.removeEventListener('close', done)
        signal.removeEventListener('abort', onAbort)
        resolve()
      }
      const onAbort = (): void => { done(); reject(signal.reason) }
      stream.addEventListener('idle', done)
      stream.addEventListener('close', done)
      signal.addEventListener('abort', onAbort)
    })
  }
}

export interface ChunkServerStats {
  sessions: number
  requests: number
  chunks: number
  bytes: number
}

export interface FetchChunksOptions extends AbortOptions {
  /** the biggest listed size among the hashes: raises the limit when one chunk alone exceeds it */
  largest?: number
  /** response budget (encoded chunks). @default maxChunkResponseBytes */
  maxBytes?: number
}

/** One client session: requests answered in order on one stream. Not for concurrent use. */
export class ChunkSession {
  readonly peer: PeerId
  private readonly service: SnapshotChunksService
  private readonly stream: Stream
  private readonly frames: FrameStream
  private closed = false

  constructor (service: SnapshotChunksService, peer: PeerId, stream: Stream) {
    this.service = service
    this.peer = peer
    this.stream = stream
    const max = service.maxChunkBytes + 64 * 1024
    this.frames = new FrameStream(stream, { maxDataLength: max, maxBufferSize: bufferFor(max), what: `${PROTOCOL_SNAPSHOT_CHUNKS} response` })
  }

  get isClosed (): boolean { return this.closed }

  /**
   * One request: a non-empty prefix of the hashes' chunks (views into the response). Throws
   * ChunkNotServedError, RateLimitedError (the session stays usable), or PeerTimeoutError,
   * PeerRequestFailedError, MalformedMessageError, OversizedResponseError, ProtocolViolationError (the
   * session is aborted).
   */
  async fetch (hashes: readonly Uint8Array[], options: FetchChunksOptions = {}): Promise<Uint8Array[]> {
    const svc = this.service
    if (this.closed) throw new PeerRequestFailedError(`the ${PROTOCOL_SNAPSHOT_CHUNKS} session to ${this.peer.toString()} is closed`)
    if (hashes.length === 0) return []
    if (hashes.length > svc.maxChunksPerRequest) throw new RangeError(`at most ${svc.maxChunksPerRequest} hashes per request`)
    // the server is told our budget, so that a server with larger limits still answers within ours
    const budget = Math.min(svc.maxResponseBytes, options.maxBytes ?? Infinity)
    const limit = Math.min(svc.maxChunkBytes, Math.max(budget, options.largest ?? 0))
    const timeout = options.signal === undefined ? AbortSignal.timeout(svc.timeoutMs) : undefined
    const signal = options.signal ?? timeout!
    svc.stats.outbound++
    let res: GetSnapshotChunksResponse
    try {
      await this.frames.writePb({ hashes: [...hashes], maxBytes: budget }, SnapshotSyncCodecs.GetSnapshotChunksRequest, { signal })
      // a length prefix beyond this request's limit fails as soon as it arrives
      res = await this.frames.readPb(SnapshotSyncCodecs.GetSnapshotChunksResponse, { signal, maxDataLength: limit + 64 * 1024 })
    } catch (err) {
      svc.stats.outboundErrors++
      this.abort(err as Error)
      throw classifyError(err, signal, this.peer, PROTOCOL_SNAPSHOT_CHUNKS, timeout !== undefined ? svc.timeoutMs : undefined)
    }
    if (res.error != null && res.error !== '') {
      const limited = rateLimitedError(res.error, this.peer.toString(), PROTOCOL_SNAPSHOT_CHUNKS)
      if (limited !== undefined) throw limited
      if (res.error === NOT_STORED) throw new ChunkNotServedError(`${this.peer.toString()} does not store chunk ${Buffer.from(hashes[0]).toString('hex')}`)
      this.abort(new Error(res.error))
      throw new PeerRequestFailedError(`${this.peer.toString()} refused ${PROTOCOL_SNAPSHOT_CHUNKS}: ${res.error}`)
    }
    const fail = (err: Error): never => { this.abort(err); throw err }
    if (res.chunks.length === 0) fail(new ProtocolViolationError(`${this.peer.toString()} returned no chunks`))
    if (res.chunks.length > hashes.length) fail(new ProtocolViolationError(`${this.peer.toString()} returned ${res.chunks.length} chunks for ${hashes.length} hashes`))
    let size = 0
    for (const c of res.chunks) size += lengthDelimitedSize(c.byteLength)
    if (res.chunks.length > 1 && size > budget) fail(new OversizedResponseError(`${this.peer.toString()} sent ${size} bytes of chunks, the limit is ${budget}`))
    return res.chunks
  }

  /** Ends the session cleanly (the server sees the end of its requests). */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    try { await this.stream.close({ signal: AbortSignal.timeout(2000) }) } catch (err: any) { this.stream.abort(err) }
  }

  abort (err: Error): void {
    if (this.closed) return
    this.closed = true
    this.stream.abort(err)
  }
}

export class SnapshotChunksService implements Startable {
  readonly [Symbol.toStringTag] = '@soma/snapshot-chunks'
  readonly [serviceCapabilities] = ['@soma/snapshot-chunks']
  readonly protocol = PROTOCOL_SNAPSHOT_CHUNKS
  readonly maxChunksPerRequest: number
  readonly maxResponseBytes: number
  readonly maxChunkBytes: number
  readonly timeoutMs: number
  readonly handlerTimeoutMs: number
  readonly maxInboundStreams: number
  readonly maxOutboundStreams: number
  readonly stats: RpcStats = { inbound: 0, inboundErrors: 0, rateLimited: 0, outbound: 0, outboundErrors: 0 }
  /** what this node served */
  readonly served: ChunkServerStats = { sessions: 0, requests: 0, chunks: 0, bytes: 0 }
  /** chunk bytes held for responses, over all sessions (bounded by `maxServeBytes`) */
  readonly budget: ByteBudget
  /** penalizes peers that break the framing or send undecodable requests */
  readonly guard: InboundGuard
  private readonly components: RpcComponents
  private readonly store?: ChainStore
  private readonly serveRequests: boolean
  private readonly limiter: RateLimiter
  private readonly quota?: ServeQuota
  private readonly maxRequestBytes: number
  private readonly log: Logger
  private readonly nodeLog?: SnapshotChunksInit['logger']
  private readonly sessions = new Set<Stream>()
  private started = false

  constructor (components: RpcComponents, init: SnapshotChunksInit = {}) {
    this.components = components
    this.store = init.store
    this.maxChunksPerRequest = init.maxChunksPerRequest ?? DEFAULT_MAX_CHUNKS_PER_REQUEST
    this.maxResponseBytes = init.maxChunkResponseBytes ?? DEFAULT_CHUNK_RESPONSE_BYTES
    this.maxChunkBytes = Math.max(init.maxChunkBytes ?? DEFAULT_MAX_CHUNK_BYTES, this.maxResponseBytes)
    this.timeoutMs = init.timeoutMs ?? 30_000
    this.handlerTimeoutMs = init.handlerTimeoutMs ?? 30_000
    this.maxInboundStreams = init.maxInboundStreams ?? 32
    this.maxOutboundStreams = init.maxOutboundStreams ?? 64
    this.maxRequestBytes = this.maxChunksPerRequest * 36 + 1024
    this.serveRequests = (init.serve ?? true) && this.store !== undefined
    this.limiter = new RateLimiter({ points: init.requestsPerSecond ?? 50, duration: 1 })
    this.budget = new ByteBudget(init.maxServeBytes ?? DEFAULTS.snapshotMaxInflightBytes)
    this.guard = init.guard ?? new InboundGuard()
    this.quota = init.quota
    this.log = components.logger.forComponent(`soma:rpc:${PROTOCOL_SNAPSHOT_CHUNKS}`)
    this.nodeLog = init.logger
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    if (this.serveRequests) {
      await this.components.registrar.handle(PROTOCOL_SNAPSHOT_CHUNKS, (stream, connection) => {
        void this.onSession(stream, connection)
      }, { maxInboundStreams: this.maxInboundStreams, maxOutboundStreams: this.maxOutboundStreams })
    }
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    if (this.serveRequests) await this.components.registrar.unhandle(PROTOCOL_SNAPSHOT_CHUNKS)
    for (const s of this.sessions) s.abort(new Error('stopping'))
    this.sessions.clear()
  }

  isStarted (): boolean { return this.started }

  /**
   * Server: requests answered in order until the client closes, idles, or breaks a limit. A length
   * prefix that is no valid varint, a declared length beyond the request limit, or a request that does
   * not decode resets the session at once and costs the peer its penalty (the guard). A response holds
   * its chunks' bytes in the budget from the store read until the stream has taken them (back-pressure:
   * a client that does not read keeps its share, and other sessions wait, never more than the budget).
   */
  private async onSession (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer
    if (this.guard.isBanned(peer)) {
      this.stats.inboundErrors++
      stream.abort(new PeerRequestFailedError(`${peer.toString()} is banned`))
      return
    }
    this.served.sessions++
    this.sessions.add(stream)
    // requests come one at a time: buffer little more than one, so unread bytes cannot pile up
    const frames = new FrameStream(stream, { maxDataLength: this.maxRequestBytes, maxBufferSize: this.maxRequestBytes + 1024, what: `${PROTOCOL_SNAPSHOT_CHUNKS} request` })
    let ticket: QuotaTicket | undefined
    try {
      while (this.started) {
        // idle limit: the next request must come within handlerTimeoutMs
        let req: GetSnapshotChunksRequest
        try {
          req = await frames.readPb(SnapshotSyncCodecs.GetSnapshotChunksRequest, { signal: AbortSignal.timeout(this.handlerTimeoutMs) })
        } catch (err: any) {
          if (err instanceof MalformedMessageError || err instanceof OversizedResponseError) {
            this.guard.penalize(peer, PROTOCOL_SNAPSHOT_CHUNKS, err, async () => { await this.components.connectionManager.closeConnections(peer) })
            throw err
          }
          // the client closed its end: the session is over
          if (err?.name === 'UnexpectedEOFError' || stream.readStatus !== 'readable') break
          throw err
        }
        this.stats.inbound++
        const signal = AbortSignal.timeout(this.handlerTimeoutMs)
        let res: GetSnapshotChunksResponse
        let held = 0
        try {
          // priced by the client's byte budget (bounded by ours): what the answer may cost at most
          const bound = this.responseBound(req)
          const admitted = admitRequest(this.limiter, this.quota, peer.toString(), PROTOCOL_SNAPSHOT_CHUNKS, bound)
          if (typeof admitted === 'number') {
            this.stats.rateLimited++
            res = { chunks: [], error: rateLimitedText(admitted) }
          } else {
            // the answer's worst case is held in the node's in-flight room until it is written
            if (admitted !== undefined) { ticket = admitted; await this.quota!.hold(ticket, bound, signal) }
            const r = await this.assemble(req, signal, peer.toString())
            res = r.res
            held = r.held
          }
          const out = encodeChunksResponseList(res)
          if (ticket !== undefined) { this.quota!.settle(ticket, out.byteLength); this.quota!.resize(ticket, out.byteLength) }
          await frames.write(out, { signal })
          await flushed(stream, signal)
          if (ticket !== undefined) { this.quota!.release(ticket); ticket = undefined }
        } finally {
          this.budget.release(held, peer.toString())
        }
        // a refusal other than the rate limit or a missing chunk ends the session
        if (res.error !== undefined && parseRateLimited(res.error) === undefined && res.error !== NOT_STORED) break
      }
      await stream.close({ signal: AbortSignal.timeout(this.handlerTimeoutMs) })
    } catch (err: any) {
      this.stats.inboundErrors++
      this.log('session with %p failed: %s', peer, err.message)
      logInboundFailure(this.nodeLog, PROTOCOL_SNAPSHOT_CHUNKS, peer, err)
      stream.abort(err)
    } finally {
      if (ticket !== undefined) this.quota!.release(ticket)
      this.sessions.delete(stream)
    }
  }

  /** The most bytes the answer to `req` may carry (the client's budget within ours). */
  responseBound (req: GetSnapshotChunksRequest): number {
    return req.maxBytes !== undefined && req.maxBytes > 0 ? Math.min(req.maxBytes, this.maxResponseBytes) : this.maxResponseBytes
  }

  /** The server side of one request, exposed for tests (the budget is released before it returns). */
  async serve (req: GetSnapshotChunksRequest, signal: AbortSignal = AbortSignal.timeout(this.handlerTimeoutMs)): Promise<GetSnapshotChunksResponse> {
    const { res, held } = await this.assemble(req, signal, '')
    this.budget.release(held, '')
    return res
  }

  /**
   * The response to one request, and the budget bytes it holds (the caller releases them once the
   * stream has taken the response). Its share of the budget is taken before the store is read: the
   * response limit, then shrunk to what the chunks take. Chunks are read a few at a time (as many as
   * the room left is likely to hold), never all the hashes asked for at once.
   */
  private async assemble (req: GetSnapshotChunksRequest, signal: AbortSignal, key: string): Promise<{ res: GetSnapshotChunksResponse, held: number }> {
    if (req.hashes.length === 0) return { res: { chunks: [], error: 'no hashes' }, held: 0 }
    if (req.hashes.length > this.maxChunksPerRequest) return { res: { chunks: [], error: `${req.hashes.length} hashes requested, the limit is ${this.maxChunksPerRequest}` }, held: 0 }
    if (req.hashes.some(h => h.byteLength !== 32)) return { res: { chunks: [], error: 'a chunk hash is not 32 bytes' }, held: 0 }
    const limit = req.maxBytes !== undefined && req.maxBytes > 0 ? Math.min(req.maxBytes, this.maxResponseBytes) : this.maxResponseBytes
    // located in LevelDB (16-byte index rows), read from the pack files (src/store/packs.ts)
    const snapshots = new SnapshotStore(this.store!)
    let held = await this.budget.acquire(limit, signal, key)
    try {
      const chunks: Uint8Array[] = []
      let size = 0
      let firstMissing = false
      let next = 0
      let batch = 1
      reading: while (next < req.hashes.length) {
        const found = await snapshots.getChunks(req.hashes.slice(next, next + batch))
        for (const c of found) {
          if (c === undefined) { firstMissing = chunks.length === 0; break reading }
          const s = lengthDelimitedSize(c.byteLength)
          if (chunks.length > 0 && size + s > Math.min(limit, held)) break reading
          if (c.byteLength > this.maxChunkBytes) break reading
          if (s > held) {
            // the first chunk alone is larger than the share taken: wait for its size (holding
            // nothing meanwhile, so that two such sessions cannot wait on each other), then read it again
            this.budget.release(held, key)
            held = 0
            held = await this.budget.acquire(s, signal, key)
            const again = (await snapshots.getChunks([req.hashes[0]]))[0]
            if (again === undefined) { firstMissing = true; break reading }
            chunks.push(again)
            size += s
            next = 1
            if (s >= held) break reading
            continue reading
          }
          chunks.push(c)
          size += s
          next++
        }
        // as many as the room left is likely to hold, judged by the chunks read so far
        batch = Math.max(1, Math.min(64, Math.floor((limit - size) / (size / chunks.length))))
      }
      if (chunks.length === 0) {
        this.budget.release(held, key)
        return { res: { chunks: [], error: firstMissing ? NOT_STORED : 'chunk larger than the response limit' }, held: 0 }
      }
      if (held > size) { this.budget.release(held - size, key); held = size }
      this.served.requests++
      this.served.chunks += chunks.length
      this.served.bytes += size
      return { res: { chunks }, held }
    } catch (err) {
      this.budget.release(held, key)
      throw err
    }
  }

  /** Opens a session with a peer (one stream, many requests). */
  async session (peer: PeerId, options: AbortOptions = {}): Promise<ChunkSession> {
    const timeout = options.signal === undefined ? AbortSignal.timeout(this.timeoutMs) : undefined
    const signal = options.signal ?? timeout!
    try {
      const stream = await this.components.connectionManager.openStream(peer, PROTOCOL_SNAPSHOT_CHUNKS, { signal })
      return new ChunkSession(this, peer, stream)
    } catch (err) {
      this.stats.outboundErrors++
      throw classifyError(err, signal, peer, PROTOCOL_SNAPSHOT_CHUNKS, timeout !== undefined ? this.timeoutMs : undefined)
    }
  }

  /** One request in a session of its own (convenience; the sync keeps sessions open). */
  async fetch (peer: PeerId, hashes: readonly Uint8Array[], options: FetchChunksOptions = {}): Promise<Uint8Array[]> {
    const s = await this.session(peer, options)
    try {
      return await s.fetch(hashes, options)
    } finally {
      await s.close()
    }
  }
}

export function snapshotChunks (init: SnapshotChunksInit = {}): (components: RpcComponents) => SnapshotChunksService {
  return (components) => new SnapshotChunksService(components, init)
}
