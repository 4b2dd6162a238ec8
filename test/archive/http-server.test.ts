/** The archive's read-only HTTP server: GET/HEAD with Range (206/416), nothing outside the archive. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { tmpDir } from '../helpers/tmp.ts'
import { ArchiveHttpServer } from '../../src/archive/http-server.ts'

test('archive HTTP server: ranges, HEAD, 404/405/416/400, no path outside the archive', async (t) => {
  const dir = tmpDir(t)
  mkdirSync(path.join(dir, 'segments'))
  const name = `segments/000000000001-000000000002-${'ab'.repeat(32)}.seg`
  const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251))
  writeFileSync(path.join(dir, name), bytes)
  writeFileSync(path.join(dir, 'manifest.json'), '{}')
  writeFileSync(path.join(dir, 'secret.txt'), 'no')
  const s = new ArchiveHttpServer({ dir, host: '127.0.0.1', port: 0 })
  await s.start()
  t.after(async () => { await s.stop() })
  const get = async (p: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Response> => await fetch(`${s.url}${p}`, { headers, method })
  let r = await get(`/${name}`)
  assert.equal(r.status, 200)
  assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes)
  assert.equal(r.headers.get('accept-ranges'), 'bytes')
  r = await get(`/${name}`, { Range: 'bytes=100-199' })
  assert.equal(r.status, 206)
  assert.equal(r.headers.get('content-range'), 'bytes 100-199/1000')
  assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes.subarray(100, 200))
  r = await get(`/${name}`, { Range: 'bytes=990-' })
  assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes.subarray(990))
  r = await get(`/${name}`, { Range: 'bytes=-10' })
  assert.deepEqual(Buffer.from(await r.arrayBuffer()), bytes.subarray(990))
  r = await get(`/${name}`, { Range: 'bytes=1000-' })
  assert.equal(r.status, 416)
  assert.equal(r.headers.get('content-range'), 'bytes */1000')
  r = await get(`/${name}`, {}, 'HEAD')
  assert.equal(r.status, 200)
  assert.equal(r.headers.get('content-length'), '1000')
  assert.equal((await get('/manifest.json')).headers.get('cache-control'), 'no-cache')
  assert.equal((await get('/secret.txt')).status, 404)
  assert.equal((await get('/segments/../secret.txt')).status, 404)
  assert.equal((await get('/segments/%2e%2e%2fsecret.txt')).status, 404)
  assert.equal((await get('/segments/%E0%A4%A.seg')).status, 400)
  assert.equal((await get('/manifest.json', {}, 'POST')).status, 405)
})
