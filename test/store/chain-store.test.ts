import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync, readdirSync, readFileSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import { ClassicLevel } from 'classic-level'
import { ChainStore } from '../../src/store/chain-store.ts'
import { Keys, Bucket, META_INIT_PENDING, u64, keySuffix } from '../../src/store/keys.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { encodeCommit } from '../../src/chain/commit.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { accountElement } from '../../src/store/state-hash.ts'
import { toHex } from '../../src/crypto/hash.ts'
import { CorruptStoreError, ForeignStoreError, StoreError } from '../../src/errors.ts'
import { tmpDir } from '../helpers/tmp.ts'
import { committeeWithStakes, fakeDigest, hex } from '../helpers/chain.ts'

const g = createGenesis({ seed: 'store-test', validators: 4, accounts: 20, initialBalance: 5000, embeddingDim: 4 })
const other = createGenesis({ seed: 'store-test-other', validators: 4, accounts: 20, initialBalance: 5000, embeddingDim: 4 })

async function rejectsWith (p: Promise<unknown>, cls: new (...a: any[]) => Error, check: (e: any) => void): Promise<void> {
  await assert.rejects(p, (e: any) => {
    assert.equal(e.constructor, cls, `expected ${cls.name}, got ${e.constructor.name}: ${e.message}`)
    check(e)
    return true
  })
}

describe('ChainStore open / init', { timeout: 30_000 }, () => {
  test('a new store is initialized from genesis', async (t) => {
    const dir = path.join(tmpDir(t), 'chain')
    const s = await ChainStore.open(dir, { genesis: g })
    t.after(async () => { await s.close() })
    assert.deepEqual(s.getProgress(), { highestSynced: 0, highestExecuted: 0, lowestAvailable: 1 })
    assert.equal(hex(s.chainId), hex(g.chainId))
    const c0 = await s.getCommittee(0)
    assert.equal(hex(Codecs.Committee.encode(c0!.committee)), hex(Codecs.Committee.encode(g.genesis.committee)))
    assert.equal(await s.getCommittee(1), undefined)
    // accounts, and the state root of commit 0 over them
    const lt = new LtHash()
    for (const a of g.genesis.accounts) {
      const st = await s.getAccount(a.address)
      assert.deepEqual({ balance: st!.balance, nonce: st!.nonce }, { balance: 5000, nonce: 0 })
    }
    let n = 0
    for await (const [k, v] of s.iterateBucket(Bucket.ACCOUNT)) { lt.addLanes(accountElement(keySuffix(k), v)); n++ }
    assert.equal(n, 20)
    assert.equal(await s.countBucket(Bucket.ACCOUNT), 20)
    assert.equal(hex((await s.getStateRoot(0))!), hex(lt.checksum()))
    assert.equal(hex((await s.getLtHash()).checksum()), hex(lt.checksum()))
  })

  test('reopen, with or without the genesis; progress is persisted', async (t) => {
    const dir = tmpDir(t)
    let s = await ChainStore.open(dir, { genesis: g })
    await s.batch().setHighestSynced(7).setHighestExecuted(5).setLowestAvailable(3).write()
    assert.deepEqual(s.getProgress(), { highestSynced: 7, highestExecuted: 5, lowestAvailable: 3 })
    await s.close()
    s = await ChainStore.open(dir)
    assert.deepEqual(s.getProgress(), { highestSynced: 7, highestExecuted: 5, lowestAvailable: 3 })
    assert.equal(hex(s.genesis.bytes), hex(g.bytes))
    await s.close()
    s = await ChainStore.open(dir, { genesis: g })
    assert.equal(s.highestSynced, 7)
    assert.equal(s.highestExecuted, 5)
    assert.equal(s.lowestAvailable, 3)
    await s.close()
    // the store refuses writes once closed
    await assert.rejects(s.batch().setHighestSynced(8).write(), StoreError)
  })

  test('an empty dir without a genesis is refused', async (t) => {
    const dir = tmpDir(t)
    await rejectsWith(ChainStore.open(dir), StoreError, e => assert.match(e.message, /no genesis/))
  })

  test('a dir of another chain: ForeignStoreError naming both chain ids', async (t) => {
    const dir = tmpDir(t)
    await (await ChainStore.open(dir, { genesis: g })).close()
    await rejectsWith(ChainStore.open(dir, { genesis: other }), ForeignStoreError, e => {
      assert.ok(e.message.includes(toHex(g.chainId)), 'names the stored chain id')
      assert.ok(e.message.includes(toHex(other.chainId)), 'names the configured chain id')
      assert.ok(e.message.includes(dir))
    })
    // the refused open released the database: the right genesis still opens it
    await (await ChainStore.open(dir, { genesis: g })).close()
  })

  test('a dir with non-LevelDB files: ForeignStoreError', async (t) => {
    const dir = tmpDir(t)
    writeFileSync(path.join(dir, 'notes.txt'), 'hello')
    writeFileSync(path.join(dir, 'data.bin'), Uint8Array.from([1, 2, 3]))
    mkdirSync(path.join(dir, 'sub'))
    await rejectsWith(ChainStore.open(dir, { genesis: g }), ForeignStoreError, e => {
      assert.ok(e.message.includes(dir))
      assert.match(e.message, /not a soma-sync store/)
    })
    assert.deepEqual(readdirSync(dir).sort(), ['data.bin', 'notes.txt', 'sub'])
  })

  test('a LevelDB that is not ours: ForeignStoreError', async (t) => {
    const dir = tmpDir(t)
    const db = new ClassicLevel(dir)
    await db.put('some-key', 'some-value')
    await db.close()
    await rejectsWith(ChainStore.open(dir, { genesis: g }), ForeignStoreError, e => {
      assert.ok(e.message.includes(dir))
      assert.match(e.message, /LevelDB database but not a soma-sync store/)
    })
    // nothing was written to it
    const db2 = new ClassicLevel<string, string>(dir)
    assert.deepEqual(await db2.keys().all(), ['some-key'])
    await db2.close()
  })

  test('another schema version: ForeignStoreError', async (t) => {
    const dir = tmpDir(t)
    const s = await ChainStore.open(dir, { genesis: g })
    await s.batch().put(Keys.meta('schema'), u64(99)).write()
    await s.close()
    await rejectsWith(ChainStore.open(dir, { genesis: g }), ForeignStoreError, e => assert.match(e.message, /schema 99/))
  })

  test('a garbled CURRENT file: CorruptStoreError naming the dir', async (t) => {
    const dir = tmpDir(t)
    await (await ChainStore.open(dir, { genesis: g })).close()
    writeFileSync(path.join(dir, 'CURRENT'), 'garbage without a newline')
    await rejectsWith(ChainStore.open(dir, { genesis: g }), CorruptStoreError, e => {
      assert.ok(e.message.includes(dir))
      assert.match(e.message, /corrupt/i)
      assert.ok(e.cause !== undefined)
    })
  })

  test('a CURRENT pointing at a missing MANIFEST: CorruptStoreError naming the dir', async (t) => {
    const dir = tmpDir(t)
    await (await ChainStore.open(dir, { genesis: g })).close()
    writeFileSync(path.join(dir, 'CURRENT'), 'MANIFEST-999999\n')
    await rejectsWith(ChainStore.open(dir, { genesis: g }), CorruptStoreError, e => {
      assert.ok(e.message.includes(dir))
      assert.match(e.message, /MANIFEST-999999/)
    })
  })

  test('a garbled MANIFEST: CorruptStoreError naming the dir', async (t) => {
    const dir = tmpDir(t)
    await (await ChainStore.open(dir, { genesis: g })).close()
    const manifest = readdirSync(dir).find(f => f.startsWith('MANIFEST-'))!
    const bytes = readFileSync(path.join(dir, manifest))
    for (let i = 0; i < bytes.length; i++) bytes[i] ^= 0x5a
    writeFileSync(path.join(dir, manifest), bytes)
    await rejectsWith(ChainStore.open(dir, { genesis: g }), CorruptStoreError, e => {
      assert.ok(e.message.includes(dir))
      assert.match(e.message, /corrupt/i)
    })
  })

  test('two opens of the same dir: StoreError mentioning another process', async (t) => {
    const dir = tmpDir(t)
    const s = await ChainStore.open(dir, { genesis: g })
    t.after(async () => { await s.close() })
    await rejectsWith(ChainStore.open(dir, { genesis: g }), StoreError, e => {
      assert.match(e.message, /another process/)
      assert.ok(e.message.includes(dir))
    })
    // the first one still works
    await s.batch().setHighestSynced(1).write()
    assert.equal(s.highestSynced, 1)
  })

  test('executed beyond synced on disk: CorruptStoreError', async (t) => {
    const dir = tmpDir(t)
    const s = await ChainStore.open(dir, { genesis: g })
    await s.batch().setHighestSynced(2).setHighestExecuted(3).write()
    await s.close()
    await rejectsWith(ChainStore.open(dir), CorruptStoreError, e => assert.match(e.message, /executed commit 3 is beyond synced commit 2/))
  })

  test('an interrupted genesis import (init-pending marker) is started over', async (t) => {
    const dir = tmpDir(t)
    const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' })
    await db.put(Keys.meta(META_INIT_PENDING), Uint8Array.of(1))
    await db.put(Keys.account(fakeDigest('half-imported')), Uint8Array.of(8, 1))
    await db.close()
    const s = await ChainStore.open(dir, { genesis: g })
    t.after(async () => { await s.close() })
    assert.equal(await s.countBucket(Bucket.ACCOUNT), 20)
    assert.equal(await s.getAccount(fakeDigest('half-imported')), undefined)
    assert.equal(await s.db.get(Keys.meta(META_INIT_PENDING)), undefined)
  })
})

describe('ChainStore reads and batches', () => {
  test('commits, committees, votes, blocks', async (t) => {
    const s = await ChainStore.open(tmpDir(t), { genesis: g })
    t.after(async () => { await s.close() })
    const ref = (r: number, a: number) => ({ round: r, author: a, digest: fakeDigest(`${r}/${a}`) })
    const { committee: next } = committeeWithStakes('next', 1, [1, 2, 3])
    const c1 = encodeCommit({ index: 1, previousDigest: g.chainId, leader: ref(1, 1), blocks: [ref(1, 1)], epoch: 0, timestampMs: 1 })
    const c2 = encodeCommit({ index: 2, previousDigest: c1.digest, leader: ref(2, 2), blocks: [ref(1, 0), ref(2, 2)], epoch: 0, timestampMs: 2, endOfEpoch: { nextCommittee: next } })
    const c4 = encodeCommit({ index: 4, previousDigest: fakeDigest('3'), leader: ref(4, 0), blocks: [ref(4, 0)], epoch: 1, timestampMs: 4 })
    await s.batch()
      .putCommit(c1).putCommit(c2).putCommit(c4)
      .putBlock(ref(1, 1), Uint8Array.of(1)).putBlock(ref(2, 2), Uint8Array.of(2))
      .putVotes(ref(3, 0), [{ index: 2, digest: c2.digest }, { index: 1, digest: c1.digest }])
      .putVotes(ref(3, 1), [{ index: 2, digest: fakeDigest('other') }])
      .setHighestSynced(2)
      .write()
    assert.equal(s.highestSynced, 2)
    assert.equal(hex((await s.getCommit(2))!.digest), hex(c2.digest))
    assert.equal(await s.getCommit(3), undefined)
    assert.deepEqual((await s.getCommitRange(1, 10)).map(c => c.index), [1, 2]) // stops at the gap
    assert.equal(await s.getLastCommitIndexOfEpoch(0), 2)
    assert.equal(await s.getLastCommitIndexOfEpoch(1), undefined)
    assert.equal((await s.getCommittee(1))!.totalStake, 6)
    const votes = await s.getVotes(2)
    assert.deepEqual(votes.map(v => [v.ref.round, v.ref.author, hex(v.voteDigest)]), [[3, 0, hex(c2.digest)], [3, 1, hex(fakeDigest('other'))]])
    assert.equal((await s.getVotes(1)).length, 1)
    assert.equal((await s.getVotes(3)).length, 0)
    assert.deepEqual((await s.getBlocks([ref(2, 2), ref(9, 9), ref(1, 1)])).map(b => b === undefined ? null : [...b]), [[2], null, [1]])
    assert.equal(await s.getBlock({ ...ref(1, 1), digest: fakeDigest('other') }), undefined)
  })
})
