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
import { createLogger, type Logger } from '../utils/logger.ts'
import type { SnapshotSyncProgress } from '../snapshot/sync/snapshot-sync.ts'
import { missingProcessSettings } from '../node/runtime.ts'

export interface StartOptions extends Pick<CreateNodeOptions, 'genesis' | 'services' | 'components' | 'statusServer'> {
  /** @default a logger named 'start' at config.logLevel */
  logger?: Logger
  /** how often peers and progress are reported (0: never). @default 10000 */
  reportIntervalMs?: number
  /** a live progress line on stderr. @default stderr is a terminal */
  progress?: boolean
}

/**
 * "commit 1234/5000 (24.7%), 120.3 commits/s, 3 peers, ETA 31s, syncing"; while a snapshot syncs:
 * "snapshot 4000 (epoch 79): chunks 340/1000 (34.0%), 120.5/350.2 MiB, 95.3 MB/s, 2 peers, ETA 3s, chunks"
 */
export function progressLine (node: SomaNode): string {
  const snap = (node.libp2p.services as any).snapshotSync
  if (snap?.running === true) {
    const s = snap.progress()
    if (s !== undefined) return snapshotProgressLine(s, node.peerCount())
  }
  const p = node.store.getProgress()
  const sync = (node.libp2p.services as any).stateSync?.progress?.()
  const target = Math.max(sync?.target ?? 0, p.highestSynced)
  const rate: number = sync?.commitsPerSecond ?? 0
  const pct = target > 0 ? ` (${(100 * p.highestExecuted / target).toFixed(1)}%)` : ''
  const left = target - p.highestExecuted
  const eta = rate > 0 && left > 0 ? `, ETA ${formatDuration(left / rate)}` : ''
  return `commit ${p.highestExecuted}/${target}${pct}, ${rate.toFixed(1)} commits/s, ${node.peerCount()} peers${eta}, ${node.phase}`
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

  const report = (): void => {
    void node.status().then(() => { // refreshes node.phase from the sync loop
      log.info(progressLine(node))
    }).catch(() => {})
  }
  const every = opts.reportIntervalMs ?? 10_000
  const timer = every > 0 ? setInterval(report, every) : undefined
  timer?.unref()
  // on a terminal, a live progress line: commit index, commits/s, peers, ETA (while a snapshot syncs:
  // chunks, bytes, MB/s, peers, ETA)
  const tty = opts.progress ?? process.stderr.isTTY === true
  const ttyTimer = tty ? setInterval(() => { void node.status().then(() => { process.stderr.write(`\r\x1b[2K${progressLine(node)}`) }).catch(() => {}) }, 1000) : undefined
  ttyTimer?.unref()

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      if (timer !== undefined) clearInterval(timer)
      if (ttyTimer !== undefined) { clearInterval(ttyTimer); process.stderr.write('\n') }
      await node.stop()
    })()
    await stopping
  }
  return { node, stop }
}
