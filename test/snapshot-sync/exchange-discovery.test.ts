/**
 * Snapshot peer exchange end to end (issue 15's finding: snapshot joiners whose entrypoints make no
 * snapshots), real nodes (createNode, as `soma-sync start` runs them) on 127.0.0.1, no DHT anywhere (so
 * a peer is only found through what this test is about):
 *
 * - P: a devnet of 45 commits (epochs of 10) with attested snapshots at 20, 30, 40; it announces them on
 *   gossip, then stops announcing (its discovery is stopped) before any joiner starts;
 * - E: a commit-syncing node whose entrypoint is P; it makes no snapshots, but verified and remembered
 *   P's announcement;
 * - N (control): entrypoint E only, exchange dials off: it finds no snapshot and commit-syncs instead;
 * - J: entrypoint E only: asks E on /soma/snapshot-peers, learns that P serves the snapshot of commit 40,
 *   dials P, and restores the snapshot within a bounded time.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { startDevnet } from '../../src/devnet/devnet-node.ts'
import { createNode, type SomaNode } from '../../src/node/node.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import type { SnapshotSyncService } from '../../src/snapshot/sync/service.ts'
import type { SnapshotDiscovery } from '../../src/snapshot/discovery.ts'
import type { SnapshotExchange } from '../../src/snapshot/discovery/exchange.ts'
import { createLogger, silentLogger } from '../../src/utils/logger.ts'
import { testEnv, waitFor } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'

const TIP = 45
const SNAPSHOT = 40

const snapshotService = (n: SomaNode): SnapshotSyncService => (n.libp2p.services as any).snapshotSync
const discoveryOf = (n: SomaNode): SnapshotDiscovery => (n.libp2p.services as any).snapshotDiscovery
const exchangeOf = (n: SomaNode): SnapshotExchange => (n.libp2p.services as any).snapshotExchange

test('a joiner whose only entrypoint makes no snapshots finds the producer\'s through the entrypoint\'s snapshot peer exchange, after the last announcement', { timeout: 180_000 }, async t => {
  const env = testEnv(t)
  const base: SomaConfig = { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], statusPort: 0, logLevel: 'error', verifyWorkers: 0, timeoutMs: 5000, dhtEnabled: false }
  const devnet = await startDevnet({
    ...base,
    dataDir: path.join(env.dir, 'p'),
    accounts: 2000,
    epochLength: 10,
    roundIntervalMs: 0,
    maxCommits: TIP,
    txsPerBlock: 5,
    snapshotTargetChunkBytes: 1024,
    // announce often while E listens; stopped below before any joiner starts
    snapshotAnnounceIntervalMs: 300
  }, { logger: silentLogger() })
  env.node({ stop: devnet.stop })
  await devnet.done
  const P = devnet.node

  const start = async (name: string, entry: SomaNode, extra: Partial<SomaConfig>, logLines?: string[]): Promise<SomaNode> => {
    const logger = logLines === undefined
      ? silentLogger()
      : createLogger(name, { level: 'info', write: (line: string) => { logLines.push(line) } })
    const n = env.node(await createNode({
      ...base,
      dataDir: path.join(env.dir, name),
      entrypoints: [entry.multiaddrs()[0]],
      genesisFile: devnet.genesisFile,
      ...extra
    }, { logger, statusServer: false }))
    await n.start()
    return n
  }

  // E: commit-syncs from P, makes no snapshots, hears (and verifies) P's announcement
  const E = await start('e', P, { syncMode: 'commits' })
  await waitFor(() => E.store.highestExecuted >= TIP, 60_000, 'E to commit-sync to the tip')
  await waitFor(async () => (await discoveryOf(E).book(8)).some(b => b.commitIndex === SNAPSHOT && b.peers.some(p => p.equals(P.peerId))), 30_000, 'E to verify and remember P\'s announcement of the snapshot of commit 40')
  assert.deepEqual(await new SnapshotStore(E.store).list(), [], 'E makes no snapshots')
  // no announcement after this point
  await discoveryOf(P).stop()
  const announced = discoveryOf(E).stats.gossipAccepted
  await new Promise(resolve => setTimeout(resolve, 1000))
  assert.equal(discoveryOf(E).stats.gossipAccepted, announced, 'P no longer announces')

  // control: the same joiner with the exchange's dials off finds no snapshot (E has none), and commit-syncs
  const N = await start('n', E, { snapshotExchangeMaxDials: 0, snapshotFindTimeoutMs: 4000 })
  await waitFor(() => snapshotService(N).result !== undefined, 30_000, 'the control joiner to give up its snapshot search')
  assert.equal(snapshotService(N).result?.outcome, 'none', 'without the exchange\'s dials the joiner finds no snapshot')
  assert.equal(N.libp2p.getConnections(P.peerId).length, 0, 'the control joiner never reached P')
  await N.stop()

  // J: entrypoint E only; finds P through E's answer and restores the snapshot
  const lines: string[] = []
  const t0 = Date.now()
  const J = await start('j', E, { snapshotFindTimeoutMs: 60_000 }, lines)
  await waitFor(() => snapshotService(J).result !== undefined || snapshotService(J).error !== undefined, 60_000, 'J to sync a snapshot')
  assert.equal(snapshotService(J).result?.outcome, 'synced', `J synced no snapshot: ${String(snapshotService(J).error)}`)
  assert.equal(snapshotService(J).result?.commit, SNAPSHOT)
  const took = Date.now() - t0
  assert.ok(took < 60_000, `J restored the snapshot in ${took} ms`)
  await waitFor(() => J.store.highestExecuted >= TIP, 30_000, 'J to catch up to the tip')
  assert.equal(hex((await J.store.getStateRoot(TIP))!), hex((await P.store.getStateRoot(TIP))!), 'J has the producer\'s state at the tip')
  assert.ok(exchangeOf(J).stats.dialed >= 1, `J dialed the provider E named: ${JSON.stringify(exchangeOf(J).stats)}`)
  assert.equal(discoveryOf(J).stats.gossipAccepted, 0, 'J never heard an announcement')
  assert.ok(exchangeOf(E).stats.served >= 1, 'E answered /soma/snapshot-peers')
  assert.ok(lines.some(l => /snapshot discovery: dialed .* which serves the snapshot of commit 40/.test(l)), `J's log says whom it dialed and why:\n${lines.join('\n')}`)
})
