/**
 * Spot checks (issue 14): while reading an archive, sampled commits are compared with P2P peers'
 * over /soma/fetch-commits/1.0.0. Honest peers agree; a peer that serves another digest stops the fast
 * mode with the commit, the archive object and the peer named, before that segment is stored.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { readFileSync } from 'node:fs'
import { plainNode, producerStore, syncNode, testEnv, waitFor } from '../helpers/sync-net.ts'
import { fetchCommits, type FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import { ArchiveWriter } from '../../src/archive/writer.ts'
import { DirArchiveSource } from '../../src/archive/source.ts'
import { SpotChecker } from '../../src/archive/spot-check.ts'
import { parseManifest } from '../../src/archive/format.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { SpotCheckError } from '../../src/errors.ts'
import { archiveSyncInto, recordingLogger } from './helpers.ts'

test('spot checks: honest peers agree; a peer with another digest stops the fast mode naming commit, object and peer', { timeout: 180_000 }, async (t) => {
  const env = testEnv(t, 'soma-archive-spot-')
  const { store: ps } = await producerStore(env.dir, 40, { epochLength: 10 })
  env.track(ps)
  const dir = path.join(env.dir, 'archive')
  await new ArchiveWriter(ps, dir, { segmentCommits: 5 }).writeClosedEpochs()
  const manifest = parseManifest(readFileSync(path.join(dir, 'manifest.json')), 'manifest')
  // two honest peers serving the chain, and a liar: the same chain, but commits from 21 on altered
  const honest1 = env.node(await syncNode(ps, { sync: false }))
  const honest2 = env.node(await syncNode(ps, { sync: false }))
  const liar = env.node(await syncNode(ps, { sync: false }))
  const lfc = liar.services.fetchCommits as FetchCommits
  const serve = lfc.serve.bind(lfc)
  lfc.serve = async (req) => {
    const res = await serve(req)
    return {
      ...res,
      commits: res.commits.map(b => {
        const c = Codecs.Commit.decode(b)
        return c.index >= 21 ? Codecs.Commit.encode({ ...c, timestampMs: c.timestampMs + 1 }) : b
      })
    }
  }
  // a reading node (a client of fetch-commits) connected to exactly these servers; a fresh one per case,
  // so that no connection from an earlier case comes back
  const readerWith = async (servers: typeof honest1[]): Promise<any> => {
    const reader = env.node(await plainNode({ fetchCommits: fetchCommits({}) }))
    for (const p of servers) await reader.dial(p.getMultiaddrs()[0])
    await waitFor(() => reader.getPeers().length === servers.length, 10_000, `${servers.length} peers`)
    return reader
  }
  const log = recordingLogger()

  let reader = await readerWith([honest1, honest2])
  const checker = new SpotChecker(reader.services.fetchCommits, () => reader.getPeers(), log, { perEpoch: 3, peers: 2, waitMs: 5000 })
  const ok = await archiveSyncInto(env, 'honest', new DirArchiveSource(dir), { stopAt: 20 }, { spotChecker: checker, log })
  const r = await ok.sync.run(AbortSignal.timeout(60_000))
  assert.equal(r.outcome, 'synced', r.error?.message)
  assert.ok(ok.sync.stats.spotChecks >= 6, `at least 3 per epoch for 2 epochs: ${ok.sync.stats.spotChecks}`)
  assert.equal(checker.unchecked, 0)

  // with the liar among the peers (only it and one honest peer): the sampled commits of epoch 2
  reader = await readerWith([honest1, liar])
  const log2 = recordingLogger()
  const checker2 = new SpotChecker(reader.services.fetchCommits, () => reader.getPeers(), log2, { perEpoch: 3, peers: 2, waitMs: 5000 })
  const bad = await archiveSyncInto(env, 'liar', new DirArchiveSource(dir), {}, { spotChecker: checker2, log: log2 })
  const r2 = await bad.sync.run(AbortSignal.timeout(60_000))
  assert.equal(r2.outcome, 'failed')
  assert.ok(r2.error instanceof SpotCheckError, r2.error?.message)
  const seg = manifest.segments.find(s => s.firstCommit === 21)!
  assert.match(r2.error.message, new RegExp(`spot check of commit (2[1-5]) failed: peer ${liar.peerId.toString()} has digest [0-9a-f]+…?, .*${seg.name.replace(/[.]/g, '\\.')} has`))
  assert.equal(bad.store.highestSynced, 20, 'the segment that failed its spot check is not stored')
  assert.ok(log2.lines.some(l => l.includes(' ERROR ') && l.includes(liar.peerId.toString())), 'logged at error')

  // fewer peers than required: the sample is logged at warn as unchecked, the sync goes on
  reader = await readerWith([honest1])
  const log3 = recordingLogger()
  const checker3 = new SpotChecker(reader.services.fetchCommits, () => reader.getPeers(), log3, { perEpoch: 1, peers: 2, waitMs: 300 })
  const few = await archiveSyncInto(env, 'few', new DirArchiveSource(dir), { stopAt: 10 }, { spotChecker: checker3, log: log3 })
  const r3 = await few.sync.run(AbortSignal.timeout(60_000))
  assert.equal(r3.outcome, 'synced')
  assert.ok(checker3.unchecked > 0)
  assert.ok(log3.lines.some(l => l.includes(' WARN ') && /1 of 2 peers answered; unchecked/.test(l)))
})
