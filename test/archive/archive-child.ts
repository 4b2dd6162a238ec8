/**
 * An archive fast sync in its own process, for the kill -9 test (test/archive/resume.test.ts).
 *
 *   node test/archive/archive-child.ts <storeDir> <cacheDir> <archiveUrl> [<peer multiaddr>,…]
 *
 * Opens (or creates, from the test genesis) the store, syncs from the archive, prints one JSON line of
 * the result and its stats (after `ready` once the store is open), and exits 0 (1 when the sync failed). It exits when its stdin closes, so
 * it never outlives the test that spawned it. With peers (test/archive/combined-resume.test.ts), the
 * download is the combined one (src/archive/combined.ts): a libp2p node dials them and they fetch
 * segments alongside the archive; the child then also prints `synced <n>` and `executed <n>` as the
 * store advances, and the JSON line carries the per-source stats.
 */
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { VerifyPool } from '../../src/crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../../src/sync/block-verifier.ts'
import { TxVerifier } from '../../src/sync/tx-verifier.ts'
import { ArchiveSync, type ArchiveSyncDeps } from '../../src/archive/reader.ts'
import { fetchCommits, type FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import { fetchBlocks, type FetchBlocks } from '../../src/sync/protocols/fetch-blocks.ts'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from 'libp2p'
import { HttpArchiveSource } from '../../src/archive/source.ts'
import { silentLogger } from '../../src/utils/logger.ts'
import { plainNode, testGenesis } from '../helpers/sync-net.ts'

const [dir, cacheDir, url, peerAddrs] = process.argv.slice(2)
if (dir === undefined || cacheDir === undefined || url === undefined) {
  process.stderr.write('usage: archive-child.ts <storeDir> <cacheDir> <archiveUrl> [<peer multiaddr>,…]\n')
  process.exit(2)
}
process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()

const store = await ChainStore.open(dir, { genesis: testGenesis() })
const pool = new VerifyPool({ workers: 0 })
let combined: ArchiveSyncDeps['combined']
let node: Libp2p<{ fetchCommits: FetchCommits, fetchBlocks: FetchBlocks }> | undefined
if (peerAddrs !== undefined && peerAddrs !== '') {
  node = await plainNode({ fetchCommits: fetchCommits({}), fetchBlocks: fetchBlocks({}) })
  const addrs = peerAddrs.split(',')
  await Promise.all(addrs.map(async a => await node!.dial(multiaddr(a), { signal: AbortSignal.timeout(20_000) })))
  combined = { peers: () => node!.getPeers(), fetchCommits: node.services.fetchCommits, fetchBlocks: node.services.fetchBlocks, maxBlocksPerFetch: 100, slotsPerPeer: 1 }
  let synced = -1
  let executed = -1
  setInterval(() => {
    if (store.highestSynced !== synced) { synced = store.highestSynced; process.stdout.write(`synced ${synced}\n`) }
    if (store.highestExecuted !== executed) { executed = store.highestExecuted; process.stdout.write(`executed ${executed}\n`) }
  }, 2).unref()
}
const sync = new ArchiveSync({
  store,
  executor: new CommitExecutor(store, { maxBatchCommits: 3 }),
  source: new HttpArchiveSource(url),
  blockVerifier: new SignedBlockVerifier(pool, store.chainId),
  txVerifier: new TxVerifier(pool, store.chainId, store.genesis.genesis.embeddingDim),
  cacheDir,
  log: silentLogger(),
  combined
}, { concurrency: 2, requestTimeoutMs: 30_000, executorQueue: 2 })
process.stdout.write('ready\n')
const r = await sync.run(AbortSignal.timeout(120_000))
process.stdout.write(JSON.stringify({ outcome: r.outcome, error: r.error?.message, highestSynced: r.highestSynced, highestExecuted: r.highestExecuted, resumedBytes: sync.stats.resumedBytes, sources: sync.combinedStats }) + '\n')
await node?.stop()
await store.close()
await pool.close()
process.exit(r.outcome === 'synced' ? 0 : 1)
