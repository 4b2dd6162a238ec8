/**
 * An archive fast sync in its own process, for the kill -9 test (test/archive/resume.test.ts).
 *
 *   node test/archive/archive-child.ts <storeDir> <cacheDir> <archiveUrl>
 *
 * Opens (or creates, from the test genesis) the store, syncs from the archive, prints one JSON line of
 * the result and its stats (after `ready` once the store is open), and exits 0 (1 when the sync failed). It exits when its stdin closes, so
 * it never outlives the test that spawned it.
 */
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { VerifyPool } from '../../src/crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../../src/sync/block-verifier.ts'
import { TxVerifier } from '../../src/sync/tx-verifier.ts'
import { ArchiveSync } from '../../src/archive/reader.ts'
import { HttpArchiveSource } from '../../src/archive/source.ts'
import { silentLogger } from '../../src/utils/logger.ts'
import { testGenesis } from '../helpers/sync-net.ts'

const [dir, cacheDir, url] = process.argv.slice(2)
if (dir === undefined || cacheDir === undefined || url === undefined) {
  process.stderr.write('usage: archive-child.ts <storeDir> <cacheDir> <archiveUrl>\n')
  process.exit(2)
}
process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()

const store = await ChainStore.open(dir, { genesis: testGenesis() })
const pool = new VerifyPool({ workers: 0 })
const sync = new ArchiveSync({
  store,
  executor: new CommitExecutor(store, { maxBatchCommits: 3 }),
  source: new HttpArchiveSource(url),
  blockVerifier: new SignedBlockVerifier(pool, store.chainId),
  txVerifier: new TxVerifier(pool, store.chainId, store.genesis.genesis.embeddingDim),
  cacheDir,
  log: silentLogger()
}, { concurrency: 2, requestTimeoutMs: 30_000, executorQueue: 2 })
process.stdout.write('ready\n')
const r = await sync.run(AbortSignal.timeout(120_000))
process.stdout.write(JSON.stringify({ outcome: r.outcome, error: r.error?.message, highestSynced: r.highestSynced, highestExecuted: r.highestExecuted, resumedBytes: sync.stats.resumedBytes }) + '\n')
await store.close()
await pool.close()
process.exit(r.outcome === 'synced' ? 0 : 1)
