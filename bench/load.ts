/**
 * Load test (issue 15): one serving node, many client processes syncing from it at once.
 *
 * The server is a devnet node (bench/load-child.ts `serve`: createNode as `soma-sync devnet` runs it)
 * that produces a chain with attested snapshots, then serves it. Clients are full nodes in their own
 * processes (createNode as `soma-sync start` runs it) whose only entrypoint is the server. Scenarios:
 *
 *   commits.N    N clients commit-sync the whole chain at once (N = 1 is the baseline of the aggregate)
 *   snapshot.N   N clients snapshot-sync (then commit-sync the rest) at once
 *   mixed        clients of both kinds join at staggered times and some leave (killed) before they are
 *                done; each completed client's throughput counts
 *
 * Figures per scenario: per-client throughput (commits/s or snapshot MiB/s) min/median/max, fairness
 * (min ÷ median; target ≥ 0.5), aggregate throughput (work of all clients ÷ the time from the first
 * client's start to the last one's end)
 * and its ratio to the one-client run (target ≥ 0.8), the server's peak RSS and CPU (cores), requests
 * refused by reason, and the server's memory bound (README, "Load"):
 *
 *   peak RSS ≤ idle RSS + store cache + 3 × serveMaxInflightBytes + clients × PER_CONNECTION_BYTES
 *
 * checked at each N (`memoryBound.holds.N` = 1 when it holds).
 *
 *     node bench/load.ts [--quick]           (or: node bench/run.ts --only load)
 *
 * --quick: a small chain, 1 and 3 clients, a short mixed run (proves it works; figures not comparable).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULTS, type SomaConfig } from '../src/config.ts'
import { NODE_FLAGS, withNodeEnv } from '../src/node/runtime.ts'
import { TempDirs, isMain, printFigures, log, type Figures, type BenchOptions } from './util.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(here, 'load-child.ts')
const MiB = 1024 * 1024

/** Per-connection memory the bound allows (libp2p connection, noise, yamux, identify, peer store). */
export const PER_CONNECTION_BYTES = 2 * MiB
/** Copies of an in-flight response the server may hold: chunks read from the store, the encoded response, its encrypted frames. */
export const INFLIGHT_COPIES = 3

export interface LoadOptions extends BenchOptions {
  /** client counts of the commits/snapshot scenarios (1 is always run first, the baseline) */
  clients?: number[]
  commits?: number
  accounts?: number
  /** the server's serveMaxInflightBytes */
  inflightBytes?: number
}

interface Ready { addr: string, genesisFile: string, tip: number, snapshot: number, idleRss: number }
interface ServerStats { ms: number, peakRss: number, rss: number, cpuCores: number, refused: Record<string, number>, admitted: number, queued: number, servedBytes: number, peakInflightBytes: number }
interface ClientResult { ms: number, startedAt: number, doneAt: number, units: number, rss: number, executed: number, mode?: string }

/** A child process's stdout lines, awaited by prefix. */
class Lines {
  private readonly waiting: Array<{ prefix: string, resolve: (rest: string) => void }> = []
  private readonly buffered: string[] = []
  constructor (child: ChildProcess, what: string) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const i = this.waiting.findIndex(w => l.startsWith(w.prefix))
      if (i >= 0) { const [w] = this.waiting.splice(i, 1); w.resolve(l.slice(w.prefix.length).trim()) } else this.buffered.push(l)
    })
    child.once('exit', (code, sig) => {
      for (const w of this.waiting.splice(0)) w.resolve(`__EXIT__ ${what} exited with ${code ?? sig}`)
    })
  }

  async next (prefix: string): Promise<string> {
    const i = this.buffered.findIndex(l => l.startsWith(prefix))
    if (i >= 0) return this.buffered.splice(i, 1)[0].slice(prefix.length).trim()
    const rest = await new Promise<string>(resolve => this.waiting.push({ prefix, resolve }))
    if (rest.startsWith('__EXIT__')) throw new Error(rest.slice(9))
    return rest
  }
}

function spawnChild (args: string[]): ChildProcess {
  return spawn(process.execPath, [...NODE_FLAGS, '--expose-gc', CHILD, ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: withNodeEnv() })
}

function stats (xs: number[]): { min: number, median: number, max: number } {
  const s = [...xs].sort((a, b) => a - b)
  const median = s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
  return { min: s[0], median, max: s[s.length - 1] }
}

/** The memory bound of the server at `clients` connected clients (bytes). */
export function memoryBound (idleRss: number, clients: number, inflightBytes: number, storeCacheBytes = DEFAULTS.storeCacheBytes): number {
  return idleRss + storeCacheBytes + INFLIGHT_COPIES * inflightBytes + clients * PER_CONNECTION_BYTES
}

export async function run (opts: LoadOptions = {}): Promise<Figures> {
  const quick = opts.quick === true
  const counts = opts.clients ?? (quick ? [3] : [5, 10, 20])
  const commits = opts.commits ?? (quick ? 40 : 2000)
  const accounts = opts.accounts ?? (quick ? 2000 : 400_000)
  const inflightBytes = opts.inflightBytes ?? DEFAULTS.serveMaxInflightBytes
  const tmp = new TempDirs()
  const children = new Set<ChildProcess>()
  const figures: Figures = {}
  // every client connects from 127.0.0.1: the server accepts them all at once (libp2p's default of 5 new
  // connections per second from one address reset the others, which started seconds late)
  const base: SomaConfig = { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], statusPort: 0, logLevel: 'warn', dhtEnabled: false, verifyWorkers: 0, snapshotAnnounceIntervalMs: 0, inboundConnectionRate: 1000 }
  try {
    const serverDir = tmp.make('load-server')
    log(`server: producing ${commits} commits over ${accounts} accounts...`)
    const server = spawnChild(['serve', JSON.stringify({ ...base, dataDir: serverDir, accounts, maxCommits: commits, roundIntervalMs: 0, epochLength: Math.max(10, Math.floor(commits / 4)), txsPerBlock: 10, snapshotTargetChunkBytes: quick ? 2048 : 256 * 1024, serveMaxInflightBytes: inflightBytes })])
    children.add(server)
    const lines = new Lines(server, 'the server')
    const ready = JSON.parse(await lines.next('READY')) as Ready
    figures['server.idleRssMiB'] = ready.idleRss / MiB
    figures['chain.commits'] = ready.tip
    figures['chain.snapshotCommit'] = ready.snapshot

    const clientConfig = (dir: string, mode: 'commits' | 'snapshot'): SomaConfig => ({ ...base, dataDir: dir, entrypoints: [ready.addr], genesisFile: ready.genesisFile, syncMode: mode, snapshotPeerWaitMs: 0 })
    const startClient = (mode: 'commits' | 'snapshot', name: string): { child: ChildProcess, started: Promise<string>, done: Promise<ClientResult> } => {
      const child = spawnChild(['client', JSON.stringify(clientConfig(tmp.make(name), mode)), String(ready.tip)])
      children.add(child)
      child.once('exit', () => children.delete(child))
      const l = new Lines(child, name)
      return { child, started: l.next('STARTED'), done: l.next('DONE').then(s => JSON.parse(s) as ClientResult) }
    }
    const measure = async (fn: () => Promise<ClientResult[]>): Promise<{ results: ClientResult[], server: ServerStats, ms: number }> => {
      server.stdin!.write('reset\n')
      await lines.next('RESET')
      const t0 = performance.now()
      const results = await fn()
      const ms = performance.now() - t0
      server.stdin!.write('stats\n')
      return { results, server: JSON.parse(await lines.next('STATS')) as ServerStats, ms }
    }
    const record = (label: string, mode: 'commits' | 'snapshot', clients: number, m: { results: ClientResult[], server: ServerStats, ms: number }): number => {
      const unit = mode === 'commits' ? 1 : MiB
      const rates = m.results.map(r => r.units / unit / (r.ms / 1000))
      const s = stats(rates)
      const what = mode === 'commits' ? 'commitsPerSec' : 'MiBPerSec'
      figures[`${label}.clients`] = clients
      figures[`${label}.${what}.min`] = s.min
      figures[`${label}.${what}.median`] = s.median
      figures[`${label}.${what}.max`] = s.max
      figures[`${label}.fairness`] = s.min / s.median
      // all clients' work over the time from the first client's start to the last one's end
      const span = Math.max(...m.results.map(r => r.doneAt)) - Math.min(...m.results.map(r => r.startedAt))
      const aggregate = m.results.reduce((a, r) => a + r.units / unit, 0) / (span / 1000)
      figures[`${label}.aggregate.${what}`] = aggregate
      figures[`${label}.server.peakRssMiB`] = m.server.peakRss / MiB
      figures[`${label}.server.cpuCores`] = m.server.cpuCores
      figures[`${label}.server.servedMiB`] = m.server.servedBytes / MiB
      figures[`${label}.server.peakInflightMiB`] = m.server.peakInflightBytes / MiB
      figures[`${label}.server.queuedRequests`] = m.server.queued
      for (const [reason, n] of Object.entries(m.server.refused)) figures[`${label}.refused.${reason}`] = n
      const bound = memoryBound(ready.idleRss, clients, inflightBytes)
      figures[`${label}.memoryBoundMiB`] = bound / MiB
      figures[`${label}.memoryBound.holds`] = m.server.peakRss <= bound ? 1 : 0
      return aggregate
    }

    for (const mode of ['commits', 'snapshot'] as const) {
      let one = 0
      for (const n of [1, ...counts]) {
        log(`${mode}: ${n} client${n === 1 ? '' : 's'} at once...`)
        const m = await measure(async () => await Promise.all(Array.from({ length: n }, (_, i) => startClient(mode, `${mode}-${n}-${i}`).done)))
        for (const r of m.results) if (r.executed < ready.tip) throw new Error(`a ${mode} client stopped at ${r.executed} of ${ready.tip}`)
        const aggregate = record(`${mode}.${n}`, mode, n, m)
        if (n === 1) one = aggregate
        else figures[`${mode}.${n}.aggregate/one`] = aggregate / one
      }
    }

    // mixed: both kinds join at staggered times; every third one leaves (is killed) `leaveMs` after its
    // node started, unless it is done by then
    const slots = quick ? 3 : 20
    const staggerMs = quick ? 300 : 1000
    const leaveMs = quick ? 300 : 3000
    log(`mixed: ${slots} clients joining every ${staggerMs} ms, every third leaving ${leaveMs} ms after its start...`)
    let left = 0
    const m = await measure(async () => {
      const done: Array<Promise<ClientResult | undefined>> = []
      for (let i = 0; i < slots; i++) {
        const mode = i % 2 === 0 ? 'commits' : 'snapshot'
        const c = startClient(mode, `mixed-${i}`)
        if (i % 3 === 2) {
          void c.started.then(() => setTimeout(() => { if (c.child.exitCode === null && c.child.signalCode === null) { left++; c.child.kill('SIGKILL') } }, leaveMs), () => {})
          done.push(c.done.then(r => ({ ...r, mode }), () => undefined))
        } else {
          done.push(c.done.then(r => ({ ...r, mode })))
        }
        await new Promise(resolve => setTimeout(resolve, staggerMs))
      }
      return (await Promise.all(done)).filter((r): r is ClientResult => r !== undefined)
    })
    figures['mixed.joined'] = slots
    figures['mixed.left'] = left
    figures['mixed.completed'] = m.results.length
    const byKind = (kind: string): number[] => m.results.filter(r => r.mode === kind).map(r => r.units / (r.ms / 1000))
    for (const kind of ['commits', 'snapshot']) {
      const rates = byKind(kind)
      if (rates.length === 0) continue
      const s = stats(rates)
      const div = kind === 'commits' ? 1 : MiB
      figures[`mixed.${kind}.${kind === 'commits' ? 'commitsPerSec' : 'MiBPerSec'}.min`] = s.min / div
      figures[`mixed.${kind}.${kind === 'commits' ? 'commitsPerSec' : 'MiBPerSec'}.median`] = s.median / div
      figures[`mixed.${kind}.fairness`] = s.min / s.median
    }
    figures['mixed.server.peakRssMiB'] = m.server.peakRss / MiB
    figures['mixed.server.cpuCores'] = m.server.cpuCores
    for (const [reason, n] of Object.entries(m.server.refused)) figures[`mixed.refused.${reason}`] = n
    const bound = memoryBound(ready.idleRss, slots, inflightBytes)
    figures['mixed.memoryBoundMiB'] = bound / MiB
    figures['mixed.memoryBound.holds'] = m.server.peakRss <= bound ? 1 : 0

    server.stdin!.end()
    await new Promise(resolve => server.once('exit', resolve))
    return figures
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    tmp.cleanup()
  }
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  printFigures('load', await run({ quick }))
}
