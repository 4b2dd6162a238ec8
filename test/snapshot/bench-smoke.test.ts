/**
 * Keeps bench/snapshot.ts from rotting: its quick run (20k accounts, 2k embeddings) must complete and
 * give finite figures, with incremental updates that re-encode fewer chunks than the full build. No
 * threshold on times: the machine is shared; the figures are for BENCHMARKS.md.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run } from '../../bench/snapshot.ts'

test('bench/snapshot.ts quick run gives finite figures', { timeout: 30_000 }, async () => {
  const f = await run({ quick: true })
  for (const key of ['full.ms', 'incrementalHot.ms', 'incremental/full', 'incrementalRandom.ms', 'incrementalRandom/full', 'full.peakRssMiB', 'chunks']) {
    assert.ok(key in f, `figure ${key} is missing`)
  }
  for (const [key, value] of Object.entries(f)) assert.ok(Number.isFinite(value) && value >= 0, `${key} = ${value}`)
  assert.ok(Math.abs(f['incremental/full'] - f['incrementalHot.ms'] / f['full.ms']) < 1e-9)
  assert.ok(f['incrementalHot.chunksEncoded'] < f.chunks)
  assert.equal(f.accounts, 20_000)
})
