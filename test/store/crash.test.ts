/**
 * Crash consistency: a child process produces and executes commits in a tight loop and is SIGKILLed at
 * a random moment, several times. After each kill the store must reopen, satisfy every invariant (see
 * test/helpers/invariants.ts), and the producer must be able to resume.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { once } from 'node:events'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { StoreError } from '../../src/errors.ts'
import { tmpDir } from '../helpers/tmp.ts'
import { checkStoreInvariants } from '../helpers/invariants.ts'
import { CRASH_GENESIS, CRASH_PRODUCER } from '../helpers/crash-writer.ts'

const WRITER = fileURLToPath(new URL('../helpers/crash-writer.ts', import.meta.url))
const SEED = 'crash-test'
const KILLS = 4
const genesis = createGenesis({ seed: SEED, ...CRASH_GENESIS })

interface Running { child: ChildProcess, stderr: () => string, exited: Promise<[number | null, string | null]> }

async function startWriter (dir: string): Promise<Running> {
  const child = spawn(process.execPath, [WRITER, dir, SEED], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stderr!.on('data', (d: Buffer) => { err += d.toString() })
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>
  let timer: NodeJS.Timeout | undefined
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('ready')) resolve() })
    void exited.then(([code, sig]) => reject(new Error(`writer exited (${code ?? sig}) before it was ready: ${err}`)))
    timer = setTimeout(() => reject(new Error(`writer not ready after 20 s: ${err}`)), 20_000)
  })
  try {
    await ready
  } catch (e) {
    child.kill('SIGKILL')
    throw e
  } finally {
    clearTimeout(timer)
  }
  return { child, stderr: () => err, exited }
}

test('store stays consistent across SIGKILLs of a producing + executing process', { timeout: 90_000 }, async (t) => {
  const dir = tmpDir(t)
  let child: ChildProcess | undefined
  t.after(() => { if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })

  const delays: number[] = []
  let lastSynced = -1
  let lastExecuted = -1
  let sawLag = false
  let sawEpochChange = false
  for (let i = 0; i < KILLS; i++) {
    const w = await startWriter(dir)
    child = w.child
    if (i === 0) {
      // while the writer runs, the store is locked against a second process
      await assert.rejects(ChainStore.open(dir, { genesis }), (e: any) => e.constructor === StoreError && /another process/.test(e.message))
    }
    const delay = 300 + Math.floor(Math.random() * 1200)
    delays.push(delay)
    await sleep(delay)
    assert.equal(w.child.exitCode, null, `writer died on its own (kill ${i}, delays ${delays}): ${w.stderr()}`)
    w.child.kill('SIGKILL')
    const [, signal] = await w.exited
    assert.equal(signal, 'SIGKILL')

    const store = await ChainStore.open(dir, { genesis })
    try {
      const r = await checkStoreInvariants(store)
      t.diagnostic(`kill ${i} after ${delay} ms: ${JSON.stringify(r)}`)
      assert.ok(r.highestSynced > lastSynced, `the writer made progress (kill ${i}: ${r.highestSynced} after ${lastSynced})`)
      assert.ok(r.highestExecuted >= lastExecuted)
      if (r.highestExecuted < r.highestSynced) sawLag = true
      if (r.epochs > 1) sawEpochChange = true
      lastSynced = r.highestSynced
      lastExecuted = r.highestExecuted
    } finally {
      await store.close()
    }
  }
  t.diagnostic(`kill delays (ms): ${delays.join(', ')}; a kill left executed < synced: ${sawLag}`)
  assert.ok(sawEpochChange, 'the run crossed at least one epoch change')

  // the producer resumes in this process: executes what the crash left unexecuted, then goes on
  const store = await ChainStore.open(dir, { genesis })
  t.after(async () => { await store.close() })
  const executor = new CommitExecutor(store)
  const producer = new DevnetProducer(store, executor, { seed: SEED, ...CRASH_PRODUCER })
  await producer.load()
  assert.equal(store.highestExecuted, store.highestSynced, 'load() executes certified but unexecuted commits')
  const target = store.highestSynced + 10
  await producer.produceUntil(target)
  assert.ok(store.highestSynced >= target)
  assert.equal(store.highestExecuted, store.highestSynced)
  assert.equal(executor.stats.failed, 0, 'no failed effects after resuming')
  await checkStoreInvariants(store)
})

test('the producer resumes when a crash left certified commits unexecuted (deterministic)', { timeout: 30_000 }, async (t) => {
  const dir = tmpDir(t)
  let store = await ChainStore.open(dir, { genesis })
  let executor = new CommitExecutor(store)
  let producer = new DevnetProducer(store, executor, { seed: SEED, ...CRASH_PRODUCER })
  await producer.load()
  // up to just before an end-of-epoch commit, so the "crash" round certifies two commits
  await producer.produceUntil(CRASH_PRODUCER.epochLength - 2)
  // simulate a crash between writing a round and executing what it certified
  const realExecute = executor.execute.bind(executor)
  executor.execute = async () => { throw new Error('crash') }
  await assert.rejects(producer.produceOne(), /crash/)
  executor.execute = realExecute
  await store.close()
  store = await ChainStore.open(dir, { genesis })
  t.after(async () => { await store.close() })
  assert.ok(store.highestExecuted < store.highestSynced, `crash left a lag: ${JSON.stringify(store.getProgress())}`)
  await checkStoreInvariants(store)
  executor = new CommitExecutor(store)
  producer = new DevnetProducer(store, executor, { seed: SEED, ...CRASH_PRODUCER })
  await producer.load()
  await producer.produceUntil(store.highestSynced + CRASH_PRODUCER.epochLength + 2)
  assert.equal(executor.stats.failed, 0)
  const r = await checkStoreInvariants(store)
  assert.ok(r.epochs >= 2)
})
