/**
 * scripts/testnet-scale: the 20-node scenario of testnet/scale.ts on the namespace testnet (root, `ip
 * netns`, iptables: `scripts/testnet deps`). Prints the time to converge, each node's bytes served and
 * commit, and the footprint; exits 0 when every node converged to the producer's state root.
 *
 *   node scripts/testnet-scale.ts [--short] [--max-commits <n>] [--loopback] [--work-dir <dir>]
 *
 * --short: the CI form (150 commits, a join every 5 commits from commit 10; test/e2e/testnet-scale.test.ts).
 */
import { runScaleScenario, type ScaleScenarioOptions } from '../testnet/scale.ts'
import { cleanupStale } from '../testnet/driver.ts'

export const SHORT: ScaleScenarioOptions = { maxCommits: 150, firstJoin: 10, joinEvery: 5, timeoutMs: 8 * 60_000 }

if (import.meta.main) {
  const argv = process.argv.slice(2)
  const value = (flag: string): string | undefined => { const i = argv.indexOf(flag); return i >= 0 ? argv[i + 1] : undefined }
  const say = (line: string): void => { process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`) }
  const opts: ScaleScenarioOptions = {
    ...(argv.includes('--short') ? SHORT : {}),
    ...(value('--max-commits') !== undefined ? { maxCommits: Number(value('--max-commits')) } : {}),
    mode: argv.includes('--loopback') ? 'loopback' : 'netns',
    workDir: value('--work-dir'),
    log: say
  }
  await cleanupStale(say)
  try {
    const r = await runScaleScenario(opts)
    say(`converged: ${r.commits} commits, state root ${r.stateRoot.slice(0, 16)}…, in ${(r.convergeMs / 1000).toFixed(1)} s`)
    for (const [name, n] of Object.entries(r.nodes)) say(`  ${name.padEnd(7)} served ${(n.servedBytes / 1024 / 1024).toFixed(2).padStart(8)} MiB  commit ${n.commit}${n.snapshot ? '  (snapshot-synced)' : ''}`)
    say(`footprint: peak RSS of all ${r.footprint.processes} node processes ${r.footprint.peakRssMiB.toFixed(0)} MiB, ${r.footprint.cpuCores.toFixed(2)} cores on average`)
    process.exit(0)
  } catch (err: any) {
    say(`failed: ${err?.message ?? String(err)}`)
    process.exit(1)
  }
}
