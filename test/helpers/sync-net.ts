/** Test helpers: a devnet producer store and plain libp2p nodes running our commit-sync services. */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createGenesis, type GenesisBundle } from '../../src/chain/genesis.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { commitSyncServices, type CommitSyncServicesInit, type StateSync } from '../../src/sync/state-sync.ts'
import { VerifyPool } from '../../src/crypto/verify-pool.ts'

export const SEED = 'sync-test'

export function tmpDir (t: { after: (fn: () => void) => void }, prefix = 'soma-sync-'): string {
  const d = mkdtempSync(path.join(tmpdir(), prefix))
  t.after(() => { rmSync(d, { recursive: true, force: true }) })
  return d
}

export function testGenesis (): GenesisBundle {
  return createGenesis({ seed: SEED, validators: 4, accounts: 50, initialBalance: 1e9, embeddingDim: 8 })
}

export async function producerStore (dir: string, commits: number, opts: { epochLength?: number, txsPerBlock?: number, genesis?: GenesisBundle } = {}): Promise<{ store: ChainStore, producer: DevnetProducer, executor: CommitExecutor }> {
  const store = await ChainStore.open(path.join(dir, 'producer'), { genesis: opts.genesis ?? testGenesis() })
  const executor = new CommitExecutor(store)
  const producer = new DevnetProducer(store, executor, { seed: SEED, epochLength: opts.epochLength ?? 10, txsPerBlock: opts.txsPerBlock ?? 5, roundIntervalMs: 0 })
  await producer.load()
  await producer.produceUntil(commits)
  return { store, producer, executor }
}

/**
 * A producer's chain of `commits` commits in the test's temp dir (its store closed at the end), served by
 * a node that does not sync itself (`serve`: more of its settings).
 */
export async function servedChain (env: TestEnv, commits: number, opts: { epochLength?: number, txsPerBlock?: number, serve?: Partial<CommitSyncServicesInit> } = {}): Promise<{ ps: ChainStore, producer: DevnetProducer, tip: number, P: SyncNode }> {
  const { store: ps, producer } = await producerStore(env.dir, commits, opts)
  env.track(ps)
  const P = env.node(await syncNode(ps, { sync: false, ...opts.serve }))
  return { ps, producer, tip: ps.highestSynced, P }
}

export type SyncNode = Libp2p<{ identify: any, stateSync: StateSync } & Record<string, any>>

/** Commit-sync settings that keep tests fast (short ticks, waits and timeouts). */
export const FAST_COMMIT_SYNC = { tickIntervalMs: 20, peerHeightQueryIntervalMs: 200, blockFetchStaggerMs: 5, waitIntervalWhenNoPeerToSyncContentMs: 100, timeoutMs: 5000 } as const

/** A plain createLibp2p node on 127.0.0.1 with its own transports, identify, plus `services`. */
export async function plainNode (services: Record<string, (components: any) => unknown>): Promise<Libp2p<any>> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ...services }
  })
}

/** A plain createLibp2p node with its own transports plus our services. */
export async function syncNode (store: ChainStore, opts: Partial<CommitSyncServicesInit> = {}, executor = new CommitExecutor(store)): Promise<SyncNode> {
  const node = await plainNode(commitSyncServices({ store, executor, verifyPool: opts.verifyPool ?? new VerifyPool({ workers: 0 }), ...FAST_COMMIT_SYNC, ...opts }))
  return node as any
}

export async function waitFor (cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now()
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

/**
 * A test's resources: a temp dir, and the nodes and stores it opens. At the end of the test the nodes
 * are stopped, then the stores closed, then the dir removed (in that order).
 */
export interface TestEnv {
  dir: string
  /** registers a node to stop at the end; returns it */
  node: <N extends { stop: () => void | Promise<void> }>(n: N) => N
  /** opens (creating from the test genesis if needed) a store under the temp dir, closed at the end */
  store: (name: string, genesis?: GenesisBundle) => Promise<ChainStore>
  /** registers an already open store to close at the end; returns it */
  track: (s: ChainStore) => ChainStore
}

export function testEnv (t: { after: (fn: () => void | Promise<void>) => void }, prefix = 'soma-sync-'): TestEnv {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  const nodes: Array<{ stop: () => void | Promise<void> }> = []
  const stores: ChainStore[] = []
  t.after(async () => {
    await Promise.allSettled(nodes.map(async n => { await n.stop() }))
    for (const s of stores) await s.close().catch(() => {})
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
  })
  return {
    dir,
    node: (n) => { nodes.push(n); return n },
    store: async (name, genesis) => {
      const s = await ChainStore.open(path.join(dir, name), { genesis: genesis ?? testGenesis() })
      stores.push(s)
      return s
    },
    track: (s) => { stores.push(s); return s }
  }
}
