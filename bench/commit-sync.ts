/**
 * Commit sync benchmark: a fresh node syncs N commits with transactions from a serving node in
 * another process (both are child processes; 127.0.0.1). Reports commits/s, blocks/s, tx/s, peak
 * RSS of the syncing process, and the ratio of verified transaction signatures per second to the
 * one-core ed25519 verify rate measured in this same run, right before and right after that sync (their
 * mean) — once with verification on the main thread (`verifyWorkers 0`) and once with the 2-thread
 * worker pool.
 *
 * Targets (issue "Commit sync"): >= 0.8 of one core single-threaded; >= 1.5 with the pool on 2 cores.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { createGenesis } from '../src/chain/genesis.ts'
import { ChainStore } from '../src/store/chain-store.ts'
import { CommitExecutor } from '../src/executor/commit-executor.ts'
import { DevnetProducer } from '../src/devnet/producer.ts'
import { TempDirs, isMain, printFigures, log, threadCpu, cpuDelta, type Figures, type BenchOptions, type ThreadCpu, verifyRate } from './util.ts'
import { availableParallelism } from 'node:os'
import { NODE_FLAGS, withNodeEnv } from '../src/node/runtime.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(here, 'commit-sync-child.ts')

interface SyncFigures { executionAlone: { ms: number, transactions: number, cpu?: ThreadCpu }, checksAlone: { ms: number, checks: number }, ms: number, commits: number, blocks: number, bytes: number, transactions: number, executionBatches: number, verifiedTxSignatures: number, signatureChecks: number, peakRssMiB: number, gc: { minor: number, minorMs: number, major: number, majorMs: number }, cpu?: ThreadCpu }

async function runSync (clientDir: string, addr: string, target: number, workers: number, genesisPath: string): Promise<SyncFigures> {
  const child = spawn(process.execPath, [...NODE_FLAGS, CHILD, 'sync', path.join(clientDir, 'chain'), addr, String(target), String(workers), genesisPath], { stdio: ['ignore', 'pipe', 'inherit'], env: withNodeEnv() })
  let out = ''
  child.stdout.on('data', (d) => { out += String(d) })
  const [code] = await once(child, 'exit')
  if (code !== 0) throw new Error(`sync child exited with ${code}`)
  return JSON.parse(out.trim().split('\n').pop()!)
}

export async function run (opts: BenchOptions & { commits?: number } = {}): Promise<Figures> {
  const commits = opts.commits ?? (opts.quick === true ? 200 : 10_000)
  const tmp = new TempDirs()
  try {
    const seed = 'bench-commit-sync'
    const genesis = createGenesis({ seed, validators: 4, accounts: 1000, initialBalance: 1e12, embeddingDim: 16 })
    const serverDir = tmp.make('cs-server')
    const genesisPath = path.join(serverDir, 'genesis.pb')
    writeFileSync(genesisPath, genesis.bytes)
    log(`producing ${commits} commits...`)
    {
      const store = await ChainStore.open(path.join(serverDir, 'chain'), { genesis })
      const producer = new DevnetProducer(store, new CommitExecutor(store), { seed, roundIntervalMs: 0, txsPerBlock: 10, embeddingEvery: 10, epochLength: 500 })
      await producer.load()
      await producer.produceUntil(commits)
      await store.close()
    }
    const server = spawn(process.execPath, [...NODE_FLAGS, CHILD, 'serve', path.join(serverDir, 'chain')], { stdio: ['pipe', 'pipe', 'inherit'], env: withNodeEnv() })
    const rl = createInterface({ input: server.stdout })
    const addr: string = await new Promise((resolve, reject) => {
      rl.on('line', (l) => { if (l.startsWith('LISTEN ')) resolve(l.slice(7)) })
      server.once('exit', (c) => { reject(new Error(`server exited with ${c}`)) })
    })
    const figures: Figures = {}
    try {
      // the baseline brackets each sync (measured right before and right after it): the machine is
      // shared, and its speed drifts over minutes (one measurement before both syncs moved between
      // 5,900 and 9,300/s from run to run, and the ratios with it)
      const n = opts.quick === true ? 1000 : 10_000
      const rates: number[] = []
      for (const workers of [0, 2]) {
        const label = workers === 0 ? 'main thread' : '2 workers'
        const before = verifyRate(n)
        log(`syncing with verifyWorkers=${workers}...`)
        const server0 = threadCpu(server.pid!)
        const r = await runSync(tmp.make(`cs-client-${workers}`), addr, commits, workers, genesisPath)
        const server1 = threadCpu(server.pid!)
        const after = verifyRate(n)
        rates.push(before, after)
        const baseline = (before + after) / 2
        figures[`ed25519 verify/s, one core (baseline, ${label})`] = baseline
        figures[`baseline after ÷ before (${label})`] = after / before
        const s = r.ms / 1000
        figures[`commits/s (${label})`] = r.commits / s
        figures[`blocks/s (${label})`] = r.blocks / s
        figures[`tx/s executed (${label})`] = r.transactions / s
        figures[`MiB/s of blocks (${label})`] = r.bytes / 1024 / 1024 / s
        figures[`verified tx sig/s (${label})`] = r.verifiedTxSignatures / s
        figures[`ratio verified tx/s to one core (${label})`] = r.verifiedTxSignatures / s / baseline
        figures[`peak RSS MiB (${label})`] = r.peakRssMiB
        figures[`commits per execution batch (${label})`] = r.commits / r.executionBatches
        figures[`main-thread GC pauses, % of the sync, scavenges (${label})`] = r.gc.minorMs / r.ms * 100
        figures[`main-thread GC pauses, % of the sync, mark-compact (${label})`] = r.gc.majorMs / r.ms * 100
        if (r.cpu !== undefined && server0 !== undefined && server1 !== undefined) {
          // where the CPU went, per transaction executed (Linux: /proc/<pid>/task)
          const served = cpuDelta(server0, server1).total
          const us = (sec: number): number => sec * 1e6 / r.transactions
          figures[`CPU µs/tx, syncing main thread (${label})`] = us(r.cpu.main)
          figures[`CPU µs/tx, verify workers (${label})`] = us(r.cpu.workers)
          figures[`CPU µs/tx, syncing process's V8 helper threads (${label})`] = us(r.cpu.v8)
          figures[`CPU µs/tx, syncing process's libuv and other threads (${label})`] = us(r.cpu.libuv + r.cpu.other + r.cpu.exited)
          figures[`CPU µs/tx, serving process (${label})`] = us(served)
          figures[`cores busy, both processes (${label})`] = (r.cpu.total + served) / s
          figures[`signature checks per tx (${label})`] = r.signatureChecks / r.transactions
          // everything but the signature checks, each check costed at the baseline's rate: on the main
          // thread when it verifies alone, across both processes (which share the cores) with the pool
          const checksSec = r.signatureChecks / baseline
          const rest = workers === 0 ? r.cpu.main - checksSec : r.cpu.total + served - checksSec
          figures[`CPU µs/tx besides signature checks, ${workers === 0 ? 'main thread' : 'both processes'} (${label})`] = us(rest)
          // the ratio these costs leave room for with no idle time at all: one busy main thread, or
          // every core of the machine busy
          const perTx = (checksSec + rest) / r.transactions
          const cores = workers === 0 ? 1 : availableParallelism()
          figures[`ratio these CPU costs allow (${label})`] = cores / perTx / baseline
        }
        // parts of the work alone on the synced chain, measured by the sync child after the sync: what
        // any sync of this chain must do at least bounds the ratio, whatever the pipeline around it
        const checksPerTx = r.signatureChecks / r.transactions
        const checkRate = r.checksAlone.checks / (r.checksAlone.ms / 1000)
        figures[`signature checks alone, verify/s (${label})`] = checkRate
        figures[`signature checks alone ÷ baseline (${label})`] = checkRate / baseline
        figures[`ceiling: ratio with signature checks alone (${label})`] = checkRate / checksPerTx / baseline
        const ex = r.executionAlone
        if (ex.cpu !== undefined) {
          const exUs = (sec: number): number => sec * 1e6 / ex.transactions
          figures[`execution alone, CPU µs/tx, main thread (${label})`] = exUs(ex.cpu.main)
          figures[`execution alone, CPU µs/tx, all threads (${label})`] = exUs(ex.cpu.total)
          // the checks (each at the baseline's one-core cost, as the targets count them) and the
          // execution's CPU, nothing else, no idle time: on the one main thread (the execution's
          // main-thread CPU), or with the checks on the pool and every core busy (all its threads)
          const perTx = checksPerTx / baseline + (workers === 0 ? ex.cpu.main : ex.cpu.total) / ex.transactions
          const cores = workers === 0 ? 1 : availableParallelism()
          figures[`ceiling: ratio with signature checks and execution alone (${label})`] = cores / perTx / baseline
        }
      }
      figures['ed25519 verify/s, one core (baseline)'] = rates.reduce((a, b) => a + b, 0) / rates.length
    } finally {
      server.stdin.end()
      await once(server, 'exit')
    }
    return figures
  } finally {
    tmp.cleanup()
  }
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  printFigures('commit sync', await run({ quick }))
}
