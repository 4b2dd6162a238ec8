/**
 * Length-prefixed frames over a libp2p stream (`unsigned varint length ‖ message`), the framing of every
 * /soma/* protocol: @libp2p/utils' lpStream/pbStream on the wire, but a length prefix that cannot be
 * valid fails at once instead of holding the stream.
 *
 * lpStream keeps reading while the varint is incomplete and checks the prefix's length only once a
 * varint decodes, so a prefix of 32 × 0xff never decodes and the stream is held until the handler's
 * timeout. Here the prefix may take at most `varintLength(maxDataLength)` bytes: a byte with the
 * continuation bit set at that position is a MalformedFrameError, a declared length beyond
 * `maxDataLength` an OversizedFrameError, both thrown as soon as the byte that shows it arrives (the
 * caller resets the stream and penalizes the peer). Non-minimal prefixes within the limit (0x80 0x00)
 * are accepted, as protobuf accepts them.
 *
 * Reads are bounded by `maxBufferSize` too (@libp2p/utils' byteStream aborts the stream beyond it): a
 * server reading one request at a time passes a buffer of a little more than one request, so a peer
 * cannot park megabytes of unread data per stream.
 */
import { byteStream } from '@libp2p/utils'
import type { AbortOptions, Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { varintLength, writeVarint } from '../chain/varint.ts'
import { MalformedFrameError, MalformedMessageError, OversizedFrameError } from '../errors.ts'

export interface FrameCodec<T> {
  encode: (value: T) => Uint8Array
  decode: (bytes: Uint8Array | Uint8ArrayList) => T
}

export interface ReadFrameOptions extends AbortOptions {
  /** a tighter limit for this message than the stream's */
  maxDataLength?: number
}

export interface FrameStreamInit {
  /** Largest message accepted. */
  maxDataLength: number
  /** Most unread bytes buffered before the stream is aborted. @default maxDataLength + 64 KiB */
  maxBufferSize?: number
  /** What the messages are, for error messages (e.g. the protocol id). */
  what?: string
}

/**
 * The state of a length prefix after `bytes` of it: `{ length, size }` when complete, `undefined` when
 * more bytes are needed. Throws MalformedFrameError when the prefix is longer than
 * `varintLength(maxDataLength)` bytes, OversizedFrameError when it declares more than `maxDataLength`.
 */
export function decodeFrameLength (bytes: Uint8Array, maxDataLength: number, what = 'message'): { length: number, size: number } | undefined {
  const maxPrefix = varintLength(maxDataLength)
  let v = 0
  let mul = 1
  for (let i = 0; i < bytes.length; i++) {
    if (i >= maxPrefix) throw new MalformedFrameError(`${what}: length prefix longer than ${maxPrefix} bytes (not a valid varint for a limit of ${maxDataLength} bytes)`)
    const b = bytes[i]
    v += (b & 0x7f) * mul
    mul *= 128
    if ((b & 0x80) === 0) {
      if (v > maxDataLength) throw new OversizedFrameError(`${what}: declared length ${v} is over the size limit of ${maxDataLength} bytes`)
      return { length: v, size: i + 1 }
    }
    // the continuation bit on the last byte the limit allows: no valid prefix can follow
    if (i + 1 >= maxPrefix) throw new MalformedFrameError(`${what}: length prefix longer than ${maxPrefix} bytes (not a valid varint for a limit of ${maxDataLength} bytes)`)
  }
  return undefined
}

export class FrameStream {
  readonly maxDataLength: number
  private readonly bytes: ReturnType<typeof byteStream>
  private readonly what: string

  constructor (stream: Stream, init: FrameStreamInit) {
    this.maxDataLength = init.maxDataLength
    this.what = init.what ?? 'message'
    this.bytes = byteStream(stream, { maxBufferSize: init.maxBufferSize ?? init.maxDataLength + 64 * 1024 })
  }

  /**
   * Reads one frame's message. Throws MalformedFrameError / OversizedFrameError on a bad prefix (at
   * once), UnexpectedEOFError (from @libp2p/utils) when the stream ends first, or the signal's reason.
   */
  async read (options: ReadFrameOptions = {}): Promise<Uint8ArrayList> {
    const max = Math.min(options.maxDataLength ?? this.maxDataLength, this.maxDataLength)
    const prefix = new Uint8Array(10)
    let n = 0
    let len: { length: number, size: number } | undefined
    while (len === undefined) {
      const b = await this.bytes.read({ bytes: 1, signal: options.signal })
      if (b == null) throw new MalformedFrameError(`${this.what}: the stream ended inside a length prefix`)
      prefix[n++] = b.get(0)
      len = decodeFrameLength(prefix.subarray(0, n), max, this.what)
    }
    if (len.length === 0) return new Uint8ArrayList()
    const msg = await this.bytes.read({ bytes: len.length, signal: options.signal })
    if (msg == null) throw new MalformedFrameError(`${this.what}: the stream ended inside a message`)
    return msg
  }

  /** Reads one frame and decodes it; a decoder failure is a MalformedMessageError. */
  async readPb<T>(codec: Pick<FrameCodec<T>, 'decode'>, options: ReadFrameOptions = {}): Promise<T> {
    const buf = await this.read(options)
    try {
      return codec.decode(buf)
    } catch (err: any) {
      if (err instanceof MalformedMessageError) throw err
      throw new MalformedMessageError(`malformed ${this.what}: ${err?.message ?? String(err)}`, { cause: err })
    }
  }

  /** Writes one frame (the message's bytes are not copied); resolves when the stream takes more. */
  async write (message: Uint8Array | Uint8ArrayList, options: AbortOptions = {}): Promise<void> {
    const prefix = new Uint8Array(varintLength(message.byteLength))
    writeVarint(prefix, 0, message.byteLength)
    await this.bytes.write(new Uint8ArrayList(prefix, message), options)
  }

  async writePb<T>(value: T, codec: FrameCodec<T>, options: AbortOptions = {}): Promise<void> {
    await this.write(codec.encode(value), options)
  }
}
