/**
 * Keeps bench/snapshot.ts from rotting: its quick run (20k accounts, 2k embeddings) must complete and
 * give finite figures, with incremental updates that re-encode fewer chunks than the full build. No
 * threshold on times: the machine is shared; the figures are for BENCHMARKS.md.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run, filterFigures } from '../../bench/snapshot.ts'

test('bench/snapshot.ts quick run gives finite figures', { timeout: 90_000 }, async () => {
  const f = await run({ quick: true })
  for (const key of ['full.ms', 'incrementalHot.ms', 'incremental/full', 'incrementalRandom.ms', 'incrementalRandom/full', 'full.peakRssMiB', 'chunks']) {
    assert.ok(key in f, `figure ${key} is missing`)
  }
  for (const [key, value] of Object.entries(f)) assert.ok(Number.isFinite(value) && value >= 0, `${key} = ${value}`)
  assert.ok(Math.abs(f['incremental/full'] - f['incrementalHot.ms'] / f['full.ms']) < 1e-9)
  assert.ok(f['incrementalHot.chunksEncoded'] < f.chunks)
  assert.equal(f.accounts, 20_000)
  // where the time goes: every build's phases, and the filter figures at the state's chunk count
  for (const key of ['full.phase.full.ms', 'incrementalHot.phase.recut.ms', 'incrementalHot.phase.prune.ms', 'incrementalRandom.phase.filter.ms', `filter.${f.chunks}.build.ms`, `filter.${f.chunks}.update9.ms`]) {
    assert.ok(key in f, `figure ${key} is missing`)
  }
  assert.ok(f['incrementalRandom.accountChunksTouched'] > 0 && f['incrementalRandom.accountChunksTouched'] <= 1)
})

test('bench/snapshot.ts filter figures: the canonical build, the former update and the final checksum', () => {
  const f = filterFigures([100, 1000])
  for (const n of [100, 1000]) {
    for (const what of ['build', 'update9', 'update1pct', 'finalChecksum']) {
      const v = f[`filter.${n}.${what}.ms`]
      assert.ok(Number.isFinite(v) && v >= 0, `filter.${n}.${what}.ms = ${v}`)
    }
  }
})
