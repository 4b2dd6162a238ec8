/**
 * /soma/snapshot-peers/1.0.0 (src/snapshot/discovery/exchange.ts), handler and client over real stream
 * pairs (@libp2p/utils' mock muxer): what a server tells (its book, within its limits and the client's),
 * what a client refuses (malformed, over the limits, an attestation of another chain or forged when the
 * committee is known: each a named error the caller penalizes), and one `find` round (asks each
 * connected peer once per interval, dials the providers it is not connected to, penalizes a liar).
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { pbStream } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { PeerId, Stream } from '@libp2p/interface'
import { handlerHarness, type HandlerHarness } from '../fuzz/harness.ts'
import { snapshotProducer, snapshotGenesis, type SnapshotProducer } from '../helpers/snapshot-net.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { SnapshotRecordChecker } from '../../src/snapshot/discovery/records.ts'
import { SnapshotExchange, SnapshotPeersCodecs, PROTOCOL_SNAPSHOT_PEERS, MAX_PROVIDER_ADDRS, type BookEntry, type GetSnapshotPeersResponse } from '../../src/snapshot/discovery/exchange.ts'
import { decodeAttestation, decodeManifest, encodeAttestation, encodeManifest } from '../../src/snapshot/manifest.ts'
import { InvalidSnapshotError, MalformedMessageError, OversizedResponseError, PeerRequestFailedError, ProtocolViolationError } from '../../src/errors.ts'
import { InboundGuard } from '../../src/net/inbound-guard.ts'
import { flipBit } from '../helpers/chain.ts'

const newPeer = async (): Promise<PeerId> => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
const RAW = { encode: (b: Uint8Array): Uint8Array => b }

function forgeSignature (bytes: Uint8Array): Uint8Array {
  const a = decodeAttestation(bytes)
  a.signatures[0] = { ...a.signatures[0], signature: flipBit(a.signatures[0].signature, 5, 1) }
  return encodeAttestation(a)
}

describe('/soma/snapshot-peers/1.0.0', () => {
  let dir: string
  let P: SnapshotProducer
  let client: ChainStore
  /** attested snapshots: 10 (epoch 0, committee known to a fresh store) and 20 (epoch 1, not known) */
  const att: Record<number, Uint8Array> = {}
  let serverId: PeerId, clientId: PeerId, providerId: PeerId

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'soma-exchange-'))
    P = await snapshotProducer(dir, 21, { genesis: snapshotGenesis(300) })
    for (const c of [10, 20]) att[c] = (await P.snapshots.get(c))!.attestationBytes
    assert.equal(decodeManifest(decodeAttestation(att[10]).manifest).epoch, 0)
    assert.equal(decodeManifest(decodeAttestation(att[20]).manifest).epoch, 1)
    client = await ChainStore.open(path.join(dir, 'client'), { genesis: snapshotGenesis(300) })
    ;[serverId, clientId, providerId] = await Promise.all([newPeer(), newPeer(), newPeer()])
  })

  after(async () => {
    await client.close()
    await P.store.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const checker = (): SnapshotRecordChecker => new SnapshotRecordChecker({ chainId: client.chainId, committee: async e => await client.getCommittee(e) })
  const providerAddr = multiaddr('/ip4/127.0.0.1/tcp/4001')
  const ownAddr = multiaddr('/ip4/127.0.0.1/tcp/4000')

  /** A server (on harness `hs`) answering from `book`, and a client whose streams reach it. */
  async function pair (book: (max: number) => Promise<BookEntry[]>, opts: { server?: Partial<SnapshotExchange['config']>, client?: Partial<SnapshotExchange['config']>, guard?: InboundGuard } = {}): Promise<{ hs: HandlerHarness, server: SnapshotExchange, clientX: SnapshotExchange, hc: HandlerHarness }> {
    const hs = handlerHarness()
    const server = new SnapshotExchange({
      ...hs.components,
      peerId: serverId,
      addressManager: { getAddresses: () => [ownAddr] },
      peerStore: { get: async (p: PeerId) => { if (!p.equals(providerId)) throw new Error('not found'); return { addresses: [{ multiaddr: providerAddr }] } }, merge: async () => {} } as any
    }, { checker: checker(), book, config: opts.server, handlerTimeoutMs: 3000, requestsPerSecond: 1e9, guard: opts.guard })
    await server.start()
    const hc = handlerHarness()
    hc.respond = (s: Stream) => { hs.handlers.get(PROTOCOL_SNAPSHOT_PEERS)!(s, { remotePeer: clientId }) }
    const clientX = new SnapshotExchange({ ...hc.components, peerId: clientId }, { checker: checker(), config: opts.client, timeoutMs: 3000 })
    return { hs, server, clientX, hc }
  }

  /** A client whose peer answers `bytes` (a raw response message) to any request. */
  function lyingPeer (bytes: Uint8Array, config: Partial<SnapshotExchange['config']> = {}): SnapshotExchange {
    const hc = handlerHarness()
    hc.respond = (s: Stream) => {
      void (async () => {
        try {
          const pb = pbStream(s, { maxDataLength: 1024 })
          await pb.read(SnapshotPeersCodecs.GetSnapshotPeersRequest)
          await pb.write(bytes, RAW)
          await s.close()
        } catch (err: any) { s.abort(err) }
      })()
    }
    return new SnapshotExchange({ ...hc.components, peerId: clientId }, { checker: checker(), config, timeoutMs: 3000 })
  }
  const encodeRes = (res: GetSnapshotPeersResponse): Uint8Array => SnapshotPeersCodecs.GetSnapshotPeersResponse.encode(res)
  const provider = (id: PeerId, addrs: Uint8Array[] = []): { peerId: Uint8Array, addrs: Uint8Array[] } => ({ peerId: id.toMultihash().bytes, addrs })

  test('a node that makes no snapshots tells which ones it verified and who serves them (addresses from its peer store); the client checks the attestations', async () => {
    const { server, clientX } = await pair(async () => [
      { attestationBytes: att[20], commitIndex: 20, peers: [providerId, serverId] },
      { attestationBytes: att[10], commitIndex: 10, peers: [providerId] }
    ])
    const got = await clientX.ask(serverId)
    assert.deepEqual(got.map(s => s.checked.manifest.commitIndex), [20, 10])
    // epoch 0's committee is known to the client: verified; epoch 1's is not: kept unverified
    assert.deepEqual(got.map(s => s.checked.verified), [false, true])
    assert.deepEqual(got[0].providers.map(p => [p.peerId.toString(), p.addrs.map(a => a.toString())]), [
      [providerId.toString(), [providerAddr.toString()]],
      [serverId.toString(), [ownAddr.toString()]]
    ])
    assert.equal(server.stats.served, 1)
    await server.stop()
  })

  test('the server keeps to its limits and to the client\'s max_snapshots', async () => {
    const many = await Promise.all(Array.from({ length: 30 }, newPeer))
    const book = async (max: number): Promise<BookEntry[]> => Array.from({ length: Math.min(max, 20) }, () => ({ attestationBytes: att[10], commitIndex: 10, peers: many }))
    const { server } = await pair(book, { server: { maxSnapshots: 4, maxProviders: 5 } })
    const res = await server.serve({ maxSnapshots: 0 })
    assert.equal(res.sources.length, 4)
    assert.ok(res.sources.every(s => s.providers.length === 5))
    assert.equal((await server.serve({ maxSnapshots: 2 })).sources.length, 2)
    // an answer without any book entry is empty, not an error
    const { server: empty } = await pair(async () => [])
    assert.deepEqual((await empty.serve({ maxSnapshots: 3 })).sources, [])
    await server.stop(); await empty.stop()
  })

  test('a server without a book refuses (client only); a client sees the refusal as PeerRequestFailedError', async () => {
    const hc = handlerHarness()
    const c = new SnapshotExchange({ ...hc.components, peerId: clientId }, { checker: checker(), timeoutMs: 2000 })
    await c.start()
    assert.equal(hc.handlers.size, 0, 'no handler registered without a book')
    const lying = lyingPeer(encodeRes({ sources: [], error: 'no' }))
    await assert.rejects(lying.ask(serverId), PeerRequestFailedError)
  })

  test('bad answers are named errors: forged or foreign attestation, malformed, over the limits', async () => {
    // forged: the committee of epoch 0 is known to the client
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: forgeSignature(att[10]), providers: [provider(providerId)] }] })).ask(serverId),
      (e: any) => e instanceof InvalidSnapshotError && /not attested/.test(e.message))
    // another manifest under the genuine signatures
    const a = decodeAttestation(att[10])
    const m = decodeManifest(a.manifest)
    const swapped = encodeAttestation({ manifest: encodeManifest({ ...m, stateRoot: flipBit(m.stateRoot, 0, 0) }), signatures: a.signatures })
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: swapped, providers: [provider(providerId)] }] })).ask(serverId), InvalidSnapshotError)
    // another chain
    const foreign = encodeAttestation({ manifest: encodeManifest({ ...m, chainId: new Uint8Array(32).fill(7) }), signatures: a.signatures })
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: foreign, providers: [] }] })).ask(serverId), (e: any) => e instanceof InvalidSnapshotError && /is for chain/.test(e.message))
    // not an attestation at all
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: new Uint8Array([1, 2, 3]), providers: [] }] })).ask(serverId), InvalidSnapshotError)
    // undecodable response, peer id, address
    await assert.rejects(lyingPeer(new Uint8Array([0x0a, 0xff, 0xff, 0x01])).ask(serverId), MalformedMessageError)
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: att[10], providers: [{ peerId: new Uint8Array([0x12, 0x05, 1]), addrs: [] }] }] })).ask(serverId), MalformedMessageError)
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: att[10], providers: [provider(providerId, [new Uint8Array([0xff, 0xff, 0xff])])] }] })).ask(serverId), MalformedMessageError)
    // over the limits: sources, providers, addresses per provider, response bytes
    await assert.rejects(lyingPeer(encodeRes({ sources: Array.from({ length: 3 }, () => ({ attestation: att[10], providers: [] })) }), { maxSnapshots: 2 }).ask(serverId), ProtocolViolationError)
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: att[10], providers: [provider(providerId), provider(serverId)] }] }), { maxProviders: 1 }).ask(serverId), ProtocolViolationError)
    await assert.rejects(lyingPeer(encodeRes({ sources: [{ attestation: att[10], providers: [provider(providerId, Array.from({ length: MAX_PROVIDER_ADDRS + 1 }, () => providerAddr.bytes))] }] })).ask(serverId), ProtocolViolationError)
    const huge = lyingPeer(encodeRes({ sources: [{ attestation: new Uint8Array(300 * 1024), providers: [] }] }), { maxSnapshots: 1, maxProviders: 1 })
    await assert.rejects(huge.ask(serverId), OversizedResponseError)
  })

  test('a malformed request costs the asking peer its penalty on the server', async () => {
    const guard = new InboundGuard({ banMs: 60_000 })
    const { hs, server } = await pair(async () => [], { guard })
    const { client: s } = await hs.open(PROTOCOL_SNAPSHOT_PEERS, clientId)
    // a length prefix of 2^35: over any request's limit
    s.send(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]))
    await s.close().catch(() => {})
    const deadline = Date.now() + 5000
    while (guard.score(clientId) === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
    assert.ok(guard.score(clientId) < 0, `score ${guard.score(clientId)}`)
    await server.stop()
  })

  test('find: asks each connected peer once per interval, dials the providers it is not connected to, penalizes a liar', async () => {
    const liarId = await newPeer()
    const dialed: string[] = []
    const merged: string[] = []
    const hs = handlerHarness()
    const server = new SnapshotExchange({ ...hs.components, peerId: serverId, addressManager: { getAddresses: () => [ownAddr] }, peerStore: { get: async () => ({ addresses: [{ multiaddr: providerAddr }] }), merge: async () => {} } as any },
      { checker: checker(), book: async () => [{ attestationBytes: att[20], commitIndex: 20, peers: [providerId, serverId, clientId] }], handlerTimeoutMs: 3000, requestsPerSecond: 1e9 })
    await server.start()
    const hc = handlerHarness()
    const connections = [{ remotePeer: serverId }, { remotePeer: liarId }]
    hc.components.connectionManager.getConnections = () => connections
    hc.components.connectionManager.openConnection = async (p: PeerId) => { dialed.push(p.toString()); connections.push({ remotePeer: p }) }
    hc.components.connectionManager.openStream = async (peer: PeerId) => {
      // the liar answers a forged attestation of epoch 0 (whose committee the client knows)
      if (peer.equals(liarId)) return await rawPair(encodeRes({ sources: [{ attestation: forgeSignature(att[10]), providers: [provider(liarId)] }] }))
      return (await hs.open(PROTOCOL_SNAPSHOT_PEERS, clientId)).client
    }
    const x = new SnapshotExchange({ ...hc.components, peerId: clientId, peerStore: { get: async () => { throw new Error('no') }, merge: async (p: PeerId) => { merged.push(p.toString()) } } as any },
      { checker: checker(), config: { intervalMs: 60_000 }, timeoutMs: 3000 })
    const penalized: Array<[string, string]> = []
    const r = await x.find({ signal: AbortSignal.timeout(10_000), penalize: (p, e) => { penalized.push([p.toString(), e.name]) } })
    await x.dialsSettled()
    assert.equal(r.asked, 2)
    assert.equal(r.knowing, 1)
    assert.deepEqual(r.commits, [20])
    // the provider is dialed (with the address the server gave); the server itself is already connected; never itself
    assert.deepEqual(dialed, [providerId.toString()])
    assert.deepEqual(merged, [providerId.toString()])
    assert.equal(r.dialed, 1)
    assert.equal(r.connected, 1)
    assert.deepEqual(penalized, [[liarId.toString(), 'InvalidSnapshotError']])
    // within the interval: nobody asked again, nobody dialed again
    const again = await x.find({ signal: AbortSignal.timeout(10_000) })
    await x.dialsSettled()
    assert.equal(again.asked, 1, 'only the newly connected provider is asked')
    assert.deepEqual(dialed, [providerId.toString()])
    await server.stop()
  })

  test('find: a provider whose dial fails is dialed again after the interval, with back-off', async () => {
    const hs = handlerHarness()
    const server = new SnapshotExchange({ ...hs.components, peerId: serverId, peerStore: { get: async () => ({ addresses: [{ multiaddr: providerAddr }] }), merge: async () => {} } as any },
      { checker: checker(), book: async () => [{ attestationBytes: att[10], commitIndex: 10, peers: [providerId] }], handlerTimeoutMs: 3000, requestsPerSecond: 1e9 })
    await server.start()
    const hc = handlerHarness()
    const dials: number[] = []
    hc.components.connectionManager.getConnections = () => [{ remotePeer: serverId }]
    hc.components.connectionManager.openConnection = async () => { dials.push(Date.now()); throw new Error('connection refused') }
    hc.components.connectionManager.openStream = async () => (await hs.open(PROTOCOL_SNAPSHOT_PEERS, clientId)).client
    const x = new SnapshotExchange({ ...hc.components, peerId: clientId }, { checker: checker(), config: { intervalMs: 1000, dialTimeoutMs: 1000 }, timeoutMs: 3000 })
    const round = async (): Promise<void> => { await x.find({ signal: AbortSignal.timeout(5000) }); await x.dialsSettled() }
    await round()
    assert.equal(dials.length, 1)
    await round()
    assert.equal(dials.length, 1, 'not again within the back-off')
    await new Promise(resolve => setTimeout(resolve, 1100))
    await round()
    assert.equal(dials.length, 2, 'again after the interval')
    await new Promise(resolve => setTimeout(resolve, 1100))
    await round()
    assert.equal(dials.length, 2, 'the second failure doubles the wait')
    await new Promise(resolve => setTimeout(resolve, 1000))
    await round()
    assert.equal(dials.length, 3)
    assert.equal(x.stats.dialFailures, 3)
    await x.stop(); await server.stop()
  })
})

/** A client stream whose other end reads one request and answers `bytes`. */
async function rawPair (bytes: Uint8Array): Promise<Stream> {
  const h = handlerHarness()
  let client!: Stream
  h.respond = (s: Stream) => {
    void (async () => {
      try {
        const pb = pbStream(s, { maxDataLength: 1024 })
        await pb.read(SnapshotPeersCodecs.GetSnapshotPeersRequest)
        await pb.write(bytes, RAW)
        await s.close()
      } catch (err: any) { s.abort(err) }
    })()
  }
  client = await h.components.connectionManager.openStream()
  return client
}
