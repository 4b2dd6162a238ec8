/**
 * Keeps bench/commit-sync.ts from rotting: its quick run (a 200-commit devnet chain served by one child
 * process and synced by another, once with the signature checks on the main thread and once on the
 * 2-worker pool, then each part measured alone on the synced chain) must complete with positive,
 * finite figures that add up. No threshold on the values: the machine is shared and noisy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run } from '../../bench/commit-sync.ts'

test('bench/commit-sync.ts quick run gives positive finite figures', { timeout: 120_000 }, async () => {
  const figures = await run({ quick: true })
  for (const label of ['main thread', '2 workers']) {
    for (const key of ['commits/s', 'tx/s executed', 'ratio verified tx/s to one core', 'signature checks alone, verify/s', 'ceiling: ratio with signature checks alone']) {
      assert.ok(`${key} (${label})` in figures, `figure ${key} (${label}) is missing`)
    }
  }
  for (const [key, value] of Object.entries(figures)) {
    assert.equal(typeof value, 'number', `${key} is not a number`)
    // CPU times come in 10 ms ticks: a thread kind the short quick run barely used may measure 0
    const cpu = key.startsWith('CPU µs/tx') || key.startsWith('execution alone')
    // a difference of two measurements (the sync's CPU less its checks costed at the baseline's rate,
    // measured moments apart), and the ratio derived from it: on a loaded machine the baseline's cost per
    // check can exceed what the sync's checks cost, so these may come out negative; only finite
    const difference = key.includes('besides signature checks') || key.startsWith('ratio these CPU costs allow')
    assert.ok(Number.isFinite(value) && (difference || (cpu ? value >= 0 : value > 0)), `${key} = ${value} is not a positive finite number`)
  }
  for (const label of ['main thread', '2 workers']) {
    const f = (k: string): number => figures[`${k} (${label})`]
    // every transaction's signature is checked once, and each block's
    assert.ok(f('signature checks per tx') > 1, `signature checks per tx (${label}) = ${f('signature checks per tx')}`)
    // the ceilings are what they say they are
    const baseline = figures[`ed25519 verify/s, one core (baseline, ${label})`]
    const ceiling = f('signature checks alone, verify/s') / f('signature checks per tx') / baseline
    assert.ok(Math.abs(f('ceiling: ratio with signature checks alone') - ceiling) < 1e-9)
    assert.ok(Math.abs(f('signature checks alone ÷ baseline') - f('signature checks alone, verify/s') / baseline) < 1e-9)
  }
  // on one thread, with the checks at the baseline's cost, the execution's CPU can only lower the
  // ceiling below 1 ÷ checks per tx
  const withExecution = figures['ceiling: ratio with signature checks and execution alone (main thread)']
  if (withExecution !== undefined) assert.ok(withExecution < 1 / figures['signature checks per tx (main thread)'], `ceiling ${withExecution}`)
})
