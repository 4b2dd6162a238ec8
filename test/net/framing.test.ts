/**
 * Malformed framing is rejected at once (issue 16 item 4), over real nodes on 127.0.0.1: on every
 * /soma/* protocol a request whose length prefix is no valid varint (32 × 0xff), or declares more than
 * the protocol's limit, resets the stream well before the handler timeout (30 s), costs the peer its
 * penalty (MalformedFrameError / OversizedFrameError in PEER_PENALTIES) and is logged at warn; a peer
 * that does it twice is banned (connection closed, streams refused); a node made by createNode shares one
 * guard over all its protocols and logs to its own log. A client meeting such a response
 * fails at once too (MalformedFrameError, or OversizedResponseError as for any response over its limit).
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { Stream } from '@libp2p/interface'
import { testEnv, plainNode, waitFor, type TestEnv, type SyncNode } from '../helpers/sync-net.ts'
import { snapNode } from '../helpers/snapshot-net.ts'
import { InboundGuard } from '../../src/net/inbound-guard.ts'
import { decodeFrameLength } from '../../src/net/framing.ts'
import { createLogger } from '../../src/utils/logger.ts'
import { writeVarint, varintLength } from '../../src/chain/varint.ts'
import { MalformedFrameError, OversizedFrameError, OversizedResponseError, PeerRequestFailedError, penaltyFor } from '../../src/errors.ts'
import { PROTOCOL_COMMIT_AVAILABILITY, PROTOCOL_FETCH_COMMITS, PROTOCOL_FETCH_BLOCKS, PROTOCOL_PUSH_COMMIT, PROTOCOL_EPOCH_PROOFS } from '../../src/sync/protocols/messages.ts'
import { PROTOCOL_SNAPSHOT_MANIFEST, PROTOCOL_SNAPSHOT_FILTER, PROTOCOL_SNAPSHOT_LISTING, PROTOCOL_SNAPSHOT_CHUNKS } from '../../src/snapshot/protocols/messages.ts'
import { SnapshotManifestService } from '../../src/snapshot/protocols/snapshot-manifest.ts'
import { SnapshotChunksService } from '../../src/snapshot/protocols/snapshot-chunks.ts'
import { createNode } from '../../src/node/node.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { DEFAULTS } from '../../src/config.ts'

const PROTOCOLS = [PROTOCOL_COMMIT_AVAILABILITY, PROTOCOL_FETCH_COMMITS, PROTOCOL_FETCH_BLOCKS, PROTOCOL_PUSH_COMMIT, PROTOCOL_EPOCH_PROOFS,
  PROTOCOL_SNAPSHOT_MANIFEST, PROTOCOL_SNAPSHOT_FILTER, PROTOCOL_SNAPSHOT_LISTING, PROTOCOL_SNAPSHOT_CHUNKS]
const HANDLER_TIMEOUT_MS = 30_000
/** under load a reset may take a while, but nothing close to the handler timeout */
const AT_ONCE_MS = 5000

function varint (n: number): Uint8Array {
  const b = new Uint8Array(varintLength(n))
  writeVarint(b, 0, n)
  return b
}

/** Resolves with the ms until the stream closes (reset or ended), rejects after `ms`. */
async function closedWithin (stream: Stream, ms: number): Promise<number> {
  const t0 = Date.now()
  if (stream.status !== 'open') return 0
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`stream still ${stream.status} after ${ms} ms`)) }, ms)
    stream.addEventListener('close', () => { clearTimeout(timer); resolve(Date.now() - t0) }, { once: true })
  })
}

describe('malformed framing', () => {
  let env: TestEnv
  let server: SyncNode
  let guard: InboundGuard
  const lines: string[] = []
  const cleanup: Array<() => void | Promise<void>> = []
  after(async () => { for (const fn of cleanup) await fn() })

  before(async () => {
    env = testEnv({ after: (fn) => { cleanup.push(fn) } })
    guard = new InboundGuard({ banMs: 60_000, log: createLogger('inbound', { level: 'info', write: l => { lines.push(l) } }) })
    const store = await env.store('server')
    server = env.node(await snapNode(store, { commitSync: false, commit: { rpc: { guard } }, snap: { rpc: { guard } } }))
  })

  it('the prefix decoder: at most the bytes the limit needs, never beyond the limit', () => {
    assert.deepEqual(decodeFrameLength(Uint8Array.of(0x05), 64), { length: 5, size: 1 })
    assert.deepEqual(decodeFrameLength(Uint8Array.of(0x80, 0x00), 200), { length: 0, size: 2 }, 'a non-minimal prefix within the limit')
    assert.equal(decodeFrameLength(Uint8Array.of(0x80), 200), undefined, 'more bytes needed')
    assert.throws(() => decodeFrameLength(Uint8Array.of(0x80), 64), MalformedFrameError, 'no second byte for a limit of 64')
    assert.throws(() => decodeFrameLength(Uint8Array.of(0x41), 64), OversizedFrameError)
    assert.throws(() => decodeFrameLength(new Uint8Array(32).fill(0xff), 4 * 1024 * 1024 + 65536), MalformedFrameError)
    assert.throws(() => decodeFrameLength(new Uint8Array(32).fill(0xff), Number.MAX_SAFE_INTEGER), MalformedFrameError)
  })

  for (const [what, bytes, errorName] of [
    ['32 × 0xff', () => new Uint8Array(32).fill(0xff), 'MalformedFrameError'],
    ['a length beyond the limit', (max: number) => varint(max + 1), 'OversizedFrameError']
  ] as const) {
    it(`${what}: every protocol resets the stream at once, penalizes the peer, logs at warn`, async () => {
      for (const protocol of PROTOCOLS) {
        // a fresh attacker per protocol: two violations would ban it (libp2p accepts at most 5 inbound
        // connections per second from one host)
        await new Promise(resolve => setTimeout(resolve, 250))
        const attacker = env.node(await plainNode({}))
        const stream = await attacker.dialProtocol(server.getMultiaddrs()[0], protocol)
        const max = protocol === PROTOCOL_SNAPSHOT_CHUNKS
          ? server.services.snapshotChunks.maxChunksPerRequest * 36 + 1024
          : (Object.values(server.services).find((s: any) => s?.rpc?.protocol === protocol) as any).rpc.maxRequestBytes
        stream.send(bytes(max))
        const ms = await closedWithin(stream, HANDLER_TIMEOUT_MS / 2)
        assert.ok(ms < AT_ONCE_MS, `${protocol}: reset after ${ms} ms`)
        await waitFor(() => guard.scores.penaltiesOf(attacker.peerId).length === 1, AT_ONCE_MS, `${protocol}: the penalty`)
        const p = guard.scores.penaltiesOf(attacker.peerId)[0]
        assert.equal(p.error, errorName, protocol)
        assert.equal(p.penalty, penaltyFor(errorName === 'MalformedFrameError' ? new MalformedFrameError('') : new OversizedFrameError('')))
        assert.equal(guard.score(attacker.peerId), -p.penalty, `${protocol}: the score dropped`)
        const warned = lines.filter(l => l.includes(' WARN ') && l.includes(attacker.peerId.toString()) && l.includes(protocol) && l.includes(errorName))
        assert.equal(warned.length, 1, `${protocol}: one warn line naming the peer, protocol and error`)
        await attacker.stop()
      }
    })
  }

  it('a peer that breaks the framing twice is banned: connection closed, its streams refused', async () => {
    await new Promise(resolve => setTimeout(resolve, 1000))
    const attacker = env.node(await plainNode({}))
    for (const protocol of [PROTOCOL_FETCH_COMMITS, PROTOCOL_SNAPSHOT_CHUNKS]) {
      const s = await attacker.dialProtocol(server.getMultiaddrs()[0], protocol)
      s.send(new Uint8Array(32).fill(0xff))
      await closedWithin(s, AT_ONCE_MS)
    }
    await waitFor(() => guard.isBanned(attacker.peerId), AT_ONCE_MS, 'the ban')
    assert.ok(lines.some(l => l.includes(' WARN ') && l.includes(attacker.peerId.toString()) && /banned/.test(l)), 'the ban is logged at warn')
    await waitFor(() => server.getConnections(attacker.peerId).length === 0 && attacker.getConnections(server.peerId).length === 0, AT_ONCE_MS, 'the connection closed')
    await new Promise(resolve => setTimeout(resolve, 1000))
    // it may dial again, but every stream is reset before anything is read
    const s = await attacker.dialProtocol(server.getMultiaddrs()[0], PROTOCOL_SNAPSHOT_MANIFEST)
    const ms = await closedWithin(s, AT_ONCE_MS)
    assert.ok(ms < AT_ONCE_MS)
    await attacker.stop()
  })

  it('a node (createNode) shares one guard over every protocol and logs the penalty and the ban at warn in its own log', async () => {
    await new Promise(resolve => setTimeout(resolve, 1000))
    const nodeLines: string[] = []
    const genesis = createGenesis({ seed: 'framing-test', validators: 4, accounts: 8, initialBalance: 1000, embeddingDim: 4 })
    const node = await createNode({ ...DEFAULTS, dataDir: `${env.dir}/node`, listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], entrypoints: [], statusPort: 0, dhtEnabled: false, logLevel: 'info' },
      { genesis, commitSync: 'serve', statusServer: false, logger: createLogger('node', { level: 'info', write: l => { nodeLines.push(l) } }) })
    env.node(node)
    await node.start()
    const services = node.libp2p.services as any
    const shared: InboundGuard = services.snapshotChunks.guard
    for (const name of ['commitAvailability', 'fetchCommits', 'fetchBlocks', 'pushCommit', 'epochProofs', 'snapshotManifest', 'snapshotFilter', 'snapshotListing']) {
      assert.equal(services[name].rpc.guard, shared, `${name} uses the node's guard`)
    }
    const attacker = env.node(await plainNode({}))
    for (const protocol of [PROTOCOL_FETCH_COMMITS, PROTOCOL_SNAPSHOT_CHUNKS]) {
      const s = await attacker.dialProtocol(node.libp2p.getMultiaddrs()[0], protocol)
      s.send(new Uint8Array(32).fill(0xff))
      assert.ok(await closedWithin(s, AT_ONCE_MS) < AT_ONCE_MS)
    }
    await waitFor(() => shared.isBanned(attacker.peerId), AT_ONCE_MS, 'the ban')
    const warned = nodeLines.filter(l => l.includes(' WARN ') && l.includes('[node:inbound]') && l.includes(attacker.peerId.toString()))
    assert.equal(warned.length, 3, `two penalties and the ban at warn:\n${nodeLines.join('')}`)
    assert.ok(warned.some(l => l.includes(PROTOCOL_FETCH_COMMITS)) && warned.some(l => l.includes(PROTOCOL_SNAPSHOT_CHUNKS)) && warned.some(l => /banned/.test(l)))
    await attacker.stop()
    await node.stop()
  })

  it('a client meeting a malformed or oversized response prefix fails at once, MalformedFrameError / OversizedResponseError', async () => {
    const evil = env.node(await plainNode({}))
    let answer: Uint8Array = new Uint8Array(32).fill(0xff)
    for (const protocol of [PROTOCOL_SNAPSHOT_MANIFEST, PROTOCOL_SNAPSHOT_CHUNKS]) {
      await evil.handle(protocol, (stream: Stream) => { stream.send(answer) })
    }
    const client = env.node(await plainNode({
      snapshotManifest: (c: any) => new SnapshotManifestService(c, { timeoutMs: HANDLER_TIMEOUT_MS }),
      snapshotChunks: (c: any) => new SnapshotChunksService(c, { timeoutMs: HANDLER_TIMEOUT_MS })
    }))
    await client.dial(evil.getMultiaddrs()[0])
    const manifest = client.services.snapshotManifest as SnapshotManifestService
    const chunks = client.services.snapshotChunks as SnapshotChunksService
    let t0 = Date.now()
    await assert.rejects(manifest.rpc.request(evil.peerId, { commitIndex: 0 }), MalformedFrameError)
    await assert.rejects(chunks.fetch(evil.peerId, [new Uint8Array(32)]), MalformedFrameError)
    assert.ok(Date.now() - t0 < AT_ONCE_MS)
    // a declared length beyond what this request allows: refused before the bytes arrive
    answer = varint(chunks.maxResponseBytes + 128 * 1024)
    t0 = Date.now()
    await assert.rejects(chunks.fetch(evil.peerId, [new Uint8Array(32)]), (err: Error) => err instanceof OversizedResponseError && err.cause instanceof OversizedFrameError)
    assert.ok(Date.now() - t0 < AT_ONCE_MS)
    assert.ok(!(new OversizedFrameError('') instanceof PeerRequestFailedError))
  })
})
