/**
 * The snapshot wire protocols (protocols/snapshot.proto): the hand-written codecs produce protobufjs'
 * bytes, and the servers keep their size and rate limits — chunk prefixes within the response limit,
 * listing pages within rows and bytes, filters within the attested size, the manifest of attested
 * snapshots only, per-peer rate limits — over real streams on 127.0.0.1.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes, createHash } from 'node:crypto'
import { testEnv, type TestEnv } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { snapshotProducer, snapNode, snapshotGenesis, replaceHandler, type SnapshotProducer } from '../helpers/snapshot-net.ts'
import { decodeAttestation, encodeAttestation, decodeListing } from '../../src/snapshot/manifest.ts'
import { SnapshotSyncCodecs, listingRowOffsets, PROTOCOL_SNAPSHOT_FILTER } from '../../src/snapshot/protocols/messages.ts'
import { SnapshotChunksService, ChunkNotServedError } from '../../src/snapshot/protocols/snapshot-chunks.ts'
import { SnapshotListingService } from '../../src/snapshot/protocols/snapshot-listing.ts'
import { SnapshotFilterService, filterBytesFor } from '../../src/snapshot/protocols/snapshot-filter.ts'
import { SnapshotManifestService } from '../../src/snapshot/protocols/snapshot-manifest.ts'
import { OversizedResponseError, RateLimitedError } from '../../src/errors.ts'

const offline = { logger: { forComponent: () => Object.assign(() => {}, { error: () => {}, trace: () => {} }) } as any, registrar: undefined as any, connectionManager: undefined as any }

describe('snapshot protocols', () => {
  let env: TestEnv
  let P: SnapshotProducer
  let S: number
  const cleanup: Array<() => void | Promise<void>> = []
  after(async () => { for (const fn of cleanup) await fn() })

  before(async () => {
    env = testEnv({ after: (fn) => { cleanup.push(fn) } })
    P = await snapshotProducer(env.dir, 21, { genesis: snapshotGenesis(1000) })
    env.track(P.store)
    S = (await P.snapshots.latest())!
  })

  it('hand-written codecs give exactly protobufjs\' bytes, and decode them', () => {
    const chunks = [randomBytes(0), randomBytes(1), randomBytes(127), randomBytes(128), randomBytes(70_000)].map(b => new Uint8Array(b))
    assert.equal(hex(SnapshotSyncCodecs.GetSnapshotChunksResponse.encode({ error: 'rate limited' } as any)), hex(SnapshotSyncCodecs.reference.GetSnapshotChunksResponse.encode({ error: 'rate limited' } as any)), 'a bare refusal')
    for (const msg of [{ chunks }, { chunks: [], error: 'rate limited' }, { chunks: chunks.slice(1, 3), error: 'é' }]) {
      const ours = SnapshotSyncCodecs.GetSnapshotChunksResponse.encode(msg)
      assert.equal(hex(ours), hex(SnapshotSyncCodecs.reference.GetSnapshotChunksResponse.encode(msg)))
      const back = SnapshotSyncCodecs.GetSnapshotChunksResponse.decode(ours)
      assert.deepEqual(back.chunks.map(hex), msg.chunks.map(hex))
      assert.equal(back.error, (msg as any).error)
    }
    assert.throws(() => SnapshotSyncCodecs.GetSnapshotChunksResponse.decode(Uint8Array.of(0x0a, 5, 1)), /malformed/)
  })

  it('listing pages are slices of the stored listing, bounded by rows and bytes', async () => {
    const bytes = await P.snapshots.getListingBytes(S)
    const rows = decodeListing(bytes)
    assert.equal(listingRowOffsets(bytes).length, rows.length + 1)
    const svc = new SnapshotListingService(offline, { store: P.store, maxRowsPerPage: 50, maxPageBytes: 1000 })
    const page = await svc.serve({ commitIndex: S, start: 7, limit: 40 })
    const got = SnapshotSyncCodecs.GetSnapshotListingResponse.decode(SnapshotSyncCodecs.GetSnapshotListingResponse.encode(page)).chunks
    assert.ok(got.length >= 1 && got.length <= 40 && page.rows!.byteLength <= 1000, `${got.length} rows, ${page.rows!.byteLength} bytes`)
    assert.deepEqual(got.map(r => hex(r.hash)), rows.slice(7, 7 + got.length).map(r => hex(r.hash)))
    // the same bytes as protobufjs would encode
    assert.equal(hex(SnapshotSyncCodecs.GetSnapshotListingResponse.encode(page)), hex(SnapshotSyncCodecs.reference.GetSnapshotListingResponse.encode({ chunks: got })))
    const all = await new SnapshotListingService(offline, { store: P.store }).serve({ commitIndex: S, start: 0, limit: 1_000_000 })
    assert.equal(hex(all.rows!), hex(bytes), 'a page of everything is the stored listing')
    assert.deepEqual((await svc.serve({ commitIndex: S, start: rows.length, limit: 5 })).rows, new Uint8Array(0), 'nothing past the end')
    assert.match((await svc.serve({ commitIndex: S + 1, start: 0, limit: 5 })).error!, /no snapshot/)
  })

  it('chunks: a prefix within the response limit, the first chunk always, refusals named', async () => {
    const listing = await P.snapshots.getListing(S)
    const hashes = listing.map(r => r.hash)
    const svc = new SnapshotChunksService(offline, { store: P.store, maxChunksPerRequest: 64, maxChunkResponseBytes: 2000 })
    const res = await svc.serve({ hashes: hashes.slice(0, 64) })
    assert.ok(res.chunks.length >= 1 && res.chunks.length < 64)
    assert.ok(SnapshotSyncCodecs.GetSnapshotChunksResponse.encode(res).byteLength <= 2000)
    for (let i = 0; i < res.chunks.length; i++) assert.equal(hex(res.chunks[i]), hex((await P.store.packs.get(hashes[i]))!), `chunk ${i}`)
    const tiny = new SnapshotChunksService(offline, { store: P.store, maxChunkResponseBytes: 100 })
    assert.equal((await tiny.serve({ hashes: [hashes[0]] })).chunks.length, 1, 'one chunk is always sent')
    assert.match((await svc.serve({ hashes: hashes.slice(0, 65) })).error!, /limit is 64/)
    assert.match((await svc.serve({ hashes: [hashes[0].subarray(1)] })).error!, /not 32 bytes/)
    assert.match((await svc.serve({ hashes: [new Uint8Array(32), hashes[0]] })).error!, /chunk not stored/)
    const partial = await svc.serve({ hashes: [hashes[0], new Uint8Array(32), hashes[1]] })
    assert.equal(partial.chunks.length, 1, 'the prefix stops at the first chunk not stored')
  })

  it('over the network: rate limits, a filter larger than attested, a chunk not stored, only attested snapshots', async () => {
    const server = env.node(await snapNode(P.store, { commitSync: false, snap: { chunkRequestsPerSecond: 3 } }))
    const client = env.node(await snapNode(await env.store('client', snapshotGenesis(1000)), { commitSync: false }))
    await client.dial(server.getMultiaddrs()[0])
    const hashes = (await P.snapshots.getListing(S)).map(r => r.hash)
    const chunks = client.services.snapshotChunks
    const results = await Promise.allSettled(Array.from({ length: 8 }, async (_, i) => await chunks.fetch(server.peerId, [hashes[i]])))
    assert.ok(results.some(r => r.status === 'fulfilled'))
    assert.ok(results.some(r => r.status === 'rejected' && r.reason instanceof RateLimitedError), 'the 4th request in a second is refused')
    await new Promise(resolve => setTimeout(resolve, 1100))
    await assert.rejects(chunks.fetch(server.peerId, [new Uint8Array(32)]), ChunkNotServedError)

    // a chunk larger than the response limit and than libp2p's default 4 MiB read buffer travels alone
    const big = new Uint8Array(randomBytes(5 * 1024 * 1024 + 17))
    const bigHash = new Uint8Array(createHash('sha256').update(big).digest())
    await P.store.packs.commit(P.store.batch(), [{ hash: bigHash, bytes: big }])
    try {
      const got = await chunks.fetch(server.peerId, [bigHash, hashes[0]], { largest: big.byteLength })
      assert.equal(got.length, 1, 'alone in its response')
      assert.equal(hex(got[0]), hex(big))
    } finally {
      const del = P.store.batch()
      await P.store.packs.del(del, [bigHash])
      await del.write()
    }

    // a filter one byte longer than the manifest's parameters allow is refused by the client
    const manifest = (await P.snapshots.get(S))!.manifest
    const filter = await P.snapshots.getFilterBytes(S)
    assert.equal(filter.byteLength, filterBytesFor(manifest.filter))
    const filters = (client.services as any).snapshotFilter as SnapshotFilterService
    assert.equal(hex(await filters.fetch(server.peerId, S, manifest.filter)), hex(filter))
    const liar = env.node(await snapNode(P.store, { commitSync: false }))
    await replaceHandler(liar, PROTOCOL_SNAPSHOT_FILTER, { req: SnapshotSyncCodecs.GetSnapshotFilterRequest, res: SnapshotSyncCodecs.GetSnapshotFilterResponse }, async () => ({ filter: new Uint8Array(filter.byteLength + 2048) }))
    await client.dial(liar.getMultiaddrs()[0])
    await assert.rejects(filters.fetch(liar.peerId, S, manifest.filter), OversizedResponseError)

    // the manifest service serves attested snapshots only: strip the signatures of the newest
    const manifests = (client.services as any).snapshotManifest as SnapshotManifestService
    assert.equal(decodeAttestation((await manifests.get(server.peerId, 0)).attestationBytes).signatures.length > 0, true)
    const att = decodeAttestation((await P.snapshots.get(S))!.attestationBytes)
    await P.snapshots.putAttestation(S, encodeAttestation({ manifest: att.manifest, signatures: [] }))
    try {
      const a = await manifests.get(server.peerId, 0)
      assert.ok(decodeAttestation(a.attestationBytes).signatures.length > 0)
      assert.ok(!a.snapshots.includes(S), 'the unsigned snapshot is not offered')
    } finally {
      await P.snapshots.putAttestation(S, encodeAttestation(att))
    }
  })
})
