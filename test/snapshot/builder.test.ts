import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { buildSnapshot, type SnapshotBuildResult } from '../../src/snapshot/builder.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { CuckooFilter } from '../../src/snapshot/cuckoo-filter.ts'
import { AccountGroup, ChunkKind } from '../../src/snapshot/chunk-format.ts'
import { finalChecksum, multisetOf, chunkingParams } from '../../src/snapshot/manifest.ts'
import { verifyFilter, verifyListing } from '../../src/snapshot/verify.ts'
import { Bucket, Keys } from '../../src/store/keys.ts'
import { Prng } from '../../src/devnet/prng.ts'
import { devnetCommittee } from '../../src/chain/genesis.ts'
import { manifestDigest, signManifest, verifyAttestation } from '../../src/snapshot/attestation.ts'
import { HandChain, decodeListingChunks, expectedRewrites, rewrittenChunks } from './fixtures.ts'
import { hex } from '../helpers/chain.ts'

const ACCOUNTS = 20_000
/** 1 KiB chunks (~18 accounts each) so that 20k accounts make ~1,000 chunks; no forced cuts. */
const OPTS = { targetChunkBytes: 1024, maxChunkBytes: 1 << 20, hotEpochs: 2, embeddingWindowCommits: 2 }
/** 256-byte chunks: 3,000 accounts make ~600 chunks (the history tests) */
const HOPTS = { ...OPTS, targetChunkBytes: 256 }

function listingIds (r: SnapshotBuildResult): string[] {
  return r.listing.map(i => `${i.kind}/${i.group}/${hex(i.firstKey)}/${hex(i.hash)}/${i.size}/${i.entries}`)
}

/**
 * The incremental result equals a full build of the same state (listing, checksums, filter: the whole
 * manifest, byte for byte); its filter holds every chunk.
 */
async function assertSameAsFull (h: HandChain, inc: SnapshotBuildResult): Promise<SnapshotBuildResult> {
  const full = await buildSnapshot(h.store, { ...OPTS, incremental: false, write: false })
  assert.equal(full.stats.mode, 'full')
  assert.deepEqual(listingIds(inc), listingIds(full), 'the incremental listing equals a full rebuild\'s')
  assert.equal(hex(inc.manifest.finalChecksum), hex(full.manifest.finalChecksum))
  assert.equal(hex(inc.manifest.multisetHash), hex(full.manifest.multisetHash))
  assert.equal(hex(inc.manifest.listingHash), hex(full.manifest.listingHash))
  assert.equal(hex(inc.manifest.multisetHash), hex(multisetOf(inc.listing.map(i => i.hash)).checksum()), 'the O(changed) multiset update equals a recomputation')
  assert.equal(hex(inc.manifest.finalChecksum), hex(finalChecksum(inc.listing.map(i => i.hash))))
  assert.equal(hex(inc.filter.toBytes()), hex(full.filter.toBytes()), 'the filter is the canonical filter of the set')
  assert.equal(hex(inc.manifestBytes), hex(full.manifestBytes), 'the manifest is byte-identical to a full build\'s')
  const stored = await new SnapshotStore(h.store).getFilterBytes(inc.manifest.commitIndex)
  const filter = verifyFilter(inc.manifest, stored)
  for (const i of inc.listing) assert.ok(filter.contains(i.hash), 'every chunk hash is in the filter')
  assert.equal(filter.count, inc.listing.length)
  verifyListing(inc.manifest, await new SnapshotStore(h.store).getListingBytes(inc.manifest.commitIndex))
  return full
}

describe('incremental snapshots', { timeout: 120_000 }, () => {
  test('after 1% of the accounts change, only the chunks that hold them are rewritten; hot-only changes leave the cold chunks alone', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-1pct', accounts: ACCOUNTS, embeddingDim: 4 })
    const rng = new Prng('snap-1pct')
    // epoch 0 ends; in epoch 1 accounts 0..199 change, in epoch 2 accounts 200..399 (and some embeddings)
    await h.exec([], { endOfEpoch: true })
    await h.exec(Array.from({ length: 100 }, (_, i) => h.transfer(2 * i, 2 * i + 1)), { endOfEpoch: true })
    await h.exec([
      ...Array.from({ length: 100 }, (_, i) => h.transfer(200 + 2 * i, 201 + 2 * i)),
      ...Array.from({ length: 10 }, (_, i) => h.embedding(1000 + i, [i, 1, 2, 3]))
    ])
    assert.equal(h.epoch, 2)
    const s1 = await buildSnapshot(h.store, OPTS)
    assert.equal(s1.stats.mode, 'full')
    const hot = s1.listing.filter(i => i.kind === ChunkKind.ACCOUNTS && i.group === AccountGroup.HOT)
    const cold = s1.listing.filter(i => i.kind === ChunkKind.ACCOUNTS && i.group === AccountGroup.COLD)
    assert.equal(hot.reduce((s, i) => s + i.entries, 0), 410, 'the accounts modified in epochs 1 and 2 (transfers, embedding submitters) are hot')
    assert.equal(cold.reduce((s, i) => s + i.entries, 0), ACCOUNTS - 410)
    assert.ok(cold.length > 600, `many cold chunks: ${cold.length}`)
    const d1 = await decodeListingChunks(h.store, s1.listing)

    // 1% of the accounts (200, random) change: 100 transfers between distinct random accounts
    const picked = new Set<number>()
    while (picked.size < 200) picked.add(rng.int(ACCOUNTS))
    const p = [...picked]
    await h.exec(Array.from({ length: 100 }, (_, i) => h.transfer(p[2 * i], p[2 * i + 1])))
    const s2 = await buildSnapshot(h.store, OPTS)
    assert.equal(s2.stats.mode, 'incremental')
    assert.equal(s2.stats.changedAccounts, 200)
    await assertSameAsFull(h, s2)
    const d2 = await decodeListingChunks(h.store, s2.listing)
    const params = chunkingParams(OPTS, 4)
    const modulusOf = (gid: string): number => gid.startsWith(`${ChunkKind.ACCOUNTS}/`) ? params.accountBoundaryModulus : params.embeddingBoundaryModulus
    const expected = expectedRewrites(d1, d2, modulusOf)
    const changedKeys = [...expected.changed.values()].reduce((s, d) => s + d.length, 0)
    assert.ok(changedKeys >= 200, 'the changed accounts leave the cold group and join the hot one (or change there)')
    const actual = rewrittenChunks(s1.listing, d2)
    assert.deepEqual([...actual].sort(), [...expected.chunks].sort(), 'exactly the chunks that hold the changed accounts are new')
    assert.equal(s2.stats.chunksAdded, expected.chunks.size)
    assert.equal(s2.stats.chunksEncoded, expected.chunks.size + expected.rescans, 'the builder encoded and hashed only those chunks (and the few before a gap that got a new key)')
    assert.ok(expected.rescans <= expected.chunks.size / 10, `${expected.rescans} rescans`)
    assert.ok(s2.stats.chunksEncoded < s2.listing.length / 3, `${s2.stats.chunksEncoded} of ${s2.listing.length} chunks re-encoded`)
    t.diagnostic(`1% random: ${actual.size} of ${s2.listing.length} chunks rewritten for ${changedKeys} changed group entries, ${s2.stats.chunksRead} old chunks read, ${expected.rescans} rescans`)

    // only hot accounts change again: no cold chunk is touched
    await h.exec(Array.from({ length: 50 }, (_, i) => h.transfer(2 * i + 1, 2 * i)))
    const s3 = await buildSnapshot(h.store, OPTS)
    await assertSameAsFull(h, s3)
    const d3 = await decodeListingChunks(h.store, s3.listing)
    const expected3 = expectedRewrites(d2, d3, modulusOf)
    const actual3 = rewrittenChunks(s2.listing, d3)
    assert.deepEqual([...actual3].sort(), [...expected3.chunks].sort())
    assert.ok(actual3.size > 0)
    for (const id of actual3) assert.ok(id.startsWith(`${ChunkKind.ACCOUNTS}/${AccountGroup.HOT}/`), `only hot chunks are new (${id})`)
    assert.deepEqual(s3.listing.filter(i => i.group === AccountGroup.COLD && i.kind === ChunkKind.ACCOUNTS).map(i => hex(i.hash)),
      s2.listing.filter(i => i.group === AccountGroup.COLD && i.kind === ChunkKind.ACCOUNTS).map(i => hex(i.hash)), 'the cold chunks are the same')
    assert.equal(s3.stats.chunksEncoded, expected3.chunks.size + expected3.rescans)
    assert.equal(s3.stats.chunksRead, s3.stats.chunksRemoved + expected3.rescans, 'only the replaced chunks were read back')

    // an epoch change: the accounts of epoch 1 age out of the hot group into the cold one
    await h.exec([], { endOfEpoch: true })
    await h.exec([h.transfer(5000, 5001)])
    const s4 = await buildSnapshot(h.store, OPTS)
    assert.equal(h.epoch, 3)
    assert.ok(s4.stats.agedAccounts > 0, 'accounts last modified in epoch 1 left the hot group')
    await assertSameAsFull(h, s4)
  })

  test('incremental updates across epochs with embeddings in creation windows equal full rebuilds; a new embedding touches only the newest window', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-epochs', accounts: 300, embeddingDim: 4 })
    const rng = new Prng('snap-epochs')
    let previous: SnapshotBuildResult | undefined
    for (let c = 0; c < 14; c++) {
      const txs = Array.from({ length: 10 }, () => h.transfer(rng.int(300), rng.int(300)))
      for (let e = 0; e < 6; e++) txs.push(h.embedding(rng.int(300), [rng.next(), rng.next(), rng.next(), rng.next()]))
      await h.exec(txs, { endOfEpoch: c % 4 === 3 })
      if (c % 2 === 1) {
        const s = await buildSnapshot(h.store, { ...OPTS, targetChunkBytes: 512 })
        const full = await buildSnapshot(h.store, { ...OPTS, targetChunkBytes: 512, incremental: false, write: false })
        assert.deepEqual(listingIds(s), listingIds(full), `commit ${h.store.highestExecuted}`)
        assert.equal(hex(s.manifest.multisetHash), hex(full.manifest.multisetHash))
        assert.equal(s.stats.mode, previous === undefined ? 'full' : 'incremental')
        if (previous !== undefined) {
          // embedding windows are 2 commits wide: windows older than the base snapshot keep their chunks
          const newestWindow = Math.floor(h.store.highestExecuted / 2)
          const oldEmb = new Set(previous.listing.filter(i => i.kind === ChunkKind.EMBEDDINGS).map(i => hex(i.hash)))
          for (const i of s.listing.filter(x => x.kind === ChunkKind.EMBEDDINGS && !oldEmb.has(hex(x.hash)))) {
            assert.ok(i.group >= newestWindow - 1, `a new embedding chunk is in a recent window (${i.group}, newest ${newestWindow})`)
          }
        }
        previous = s
      }
    }
    assert.ok(h.epoch >= 3)
  })

  test('random snapshot histories that reach the same state give byte-identical manifests (filter bytes, filter hash, manifest digest)', async (t) => {
    // four validators execute the same commits; each takes snapshots at other commits (one none at all),
    // so their filters see different insert/delete histories of the chunk set before the last commit
    const COMMITS = 14
    const schedules: Array<{ name: string, at: (c: number) => boolean }> = [
      { name: 'every commit', at: () => true },
      { name: 'every third commit', at: (c) => c % 3 === 0 },
      { name: 'random commits', at: (c) => new Prng(`sched-${c}`).int(2) === 0 },
      { name: 'none before the last', at: () => false }
    ]
    const finals: Array<{ name: string, r: SnapshotBuildResult, stored: Uint8Array }> = []
    for (const sch of schedules) {
      const h = await HandChain.open(t, { seed: 'snap-history', accounts: 3000, embeddingDim: 4 })
      const rng = new Prng('snap-history-txs')
      let snapshots = 0
      for (let c = 1; c <= COMMITS; c++) {
        const txs = Array.from({ length: 12 + rng.int(30) }, () => h.transfer(rng.int(3000), rng.int(3000)))
        if (c % 5 === 0) txs.push(h.embedding(rng.int(3000), [c, 1, 2, 3]))
        await h.exec(txs, { endOfEpoch: c % 6 === 0 })
        if (c < COMMITS && sch.at(c)) { await buildSnapshot(h.store, { ...HOPTS, keep: 2 }); snapshots++ }
      }
      const r = await buildSnapshot(h.store, HOPTS)
      assert.equal(r.stats.mode, snapshots > 0 ? 'incremental' : 'full', sch.name)
      const stored = await new SnapshotStore(h.store).getFilterBytes(r.manifest.commitIndex)
      finals.push({ name: sch.name, r, stored })
      if (sch.name === 'every commit') {
        // and the same store built from scratch
        const scratch = await buildSnapshot(h.store, { ...HOPTS, incremental: false, write: false })
        finals.push({ name: 'from scratch', r: scratch, stored: scratch.filter.toBytes() })
      }
    }
    const ref = finals[0]
    assert.ok(ref.r.listing.length > 400, `enough chunks for placements to differ: ${ref.r.listing.length}`)
    assert.ok(ref.r.stats.chunksAdded > 10, `the last update changed chunks: ${ref.r.stats.chunksAdded}`)
    for (const f of finals.slice(1)) {
      assert.equal(hex(f.r.filter.toBytes()), hex(ref.r.filter.toBytes()), `filter bytes: ${f.name} vs ${ref.name}`)
      assert.equal(hex(f.stored), hex(ref.stored), `stored filter bytes: ${f.name}`)
      assert.equal(hex(f.r.manifest.filterHash), hex(ref.r.manifest.filterHash), `filter hash: ${f.name}`)
      assert.equal(hex(manifestDigest(f.r.manifestBytes)), hex(manifestDigest(ref.r.manifestBytes)), `manifest digest: ${f.name}`)
    }
    // what the attested filter is: the canonical filter of the listed hashes
    assert.equal(hex(ref.r.manifest.filterHash), hex(CuckooFilter.build(ref.r.listing.map(i => i.hash)).hash()))
    // the build stats report the filter
    const first = finals.find(f => f.name === 'every commit')!
    assert.ok(first.r.stats.filterMs >= 0 && first.r.stats.filterStash === first.r.filter.stashed)
  })

  test('a committee split 2/2 between an incremental and a from-scratch history attests one manifest (issue 16 reproduction)', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-committee', accounts: 3000, embeddingDim: 4 })
    const rng = new Prng('snap-committee-txs')
    const commits = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await h.exec(Array.from({ length: 25 }, () => h.transfer(rng.int(3000), rng.int(3000))))
    }
    await commits(20)
    const s20 = await buildSnapshot(h.store, HOPTS)
    assert.equal(s20.manifest.commitIndex, 20)
    await commits(15)
    const { committee, keys } = devnetCommittee(h.seed, h.epoch, [0, 1, 2, 3])
    // validators 0 and 1 update their snapshot of commit 20; validators 2 and 3 (joined late, or restarted
    // with an empty snapshot store) build commit 35 from scratch
    const inc = await buildSnapshot(h.store, { ...HOPTS, sign: (bytes) => signManifest(bytes, committee, keys.slice(0, 2)) })
    const scratch = await buildSnapshot(h.store, { ...HOPTS, incremental: false, write: false, sign: (bytes) => signManifest(bytes, committee, keys.slice(2)) })
    assert.equal(inc.stats.mode, 'incremental')
    assert.equal(scratch.stats.mode, 'full')
    assert.ok(inc.stats.chunksAdded > 10 && inc.stats.chunksRemoved > 10, 'the update touched the filter')
    assert.equal(hex(inc.manifest.filterHash), hex(scratch.manifest.filterHash))
    assert.equal(hex(inc.manifestBytes), hex(scratch.manifestBytes), 'both halves sign the same manifest bytes')
    const info = (await h.store.getCommittee(h.epoch))!
    // each half alone falls short of 2f+1; their signatures together attest
    assert.throws(() => verifyAttestation({ manifest: inc.manifestBytes, signatures: inc.signatures }, info), /2f\+1 needs/)
    assert.throws(() => verifyAttestation({ manifest: scratch.manifestBytes, signatures: scratch.signatures }, info), /2f\+1 needs/)
    const both = verifyAttestation({ manifest: inc.manifestBytes, signatures: [...inc.signatures, ...scratch.signatures].sort((a, b) => a.authority - b.authority) }, info)
    assert.equal(both.stake, info.totalStake)
    assert.deepEqual(both.signers, [0, 1, 2, 3])
  })

  test('change log: the executor logs every changed entry with its prior state; snapshots trim it below the oldest kept snapshot', async (t) => {
    const h = await HandChain.open(t, { seed: 'snap-log', accounts: 50, embeddingDim: 4 })
    await h.exec([h.transfer(0, 1, 7), h.embedding(2, [1, 2, 3, 4])])
    const rows: string[] = []
    for await (const [k, v] of h.store.iterateBucket(Bucket.CHANGE_LOG)) rows.push(`${k[9]}:${hex(v.subarray(0, 1))}`)
    assert.deepEqual(rows.sort(), ['7:01', '7:01', '7:01', '8:00'], 'three accounts (existed) and one embedding (new)')
    for (let i = 0; i < 5; i++) {
      await h.exec([h.transfer(i, i + 1)])
      await buildSnapshot(h.store, { ...OPTS, keep: 2 })
    }
    const kept = await new SnapshotStore(h.store).list()
    assert.deepEqual(kept, [h.store.highestExecuted - 1, h.store.highestExecuted])
    const [lo] = Keys.changeRange(0, 0)
    const [, hi] = Keys.changeRange(kept[0], kept[0])
    let below = 0
    for await (const _ of h.store.db.keys({ gte: lo, lt: hi })) below++
    assert.equal(below, 0, 'no change rows at or below the oldest kept snapshot')
    assert.ok(await h.store.countBucket(Bucket.CHANGE_LOG) > 0, 'the rows after it remain')
  })
})
