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

export interface StartOptions extends Pick<CreateNodeOptions, 'genesis' | 'services' | 'components' | 'statusServer'> {
  /** @default a logger named 'start' at config.logLevel */
  logger?: Logger
  /** how often peers and progress are reported (0: never). @default 10000 */
  reportIntervalMs?: number
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
  if (config.entrypoints.length === 0) log.warn('no --entrypoints: waiting for peers to dial this node')
  else log.info('joining through %d entrypoint(s): %s', config.entrypoints.length, config.entrypoints.join(', '))

  const report = (): void => {
    const peers = node.libp2p.getPeers().map(p => p.toString())
    const p = node.store.getProgress()
    log.info('%d peers%s; synced %d, executed %d, phase %s', peers.length, peers.length > 0 ? ` (${peers.join(', ')})` : '', p.highestSynced, p.highestExecuted, node.phase)
  }
  const every = opts.reportIntervalMs ?? 10_000
  const timer = every > 0 ? setInterval(report, every) : undefined
  timer?.unref()

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      if (timer !== undefined) clearInterval(timer)
      await node.stop()
    })()
    await stopping
  }
  return { node, stop }
}
