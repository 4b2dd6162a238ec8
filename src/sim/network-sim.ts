/**
 * A discrete-event simulation of soma-sync's sync policies on a large network (issue 15, item 4). The
 * policies are the real classes, imported, driven by a simulated clock:
 *
 * - **PeerHeights** (src/sync/peer-heights.ts): what each node knows of its peers' heights and measured
 *   throughput; its `pushTargets` is PushCommit's fan-out (a node that reaches a new height pushes it to
 *   at most `pushFanout` random peers it knows to be lower, as `StateSyncEventLoop.notifyLowerPeers`
 *   does);
 * - **PeerBalancer** (src/sync/peer-balancer.ts): which peer a commit range is fetched from (throughput,
 *   then RTT order, random within the first SELECTION_WINDOW, falling back through the rest);
 * - **ServeQuota** and **PeerBackoff** (src/net/rate-limit.ts): every serving node prices each request
 *   by its bytes (GCRA per peer and total) and refuses with a retry hint; clients leave that peer alone
 *   for the hint and pick another.
 *
 * The model (see README, "Simulation", for its assumptions): nodes on a unit square, one-way latency
 * `baseLatencyMs + distance × spanLatencyMs`; every node uploads through one FIFO link of
 * `uploadBytesPerSecond` (a response is sent after the ones before it); `validators` nodes hold every
 * commit the moment it is produced (one every `commitIntervalMs`, `commitBytes` with its blocks); every
 * other node connects to `degree` random live nodes when it joins (capped at `maxConnections` each) and
 * commit-syncs: one range of up to `batchCommits` commits at a time from the PeerBalancer's pick, one
 * round trip plus the transfer. Heights are learnt from pushes and from availability queries every
 * `queryIntervalMs`. A node left with fewer than `degree / 2` peers connects to another random one. Churn: every `churnIntervalMs` one random full node leaves and a new one joins;
 * a joining node first fetches the newest snapshot (`snapshotBytes`, cut into `chunkBytes` chunks) from
 * every connected peer that holds it, `snapshotLanes` requests in flight per peer, each next chunk to the
 * first free lane (the downloader's work sharing, with a fixed window), then commit-syncs from it.
 */
import type { PeerId } from '@libp2p/interface'
import { PeerHeights } from '../sync/peer-heights.ts'
import { PeerBalancer } from '../sync/peer-balancer.ts'
import { PeerBackoff, ServeQuota } from '../net/rate-limit.ts'
import { DEFAULTS } from '../config.ts'

export interface SimConfig {
  nodes: number
  validators: number
  degree: number
  maxConnections: number
  durationMs: number
  /** production stops this long before the end, so that the network can drain */
  drainMs: number
  commitIntervalMs: number
  commitBytes: number
  batchCommits: number
  /** PushCommit's fan-out (the node's `pushFanout`) */
  pushFanout: number
  queryIntervalMs: number
  baseLatencyMs: number
  spanLatencyMs: number
  uploadBytesPerSecond: number
  churnIntervalMs: number
  snapshotEveryCommits: number
  snapshotBytes: number
  chunkBytes: number
  snapshotLanes: number
  requestBytes: number
  /** the serving nodes' quota (0: none) */
  peerBytesPerSecond: number
  peerBurstBytes: number
  totalBytesPerSecond: number
  totalBurstBytes: number
  seed: number
}

export const SIM_DEFAULTS: Readonly<SimConfig> = Object.freeze({
  nodes: 1000,
  validators: 4,
  degree: 8,
  maxConnections: 100,
  durationMs: 120_000,
  drainMs: 30_000,
  commitIntervalMs: 500,
  commitBytes: 16 * 1024,
  batchCommits: 100,
  pushFanout: DEFAULTS.pushFanout,
  queryIntervalMs: 5000,
  baseLatencyMs: 5,
  spanLatencyMs: 100,
  uploadBytesPerSecond: 12.5 * 1024 * 1024,
  churnIntervalMs: 1000,
  snapshotEveryCommits: 50,
  snapshotBytes: 64 * 1024 * 1024,
  chunkBytes: 1024 * 1024,
  snapshotLanes: 8,
  requestBytes: 4096,
  peerBytesPerSecond: 4 * 1024 * 1024,
  peerBurstBytes: 8 * 1024 * 1024,
  totalBytesPerSecond: 12 * 1024 * 1024,
  totalBurstBytes: 32 * 1024 * 1024,
  seed: 1
})

export interface SimResult {
  config: SimConfig
  commits: number
  events: number
  joined: number
  left: number
  /** bytes served per node that served anything, max ÷ mean (how evenly the load spreads) */
  servedMaxOverMean: number
  /** the same for commit-sync bytes alone, and for snapshot bytes alone */
  commitServedMaxOverMean: number
  snapshotServedMaxOverMean: number
  /**
   * bytes served per node, max ÷ mean over the residents: the nodes live for the whole run (the
   * validators and the first full nodes that never left), zeros included. Every resident could serve
   * for the same time, so unlike the figures above the mean is not lowered by nodes that joined late
   * or left early, or inflated by leaving idle nodes out.
   */
  residentServedMaxOverMean: number
  /** the same for commit-sync bytes alone */
  residentCommitServedMaxOverMean: number
  /**
   * the 99th percentile ÷ the mean, over the nodes that served anything and over the residents: the
   * maximum of N random loads grows with N even when no node is favoured (the extreme of more
   * samples), a high percentile does not; a policy that favours some nodes raises both
   */
  servedP99OverMean: number
  residentServedP99OverMean: number
  /** 1 when the node that served the most is a validator */
  topServerIsValidator: number
  /** the five nodes that served the most (for diagnosis: which nodes, which traffic) */
  topServers: Array<{ id: number, validator: boolean, joinedAtMs: number, live: boolean, served: number, servedSnapshot: number, degree: number }>
  /** bytes served ÷ the node's connections at the end, max ÷ mean over live serving nodes */
  servedPerConnectionMaxOverMean: number
  /** connections of the node that served the most, and the mean */
  topServerDegree: number
  meanDegree: number
  servedMaxBytes: number
  servedMeanBytes: number
  /** the validators' share of all bytes served */
  validatorShare: number
  /** ms from a commit's production until 99 % of the nodes live and caught up then had it: median, p95, max over commits */
  reach99Ms: { median: number, p95: number, max: number }
  /** commits that never reached 99 % before the end */
  unreached: number
  refused: number
  /** requests a client sent to a peer while a hint from that peer was running (must be 0) */
  hintViolations: number
  snapshotSyncs: number
  /** live nodes at the end, and those at the tip */
  liveAtEnd: number
  atTipAtEnd: number
  /** bytes sent = bytes received (the accounting invariant), both */
  bytesSent: number
  bytesReceived: number
}

/** A seeded PRNG (mulberry32): the same seed gives the same sequence. */
export function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A min-heap of events by time (ties in insertion order). */
class EventQueue {
  private readonly heap: Array<{ at: number, seq: number, fn: () => void }> = []
  private seq = 0
  get size (): number { return this.heap.length }
  push (at: number, fn: () => void): void {
    const h = this.heap
    h.push({ at, seq: this.seq++, fn })
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (less(h[p], h[i])) break
      ;[h[p], h[i]] = [h[i], h[p]]
      i = p
    }
  }

  pop (): { at: number, fn: () => void } | undefined {
    const h = this.heap
    if (h.length === 0) return undefined
    const top = h[0]
    const last = h.pop()!
    if (h.length > 0) {
      h[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1; const r = l + 1
        let m = i
        if (l < h.length && less(h[l], h[m])) m = l
        if (r < h.length && less(h[r], h[m])) m = r
        if (m === i) break
        ;[h[m], h[i]] = [h[i], h[m]]
        i = m
      }
    }
    return top
  }
}
const less = (a: { at: number, seq: number }, b: { at: number, seq: number }): boolean => a.at < b.at || (a.at === b.at && a.seq < b.seq)

/** The simulated node's peer id: what the policy classes need of a PeerId. */
function simPeerId (id: number): PeerId {
  const s = `sim-${id}`
  return { toString: () => s, equals: (o: any) => o?.toString() === s } as unknown as PeerId
}

const CHAIN_ID = new Uint8Array(32).fill(7)

interface SimNode {
  id: number
  pid: PeerId
  x: number
  y: number
  validator: boolean
  live: boolean
  height: number
  /** commits below this are not held (a snapshot-synced node) */
  lowest: number
  peers: Set<number>
  heights: PeerHeights
  backoff: PeerBackoff
  quota?: ServeQuota
  /** the upload link is busy until */
  linkFreeAt: number
  served: number
  /** of which snapshot chunks */
  servedSnapshot: number
  received: number
  fetching: boolean
  snapshotting: boolean
  joinedAt: number
  /** per peer: until when a hint from it runs (for the invariant check) */
  hints: Map<number, number>
}

export function simulate (overrides: Partial<SimConfig> = {}): SimResult {
  const cfg: SimConfig = { ...SIM_DEFAULTS, ...overrides }
  const random = rng(cfg.seed)
  const q = new EventQueue()
  let now = 0
  let events = 0
  const nodes: SimNode[] = []
  let tip = 0
  const producedAt: number[] = [0]
  /** per commit: nodes live and caught up when it was produced, and how many of them have it */
  const audience: Array<{ need: number, have: number, at?: number, members: Set<number> }> = [{ need: 0, have: 0, members: new Set() }]
  let joined = 0; let left = 0; let refused = 0; let hintViolations = 0; let snapshotSyncs = 0
  let bytesSent = 0; let bytesReceived = 0

  const latency = (a: SimNode, b: SimNode): number => cfg.baseLatencyMs + Math.hypot(a.x - b.x, a.y - b.y) * cfg.spanLatencyMs
  const at = (delay: number, fn: () => void): void => { q.push(now + delay, fn) }
  const liveNodes = (): SimNode[] => nodes.filter(n => n.live)

  const makeNode = (validator: boolean): SimNode => {
    const id = nodes.length
    const n: SimNode = {
      id, pid: simPeerId(id), x: random(), y: random(), validator, live: true, height: validator ? tip : 0, lowest: 0,
      peers: new Set(), heights: new PeerHeights(CHAIN_ID), backoff: new PeerBackoff(() => now),
      linkFreeAt: 0, served: 0, servedSnapshot: 0, received: 0, fetching: false, snapshotting: false, joinedAt: now, hints: new Map()
    }
    if (cfg.peerBytesPerSecond > 0 || cfg.totalBytesPerSecond > 0) {
      n.quota = new ServeQuota({ peerBytesPerSecond: cfg.peerBytesPerSecond, peerBurstBytes: cfg.peerBurstBytes, totalBytesPerSecond: cfg.totalBytesPerSecond, totalBurstBytes: cfg.totalBurstBytes, requestBytes: cfg.requestBytes, now: () => now })
    }
    nodes.push(n)
    return n
  }

  const info = (n: SimNode): { highestSynced: number, lowestAvailable: number, genesisDigest: Uint8Array } => ({ highestSynced: n.height, lowestAvailable: n.lowest, genesisDigest: CHAIN_ID })

  const connect = (a: SimNode, b: SimNode): void => {
    a.peers.add(b.id); b.peers.add(a.id)
    // each side asks the other's availability on connect
    query(a, b); query(b, a)
  }

  /** An availability query of `a` to `b` (one round trip, a few bytes; not quota-priced here). */
  const query = (a: SimNode, b: SimNode): void => {
    const rtt = 2 * latency(a, b)
    at(rtt, () => {
      if (!a.live || !b.live || !a.peers.has(b.id)) return
      a.heights.update(b.pid, info(b), rtt)
      wake(a)
    })
  }

  const count99 = (c: number): void => {
    const a = audience[c]
    if (a.at === undefined && a.need > 0 && a.have >= Math.ceil(a.need * 0.99)) a.at = now - producedAt[c]
  }

  /** `n` went from `from - 1` to `height`: PushCommit to every peer it knows to be lower (the real fan-out). */
  const reached = (n: SimNode, from: number, height: number): void => {
    for (let c = Math.max(from, 1); c <= height; c++) {
      const a = audience[c]
      if (a !== undefined && a.members.has(n.id)) { a.have++; count99(c) }
    }
    for (const p of n.heights.pushTargets(height, cfg.pushFanout, random)) {
      const peer = nodes[Number(p.peer.toString().slice(4))]
      at(latency(n, peer), () => {
        if (!peer.live || !peer.peers.has(n.id)) return
        peer.heights.update(n.pid, { highestSynced: height, lowestAvailable: n.lowest, genesisDigest: CHAIN_ID })
        wake(peer)
      })
    }
  }

  /**
   * `server` serves `bytes` to `client`: quota first (a refusal returns its hint), then its upload
   * link, FIFO. Calls `done(hint)` at the client when the answer arrives.
   */
  const serve = (client: SimNode, server: SimNode, bytes: number, worstCase: number, done: (hintMs: number) => void, snapshot = false): void => {
    const hint = client.hints.get(server.id)
    if (hint !== undefined && now < hint - 1e-6) hintViolations++
    const oneWay = latency(client, server)
    at(oneWay, () => {
      if (!server.live) { at(oneWay, () => done(-1)); return }
      if (server.quota !== undefined) {
        const t = server.quota.admit(client.pid.toString(), worstCase)
        if ('retryAfterMs' in t) {
          refused++
          at(oneWay, () => { client.hints.set(server.id, now + t.retryAfterMs); done(t.retryAfterMs) })
          return
        }
        server.quota.settle(t, bytes)
      }
      const start = Math.max(now, server.linkFreeAt)
      const end = start + bytes / cfg.uploadBytesPerSecond * 1000
      server.linkFreeAt = end
      server.served += bytes
      if (snapshot) server.servedSnapshot += bytes
      bytesSent += bytes
      q.push(end + oneWay, () => {
        client.received += bytes
        bytesReceived += bytes
        done(0)
      })
    })
  }

  /** The sync loop of `n`: one range at a time from the PeerBalancer's pick, honouring hints. */
  const wake = (n: SimNode): void => {
    if (!n.live || n.validator || n.fetching || n.snapshotting) return
    const target = n.heights.highest()
    if (target <= n.height) return
    const start = n.height + 1
    const candidates = n.heights.all().filter(p => !n.backoff.isHeld(p.peer.toString()))
    const balancer = new PeerBalancer(candidates, start, random)
    const tryNext = (): void => {
      const pick = balancer.next()
      if (pick.done === true) {
        n.fetching = false
        // nobody can serve it now: try again after a while (the loop's wait when no peer can serve)
        at(1000, () => wake(n))
        return
      }
      const server = nodes[Number(pick.value.toString().slice(4))]
      if (n.backoff.isHeld(server.pid.toString())) { tryNext(); return }
      const known = n.heights.get(server.pid)!.height
      const end = Math.min(known, start + cfg.batchCommits - 1)
      const bytes = (end - start + 1) * cfg.commitBytes
      const sentAt = now
      serve(n, server, bytes, cfg.batchCommits * cfg.commitBytes, (hint) => {
        if (!n.live) return
        if (hint !== 0) {
          if (hint > 0) n.backoff.hold(server.pid.toString(), hint)
          else n.heights.remove(server.pid)
          tryNext()
          return
        }
        n.fetching = false
        // the measured throughput the balancer orders by (as the real loop records verified ranges)
        n.heights.served(server.pid, end, end - start + 1, now - sentAt)
        if (end > n.height) {
          const from = n.height + 1
          n.height = end
          reached(n, from, end)
        }
        wake(n)
      })
    }
    n.fetching = true
    tryNext()
  }

  /** A joining node's snapshot sync: chunks from every connected peer holding the snapshot. */
  const snapshotSync = (n: SimNode): void => {
    const S = Math.floor(tip / cfg.snapshotEveryCommits) * cfg.snapshotEveryCommits
    const servers = [...n.peers].map(i => nodes[i]).filter(p => p.live && p.height >= S && p.lowest <= S)
    if (S === 0 || servers.length === 0) { n.snapshotting = false; wake(n); return }
    n.snapshotting = true
    snapshotSyncs++
    let remaining = Math.ceil(cfg.snapshotBytes / cfg.chunkBytes)
    let inflight = 0
    const lane = (server: SimNode): void => {
      if (remaining === 0 || !n.live) {
        if (inflight === 0 && n.snapshotting && remaining === 0) {
          n.snapshotting = false
          n.height = S; n.lowest = S + 1
          reached(n, S, S)
          wake(n)
        }
        return
      }
      // a hint from this peer pauses all its lanes (the downloader's pausedUntil)
      const held = n.backoff.remaining(server.pid.toString())
      if (held > 0) { at(held, () => lane(server)); return }
      remaining--; inflight++
      serve(n, server, cfg.chunkBytes, cfg.chunkBytes, (hint) => {
        inflight--
        if (hint !== 0) {
          remaining++ // back to the queue: another lane takes it
          if (hint > 0) { n.backoff.hold(server.pid.toString(), hint); lane(server); return }
          // the server left: a lane of a live server takes the chunk (or, none left, commit sync)
          const alive = servers.filter(s => s.live)
          if (alive.length > 0) lane(alive[Math.floor(random() * alive.length)])
          else if (inflight === 0) { n.snapshotting = false; wake(n) }
          return
        }
        lane(server)
      }, true)
    }
    for (const s of servers) for (let i = 0; i < cfg.snapshotLanes; i++) lane(s)
  }

  const join = (validator: boolean): SimNode => {
    const n = makeNode(validator)
    joined++
    const others = liveNodes().filter(o => o.id !== n.id && o.peers.size < cfg.maxConnections)
    for (let i = 0; i < cfg.degree && others.length > 0; i++) {
      const [o] = others.splice(Math.floor(random() * others.length), 1)
      connect(n, o)
    }
    return n
  }

  // the network: validators fully connected, then full nodes joining; all start at commit 0
  for (let i = 0; i < cfg.validators; i++) join(true)
  for (const a of nodes) for (const b of nodes) if (a.id < b.id) connect(a, b)
  for (let i = cfg.validators; i < cfg.nodes; i++) join(false)

  // periodic availability queries (staggered)
  for (const n of nodes) {
    const tick = (): void => {
      if (!n.live) return
      for (const p of n.peers) { const o = nodes[p]; if (o.live && !n.backoff.isHeld(o.pid.toString())) query(n, o) }
      at(cfg.queryIntervalMs, tick)
    }
    at(random() * cfg.queryIntervalMs, tick)
  }
  const produce = (): void => {
    if (now > cfg.durationMs - cfg.drainMs) return
    tip++
    producedAt[tip] = now
    // every live full node that is not fetching a snapshot (validators have it at once)
    const members = new Set(nodes.filter(n => n.live && !n.validator && !n.snapshotting && n.joinedAt < now).map(n => n.id))
    audience[tip] = { need: members.size, have: 0, members }
    for (const v of nodes) if (v.validator && v.live) { v.height = tip; reached(v, tip, tip) }
    at(cfg.commitIntervalMs, produce)
  }
  at(cfg.commitIntervalMs, produce)
  if (cfg.churnIntervalMs > 0) {
    const churn = (): void => {
      if (now > cfg.durationMs - cfg.drainMs) return
      const full = liveNodes().filter(n => !n.validator)
      if (full.length > 0) {
        const gone = full[Math.floor(random() * full.length)]
        gone.live = false
        left++
        // it no longer counts towards the commits it had not reached
        for (let c = gone.height + 1; c <= tip; c++) {
          const a = audience[c]
          if (a.members.delete(gone.id)) { a.need--; count99(c) }
        }
        for (const p of gone.peers) {
          const o = nodes[p]
          at(latency(gone, o), () => {
            o.peers.delete(gone.id); o.heights.remove(gone.pid)
            // below half its degree, a node finds another peer (discovery, entrypoint redial)
            if (o.live && o.peers.size < cfg.degree / 2) {
              const others = liveNodes().filter(x => x.id !== o.id && !o.peers.has(x.id) && x.peers.size < cfg.maxConnections)
              if (others.length > 0) connect(o, others[Math.floor(random() * others.length)])
            }
          })
        }
      }
      const n = join(false)
      // an empty node syncs a snapshot first (commit sync waits); it learns heights first (connect
      // queries), then picks the snapshot
      n.snapshotting = true
      at(3 * cfg.spanLatencyMs, () => snapshotSync(n))
      at(cfg.churnIntervalMs, churn)
    }
    at(cfg.churnIntervalMs, churn)
  }

  for (let e = q.pop(); e !== undefined && e.at <= cfg.durationMs; e = q.pop()) {
    now = Math.max(now, e.at)
    events++
    e.fn()
  }

  const maxOverMean = (xs: number[], withZeros = false): number => {
    const v = withZeros ? xs : xs.filter(x => x > 0)
    const m = v.reduce((a, b) => a + b, 0) / Math.max(1, v.length)
    return m === 0 ? 0 : Math.max(...v) / m
  }
  const residents = nodes.filter(n => n.live && n.joinedAt === 0)
  const p99OverMean = (xs: number[]): number => {
    const v = [...xs].sort((a, b) => a - b)
    const m = v.reduce((a, b) => a + b, 0) / Math.max(1, v.length)
    return m === 0 ? 0 : v[Math.min(v.length - 1, Math.floor(0.99 * (v.length - 1)))] / m
  }
  const servers = nodes.filter(n => n.served > 0)
  const served = servers.map(n => n.served)
  const mean = served.reduce((a, b) => a + b, 0) / Math.max(1, served.length)
  const max = Math.max(0, ...served)
  const top = servers.find(n => n.served === max)
  const reach = audience.slice(1).filter(a => a.need > 0)
  const times = reach.filter(a => a.at !== undefined).map(a => a.at!).sort((a, b) => a - b)
  const pct = (p: number): number => times.length === 0 ? NaN : times[Math.min(times.length - 1, Math.floor(p * (times.length - 1)))]
  const live = liveNodes()
  const total = bytesSent
  return {
    config: cfg,
    commits: tip,
    events,
    joined,
    left,
    servedMaxOverMean: mean === 0 ? 0 : max / mean,
    commitServedMaxOverMean: maxOverMean(nodes.map(n => n.served - n.servedSnapshot)),
    snapshotServedMaxOverMean: maxOverMean(nodes.map(n => n.servedSnapshot)),
    residentServedMaxOverMean: maxOverMean(residents.map(n => n.served), true),
    residentCommitServedMaxOverMean: maxOverMean(residents.map(n => n.served - n.servedSnapshot), true),
    servedP99OverMean: p99OverMean(served),
    residentServedP99OverMean: p99OverMean(residents.map(n => n.served)),
    topServerIsValidator: top?.validator === true ? 1 : 0,
    topServers: [...servers].sort((a, b) => b.served - a.served).slice(0, 5).map(n => ({ id: n.id, validator: n.validator, joinedAtMs: n.joinedAt, live: n.live, served: n.served, servedSnapshot: n.servedSnapshot, degree: n.peers.size })),
    servedPerConnectionMaxOverMean: maxOverMean(nodes.filter(n => n.live && n.peers.size > 0).map(n => n.served / n.peers.size)),
    topServerDegree: top?.peers.size ?? 0,
    meanDegree: nodes.filter(n => n.live).reduce((a, n) => a + n.peers.size, 0) / Math.max(1, nodes.filter(n => n.live).length),
    servedMaxBytes: max,
    servedMeanBytes: mean,
    validatorShare: total === 0 ? 0 : nodes.filter(n => n.validator).reduce((a, n) => a + n.served, 0) / total,
    reach99Ms: { median: pct(0.5), p95: pct(0.95), max: times.at(-1) ?? NaN },
    unreached: reach.length - times.length,
    refused,
    hintViolations,
    snapshotSyncs,
    liveAtEnd: live.length,
    atTipAtEnd: live.filter(n => n.height === tip).length,
    bytesSent,
    bytesReceived
  }
}
