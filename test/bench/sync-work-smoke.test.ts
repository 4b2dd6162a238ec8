/**
 * Keeps bench/sync-work.ts from rotting: its quick run (32 MiB of chunks) completes and gives a
 * positive, finite CPU figure for every piece of a snapshot sync's necessary work, and their sum. No
 * threshold on the values: the machine is shared and noisy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run } from '../../bench/sync-work.ts'

const PIECES = ['sha256', 'decodeChunk', 'stateElements', 'noise', 'packWrite', 'stateWrite']

test('bench/sync-work.ts quick run gives a positive CPU figure per piece of work, and their sum', { timeout: 240_000 }, async () => {
  const figures = await run({ quick: true })
  assert.ok(figures.MiB >= 32)
  for (const p of PIECES) {
    const v = figures[`${p}.cpuSecPerGiB`]
    assert.ok(Number.isFinite(v) && v > 0, `${p}.cpuSecPerGiB = ${v}`)
  }
  const sum = PIECES.reduce((s, p) => s + figures[`${p}.cpuSecPerGiB`], 0)
  assert.ok(Math.abs(figures['sum.cpuSecPerGiB'] - sum) < 1e-9)
})
