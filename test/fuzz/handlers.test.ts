/**
 * Fuzzing of every /soma/* protocol handler (issue 16 item 6; /soma/snapshot-peers too) over real stream pairs: each service,
 * backed by a real produced chain with snapshots, serves a client stream that sends random bytes, a
 * valid framed request mutated, or one truncated, then closes its end. Every case: the server's stream
 * ends (answered, closed or reset) well within the handler timeout, no exception escapes, the response
 * stays within the protocol's limit, and an input whose length prefix cannot be valid costs the peer
 * its penalty (MalformedFrameError / OversizedFrameError). And each client, answered with random bytes,
 * mutations and truncations of what the real server answers, ends in a value or a named error (SomaError)
 * within its timeout. FUZZ_RUNS cases per protocol and side.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { RUNS, fcParams, inputs, handlerHarness, closedWithin, type HandlerHarness } from './harness.ts'
import { snapshotProducer, snapshotGenesis, type SnapshotProducer } from '../helpers/snapshot-net.ts'
import { InboundGuard } from '../../src/net/inbound-guard.ts'
import { decodeFrameLength } from '../../src/net/framing.ts'
import { varintLength, writeVarint } from '../../src/chain/varint.ts'
import { decodeListing } from '../../src/snapshot/manifest.ts'
import { SyncCodecs, PROTOCOL_COMMIT_AVAILABILITY, PROTOCOL_FETCH_COMMITS, PROTOCOL_FETCH_BLOCKS, PROTOCOL_PUSH_COMMIT, PROTOCOL_EPOCH_PROOFS } from '../../src/sync/protocols/messages.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_MANIFEST, PROTOCOL_SNAPSHOT_FILTER, PROTOCOL_SNAPSHOT_LISTING, PROTOCOL_SNAPSHOT_CHUNKS } from '../../src/snapshot/protocols/messages.ts'
import { CommitAvailability } from '../../src/sync/protocols/commit-availability.ts'
import { FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import { FetchBlocks } from '../../src/sync/protocols/fetch-blocks.ts'
import { PushCommit } from '../../src/sync/protocols/push-commit.ts'
import { EpochProofs } from '../../src/sync/protocols/epoch-proofs.ts'
import { SnapshotManifestService } from '../../src/snapshot/protocols/snapshot-manifest.ts'
import { SnapshotFilterService } from '../../src/snapshot/protocols/snapshot-filter.ts'
import { SnapshotListingService } from '../../src/snapshot/protocols/snapshot-listing.ts'
import { SnapshotChunksService } from '../../src/snapshot/protocols/snapshot-chunks.ts'
import { SomaError } from '../../src/errors.ts'
import { SnapshotExchange, SnapshotPeersCodecs, PROTOCOL_SNAPSHOT_PEERS, type BookEntry } from '../../src/snapshot/discovery/exchange.ts'
import { SnapshotRecordChecker } from '../../src/snapshot/discovery/records.ts'
import { multiaddr } from '@multiformats/multiaddr'

const HANDLER_TIMEOUT_MS = 3000

function frame (msg: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintLength(msg.length) + msg.length)
  out.set(msg, writeVarint(out, 0, msg.length))
  return out
}

describe('fuzz: protocol handlers over stream pairs', () => {
  let dir: string
  let P: SnapshotProducer
  let h: HandlerHarness
  let guard: InboundGuard
  const services: Array<{ start: () => Promise<void>, stop: () => Promise<void> }> = []
  /** per protocol: its request limit, response limit, and valid framed requests */
  const targets: Array<{ protocol: string, maxRequest: number, maxResponse: number, valid: Uint8Array[], raw: Uint8Array[], svc: any }> = []

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'soma-fuzz-h-'))
    P = await snapshotProducer(dir, 21, { genesis: snapshotGenesis(300) })
    h = handlerHarness()
    guard = new InboundGuard({ banMs: 1 })
    const store = P.store
    const init = { store, handlerTimeoutMs: HANDLER_TIMEOUT_MS, requestsPerSecond: 1e9, guard }
    const c = h.components
    const S = (await P.snapshots.list()).at(-1)!
    const listing = decodeListing(await P.snapshots.getListingBytes(S))
    const commits = await store.getCommitRange(1, 3)
    const add = (protocol: string, svc: any, maxRequest: number, maxResponse: number, valid: Uint8Array[]): void => {
      services.push(svc)
      targets.push({ protocol, maxRequest, maxResponse, valid: valid.map(frame), raw: valid, svc })
    }
    const rpc = (svc: any): [number, number] => [svc.rpc.maxRequestBytes, svc.rpc.maxResponseBytes]
    let s: any
    s = new CommitAvailability(c, init); add(PROTOCOL_COMMIT_AVAILABILITY, s, ...rpc(s), [SyncCodecs.GetCommitAvailabilityRequest.encode({} as any)])
    s = new FetchCommits(c, init); add(PROTOCOL_FETCH_COMMITS, s, ...rpc(s), [SyncCodecs.FetchCommitsRequest.encode({ start: 1, end: 5 } as any)])
    s = new FetchBlocks(c, init); add(PROTOCOL_FETCH_BLOCKS, s, ...rpc(s), [SyncCodecs.FetchBlocksRequest.encode({ refs: commits.flatMap(x => x.commit.blocks ?? []) } as any)])
    s = new PushCommit(c, init); add(PROTOCOL_PUSH_COMMIT, s, ...rpc(s), [SyncCodecs.PushCommitRequest.encode({ commitIndex: 3, digest: commits[2].digest } as any)])
    s = new EpochProofs(c, init); add(PROTOCOL_EPOCH_PROOFS, s, ...rpc(s), [SyncCodecs.GetEpochProofsRequest.encode({ fromEpoch: 0, toEpoch: 2 } as any)])
    s = new SnapshotManifestService(c, init); add(PROTOCOL_SNAPSHOT_MANIFEST, s, ...rpc(s), [SnapshotSyncCodecs.GetSnapshotManifestRequest.encode({ commitIndex: S })])
    s = new SnapshotFilterService(c, init); add(PROTOCOL_SNAPSHOT_FILTER, s, ...rpc(s), [SnapshotSyncCodecs.GetSnapshotFilterRequest.encode({ commitIndex: S })])
    s = new SnapshotListingService(c, init); add(PROTOCOL_SNAPSHOT_LISTING, s, ...rpc(s), [SnapshotSyncCodecs.GetSnapshotListingRequest.encode({ commitIndex: S, start: 0, limit: 20 })])
    s = new SnapshotChunksService(c, { ...init, maxChunksPerRequest: 64 })
    add(PROTOCOL_SNAPSHOT_CHUNKS, s, 64 * 36 + 1024, s.maxChunkBytes + 64 * 1024, [
      SnapshotSyncCodecs.GetSnapshotChunksRequest.encode({ hashes: listing.slice(0, 8).map(r => r.hash), maxBytes: 4096 }),
      SnapshotSyncCodecs.GetSnapshotChunksRequest.encode({ hashes: listing.slice(8, 10).map(r => r.hash) })
    ])
    // /soma/snapshot-peers: a book of the producer's snapshots, served by it and two other peers
    const others = await Promise.all([1, 2].map(async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))))
    const self = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const book = async (max: number): Promise<BookEntry[]> => (await Promise.all((await P.snapshots.list()).reverse().map(async commit => ({ attestationBytes: (await P.snapshots.get(commit))!.attestationBytes, commitIndex: commit, peers: [self, ...others] })))).slice(0, max)
    s = new SnapshotExchange({ ...c, peerId: self, addressManager: { getAddresses: () => [multiaddr('/ip4/127.0.0.1/tcp/4000')] } }, { ...init, checker: new SnapshotRecordChecker({ chainId: store.chainId, committee: async e => await store.getCommittee(e) }), book })
    add(PROTOCOL_SNAPSHOT_PEERS, s, ...rpc(s), [SnapshotPeersCodecs.GetSnapshotPeersRequest.encode({ maxSnapshots: 2 }), SnapshotPeersCodecs.GetSnapshotPeersRequest.encode({ maxSnapshots: 0 })])
    for (const svc of services) await svc.start()
  })
  after(async () => {
    for (const svc of services) await svc.stop()
    await P?.store.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('every protocol has a handler and a valid request it answers', () => {
    assert.equal(targets.length, 10)
    for (const t of targets) assert.ok(h.handlers.has(t.protocol), t.protocol)
  })

  for (const name of ['commit-availability', 'fetch-commits', 'fetch-blocks', 'push-commit', 'epoch-proofs', 'snapshot-manifest', 'snapshot-filter', 'snapshot-listing', 'snapshot-chunks', 'snapshot-peers']) {
    it(`/soma/${name}: every input ends within the timeout, bounded, malformed framing penalized`, async () => {
      const t = targets.find(x => x.protocol === `/soma/${name}/1.0.0`)!
      // a valid session of chunk requests is several frames: a valid one followed by a fuzzed one too
      const arb = t.protocol === PROTOCOL_SNAPSHOT_CHUNKS
        ? fc.oneof(inputs(t.valid), fc.tuple(fc.constantFrom(...t.valid), inputs(t.valid)).map(([a, b]) => Uint8Array.from([...a, ...b])))
        : inputs(t.valid)
      await fc.assert(fc.asyncProperty(arb, async bytes => {
        const key = await generateKeyPair('Ed25519')
        const peer = peerIdFromPrivateKey(key)
        const { client, server } = await h.open(t.protocol, peer)
        let received = 0
        client.addEventListener('message', evt => { received += evt.data.byteLength })
        try { client.send(bytes) } catch {}
        void client.close().catch(() => {})
        // the handler's own timeout, plus a margin for a loaded machine
        await closedWithin(server, HANDLER_TIMEOUT_MS + 5000)
        assert.ok(received <= t.maxResponse + 16 || t.protocol === PROTOCOL_SNAPSHOT_CHUNKS, `${received} bytes answered, the limit is ${t.maxResponse}`)
        let badPrefix = false
        try { decodeFrameLength(bytes.subarray(0, 10), t.maxRequest) } catch { badPrefix = true }
        if (badPrefix) assert.ok(guard.scores.penaltiesOf(peer).length >= 1, 'a malformed prefix is penalized')
        client.abort(new Error('done'))
      }), fcParams())
    })

    it(`/soma/${name} client: any response ends in a value or a named error, within its timeout`, async () => {
      const t = targets.find(x => x.protocol === `/soma/${name}/1.0.0`)!
      const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
      // valid responses: what the real server answers to the valid requests
      const samples: Uint8Array[] = []
      for (const req of t.valid) {
        const { client } = await h.open(t.protocol, peer)
        const got: Uint8Array[] = []
        client.addEventListener('message', evt => { got.push(evt.data.subarray()) })
        client.send(req)
        void client.close().catch(() => {})
        await closedWithin(client, HANDLER_TIMEOUT_MS + 5000)
        samples.push(Uint8Array.from(got.flatMap(b => [...b])))
      }
      assert.ok(samples.every(x => x.length > 0), 'the server answered the valid requests')
      const request = t.protocol === PROTOCOL_SNAPSHOT_CHUNKS ? undefined : t.svc.rpc
      const reqValue = request === undefined ? undefined : (request as any).reqCodec.decode(t.raw[0])
      const hashes = t.protocol === PROTOCOL_SNAPSHOT_CHUNKS ? SnapshotSyncCodecs.GetSnapshotChunksRequest.decode(t.raw[0]).hashes : []
      await fc.assert(fc.asyncProperty(inputs(samples), async bytes => {
        h.respond = server => {
          try { server.send(bytes) } catch {}
          void server.close().catch(() => {})
        }
        const t0 = Date.now()
        try {
          // the exchange's client checks the answer further (peer ids, addresses, attestations)
          if (t.protocol === PROTOCOL_SNAPSHOT_PEERS) await (t.svc as SnapshotExchange).ask(peer, { signal: AbortSignal.timeout(HANDLER_TIMEOUT_MS) })
          else if (request !== undefined) await request.request(peer, reqValue, { signal: AbortSignal.timeout(HANDLER_TIMEOUT_MS) })
          else await (t.svc as SnapshotChunksService).fetch(peer, hashes, { signal: AbortSignal.timeout(HANDLER_TIMEOUT_MS) })
        } catch (err) {
          if (!(err instanceof SomaError)) throw new Error(`not a named error on ${Buffer.from(bytes).toString('hex').slice(0, 200)}: ${(err as Error)?.stack ?? String(err)}`)
        }
        assert.ok(Date.now() - t0 <= HANDLER_TIMEOUT_MS + 5000)
      }), fcParams())
    })
  }
})
