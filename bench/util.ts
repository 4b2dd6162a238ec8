/**
 * Helpers shared by the benchmarks: temporary directories, timing, peak-RSS sampling, table printing
 * and "am I the entry point" detection.
 *
 * Benchmarks run on a shared, noisy machine: they report throughputs and ratios against a baseline
 * measured in the same run, never absolute pass/fail verdicts.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair, sign, verify } from '../src/crypto/keys.ts'

/** The figures a bench module's `run()` returns: metric name → number. */
export type Figures = Record<string, number>

export interface BenchOptions {
  /** smaller sizes, for a smoke run (tests) */
  quick?: boolean
}

// ---------------------------------------------------------------------------------------------------
// temporary directories

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * Where temporary stores go: `$BENCH_TMPDIR`, else `<repo>/.bench-tmp` (git-ignored; on the same disk
 * as a node's data dir would be, unlike a tmpfs /tmp on some machines).
 */
export const BENCH_TMP_ROOT = process.env.BENCH_TMPDIR ?? path.join(REPO_ROOT, '.bench-tmp')

/**
 * A set of temporary directories, all removed by `cleanup()` (and, as a last resort, when the process
 * exits). Use one per bench run:
 *
 *     const tmp = new TempDirs(); try { const dir = tmp.make('store-a') ... } finally { tmp.cleanup() }
 */
export class TempDirs {
  private readonly dirs: string[] = []
  private readonly onExit = (): void => { this.cleanup() }

  constructor () {
    process.once('exit', this.onExit)
  }

  /** A fresh, empty directory. */
  make (label = 'bench'): string {
    mkdirSync(BENCH_TMP_ROOT, { recursive: true })
    const dir = mkdtempSync(path.join(BENCH_TMP_ROOT, `${label.replace(/[^a-zA-Z0-9_-]/g, '_')}-`))
    this.dirs.push(dir)
    return dir
  }

  cleanup (): void {
    for (const d of this.dirs.splice(0)) rmSync(d, { recursive: true, force: true })
    process.removeListener('exit', this.onExit)
  }
}

// ---------------------------------------------------------------------------------------------------
// timing

/** Monotonic time in nanoseconds. */
export function now (): bigint {
  return process.hrtime.bigint()
}

/** Milliseconds elapsed since `t0` (from {@link now}). */
export function msSince (t0: bigint): number {
  return Number(now() - t0) / 1e6
}

/** Runs `fn` once and returns its result with the wall time in ms. */
export async function timed<T> (fn: () => T | Promise<T>): Promise<{ ms: number, result: T }> {
  const t0 = now()
  const result = await fn()
  return { ms: msSince(t0), result }
}

/** Operations per second for `count` operations in `ms` milliseconds. */
export function perSec (count: number, ms: number): number {
  return count / (ms / 1000)
}

/** Runs a full GC if node was started with --expose-gc; a no-op otherwise. */
export function maybeGc (): void {
  const g = (globalThis as { gc?: () => void }).gc
  if (typeof g === 'function') g()
}

// ---------------------------------------------------------------------------------------------------
// memory

/** Peak resident set size of this process since it started, in MiB (getrusage's ru_maxrss). */
export function maxRssMiB (): number {
  return process.resourceUsage().maxRSS / 1024 // maxRSS is in KiB
}

/**
 * Samples `process.memoryUsage.rss()` every `intervalMs` (50 ms) while a phase runs, so each phase
 * gets its own peak (`maxRSS` only knows the process-lifetime peak). The sampling timer is unref'd,
 * and the current RSS is also sampled on start and stop, so short phases still get a figure.
 */
export class RssSampler {
  private peak = 0
  private timer?: NodeJS.Timeout

  constructor (intervalMs = 50) {
    this.sample()
    this.timer = setInterval(() => { this.sample() }, intervalMs)
    this.timer.unref()
  }

  private sample (): void {
    const rss = process.memoryUsage.rss()
    if (rss > this.peak) this.peak = rss
  }

  /** Stops sampling; returns the peak RSS seen, in MiB. */
  stop (): number {
    this.sample()
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    return this.peak / (1024 * 1024)
  }
}

/** Runs `fn` while sampling RSS; returns its result, wall time (ms) and the sampled peak RSS (MiB). */
export async function measure<T> (fn: () => T | Promise<T>): Promise<{ ms: number, peakRssMiB: number, result: T }> {
  const sampler = new RssSampler()
  const t0 = now()
  try {
    const result = await fn()
    const ms = msSince(t0)
    return { ms, peakRssMiB: sampler.stop(), result }
  } finally {
    sampler.stop()
  }
}

// ---------------------------------------------------------------------------------------------------
// output

/** A number in a readable form: 3 significant digits below 1000, grouped integers above. */
export function formatNumber (v: number): string {
  if (!Number.isFinite(v)) return String(v)
  const a = Math.abs(v)
  if (a >= 1000 || Number.isInteger(v)) return Math.round(v).toLocaleString('en-US')
  if (a === 0) return '0'
  if (a >= 100) return v.toFixed(0)
  if (a >= 10) return v.toFixed(1)
  if (a >= 1) return v.toFixed(2)
  if (a >= 0.001) return v.toPrecision(3)
  return v.toExponential(2)
}

/** Formats rows as an aligned plain-text table (first row = header). */
export function formatTable (rows: readonly (readonly string[])[]): string {
  if (rows.length === 0) return ''
  const widths = rows[0].map((_, c) => Math.max(...rows.map(r => (r[c] ?? '').length)))
  const line = (r: readonly string[]): string => r.map((cell, c) => c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])).join('  ')
  const out = [line(rows[0]), widths.map(w => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)]
  return out.join('\n')
}

/** Prints a bench's figures as a two-column table. */
export function printFigures (title: string, figures: Figures): void {
  const rows = [['metric', 'value'], ...Object.entries(figures).map(([k, v]) => [k, formatNumber(v)])]
  console.log(`\n${title}\n${formatTable(rows)}`)
}

/** A markdown table of a bench's figures. */
export function markdownTable (figures: Figures): string {
  const rows = Object.entries(figures).map(([k, v]) => `| \`${k}\` | ${formatNumber(v)} |`)
  return ['| metric | value |', '|---|---:|', ...rows].join('\n')
}

/** Progress output of a bench, on stderr so that stdout stays the figures. */
export function log (msg: string): void {
  process.stderr.write(`  ${msg}\n`)
}

// ---------------------------------------------------------------------------------------------------
// entry point

/** True when the module with this `import.meta.url` is the script node was started with. */
export function isMain (metaUrl: string): boolean {
  const argv1 = process.argv[1]
  if (argv1 === undefined) return false
  const self = fileURLToPath(metaUrl)
  const real = (p: string): string => { try { return realpathSync(p) } catch { return path.resolve(p) } }
  return real(self) === real(argv1)
}

// ---------------------------------------------------------------------------------------------------
// CPU time by thread

/** CPU seconds (user + system) of a process's threads, summed by kind of thread. */
export interface ThreadCpu {
  /** the JavaScript main thread */
  main: number
  /** worker_threads (the verify and chunk-hash pools) */
  workers: number
  /** V8's helper threads (concurrent and parallel GC, compilation) */
  v8: number
  /**
   * libuv's thread pool (LevelDB reads and writes, fs), and LevelDB's compaction thread: classic-level
   * opens the database from that pool, so the thread LevelDB starts carries its name
   */
  libuv: number
  /** any other thread */
  other: number
  /** threads that have exited (the process's total less its live threads': a stopped worker pool) */
  exited: number
  /** all of them: the process's CPU time */
  total: number
}

/** Linux's USER_HZ: the unit of the CPU times in /proc/<pid>/task/<tid>/stat. */
const CLOCK_TICKS_PER_SECOND = 100

/**
 * CPU time of every live thread of process `pid` (default: this one), by kind, read from Linux's
 * /proc/<pid>/task/<tid>/{comm,stat} (Node names its threads MainThread, WorkerThread, V8Worker and
 * libuv-worker). Undefined where /proc is not there. A thread that has exited is counted only in
 * `exited` (and `total`): compare two readings of the same process, e.g. around one sync. The kernel
 * rounds each thread's time and the process's to 10 ms ticks separately, so `exited` (the difference)
 * is good to a few ticks.
 */
export function threadCpu (pid: number | 'self' = 'self'): ThreadCpu | undefined {
  const dir = `/proc/${pid}/task`
  if (!existsSync(dir)) return undefined
  const out: ThreadCpu = { main: 0, workers: 0, v8: 0, libuv: 0, other: 0, exited: 0, total: 0 }
  let live = 0
  for (const tid of readdirSync(dir)) {
    let comm: string, stat: string
    try {
      comm = readFileSync(`${dir}/${tid}/comm`, 'utf8').trim()
      stat = readFileSync(`${dir}/${tid}/stat`, 'utf8')
    } catch {
      continue // the thread exited meanwhile
    }
    const s = statCpu(stat)
    const kind: keyof ThreadCpu = tid === String(pid === 'self' ? process.pid : pid)
      ? 'main'
      : comm === 'WorkerThread' ? 'workers' : comm.startsWith('V8') ? 'v8' : comm.startsWith('libuv') ? 'libuv' : 'other'
    out[kind] += s
    live += s
  }
  // the process's own line counts the threads that have exited too
  try {
    out.total = Math.max(live, statCpu(readFileSync(`/proc/${pid}/stat`, 'utf8')))
  } catch {
    out.total = live
  }
  out.exited = out.total - live
  return out
}

/** utime + stime of a /proc stat line, in seconds (fields 14 and 15; the name in parentheses may hold spaces). */
function statCpu (stat: string): number {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // f[0] is field 3 (state)
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS_PER_SECOND
}

/** `after - before`, kind by kind. */
export function cpuDelta (before: ThreadCpu, after: ThreadCpu): ThreadCpu {
  const d = { ...after }
  for (const k of Object.keys(d) as Array<keyof ThreadCpu>) d[k] = after[k] - before[k]
  return d
}

/** One-core ed25519 verify rate (KeyObject cached), the baseline of the ratios. */
export function verifyRate (n: number): number {
  const k = generateKeyPair()
  const items = Array.from({ length: n }, (_, i) => { const m = Buffer.from(`message ${i} ${'x'.repeat(100)}`); return { m, s: sign(k, m) } })
  const t0 = performance.now()
  for (const it of items) if (!verify(k.publicKey, it.m, it.s)) throw new Error('verify failed')
  return n / ((performance.now() - t0) / 1000)
}
