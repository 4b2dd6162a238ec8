/**
 * Keeps bench/snapshot-sync.ts from rotting: its quick run (a small attested snapshot, the raw libp2p
 * baseline between two child processes, the snapshot sync between the same two, the raw download
 * into LevelDB, Helia bitswap between two more) must complete in under 30 s with positive, finite
 * figures. No threshold on the values: the machine is shared and noisy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run } from '../../bench/snapshot-sync.ts'

test('bench/snapshot-sync.ts quick run gives positive finite figures', { timeout: 60_000 }, async () => {
  const t0 = performance.now()
  const figures = await run({ quick: true })
  const seconds = (performance.now() - t0) / 1000

  const expected = ['raw.1stream.MiBPerSec', 'raw.4streams.MiBPerSec', 'raw.peakRssMiB', 'helia.MiBPerSec', 'helia.peakRssMiB', 'raw.best/helia', 'snapshot.MiB', 'snapshot.chunks',
    'snapshotSync.MiBPerSec', 'snapshotSync.peakRssMiB', 'snapshotSync/raw', 'snapshotSync/helia', 'rawIntoLevelDB.MiBPerSec', 'rawIntoLevelDB/raw']
  for (const key of expected) assert.ok(key in figures, `figure ${key} is missing`)
  for (const [key, value] of Object.entries(figures)) {
    assert.equal(typeof value, 'number', `${key} is not a number`)
    // CPU times come in 10 ms ticks: a thread kind the short quick run barely used may measure 0
    const cpu = key.includes('cpuSecPerGiB.')
    assert.ok(Number.isFinite(value) && (cpu ? value >= 0 : value > 0), `${key} = ${value} is not a positive finite number`)
  }
  // the CPU figures add up (Linux, where /proc is there)
  if (figures['snapshotSync.cpuSecPerGiB'] !== undefined) {
    const parts = ['clientMain', 'clientHashWorkers', 'clientV8Helpers', 'clientLibuvAndLevelDB', 'server'].map(k => figures[`snapshotSync.cpuSecPerGiB.${k}`])
    assert.ok(Math.abs(parts.reduce((a, b) => a + b, 0) - figures['snapshotSync.cpuSecPerGiB']) < 1e-6)
    assert.ok(Math.abs(figures['raw.cpuSecPerGiB.client'] + figures['raw.cpuSecPerGiB.server'] - figures['raw.cpuSecPerGiB']) < 1e-6)
  }
  // the ratios are what they say they are
  const rawBest = Math.max(figures['raw.1stream.MiBPerSec'], figures['raw.4streams.MiBPerSec'])
  assert.ok(Math.abs(figures['raw.best/helia'] - rawBest / figures['helia.MiBPerSec']) < 1e-9)
  assert.ok(Math.abs(figures['snapshotSync/raw'] - figures['snapshotSync.MiBPerSec'] / rawBest) < 1e-9)
  assert.ok(Math.abs(figures['rawIntoLevelDB/raw'] - figures['rawIntoLevelDB.MiBPerSec'] / rawBest) < 1e-9)
  // every chunk came over the network (a fresh store reuses none)
  assert.ok(Math.abs(figures['snapshotSync.fetchedMiB'] - figures['snapshot.MiB']) < 1e-6)
  assert.equal(figures['helia.MiB'], 32)
  assert.ok(seconds < 30, `the quick run took ${seconds.toFixed(1)} s`)
})
