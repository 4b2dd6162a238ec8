/**
 * The shared chunk work queue (src/snapshot/sync/chunk-queue.ts), offline: fed from stored listing
 * rows a window at a time, skipping verified chunks and reusing stored ones (delta) without any fetch;
 * `take` packs by bytes and count, a released item goes back (never to a peer excluded for it), an idle
 * peer steals items held too long by another, and the first delivery wins.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { testEnv } from '../helpers/sync-net.ts'
import { SyncState } from '../../src/snapshot/sync/sync-state.ts'
import { ChunkQueue } from '../../src/snapshot/sync/chunk-queue.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { ChunkKind, type ChunkInfo } from '../../src/snapshot/chunk-format.ts'

const h = (i: number): Uint8Array => new Uint8Array(createHash('sha256').update(`chunk ${i}`).digest())

test('the chunk queue: windowed feed, reuse, packing, release with exclusion, stealing, first delivery wins', async t => {
  const env = testEnv(t)
  const store = await env.store('q')
  const state = new SyncState(store)
  // 10 rows of 100 bytes; chunk 1 is already verified (HAVE), chunk 2 already stored (an older snapshot)
  const rows: ChunkInfo[] = Array.from({ length: 10 }, (_, i) => ({ hash: h(i), size: 100, kind: ChunkKind.ACCOUNTS, group: 0, firstKey: new Uint8Array(32).fill(i), entries: 1 }))
  const batch = store.batch()
  state.putRows(batch, 0, rows, { next: 10, bytes: 1000, multiset: new LtHash(), sources: [], verified: false })
  state.putHave(batch, h(1), 100, new TextEncoder().encode('x'))
  await store.packs.commit(batch, [{ hash: h(2), bytes: new Uint8Array(100) }])

  let available = 6
  const q = new ChunkQueue({ state, store, total: 10, rowsAvailable: () => available }, { windowRows: 4 })
  await q.refill()
  assert.equal(q.reused.chunks, 1, 'the stored chunk is reused, not fetched')
  assert.deepEqual(await state.have([h(2)]), [true], 'and gets its HAVE row')
  assert.equal(q.queued, 2, 'rows 0 and 3 of the first window of 4 are work')
  await q.refill()
  assert.equal(q.queued, 4, 'rows 4 and 5 (all that is listed so far)')
  available = 10
  await q.refill()
  assert.equal(q.queued, 4, 'bounded: no more rows are read while a window of work is queued')
  assert.ok(!q.allRead)

  // packing: framed sizes (102 bytes each) within 250 bytes: two items
  const a = q.take('A', 16, 250)
  assert.deepEqual(a.map(i => i.index), [0, 3])
  const b = q.take('B', 1, 1)
  assert.deepEqual(b.map(i => i.index), [4], 'at least one item, however small the budget')
  await q.refill()
  assert.equal(q.queued, 5, 'item 5, and rows 6..9')
  assert.ok(q.allRead)

  // A fails item 0 (lied): back in the queue, never for A again
  q.release(a[0], 'A', true)
  assert.ok(!q.take('A', 16, 10_000).some(i => i.index === 0), 'A does not get the item it failed')
  const bAgain = q.take('B', 1, 10_000)
  assert.deepEqual(bAgain.map(i => i.index), [0], 'B gets it')

  // stealing: only items held long enough, by another peer, by at most two peers
  assert.deepEqual(q.steal('C', 16, 10_000, 60_000).map(i => i.index), [], 'nothing held long enough')
  const stolen = q.steal('C', 16, 10_000, 0)
  assert.ok(stolen.length > 0 && stolen.every(i => q.holds('C', i.key)))
  const it = stolen[0]
  const holders = [...q.inflight.get(it.key)!.peers]
  assert.equal(holders.length, 2)
  // the first delivery wins; the other is a duplicate
  q.claim(it.key)
  assert.equal(q.holds(holders[0], it.key), false)
  q.complete(it.key)
  assert.equal(q.inflight.has(it.key), false)
  q.release(it, holders[0], false)
  assert.ok(!q.take('D', 100, 1_000_000).some(i => i.key === it.key), 'a delivered chunk is not queued again')
})
