/**
 * Delta sync (real nodes on 127.0.0.1): a node holding the snapshot of commit N syncs the snapshot of
 * commit N+k and downloads only the chunks N's listing does not have — counted in chunks and bytes on
 * both sides against the difference of the two listings —, writes only those to its pack files (the
 * packs grow by exactly the changed chunks' records), then has the producer's
 * state.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { testEnv, waitFor } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { snapshotProducer, snapNode, snapshotGenesis, replaceHandler } from '../helpers/snapshot-net.ts'
import { Bucket } from '../../src/store/keys.ts'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_CHUNKS } from '../../src/snapshot/protocols/messages.ts'
import { PACK_HEADER_BYTES, PACK_RECORD_HEADER_BYTES } from '../../src/store/packs.ts'
import { readdirSync, statSync } from 'node:fs'
import path from 'node:path'

/** pack file name → size */
function packSizes (store: ChainStore): Map<string, number> {
  return new Map(readdirSync(store.packs.dir).filter(f => f.endsWith('.pack')).map(f => [f, statSync(path.join(store.packs.dir, f)).size]))
}

async function bucketHex (store: ChainStore, bucket: number): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for await (const [k, v] of store.iterateBucket(bucket)) out.set(hex(k), hex(v))
  return out
}

test('a node holding snapshot N syncs snapshot N+k and downloads only the chunks N does not have', { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  const g = snapshotGenesis()
  // producer at 30 (snapshots at 10, 20, 30). 40 active accounts: they stay in the hot chunks, and from
  // epoch 2 on the untouched genesis accounts are all cold, so later snapshots share most chunks
  const P = await snapshotProducer(env.dir, 30, { genesis: g, keep: 4, activeAccounts: 40 })
  env.track(P.store)
  const server = env.node(await snapNode(P.store, { commitSync: false }))
  const served = { chunks: 0, bytes: 0 }
  await replaceHandler(server, PROTOCOL_SNAPSHOT_CHUNKS, { req: SnapshotSyncCodecs.GetSnapshotChunksRequest, res: SnapshotSyncCodecs.GetSnapshotChunksResponse }, async (req) => {
    const res = await server.services.snapshotChunks.serve(req)
    served.chunks += res.chunks.length
    for (const c of res.chunks) served.bytes += c.byteLength
    return res
  })

  // D syncs the snapshot of commit 30, and is stopped there
  const D = await env.store('d', g)
  const first = env.node(await snapNode(D, { snapshot: true }))
  await first.dial(server.getMultiaddrs()[0])
  await waitFor(() => first.services.snapshotSync.result !== undefined, 20_000, 'D to sync the snapshot of commit 30')
  assert.equal(first.services.snapshotSync.result?.commit, 30)
  await first.stop()
  const N = 30
  const old = await new SnapshotStore(P.store).getListing(N)
  assert.equal(served.bytes, old.reduce((s, r) => s + r.size, 0), 'the first sync downloads the whole snapshot')

  // the chain moves on: snapshots at 40 and 50; D (at commit 30) syncs the newest
  await P.producer.produceUntil(53)
  const K = (await P.snapshots.latest())!
  assert.equal(K, 50)
  const next = await new SnapshotStore(P.store).getListing(K)
  const oldHashes = new Set(old.map(r => hex(r.hash)))
  const changed = next.filter(r => !oldHashes.has(hex(r.hash)))
  const changedBytes = changed.reduce((s, r) => s + r.size, 0)
  const totalBytes = next.reduce((s, r) => s + r.size, 0)
  assert.ok(changed.length > 0 && changed.length < next.length / 2, `a real delta: ${changed.length} of ${next.length} chunks changed`)

  // the pack files before the delta sync: a reused chunk must not be written again
  const packsBefore = packSizes(D)
  served.chunks = 0
  served.bytes = 0
  const second = env.node(await snapNode(D, { snapshot: true }))
  await second.dial(server.getMultiaddrs()[0])
  await waitFor(() => D.highestExecuted >= 53 && second.services.snapshotSync.result !== undefined, 30_000, 'D to sync the snapshot of commit 50 and catch up')
  const sync = second.services.snapshotSync.snapshotSync!
  assert.equal(second.services.snapshotSync.result?.commit, K)
  assert.equal(sync.stats.fetchedChunks, changed.length, 'only the chunks N does not list were fetched')
  assert.equal(sync.stats.fetchedBytes, changedBytes, 'bytes fetched = bytes of the listing difference')
  assert.equal(served.chunks, changed.length, 'the server sent only those')
  assert.equal(served.bytes, changedBytes)
  assert.equal(sync.stats.reusedChunks, next.length - changed.length, 'every other chunk was reused from snapshot N')
  assert.equal(sync.stats.reusedBytes, totalBytes - changedBytes)
  console.log(`delta: ${changed.length}/${next.length} chunks, ${changedBytes}/${totalBytes} bytes downloaded`)

  // on the pack layout: only the changed chunks were appended (a record of 36 + size bytes each, plus
  // the header of any pack the run started), no pack of snapshot N was rewritten or compacted, and the
  // index holds both listings' chunks
  const packsAfter = packSizes(D)
  for (const [f, size] of packsBefore) assert.ok((packsAfter.get(f) ?? -1) >= size, `pack ${f} of snapshot N was only appended to`)
  const added = [...packsAfter.keys()].filter(f => !packsBefore.has(f)).length
  const sum = (m: Map<string, number>): number => [...m.values()].reduce((n, x) => n + x, 0)
  assert.equal(sum(packsAfter) - sum(packsBefore), changedBytes + changed.length * PACK_RECORD_HEADER_BYTES + added * PACK_HEADER_BYTES, 'only the changed chunks were written to the packs')
  assert.equal(await D.packs.count(), new Set([...old, ...next].map(r => hex(r.hash))).size, 'the pack index holds the chunks of both snapshots, each once')

  // the state is the producer's (the old state was replaced, nothing of it lingers)
  assert.equal(hex((await D.getStateRoot(53))!), hex((await P.store.getStateRoot(53))!))
  assert.deepEqual(await bucketHex(D, Bucket.ACCOUNT), await bucketHex(P.store, Bucket.ACCOUNT))
  assert.deepEqual(await bucketHex(D, Bucket.EMBEDDING), await bucketHex(P.store, Bucket.EMBEDDING))
  assert.equal(D.lowestAvailable, K + 1)
  // D keeps both snapshots (keep 3) and serves the new one
  assert.deepEqual(await new SnapshotStore(D).list(), [N, K])
})
