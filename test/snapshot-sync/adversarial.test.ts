/**
 * Misbehaving snapshot servers (real nodes on 127.0.0.1): a peer serving corrupt chunks is detected,
 * penalized (InvalidChunkError) and the sync completes from the honest one; a forged attestation, a
 * wrong filter and a lying listing (a row the filter refutes; rows whose totals do not add up) are each
 * refused (InvalidSnapshotError), their peer penalized, nothing of theirs accepted, and the sync completes
 * from the honest peer.
 *
 * A liar is an honest node over the producer's store with one snapshot protocol handler replaced by one
 * that corrupts the honest answer. Where the lie must be met first, the syncing node knows only the liar
 * until the penalty is recorded; then the honest peer is connected.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { PeerId } from '@libp2p/interface'
import { testEnv, waitFor, type TestEnv } from '../helpers/sync-net.ts'
import { flipBit, hex } from '../helpers/chain.ts'
import { snapshotProducer, snapNode, snapshotGenesis, replaceHandler, type SnapNode, type SnapshotProducer } from '../helpers/snapshot-net.ts'
import type { ChainStore } from '../../src/store/chain-store.ts'
import type { GenesisBundle } from '../../src/chain/genesis.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { decodeAttestation, decodeManifest, encodeAttestation, encodeManifest } from '../../src/snapshot/manifest.ts'
import { SyncState } from '../../src/snapshot/sync/sync-state.ts'
import type { SnapshotSync } from '../../src/snapshot/sync/snapshot-sync.ts'
import {
  SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_CHUNKS, PROTOCOL_SNAPSHOT_FILTER, PROTOCOL_SNAPSHOT_LISTING, PROTOCOL_SNAPSHOT_MANIFEST
} from '../../src/snapshot/protocols/messages.ts'

const TIP = 35 // snapshots at 10, 20, 30: the newest is 30, then commit sync to 35

const sync = (n: SnapNode): SnapshotSync => {
  const s = n.services.snapshotSync.snapshotSync
  assert.ok(s !== undefined, 'snapshot sync runs')
  return s
}
const penalties = (n: SnapNode, peer: PeerId): string[] => sync(n).scores.penaltiesOf(peer).map(p => p.error)

describe('snapshot sync against misbehaving peers', () => {
  let env: TestEnv
  let g: GenesisBundle
  let P: SnapshotProducer
  let honest: SnapNode
  let S: number
  let listingHex: string
  let filterHex: string

  const cleanup: Array<() => void | Promise<void>> = []
  after(async () => { for (const fn of cleanup) await fn() })

  before(async () => {
    env = testEnv({ after: (fn) => { cleanup.push(fn) } })
    g = snapshotGenesis()
    P = await snapshotProducer(env.dir, TIP, { genesis: g })
    env.track(P.store)
    S = (await P.snapshots.latest())!
    assert.equal(S, 30)
    listingHex = hex(await P.snapshots.getListingBytes(S))
    filterHex = hex(await P.snapshots.getFilterBytes(S))
    honest = env.node(await snapNode(P.store, { commitSync: false }))
  })

  /** A node over the producer's store (serves everything honestly until a handler is replaced). */
  async function liar (): Promise<SnapNode> {
    return env.node(await snapNode(P.store, { commitSync: false }))
  }

  /** A fresh syncing node (small requests: several per peer, so every peer gets work). */
  async function client (name: string, snap: Record<string, unknown> = {}): Promise<{ node: SnapNode, store: ChainStore }> {
    const store = await env.store(name, g)
    const node = env.node(await snapNode(store, { snapshot: true, snap: { maxChunksPerRequest: 8, stallTimeoutMs: 30_000, ...snap } }))
    return { node, store }
  }

  /** The client completed the honest snapshot and caught up: same state as the producer. */
  async function completes (c: { node: SnapNode, store: ChainStore }): Promise<void> {
    await waitFor(() => c.store.highestExecuted >= TIP, 30_000, 'the client to sync the snapshot and catch up')
    assert.equal(c.node.services.snapshotSync.result?.commit, S, 'the honest snapshot was synced')
    assert.equal(hex((await c.store.getStateRoot(TIP))!), hex((await P.store.getStateRoot(TIP))!), 'same state root as the producer')
    const snaps = new SnapshotStore(c.store)
    assert.equal(hex(await snaps.getListingBytes(S)), listingHex, 'the registered listing is the attested one')
    assert.equal(hex(await snaps.getFilterBytes(S)), filterHex, 'the registered filter is the attested one')
    assert.equal(await new SyncState(c.store).read(), undefined, 'no sync in progress')
  }

  it('a peer serving corrupt chunks is penalized (InvalidChunkError) and the sync completes', { timeout: 40_000 }, async () => {
    const M = await liar()
    let corrupted = 0
    await replaceHandler(M, PROTOCOL_SNAPSHOT_CHUNKS, { req: SnapshotSyncCodecs.GetSnapshotChunksRequest, res: SnapshotSyncCodecs.GetSnapshotChunksResponse }, async (req) => {
      const res = await M.services.snapshotChunks.serve(req)
      // every answer carries one chunk with a flipped bit
      if (res.chunks.length > 0) { res.chunks[0] = flipBit(res.chunks[0], 10, 3); corrupted++ }
      return res
    })
    const c = await client('corrupt', { minPeers: 2, peerWaitMs: 5000 })
    await c.node.dial(M.getMultiaddrs()[0])
    await c.node.dial(honest.getMultiaddrs()[0])
    await completes(c)
    assert.ok(corrupted > 0, 'the liar was asked for chunks')
    assert.ok(penalties(c.node, M.peerId).includes('InvalidChunkError'), `the liar is penalized for its chunks: ${penalties(c.node, M.peerId).join(', ')}`)
    assert.deepEqual(penalties(c.node, honest.peerId), [], 'the honest peer is not penalized')
    const s = sync(c.node)
    assert.ok(s.stats.rejected >= 1, 'corrupt chunks were refused')
    assert.equal(s.stats.fetchedChunks, decodeManifest(decodeAttestation((await P.snapshots.get(S))!.attestationBytes).manifest).chunkCount, 'every chunk stored once')
  })

  it('a forged attestation is refused, its peer penalized, and the genuine snapshot synced', { timeout: 40_000 }, async () => {
    const M = await liar()
    // a newer snapshot than the genuine one (the client would prefer it), with the genuine signatures
    const genuine = decodeAttestation((await P.snapshots.get(S))!.attestationBytes)
    const forgedManifest = { ...decodeManifest(genuine.manifest), commitIndex: S + 5 }
    const forged = encodeAttestation({ manifest: encodeManifest(forgedManifest), signatures: genuine.signatures })
    let served = 0
    await replaceHandler(M, PROTOCOL_SNAPSHOT_MANIFEST, { req: SnapshotSyncCodecs.GetSnapshotManifestRequest, res: SnapshotSyncCodecs.GetSnapshotManifestResponse }, async () => {
      served++
      return { attestation: forged, snapshots: [S + 5] }
    })
    const chunkRequests = await replaceHandler(M, PROTOCOL_SNAPSHOT_CHUNKS, { req: SnapshotSyncCodecs.GetSnapshotChunksRequest, res: SnapshotSyncCodecs.GetSnapshotChunksResponse }, async (req) => await M.services.snapshotChunks.serve(req))
    const c = await client('forged')
    await c.node.dial(M.getMultiaddrs()[0])
    await waitFor(() => penalties(c.node, M.peerId).includes('InvalidSnapshotError'), 20_000, 'the forger to be penalized')
    assert.ok(served > 0)
    assert.equal(await new SyncState(c.store).read(), undefined, 'nothing of the forged snapshot is stored')
    await c.node.dial(honest.getMultiaddrs()[0])
    await completes(c)
    assert.equal(chunkRequests.requests, 0, 'the forger is never asked for chunks')
    assert.ok(!(await new SnapshotStore(c.store).has(S + 5)))
  })

  it('a wrong filter is refused, its peer penalized, and the filter fetched from another', { timeout: 40_000 }, async () => {
    const M = await liar()
    const filterRequests = await replaceHandler(M, PROTOCOL_SNAPSHOT_FILTER, { req: SnapshotSyncCodecs.GetSnapshotFilterRequest, res: SnapshotSyncCodecs.GetSnapshotFilterResponse }, async (req) => {
      const res = await M.services.snapshotFilter.serve(req)
      return { filter: flipBit(res.filter, res.filter.length - 5, 1) }
    })
    const c = await client('filter')
    await c.node.dial(M.getMultiaddrs()[0])
    await waitFor(() => penalties(c.node, M.peerId).includes('InvalidSnapshotError'), 20_000, 'the liar to be penalized for its filter')
    assert.equal(filterRequests.requests, 1)
    const state = await new SyncState(c.store).read()
    assert.equal(state?.phase, 'filter', 'still waiting for a good filter')
    assert.equal(state?.filter, undefined, 'the wrong filter is not stored')
    await c.node.dial(honest.getMultiaddrs()[0])
    await completes(c)
  })

  it('a lying listing is refused: a row the filter refutes at once, totals that do not add up at the end', { timeout: 50_000 }, async () => {
    // (a) a row whose hash is not in the filter: its page is refused
    const A = await liar()
    await replaceHandler(A, PROTOCOL_SNAPSHOT_LISTING, { req: SnapshotSyncCodecs.GetSnapshotListingRequest, res: SnapshotSyncCodecs.GetSnapshotListingResponse }, async (req) => {
      const res = await A.services.snapshotListing.serve(req)
      const rows = SnapshotSyncCodecs.GetSnapshotListingResponse.decode(res.rows ?? new Uint8Array(0)).chunks
      if (rows.length > 3) rows[3] = { ...rows[3], hash: flipBit(rows[3].hash, 0, 0) }
      return { chunks: rows }
    })
    const ca = await client('listing-a')
    await ca.node.dial(A.getMultiaddrs()[0])
    await waitFor(() => penalties(ca.node, A.peerId).includes('InvalidSnapshotError'), 20_000, 'the liar to be penalized for its listing page')
    assert.equal((await new SyncState(ca.store).listing()).next, 0, 'no row of the refused page is stored')
    await ca.node.dial(honest.getMultiaddrs()[0])
    await completes(ca)

    // (b) every row passes on its own, but one size is off by one: the totals refute the whole listing
    const B = await liar()
    await replaceHandler(B, PROTOCOL_SNAPSHOT_LISTING, { req: SnapshotSyncCodecs.GetSnapshotListingRequest, res: SnapshotSyncCodecs.GetSnapshotListingResponse }, async (req) => {
      const res = await B.services.snapshotListing.serve(req)
      const rows = SnapshotSyncCodecs.GetSnapshotListingResponse.decode(res.rows ?? new Uint8Array(0)).chunks
      if (req.start === 0 && rows.length > 0) rows[0] = { ...rows[0], size: rows[0].size - 1 }
      return { chunks: rows }
    })
    const cb = await client('listing-b', { listingPageRows: 64 })
    await cb.node.dial(B.getMultiaddrs()[0])
    await waitFor(() => penalties(cb.node, B.peerId).includes('InvalidSnapshotError'), 20_000, 'the liar to be penalized once its listing is complete')
    const l = await new SyncState(cb.store).listing()
    assert.ok(!l.verified, 'the lying listing is not accepted')
    await cb.node.dial(honest.getMultiaddrs()[0])
    await completes(cb)
    // the chunks fetched from the liar while its listing streamed in were genuine (hash and filter
    // checked): they were kept, not fetched again
    const s = sync(cb.node)
    assert.equal(s.stats.fetchedChunks + s.stats.reusedChunks, decodeManifest(decodeAttestation((await P.snapshots.get(S))!.attestationBytes).manifest).chunkCount)
  })
})
