/**
 * The 20-node scenario (testnet/scale.ts), short form (scripts/testnet-scale.ts --short): 4 validators'
 * nodes, 16 full nodes joining every 5 commits through 2 entrypoints (4 of them snapshot-syncing), 5 %
 * loss and 50 ms delay on every node, 3 nodes killed and restarted; every node converges to the
 * producer's state root at its last commit; each node's bytes served and the footprint are reported.
 *
 * Skipped, saying why, without root, `ip netns` or iptables. Everything it starts is removed by the
 * driver's close(); the scenario is bounded by its timeout.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { haveCommand, netnsAvailability } from '../../testnet/driver.ts'
import { runScaleScenario, SCALE_KILLED } from '../../testnet/scale.ts'
import { SHORT } from '../../scripts/testnet-scale.ts'

const netns = netnsAvailability()
const skip = !netns.ok
  ? `the namespace testnet needs network namespaces: ${netns.reason}`
  : !haveCommand('iptables') ? 'the namespace testnet needs iptables (scripts/testnet deps installs it)' : false

test('20-node namespace testnet, short form: staggered joins, snapshot joiners, kills, 5 % loss, 50 ms delay; all converge', { skip, timeout: 9 * 60_000 }, async () => {
  const lines: string[] = []
  const r = await runScaleScenario({ ...SHORT, log: l => lines.push(l) })
  const names = Object.keys(r.nodes)
  assert.equal(names.length, 20)
  for (const [name, n] of Object.entries(r.nodes)) assert.equal(n.commit, SHORT.maxCommits, `${name} at ${n.commit}`)
  // every snapshot joiner converges; at least one restores a snapshot. Not all of them do yet: a joiner
  // whose two entrypoints make no snapshots must find the producer's by gossip or the DHT, and in runs
  // here 1 to 3 of the 4 found one within --snapshot-find-timeout (90 s) and the others commit-synced
  // (the finding is recorded in BENCHMARKS.md, 20-node testnet)
  const joiners = ['full04', 'full08', 'full12', 'full16']
  const snapshotted = names.filter(n => r.nodes[n].snapshot)
  assert.ok(snapshotted.length >= 1 && snapshotted.every(n => joiners.includes(n)), `snapshot-synced: ${snapshotted.join(', ') || 'none'} (of ${joiners.join(', ')})`)
  console.log(`snapshot joiners that restored a snapshot: ${snapshotted.join(', ')} of ${joiners.join(', ')}`)
  assert.ok(lines.some(l => l.includes(`${SCALE_KILLED[0]} restarted`)))
  const served = names.map(n => r.nodes[n].servedBytes)
  assert.ok(served.filter(b => b > 0).length >= 4, `several nodes served (${served.join(', ')})`)
  assert.ok(r.footprint.peakRssMiB > 0 && r.footprint.processes >= 20, JSON.stringify(r.footprint))
  console.log(JSON.stringify({ convergeMs: r.convergeMs, footprint: r.footprint, served: Object.fromEntries(names.map(n => [n, r.nodes[n].servedBytes])) }))
})
