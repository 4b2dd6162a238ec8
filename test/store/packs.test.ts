/**
 * PackStore (src/store/packs.ts): chunk bytes in append-only pack files, indexed in LevelDB. Reads and
 * writes, roll-over, the tail check at open (unindexed tail truncated, a torn or damaged tail blob
 * dropped, a pack without indexed blobs deleted), collection and compaction after deletions, the move of
 * schema-1 chunk rows out of LevelDB, and kill -9 of a process writing packs.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readdirSync, statSync, truncateSync, appendFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import path from 'node:path'
import { createGenesis } from '../../src/chain/genesis.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { Bucket, Keys, META_SCHEMA, u64 } from '../../src/store/keys.ts'
import { PACK_HEADER_BYTES, PACK_RECORD_HEADER_BYTES, PackKeys, packFileName } from '../../src/store/packs.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { tmpDir } from '../helpers/tmp.ts'
import { hex } from '../helpers/chain.ts'
import { overwriteBlob, packPath } from '../helpers/packs.ts'
import { PACK_WRITER_GENESIS, PACK_WRITER_MAX_PACK_BYTES } from '../helpers/pack-writer.ts'

const genesis = createGenesis({ seed: 'packs', validators: 4, accounts: 10, initialBalance: 1e9, embeddingDim: 8 })

function blob (n: number, len = 1000): { hash: Uint8Array, bytes: Uint8Array } {
  const bytes = new Uint8Array(len)
  for (let i = 0; i < len; i++) bytes[i] = (n * 31 + i * 7) & 0xff
  bytes[0] = n & 0xff; bytes[1] = n >> 8
  return { hash: sha256(bytes), bytes }
}

interface Logged { level: string, msg: string }
function logSink (): { log: { info: (m: string, ...a: unknown[]) => void, warn: (m: string, ...a: unknown[]) => void }, lines: Logged[] } {
  const lines: Logged[] = []
  const fmt = (m: string, a: unknown[]): string => { let i = 0; return m.replace(/%[sdo]/g, () => String(a[i++])) }
  return { lines, log: { info: (m, ...a) => lines.push({ level: 'info', msg: fmt(m, a) }), warn: (m, ...a) => lines.push({ level: 'warn', msg: fmt(m, a) }) } }
}

function packFiles (dir: string): string[] {
  return readdirSync(path.join(dir, 'packs')).filter(f => f.endsWith('.pack')).sort()
}

/** Every indexed blob reads back and hashes to its key; every pack file ends at its last indexed blob. */
async function checkPacks (store: ChainStore): Promise<{ blobs: number, packs: number }> {
  const ends = new Map<number, number>()
  let blobs = 0
  for await (const e of store.packs.entries()) {
    const bytes = await store.packs.read(e.loc)
    assert.ok(bytes !== undefined, `blob ${hex(e.hash)} reads back`)
    assert.equal(hex(sha256(bytes)), hex(e.hash), `blob ${hex(e.hash)} is intact`)
    assert.ok(await store.db.get(PackKeys.record(e.loc.pack, e.loc.offset)) !== undefined, 'its record row exists')
    ends.set(e.loc.pack, Math.max(ends.get(e.loc.pack) ?? 0, e.loc.offset + e.loc.length))
    blobs++
  }
  for (const f of packFiles(store.dir)) {
    const id = parseInt(f, 16)
    assert.ok(ends.has(id), `pack ${f} has indexed blobs (else it is deleted at open)`)
    assert.equal(statSync(path.join(store.dir, 'packs', f)).size, ends.get(id), `pack ${f} ends at its last indexed blob`)
  }
  return { blobs, packs: ends.size }
}

test('packs: commit, read back, skip stored blobs, roll over at maxPackBytes', async (t) => {
  const dir = tmpDir(t)
  const store = await ChainStore.open(dir, { genesis, maxPackBytes: 8192 })
  t.after(async () => { await store.close() })
  const blobs = Array.from({ length: 20 }, (_, i) => blob(i))
  assert.equal(await store.packs.commit(store.batch(), blobs.slice(0, 10)), 10)
  // already stored ones are skipped, the batch is written anyway
  const batch = store.batch().put(Keys.meta('x'), Uint8Array.of(1))
  assert.equal(await store.packs.commit(batch, blobs), 10)
  assert.equal(hex((await store.db.get(Keys.meta('x')))!), '01')
  assert.equal(await store.packs.count(), 20)
  const got = await store.packs.getMany([...blobs.map(b => b.hash), sha256(Uint8Array.of(9))])
  blobs.forEach((b, i) => { assert.equal(hex(got[i]!), hex(b.bytes), `blob ${i}`) })
  assert.equal(got[20], undefined)
  // 20 records of 1036 bytes in packs of at most 8 KiB: 7 per pack, 3 packs
  assert.equal(packFiles(dir).length, 3)
  const r = await checkPacks(store)
  assert.equal(r.blobs, 20)
  // a blob larger than a pack gets a pack of its own
  const big = blob(99, 20_000)
  await store.packs.commit(store.batch(), [big])
  assert.equal(hex((await store.packs.get(big.hash))!), hex(big.bytes))
  assert.equal(packFiles(dir).length, 4)
})

test('packs: at open a torn tail is truncated, a damaged or cut tail blob dropped, an empty pack deleted', async (t) => {
  const dir = tmpDir(t)
  let store = await ChainStore.open(dir, { genesis, maxPackBytes: 1 << 20 })
  const blobs = Array.from({ length: 6 }, (_, i) => blob(i))
  await store.packs.commit(store.batch(), blobs.slice(0, 3))
  await store.packs.commit(store.batch(), blobs.slice(3))
  const [last] = await store.packs.locate([blobs[5].hash])
  await store.close()
  const file = path.join(dir, 'packs', packFileName(last!.pack))
  const end = last!.offset + last!.length
  assert.equal(statSync(file).size, end)

  // 1. bytes appended after the last indexed blob (a write cut off before its index row): truncated
  appendFileSync(file, Buffer.alloc(5000, 7))
  let sink = logSink()
  store = await ChainStore.open(dir, { genesis, logger: sink.log })
  assert.equal(store.packs.recovery.truncatedBytes, 5000)
  assert.equal(store.packs.recovery.droppedRows, 0)
  assert.ok(sink.lines.some(l => l.level === 'info' && /5000 unindexed tail bytes truncated/.test(l.msg)), JSON.stringify(sink.lines))
  assert.equal(statSync(file).size, end)
  assert.equal((await checkPacks(store)).blobs, 6)
  await store.close()

  // 2. the file cut inside the last indexed blob (the bytes never reached the disk): that row dropped
  truncateSync(file, end - 10)
  sink = logSink()
  store = await ChainStore.open(dir, { genesis, logger: sink.log })
  assert.equal(store.packs.recovery.droppedRows, 1)
  assert.ok(sink.lines.some(l => l.level === 'warn' && l.msg.includes(hex(blobs[5].hash)) && /ends at byte/.test(l.msg)), JSON.stringify(sink.lines))
  assert.equal(await store.packs.get(blobs[5].hash), undefined)
  // what is left ends at blob 4, its tail (blob 5's cut remains) truncated
  assert.equal((await checkPacks(store)).blobs, 5)

  // 3. the last indexed blob's bytes damaged: dropped (its hash is checked at open)
  const b4 = blobs[4]
  const damaged = new Uint8Array(b4.bytes); damaged[500] ^= 1
  await overwriteBlob(store, b4.hash, damaged)
  await store.close()
  sink = logSink()
  store = await ChainStore.open(dir, { genesis, logger: sink.log })
  assert.equal(store.packs.recovery.droppedRows, 1)
  assert.ok(sink.lines.some(l => l.level === 'warn' && l.msg.includes(hex(b4.hash)) && /do not hash/.test(l.msg)), JSON.stringify(sink.lines))
  assert.equal((await checkPacks(store)).blobs, 4)
  // a dropped blob can be stored again
  await store.packs.commit(store.batch(), [b4])
  assert.equal(hex((await store.packs.get(b4.hash))!), hex(b4.bytes))
  await store.close()

  // 4. a pack file without any indexed blob (a writer killed before its first index row): deleted
  const orphan = path.join(dir, 'packs', packFileName(77))
  appendFileSync(orphan, Buffer.alloc(PACK_HEADER_BYTES + PACK_RECORD_HEADER_BYTES + 100))
  store = await ChainStore.open(dir, { genesis })
  t.after(async () => { await store.close() })
  assert.equal(existsSync(orphan), false)
  assert.equal(store.packs.recovery.deletedPacks, 1)
  // new packs are numbered after every pack seen
  await store.packs.commit(store.batch(), [blob(50)])
  assert.equal((await store.packs.locate([blob(50).hash]))[0]!.pack, 78)
  assert.equal((await checkPacks(store)).blobs, 6)
})

test('packs: collect deletes packs without live blobs and compacts mostly-dead ones', async (t) => {
  const dir = tmpDir(t)
  const sink = logSink()
  const store = await ChainStore.open(dir, { genesis, maxPackBytes: 10 * 1036 + PACK_HEADER_BYTES, logger: sink.log })
  t.after(async () => { await store.close() })
  const blobs = Array.from({ length: 30 }, (_, i) => blob(i))
  await store.packs.commit(store.batch(), blobs)
  assert.deepEqual(packFiles(dir).map(f => parseInt(f, 16)), [1, 2, 3])
  // pack 1 loses every blob, pack 2 eight of ten, pack 3 (active) half
  const del = store.batch()
  await store.packs.del(del, [...blobs.slice(0, 18), ...blobs.slice(20, 25)].map(b => b.hash))
  await del.write()
  const c = await store.packs.collect()
  assert.equal(c.deletedPacks, 1)
  assert.equal(c.compactedPacks, 1)
  assert.equal(c.movedBlobs, 2)
  assert.ok(sink.lines.some(l => /pack 00000001\.pack deleted/.test(l.msg)), JSON.stringify(sink.lines))
  assert.ok(sink.lines.some(l => /pack 00000002\.pack compacted: 2 live blobs/.test(l.msg)), JSON.stringify(sink.lines))
  // the active pack is never collected
  assert.deepEqual(packFiles(dir).map(f => parseInt(f, 16)), [3, 4])
  for (const b of [...blobs.slice(18, 20), ...blobs.slice(25)]) assert.equal(hex((await store.packs.get(b.hash))!), hex(b.bytes))
  for (const b of blobs.slice(0, 18)) assert.equal(await store.packs.get(b.hash), undefined)
  assert.equal(await store.packs.count(), 7)
})

test('packs: a schema-1 store\'s chunk rows move out of LevelDB into a pack at open', async (t) => {
  const dir = tmpDir(t)
  let store = await ChainStore.open(dir, { genesis })
  const blobs = Array.from({ length: 100 }, (_, i) => blob(i, 300))
  const b = store.db.batch()
  for (const x of blobs) b.put(Uint8Array.of(Bucket.LEGACY_CHUNK, ...x.hash), x.bytes)
  b.put(Keys.meta(META_SCHEMA), u64(1))
  await b.write()
  await store.close()
  const sink = logSink()
  store = await ChainStore.open(dir, { genesis, logger: sink.log })
  t.after(async () => { await store.close() })
  assert.equal(await store.countBucket(Bucket.LEGACY_CHUNK), 0)
  assert.equal(await store.packs.count(), 100)
  for (const x of blobs) assert.equal(hex((await store.packs.get(x.hash))!), hex(x.bytes))
  assert.equal(hex((await store.db.get(Keys.meta(META_SCHEMA)))!), hex(u64(2)))
  assert.ok(sink.lines.some(l => /100 snapshot chunks moved from LevelDB into pack files/.test(l.msg)))
})

test('packs: every indexed blob is intact and no pack has an unindexed tail after kill -9 of a writing process', { timeout: 120_000 }, async (t) => {
  const dir = tmpDir(t)
  const WRITER = fileURLToPath(new URL('../helpers/pack-writer.ts', import.meta.url))
  const g = createGenesis({ seed: 'pack-writer', ...PACK_WRITER_GENESIS })
  let total = 0
  for (let i = 0; i < 3; i++) {
    const child = spawn(process.execPath, [WRITER, dir, 'pack-writer'], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
    let err = ''
    child.stderr.on('data', (d: Buffer) => { err += d.toString() })
    const exited = once(child, 'exit')
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`writer not ready after 30 s: ${err}`)) }, 30_000)
      child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) { clearTimeout(timer); resolve() } })
      void exited.then(([code]) => { clearTimeout(timer); reject(new Error(`writer exited (${code}): ${err}`)) })
    })
    await sleep(400 + Math.floor(Math.random() * 800))
    assert.equal(child.exitCode, null, `writer died on its own: ${err}`)
    child.kill('SIGKILL')
    const [, sig] = await exited
    assert.equal(sig, 'SIGKILL')
    const store = await ChainStore.open(dir, { genesis: g, maxPackBytes: PACK_WRITER_MAX_PACK_BYTES })
    try {
      const r = await checkPacks(store)
      t.diagnostic(`kill ${i}: ${r.blobs} blobs in ${r.packs} packs; recovery ${JSON.stringify(store.packs.recovery)}`)
      assert.ok(r.blobs > total, `the writer made progress (${r.blobs} after ${total})`)
      assert.equal(store.packs.recovery.droppedRows, 0, 'a kill -9 never leaves an indexed blob torn')
      total = r.blobs
    } finally {
      await store.close()
    }
  }
})
