/**
 * The 20-node scenario of the namespace testnet (issue 15, item 3), on testnet/driver.ts with its own
 * topology (the 5-node one of testnet/topology.ts is left as it is):
 *
 * - **4 validators**: the devnet producer holds the keys of the whole 4-member committee and makes every
 *   commit (consensus is simulated in soma-sync); `val1`..`val3` are serving full nodes that commit-sync
 *   from it from the start and stand in for the other validators' nodes as sync servers (always up,
 *   entrypoint: the producer). So "validators" here are the 4 nodes that hold the chain from the start.
 * - **2 entrypoints**: `val1` and `val2`; every one of the 16 full nodes `full01`..`full16` names only
 *   these two, and finds the rest (the producer, `val3`, the other full nodes) through them (DHT).
 * - **staggered joins**: full node i joins once the producer has executed `firstJoin + (i-1) × joinEvery`
 *   commits; every 4th (`full04`, `full08`, `full12`, `full16`) snapshot-syncs (it joins after the first
 *   snapshot, at the end of epoch 1), the others commit-sync from genesis.
 * - **faults**: 5 % loss and 50 ms delay on every node; 3 nodes (`val3`, `full02`, `full05`) killed
 *   (SIGKILL) once they are syncing and restarted `restartAfterMs` later.
 *
 * Recorded: the time from the first node's start until every node has the producer's state root at its
 * last commit; per node, the bytes it served (its `/status` `serveQuota.chargedBytes`) and its commit; the
 * footprint of all node processes together (peak summed RSS, CPU cores used on average, from /proc).
 */
import { readFileSync, readdirSync } from 'node:fs'
import { envName } from '../src/config.ts'
import { fullNodeArgs, SNAPSHOT_SYNC_ARGS, type TestnetNode } from './topology.ts'
import { Testnet, snapshotSyncEvidence, statusTable, type TestnetOptions } from './driver.ts'

export interface ScaleScenarioOptions {
  /** the producer stops here and keeps serving. @default 600 */
  maxCommits?: number
  /** commit after which the first full node joins. @default 20 */
  firstJoin?: number
  /** commits between two joins. @default 20 */
  joinEvery?: number
  /** producer's round interval. @default '100ms' */
  roundInterval?: string
  lossPercent?: number
  delayMs?: number
  /** nodes killed and restarted */
  killed?: readonly string[]
  restartAfterMs?: number
  /** bound on the whole scenario. @default 20 min */
  timeoutMs?: number
  mode?: TestnetOptions['mode']
  workDir?: string
  log?: (line: string) => void
}

export const SCALE_KILLED: readonly string[] = ['val3', 'full02', 'full05']
/** Epoch length of the producer (topology.ts' PRODUCER_ENV). */
const EPOCH = 50
/**
 * The producer's first snapshot: the end of epoch 1 (a 20-node run showed joiners that started at commit
 * EPOCH + 5 find no snapshot within --snapshot-find-timeout and commit-sync instead).
 */
const FIRST_SNAPSHOT = 2 * EPOCH

const pad = (i: number): string => String(i).padStart(2, '0')

/** The 20 nodes: producer, 3 serving validators' stand-ins, 16 full nodes joining through val1 and val2. */
export function scaleNodes (opts: Pick<ScaleScenarioOptions, 'firstJoin' | 'joinEvery'> = {}): TestnetNode[] {
  const firstJoin = opts.firstJoin ?? 20
  const joinEvery = opts.joinEvery ?? 20
  const nodes: TestnetNode[] = [{ name: 'devnet', role: 'devnet', entrypoints: [], hostStatusPort: 7780, args: [], env: {} }]
  for (let i = 1; i <= 3; i++) nodes.push({ name: `val${i}`, role: 'full', entrypoints: ['devnet'], hostStatusPort: 7780 + i, args: fullNodeArgs(), env: {} })
  for (let i = 1; i <= 16; i++) {
    const snapshot = i % 4 === 0
    const at = firstJoin + (i - 1) * joinEvery
    nodes.push({
      name: `full${pad(i)}`,
      role: snapshot ? 'late' : 'full',
      entrypoints: ['val1', 'val2'],
      hostStatusPort: 7783 + i,
      // its entrypoints (val1, val2) make no snapshots: it asks them which snapshots they know of and who
      // serves them (/soma/snapshot-peers, from the announcements they verified) and dials the producer, or
      // finds it by gossip or the DHT; on a loaded 20-node net that can take longer than the default 10 s
      // search (then it would commit-sync)
      args: snapshot ? [...SNAPSHOT_SYNC_ARGS, '--snapshot-find-timeout', '90s'] : fullNodeArgs(),
      env: {},
      // a snapshot-syncing node joins once a snapshot exists (and a little past it)
      joinAfterCommit: snapshot ? Math.max(at, FIRST_SNAPSHOT + 5) : at
    })
  }
  return nodes
}

export interface ScaleResult {
  convergeMs: number
  commits: number
  stateRoot: string
  /** per node: bytes served, commit, whether it snapshot-synced */
  nodes: Record<string, { servedBytes: number, commit: number, snapshot: boolean }>
  footprint: { peakRssMiB: number, cpuCores: number, processes: number }
}

/** RSS and CPU ticks of every process whose environment names `dir` (the nodes of one testnet). */
function processesOf (dir: string): { rss: number, ticks: number, count: number } {
  let rss = 0; let ticks = 0; let count = 0
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      if (!readFileSync(`/proc/${pid}/environ`, 'latin1').includes(`=${dir}`)) continue
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(f[11]) + Number(f[12]) // utime, stime
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
      if (m !== null) rss += Number(m[1]) * 1024
      count++
    } catch {}
  }
  return { rss, ticks, count }
}

/** Runs the scenario on a fresh testnet and tears it down. Throws (with the status table) when it does not converge. */
export async function runScaleScenario (opts: ScaleScenarioOptions = {}): Promise<ScaleResult> {
  const maxCommits = opts.maxCommits ?? 600
  const log = opts.log ?? (() => {})
  const killed = opts.killed ?? SCALE_KILLED
  const nodes = scaleNodes(opts)
  const deadline = Date.now() + (opts.timeoutMs ?? 20 * 60_000)
  const left = (): number => Math.max(1000, deadline - Date.now())
  const t = await Testnet.create({
    mode: opts.mode ?? 'netns',
    nodes,
    workDir: opts.workDir,
    log,
    nodeEnv: { devnet: { [envName('maxCommits')]: String(maxCommits), [envName('roundIntervalMs')]: opts.roundInterval ?? '100ms', SOMA_TESTNET_KEEP_SERVING: '1' } }
  })
  // the footprint: every process of this testnet's nodes, sampled every second
  let peakRss = 0
  let processes = 0
  const ticks0 = processesOf(t.workDir).ticks
  const sampler = setInterval(() => {
    const p = processesOf(t.workDir)
    peakRss = Math.max(peakRss, p.rss)
    processes = Math.max(processes, p.count)
  }, 1000)
  try {
    if (t.mode === 'netns') {
      await t.setLoss('all', opts.lossPercent ?? 5)
      await t.setDelay('all', opts.delayMs ?? 50)
    } else {
      log('loopback mode: no loss or delay')
    }
    const t0 = Date.now()
    const height = async (name: string): Promise<number> => (await t.status(name)).highestExecuted
    // the producer and the validators' nodes first; the full nodes once the producer answers (20 node
    // processes loading at once starve it on 2 cores), each waiting for its join commit itself (node-init.ts)
    const first = ['devnet', 'val1', 'val2', 'val3']
    await t.start(first)
    await t.waitFor('the producer to answer', async () => await height('devnet') >= 0, left(), 500)
    await t.start(nodes.map(n => n.name).filter(n => !first.includes(n)))
    // kill each of `killed` once it is syncing (a few commits in, not done), restart it a while later
    await Promise.all(killed.map(async (name) => {
      await t.waitFor(`${name} to be syncing`, async () => await height(name) >= 5, left(), 500)
      await t.kill(name)
      await new Promise(resolve => setTimeout(resolve, opts.restartAfterMs ?? 3000))
      await t.start([name])
      log(`${name} restarted`)
    }))
    const converged = await t.waitConverged({ timeoutMs: left(), atCommit: maxCommits })
    const convergeMs = Date.now() - t0
    clearInterval(sampler)
    const cpuSec = (processesOf(t.workDir).ticks - ticks0) / 100
    const producer = converged.devnet
    const result: ScaleResult = {
      convergeMs,
      commits: producer.highestExecuted,
      stateRoot: producer.stateRoot,
      nodes: Object.fromEntries(nodes.map(n => {
        const s = converged[n.name]
        const served = (s.serveQuota as { chargedBytes?: number } | undefined)?.chargedBytes ?? 0
        return [n.name, { servedBytes: served, commit: s.highestExecuted, snapshot: snapshotSyncEvidence(s) !== undefined }]
      })),
      footprint: { peakRssMiB: peakRss / 1024 / 1024, cpuCores: cpuSec / (convergeMs / 1000), processes }
    }
    log(`converged in ${(convergeMs / 1000).toFixed(1)} s\n${statusTable(converged)}`)
    return result
  } finally {
    clearInterval(sampler)
    await t.close()
  }
}
