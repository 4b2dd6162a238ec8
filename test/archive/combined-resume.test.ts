/**
 * The combined bucket + P2P archive download killed with SIGKILL (issue 14, "killed at random points it
 * resumes"): a child process (archive-child.ts with peers) downloads segments from a throttled HTTP
 * archive and from two throttled P2P peers together (src/archive/combined.ts) and is killed while an
 * archive segment is half downloaded, at random delays, and while stored commits wait for execution.
 * After every kill the store reopens consistent and holds nothing unverified: the commits 1..highest
 * synced are the producer's, every stored commit chains from genesis, every block is signed by its
 * committee, each segment's last commit is certified by stored votes of 2f+1, the state is the
 * recomputed root of highest executed (checkStoreInvariants), and highest synced is a segment's last commit (each segment is stored in one
 * batch). The last run ends at the producer's state root; over the runs, both the peers and the archive
 * served segments.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { producerStore, syncNode, testEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { checkCertified, checkStoreInvariants } from '../helpers/invariants.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { ArchiveWriter } from '../../src/archive/writer.ts'
import type { FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import type { FetchBlocks } from '../../src/sync/protocols/fetch-blocks.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(here, 'archive-child.ts')

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

test('combined bucket + P2P archive download killed with SIGKILL at random points resumes to the producer\'s state root', { timeout: 300_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-combined-kill-')
  const { store: ps } = await producerStore(env.dir, 60, { epochLength: 20, txsPerBlock: 20 })
  env.track(ps)
  const dir = path.join(env.dir, 'archive')
  const w = await new ArchiveWriter(ps, dir, { segmentCommits: 5 }).writeClosedEpochs()
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'))
  const boundaries = new Set<number>([0, ...manifest.segments.map((s: { lastCommit: number }) => s.lastCommit)])

  // the archive: 2 KiB every 2 ms, honouring Range (a segment takes a while to arrive)
  const ranges: string[] = []
  // segments the archive sent to the end, commit requests the peers answered
  const served = { archive: 0, peer: 0 }
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
      if (at >= bytes.byteLength) { clearInterval(tick); res.end(); if (file.endsWith('.seg')) served.archive++ }
    }, 2)
    res.on('close', () => clearInterval(tick))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  env.node({ stop: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) } })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  // two peers serving the producer's chain, each answer delayed (so neither source outruns the other)
  const peers: string[] = []
  for (let k = 0; k < 2; k++) {
    const p = env.node(await syncNode(ps, { sync: false }))
    const fc = p.services.fetchCommits as FetchCommits
    const fb = p.services.fetchBlocks as FetchBlocks
    const serveCommits = fc.serve.bind(fc)
    const serveBlocks = fb.serve.bind(fb)
    fc.serve = async (req) => { await sleep(40); served.peer++; return await serveCommits(req) }
    fb.serve = async (req) => { await sleep(40); return await serveBlocks(req) }
    peers.push(p.getMultiaddrs()[0].toString())
  }

  const storeDir = path.join(env.dir, 'store')
  const cacheDir = path.join(env.dir, 'cache')

  /** runs the child; `killWhen(ms since ready, last synced, last executed)` decides when to SIGKILL it */
  const run = async (killWhen?: (sinceReady: number, synced: number, executed: number) => boolean): Promise<{ killed: boolean, out: string }> => {
    const child = spawn(process.execPath, [CHILD, storeDir, cacheDir, url, peers.join(',')], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', d => { out += d })
    child.stderr.setEncoding('utf8').on('data', d => { err = (err + d).slice(-4000) })
    const exited = new Promise<number | null>(resolve => child.on('exit', c => resolve(c)))
    let killed = false
    let ready = 0
    const last = (what: string): number => { const m = [...out.matchAll(new RegExp(`^${what} (\\d+)$`, 'gm'))].pop(); return m === undefined ? -1 : Number(m[1]) }
    const poll = setInterval(() => {
      if (ready === 0 && out.includes('ready')) ready = Date.now()
      if (ready > 0 && killWhen !== undefined && !killed && killWhen(Date.now() - ready, last('synced'), last('executed'))) { killed = true; child.kill('SIGKILL') }
    }, 3)
    const hard = setTimeout(() => child.kill('SIGKILL'), 150_000)
    const code = await exited
    clearInterval(poll); clearTimeout(hard)
    if (!killed) assert.equal(code, 0, `child failed: ${out} ${err}`)
    return { killed, out }
  }
  const partial = (): boolean => existsSync(cacheDir) && readdirSync(cacheDir).some(f => f.endsWith('.part') && statSync(path.join(cacheDir, f)).size > 4096)
  /** the store after a kill: consistent, nothing unverified, the producer's commits; returns highest synced */
  const check = async (what: string): Promise<number> => {
    const s = await ChainStore.open(storeDir)
    try {
      // every stored commit chains from genesis; each segment's last commit is certified by stored,
      // signature-checked votes of 2f+1 (the commits before it are certified through the chain: the
      // votes for a commit are in later blocks, which an archive segment holds only for its last one)
      const r = await checkStoreInvariants(s, { certification: false, rootPerCommit: false })
      for (const b of boundaries) if (b > 0 && b <= s.highestSynced) await checkCertified(s, (await s.getCommit(b))!)
      assert.equal(r.storedCommits, s.highestSynced, `${what}: only synced commits are stored`)
      assert.ok(boundaries.has(s.highestSynced), `${what}: highest synced ${s.highestSynced} is a segment's last commit (one batch per segment)`)
      for (let i = 1; i <= s.highestSynced; i++) assert.equal(hex((await s.getCommitBytes(i))!), hex((await ps.getCommitBytes(i))!), `${what}: commit ${i}`)
      if (s.highestExecuted > 0) assert.equal(hex((await s.getStateRoot(s.highestExecuted))!), hex((await ps.getStateRoot(s.highestExecuted))!), `${what}: the state root of commit ${s.highestExecuted}`)
      t.diagnostic(`${what}: synced ${s.highestSynced}, executed ${s.highestExecuted}`)
      return s.highestSynced
    } finally { await s.close() }
  }

  // 1: killed while an archive segment is half downloaded
  assert.ok((await run(partial)).killed, 'killed mid archive segment')
  let synced = await check('killed mid archive segment')
  // 2-5: killed at random times, and right after a random commit was stored (other segments in flight)
  for (let k = 0; k < 2; k++) {
    const delay = 100 + Math.floor(Math.random() * 2500)
    let r = await run((ms) => ms > delay)
    synced = await check(`killed ${delay} ms after ready`)
    if (!r.killed || synced >= w.highestCommit - 1) break
    const target = synced + 1 + Math.floor(Math.random() * (w.highestCommit - synced - 1))
    r = await run((_ms, s) => s >= target)
    synced = await check(`killed once commit ${target} was stored`)
    if (!r.killed) break
  }
  // 5: killed while stored commits wait for execution (the restart replays them to the executor)
  if (synced < w.highestCommit) {
    const r = await run((_ms, s, e) => s > synced && e < s)
    const at = await check('killed with commits stored and not executed')
    if (r.killed) assert.ok(at > synced, 'it stored segments before the kill')
  }
  // the last run completes
  const last = await run()
  const res = JSON.parse(last.out.trim().split('\n').find(l => l.startsWith('{'))!)
  assert.equal(res.outcome, 'synced', res.error)
  assert.equal(await check('the last run'), w.highestCommit)
  const s = await ChainStore.open(storeDir)
  try {
    assert.equal(s.highestExecuted, w.highestCommit)
    assert.equal(hex((await s.getStateRoot(w.highestCommit))!), hex((await ps.getStateRoot(w.highestCommit))!))
  } finally { await s.close() }
  t.diagnostic(`over the runs: ${served.archive} segments sent whole by the archive, ${served.peer} commit requests answered by the peers, ${ranges.length} Range requests; the last run: ${JSON.stringify(res.sources)}`)
  assert.ok(served.archive > 0 && served.peer > 0, 'the archive and the peers both served')
})
