/**
 * Rate limits that price work (src/net/rate-limit.ts): the GCRA and the node's quota on a fake clock,
 * then over real libp2p nodes on 127.0.0.1:
 *
 * - a greedy chunk client is refused with a retry hint, and admitted again once the hint has passed;
 *   a well-behaved client of the same server, within its quota, is never refused;
 * - a syncing client with two servers, one of them with a tight quota, completes from both: it leaves
 *   the limiting server alone for each hint (no request reaches it before the hint has passed) and the
 *   other server serves the rest.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { Gcra, PeerBackoff, ServeQuota, parseRateLimited, rateLimitedError, rateLimitedText, serveQuota, DEFAULT_RETRY_AFTER_MS, MAX_RETRY_AFTER_MS } from '../../src/net/rate-limit.ts'
import { RateLimitedError, penaltyFor } from '../../src/errors.ts'
import { DEFAULTS } from '../../src/config.ts'
import { createLogger } from '../../src/utils/logger.ts'
import { snapshotProducer, snapNode, snapshotGenesis } from '../helpers/snapshot-net.ts'
import { producerStore, syncNode, testEnv, waitFor } from '../helpers/sync-net.ts'
import type { StateSyncEventLoop } from '../../src/sync/event-loop.ts'

const KiB = 1024

describe('GCRA and the serving quota (fake clock)', () => {
  it('a GCRA admits its burst, then one cost per emission interval; the hint is exact', () => {
    const g = new Gcra(1000, 3000) // 1000 bytes/s, burst 3000
    assert.equal(g.take('a', 1000, 0), 0)
    assert.equal(g.take('a', 1000, 0), 0)
    assert.equal(g.take('a', 1000, 0), 0)
    const wait = g.take('a', 1000, 0)
    assert.equal(wait, 1000, 'the 4th 1000 bytes fit after 1 s')
    assert.ok(g.take('a', 1000, 999) > 0, 'not before the hint')
    assert.equal(g.take('a', 1000, 1000), 0, 'admitted once the hint has passed')
    assert.equal(g.take('b', 3000, 1000), 0, 'keys are independent')
    assert.equal(g.take('c', 10_000, 0), 0, 'a cost above the burst is charged as the burst: admitted when empty')
    assert.equal(g.take('c', 1, 0), 1, '... and the bucket is then full')
    g.adjust('a', -1000)
    assert.equal(g.take('a', 1000, 1000), 0, 'a refund makes room')
    g.sweep(1e9)
    assert.equal(g.size, 0, 'drained keys are forgotten')
  })

  it('the quota prices by bytes, checks the peer then the total, settles to the real size and counts refusals by reason', () => {
    let now = 0
    const lines: string[] = []
    const q = new ServeQuota({ peerBytesPerSecond: 10_000, peerBurstBytes: 10_000, totalBytesPerSecond: 15_000, totalBurstBytes: 15_000, requestBytes: 100, now: () => now, log: createLogger('q', { write: l => lines.push(l) }) })
    const t1 = q.admit('p1', 9900)
    assert.ok('charged' in t1 && t1.charged === 10_000)
    const r1 = q.admit('p1', 100)
    assert.ok('retryAfterMs' in r1 && r1.reason === 'peer-bytes' && r1.retryAfterMs === 20, JSON.stringify(r1))
    q.settle(t1, 900) // it really cost 1000: 9000 refunded to both quotas
    assert.ok('charged' in q.admit('p1', 8900), 'the refund is usable at once')
    // total: p1 holds 10000 of 15000; p2 may take 5000 now, not 6000
    const r2 = q.admit('p2', 5900)
    assert.ok('retryAfterMs' in r2 && r2.reason === 'total-bytes', JSON.stringify(r2))
    assert.ok('charged' in q.admit('p2', 4900), 'the peer charge of a total refusal was refunded')
    assert.equal(q.refusedRequests('p3', 250, '/x'), 250)
    assert.deepEqual(q.stats.refused, { requests: 1, 'peer-bytes': 1, 'total-bytes': 1 })
    assert.equal(q.stats.admitted, 3)
    assert.equal(lines.length, 3, 'one info line per peer per 10 s')
    assert.match(lines[0], /INFO .*rate limited p1 on  \(peer-bytes\): retry after 20 ms/)
    now = 500
    assert.ok('retryAfterMs' in q.admit('p1', 9000))
    assert.equal(lines.length, 3, 'throttled: the second refusal of p1 within 10 s is counted, not logged')
    now = 20_000
    q.admit('p1', 10_000); assert.ok('retryAfterMs' in q.admit('p1', 10_000))
    assert.match(lines[3], /1 more refusals since the last line/)
  })

  it('in-flight room: requests past maxInflightBytes wait first come, first served; resize and release free it', async () => {
    const q = new ServeQuota({ peerBytesPerSecond: 0, peerBurstBytes: 1, totalBytesPerSecond: 0, totalBurstBytes: 1, requestBytes: 0, maxInflightBytes: 100 })
    const ticket = (): any => q.admit('p', 0)
    const a = ticket(); const b = ticket(); const c = ticket(); const d = ticket()
    await q.hold(a, 60)
    const order: string[] = []
    const pb = q.hold(b, 60).then(() => order.push('b'))
    const pc = q.hold(c, 10).then(() => order.push('c')) // fits, but waits behind b (no overtaking)
    const ac = new AbortController()
    const pd = q.hold(d, 1000, ac.signal) // charged as the whole room
    await new Promise(resolve => setImmediate(resolve))
    assert.deepEqual(order, [])
    assert.equal(q.stats.queued, 3)
    q.resize(a, 30) // a's response turned out 30 bytes: b (60) fits now, then c (10)
    await pb; await pc
    assert.deepEqual(order, ['b', 'c'])
    assert.equal(q.stats.inflightBytes, 100)
    ac.abort(new Error('gone'))
    await assert.rejects(pd, /gone/)
    q.release(a); q.release(b); q.release(c); q.release(c)
    assert.equal(q.stats.inflightBytes, 0, 'release is idempotent')
    assert.equal(q.stats.peakInflightBytes, 100)
  })

  it('a disabled quota (rate 0) admits everything; the config defaults build a quota', () => {
    const q = new ServeQuota({ peerBytesPerSecond: 0, peerBurstBytes: 1, totalBytesPerSecond: 0, totalBurstBytes: 1, requestBytes: 0 })
    for (let i = 0; i < 100; i++) assert.ok('charged' in q.admit('p', 1e9))
    const d = serveQuota({})
    assert.equal(d.init.peerBytesPerSecond, DEFAULTS.servePeerBytesPerSecond)
    assert.equal(d.init.totalBurstBytes, DEFAULTS.serveTotalBurstBytes)
  })

  it('the refusal text carries the hint; clients parse it (old servers: no hint), clamped', () => {
    assert.equal(rateLimitedText(12.2), 'rate limited; retry after 13 ms')
    assert.equal(parseRateLimited('rate limited; retry after 13 ms'), 13)
    assert.equal(parseRateLimited('rate limited'), DEFAULT_RETRY_AFTER_MS)
    assert.equal(parseRateLimited('rate limited; retry after 999999999 ms'), MAX_RETRY_AFTER_MS)
    assert.equal(parseRateLimited('chunk not stored'), undefined)
    assert.equal(parseRateLimited(undefined), undefined)
    const err = rateLimitedError('rate limited; retry after 40 ms', 'peer', '/p')!
    assert.ok(err instanceof RateLimitedError)
    assert.equal(err.retryAfterMs, 40)
    assert.equal(penaltyFor(err), 1)
  })

  it('a backoff holds a peer for its hint', () => {
    let now = 0
    const b = new PeerBackoff(() => now)
    b.hold('p', 300)
    b.hold('p', 100) // a shorter hint does not shorten the hold
    assert.ok(b.isHeld('p'))
    assert.equal(b.remaining('p'), 300)
    now = 300
    assert.ok(!b.isHeld('p'))
    assert.equal(b.holds, 2)
  })
})

describe('rate limits over real nodes', () => {
  it('a greedy chunk client is refused with a hint and admitted after it; a well-behaved one is never refused', { timeout: 120_000 }, async t => {
    const env = testEnv(t, 'soma-rl-')
    const P = await snapshotProducer(env.dir, 20)
    env.track(P.store)
    const S = (await P.snapshots.list()).at(-1)!
    const hashes = (await P.snapshots.getListing(S)).map(r => r.hash)
    assert.ok(hashes.length > 200, `${hashes.length} chunks`)
    // 32 KiB/s per peer, burst 128 KiB; a request costs 4 KiB besides its response
    const quota = new ServeQuota({ peerBytesPerSecond: 32 * KiB, peerBurstBytes: 128 * KiB, totalBytesPerSecond: 0, totalBurstBytes: 1, requestBytes: 4 * KiB })
    const server = env.node(await snapNode(P.store, { commitSync: false, commit: { rpc: { quota } }, snap: { rpc: { quota } } }))
    const greedy = env.node(await snapNode(await env.store('greedy', snapshotGenesis(1000)), { commitSync: false }))
    const polite = env.node(await snapNode(await env.store('polite', snapshotGenesis(1000)), { commitSync: false }))
    await greedy.dial(server.getMultiaddrs()[0])
    await polite.dial(server.getMultiaddrs()[0])

    // polite: 4 KiB of chunks a second (8 KiB/s with the request price), well within its quota
    let politeDone = false
    let politeRequests = 0
    const politeTask = (async () => {
      const s = await polite.services.snapshotChunks.session(server.peerId)
      try {
        for (let i = 0; !politeDone; i++) {
          const got = await s.fetch(hashes.slice((i * 4) % 200, (i * 4) % 200 + 4), { maxBytes: 4 * KiB })
          assert.ok(got.length >= 1)
          politeRequests++
          await new Promise(resolve => setTimeout(resolve, 1000))
        }
      } finally { await s.close() }
    })()

    // greedy: 32 KiB requests back to back on one session
    const s = await greedy.services.snapshotChunks.session(server.peerId)
    let refusal: RateLimitedError | undefined
    let admitted = 0
    try {
      for (let i = 0; i < 200 && refusal === undefined; i++) {
        try {
          await s.fetch(hashes.slice(i % 150, i % 150 + 64), { maxBytes: 32 * KiB })
          admitted++
        } catch (err) {
          if (!(err instanceof RateLimitedError)) throw err
          refusal = err
        }
      }
      assert.ok(refusal !== undefined, 'the greedy client was rate limited')
      assert.ok(admitted >= 3, `at least burst / cost requests were admitted first (${admitted})`)
      // the hint: the time for one more 36 KiB (price) to fit, at 32 KiB/s: at most ~1.1 s
      assert.ok(refusal.retryAfterMs > 0 && refusal.retryAfterMs <= 1200, `hint ${refusal.retryAfterMs} ms`)
      assert.ok(!s.isClosed, 'a refusal keeps the session')
      await new Promise(resolve => setTimeout(resolve, refusal!.retryAfterMs + 20))
      const again = await s.fetch(hashes.slice(0, 64), { maxBytes: 32 * KiB })
      assert.ok(again.length > 1, 'admitted once the hint has passed')
      // keep being greedy for a while, honouring every hint: refused often, admitted after each hint
      const t0 = Date.now()
      let refusals = 0
      while (Date.now() - t0 < 2000) {
        try {
          await s.fetch(hashes.slice(0, 64), { maxBytes: 32 * KiB })
        } catch (err) {
          if (!(err instanceof RateLimitedError)) throw err
          refusals++
          await new Promise(resolve => setTimeout(resolve, (err).retryAfterMs))
        }
      }
      assert.ok(refusals > 0)
    } finally {
      await s.close()
      politeDone = true
      await politeTask
    }
    assert.ok(politeRequests >= 3, `the polite client was served throughout (${politeRequests} requests)`)
    assert.equal(polite.services.snapshotChunks.stats.outboundErrors, 0, 'the polite client was never refused')
    assert.ok(quota.stats.refused['peer-bytes'] >= 2, JSON.stringify(quota.stats))
    assert.equal(quota.stats.refused['total-bytes'], 0)
  })

  it('a syncing client leaves a limiting server alone for each hint and completes from the other server', { timeout: 120_000 }, async t => {
    const env = testEnv(t, 'soma-rl-')
    const { store: ps } = await producerStore(env.dir, 120, { txsPerBlock: 20 })
    env.track(ps)
    const tip = ps.highestSynced
    // A: 4 KiB/s per peer (every fetch is priced at its 4 MiB limit, charged as the 32 KiB burst: it is
    // admitted only when the client's bucket is empty, then settled to what was sent); B: generous
    const qa = new ServeQuota({ peerBytesPerSecond: 4 * KiB, peerBurstBytes: 32 * KiB, totalBytesPerSecond: 0, totalBurstBytes: 1, requestBytes: 1 * KiB })
    const qb = new ServeQuota({ peerBytesPerSecond: 1024 * 1024 * 1024, peerBurstBytes: 1024 * 1024 * 1024, totalBytesPerSecond: 0, totalBurstBytes: 1, requestBytes: 1 * KiB })
    const A = env.node(await syncNode(ps, { sync: false, rpc: { quota: qa } }))
    const B = env.node(await syncNode(ps, { sync: false, rpc: { quota: qb } }))
    const cs = await env.store('client')
    const C = env.node(await syncNode(cs, { commitSyncBatchSize: 10 }))
    // what the client asked A, and when it learned of each refusal (its own clock, as its backoff's)
    const a = A.peerId.toString()
    const asked: Array<{ at: number, protocol: string }> = []
    const refused: Array<{ at: number, hint: number, protocol: string }> = []
    for (const name of ['commitAvailability', 'fetchCommits', 'fetchBlocks', 'epochProofs']) {
      const rpc = C.services[name].rpc
      const request = rpc.request.bind(rpc)
      rpc.request = async (peer: any, req: any, o: any) => {
        if (peer.toString() === a) asked.push({ at: Date.now(), protocol: rpc.protocol })
        try {
          return await request(peer, req, o)
        } catch (err: any) {
          if (err instanceof RateLimitedError && peer.toString() === a) refused.push({ at: Date.now(), hint: err.retryAfterMs, protocol: rpc.protocol })
          throw err
        }
      }
    }
    await C.dial(A.getMultiaddrs()[0])
    await C.dial(B.getMultiaddrs()[0])
    await waitFor(() => cs.highestExecuted >= tip, 90_000, 'the client to reach the tip')

    assert.ok(refused.length > 0, `A refused the client (${asked.length} requests)`)
    assert.equal(qa.stats.refused['peer-bytes'], refused.length, 'every refusal reached the client as a RateLimitedError')
    // the client asked A nothing while a hint it had received was running
    for (const r of refused) {
      const early = asked.find(q => q.at > r.at && q.at < r.at + r.hint - 2)
      assert.equal(early, undefined, `asked A (${early?.protocol}) ${early === undefined ? 0 : early.at - r.at} ms into a ${r.hint} ms hint (${r.protocol})`)
    }
    const l: StateSyncEventLoop = (C.services.stateSync as any).eventLoop
    assert.ok(l.backoff.holds >= refused.length, 'the client held A for each hint')
    assert.ok(!l.scores.isBanned(A.peerId), 'a limiting server is not banned')
    assert.ok(qb.stats.chargedBytes > qa.stats.chargedBytes, `B served more (${qb.stats.chargedBytes} vs ${qa.stats.chargedBytes} bytes)`)
  })
})
