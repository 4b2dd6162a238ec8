/**
 * The crash campaign of snapshot sync on the pack layout (test/snapshot-sync/crash*.test.ts): runs the
 * syncing child (snapshot-child.ts) until a kill point, checks what the kill left, restarts it on the
 * same data dir, and checks the end (see crash.test.ts for what is checked).
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { testEnv, type TestEnv } from './sync-net.ts'
import { hex } from './chain.ts'
import { checkPacks } from './packs.ts'
import { servedSnapshot, replaceHandler, type SnapshotProducer } from './snapshot-net.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { Bucket, Keys } from '../../src/store/keys.ts'
import { writeGenesisFile } from '../../src/node/genesis-file.ts'
import { sha256, toHex } from '../../src/crypto/hash.ts'
import { LtHash } from '../../src/crypto/lthash.ts'
import { SnapshotKeys } from '../../src/snapshot/store-keys.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { SyncState, SYNC_BUCKETS } from '../../src/snapshot/sync/sync-state.ts'
import { ChunkKind, decodeChunk } from '../../src/snapshot/chunk-format.ts'
import { entriesPartial } from '../../src/snapshot/rebuild.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_CHUNKS } from '../../src/snapshot/protocols/messages.ts'
import type { GenesisBundle } from '../../src/chain/genesis.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.resolve(here, 'snapshot-child.ts')
export const TIP = 35

export async function countSyncRows (store: ChainStore): Promise<number> {
  let n = 0
  for (const b of SYNC_BUCKETS) {
    const [gte, lt] = SnapshotKeys.range(b)
    for await (const _ of store.db.keys({ gte, lt })) n++
  }
  return n
}

export async function bucketHex (store: ChainStore, bucket: number): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for await (const [k, v] of store.iterateBucket(bucket)) out.set(hex(k), hex(v))
  return out
}

/** What a child run printed, as it goes. */
export interface Progress {
  phase: string
  chunks: number
  load: number
  total: number
  entered: string[]
  executed: number
  lines: string[]
}

/** Kill rule: looks at the progress after each line; true = SIGKILL now. */
export type KillWhen = (p: Progress, line: string) => boolean

export interface Campaign {
  env: TestEnv
  g: GenesisBundle
  genesisFile: string
  addr: string
  /** hashes (hex) the server sent since the last reset */
  served: string[]
  /** the producer's tip, its latest snapshot's commit and chunks */
  tip: number
  S: number
  total: number
  rootAtTip: string
  rootAtS: string
  producer: ChainStore
}

/**
 * Runs the child on `dir` until `killWhen` says so (then SIGKILL), until it says it SIGKILLed itself
 * (`selfKill`), or, with neither, until it executed the producer's tip (then it exits through its stdin).
 */
export async function runChild (c: Campaign, dir: string, opts: { snap?: Record<string, unknown>, selfKill?: string }, killWhen?: KillWhen, delayMs?: number): Promise<{ killed: boolean, p: Progress }> {
  const child = spawn(process.execPath, [CHILD, dir, c.genesisFile, c.addr, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'pipe'] })
  let err = ''
  child.stderr.setEncoding('utf8').on('data', d => { err = (err + d).slice(-4000) })
  const p: Progress = { phase: '', chunks: 0, load: 0, total: 0, entered: [], executed: -1, lines: [] }
  let killed = false
  const kill = (): void => { if (!killed) { killed = true; child.kill('SIGKILL') } }
  let buf = ''
  let timer: NodeJS.Timeout | undefined
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 1)
      p.lines.push(line)
      let m
      if ((m = /^phase (\S+) chunks (\d+) (\d+)$/.exec(line)) !== null) { p.phase = m[1]; p.chunks = Number(m[2]); p.total = Number(m[3]) }
      if ((m = /^load (\S+) (\d+) (\d+)$/.exec(line)) !== null) { p.phase = m[1]; p.load = Number(m[2]) }
      if ((m = /^enter (\S+)$/.exec(line)) !== null) { p.phase = m[1]; p.entered.push(m[1]) }
      // a random delay counts from the start of the download (or of the phase a restart resumes, or
      // the end of the sync when it had anchored): the process start is not what is tested
      if (delayMs !== undefined && timer === undefined && /^(enter (chunks|final-check|load|anchor|done)|anchored .*)$/.test(line)) timer = setTimeout(kill, delayMs)
      if ((m = /^executed (\d+)$/.exec(line)) !== null) {
        p.executed = Number(m[1])
        if (p.executed >= c.tip) {
          // done: a run without a kill point exits; one whose kill point lies beyond the sync (a random
          // point after a resumed sync had anchored) is killed now
          if (killWhen === undefined && delayMs === undefined && opts.selfKill === undefined) child.stdin.end()
          else if (opts.selfKill === undefined) kill()
        }
      }
      if (killWhen?.(p, line) === true) kill()
    }
  })
  const code = await new Promise<number | null>((resolve, reject) => {
    const hard = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`the child did not end within 120 s (last lines: ${p.lines.slice(-5).join(' | ')}; stderr: ${err})`)) }, 120_000)
    child.on('exit', (code, signal) => { clearTimeout(hard); clearTimeout(timer); resolve(signal === 'SIGKILL' ? -9 : code) })
  })
  const selfKilled = p.lines.some(l => l.startsWith('killing myself'))
  if (killed || selfKilled) assert.equal(code, -9, 'the child died of SIGKILL')
  else if (killWhen !== undefined || delayMs !== undefined || opts.selfKill !== undefined) assert.fail(`the child ended (code ${code}) before its kill point (last lines: ${p.lines.slice(-5).join(' | ')}; stderr: ${err})`)
  else assert.equal(code, 0, `the child failed: ${err}`)
  return { killed: killed || selfKilled, p }
}

/** What a kill left, checked (see the module comment); returns the chunks stored (hex) and whether it anchored. */
export async function checkAfterKill (c: Campaign, dir: string): Promise<{ have: Set<string>, anchored: boolean, phase?: string, loaded: number }> {
  const store = await ChainStore.open(dir, { genesis: c.g })
  try {
    const packed = await checkPacks(store)
    const state = new SyncState(store)
    const persisted = await state.read()
    const have = new Set<string>()
    for await (const h of state.haves()) have.add(toHex(h.hash))
    const partials = await state.partials([...have].map(h => Buffer.from(h, 'hex')))
    assert.ok(partials.every(x => x !== undefined), 'every stored chunk has its partial state hash')
    for (const h of have) assert.ok(packed.has(h), `stored chunk ${h} is indexed in the packs`)
    const anchored = persisted === undefined && store.highestSynced >= c.S
    let loaded = 0
    if (anchored) {
      // the anchor batch was written: the store is at S with the snapshot's state and chunks
      assert.ok(await new SnapshotStore(store).has(c.S), 'the snapshot is registered')
      assert.equal(hex((await store.getStateRoot(c.S))!), c.rootAtS, 'the state root of S')
      const listing = await new SnapshotStore(store).getListing(c.S)
      assert.deepEqual([...packed].sort(), listing.map(r => toHex(r.hash)).sort(), 'the packs hold exactly the snapshot\'s chunks')
      assert.ok(!await state.stateReplaced(), 'the anchor removed the state-replaced flag')
    } else {
      assert.equal(store.highestExecuted, 0, 'not anchored: nothing executed')
      if (persisted !== undefined) assert.deepEqual([...packed].sort(), [...have].sort(), 'the packs hold exactly the stored chunks')
      else assert.equal(packed.size + have.size, 0, 'no sync begun: no chunk stored')
      if (await state.stateReplaced()) {
        // the state is exactly the entries of the rows below the load cursor, and the accumulator theirs
        const load = await state.load()
        loaded = load.next
        const expected = new Map<string, string>()
        const sum = new LtHash()
        const rows: Uint8Array[] = []
        for await (const [, r] of state.rows(0, load.next)) rows.push(r.hash)
        const raw = await store.packs.getMany(rows)
        raw.forEach((bytes, i) => {
          assert.ok(bytes !== undefined, `loaded chunk ${toHex(rows[i])} is stored`)
          assert.ok(have.has(toHex(rows[i])), `loaded chunk ${toHex(rows[i])} has its HAVE row`)
          const chunk = decodeChunk(bytes)
          for (const e of chunk.entries) expected.set(hex(chunk.kind === ChunkKind.ACCOUNTS ? Keys.account(e.id) : Keys.embedding(e.id)), hex(e.value))
          sum.merge(entriesPartial(chunk))
        })
        const actual = new Map([...await bucketHex(store, Bucket.ACCOUNT), ...await bucketHex(store, Bucket.EMBEDDING)])
        assert.equal(actual.size, expected.size, `state rows (${actual.size}) = entries of the ${load.next} loaded chunks (${expected.size})`)
        assert.deepEqual(actual, expected, 'the state rows are exactly the loaded chunks\' entries')
        assert.equal(hex(load.lthash.checksum()), hex(sum.checksum()), 'the persisted accumulator is the loaded entries\' state hash')
      }
    }
    return { have, anchored, phase: persisted?.phase, loaded }
  } finally {
    await store.close()
  }
}

/**
 * One campaign on a fresh data dir: each step runs the child until its kill point, then checks the
 * store and that the run fetched no chunk stored before it; a last run completes.
 */
export async function campaign (c: Campaign, name: string, steps: Array<{ what: string, opts?: { snap?: Record<string, unknown>, selfKill?: string }, killWhen?: KillWhen, delayMs?: number, expect?: (r: Awaited<ReturnType<typeof checkAfterKill>>, p: Progress) => void }>, final: { snap?: Record<string, unknown> }, log: (s: string) => void): Promise<void> {
  const dir = path.join(c.env.dir, name)
  let before = { have: new Set<string>(), anchored: false, loaded: 0 } as Awaited<ReturnType<typeof checkAfterKill>>
  for (const step of steps) {
    if (before.anchored && step.opts?.selfKill !== undefined) { log(`${name}: anchored already, no kill ${step.what}`); continue }
    c.served.length = 0
    const { killed, p } = await runChild(c, dir, step.opts ?? {}, step.killWhen, step.delayMs)
    assert.ok(killed, `${name}: killed ${step.what}`)
    const again = c.served.filter(h => before.have.has(h))
    assert.equal(again.length, 0, `${name}, killed ${step.what}: ${again.length} chunks stored before the run were fetched again`)
    if (before.anchored) assert.equal(c.served.length, 0, `${name}: nothing fetched once anchored`)
    const after = await checkAfterKill(c, dir)
    log(`${name}: killed ${step.what} (child at ${p.phase}, ${p.chunks}/${p.total} chunks, ${p.load} loaded): persisted ${after.phase ?? (after.anchored ? 'anchored' : 'none')}, ${after.have.size} stored, ${after.loaded} loaded, ${c.served.length} fetched`)
    step.expect?.(after, p)
    // chunks stored stay stored until the anchor (which clears the HAVE rows)
    if (!after.anchored) for (const h of before.have) assert.ok(after.have.has(h), `${name}: chunk ${h} stored before the run is still stored`)
    before = after
  }
  c.served.length = 0
  await runChild(c, dir, final)
  assert.equal(c.served.filter(h => before.have.has(h)).length, 0, `${name}: the last run fetched no chunk stored before it`)
  if (!before.anchored) assert.equal(c.served.length, c.total - before.have.size, `${name}: the last run fetched exactly the missing chunks`)
  else assert.equal(c.served.length, 0)
  const store = await ChainStore.open(dir, { genesis: c.g })
  try {
    assert.ok(store.highestExecuted >= c.tip)
    assert.equal(hex((await store.getStateRoot(c.tip))!), c.rootAtTip, `${name}: the state root at ${c.tip} is the producer's`)
    assert.deepEqual(await bucketHex(store, Bucket.ACCOUNT), await bucketHex(c.producer, Bucket.ACCOUNT))
    assert.deepEqual(await bucketHex(store, Bucket.EMBEDDING), await bucketHex(c.producer, Bucket.EMBEDDING))
    assert.equal(await countSyncRows(store), 0, `${name}: no sync row is left`)
    const packed = await checkPacks(store)
    const listing = await new SnapshotStore(store).getListing(c.S)
    assert.deepEqual([...packed].sort(), listing.map(r => toHex(r.hash)).sort(), `${name}: the packs hold exactly the snapshot's chunks`)
  } finally {
    await store.close()
  }
}

/** A producer at TIP with its latest snapshot, served by a node that records every chunk it sends. */
export async function crashSetup (t: { after: (fn: () => void | Promise<void>) => void }): Promise<{ c: Campaign, P: SnapshotProducer }> {
  const env = testEnv(t, 'soma-snap-crash-')
  const { g, P, S, total, server } = await servedSnapshot(env, TIP)
  const served: string[] = []
  await replaceHandler(server, PROTOCOL_SNAPSHOT_CHUNKS, { req: SnapshotSyncCodecs.GetSnapshotChunksRequest, res: SnapshotSyncCodecs.GetSnapshotChunksResponse }, async (req) => {
    const res = await server.services.snapshotChunks.serve(req)
    for (const ch of res.chunks) served.push(toHex(sha256(ch)))
    return res
  }, { delayMs: 3 })
  const c: Campaign = {
    env, g, genesisFile: writeGenesisFile(env.dir, g), addr: server.getMultiaddrs()[0].toString(), served, tip: TIP, S, total,
    rootAtTip: hex((await P.store.getStateRoot(TIP))!), rootAtS: hex((await P.store.getStateRoot(S))!), producer: P.store
  }
  return { c, P }
}
