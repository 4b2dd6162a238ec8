/**
 * The process settings a soma-sync node runs with, given when the process starts (glibc reads its
 * tunables once, V8 sizes its heap at start-up), so every launcher of this package applies them:
 *
 * - `bin/soma-sync.js` (its `#!/usr/bin/env -S …` line) and the npm scripts that run the CLI;
 * - the testnet's nodes (testnet/driver.ts, and the docker-compose services of testnet/compose.ts);
 * - the benchmarks' child processes.
 *
 * An application that embeds the sync services sets them on its own process (README, "Memory").
 * Measured by the benchmarks (BENCHMARKS.md, snapshot-sync "Where the memory goes"):
 *
 * - `MALLOC_ARENA_MAX=2`: glibc gives every thread that allocates its own malloc arena (the libuv
 *   threads that run LevelDB's reads and writes, LevelDB's compaction thread, worker threads). The
 *   multi-MiB buffers a sync moves between them (chunks, write batches, memtables) fragment every
 *   arena, and freed memory stays with its arena: with two arenas a 1 GiB snapshot sync peaked
 *   ~200–300 MiB lower; commit sync measured within its usual run-to-run range.
 * - No V8 flag: `--max-semi-space-size=16` holds V8's young generation at 32 MiB instead of the 128 MiB
 *   it reaches on this 24 GiB machine: ~100 MiB less at the peak of a snapshot sync, and of commit sync
 *   (~550 instead of ~640 MiB with the worker pool). But commit sync, which allocates many short-lived
 *   objects, verified fewer transactions per second with it: 5,038 vs 5,227 on the main thread and
 *   8,168 vs 8,734 with the pool (means of 3 and 4 runs of bench/commit-sync.ts; spread ~±400), and
 *   its throughput targets are the closer ones. An operator short of memory adds it (NODE_FLAGS is
 *   where a flag every launcher passes goes).
 */

/** V8 flags for the node process (none: see above). */
export const NODE_FLAGS: readonly string[] = []

/** Environment for the node process (read by glibc at start-up). */
export const NODE_ENV: Readonly<Record<string, string>> = Object.freeze({ MALLOC_ARENA_MAX: '2' })

/** `env` with NODE_ENV added (values already set in `env` win). */
export function withNodeEnv (env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...NODE_ENV, ...env }
}

/**
 * The settings this process did not start with (empty when all are applied): flags looked up in
 * `process.execArgv` and NODE_OPTIONS, environment variables in `process.env`.
 */
export function missingProcessSettings (execArgv: readonly string[] = process.execArgv, env: NodeJS.ProcessEnv = process.env, flags: readonly string[] = NODE_FLAGS, vars: Readonly<Record<string, string>> = NODE_ENV): string[] {
  const options = (env.NODE_OPTIONS ?? '').split(/\s+/).filter(s => s !== '')
  // V8 takes --a-b and --a_b alike; any value counts (another one is the operator's choice)
  const name = (arg: string): string => arg.split('=')[0].replaceAll('_', '-')
  const given = new Set([...execArgv, ...options].map(name))
  const missing: string[] = flags.filter(flag => !given.has(name(flag)))
  for (const [k, v] of Object.entries(vars)) if (env[k] === undefined) missing.push(`${k}=${v}`)
  return missing
}
