/**
 * A serving-peer outage never throws a snapshot away (issue 16 item 2), with real nodes on 127.0.0.1 and
 * the times scaled down through the config (stall timeout 3 s):
 *
 * - a long outage (8 s, past the stall timeout): the syncing node turns `waiting` (warn once, info
 *   reminders, `waiting()` says `snapshot-stalled` with the known serving peer), keeps every verified chunk
 *   record, replays nothing from genesis (commit sync stays held), counts 0 serving peers, and resumes
 *   within ~1-2 s of the peer returning, fetching only the chunks it did not have;
 * - short outages (1 s, and 5 s with a 10 s stall timeout: both within it): download resumes within
 *   ~1-2 s of the reconnect (the per-peer back-off of the requests that failed meanwhile does not carry
 *   over; with it, a 5 s outage left up to 3.2 s of back-off).
 *
 * - while waiting, a newer attested snapshot supersedes the stalled one and syncs as a delta of the
 *   chunks stored; `--snapshot-abandon` (abandonSnapshotSync) drops the sync in progress, chunks kept.
 *
 * The serving peer's libp2p node is stopped and started again (same peer id, a new port) and the syncing
 * node dials it, as a node redials its entrypoints.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { testEnv, waitFor, type TestEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { servedSnapshot, snapshotProducer, snapNode, snapshotGenesis, replaceHandler, type SnapNode } from '../helpers/snapshot-net.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { SnapshotBucket, SnapshotKeys } from '../../src/snapshot/store-keys.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { SyncState } from '../../src/snapshot/sync/sync-state.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_CHUNKS } from '../../src/snapshot/protocols/messages.ts'
import { createLogger } from '../../src/utils/logger.ts'
import { abandonSnapshotSync } from '../../src/snapshot/sync/snapshot-sync.ts'
import { loadConfig } from '../../src/config.ts'
import { resolveSyncMode } from '../../src/node/node.ts'

const TIP = 35
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function countBucket (store: ChainStore, bucket: number): Promise<number> {
  let n = 0
  const [gte, lt] = SnapshotKeys.range(bucket)
  for await (const _ of store.db.keys({ gte, lt })) n++
  return n
}

/** The producer's chain and latest snapshot, served by a node whose chunk answers are counted and slowed. */
async function slowServer (env: TestEnv, delayMs: number): Promise<{ g: ReturnType<typeof snapshotGenesis>, P: Awaited<ReturnType<typeof snapshotProducer>>, total: number, server: SnapNode, counts: { chunks: number } }> {
  const { g, P, total, server } = await servedSnapshot(env, TIP)
  const counts = { chunks: 0 }
  await replaceHandler(server, PROTOCOL_SNAPSHOT_CHUNKS, { req: SnapshotSyncCodecs.GetSnapshotChunksRequest, res: SnapshotSyncCodecs.GetSnapshotChunksResponse }, async (req) => {
    const res = await server.services.snapshotChunks.serve(req)
    counts.chunks += res.chunks.length
    return res
  }, { delayMs })
  return { g, P, total, server, counts }
}

/** A syncing node (one small request at a time, stall timeout 3 s unless said) whose log lines are kept. */
async function syncingNode (env: TestEnv, store: ChainStore, lines: string[], stallTimeoutMs = 3000): Promise<SnapNode> {
  return env.node(await snapNode(store, {
    snapshot: true,
    snap: {
      maxChunksPerRequest: 2,
      maxRequestsPerPeer: 1,
      initialRequestsPerPeer: 1,
      stallTimeoutMs,
      waitReminderMs: 1500,
      timeoutMs: 2000,
      logger: createLogger('snapshot-sync', { level: 'info', write: (l) => { lines.push(l) } })
    }
  }))
}

test('an 8 s outage of the only serving peer: waiting, nothing cleared or replayed, resumes within ~1-2 s of its return', { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  const { g, P, total, server, counts } = await slowServer(env, 15)
  const store = await env.store('victim', g)
  const state = new SyncState(store)
  const lines: string[] = []
  const node = await syncingNode(env, store, lines)
  const sync = node.services.snapshotSync.snapshotSync!
  await node.dial(server.getMultiaddrs()[0])
  await waitFor(() => sync.progress().chunks.done >= total * 0.3, 40_000, 'a third of the chunks')

  // the outage: the serving node goes away for 8 s
  await server.stop()
  const downAt = Date.now()
  await waitFor(() => sync.phase === 'waiting', 10_000, 'snapshot sync to turn waiting')
  const had = (await state.haveTotals()).chunks
  assert.ok(had > 0 && had < total, `${had} of ${total} chunks verified before the outage`)
  while (Date.now() - downAt < 8000) {
    assert.equal(sync.phase, 'waiting', 'waits (never abandons) while the peer is down')
    assert.equal(sync.progress().peers, 0, 'snapshot.peers counts connected serving peers only')
    await sleep(200)
  }
  const w = node.services.snapshotSync.waiting()
  assert.equal(w?.code, 'snapshot-stalled', `waiting(): ${JSON.stringify(w)}`)
  assert.ok(w !== undefined && w.since >= downAt && w.since <= Date.now())
  assert.deepEqual((w?.evidence as any).knownServers, [server.peerId.toString()], 'the evidence names the known serving peer')
  assert.deepEqual((w?.evidence as any).connectedServers, [])
  assert.equal((w?.evidence as any).commit, sync.manifest?.commitIndex)
  // nothing thrown away, nothing replayed
  assert.equal((await state.read())?.phase, 'chunks', 'the snapshot sync is still in progress')
  assert.equal((await state.haveTotals()).chunks, had, 'no chunk record was cleared')
  assert.equal(await countBucket(store, SnapshotBucket.SYNC_ROW), total, 'the listing is kept')
  assert.equal(store.highestSynced, 0, 'nothing replayed from genesis')
  assert.equal(node.services.stateSync.isPaused, true, 'commit sync stays held')
  assert.equal(sync.stats.abandoned, 0)
  const warns = lines.filter(l => / WARN .*snapshot sync waiting: .*stalled/.test(l))
  assert.equal(warns.length, 1, `one warning: ${lines.join('')}`)
  assert.ok(lines.some(l => / INFO .*still waiting .* for a peer serving the snapshot of commit/.test(l)), `a reminder at info: ${lines.join('')}`)

  // the peer returns: download resumes within ~1-2 s
  const doneBefore = sync.progress().chunks.done
  await server.start()
  const backAt = Date.now()
  await node.dial(server.getMultiaddrs()[0])
  await waitFor(() => sync.progress().chunks.done > doneBefore, 10_000, 'chunks to arrive again')
  const resumedMs = Date.now() - backAt
  assert.ok(resumedMs < 2500, `resumed ${resumedMs} ms after the peer returned`)
  assert.equal(node.services.snapshotSync.waiting(), undefined)
  assert.ok(lines.some(l => / INFO .*resumes the snapshot of commit/.test(l)))

  await waitFor(() => store.highestExecuted >= TIP, 60_000, 'the sync to complete and catch up')
  assert.equal(sync.stats.fetchedChunks + sync.stats.reusedChunks, total)
  assert.ok(sync.stats.fetchedChunks <= total, 'no chunk fetched twice')
  assert.equal(hex((await store.getStateRoot(TIP))!), hex((await P.store.getStateRoot(TIP))!))
})

for (const [outageMs, stallMs] of [[1000, 3000], [5000, 10_000]]) {
test(`a ${outageMs / 1000} s outage within the stall timeout (${stallMs / 1000} s): download resumes within ~1-2 s of the reconnect (no back-off carried over)`, { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  const { g, P, total, server } = await slowServer(env, 15)
  const store = await env.store('victim', g)
  const lines: string[] = []
  const node = await syncingNode(env, store, lines, stallMs)
  const sync = node.services.snapshotSync.snapshotSync!
  await node.dial(server.getMultiaddrs()[0])
  await waitFor(() => sync.progress().chunks.done >= total * 0.3, 40_000, 'a third of the chunks')
  await server.stop()
  await waitFor(() => sync.progress().peers === 0, 5000, 'the serving peer to count as gone')
  await sleep(outageMs)
  const doneBefore = sync.progress().chunks.done
  await server.start()
  const backAt = Date.now()
  await node.dial(server.getMultiaddrs()[0])
  await waitFor(() => sync.progress().chunks.done > doneBefore, 10_000, 'chunks to arrive again')
  const resumedMs = Date.now() - backAt
  assert.ok(resumedMs < 2500, `resumed ${resumedMs} ms after the peer returned`)
  assert.notEqual(sync.phase, 'waiting')
  await waitFor(() => store.highestExecuted >= TIP, 60_000, 'the sync to complete and catch up')
  assert.equal(sync.stats.abandoned, 0)
  assert.equal(hex((await store.getStateRoot(TIP))!), hex((await P.store.getStateRoot(TIP))!))
})
}

test('while waiting, a newer attested snapshot supersedes the stalled one: synced as a delta of the chunks stored', { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  const g = snapshotGenesis()
  // the producer keeps one snapshot (once at 53 it no longer serves the one of 30); 40 active accounts, so
  // that later snapshots share most chunks (test/snapshot-sync/delta.test.ts)
  const P = await snapshotProducer(env.dir, 35, { genesis: g, keep: 1, activeAccounts: 40 })
  env.track(P.store)
  assert.deepEqual(await P.snapshots.list(), [30])
  const A = env.node(await snapNode(P.store, { commitSync: false }))
  await replaceHandler(A, PROTOCOL_SNAPSHOT_CHUNKS, { req: SnapshotSyncCodecs.GetSnapshotChunksRequest, res: SnapshotSyncCodecs.GetSnapshotChunksResponse }, async (req) => await A.services.snapshotChunks.serve(req), { delayMs: 15 })
  const store = await env.store('victim', g)
  const state = new SyncState(store)
  const lines: string[] = []
  const node = await syncingNode(env, store, lines)
  const sync = node.services.snapshotSync.snapshotSync!
  await node.dial(A.getMultiaddrs()[0])
  await waitFor(() => sync.manifest?.commitIndex === 30 && sync.progress().chunks.done >= sync.progress().chunks.total * 0.5, 40_000, 'half the snapshot of 30')
  await A.stop()
  await waitFor(() => sync.phase === 'waiting', 10_000, 'waiting')
  const stored = new Set<string>()
  for await (const h of state.haves()) stored.add(hex(h.hash))
  // the chain moves on; another node (same store) offers only the snapshot of 50
  await P.producer.produceUntil(53)
  assert.deepEqual(await P.snapshots.list(), [50])
  const shared = (await P.snapshots.getListing(50)).filter(r => stored.has(hex(r.hash))).length
  assert.ok(shared > 0, 'the snapshot of 50 shares chunks with what was stored of the one of 30')
  const B = env.node(await snapNode(P.store, { commitSync: false }))
  await node.dial(B.getMultiaddrs()[0])
  await waitFor(() => sync.manifest?.commitIndex === 50, 20_000, 'the snapshot of 50 to supersede the one of 30')
  assert.ok(lines.some(l => / INFO .*the snapshot of commit 30 is superseded by the attested snapshot of commit 50/.test(l)), lines.join(''))
  await waitFor(() => store.highestExecuted >= 53, 60_000, 'the sync of 50 to complete and catch up')
  assert.equal(node.services.snapshotSync.result?.commit, 50)
  assert.equal(sync.stats.reusedChunks, shared, `every stored chunk the snapshot of 50 lists was reused (${stored.size} stored, ${shared} shared)`)
  assert.equal(sync.stats.abandoned, 0)
  assert.equal(hex((await store.getStateRoot(53))!), hex((await P.store.getStateRoot(53))!))
})

test('--snapshot-abandon: the operator drops the sync in progress; its chunks stay stored', { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  const { g, total, server } = await slowServer(env, 5)
  const store = await env.store('victim', g)
  const state = new SyncState(store)
  const node = await syncingNode(env, store, [])
  const sync = node.services.snapshotSync.snapshotSync!
  await node.dial(server.getMultiaddrs()[0])
  await waitFor(() => sync.progress().chunks.done >= total * 0.3, 40_000, 'a third of the chunks')
  await node.stop()
  const had = (await state.haveTotals()).chunks
  const S = sync.manifest!.commitIndex
  assert.ok(had > 0)
  // verified chunks are loaded as they arrive (loadOnArrival): once loading began, the state was cleared
  const replaced = await state.stateReplaced()
  assert.equal(loadConfig({ argv: ['--snapshot-abandon'], command: 'start' }).config.snapshotAbandon, true)
  const lines: string[] = []
  assert.equal(await abandonSnapshotSync(store, createLogger('node', { write: (l) => { lines.push(l) } })), S)
  assert.equal(await state.read(), undefined, 'no sync in progress')
  assert.equal((await resolveSyncMode({ syncMode: 'auto' }, store)).snapshot, true, 'an empty store still snapshot-syncs by default')
  assert.equal((await resolveSyncMode({ syncMode: 'commits' }, store)).snapshot, replaced, replaced ? 'its state was cleared for the snapshot: it must sync another' : 'and may commit-sync: its state was never cleared')
  assert.equal(await new SnapshotStore(store).countChunks(), had, 'the verified chunks stay stored for reuse (in the pack files)')
  assert.ok(lines.some(l => new RegExp(` WARN .*abandoning the snapshot sync of commit ${S} \\(phase chunks\\) at the operator's request \\(--snapshot-abandon\\): its ${had} verified chunks`).test(l)), lines.join(''))
})

test('snapshot discovery says why it waits: no-peers, then no-snapshot when the connected peers offer none', { timeout: 60_000 }, async t => {
  const env = testEnv(t)
  const g = snapshotGenesis(100)
  const store = await env.store('victim', g)
  const node = await syncingNode(env, store, [])
  await waitFor(() => node.services.snapshotSync.waiting()?.code === 'no-peers', 10_000, 'waiting: no-peers')
  // a peer of the chain that stores no snapshot
  const O = env.node(await snapNode(await env.store('peer', g), { commitSync: false }))
  await node.dial(O.getMultiaddrs()[0])
  await waitFor(() => node.services.snapshotSync.waiting()?.code === 'no-snapshot', 10_000, 'waiting: no-snapshot')
  const w = node.services.snapshotSync.waiting()!
  assert.equal((w.evidence as any).offered, 0)
  assert.ok((w.evidence as any).asked >= 1)
  assert.match(w.message, /none of the \d+ peers asked offers a snapshot/)
  assert.equal(node.services.snapshotSync.snapshotSync!.phase, 'discover')
})
