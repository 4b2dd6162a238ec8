/**
 * Child process of bench/load.ts. Modes:
 *
 *   serve <configJson>     a devnet node (createNode, as `soma-sync devnet` runs it) producing its chain up to
 *                          maxCommits (attested snapshots at epoch ends), then serving it. Prints
 *                          `READY {"addr", "genesisFile", "tip", "snapshot"}`; then answers stdin lines:
 *                          `reset` (starts a measurement: peak RSS, CPU, quota counters) and `stats`
 *                          (prints `STATS {...}` for the measurement since the last reset). Exits when
 *                          stdin closes.
 *   client <configJson> <tip>
 *                          a full node (createNode, as `soma-sync start` runs it) joining through the
 *                          server as its entrypoint, syncing (commits or snapshot, by syncMode) until it
 *                          has executed <tip>; prints `DONE {"ms", "startedAt", "doneAt", "units", ...}`
 *                          (wall-clock ms: the driver compares clients) and exits.
 *
 * Both print nothing else on stdout (logs go to stderr at the level in the config).
 */
import { createInterface } from 'node:readline'
import type { SomaConfig } from '../src/config.ts'
import { startDevnet } from '../src/devnet/devnet-node.ts'
import { createNode } from '../src/node/node.ts'
import { SnapshotStore } from '../src/snapshot/snapshot-store.ts'
import type { ServeQuota } from '../src/net/rate-limit.ts'

const [mode, json, tipArg] = process.argv.slice(2)
const config = JSON.parse(json) as SomaConfig

if (mode === 'serve') {
  const devnet = await startDevnet(config)
  await devnet.done
  const node = devnet.node
  const snapshots = await new SnapshotStore(node.store).list()
  const quota = (): ServeQuota['stats'] => (node.libp2p.services as any).fetchCommits.rpc.quota.stats
  // peak RSS sampled every 10 ms (the figure the bound is checked against), CPU of the process
  let peakRss = 0
  let cpu0 = process.cpuUsage()
  let t0 = performance.now()
  let base = { ...quota(), refused: { ...quota().refused } }
  const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage.rss()) }, 10)
  // RSS at rest after production (a GC first: what the node holds, not garbage of the production)
  global.gc?.()
  const idleRss = process.memoryUsage.rss()
  process.stdout.write(`READY ${JSON.stringify({ addr: node.multiaddrs()[0], genesisFile: devnet.genesisFile, tip: node.store.highestExecuted, snapshot: snapshots.at(-1) ?? 0, idleRss })}\n`)
  const rl = createInterface({ input: process.stdin })
  rl.on('line', (line) => {
    if (line === 'reset') {
      global.gc?.()
      peakRss = process.memoryUsage.rss()
      cpu0 = process.cpuUsage()
      t0 = performance.now()
      const q = quota()
      base = { ...q, refused: { ...q.refused } }
      q.peakInflightBytes = q.inflightBytes
      process.stdout.write('RESET\n')
    } else if (line === 'stats') {
      const c = process.cpuUsage(cpu0)
      const ms = performance.now() - t0
      const q = quota()
      process.stdout.write(`STATS ${JSON.stringify({
        ms,
        peakRss,
        rss: process.memoryUsage.rss(),
        cpuCores: (c.user + c.system) / 1000 / ms,
        refused: Object.fromEntries(Object.entries(q.refused).map(([k, v]) => [k, v - (base.refused as any)[k]])),
        admitted: q.admitted - base.admitted,
        queued: q.queued - base.queued,
        servedBytes: q.chargedBytes - base.chargedBytes,
        peakInflightBytes: q.peakInflightBytes
      })}\n`)
    }
  })
  rl.on('close', () => {
    clearInterval(sampler)
    void devnet.stop().then(() => process.exit(0), () => process.exit(1))
  })
} else if (mode === 'client') {
  const tip = Number(tipArg)
  const node = await createNode(config, { commitSync: 'sync' })
  // the sync's time runs from the node's start (the store, with the genesis state, is created before)
  const startedAt = Date.now()
  await node.start()
  process.stdout.write('STARTED\n')
  const snapshotSync = (node.libp2p.services as any).snapshotSync
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (node.store.highestExecuted >= tip) { clearInterval(timer); resolve() }
    }, 20)
  })
  const doneAt = Date.now()
  const ms = doneAt - startedAt
  const stats = snapshotSync?.snapshotSync?.stats
  // units of work: commits executed (commit sync), or snapshot bytes fetched (snapshot sync)
  const units = config.syncMode === 'snapshot' ? (stats?.fetchedBytes ?? 0) : node.store.highestExecuted
  process.stdout.write(`DONE ${JSON.stringify({ ms, startedAt, doneAt, units, rss: process.memoryUsage.rss(), executed: node.store.highestExecuted })}\n`)
  await node.stop()
  process.exit(0)
} else {
  process.stderr.write('usage: load-child.ts serve <configJson> | client <configJson> <tip>\n')
  process.exit(2)
}
