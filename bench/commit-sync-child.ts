/**
 * Child process of bench/commit-sync.ts. Modes:
 *   serve <storeDir>                       serve a chain (prints `LISTEN <multiaddr>`), until stdin closes
 *   sync <storeDir> <multiaddr> <target> <verifyWorkers>   sync to <target>, print one JSON line of figures
 *                                          (the re-execution below uses a fresh store in <storeDir>-reexec)
 *
 * After the sync, with its network stopped, the sync child also measures two parts of the sync's work
 * alone on the chain it synced (`floors` below): the signature checks, and the execution. What any
 * sync of this chain must do at least bounds the ratios it can reach on this machine.
 */
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { somaNoise } from '../src/net/noise-crypto.ts'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { multiaddr } from '@multiformats/multiaddr'
import { ChainStore } from '../src/store/chain-store.ts'
import { CommitExecutor } from '../src/executor/commit-executor.ts'
import { commitSyncServices } from '../src/sync/state-sync.ts'
import { VerifyPool } from '../src/crypto/verify-pool.ts'
import { decodeGenesis } from '../src/chain/genesis.ts'
import { readFileSync } from 'node:fs'
import { PerformanceObserver, constants as perf } from 'node:perf_hooks'
import { threadCpu, cpuDelta } from './util.ts'
import { parseBlock } from '../src/chain/block.ts'
import { parseTransaction, txSignatureCheck } from '../src/chain/transaction.ts'
import type { CommittedSubDag } from '../src/chain/subdag.ts'
import type { SignatureCheck } from '../src/crypto/verify-pool.ts'
import type { GenesisBundle } from '../src/chain/genesis.ts'
import { DEFAULTS } from '../src/config.ts'
import { bytesEqual, toHex } from '../src/crypto/hash.ts'

const [mode, storeDir, ...rest] = process.argv.slice(2)

async function node (store: ChainStore, executor: CommitExecutor, sync: boolean, pool?: VerifyPool) {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [somaNoise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ...commitSyncServices({ store, executor, sync, verifyPool: pool, tickIntervalMs: 10, blockFetchStaggerMs: 0, peerHeightQueryIntervalMs: 500, inboundRequestsPerSecond: 100000 }) }
  })
}

if (mode === 'serve') {
  const store = await ChainStore.open(storeDir)
  const n = await node(store, new CommitExecutor(store), false)
  process.stdout.write(`LISTEN ${n.getMultiaddrs()[0].toString()}\n`)
  process.stdin.resume()
  process.stdin.on('end', () => { void (async () => { await n.stop(); await store.close(); process.exit(0) })() })
} else if (mode === 'sync') {
  const [addr, targetStr, workersStr, genesisPath] = rest
  const target = Number(targetStr)
  const genesis = decodeGenesis(readFileSync(genesisPath))
  const store = await ChainStore.open(storeDir, { genesis })
  const executor = new CommitExecutor(store)
  const pool = new VerifyPool({ workers: Number(workersStr) })
  let peakRss = 0
  const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage.rss()) }, 50)
  const n = await node(store, executor, true, pool)
  // the main thread's GC pauses during the sync: minor (scavenges) and the rest (mark-compact, its
  // incremental steps, weak callbacks)
  const gc = { minor: 0, minorMs: 0, major: 0, majorMs: 0 }
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } }).detail?.kind
      if (kind === perf.NODE_PERFORMANCE_GC_MINOR) { gc.minor++; gc.minorMs += e.duration } else { gc.major++; gc.majorMs += e.duration }
    }
  })
  gcObserver.observe({ entryTypes: ['gc'] })
  const cpu0 = threadCpu()
  const t0 = performance.now()
  await n.dial(multiaddr(addr))
  while (store.highestExecuted < target) await new Promise(resolve => setTimeout(resolve, 20))
  const ms = performance.now() - t0
  const cpu1 = threadCpu()
  gcObserver.disconnect()
  const loop = (n.services as any).stateSync.eventLoop
  const figures = {
    ms,
    commits: target,
    blocks: loop.downloader.stats.blocks,
    bytes: loop.downloader.stats.bytes,
    transactions: executor.stats.transactions,
    executionBatches: executor.stats.batches,
    verifiedTxSignatures: loop.deps.txVerifier.verified,
    signatureChecks: pool.checks,
    gc,
    cpu: cpu0 !== undefined && cpu1 !== undefined ? cpuDelta(cpu0, cpu1) : undefined,
    peakRssMiB: Math.max(peakRss, process.memoryUsage.rss()) / 1024 / 1024
  }
  clearInterval(sampler)
  await n.stop()
  const alone = await floors(store, genesis, `${storeDir}-reexec`, pool, target)
  await pool.close()
  await store.close()
  process.stdout.write(JSON.stringify({ ...figures, ...alone }) + '\n')
  process.exit(0)
}

/**
 * Two parts of the sync's work, each measured alone on the synced chain (nothing else running in this
 * process; the serving process idle):
 * - `checks`: the chain's first 20,000 transaction signature checks through the sync's own VerifyPool
 *   (the main thread for 0 workers), in batches of 1,000: verification alone, at the rate the sync's pool
 *   reaches on this machine at the time.
 * - `execution`: the CommitExecutor re-executing every synced commit on a fresh store with the same
 *   genesis, in batches as sync's executor takes them (`executionBatchCommits`, cut after end-of-epoch
 *   commits): transaction decoding, execution, state root, effects, LevelDB writes. It must end at the
 *   synced store's state root. The blocks' bytes are read beforehand and each batch's blocks parsed
 *   right before it (holding the whole parsed chain would inflate the GC work); the parsing is timed
 *   and left out of the execution's CPU.
 */
async function floors (store: ChainStore, genesis: GenesisBundle, dir: string, pool: VerifyPool, target: number): Promise<{
  executionAlone: { ms: number, transactions: number, cpu?: ReturnType<typeof cpuDelta> }
  checksAlone: { ms: number, checks: number }
}> {
  const commits: Array<{ commit: NonNullable<Awaited<ReturnType<ChainStore['getCommit']>>>, raw: Uint8Array[] }> = []
  for (let i = 1; i <= target; i++) {
    const commit = await store.getCommit(i)
    if (commit === undefined) throw new Error(`synced store has no commit ${i}`)
    const raw = await store.getBlocks(commit.commit.blocks)
    commits.push({ commit, raw: raw.map((b, j) => { if (b === undefined) throw new Error(`synced store has no block ${j} of commit ${i}`); return b }) })
  }
  const expected = await store.getStateRoot(target)
  if (expected === undefined) throw new Error(`synced store has no state root for commit ${target}`)
  const subdag = (c: typeof commits[number]): CommittedSubDag => ({ commit: c.commit, blocks: c.raw.map(b => parseBlock(b, store.chainId)) })

  const checks: SignatureCheck[] = []
  for (const c of commits) {
    for (const b of subdag(c).blocks) {
      for (const tx of b.block.transactions) {
        const check = txSignatureCheck(parseTransaction(tx, store.chainId, genesis.genesis.embeddingDim))
        if (check !== null && checks.length < 20_000) checks.push(check)
      }
    }
    if (checks.length >= 20_000) break
  }
  await pool.firstInvalid(checks.slice(0, 2_000)) // warm-up: key caches, JIT
  const c0 = performance.now()
  for (let i = 0; i < checks.length; i += 1_000) {
    if (await pool.firstInvalid(checks.slice(i, i + 1_000)) >= 0) throw new Error('a synced transaction signature failed to verify')
  }
  const checksAlone = { ms: performance.now() - c0, checks: checks.length }
  checks.length = 0

  const fresh = await ChainStore.open(dir, { genesis })
  try {
    const ex = new CommitExecutor(fresh)
    let root: Uint8Array | undefined
    let parseMs = 0
    const cpu0 = threadCpu()
    const t0 = performance.now()
    let batch: Array<typeof commits[number]> = []
    for (const c of commits) {
      batch.push(c)
      if (batch.length >= DEFAULTS.executionBatchCommits || c.commit.commit.endOfEpoch != null || c === commits[commits.length - 1]) {
        const p0 = performance.now()
        const subdags = batch.map(subdag)
        parseMs += performance.now() - p0
        const rs = await ex.executeBatch(subdags)
        root = rs[rs.length - 1].stateRoot
        batch = []
      }
    }
    const ms = performance.now() - t0 - parseMs
    const cpu1 = threadCpu()
    if (root === undefined || !bytesEqual(root, expected)) throw new Error(`re-execution ended at state root ${root === undefined ? 'none' : toHex(root)}, the synced store has ${toHex(expected)}`)
    let cpu: ReturnType<typeof cpuDelta> | undefined
    if (cpu0 !== undefined && cpu1 !== undefined) {
      // the block parsing ran on the main thread, synchronously: its wall time is main-thread CPU
      cpu = cpuDelta(cpu0, cpu1)
      cpu.main -= parseMs / 1000
      cpu.total -= parseMs / 1000
    }
    return { executionAlone: { ms, transactions: ex.stats.transactions, cpu }, checksAlone }
  } finally {
    await fresh.close()
  }
}
