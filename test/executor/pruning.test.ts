import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Bucket, Keys, keySuffix, readU64 } from '../../src/store/keys.ts'
import { accountElement, embeddingElement } from '../../src/store/state-hash.ts'
import { createGenesis, decodeGenesis } from '../../src/chain/genesis.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { EmbeddingPruneMode, type EmbeddingPruning } from '../../src/chain/types.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { MalformedMessageError } from '../../src/errors.ts'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { buildSnapshot } from '../../src/snapshot/builder.ts'
import { verifyStoredSnapshot } from '../../src/snapshot/verify.ts'
import { HandChain } from '../snapshot/fixtures.ts'
import { hex } from '../helpers/chain.ts'

const DIM = 3

async function recomputeRoot (store: ChainStore): Promise<string> {
  const lt = new LtHash()
  for await (const [k, v] of store.iterateBucket(Bucket.ACCOUNT)) lt.addLanes(accountElement(keySuffix(k), v))
  for await (const [k, v] of store.iterateBucket(Bucket.EMBEDDING)) lt.addLanes(embeddingElement(keySuffix(k), v))
  return hex(lt.checksum())
}

async function embeddingIds (store: ChainStore): Promise<string[]> {
  const out: string[] = []
  for await (const [k] of store.iterateBucket(Bucket.EMBEDDING)) out.push(hex(keySuffix(k)))
  return out.sort()
}

function idOf (tx: { tx: Uint8Array }): string { return hex(sha256(tx.tx)) }

async function chain (t: any, seed: string, rule?: EmbeddingPruning): Promise<HandChain> {
  return await HandChain.open(t, { seed, accounts: 20, embeddingDim: DIM, embeddingPruning: rule })
}

describe('embedding pruning (genesis rule, end-of-epoch commits)', () => {
  test('age: embeddings created more than N epochs before the end-of-epoch commit are deleted, atomically with the commit', async (t) => {
    const h = await chain(t, 'prune-age', { mode: EmbeddingPruneMode.AGE, maxAgeEpochs: 1, maxDistance: 0 })
    const e0 = h.embedding(0, [1, 2, 3])
    await h.exec([e0], { endOfEpoch: true }) // epoch 0 ends: age 0, nothing pruned
    assert.equal((await embeddingIds(h.store)).length, 1)
    const e1 = h.embedding(1, [1, 2, 3])
    const r1 = await h.exec([e1])
    assert.equal(r1.prunedEmbeddings, 0, 'no pruning at a commit that does not end its epoch')
    const r1e = await h.exec([], { endOfEpoch: true }) // epoch 1 ends: e0 is of epoch 0, 0 + 1 < 1 is false
    assert.equal(r1e.prunedEmbeddings, 0)
    const e2 = h.embedding(2, [1, 2, 3])
    const r2 = await h.exec([e2], { endOfEpoch: true }) // epoch 2 ends: e0 (0 + 1 < 2) goes
    assert.equal(r2.prunedEmbeddings, 1)
    assert.deepEqual(await embeddingIds(h.store), [idOf(e1), idOf(e2)].sort())
    assert.equal(await recomputeRoot(h.store), hex(r2.stateRoot), 'the state root no longer covers the pruned embedding')
    // the change log records the removal with the embedding's creation commit
    const v = await h.store.db.get(Keys.change(r2.index, Bucket.EMBEDDING, sha256(e0.tx)))
    assert.ok(v !== undefined)
    assert.equal(v[0], 1)
    assert.equal(readU64(v, 1), 1, 'created by commit 1')
  })

  test('distance: embeddings farther than D from the centroid (float64, id order) are deleted, including ones the same commit adds; non-finite vectors always', async (t) => {
    const rule = { mode: EmbeddingPruneMode.DISTANCE, maxAgeEpochs: 0, maxDistance: 2 }
    const h = await chain(t, 'prune-distance', rule)
    const near = [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.2, 0.2, 0.2]].map((v, i) => h.embedding(i, v))
    const far = h.embedding(10, [5, 5, 5])
    await h.exec([...near, far])
    assert.equal((await embeddingIds(h.store)).length, 6, 'nothing is pruned before the epoch ends')
    const lateFar = h.embedding(11, [-6, 0, 0])
    const nan = h.embedding(12, [NaN, 0, 0])
    const r = await h.exec([lateFar, nan], { endOfEpoch: true })
    // the expected selection, computed here the same documented way
    const live = [...near, far, lateFar].map(x => ({ id: idOf(x), v: Array.from(new Float32Array(new Uint8Array(Codecs.Transaction.decode(x.tx).submitEmbedding!.vector).buffer)) }))
    live.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    const c = [0, 0, 0]
    for (const e of live) for (let d = 0; d < DIM; d++) c[d] += e.v[d]
    for (let d = 0; d < DIM; d++) c[d] /= live.length
    const expectedPruned = live.filter(e => Math.sqrt(e.v.reduce((s, x, d) => s + (x - c[d]) ** 2, 0)) > rule.maxDistance).map(e => e.id)
    assert.deepEqual(expectedPruned.sort(), [idOf(far), idOf(lateFar)].sort(), 'the test data: the two outliers are far')
    assert.equal(r.prunedEmbeddings, 3)
    assert.deepEqual(await embeddingIds(h.store), near.map(idOf).sort())
    assert.equal(await recomputeRoot(h.store), hex(r.stateRoot))
    // an embedding added and pruned by the same commit: one change row, "did not exist before"
    const row = await h.store.db.get(Keys.change(r.index, Bucket.EMBEDDING, sha256(lateFar.tx)))
    assert.deepEqual([...row!], [0])
  })

  test('hybrid prunes what either rule selects; the same commits give the same state on every store', async (t) => {
    const rule = { mode: EmbeddingPruneMode.HYBRID, maxAgeEpochs: 0, maxDistance: 5 }
    const run = async (): Promise<{ roots: string[], ids: string[] }> => {
      const h = await chain(t, 'prune-hybrid', rule)
      const roots: string[] = []
      roots.push(hex((await h.exec([h.embedding(0, [0, 0, 0]), h.embedding(1, [1, 1, 1])], { endOfEpoch: true })).stateRoot))
      roots.push(hex((await h.exec([h.embedding(2, [0.1, 0, 0]), h.embedding(3, [10, 10, 10]), h.embedding(4, [0, 0.2, 0])], { endOfEpoch: true })).stateRoot))
      return { roots, ids: await embeddingIds(h.store) }
    }
    const a = await run()
    const b = await run()
    assert.deepEqual(a, b)
    // epoch 1 ends: age prunes everything of epoch 0; distance prunes [10,10,10] (13.5 from the centroid of all 5; the others are ~3.7)
    assert.equal(a.ids.length, 2)
  })

  test('a snapshot at an epoch end reflects the pruned state: its root is the executed root', async (t) => {
    const h = await chain(t, 'prune-snapshot', { mode: EmbeddingPruneMode.AGE, maxAgeEpochs: 0, maxDistance: 0 })
    await h.exec([h.embedding(0, [1, 0, 0]), h.embedding(1, [0, 1, 0])])
    const s1 = await buildSnapshot(h.store, { targetChunkBytes: 256, embeddingWindowCommits: 1 })
    assert.equal(s1.listing.filter(i => i.kind === 2).reduce((s, i) => s + i.entries, 0), 2)
    await h.exec([h.embedding(2, [0, 0, 1])], { endOfEpoch: true })
    await h.exec([h.embedding(3, [1, 1, 0])])
    const r = await h.exec([h.embedding(4, [1, 1, 1])], { endOfEpoch: true })
    assert.equal(r.prunedEmbeddings, 3, 'epoch 0\'s embeddings are gone at the end of epoch 1')
    const s2 = await buildSnapshot(h.store, { targetChunkBytes: 256, embeddingWindowCommits: 1 })
    assert.equal(s2.stats.mode, 'incremental')
    assert.equal(s2.stats.changedEmbeddings, 5)
    assert.equal(hex(s2.manifest.stateRoot), hex(r.stateRoot))
    assert.equal(s2.listing.filter(i => i.kind === 2).reduce((s, i) => s + i.entries, 0), 2)
    assert.ok(!s2.listing.some(i => i.kind === 2 && i.group < 3), 'the pruned windows have no chunks left')
    const report = await verifyStoredSnapshot(h.store, r.index)
    assert.equal(report.embeddings, 2)
  })

  test('genesis: the rule is optional and leaves old genesis bytes unchanged; bad rules are refused', () => {
    const base = { seed: 'prune-genesis', validators: 2, accounts: 3, initialBalance: 10, embeddingDim: 4 }
    const plain = createGenesis(base)
    assert.equal(plain.genesis.embeddingPruning, null)
    assert.equal(hex(createGenesis({ ...base, embeddingPruning: { mode: EmbeddingPruneMode.NONE, maxAgeEpochs: 5, maxDistance: 1 } }).bytes), hex(plain.bytes), 'mode none is not written')
    const withRule = createGenesis({ ...base, embeddingPruning: { mode: EmbeddingPruneMode.HYBRID, maxAgeEpochs: 7, maxDistance: 1.5 } })
    assert.notEqual(hex(withRule.chainId), hex(plain.chainId))
    assert.deepEqual({ ...decodeGenesis(withRule.bytes).genesis.embeddingPruning }, { mode: 3, maxAgeEpochs: 7, maxDistance: 1.5 })
    for (const bad of [{ mode: 9, maxAgeEpochs: 0, maxDistance: 0 }, { mode: 2, maxAgeEpochs: 0, maxDistance: -1 }, { mode: 2, maxAgeEpochs: 0, maxDistance: Infinity }]) {
      const bytes = Codecs.Genesis.encode({ ...plain.genesis, embeddingPruning: bad as EmbeddingPruning })
      assert.throws(() => decodeGenesis(bytes), MalformedMessageError)
    }
  })
})
