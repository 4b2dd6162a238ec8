/**
 * The load phase adds up per-chunk partial state hashes (src/snapshot/sync/chunk-hash-pool.ts,
 * loader.ts), offline: a producer's snapshot is put into a fresh store's sync state as the chunks phase
 * leaves it (rows, chunks, HAVE rows with or without their partials), then loaded.
 * - each chunk's partial is the LtHash of its entries' state elements, the same with 0 or 2 workers,
 *   and their sum is the manifest's state root;
 * - a load from stored partials hashes no entry and ends at the root; HAVE rows without partials (an
 *   older store) are computed by the load;
 * - a damaged stored partial is detected (the sum is not the root), recomputed from the chunk bytes and
 *   replaced; a snapshot whose root is wrong is still refused (BadSnapshotError);
 * - a load stopped mid-way (write pipelined) resumes at the persisted cursor and ends at the root, with
 *   exactly the cursor's entries in the store;
 * - chunks the download hands over (ArrivedChunks) are loaded from those bytes, not read back from the
 *   packs; the others are read back and checked; the hand-over is bounded (new ones not kept while full);
 * - loading on arrival (ArrivalLoader) follows the stored chunks in listing order, clears the genesis
 *   state first, never loads a stored chunk the listing does not have, and the load phase continues
 *   from its cursor.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { testEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { snapshotProducer, snapshotGenesis } from '../helpers/snapshot-net.ts'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { Bucket, Keys } from '../../src/store/keys.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { ChunkKind, accountEntry, decodeChunk, encodeChunk, type ChunkInfo } from '../../src/snapshot/chunk-format.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import type { SnapshotManifest } from '../../src/snapshot/manifest.ts'
import { SnapshotBucket, SnapshotKeys } from '../../src/snapshot/store-keys.ts'
import { SyncState } from '../../src/snapshot/sync/sync-state.ts'
import { ChunkHashPool, chunkPartial } from '../../src/snapshot/sync/chunk-hash-pool.ts'
import { ArrivalLoader, ArrivedChunks, BadSnapshotError, MissingChunksError, finalCheck, loadState } from '../../src/snapshot/sync/loader.ts'

const TIP = 25

async function setup (t: { after: (fn: () => void | Promise<void>) => void }): Promise<{
  env: ReturnType<typeof testEnv>
  g: ReturnType<typeof snapshotGenesis>
  manifest: SnapshotManifest
  attestation: Uint8Array
  listing: ChunkInfo[]
  chunks: Uint8Array[]
}> {
  const env = testEnv(t)
  const g = snapshotGenesis(1500)
  const P = await snapshotProducer(env.dir, TIP, { genesis: g })
  env.track(P.store)
  const S = (await P.snapshots.latest())!
  const snap = (await P.snapshots.get(S))!
  const listing = await P.snapshots.getListing(S)
  const chunks = (await P.snapshots.getChunks(listing.map(r => r.hash))).map(b => new Uint8Array(b!))
  return { env, g, manifest: snap.manifest, attestation: snap.attestationBytes, listing, chunks }
}

/** A fresh store whose snapshot sync is at `load`, with every chunk stored and verified. */
async function atLoad (ctx: Awaited<ReturnType<typeof setup>>, name: string, partials: ChunkHashPool | 'none'): Promise<{ store: ChainStore, state: SyncState }> {
  const store = await ctx.env.store(name, ctx.g)
  const state = new SyncState(store)
  await state.begin(ctx.attestation)
  const batch = store.batch()
  state.putRows(batch, 0, ctx.listing, { next: ctx.listing.length, bytes: ctx.manifest.totalBytes, multiset: new LtHash(), sources: [], verified: true })
  for (let i = 0; i < ctx.listing.length; i++) {
    const partial = partials === 'none' ? undefined : await partials.partial(ctx.chunks[i])
    if (partials !== 'none') assert.ok(partial !== undefined)
    state.putHave(batch, ctx.listing[i].hash, ctx.chunks[i].byteLength, undefined, partial)
  }
  await store.packs.commit(batch, ctx.listing.map((r, i) => ({ hash: r.hash, bytes: ctx.chunks[i] })))
  await state.beginLoad()
  return { store, state }
}

async function count (store: ChainStore, bucket: number): Promise<number> {
  let n = 0
  const [gte, lt] = bucket === SnapshotBucket.SYNC_PARTIAL ? SnapshotKeys.range(bucket) : Keys.bucketRange(bucket)
  for await (const _ of store.db.keys({ gte, lt })) n++
  return n
}

test('a chunk\'s partial is the LtHash of its entries, the same with 0 and 2 workers; the partials add up to the state root', { timeout: 60_000 }, async t => {
  const ctx = await setup(t)
  const inline = new ChunkHashPool({ workers: 0 })
  const pool = new ChunkHashPool({ workers: 2 })
  t.after(async () => { await pool.close() })
  await pool.started() // (before that, partials are computed on this thread)
  const sum = new LtHash()
  const fromWorkers = await Promise.all(ctx.chunks.map(async c => await pool.partial(c)))
  for (let i = 0; i < ctx.chunks.length; i++) {
    const chunk = decodeChunk(ctx.chunks[i])
    const tag = Uint8Array.of(chunk.kind === ChunkKind.ACCOUNTS ? Bucket.ACCOUNT : Bucket.EMBEDDING)
    const expected = new LtHash()
    for (const e of chunk.entries) expected.add(tag, e.id, e.value)
    assert.equal(hex((await inline.partial(ctx.chunks[i]))!), hex(expected.toBytes()), `chunk ${i}, inline`)
    assert.equal(hex(fromWorkers[i]!), hex(expected.toBytes()), `chunk ${i}, 2 workers`)
    sum.merge(expected)
  }
  assert.ok(ctx.listing.some(r => r.kind === ChunkKind.EMBEDDINGS) && ctx.listing.some(r => r.kind === ChunkKind.ACCOUNTS), 'both kinds of chunks')
  assert.equal(hex(sum.checksum()), hex(ctx.manifest.stateRoot))
  // bytes that are not a chunk have no partial; the chunk bytes given are not consumed
  const junk = Uint8Array.of(1, 2, 3, 4, 5)
  assert.equal(await pool.partial(junk), undefined)
  assert.equal(await inline.partial(junk), undefined)
  assert.equal(chunkPartial(junk), undefined)
  // a Buffer view into a larger response (as a chunk session returns them): copied, never detached
  const response = Buffer.concat([Buffer.alloc(7, 1), Buffer.from(ctx.chunks[0]), Buffer.alloc(5, 2)])
  const view = response.subarray(7, 7 + ctx.chunks[0].byteLength)
  assert.equal(hex((await pool.partial(view))!), hex(fromWorkers[0]!))
  assert.equal(response.byteLength, ctx.chunks[0].byteLength + 12, 'the response is not detached')
  assert.equal(hex(sha256(view)), hex(ctx.listing[0].hash), 'the caller\'s bytes are untouched (a copy is transferred)')
  // larger than a worker's input buffer so far (it grows), then a chunk again
  assert.equal(await pool.partial(new Uint8Array(3 * 1024 * 1024)), undefined)
  assert.equal(hex((await pool.partial(ctx.chunks[1]))!), hex(fromWorkers[1]!))
  await pool.close()
  await assert.rejects(pool.partial(ctx.chunks[0]), /closed/)
})

test('the load adds up stored partials (0 or 2 workers), computes those not stored, and ends at the manifest root', { timeout: 60_000 }, async t => {
  const ctx = await setup(t)
  const total = ctx.listing.length
  for (const workers of [0, 2]) {
    const pool = new ChunkHashPool({ workers })
    t.after(async () => { await pool.close() })
    // stored with every HAVE row: nothing hashed by the load
    const a = await atLoad(ctx, `stored-${workers}`, pool)
    const ra = await loadState(a.store, a.state, ctx.manifest, { hashPool: pool })
    assert.deepEqual([ra.storedPartials, ra.computedPartials, ra.repairedPartials], [total, 0, 0])
    assert.equal(hex((await a.state.load()).lthash.checksum()), hex(ctx.manifest.stateRoot))
    assert.equal(ra.accounts, await count(a.store, Bucket.ACCOUNT))
    assert.equal(ra.embeddings, await count(a.store, Bucket.EMBEDDING))
    // HAVE rows without partials (a store of an older version, or reused chunks): computed by the load
    const b = await atLoad(ctx, `none-${workers}`, 'none')
    const rb = await loadState(b.store, b.state, ctx.manifest, { hashPool: pool, batchBytes: 4096 })
    assert.deepEqual([rb.storedPartials, rb.computedPartials, rb.repairedPartials], [0, total, 0])
    assert.equal(hex((await b.state.load()).lthash.checksum()), hex(ctx.manifest.stateRoot))
    assert.deepEqual([rb.accounts, rb.embeddings], [ra.accounts, ra.embeddings])
  }
  // without a pool at all
  const c = await atLoad(ctx, 'no-pool', 'none')
  const rc = await loadState(c.store, c.state, ctx.manifest)
  assert.equal(rc.computedPartials, total)
  assert.equal(hex((await c.state.load()).lthash.checksum()), hex(ctx.manifest.stateRoot))
})

test('chunks handed over by the download are loaded from their bytes, the others read back from the packs; the hand-over is bounded', { timeout: 60_000 }, async t => {
  const ctx = await setup(t)
  const total = ctx.listing.length
  assert.ok(total >= 2)
  const pool = new ChunkHashPool({ workers: 0 })
  t.after(async () => { await pool.close() })
  const a = await atLoad(ctx, 'arrived', pool)
  // the even chunks are handed over, and their pack index rows removed: a read back would not find them
  const arrived = new ArrivedChunks(64 * 1024 * 1024)
  const del = a.store.batch()
  ctx.listing.forEach((r, i) => { if (i % 2 === 0) arrived.put(r.hash, ctx.chunks[i]) })
  await a.store.packs.del(del, ctx.listing.filter((_, i) => i % 2 === 0).map(r => r.hash))
  await del.write()
  const r = await loadState(a.store, a.state, ctx.manifest, { hashPool: pool, arrived })
  assert.equal(arrived.taken, Math.ceil(total / 2))
  assert.equal(arrived.bytes, 0)
  assert.equal(hex((await a.state.load()).lthash.checksum()), hex(ctx.manifest.stateRoot))
  assert.equal(r.accounts, await count(a.store, Bucket.ACCOUNT))
  // bounded: while full, new chunks are not kept (the load reads them back)
  const small = new ArrivedChunks(10)
  const h = (n: number): Uint8Array => new Uint8Array(32).fill(n)
  small.put(h(1), new Uint8Array(6))
  small.put(h(2), new Uint8Array(4))
  small.put(h(3), new Uint8Array(5))
  small.put(h(4), new Uint8Array(11))
  assert.equal(small.bytes, 10)
  assert.equal(small.take(h(3)), undefined)
  assert.equal(small.take(h(4)), undefined)
  assert.equal(small.take(h(1))?.byteLength, 6)
  small.put(h(3), new Uint8Array(5))
  assert.equal(small.take(h(2))?.byteLength, 4)
  assert.equal(small.take(h(3))?.byteLength, 5)
  assert.equal(small.bytes, 0)
})

test('a damaged stored partial is detected and recomputed (no blame); a wrong root is still a bad snapshot', { timeout: 60_000 }, async t => {
  const ctx = await setup(t)
  const pool = new ChunkHashPool({ workers: 2 })
  t.after(async () => { await pool.close() })
  const logs: string[] = []
  const a = await atLoad(ctx, 'damaged', pool)
  const victim = ctx.listing[Math.floor(ctx.listing.length / 2)].hash
  const good = (await a.state.partials([victim]))[0]!
  const bad = new Uint8Array(good)
  bad[100] ^= 0x01
  await a.store.batch().put(SnapshotKeys.syncPartial(victim), bad).write()
  const r = await loadState(a.store, a.state, ctx.manifest, { hashPool: pool, log: (m) => { logs.push(m) } })
  assert.equal(r.repairedPartials, 1, 'one damaged partial replaced')
  assert.equal(hex((await a.state.partials([victim]))[0]!), hex(good), 'by the right one')
  assert.equal(hex((await a.state.load()).lthash.checksum()), hex(ctx.manifest.stateRoot), 'the persisted accumulator is the root')
  assert.ok(logs.some(m => m.includes('recomputing')))

  // a partial of the wrong length counts as missing (computed by the load)
  const b = await atLoad(ctx, 'short', pool)
  await b.store.batch().put(SnapshotKeys.syncPartial(victim), new Uint8Array(10)).write()
  const rb = await loadState(b.store, b.state, ctx.manifest, { hashPool: pool })
  assert.deepEqual([rb.computedPartials, rb.repairedPartials], [1, 0])

  // the partials are right but the manifest's root is not: refused as before, nothing "repaired"
  const c = await atLoad(ctx, 'wrong-root', pool)
  const wrong = { ...ctx.manifest, stateRoot: sha256(Uint8Array.of(7)) }
  await assert.rejects(loadState(c.store, c.state, wrong, { hashPool: pool }), (err: any) => err instanceof BadSnapshotError && /has root/.test(err.message))
})

test('a load stopped mid-way resumes at its persisted cursor (one write in flight) and ends at the root', { timeout: 60_000 }, async t => {
  const ctx = await setup(t)
  const total = ctx.listing.length
  const pool = new ChunkHashPool({ workers: 2 })
  t.after(async () => { await pool.close() })
  for (const partials of [pool, 'none'] as const) {
    const name = partials === 'none' ? 'none' : 'stored'
    const a = await atLoad(ctx, `resume-${name}`, partials)
    const ctrl = new AbortController()
    let progressed = 0
    await assert.rejects(loadState(a.store, a.state, ctx.manifest, {
      hashPool: pool,
      batchBytes: 2048,
      batchEntries: 16,
      signal: ctrl.signal,
      onProgress: (done) => { progressed = done; if (done >= total / 3) ctrl.abort(new Error('stop')) }
    }), /stop/)
    const mid = await a.state.load()
    assert.ok(mid.next > 0 && mid.next < total, `stopped mid-load (${mid.next} of ${total})`)
    assert.ok(mid.next >= progressed)
    // exactly the entries of the rows before the cursor are stored: no batch after it was written
    assert.equal(await count(a.store, Bucket.ACCOUNT), mid.accounts, 'accounts stored = cursor')
    assert.equal(await count(a.store, Bucket.EMBEDDING), mid.embeddings, 'embeddings stored = cursor')
    let expected = new LtHash()
    for (let i = 0; i < mid.next; i++) expected = expected.merge(LtHash.fromBytes(chunkPartial(ctx.chunks[i])!))
    assert.equal(hex(mid.lthash.toBytes()), hex(expected.toBytes()), 'the persisted accumulator covers exactly the rows before the cursor')
    // resumed (a restart reads the same rows)
    const r = await loadState(a.store, new SyncState(a.store), ctx.manifest, { hashPool: pool })
    assert.equal(r.storedPartials + r.computedPartials, total - mid.next, 'only the rest is loaded')
    assert.equal(hex((await a.state.load()).lthash.checksum()), hex(ctx.manifest.stateRoot))
    assert.equal(await count(a.store, Bucket.ACCOUNT), r.accounts)
    assert.equal(await count(a.store, Bucket.EMBEDDING), r.embeddings)
  }
})

test('chunks loaded as they arrive: the cursor follows the stored chunks in listing order, never loads an unlisted chunk, and the load phase finishes from it', { timeout: 60_000 }, async t => {
  const ctx = await setup(t)
  const total = ctx.listing.length
  assert.ok(total >= 6, `enough chunks (${total})`)
  const pool = new ChunkHashPool({ workers: 2 })
  t.after(async () => { await pool.close() })
  const store = await ctx.env.store('arrival', ctx.g)
  const state = new SyncState(store)
  await state.begin(ctx.attestation)
  const rows = store.batch()
  state.putRows(rows, 0, ctx.listing, { next: total, bytes: ctx.manifest.totalBytes, multiset: new LtHash(), sources: [], verified: true })
  await rows.write()
  await state.setListingVerified()
  // a chunk arrives: stored with its HAVE row and partial, as the downloader writes it
  const arrive = async (i: number): Promise<void> => {
    const b = store.batch()
    state.putHave(b, ctx.listing[i].hash, ctx.chunks[i].byteLength, undefined, (await pool.partial(ctx.chunks[i]))!)
    await store.packs.commit(b, [{ hash: ctx.listing[i].hash, bytes: ctx.chunks[i] }])
  }
  // an unlisted chunk that passed the filter before the listing verified (a false positive): stored
  // with its HAVE row, never loaded. It holds the accounts of a listed chunk with other balances, so
  // loading it would leave wrong accounts in the state
  const a = ctx.listing.findIndex(r => r.kind === ChunkKind.ACCOUNTS)
  const listedChunk = decodeChunk(ctx.chunks[a])
  const stray = encodeChunk(listedChunk.kind, listedChunk.group, listedChunk.entries.map(e => {
    const s = Codecs.AccountState.decode(e.value)
    return accountEntry(e.id, Codecs.AccountState.encode({ ...s, balance: s.balance + 1 }))
  }))
  const strayHash = sha256(stray)
  const b = store.batch()
  state.putHave(b, strayHash, stray.length, undefined, (await pool.partial(stray))!)
  await store.packs.commit(b, [{ hash: strayHash, bytes: stray }])

  // genesis accounts are in the state before: cleared when the cursor is at 0
  assert.ok(await count(store, Bucket.ACCOUNT) > 0)
  const half = Math.floor(total / 2)
  for (let i = 0; i < half; i++) await arrive(i)
  await arrive(half + 1) // out of order: loaded only after `half`
  const done: number[] = []
  const loader = new ArrivalLoader(store, state, ctx.manifest, { hashPool: pool, batchEntries: 64, followWaitMs: 20, ready: () => true, onProgress: (n) => { done.push(n) } })
  loader.start(AbortSignal.timeout(50_000))
  const waitCursor = async (n: number): Promise<void> => {
    const t0 = Date.now()
    while ((await state.load()).next < n) {
      if (Date.now() - t0 > 20_000) assert.fail(`the cursor did not reach ${n}: ${(await state.load()).next}`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }
  await waitCursor(half)
  await new Promise(resolve => setTimeout(resolve, 200))
  let p = await state.load()
  assert.equal(p.next, half, 'stops at the first chunk not stored yet')
  assert.equal(await state.stateReplaced(), true, 'the state is marked replaced before it is cleared')
  // exactly the entries of the rows below the cursor are in the state
  let expected = new LtHash()
  let accounts = 0
  for (let i = 0; i < half; i++) {
    expected = expected.merge(LtHash.fromBytes(chunkPartial(ctx.chunks[i])!))
    if (ctx.listing[i].kind === ChunkKind.ACCOUNTS) accounts += ctx.listing[i].entries
  }
  assert.equal(hex(p.lthash.toBytes()), hex(expected.toBytes()))
  assert.equal(await count(store, Bucket.ACCOUNT), accounts, 'genesis accounts cleared, the loaded chunks\' accounts there')
  // the missing one arrives: the cursor moves past the out-of-order one too
  await arrive(half)
  await waitCursor(half + 2)
  await loader.stop()
  assert.equal(loader.error, undefined)
  p = await state.load()
  assert.ok(p.next >= half + 2)
  // the rest arrives after the chunks phase: the load phase continues from the cursor
  for (let i = half + 2; i < total; i++) await arrive(i)
  // the final checksum finds the stray HAVE row and drops it: it was never loaded, the loaded state stays
  const before = await count(store, Bucket.ACCOUNT)
  await assert.rejects(finalCheck(state, ctx.manifest), (err: any) => err instanceof MissingChunksError && /1 unlisted chunks dropped/.test(err.message))
  await finalCheck(state, ctx.manifest)
  assert.equal(await count(store, Bucket.ACCOUNT), before)
  assert.equal((await state.load()).next, p.next)
  await state.beginLoad()
  assert.equal((await state.load()).next, p.next, 'entering the load phase keeps the cursor')
  const r = await loadState(store, state, ctx.manifest, { hashPool: pool })
  assert.equal(r.storedPartials + r.computedPartials, total - p.next, 'only the rest is loaded by the load phase')
  assert.equal(hex((await state.load()).lthash.checksum()), hex(ctx.manifest.stateRoot))
  assert.equal(await count(store, Bucket.ACCOUNT), r.accounts)
  assert.equal(await count(store, Bucket.EMBEDDING), r.embeddings)
  // the stray chunk's entries were never written: its accounts have the listed chunk's values
  for (const e of listedChunk.entries) assert.equal(hex((await store.db.get(Keys.account(e.id)))!), hex(e.value))
  assert.ok(done.length > 0 && done.every((n, i) => i === 0 || n >= done[i - 1]), 'progress reported in order')
})
