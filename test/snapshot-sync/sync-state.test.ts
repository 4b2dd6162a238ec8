/**
 * SyncState's scans (src/snapshot/sync/sync-state.ts) read the store in pages, each by its own
 * iterator closed before the page is handed on: a LevelDB iterator pins the memtables that exist when
 * it is made, so one left open while the load writes the state kept every memtable written since in
 * memory. Checked here: every row and HAVE row comes out once and in order across page boundaries
 * (bounds included), and no iterator of the store is open while the consumer holds a row.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { testEnv } from '../helpers/sync-net.ts'
import { SyncState } from '../../src/snapshot/sync/sync-state.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { ChunkKind, type ChunkInfo } from '../../src/snapshot/chunk-format.ts'
import type { ChainStore } from '../../src/store/chain-store.ts'

const h = (i: number): Uint8Array => new Uint8Array(createHash('sha256').update(`chunk ${i}`).digest())

/** Counts the store's open iterators (of any kind: entries, keys, values). */
function countOpenIterators (store: ChainStore): { readonly open: number, readonly made: number } {
  const counts = { open: 0, made: 0 }
  const db = store.db as any
  for (const method of ['iterator', 'keys', 'values']) {
    const original = db[method].bind(db)
    db[method] = (...args: unknown[]) => {
      const it = original(...args)
      counts.open++
      counts.made++
      const close = it.close.bind(it)
      let closed = false
      it.close = async (...a: unknown[]) => {
        if (!closed) { closed = true; counts.open-- }
        return await close(...a)
      }
      return it
    }
  }
  return counts
}

test('SyncState scans rows and HAVE rows in pages, with no iterator open while the consumer works', async t => {
  const env = testEnv(t)
  const store = await env.store('sync-state')
  const state = new SyncState(store)
  const n = 2500 // more than two pages of 1,024
  const rows: ChunkInfo[] = Array.from({ length: n }, (_, i) => ({ hash: h(i), size: 100 + i, kind: ChunkKind.EMBEDDINGS, group: i, firstKey: new Uint8Array(32).fill(i & 0xff), entries: 1 }))
  const batch = store.batch()
  state.putRows(batch, 0, rows, { next: n, bytes: 0, multiset: new LtHash(), sources: [], verified: false })
  for (let i = 0; i < n; i++) state.putHave(batch, h(i), 100 + i, new TextEncoder().encode('peer'))
  await batch.write()
  const counts = countOpenIterators(store)

  // every row once, in order; while the consumer holds a row, writes and awaits, no iterator is open
  let expected = 0
  for await (const [index, row] of state.rows()) {
    assert.equal(index, expected)
    assert.ok(Buffer.from(row.hash).equals(rows[index].hash), `row ${index} hash`)
    assert.equal(row.size, rows[index].size)
    expected++
    if (index % 500 === 0) {
      assert.equal(counts.open, 0, `an iterator is open while the consumer holds row ${index}`)
      await store.batch().put(new Uint8Array([0xee, index & 0xff]), new Uint8Array(1000)).write()
    }
  }
  assert.equal(expected, n)
  assert.equal(counts.made, 3, 'three pages of 1,024 rows, one iterator each')

  // bounds that fall on and around page boundaries
  for (const [from, to] of [[0, 1024], [1023, 1025], [1024, 2048], [2000, n], [n - 1, n + 10], [5, 5]]) {
    const got: number[] = []
    for await (const [index] of state.rows(from, to)) got.push(index)
    assert.deepEqual(got, Array.from({ length: Math.max(0, Math.min(to, n) - from) }, (_, i) => from + i), `rows [${from}, ${to})`)
  }

  // HAVE rows: every one once, ascending by hash, with its size and peer
  const byHash = new Map(rows.map(r => [Buffer.from(r.hash).toString('hex'), r.size]))
  let last = ''
  let haves = 0
  for await (const have of state.haves()) {
    const key = Buffer.from(have.hash).toString('hex')
    assert.ok(key > last, 'ascending')
    last = key
    assert.equal(have.size, byHash.get(key))
    assert.equal(new TextDecoder().decode(have.peer), 'peer')
    assert.equal(counts.open, 0, 'no iterator open while the consumer holds a HAVE row')
    haves++
  }
  assert.equal(haves, n)
  assert.deepEqual(await state.haveTotals(), { chunks: n, bytes: rows.reduce((a, r) => a + r.size, 0) })

  // the raw rows and the listed hashes: all of them, in their orders
  let raw = 0
  for await (const _ of state.rowBytes()) raw++
  assert.equal(raw, n)
  const listed: string[] = []
  for await (const x of state.listedHashes()) listed.push(Buffer.from(x).toString('hex'))
  assert.equal(listed.length, n)
  assert.deepEqual(listed, [...listed].sort())
  assert.equal(counts.open, 0, 'every iterator closed')
})
