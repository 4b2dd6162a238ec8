/**
 * Snapshot discovery (src/snapshot/discovery.ts) between real libp2p nodes on 127.0.0.1:
 * A serves snapshots up to commit 12 (epoch 2), B serves up to commit 10 (a copy of A's store taken
 * at commit 10), C has the genesis only and knows B alone (its one entrypoint). C finds the snapshots,
 * who serves them, and the DHT record of the latest; forged and foreign attestations are refused.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { cpSync } from 'node:fs'
import path from 'node:path'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { createNode, type SomaNode } from '../../src/node/node.ts'
import { createLibp2pNode, topicPrefix } from '../../src/node/libp2p.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { decodeAttestation, decodeManifest, encodeAttestation, encodeManifest } from '../../src/snapshot/manifest.ts'
import { attestManifest, devnetCommitteeKeys, manifestDigest } from '../../src/snapshot/attestation.ts'
import { SnapshotDiscovery, compareCandidates, manifestCid, snapshotDiscoveryService, snapshotRecordKey, snapshotTopic } from '../../src/snapshot/discovery.ts'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { SnapshotRecordChecker } from '../../src/snapshot/discovery/records.ts'
import type { SnapshotCandidateSource } from '../../src/snapshot/sync/candidates.ts'
import { InvalidSnapshotError } from '../../src/errors.ts'
import { toHex } from '../../src/crypto/hash.ts'
import { silentLogger } from '../../src/utils/logger.ts'
import { makeTmpDir, removeDir } from '../helpers/tmp.ts'
import { flipBit } from '../helpers/chain.ts'

const SEED = 'snapshot-discovery'
const genesis = createGenesis({ seed: SEED, validators: 4, accounts: 40, initialBalance: 1e9, embeddingDim: 4 })
const other = createGenesis({ seed: SEED + '-other', validators: 4, accounts: 40, initialBalance: 1e9, embeddingDim: 4 })
// epochs of 4 commits (0: 1–4, 1: 5–8, 2: 9–12), a snapshot every 2 commits and at every epoch end
const PRODUCER = { seed: SEED, epochLength: 4, txsPerBlock: 2, embeddingEvery: 2, roundIntervalMs: 0, snapshots: { every: 2, targetChunkBytes: 1024, keep: 10 } }

async function produce (dir: string, until: number): Promise<void> {
  const store = await ChainStore.open(path.join(dir, 'chain'), { genesis })
  try {
    const producer = new DevnetProducer(store, new CommitExecutor(store), PRODUCER)
    await producer.load()
    await producer.produceUntil(until)
  } finally {
    await store.close()
  }
}

function config (dataDir: string, entrypoints: string[] = []): SomaConfig {
  return { ...DEFAULTS, dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], entrypoints, statusPort: 0, logLevel: 'error' }
}

async function waitFor (what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

describe('snapshot discovery: three nodes, C knows only B', { timeout: 120_000 }, () => {
  const dirs: string[] = []
  const nodes: SomaNode[] = []
  const disc: Record<'a' | 'b' | 'c', SnapshotDiscovery> = {} as any
  let a: SomaNode, b: SomaNode, c: SomaNode
  const att: Record<number, Uint8Array> = {}

  before(async () => {
    const [dirA, dirB, dirC] = [makeTmpDir(), makeTmpDir(), makeTmpDir()]
    dirs.push(dirA, dirB, dirC)
    await produce(dirA, 10)
    cpSync(path.join(dirA, 'chain'), path.join(dirB, 'chain'), { recursive: true })
    await produce(dirA, 12)

    const make = async (dir: string, entrypoints: string[], serves: boolean, name: 'a' | 'b' | 'c'): Promise<SomaNode> => {
      const node = await createNode(config(dir, entrypoints), { genesis, logger: silentLogger(), statusServer: false, commitSync: false })
      nodes.push(node)
      disc[name] = new SnapshotDiscovery({
        libp2p: node.libp2p,
        store: node.store,
        snapshotStore: serves ? new SnapshotStore(node.store) : undefined,
        config: { announceIntervalMs: 500, queryTimeoutMs: 5000 },
        logger: silentLogger()
      })
      await node.use(disc[name])
      await node.start()
      return node
    }
    a = await make(dirA, [], true, 'a')
    const snaps = new SnapshotStore(a.store)
    assert.deepEqual(await snaps.list(), [2, 4, 6, 8, 10, 12])
    for (const commit of await snaps.list()) att[commit] = (await snaps.get(commit))!.attestationBytes
    b = await make(dirB, [a.multiaddrs()[0]], true, 'b')
    assert.equal(await new SnapshotStore(b.store).latest(), 10)
    await waitFor('B to connect to A', () => b.peerCount() > 0)
    c = await make(dirC, [b.multiaddrs()[0]], false, 'c')
    await waitFor('C to connect to B', () => c.peerCount() > 0)
    // A also serves the snapshot of commit 10 (B's latest)
    await disc.a.announce(att[10])
  })

  after(async () => {
    for (const n of nodes.reverse()) await n.stop()
    for (const d of dirs) removeDir(d)
  })

  test('names: topic under the chain prefix, record key, CID of the manifest digest', () => {
    assert.equal(snapshotTopic(genesis.chainId), topicPrefix(genesis.chainId) + 'snapshots/1')
    assert.equal(new TextDecoder().decode(snapshotRecordKey(genesis.chainId)), `/soma-snapshot/${toHex(genesis.chainId)}`)
    const m = decodeAttestation(att[12]).manifest
    const cid = manifestCid(m)
    assert.equal(cid.version, 1)
    assert.equal(cid.code, 0x55)
    assert.equal(cid.multihash.code, 0x12)
    assert.equal(toHex(cid.multihash.digest), toHex(manifestDigest(m)))
  })

  test('C, knowing only B, finds A\'s latest snapshot and the peers serving each snapshot', async () => {
    const aId = a.peerId.toString()
    const bId = b.peerId.toString()
    const peersOf = (cs: ReturnType<SnapshotDiscovery['candidates']>, commit: number): string[] =>
      (cs.find(x => x.commitIndex === commit)?.peers ?? []).map(p => p.toString()).sort()
    const found = await disc.c.waitForCandidates({
      timeoutMs: 60_000,
      intervalMs: 300,
      until: cs => peersOf(cs, 12).includes(aId) && peersOf(cs, 10).length === 2 && cs.some(x => x.latestRecord && x.commitIndex === 12)
    })
    assert.deepEqual(peersOf(found, 10), [aId, bId].sort())
    assert.deepEqual(peersOf(found, 12), [aId])
    // the same epoch (2): the snapshot served by two peers ranks before the newer one served by one
    assert.deepEqual(found.map(x => [x.commitIndex, x.epoch, x.peers.length]), [[10, 2, 2], [12, 2, 1]])
    const latest = found.find(x => x.latestRecord)!
    assert.equal(latest.commitIndex, 12, 'the DHT record names the newest snapshot')
    assert.equal(toHex(latest.attestationBytes), toHex(att[12]))
    // found through the DHT record, the provider records and gossip alike
    assert.deepEqual([...latest.sources].sort(), ['dht-record', 'gossip', 'providers'])
    // C has only the genesis committee: epoch 2 attestations cannot be checked yet
    assert.ok(found.every(x => !x.verified))
    assert.deepEqual(disc.c.candidates({ verifiedOnly: true }), [])
    assert.deepEqual(disc.c.candidates({ minPeers: 2 }).map(x => x.commitIndex), [10])
    // B has the committee of epoch 2: what it learned from A is verified
    await waitFor('B to hear of the snapshot of commit 12', () => disc.b.candidates().some(x => x.commitIndex === 12))
    const at12 = disc.b.candidates().find(x => x.commitIndex === 12)!
    assert.equal(at12.verified, true)
    assert.equal(at12.stake, (await b.store.getCommittee(2))!.totalStake)
    assert.deepEqual(at12.peers.map(p => p.toString()), [aId])
    // nobody lists itself
    assert.ok(!disc.a.candidates({ minPeers: 0 }).some(x => x.peers.some(p => p.equals(a.peerId))))
    assert.equal((disc.c.status().snapshotDiscovery as any).best.commit, 10)
    // as snapshot sync's candidate source
    const source = disc.c.candidateSource()
    const typed: SnapshotCandidateSource = source // what snapshotSyncServices({ candidates }) takes
    assert.equal(typed, source)
    const fromSource = await source({ signal: AbortSignal.timeout(10_000) })
    assert.deepEqual(fromSource.map(x => x.commitIndex), [10, 12])
  })

  test('the DHT validator refuses forged attestations (committee known) and other chains\' manifests', async () => {
    const key = snapshotRecordKey(genesis.chainId)
    // epoch 0: every node has its committee
    const forged = forgeSignature(att[4])
    await assert.rejects(disc.c.checker.validate(key, forged), (e: any) => e instanceof InvalidSnapshotError && /does not verify/.test(e.message))
    const foreign = foreignAttestation(att[4])
    await assert.rejects(disc.c.checker.validate(key, foreign), (e: any) => e instanceof InvalidSnapshotError && /is for chain/.test(e.message))
    await assert.rejects(disc.c.checker.validate(snapshotRecordKey(other.chainId), att[4]), /not this chain's/)
    await assert.rejects(disc.c.checker.validate(key, new Uint8Array([1, 2, 3])), InvalidSnapshotError)
    // epoch 2 is unknown to C: kept unverified; known to B: checked
    await disc.c.checker.validate(key, att[12])
    await assert.rejects(disc.b.checker.validate(key, forgeSignature(att[12])), /does not verify/)
    // A holds the snapshot of commit 12: an older record is refused as stale (as go's kad-dht does)
    await assert.rejects(disc.a.checker.validate(key, att[10]), /older than the snapshot of commit 12/)

    // over the network: peers that know the committee refuse to store the forged record
    const dht = c.libp2p.services.dht!
    const events: string[] = []
    for await (const e of dht.put(key, forged, { signal: AbortSignal.timeout(10_000) })) events.push(e.name === 'PEER_RESPONSE' ? `${e.name}:${String(e.messageType)}` : e.name)
    assert.ok(!events.includes('PEER_RESPONSE:PUT_VALUE'), events.join(','))
    assert.equal(events.filter(e => e === 'QUERY_ERROR').length, 2, events.join(','))
    const genuine: string[] = []
    for await (const e of dht.put(key, att[12], { signal: AbortSignal.timeout(10_000) })) if (e.name === 'PEER_RESPONSE') genuine.push(String(e.messageType))
    assert.equal(genuine.filter(t => t === 'PUT_VALUE').length, 2, genuine.join(','))
    // and gossip: C refuses forged/foreign announcements outright, keeps unverifiable ones
    assert.equal(await disc.c.consider(forged, { source: 'gossip', from: b.peerId }), 'reject')
    assert.equal(await disc.c.consider(foreign, { source: 'gossip', from: b.peerId }), 'reject')
    assert.equal(await disc.c.consider(att[12], { source: 'gossip', from: b.peerId }), 'accept')
    await assert.rejects(disc.a.announce(forged), InvalidSnapshotError)
  })

  test('a forged announcement on gossip is rejected by the first node that knows the committee', async () => {
    const fake = forgeManifest(att[4])
    const fakeDigest = toHex(manifestDigest(decodeAttestation(fake).manifest))
    const rejectedBefore = disc.b.stats.gossipRejected
    await a.libp2p.services.pubsub.publish(snapshotTopic(genesis.chainId), fake)
    await waitFor('B to reject the forged announcement', () => disc.b.stats.gossipRejected > rejectedBefore)
    // A's genuine announcements keep reaching C through B; the forged one never does
    const seen = disc.c.stats.gossipAccepted
    await waitFor('C to hear A again', () => disc.c.stats.gossipAccepted > seen + 1)
    assert.ok(!disc.c.candidates({ minPeers: 0 }).some(x => toHex(x.digest) === fakeDigest))
  })

  test('the selector prefers the highest commit index, then the most stake', async () => {
    const key = snapshotRecordKey(genesis.chainId)
    const checker = new SnapshotRecordChecker({ chainId: genesis.chainId, committee: async e => await a.store.getCommittee(e) })
    assert.equal(await checker.select(key, [att[10], att[12], att[8]]), 1)
    assert.equal(await checker.select(key, [att[12], att[10]]), 0)
    // the same manifest signed by 3 of 4 (still 2f+1) loses to all 4 signatures
    const three = dropSignature(att[12])
    await checker.validate(key, three)
    assert.equal(await checker.select(key, [three, att[12]]), 1)
    assert.equal(await checker.select(key, [att[12], three]), 0)
    // without committees (a fresh node): the number of signers decides
    const blind = new SnapshotRecordChecker({ chainId: genesis.chainId })
    assert.equal(await blind.select(key, [three, att[12]]), 1)
  })

  test('as a libp2p service (snapshotDiscoveryService): started after libp2p, finds the snapshots', async () => {
    const dir = makeTmpDir()
    dirs.push(dir)
    const store = await ChainStore.open(path.join(dir, 'chain'), { genesis })
    const node = await createLibp2pNode({
      config: config(dir, [b.multiaddrs()[0]]),
      chainId: genesis.chainId,
      privateKey: await generateKeyPair('Ed25519'),
      services: { snapshotDiscovery: snapshotDiscoveryService({ store, config: { announceIntervalMs: 0, queryTimeoutMs: 5000 } }) }
    })
    try {
      await node.start()
      const d = node.services.snapshotDiscovery as SnapshotDiscovery
      assert.equal(d.isStarted, true)
      assert.ok(node.services.pubsub.getTopics().includes(snapshotTopic(genesis.chainId)))
      await node.dial(b.libp2p.getMultiaddrs()[0])
      const found = await d.waitForCandidates({ timeoutMs: 30_000, intervalMs: 300, until: cs => cs.some(x => x.commitIndex === 12) })
      assert.ok(found.find(x => x.commitIndex === 12)!.peers.some(p => p.equals(a.peerId)))
    } finally {
      await node.stop()
      await store.close()
    }
    assert.equal((node.services.snapshotDiscovery as SnapshotDiscovery).isStarted, false)
  })

  test('once C learns the committees, its candidates are verified and forged ones dropped', async () => {
    const forged12 = forgeManifest(att[12])
    assert.equal(await disc.c.consider(forged12, { source: 'gossip', from: b.peerId }), 'accept')
    assert.equal(disc.c.candidates({ minPeers: 0 }).filter(x => !x.verified).length, 3)
    const batch = c.store.batch()
    for (const e of [1, 2]) batch.putCommittee((await a.store.getCommittee(e))!.committee)
    await batch.write()
    assert.equal(await disc.c.verifyCandidates(), 1)
    const cs = disc.c.candidates({ minPeers: 0 })
    assert.deepEqual(cs.map(x => [x.commitIndex, x.verified]).sort(), [[10, true], [12, true]])
  })

  test('candidates rank by epoch, then serving peers, then commit index', () => {
    const p = (n: number): any[] => Array.from({ length: n }, () => ({}))
    const cs = [
      { epoch: 1, commitIndex: 8, peers: p(5) },
      { epoch: 2, commitIndex: 12, peers: p(1) },
      { epoch: 2, commitIndex: 10, peers: p(3) },
      { epoch: 2, commitIndex: 11, peers: p(3) }
    ]
    assert.deepEqual(cs.sort(compareCandidates).map(x => x.commitIndex), [11, 10, 12, 8])
  })
})

/** The attestation with one bit of its first signature flipped. */
function forgeSignature (bytes: Uint8Array): Uint8Array {
  const a = decodeAttestation(bytes)
  a.signatures[0] = { ...a.signatures[0], signature: flipBit(a.signatures[0].signature, 5, 1) }
  return encodeAttestation(a)
}

/** Another manifest (a different state root) carrying the genuine signatures of the original. */
function forgeManifest (bytes: Uint8Array): Uint8Array {
  const a = decodeAttestation(bytes)
  const m = decodeManifest(a.manifest)
  return encodeAttestation({ manifest: encodeManifest({ ...m, stateRoot: flipBit(m.stateRoot, 0, 0) }), signatures: a.signatures })
}

/** The same manifest for the other chain, correctly signed by the other chain's devnet committee. */
function foreignAttestation (bytes: Uint8Array): Uint8Array {
  const m = decodeManifest(decodeAttestation(bytes).manifest)
  const committee = other.genesis.committee
  const keys = devnetCommitteeKeys(SEED + '-other', committee)!
  return encodeAttestation(attestManifest({ ...m, chainId: other.chainId }, committee, keys))
}

function dropSignature (bytes: Uint8Array): Uint8Array {
  const a = decodeAttestation(bytes)
  return encodeAttestation({ manifest: a.manifest, signatures: a.signatures.slice(1) })
}
