/**
 * Keeps bench/archive-sync.ts from rotting: its quick run (a 200-commit devnet chain, its archive served
 * over HTTP by a child process and fast-synced, the same chain commit-synced from a P2P peer, then
 * both sources throttled: each alone and the combined download) must
 * complete with positive, finite figures whose ratios are what they say. No threshold on the values:
 * the machine is shared and noisy.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { run } from '../../bench/archive-sync.ts'

test('bench/archive-sync.ts quick run gives positive finite figures', { timeout: 480_000 }, async () => {
  const f = await run({ quick: true })
  for (const key of ['raw HTTP GET MiB/s', 'archive: commits/s', 'archive: MiB/s of segments', 'archive: ratio to raw HTTP GET', 'archive: ratio verified tx/s to one core', 'p2p: commits/s', 'p2p: ratio verified tx/s to one core', 'archive ÷ p2p, commits/s', 'ed25519 verify/s, one core (baseline)', 'throttled: archive alone, commits/s', 'throttled: peer alone (commit sync), commits/s', 'throttled: combined, commits/s', 'throttled: combined ÷ faster alone']) {
    assert.ok(key in f, `figure ${key} is missing`)
  }
  for (const [key, value] of Object.entries(f)) assert.ok(Number.isFinite(value) && value > 0, `${key} = ${value} is not a positive finite number`)
  assert.ok(Math.abs(f['archive: ratio to raw HTTP GET'] - f['archive: MiB/s of segments'] / f['raw HTTP GET MiB/s']) < 1e-9)
  assert.ok(Math.abs(f['archive ÷ p2p, commits/s'] - f['archive: commits/s'] / f['p2p: commits/s']) < 1e-9)
  assert.ok(Math.abs(f['throttled: combined ÷ faster alone'] - f['throttled: combined, commits/s'] / Math.max(f['throttled: archive alone, commits/s'], f['throttled: peer alone (commit sync), commits/s'])) < 1e-9)
  assert.ok(Math.abs(f['archive: ratio verified tx/s to one core'] - f['archive: verified tx sig/s'] / f['ed25519 verify/s, one core (baseline)']) < 1e-9)
})
