/**
 * The status HTTP server (node:http):
 * - `GET /status`  JSON status of the node (from the `getStatus` callback);
 * - `GET /metrics` Prometheus text: prom-client's default registry (where @libp2p/prometheus-metrics
 *   puts libp2p's and the process's metrics), this server's `soma_*` metrics, and any extra registries;
 * - `GET /health`  the status's `healthStatus` when it has one (a SomaNode: 200 `ok` synced and
 *   progressing, 206 `syncing`, 503 `stuck: <code>: <message>`; see src/node/health.ts), else 200 "ok"
 *   when the status says healthy and 503 otherwise.
 *
 * The `soma_*` metrics live in a registry of their own (`server.registry`), so several nodes in one
 * process do not clash, and are refreshed from `getStatus` at each scrape.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Registry, register } from 'prom-client'
import type { Logger } from '../utils/logger.ts'

/** What `/status` serves. Callers may add fields. */
export interface StatusReport {
  /** genesis digest, hex */
  chainId: string
  peerId: string
  /** addresses libp2p listens on (with /p2p/<peer id>) */
  listen: string[]
  highestSynced: number
  highestExecuted: number
  lowestAvailable: number
  /** state root after the highest executed commit, hex ('' if unknown) */
  stateRoot: string
  epoch: number
  /** connected peers */
  peers: number
  /** sync phase: 'idle', 'syncing', 'producing', 'synced', ... */
  phase: string
  /** transactions executed since the process started */
  executedTransactions: number
  /** false makes /health answer 503 */
  healthy: boolean
  /** what /health answers: 200, 206 or 503 (a SomaNode sets it; else `healthy` decides) */
  healthStatus?: number
  /** 'ok' | 'syncing' | 'stuck' */
  health?: string
  /** why the node does not progress (src/sync/waiting.ts), with evidence */
  waiting?: { code: string, message: string, since: number, evidence?: Record<string, unknown> }
  [key: string]: unknown
}

export interface StatusServerOptions {
  host: string
  /** 0 binds an ephemeral port (see `port` after start()) */
  port: number
  getStatus: () => StatusReport | Promise<StatusReport>
  /** more registries to serve on /metrics (e.g. sync metrics) */
  registries?: Registry[]
  logger?: Logger
}

export class StatusServer {
  /** this server's own metrics (`soma_*`); register more here if they are per node */
  readonly registry = new Registry()
  private readonly opts: StatusServerOptions
  private server?: Server
  private readonly gauges: {
    synced: Gauge
    executed: Gauge
    lowest: Gauge
    epoch: Gauge
    peers: Gauge
  }

  private readonly executedTxs: Counter
  private executedTxsSeen = 0

  constructor (opts: StatusServerOptions) {
    this.opts = opts
    const registers = [this.registry]
    this.gauges = {
      synced: new Gauge({ name: 'soma_highest_synced_commit', help: 'highest commit stored with its blocks (verified)', registers }),
      executed: new Gauge({ name: 'soma_highest_executed_commit', help: 'highest commit executed into the state', registers }),
      lowest: new Gauge({ name: 'soma_lowest_available_commit', help: 'lowest commit this node can serve', registers }),
      epoch: new Gauge({ name: 'soma_epoch', help: 'current epoch', registers }),
      peers: new Gauge({ name: 'soma_peers', help: 'connected libp2p peers', registers })
    }
    this.executedTxs = new Counter({ name: 'soma_executed_transactions_total', help: 'transactions executed since the process started', registers })
  }

  /** The bound port (after start()). */
  get port (): number {
    const addr = this.server?.address()
    if (addr == null || typeof addr === 'string') throw new Error('status server is not listening')
    return (addr as AddressInfo).port
  }

  /** `http://host:port` (after start()). */
  get url (): string {
    const host = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host
    return `http://${host}:${this.port}`
  }

  get listening (): boolean { return this.server?.listening === true }

  async start (): Promise<void> {
    if (this.server !== undefined) return
    const server = createServer((req, res) => { void this.handle(req, res) })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.server = undefined
        reject(new Error(`status server cannot listen on ${this.opts.host}:${this.opts.port}: ${err.message}`, { cause: err }))
      }
      server.once('error', onError)
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', onError)
        resolve()
      })
    })
    server.on('error', err => this.opts.logger?.error('status server: %s', err.message))
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server === undefined) return
    this.server = undefined
    await new Promise<void>(resolve => {
      server.close(() => { resolve() })
      server.closeAllConnections()
    })
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]
    try {
      if (path !== '/status' && path !== '/metrics' && path !== '/health') {
        send(res, 404, 'text/plain', 'not found: try /status, /metrics or /health\n')
        return
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD')
        send(res, 405, 'text/plain', 'method not allowed\n')
        return
      }
      const status = await this.opts.getStatus()
      if (path === '/status') {
        send(res, 200, 'application/json', JSON.stringify(status, null, 2) + '\n')
      } else if (path === '/health') {
        const code = typeof status.healthStatus === 'number' ? status.healthStatus : (status.healthy ? 200 : 503)
        const state = status.health ?? (code === 200 ? 'ok' : code === 206 ? 'syncing' : 'unhealthy')
        const w = status.waiting
        send(res, code, 'text/plain', `${state}${w !== undefined && code !== 200 ? `: ${w.code}: ${w.message}` : ''}\n`)
      } else {
        send(res, 200, register.contentType, await this.metrics(status))
      }
    } catch (err: any) {
      this.opts.logger?.warn('status server: %s %s failed: %s', req.method, path, err.message)
      if (!res.headersSent) send(res, 500, 'text/plain', `error: ${err.message}\n`)
      else res.destroy()
    }
  }

  /** Prometheus text of all served registries, with the soma_* metrics set from `status`. */
  async metrics (status?: StatusReport): Promise<string> {
    const s = status ?? await this.opts.getStatus()
    this.gauges.synced.set(s.highestSynced)
    this.gauges.executed.set(s.highestExecuted)
    this.gauges.lowest.set(s.lowestAvailable)
    this.gauges.epoch.set(s.epoch)
    this.gauges.peers.set(s.peers)
    const delta = s.executedTransactions - this.executedTxsSeen
    if (delta > 0) this.executedTxs.inc(delta)
    this.executedTxsSeen = Math.max(this.executedTxsSeen, s.executedTransactions)
    const parts = [await register.metrics(), await this.registry.metrics()]
    for (const r of this.opts.registries ?? []) parts.push(await r.metrics())
    return parts.map(p => p.endsWith('\n') || p === '' ? p : p + '\n').join('')
  }
}

function send (res: ServerResponse, code: number, type: string, body: string): void {
  res.writeHead(code, { 'Content-Type': type, 'Cache-Control': 'no-store' })
  res.end(res.req.method === 'HEAD' ? undefined : body)
}
