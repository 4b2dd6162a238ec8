/**
 * The crash campaign of snapshot sync on the pack layout, continued (test/snapshot-sync/crash.test.ts
 * says what is checked after each kill): a syncing process SIGKILLed at random points (a random fraction
 * of the chunks downloaded and loaded, a random time into the sync) and after the sync rows are cleared,
 * restarted each time on the same data dir; and a delta sync (keep 1) killed after its anchor batch
 * pruned the older snapshot's chunks, before the pack files were collected.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { hex } from '../helpers/chain.ts'
import { checkPacks } from '../helpers/packs.ts'
import { campaign, crashSetup, runChild } from '../helpers/snapshot-crash.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { toHex } from '../../src/crypto/hash.ts'

test('snapshot sync killed with SIGKILL at random points, and a delta sync killed after its pruning anchor, resume on the pack layout', { timeout: 600_000 }, async t => {
  const { c, P } = await crashSetup(t)
  const env = c.env
  const g = c.g
  const log = (s: string): void => { t.diagnostic(s) }
  log(`snapshot of commit ${c.S}: ${c.total} chunks`)

  await t.test('killed at random points (and after the sync rows are cleared)', async () => {
    const snap = { loadBatchBytes: 4096 }
    const steps: Parameters<typeof campaign>[2] = []
    for (let k = 0; k < 2; k++) {
      // at a random point of the work: a fraction of the chunks downloaded and loaded
      const f = Math.random()
      steps.push({ what: `at ${(f * 100).toFixed(0)} % of the chunks downloaded and loaded`, opts: { snap }, killWhen: p => p.total > 0 && (p.chunks + p.load) >= f * 2 * p.total })
      // at a random time: a restart spends ~1 s before chunks flow (peers, probes), the download ~2 s
      // here (a quiet machine: ~1 s), the load and the anchor tens of ms
      const delay = Math.floor(Math.random() * 3000)
      steps.push({ what: `${delay} ms into the sync`, opts: { snap }, delayMs: delay })
    }
    steps.push({ what: 'after the sync rows are cleared (the pack collection not run)', opts: { snap, selfKill: 'after-anchor-clear' } })
    await campaign(c, 'random', steps, { snap }, log)
  })

  await t.test('a delta sync killed after its anchor batch pruned the older snapshot, before the packs were collected', async () => {
    const snap = { keep: 1 }
    const dir = path.join(env.dir, 'delta')
    // the node syncs the snapshot of commit 30 and follows the chain to 35
    await runChild(c, dir, { snap })
    const packsBefore = await (async () => { const s = await ChainStore.open(dir, { genesis: g }); try { return await checkPacks(s) } finally { await s.close() } })()
    // the chain moves on to a snapshot at 40: the node (keep 1) syncs it and prunes the one of 30 in the
    // anchor batch; killed before the pack files of swept chunks are collected
    await P.producer.produceUntil(45)
    c.tip = 45
    c.S = (await P.snapshots.latest())!
    assert.equal(c.S, 40)
    c.total = (await P.snapshots.get(c.S))!.manifest.chunkCount
    c.rootAtTip = hex((await P.store.getStateRoot(c.tip))!)
    c.rootAtS = hex((await P.store.getStateRoot(c.S))!)
    const listing = new Set((await P.snapshots.getListing(c.S)).map(r => toHex(r.hash)))
    const swept = [...packsBefore].filter(h => !listing.has(h)).length
    assert.ok(swept > 0, 'the snapshot of 30 has chunks the one of 40 does not list')
    await campaign(c, 'delta', [{ what: 'after the anchor batch pruned the snapshot of 30, before the pack collection', opts: { snap, selfKill: 'after-anchor-clear' } }], { snap }, log)
    log(`delta: ${swept} chunks of the snapshot of 30 swept by the anchor of 40`)
  })
})
