/**
 * Archival mode (issue 14 item 1; seed 002 "Archival Sync", the P2P part): an archival node downloads
 * every commit since genesis by commit sync, verifies it exactly as any node does, keeps it, and serves
 * it. Being archival is a property of the data dir (`META_ARCHIVAL`, src/store/keys.ts), set once by
 * `prepareArchivalStore` when a node first starts archival on it:
 *
 * - it never prunes commits, blocks, votes or effects (no soma-sync node deletes those; a snapshot-synced
 *   node simply never had the ones below its snapshot), and it keeps every embedding the genesis' pruning
 *   rule removes from the state (bucket 0x0f, written by the CommitExecutor in the pruning commit's batch;
 *   `ChainStore.getEmbeddingHistory`);
 * - it advertises lowest available commit 0 (`ChainStore.lowestAvailable`) on /soma/commit-availability
 *   and /soma/push-commit, and serves the whole history on the existing commit-sync protocols;
 * - it never snapshot-syncs (`resolveSyncMode`), and announces itself as an archive of its chain
 *   (./archival-discovery.ts) so that nodes missing old history can find it.
 *
 * A data dir missing any history cannot become archival, and `prepareArchivalStore` refuses it with an
 * ArchivalStoreError saying what is missing: one that was snapshot-synced (lowest available commit above
 * 1, or a snapshot sync in progress), and one that executed past an epoch end with embedding pruning
 * without being archival (the pruned embeddings are gone).
 */
import type { ChainStore } from '../store/chain-store.ts'
import { pruningRule } from '../chain/genesis.ts'
import { ArchivalStoreError } from '../errors.ts'
import { SyncState } from '../snapshot/sync/sync-state.ts'
import { silentLogger, type Logger } from '../utils/logger.ts'

/**
 * Why `store` cannot become an archival store, or undefined when it can (it already is, or it holds
 * every commit it synced since genesis and every embedding it executed).
 */
export async function archivalRefusal (store: ChainStore): Promise<string | undefined> {
  if (store.archival) return undefined
  const where = store.dir
  const lowest = store.storedLowestAvailable
  if (lowest > 1) {
    return `${where} was snapshot-synced: it has no commits, blocks or effects below commit ${lowest} (its lowest available commit), and an archival node keeps every commit since genesis; start the archival node on an empty data dir`
  }
  const state = new SyncState(store)
  if (await state.stateReplaced() || await state.read() !== undefined) {
    return `${where} holds a snapshot sync in progress: an archival node syncs every commit from genesis; finish it without --sync-mode archival, or start the archival node on an empty data dir`
  }
  const rule = pruningRule(store.genesis.genesis)
  if (rule !== null && store.highestExecuted > 0) {
    const firstEpochEnd = await store.getLastCommitIndexOfEpoch(0)
    if (firstEpochEnd !== undefined && firstEpochEnd <= store.highestExecuted) {
      return `${where} executed to commit ${store.highestExecuted} without archival mode: the embeddings the genesis' pruning rule removed at epoch ends (from commit ${firstEpochEnd} on) were not kept; start the archival node on an empty data dir`
    }
  }
  return undefined
}

/**
 * Makes `store` archival (one write of the marker; nothing else changes), or throws ArchivalStoreError
 * with the reason it cannot be (logged at error first). Idempotent.
 */
export async function prepareArchivalStore (store: ChainStore, log: Logger = silentLogger('archival')): Promise<void> {
  const refusal = await archivalRefusal(store)
  if (refusal !== undefined) {
    log.error('refusing to start in archival mode: %s', refusal)
    throw new ArchivalStoreError(`cannot run in archival mode: ${refusal}`)
  }
  if (!store.archival) await store.batch().setArchival().write()
  log.info('archival mode: this node keeps every commit, block, effect and pruned embedding since genesis (synced %d, executed %d), advertises lowest available commit 0 and serves the full history', store.highestSynced, store.highestExecuted)
}
