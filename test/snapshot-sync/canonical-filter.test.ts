/**
 * Issue 16: a snapshot's filter must be the canonical filter of its chunk set. A liar (a node over the
 * producer's store) offers the genuine snapshot re-attested, by the whole devnet committee, with a filter
 * of the same chunk hashes in another placement: the filter hashes to the attested filter hash, has the
 * attested parameters and holds every chunk, so it passes every check but the canonical one. The
 * syncing node fetches the chunks and the listing, finds the filter is not the canonical filter of the
 * listed hashes, abandons that snapshot (never asks for it again) and syncs the genuine one.
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { testEnv, waitFor } from '../helpers/sync-net.ts'
import { hex } from '../helpers/chain.ts'
import { snapshotProducer, snapNode, snapshotGenesis, replaceHandler, SNAP_SEED } from '../helpers/snapshot-net.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { decodeAttestation, decodeManifest, encodeAttestation } from '../../src/snapshot/manifest.ts'
import { attestManifest, devnetCommitteeKeys } from '../../src/snapshot/attestation.ts'
import { CuckooFilter } from '../../src/snapshot/cuckoo-filter.ts'
import { sha256 } from '../../src/crypto/hash.ts'
import { SyncState } from '../../src/snapshot/sync/sync-state.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_FILTER, PROTOCOL_SNAPSHOT_MANIFEST } from '../../src/snapshot/protocols/messages.ts'

const TIP = 25 // snapshots at 10 and 20: the newest is 20, then commit sync to 25

describe('snapshot sync refuses an attested filter that is not in canonical form', () => {
  const cleanup: Array<() => void | Promise<void>> = []
  after(async () => { for (const fn of cleanup) await fn() })

  it('the non-canonical snapshot is abandoned after its listing is checked, and the genuine one synced', { timeout: 90_000 }, async () => {
    const env = testEnv({ after: (fn) => { cleanup.push(fn) } })
    const g = snapshotGenesis()
    const P = await snapshotProducer(env.dir, TIP, { genesis: g })
    env.track(P.store)
    const S = (await P.snapshots.latest())!
    assert.equal(S, 20)
    const genuine = decodeAttestation((await P.snapshots.get(S))!.attestationBytes)
    const m = decodeManifest(genuine.manifest)
    const genuineFilter = await P.snapshots.getFilterBytes(S)

    // the same chunk hashes, inserted in descending order into a table of the canonical size
    const sorted = (await P.snapshots.getListing(S)).map(r => r.hash).sort(Buffer.compare)
    const other = CuckooFilter.forCapacity(sorted.length)
    for (const h of [...sorted].reverse()) assert.ok(other.insert(h))
    const otherBytes = other.toBytes()
    assert.notEqual(hex(otherBytes), hex(genuineFilter), 'another placement of the same set')
    assert.equal(other.log2Buckets, m.filter.log2Buckets)
    const committee = (await P.store.getCommittee(m.epoch))!
    const keys = devnetCommitteeKeys(SNAP_SEED, committee.committee)!
    const forged = encodeAttestation(attestManifest({ ...m, filterHash: sha256(otherBytes) }, committee.committee, keys))

    const liar = env.node(await snapNode(P.store, { commitSync: false }))
    let manifests = 0
    await replaceHandler(liar, PROTOCOL_SNAPSHOT_MANIFEST, { req: SnapshotSyncCodecs.GetSnapshotManifestRequest, res: SnapshotSyncCodecs.GetSnapshotManifestResponse }, async () => {
      manifests++
      return { attestation: forged, snapshots: [S] }
    })
    await replaceHandler(liar, PROTOCOL_SNAPSHOT_FILTER, { req: SnapshotSyncCodecs.GetSnapshotFilterRequest, res: SnapshotSyncCodecs.GetSnapshotFilterResponse }, async () => ({ filter: otherBytes }))
    const honest = env.node(await snapNode(P.store, { commitSync: false }))

    const store = await env.store('client', g)
    const client = env.node(await snapNode(store, { snapshot: true, snap: { maxChunksPerRequest: 8, stallTimeoutMs: 30_000 } }))
    const sync = client.services.snapshotSync.snapshotSync!
    await client.dial(liar.getMultiaddrs()[0])
    // the forged snapshot is chosen (only the liar is known), then the honest peer joins
    await waitFor(async () => (await new SyncState(store).read())?.phase === 'chunks', 30_000, 'the client to take the forged snapshot to its chunks')
    assert.ok(manifests > 0)
    await client.dial(honest.getMultiaddrs()[0])
    await waitFor(() => sync.stats.abandoned >= 1, 60_000, 'the forged snapshot to be abandoned at the listing check')
    await waitFor(() => store.highestExecuted >= TIP, 60_000, 'the client to sync the genuine snapshot and catch up')
    assert.equal(client.services.snapshotSync.result?.commit, S)
    assert.equal(hex((await store.getStateRoot(TIP))!), hex((await P.store.getStateRoot(TIP))!))
    assert.equal(hex(await new SnapshotStore(store).getFilterBytes(S)), hex(genuineFilter), 'the registered filter is the canonical one')
    assert.equal(sync.stats.abandoned, 1)
  })
})
