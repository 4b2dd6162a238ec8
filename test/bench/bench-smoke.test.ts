/**
 * Keeps bench/foundation.ts from rotting: its quick run must complete (in well under 20 s) and give a
 * positive, finite number for every figure. No threshold on the values: the machine is shared and
 * noisy, the figures are for BENCHMARKS.md, not pass/fail.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run } from '../../bench/foundation.ts'

test('bench/foundation.ts quick run gives positive finite figures', { timeout: 20_000 }, async () => {
  const t0 = performance.now()
  const figures = await run({ quick: true })
  const seconds = (performance.now() - t0) / 1000

  for (const key of [
    'devnet.blocksPerSec', 'devnet.txPerSec', 'ed25519.signPerSec', 'devnet.txPerSec/signPerSec',
    'executor.txPerSec', 'stateRoot.incrementalUsPerChangedEntry', 'stateRoot.fullRecomputeMs',
    'stateRoot.fullRecompute/incrementalUpdate', 'verify.singlePerSec', 'verify.pool2PerSec', 'verify.pool2/single'
  ]) {
    assert.ok(key in figures, `figure ${key} is missing`)
  }
  for (const [key, value] of Object.entries(figures)) {
    assert.equal(typeof value, 'number', `${key} is not a number`)
    assert.ok(Number.isFinite(value) && value > 0, `${key} = ${value} is not a positive finite number`)
  }
  // the ratios are what they say they are
  assert.ok(Math.abs(figures['verify.pool2/single'] - figures['verify.pool2PerSec'] / figures['verify.singlePerSec']) < 1e-9)
  assert.ok(Math.abs(figures['devnet.txPerSec/signPerSec'] - figures['devnet.txPerSec'] / figures['ed25519.signPerSec']) < 1e-9)
  assert.ok(seconds < 20, `the quick run took ${seconds.toFixed(1)} s`)
})
