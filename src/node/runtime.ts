/**
 * The process settings a soma-sync node runs with: V8 and glibc settings that bound its memory. They
 * must be given when the process starts (V8 sizes its heap at start-up, glibc reads its tunables
 * once), so every launcher of this package applies them:
 *
 * - `bin/soma-sync.js` (its `#!/usr/bin/env -S …` line) and the npm scripts that run the CLI;
 * - the testnet's nodes (testnet/driver.ts, and the docker-compose services of testnet/compose.ts);
 * - the benchmarks' child processes.
 *
 * An application that embeds the sync services sets them on its own process (README, "Memory").
 * Measured by `bench/snapshot-sync.ts` (peak anonymous RSS of a 1 GiB snapshot sync; BENCHMARKS.md):
 *
 * - `--max-semi-space-size=16`: V8 sizes its young generation from the machine's memory; on a 24 GiB
 *   machine it grows to two 64 MiB semi-spaces under the allocation rate of a sync, and the pages V8
 *   once used stay resident. 16 MiB semi-spaces hold ~100 MiB less, with no measurable cost in speed
 *   (the buffers a sync moves are off the V8 heap).
 * - `MALLOC_ARENA_MAX=2`: glibc gives every thread that allocates its own malloc arena (the libuv
 *   threads that run LevelDB's reads and writes, LevelDB's compaction thread, worker threads). The
 *   multi-MiB buffers a sync moves between them (chunks, write batches, memtables) fragment every
 *   arena, and freed memory stays with the arena; two arenas held ~360 MiB less at the peak.
 */

/** V8 flags for the node process. */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16']

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
export function missingProcessSettings (execArgv: readonly string[] = process.execArgv, env: NodeJS.ProcessEnv = process.env): string[] {
  const options = (env.NODE_OPTIONS ?? '').split(/\s+/).filter(s => s !== '')
  // V8 takes --a-b and --a_b alike; any value counts (another one is the operator's choice)
  const name = (arg: string): string => arg.split('=')[0].replaceAll('_', '-')
  const given = new Set([...execArgv, ...options].map(name))
  const missing: string[] = NODE_FLAGS.filter(flag => !given.has(name(flag)))
  for (const [k, v] of Object.entries(NODE_ENV)) if (env[k] === undefined) missing.push(`${k}=${v}`)
  return missing
}
