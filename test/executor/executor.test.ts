import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { ChainStore } from '../../src/store/chain-store.ts'
import { Bucket, keySuffix } from '../../src/store/keys.ts'
import { CommitExecutor, ExecutionOrderError } from '../../src/executor/commit-executor.ts'
import { accountElement, embeddingElement } from '../../src/store/state-hash.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { encodeCommit, type ParsedCommit } from '../../src/chain/commit.ts'
import { parseBlock, compareRefs, type ParsedBlock } from '../../src/chain/block.ts'
import { systemTransaction } from '../../src/chain/transaction.ts'
import { devnetCommittee } from '../../src/chain/genesis.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { ExecutionStatus, type Committee, type SignedTransaction } from '../../src/chain/types.ts'
import type { CommittedSubDag } from '../../src/chain/subdag.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { tmpDir } from '../helpers/tmp.ts'
import { BoundedChannel } from '../../src/sync/channel.ts'
import { testChain, block, transfer, embedding, fakeDigest, hex, type TestChain } from '../helpers/chain.ts'

const DIM = 4

/** A store + executor for a hand-built chain, with helpers to make and execute commits. */
async function handChain (t: any, seed: string) {
  const c = testChain(seed, { accounts: 4, initialBalance: 1000, embeddingDim: DIM })
  const store = await ChainStore.open(tmpDir(t), { genesis: c.g })
  t.after(async () => { await store.close() })
  const ex = new CommitExecutor(store)
  let prev = c.chainId
  let round = 0
  let epoch = 0
  const h = {
    c,
    store,
    ex,
    /**
     * Makes commit `index` whose sub-dag has one block per entry of `txsPerBlock` (authors 0, 1, ...);
     * the leader is the last block.
     */
    make (index: number, txsPerBlock: SignedTransaction[][], opts: { endOfEpoch?: Committee, leaderAuthor?: number } = {}): CommittedSubDag {
      round++
      const blocks = txsPerBlock.map((transactions, author) => block(c, { epoch, round, author, transactions }))
      blocks.sort((a, b) => compareRefs(a.ref, b.ref))
      const leader = blocks[opts.leaderAuthor ?? blocks.length - 1]
      const commit = encodeCommit({ index, previousDigest: prev, leader: leader.ref, blocks: blocks.map(b => b.ref), epoch, timestampMs: round, endOfEpoch: opts.endOfEpoch !== undefined ? { nextCommittee: opts.endOfEpoch } : null })
      prev = commit.digest
      if (opts.endOfEpoch !== undefined) epoch++
      return { commit, blocks }
    },
    async exec (txsPerBlock: SignedTransaction[][], opts: { endOfEpoch?: Committee, leaderAuthor?: number } = {}) {
      return await ex.execute(h.make(store.highestExecuted + 1, txsPerBlock, opts))
    },
    async account (i: number) {
      const a = await store.getAccount(c.accounts[i].publicKey)
      return { balance: a!.balance, nonce: a!.nonce }
    },
    async status (stx: SignedTransaction) {
      return (await store.getEffects(sha256(stx.tx)))?.status
    }
  }
  return h
}

async function recomputeRoot (store: ChainStore): Promise<string> {
  const lt = new LtHash()
  for await (const [k, v] of store.iterateBucket(Bucket.ACCOUNT)) lt.addLanes(accountElement(keySuffix(k), v))
  for await (const [k, v] of store.iterateBucket(Bucket.EMBEDDING)) lt.addLanes(embeddingElement(keySuffix(k), v))
  return hex(lt.checksum())
}

async function dumpBucket (store: ChainStore, bucket: number): Promise<string[]> {
  const out: string[] = []
  for await (const [k, v] of store.iterateBucket(bucket)) out.push(`${hex(k)}=${hex(v)}`)
  return out
}

/**
 * A devnet chain of 20 commits (50 accounts, epochs of 8, every 4th transaction an embedding) executed by
 * its producer one commit at a time, and its sub-dags, to re-execute elsewhere. Also a second, empty store
 * of the same genesis.
 */
async function devnetChain (t: any, seed: string) {
  const g = testChain(seed, { accounts: 50, initialBalance: 1e6, embeddingDim: 8 }).g
  const a = await ChainStore.open(tmpDir(t), { genesis: g })
  t.after(async () => { await a.close() })
  const producer = new DevnetProducer(a, new CommitExecutor(a), { seed, epochLength: 8, txsPerBlock: 15, embeddingEvery: 4 })
  await producer.load()
  await producer.produceUntil(20)
  const subdags: CommittedSubDag[] = []
  for (let i = 1; i <= a.highestExecuted; i++) {
    const commit = (await a.getCommit(i))!
    subdags.push({ commit, blocks: (await a.getBlocks(commit.commit.blocks)).map(x => parseBlock(x!, g.chainId)) })
  }
  const b = await ChainStore.open(tmpDir(t), { genesis: g })
  t.after(async () => { await b.close() })
  return { g, a, b, subdags }
}

describe('determinism', { timeout: 60_000 }, () => {
  test('the same commits executed on two stores give equal state roots at every commit', async (t) => {
    const { a, b, subdags } = await devnetChain(t, 'exec-determinism')
    const exB = new CommitExecutor(b)
    assert.equal(hex((await b.getStateRoot(0))!), hex((await a.getStateRoot(0))!))
    let epochsSeen = 0
    for (const sd of subdags) {
      const r = await exB.execute(sd)
      assert.equal(hex(r.stateRoot), hex((await a.getStateRoot(sd.commit.index))!), `state root of commit ${sd.commit.index}`)
      if (r.nextEpoch !== undefined) epochsSeen++
    }
    assert.ok(epochsSeen >= 2)
    assert.equal(b.highestExecuted, a.highestExecuted)
    for (const bucket of [Bucket.ACCOUNT, Bucket.EMBEDDING, Bucket.EFFECTS, Bucket.STATE_ROOT, Bucket.COMMITTEE]) {
      assert.deepEqual(await dumpBucket(b, bucket), await dumpBucket(a, bucket), `bucket ${bucket}`)
    }
    assert.equal(await recomputeRoot(b), hex((await b.getStateRoot(b.highestExecuted))!))
    assert.ok(await b.countBucket(Bucket.EMBEDDING) > 0)
  })
})

describe('batches', { timeout: 60_000 }, () => {
  test('commits executed in batches give the same state, effects and roots at batch ends as one at a time', async (t) => {
    const { a, b, subdags } = await devnetChain(t, 'exec-batches')
    const ex = new CommitExecutor(b)
    // batches cut after each end-of-epoch commit and at most 5 commits long
    const ends: number[] = []
    let batch: CommittedSubDag[] = []
    for (const sd of subdags) {
      batch.push(sd)
      if (batch.length === 5 || sd.commit.commit.endOfEpoch != null || sd === subdags[subdags.length - 1]) {
        const rs = await ex.executeBatch(batch)
        assert.deepEqual(rs.map(r => r.index), batch.map(x => x.commit.index), 'one result per commit, in order')
        assert.ok(rs.slice(0, -1).every(r => r.stateRoot === undefined), 'no state root inside a batch')
        assert.equal(hex(rs[rs.length - 1].stateRoot!), hex((await a.getStateRoot(batch[batch.length - 1].commit.index))!), 'state root of the batch end')
        ends.push(batch[batch.length - 1].commit.index)
        batch = []
      }
    }
    assert.ok(ends.length >= 5)
    assert.equal(b.highestExecuted, a.highestExecuted)
    for (const bucket of [Bucket.ACCOUNT, Bucket.EMBEDDING, Bucket.EFFECTS, Bucket.COMMITTEE]) {
      assert.deepEqual(await dumpBucket(b, bucket), await dumpBucket(a, bucket), `bucket ${bucket}`)
    }
    for (let i = 1; i <= b.highestExecuted; i++) {
      const root = await b.getStateRoot(i)
      assert.equal(root !== undefined, ends.includes(i), `a state root recorded at commit ${i} exactly when a batch ended there`)
    }
    assert.equal(await recomputeRoot(b), hex((await b.getStateRoot(b.highestExecuted))!))
    assert.equal(ex.stats.commits, subdags.length)
    assert.equal(ex.stats.transactions, (await b.countBucket(Bucket.EFFECTS)))
  })

  test('the change log holds one row per entry and batch, at its first change, with its state before the batch', async (t) => {
    const { a, b, subdags } = await devnetChain(t, 'exec-batch-changes')
    const ex = new CommitExecutor(b)
    await ex.executeBatch(subdags.slice(0, 8)) // epoch 0: commits 1..8, the last ends it
    // in the one-at-a-time store, the first row of each key in 1..8 carries the state before commit 1
    const first = new Map<string, string>()
    for await (const [k, v] of a.iterateBucket(Bucket.CHANGE_LOG)) {
      const commit = Number(Buffer.from(keySuffix(k)).readBigUInt64BE(0))
      if (commit > 8) continue
      const id = hex(keySuffix(k).subarray(8))
      if (!first.has(id)) first.set(id, `${commit}:${hex(v)}`)
    }
    const rows = new Map<string, string>()
    for await (const [k, v] of b.iterateBucket(Bucket.CHANGE_LOG)) {
      const id = hex(keySuffix(k).subarray(8))
      assert.ok(!rows.has(id), 'one row per entry')
      rows.set(id, `${Number(Buffer.from(keySuffix(k)).readBigUInt64BE(0))}:${hex(v)}`)
    }
    assert.ok(rows.size > 10)
    assert.deepEqual([...rows].sort(), [...first].sort())
  })

  test('a batch is refused when an end-of-epoch commit is not its last, or when commits are not consecutive', async (t) => {
    const { b, subdags } = await devnetChain(t, 'exec-batch-order')
    const ex = new CommitExecutor(b)
    await assert.rejects(ex.executeBatch(subdags.slice(0, 9)), (e: any) => e instanceof ExecutionOrderError && /ends epoch 0/.test(e.message))
    await assert.rejects(ex.executeBatch([subdags[0], subdags[2]]), (e: any) => e instanceof ExecutionOrderError && /expected 2/.test(e.message))
    assert.equal(b.highestExecuted, 0, 'nothing executed')
    assert.equal(await b.countBucket(Bucket.EFFECTS), 0, 'nothing stored')
    assert.deepEqual(await ex.executeBatch([]), [])
    assert.equal((await ex.executeBatch(subdags.slice(0, 8))).length, 8)
  })

  test('run() batches what its source already holds, cut after end-of-epoch commits and at maxBatchCommits', async (t) => {
    const { a, b, subdags } = await devnetChain(t, 'exec-batch-run')
    const ex = new CommitExecutor(b, { maxBatchCommits: 3 })
    const ch = new BoundedChannel<CommittedSubDag>(50)
    for (const sd of subdags) await ch.send(sd)
    ch.close()
    const withRoot: number[] = []
    ex.on('executed', r => { if (r.stateRoot !== undefined) withRoot.push(r.index) })
    await ex.run(ch)
    assert.equal(b.highestExecuted, a.highestExecuted)
    // batches: 1-3, 4-6, 7-8 (8 ends epoch 0), 9-11, 12-14, 15-16 (16 ends epoch 1), 17-19, 20
    assert.deepEqual(withRoot, [3, 6, 8, 11, 14, 16, 19, 20])
    assert.throws(() => new CommitExecutor(b, { maxBatchCommits: 0 }), RangeError)
  })
})

describe('transactions', () => {
  test('transfers move balances and advance the sender nonce', async (t) => {
    const h = await handChain(t, 'exec-transfer')
    const r = await h.exec([[transfer(h.c, 0, 1, 300, 0), transfer(h.c, 0, 2, 200, 1)]])
    assert.deepEqual([r.executed, r.failed, r.skipped], [2, 0, 0])
    assert.deepEqual(await h.account(0), { balance: 500, nonce: 2 })
    assert.deepEqual(await h.account(1), { balance: 1300, nonce: 0 })
    assert.deepEqual(await h.account(2), { balance: 1200, nonce: 0 })
    assert.equal(await recomputeRoot(h.store), hex(r.stateRoot))
  })

  test('overdraft: INSUFFICIENT_BALANCE, no balance or nonce changes', async (t) => {
    const h = await handChain(t, 'exec-overdraft')
    const before = hex((await h.store.getStateRoot(0))!)
    const over = transfer(h.c, 0, 1, 1001, 0)
    const r = await h.exec([[over]])
    assert.equal(r.failed, 1)
    assert.equal(await h.status(over), ExecutionStatus.INSUFFICIENT_BALANCE)
    assert.match((await h.store.getEffects(sha256(over.tx)))!.error!, /1001/)
    assert.deepEqual(await h.account(0), { balance: 1000, nonce: 0 })
    assert.deepEqual(await h.account(1), { balance: 1000, nonce: 0 })
    assert.equal(hex(r.stateRoot), before, 'a failed transaction leaves the state root unchanged')
    // exactly the whole balance is fine
    const all = transfer(h.c, 0, 1, 1000, 0)
    await h.exec([[all]])
    assert.equal(await h.status(all), ExecutionStatus.SUCCESS)
    assert.deepEqual(await h.account(0), { balance: 0, nonce: 1 })
  })

  test('nonce ahead: BAD_NONCE, no balance or nonce changes; a used nonce: skipped; later valid ones still run', async (t) => {
    const h = await handChain(t, 'exec-nonce')
    const ahead = transfer(h.c, 0, 1, 11, 1)
    const ok0 = transfer(h.c, 0, 1, 10, 0)
    const replayNonce = transfer(h.c, 0, 2, 20, 0) // different tx, nonce already used by ok0
    const ok1 = transfer(h.c, 0, 1, 10, 1)
    const r = await h.exec([[ahead], [ok0, replayNonce, ok1]])
    // block order: author 0's block first
    assert.equal(await h.status(ahead), ExecutionStatus.BAD_NONCE)
    assert.equal(await h.status(ok0), ExecutionStatus.SUCCESS)
    assert.equal(await h.status(replayNonce), undefined, 'a transaction for a used nonce records nothing')
    assert.equal(await h.status(ok1), ExecutionStatus.SUCCESS)
    assert.deepEqual([r.executed, r.skipped, r.failed], [3, 1, 1])
    assert.deepEqual(await h.account(0), { balance: 980, nonce: 2 })
    assert.deepEqual(await h.account(1), { balance: 1020, nonce: 0 })
    assert.deepEqual(await h.account(2), { balance: 1000, nonce: 0 })
    // an embedding with a bad nonce stores nothing
    const badEmb = embedding(h.c, 3, 7, DIM)
    await h.exec([[badEmb]])
    assert.equal(await h.status(badEmb), ExecutionStatus.BAD_NONCE)
    assert.equal(await h.store.getEmbedding(sha256(badEmb.tx)), undefined)
    assert.deepEqual(await h.account(3), { balance: 1000, nonce: 0 })
  })

  test('a duplicate transaction in the same commit or a later commit is skipped', async (t) => {
    const h = await handChain(t, 'exec-dup')
    const tx = transfer(h.c, 0, 1, 100, 0)
    const r1 = await h.exec([[tx], [tx, tx]])
    assert.deepEqual([r1.executed, r1.skipped, r1.failed], [1, 2, 0])
    assert.deepEqual(await h.account(0), { balance: 900, nonce: 1 })
    const r2 = await h.exec([[tx], [transfer(h.c, 1, 0, 5, 0)]])
    assert.deepEqual([r2.executed, r2.skipped, r2.failed], [1, 1, 0])
    assert.deepEqual(await h.account(0), { balance: 905, nonce: 1 })
    assert.deepEqual(await h.account(1), { balance: 1095, nonce: 1 })
    const e = (await h.store.getEffects(sha256(tx.tx)))!
    assert.equal(e.commitIndex, 1, 'the effects of the first execution stay')
    assert.equal(e.status, ExecutionStatus.SUCCESS)
    assert.equal(h.ex.stats.skipped, 3)
  })

  test('replays run the same on a node without the history of effects (one that loaded a snapshot)', async (t) => {
    // A executes from genesis; B executes the same commits up to the snapshot commit and then forgets
    // every effect, as a node that loaded the state of that commit from a snapshot has none
    const a = await handChain(t, 'exec-history')
    const b = await handChain(t, 'exec-history')
    const overdraft = transfer(a.c, 0, 1, 1500, 0) // fails: balance 1000
    const ahead = transfer(a.c, 1, 2, 10, 1) // fails: account 1 is at nonce 0
    const ok = transfer(a.c, 2, 3, 10, 0)
    const invalid = { tx: Uint8Array.from([0x0a, 0x30]), signature: new Uint8Array(64) }
    const before = [[overdraft, ahead], [ok, invalid]]
    // one block per commit
    const after = [
      [[transfer(a.c, 3, 0, 1000, 0)]], // account 0 now has 2000
      [[overdraft, transfer(a.c, 1, 0, 1, 0)]], // the overdraft runs now; account 1 reaches nonce 1
      [[ahead, ok]] // ahead runs now; ok is a replay
    ]
    for (const h of [a, b]) await h.exec(before)
    const snapshotCommit = b.store.highestExecuted
    const del = b.store.db.batch()
    for await (const [k] of b.store.iterateBucket(Bucket.EFFECTS)) del.del(k)
    await del.write()
    const results = []
    for (const h of [a, b]) {
      const rs = []
      for (const txs of after) rs.push(await h.exec(txs))
      results.push(rs.map(r => [r.executed, r.skipped, r.failed]))
    }
    assert.deepEqual(results[1], results[0], 'the same transactions executed, skipped and failed')
    assert.deepEqual(results[0], [[1, 0, 0], [2, 0, 0], [1, 1, 0]])
    assert.equal(hex((await b.store.getStateRoot(b.store.highestExecuted))!), hex((await a.store.getStateRoot(a.store.highestExecuted))!))
    assert.deepEqual(await dumpBucket(b.store, Bucket.ACCOUNT), await dumpBucket(a.store, Bucket.ACCOUNT))
    // the effects of every commit after the snapshot commit are the same
    const later = async (h: typeof a): Promise<string[]> => {
      const out: string[] = []
      for await (const [k, v] of h.store.iterateBucket(Bucket.EFFECTS)) {
        if (Codecs.TransactionEffects.decode(v).commitIndex > snapshotCommit) out.push(`${hex(k)}=${hex(v)}`)
      }
      return out
    }
    assert.deepEqual(await later(b), await later(a))
    assert.equal((await later(a)).length, 4)
    assert.equal(await a.status(overdraft), ExecutionStatus.SUCCESS)
    assert.equal(await a.status(ahead), ExecutionStatus.SUCCESS)
    assert.equal((await a.store.getEffects(sha256(ok.tx)))!.commitIndex, 1, 'a replay keeps the effects of its first execution')
    assert.deepEqual(await a.account(0), { balance: 501, nonce: 1 })
  })

  test('a transaction that does not parse gives an INVALID_TRANSACTION effect and changes nothing', async (t) => {
    const h = await handChain(t, 'exec-invalid')
    const wrongDim = embedding(h.c, 0, 0, DIM + 1)
    const wrongChain = transfer(h.c, 1, 0, 5, 0, fakeDigest('other chain'))
    const garbage = { tx: Uint8Array.from([0x0a, 0x30]), signature: new Uint8Array(64) }
    const r = await h.exec([[wrongDim, wrongChain, garbage]])
    assert.equal(r.failed, 3)
    for (const s of [wrongDim, wrongChain, garbage]) assert.equal(await h.status(s), ExecutionStatus.INVALID_TRANSACTION)
    assert.deepEqual(await h.account(0), { balance: 1000, nonce: 0 })
    assert.deepEqual(await h.account(1), { balance: 1000, nonce: 0 })
    assert.equal(hex(r.stateRoot), hex((await h.store.getStateRoot(0))!))
  })

  test('embeddings are stored with owner, commit index, epoch and model; the nonce advances', async (t) => {
    const h = await handChain(t, 'exec-embedding')
    await h.exec([[transfer(h.c, 2, 1, 1, 0)]])
    const e0 = embedding(h.c, 2, 1, DIM, 0.25)
    const e1 = embedding(h.c, 2, 2, DIM, 0.75)
    const r = await h.exec([[e0], [e1]])
    assert.equal(r.failed, 0)
    for (const [stx, fill] of [[e0, 0.25], [e1, 0.75]] as const) {
      const e = (await h.store.getEmbedding(sha256(stx.tx)))!
      assert.equal(hex(e.owner), hex(h.c.accounts[2].publicKey))
      assert.equal(e.commitIndex, 2)
      assert.equal(e.epoch, 0)
      assert.equal(e.model, 'test')
      assert.deepEqual([...new Float32Array(new Uint8Array(e.vector).buffer)], new Array(DIM).fill(fill))
    }
    assert.deepEqual(await h.account(2), { balance: 999, nonce: 3 })
    assert.equal(await h.store.countBucket(Bucket.EMBEDDING), 2)
    assert.equal(await recomputeRoot(h.store), hex(r.stateRoot))
  })

  test('a transfer to a new address creates the account; the root covers it', async (t) => {
    const h = await handChain(t, 'exec-new-account')
    const k = h.c.accounts[0]
    const { signTransaction } = await import('../../src/chain/transaction.ts')
    const fresh = fakeDigest('fresh address')
    const r = await h.exec([[signTransaction({ sender: k.publicKey, nonce: 0, chainId: h.c.chainId, transfer: { to: fresh, amount: 7 } }, k)]])
    assert.equal((await h.store.getAccount(fresh))!.balance, 7)
    assert.equal(await recomputeRoot(h.store), hex(r.stateRoot))
  })
})

describe('order', () => {
  test('executing out of order throws ExecutionOrderError and leaves the store as it was', async (t) => {
    const h = await handChain(t, 'exec-order')
    const s1 = h.make(1, [[transfer(h.c, 0, 1, 10, 0)]])
    const s2 = h.make(2, [[transfer(h.c, 0, 1, 10, 1)]])
    await assert.rejects(h.ex.execute(s2), (e: any) => e instanceof ExecutionOrderError && /commit 2 .* expected 1/.test(e.message))
    assert.equal(h.store.highestExecuted, 0)
    await h.ex.execute(s1)
    // again: already executed
    await assert.rejects(h.ex.execute(s1), ExecutionOrderError)
    // blocks that do not match the commit's refs
    const other = h.make(3, [[transfer(h.c, 2, 1, 10, 0)]])
    await assert.rejects(h.ex.execute({ commit: s2.commit, blocks: other.blocks }), (e: any) => e instanceof ExecutionOrderError && /do not match/.test(e.message))
    await assert.rejects(h.ex.execute({ commit: s2.commit, blocks: [] }), ExecutionOrderError)
    assert.equal(h.store.highestExecuted, 1)
    // the executor still works after the errors
    const r = await h.ex.execute(s2)
    assert.equal(r.index, 2)
    assert.deepEqual(await h.account(0), { balance: 980, nonce: 2 })
    assert.equal(await recomputeRoot(h.store), hex(r.stateRoot))
  })

  test('run() executes a stream in order, skipping what is already executed', async (t) => {
    const h = await handChain(t, 'exec-run')
    const subdags = [1, 2, 3].map(i => h.make(i, [[transfer(h.c, 0, 1, 1, i - 1)]]))
    await h.ex.execute(subdags[0])
    async function * source () { yield * subdags }
    await h.ex.run(source())
    assert.equal(h.store.highestExecuted, 3)
    assert.deepEqual(await h.account(0), { balance: 997, nonce: 3 })
  })
})

describe('epoch handover', () => {
  test('an end-of-epoch commit installs the next committee; a ChangeEpoch that does not match fails', async (t) => {
    const h = await handChain(t, 'exec-epoch')
    const next = devnetCommittee(h.c.seed, 1, [0, 1, 2, 4]).committee
    const wrong = devnetCommittee(h.c.seed, 1, [0, 1, 2, 5]).committee
    const ce = (committee: Committee, nextEpoch = 1) => systemTransaction({ sender: new Uint8Array(0), nonce: 0, chainId: h.c.chainId, changeEpoch: { nextEpoch, nextCommittee: committee } })
    const mismatched = ce(wrong)
    const wrongEpoch = ce(next, 2)
    const outOfLeader = ce({ ...next, authorities: next.authorities.slice(0, 3) })
    const good = ce(next)
    assert.equal(await h.store.getCommittee(1), undefined)
    // leader is the last block (author 1); author 0's block is not the leader
    const r = await h.exec([[outOfLeader], [mismatched, wrongEpoch, good]], { endOfEpoch: next })
    assert.equal(r.nextEpoch, 1)
    assert.equal(await h.status(mismatched), ExecutionStatus.INVALID_TRANSACTION)
    assert.match((await h.store.getEffects(sha256(mismatched.tx)))!.error!, /does not match/)
    assert.equal(await h.status(wrongEpoch), ExecutionStatus.INVALID_TRANSACTION)
    assert.equal(await h.status(outOfLeader), ExecutionStatus.INVALID_TRANSACTION)
    assert.match((await h.store.getEffects(sha256(outOfLeader.tx)))!.error!, /leader/)
    assert.equal(await h.status(good), ExecutionStatus.SUCCESS)
    const installed = (await h.store.getCommittee(1))!
    assert.equal(hex(Codecs.Committee.encode(installed.committee)), hex(Codecs.Committee.encode(next)))

    // the next epoch runs; a ChangeEpoch in a commit that does not end the epoch fails
    const stray = ce(devnetCommittee(h.c.seed, 2, [0, 1, 2, 6]).committee, 2)
    const r2 = await h.exec([[stray, transfer(h.c, 0, 1, 1, 0)]])
    assert.equal(r2.epoch, 1)
    assert.equal(r2.nextEpoch, undefined)
    assert.equal(await h.status(stray), ExecutionStatus.INVALID_TRANSACTION)
    assert.equal(await h.store.getCommittee(2), undefined)
    assert.deepEqual(await h.account(0), { balance: 999, nonce: 1 })
    const a0 = (await h.store.getAccount(h.c.accounts[0].publicKey))!
    assert.equal(a0.lastModifiedEpoch, 1)
  })

  test('the next committee is installed even if the leader carries no ChangeEpoch', async (t) => {
    const h = await handChain(t, 'exec-epoch-no-tx')
    const next = devnetCommittee(h.c.seed, 1, [3, 1, 2, 0]).committee
    const r = await h.exec([[transfer(h.c, 0, 1, 1, 0)]], { endOfEpoch: next })
    assert.equal(r.nextEpoch, 1)
    assert.equal((await h.store.getCommittee(1))!.size, 4)
  })
})
