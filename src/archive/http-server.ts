/**
 * ArchiveHttpServer: serves an archive directory read-only over HTTP, as a static host would: GET and
 * HEAD of `manifest.json`, `epochs/…` and `segments/…`, with `Range: bytes=a-b` / `bytes=a-` /
 * `bytes=-n` (206, or 416 when unsatisfiable). Anything else is 404 (other paths), 405 (other methods).
 * Its own server, apart from the status server, so that it can be exposed alone.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createReadStream, statSync } from 'node:fs'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import type { Logger } from '../utils/logger.ts'

const NAME = /^\/(manifest\.json|epochs\/[0-9]{12}\.json|segments\/[0-9a-z.-]+\.seg)$/

export class ArchiveHttpServer {
  readonly dir: string
  private readonly host: string
  private readonly wantPort: number
  private readonly log?: Logger
  private server?: Server
  private boundPort = 0

  constructor (opts: { dir: string, host: string, port: number, log?: Logger }) {
    this.dir = path.resolve(opts.dir)
    this.host = opts.host
    this.wantPort = opts.port
    this.log = opts.log
  }

  get port (): number { return this.boundPort }
  get url (): string { return `http://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.boundPort}` }

  async start (): Promise<void> {
    const server = createServer((req, res) => { this.handle(req, res) })
    server.keepAliveTimeout = 5000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.wantPort, this.host, () => { server.off('error', reject); resolve() })
    })
    this.server = server
    this.boundPort = (server.address() as AddressInfo).port
  }

  async stop (): Promise<void> {
    const s = this.server
    if (s === undefined) return
    this.server = undefined
    s.closeAllConnections()
    await new Promise<void>(resolve => s.close(() => { resolve() }))
  }

  private handle (req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end()
      return
    }
    let pathname: string
    try {
      pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
    } catch {
      res.writeHead(400).end()
      return
    }
    const m = NAME.exec(pathname)
    if (m === null) {
      res.writeHead(404).end()
      return
    }
    const file = path.join(this.dir, m[1])
    let size: number
    try {
      const st = statSync(file)
      if (!st.isFile()) throw new Error('not a file')
      size = st.size
    } catch {
      res.writeHead(404).end()
      return
    }
    const type = file.endsWith('.json') ? 'application/json' : 'application/octet-stream'
    // the manifest changes as epochs close; segments and epoch indexes never do
    const cache = m[1] === 'manifest.json' ? 'no-cache' : 'public, max-age=31536000, immutable'
    let start = 0
    let end = size - 1
    let status = 200
    const range = req.headers.range
    if (range !== undefined) {
      const r = /^bytes=(\d*)-(\d*)$/.exec(range.trim())
      if (r === null || (r[1] === '' && r[2] === '')) {
        res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end()
        return
      }
      if (r[1] === '') {
        start = Math.max(0, size - Number(r[2]))
      } else {
        start = Number(r[1])
        if (r[2] !== '') end = Math.min(end, Number(r[2]))
      }
      if (start >= size || start > end) {
        res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end()
        return
      }
      status = 206
    }
    const headers: Record<string, string | number> = { 'Content-Type': type, 'Content-Length': end - start + 1, 'Accept-Ranges': 'bytes', 'Cache-Control': cache }
    if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${size}`
    res.writeHead(status, headers)
    if (req.method === 'HEAD' || size === 0) {
      res.end()
      return
    }
    const stream = createReadStream(file, { start, end })
    stream.on('error', (err) => {
      this.log?.warn('archive http: reading %s failed: %s', file, err.message)
      res.destroy(err)
    })
    stream.pipe(res)
  }
}
