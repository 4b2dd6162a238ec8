/**
 * The node's Prometheus series (`soma_*`), served on /metrics beside libp2p's and the process's. Every
 * series is declared once in METRICS (name, type, labels, help): the README's metrics table is generated
 * from it (`npm run docs`), and a test checks that /metrics serves exactly these.
 *
 * Gauges that mirror the status (target, distance, rate, snapshot progress, peers by state, health) are
 * set from the /status report at each scrape; counters and histograms (failures, penalties, bans,
 * executor batches, LevelDB writes, faults) are fed by the node's events as they happen.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { StatusReport } from './status-server.ts'

export interface MetricSpec {
  name: string
  type: 'gauge' | 'counter' | 'histogram'
  help: string
  labels?: readonly string[]
  /** served by the StatusServer itself (set from the status report) rather than NodeMetrics */
  server?: boolean
}

export const METRICS: readonly MetricSpec[] = [
  { name: 'soma_highest_synced_commit', type: 'gauge', server: true, help: 'highest commit stored with its blocks (verified)' },
  { name: 'soma_highest_executed_commit', type: 'gauge', server: true, help: 'highest commit executed into the state' },
  { name: 'soma_lowest_available_commit', type: 'gauge', server: true, help: 'lowest commit this node can serve' },
  { name: 'soma_epoch', type: 'gauge', server: true, help: 'current epoch' },
  { name: 'soma_peers', type: 'gauge', server: true, help: 'connected libp2p peers' },
  { name: 'soma_executed_transactions_total', type: 'counter', server: true, help: 'transactions executed since the process started' },
  { name: 'soma_sync_target', type: 'gauge', help: 'the commit sync target: the highest commit peers claim (never below the highest synced)' },
  { name: 'soma_sync_distance', type: 'gauge', help: 'commits between the sync target and the highest executed commit' },
  { name: 'soma_commits_per_second', type: 'gauge', help: 'commits synced per second (last 10 s)' },
  { name: 'soma_snapshot_bytes', type: 'gauge', labels: ['state'], help: 'bytes of the snapshot being synced: state="done" (fetched or reused) and state="total"' },
  { name: 'soma_snapshot_chunks', type: 'gauge', labels: ['state'], help: 'chunks of the snapshot being synced: state="done" and state="total"' },
  { name: 'soma_range_failures_total', type: 'counter', labels: ['reason'], help: 'commit-sync requests (commit ranges, blocks, availability) that failed through a peer, by error class' },
  { name: 'soma_chunk_failures_total', type: 'counter', labels: ['reason'], help: 'snapshot-sync requests (chunks, listing, filter, manifest) that failed through a peer, by error class' },
  { name: 'soma_penalties_total', type: 'counter', labels: ['sync', 'reason'], help: 'peer-score penalties, by sync (commit, snapshot) and error class' },
  { name: 'soma_bans_total', type: 'counter', labels: ['sync', 'reason'], help: 'peers banned, by sync (commit, snapshot) and the error class of the last penalty' },
  { name: 'soma_peers_by_state', type: 'gauge', labels: ['state'], help: 'peers by state: connected, usable (connected, our chain, not banned), banned, wrong_chain (met recently)' },
  { name: 'soma_executor_batch_seconds', type: 'histogram', help: 'time of one CommitExecutor batch (execution and its LevelDB write)' },
  { name: 'soma_executor_batch_commits', type: 'histogram', help: 'commits per CommitExecutor batch' },
  { name: 'soma_leveldb_write_seconds', type: 'histogram', help: 'time of one LevelDB batch write of the chain store' },
  { name: 'soma_node_faults_total', type: 'counter', labels: ['source', 'code'], help: 'faults that moved the node to its failed phase (source: executor, store write; code: disk-full, executor-failed)' },
  { name: 'soma_health_status', type: 'gauge', help: 'what /health answers: 200 synced and progressing, 206 syncing, 503 stuck' },
  { name: 'soma_waiting', type: 'gauge', labels: ['code'], help: '1 for the reason the node waits (the /status `waiting` code), absent when it does not wait' },
  { name: 'soma_uptime_seconds', type: 'gauge', help: 'seconds since the node started' }
]

const BUCKETS: Record<string, number[]> = {
  soma_executor_batch_seconds: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  soma_executor_batch_commits: [1, 2, 5, 10, 25, 50, 100, 250, 1000],
  soma_leveldb_write_seconds: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]
}

type AnyMetric = Gauge | Counter | Histogram

export class NodeMetrics {
  readonly registry = new Registry()
  private readonly metrics = new Map<string, AnyMetric>()

  constructor () {
    const registers = [this.registry]
    for (const m of METRICS) {
      if (m.server === true) continue
      const common = { name: m.name, help: m.help, labelNames: [...(m.labels ?? [])], registers }
      this.metrics.set(m.name, m.type === 'gauge' ? new Gauge(common) : m.type === 'counter' ? new Counter(common) : new Histogram({ ...common, buckets: BUCKETS[m.name] }))
    }
  }

  gauge (name: string): Gauge { return this.get(name) as Gauge }
  counter (name: string): Counter { return this.get(name) as Counter }
  histogram (name: string): Histogram { return this.get(name) as Histogram }

  private get (name: string): AnyMetric {
    const m = this.metrics.get(name)
    if (m === undefined) throw new Error(`no metric ${name} in METRICS`)
    return m
  }

  /** Sets the status-mirroring gauges from a /status report. */
  update (s: StatusReport, peersByState: Record<string, number>): void {
    const sync = s.sync as { target?: number, commitsPerSecond?: number } | undefined
    const target = Math.max(sync?.target ?? 0, s.highestSynced)
    this.gauge('soma_sync_target').set(target)
    this.gauge('soma_sync_distance').set(Math.max(0, target - s.highestExecuted))
    this.gauge('soma_commits_per_second').set(sync?.commitsPerSecond ?? 0)
    const snap = s.snapshot as { chunks?: { done: number, total: number }, bytes?: { done: number, total: number } } | undefined
    this.gauge('soma_snapshot_bytes').set({ state: 'done' }, snap?.bytes?.done ?? 0)
    this.gauge('soma_snapshot_bytes').set({ state: 'total' }, snap?.bytes?.total ?? 0)
    this.gauge('soma_snapshot_chunks').set({ state: 'done' }, snap?.chunks?.done ?? 0)
    this.gauge('soma_snapshot_chunks').set({ state: 'total' }, snap?.chunks?.total ?? 0)
    for (const [state, n] of Object.entries(peersByState)) this.gauge('soma_peers_by_state').set({ state }, n)
    this.gauge('soma_health_status').set(typeof s.healthStatus === 'number' ? s.healthStatus : (s.healthy ? 200 : 503))
    this.gauge('soma_waiting').reset()
    const w = s.waiting as { code?: string } | undefined
    if (w?.code !== undefined) this.gauge('soma_waiting').set({ code: w.code }, 1)
    this.gauge('soma_uptime_seconds').set(typeof s.uptimeSeconds === 'number' ? s.uptimeSeconds : 0)
  }
}

/** The README's metrics table (markdown), from METRICS. */
export function metricsMarkdownTable (): string {
  const lines = ['| series | type | labels | description |', '|---|---|---|---|']
  for (const m of METRICS) lines.push(`| \`${m.name}\` | ${m.type} | ${(m.labels ?? []).map(l => `\`${l}\``).join(', ')} | ${m.help} |`)
  return lines.join('\n')
}
