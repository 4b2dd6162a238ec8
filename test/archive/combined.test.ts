/**
 * The combined download (issue 14): archive and P2P peers fetch segments together, by measured
 * throughput with work stealing. A slow archive does not set the pace (peers take most ranges), a
 * corrupted archive segment is fetched from peers instead, a lying peer is dropped; every run ends at
 * the producer's state root.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { plainNode, producerStore, syncNode, testEnv, waitFor, type TestEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { fetchCommits, type FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import { fetchBlocks } from '../../src/sync/protocols/fetch-blocks.ts'
import { ArchiveWriter } from '../../src/archive/writer.ts'
import { HttpArchiveSource } from '../../src/archive/source.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { archiveSyncInto, recordingLogger } from './helpers.ts'

/** A static host for `dir` that sends `chunk` bytes every `everyMs` ms (with Range). */
async function slowHost (env: TestEnv, dir: string, chunk: number, everyMs: number): Promise<string> {
  const server: Server = createServer((req, res) => {
    const file = path.join(dir, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname))
    if (!file.startsWith(dir) || !existsSync(file)) { res.writeHead(404).end(); return }
    const bytes = readFileSync(file)
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
    const start = m === null ? 0 : Number(m[1])
    res.writeHead(m === null ? 200 : 206, { 'Content-Length': bytes.byteLength - start })
    let at = start
    const tick = setInterval(() => {
      res.write(bytes.subarray(at, at + chunk)); at += chunk
      if (at >= bytes.byteLength) { clearInterval(tick); res.end() }
    }, everyMs)
    res.on('close', () => clearInterval(tick))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  env.node({ stop: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) } })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

test('combined download: archive and peers together, a slow or bad source never stops it', { timeout: 240_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-combined-')
  const { store: ps } = await producerStore(env.dir, 60, { epochLength: 20 })
  env.track(ps)
  const dir = path.join(env.dir, 'archive')
  const w = await new ArchiveWriter(ps, dir, { segmentCommits: 5 }).writeClosedEpochs()
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'))
  const p1 = env.node(await syncNode(ps, { sync: false }))
  const p2 = env.node(await syncNode(ps, { sync: false }))
  const reader = env.node(await plainNode({ fetchCommits: fetchCommits({}), fetchBlocks: fetchBlocks({}) }))
  await reader.dial(p1.getMultiaddrs()[0])
  await reader.dial(p2.getMultiaddrs()[0])
  await waitFor(() => reader.getPeers().length === 2, 10_000, 'two peers')
  const combined = () => ({ peers: () => reader.getPeers(), fetchCommits: reader.services.fetchCommits, fetchBlocks: reader.services.fetchBlocks, maxBlocksPerFetch: 100 })
  const sameRoot = async (store: any): Promise<void> => {
    assert.equal(store.highestExecuted, w.highestCommit)
    assert.equal(hex((await store.getStateRoot(w.highestCommit))!), hex((await ps.getStateRoot(w.highestCommit))!))
  }

  await t.test('a slow archive: the peers take most ranges', async () => {
    const url = await slowHost(env, dir, 512, 20)
    const { store, sync } = await archiveSyncInto(env, 'slow', new HttpArchiveSource(url), { concurrency: 2 }, {})
    ;(sync as any).deps.combined = combined()
    const r = await sync.run(AbortSignal.timeout(120_000))
    assert.equal(r.outcome, 'synced', r.error?.message)
    await sameRoot(store)
    const st = sync.combinedStats!
    const peers = st.filter(s => s.kind === 'peer').reduce((n, s) => n + s.segments, 0)
    const arch = st.filter(s => s.kind === 'archive').reduce((n, s) => n + s.segments, 0)
    assert.equal(peers + arch, manifest.segments.length, JSON.stringify(st))
    assert.ok(peers > arch, `peers delivered ${peers} segments, the slow archive ${arch}`)
  })

  await t.test('a corrupted archive segment comes from the peers', async () => {
    const bad = path.join(env.dir, 'bad')
    ;(await import('node:fs')).cpSync(dir, bad, { recursive: true })
    const seg = manifest.segments[3]
    const f = path.join(bad, seg.name); const b = readFileSync(f); b[b.length >> 1] ^= 1; writeFileSync(f, b)
    const log = recordingLogger()
    const url = await slowHost(env, bad, 1 << 20, 1)
    const { store, sync } = await archiveSyncInto(env, 'corrupt', new HttpArchiveSource(url), { concurrency: 4 }, { log })
    ;(sync as any).deps.combined = { ...combined(), peers: () => [] as any[] }
    // the peers join only after the archive failed its segment: until then the archive is the only source
    let joined = false
    ;(sync as any).deps.combined.peers = () => { joined ||= log.lines.some(l => l.includes(seg.name)); return joined ? reader.getPeers() : [] }
    const r = await sync.run(AbortSignal.timeout(120_000))
    assert.equal(r.outcome, 'synced', r.error?.message)
    await sameRoot(store)
    assert.ok(log.lines.some(l => l.includes(' WARN ') && l.includes(seg.name) && l.includes('sha256')), log.lines.join(''))
  })

  await t.test('a lying peer is dropped, its range fetched elsewhere', async () => {
    const liar = env.node(await syncNode(ps, { sync: false }))
    const lfc = liar.services.fetchCommits as FetchCommits
    const serve = lfc.serve.bind(lfc)
    lfc.serve = async (req) => {
      const res = await serve(req)
      return { ...res, commits: res.commits.map(b => { const c = Codecs.Commit.decode(b); return Codecs.Commit.encode({ ...c, timestampMs: c.timestampMs + 1 }) }) }
    }
    await reader.dial(liar.getMultiaddrs()[0])
    await waitFor(() => reader.getPeers().length === 3, 10_000, 'three peers')
    const log = recordingLogger()
    const url = await slowHost(env, dir, 256, 20)
    const { store, sync } = await archiveSyncInto(env, 'liar', new HttpArchiveSource(url), { concurrency: 1 }, { log })
    ;(sync as any).deps.combined = combined()
    const r = await sync.run(AbortSignal.timeout(120_000))
    assert.equal(r.outcome, 'synced', r.error?.message)
    await sameRoot(store)
    const st = sync.combinedStats!
    assert.ok(st.find(s => s.id === liar.peerId.toString())?.retired, JSON.stringify(st))
    assert.ok(log.lines.some(l => l.includes(' WARN ') && l.includes(`dropped source ${liar.peerId.toString()}`)), log.lines.join(''))
  })
})
