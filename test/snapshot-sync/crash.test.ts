/**
 * The crash campaign of snapshot sync on the pack layout (issue 18, "Done when"): a syncing process
 * (test/helpers/snapshot-child.ts) is killed with SIGKILL during the arrival load (chunks loaded as they
 * arrive), during the load phase proper (loadOnArrival off), right after the final check, at and inside
 * the anchor (exact points: entering the final check, the load and the anchor, before the anchor batch
 * is written, after it), then restarted on the same data dir (crash-random.test.ts: random points, after
 * the sync rows are cleared, a delta sync's pruning anchor). After every kill the store is
 * opened and checked:
 * - every indexed pack blob reads back and hashes to its key, every pack file ends at its last indexed
 *   blob (the open truncated what a kill left unindexed);
 * - during the sync: every HAVE row's chunk is indexed in the packs and has its partial state hash, and
 *   the packs hold nothing else; once anchored, the packs hold exactly the snapshot's chunks;
 * - the state rows are exactly the entries of the loaded chunks (the rows below the persisted load
 *   cursor, decoded from the packs), and the persisted accumulator is their state hash;
 * and on the restart no chunk it had stored is requested again (the server records every hash it
 * serves). The last run completes: the state root is the producer's, the state buckets are the
 * producer's, and no sync row is left.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { campaign, crashSetup } from '../helpers/snapshot-crash.ts'

test('snapshot sync killed with SIGKILL during the arrival load, the load, at the final check and around the anchor resumes on the pack layout', { timeout: 600_000 }, async t => {
  const { c } = await crashSetup(t)
  const total = c.total
  const log = (s: string): void => { t.diagnostic(s) }
  log(`snapshot of commit ${c.S}: ${total} chunks`)

  await t.test('loading as chunks arrive: killed mid-arrival-load, at the final check, right after it, entering the anchor', async () => {
    const snap = { loadBatchBytes: 2048 }
    await campaign(c, 'arrival', [
      {
        what: 'during the arrival load',
        opts: { snap },
        killWhen: p => p.phase === 'chunks' && p.load > 0 && p.chunks >= total / 4,
        expect: r => { assert.equal(r.phase, 'chunks'); assert.ok(r.loaded > 0 && r.loaded < total, `killed with ${r.loaded} of ${total} rows loaded`) }
      },
      { what: 'entering the final check', opts: { snap, selfKill: 'enter:final-check' }, expect: r => { assert.equal(r.phase, 'final-check'); assert.equal(r.have.size, total) } },
      { what: 'right after the final check', opts: { snap, selfKill: 'enter:load' }, expect: r => { assert.equal(r.phase, 'load') } },
      { what: 'entering the anchor', opts: { snap, selfKill: 'enter:anchor' }, expect: r => { assert.equal(r.phase, 'anchor'); assert.equal(r.loaded, total) } },
      // resumed at the anchor: killed by the parent as soon as it reads that the anchor began (lands in
      // the anchor or just after it)
      { what: 'during the anchor', opts: { snap }, killWhen: (_p, line) => line === 'enter anchor' }
    ], { snap }, log)
  })

  await t.test('loading after the download: killed mid-download, mid-load, before and after the anchor batch', async () => {
    const snap = { loadOnArrival: false, loadBatchBytes: 1024 }
    await campaign(c, 'load', [
      { what: 'mid-download', opts: { snap }, killWhen: p => p.phase === 'chunks' && p.chunks >= total / 2, expect: r => { assert.equal(r.phase, 'chunks'); assert.equal(r.loaded, 0) } },
      {
        what: 'mid-load',
        opts: { snap },
        killWhen: p => p.phase === 'load' && p.load >= total / 4,
        expect: r => { assert.equal(r.phase, 'load'); assert.ok(r.loaded > 0 && r.loaded < total, `killed with ${r.loaded} of ${total} rows loaded`) }
      },
      { what: 'before the anchor batch is written', opts: { snap, selfKill: 'before-anchor-batch' }, expect: r => { assert.equal(r.phase, 'anchor'); assert.equal(r.loaded, total) } },
      { what: 'after the anchor batch, before the sync rows are cleared', opts: { snap, selfKill: 'after-anchor-batch' }, expect: r => { assert.ok(r.anchored, 'the anchor batch was written') } }
    ], { snap }, log)
  })
})
