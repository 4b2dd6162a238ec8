/**
 * Where an archive is read from: a static HTTP(S) host (`http(s)://host/prefix`), an S3-compatible
 * bucket (`s3://bucket/prefix`, endpoint and credentials from config / the AWS_* environment), or a
 * local directory. Every read takes an AbortSignal and a byte offset (HTTP Range / S3 Range) so that
 * a partial download resumes; every failure is an ArchiveSourceError naming the object.
 */
import { createReadStream, existsSync, statSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { ArchiveSourceError, ConfigError } from '../errors.ts'

export interface ArchiveSource {
  /** the URL (or path) of the archive root, for messages */
  readonly url: string
  /** the URL of one object, for messages */
  describe: (name: string) => string
  /**
   * The bytes of object `name` from byte `offset` on, as a stream of chunks. Throws
   * ArchiveSourceError when the object cannot be read (missing, forbidden, server error, timeout).
   */
  read: (name: string, opts: { offset?: number, signal: AbortSignal }) => Promise<AsyncIterable<Uint8Array>>
  /** The whole (small) object: the manifest, an epoch index. */
  readAll: (name: string, opts: { signal: AbortSignal, maxBytes: number }) => Promise<Uint8Array>
  /** Releases the client's connections. */
  close?: () => void
}

export interface S3Settings {
  /** endpoint URL of an S3-compatible service ('' : AWS) */
  endpoint: string
  region: string
}

async function collect (it: AsyncIterable<Uint8Array>, maxBytes: number, what: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  let n = 0
  for await (const c of it) {
    n += c.byteLength
    if (n > maxBytes) throw new ArchiveSourceError(`${what} is larger than ${maxBytes} bytes`)
    parts.push(c)
  }
  return Buffer.concat(parts)
}

/** Reads an archive over HTTP(S): GET with `Range: bytes=<offset>-`. */
export class HttpArchiveSource implements ArchiveSource {
  readonly url: string
  constructor (url: string) {
    this.url = url.replace(/\/+$/, '')
  }

  describe (name: string): string { return `${this.url}/${name}` }

  async read (name: string, opts: { offset?: number, signal: AbortSignal }): Promise<AsyncIterable<Uint8Array>> {
    const url = this.describe(name)
    const offset = opts.offset ?? 0
    let res: Response
    try {
      res = await fetch(url, { signal: opts.signal, headers: offset > 0 ? { Range: `bytes=${offset}-` } : {} })
    } catch (err: any) {
      if (opts.signal.aborted) throw new ArchiveSourceError(`${url}: request aborted (${opts.signal.reason?.message ?? 'timeout'})`, { cause: err })
      throw new ArchiveSourceError(`${url}: ${err.cause?.message ?? err.message}`, { cause: err })
    }
    if (offset > 0 && res.status === 200) {
      // the server ignored the range: skip what we have
      await res.body?.cancel()
      throw new ArchiveSourceError(`${url}: the server ignored the Range request (HTTP 200 for bytes=${offset}-)`)
    }
    if (res.status === 416) {
      await res.body?.cancel()
      throw new ArchiveSourceError(`${url}: HTTP 416, the object is shorter than ${offset} bytes`)
    }
    if (res.status !== 200 && res.status !== 206) {
      await res.body?.cancel()
      throw new ArchiveSourceError(`${url}: HTTP ${res.status} ${res.statusText}`)
    }
    if (res.body === null) throw new ArchiveSourceError(`${url}: HTTP ${res.status} without a body`)
    return wrapStream(Readable.fromWeb(res.body as any), url, opts.signal)
  }

  async readAll (name: string, opts: { signal: AbortSignal, maxBytes: number }): Promise<Uint8Array> {
    return await collect(await this.read(name, opts), opts.maxBytes, this.describe(name))
  }
}

/** Reads an archive from an S3-compatible bucket with @aws-sdk/client-s3 (GetObject with Range). */
export class S3ArchiveSource implements ArchiveSource {
  readonly url: string
  readonly bucket: string
  readonly prefix: string
  private readonly client: any
  private readonly GetObjectCommand: any

  constructor (url: string, client: any, GetObjectCommand: any) {
    const { bucket, prefix } = parseS3Url(url)
    this.url = url.replace(/\/+$/, '')
    this.bucket = bucket
    this.prefix = prefix
    this.client = client
    this.GetObjectCommand = GetObjectCommand
  }

  static async create (url: string, s3: S3Settings): Promise<S3ArchiveSource> {
    const { client, GetObjectCommand } = await s3Client(s3)
    return new S3ArchiveSource(url, client, GetObjectCommand)
  }

  close (): void { this.client.destroy() }

  key (name: string): string { return this.prefix === '' ? name : `${this.prefix}/${name}` }
  describe (name: string): string { return `s3://${this.bucket}/${this.key(name)}` }

  async read (name: string, opts: { offset?: number, signal: AbortSignal }): Promise<AsyncIterable<Uint8Array>> {
    const what = this.describe(name)
    const offset = opts.offset ?? 0
    let res: any
    try {
      res = await this.client.send(new this.GetObjectCommand({ Bucket: this.bucket, Key: this.key(name), Range: offset > 0 ? `bytes=${offset}-` : undefined }), { abortSignal: opts.signal })
    } catch (err: any) {
      const status = err?.$metadata?.httpStatusCode
      if (opts.signal.aborted) throw new ArchiveSourceError(`${what}: request aborted (${opts.signal.reason?.message ?? 'timeout'})`, { cause: err })
      throw new ArchiveSourceError(`${what}: ${status !== undefined ? `HTTP ${status} ` : ''}${err?.name ?? ''}${err?.message !== undefined && err.message !== err.name ? ` (${err.message})` : ''}`, { cause: err })
    }
    return wrapStream(res.Body as Readable, what, opts.signal)
  }

  async readAll (name: string, opts: { signal: AbortSignal, maxBytes: number }): Promise<Uint8Array> {
    return await collect(await this.read(name, opts), opts.maxBytes, this.describe(name))
  }
}

/** Reads an archive in a local directory. */
export class DirArchiveSource implements ArchiveSource {
  readonly url: string
  constructor (dir: string) { this.url = path.resolve(dir) }
  describe (name: string): string { return path.join(this.url, name) }

  async read (name: string, opts: { offset?: number, signal: AbortSignal }): Promise<AsyncIterable<Uint8Array>> {
    const file = this.describe(name)
    if (!existsSync(file) || !statSync(file).isFile()) throw new ArchiveSourceError(`${file}: no such file`)
    return wrapStream(createReadStream(file, { start: opts.offset ?? 0 }), file, opts.signal)
  }

  async readAll (name: string, opts: { signal: AbortSignal, maxBytes: number }): Promise<Uint8Array> {
    return await collect(await this.read(name, opts), opts.maxBytes, this.describe(name))
  }
}

/** A stream's chunks as Uint8Arrays; errors (and aborts) become ArchiveSourceError naming `what`. */
async function * wrapStreamGen (stream: Readable, what: string, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const onAbort = (): void => { stream.destroy(new ArchiveSourceError(`${what}: read aborted (${signal.reason?.message ?? 'timeout'})`)) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    for await (const c of stream) yield c instanceof Uint8Array ? c : Buffer.from(c)
  } catch (err: any) {
    if (err instanceof ArchiveSourceError) throw err
    if (signal.aborted) throw new ArchiveSourceError(`${what}: read aborted (${signal.reason?.message ?? 'timeout'})`, { cause: err })
    throw new ArchiveSourceError(`${what}: ${err.message}`, { cause: err })
  } finally {
    signal.removeEventListener('abort', onAbort)
    stream.destroy()
  }
}

function wrapStream (stream: Readable, what: string, signal: AbortSignal): AsyncIterable<Uint8Array> {
  return wrapStreamGen(stream, what, signal)
}

export function parseS3Url (url: string): { bucket: string, prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url)
  if (m === null) throw new ConfigError(`${JSON.stringify(url)} is not an s3://<bucket>[/<prefix>] URL (bucket names are 3-63 lowercase letters, digits, dots, dashes)`)
  return { bucket: m[1], prefix: (m[2] ?? '').replace(/^\/+|\/+$/g, '') }
}

/** An S3 client for `s3`: a custom endpoint is addressed path-style; credentials from the AWS_* environment. */
export async function s3Client (s3: S3Settings): Promise<{ client: any, GetObjectCommand: any, sdk: any }> {
  const sdk = await import('@aws-sdk/client-s3')
  const client = new sdk.S3Client({
    region: s3.region === '' ? 'us-east-1' : s3.region,
    ...(s3.endpoint !== '' ? { endpoint: s3.endpoint, forcePathStyle: true } : {}),
    maxAttempts: 1
  })
  return { client, GetObjectCommand: sdk.GetObjectCommand, sdk }
}

/** The source for an `--archive-url`: http(s)://…, s3://bucket/prefix, or a directory. */
export async function openArchiveSource (url: string, s3: S3Settings): Promise<ArchiveSource> {
  if (/^https?:\/\//.test(url)) return new HttpArchiveSource(url)
  if (url.startsWith('s3://')) return await S3ArchiveSource.create(url, s3)
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) throw new ConfigError(`archive URL ${JSON.stringify(url)}: only http://, https://, s3:// or a directory`)
  if (!existsSync(url)) throw new ConfigError(`archive ${JSON.stringify(url)}: no such directory`)
  return new DirArchiveSource(url)
}
