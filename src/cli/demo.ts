/**
 * `soma-sync demo` (what `npm start` runs): a local devnet and a full node that joins it, in one
 * process, on 127.0.0.1.
 *
 * The devnet uses the configured `listen`/`statusPort` (default 7700 and 7780); the node listens on
 * the same addresses with port + 1 (7701, status 7781) and has the devnet as its entrypoint. Data goes
 * to fresh temp dirs that are removed on stop, unless `--data-dir` is given: then to
 * `<dataDir>/devnet` and `<dataDir>/node`, which are kept.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { DEFAULTS, type SomaConfig } from '../config.ts'
import { startDevnet, type DevnetHandle } from '../devnet/devnet-node.ts'
import { createLogger, type Logger } from '../utils/logger.ts'
import { runStart, type StartHandle } from './start.ts'

export interface DemoHandle {
  devnet: DevnetHandle
  node: StartHandle
  /** data dirs of the devnet and the node */
  dirs: { devnet: string, node: string }
  /** stops both; removes temp dirs. Idempotent. */
  stop: () => Promise<void>
}

/** `/ip4/127.0.0.1/tcp/7700` → `/ip4/127.0.0.1/tcp/7701`; port 0 stays 0. */
export function nextPort (addr: string): string {
  return addr.replace(/\/tcp\/(\d+)/, (m, port: string) => port === '0' ? m : `/tcp/${Number(port) + 1}`)
}

export async function runDemo (config: SomaConfig, opts: { logger?: Logger } = {}): Promise<DemoHandle> {
  const log = opts.logger ?? createLogger('demo', { level: config.logLevel })
  const temp = config.dataDir === DEFAULTS.dataDir
  const root = temp ? mkdtempSync(path.join(tmpdir(), 'soma-demo-')) : config.dataDir
  const dirs = { devnet: path.join(root, 'devnet'), node: path.join(root, 'node') }
  const cleanup = (): void => { if (temp) rmSync(root, { recursive: true, force: true }) }

  log.info('demo: a devnet producing a chain, and a full node joining it (data in %s%s)', root, temp ? ', removed on exit' : '')
  let devnet: DevnetHandle
  try {
    devnet = await startDevnet({ ...config, dataDir: dirs.devnet, entrypoints: [] }, { logger: log.child('devnet') })
  } catch (err) {
    cleanup()
    throw err
  }
  const entry = devnet.node.multiaddrs()[0]
  log.info('devnet: producing a commit every %dms with %d validators; listening on %s%s', config.roundIntervalMs, config.validators, entry, devnet.node.statusUrl !== undefined ? `, status ${devnet.node.statusUrl}/status` : '')

  let node: StartHandle
  try {
    node = await runStart({
      ...config,
      dataDir: dirs.node,
      listen: config.listen.map(nextPort),
      announce: [],
      statusPort: config.statusPort === 0 ? 0 : config.statusPort + 1,
      entrypoints: [entry, ...config.entrypoints],
      genesisFile: devnet.genesisFile
    }, { logger: log.child('node'), reportIntervalMs: 5000 })
  } catch (err) {
    await devnet.stop()
    cleanup()
    throw err
  }
  log.info('node: full node %s joining through the devnet%s', node.node.peerId.toString(), node.node.statusUrl !== undefined ? `; status ${node.node.statusUrl}/status` : '')

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      try {
        await node.stop()
        await devnet.stop()
      } finally {
        cleanup()
      }
    })()
    await stopping
  }
  return { devnet, node, dirs, stop }
}
