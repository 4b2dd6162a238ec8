/**
 * Orphaned sync rows (issue 16, "also seen"): the anchor batch ends the sync (its phase row goes with
 * the anchor), and the sync's other rows (listing, HAVE, partials, load cursor) are cleared right after.
 * A process that dies between the two leaves those rows with no phase row: nothing would read them again.
 * The next start deletes them (SyncState.sweepOrphans, run by the snapshot-sync service of every node).
 *
 * The death is reproduced exactly: the clear after the anchor batch fails (the process "dies" there: the
 * anchor batch is written, nothing after it), the node is stopped and the store reopened.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { testEnv, waitFor } from '../helpers/sync-net.ts'
import { snapshotProducer, snapNode, snapshotGenesis } from '../helpers/snapshot-net.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { SnapshotKeys } from '../../src/snapshot/store-keys.ts'
import { SyncState, SYNC_BUCKETS } from '../../src/snapshot/sync/sync-state.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'

async function countSyncRows (store: ChainStore): Promise<number> {
  let n = 0
  for (const b of SYNC_BUCKETS) {
    const [gte, lt] = SnapshotKeys.range(b)
    for await (const _ of store.db.keys({ gte, lt })) n++
  }
  return n
}

test('rows left by a kill between the anchor batch and the clear after it are deleted at the next start', { timeout: 60_000 }, async t => {
  const env = testEnv(t)
  const g = snapshotGenesis()
  const P = await snapshotProducer(env.dir, 25, { genesis: g })
  env.track(P.store)
  const S = (await P.snapshots.latest())!
  const server = env.node(await snapNode(P.store, { commitSync: false }))
  const dir = `${env.dir}/victim`
  let store = await ChainStore.open(dir, { genesis: g })
  const first = await snapNode(store, { snapshot: true })
  const sync = first.services.snapshotSync.snapshotSync!
  // the clear that follows the anchor batch (the only one called without options) never happens
  const clear = sync.state.clear.bind(sync.state)
  let died = false
  sync.state.clear = async (opts?: { keepStateReplaced?: boolean }) => {
    if (opts === undefined) { died = true; throw new Error('killed right after the anchor batch') }
    await clear(opts)
  }
  await first.dial(server.getMultiaddrs()[0])
  await waitFor(() => died, 30_000, 'the sync to write its anchor batch')
  await waitFor(() => first.services.snapshotSync.error !== undefined, 5000, 'the run to end')
  await first.stop()
  await store.close()

  // what the "kill" left: the anchor (the store at S, the snapshot registered) and orphaned sync rows
  store = env.track(await ChainStore.open(dir, { genesis: g }))
  assert.equal(store.highestSynced, S, 'the anchor batch was written')
  assert.ok(await new SnapshotStore(store).has(S), 'the snapshot is registered')
  const state = new SyncState(store)
  assert.equal(await state.read(), undefined, 'no sync in progress (the phase row went with the anchor)')
  const orphans = await countSyncRows(store)
  assert.ok(orphans > 0, `orphaned sync rows: ${orphans}`)

  // the next start (any node: this one commit-syncs) deletes them
  const second = env.node(await snapNode(store, {}))
  assert.equal(await countSyncRows(store), 0, 'no sync row left after the start')
  assert.equal(await state.stateReplaced(), false)
  await second.dial(server.getMultiaddrs()[0])
  await waitFor(() => store.highestExecuted >= 25, 20_000, 'commit sync to continue from the snapshot')
})

test('the sweep keeps a sync in progress, and the state-replaced flag of an abandoned one', { timeout: 30_000 }, async t => {
  const env = testEnv(t)
  const store = await env.store('s', snapshotGenesis(100))
  const state = new SyncState(store)
  const rows = async (): Promise<number> => await countSyncRows(store)
  // a sync in progress: untouched
  await state.begin(new Uint8Array([1, 2, 3]))
  const batch = store.batch()
  state.putHave(batch, new Uint8Array(32).fill(7), 100)
  await batch.write()
  const before = await rows()
  assert.equal(await state.sweepOrphans(), false)
  assert.equal(await rows(), before)
  // abandoned after the state was cleared: only the flag stays
  await store.batch().put(SnapshotKeys.syncMeta('state-replaced'), Uint8Array.of(1)).del(SnapshotKeys.syncMeta('phase')).write()
  assert.equal(await state.sweepOrphans(), true)
  assert.equal(await rows(), 1)
  assert.equal(await state.stateReplaced(), true)
  assert.equal(await state.sweepOrphans(), false, 'nothing more to sweep')
})
