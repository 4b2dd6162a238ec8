/**
 * Regenerates the generated sections of README.md from their sources, so they stay true:
 * - the CLI reference, from the CLI's own help texts (src/cli/main.ts);
 * - the config table, from the one config object (src/config.ts OPTIONS/DEFAULTS);
 * - the benchmark summary, from the figures recorded in BENCHMARKS.md;
 * - the metrics table, from the node's METRICS (src/node/metrics.ts);
 * - the embedding examples, copied from the programs in examples/ (which the test suite runs).
 *
 *   node scripts/docs.ts          rewrite README.md
 *   node scripts/docs.ts --check  exit 1 if README.md is stale (the test suite runs this)
 */
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { markdownTable } from '../src/config.ts'
import { metricsMarkdownTable } from '../src/node/metrics.ts'
import { mainHelp, commandHelp, COMMAND_NAMES } from '../src/cli/main.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Headline rows of the README benchmark table: [bench, metric, what, target]. */
const HEADLINES: Array<[string, string, string, string]> = [
  ['commit-sync', 'ratio verified tx/s to one core (main thread)', 'commit sync, verified tx/s ÷ one-core ed25519 verify/s, verification on the main thread', '≥ 0.8'],
  ['commit-sync', 'ratio verified tx/s to one core (2 workers)', 'the same with the 2-thread verify pool', '≥ 1.5'],
  ['commit-sync', 'ratio these CPU costs allow (main thread)', 'the ratio the main thread\'s measured CPU per transaction allows, with no idle time', '—'],
  ['commit-sync', 'ratio these CPU costs allow (2 workers)', 'the ratio both processes\' measured CPU per transaction allows, every core busy', '—'],
  ['commit-sync', 'ceiling: ratio with signature checks and execution alone (main thread)', 'upper bound measured in the same run: the ratio the signature checks and the execution alone would reach on one thread, with nothing else', '—'],
  ['commit-sync', 'ceiling: ratio with signature checks and execution alone (2 workers)', 'the same with the pool, every core busy', '—'],
  ['commit-sync', 'commits/s (2 workers)', 'commit sync, commits/s (about 4 blocks of 10 transactions per commit)', '—'],
  ['commit-sync', 'peak RSS MiB (2 workers)', 'commit sync, peak RSS of the syncing process (MiB)', '—'],
  ['foundation', 'executor.txPerSec', 'CommitExecutor, transactions/s, one commit at a time', '—'],
  ['foundation', 'executor.batched/single', 'CommitExecutor in batches of 50 commits ÷ one at a time', '—'],
  ['foundation', 'stateRoot.fullRecompute/incrementalUpdate', 'state root: full recompute ÷ incremental update of 1,000 of 100,000 entries', '≫ 1'],
  ['foundation', 'verify.pool2/single', 'signature verification: 2-worker pool ÷ one thread', '~1.5–2'],
  ['foundation', 'devnet.txPerSec', 'devnet producer, transactions/s', '—'],
  ['cuckoo-filter', 'lookupVsTarget', 'Cuckoo filter member lookups/s ÷ 10M/s target (1M items)', '≥ 1'],
  ['cuckoo-filter', 'lookupSpeedupVsBloom', 'Cuckoo filter lookups, ours ÷ bloom-filters CuckooFilter', '—'],
  ['snapshot', 'incremental/full', 'snapshot: incremental update (1% hot accounts changed) ÷ full build', '≤ 0.05'],
  ['snapshot-sync', 'snapshotSync/raw', 'snapshot sync of ~1 GiB into LevelDB ÷ raw libp2p stream throughput, same processes', '≥ 0.7'],
  ['snapshot-sync', 'snapshotSync/raw allowed by its CPU', 'the ratio the sync\'s measured CPU per GiB allows, every core busy', '—'],
  ['snapshot-sync', 'rawIntoLevelDB/raw', 'upper bound measured in the same run: the raw download into LevelDB (each MiB hashed and stored as a chunk, nothing else) ÷ raw', '—'],
  ['snapshot-sync', 'snapshotSync/helia', 'snapshot sync ÷ Helia bitswap fetching the same bytes', '> 1'],
  ['snapshot-sync', 'snapshotSync/rawIntoLevelDB', 'snapshot sync ÷ the raw download into LevelDB (each MiB hashed and stored once), same run', '≥ 0.8'],
  ['snapshot-sync', 'snapshotSync/helia.disk', 'snapshot sync ÷ Helia bitswap into the faster of blockstore-level and blockstore-fs', '≥ 1.0'],
  ['snapshot-sync', 'snapshotSync.toChunksEnd/helia.disk', 'snapshot sync up to the end of its chunks phase ÷ the same', '≥ 1.5'],
  ['snapshot-sync', 'snapshotSync.peakRssAnon-rawIntoLevelDB.MiB', 'snapshot sync\'s peak anonymous RSS minus the raw-into-LevelDB floor\'s (MiB)', '≤ 100'],
  ['snapshot-sync', 'snapshotSync.diskWrittenGiBPerGiB', 'snapshot sync, GiB written to disk per GiB of snapshot (LevelDB compactions included)', '—'],
  ['snapshot-sync', 'rawIntoLevelDB.diskWrittenGiBPerGiB', 'the raw download into LevelDB, GiB written to disk per GiB', '—'],
  ['snapshot-sync', 'snapshotSync.peakRssMiB', 'snapshot sync, peak RSS of the syncing process (MiB, includes LevelDB\'s mapped files)', '≤ 300 MB'],
  ['snapshot-sync', 'snapshotSync.peakRssAnonMiB', 'the same without the mapped files (anonymous memory: heap, buffers, LevelDB\'s memtables and cache)', '≤ 300 MB'],
  ['archive-sync', 'archive: ratio verified tx/s to one core ÷ that ceiling', 'archive fast sync from a local HTTP archive ÷ the commit-sync ceiling measured in the same run', '≥ 0.9'],
  ['archive-sync', 'archive ÷ p2p, commits/s', 'archive fast sync ÷ commit sync from a P2P peer, commits/s, same run', '—'],
  ['archive-sync', 'throttled: combined ÷ faster alone', 'archive + P2P combined download ÷ the faster source alone, both throttled to one rate', '> 1'],
  ['load', 'commits.20.fairness', 'one server, 20 clients commit-syncing at once: slowest client ÷ median', '≥ 0.5'],
  ['load', 'commits.20.aggregate/one', 'the same: all 20 clients\' commits/s ÷ one client alone', '≥ 0.8'],
  ['load', 'snapshot.20.fairness', 'one server, 20 clients snapshot-syncing at once: slowest ÷ median', '≥ 0.5'],
  ['load', 'snapshot.20.aggregate/one', 'the same: aggregate MiB/s ÷ one client alone', '≥ 0.8'],
  ['load', 'commits.20.memoryBound.holds', 'the server\'s peak RSS under its documented bound at 20 clients (1: holds)', '1'],
  ['sim', 'n1000.servedMaxOverMean', '1,000-node simulation: bytes served per node, max ÷ mean (250 nodes: see BENCHMARKS)', 'bounded as N grows'],
  ['sim', 'n1000.reach99Ms.median', '1,000-node simulation: ms until a commit reaches 99 % of the nodes (median)', '—']
]

function benchFigure (benchmarks: string, bench: string, metric: string): string | undefined {
  const start = benchmarks.indexOf(`<!-- bench:result ${bench} -->`)
  const end = benchmarks.indexOf(`<!-- bench:result-end ${bench} -->`)
  if (start < 0 || end < 0) return undefined
  const block = benchmarks.slice(start, end)
  for (const line of block.split('\n')) {
    const m = /^\| `(.+)` \| (.+) \|$/.exec(line.trim())
    if (m !== null && m[1] === metric) return m[2].trim()
  }
  return undefined
}

export function benchSummary (benchmarks: string): string {
  const lines = ['| what | figure | target |', '|---|---:|---|']
  for (const [bench, metric, what, target] of HEADLINES) {
    const v = benchFigure(benchmarks, bench, metric)
    if (v !== undefined) lines.push(`| ${what} | ${v} | ${target} |`)
  }
  return lines.join('\n')
}

export function cliReference (): string {
  const parts = ['```text', mainHelp(), '```']
  for (const name of COMMAND_NAMES) {
    parts.push('', `<details><summary><code>soma-sync ${name} --help</code></summary>`, '', '```text', commandHelp(name), '```', '', '</details>')
  }
  return parts.join('\n')
}

function replaceSection (text: string, name: string, body: string): string {
  const open = `<!-- ${name}:start -->`
  const close = `<!-- ${name}:end -->`
  const a = text.indexOf(open)
  const b = text.indexOf(close)
  if (a < 0 || b < a) throw new Error(`README.md has no ${open} … ${close} section`)
  return text.slice(0, a + open.length) + '\n' + body + '\n' + text.slice(b)
}

/** The example programs the README shows whole (examples/<name>.ts). */
export const EXAMPLES = ['embed-commit-sync', 'embed-snapshot-sync'] as const

export function exampleBlock (name: string): string {
  return ['```ts', readFileSync(path.join(root, 'examples', `${name}.ts`), 'utf8').trimEnd(), '```'].join('\n')
}

export function renderReadme (readme: string, benchmarks: string): string {
  let out = replaceSection(readme, 'cli', cliReference())
  out = replaceSection(out, 'config', markdownTable())
  out = replaceSection(out, 'bench', benchSummary(benchmarks))
  out = replaceSection(out, 'metrics', metricsMarkdownTable())
  for (const name of EXAMPLES) out = replaceSection(out, `example:${name}`, exampleBlock(name))
  return out
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (isMain) {
  const readmePath = path.join(root, 'README.md')
  const readme = readFileSync(readmePath, 'utf8')
  const next = renderReadme(readme, readFileSync(path.join(root, 'BENCHMARKS.md'), 'utf8'))
  if (process.argv.includes('--check')) {
    if (next !== readme) {
      process.stderr.write('README.md is stale: run `npm run docs`\n')
      process.exit(1)
    }
  } else {
    writeFileSync(readmePath, next)
  }
}
