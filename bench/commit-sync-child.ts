/**
 * Child process of bench/commit-sync.ts. Modes:
 *   serve <storeDir>                       serve a chain (prints `LISTEN <multiaddr>`), until stdin closes
 *   sync <storeDir> <multiaddr> <target> <verifyWorkers>   sync to <target>, print one JSON line of figures
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
  await pool.close()
  await store.close()
  process.stdout.write(JSON.stringify(figures) + '\n')
  process.exit(0)
}
