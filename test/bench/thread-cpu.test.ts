/**
 * bench/util.ts threadCpu: the CPU time the benchmarks divide into per-transaction and per-GiB costs
 * must land on the right kind of thread, and a thread that has exited must still be counted.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { once } from 'node:events'
import { threadCpu, cpuDelta } from '../../bench/util.ts'

function burn (ms: number): void {
  const end = performance.now() + ms
  let x = 0
  while (performance.now() < end) x += Math.sqrt(x + 1)
  if (x < 0) throw new Error('unreachable')
}

// a worker that spins for 300 ms of wall time, reports, then stays alive until told to stop
const WORKER = `
const { parentPort } = require('node:worker_threads')
const end = performance.now() + 300
let x = 0
while (performance.now() < end) x += Math.sqrt(x + 1)
parentPort.postMessage('burnt')
parentPort.once('message', () => process.exit(0))
`

test('threadCpu: main-thread, worker-thread and exited-thread time', { skip: !existsSync('/proc/self/task'), timeout: 20_000 }, async () => {
  const t0 = threadCpu()!
  burn(300)
  const t1 = threadCpu()!
  const onMain = cpuDelta(t0, t1)
  // 300 ms of wall time spinning: at least 100 ms of CPU even on a loaded machine, none of it a worker's
  assert.ok(onMain.main >= 0.1, `main thread: ${onMain.main} s`)
  assert.equal(onMain.workers, 0)
  // per-thread and per-process times are rounded to ticks separately: they agree within a few 10 ms ticks
  assert.ok(onMain.total >= onMain.main - 0.05, `total ${onMain.total} s, main ${onMain.main} s`)

  const w = new Worker(WORKER, { eval: true })
  await once(w, 'message')
  const t2 = threadCpu()!
  const alive = cpuDelta(t1, t2)
  assert.ok(alive.workers >= 0.1, `live worker: ${alive.workers} s`)
  assert.ok(alive.main < alive.workers, 'the worker spun, the main thread waited')

  w.postMessage('stop')
  await once(w, 'exit')
  const t3 = threadCpu()!
  const after = cpuDelta(t1, t3)
  // the worker's thread is gone: its time is in `exited` (and `total`), no longer in `workers`
  assert.ok(after.workers < 0.05, `workers after exit: ${after.workers} s`)
  assert.ok(after.exited >= 0.1, `exited: ${after.exited} s`)
  const kinds = after.main + after.workers + after.v8 + after.libuv + after.other + after.exited
  assert.ok(Math.abs(kinds - after.total) < 1e-9, 'the kinds add up to the total')
})

test('threadCpu of a process that does not exist is undefined', () => {
  assert.equal(threadCpu(2 ** 31 - 1), undefined)
})
