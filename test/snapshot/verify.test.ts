import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { CommitteeInfo } from '../../src/chain/committee.ts'
import { Bucket } from '../../src/store/keys.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { overwriteBlob } from '../helpers/packs.ts'
import { encodeManifest, decodeAttestation, type SnapshotManifest, type SnapshotAttestation } from '../../src/snapshot/manifest.ts'
import { attestManifest, devnetCommitteeKeys, signManifest, verifyAttestation } from '../../src/snapshot/attestation.ts'
import { verifyFilter, verifyListing, verifyChunkBytes, checkChunk, verifyStoredSnapshot, canonicalFilterCheck } from '../../src/snapshot/verify.ts'
import { CuckooFilter } from '../../src/snapshot/cuckoo-filter.ts'
import { rebuildState } from '../../src/snapshot/rebuild.ts'
import type { SnapshotBuildResult } from '../../src/snapshot/builder.ts'
import { InvalidChunkError, InvalidSnapshotError } from '../../src/errors.ts'
import { makeTmpDir, removeDir } from '../helpers/tmp.ts'
import { flipBit, hex } from '../helpers/chain.ts'

const SEED = 'snapshot-verify'
const genesis = createGenesis({ seed: SEED, validators: 4, accounts: 200, initialBalance: 1e9, embeddingDim: 8 })
const EPOCH_LENGTH = 6
const EVERY = 4

/** Fails unless fn throws an error of `cls` whose message matches `re`. */
function rejects (fn: () => unknown, cls: new (...a: any[]) => Error, re: RegExp): void {
  assert.throws(fn, (e: any) => {
    assert.ok(e instanceof cls, `${e?.name}: ${e?.message}`)
    assert.match(e.message, re)
    return true
  })
}

describe('devnet snapshots: attestation, verification, rebuild', { timeout: 120_000 }, () => {
  let dir: string
  let store: ChainStore
  let producer: DevnetProducer
  const built: SnapshotBuildResult[] = []
  let latest: SnapshotBuildResult

  before(async () => {
    dir = makeTmpDir()
    store = await ChainStore.open(dir, { genesis })
    producer = new DevnetProducer(store, new CommitExecutor(store), {
      seed: SEED,
      epochLength: EPOCH_LENGTH,
      txsPerBlock: 10,
      embeddingEvery: 3,
      roundIntervalMs: 0,
      snapshots: { every: EVERY, targetChunkBytes: 1024, embeddingWindowCommits: 5, keep: 3 }
    })
    producer.on('snapshot', s => built.push(s))
    await producer.load()
    await producer.produceUntil(3 * EPOCH_LENGTH + 2)
    latest = built[built.length - 1]
  })
  after(async () => {
    await store.close()
    removeDir(dir)
  })

  test('the producer snapshots at every epoch end and every S commits, incrementally, signed by the epoch committee', async () => {
    const commits = built.map(s => s.manifest.commitIndex)
    const expected = Array.from({ length: store.highestExecuted }, (_, i) => i + 1).filter(c => c % EVERY === 0 || c % EPOCH_LENGTH === 0)
    assert.deepEqual(commits, expected)
    assert.equal(built[0].stats.mode, 'full')
    assert.ok(built.slice(1).every(s => s.stats.mode === 'incremental'))
    for (const s of built) {
      const committee = (await store.getCommittee(s.manifest.epoch))!
      assert.equal(s.signatures.length, committee.size, 'every member signs')
      const check = verifyAttestation(s.attestationBytes, committee, { chainId: store.chainId })
      assert.equal(check.stake, committee.totalStake)
      assert.equal(hex(s.manifest.stateRoot), hex((await store.getStateRoot(s.manifest.commitIndex))!))
    }
    // end-of-epoch snapshots are of the epoch that ends, attested by its committee
    const eoe = built.find(s => s.manifest.commitIndex === EPOCH_LENGTH)!
    assert.equal(eoe.manifest.epoch, 0)
    assert.ok(built.some(s => s.manifest.epoch >= 2))
    assert.deepEqual(await new SnapshotStore(store).list(), commits.slice(-3), 'the latest 3 are kept')
  })

  test('every kept snapshot verifies end to end (attestation, filter, listing, chunks, rebuilt state root)', async () => {
    for (const c of await new SnapshotStore(store).list()) {
      const r = await verifyStoredSnapshot(store, c, { requireAttestation: true })
      assert.equal(r.manifest.commitIndex, c)
      assert.ok(r.attestation !== null)
      assert.equal(r.accounts, 200)
      assert.ok(r.embeddings > 0)
    }
  })

  test('state rebuilt from the chunks into a fresh store has the manifest\'s state root and the same entries', async (t) => {
    const snaps = new SnapshotStore(store)
    const m = latest.manifest
    assert.equal(m.commitIndex, store.highestExecuted)
    const chunks = (await snaps.getChunks(latest.listing.map(i => i.hash))).map(b => b!)
    const target = await ChainStore.open(makeTmpDir(), { genesis })
    t.after(async () => { await target.close(); removeDir(target.dir) })
    // chunks in any order
    const r = await rebuildState(m, [...chunks].reverse(), { listing: latest.listing, into: target })
    assert.equal(hex(r.stateRoot), hex(m.stateRoot))
    assert.equal(hex((await target.getStateRoot(m.commitIndex))!), hex(m.stateRoot))
    assert.equal(hex((await target.getLtHash()).checksum()), hex(m.stateRoot))
    for (const b of [Bucket.ACCOUNT, Bucket.EMBEDDING]) {
      const dump = async (s: ChainStore): Promise<string[]> => { const out: string[] = []; for await (const [k, v] of s.iterateBucket(b)) out.push(hex(k) + hex(v)); return out }
      assert.deepEqual(await dump(target), await dump(store), `bucket ${b}`)
    }
    // a missing chunk, a chunk of another snapshot, a changed entry: refused
    await assert.rejects(rebuildState(m, chunks.slice(1), { listing: latest.listing }), (e: any) => e instanceof InvalidSnapshotError && /1 of \d+ listed chunks did not come/.test(e.message))
    await assert.rejects(rebuildState(m, chunks.slice(1)), (e: any) => e instanceof InvalidSnapshotError && /state rebuilt from \d+ chunks has root [0-9a-f]+, the manifest says/.test(e.message))
    const kept = await snaps.list()
    const earlier = await snaps.getListing(kept[kept.length - 2])
    const foreign = earlier.find(i => !latest.listing.some(x => hex(x.hash) === hex(i.hash)))!
    assert.ok(foreign !== undefined, 'the previous snapshot has a chunk the latest does not')
    const fb = (await snaps.getChunk(foreign.hash))!
    await assert.rejects(rebuildState(m, [...chunks, fb], { listing: latest.listing }), (e: any) => e instanceof InvalidChunkError && /not in the snapshot's listing/.test(e.message))
    await assert.rejects(rebuildState(m, [...chunks, chunks[0]], { listing: latest.listing }), (e: any) => e instanceof InvalidChunkError && /comes twice/.test(e.message))
  })

  test('attestation: too few signatures, a signer outside the committee, a bad or repeated signature, another chain or epoch are refused', async () => {
    const committee = (await store.getCommittee(latest.manifest.epoch))!
    const att = decodeAttestation(latest.attestationBytes)
    const withSigs = (sigs: SnapshotAttestation['signatures']): SnapshotAttestation => ({ manifest: att.manifest, signatures: sigs })
    // the smallest-stake members that stay below 2f+1
    const byStake = att.signatures.map(s => s).sort((a, b) => committee.stake(a.authority) - committee.stake(b.authority))
    const few: typeof byStake = []
    for (const s of byStake) { if (committee.stakeOf([...few, s].map(x => x.authority)) < committee.quorumThreshold) few.push(s) }
    assert.ok(few.length >= 1)
    rejects(() => verifyAttestation(withSigs(few), committee), InvalidSnapshotError,
      new RegExp(`signatures carry ${committee.stakeOf(few.map(s => s.authority))} of ${committee.totalStake} stake, 2f\\+1 needs ${committee.quorumThreshold}`))
    rejects(() => verifyAttestation(withSigs([]), committee), InvalidSnapshotError, /signatures carry 0 of/)
    rejects(() => verifyAttestation(withSigs([...att.signatures, { authority: 9, signature: att.signatures[0].signature }]), committee), InvalidSnapshotError, /signer 9 is not in the committee of epoch \d+ \(4 members\)/)
    rejects(() => verifyAttestation(withSigs([{ authority: att.signatures[0].authority, signature: flipBit(att.signatures[0].signature, 5, 1) }, ...att.signatures.slice(1)]), committee), InvalidSnapshotError, /signature of authority \d+ does not verify/)
    rejects(() => verifyAttestation(withSigs([...att.signatures, att.signatures[1]]), committee), InvalidSnapshotError, /authority \d+ signs twice/)
    rejects(() => verifyAttestation(att, committee, { chainId: sha256(new Uint8Array(1)) }), InvalidSnapshotError, /is for chain [0-9a-f]+, not/)
    const other = (await store.getCommittee(latest.manifest.epoch - 1))!
    rejects(() => verifyAttestation(att, other), InvalidSnapshotError, /is of epoch \d+; it was checked against the committee of epoch \d+/)
    // a changed manifest keeps no signature
    const changed = encodeManifest({ ...latest.manifest, totalBytes: latest.manifest.totalBytes + 1 })
    rejects(() => verifyAttestation({ manifest: changed, signatures: att.signatures }, committee), InvalidSnapshotError, /does not verify/)
    rejects(() => verifyAttestation({ manifest: Uint8Array.of(0xff, 0xff), signatures: [] }, committee), InvalidSnapshotError, /manifest does not decode/)
    // exactly a quorum is enough
    const quorum: typeof byStake = []
    for (const s of [...byStake].reverse()) { if (!committee.reachesQuorum(quorum.map(x => x.authority))) quorum.push(s) }
    assert.ok(verifyAttestation(withSigs(quorum), committee).stake >= committee.quorumThreshold)
  })

  test('a manifest with a wrong filter hash, a wrong checksum or a wrong multiset hash is refused, even when signed', async () => {
    const snaps = new SnapshotStore(store)
    const m = latest.manifest
    const committee = (await store.getCommittee(m.epoch))!
    const keys = devnetCommitteeKeys(SEED, committee.committee)!
    const filterBytes = await snaps.getFilterBytes(m.commitIndex)
    const listingBytes = await snaps.getListingBytes(m.commitIndex)
    /** a manifest signed by the whole committee: the attestation holds, the content check must refuse it */
    const signed = (mm: SnapshotManifest): SnapshotManifest => {
      const att = attestManifest(mm, committee.committee, keys)
      return verifyAttestation(att, new CommitteeInfo(committee.committee)).manifest
    }
    assert.equal(verifyFilter(m, filterBytes).count, m.chunkCount)
    verifyListing(m, listingBytes)

    const badFilter = signed({ ...m, filterHash: sha256(Uint8Array.of(1)) })
    rejects(() => verifyFilter(badFilter, filterBytes), InvalidSnapshotError, /wrong filter hash: the filter bytes hash to [0-9a-f]{64}, the manifest says [0-9a-f]{64}/)
    rejects(() => verifyFilter(m, flipBit(filterBytes, filterBytes.length - 1, 0)), InvalidSnapshotError, /wrong filter hash/)
    rejects(() => verifyFilter(signed({ ...m, filter: { ...m.filter, count: m.filter.count + 1 } }), filterBytes), InvalidSnapshotError, /parameters .* differ from the manifest's/)

    const badChecksum = signed({ ...m, finalChecksum: sha256(Uint8Array.of(2)) })
    rejects(() => verifyListing(badChecksum, listingBytes), InvalidSnapshotError, /wrong final checksum: the sorted chunk hashes give [0-9a-f]{64}, the manifest says/)
    rejects(() => verifyListing(signed({ ...m, multisetHash: sha256(Uint8Array.of(3)) }), listingBytes), InvalidSnapshotError, /wrong multiset hash/)
    rejects(() => verifyListing(signed({ ...m, totalBytes: m.totalBytes - 1 }), listingBytes), InvalidSnapshotError, /total \d+ bytes, the manifest says/)
    rejects(() => verifyListing(m, latest.listing.slice(1)), InvalidSnapshotError, /the listing has \d+ chunks, the manifest says \d+/)
    const swapped = [...latest.listing]; [swapped[0], swapped[1]] = [swapped[1], swapped[0]]
    rejects(() => verifyListing(m, swapped), InvalidSnapshotError, /not in canonical order/)
    const resized = latest.listing.map((r, i) => i === 0 ? { ...r, size: r.size + 1 } : r)
    rejects(() => verifyListing(signed({ ...m, totalBytes: m.totalBytes + 1 }), resized), InvalidSnapshotError, /wrong listing hash/)
  })

  test('a valid filter of the right set that is not in canonical form is refused, even when attested', async () => {
    const snaps = new SnapshotStore(store)
    const m = latest.manifest
    const committee = (await store.getCommittee(m.epoch))!
    const keys = devnetCommitteeKeys(SEED, committee.committee)!
    const signed = (mm: SnapshotManifest): SnapshotManifest => verifyAttestation(attestManifest(mm, committee.committee, keys), new CommitteeInfo(committee.committee)).manifest
    const listingBytes = await snaps.getListingBytes(m.commitIndex)
    const hashes = latest.listing.map(r => r.hash)
    const sorted = [...hashes].sort(Buffer.compare)
    // the same hashes inserted in descending order: same size, count and set, another placement
    const other = CuckooFilter.forCapacity(hashes.length)
    for (const h of [...sorted].reverse()) assert.ok(other.insert(h))
    const otherBytes = other.toBytes()
    assert.notEqual(hex(otherBytes), hex(await snaps.getFilterBytes(m.commitIndex)), 'another placement')
    const forged = signed({ ...m, filterHash: sha256(otherBytes) })
    const f = verifyFilter(forged, otherBytes) // hash, parameters, count and size all match
    for (const h of hashes) assert.ok(f.contains(h))
    rejects(() => verifyListing(forged, listingBytes), InvalidSnapshotError, /the attested filter \(hash [0-9a-f]{64}\) is not the canonical filter of the listed chunk hashes/)
    const check = canonicalFilterCheck(forged)
    for (const h of sorted) check.push(h)
    rejects(() => check.finish(), InvalidSnapshotError, /not the canonical filter/)
    // the genuine manifest passes the same check, streamed
    const good = canonicalFilterCheck(m)
    for (const h of sorted) good.push(h)
    good.finish()
    rejects(() => { const c = canonicalFilterCheck(m); c.push(sorted[1]); c.push(sorted[0]) }, InvalidSnapshotError, /not above the previous one/)
    rejects(() => canonicalFilterCheck(m).finish(), InvalidSnapshotError, /0 hashes pushed/)

    // a table of another size than the count gives is refused with the filter alone
    const big = new CuckooFilter({ log2Buckets: other.log2Buckets + 1 })
    for (const h of sorted) assert.ok(big.insert(h))
    const bigM = signed({ ...m, filterHash: big.hash(), filter: { ...m.filter, log2Buckets: big.log2Buckets } })
    rejects(() => verifyFilter(bigM, big.toBytes()), InvalidSnapshotError, /not in canonical form: \d+ items take 2\^\d+ buckets, it has 2\^\d+/)
    // and a stash the manifest does not announce
    const genuineBytes = await snaps.getFilterBytes(m.commitIndex)
    rejects(() => verifyFilter(signed({ ...m, filter: { ...m.filter, stash: 1 } }), genuineBytes), InvalidSnapshotError, /stashes 0 hashes, the manifest says 1/)
  })

  test('chunks: a chunk whose hash is not in the filter, or that does not hash to its listed hash, is refused', async () => {
    const snaps = new SnapshotStore(store)
    const m = latest.manifest
    const filter = verifyFilter(m, await snaps.getFilterBytes(m.commitIndex))
    const info = latest.listing[0]
    const bytes = (await snaps.getChunk(info.hash))!
    assert.equal(hex(verifyChunkBytes(bytes, filter, info.hash)), hex(info.hash))
    const corrupt = flipBit(bytes, 10, 3)
    rejects(() => verifyChunkBytes(corrupt, filter), InvalidChunkError, /chunk [0-9a-f]{64} is not in the snapshot's filter/)
    rejects(() => verifyChunkBytes(corrupt, filter, info.hash), InvalidChunkError, new RegExp(`chunk ${hex(info.hash)} is corrupt`))
    rejects(() => checkChunk(sha256(Uint8Array.of(9)), filter), InvalidChunkError, /not in the snapshot's filter/)
  })

  test('verifyStoredSnapshot names a corrupt or missing chunk', async (t) => {
    // work on a copy of the latest snapshot's state: a fresh store that gets the same chunk rows
    const snaps = new SnapshotStore(store)
    const c = latest.manifest.commitIndex
    const info = latest.listing[latest.listing.length - 1]
    const original = (await snaps.getChunk(info.hash))!
    t.after(async () => { await snaps.commitChunks(store.batch(), [{ hash: info.hash, bytes: original }]) })
    await overwriteBlob(store, info.hash, flipBit(original, original.length - 1, 0))
    await assert.rejects(verifyStoredSnapshot(store, c), (e: any) => e instanceof InvalidChunkError && e.message.includes(`chunk ${hex(info.hash)} is corrupt`))
    const del = store.batch()
    await snaps.delChunks(del, [info.hash])
    await del.write()
    await assert.rejects(verifyStoredSnapshot(store, c), (e: any) => e instanceof InvalidChunkError && e.message.includes(`chunk ${hex(info.hash)} is missing`))
    await assert.rejects(verifyStoredSnapshot(store, 999_999), (e: any) => e instanceof InvalidSnapshotError && /no snapshot of commit 999999/.test(e.message))
  })

  test('signManifest places each key at its authority index; a foreign key is an error', async () => {
    const committee = (await store.getCommittee(0))!
    const keys = devnetCommitteeKeys(SEED, committee.committee)!
    const bytes = encodeManifest(latest.manifest)
    const sigs = signManifest(bytes, committee.committee, [keys[2], keys[0]])
    assert.deepEqual(sigs.map(s => s.authority), [0, 2])
    const later = (await store.getCommittee(latest.manifest.epoch))!
    assert.throws(() => signManifest(bytes, later.committee, [keys[0], keys[1], keys[2], keys[3]]), /not in the committee/)
    assert.equal(devnetCommitteeKeys('another seed', committee.committee), undefined)
  })
})
