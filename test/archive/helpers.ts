/** Test helpers for archives: a producer's archive, a fresh store syncing from an archive source. */
import path from 'node:path'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { VerifyPool } from '../../src/crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../../src/sync/block-verifier.ts'
import { TxVerifier } from '../../src/sync/tx-verifier.ts'
import { ArchiveSync, type ArchiveSyncOptions } from '../../src/archive/reader.ts'
import type { ArchiveSource } from '../../src/archive/source.ts'
import type { SpotChecker } from '../../src/archive/spot-check.ts'
import { createLogger, type Logger } from '../../src/utils/logger.ts'
import type { TestEnv } from '../helpers/sync-net.ts'

/** A logger that keeps every line (and prints nothing). */
export function recordingLogger (): Logger & { lines: string[] } {
  const lines: string[] = []
  const log = createLogger('archive-test', { level: 'debug', write: (line: string) => { lines.push(line) } }) as Logger & { lines: string[] }
  log.lines = lines
  return log
}

/** An ArchiveSync into a fresh store `name` of the env (closed by the env). */
export async function archiveSyncInto (env: TestEnv, name: string, source: ArchiveSource, opts: ArchiveSyncOptions = {}, extra: { spotChecker?: SpotChecker, log?: Logger } = {}): Promise<{ store: ChainStore, sync: ArchiveSync, log: Logger & { lines?: string[] }, pool: VerifyPool }> {
  const store = await env.store(name)
  const pool = new VerifyPool({ workers: 0 })
  const log = extra.log ?? recordingLogger()
  const sync = new ArchiveSync({
    store,
    executor: new CommitExecutor(store),
    source,
    blockVerifier: new SignedBlockVerifier(pool, store.chainId),
    txVerifier: new TxVerifier(pool, store.chainId, store.genesis.genesis.embeddingDim),
    cacheDir: path.join(env.dir, name + '-cache'),
    log,
    spotChecker: extra.spotChecker
  }, { retryDelayMs: 20, requestTimeoutMs: 5000, ...opts })
  env.node({ stop: async () => { await pool.close() } })
  return { store, sync, log, pool }
}
