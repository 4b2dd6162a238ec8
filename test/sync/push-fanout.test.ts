/**
 * PushCommit's bounded fan-out (issue 15, item 4): a node that reaches a new height pushes it to at most
 * `pushFanout` of the peers it knows to be lower, a fresh random choice each time
 * (PeerHeights.pushTargets), and with real nodes on 127.0.0.1 a node whose fan-out is 1 pushes to one
 * of its three lower peers per stored range while all of them still reach the tip.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { PeerId } from '@libp2p/interface'
import { PeerHeights } from '../../src/sync/peer-heights.ts'
import type { StateSyncEventLoop } from '../../src/sync/event-loop.ts'
import { servedChain, syncNode, testEnv, waitFor, type SyncNode } from '../helpers/sync-net.ts'
import { toHex } from '../../src/crypto/hash.ts'
// a seeded PRNG (mulberry32), so that the counts below are exact
import { rng } from '../../src/sim/network-sim.ts'

const CHAIN = new Uint8Array(32).fill(3)
const pid = (s: string): PeerId => ({ toString: () => s, equals: (o: any) => o?.toString() === s }) as unknown as PeerId
const addr = (n: SyncNode): Multiaddr => n.getMultiaddrs()[0]
const loop = (n: SyncNode): StateSyncEventLoop => {
  const l = n.services.stateSync.eventLoop
  assert.ok(l !== undefined, 'the sync loop runs')
  return l
}


function heights (n: number, highAt: (i: number) => boolean): PeerHeights {
  const h = new PeerHeights(CHAIN)
  for (let i = 0; i < n; i++) h.update(pid(`p${i}`), { highestSynced: highAt(i) ? 100 : 10, lowestAvailable: 0, genesisDigest: CHAIN })
  return h
}

test('pushTargets: at most fanout distinct lower peers, all of them when there are fewer, never a peer at or above the height', () => {
  const h = heights(30, i => i % 3 === 0) // 10 peers at 100, 20 at 10
  const random = rng(1)
  for (const fanout of [1, 2, 8, 19, 20, 50]) {
    for (let round = 0; round < 20; round++) {
      const t = h.pushTargets(50, fanout, random)
      assert.equal(t.length, Math.min(fanout, 20), `fanout ${fanout}`)
      assert.equal(new Set(t.map(p => p.peer.toString())).size, t.length, 'distinct peers')
      for (const p of t) assert.ok(p.height < 50, `${p.peer.toString()} is lower`)
    }
  }
  assert.deepEqual(h.pushTargets(5, 8, random), [], 'no peer is lower than 5')
  assert.equal(h.pushTargets(200, 100, random).length, 30, 'all 30 are lower than 200')
})

test('pushTargets: the choice is uniform over the lower peers (every one is pushed to about as often)', () => {
  const h = heights(40, () => false)
  const random = rng(7)
  const counts = new Map<string, number>()
  const rounds = 4000
  for (let r = 0; r < rounds; r++) for (const p of h.pushTargets(50, 8, random)) counts.set(p.peer.toString(), (counts.get(p.peer.toString()) ?? 0) + 1)
  assert.equal(counts.size, 40)
  const expected = rounds * 8 / 40 // 800
  for (const [peer, c] of counts) assert.ok(Math.abs(c - expected) < expected * 0.15, `${peer}: ${c} pushes, expected about ${expected}`)
})

test('real nodes: with pushFanout 1 each stored range is pushed to one lower peer, and every peer still reaches the tip', { timeout: 120_000 }, async t => {
  const env = testEnv(t)
  const { ps, tip, P } = await servedChain(env, 40, { epochLength: 8 })
  const sa = await env.store('a')
  // small ranges: several stored ranges, so several pushes
  const A = env.node(await syncNode(sa, { pushFanout: 1, commitSyncBatchSize: 5, peerHeightQueryIntervalMs: 60_000 }))
  const lower = await Promise.all(['b', 'c', 'd'].map(async name => {
    const s = await env.store(name)
    // their own queries (every second) are how the ones A did not push to learn its height
    const n = env.node(await syncNode(s, { peerHeightQueryIntervalMs: 1000 }))
    await n.dial(addr(A))
    return { s, n }
  }))
  await waitFor(() => lower.every(({ n }) => loop(A).heights.get(n.peerId) !== undefined), 10_000, 'A to know its three lower peers')

  // count the pushes of each notification (notifyLowerPeers pushes synchronously)
  const l = loop(A)
  const pushSvc = A.services.pushCommit
  const origPush = pushSvc.push.bind(pushSvc)
  let pushes = 0
  pushSvc.push = (...args: Parameters<typeof origPush>) => { pushes++; return origPush(...args) }
  const perCall: Array<{ pushed: number, lower: number }> = []
  const origNotify = l.notifyLowerPeers.bind(l)
  l.notifyLowerPeers = () => {
    const before = pushes
    const known = l.heights.lowerThan(sa.highestSynced).length
    origNotify()
    perCall.push({ pushed: pushes - before, lower: known })
  }

  await A.dial(addr(P))
  await waitFor(() => sa.highestSynced >= tip, 30_000, 'A to sync')
  for (const { s } of lower) await waitFor(() => s.highestExecuted >= tip, 30_000, 'every lower peer to sync')
  for (const { s } of lower) assert.equal(toHex((await s.getStateRoot(tip))!), toHex((await ps.getStateRoot(tip))!))

  assert.ok(perCall.length >= 3, `${perCall.length} notifications`)
  assert.ok(perCall.some(c => c.lower >= 2), 'A knew more than one lower peer when it pushed: the cap applied')
  for (const c of perCall) assert.equal(c.pushed, Math.min(1, c.lower), `one push per notification: ${JSON.stringify(perCall)}`)
})
