/**
 * Runs the benchmarks: every module in bench/ that exports `run(opts?: { quick?: boolean })`
 * returning `Record<string, number>`, each in its own node process (so that one bench's heap, worker
 * threads and peak RSS do not leak into the next one's figures), and prints their figures.
 *
 *     node bench/run.ts                      # every bench
 *     node bench/run.ts --only foundation    # one bench (file name without .ts); repeatable
 *     node bench/run.ts --quick              # smoke sizes (figures not comparable, never written)
 *     node bench/run.ts --write              # also rewrite the figures section of BENCHMARKS.md
 *
 * With --write, the part of BENCHMARKS.md between `<!-- bench:start -->` and `<!-- bench:end -->` is
 * regenerated: one block per bench with the date, node version, CPU model, core count, load average
 * and the exact command. Blocks of benches that did not run this time (--only, or a failure) are kept
 * as they were.
 */
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { TempDirs, printFigures, markdownTable, isMain, type Figures } from './util.ts'

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const REPO_ROOT = path.resolve(BENCH_DIR, '..')
const BENCHMARKS_MD = path.join(REPO_ROOT, 'BENCHMARKS.md')
const START_MARKER = '<!-- bench:start -->'
const END_MARKER = '<!-- bench:end -->'
/** Files in bench/ that are not benchmarks. */
const NOT_BENCHES = new Set(['util.ts', 'run.ts'])
/** Benches that should exist: a missing one is reported as skipped. */
const EXPECTED = ['foundation', 'cuckoo-filter']
/** Report order (benches not listed follow alphabetically). */
const ORDER = ['foundation', 'cuckoo-filter', 'commit-sync', 'snapshot-sync', 'archive-sync', 'load', 'sim']

interface Args { only: string[], quick: boolean, write: boolean, child?: string, out?: string }

function parseArgs (argv: string[]): Args {
  const a: Args = { only: [], quick: false, write: false }
  const names = (v: string): string[] => v.split(',').map(s => s.trim().replace(/\.ts$/, '')).filter(s => s !== '')
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const value = (): string => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${arg} needs a value`)
      return v
    }
    if (arg === '--quick') a.quick = true
    else if (arg === '--write') a.write = true
    else if (arg === '--only') a.only.push(...names(value()))
    else if (arg.startsWith('--only=')) a.only.push(...names(arg.slice('--only='.length)))
    else if (arg === '--child') a.child = value()
    else if (arg === '--out') a.out = value()
    else if (arg === '--help' || arg === '-h') {
      console.log('usage: node bench/run.ts [--only <name>[,<name>...]] [--quick] [--write]')
      process.exit(0)
    } else throw new Error(`unknown argument ${arg} (try --help)`)
  }
  return a
}

function byReportOrder (names: string[]): string[] {
  return [...ORDER.filter(n => names.includes(n)), ...names.filter(n => !ORDER.includes(n)).sort()]
}

/**
 * Whether a module's source exports `run`. Decided from the source text, without importing it: a
 * helper script (e.g. a bench's child process) may do its work at import time.
 */
function exportsRun (file: string): boolean {
  const src = readFileSync(file, 'utf8')
  return /export\s+(async\s+)?function\s*\*?\s*run\s*[(<]/.test(src) ||
    /export\s+(const|let|var)\s+run\b/.test(src) ||
    /export\s*\{[^}]*\brun\b[^}]*\}/.test(src)
}

/** The modules of bench/, split into benches (export run) and others. */
function discover (): { benches: string[], others: string[] } {
  const files = readdirSync(BENCH_DIR).filter(f => f.endsWith('.ts') && !f.endsWith('.d.ts') && !NOT_BENCHES.has(f))
  const benches: string[] = []
  const others: string[] = []
  for (const f of files) (exportsRun(path.join(BENCH_DIR, f)) ? benches : others).push(f.slice(0, -3))
  return { benches: byReportOrder(benches), others: others.sort() }
}

export type ChildResult =
  | { status: 'ok', figures: Figures }
  | { status: 'no-run' }
  | { status: 'error', message: string }

// ---------------------------------------------------------------------------------------------------
// child: runs one bench module and writes its figures to --out

async function runChild (name: string, out: string, quick: boolean): Promise<void> {
  let result: ChildResult
  try {
    const mod = await import(pathToFileURL(path.join(BENCH_DIR, `${name}.ts`)).href) as { run?: unknown }
    if (typeof mod.run !== 'function') {
      result = { status: 'no-run' }
    } else {
      const figures = await (mod.run as (o: { quick?: boolean }) => Promise<unknown>)({ quick })
      result = { status: 'ok', figures: checkFigures(name, figures) }
    }
  } catch (err: any) {
    console.error(err?.stack ?? String(err))
    result = { status: 'error', message: err?.message ?? String(err) }
  }
  writeFileSync(out, JSON.stringify(result))
  // a bench may leave handles (timers, workers) behind; its figures are in, so end here
  process.exit(result.status === 'error' ? 1 : 0)
}

function checkFigures (name: string, f: unknown): Figures {
  if (f === null || typeof f !== 'object') throw new TypeError(`${name}.run() did not return an object of figures`)
  for (const [k, v] of Object.entries(f)) {
    if (typeof v !== 'number') throw new TypeError(`${name}.run(): figure ${k} is not a number (${typeof v})`)
  }
  return f as Figures
}

// ---------------------------------------------------------------------------------------------------
// parent

export interface BenchRun {
  name: string
  result: ChildResult
  startedAt: Date
  seconds: number
  loadStart: number
  loadEnd: number
}

async function runInChild (name: string, quick: boolean, tmp: TempDirs): Promise<BenchRun> {
  const out = path.join(tmp.make('run'), 'result.json')
  const args = [...process.execArgv, fileURLToPath(import.meta.url), '--child', name, '--out', out]
  if (quick) args.push('--quick')
  const startedAt = new Date()
  const loadStart = os.loadavg()[0]
  const t0 = process.hrtime.bigint()
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: 'inherit', cwd: REPO_ROOT })
    child.on('error', reject)
    child.on('exit', (c, signal) => { resolve(signal !== null ? null : c) })
  })
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  let result: ChildResult
  if (existsSync(out)) {
    result = JSON.parse(readFileSync(out, 'utf8')) as ChildResult
    rmSync(out, { force: true })
  } else {
    result = { status: 'error', message: `bench process exited with ${code === null ? 'a signal' : `code ${code}`} and no result` }
  }
  return { name, result, startedAt, seconds, loadStart, loadEnd: os.loadavg()[0] }
}

function environmentLine (r: BenchRun, command: string): string {
  const cpus = os.cpus()
  return [
    `Measured ${r.startedAt.toISOString().replace(/\.\d+Z$/, 'Z')}`,
    `node ${process.version}`,
    `${cpus[0]?.model ?? 'unknown CPU'} × ${cpus.length} cores (available parallelism ${os.availableParallelism()})`,
    `load average (1 min) ${r.loadStart.toFixed(2)} at start, ${r.loadEnd.toFixed(2)} at end`,
    `took ${r.seconds.toFixed(0)} s`,
    `command: \`${command}\``
  ].join(' · ')
}

function resultBlock (r: BenchRun & { result: { status: 'ok', figures: Figures } }, command: string): string {
  return [
    `<!-- bench:result ${r.name} -->`,
    `### ${r.name}`,
    '',
    environmentLine(r, command),
    '',
    markdownTable(r.result.figures),
    `<!-- bench:result-end ${r.name} -->`
  ].join('\n')
}

/**
 * The markdown `md` with its figures section (between the marker lines) regenerated: the blocks of
 * `runs` that succeeded replace or join the blocks already there. Adds the section if it is missing.
 */
export function updateFiguresSection (md: string, runs: BenchRun[], command: string): string {
  // the markers count only on a line of their own (the prose may quote them)
  const findMarkers = (text: string): [number, number] => {
    const s = /^<!-- bench:start -->[ \t]*$/m.exec(text)
    if (s === null) return [-1, -1]
    const e = /^<!-- bench:end -->[ \t]*$/m.exec(text.slice(s.index))
    return [s.index, e === null ? -1 : s.index + e.index]
  }
  let markers = findMarkers(md)
  if (markers[0] !== -1 && markers[1] === -1) throw new Error(`a ${START_MARKER} line has no ${END_MARKER} line after it`)
  if (markers[0] === -1) {
    md = `${md.trimEnd()}\n\n## Figures\n\n${START_MARKER}\n${END_MARKER}\n`
    markers = findMarkers(md)
  }
  const [start, end] = markers
  const section = md.slice(start + START_MARKER.length, end)
  const blocks = new Map<string, string>()
  const re = /<!-- bench:result (\S+) -->[\s\S]*?<!-- bench:result-end \1 -->/g
  for (const m of section.matchAll(re)) blocks.set(m[1], m[0])
  for (const r of runs) {
    if (r.result.status === 'ok') blocks.set(r.name, resultBlock(r as BenchRun & { result: { status: 'ok', figures: Figures } }, command))
  }
  const body = [
    '',
    '_Generated by `node bench/run.ts --write`: do not edit between the markers by hand._',
    '',
    ...byReportOrder([...blocks.keys()]).map(n => `${blocks.get(n)!}\n`)
  ].join('\n')
  return md.slice(0, start + START_MARKER.length) + body + md.slice(end)
}

/** Rewrites the figures section of BENCHMARKS.md ($BENCH_MD if set). */
function writeBenchmarksMd (runs: BenchRun[], command: string): void {
  const file = process.env.BENCH_MD ?? BENCHMARKS_MD
  const md = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n'
  writeFileSync(file, updateFiguresSection(md, runs, command))
  console.log(`\nwrote the figures of ${runs.filter(r => r.result.status === 'ok').map(r => r.name).join(', ')} to ${path.relative(process.cwd(), file) || file}`)
}

async function main (): Promise<void> {
  const args = parseArgs(process.argv.slice(2))
  if (args.child !== undefined) {
    if (args.out === undefined) throw new Error('--child needs --out')
    await runChild(args.child, args.out, args.quick)
    return
  }
  if (args.write && args.quick) throw new Error('--quick figures are smoke-run sizes and are not written to BENCHMARKS.md; drop --quick or --write')

  const { benches: found, others } = discover()
  const notes: string[] = []
  for (const n of EXPECTED) {
    if (!found.includes(n) && !others.includes(n) && (args.only.length === 0 || args.only.includes(n))) notes.push(`${n}: skipped, bench/${n}.ts does not exist yet`)
  }
  let names = found
  if (args.only.length > 0) {
    for (const n of args.only) {
      if (others.includes(n)) notes.push(`${n}: skipped, bench/${n}.ts does not export run()`)
      else if (!found.includes(n) && !EXPECTED.includes(n)) throw new Error(`no bench named ${n} (benches: ${found.join(', ')})`)
    }
    names = found.filter(n => args.only.includes(n))
  } else if (others.length > 0) {
    console.log(`(modules of bench/ without a run() export, not run: ${others.join(', ')})`)
  }
  const command = ['node', 'bench/run.ts', ...process.argv.slice(2)].join(' ')

  const tmp = new TempDirs()
  const runs: BenchRun[] = []
  try {
    for (const name of names) {
      console.log(`\n== ${name}${args.quick ? ' (quick)' : ''}`)
      const r = await runInChild(name, args.quick, tmp)
      if (r.result.status === 'no-run') {
        notes.push(`${name}: skipped, its module has no run() function`)
        continue
      }
      runs.push(r)
      if (r.result.status === 'ok') printFigures(`${name}${args.quick ? ' (quick)' : ''}: ${r.seconds.toFixed(1)} s`, r.result.figures)
      else console.log(`${name}: FAILED after ${r.seconds.toFixed(1)} s: ${r.result.message}`)
    }
  } finally {
    tmp.cleanup()
  }
  for (const n of notes) console.log(`note: ${n}`)
  const failed = runs.filter(r => r.result.status === 'error')
  if (args.write) {
    if (runs.some(r => r.result.status === 'ok')) writeBenchmarksMd(runs, command)
    else console.log('\nnothing to write: no bench succeeded')
  }
  if (failed.length > 0) {
    console.log(`\nfailed: ${failed.map(r => r.name).join(', ')}`)
    process.exitCode = 1
  }
}

if (isMain(import.meta.url)) {
  try {
    await main()
  } catch (err: any) {
    console.error(`bench/run.ts: ${err?.message ?? String(err)}`)
    process.exitCode = 2
  }
}
