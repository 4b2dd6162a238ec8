/**
 * Archival mode on a store (src/sync/archival.ts): what an archival store keeps that others do not (the
 * embeddings the genesis' pruning rule removes from the state), what it advertises, and the data dirs it
 * refuses.
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Bucket, Keys, keySuffix } from '../../src/store/keys.ts'
import { EmbeddingPruneMode, type EmbeddingPruning } from '../../src/chain/types.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { ArchivalStoreError, MalformedMessageError, WrongChainError } from '../../src/errors.ts'
import { ArchiveAnnouncementCodec, MAX_ANNOUNCEMENT_BYTES, archiveCid, archiveTopic, decodeAnnouncement } from '../../src/sync/archival-discovery.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { archivalRefusal, prepareArchivalStore } from '../../src/sync/archival.ts'
import { resolveSyncMode } from '../../src/node/node.ts'
import { SyncState } from '../../src/snapshot/sync/sync-state.ts'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { VerifyPool } from '../../src/crypto/verify-pool.ts'
import { commitSyncServices } from '../../src/sync/state-sync.ts'
import { syncNode, testEnv } from '../helpers/sync-net.ts'
import { HandChain } from '../snapshot/fixtures.ts'
import { hex } from '../helpers/chain.ts'

const RULE: EmbeddingPruning = { mode: EmbeddingPruneMode.AGE, maxAgeEpochs: 0, maxDistance: 0 }

async function ids (store: ChainStore, bucket: number): Promise<string[]> {
  const out: string[] = []
  for await (const [k] of store.iterateBucket(bucket)) out.push(hex(keySuffix(k)))
  return out.sort()
}

/** Two epochs of a chain whose rule prunes every embedding one epoch old: e0 (epoch 0) is pruned at the end of epoch 1. */
async function runTwoEpochs (h: HandChain): Promise<{ e0: Uint8Array, e1: Uint8Array, prunedAt: number, root: string }> {
  const e0 = h.embedding(0, [1, 2, 3])
  await h.exec([e0])
  await h.exec([], { endOfEpoch: true }) // end of epoch 0: e0 is of epoch 0, 0 + 0 < 0 is false: kept
  const e1 = h.embedding(1, [3, 2, 1])
  await h.exec([e1])
  const r = await h.exec([], { endOfEpoch: true }) // end of epoch 1: e0 (0 + 0 < 1) is pruned, e1 kept
  assert.equal(r.prunedEmbeddings, 1)
  return { e0: sha256(e0.tx), e1: sha256(e1.tx), prunedAt: r.index, root: hex(r.stateRoot) }
}

describe('archival store', () => {
  test('keeps the embeddings the pruning rule removes from the state, with the commit that pruned them; the state and its root are those of any node', async (t) => {
    const a = await HandChain.open(t, { seed: 'archival-prune', accounts: 10, embeddingDim: 3, embeddingPruning: RULE })
    const plain = await HandChain.open(t, { seed: 'archival-prune', accounts: 10, embeddingDim: 3, embeddingPruning: RULE })
    await prepareArchivalStore(a.store)
    assert.equal(a.store.archival, true)
    const ra = await runTwoEpochs(a)
    const rp = await runTwoEpochs(plain)
    assert.equal(ra.root, rp.root, 'archival mode does not change the state root')
    assert.deepEqual(await ids(a.store, Bucket.EMBEDDING), await ids(plain.store, Bucket.EMBEDDING), 'the same live embeddings')
    assert.deepEqual(await ids(a.store, Bucket.EMBEDDING), [hex(ra.e1)])

    const h = await a.store.getEmbeddingHistory(ra.e0)
    assert.ok(h !== undefined, 'the archival store still has the pruned embedding')
    assert.equal(h.prunedAt, ra.prunedAt)
    assert.equal(h.embedding.commitIndex, 1)
    assert.deepEqual([...new Float32Array(new Uint8Array(h.embedding.vector).buffer)], [1, 2, 3])
    assert.equal((await a.store.getEmbeddingHistory(ra.e1))?.prunedAt, undefined, 'a live embedding: no prunedAt')
    assert.deepEqual(await ids(a.store, Bucket.PRUNED_EMBEDDING), [hex(ra.e0)])

    assert.equal(await plain.store.getEmbeddingHistory(rp.e0), undefined, 'a node that is not archival lost it')
    assert.deepEqual(await ids(plain.store, Bucket.PRUNED_EMBEDDING), [])
  })

  test('advertises lowest available commit 0, keeps it across a reopen, and is never snapshot-synced', async (t) => {
    const h = await HandChain.open(t, { seed: 'archival-lowest', accounts: 10, embeddingDim: 3 })
    assert.equal(h.store.lowestAvailable, 1)
    assert.equal(h.store.archival, false)
    await h.exec([h.transfer(0, 1)])
    assert.equal(await archivalRefusal(h.store), undefined, 'a store with every commit since genesis and no pruning rule can become archival')
    await prepareArchivalStore(h.store)
    await prepareArchivalStore(h.store) // idempotent
    assert.equal(h.store.lowestAvailable, 0)
    assert.equal(h.store.getProgress().lowestAvailable, 0)
    assert.equal(h.store.storedLowestAvailable, 1)
    assert.equal(await h.store.db.get(Keys.meta('archival')) !== undefined, true)
    assert.deepEqual(await resolveSyncMode({ syncMode: 'snapshot' }, h.store), { snapshot: false, reason: 'archival data dir: commit sync from its tip, the full history kept' })
    assert.equal((await resolveSyncMode({ syncMode: 'archival' }, h.store)).snapshot, false)
    const dir = h.store.dir
    await h.store.close()
    const again = await ChainStore.open(dir)
    try {
      assert.equal(again.archival, true)
      assert.equal(again.lowestAvailable, 0)
    } finally {
      await again.close()
    }
  })

  test('refuses a store that was snapshot-synced: its history below the snapshot is missing', async (t) => {
    const h = await HandChain.open(t, { seed: 'archival-snap', accounts: 10, embeddingDim: 3 })
    await h.exec([h.transfer(0, 1)])
    // what the snapshot loader writes: the store starts at the snapshot's commit (loader.ts)
    await h.store.batch().setLowestAvailable(41).write()
    const why = await archivalRefusal(h.store)
    assert.match(why ?? '', /was snapshot-synced: it has no commits, blocks or effects below commit 41/)
    await assert.rejects(prepareArchivalStore(h.store), (err: any) => err instanceof ArchivalStoreError && /cannot run in archival mode: .* below commit 41/.test(err.message))
    assert.equal(h.store.archival, false, 'nothing was marked')
    assert.equal(h.store.lowestAvailable, 41)
  })

  test('refuses a store that holds a snapshot sync in progress', async (t) => {
    const h = await HandChain.open(t, { seed: 'archival-inprogress', accounts: 10, embeddingDim: 3 })
    // what snapshot sync persists when it chose a snapshot (src/snapshot/sync/sync-state.ts)
    await new SyncState(h.store).begin(Uint8Array.of(1, 2, 3))
    assert.match(await archivalRefusal(h.store) ?? '', /holds a snapshot sync in progress: an archival node syncs every commit from genesis/)
    await assert.rejects(prepareArchivalStore(h.store), ArchivalStoreError)
    assert.equal(h.store.archival, false)
  })

  test('refuses a store that executed past an epoch end with embedding pruning without being archival', async (t) => {
    const h = await HandChain.open(t, { seed: 'archival-pruned', accounts: 10, embeddingDim: 3, embeddingPruning: RULE })
    await h.exec([h.embedding(0, [1, 1, 1])])
    assert.equal(await archivalRefusal(h.store), undefined, 'no epoch end executed yet: nothing pruned')
    await h.exec([], { endOfEpoch: true })
    assert.match(await archivalRefusal(h.store) ?? '', /executed to commit 2 without archival mode: the embeddings the genesis' pruning rule removed at epoch ends \(from commit 2 on\) were not kept/)
    await assert.rejects(prepareArchivalStore(h.store), ArchivalStoreError)
  })
})

describe('archive announcements (src/sync/archival-discovery.ts)', () => {
  test('accepted only for this chain, with lowest available commit 0 and a bounded size', async () => {
    const chainId = sha256(new Uint8Array([1]))
    const good = { genesisDigest: chainId, highestSyncedCommit: 45, lowestAvailableCommit: 0, addrs: [], timestampMs: 1 }
    assert.equal(decodeAnnouncement(ArchiveAnnouncementCodec.encode(good), chainId).highestSyncedCommit, 45)
    assert.throws(() => decodeAnnouncement(ArchiveAnnouncementCodec.encode({ ...good, genesisDigest: sha256(new Uint8Array([2])) }), chainId), WrongChainError)
    assert.throws(() => decodeAnnouncement(ArchiveAnnouncementCodec.encode({ ...good, lowestAvailableCommit: 41 }), chainId), (err: any) => err instanceof MalformedMessageError && /lowest available commit 41/.test(err.message))
    assert.throws(() => decodeAnnouncement(new Uint8Array(MAX_ANNOUNCEMENT_BYTES + 1), chainId), MalformedMessageError)
    assert.throws(() => decodeAnnouncement(Uint8Array.of(0xff, 0xff), chainId), MalformedMessageError)
    assert.equal(archiveTopic(chainId), `/soma/${hex(chainId).slice(0, 8)}/archive/1`)
    assert.equal(archiveCid(chainId).toString(), archiveCid(new Uint8Array(chainId)).toString(), 'the CID is a pure function of the chain')
    assert.notEqual(archiveCid(chainId).toString(), archiveCid(sha256(new Uint8Array([2]))).toString())
  })
})

describe('archival: true in the embedded services (commitSyncServices)', () => {
  test('marks the store archival when the node starts, answers lowest available commit 0; a snapshot-synced store makes the start fail', async (t) => {
    const env = testEnv(t)
    const s = await env.store('a')
    assert.equal(s.archival, false)
    const A = env.node(await syncNode(s, { archival: true, sync: false }))
    assert.equal(s.archival, true)
    const Q = env.node(await syncNode(await env.store('q'), { sync: false }))
    await Q.dial(A.getMultiaddrs()[0])
    const info = await (Q.services as any).commitAvailability.query(A.peerId, { signal: AbortSignal.timeout(10_000) })
    assert.equal(info.lowestAvailable, 0)

    const snap = await env.store('snap')
    await snap.batch().setLowestAvailable(41).write()
    const node = await createLibp2p({
      start: false,
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify(), ...commitSyncServices({ store: snap, executor: new CommitExecutor(snap), verifyPool: new VerifyPool({ workers: 0 }), archival: true, sync: false }) }
    })
    env.node(node)
    await assert.rejects(async () => { await node.start() }, (err: any) => err instanceof ArchivalStoreError && /below commit 41/.test(err.message))
    assert.equal(snap.archival, false)
  })
})
