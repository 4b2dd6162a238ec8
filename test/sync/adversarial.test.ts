/**
 * Misbehaving peers (seed 000, "Validation Failures"): each answer is rejected with its named error,
 * the peer penalized, nothing unverified stored, and the node completes from an honest peer.
 *
 * A malicious peer is a plain createLibp2p node with its own handlers for the /soma/* protocol ids:
 * it reads the request with pbStream (maxDataLength), computes the honest answer from a store, and
 * writes a corrupted one. It claims the honest tip so that the client picks it. The client first
 * knows only the malicious peer; once the penalty is recorded the honest peer is connected.
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
import type { Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { producerStore, syncNode, testEnv, testGenesis, waitFor, SEED, type SyncNode } from '../helpers/sync-net.ts'
import { flipBit, hex } from '../helpers/chain.ts'
import { ChainStore, Bucket } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { signBlock, type ParsedBlock } from '../../src/chain/block.ts'
import { validatorKey } from '../../src/chain/genesis.ts'
import type { Block, BlockRef } from '../../src/chain/types.ts'
import { sha256, utf8 } from '../../src/crypto/hash.ts'
import type { Codec } from '../../src/chain/proto.ts'
import { FetchCommits } from '../../src/sync/protocols/fetch-commits.ts'
import { FetchBlocks } from '../../src/sync/protocols/fetch-blocks.ts'
import {
  SyncCodecs, PROTOCOL_COMMIT_AVAILABILITY, PROTOCOL_FETCH_COMMITS, PROTOCOL_FETCH_BLOCKS, PROTOCOL_PUSH_COMMIT,
  type FetchBlocksRequest, type FetchBlocksResponse, type FetchCommitsRequest, type FetchCommitsResponse, type GetCommitAvailabilityResponse
} from '../../src/sync/protocols/messages.ts'
import type { StateSyncEventLoop } from '../../src/sync/event-loop.ts'
import type { CommitSyncServicesInit } from '../../src/sync/state-sync.ts'

const addr = (n: { getMultiaddrs: () => Multiaddr[] }): Multiaddr => n.getMultiaddrs()[0]
const loop = (n: SyncNode): StateSyncEventLoop => {
  const l = n.services.stateSync.eventLoop
  assert.ok(l !== undefined, 'the state sync event loop runs')
  return l
}
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const RAW = { encode: (b: Uint8Array): Uint8Array => b }

// ---------------------------------------------------------------------------------------------------
// the malicious peer

/** Never answer (read the request, then keep the stream open). */
const HANG = Symbol('hang')
/** An answer: a response message, raw bytes sent as the message body, or HANG. */
type Answer<T> = T | Uint8Array | typeof HANG

interface Misbehaviour {
  availability?: (honest: GetCommitAvailabilityResponse) => Answer<GetCommitAvailabilityResponse>
  fetchCommits?: (req: FetchCommitsRequest, honest: FetchCommitsResponse) => Answer<FetchCommitsResponse> | Promise<Answer<FetchCommitsResponse>>
  fetchBlocks?: (req: FetchBlocksRequest, honest: FetchBlocksResponse) => Answer<FetchBlocksResponse> | Promise<Answer<FetchBlocksResponse>>
}

interface MaliciousPeer {
  node: Libp2p
  /** requests received per protocol */
  counts: { availability: number, fetchCommits: number, fetchBlocks: number, push: number }
  stop: () => Promise<void>
}

/** A plain libp2p node answering the /soma/* protocols from `store`, through `mis`. */
async function maliciousPeer (store: ChainStore, mis: Misbehaviour): Promise<MaliciousPeer> {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  })
  // the honest server logic, to corrupt its answers
  const components = { logger: node.logger, registrar: undefined as any, connectionManager: undefined as any }
  const honestCommits = new FetchCommits(components, { store })
  const honestBlocks = new FetchBlocks(components, { store })
  const counts = { availability: 0, fetchCommits: 0, fetchBlocks: 0, push: 0 }
  const hanging: Stream[] = []

  const handle = async <Req, Res>(protocol: string, codecs: { req: Codec<Req>, res: Codec<Res> }, answer: (req: Req) => Promise<Answer<Res>>): Promise<void> => {
    await node.handle(protocol, async (stream) => {
      try {
        const pb = pbStream(stream, { maxDataLength: 128 * 1024 })
        const req = await pb.read(codecs.req)
        const a = await answer(req)
        if (a === HANG) { hanging.push(stream); return }
        await pb.write(a instanceof Uint8Array ? a : codecs.res.encode(a), RAW)
        await stream.close()
      } catch (err: any) {
        stream.abort(err)
      }
    }, { maxInboundStreams: 256 })
  }

  await handle(PROTOCOL_COMMIT_AVAILABILITY, { req: SyncCodecs.GetCommitAvailabilityRequest, res: SyncCodecs.GetCommitAvailabilityResponse }, async () => {
    counts.availability++
    const honest = { highestSyncedCommit: store.highestSynced, lowestAvailableCommit: store.lowestAvailable, genesisDigest: store.chainId }
    return mis.availability?.(honest) ?? honest
  })
  await handle(PROTOCOL_FETCH_COMMITS, { req: SyncCodecs.FetchCommitsRequest, res: SyncCodecs.FetchCommitsResponse }, async (req) => {
    counts.fetchCommits++
    const honest = await honestCommits.serve(req)
    return mis.fetchCommits === undefined ? honest : await mis.fetchCommits(req, honest)
  })
  await handle(PROTOCOL_FETCH_BLOCKS, { req: SyncCodecs.FetchBlocksRequest, res: SyncCodecs.FetchBlocksResponse }, async (req) => {
    counts.fetchBlocks++
    const honest = await honestBlocks.serve(req)
    return mis.fetchBlocks === undefined ? honest : await mis.fetchBlocks(req, honest)
  })
  await handle(PROTOCOL_PUSH_COMMIT, { req: SyncCodecs.PushCommitRequest, res: SyncCodecs.PushCommitResponse }, async () => {
    counts.push++
    return {}
  })
  return {
    node,
    counts,
    stop: async () => {
      for (const s of hanging) s.abort(new Error('stopping'))
      await node.stop()
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// corruptions

/** SignedBlock bytes whose Block was changed by `edit` but whose signature was kept (so it fails). */
function tamperBlock (signedBytes: Uint8Array, edit: (b: Block) => Block): Uint8Array {
  const signed = Codecs.SignedBlock.decode(signedBytes)
  const block = Codecs.Block.decode(signed.block)
  return Codecs.SignedBlock.encode({ block: Codecs.Block.encode(edit(plainBlock(block))), signature: signed.signature })
}

function plainBlock (b: Block): Block {
  return { epoch: b.epoch, round: b.round, author: b.author, timestampMs: b.timestampMs, ancestors: b.ancestors, transactions: b.transactions, commitVotes: b.commitVotes, chainId: b.chainId }
}

function refOf (signedBytes: Uint8Array): BlockRef {
  const block = Codecs.Block.decode(Codecs.SignedBlock.decode(signedBytes).block)
  return { round: block.round, author: block.author, digest: sha256(signedBytes) }
}

/**
 * A chain with the honest genesis (same validator keys) whose block (`round`, `author`) carries a
 * transaction with a garbage signature, yet is validly signed by its author and certified like any
 * other: only transaction verification can refuse it.
 */
async function chainWithBadTransaction (dir: string, commits: number, round: number, author: number): Promise<{ store: ChainStore, badRef: BlockRef }> {
  const store = await ChainStore.open(dir, { genesis: testGenesis() })
  const producer = new DevnetProducer(store, new CommitExecutor(store), { seed: SEED, epochLength: 10, txsPerBlock: 5, roundIntervalMs: 0 })
  await producer.load()
  let badRef: BlockRef | undefined
  const p = producer as any
  const makeRound = p.makeRound.bind(producer)
  p.makeRound = (opts: unknown): ParsedBlock[] => {
    const blocks: ParsedBlock[] = makeRound(opts)
    if (p.round === round) {
      const b = plainBlock(blocks[author].block)
      const txs = [...b.transactions]
      assert.equal(txs[0].signature.byteLength, 64, 'a signed user transaction')
      txs[0] = { tx: txs[0].tx, signature: flipBit(txs[0].signature, 5, 3) }
      blocks[author] = signBlock({ ...b, transactions: txs }, validatorKey(SEED, author))
      badRef = blocks[author].ref
    }
    return blocks
  }
  await producer.produceUntil(commits)
  assert.ok(badRef !== undefined)
  return { store, badRef }
}

// ---------------------------------------------------------------------------------------------------

describe('misbehaving peers are rejected and penalized; the node completes from an honest peer', { timeout: 120_000 }, () => {
  let honestDir: string
  let hs: ChainStore
  let H: SyncNode
  let tip: number

  before(async () => {
    honestDir = mkdtempSync(path.join(tmpdir(), 'soma-adv-'))
    hs = (await producerStore(honestDir, 30, { epochLength: 10 })).store
    tip = hs.highestSynced
    H = await syncNode(hs, { sync: false })
  })
  after(async () => {
    await H?.stop()
    await hs?.close()
    rmSync(honestDir, { recursive: true, force: true })
  })

  /** Everything the client stores is the honest chain's, byte for byte, and it executed to the tip. */
  async function assertHonest (cs: ChainStore): Promise<void> {
    assert.deepEqual(cs.getProgress(), { highestSynced: tip, highestExecuted: tip, lowestAvailable: 1 })
    for (let i = 1; i <= tip; i++) assert.equal(hex((await cs.getCommitBytes(i))!), hex((await hs.getCommitBytes(i))!), `commit ${i}`)
    assert.equal(hex((await cs.getStateRoot(tip))!), hex((await hs.getStateRoot(tip))!), 'state root')
    for (const bucket of [Bucket.BLOCK, Bucket.COMMIT, Bucket.VOTE, Bucket.COMMITTEE, Bucket.EPOCH_LAST_COMMIT]) {
      let n = 0
      for await (const [k, v] of cs.iterateBucket(bucket)) {
        const honest = await hs.db.get(k)
        assert.ok(honest !== undefined && hex(honest) === hex(v), `bucket ${bucket}: key ${hex(k).slice(0, 40)}… is the honest chain's`)
        n++
      }
      assert.ok(n > 0)
    }
  }

  /**
   * Connects a fresh client to the malicious peer only, waits for its penalty, checks nothing was
   * stored, then connects the honest peer and waits for the honest tip.
   */
  async function runCase (t: any, mis: Misbehaviour | { store: ChainStore }, expected: string, clientOpts: Partial<CommitSyncServicesInit> = {}): Promise<{ C: SyncNode, M: MaliciousPeer, cs: ChainStore, thrown: Error[] }> {
    const env = testEnv(t, 'soma-adv-')
    const cs = await env.store('client')
    const M = env.node('store' in mis ? await maliciousPeer(mis.store, {}) : await maliciousPeer(hs, mis))
    const C = env.node(await syncNode(cs, clientOpts))
    // what the client's protocol calls threw (the sync logic's own checks come after these)
    const thrown: Error[] = []
    for (const name of ['fetchCommits', 'fetchBlocks']) {
      const svc = C.services[name]
      const orig = svc.fetch.bind(svc)
      svc.fetch = async (...args: any[]) => { try { return await orig(...args) } catch (err: any) { thrown.push(err); throw err } }
    }
    await C.dial(addr(M.node))
    await waitFor(() => loop(C).scores.penaltiesOf(M.node.peerId).length > 0, 15_000, `a penalty for the malicious peer (${expected})`)
    const errors = loop(C).scores.penaltiesOf(M.node.peerId).map(p => p.error)
    assert.equal(errors[0], expected, `penalties: ${errors.join(', ')}`)
    assert.equal(cs.highestSynced, 0, 'nothing stored from the malicious peer')
    assert.equal(cs.highestExecuted, 0)

    await C.dial(addr(H))
    await waitFor(() => cs.highestExecuted >= tip, 20_000, 'the client to complete from the honest peer')
    await assertHonest(cs)
    assert.ok(loop(C).scores.penaltiesOf(H.peerId).every(p => p.error === 'RateLimitedError'), 'the honest peer was not penalized for lying')
    return { C, M, cs, thrown }
  }

  it('a commit range certified by too few votes: InsufficientVotesError', async t => {
    const { M } = await runCase(t, {
      fetchCommits: (_req, honest) => ({ ...honest, certifierBlocks: honest.certifierBlocks.slice(0, 1) })
    }, 'InsufficientVotesError')
    assert.ok(M.counts.fetchCommits >= 1)
    assert.equal(M.counts.fetchBlocks, 0, 'no blocks asked for commits that failed verification')
  })

  it('a certifier block without votes at all: InsufficientVotesError', async t => {
    await runCase(t, { fetchCommits: (_req, honest) => ({ ...honest, certifierBlocks: [] }) }, 'InsufficientVotesError')
  })

  it('a tampered certifier block (signature no longer matches): InvalidSignatureError', async t => {
    let bad: BlockRef | undefined
    const { cs } = await runCase(t, {
      fetchCommits: (_req, honest) => {
        const tampered = tamperBlock(honest.certifierBlocks[0], b => ({ ...b, timestampMs: b.timestampMs + 1 }))
        bad = refOf(tampered)
        return { ...honest, certifierBlocks: [tampered, ...honest.certifierBlocks.slice(1)] }
      }
    }, 'InvalidSignatureError')
    assert.ok(bad !== undefined)
    assert.equal(await cs.getBlock(bad), undefined, 'the tampered block is not stored')
  })

  it('a tampered block (a transaction byte flipped): BlockMismatchError', async t => {
    let bad: BlockRef | undefined
    const { cs } = await runCase(t, {
      fetchBlocks: (_req, honest) => {
        const tampered = tamperBlock(honest.blocks[0], b => ({ ...b, transactions: b.transactions.map((tx, i) => i === 0 ? { tx: flipBit(tx.tx, tx.tx.byteLength - 1, 0), signature: tx.signature } : tx) }))
        bad = refOf(tampered)
        return { blocks: [tampered, ...honest.blocks.slice(1)] }
      }
    }, 'BlockMismatchError')
    assert.ok(bad !== undefined)
    assert.equal(await cs.getBlock(bad), undefined, 'the tampered block is not stored')
  })

  it('a different, validly signed block than the one asked for: BlockMismatchError', async t => {
    const other = (await hs.getBlocks((await hs.getCommit(tip))!.commit.blocks))[0]!
    await runCase(t, {
      fetchBlocks: (req, honest) => {
        assert.ok(!req.blockRefs.some(r => hex(r.digest) === hex(sha256(other))), 'the substitute is not among the refs asked for')
        return { blocks: [other, ...honest.blocks.slice(1)] }
      }
    }, 'BlockMismatchError')
  })

  it('blocks in the wrong order: BlockMismatchError', async t => {
    await runCase(t, {
      fetchBlocks: (_req, honest) => {
        assert.ok(honest.blocks.length >= 2)
        return { blocks: [honest.blocks[1], honest.blocks[0], ...honest.blocks.slice(2)] }
      }
    }, 'BlockMismatchError')
  })

  it('a broken chain link (a middle commit with another previous digest): BrokenChainError', async t => {
    let forged: Uint8Array | undefined
    const { cs } = await runCase(t, {
      fetchCommits: (_req, honest) => {
        const commits = [...honest.commits]
        const mid = Math.floor(commits.length / 2)
        assert.ok(mid >= 1)
        const c = Codecs.Commit.decode(commits[mid])
        forged = Codecs.Commit.encode({ ...c, index: c.index, epoch: c.epoch, timestampMs: c.timestampMs, previousDigest: sha256(utf8.encode('forged')) })
        commits[mid] = forged
        return { ...honest, commits }
      }
    }, 'BrokenChainError')
    for (let i = 1; i <= tip; i++) assert.notEqual(hex((await cs.getCommitBytes(i))!), hex(forged!))
  })

  it('a gap in the commit sequence: BrokenChainError', async t => {
    await runCase(t, {
      fetchCommits: (_req, honest) => ({ ...honest, commits: [honest.commits[0], ...honest.commits.slice(2)] })
    }, 'BrokenChainError')
  })

  it('a response larger than the read limit: OversizedResponseError', async t => {
    // the client reads at most maxFetchResponseBytes + 64 KiB: 128 KiB here
    const { M, thrown } = await runCase(t, {
      fetchCommits: (_req, honest) => SyncCodecs.FetchCommitsResponse.encode({ ...honest, certifierBlocks: [...honest.certifierBlocks, new Uint8Array(200 * 1024)] })
    }, 'OversizedResponseError', { maxFetchResponseBytes: 64 * 1024 })
    assert.ok(M.counts.fetchCommits >= 1)
    assert.match(thrown[0].message, /over the size limit/, 'refused by the length-prefixed read (maxDataLength)')
  })

  it('a response within the read limit but over maxFetchResponseBytes: OversizedResponseError', async t => {
    const { thrown } = await runCase(t, {
      fetchCommits: (_req, honest) => ({ ...honest, certifierBlocks: [...honest.certifierBlocks, new Uint8Array(100 * 1024)] })
    }, 'OversizedResponseError', { maxFetchResponseBytes: 64 * 1024 })
    assert.match(thrown[0].message, /bytes of commits, the limit is 65536/, 'read, then refused by its size')
  })

  it('a malformed response (not a protobuf message): MalformedMessageError', async t => {
    await runCase(t, { fetchCommits: () => new Uint8Array(64).fill(0xff) }, 'MalformedMessageError')
  })

  it('a malformed block (not a SignedBlock): MalformedMessageError', async t => {
    await runCase(t, { fetchBlocks: (_req, honest) => ({ blocks: [new Uint8Array(40).fill(0xff), ...honest.blocks.slice(1)] }) }, 'MalformedMessageError')
  })

  it('a peer that never answers: PeerTimeoutError', async t => {
    const t0 = Date.now()
    const { thrown } = await runCase(t, { fetchCommits: () => HANG, fetchBlocks: () => HANG }, 'PeerTimeoutError', { timeoutMs: 1000 })
    assert.equal(thrown[0].name, 'PeerTimeoutError')
    assert.ok(Date.now() - t0 < 20_000)
  })

  it('a peer that refuses is retried after waitIntervalWhenNoPeerToSyncContentMs, not in a tight loop', async t => {
    const env = testEnv(t, 'soma-adv-')
    const cs = await env.store('client')
    const M = env.node(await maliciousPeer(hs, { fetchCommits: () => ({ commits: [], certifierBlocks: [], error: 'busy' }) }))
    const C = env.node(await syncNode(cs, { waitIntervalWhenNoPeerToSyncContentMs: 400 }))
    await C.dial(addr(M.node))
    await waitFor(() => M.counts.fetchCommits > 0, 5000, 'a first request')
    await sleep(1500)
    // one attempt, then one per 400 ms back-off: about 5 (a tight loop makes hundreds, and bans the
    // peer after 20 refusals at 5 points each)
    assert.ok(M.counts.fetchCommits <= 6, `${M.counts.fetchCommits} requests in 1.5 s`)
    assert.ok(loop(C).scores.penaltiesOf(M.node.peerId).every(p => p.error === 'PeerRequestFailedError'))
    assert.equal(loop(C).scores.isBanned(M.node.peerId), false, 'a refusal is not worth a ban')
    await C.dial(addr(H))
    await waitFor(() => cs.highestExecuted >= tip, 20_000, 'the client to complete from the honest peer')
    await assertHonest(cs)
  })

  it('a peer of another chain is dropped and never asked again', async t => {
    const env = testEnv(t, 'soma-adv-')
    const cs = await env.store('client')
    const M = env.node(await maliciousPeer(hs, { availability: (honest) => ({ ...honest, genesisDigest: sha256(utf8.encode('another chain')) }) }))
    const C = env.node(await syncNode(cs))
    await C.dial(addr(M.node))
    await waitFor(() => loop(C).heights.isWrongChain(M.node.peerId), 10_000, 'the peer to be found on another chain')
    assert.equal(loop(C).scores.penaltiesOf(M.node.peerId)[0].error, 'WrongChainError')
    assert.equal(loop(C).heights.get(M.node.peerId), undefined, 'not a sync peer')
    await waitFor(() => C.getConnections(M.node.peerId).length === 0, 5000, 'the client to disconnect it')
    await sleep(300)
    const asked = M.counts.availability
    // it connects again: the client does not ask it anything (availability is queried every 200 ms)
    await M.node.dial(addr(C))
    await sleep(1000)
    assert.equal(M.counts.availability, asked, 'not asked again')
    assert.equal(M.counts.fetchCommits + M.counts.fetchBlocks, 0, 'never asked for commits or blocks')
    assert.ok(loop(C).heights.isWrongChain(M.node.peerId))

    await C.dial(addr(H))
    await waitFor(() => cs.highestExecuted >= tip, 20_000, 'the client to complete from the honest peer')
    await assertHonest(cs)
  })

  it('a validly signed block carrying a transaction with a bad signature: InvalidTransactionError', async t => {
    // the first round's leader block is commit 1: the whole forged chain hangs on it
    const dir = mkdtempSync(path.join(tmpdir(), 'soma-adv-fork-'))
    const fork = await chainWithBadTransaction(path.join(dir, 'fork'), 12, 1, 1)
    t.after(async () => { await fork.store.close(); rmSync(dir, { recursive: true, force: true }) })
    assert.ok((await fork.store.getCommit(1))!.commit.blocks.some(r => hex(r.digest) === hex(fork.badRef.digest)), 'the bad block is in commit 1')
    const forkCommit1 = (await fork.store.getCommitBytes(1))!
    const { cs, M } = await runCase(t, { store: fork.store }, 'InvalidTransactionError')
    assert.ok(M.counts.fetchBlocks >= 1)
    assert.equal(await cs.getBlock(fork.badRef), undefined, 'the block with the bad transaction is not stored')
    assert.notEqual(hex((await cs.getCommitBytes(1))!), hex(forkCommit1))
  })

  it('a certifier block carrying a transaction with a bad signature: InvalidTransactionError', async t => {
    // the client asks 5 commits at a time: the blocks of round 6 certify commit 5 (the server sends
    // the lowest authors first, so author 0 is among them), and author 0's block of round 6 is in commit 7
    const dir = mkdtempSync(path.join(tmpdir(), 'soma-adv-fork-'))
    const fork = await chainWithBadTransaction(path.join(dir, 'fork'), 12, 6, 0)
    t.after(async () => { await fork.store.close(); rmSync(dir, { recursive: true, force: true }) })
    const certifiers = (await new FetchCommits({ logger: H.logger, registrar: undefined as any, connectionManager: undefined as any }, { store: fork.store }).serve({ start: 1, end: 5 })).certifierBlocks
    assert.ok(certifiers.some(b => hex(sha256(b)) === hex(fork.badRef.digest)), 'the bad block certifies commit 5')
    const { cs } = await runCase(t, { store: fork.store }, 'InvalidTransactionError', { commitSyncBatchSize: 5 })
    assert.equal(await cs.getBlock(fork.badRef), undefined, 'the block with the bad transaction is not stored')
  })
})
