/**
 * A late node joins through ONE entrypoint and reaches the tip by snapshot (seed 002, "Syncing Using
 * Snapshots"), with real nodes (createNode, as `soma-sync start` runs them) on 127.0.0.1:
 *
 * - P: a devnet producing 45 commits (epochs of 10) with an attested snapshot at every epoch end;
 * - B: an empty node whose entrypoint is P: it syncs the newest snapshot (commit 40) from P, catches up
 *   to 45 by commit sync, and serves the snapshot from then on;
 * - C: an empty node whose entrypoint is P only; it finds B through the chain's DHT, syncs the snapshot
 *   from both P and B (it waits for two serving peers), catches up, and ends with the producer's state.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { DEFAULTS, loadConfig, type SomaConfig } from '../../src/config.ts'
import { startDevnet } from '../../src/devnet/devnet-node.ts'
import { createNode, resolveSyncMode, type SomaNode } from '../../src/node/node.ts'
import { progressLine, snapshotProgressLine } from '../../src/cli/start.ts'
import { Bucket } from '../../src/store/keys.ts'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import type { SnapshotSyncService } from '../../src/snapshot/sync/service.ts'
import { silentLogger } from '../../src/utils/logger.ts'
import { testEnv, waitFor } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'

const TIP = 45
const SNAPSHOT = 40

async function bucketHex (store: ChainStore, bucket: number): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for await (const [k, v] of store.iterateBucket(bucket)) out.set(hex(k), hex(v))
  return out
}

const snapshotService = (n: SomaNode): SnapshotSyncService => (n.libp2p.services as any).snapshotSync

test('a late node finds a snapshot through one entrypoint, syncs it from two serving nodes, catches up and has the producer\'s state', { timeout: 60_000 }, async t => {
  const env = testEnv(t)
  const base: SomaConfig = { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], statusPort: 0, logLevel: 'error', verifyWorkers: 0, timeoutMs: 5000 }
  const devnet = await startDevnet({
    ...base,
    dataDir: path.join(env.dir, 'p'),
    accounts: 4000,
    epochLength: 10,
    roundIntervalMs: 0,
    maxCommits: TIP,
    txsPerBlock: 5,
    snapshotTargetChunkBytes: 512
  }, { logger: silentLogger() })
  env.node({ stop: devnet.stop })
  await devnet.done
  const P = devnet.node
  assert.deepEqual(await new SnapshotStore(P.store).list(), [20, 30, 40], 'the devnet keeps its 3 newest snapshots')
  const entry = P.multiaddrs()[0]

  const start = async (name: string, extra: Partial<SomaConfig>): Promise<SomaNode> => {
    const n = env.node(await createNode({
      ...base,
      dataDir: path.join(env.dir, name),
      entrypoints: [entry],
      genesisFile: devnet.genesisFile,
      // several requests per peer (hundreds of small chunks), so that every serving peer gets work
      snapshotMaxChunksPerRequest: 8,
      ...extra
    }, { logger: silentLogger(), statusServer: { port: 0 } }))
    await n.start()
    return n
  }

  // B: an empty data dir syncs by snapshot by default
  const B = await start('b', {})
  await waitFor(() => B.store.highestExecuted >= TIP, 30_000, 'B to sync the snapshot and catch up')
  assert.equal(snapshotService(B).result?.commit, SNAPSHOT)
  assert.equal(B.store.lowestAvailable, SNAPSHOT + 1, 'a snapshot-synced node serves commits from the snapshot on')
  assert.ok(await new SnapshotStore(B.store).has(SNAPSHOT), 'B registered the snapshot it synced: it serves it')

  // C: entrypoint P only; waits for two peers serving the snapshot (B is found through the DHT)
  const C = await start('c', { snapshotWaitForPeers: 2, snapshotPeerWaitMs: 20_000 })
  const lines: string[] = []
  const timer = setInterval(() => { lines.push(progressLine(C)) }, 20)
  await waitFor(() => C.store.highestExecuted >= TIP, 40_000, 'C to sync the snapshot and catch up')
  clearInterval(timer)
  const sync = snapshotService(C).snapshotSync!
  assert.equal(snapshotService(C).result?.commit, SNAPSHOT)
  const fromP = sync.perPeer.get(P.peerId.toString())
  const fromB = sync.perPeer.get(B.peerId.toString())
  assert.ok(fromP !== undefined && fromP.chunks > 0, `chunks from the producer: ${JSON.stringify(fromP)}`)
  assert.ok(fromB !== undefined && fromB.chunks > 0, `chunks from B: ${JSON.stringify(fromB)}`)
  const manifest = (await new SnapshotStore(P.store).get(SNAPSHOT))!.manifest
  assert.equal(fromP.chunks + fromB.chunks, manifest.chunkCount, 'every chunk fetched exactly once')
  assert.equal(sync.stats.fetchedBytes, manifest.totalBytes)
  assert.equal(sync.stats.rejected, 0)

  // the same state as the producer at the same commit: root, accounts and embeddings (no genesis leftovers)
  assert.equal(hex((await C.store.getStateRoot(TIP))!), hex((await P.store.getStateRoot(TIP))!), 'state root at the tip')
  assert.deepEqual(await bucketHex(C.store, Bucket.ACCOUNT), await bucketHex(P.store, Bucket.ACCOUNT), 'accounts')
  assert.deepEqual(await bucketHex(C.store, Bucket.EMBEDDING), await bucketHex(P.store, Bucket.EMBEDDING), 'embeddings')
  assert.equal(hex((await C.store.getStateRoot(SNAPSHOT))!), hex(manifest.stateRoot), 'state root of the snapshot commit')
  assert.equal(hex((await C.store.getCommitBytes(SNAPSHOT))!), hex((await P.store.getCommitBytes(SNAPSHOT))!), 'commit S is the chain anchor')
  assert.equal(await C.store.getCommitBytes(SNAPSHOT - 1), undefined, 'no history before the snapshot')
  assert.equal(C.store.lowestAvailable, SNAPSHOT + 1)
  assert.equal(hex(await new SnapshotStore(C.store).getListingBytes(SNAPSHOT)), hex(await new SnapshotStore(P.store).getListingBytes(SNAPSHOT)), 'C serves the same snapshot')

  // /status and the terminal line
  const status = await C.status() as any
  assert.equal(status.snapshot.phase, 'done')
  assert.deepEqual(status.snapshot.chunks, { done: manifest.chunkCount, total: manifest.chunkCount })
  assert.equal(status.snapshot.commit, SNAPSHOT)
  const res = await fetch(`${C.statusUrl!}/status`)
  assert.equal(((await res.json()) as any).snapshot.commit, SNAPSHOT)
  assert.ok(lines.some(l => /^snapshot 40 \(epoch 3\): chunks \d+\/\d+ \([\d.]+%\), [\d.]+\/[\d.]+ MiB, [\d.]+ MB\/s, 2 peers.*, chunks$/.test(l)), `progress lines: ${[...new Set(lines)].join(' | ')}`)
  assert.match(progressLine(C), /^commit 45\/45/)
})

test('the progress line of a snapshot sync: chunks, bytes, MB/s, peers, ETA', () => {
  const line = snapshotProgressLine({
    phase: 'chunks', commit: 4000, epoch: 79, chunks: { done: 340, total: 1000 }, bytes: { done: 120 * 1024 * 1024, total: 350 * 1024 * 1024 },
    fetched: { chunks: 340, bytes: 0 }, reused: { chunks: 0, bytes: 0 }, bytesPerSecond: 95.3e6, peers: 2, etaSeconds: 2.6,
    listing: { rows: 1000, total: 1000, verified: true }, load: { done: 0, total: 1000 }
  }, 3)
  assert.equal(line, 'snapshot 4000 (epoch 79): chunks 340/1000 (34.0%), 120.0/350.0 MiB, 95.3 MB/s, 2 peers, ETA 3s, chunks')
})

test('--sync-mode: snapshot by default for an empty store, commits otherwise; a sync in progress always resumes', async t => {
  const env = testEnv(t)
  assert.equal(loadConfig({ argv: ['--sync-mode', 'snapshot'], command: 'start' }).config.syncMode, 'snapshot')
  assert.throws(() => loadConfig({ argv: ['--sync-mode', 'fast'] }), /not one of auto, snapshot, commits/)
  const store = await env.store('s')
  assert.equal((await resolveSyncMode({ syncMode: 'auto' }, store)).snapshot, true)
  assert.equal((await resolveSyncMode({ syncMode: 'commits' }, store)).snapshot, false)
  await store.batch().setHighestSynced(3).write()
  assert.equal((await resolveSyncMode({ syncMode: 'auto' }, store)).snapshot, false)
  assert.equal((await resolveSyncMode({ syncMode: 'snapshot' }, store)).snapshot, true)
})
