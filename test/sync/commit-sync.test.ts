/**
 * Commit sync end to end on 127.0.0.1 (seed 000): catching up across epochs, nodes serving what they
 * synced, resuming after a stop and after SIGKILL, a serving peer dying, embedding into a plain
 * createLibp2p node, PushCommit, and the servers' epoch-boundary and size limits.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { cpSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { producerStore, servedChain, syncNode, testEnv, testGenesis, waitFor, type SyncNode } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { ChainStore, Bucket } from '../../src/store/chain-store.ts'
import { Keys } from '../../src/store/keys.ts'
import { parseCommit, verifyCertification } from '../../src/chain/commit.ts'
import { parseBlock, verifyBlock } from '../../src/chain/block.ts'
import type { BlockRef } from '../../src/chain/types.ts'
import { FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import { SyncCodecs, type FetchCommitsResponse } from '../../src/sync/protocols/messages.ts'
import type { StateSyncEventLoop } from '../../src/sync/event-loop.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.resolve(here, '../helpers/sync-child.ts')

const addr = (n: SyncNode): Multiaddr => n.getMultiaddrs()[0]
const loop = (n: SyncNode): StateSyncEventLoop => {
  const l = n.services.stateSync.eventLoop
  assert.ok(l !== undefined, 'the state sync event loop runs')
  return l
}
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
/** Every FetchBlocks request of `node` waits `ms` first. */
const slowBlockFetches = (node: SyncNode, ms: number): void => {
  const fb = node.services.fetchBlocks
  const orig = fb.fetch.bind(fb)
  fb.fetch = async (peer: PeerId, refs: BlockRef[], opts: any) => { await sleep(ms); return await orig(peer, refs, opts) }
}
const refKey = (r: BlockRef): string => hex(Keys.block(r.round, r.author, r.digest))

/**
 * Same commits (byte for byte) as `b` up to `upto`, and the same state root wherever `a` recorded one:
 * `a` executes in batches, so it has a root at every batch end, which includes every end-of-epoch
 * commit and `upto` when it executed that far.
 */
async function assertSameChain (a: ChainStore, b: ChainStore, upto: number, what: string): Promise<void> {
  let roots = 0
  for (let i = 1; i <= upto; i++) {
    const ca = await a.getCommitBytes(i)
    assert.ok(ca !== undefined, `${what}: commit ${i} stored`)
    assert.equal(hex(ca), hex((await b.getCommitBytes(i))!), `${what}: commit ${i}`)
    const ra = await a.getStateRoot(i)
    const endsEpoch = (await a.getCommit(i))!.commit.endOfEpoch != null
    if ((endsEpoch || i === upto) && i <= a.highestExecuted) assert.ok(ra !== undefined, `${what}: state root of commit ${i}`)
    if (ra === undefined) continue
    roots++
    assert.equal(hex(ra), hex((await b.getStateRoot(i))!), `${what}: state root after commit ${i}`)
  }
  assert.ok(roots > 0, `${what}: some state root compared`)
}

/** Every block ref of commits from..to, from `store`, in commit order. */
async function commitRefs (store: ChainStore, from: number, to: number): Promise<BlockRef[]> {
  const out: BlockRef[] = []
  for (let i = from; i <= to; i++) {
    const c = await store.getCommit(i)
    assert.ok(c !== undefined, `commit ${i} stored`)
    out.push(...c.commit.blocks)
  }
  return out
}

/** Keys of every block stored. */
async function storedBlockKeys (store: ChainStore): Promise<Set<string>> {
  const out = new Set<string>()
  for await (const [k] of store.iterateBucket(Bucket.BLOCK)) out.add(hex(k))
  return out
}

test('a late node catches up across epochs and nodes sync from each other (producer <- A <- B <- C)', { timeout: 60_000 }, async t => {
  const env = testEnv(t)
  const { ps, producer, P } = await servedChain(env, 40, { epochLength: 8 })
  const sa = await env.store('a')
  const sb = await env.store('b')
  const A = env.node(await syncNode(sa))
  const B = env.node(await syncNode(sb))

  // A catches up from the producer: 40 commits, 5 epochs
  await A.dial(addr(P))
  await waitFor(() => sa.highestExecuted >= 40, 20_000, 'A to sync 40 commits')
  assert.equal(await ps.getLastCommitIndexOfEpoch(4), 40, 'five epochs of 8 commits')

  // B only knows A: everything it gets, A serves (including certifier blocks A stored while syncing)
  await B.dial(addr(A))
  await waitFor(() => sb.highestExecuted >= 40, 20_000, 'B to sync from A')
  assert.ok(B.getConnections().every(c => c.remotePeer.equals(A.peerId)), 'B is connected to A only')
  assert.ok(A.services.fetchCommits.rpc.stats.inbound > 0, 'A served commits')
  assert.ok(A.services.fetchBlocks.rpc.stats.inbound > 0, 'A served blocks')

  // the chain grows: A follows the producer, B follows A
  await producer.produceUntil(72)
  const tip = ps.highestSynced
  assert.ok(tip >= 72)
  await waitFor(() => sb.highestExecuted >= tip, 20_000, 'B to follow the producer through A')

  // C starts late, only connected to B, and catches up across 9 epochs
  const sc = await env.store('c')
  const C = env.node(await syncNode(sc))
  await C.dial(addr(B))
  await waitFor(() => sc.highestExecuted >= tip, 20_000, 'C to catch up from B')
  assert.ok(C.getConnections().every(c => c.remotePeer.equals(B.peerId)), 'C is connected to B only')
  assert.ok(await ps.getLastCommitIndexOfEpoch(8) !== undefined, 'the chain crossed 9 epochs')

  await assertSameChain(sa, ps, tip, 'A')
  await assertSameChain(sb, ps, tip, 'B')
  await assertSameChain(sc, ps, tip, 'C')
  assert.equal(hex((await sc.getStateRoot(tip))!), hex((await ps.getStateRoot(tip))!))
  for (const s of [sa, sb, sc]) assert.deepEqual(s.getProgress(), { highestSynced: tip, highestExecuted: tip, lowestAvailable: 1 })
  // committees of every epoch came with the end-of-epoch commits
  for (let e = 0; e <= 9; e++) assert.ok(await sc.getCommittee(e) !== undefined, `committee of epoch ${e}`)
  await waitFor(() => loop(C).phase === 'synced', 5000, 'C to report synced')
})

test('a node stopped mid-sync resumes from its highest synced commit without refetching stored blocks', { timeout: 60_000 }, async t => {
  const env = testEnv(t)
  const { ps, tip, P } = await servedChain(env, 100, { epochLength: 10 })
  const dir = path.join(env.dir, 'client')

  // first run: stopped once past the middle
  const first = env.track(await ChainStore.open(dir, { genesis: testGenesis() }))
  const C1 = env.node(await syncNode(first, { commitSyncBatchSize: 5 }))
  slowBlockFetches(C1, 3)
  await C1.dial(addr(P))
  await waitFor(() => first.highestSynced >= 40, 20_000, 'the first run to pass commit 40')
  await C1.stop()
  const before = first.getProgress()
  await first.close()
  assert.ok(before.highestSynced >= 40 && before.highestSynced < tip, `stopped mid-sync (at ${before.highestSynced} of ${tip})`)

  // reopen: same progress, every synced commit stored with its blocks
  const cs = env.track(await ChainStore.open(dir))
  assert.deepEqual(cs.getProgress(), before)
  const storedBefore = await storedBlockKeys(cs)
  for (const r of await commitRefs(cs, 1, before.highestSynced)) assert.ok(storedBefore.has(refKey(r)), 'blocks of synced commits are stored')

  // second run: record what it asks for
  const C2 = env.node(await syncNode(cs, { commitSyncBatchSize: 5 }))
  const fetchedKeys: string[] = []
  const certifierKeys = new Set<string>()
  const ranges: Array<[number, number]> = []
  const fb = C2.services.fetchBlocks
  const origBlocks = fb.fetch.bind(fb)
  fb.fetch = async (peer: PeerId, refs: BlockRef[], opts: any): Promise<Uint8Array[]> => {
    const raw = await origBlocks(peer, refs, opts)
    for (const b of raw) fetchedKeys.push(refKey(parseBlock(b, cs.chainId).ref))
    return raw
  }
  const fc = C2.services.fetchCommits
  const origCommits = fc.fetch.bind(fc)
  fc.fetch = async (peer: PeerId, start: number, end: number, opts: any): Promise<FetchCommitsResponse> => {
    ranges.push([start, end])
    const res = await origCommits(peer, start, end, opts)
    for (const b of res.certifierBlocks) certifierKeys.add(refKey(parseBlock(b, cs.chainId).ref))
    return res
  }
  await C2.dial(addr(P))
  await waitFor(() => cs.highestExecuted >= tip, 20_000, 'the second run to complete')

  assert.equal(ranges[0][0], before.highestSynced + 1, 'the second run starts right after the highest synced commit')
  const needed = (await commitRefs(ps, before.highestSynced + 1, tip)).map(refKey)
  // certifier blocks of a range belong to the next commits: they arrive with the commits, not as fetches
  const expected = needed.filter(k => !storedBefore.has(k) && !certifierKeys.has(k))
  const stats = loop(C2).downloader.stats
  assert.equal(stats.blocks, expected.length, 'blocks fetched = blocks of the remaining commits not already stored')
  assert.equal(fetchedKeys.length, stats.blocks)
  assert.equal(new Set(fetchedKeys).size, fetchedKeys.length, 'no block fetched twice')
  assert.ok(fetchedKeys.every(k => !storedBefore.has(k)), 'nothing already stored is fetched again')
  assert.deepEqual(new Set(fetchedKeys), new Set(expected))
  await assertSameChain(cs, ps, tip, 'resumed client')
})

test('ranges are pipelined: range k+1 is fetched while range k downloads, and ranges are stored in order', { timeout: 60_000 }, async t => {
  const env = testEnv(t)
  const { ps, tip, P } = await servedChain(env, 60, { epochLength: 30 })
  /** Syncs a fresh node; returns how many FetchCommits requests started while a range before them was not stored yet. */
  const run = async (name: string, syncRangesInFlight: number): Promise<{ overlapped: number, synced: number[] }> => {
    const cs = await env.store(name)
    const C = env.node(await syncNode(cs, { commitSyncBatchSize: 5, syncRangesInFlight }))
    // slow block responses leave time for the next range's commits to be asked for
    slowBlockFetches(C, 30)
    let overlapped = 0
    const fc = C.services.fetchCommits
    const origCommits = fc.fetch.bind(fc)
    fc.fetch = async (peer: PeerId, start: number, end: number, opts: any): Promise<FetchCommitsResponse> => {
      if (cs.highestSynced < start - 1) overlapped++
      return await origCommits(peer, start, end, opts)
    }
    const synced: number[] = []
    loop(C).on('synced', h => { synced.push(h) })
    await C.dial(addr(P))
    await waitFor(() => cs.highestExecuted >= tip, 30_000, `${name} to sync`)
    await assertSameChain(cs, ps, tip, name)
    return { overlapped, synced }
  }
  const piped = await run('piped', 2)
  assert.ok(piped.overlapped >= 5, `ranges overlap with 2 in flight (${piped.overlapped})`)
  assert.deepEqual(piped.synced, [...piped.synced].sort((a, b) => a - b), 'stored in order')
  assert.equal(piped.synced[piped.synced.length - 1], tip)
  const serial = await run('serial', 1)
  assert.equal(serial.overlapped, 0, 'one range at a time with syncRangesInFlight 1')
})

test('a node SIGKILLed mid-sync reopens consistent and resumes', { timeout: 60_000 }, async t => {
  let child: ReturnType<typeof spawn> | undefined
  t.after(() => { if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const env = testEnv(t)
  const { ps, tip, P } = await servedChain(env, 120, { epochLength: 10 })
  const dir = path.join(env.dir, 'killed')

  const proc = spawn(process.execPath, [CHILD, dir, addr(P).toString(), '5'], { stdio: ['pipe', 'pipe', 'pipe'] })
  child = proc
  let stderr = ''
  proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<void>(resolve => proc.on('exit', () => { resolve() }))
  let seen = 0
  let buf = ''
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString()
    const lines = buf.split('\n')
    buf = lines.pop() ?? ''
    for (const l of lines) {
      const m = /^synced (\d+) executed (\d+)$/.exec(l)
      if (m === null) continue
      seen = Number(m[1])
      if (seen >= 30 && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    }
  })
  let timer: ReturnType<typeof setTimeout> | undefined
  await Promise.race([exited, new Promise<void>((resolve, reject) => {
    timer = setTimeout(() => { reject(new Error(`the child did not reach commit 30 (seen ${seen}); stderr: ${stderr}`)) }, 30_000)
  })]).finally(() => { clearTimeout(timer) })
  assert.equal(proc.signalCode, 'SIGKILL', `killed by SIGKILL (stderr: ${stderr})`)

  const cs = env.track(await ChainStore.open(dir))
  const p = cs.getProgress()
  assert.ok(p.highestSynced >= 30, `synced ${p.highestSynced} before the kill`)
  assert.ok(p.highestSynced < tip, `killed mid-sync (synced ${p.highestSynced} of ${tip})`)
  assert.ok(p.highestExecuted <= p.highestSynced)
  // every synced commit is the producer's, with all its blocks
  for (let i = 1; i <= p.highestSynced; i++) {
    assert.equal(hex((await cs.getCommitBytes(i))!), hex((await ps.getCommitBytes(i))!), `commit ${i}`)
    const c = (await cs.getCommit(i))!
    const blocks = await cs.getBlocks(c.commit.blocks)
    const want = await ps.getBlocks(c.commit.blocks)
    blocks.forEach((b, j) => { assert.ok(b !== undefined && hex(b) === hex(want[j]!), `commit ${i} block ${j}`) })
  }
  assert.equal(await cs.getCommitBytes(p.highestSynced + 1), undefined, 'no commit past highest synced')
  assert.equal(hex((await cs.getStateRoot(p.highestExecuted))!), hex((await ps.getStateRoot(p.highestExecuted))!))
  assert.equal(await cs.getStateRoot(p.highestExecuted + 1), undefined, 'no state root past highest executed')

  // resume in this process
  const C = env.node(await syncNode(cs, { commitSyncBatchSize: 5 }))
  await C.dial(addr(P))
  await waitFor(() => cs.highestExecuted >= tip, 20_000, 'the resumed node to complete')
  await assertSameChain(cs, ps, tip, 'resumed after SIGKILL')
})

test('sync continues from another peer when the serving peer dies', { timeout: 60_000 }, async t => {
  const env = testEnv(t)
  const { store: p1 } = await producerStore(env.dir, 100, { epochLength: 10 })
  await p1.close()
  cpSync(path.join(env.dir, 'producer'), path.join(env.dir, 'producer2'), { recursive: true })
  const s1 = env.track(await ChainStore.open(path.join(env.dir, 'producer')))
  const s2 = env.track(await ChainStore.open(path.join(env.dir, 'producer2')))
  const tip = s1.highestSynced
  assert.equal(s2.highestSynced, tip)
  const S1 = env.node(await syncNode(s1, { sync: false }))
  const S2 = env.node(await syncNode(s2, { sync: false }))
  const cs = await env.store('client')
  const C = env.node(await syncNode(cs, { commitSyncBatchSize: 5, maxBlocksPerFetch: 8 }))

  // S1 dies when the client next asks it for blocks, i.e. in the middle of a range it is serving
  let armed = false
  let killedAt = -1
  const fb = C.services.fetchBlocks
  const orig = fb.fetch.bind(fb)
  fb.fetch = async (peer: PeerId, refs: BlockRef[], opts: any): Promise<Uint8Array[]> => {
    await sleep(3)
    if (armed && killedAt < 0 && peer.equals(S1.peerId)) {
      killedAt = cs.highestSynced
      await S1.stop()
    }
    return await orig(peer, refs, opts)
  }
  await C.dial(addr(S1))
  await waitFor(() => cs.highestSynced >= 30, 20_000, 'the client to sync 30 commits from S1')
  await C.dial(addr(S2))
  await waitFor(() => loop(C).heights.get(S2.peerId) !== undefined, 5000, 'the client to learn S2 height')
  armed = true
  await waitFor(() => killedAt >= 0, 20_000, 'a block request to S1')
  assert.ok(killedAt < tip, `S1 died mid-sync (at ${killedAt} of ${tip})`)
  await waitFor(() => cs.highestExecuted >= tip, 20_000, 'the client to complete from S2')

  assert.ok(loop(C).scores.penaltiesOf(S1.peerId).length >= 1, 'the failed request to S1 was recorded')
  assert.ok(S2.services.fetchCommits.rpc.stats.inbound > 0 && S2.services.fetchBlocks.rpc.stats.inbound > 0, 'S2 served the rest')
  assert.equal(loop(C).heights.get(S1.peerId), undefined, 'S1 is no longer a sync peer')
  await assertSameChain(cs, s2, tip, 'client')
})

test('embeds into a plain createLibp2p node', { timeout: 30_000 }, async t => {
  const env = testEnv(t)
  const { ps, P: server } = await servedChain(env, 45, { epochLength: 10 })
  const cs = await env.store('client')
  // syncNode is a bare createLibp2p({ transports, connectionEncrypters, streamMuxers, services: { identify, ...commitSyncServices() } })
  const client = env.node(await syncNode(cs))
  assert.ok(client.services.stateSync !== undefined, 'node.services.stateSync exists')
  for (const s of ['commitAvailability', 'fetchCommits', 'fetchBlocks', 'pushCommit', 'identify']) assert.ok(client.services[s] !== undefined, s)
  for (const p of ['/soma/commit-availability/1.0.0', '/soma/fetch-commits/1.0.0', '/soma/fetch-blocks/1.0.0', '/soma/push-commit/1.0.0']) {
    assert.ok(client.getProtocols().includes(p), `${p} is registered`)
  }
  assert.equal(server.services.stateSync.eventLoop, undefined, 'a serve-only node runs no sync loop')
  await client.dial(addr(server))
  await waitFor(() => cs.highestExecuted >= 45, 20_000, 'sync')
  assert.equal(hex((await cs.getStateRoot(45))!), hex((await ps.getStateRoot(45))!))
  await waitFor(() => client.services.stateSync.progress()?.phase === 'synced', 5000, 'phase synced')
  const progress = client.services.stateSync.progress()!
  assert.equal(progress.highestSynced, 45)
  assert.equal(progress.target, 45)
  assert.equal(progress.syncedCommits, 45)
  await client.stop()
  assert.equal(client.services.stateSync.eventLoop, undefined, 'the loop is gone after stop')
})

test('PushCommit: a lower peer learns the new height from a push, without querying', { timeout: 30_000 }, async t => {
  const env = testEnv(t)
  const { ps, tip, P } = await servedChain(env, 40, { epochLength: 8 })
  const sa = await env.store('a')
  const sb = await env.store('b')
  // periodic height queries every minute: within this test only connects and pushes tell heights
  const A = env.node(await syncNode(sa, { peerHeightQueryIntervalMs: 60_000 }))
  const B = env.node(await syncNode(sb, { peerHeightQueryIntervalMs: 60_000 }))
  await B.dial(addr(A))
  await waitFor(() => loop(B).heights.get(A.peerId) !== undefined && loop(A).heights.get(B.peerId) !== undefined, 5000, 'A and B to query each other on connect')
  await sleep(300) // let the identify-triggered queries land too
  assert.equal(loop(B).heights.get(A.peerId)!.height, 0)
  const queriesBefore = B.services.commitAvailability.rpc.stats.outbound
  assert.equal(B.services.pushCommit.rpc.stats.inbound, 0)

  await A.dial(addr(P))
  await waitFor(() => sa.highestSynced >= tip, 20_000, 'A to sync')
  await waitFor(() => (loop(B).heights.get(A.peerId)?.height ?? 0) >= tip, 5000, 'B to learn A height')
  assert.ok(B.services.pushCommit.rpc.stats.inbound >= 1, 'B received a push')
  assert.equal(B.services.commitAvailability.rpc.stats.outbound, queriesBefore, 'B did not query A again: the push told it')
  await waitFor(() => sb.highestExecuted >= tip, 20_000, 'B to sync from A after the push')
  assert.equal(hex((await sb.getStateRoot(tip))!), hex((await ps.getStateRoot(tip))!))
})

test('FetchCommits.serve: stops at the epoch boundary and at commitSyncBatchSize, always certified', { timeout: 30_000 }, async t => {
  const env = testEnv(t)
  const { ps, tip, P: server } = await servedChain(env, 40, { epochLength: 8, serve: { commitSyncBatchSize: 5 } })
  const fc: FetchCommits = server.services.fetchCommits
  for (let start = 1; start <= tip; start++) {
    for (const end of [start, start + 2, start + 20, 1000]) {
      const res = await fc.serve({ start, end })
      assert.ok(res.error === undefined || res.error === '', `${start}..${end}: ${res.error ?? ''}`)
      const commits = res.commits.map(b => parseCommit(b))
      const epoch = commits[0].epoch
      const lastOfEpoch = (await ps.getLastCommitIndexOfEpoch(epoch))!
      const last = commits[commits.length - 1]
      commits.forEach((c, i) => { assert.equal(c.index, start + i); assert.equal(c.epoch, epoch) })
      assert.ok(commits.length <= 5, 'at most commitSyncBatchSize commits')
      assert.ok(last.index <= lastOfEpoch, `${start}..${end}: never past the last commit of the epoch (${lastOfEpoch})`)
      assert.equal(last.index, Math.min(end, start + 4, lastOfEpoch, tip))
      // the certifier blocks vote for the last commit with 2f+1 stake
      const committee = (await ps.getCommittee(epoch))!
      const certifiers = res.certifierBlocks.map(b => verifyBlock(parseBlock(b, ps.chainId), committee))
      verifyCertification(last, certifiers, committee)
    }
  }
  // refusals
  for (const req of [{ start: 0, end: 3 }, { start: 5, end: 4 }, { start: tip + 1, end: tip + 5 }]) {
    const res = await fc.serve(req)
    assert.ok(res.error !== undefined && res.error !== '', `${req.start}..${req.end} refused`)
    assert.equal(res.commits.length, 0)
  }
})

test('FetchCommits.serve and FetchBlocks.serve: responses truncate to maxFetchResponseBytes, never exceed it', { timeout: 30_000 }, async t => {
  const env = testEnv(t)
  // one long epoch, so that only the byte limit truncates
  const { store: ps } = await producerStore(env.dir, 100, { epochLength: 1000 })
  env.track(ps)
  const LIMIT = 20 * 1024
  const server = env.node(await syncNode(ps, { sync: false, maxFetchResponseBytes: LIMIT, maxBlocksPerFetch: 50 }))
  const committee = (await ps.getCommittee(0))!

  const checkCommits = (res: FetchCommitsResponse, start: number, limit: number): number => {
    assert.ok(SyncCodecs.FetchCommitsResponse.encode(res).byteLength <= limit, 'response within the limit')
    const commits = res.commits.map(b => parseCommit(b))
    commits.forEach((c, i) => { assert.equal(c.index, start + i) })
    verifyCertification(commits[commits.length - 1], res.certifierBlocks.map(b => verifyBlock(parseBlock(b, ps.chainId), committee)), committee)
    return commits.length
  }
  const full = await server.services.fetchCommits.serve({ start: 1, end: 100 })
  const n = checkCommits(full, 1, LIMIT)
  assert.ok(n > 0 && n < 100, `20 KiB holds some but not all of 100 commits (got ${n})`)

  // a sweep of limits with the same store: monotone, always within the limit
  let prev = 0
  for (const limit of [4096, 6144, 8192, 12_288, 16_384, 24_576, 32_768, 65_536]) {
    const fc = new FetchCommits({ logger: server.logger, registrar: undefined as any, connectionManager: undefined as any }, { store: ps, commitSyncBatchSize: 100, maxFetchResponseBytes: limit })
    const res = await fc.serve({ start: 1, end: 100 })
    const got = checkCommits(res, 1, limit)
    assert.ok(got >= prev, `limit ${limit}: ${got} commits, not fewer than with a smaller limit (${prev})`)
    prev = got
  }
  assert.equal(prev, 100, 'a large enough limit returns the whole range')
  // too small for even the certifiers: refused, nothing sent
  const tiny = new FetchCommits({ logger: server.logger, registrar: undefined as any, connectionManager: undefined as any }, { store: ps, maxFetchResponseBytes: 1024 })
  const refused = await tiny.serve({ start: 1, end: 100 })
  assert.ok(refused.error !== undefined && refused.error !== '')
  assert.equal(refused.commits.length, 0)

  // FetchBlocks: more than maxBlocksPerFetch refs is refused
  const refs = await commitRefs(ps, 1, 60)
  assert.ok(refs.length > 51)
  const tooMany = await server.services.fetchBlocks.serve({ blockRefs: refs.slice(0, 51) })
  assert.ok(tooMany.error !== undefined && tooMany.error !== '', '51 refs refused')
  assert.equal(tooMany.blocks.length, 0)
  // 50 refs of ~1.2 KB: truncated to a prefix within 20 KiB
  const asked = refs.slice(0, 50)
  const res = await server.services.fetchBlocks.serve({ blockRefs: asked })
  assert.ok(res.error === undefined || res.error === '')
  assert.ok(res.blocks.length > 0 && res.blocks.length < 50, `truncated (${res.blocks.length} blocks)`)
  assert.ok(SyncCodecs.FetchBlocksResponse.encode(res).byteLength <= LIMIT, 'blocks response within the limit')
  const stored = await ps.getBlocks(asked)
  res.blocks.forEach((b: Uint8Array, i: number) => { assert.equal(hex(b), hex(stored[i]!), `block ${i} is the one asked for at that position`) })
  // the prefix is maximal: one more block would not fit
  const size = res.blocks.reduce((s: number, b: Uint8Array) => s + b.byteLength + 8, 0)
  assert.ok(size + stored[res.blocks.length]!.byteLength + 8 > LIMIT)
  // an unknown ref ends the answer there
  const unknown = { round: asked[3].round, author: asked[3].author, digest: new Uint8Array(32).fill(7) }
  const cut = await server.services.fetchBlocks.serve({ blockRefs: [...asked.slice(0, 3), unknown, ...asked.slice(4, 8)] })
  assert.equal(cut.blocks.length, 3)
  const none = await server.services.fetchBlocks.serve({ blockRefs: [unknown] })
  assert.ok(none.error !== undefined && none.error !== '' && none.blocks.length === 0)
})
