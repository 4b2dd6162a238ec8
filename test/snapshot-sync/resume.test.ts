/**
 * Snapshot sync resumes without fetching again what it stored and verified (real nodes on 127.0.0.1):
 * - a syncing process SIGKILLed mid-download restarts and fetches exactly the chunks it did not store
 *   (counted by the server and by the client); each stored chunk has its HAVE row and partial state hash;
 * - a node stopped in every persisted phase (filter, chunks, final-check, load — mid-load —, anchor)
 *   resumes there and completes, with every chunk fetched once over both runs; while its state is being
 *   replaced, even `--sync-mode commits` must finish the snapshot first.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { testEnv, waitFor, type TestEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { servedSnapshot, snapNode, replaceHandler, type SnapNode } from '../helpers/snapshot-net.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { writeGenesisFile } from '../../src/node/genesis-file.ts'
import { resolveSyncMode } from '../../src/node/node.ts'
import { SnapshotBucket, SnapshotKeys } from '../../src/snapshot/store-keys.ts'
import { SyncState, type PersistedPhase } from '../../src/snapshot/sync/sync-state.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_CHUNKS, PROTOCOL_SNAPSHOT_LISTING } from '../../src/snapshot/protocols/messages.ts'
import { ChunkKind } from '../../src/snapshot/chunk-format.ts'
import { Bucket } from '../../src/store/keys.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.resolve(here, '../helpers/snapshot-child.ts')
const TIP = 35

async function countBucket (store: ChainStore, bucket: number): Promise<number> {
  let n = 0
  const [gte, lt] = SnapshotKeys.range(bucket)
  for await (const _ of store.db.keys({ gte, lt })) n++
  return n
}

/** A server over the producer's store whose chunk and listing answers are counted (and chunks slowed). */
async function countingServer (node: SnapNode, delayMs: number): Promise<{ chunks: number, listingRequests: number }> {
  const counts = { chunks: 0, listingRequests: 0 }
  await replaceHandler(node, PROTOCOL_SNAPSHOT_CHUNKS, { req: SnapshotSyncCodecs.GetSnapshotChunksRequest, res: SnapshotSyncCodecs.GetSnapshotChunksResponse }, async (req) => {
    const res = await node.services.snapshotChunks.serve(req)
    counts.chunks += res.chunks.length
    return res
  }, { delayMs })
  await replaceHandler(node, PROTOCOL_SNAPSHOT_LISTING, { req: SnapshotSyncCodecs.GetSnapshotListingRequest, res: SnapshotSyncCodecs.GetSnapshotListingResponse }, async (req) => {
    counts.listingRequests++
    return await (node.services as any).snapshotListing.serve(req)
  })
  return counts
}

/**
 * The producer's chain up to TIP with its latest snapshot (`total` chunks), served by a node whose answers
 * are counted (chunks delayed by `delayMs`).
 */
async function countedSnapshotServer (env: TestEnv, delayMs: number) {
  const { g, P, total, server } = await servedSnapshot(env, TIP)
  const counts = await countingServer(server, delayMs)
  return { g, P, total, server, counts }
}

test('SIGKILL mid-download, then a restart fetches only the chunks that were not stored', { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  const { g, P, total, server, counts } = await countedSnapshotServer(env, 3)
  const genesisFile = writeGenesisFile(env.dir, g)
  const dir = path.join(env.dir, 'child')

  // a child process syncs two chunks per request, one request at a time; killed at ~30 %
  const child = spawn(process.execPath, [CHILD, dir, genesisFile, server.getMultiaddrs()[0].toString()], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.after(() => { child.kill('SIGKILL') })
  let killedAt = -1
  await new Promise<void>((resolve, reject) => {
    let buf = ''
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString()
      let i: number
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1)
        const m = /^phase (\S+) chunks (\d+) (\d+)$/.exec(line)
        if (m !== null && m[1] === 'chunks' && killedAt < 0 && Number(m[2]) >= total * 0.3) {
          killedAt = Number(m[2])
          child.kill('SIGKILL')
        }
      }
    })
    child.on('exit', () => { killedAt >= 0 ? resolve() : reject(new Error('the child exited before it was killed')) })
    setTimeout(() => { reject(new Error('the child never reached 30 % of the chunks')) }, 40_000).unref()
  })
  const firstRun = counts.chunks

  // what survived the kill: a consistent prefix of the work, every stored chunk with its HAVE row
  const store = env.track(await ChainStore.open(dir, { genesis: g }))
  const state = new SyncState(store)
  assert.equal((await state.read())?.phase, 'chunks', 'killed in the chunks phase')
  const had = (await state.haveTotals()).chunks
  assert.ok(had >= killedAt && had < total, `stored ${had} of ${total} chunks before the kill (${killedAt} reported)`)
  assert.equal(await store.packs.count(), had, 'a chunk is indexed iff its HAVE row is (one batch)')
  assert.equal(await countBucket(store, SnapshotBucket.SYNC_PARTIAL), had, 'and its partial state hash (the same batch)')
  const listingAtKill = (await state.listing()).next
  assert.ok(firstRun >= had, 'the server sent at least what was stored')
  // chunks loaded as they arrived: exactly the entries of the rows below the persisted cursor are in the
  // state (the genesis accounts cleared once the cursor started), and the cursor trails the chunks stored
  const load = await state.load()
  assert.ok(load.next <= had, `the load cursor (${load.next}) trails the stored chunks (${had})`)
  if (await state.stateReplaced()) {
    let accounts = 0
    let embeddings = 0
    for await (const [, r] of state.rows(0, load.next)) { if (r.kind === ChunkKind.ACCOUNTS) accounts += r.entries; else embeddings += r.entries }
    assert.equal(await store.countBucket(Bucket.ACCOUNT), accounts, 'accounts in the state = those of the loaded rows')
    assert.equal(await store.countBucket(Bucket.EMBEDDING), embeddings, 'embeddings in the state = those of the loaded rows')
    t.diagnostic(`killed with ${load.next} of ${had} stored chunks loaded`)
  }

  // restart in-process against the same server: only the missing chunks are fetched
  counts.chunks = 0
  counts.listingRequests = 0
  const node = env.node(await snapNode(store, { snapshot: true }))
  await node.dial(server.getMultiaddrs()[0])
  await waitFor(() => store.highestExecuted >= TIP, 30_000, 'the restarted node to complete and catch up')
  const sync = node.services.snapshotSync.snapshotSync!
  assert.equal(sync.stats.fetchedChunks, total - had, 'the client fetched only the missing chunks')
  assert.equal(counts.chunks, total - had, 'the server sent only the missing chunks')
  assert.equal(sync.stats.reusedChunks, 0)
  if (listingAtKill === total) assert.equal(counts.listingRequests, 0, 'the complete listing was not fetched again')
  assert.equal(hex((await store.getStateRoot(TIP))!), hex((await P.store.getStateRoot(TIP))!))
})

test('stopped in any persisted phase (mid-load and mid-arrival-load included), a node resumes there and fetches nothing twice', { timeout: 240_000 }, async t => {
  const env = testEnv(t)
  const { g, P, total, server, counts } = await countedSnapshotServer(env, 0)
  const rootAtTip = hex((await P.store.getStateRoot(TIP))!)

  // arrival: stopped in the chunks phase once chunks have been loaded as they arrived
  const phases: Array<PersistedPhase | 'mid-load' | 'arrival'> = ['filter', 'chunks', 'arrival', 'final-check', 'load', 'mid-load', 'anchor']
  for (const phase of phases) {
    const store = await env.store(`stop-${phase}`, g)
    const state = new SyncState(store)
    // mid-load stops the load phase itself: every chunk is left to it
    const opts = { snapshot: true, snap: { maxChunksPerRequest: 8, loadBatchBytes: 1024, loadOnArrival: phase !== 'mid-load' } }
    counts.chunks = 0
    // first run: stopped as it enters the phase (chunks: a third of the way; load: after some batches)
    const first = env.node(await snapNode(store, opts))
    const sync = first.services.snapshotSync.snapshotSync!
    let stopping: Promise<void> | undefined
    // cancel at once (the run stops before it persists anything further), then stop the node
    const stop = (): void => { if (stopping === undefined) { first.services.snapshotSync.cancel(); stopping = Promise.resolve(first.stop()) } }
    if (phase === 'chunks') {
      const timer = setInterval(() => { if ((sync.progress().chunks.done) >= total / 3) { clearInterval(timer); stop() } }, 1)
    } else if (phase === 'arrival') {
      const timer = setInterval(() => { const p = sync.progress(); if (p.phase === 'chunks' && p.load.done > 0) { clearInterval(timer); stop() } }, 1)
    } else if (phase === 'mid-load') {
      const timer = setInterval(() => { const p = sync.progress(); if (p.phase === 'load' && p.load.done > 0) { clearInterval(timer); stop() } }, 1)
    } else {
      sync.on('phase', p => { if (p === phase) stop() })
    }
    await first.dial(server.getMultiaddrs()[0])
    await waitFor(() => stopping !== undefined, 20_000, `the first run to reach ${phase}`)
    await stopping
    const persisted = await state.read()
    const fetchedFirst = counts.chunks
    const hadFirst = (await state.haveTotals()).chunks
    if (phase === 'mid-load') {
      assert.equal(persisted?.phase, 'load')
      const l = await state.load()
      assert.ok(l.next > 0 && l.next < total, `stopped mid-load (row ${l.next} of ${total})`)
      assert.ok(await state.stateReplaced(), 'the state is marked as being replaced')
      assert.equal((await resolveSyncMode({ syncMode: 'commits' }, store)).snapshot, true, 'a half-loaded state forces snapshot sync')
    } else if (phase === 'arrival') {
      assert.equal(persisted?.phase, 'chunks')
      const l = await state.load()
      assert.ok(l.next > 0, `chunks were loaded as they arrived (row ${l.next} of ${total})`)
      assert.ok(await state.stateReplaced(), 'the state is marked as being replaced')
    } else {
      assert.equal(persisted?.phase, phase, `persisted phase after stopping in ${phase}`)
    }
    if (phase === 'chunks') assert.ok(hadFirst > 0 && hadFirst < total, `stopped mid-download (${hadFirst} of ${total})`)
    // every chunk fetched was stored with its partial state hash (same batch as its HAVE row)
    if (phase === 'final-check') assert.equal(await countBucket(store, SnapshotBucket.SYNC_PARTIAL), hadFirst, 'a partial per HAVE row')

    // second run resumes
    counts.chunks = 0
    const second = env.node(await snapNode(store, opts))
    await second.dial(server.getMultiaddrs()[0])
    await waitFor(() => store.highestExecuted >= TIP, 30_000, `the node stopped in ${phase} to complete`)
    assert.equal(hex((await store.getStateRoot(TIP))!), rootAtTip, `state root after resuming from ${phase}`)
    assert.equal(counts.chunks, total - hadFirst, `resumed from ${phase}: only the missing chunks fetched`)
    assert.ok(fetchedFirst >= hadFirst)
    assert.equal(await state.read(), undefined)
    assert.equal(await state.stateReplaced(), false)
    await second.stop()
  }
})
