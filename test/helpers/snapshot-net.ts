/**
 * Test helpers of snapshot sync: a devnet producer store that takes attested snapshots with small
 * chunks (many of them), and plain createLibp2p nodes running commit sync's and snapshot sync's
 * services (a node that syncs a snapshot holds its commit sync until the snapshot is loaded).
 */
import path from 'node:path'
import { createGenesis, type GenesisBundle } from '../../src/chain/genesis.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { VerifyPool } from '../../src/crypto/verify-pool.ts'
import { commitSyncServices, type CommitSyncServicesInit } from '../../src/sync/state-sync.ts'
import { snapshotSyncServices, type SnapshotSyncServicesInit, type SnapshotSyncService } from '../../src/snapshot/sync/service.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import type { SnapshotChunksService } from '../../src/snapshot/protocols/snapshot-chunks.ts'
import { plainNode, FAST_COMMIT_SYNC, type SyncNode, type TestEnv } from './sync-net.ts'
import { pbStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import type { Codec } from '../../src/chain/proto.ts'

export const SNAP_SEED = 'snapshot-sync-test'
/** small chunks: a few thousand accounts make hundreds of chunks */
export const TARGET_CHUNK_BYTES = 512

export function snapshotGenesis (accounts = 4000): GenesisBundle {
  return createGenesis({ seed: SNAP_SEED, validators: 4, accounts, initialBalance: 1e9, embeddingDim: 8 })
}

export interface SnapshotProducer {
  store: ChainStore
  producer: DevnetProducer
  executor: CommitExecutor
  snapshots: SnapshotStore
}

/**
 * A producer store whose devnet producer snapshots (attested by the whole committee) at every epoch end;
 * produced up to `commits`.
 */
export async function snapshotProducer (dir: string, commits: number, opts: { genesis?: GenesisBundle, epochLength?: number, txsPerBlock?: number, activeAccounts?: number, embeddingEvery?: number, keep?: number } = {}): Promise<SnapshotProducer> {
  const store = await ChainStore.open(path.join(dir, 'producer'), { genesis: opts.genesis ?? snapshotGenesis() })
  const executor = new CommitExecutor(store)
  const producer = new DevnetProducer(store, executor, {
    seed: SNAP_SEED,
    epochLength: opts.epochLength ?? 10,
    txsPerBlock: opts.txsPerBlock ?? 8,
    embeddingEvery: opts.embeddingEvery ?? 4,
    activeAccounts: opts.activeAccounts ?? 300,
    roundIntervalMs: 0,
    snapshots: { targetChunkBytes: TARGET_CHUNK_BYTES, keep: opts.keep ?? 3 }
  })
  await producer.load()
  await producer.produceUntil(commits)
  return { store, producer, executor, snapshots: new SnapshotStore(store) }
}

export type SnapNode = SyncNode & { services: { snapshotSync: SnapshotSyncService, snapshotChunks: SnapshotChunksService } }

export interface SnapNodeOptions {
  /** run snapshot sync (commit sync waits for it) */
  snapshot?: boolean
  /** commit sync: false serves only */
  commitSync?: boolean
  commit?: Partial<CommitSyncServicesInit>
  snap?: Partial<SnapshotSyncServicesInit>
}

/** A plain createLibp2p node with commit sync's and snapshot sync's services. */
export async function snapNode (store: ChainStore, opts: SnapNodeOptions = {}, executor = new CommitExecutor(store)): Promise<SnapNode> {
  const snapshot = opts.snapshot === true
  const node = await plainNode({
    ...commitSyncServices({
      store,
      executor,
      sync: opts.commitSync ?? true,
      startPaused: snapshot,
      verifyPool: new VerifyPool({ workers: 0 }),
      ...FAST_COMMIT_SYNC,
      ...opts.commit
    }),
    ...snapshotSyncServices({
      store,
      sync: snapshot,
      findTimeoutMs: 0,
      probeIntervalMs: 200,
      peerWaitMs: 500,
      timeoutMs: 5000,
      stallTimeoutMs: 15_000,
      ...opts.snap
    })
  })
  return node as any
}

// ---------------------------------------------------------------------------------------------------
// misbehaving servers

const RAW = { encode: (b: Uint8Array): Uint8Array => b }

/**
 * Replaces a node's handler of `protocol` (an honest service registered it) with `answer`: it reads each
 * request, computes the answer (typically the honest service's `serve` output, corrupted) and writes it.
 * `delayMs` slows every answer down. Returns the number of requests seen so far (a getter).
 */
export async function replaceHandler<Req, Res> (node: { handle: Libp2pLike['handle'], unhandle: Libp2pLike['unhandle'] }, protocol: string, codecs: { req: Codec<Req>, res: Codec<Res> }, answer: (req: Req) => Promise<Res | Uint8Array>, opts: { delayMs?: number } = {}): Promise<{ readonly requests: number }> {
  const counter = { requests: 0 }
  await node.unhandle(protocol)
  await node.handle(protocol, async (stream: Stream) => {
    try {
      const pb = pbStream(stream, { maxDataLength: 1024 * 1024 })
      // one request per stream (RPCs), or many in order (chunk sessions): answer until the client closes
      while (true) {
        let req: Req
        try {
          req = await pb.read(codecs.req)
        } catch (err: any) {
          if (err?.name === 'UnexpectedEOFError' || stream.readStatus !== 'readable') break
          throw err
        }
        counter.requests++
        if (opts.delayMs !== undefined) await new Promise(resolve => setTimeout(resolve, opts.delayMs))
        const a = await answer(req)
        await pb.write(a instanceof Uint8Array ? a : codecs.res.encode(a), RAW)
      }
      await stream.close()
    } catch (err: any) {
      stream.abort(err)
    }
  }, { maxInboundStreams: 256 })
  return counter
}

interface Libp2pLike {
  handle: (protocol: string, handler: (stream: Stream) => void | Promise<void>, opts?: { maxInboundStreams?: number }) => Promise<void>
  unhandle: (protocol: string) => Promise<void>
}

/** The producer's chain up to `tip` with its latest snapshot (`total` chunks), served by a node that serves snapshots only. */
export async function servedSnapshot (env: TestEnv, tip: number): Promise<{ g: GenesisBundle, P: SnapshotProducer, S: number, total: number, server: SnapNode }> {
  const g = snapshotGenesis()
  const P = await snapshotProducer(env.dir, tip, { genesis: g })
  env.track(P.store)
  const S = (await P.snapshots.latest())!
  const total = (await P.snapshots.get(S))!.manifest.chunkCount
  const server = env.node(await snapNode(P.store, { commitSync: false }))
  return { g, P, S, total, server }
}
