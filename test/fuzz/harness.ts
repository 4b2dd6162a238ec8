/**
 * Shared pieces of the fuzz tests (test/fuzz/*.test.ts): how many cases (FUZZ_RUNS: `npm run fuzz` sets
 * 10,000; `npm test` runs the short default), the three kinds of input (random bytes, mutations of a
 * valid encoding, truncations of one), and the invariant every decoder keeps: a value, or an error of
 * the project's named classes (SomaError), with what it allocates bounded by its input.
 */
import fc from 'fast-check'
import { streamPair, multiaddrConnectionPair, mockMuxer, type StreamPairOptions } from '@libp2p/utils'
import type { PeerId, Stream } from '@libp2p/interface'
import { SomaError } from '../../src/errors.ts'

/** Cases per fuzz target. */
export const RUNS = Number(process.env.FUZZ_RUNS ?? 200)
/** fast-check seed (FUZZ_SEED): a failure prints its seed and path, to replay it. */
export const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED)

export function fcParams (runs = RUNS): fc.Parameters<unknown> {
  return { numRuns: runs, ...(SEED === undefined ? {} : { seed: SEED }), endOnFailure: true }
}

/** A mutation of one of `samples`: byte flips, insertions, deletions, splices, or a truncation. */
export function inputs (samples: readonly Uint8Array[], maxRandom = 2048): fc.Arbitrary<Uint8Array> {
  const random = fc.uint8Array({ maxLength: maxRandom })
  if (samples.length === 0) return random
  const sample = fc.nat({ max: samples.length - 1 }).map(i => samples[i])
  const truncated = fc.tuple(sample, fc.double({ min: 0, max: 1, noNaN: true })).map(([s, f]) => s.subarray(0, Math.floor(s.length * f)))
  const op = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.nat({ max: 255 }), fc.nat({ max: 16 }))
  const mutated = fc.tuple(sample, fc.array(op, { minLength: 1, maxLength: 6 })).map(([s, ops]) => {
    let b: Uint8Array = Uint8Array.from(s)
    for (const [kind, where, byte, n] of ops) {
      const at = Math.floor(where * b.length)
      if (kind === 0 && b.length > 0) b[Math.min(at, b.length - 1)] ^= 1 << (byte % 8) // flip a bit
      else if (kind === 1) b[Math.min(at, Math.max(0, b.length - 1))] = byte // set a byte
      else if (kind === 2) b = concat(b.subarray(0, at), new Uint8Array(n + 1).fill(byte), b.subarray(at)) // insert
      else b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + n + 1))) // delete
    }
    return b
  })
  return fc.oneof({ arbitrary: random, weight: 1 }, { arbitrary: mutated, weight: 3 }, { arbitrary: truncated, weight: 1 }, { arbitrary: sample, weight: 1 })
}

export function concat (...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) { out.set(p, o); o += p.length }
  return out
}

/**
 * Bytes a decoded value holds: its byte arrays, strings and array slots (8 bytes each), deeply. A
 * decoder's output must stay within a small multiple of its input: no allocation the input does not pay for.
 */
export function heldBytes (v: unknown, seen = new Set<unknown>()): number {
  if (v === null || typeof v !== 'object') return typeof v === 'string' ? v.length * 2 : 8
  if (seen.has(v)) return 0
  seen.add(v)
  if (ArrayBuffer.isView(v)) return v.byteLength
  let n = 0
  if (Array.isArray(v)) { for (const x of v) n += 8 + heldBytes(x, seen); return n }
  for (const k of Object.keys(v)) n += heldBytes((v as any)[k], seen)
  return n
}

/**
 * Runs `decode` on the input: it must return (a value holding at most `factor` × the input + 4 KiB) or
 * throw a SomaError. Anything else fails the property with the input in hex.
 */
export function checkDecoder (decode: (b: Uint8Array) => unknown, bytes: Uint8Array, factor = 16): void {
  let value: unknown
  try {
    value = decode(bytes)
  } catch (err) {
    if (err instanceof SomaError) return
    throw new Error(`not a named error on ${Buffer.from(bytes).toString('hex').slice(0, 400)}: ${(err as Error)?.stack ?? String(err)}`)
  }
  const held = heldBytes(value)
  if (held > factor * bytes.length + 4096) throw new Error(`decoded ${bytes.length} bytes into a value holding ${held}`)
}

/**
 * A protocol service's inbound handler on real stream pairs (@libp2p/utils' streamPair, a mock muxer
 * over an in-memory connection): the service registers with this registrar, and `open()` gives a client
 * stream whose other end the handler serves as if `peer` had opened it.
 */
export interface HandlerHarness {
  components: any
  handlers: Map<string, (stream: Stream, connection: any) => void>
  closed: string[]
  open: (protocol: string, peer: PeerId, opts?: StreamPairOptions) => Promise<{ client: Stream, server: Stream }>
  /** what answers a stream the services open as clients (connectionManager.openStream) */
  respond?: (server: Stream) => void
}

export function handlerHarness (): HandlerHarness {
  const handlers = new Map<string, (stream: Stream, connection: any) => void>()
  const closed: string[] = []
  const silent = Object.assign(() => {}, { error: () => {}, trace: () => {}, enabled: false })
  const components = {
    registrar: {
      handle: async (protocol: string, fn: (stream: Stream, connection: any) => void) => { handlers.set(protocol, fn) },
      unhandle: async (protocol: string) => { handlers.delete(protocol) }
    },
    connectionManager: {
      closeConnections: async (peer: PeerId) => { closed.push(peer.toString()) },
      // client side: the stream's other end goes to `respond` (set by the test)
      openStream: async () => {
        if (harness.respond === undefined) throw new Error('no responder')
        const { local, remote } = sharedPair()
        const inbound = new Promise<Stream>(resolve => { remote.addEventListener('stream', (evt: any) => { resolve(evt.detail) }, { once: true }) })
        const client: Stream = await local.createStream({})
        harness.respond(await inbound)
        return client
      }
    },
    logger: { forComponent: () => silent }
  }
  // streams without options share one in-memory connection (streamPair makes a connection per pair,
  // numbered like TCP ports: at most ~32k per process), renewed every 4,096 streams
  let shared: { local: any, remote: any, streams: number } | undefined
  const sharedPair = (): { local: any, remote: any, streams: number } => {
    if (shared === undefined || shared.streams >= 4096) {
      const [outbound, inbound] = multiaddrConnectionPair({ delay: 0 })
      shared = { local: mockMuxer().createStreamMuxer(outbound), remote: mockMuxer().createStreamMuxer(inbound), streams: 0 }
    }
    shared.streams++
    return shared
  }
  const harness: HandlerHarness = {
    components,
    handlers,
    closed,
    open: async (protocol, peer, opts) => {
      const h = handlers.get(protocol)
      if (h === undefined) throw new Error(`no handler for ${protocol}`)
      let client: Stream
      let server: Stream
      if (opts !== undefined) {
        [client, server] = await streamPair({ delay: 0, ...opts })
      } else {
        const { local, remote } = sharedPair()
        const inbound = new Promise<Stream>(resolve => { remote.addEventListener('stream', (evt: any) => { resolve(evt.detail) }, { once: true }) })
        client = await local.createStream({})
        server = await inbound
      }
      h(server, { remotePeer: peer })
      return { client, server }
    }
  }
  return harness
}

/** Resolves when the stream has closed (either way); rejects after `ms`. */
export async function closedWithin (stream: Stream, ms: number): Promise<number> {
  const t0 = Date.now()
  if (stream.status === 'closed' || stream.status === 'aborted' || stream.status === 'reset') return 0
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`stream still ${stream.status} after ${ms} ms`)) }, ms)
    stream.addEventListener('close', () => { clearTimeout(timer); resolve(Date.now() - t0) }, { once: true })
  })
}

let sharedMuxers: { local: any, remote: any, streams: number } | undefined

/**
 * A stream pair over one shared in-memory connection (renewed every 4,096 streams): streamPair makes a
 * connection per pair, numbered like TCP ports, which runs out after ~32k pairs in one process.
 */
export async function pairedStreams (): Promise<[Stream, Stream]> {
  if (sharedMuxers === undefined || sharedMuxers.streams >= 4096) {
    const [outbound, inbound] = multiaddrConnectionPair({ delay: 0 })
    sharedMuxers = { local: mockMuxer().createStreamMuxer(outbound), remote: mockMuxer().createStreamMuxer(inbound), streams: 0 }
  }
  sharedMuxers.streams++
  const { local, remote } = sharedMuxers
  const inbound = new Promise<Stream>(resolve => { remote.addEventListener('stream', (evt: any) => { resolve(evt.detail) }, { once: true }) })
  const client: Stream = await local.createStream({})
  return [client, await inbound]
}
