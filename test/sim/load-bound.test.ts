/**
 * The load per serving node stays bounded as the network grows (issue 15, item 4), on a quick
 * configuration: 100 and 300 nodes, churn in proportion to the network (one node in 100 replaced every
 * second), two seeds. With PushCommit's bounded fan-out (`pushFanout`, PeerHeights.pushTargets) the
 * commit-sync load of the most loaded resident node, ÷ the mean, is flat from 100 to 300 nodes and low;
 * with the old fan-out (every lower peer) it is more than twice as high at 300 nodes (the validators and
 * the best-connected nodes serve every neighbour), so this test fails if the bound is lost. Every commit
 * still reaches 99 % of the nodes, within a bounded time.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { simulate, type SimConfig, type SimResult } from '../../src/sim/network-sim.ts'

const QUICK = (nodes: number, seed: number, extra: Partial<SimConfig> = {}): SimResult => simulate({
  nodes, seed, durationMs: 30_000, drainMs: 10_000, snapshotEveryCommits: 20, snapshotBytes: 8 * 1024 * 1024, churnIntervalMs: 1000 * 100 / nodes, ...extra
})
const f = (r: SimResult): string => JSON.stringify({ resC: r.residentCommitServedMaxOverMean, commit: r.commitServedMaxOverMean, p99: r.servedP99OverMean, reach99: r.reach99Ms })

for (const seed of [1, 2]) {
  test(`seed ${seed}: commit-sync load per node ÷ mean is flat from 100 to 300 nodes, and pushing to every lower peer breaks it`, { timeout: 120_000 }, () => {
    const small = QUICK(100, seed)
    const large = QUICK(300, seed)
    for (const r of [small, large]) {
      assert.equal(r.unreached, 0, 'every commit reached 99 % of the nodes')
      assert.ok(r.reach99Ms.max < 3000, `reach99 bounded: ${f(r)}`)
      assert.equal(r.atTipAtEnd, r.liveAtEnd, 'every live node ends at the tip')
      assert.equal(r.hintViolations, 0)
      assert.ok(r.residentCommitServedMaxOverMean < 9, `the most loaded resident serves < 9 × the mean of commit sync: ${f(r)}`)
    }
    assert.ok(large.residentCommitServedMaxOverMean <= 1.35 * small.residentCommitServedMaxOverMean, `resident commit max ÷ mean flat: 100 nodes ${f(small)}, 300 nodes ${f(large)}`)
    assert.ok(large.commitServedMaxOverMean <= 1.35 * small.commitServedMaxOverMean, `commit max ÷ mean flat: 100 nodes ${f(small)}, 300 nodes ${f(large)}`)
    assert.ok(large.servedP99OverMean <= 1.35 * small.servedP99OverMean, `p99 ÷ mean of all bytes flat: 100 nodes ${f(small)}, 300 nodes ${f(large)}`)

    // the policy is what bounds it: every lower peer pushed to concentrates commit sync on a few nodes
    const all = QUICK(300, seed, { pushFanout: Number.MAX_SAFE_INTEGER })
    assert.ok(all.residentCommitServedMaxOverMean > 2 * large.residentCommitServedMaxOverMean, `push to all ${f(all)} vs pushFanout ${f(large)}`)
  })
}
