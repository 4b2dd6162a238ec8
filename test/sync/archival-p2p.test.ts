/**
 * Archival sync over P2P with real nodes (createNode, as `soma-sync start` runs them) on 127.0.0.1:
 *
 * - P: a devnet of 45 commits (epochs of 10), attested snapshots at epoch ends; stopped once A and B
 *   have its chain;
 * - A: an archival node (`--sync-mode archival`) that commit-syncs from P from genesis and announces
 *   itself (gossip + the DHT provider record of the chain's archive);
 * - B: a node that snapshot-syncs (commit 40) and so has no history below commit 41;
 * - C: a fresh archival node whose only entrypoint is B: B cannot serve commits 1..40, so C finds A by
 *   discovery, dials it, syncs from genesis and ends with the devnet's state root;
 * - D: a fresh node (commit sync, not archival) without a DHT, entrypoint B: it finds A by gossip alone.
 * Then the refusals: archival mode on B's (snapshot-synced) data dir. And an archival node syncing a chain
 * whose genesis prunes embeddings keeps every pruned one.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { startDevnet } from '../../src/devnet/devnet-node.ts'
import { createNode, type SomaNode } from '../../src/node/node.ts'
import { ArchivalStoreError } from '../../src/errors.ts'
import { createLogger, silentLogger, type Logger } from '../../src/utils/logger.ts'
import type { ArchivalDiscovery } from '../../src/sync/archival-discovery.ts'
import type { FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import { SEED, producerStore, syncNode, testEnv, waitFor } from '../helpers/sync-net.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { EmbeddingPruneMode } from '../../src/chain/types.ts'
import { Bucket, decodeChangeValue, parseChangeKey } from '../../src/store/keys.ts'
import { hex } from '../helpers/chain.ts'

const TIP = 45
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const SNAPSHOT = 40

function capture (): { logger: Logger, lines: string[] } {
  const lines: string[] = []
  return { logger: createLogger('node', { level: 'info', write: (l: string) => { lines.push(l) } }), lines }
}

test('a fresh archival node finds an archival peer by discovery when its only entrypoint was snapshot-synced, syncs from genesis and reaches the devnet\'s state root', { timeout: 240_000 }, async t => {
  const env = testEnv(t)
  const base: SomaConfig = {
    ...DEFAULTS,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    statusPort: 0,
    logLevel: 'error',
    verifyWorkers: 0,
    timeoutMs: 10_000,
    tickIntervalMs: 20,
    peerHeightQueryIntervalMs: 300,
    waitIntervalWhenNoPeerToSyncContentMs: 200,
    archivalAnnounceIntervalMs: 500
  }
  const devnet = await startDevnet({ ...base, dataDir: path.join(env.dir, 'p'), epochLength: 10, roundIntervalMs: 0, maxCommits: TIP, txsPerBlock: 5, snapshotTargetChunkBytes: 4096 }, { logger: silentLogger() })
  env.node({ stop: devnet.stop })
  await devnet.done
  const P = devnet.node
  const root = hex((await P.store.getStateRoot(TIP))!)

  const start = async (name: string, extra: Partial<SomaConfig>, logger: Logger = silentLogger()): Promise<SomaNode> => {
    const n = env.node(await createNode({ ...base, dataDir: path.join(env.dir, name), genesisFile: devnet.genesisFile, ...extra }, { logger, statusServer: false }))
    await n.start()
    return n
  }

  // A: archival, from the devnet
  const a = capture()
  const A = await start('a', { syncMode: 'archival', entrypoints: [P.multiaddrs()[0]] }, a.logger)
  await waitFor(() => A.store.highestExecuted >= TIP, 60_000, 'A to archival-sync from the devnet')
  assert.equal(A.store.archival, true)
  assert.equal(A.store.lowestAvailable, 0)
  assert.ok(a.lines.some(l => /INFO .*archival mode: this node keeps every commit/.test(l)), 'A logs that archival mode is on')
  await waitFor(() => a.lines.some(l => /announced this archival node/.test(l)), 20_000, 'A to announce itself')

  // B: snapshot-synced (no history below the snapshot); A is among its entrypoints so that the
  // gossip mesh and the DHT reach A through B once the devnet is gone
  const B = await start('b', { entrypoints: [P.multiaddrs()[0], A.multiaddrs()[0]] })
  await waitFor(() => B.store.highestExecuted >= TIP, 60_000, 'B to snapshot-sync and catch up')
  assert.equal(B.store.lowestAvailable, SNAPSHOT + 1)
  await devnet.stop()

  // C: archival, its only entrypoint is B
  const c = capture()
  const C = await start('c', { syncMode: 'archival', entrypoints: [B.multiaddrs()[0]] }, c.logger)
  assert.ok(!C.config.entrypoints.some(e => e.includes(A.peerId.toString())), 'A is not an entrypoint of C')

  // B, asked for history below its lowest available commit, says so with the existing error
  const fc = (C.libp2p.services as any).fetchCommits as FetchCommits
  await waitFor(() => C.libp2p.getConnections(B.peerId).length > 0, 20_000, 'C to connect to B')
  await assert.rejects(fc.fetch(B.peerId, 1, 10, { signal: AbortSignal.timeout(10_000) }), /commit 1 not available \(have 41\.\.45\)/)

  await waitFor(() => C.store.highestExecuted >= TIP, 120_000, 'C to find A and sync from genesis')
  assert.equal(hex((await C.store.getStateRoot(TIP))!), root, 'C has the devnet\'s state root at its last commit')
  assert.ok(C.libp2p.getConnections(A.peerId).length > 0, 'C is connected to A')
  const disc = (C.libp2p.services as any).archivalDiscovery as ArchivalDiscovery
  assert.ok(disc.found().some(f => f.peerId.equals(A.peerId)), 'C found A by discovery')
  const logs = c.lines.join('\n')
  assert.match(logs, /WARN .*history missing: commits 1\.\.40 are not served by any connected peer \(.* has 41\.\.45\); looking for an archival peer/)
  assert.match(logs, new RegExp(`INFO .*archival peer found: ${A.peerId.toString()} via`))
  // dialed by discovery, or already connected by its DHT lookup (kad-dht dials the peers it queries)
  assert.match(logs, new RegExp(`INFO .*(dialed archival peer ${A.peerId.toString()}|archival peer ${A.peerId.toString()} is connected)`))
  const status = await C.status()
  assert.equal(status.archival, true)
  assert.equal(status.lowestAvailable, 0)
  assert.equal(((status.archivalDiscovery as any).archivesFound as number) >= 1, true)
  for (let i = 1; i <= TIP; i++) assert.ok(await C.store.getCommitBytes(i) !== undefined, `C stored commit ${i}`)

  // D: the same without a DHT (gossip only): nothing but the announcement can lead D to A, and D dials it
  const d = capture()
  const D = await start('d', { syncMode: 'commits', dhtEnabled: false, entrypoints: [B.multiaddrs()[0]] }, d.logger)
  await waitFor(() => D.store.highestExecuted >= TIP, 120_000, 'D (no DHT) to find A by gossip and sync from genesis')
  assert.equal(hex((await D.store.getStateRoot(TIP))!), root)
  assert.equal(D.store.archival, false, 'a node that is not archival finds archival peers too')
  assert.match(d.lines.join('\n'), new RegExp(`INFO .*archival peer found: ${A.peerId.toString()} via gossip`))
  assert.match(d.lines.join('\n'), new RegExp(`INFO .*dialed archival peer ${A.peerId.toString()}`))

  // refusals: an archival node will not start on the snapshot-synced data dir of B
  await B.stop()
  const r = capture()
  await assert.rejects(createNode({ ...base, dataDir: path.join(env.dir, 'b'), syncMode: 'archival', genesisFile: devnet.genesisFile }, { logger: r.logger, statusServer: false }),
    (err: any) => err instanceof ArchivalStoreError && /was snapshot-synced: it has no commits, blocks or effects below commit 41/.test(err.message))
  assert.ok(r.lines.some(l => /ERROR .*refusing to start in archival mode: .*snapshot-synced/.test(l)), 'the refusal is logged')
  // and the command line: `soma-sync start --sync-mode archival` exits 1 with a one-line error
  const cli = spawnSync(process.execPath, [path.join(ROOT, 'src', 'cli', 'main.ts'), 'start', '--sync-mode', 'archival', '--data-dir', path.join(env.dir, 'b'), '--listen', '/ip4/127.0.0.1/tcp/0', '--status-port', '0'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, SOMA_LOG_LEVEL: 'info' } })
  assert.equal(cli.status, 1, `exit code ${String(cli.status)}: ${cli.stderr}`)
  assert.match(cli.stderr, /^error: cannot run in archival mode: .*was snapshot-synced: it has no commits, blocks or effects below commit 41/m)
  assert.match(cli.stderr, /ERROR .*refusing to start in archival mode/)
})

test('an archival node that syncs a chain whose genesis prunes embeddings keeps every pruned embedding, with the commit that pruned it', { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  // a chain whose rule prunes every embedding older than one epoch, at each epoch end
  const genesis = createGenesis({ seed: SEED, validators: 4, accounts: 50, initialBalance: 1e9, embeddingDim: 8, embeddingPruning: { mode: EmbeddingPruneMode.AGE, maxAgeEpochs: 1, maxDistance: 0 } })
  const { store: ps } = await producerStore(env.dir, 45, { epochLength: 10, txsPerBlock: 5, genesis })
  env.track(ps)
  const P = env.node(await syncNode(ps, { sync: false }))
  // what the producer pruned: change log rows of embeddings that existed before the end-of-epoch commit
  const pruned: Array<{ id: Uint8Array, at: number }> = []
  for await (const [k, v] of ps.iterateBucket(Bucket.CHANGE_LOG)) {
    const c = parseChangeKey(k)
    if (c.kind === Bucket.EMBEDDING && decodeChangeValue(v) !== undefined) pruned.push({ id: new Uint8Array(c.key), at: c.commitIndex })
  }
  assert.ok(pruned.length >= 10, `the producer pruned ${pruned.length} embeddings`)
  for (const p of pruned.slice(0, 3)) assert.equal(await ps.getEmbeddingHistory(p.id), undefined, 'a node that is not archival does not keep them')

  const A = env.node(await createNode({ ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], statusPort: 0, logLevel: 'error', verifyWorkers: 0, dhtEnabled: false, tickIntervalMs: 20, peerHeightQueryIntervalMs: 300, dataDir: path.join(env.dir, 'a'), syncMode: 'archival', entrypoints: [P.getMultiaddrs()[0].toString()] }, { genesis, logger: silentLogger(), statusServer: false }))
  await A.start()
  await waitFor(() => A.store.highestExecuted >= 45, 60_000, 'A to archival-sync the chain')
  assert.equal(hex((await A.store.getStateRoot(45))!), hex((await ps.getStateRoot(45))!), 'the same state root as the producer')
  for (const p of pruned) {
    assert.equal(await A.store.getEmbedding(p.id), undefined, 'pruned from the state')
    const h = await A.store.getEmbeddingHistory(p.id)
    assert.ok(h !== undefined, `pruned embedding ${hex(p.id)} kept`)
    assert.equal(h.prunedAt, p.at)
    assert.ok(h.embedding.commitIndex < p.at)
  }
  let kept = 0
  for await (const _ of A.store.iterateBucket(Bucket.PRUNED_EMBEDDING)) kept++
  assert.equal(kept, pruned.length, 'exactly the pruned ones are kept')
})
