/**
 * The network simulation (src/sim/network-sim.ts) on a small network: it is deterministic for a seed,
 * and its invariants hold: every byte sent is received, every live node ends at the tip, every commit
 * reaches 99 % of the nodes, no client asks a peer while that peer's retry hint runs, joining nodes
 * snapshot-sync, and a tight quota makes servers refuse (and the network still converges).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { simulate } from '../../src/sim/network-sim.ts'

const SMALL = { nodes: 150, durationMs: 40_000, drainMs: 15_000, snapshotEveryCommits: 10, snapshotBytes: 8 * 1024 * 1024, churnIntervalMs: 500 }

test('a small simulation converges and keeps its invariants', { timeout: 120_000 }, () => {
  const r = simulate(SMALL)
  assert.ok(r.commits >= 45, `${r.commits} commits`)
  assert.equal(r.bytesReceived, r.bytesSent, 'every byte sent arrived')
  assert.equal(r.atTipAtEnd, r.liveAtEnd, 'every live node is at the tip after the drain')
  assert.equal(r.liveAtEnd, SMALL.nodes, 'each leave was matched by a join')
  assert.ok(r.left > 20 && r.joined === SMALL.nodes + r.left)
  assert.equal(r.unreached, 0, 'every commit reached 99 % of the nodes')
  assert.ok(r.reach99Ms.median > 5 && r.reach99Ms.max < 10_000, JSON.stringify(r.reach99Ms))
  assert.ok(r.snapshotSyncs > 0, 'joining nodes synced snapshots')
  assert.equal(r.hintViolations, 0)
  assert.ok(r.servedMaxOverMean >= 1 && Number.isFinite(r.servedMaxOverMean))
  assert.ok(r.validatorShare > 0 && r.validatorShare < 1, 'full nodes serve too')
  assert.deepEqual(simulate(SMALL), r, 'deterministic for a seed')
})

test('a tight quota: servers refuse with hints, clients honour them, the network still converges', { timeout: 120_000 }, () => {
  const r = simulate({ ...SMALL, durationMs: 70_000, drainMs: 45_000, peerBytesPerSecond: 512 * 1024, peerBurstBytes: 2 * 1024 * 1024, totalBytesPerSecond: 2 * 1024 * 1024, totalBurstBytes: 4 * 1024 * 1024 })
  assert.ok(r.refused > 0, 'requests were refused')
  assert.equal(r.hintViolations, 0, 'no request reached a peer while its hint ran')
  assert.equal(r.atTipAtEnd, r.liveAtEnd)
  assert.equal(r.bytesReceived, r.bytesSent)
})
