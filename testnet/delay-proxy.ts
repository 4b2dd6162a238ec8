/**
 * A TCP proxy that adds latency (this kernel has no netem): every connection accepted on `listen` is
 * forwarded to `target`, and every chunk, in each direction, is delivered `delayMs` after it arrived
 * (order kept, so one direction's RTT grows by 2 x delayMs). Bytes in flight are bounded: a side is
 * paused while more than `maxQueuedBytes` wait to be delivered, and while its destination is full.
 *
 * The namespace testnet puts one in front of every node (node on 127.0.0.1:7700, proxy on the
 * namespace's address :7700, announced), so every connection between two nodes passes exactly one.
 *
 * As a process:  node testnet/delay-proxy.ts <listen host:port> <target host:port> [delayMs]
 * It prints `listening <host:port>` when ready, takes `{"delayMs": n}` lines on stdin (answers
 * `delay <n>`), and exits when stdin closes.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { onStdinLines } from './lines.ts'

export interface DelayProxyOptions {
  listenHost: string
  listenPort: number
  targetHost: string
  targetPort: number
  delayMs?: number
  /** @default 4 MiB */
  maxQueuedBytes?: number
}

/** One direction of one connection: chunks wait `delay()` ms, then are written in order. */
class DelayedPipe {
  private readonly queue: Array<{ chunk: Buffer, due: number }> = []
  private queued = 0
  private timer?: NodeJS.Timeout
  private draining = false
  private ended = false
  private readonly from: Socket
  private readonly to: Socket
  private readonly delay: () => number
  private readonly max: number

  constructor (from: Socket, to: Socket, delay: () => number, max: number) {
    this.from = from
    this.to = to
    this.delay = delay
    this.max = max
    from.on('data', chunk => { this.push(chunk) })
    from.on('end', () => { this.ended = true; this.flush() })
    to.on('drain', () => { this.draining = false; this.flush() })
  }

  private push (chunk: Buffer): void {
    this.queue.push({ chunk, due: Date.now() + this.delay() })
    this.queued += chunk.length
    if (this.queued > this.max) this.from.pause()
    this.flush()
  }

  private flush (): void {
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
    const now = Date.now()
    while (!this.draining && this.queue.length > 0 && this.queue[0].due <= now) {
      const { chunk } = this.queue.shift()!
      this.queued -= chunk.length
      if (this.to.destroyed) return
      if (!this.to.write(chunk)) this.draining = true
    }
    if (this.queued <= this.max / 2 && !this.draining && this.from.isPaused()) this.from.resume()
    if (this.queue.length > 0) {
      if (!this.draining) this.timer = setTimeout(() => { this.flush() }, Math.max(0, this.queue[0].due - now))
    } else if (this.ended && !this.to.destroyed) {
      this.to.end()
    }
  }

  close (): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.queue.length = 0
  }
}

export class DelayProxy {
  delayMs: number
  private readonly opts: DelayProxyOptions
  private server?: Server
  private readonly sockets = new Set<Socket>()

  constructor (opts: DelayProxyOptions) {
    this.opts = opts
    this.delayMs = opts.delayMs ?? 0
  }

  /** The bound port (after start()). */
  get port (): number {
    const a = this.server?.address()
    if (a == null || typeof a === 'string') throw new Error('delay proxy is not listening')
    return a.port
  }

  async start (): Promise<void> {
    const max = this.opts.maxQueuedBytes ?? 4 * 1024 * 1024
    // half-open allowed: a FIN is passed on only after the data before it was delivered
    const server = createServer({ noDelay: true, allowHalfOpen: true }, inbound => {
      const outbound = createConnection({ host: this.opts.targetHost, port: this.opts.targetPort, noDelay: true, allowHalfOpen: true })
      this.sockets.add(inbound)
      this.sockets.add(outbound)
      inbound.pause() // until the target answers
      const pipes = [new DelayedPipe(inbound, outbound, () => this.delayMs, max), new DelayedPipe(outbound, inbound, () => this.delayMs, max)]
      outbound.once('connect', () => { inbound.resume() })
      let closed = false
      const done = (): void => {
        if (closed) return
        closed = true
        for (const p of pipes) p.close()
        inbound.destroy()
        outbound.destroy()
        this.sockets.delete(inbound)
        this.sockets.delete(outbound)
      }
      inbound.on('error', done)
      outbound.on('error', done)
      // one side closed (both its directions finished): the other gets what is queued for it, then goes
      const onClose = (): void => { setTimeout(done, this.delayMs + 5000).unref() }
      inbound.once('close', onClose)
      outbound.once('close', onClose)
    })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.opts.listenPort, this.opts.listenHost, () => {
        server.off('error', reject)
        resolve()
      })
    })
  }

  async stop (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
    const server = this.server
    this.server = undefined
    if (server !== undefined) await new Promise<void>(resolve => { server.close(() => { resolve() }) })
  }
}

function hostPort (raw: string | undefined, what: string): { host: string, port: number } {
  const m = /^(.*):(\d+)$/.exec(raw ?? '')
  if (m === null) throw new Error(`${what}: expected host:port, got ${JSON.stringify(raw)}`)
  return { host: m[1], port: Number(m[2]) }
}

if (import.meta.main) {
  const [listenRaw, targetRaw, delayRaw] = process.argv.slice(2)
  try {
    const listen = hostPort(listenRaw, 'listen')
    const target = hostPort(targetRaw, 'target')
    const proxy = new DelayProxy({ listenHost: listen.host, listenPort: listen.port, targetHost: target.host, targetPort: target.port, delayMs: Number(delayRaw ?? 0) })
    await proxy.start()
    process.stdout.write(`listening ${listen.host}:${proxy.port}\n`)
    onStdinLines(line => {
      try {
        const msg = JSON.parse(line) as { delayMs?: number }
        if (typeof msg.delayMs === 'number' && msg.delayMs >= 0) proxy.delayMs = msg.delayMs
        process.stdout.write(`delay ${proxy.delayMs}\n`)
      } catch {
        process.stdout.write(`error bad command ${JSON.stringify(line)}\n`)
      }
    })
    process.stdin.on('end', () => { void proxy.stop().then(() => process.exit(0)) })
  } catch (err: any) {
    process.stderr.write(`delay-proxy: ${err?.message ?? String(err)}\n`)
    process.exit(1)
  }
}
