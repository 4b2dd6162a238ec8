/**
 * The sync policies on a simulated network (src/sim/network-sim.ts; README, "Simulation"): 250, 500
 * and 1,000 nodes, 4 validators, a commit every 500 ms for 90 s then 30 s to drain, one node leaving and
 * one joining (snapshot sync) every second. Whether the load per serving node stays bounded as the
 * network grows (`servedMaxOverMean`, and per connection), and how long a commit takes to reach 99 % of
 * the nodes (`reach99Ms.*`). Deterministic for a seed: the figures depend on the model, not on the
 * machine (only `wallSec` does).
 *
 *     node bench/sim.ts [--quick]        (or: node bench/run.ts --only sim)
 *
 * --quick: 100 nodes for 20 s.
 */
import { simulate } from '../src/sim/network-sim.ts'
import { isMain, printFigures, log, type Figures, type BenchOptions } from './util.ts'

export async function run (opts: BenchOptions = {}): Promise<Figures> {
  const quick = opts.quick === true
  const sizes = quick ? [100] : [250, 500, 1000]
  const figures: Figures = {}
  for (const nodes of sizes) {
    log(`simulating ${nodes} nodes...`)
    const t0 = performance.now()
    const r = simulate(quick ? { nodes, durationMs: 20_000, drainMs: 8000, snapshotEveryCommits: 10 } : { nodes })
    const k = `n${nodes}`
    figures[`${k}.commits`] = r.commits
    figures[`${k}.joined`] = r.joined
    figures[`${k}.left`] = r.left
    figures[`${k}.snapshotSyncs`] = r.snapshotSyncs
    figures[`${k}.servedMaxOverMean`] = r.servedMaxOverMean
    figures[`${k}.commitServedMaxOverMean`] = r.commitServedMaxOverMean
    figures[`${k}.snapshotServedMaxOverMean`] = r.snapshotServedMaxOverMean
    figures[`${k}.servedPerConnectionMaxOverMean`] = r.servedPerConnectionMaxOverMean
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
  }
  return figures
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  printFigures('sim', await run({ quick }))
}
