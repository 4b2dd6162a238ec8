/**
 * `soma-sync devnet`: a SomaNode that produces its own chain with the DevnetProducer.
 *
 * A fresh data dir gets a genesis from the devnet options (seed, validators, accounts, balance,
 * embedding dimension); a data dir that already holds a devnet store is resumed with the genesis in
 * it (its seed must match `devnetSeed`). `<dataDir>/genesis.pb` is (re)written either way, for full
 * nodes to start from (`soma-sync start --genesis-file <dataDir>/genesis.pb`).
 */
import { existsSync } from 'node:fs'
import path from 'node:path'
import { DEFAULTS, type SomaConfig } from '../config.ts'
import { createGenesis } from '../chain/genesis.ts'
import { ConfigError } from '../errors.ts'
import { short, toHex } from '../crypto/hash.ts'
import type { PushCommit } from '../sync/protocols/push-commit.ts'
import { randomSubset } from '../sync/peer-heights.ts'
import { scheduledSnapshotOptions } from '../snapshot/snapshotter.ts'
import { createNode, type CreateNodeOptions, type SomaNode } from '../node/node.ts'
import { writeGenesisFile } from '../node/genesis-file.ts'
import { createLogger, type Logger } from '../utils/logger.ts'
import { DevnetProducer } from './producer.ts'

export interface DevnetOptions extends Pick<CreateNodeOptions, 'services' | 'components' | 'statusServer'> {
  /** @default a logger named 'devnet' at config.logLevel */
  logger?: Logger
  /** minimum time between progress lines. @default 1000 */
  progressIntervalMs?: number
}

export interface DevnetHandle {
  node: SomaNode
  producer: DevnetProducer
  /** `<dataDir>/genesis.pb` */
  genesisFile: string
  /** resolves when `maxCommits` is reached (never if it is 0), rejects if production fails */
  done: Promise<void>
  /** stops the producer, then the node. Idempotent. */
  stop: () => Promise<void>
}

/**
 * The address the devnet's join command prints: an announced address when --announce is set (libp2p
 * then advertises only those), else the first non-loopback address (a peer in another container or host
 * can reach it), else a loopback one with a note to pass --announce.
 */
export function joinAddress (addrs: readonly string[], announced: boolean): { address: string, note?: string } {
  if (addrs.length === 0) return { address: '<address>', note: 'the devnet listens on no address: check --listen' }
  if (announced) return { address: addrs[0] }
  const loopback = (a: string): boolean => /^\/ip4\/127\.|^\/ip6\/::1\/|^\/dns4?\/localhost\//.test(a)
  const reachable = addrs.find(a => !loopback(a))
  if (reachable !== undefined) return { address: reachable }
  return { address: addrs[0], note: 'the join address is a loopback address, reachable from this host only: peers in other containers or hosts need --listen /ip4/0.0.0.0/tcp/<port> and --announce /ip4/<reachable ip>/tcp/<port>' }
}

/** Creates (or resumes) the devnet chain in `config.dataDir`, starts its node and producer. */
export async function startDevnet (config: SomaConfig, opts: DevnetOptions = {}): Promise<DevnetHandle> {
  const log = opts.logger ?? createLogger('devnet', { level: config.logLevel })
  const resume = existsSync(path.join(config.dataDir, 'chain', 'CURRENT'))
  // a devnet's genesis is its own: never a --genesis-file, and an existing store's genesis wins
  const nodeConfig: SomaConfig = { ...config, genesisFile: '' }
  const genesis = resume
    ? undefined
    : createGenesis({ seed: config.devnetSeed, validators: config.validators, accounts: config.accounts, initialBalance: config.initialBalance, embeddingDim: config.embeddingDim })
  const node = await createNode(nodeConfig, {
    genesis,
    services: opts.services,
    components: opts.components,
    statusServer: opts.statusServer,
    logger: log.child('node'),
    phase: 'producing',
    commitSync: 'serve'
  })
  let producer: DevnetProducer
  let genesisFile: string
  try {
    const g = node.genesis.genesis
    if (resume) {
      log.info('resuming the devnet chain in %s at commit %d (%d validators, %d accounts from its genesis)', config.dataDir, node.store.highestSynced, g.committee.authorities.length, g.accounts.length)
      if (g.committee.authorities.length !== config.validators || g.accounts.length !== config.accounts || g.embeddingDim !== config.embeddingDim) {
        log.warn('--validators/--accounts/--embedding-dim differ from the existing genesis, which is kept; use a new --data-dir for a new chain')
      }
    }
    genesisFile = writeGenesisFile(config.dataDir, node.genesis)
    producer = new DevnetProducer(node.store, node.executor, {
      seed: config.devnetSeed,
      roundIntervalMs: config.roundIntervalMs,
      txsPerBlock: config.txsPerBlock,
      embeddingEvery: config.embeddingEvery,
      epochLength: config.epochLength,
      maxCommits: config.maxCommits,
      // attested snapshots at every epoch end (and every --snapshot-every commits), for snapshot sync
      snapshots: scheduledSnapshotOptions(config)
    })
    try {
      await producer.load()
    } catch (err: any) {
      if (!/seed/.test(String(err.message))) throw err
      throw new ConfigError(`devnet seed ${JSON.stringify(config.devnetSeed)} does not match the chain in ${config.dataDir}: ${err.message}`)
    }
    await node.start()
  } catch (err) {
    await node.stop()
    throw err
  }
  log.info('devnet chain %s: %d validators, %d accounts, genesis file %s', toHex(node.chainId), node.genesis.genesis.committee.authorities.length, node.genesis.genesis.accounts.length, genesisFile)
  const join = joinAddress(node.multiaddrs(), config.announce.length > 0)
  log.info('full nodes join with: soma-sync start --genesis-file %s --entrypoints %s', genesisFile, join.address)
  if (join.note !== undefined) log.info('%s', join.note)

  const every = opts.progressIntervalMs ?? 1000
  let lastLog = 0
  let txsSinceLog = 0
  let commitsSinceLog = 0
  const progress = (index: number, epoch: number, root: Uint8Array, force: boolean): void => {
    const now = Date.now()
    if (!force && now - lastLog < every) return
    lastLog = now
    log.info('commit %d, epoch %d, %d txs in %d commits, state root %s, %d peers', index, epoch, txsSinceLog, commitsSinceLog, short(root), node.peerCount())
    txsSinceLog = 0
    commitsSinceLog = 0
  }
  let last: { index: number, epoch: number, root: Uint8Array } | undefined
  producer.on('certified', (_c, r) => {
    txsSinceLog += r.executed
    commitsSinceLog++
    last = { index: r.index, epoch: r.nextEpoch ?? r.epoch, root: r.stateRoot }
    progress(r.index, last.epoch, r.stateRoot, false)
  })
  producer.on('epoch', e => { log.info('epoch %d begins', e) })
  producer.on('snapshot', s => { log.info('snapshot at commit %d (%s): %d chunks, %d new, attested', s.manifest.commitIndex, s.stats.mode, s.manifest.chunkCount, s.stats.chunksAdded) })
  // notification (seed 000): tell connected peers of new commits with PushCommit, at most every 500 ms,
  // at most pushFanout of them (a random choice each time, as full nodes do: PeerHeights.pushTargets)
  let lastPush = 0
  producer.on('certified', () => {
    const now = Date.now()
    if (now - lastPush < 500) return
    lastPush = now
    const push = (node.libp2p.services as any).pushCommit as PushCommit | undefined
    if (push === undefined) return
    const info = { highestSynced: node.store.highestSynced, lowestAvailable: node.store.lowestAvailable, genesisDigest: node.chainId }
    for (const peer of randomSubset(node.libp2p.getPeers(), config.pushFanout ?? DEFAULTS.pushFanout)) {
      void push.push(peer, info, { signal: AbortSignal.timeout(5000) }).catch(() => {})
    }
  })
  const finished = { value: false }
  const done = new Promise<void>((resolve, reject) => {
    producer.once('done', () => {
      finished.value = true
      if (last !== undefined && commitsSinceLog > 0) progress(last.index, last.epoch, last.root, true)
      log.info('reached --max-commits %d', config.maxCommits)
      node.phase = 'done'
      resolve()
    })
    producer.once('error', err => {
      finished.value = true
      log.error('production failed: %s', err.message)
      node.phase = 'error'
      reject(err)
    })
  })
  done.catch(() => {}) // callers that never await `done` still see the error logged
  producer.start()

  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      await producer.stop()
      await node.stop()
    })()
    await stopping
  }
  return { node, producer, genesisFile, done, stop }
}
