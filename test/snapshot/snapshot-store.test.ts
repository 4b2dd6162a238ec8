import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { buildSnapshot } from '../../src/snapshot/builder.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { SnapshotBucket } from '../../src/snapshot/store-keys.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { StoreError } from '../../src/errors.ts'
import { Bucket } from '../../src/store/keys.ts'
import { HandChain } from './fixtures.ts'
import { hex } from '../helpers/chain.ts'

const OPTS = { targetChunkBytes: 512, hotEpochs: 1, embeddingWindowCommits: 3 }

async function storedChunks (snaps: SnapshotStore): Promise<string[]> {
  const out: string[] = []
  for await (const h of snaps.chunkHashes()) out.push(hex(h))
  return out.sort()
}

async function rowCount (h: HandChain, bucket: number): Promise<number> {
  let n = 0
  for await (const _ of h.store.db.keys({ gte: Uint8Array.of(bucket), lt: Uint8Array.of(bucket + 1) })) n++
  return n
}

describe('snapshot storage', { timeout: 60_000 }, () => {
  test('chunkHashes pages through more than one page of the pack index: every stored hash once, ascending, nothing of the next bucket', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-pages', accounts: 10, embeddingDim: 4 })
    const snaps = new SnapshotStore(h.store)
    const want: string[] = []
    const blobs = []
    for (let i = 0; i < 2 * 1024 + 37; i++) {
      const bytes = Uint8Array.of(i & 0xff, i >> 8, 7)
      blobs.push({ hash: sha256(bytes), bytes })
      want.push(hex(sha256(bytes)))
    }
    const batch = h.store.batch()
    // a row of the next bucket must not be read as a chunk
    batch.put(Uint8Array.of(Bucket.PACK_INDEX + 1, 0xff), Uint8Array.of(1))
    assert.equal(await snaps.commitChunks(batch, blobs), blobs.length)
    const got: string[] = []
    for await (const x of snaps.chunkHashes()) got.push(hex(x))
    assert.deepEqual(got, want.sort())
    assert.equal(await snaps.countChunks(), want.length)
  })

  test('keeps the newest K snapshots; chunks shared with a kept snapshot stay, the others are swept', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-store', accounts: 400, embeddingDim: 4 })
    const snaps = new SnapshotStore(h.store)
    const listings = new Map<number, string[]>()
    for (let i = 0; i < 6; i++) {
      await h.exec([h.transfer(i, i + 100), h.embedding(i + 200, [i, 0, 0, 1])], { endOfEpoch: i === 2 })
      const s = await buildSnapshot(h.store, { ...OPTS, keep: 2 })
      listings.set(s.manifest.commitIndex, s.listing.map(x => hex(x.hash)))
      const kept = await snaps.list()
      assert.deepEqual(kept, [...listings.keys()].slice(-2))
      // stored chunks = exactly the union of the kept snapshots' listings
      const live = new Set(kept.flatMap(c => listings.get(c)!))
      assert.deepEqual(await storedChunks(snaps), [...live].sort())
      for (const b of [SnapshotBucket.ATTESTATION, SnapshotBucket.LISTING, SnapshotBucket.FILTER, SnapshotBucket.MULTISET]) assert.equal(await rowCount(h, b), kept.length)
      if (kept.length === 2) {
        const [a, b] = kept.map(c => new Set(listings.get(c)!))
        const shared = [...a].filter(x => b.has(x))
        assert.ok(shared.length > 0, 'consecutive snapshots share most chunks')
        assert.ok(shared.length < a.size)
      }
    }
    // a chunk listed by the pruned snapshot and by a kept one stayed: check one explicitly
    const all = [...listings.keys()]
    const pruned = new Set(listings.get(all[all.length - 3])!)
    const keptNow = new Set(listings.get(all[all.length - 1])!)
    const stored = new Set(await storedChunks(snaps))
    assert.ok([...pruned].some(x => keptNow.has(x) && stored.has(x)), 'a shared chunk of a pruned snapshot is kept')
    assert.ok([...pruned].some(x => !keptNow.has(x) && !new Set(listings.get(all[all.length - 2])).has(x) && !stored.has(x)), 'a chunk only the pruned snapshot listed is gone')
  })

  test('an orphan chunk (left by an interrupted build) is swept by the next snapshot; delete() removes one snapshot', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-orphan', accounts: 100, embeddingDim: 4 })
    const snaps = new SnapshotStore(h.store)
    await h.exec([h.transfer(0, 1)])
    await buildSnapshot(h.store, OPTS)
    const orphan = sha256(Uint8Array.of(1, 2, 3))
    await snaps.commitChunks(h.store.batch(), [{ hash: orphan, bytes: Uint8Array.of(1, 2, 3) }])
    assert.ok((await storedChunks(snaps)).includes(hex(orphan)))
    await h.exec([h.transfer(1, 2)])
    const s = await buildSnapshot(h.store, OPTS)
    assert.ok(s.stats.sweptChunks >= 1)
    assert.ok(!(await storedChunks(snaps)).includes(hex(orphan)))

    const [first, second] = await snaps.list()
    await snaps.delete(second)
    assert.deepEqual(await snaps.list(), [first])
    const live = new Set((await snaps.getListing(first)).map(x => hex(x.hash)))
    assert.deepEqual(await storedChunks(snaps), [...live].sort())
    await assert.rejects(snaps.delete(second), (e: any) => e instanceof StoreError && /no snapshot of commit/.test(e.message))
  })

  test('a snapshot of a commit that has one is refused; other chunking parameters force a full build', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-params', accounts: 100, embeddingDim: 4 })
    await h.exec([h.transfer(0, 1)])
    await buildSnapshot(h.store, OPTS)
    await assert.rejects(buildSnapshot(h.store, OPTS), (e: any) => e instanceof StoreError && /a snapshot of commit 1 already exists/.test(e.message))
    await h.exec([h.transfer(1, 2)])
    const s = await buildSnapshot(h.store, { ...OPTS, targetChunkBytes: 1024 })
    assert.equal(s.stats.mode, 'full')
    assert.match(s.stats.fullReason, /chunking parameters differ/)
    await h.exec([h.transfer(2, 3)])
    const s3 = await buildSnapshot(h.store, { ...OPTS, targetChunkBytes: 1024, incremental: false })
    assert.match(s3.stats.fullReason, /disabled/)
  })
})
