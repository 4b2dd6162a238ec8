import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor, type ExecutedCommit } from '../../src/executor/commit-executor.ts'
import { DevnetProducer, type DevnetProducerInit, type ProducedCommit } from '../../src/devnet/producer.ts'
import { createGenesis, type GenesisBundle } from '../../src/chain/genesis.ts'
import { toHex } from '../../src/crypto/hash.ts'
import { tmpDir } from '../helpers/tmp.ts'
import { checkStoreInvariants, checkCertified } from '../helpers/invariants.ts'

const SEED = 'producer-test'
const EPOCH_LENGTH = 5
const genesis = createGenesis({ seed: SEED, validators: 4, accounts: 40, initialBalance: 1e6, embeddingDim: 8 })
const INIT: DevnetProducerInit = { seed: SEED, epochLength: EPOCH_LENGTH, txsPerBlock: 8 }

async function openProducer (dir: string, g: GenesisBundle = genesis, init: DevnetProducerInit = INIT) {
  const store = await ChainStore.open(dir, { genesis: g })
  const executor = new CommitExecutor(store)
  const producer = new DevnetProducer(store, executor, init)
  return { store, executor, producer }
}

describe('DevnetProducer', { timeout: 60_000 }, () => {
  test('produces across several epochs; committees rotate; every commit is certified by 2f+1', async (t) => {
    const { store, executor, producer } = await openProducer(tmpDir(t))
    t.after(async () => { await store.close() })
    await producer.load()
    const certified: Array<[ProducedCommit, ExecutedCommit]> = []
    const epochs: number[] = []
    producer.on('certified', (c, r) => certified.push([c, r]))
    producer.on('epoch', e => epochs.push(e))
    await producer.produceUntil(4 * EPOCH_LENGTH + 2)

    assert.deepEqual(store.getProgress(), { highestSynced: store.highestSynced, highestExecuted: store.highestSynced, lowestAvailable: 1 })
    assert.ok(store.highestSynced >= 4 * EPOCH_LENGTH + 2)
    assert.deepEqual(epochs, [1, 2, 3, 4])
    assert.equal(producer.currentEpoch, 4)
    assert.deepEqual(certified.map(([c]) => c.commit.index), Array.from({ length: store.highestSynced }, (_, i) => i + 1))
    assert.equal(executor.stats.failed, 0, 'the workload never fails')
    assert.ok(executor.stats.transactions > 0)
    for (const [c, r] of certified) assert.equal(toHex(r.stateRoot), toHex((await store.getStateRoot(c.commit.index))!))

    // epochs end every EPOCH_LENGTH commits
    for (let e = 0; e < 4; e++) assert.equal(await store.getLastCommitIndexOfEpoch(e), (e + 1) * EPOCH_LENGTH)

    // committees rotate: one authority changes per epoch, and stakes change
    for (let e = 0; e < 4; e++) {
      const a = (await store.getCommittee(e))!.committee.authorities
      const b = (await store.getCommittee(e + 1))!.committee.authorities
      assert.equal(a.length, b.length)
      const changed = a.map((x, i) => toHex(x.publicKey) !== toHex(b[i].publicKey))
      assert.equal(changed.filter(Boolean).length, 1, `one authority rotates out after epoch ${e}`)
      assert.equal(changed.indexOf(true), e % a.length)
      const keysA = new Set(a.map(x => toHex(x.publicKey)))
      assert.ok(!keysA.has(toHex(b[e % a.length].publicKey)), 'the newcomer is a fresh key')
      const kept = a.map((x, i) => [x, b[i]] as const).filter((_, i) => !changed[i])
      assert.ok(kept.some(([x, y]) => x.stake !== y.stake), `stakes change after epoch ${e}`)
      assert.equal(new Set(a.map(x => x.stake)).size > 1, true, 'stakes are uneven')
    }

    // every certified commit has stored votes of >= 2f+1 of its epoch's stake, for its digest
    for (let i = 1; i <= store.highestSynced; i++) {
      const c = (await store.getCommit(i))!
      const committee = (await store.getCommittee(c.epoch))!
      const stake = await checkCertified(store, c)
      assert.ok(stake >= committee.quorumThreshold)
    }
    const r = await checkStoreInvariants(store)
    assert.ok(r.embeddings > 0)
    assert.equal(r.epochs, 5)
  })

  test('restart resumes (mid-epoch and right after an epoch change) with no failed effects; the chain keeps linking', async (t) => {
    const dir = tmpDir(t)
    let { store, executor, producer } = await openProducer(dir)
    await producer.load()
    await producer.produceUntil(EPOCH_LENGTH + 2) // mid-epoch 1
    const stops = [store.highestSynced]
    for (const target of [2 * EPOCH_LENGTH, 3 * EPOCH_LENGTH + 3]) {
      await store.close()
      ;({ store, executor, producer } = await openProducer(dir))
      await producer.load()
      assert.equal(producer.highestCommit >= store.highestSynced, true)
      await producer.produceUntil(target)
      assert.equal(executor.stats.failed, 0, `no failed effects after resuming at ${stops.at(-1)}`)
      assert.ok(executor.stats.commits > 0)
      stops.push(store.highestSynced)
    }
    assert.equal(stops[1], 2 * EPOCH_LENGTH, 'the second stop is right after an end-of-epoch commit')
    await store.close()
    ;({ store, executor, producer } = await openProducer(dir))
    t.after(async () => { await store.close() })
    await producer.load()
    assert.equal(producer.currentEpoch, 3)
    await producer.produceUntil(store.highestSynced + EPOCH_LENGTH + 1)
    assert.equal(executor.stats.failed, 0)
    const r = await checkStoreInvariants(store)
    assert.equal(r.highestExecuted, r.highestSynced)
    assert.ok(r.epochs >= 4)
  })

  test('load() refuses a seed that does not match the genesis in the store', async (t) => {
    const { store, producer } = await openProducer(tmpDir(t), genesis, { ...INIT, seed: 'another seed' })
    t.after(async () => { await store.close() })
    await assert.rejects(producer.load(), /seed does not match/)
  })

  test('start() produces on a timer until maxCommits, then emits done', async (t) => {
    const { store, executor, producer } = await openProducer(tmpDir(t), genesis, { ...INIT, roundIntervalMs: 1, maxCommits: 7 })
    t.after(async () => { await store.close() })
    await producer.load()
    const done = once(producer, 'done')
    producer.start()
    await done
    await producer.stop()
    assert.equal(store.highestSynced, 7)
    assert.equal(store.highestExecuted, 7)
    assert.equal(executor.stats.failed, 0)
  })
})
