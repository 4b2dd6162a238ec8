/**
 * Status and health that explain a stuck node (issue 17 items 2-3): the mapping of every waiting reason to
 * /health, and real nodes on 127.0.0.1 in the stuck cases: a killed producer (no new commit), the last peer
 * leaving (no peers), a wrong-genesis peer (another chain), and a sync machine's own reason.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { createNode, type SomaNode } from '../../src/node/node.ts'
import { healthOf, mergeWaiting, NodeWatch, STUCK_AFTER_NO_PEERS, STUCK_AT_ONCE } from '../../src/node/health.ts'
import { startDevnet, type DevnetHandle } from '../../src/devnet/devnet-node.ts'
import type { WaitingCode, WaitingReason } from '../../src/sync/waiting.ts'
import { createLogger, silentLogger } from '../../src/utils/logger.ts'
import { tmpDir } from '../helpers/tmp.ts'

const thresholds = { healthNoPeersMs: 10_000, healthStallMs: 30_000 }

function reason (code: WaitingCode, since: number): WaitingReason {
  return { code, message: `test ${code}`, since }
}

test('healthOf: 200 synced, 206 syncing or briefly waiting, 503 stuck (failed, other chain, stall, no usable peer past the threshold)', () => {
  const now = 1_000_000
  assert.deepEqual(healthOf('synced', undefined, thresholds, now), { state: 'ok', httpStatus: 200 })
  assert.deepEqual(healthOf('producing', undefined, thresholds, now), { state: 'ok', httpStatus: 200 })
  assert.equal(healthOf('syncing', undefined, thresholds, now).httpStatus, 206)
  assert.equal(healthOf('snapshot', undefined, thresholds, now).httpStatus, 206)
  assert.equal(healthOf('discovering', undefined, thresholds, now).httpStatus, 206)
  assert.equal(healthOf('failed', undefined, thresholds, now).httpStatus, 503)
  assert.equal(healthOf('stopped', undefined, thresholds, now).httpStatus, 503)
  for (const code of STUCK_AT_ONCE) {
    const h = healthOf('syncing', reason(code, now), thresholds, now)
    assert.equal(h.httpStatus, 503, code)
    assert.equal(h.waiting?.code, code)
  }
  for (const code of STUCK_AFTER_NO_PEERS) {
    assert.equal(healthOf('syncing', reason(code, now - 9_999), thresholds, now).httpStatus, 206, `${code} briefly`)
    assert.equal(healthOf('synced', reason(code, now - 10_000), thresholds, now).httpStatus, 503, `${code} past the threshold`)
  }
  // peers behind us: not stuck by itself (a stall would say so)
  assert.equal(healthOf('synced', reason('peers-behind', now - 3_600_000), thresholds, now).httpStatus, 206)
  // a fault outranks the machines, which outrank the node's own checks
  const fault = reason('disk-full', now)
  assert.equal(mergeWaiting(fault, [reason('snapshot-stalled', now)], [reason('no-peers', now)]), fault)
  assert.equal(mergeWaiting(undefined, [undefined, reason('range-unavailable', now)], [reason('no-peers', now)])?.code, 'range-unavailable')
  assert.equal(mergeWaiting(undefined, [undefined], [undefined, reason('no-progress', now)])?.code, 'no-progress')
  assert.equal(mergeWaiting(undefined, [], []), undefined)
})

test('NodeWatch: no usable peer since when it began, another chain when every peer met is on one, a stall after healthStallMs', () => {
  const t0 = 5_000_000
  const w = new NodeWatch({ thresholds, chainId: 'ab'.repeat(32), height: 10, now: t0 })
  const peer = { id: 'p1', wrongChain: false, banned: false }
  w.sample({ height: 10, peers: [peer], checkPeers: true, now: t0 })
  assert.deepEqual(w.reasons({ peers: [peer], checkPeers: true, height: 10, phase: 'synced', now: t0 + 1000 }), [])
  // the last peer leaves
  w.sample({ height: 11, peers: [], checkPeers: true, now: t0 + 2000 })
  assert.equal(w.lastCommitAt, t0 + 2000)
  let r = w.reasons({ peers: [], checkPeers: true, height: 11, phase: 'synced', now: t0 + 5000 })
  assert.equal(r[0].code, 'no-peers')
  assert.equal(r[0].since, t0 + 2000)
  // a producer does not need peers
  assert.deepEqual(w.reasons({ peers: [], checkPeers: false, height: 11, phase: 'producing', now: t0 + 5000 }), [])
  // a banned peer is no usable peer
  w.sample({ height: 11, peers: [{ ...peer, banned: true }], checkPeers: true, now: t0 + 6000 })
  r = w.reasons({ peers: [{ ...peer, banned: true }], checkPeers: true, height: 11, phase: 'synced', now: t0 + 6000 })
  assert.equal(r[0].code, 'no-peers')
  assert.deepEqual(r[0].evidence?.banned, ['p1'])
  // every peer met is on another chain
  const other = { id: 'p2', wrongChain: true, banned: false }
  w.sample({ height: 11, peers: [other], checkPeers: true, now: t0 + 7000 })
  r = w.reasons({ peers: [other], checkPeers: true, height: 11, phase: 'synced', now: t0 + 7000 })
  assert.equal(r[0].code, 'peers-other-chain')
  assert.deepEqual(r[0].evidence?.otherChainPeers, ['p2'])
  assert.equal(r[0].evidence?.ourGenesis, 'ab'.repeat(32))
  // no new commit for healthStallMs
  w.sample({ height: 11, peers: [peer], checkPeers: true, now: t0 + 2000 + 30_000 })
  r = w.reasons({ peers: [peer], checkPeers: true, height: 11, phase: 'synced', now: t0 + 2000 + 30_000 })
  assert.deepEqual(r.map(x => x.code), ['no-progress'])
  assert.match(r[0].message, /no new commit for 30 s/)
  // snapshot bytes count as progress
  const s = new NodeWatch({ thresholds, chainId: 'cd', height: 0, now: t0 })
  s.sample({ height: 0, peers: [peer], checkPeers: true, snapshotBytes: 0, now: t0 })
  s.sample({ height: 0, peers: [peer], checkPeers: true, snapshotBytes: 100, now: t0 + 29_000 })
  assert.deepEqual(s.reasons({ peers: [peer], checkPeers: true, height: 0, phase: 'snapshot', now: t0 + 40_000 }), [])
})

const genesis = createGenesis({ seed: 'health-test', validators: 4, accounts: 16, initialBalance: 1000, embeddingDim: 4 })

function config (dataDir: string, overrides: Partial<SomaConfig> = {}): SomaConfig {
  return { ...DEFAULTS, dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], entrypoints: [], statusPort: 0, logLevel: 'error', syncMode: 'commits', peerHeightQueryIntervalMs: 300, ...overrides }
}

async function waitFor (what: string, cond: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function health (node: SomaNode): Promise<{ code: number, body: string }> {
  const res = await fetch(`${node.statusUrl!}/health`)
  return { code: res.status, body: await res.text() }
}

function capture (): { lines: string[], logger: ReturnType<typeof createLogger> } {
  const lines: string[] = []
  return { lines, logger: createLogger('node', { level: 'info', write: l => { lines.push(l) } }) }
}

test('a killed producer: 503 no-progress after healthStallMs while peers stay; the last peer leaving: 503 no-peers; logged', { timeout: 180_000 }, async t => {
  let devnet: DevnetHandle | undefined
  const nodes: SomaNode[] = []
  t.after(async () => {
    for (const n of nodes) await n.stop()
    await devnet?.stop()
  })
  devnet = await startDevnet(config(tmpDir(t), { devnetSeed: 'health-devnet', accounts: 16, validators: 4, embeddingDim: 4, roundIntervalMs: 50, txsPerBlock: 2 }), { logger: silentLogger(), statusServer: false })
  const entry = devnet.node.multiaddrs()[0]
  const log = capture()
  const node = await createNode(config(tmpDir(t), { entrypoints: [entry], genesisFile: devnet.genesisFile, healthStallMs: 3000, healthNoPeersMs: 2000 }),
    { logger: log.logger, statusServer: { host: '127.0.0.1', port: 0 } })
  nodes.push(node)
  await node.start()
  await waitFor('the node to sync and be healthy', async () => node.store.highestExecuted >= 10 && (await health(node)).code === 200)
  let s = await node.status()
  assert.equal(s.waiting, undefined)
  assert.equal(s.health, 'ok')
  assert.ok(typeof s.lastCommitAt === 'string')
  const peer = (s.peerList as any[]).find(p => p.id === devnet!.node.peerId.toString())
  assert.ok(peer !== undefined && peer.height >= 1 && typeof peer.rttMs === 'number', JSON.stringify(s.peerList))

  // the producer dies; its node (a peer) stays: no new commit for healthStallMs
  await devnet.producer.stop()
  await waitFor('503 no-progress', async () => (await health(node)).code === 503, 30_000)
  let h = await health(node)
  assert.match(h.body, /^stuck: no-progress: no new commit for \d+ s/)
  s = await node.status()
  assert.equal(s.waiting?.code, 'no-progress')
  assert.equal(s.healthy, false)
  assert.ok(log.lines.some(l => / WARN  \[node\] waiting: no-progress/.test(l)), log.lines.join(''))
  assert.ok(log.lines.some(l => / ERROR \[node\] health: stuck \(503\): no-progress/.test(l)), log.lines.join(''))

  // the last peer leaves: no-peers, 503 once it has lasted healthNoPeersMs
  await devnet.stop()
  devnet = undefined
  await waitFor('waiting no-peers', async () => (await node.status()).waiting?.code === 'no-peers', 30_000)
  await waitFor('503 no-peers', async () => /^stuck: no-peers/.test((await health(node)).body), 30_000)
  h = await health(node)
  assert.equal(h.code, 503)
  const metrics = await (await fetch(`${node.statusUrl!}/metrics`)).text()
  assert.match(metrics, /^soma_health_status 503$/m)
  assert.match(metrics, /^soma_waiting\{code="no-peers"\} 1$/m)
  assert.match(metrics, /^soma_peers_by_state\{state="usable"\} 0$/m)
  assert.ok(log.lines.some(l => /WARN  \[node\] waiting: no-peers: no (connected )?peer/.test(l)), log.lines.join(''))
})

test('a wrong-genesis peer: status says every peer is on another chain (503), the log says the peer was dropped', { timeout: 120_000 }, async t => {
  const other = createGenesis({ seed: 'health-test-other-chain', validators: 4, accounts: 16, initialBalance: 1000, embeddingDim: 4 })
  const nodes: SomaNode[] = []
  t.after(async () => { for (const n of nodes) await n.stop() })
  const foreign = await createNode(config(tmpDir(t)), { genesis: other, logger: silentLogger(), statusServer: false, commitSync: 'serve', phase: 'producing' })
  nodes.push(foreign)
  await foreign.start()
  const log = capture()
  const node = await createNode(config(tmpDir(t), { entrypoints: [foreign.multiaddrs()[0]] }), { genesis, logger: log.logger, statusServer: { host: '127.0.0.1', port: 0 } })
  nodes.push(node)
  await node.start()
  await waitFor('waiting peers-other-chain', async () => (await node.status()).waiting?.code === 'peers-other-chain', 60_000)
  const s = await node.status()
  // the reason comes from commit sync's state machine (each peer with its genesis digest) or, when the
  // machine has none, from the node's own check (the peers' ids): either names the peer and our genesis
  const ev = s.waiting?.evidence as any
  const peers = ev.otherChainPeers ?? ev.peers.map((p: any) => p.peer)
  assert.deepEqual(peers, [foreign.peerId.toString()])
  assert.equal(ev.ourGenesis ?? ev.genesisDigest, s.chainId)
  if (ev.peers !== undefined) assert.equal(ev.peers[0].genesisDigest.length, 64, 'the other chain\'s genesis digest')
  const h = await health(node)
  assert.equal(h.code, 503)
  assert.match(h.body, /^stuck: peers-other-chain: every peer (met|found)( \(\d+\))? is on another chain/)
  const text = log.lines.join('')
  assert.match(text, /another chain: dropped/)
  assert.match(text, /WARN  \[node:commit-sync:peers\] penalty: peer \S+, WrongChainError, 100 points \(score -100\)/)
  assert.match(text, /WARN  \[node:commit-sync:peers\] ban: peer \S+ banned until \d{4}-/)
  const metrics = await (await fetch(`${node.statusUrl!}/metrics`)).text()
  assert.match(metrics, /^soma_penalties_total\{sync="commit",reason="WrongChainError"\} [1-9]/m)
  assert.match(metrics, /^soma_bans_total\{sync="commit",reason="WrongChainError"\} [1-9]/m)
  assert.match(metrics, /^soma_range_failures_total\{reason="WrongChainError"\} [1-9]/m)
})

test('a sync machine\'s waiting() reaches /status and /health: 206 while brief, 503 past healthNoPeersMs', { timeout: 60_000 }, async t => {
  const node = await createNode(config(tmpDir(t), { healthNoPeersMs: 5000 }), { genesis, logger: silentLogger(), statusServer: { host: '127.0.0.1', port: 0 } })
  t.after(async () => { await node.stop() })
  await node.start()
  const sync = (node.libp2p.services as any).stateSync
  // what the commit-sync state machine reports (src/sync/waiting.ts): a stuck range
  let machine: WaitingReason | undefined = { code: 'range-unavailable', message: 'every peer with commits 5-100 is banned or pruned below them', since: Date.now(), evidence: { peers: ['a', 'b'] } }
  sync.waiting = () => machine
  await waitFor('the machine\'s reason in /status', async () => (await node.status()).waiting?.code === 'range-unavailable', 10_000)
  let s = await node.status()
  assert.deepEqual(s.waiting, machine)
  let h = await health(node)
  assert.equal(h.code, 206)
  assert.equal(h.body, `syncing: range-unavailable: ${machine.message}\n`)
  machine = { ...machine, since: Date.now() - 6000 }
  h = await health(node)
  assert.equal(h.code, 503)
  assert.match(h.body, /^stuck: range-unavailable: /)
  // a snapshot machine's reason while it runs
  machine = undefined
  s = await node.status()
  assert.notEqual(s.waiting?.code, 'range-unavailable')
})
