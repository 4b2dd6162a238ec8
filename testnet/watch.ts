/**
 * Watches a running testnet converge through the nodes' published /status ports (docker-compose's, or
 * any soma-sync nodes): prints a line per node as they change and, at the end, a table.
 *
 *   node testnet/watch.ts [--nodes devnet=127.0.0.1:7780,full1=127.0.0.1:7781,...] [--producer devnet]
 *                         [--until converged|never] [--timeout 300s] [--interval 500ms] [--min-commit N]
 *                         [--require-snapshot late] [--require-archival archive] [--require-archive-sync bucket]
 *
 * Defaults: the docker-compose.yml nodes on 127.0.0.1 (their SOMA_TESTNET_<NODE>_STATUS_PORT, else the
 * file's port), until every node reports the producer's state root at the same commit (exit 0), or
 * --timeout (exit 1), or a node diverges (exit 1). --require-snapshot <node>: that node's /status must
 * also show it restored a snapshot (snapshot sync), else exit 1. --require-archival <node>: that node's
 * /status must show archival mode (archival: true, lowest available commit 0), else exit 1. --require-archive-sync <node>:
 * that node's /status must show it fast-synced from an archive (archiveSync phase done, spot checks
 * confirmed by peers), else exit 1.
 */
import { Convergence, archivalEvidence, archiveSyncEvidence, asStatus, snapshotSyncEvidence, type NodeStatus } from './converge.ts'
import { hostPortVariable } from './compose.ts'
import { testnetNodes } from './topology.ts'

export interface WatchOptions {
  /** name → "host:port" of its status server */
  nodes: Record<string, string>
  producer: string
  /** stop once converged (else only at the timeout) */
  untilConverged: boolean
  timeoutMs: number
  intervalMs: number
  /** a match counts from this commit on */
  minCommit: number
  /** where progress goes */
  out: (line: string) => void
}

export async function fetchStatus (hostPort: string, timeoutMs = 3000): Promise<NodeStatus> {
  const res = await fetch(`http://${hostPort}/status`, { signal: AbortSignal.timeout(timeoutMs) })
  if (!res.ok) throw new Error(`HTTP ${res.status}`)
  return asStatus(await res.json())
}

/** Polls until converged / diverged / timeout; returns the tracker. */
export async function watch (opts: WatchOptions): Promise<{ converged: boolean, convergence: Convergence }> {
  const names = Object.keys(opts.nodes)
  const c = new Convergence(opts.producer, names)
  const deadline = Date.now() + opts.timeoutMs
  // a line per node when its state changes, at most every 5 s unless its verdict or reachability changes
  const shown = new Map<string, { text: string, key: string, at: number }>()
  while (true) {
    await Promise.all(names.map(async n => {
      let s: NodeStatus | Error
      try {
        s = await fetchStatus(opts.nodes[n])
      } catch (err: any) {
        s = err instanceof Error ? err : new Error(String(err))
      }
      c.observe(n, s)
    }))
    for (const n of names) {
      const s = c.latest(n)
      const v = c.verdict(n)
      const reachable = s !== undefined && !(s instanceof Error)
      const text = !reachable
        ? `unreachable${s instanceof Error ? ` (${s.message})` : ''}`
        : `commit ${s.highestExecuted}, root ${s.stateRoot.slice(0, 16)}, ${s.peers} peers, ${s.phase}${v.state === 'matched' ? ', matches the producer' : v.state === 'diverged' ? `, DIVERGED: ${v.detail}` : ''}`
      const key = `${reachable}/${v.state}`
      const prev = shown.get(n)
      if (prev === undefined || (prev.text !== text && (prev.key !== key || Date.now() - prev.at >= 5000))) {
        shown.set(n, { text, key, at: Date.now() })
        opts.out(`${new Date().toISOString().slice(11, 19)} ${n.padEnd(8)} ${text}`)
      }
    }
    if (c.diverged().length > 0) return { converged: false, convergence: c }
    if (opts.untilConverged && c.converged(opts.minCommit)) return { converged: true, convergence: c }
    if (Date.now() >= deadline) return { converged: c.converged(opts.minCommit), convergence: c }
    await new Promise(resolve => setTimeout(resolve, opts.intervalMs))
  }
}

function parseMs (raw: string): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(raw)
  if (m === null) throw new Error(`${raw} is not a duration (e.g. 300s)`)
  return Number(m[1]) * (m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 1)
}

async function cli (argv: string[]): Promise<number> {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`)
    return i >= 0 ? argv[i + 1] : undefined
  }
  if (argv.includes('--help')) {
    process.stdout.write('usage: node testnet/watch.ts [--nodes name=host:port,...] [--producer devnet] [--until converged|never] [--timeout 300s] [--interval 500ms] [--min-commit N] [--require-snapshot <node>] [--require-archival <node>] [--require-archive-sync <node>]\n')
    return 0
  }
  const nodes: Record<string, string> = {}
  const raw = arg('nodes')
  if (raw !== undefined) {
    for (const part of raw.split(',')) {
      const [name, hostPort] = part.split('=')
      if (name === undefined || hostPort === undefined) throw new Error(`--nodes: ${part} is not name=host:port`)
      nodes[name] = hostPort
    }
  } else {
    for (const n of testnetNodes()) nodes[n.name] = `127.0.0.1:${process.env[hostPortVariable(n.name)] ?? n.hostStatusPort}`
  }
  const producer = arg('producer') ?? testnetNodes().find(n => n.role === 'devnet')!.name
  const { converged, convergence } = await watch({
    nodes,
    producer,
    untilConverged: (arg('until') ?? 'converged') === 'converged',
    timeoutMs: parseMs(arg('timeout') ?? '300s'),
    intervalMs: parseMs(arg('interval') ?? '500ms'),
    minCommit: Number(arg('min-commit') ?? 0),
    out: line => { process.stdout.write(line + '\n') }
  })
  process.stdout.write('\n' + convergence.table() + '\n\n')
  let ok = converged
  for (const name of Object.keys(nodes)) {
    const s = convergence.latest(name)
    const evidence = s === undefined || s instanceof Error ? undefined : snapshotSyncEvidence(s)
    if (evidence !== undefined) process.stdout.write(`${name}: ${evidence}\n`)
    else if (arg('require-snapshot') === name) {
      process.stdout.write(`${name}: NO sign of a snapshot sync in its /status\n`)
      ok = false
    }
    const archival = s === undefined || s instanceof Error ? undefined : archivalEvidence(s)
    if (archival !== undefined) process.stdout.write(`${name}: ${archival}\n`)
    else if (arg('require-archival') === name) {
      process.stdout.write(`${name}: NO archival mode in its /status (archival: true, lowest available commit 0)\n`)
      ok = false
    }
    const fast = s === undefined || s instanceof Error ? undefined : archiveSyncEvidence(s)
    if (fast !== undefined) process.stdout.write(`${name}: ${fast}\n`)
    else if (arg('require-archive-sync') === name) {
      process.stdout.write(`${name}: NO finished archive fast sync with spot checks in its /status (archiveSync: ${JSON.stringify(s === undefined || s instanceof Error ? undefined : s.archiveSync)})\n`)
      ok = false
    }
  }
  const bad = convergence.diverged()
  if (bad.length > 0) process.stdout.write(`DIVERGED: ${bad.map(b => `${b.name}: ${b.detail}`).join('; ')}\n`)
  process.stdout.write(converged ? 'converged: every node reports the producer\'s state root at the same commit\n' : 'NOT converged\n')
  return ok ? 0 : 1
}

if (import.meta.main) {
  cli(process.argv.slice(2)).then(code => process.exit(code), err => {
    process.stderr.write(`error: ${err?.message ?? String(err)}\n`)
    process.exit(2)
  })
}
