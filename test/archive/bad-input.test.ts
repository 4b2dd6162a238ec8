/**
 * Archives from an untrusted bucket (issue 14, "Bad input"): a real HTTP server (node:http with Range,
 * on 127.0.0.1) and a real S3-compatible server (s3rver, on 127.0.0.1) serve truncated, corrupted,
 * reordered or missing segments, manifests that lie about sizes or hashes, another chain's archive,
 * HTTP 403/404/500 and slow responses. Each stops the fast mode with a one-line error naming the
 * object (logged at error), and nothing unverified is stored: the store holds exactly the segments
 * before the bad one, byte for byte the producer's.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, request as httpRequest, type Server } from 'node:http'
import { cpSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { createRequire } from 'node:module'
import { SEED, producerStore, testEnv, type TestEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { ArchiveWriter } from '../../src/archive/writer.ts'
import { ArchiveHttpServer } from '../../src/archive/http-server.ts'
import { HttpArchiveSource, S3ArchiveSource, s3Client } from '../../src/archive/source.ts'
import { uploadArchive } from '../../src/archive/s3-upload.ts'
import { decodeSegment, encodeSegment, jsonBytes, type ArchiveManifest } from '../../src/archive/format.ts'
import { sha256, toHex } from '../../src/crypto/hash.ts'
import { ArchiveSourceError, InvalidArchiveError } from '../../src/errors.ts'
import { archiveSyncInto, recordingLogger } from './helpers.ts'
import type { ArchiveSyncOptions } from '../../src/archive/reader.ts'
import type { ArchiveSource } from '../../src/archive/source.ts'

const require = createRequire(import.meta.url)
const S3rver = require('s3rver')

const SEG = 5

async function archiveOf (env: TestEnv, commits = 40): Promise<{ ps: ChainStore, dir: string, manifest: ArchiveManifest }> {
  const { store: ps } = await producerStore(env.dir, commits, { epochLength: 10 })
  env.track(ps)
  const dir = path.join(env.dir, 'archive')
  await new ArchiveWriter(ps, dir, { segmentCommits: SEG }).writeClosedEpochs()
  return { ps, dir, manifest: JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) }
}

/** A copy of the archive, changed by `mutate`. */
function variant (env: TestEnv, dir: string, name: string, mutate: (d: string, m: ArchiveManifest) => void): string {
  const d = path.join(env.dir, name)
  cpSync(dir, d, { recursive: true })
  const m: ArchiveManifest = JSON.parse(readFileSync(path.join(d, 'manifest.json'), 'utf8'))
  mutate(d, m)
  writeFileSync(path.join(d, 'manifest.json'), jsonBytes(m))
  return d
}

async function serve (env: TestEnv, dir: string): Promise<ArchiveHttpServer> {
  const s = env.node(new ArchiveHttpServer({ dir, host: '127.0.0.1', port: 0 }))
  await s.start()
  return s
}

/** Syncs a fresh store from `source`; checks the outcome and that only verified segments were stored. */
async function expectFailure (env: TestEnv, ps: ChainStore, source: ArchiveSource, name: string, errorClass: Function, message: RegExp, storedUpTo: number, opts: ArchiveSyncOptions = {}): Promise<string[]> {
  const log = recordingLogger()
  const { store, sync } = await archiveSyncInto(env, `store-${name}`, source, opts, { log })
  const r = await sync.run(AbortSignal.timeout(60_000))
  assert.equal(r.outcome, 'failed', `${name}: the sync fails`)
  assert.ok(r.error instanceof errorClass, `${name}: ${r.error?.constructor.name}: ${r.error?.message}`)
  assert.match(r.error!.message, message, name)
  assert.ok(!r.error!.message.includes('\n'), `${name}: one line`)
  const errors = log.lines.filter(l => l.includes(' ERROR '))
  assert.equal(errors.length, 1, `${name}: one error line: ${log.lines.join('')}`)
  assert.ok(errors[0].includes(r.error!.message), `${name}: the error is logged`)
  assert.equal(store.highestSynced, storedUpTo, `${name}: stored up to commit ${storedUpTo}`)
  for (let i = 1; i <= store.highestSynced; i++) assert.equal(hex((await store.getCommitBytes(i))!), hex((await ps.getCommitBytes(i))!))
  assert.equal(await store.getCommitBytes(storedUpTo + 1), undefined, `${name}: nothing past commit ${storedUpTo}`)
  return log.lines
}

test('bad archives over HTTP: each stops the fast mode naming the object, nothing unverified is stored', { timeout: 240_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-bad-')
  const { ps, dir, manifest } = await archiveOf(env)
  const s = manifest.segments
  assert.ok(s.length >= 6)
  const bad = s[2]
  const before = s[1].lastCommit
  const url = (d: ArchiveHttpServer): HttpArchiveSource => new HttpArchiveSource(d.url)
  const nameRe = new RegExp(bad.name.replace(/[.]/g, '\\.'))

  await t.test('truncated segment', async () => {
    const d = variant(env, dir, 'truncated', (d) => { truncateSync(path.join(d, bad.name), bad.size - 100) })
    await expectFailure(env, ps, url(await serve(env, d)), 'truncated', ArchiveSourceError, new RegExp(`${nameRe.source} ended after ${bad.size - 100} of the ${bad.size} bytes`), before, { attempts: 1 })
  })
  await t.test('corrupted segment (manifest hash unchanged)', async () => {
    const d = variant(env, dir, 'corrupted', (d) => {
      const f = path.join(d, bad.name); const b = readFileSync(f); b[b.length >> 1] ^= 0xff; writeFileSync(f, b)
    })
    await expectFailure(env, ps, url(await serve(env, d)), 'corrupted', InvalidArchiveError, new RegExp(`${nameRe.source}: sha256 .* is not the manifest's`), before)
  })
  await t.test('corrupted segment with a manifest that lists its hash (the bucket lies consistently)', async () => {
    const d = variant(env, dir, 'corrupted-listed', (d, m) => {
      const f = path.join(d, bad.name); const b = readFileSync(f); b[b.length - 200] ^= 0x01; writeFileSync(f, b)
      m.segments[2].sha256 = toHex(sha256(b))
    })
    await expectFailure(env, ps, url(await serve(env, d)), 'corrupted-listed', InvalidArchiveError, nameRe, before)
  })
  await t.test('a segment whose blocks are not the ones its commits reference', async () => {
    const d = variant(env, dir, 'swapped-blocks', (d, m) => {
      const f = path.join(d, bad.name)
      const seg = decodeSegment(readFileSync(f), bad.name)
      const other = decodeSegment(readFileSync(path.join(d, s[1].name)), s[1].name)
      seg.body.blocks[0] = other.body.blocks[0]
      const b = encodeSegment({ ...seg.header, compression: 'none' }, seg.body)
      writeFileSync(f, b)
      m.segments[2].sha256 = toHex(sha256(b)); m.segments[2].size = b.byteLength
    })
    await expectFailure(env, ps, url(await serve(env, d)), 'swapped-blocks', InvalidArchiveError, new RegExp(`${nameRe.source}: commit ${bad.firstCommit}: block .* where the commit references`), before)
  })
  await t.test('reordered segments in the manifest', async () => {
    const d = variant(env, dir, 'reordered', (_d, m) => { [m.segments[2], m.segments[3]] = [m.segments[3], m.segments[2]] })
    await expectFailure(env, ps, url(await serve(env, d)), 'reordered', InvalidArchiveError, /manifest\.json: segment .* starts at commit \d+, expected \d+ \(missing or reordered segments\)/, 0)
  })
  await t.test('a segment served under another segment\'s name (listed with its hash)', async () => {
    const d = variant(env, dir, 'renamed', (d, m) => {
      cpSync(path.join(d, s[3].name), path.join(d, bad.name))
      m.segments[2].sha256 = s[3].sha256; m.segments[2].size = s[3].size
    })
    await expectFailure(env, ps, url(await serve(env, d)), 'renamed', InvalidArchiveError, new RegExp(`${nameRe.source}: its header \\(epoch \\d+, commits ${s[3].firstCommit}\\.\\.${s[3].lastCommit}\\) is not what the manifest lists`), before)
  })
  await t.test('missing segment (HTTP 404)', async () => {
    const d = variant(env, dir, 'missing', (d) => { rmSync(path.join(d, bad.name)) })
    await expectFailure(env, ps, url(await serve(env, d)), 'missing', ArchiveSourceError, new RegExp(`${nameRe.source}: HTTP 404`), before, { attempts: 2 })
  })
  await t.test('a manifest that lists a smaller size', async () => {
    const d = variant(env, dir, 'small', (_d, m) => { m.segments[2].size -= 10 })
    await expectFailure(env, ps, url(await serve(env, d)), 'small', InvalidArchiveError, new RegExp(`${nameRe.source} is larger than the ${bad.size - 10} bytes the manifest lists`), before)
  })
  await t.test('a manifest that lists a larger size', async () => {
    const d = variant(env, dir, 'large', (_d, m) => { m.segments[2].size += 10 })
    await expectFailure(env, ps, url(await serve(env, d)), 'large', ArchiveSourceError, new RegExp(`${nameRe.source} ended after ${bad.size} of the ${bad.size + 10} bytes`), before, { attempts: 1 })
  })
  await t.test('an archive of another chain', async () => {
    const { store: other } = await producerStore(path.join(env.dir, 'other'), 12, { epochLength: 10, genesis: createGenesis({ seed: SEED, validators: 4, accounts: 51, initialBalance: 1e9, embeddingDim: 8 }) })
    env.track(other)
    const od = path.join(env.dir, 'other-archive')
    await new ArchiveWriter(other, od, { segmentCommits: SEG }).writeClosedEpochs()
    await expectFailure(env, ps, url(await serve(env, od)), 'other-chain', InvalidArchiveError, /manifest\.json is an archive of chain [0-9a-f]+…, not of this chain/, 0)
    // its segments under this chain's manifest: the header names the other chain
    const d = variant(env, dir, 'foreign-segment', (d, m) => {
      const om: ArchiveManifest = JSON.parse(readFileSync(path.join(od, 'manifest.json'), 'utf8'))
      cpSync(path.join(od, om.segments[0].name), path.join(d, s[0].name))
      m.segments[0].sha256 = om.segments[0].sha256; m.segments[0].size = om.segments[0].size
    })
    await expectFailure(env, ps, url(await serve(env, d)), 'foreign-segment', InvalidArchiveError, new RegExp(`${s[0].name.replace(/[.]/g, '\\.')}: a segment of chain [0-9a-f]+…, not of this chain`), 0)
  })
})

/** An HTTP server in front of an archive server that answers `fault(path, n)` (n: the path's request count). */
async function faultyServer (env: TestEnv, upstream: ArchiveHttpServer, fault: (p: string, n: number) => 'ok' | 'stall' | 'cut' | number): Promise<string> {
  const counts = new Map<string, number>()
  const server: Server = createServer((req, res) => {
    const p = req.url ?? '/'
    const n = (counts.get(p) ?? 0) + 1
    counts.set(p, n)
    const f = fault(p, n)
    if (f === 'stall') { res.writeHead(200, { 'Content-Length': 1_000_000 }); res.flushHeaders(); return }
    if (f === 'cut') {
      // the first half of the object, then nothing more
      const file = readFileSync(path.join(upstream.dir, p.slice(1)))
      res.writeHead(200, { 'Content-Length': file.byteLength })
      res.write(file.subarray(0, file.byteLength >> 1))
      return
    }
    if (typeof f === 'number') { res.writeHead(f).end(); return }
    const up = httpRequest({ host: '127.0.0.1', port: upstream.port, path: p, method: req.method, headers: req.headers.range !== undefined ? { range: req.headers.range } : {} }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers)
      ur.pipe(res)
    })
    up.on('error', () => res.destroy())
    up.end()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  env.node({ stop: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) } })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

test('HTTP 403, 500 and slow responses: retried, then a one-line error naming the object; a partial download resumes by Range', { timeout: 240_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-http-')
  const { ps, dir, manifest } = await archiveOf(env, 30)
  const s = manifest.segments
  const upstream = await serve(env, dir)
  const bad = s[2]
  const before = s[1].lastCommit

  await t.test('403 on a segment', async () => {
    const u = await faultyServer(env, upstream, (p) => p.endsWith(bad.name) ? 403 : 'ok')
    const lines = await expectFailure(env, ps, new HttpArchiveSource(u), '403', ArchiveSourceError, new RegExp(`${u}/${bad.name.replace(/[.]/g, '\\.')}: HTTP 403`), before, { attempts: 2 })
    assert.ok(lines.some(l => l.includes(' WARN ') && l.includes('attempt 1 of 2')), 'the retry is logged at warn')
  })
  await t.test('500 on the manifest, then it recovers: the sync completes', async () => {
    const u = await faultyServer(env, upstream, (p, n) => p.endsWith('manifest.json') && n <= 2 ? 500 : 'ok')
    const log = recordingLogger()
    const { store, sync } = await archiveSyncInto(env, '500', new HttpArchiveSource(u), { attempts: 3 }, { log })
    const r = await sync.run(AbortSignal.timeout(60_000))
    assert.equal(r.outcome, 'synced', r.error?.message)
    assert.equal(store.highestExecuted, manifest.highestCommit)
    assert.equal(log.lines.filter(l => l.includes(' WARN ') && l.includes('HTTP 500')).length, 2)
  })
  await t.test('a slow segment times out', async () => {
    const u = await faultyServer(env, upstream, (p) => p.endsWith(bad.name) ? 'stall' : 'ok')
    await expectFailure(env, ps, new HttpArchiveSource(u), 'slow', ArchiveSourceError, new RegExp(`${bad.name.replace(/[.]/g, '\\.')}: read aborted`), before, { attempts: 2, requestTimeoutMs: 400 })
  })
  await t.test('a download cut off mid-segment resumes with a Range request', async () => {
    const ranges: string[] = []
    const u = await faultyServer(env, upstream, (p, n) => {
      if (p.endsWith(bad.name) && n === 1) return 'cut'
      return 'ok'
    })
    // record the Range headers the upstream sees
    const orig = (upstream as any).handle.bind(upstream)
    ;(upstream as any).handle = (req: any, res: any) => { if (req.url.endsWith(bad.name)) ranges.push(String(req.headers.range ?? '')); orig(req, res) }
    const { store, sync } = await archiveSyncInto(env, 'resume-range', new HttpArchiveSource(u), { attempts: 3, requestTimeoutMs: 400 })
    const r = await sync.run(AbortSignal.timeout(60_000))
    ;(upstream as any).handle = orig
    assert.equal(r.outcome, 'synced', r.error?.message)
    assert.equal(store.highestExecuted, manifest.highestCommit)
    assert.deepEqual(ranges, [`bytes=${bad.size >> 1}-`], 'the second attempt asks for the rest after the half received')
    assert.equal(hex((await store.getStateRoot(manifest.highestCommit))!), hex((await ps.getStateRoot(manifest.highestCommit))!))
  })
})

test('an S3-compatible bucket (s3rver): upload, fast sync, never overwrite, bad objects named by key', { timeout: 240_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-s3-')
  const { ps, dir, manifest } = await archiveOf(env, 30)
  const s3srv = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: path.join(env.dir, 's3rver'), configureBuckets: [{ name: 'soma-archive' }] })
  const addr = await s3srv.run()
  env.node({ stop: async () => { await s3srv.close() } })
  const settings = { endpoint: `http://127.0.0.1:${addr.port}`, region: 'us-east-1' }
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER'
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER'
  const log = recordingLogger()
  const up = await uploadArchive(dir, 's3://soma-archive/chain/a', settings, log)
  assert.equal(up.uploaded, manifest.segments.length + manifest.epochs.length + 1)
  // again: every finished object is kept (HEAD, same size and ETag), only the manifest is put
  const again = await uploadArchive(dir, 's3://soma-archive/chain/a', settings, log)
  assert.equal(again.skipped, manifest.segments.length + manifest.epochs.length)
  assert.equal(again.uploaded, 1)

  const src = await S3ArchiveSource.create('s3://soma-archive/chain/a', settings)
  env.node({ stop: () => { src.close() } })
  const { store, sync } = await archiveSyncInto(env, 's3-fresh', src)
  const r = await sync.run(AbortSignal.timeout(60_000))
  assert.equal(r.outcome, 'synced', r.error?.message)
  assert.equal(store.highestExecuted, manifest.highestCommit)
  assert.equal(hex((await store.getStateRoot(manifest.highestCommit))!), hex((await ps.getStateRoot(manifest.highestCommit))!))

  // a finished object replaced with other bytes in the bucket: the uploader refuses to overwrite it,
  // the reader names it by key
  const { client, sdk } = await s3Client(settings)
  const seg = manifest.segments[2]
  const body = readFileSync(path.join(dir, seg.name)); body[100] ^= 0xff
  await client.send(new sdk.PutObjectCommand({ Bucket: 'soma-archive', Key: `chain/a/${seg.name}`, Body: body }))
  await assert.rejects(uploadArchive(dir, 's3://soma-archive/chain/a', settings, log), (err: any) => err instanceof InvalidArchiveError && new RegExp(`s3://soma-archive/chain/a/${seg.name.replace(/[.]/g, '\\.')} exists with other bytes`).test(err.message))
  await expectFailure(env, ps, src, 's3-corrupt', InvalidArchiveError, new RegExp(`s3://soma-archive/chain/a/${seg.name.replace(/[.]/g, '\\.')}: sha256`), manifest.segments[1].lastCommit)
  // a missing object
  await client.send(new sdk.DeleteObjectCommand({ Bucket: 'soma-archive', Key: `chain/a/${seg.name}` }))
  await expectFailure(env, ps, src, 's3-missing', ArchiveSourceError, new RegExp(`s3://soma-archive/chain/a/${seg.name.replace(/[.]/g, '\\.')}: HTTP 404 NoSuchKey`), manifest.segments[1].lastCommit, { attempts: 1 })
  // a prefix with nothing: the manifest is named
  await expectFailure(env, ps, src instanceof S3ArchiveSource ? await S3ArchiveSource.create('s3://soma-archive/nothing', settings) : src, 's3-empty', ArchiveSourceError, /s3:\/\/soma-archive\/nothing\/manifest\.json: HTTP 404/, 0, { attempts: 1 })
  client.destroy()
})
