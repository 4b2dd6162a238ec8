/**
 * `soma-sync status [--url <url>] [--json]`: reads a running node's GET /status and prints it for a
 * person: phase and health, progress towards the target, why the node waits (code, message, since,
 * evidence), each peer, the last commit time, version and uptime.
 */
import type { SomaConfig } from '../config.ts'
import { ConfigError } from '../errors.ts'
import type { StatusReport } from '../node/status-server.ts'
import type { PeerStatus } from '../node/node.ts'

/** Exit status when the node cannot be reached. */
export const EXIT_UNREACHABLE = 4

function ago (ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 90) return `${s} s`
  if (s < 5400) return `${Math.round(s / 60)} min`
  return `${(s / 3600).toFixed(1)} h`
}

/** The status as lines for a person. */
export function formatStatus (s: StatusReport, now = Date.now()): string {
  const lines: string[] = []
  const sync = s.sync as { target?: number, commitsPerSecond?: number } | undefined
  const target = Math.max(sync?.target ?? 0, s.highestSynced)
  const health = s.health ?? (s.healthy ? 'ok' : 'unhealthy')
  lines.push(`node      ${s.peerId}  (soma-sync ${String(s.version ?? '?')}, up ${ago(1000 * Number(s.uptimeSeconds ?? 0))})`)
  lines.push(`chain     ${s.chainId}`)
  lines.push(`phase     ${s.phase}   health: ${health}${typeof s.healthStatus === 'number' ? ` (${s.healthStatus})` : ''}`)
  const pct = target > 0 ? ` (${(100 * s.highestExecuted / target).toFixed(1)}%)` : ''
  lines.push(`progress  executed ${s.highestExecuted} / target ${target}${pct}, synced ${s.highestSynced}, lowest available ${s.lowestAvailable}, epoch ${s.epoch}${sync?.commitsPerSecond !== undefined ? `, ${sync.commitsPerSecond} commits/s` : ''}`)
  lines.push(`last      ${typeof s.lastCommitAt === 'string' ? `new commit ${ago(now - Date.parse(s.lastCommitAt))} ago (${s.lastCommitAt})` : 'no new commit since start'}`)
  const snap = s.snapshot as { phase?: string, commit?: number, chunks?: { done: number, total: number }, bytes?: { done: number, total: number }, error?: string } | undefined
  if (snap?.commit !== undefined) lines.push(`snapshot  commit ${snap.commit}: ${snap.phase ?? ''}, chunks ${snap.chunks?.done ?? 0}/${snap.chunks?.total ?? 0}, ${((snap.bytes?.done ?? 0) / 2 ** 20).toFixed(1)}/${((snap.bytes?.total ?? 0) / 2 ** 20).toFixed(1)} MiB${snap.error !== undefined ? `, error: ${snap.error}` : ''}`)
  const w = s.waiting
  if (w !== undefined) {
    lines.push(`WAITING   ${w.code}: ${w.message}`)
    lines.push(`          since ${new Date(w.since).toISOString()} (${ago(now - w.since)})`)
    for (const [k, v] of Object.entries(w.evidence ?? {})) {
      if (v !== undefined) lines.push(`          ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
    }
  } else {
    lines.push('waiting   nothing')
  }
  const peers = (s.peerList ?? []) as PeerStatus[]
  lines.push(`peers     ${s.peers} connected${peers.length > 0 ? ':' : ''}`)
  for (const p of peers) {
    const bits = [
      p.connected ? (p.address !== '' ? p.address : 'connected') : 'not connected',
      p.height !== undefined ? `height ${p.height}` : 'height ?',
      p.lowestAvailable !== undefined ? `lowest ${p.lowestAvailable}` : undefined,
      p.rttMs !== undefined ? `rtt ${p.rttMs} ms` : undefined,
      `score ${p.score}`,
      p.bannedUntil !== undefined ? `BANNED until ${p.bannedUntil}` : undefined,
      p.wrongChain ? 'OTHER CHAIN' : undefined
    ].filter(b => b !== undefined)
    lines.push(`  ${p.id}  ${bits.join(', ')}`)
  }
  return lines.join('\n')
}

/** Fetches <url>/status and prints it; returns the exit status. */
export async function runStatusCommand (config: SomaConfig, opts: { url?: string, json?: boolean } = {}): Promise<number> {
  const host = config.statusHost.includes(':') ? `[${config.statusHost}]` : config.statusHost
  const base = (opts.url ?? `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${config.statusPort}`).replace(/\/+$/, '').replace(/\/status$/, '')
  let url: URL
  try {
    url = new URL(`${base}/status`)
  } catch {
    throw new ConfigError(`--url ${JSON.stringify(opts.url)} is not a URL (e.g. http://127.0.0.1:7780)`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`--url ${JSON.stringify(opts.url)}: expected http:// or https://`)
  let res: Response
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(10_000) })
  } catch (err: any) {
    process.stderr.write(`error: cannot reach ${url.href}: ${err?.cause?.code ?? err?.cause?.message ?? err?.message ?? err} (is the node running with --status-port ${config.statusPort}?)\n`)
    return EXIT_UNREACHABLE
  }
  if (!res.ok) {
    process.stderr.write(`error: ${url.href} answered ${res.status}: ${(await res.text()).trim().slice(0, 200)}\n`)
    return EXIT_UNREACHABLE
  }
  const status = await res.json() as StatusReport
  process.stdout.write((opts.json === true ? JSON.stringify(status, null, 2) : formatStatus(status)) + '\n')
  const code = typeof status.healthStatus === 'number' ? status.healthStatus : (status.healthy ? 200 : 503)
  return code === 200 ? 0 : 1
}
