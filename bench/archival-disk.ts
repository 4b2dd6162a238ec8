/**
 * The disk cost of an archival node (src/sync/archival.ts), per commit: a devnet with the settings of
 * `soma-sync devnet` (4 validators, 10 transactions per block, every 5th an embedding, epochs of 50
 * commits, 1,000 accounts) produces `commits` commits as fast as it can; an archival node
 * (`--sync-mode archival`) syncs all of them over libp2p on 127.0.0.1 and executes them; then its store is
 * measured:
 *
 * - the logical bytes (key + value) of each LevelDB bucket (src/store/keys.ts) divided by the commits:
 *   what the archive keeps (blocks, commit votes, commits, effects, pruned embeddings) and the state;
 * - the on-disk size of its LevelDB directory after a full compaction (no compression: the store
 *   keeps it off), divided by the commits.
 *
 * Sizes are not timings: they do not depend on the machine's load. `--quick`: 200 commits (a smoke run).
 *
 *     node bench/archival-disk.ts [--quick]
 */
import { readdirSync, statSync } from 'node:fs'
import path from 'node:path'
import { DEFAULTS, type SomaConfig } from '../src/config.ts'
import { startDevnet } from '../src/devnet/devnet-node.ts'
import { createNode } from '../src/node/node.ts'
import { Bucket, keySuffix } from '../src/store/keys.ts'
import type { ChainStore } from '../src/store/chain-store.ts'
import { silentLogger } from '../src/utils/logger.ts'
import { TempDirs, isMain, printFigures, type BenchOptions, type Figures } from './util.ts'

/** The buckets reported, by name. */
const BUCKETS: Array<[string, number]> = [
  ['blocks', Bucket.BLOCK],
  ['commit votes', Bucket.VOTE],
  ['commits', Bucket.COMMIT],
  ['effects', Bucket.EFFECTS],
  ['pruned embeddings', Bucket.PRUNED_EMBEDDING],
  ['state change log', Bucket.CHANGE_LOG],
  ['state roots', Bucket.STATE_ROOT],
  ['accounts (state)', Bucket.ACCOUNT],
  ['embeddings (state)', Bucket.EMBEDDING]
]

async function bucketBytes (store: ChainStore, bucket: number): Promise<{ bytes: number, rows: number }> {
  let bytes = 0
  let rows = 0
  for await (const [k, v] of store.iterateBucket(bucket)) { bytes += k.byteLength + v.byteLength; rows++ }
  return { bytes, rows }
}

function dirBytes (dir: string): number {
  let n = 0
  for (const f of readdirSync(dir)) {
    const s = statSync(path.join(dir, f))
    n += s.isDirectory() ? dirBytes(path.join(dir, f)) : s.size
  }
  return n
}

async function waitFor (cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now()
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

export async function run (opts: BenchOptions & { commits?: number } = {}): Promise<Figures> {
  const commits = opts.commits ?? (opts.quick === true ? 200 : 2000)
  const tmp = new TempDirs()
  const base: SomaConfig = { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], statusPort: 0, logLevel: 'error', verifyWorkers: 0, dhtEnabled: false }
  const stops: Array<() => Promise<void>> = []
  try {
    const devnet = await startDevnet({ ...base, dataDir: tmp.make('archival-devnet'), roundIntervalMs: 0, maxCommits: commits }, { logger: silentLogger(), statusServer: false })
    stops.push(devnet.stop)
    await devnet.done
    const dataDir = tmp.make('archival-node')
    const node = await createNode({ ...base, dataDir, syncMode: 'archival', entrypoints: [devnet.node.multiaddrs()[0]], genesisFile: devnet.genesisFile, tickIntervalMs: 20 }, { logger: silentLogger(), statusServer: false })
    stops.push(async () => { await node.stop() })
    await node.start()
    await waitFor(() => node.store.highestExecuted >= commits, 600_000, `the archival node to sync ${commits} commits`)
    if (!node.store.archival) throw new Error('the node is not archival')

    const figures: Figures = {}
    let logical = 0
    let embeddingBytes = 0
    let embeddings = 0
    for await (const [k, v] of node.store.iterateBucket(Bucket.EMBEDDING)) { embeddingBytes += keySuffix(k).byteLength + 1 + 8 + v.byteLength; embeddings++ }
    for (const [name, bucket] of BUCKETS) {
      const { bytes } = await bucketBytes(node.store, bucket)
      logical += bytes
      figures[`${name}, bytes per commit`] = bytes / commits
    }
    figures['all of the above, bytes per commit'] = logical / commits
    if (embeddings > 0) figures['one pruned embedding kept (key + pruning commit + Embedding bytes), bytes'] = embeddingBytes / embeddings
    await node.stop()
    stops.pop()
    // the on-disk size after a full compaction (reopened alone, nothing else running)
    const { ChainStore } = await import('../src/store/chain-store.ts')
    const store = await ChainStore.openDataDir(dataDir)
    try {
      await store.db.compactRange(Uint8Array.of(0x00), Uint8Array.of(0xff), { keyEncoding: 'view' })
    } finally {
      await store.close()
    }
    figures['LevelDB directory after compaction, bytes per commit'] = dirBytes(path.join(dataDir, 'chain')) / commits
    figures.commits = commits
    return figures
  } finally {
    for (const s of stops.reverse()) await s().catch(() => {})
    tmp.cleanup()
  }
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  printFigures('archival node disk cost', await run({ quick }))
}
