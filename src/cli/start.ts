/**
 * `soma-sync start`: a full node. It opens its store (genesis from --genesis-file or
 * `<dataDir>/genesis.pb`), joins the network through --entrypoints, serves /status and /metrics, and
 * reports its peers and progress.
 *
 * The sync protocols plug in through `opts.services` (libp2p protocol handlers) and
 * `opts.components` (started after libp2p, stopped before it); see SomaNode.
 */
import type { SomaConfig } from '../config.ts'
import { createNode, type CreateNodeOptions, type SomaNode } from '../node/node.ts'
import { createLogger, stderrLogOutput, type LogOutput, type Logger } from '../utils/logger.ts'
import type { StatusReport } from '../node/status-server.ts'
import { FatalNodeError } from '../errors.ts'
import type { SnapshotSyncProgress } from '../snapshot/sync/snapshot-sync.ts'
import { missingProcessSettings } from '../node/runtime.ts'

export interface StartOptions extends Pick<CreateNodeOptions, 'genesis' | 'services' | 'components' | 'statusServer'> {
  /** @default a logger named 'start' at config.logLevel */
  logger?: Logger
  /** how often a progress line is logged when there is no live progress line (0: never). @default config.progressIntervalMs */
  reportIntervalMs?: number
  /** a live progress line on stderr, redrawn every second (and no periodic progress log lines). @default stderr is a terminal */
  progress?: boolean
  /** where the live progress line is drawn. @default the logger's output when it is a terminal, else stderr */
  progressOutput?: LogOutput
}

/**
 * "commit 1234/5000 (24.7%), 120.3 commits/s, 3 peers, ETA 31s, syncing"; while a snapshot syncs:
 * "snapshot 4000 (epoch 79): chunks 340/1000 (34.0%), 120.5/350.2 MiB, 95.3 MB/s, 2 peers, ETA 3s, chunks";
 * when the node waits (`status.waiting`), the reason's code ends the line: "…, waiting: no-peers".
 */
export function progressLine (node: SomaNode, status?: StatusReport): string {
  const w = status?.waiting === undefined ? '' : `, waiting: ${status.waiting.code}`
  const snap = (node.libp2p.services as any).snapshotSync
  if (snap?.running === true) {
    const s = snap.progress()
    if (s !== undefined) return snapshotProgressLine(s, node.peerCount()) + w
  }
  const p = node.store.getProgress()
  const sync = (node.libp2p.services as any).stateSync?.progress?.()
  const target = Math.max(sync?.target ?? 0, p.highestSynced)
  const rate: number = sync?.commitsPerSecond ?? 0
  const pct = target > 0 ? ` (${(100 * p.highestExecuted / target).toFixed(1)}%)` : ''
  const left = target - p.highestExecuted
  const eta = rate > 0 && left > 0 ? `, ETA ${formatDuration(left / rate)}` : ''
  return `commit ${p.highestExecuted}/${target}${pct}, ${rate.toFixed(1)} commits/s, ${node.peerCount()} peers${eta}, ${node.phase}${w}`
}

const MiB = 1024 * 1024

/** The progress line of a snapshot sync (see progressLine). */
export function snapshotProgressLine (s: SnapshotSyncProgress, connected: number): string {
  if (s.commit === undefined) return `snapshot: ${s.phase}, ${connected} peers`
  const pct = s.chunks.total > 0 ? ` (${(100 * s.chunks.done / s.chunks.total).toFixed(1)}%)` : ''
  const eta = s.etaSeconds !== undefined && s.etaSeconds > 0 ? `, ETA ${formatDuration(s.etaSeconds)}` : ''
  const load = s.phase === 'load' ? `, loaded ${s.load.done}/${s.load.total}` : ''
  return `snapshot ${s.commit} (epoch ${s.epoch ?? '?'}): chunks ${s.chunks.done}/${s.chunks.total}${pct}, ${(s.bytes.done / MiB).toFixed(1)}/${(s.bytes.total / MiB).toFixed(1)} MiB, ` +
    `${(s.bytesPerSecond / 1e6).toFixed(1)} MB/s, ${s.peers} peers${eta}${load}, ${s.phase}`
}

function formatDuration (seconds: number): string {
  if (seconds < 90) return `${Math.ceil(seconds)}s`
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`
  return `${(seconds / 3600).toFixed(1)}h`
}

export interface StartHandle {
  node: SomaNode
  /** stops reporting and the node. Idempotent. */
  stop: () => Promise<void>
  /**
   * With `exitOnFatal`: rejects with FatalNodeError when the node enters its failed phase (the CLI then
   * exits with status 3); never settles otherwise.
   */
  failed: Promise<never>
}

/** Creates and starts a full node. */
export async function runStart (config: SomaConfig, opts: StartOptions = {}): Promise<StartHandle> {
  const log = opts.logger ?? createLogger('start', { level: config.logLevel })
  const node = await createNode(config, {
    genesis: opts.genesis,
    services: opts.services,
    components: opts.components,
    statusServer: opts.statusServer,
    logger: log.child('node')
  })
  await node.start()
  const missing = missingProcessSettings()
  if (missing.length > 0) log.info('this process runs without %s: its peak memory is higher (README, "Memory"; the soma-sync executable and `npm start` set them)', missing.join(' '))
  if (config.entrypoints.length === 0) log.warn('no --entrypoints: waiting for peers to dial this node')
  else log.info('joining through %d entrypoint(s): %s', config.entrypoints.length, config.entrypoints.join(', '))

  // on a terminal, a live progress line redrawn every second (log lines are written above it: the
  // output clears it first); off a terminal, one progress log line every progressIntervalMs
  const out = opts.progressOutput ?? (log.output?.tty === true ? log.output : stderrLogOutput())
  const tty = opts.progress ?? out.tty
  const every = opts.reportIntervalMs ?? config.progressIntervalMs
  const report = (): void => {
    void node.status().then(s => { // refreshes node.phase from the sync loop
      if (tty) out.progress(progressLine(node, s))
      else log.info(progressLine(node, s))
    }).catch(() => {})
  }
  const timer = tty ? setInterval(report, 1000) : every > 0 ? setInterval(report, every) : undefined
  timer?.unref()

  let rejectFailed!: (err: Error) => void
  const failed = new Promise<never>((_resolve, reject) => { rejectFailed = reject })
  failed.catch(() => {}) // callers that never await it
  if (config.exitOnFatal) node.onFault(f => { rejectFailed(new FatalNodeError(`${f.source} failed: ${f.error.message}`, { cause: f.error })) })

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      if (timer !== undefined) clearInterval(timer)
      if (tty) out.clearProgress()
      await node.stop()
    })()
    await stopping
  }
  return { node, stop, failed }
}
