/**
 * Archive fast sync killed with SIGKILL (issue 14): at random points (while a segment downloads, while
 * it is verified, stored or executed), a child process syncing from a throttled HTTP archive is killed;
 * every time the store reopens consistent (commits 1..highest synced all stored, executed <= synced),
 * a partial segment download resumes with a Range request, and the last run ends at the producer's
 * state root.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { producerStore, testEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { ArchiveWriter } from '../../src/archive/writer.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(here, 'archive-child.ts')

test('archive fast sync killed with SIGKILL at random points resumes to the producer\'s state root', { timeout: 300_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-kill-')
  const { store: ps } = await producerStore(env.dir, 60, { epochLength: 20, txsPerBlock: 20 })
  env.track(ps)
  const dir = path.join(env.dir, 'archive')
  const w = await new ArchiveWriter(ps, dir, { segmentCommits: 10 }).writeClosedEpochs()
  // a static host that sends 2 KiB every 2 ms, honouring Range: a segment takes a while to arrive
  const ranges: string[] = []
  const server: Server = createServer((req, res) => {
    const file = path.join(dir, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname))
    if (!file.startsWith(dir) || !existsSync(file)) { res.writeHead(404).end(); return }
    const bytes = readFileSync(file)
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
    const start = m === null ? 0 : Number(m[1])
    if (m !== null) ranges.push(req.headers.range!)
    res.writeHead(m === null ? 200 : 206, { 'Content-Length': bytes.byteLength - start, ...(m === null ? {} : { 'Content-Range': `bytes ${start}-${bytes.byteLength - 1}/${bytes.byteLength}` }) })
    let at = start
    const tick = setInterval(() => {
      if (res.destroyed) { clearInterval(tick); return }
      res.write(bytes.subarray(at, at + 2048)); at += 2048
      if (at >= bytes.byteLength) { clearInterval(tick); res.end() }
    }, 2)
    res.on('close', () => clearInterval(tick))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  env.node({ stop: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) } })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const storeDir = path.join(env.dir, 'store')
  const cacheDir = path.join(env.dir, 'cache')

  /** runs the child; `killWhen(ms since it printed ready)` decides when to SIGKILL it */
  const run = async (killWhen?: (sinceReady: number) => boolean): Promise<{ killed: boolean, out: string }> => {
    const child = spawn(process.execPath, [CHILD, storeDir, cacheDir, url], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', d => { out += d })
    child.stderr.setEncoding('utf8').on('data', d => { err += d })
    const exited = new Promise<number | null>(resolve => child.on('exit', c => resolve(c)))
    let killed = false
    let ready = 0
    const poll = setInterval(() => {
      if (ready === 0 && out.includes('ready')) ready = Date.now()
      if (ready > 0 && killWhen !== undefined && !killed && killWhen(Date.now() - ready)) { killed = true; child.kill('SIGKILL') }
    }, 3)
    const hard = setTimeout(() => child.kill('SIGKILL'), 150_000)
    const code = await exited
    clearInterval(poll); clearTimeout(hard)
    if (!killed) assert.equal(code, 0, `child failed: ${out} ${err}`)
    return { killed, out }
  }
  const partial = (): boolean => existsSync(cacheDir) && readdirSync(cacheDir).some(f => f.endsWith('.part') && statSync(path.join(cacheDir, f)).size > 4096)
  const check = async (): Promise<number> => {
    const s = await ChainStore.open(storeDir)
    try {
      assert.ok(s.highestExecuted <= s.highestSynced)
      for (let i = 1; i <= s.highestSynced; i++) assert.equal(hex((await s.getCommitBytes(i))!), hex((await ps.getCommitBytes(i))!), `commit ${i}`)
      return s.highestSynced
    } finally { await s.close() }
  }
  // 1: killed while a segment is half downloaded
  assert.ok((await run(partial)).killed)
  await check()
  // 2-4: killed at random times
  for (let k = 0; k < 3; k++) {
    const delay = 100 + Math.floor(Math.random() * 1500)
    const r = await run((ms) => ms > delay)
    await check()
    if (!r.killed) break
  }
  assert.ok(ranges.length > 0, 'a partial segment was resumed with a Range request')
  // the last run completes
  const last = await run()
  const res = JSON.parse(last.out.trim().split('\n').pop()!)
  assert.equal(res.outcome, 'synced', res.error)
  assert.equal(await check(), w.highestCommit)
  const s = await ChainStore.open(storeDir)
  try {
    assert.equal(s.highestExecuted, w.highestCommit)
    assert.equal(hex((await s.getStateRoot(w.highestCommit))!), hex((await ps.getStateRoot(w.highestCommit))!))
  } finally { await s.close() }
})
