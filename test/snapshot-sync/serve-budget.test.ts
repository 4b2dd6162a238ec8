/**
 * A serving node's chunk sessions hold at most its in-flight byte budget (issue 16 item 4): responses
 * take their bytes from the budget before the store is read and give them back only once the stream has
 * taken them, so sessions whose clients are slow to read (here: a backpressured stream pair) wait for
 * their share instead of each holding a response. Counts the bytes held (budget and the server streams'
 * write buffers), sampled while several such sessions ask for more than the budget at once.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { handlerHarness, closedWithin } from '../fuzz/harness.ts'
import { snapshotProducer, snapshotGenesis, type SnapshotProducer } from '../helpers/snapshot-net.ts'
import { decodeListing } from '../../src/snapshot/manifest.ts'
import { SnapshotChunksService, ByteBudget } from '../../src/snapshot/protocols/snapshot-chunks.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_CHUNKS } from '../../src/snapshot/protocols/messages.ts'
import { varintLength, writeVarint } from '../../src/chain/varint.ts'

function frame (msg: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintLength(msg.length) + msg.length)
  out.set(msg, writeVarint(out, 0, msg.length))
  return out
}

describe('chunk serving: bytes held bounded by the in-flight budget', () => {
  let dir: string
  let P: SnapshotProducer
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'soma-budget-'))
    P = await snapshotProducer(dir, 21, { genesis: snapshotGenesis(1000) })
  })
  after(async () => {
    await P?.store.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('ByteBudget: first come first served, never beyond the limit, an aborted wait frees its place', async () => {
    const b = new ByteBudget(100, 1)
    assert.equal(await b.acquire(60), 60)
    const order: string[] = []
    const second = b.acquire(60).then(n => { order.push('second'); return n })
    const ac = new AbortController()
    const third = b.acquire(30, ac.signal).then(() => { order.push('third') }, () => { order.push('aborted') })
    const fourth = b.acquire(500).then(n => { order.push('fourth'); return n }) // more than the limit: all of it
    ac.abort(new Error('gone'))
    await third
    assert.deepEqual(order, ['aborted'])
    b.release(60)
    assert.equal(await second, 60)
    assert.equal(b.held, 60)
    b.release(60)
    assert.equal(await fourth, 100)
    assert.equal(b.peak, 100)
    b.release(100)
    assert.equal(b.held, 0)
  })

  it('ByteBudget: one key holds at most its share, and waiting for it holds up nobody else', async () => {
    const b = new ByteBudget(100, 0.5)
    assert.equal(await b.acquire(40, undefined, 'abuser'), 40)
    assert.equal(await new ByteBudget(100, 0.5).acquire(80, undefined, 'honest'), 50, 'more than a share gets the share')
    assert.equal(await b.acquire(30, undefined, 'honest'), 30)
    const order: string[] = []
    const abuser = b.acquire(20, undefined, 'abuser').then(n => { order.push('abuser'); return n }) // 60 > 50: waits for its own share
    const other = b.acquire(10, undefined, 'other').then(n => { order.push('other'); return n }) // fits: passes it
    assert.equal(await other, 10)
    assert.deepEqual(order, ['other'])
    assert.equal(b.heldBy('abuser'), 40)
    b.release(40, 'abuser')
    assert.equal(await abuser, 20)
    assert.deepEqual(order, ['other', 'abuser'])
    assert.ok(b.peak <= 100 && b.heldBy('abuser') === 20 && b.held === 60)
  })

  it('several sessions asking for more than the budget at once hold at most the budget', async () => {
    const h = handlerHarness()
    const LIMIT = 20 * 1024
    const RESPONSE = 8 * 1024
    const svc = new SnapshotChunksService(h.components, { store: P.store, maxChunksPerRequest: 64, maxChunkResponseBytes: RESPONSE, maxServeBytes: LIMIT, requestsPerSecond: 1e9, handlerTimeoutMs: 60_000 })
    await svc.start()
    try {
      const S = (await P.snapshots.list()).at(-1)!
      const hashes = decodeListing(await P.snapshots.getListingBytes(S)).map(r => r.hash)
      assert.ok(hashes.length >= 64, `${hashes.length} chunks`)
      const SESSIONS = 8
      const REQUESTS = 3
      const servers: Stream[] = []
      const clients: Array<{ client: Stream, received: () => number }> = []
      for (let i = 0; i < SESSIONS; i++) {
        const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
        // a slow link: writes are backpressured (drain) for a while after each message
        const { client, server } = await h.open(PROTOCOL_SNAPSHOT_CHUNKS, peer, { delay: 30, capacity: 1 })
        let got = 0
        client.addEventListener('message', evt => { got += evt.data.byteLength })
        servers.push(server)
        clients.push({ client, received: () => got })
      }
      let maxHeld = 0
      let maxBuffered = 0
      const sampler = setInterval(() => {
        maxHeld = Math.max(maxHeld, svc.budget.held)
        maxBuffered = Math.max(maxBuffered, servers.reduce((n, s) => n + s.writeBufferLength, 0))
      }, 1)
      // every session asks for a full response, again and again, all at once
      for (let r = 0; r < REQUESTS; r++) {
        for (const [i, c] of clients.entries()) {
          const ask = hashes.slice((i * 7 + r) % 32, (i * 7 + r) % 32 + 32)
          c.client.send(frame(SnapshotSyncCodecs.GetSnapshotChunksRequest.encode({ hashes: ask, maxBytes: RESPONSE })))
        }
        // every response answered and taken by its stream (the budget all given back)
        const t0 = Date.now()
        while (svc.served.requests < SESSIONS * (r + 1) || svc.budget.held > 0) {
          if (Date.now() - t0 > 60_000) throw new Error(`${svc.served.requests} responses, ${svc.budget.held} bytes held; received ${clients.map(c => c.received()).join(', ')}`)
          await new Promise(resolve => setTimeout(resolve, 5))
        }
      }
      clearInterval(sampler)
      assert.ok(SESSIONS * RESPONSE > 2 * LIMIT, 'the sessions ask for more than the budget')
      assert.ok(svc.budget.peak <= LIMIT, `peak ${svc.budget.peak} > ${LIMIT}`)
      assert.ok(maxHeld <= LIMIT && maxBuffered <= LIMIT, `held ${maxHeld}, buffered ${maxBuffered}`)
      assert.ok(svc.budget.peak > RESPONSE, `responses were held concurrently (peak ${svc.budget.peak})`)
      assert.equal(svc.served.requests, SESSIONS * REQUESTS)
      await new Promise(resolve => setTimeout(resolve, 200))
      for (const c of clients) assert.ok(c.received() >= svc.served.bytes / SESSIONS / 2, `${c.received()} bytes received`)
      for (const c of clients) void c.client.close().catch(() => {})
      for (const s of servers) await closedWithin(s, 10_000)
    } finally {
      await svc.stop()
    }
  })
})
