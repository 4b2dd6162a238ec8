/**
 * Keeps bench/load.ts from rotting, and checks what it reports: its quick run (a small devnet server,
 * 1 then 3 client processes commit-syncing and snapshot-syncing at once, a mixed run with a join every
 * 300 ms and a leave) completes with every client at the server's tip (run() throws otherwise), and
 * the server's peak RSS stays under the bound its in-flight limits give (README, "Load") at every
 * client count. No threshold on throughput or fairness: the machine is shared and noisy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run, memoryBound, INFLIGHT_COPIES, PER_CONNECTION_BYTES } from '../../bench/load.ts'
import { DEFAULTS } from '../../src/config.ts'

test('the memory bound formula', () => {
  const MiB = 1024 * 1024
  assert.equal(memoryBound(100 * MiB, 20, 64 * MiB), 100 * MiB + DEFAULTS.storeCacheBytes + INFLIGHT_COPIES * 64 * MiB + 20 * PER_CONNECTION_BYTES)
})

test('bench/load.ts quick run: every client synced, the server within its memory bound', { timeout: 480_000 }, async () => {
  const f = await run({ quick: true })
  for (const [key, value] of Object.entries(f)) assert.ok(Number.isFinite(value) && value >= 0, `${key} = ${value}`)
  for (const label of ['commits.1', 'commits.3', 'snapshot.1', 'snapshot.3']) {
    const what = label.startsWith('commits') ? 'commitsPerSec' : 'MiBPerSec'
    assert.ok(f[`${label}.${what}.min`] > 0, `${label}: every client made progress`)
    assert.ok(f[`${label}.fairness`] > 0 && f[`${label}.fairness`] <= 1)
    assert.equal(f[`${label}.memoryBound.holds`], 1, `${label}: peak RSS ${f[`${label}.server.peakRssMiB`]} MiB over the bound ${f[`${label}.memoryBoundMiB`]} MiB`)
    assert.ok(f[`${label}.server.peakInflightMiB`] <= DEFAULTS.serveMaxInflightBytes / 1024 / 1024, 'in-flight bytes within the limit')
    assert.ok(f[`${label}.server.servedMiB`] > 0)
  }
  assert.ok(f['snapshot.3.server.servedMiB'] >= 2.5 * f['snapshot.1.server.servedMiB'], 'three snapshot clients fetched three snapshots')
  assert.equal(f['mixed.joined'], 3)
  assert.equal(f['mixed.completed'] + f['mixed.left'], 3, 'every mixed client either completed or left')
  assert.equal(f['mixed.memoryBound.holds'], 1)
})
