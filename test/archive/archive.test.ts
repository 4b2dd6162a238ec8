/**
 * Archives (issue 14): the segment format is a pure function of the chain (two stores synced
 * independently write byte-identical archives), and a fresh node fast-syncs from an archive served
 * over HTTP (with Range) to the producer's state root.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { producerStore, syncNode, testEnv, waitFor } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { ArchiveWriter } from '../../src/archive/writer.ts'
import { ArchiveHttpServer } from '../../src/archive/http-server.ts'
import { HttpArchiveSource } from '../../src/archive/source.ts'
import { decodeSegment, parseManifest, segmentRanges } from '../../src/archive/format.ts'
import { archiveSyncInto } from './helpers.ts'

const files = (dir: string): string[] => {
  const out: string[] = []
  for (const sub of ['', 'segments', 'epochs']) {
    for (const f of readdirSync(path.join(dir, sub), { withFileTypes: true })) if (f.isFile()) out.push(path.join(sub, f.name))
  }
  return out.sort()
}

test('segment ranges: cut at multiples of the segment size and at the epoch end', () => {
  assert.deepEqual(segmentRanges(1, 25, 10), [[1, 10], [11, 20], [21, 25]])
  assert.deepEqual(segmentRanges(26, 43, 10), [[26, 30], [31, 40], [41, 43]])
  // never a cut right before the epoch's last commit
  assert.deepEqual(segmentRanges(1, 21, 10), [[1, 10], [11, 21]])
  assert.deepEqual(segmentRanges(1, 11, 10), [[1, 11]])
  assert.deepEqual(segmentRanges(5, 5, 10), [[5, 5]])
  assert.throws(() => segmentRanges(1, 5, 0), /segment size/)
})

test('two stores synced independently from the same devnet write byte-identical archives', { timeout: 240_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-')
  const { store: ps } = await producerStore(env.dir, 60, { epochLength: 12 })
  env.track(ps)
  const P = env.node(await syncNode(ps, { sync: false }))
  // two nodes with different batch sizes: they store different certifier blocks at their range ends
  const A = await env.store('a')
  const B = await env.store('b')
  const nA = env.node(await syncNode(A, { commitSyncBatchSize: 7 }))
  const nB = env.node(await syncNode(B, { commitSyncBatchSize: 100 }))
  await nA.dial(P.getMultiaddrs()[0])
  await nB.dial(P.getMultiaddrs()[0])
  await waitFor(() => A.highestExecuted >= ps.highestSynced && B.highestExecuted >= ps.highestSynced, 180_000, 'both nodes synced')
  const dirs = { p: path.join(env.dir, 'arch-p'), a: path.join(env.dir, 'arch-a'), b: path.join(env.dir, 'arch-b') }
  const rp = await new ArchiveWriter(ps, dirs.p, { segmentCommits: 5, compression: 'gzip' }).writeClosedEpochs()
  const ra = await new ArchiveWriter(A, dirs.a, { segmentCommits: 5, compression: 'gzip' }).writeClosedEpochs()
  // B writes one epoch at a time (as a node does while epochs close)
  const wb = new ArchiveWriter(B, dirs.b, { segmentCommits: 5, compression: 'gzip' })
  while ((await wb.writeClosedEpochs({ maxEpochs: 1 })).epochs > 0) {}
  assert.ok(rp.epochs >= 4, `the producer closed ${rp.epochs} epochs`)
  assert.equal(ra.highestCommit, rp.highestCommit)
  const fp = files(dirs.p)
  assert.deepEqual(files(dirs.a), fp)
  assert.deepEqual(files(dirs.b), fp)
  for (const f of fp) {
    const want = hex(readFileSync(path.join(dirs.p, f)))
    assert.equal(hex(readFileSync(path.join(dirs.a, f))), want, `${f} of A`)
    assert.equal(hex(readFileSync(path.join(dirs.b, f))), want, `${f} of B`)
  }
  const m = parseManifest(readFileSync(path.join(dirs.p, 'manifest.json')), 'manifest', ps.chainId)
  assert.equal(m.segments[0].firstCommit, 1)
  const seg = decodeSegment(readFileSync(path.join(dirs.p, m.segments[1].name)), m.segments[1].name)
  assert.equal(seg.header.compression, 'gzip')
  assert.equal(seg.body.commits.length, m.segments[1].lastCommit - m.segments[1].firstCommit + 1)
  // writing again adds nothing and changes nothing
  assert.equal((await new ArchiveWriter(ps, dirs.p, { segmentCommits: 5, compression: 'gzip' }).writeClosedEpochs()).epochs, 0)
  await assert.rejects(new ArchiveWriter(ps, dirs.p, { segmentCommits: 6 }).writeClosedEpochs(), /written with 5 commits per segment/)
})

test('a fresh store fast-syncs from an archive over HTTP to the producer\'s state root', { timeout: 120_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-')
  const { store: ps } = await producerStore(env.dir, 80, { epochLength: 15 })
  env.track(ps)
  const dir = path.join(env.dir, 'arch')
  const w = await new ArchiveWriter(ps, dir, { segmentCommits: 8 }).writeClosedEpochs()
  const server = env.node(new ArchiveHttpServer({ dir, host: '127.0.0.1', port: 0 }))
  await server.start()
  const { store, sync } = await archiveSyncInto(env, 'fresh', new HttpArchiveSource(server.url + '/'), { concurrency: 3, maxInflightBytes: 1 })
  const r = await sync.run(AbortSignal.timeout(100_000))
  assert.equal(r.error, undefined)
  assert.equal(r.outcome, 'synced')
  assert.equal(store.highestSynced, w.highestCommit)
  assert.equal(store.highestExecuted, w.highestCommit)
  assert.equal(hex((await store.getStateRoot(w.highestCommit))!), hex((await ps.getStateRoot(w.highestCommit))!))
  for (let i = 1; i <= w.highestCommit; i++) assert.equal(hex((await store.getCommitBytes(i))!), hex((await ps.getCommitBytes(i))!))
  assert.equal(readdirSync(path.join(env.dir, 'fresh-cache')).length, 0, 'the download cache is emptied as segments are stored')
  // the synced store serves the same archive again, byte for byte
  const dir2 = path.join(env.dir, 'arch2')
  await new ArchiveWriter(store, dir2, { segmentCommits: 8 }).writeClosedEpochs()
  assert.deepEqual(files(dir2), files(dir))
})
