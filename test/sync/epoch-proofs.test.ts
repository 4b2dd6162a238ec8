/**
 * Committee sync over /soma/epoch-proofs/1.0.0 on 127.0.0.1: a node that knows only genesis learns the
 * committee of every epoch from certified end-of-epoch commits (in one request or several), serves the
 * proofs on from its EPOCH_PROOF bucket without having any commit, and refuses proofs that do not
 * verify (each penalized, nothing stored from it), completing from an honest peer.
 *
 * Client nodes run with `sync: false`: no commit sync, so everything they learn comes from epoch proofs.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { pbStream } from '@libp2p/utils'
import type { PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { producerStore, syncNode, testEnv, SEED, type SyncNode } from '../helpers/sync-net.ts'
import { committeeWithStakes, hex } from '../helpers/chain.ts'
import { ChainStore, Bucket } from '../../src/store/chain-store.ts'
import { Keys } from '../../src/store/keys.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { signBlock } from '../../src/chain/block.ts'
import { validatorKey } from '../../src/chain/genesis.ts'
import type { Block } from '../../src/chain/types.ts'
import { VerifyPool } from '../../src/crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../../src/sync/block-verifier.ts'
import { PeerScores } from '../../src/sync/peer-scores.ts'
import { EpochProofs, epochProofSize } from '../../src/sync/protocols/epoch-proofs.ts'
import { syncCommittees } from '../../src/sync/committee-sync.ts'
import { SyncCodecs, PROTOCOL_EPOCH_PROOFS, type EpochProof, type GetEpochProofsRequest, type GetEpochProofsResponse } from '../../src/sync/protocols/messages.ts'

const addr = (n: { getMultiaddrs: () => Multiaddr[] }): Multiaddr => n.getMultiaddrs()[0]
const RAW = { encode: (b: Uint8Array): Uint8Array => b }
const proofHex = (p: EpochProof | undefined): string => p === undefined ? 'none' : hex(SyncCodecs.EpochProof.encode(p))

async function countBucket (s: ChainStore, bucket: number): Promise<number> {
  let n = 0
  for await (const _ of s.iterateBucket(bucket)) n++
  return n
}

/** A plain libp2p node answering /soma/epoch-proofs/1.0.0 with `answer(req, honest)`. */
async function maliciousPeer (store: ChainStore, answer: (req: GetEpochProofsRequest, honest: GetEpochProofsResponse) => GetEpochProofsResponse | Promise<GetEpochProofsResponse>): Promise<{ node: Libp2p, requests: number }> {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
  const honest = new EpochProofs({ logger: node.logger, registrar: undefined as any, connectionManager: undefined as any }, { store })
  const out = { node, requests: 0 }
  await node.handle(PROTOCOL_EPOCH_PROOFS, async (stream) => {
    try {
      const pb = pbStream(stream, { maxDataLength: 1024 })
      const req = await pb.read(SyncCodecs.GetEpochProofsRequest)
      out.requests++
      const res = await answer(req, await honest.serve(req))
      await pb.write(SyncCodecs.GetEpochProofsResponse.encode(res), RAW)
      await stream.close()
    } catch (err: any) {
      stream.abort(err)
    }
  })
  return out
}

/** SignedBlock bytes of the same block re-signed by `key`. */
function resign (signedBytes: Uint8Array, key: ReturnType<typeof validatorKey>): Uint8Array {
  const b = Codecs.Block.decode(Codecs.SignedBlock.decode(signedBytes).block)
  const block: Block = { epoch: b.epoch, round: b.round, author: b.author, timestampMs: b.timestampMs, ancestors: b.ancestors, transactions: b.transactions, commitVotes: b.commitVotes, chainId: b.chainId }
  return signBlock(block, key).bytes
}

describe('committee sync over /soma/epoch-proofs/1.0.0', { timeout: 60_000 }, () => {
  let dir: string
  let ps: ChainStore
  let P: SyncNode
  let topEpoch: number
  let pool: VerifyPool
  let verifier: SignedBlockVerifier

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'soma-epoch-proofs-'))
    // epochs of 4 commits: commits 4, 8, …, 24 end epochs 0..5, so the producer is in epoch 6
    ps = (await producerStore(dir, 26, { epochLength: 4, txsPerBlock: 2 })).store
    topEpoch = await ps.highestCommitteeEpoch()
    // the producer serves at most 2 epochs per response
    P = await syncNode(ps, { sync: false, maxEpochsPerRequest: 2 })
    pool = new VerifyPool({ workers: 0 })
    verifier = new SignedBlockVerifier(pool, ps.chainId)
  })
  after(async () => {
    await P?.stop()
    await ps?.close()
    await pool?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  /** The client's committees of epochs 0..upto are the producer's, byte for byte; none above. */
  async function assertCommittees (s: ChainStore, upto: number): Promise<void> {
    for (let e = 0; e <= upto; e++) {
      const mine = await s.db.get(Keys.committee(e))
      assert.ok(mine !== undefined, `committee of epoch ${e} stored`)
      assert.equal(hex(mine), hex((await ps.db.get(Keys.committee(e)))!), `committee of epoch ${e}`)
    }
    assert.equal(await s.db.get(Keys.committee(upto + 1)), undefined, `no committee above epoch ${upto}`)
    assert.equal(await countBucket(s, Bucket.COMMITTEE), upto + 1)
    assert.equal(await countBucket(s, Bucket.EPOCH_PROOF), upto)
  }

  it('the producer spans at least 5 epochs with rotating committees', async () => {
    assert.ok(topEpoch >= 5, `epoch ${topEpoch}`)
    assert.equal(await ps.getLastCommitIndexOfEpoch(topEpoch - 1), 4 * topEpoch)
    const keys = async (e: number): Promise<string[]> => (await ps.getCommittee(e))!.committee.authorities.map(a => hex(a.publicKey))
    assert.notDeepEqual(await keys(0), await keys(topEpoch), 'the committee changed')
  })

  it('serve(): the proofs from stored commits, at most maxEpochsPerRequest, within maxFetchResponseBytes', async () => {
    const components = { logger: P.logger, registrar: undefined as any, connectionManager: undefined as any }
    const all = await new EpochProofs(components, { store: ps }).serve({ fromEpoch: 0 })
    assert.equal(all.proofs.length, topEpoch, 'one proof per finished epoch, stopping at the current one')
    for (const [e, p] of all.proofs.entries()) {
      assert.equal(hex(p.commit), hex((await ps.getCommitBytes((await ps.getLastCommitIndexOfEpoch(e))!))!), `proof ${e} carries the end-of-epoch commit`)
      assert.ok(p.certifierBlocks.length >= 3 && p.certifierBlocks.length <= 4, 'a minimal quorum of 4 validators')
    }
    assert.equal((await P.services.epochProofs.serve({ fromEpoch: 1 })).proofs.length, 2, 'maxEpochsPerRequest')
    assert.deepEqual(await P.services.epochProofs.serve({ fromEpoch: topEpoch }), { proofs: [] }, 'nothing to prove for the current epoch')
    const two = epochProofSize(all.proofs[0]) + epochProofSize(all.proofs[1])
    const fit = await new EpochProofs(components, { store: ps, maxFetchResponseBytes: two + 1 }).serve({ fromEpoch: 0 })
    assert.equal(fit.proofs.length, 2, 'truncated to the response size')
    const tooSmall = await new EpochProofs(components, { store: ps, maxFetchResponseBytes: 100 }).serve({ fromEpoch: 0 })
    assert.equal(tooSmall.proofs.length, 0)
    assert.match(tooSmall.error!, /exceeds 100 bytes/)
  })

  it('a genesis-only node learns every committee (several requests), then serves them from its proofs alone', async t => {
    const env = testEnv(t, 'soma-epoch-proofs-')
    const sa = await env.store('a')
    const sc = await env.store('c')
    const A = env.node(await syncNode(sa, { sync: false }))
    const C = env.node(await syncNode(sc, { sync: false }))
    assert.equal(await sa.highestCommitteeEpoch(), 0, 'genesis only')

    await A.dial(addr(P))
    const before = P.services.epochProofs.rpc.stats.inbound
    const errors: Error[] = []
    const reached = await syncCommittees({ store: sa, epochProofs: A.services.epochProofs, blockVerifier: verifier }, [P.peerId], { signal: AbortSignal.timeout(10_000), onPeerError: (_p, err) => errors.push(err) })
    assert.equal(reached, topEpoch)
    assert.equal(errors.length, 0, errors.map(e => e.message).join('; '))
    // 2 epochs per response: ceil(topEpoch / 2) responses with proofs, then one empty answer
    assert.equal(P.services.epochProofs.rpc.stats.inbound - before, Math.ceil(topEpoch / 2) + 1)
    await assertCommittees(sa, topEpoch)
    assert.equal(await sa.highestCommitteeEpoch(), topEpoch)
    assert.equal(await countBucket(sa, Bucket.COMMIT), 0, 'no commit was fetched')
    assert.equal(await countBucket(sa, Bucket.BLOCK), 0, 'no block was stored')
    assert.equal(sa.highestSynced, 0)

    // C learns them from A, which has no commit: A answers from its EPOCH_PROOF bucket, in one request
    await P.hangUp(A.peerId)
    await C.dial(addr(A))
    const fromA = await A.services.epochProofs.serve({ fromEpoch: 0 })
    assert.equal(fromA.proofs.length, topEpoch)
    for (let e = 0; e < topEpoch; e++) assert.equal(proofHex(fromA.proofs[e]), proofHex(await sa.getEpochProof(e)), `A serves its stored proof of epoch ${e}`)
    assert.equal(proofHex(fromA.proofs[0]), proofHex((await P.services.epochProofs.serve({ fromEpoch: 0 })).proofs[0]), 'the proof P made from its commits')
    const served = A.services.epochProofs.rpc.stats.inbound
    const reachedC = await syncCommittees({ store: sc, epochProofs: C.services.epochProofs, blockVerifier: verifier }, [A.peerId], { signal: AbortSignal.timeout(10_000), upToEpoch: topEpoch, onPeerError: (_p, err) => errors.push(err) })
    assert.equal(reachedC, topEpoch)
    assert.equal(errors.length, 0, errors.map(e => e.message).join('; '))
    assert.equal(A.services.epochProofs.rpc.stats.inbound - served, 1, 'one request (upToEpoch: no trailing empty request)')
    await assertCommittees(sc, topEpoch)
    assert.equal(await countBucket(sc, Bucket.COMMIT), 0)
  })

  it('stops at upToEpoch and resumes from the highest stored committee', async t => {
    const env = testEnv(t, 'soma-epoch-proofs-')
    const sb = await env.store('b')
    const B = env.node(await syncNode(sb, { sync: false }))
    await B.dial(addr(P))
    const deps = { store: sb, epochProofs: B.services.epochProofs, blockVerifier: verifier }
    assert.equal(await syncCommittees(deps, [P.peerId], { signal: AbortSignal.timeout(10_000), upToEpoch: 3 }), 3)
    await assertCommittees(sb, 3)
    assert.equal(await syncCommittees(deps, [P.peerId], { signal: AbortSignal.timeout(10_000), upToEpoch: 2 }), 3, 'already known')
    const before = P.services.epochProofs.rpc.stats.inbound
    assert.equal(await syncCommittees(deps, [P.peerId], { signal: AbortSignal.timeout(10_000) }), topEpoch)
    assert.equal(P.services.epochProofs.rpc.stats.inbound - before, Math.ceil((topEpoch - 3) / 2) + 1, 'asked only from epoch 3 on')
    await assertCommittees(sb, topEpoch)
  })

  describe('proofs that do not verify: the peer is penalized, nothing stored from it, the node completes from an honest peer', () => {
    // one client node for every case (libp2p limits inbound connections per host and second, all of
    // ours come from 127.0.0.1), each case syncing a fresh genesis-only store through its EpochProofs
    let C: SyncNode
    let nodeStore: ChainStore
    before(async () => {
      nodeStore = await ChainStore.open(path.join(dir, 'client-node'), { genesis: ps.genesis })
      C = await syncNode(nodeStore, { sync: false })
      await C.dial(addr(P))
    })
    after(async () => {
      await C?.stop()
      await nodeStore?.close()
    })

    /**
     * A fresh genesis-only store asks the malicious peer alone (penalized, nothing stored), then the
     * malicious peer first and the honest producer second.
     */
    async function runCase (t: any, corrupt: (req: GetEpochProofsRequest, honest: GetEpochProofsResponse) => GetEpochProofsResponse | Promise<GetEpochProofsResponse>, expected: string): Promise<void> {
      const env = testEnv(t, 'soma-epoch-proofs-')
      const cs = await env.store('client')
      const M = await maliciousPeer(ps, corrupt)
      env.node(M.node)
      await C.dial(addr(M.node))
      const scores = new PeerScores(60_000)
      const reported: Array<{ peer: PeerId, err: Error }> = []
      const onPeerError = (peer: PeerId, err: Error): void => { reported.push({ peer, err }); scores.penalize(peer, err) }
      const deps = { store: cs, epochProofs: C.services.epochProofs, blockVerifier: verifier }

      assert.equal(await syncCommittees(deps, [M.node.peerId], { signal: AbortSignal.timeout(10_000), onPeerError }), 0, 'nothing learned from the malicious peer')
      assert.equal(reported.length, 1)
      assert.equal(reported[0].err.name, expected, reported[0].err.message)
      assert.equal(scores.penaltiesOf(M.node.peerId)[0]?.error, expected, 'penalized')
      assert.ok(scores.score(M.node.peerId) < 0 || scores.isBanned(M.node.peerId), 'its score fell (a 100-point lie bans it at once)')
      assert.equal(await countBucket(cs, Bucket.COMMITTEE), 1, 'only the genesis committee')
      assert.equal(await countBucket(cs, Bucket.EPOCH_PROOF), 0, 'no proof stored')

      const reached = await syncCommittees(deps, [M.node.peerId, P.peerId], { signal: AbortSignal.timeout(10_000), onPeerError })
      assert.equal(reached, topEpoch, 'completed from the honest peer')
      assert.equal(reported.length, 2)
      assert.equal(reported[1].peer.toString(), M.node.peerId.toString())
      assert.equal(reported[1].err.name, expected)
      assert.equal(scores.penaltiesOf(P.peerId).length, 0, 'the honest peer was not penalized')
      assert.ok(M.requests >= 2)
      await assertCommittees(cs, topEpoch)
      for (let e = 0; e < topEpoch; e++) {
        assert.equal(proofHex(await cs.getEpochProof(e)), proofHex((await P.services.epochProofs.serve({ fromEpoch: e })).proofs[0]), `the stored proof of epoch ${e} is the honest one`)
      }
    }

    const first = (honest: GetEpochProofsResponse, edit: (p: GetEpochProofsResponse['proofs'][number]) => GetEpochProofsResponse['proofs'][number]): GetEpochProofsResponse => {
      assert.ok(honest.proofs.length > 0)
      return { proofs: [edit(honest.proofs[0]), ...honest.proofs.slice(1)] }
    }

    it('too few certifier blocks: InsufficientVotesError', async t => {
      await runCase(t, (_req, honest) => first(honest, p => ({ ...p, certifierBlocks: p.certifierBlocks.slice(0, 1) })), 'InsufficientVotesError')
    })

    it('a forged next committee (the votes no longer match the commit digest): InsufficientVotesError', async t => {
      await runCase(t, (_req, honest) => first(honest, p => {
        const c = Codecs.Commit.decode(p.commit)
        const forged = committeeWithStakes('attacker', c.epoch + 1, [1000, 1000, 1000, 1000]).committee
        return { ...p, commit: Codecs.Commit.encode({ ...c, endOfEpoch: { nextCommittee: forged } }) }
      }), 'InsufficientVotesError')
    })

    it('the proof of another epoch: ProtocolViolationError', async t => {
      // asked from epoch e, it answers from epoch e + 1
      await runCase(t, async (req, honest) => {
        const next = await P.services.epochProofs.serve({ fromEpoch: req.fromEpoch + 1 })
        return next.proofs.length > 0 ? next : honest
      }, 'ProtocolViolationError')
    })

    it('a commit that does not end the epoch: ProtocolViolationError', async t => {
      // commit 1 of epoch 0, certified by its own votes
      const commit1 = (await ps.getCommitBytes(1))!
      await runCase(t, (_req, honest) => first(honest, p => ({ ...p, commit: commit1 })), 'ProtocolViolationError')
    })

    it('a certifier block signed by a key outside the committee: InvalidSignatureError', async t => {
      await runCase(t, (_req, honest) => first(honest, p => ({ ...p, certifierBlocks: [resign(p.certifierBlocks[0], validatorKey(SEED, 99)), ...p.certifierBlocks.slice(1)] })), 'InvalidSignatureError')
    })

    it('a later proof that does not verify: the earlier, verified epochs are kept, nothing after', async t => {
      const env = testEnv(t, 'soma-epoch-proofs-')
      const cs = await env.store('client')
      // epochs 0 and 1 honest, the proof of epoch 2 certified by one block only
      const M = await maliciousPeer(ps, (_req, honest) => {
        const proofs = honest.proofs.map(p => ({ commit: p.commit, certifierBlocks: p.certifierBlocks }))
        const i = proofs.findIndex(p => Codecs.Commit.decode(p.commit).epoch === 2)
        if (i >= 0) proofs[i] = { ...proofs[i], certifierBlocks: proofs[i].certifierBlocks.slice(0, 1) }
        return { proofs }
      })
      env.node(M.node)
      await C.dial(addr(M.node))
      const errors: string[] = []
      const reached = await syncCommittees({ store: cs, epochProofs: C.services.epochProofs, blockVerifier: verifier }, [M.node.peerId], { signal: AbortSignal.timeout(10_000), onPeerError: (_p, err) => errors.push(err.name) })
      assert.equal(reached, 2)
      assert.deepEqual(errors, ['InsufficientVotesError'])
      await assertCommittees(cs, 2)
    })
  })
})
