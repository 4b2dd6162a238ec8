/**
 * The sync policies on a simulated network (src/sim/network-sim.ts; README, "Simulation"): 250, 500
 * and 1,000 nodes, 4 validators, a commit every 500 ms for 90 s then 30 s to drain, churn in proportion
 * to the network (every second one node in 250 leaves and a new one joins with a snapshot sync: 1 per
 * second at 250 nodes, 4 at 1,000). Whether the load per serving node stays bounded as the network grows
 * (`servedMaxOverMean`, over the nodes that served anything; `residentServedMaxOverMean`, over the nodes
 * live for the whole run, idle ones included; per connection), and how long a commit takes to reach 99 %
 * of the nodes (`reach99Ms.*`). `fixedChurn.*`: the same networks with one join per second whatever
 * their size (the old run: the snapshot work then stays fixed while the nodes to spread it over grow, so
 * the mean falls with N for reasons no policy can change). `pushAll.*`: the PushCommit fan-out before
 * `pushFanout` (every lower peer), for comparison. Deterministic for a seed: the figures depend on the
 * model, not on the machine (only `wallSec` does).
 *
 *     node bench/sim.ts [--quick]        (or: node bench/run.ts --only sim)
 *
 * --quick: 100 nodes for 20 s.
 */
import { simulate, type SimConfig } from '../src/sim/network-sim.ts'
import { isMain, printFigures, log, type Figures, type BenchOptions } from './util.ts'

/** every second, one node in this many leaves and one joins */
const CHURN_ONE_IN = 250

export async function run (opts: BenchOptions = {}): Promise<Figures> {
  const quick = opts.quick === true
  const sizes = quick ? [100] : [250, 500, 1000]
  const figures: Figures = {}
  const base = (nodes: number): Partial<SimConfig> => quick
    ? { nodes, durationMs: 20_000, drainMs: 8000, snapshotEveryCommits: 10, churnIntervalMs: 1000 * CHURN_ONE_IN / nodes }
    : { nodes, churnIntervalMs: 1000 * CHURN_ONE_IN / nodes }
  for (const nodes of sizes) {
    log(`simulating ${nodes} nodes...`)
    const t0 = performance.now()
    const r = simulate(base(nodes))
    const k = `n${nodes}`
    figures[`${k}.commits`] = r.commits
    figures[`${k}.joined`] = r.joined
    figures[`${k}.left`] = r.left
    figures[`${k}.snapshotSyncs`] = r.snapshotSyncs
    figures[`${k}.servedMaxOverMean`] = r.servedMaxOverMean
    figures[`${k}.commitServedMaxOverMean`] = r.commitServedMaxOverMean
    figures[`${k}.snapshotServedMaxOverMean`] = r.snapshotServedMaxOverMean
    figures[`${k}.residentServedMaxOverMean`] = r.residentServedMaxOverMean
    figures[`${k}.residentCommitServedMaxOverMean`] = r.residentCommitServedMaxOverMean
    figures[`${k}.servedP99OverMean`] = r.servedP99OverMean
    figures[`${k}.residentServedP99OverMean`] = r.residentServedP99OverMean
    figures[`${k}.servedPerConnectionMaxOverMean`] = r.servedPerConnectionMaxOverMean
    figures[`${k}.topServerIsValidator`] = r.topServerIsValidator
    figures[`${k}.topServerDegree`] = r.topServerDegree
    figures[`${k}.meanDegree`] = r.meanDegree
    figures[`${k}.validatorShare`] = r.validatorShare
    figures[`${k}.reach99Ms.median`] = r.reach99Ms.median
    figures[`${k}.reach99Ms.p95`] = r.reach99Ms.p95
    figures[`${k}.reach99Ms.max`] = r.reach99Ms.max
    figures[`${k}.unreachedCommits`] = r.unreached
    figures[`${k}.refusedRequests`] = r.refused
    figures[`${k}.hintViolations`] = r.hintViolations
    figures[`${k}.atTipAtEnd/live`] = r.atTipAtEnd / r.liveAtEnd
    figures[`${k}.events`] = r.events
    figures[`${k}.wallSec`] = (performance.now() - t0) / 1000
    // the comparisons: one join per second whatever N; every lower peer pushed to
    const fixed = simulate({ ...base(nodes), churnIntervalMs: 1000 })
    figures[`${k}.fixedChurn.servedMaxOverMean`] = fixed.servedMaxOverMean
    figures[`${k}.fixedChurn.residentServedMaxOverMean`] = fixed.residentServedMaxOverMean
    figures[`${k}.fixedChurn.commitServedMaxOverMean`] = fixed.commitServedMaxOverMean
    const all = simulate({ ...base(nodes), pushFanout: Number.MAX_SAFE_INTEGER })
    figures[`${k}.pushAll.servedMaxOverMean`] = all.servedMaxOverMean
    figures[`${k}.pushAll.residentCommitServedMaxOverMean`] = all.residentCommitServedMaxOverMean
    figures[`${k}.pushAll.reach99Ms.median`] = all.reach99Ms.median
  }
  return figures
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  printFigures('sim', await run({ quick }))
}
