/**
 * Archive sync benchmark (issue 14): a fresh store fast-syncs N commits from an archive served over
 * HTTP by another process (127.0.0.1), verifying every commit, block and transaction and executing
 * them, with the signature checks on a 2-worker pool. Reports commits/s and MiB/s of segments, as ratios
 * to a raw HTTP GET of the same bytes (same concurrency, nothing done with them) and of verified
 * transaction signatures per second to the one-core ed25519 verify rate measured in the same run
 * (before and after, their mean); and the same chain synced from a P2P peer by commit sync
 * (bench/commit-sync-child.ts, 2 workers) for comparison.
 *
 * Then, with both sources throttled to the same rate (the archive's HTTP host and a P2P peer serving
 * the chain, each a child process sharing one link of that many bytes/s among its responses): the
 * archive alone, the peer alone (commit sync) and the combined download from both, in commits/s, and the
 * combined rate as a ratio to the faster source alone (target: above 1).
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { createGenesis } from '../src/chain/genesis.ts'
import { ChainStore } from '../src/store/chain-store.ts'
import { CommitExecutor } from '../src/executor/commit-executor.ts'
import { DevnetProducer } from '../src/devnet/producer.ts'
import { VerifyPool } from '../src/crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../src/sync/block-verifier.ts'
import { TxVerifier } from '../src/sync/tx-verifier.ts'
import { ArchiveWriter } from '../src/archive/writer.ts'
import { ArchiveSync } from '../src/archive/reader.ts'
import { HttpArchiveSource } from '../src/archive/source.ts'
import { silentLogger } from '../src/utils/logger.ts'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { multiaddr } from '@multiformats/multiaddr'
import { somaNoise } from '../src/net/noise-crypto.ts'
import { fetchCommits } from '../src/sync/protocols/fetch-commits.ts'
import { fetchBlocks } from '../src/sync/protocols/fetch-blocks.ts'
import { DEFAULTS } from '../src/config.ts'
import type { GenesisBundle } from '../src/chain/genesis.ts'
import { NODE_FLAGS, withNodeEnv } from '../src/node/runtime.ts'
import { TempDirs, isMain, printFigures, log, type Figures, type BenchOptions, verifyRate } from './util.ts'

/** the throttled sources' rate, as a share of the slower source's unthrottled rate */
const THROTTLE_SHARE = 0.4

const here = path.dirname(fileURLToPath(import.meta.url))
const HTTP_CHILD = path.join(here, 'archive-sync-child.ts')
const P2P_CHILD = path.join(here, 'commit-sync-child.ts')

async function startChild (args: string[]): Promise<{ child: ReturnType<typeof spawn>, addr: string }> {
  const child = spawn(process.execPath, [...NODE_FLAGS, ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: withNodeEnv() })
  const rl = createInterface({ input: child.stdout! })
  const addr: string = await new Promise((resolve, reject) => {
    rl.on('line', (l) => { if (l.startsWith('LISTEN ')) resolve(l.slice(7)) })
    child.once('exit', (c) => { reject(new Error(`${args[0]} exited with ${c}`)) })
  })
  return { child, addr }
}

async function stopChild (c: { child: ReturnType<typeof spawn> }): Promise<void> {
  c.child.stdin!.end()
  await once(c.child, 'exit')
}

/** GETs every object with `concurrency` requests at once, discarding the bytes; returns bytes and ms. */
async function rawGet (url: string, names: string[], concurrency: number): Promise<{ bytes: number, ms: number }> {
  let next = 0
  let bytes = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < names.length) {
      const res = await fetch(`${url}/${names[next++]}`, { signal: AbortSignal.timeout(600_000) })
      for await (const c of res.body as any) bytes += (c as Uint8Array).byteLength
    }
  }))
  return { bytes, ms: performance.now() - t0 }
}

/** A fresh store fast-synced from `url` (and from the peer at `peerAddr` too: the combined download). */
async function archiveRun (dir: string, genesis: GenesisBundle, url: string, concurrency: number, peerAddr?: string): Promise<{ ms: number, commits: number, downloadedBytes: number, verified: number }> {
  const store = await ChainStore.open(path.join(dir, 'chain'), { genesis })
  const pool = new VerifyPool({ workers: 2 })
  const txVerifier = new TxVerifier(pool, store.chainId, genesis.genesis.embeddingDim)
  const maxBlocksPerFetch = DEFAULTS.maxBlocksPerFetch
  const node = peerAddr === undefined
    ? undefined
    : await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [somaNoise()], streamMuxers: [yamux()], services: { identify: identify(), fetchCommits: fetchCommits({}), fetchBlocks: fetchBlocks({ maxBlocksPerFetch }) } })
  try {
    if (node !== undefined) await node.dial(multiaddr(peerAddr!))
    const sync = new ArchiveSync({
      store,
      executor: new CommitExecutor(store),
      source: new HttpArchiveSource(url),
      blockVerifier: new SignedBlockVerifier(pool, store.chainId),
      txVerifier,
      cacheDir: path.join(dir, 'download'),
      log: silentLogger(),
      combined: node === undefined ? undefined : { peers: () => node.getPeers(), fetchCommits: (node.services as any).fetchCommits, fetchBlocks: (node.services as any).fetchBlocks, maxBlocksPerFetch }
    }, { concurrency })
    const t0 = performance.now()
    const r = await sync.run(AbortSignal.timeout(3_600_000))
    const ms = performance.now() - t0
    if (r.outcome !== 'synced') throw r.error ?? new Error('archive sync failed')
    return { ms, commits: r.highestSynced, downloadedBytes: sync.stats.downloadedBytes, verified: txVerifier.verified }
  } finally {
    await node?.stop()
    await pool.close()
    await store.close()
  }
}

/** Commit sync of `target` commits from the peer at `addr` (bench/commit-sync-child.ts, 2 workers). */
async function p2pRun (dir: string, addr: string, target: number, genesisPath: string): Promise<any> {
  const child = spawn(process.execPath, [...NODE_FLAGS, P2P_CHILD, 'sync', path.join(dir, 'chain'), addr, String(target), '2', genesisPath], { stdio: ['ignore', 'pipe', 'inherit'], env: withNodeEnv() })
  let out = ''
  child.stdout.on('data', (d) => { out += String(d) })
  const [code] = await once(child, 'exit')
  if (code !== 0) throw new Error(`p2p sync child exited with ${code}`)
  return JSON.parse(out.trim().split('\n').pop()!)
}

export async function run (opts: BenchOptions & { commits?: number } = {}): Promise<Figures> {
  const commits = opts.commits ?? (opts.quick === true ? 200 : 10_000)
  const concurrency = 4
  const tmp = new TempDirs()
  try {
    const seed = 'bench-archive-sync'
    const genesis = createGenesis({ seed, validators: 4, accounts: 1000, initialBalance: 1e12, embeddingDim: 16 })
    const serverDir = tmp.make('as-server')
    const genesisPath = path.join(serverDir, 'genesis.pb')
    writeFileSync(genesisPath, genesis.bytes)
    const archiveDir = path.join(serverDir, 'archive')
    log(`producing ${commits} commits and their archive...`)
    let archived: number
    let names: string[]
    {
      const store = await ChainStore.open(path.join(serverDir, 'chain'), { genesis })
      const producer = new DevnetProducer(store, new CommitExecutor(store), { seed, roundIntervalMs: 0, txsPerBlock: 10, embeddingEvery: 10, epochLength: opts.quick === true ? 100 : 500 })
      await producer.load()
      await producer.produceUntil(commits)
      const w = await new ArchiveWriter(store, archiveDir, { segmentCommits: 100 }).writeClosedEpochs()
      archived = w.highestCommit
      names = w.segments.map(s => s.name)
      await store.close()
    }
    const figures: Figures = {}
    const n = opts.quick === true ? 1000 : 10_000
    const before = verifyRate(n)
    // the archive over HTTP
    const http = await startChild([HTTP_CHILD, 'serve-http', archiveDir])
    try {
      const raw = await rawGet(http.addr, names, concurrency)
      figures['raw HTTP GET MiB/s'] = raw.bytes / 1024 / 1024 / (raw.ms / 1000)
      log(`archive fast sync of ${archived} commits over HTTP...`)
      const r = await archiveRun(tmp.make('as-client'), genesis, http.addr, concurrency)
      const sec = r.ms / 1000
      figures['archive: commits/s'] = r.commits / sec
      figures['archive: MiB/s of segments'] = r.downloadedBytes / 1024 / 1024 / sec
      figures['archive: ratio to raw HTTP GET'] = figures['archive: MiB/s of segments'] / figures['raw HTTP GET MiB/s']
      figures['archive: verified tx sig/s'] = r.verified / sec
    } finally {
      await stopChild(http)
    }
    // the same history from a P2P peer (commit sync); its child then measures the work alone on the
    // chain it synced (signature checks through the 2-worker pool, execution), as the commit-sync bench does
    let p2pFloors: any
    log(`commit sync of ${archived} commits from a P2P peer...`)
    const p2p = await startChild([P2P_CHILD, 'serve', path.join(serverDir, 'chain')])
    try {
      const r = await p2pRun(tmp.make('as-p2p'), p2p.addr, archived, genesisPath)
      figures['p2p: commits/s'] = r.commits / (r.ms / 1000)
      figures['p2p: MiB/s of blocks'] = r.bytes / 1024 / 1024 / (r.ms / 1000)
      figures['p2p: verified tx sig/s'] = r.verifiedTxSignatures / (r.ms / 1000)
      p2pFloors = r
    } finally {
      await stopChild(p2p)
    }
    // both sources throttled to the same rate: each alone, then together
    // each source throttled well below what verification allows (0.4 of the slower unthrottled rate
    // above), so that a source, not the signature checks, sets the pace of a download from either alone,
    // and both together may still be faster than either
    const rate = Math.max(64 * 1024, Math.round(THROTTLE_SHARE * Math.min(figures['archive: MiB/s of segments'], figures['p2p: MiB/s of blocks']) * 1024 * 1024))
    figures['throttled: each source, MiB/s'] = rate / 1024 / 1024
    log(`throttled to ${(rate / 1024 / 1024).toFixed(2)} MiB/s each: archive alone, peer alone, both...`)
    const slowHttp = await startChild([HTTP_CHILD, 'serve-http', archiveDir, String(rate)])
    const slowPeer = await startChild([HTTP_CHILD, 'serve-p2p', path.join(serverDir, 'chain'), String(rate)])
    try {
      const a = await archiveRun(tmp.make('as-thr-archive'), genesis, slowHttp.addr, concurrency)
      figures['throttled: archive alone, commits/s'] = a.commits / (a.ms / 1000)
      const p = await p2pRun(tmp.make('as-thr-p2p'), slowPeer.addr, archived, genesisPath)
      figures['throttled: peer alone (commit sync), commits/s'] = p.commits / (p.ms / 1000)
      const c = await archiveRun(tmp.make('as-thr-both'), genesis, slowHttp.addr, concurrency, slowPeer.addr)
      figures['throttled: combined, commits/s'] = c.commits / (c.ms / 1000)
      figures['throttled: combined ÷ faster alone'] = figures['throttled: combined, commits/s'] / Math.max(figures['throttled: archive alone, commits/s'], figures['throttled: peer alone (commit sync), commits/s'])
    } finally {
      await stopChild(slowHttp)
      await stopChild(slowPeer)
    }
    const after = verifyRate(n)
    const baseline = (before + after) / 2
    figures['ed25519 verify/s, one core (baseline)'] = baseline
    figures['archive: ratio verified tx/s to one core'] = figures['archive: verified tx sig/s'] / baseline
    figures['p2p: ratio verified tx/s to one core'] = figures['p2p: verified tx sig/s'] / baseline
    figures['archive ÷ p2p, commits/s'] = figures['archive: commits/s'] / figures['p2p: commits/s']
    // the commit-sync ceiling (bench/commit-sync.ts, 2-worker pool), from the same run: the signature
    // checks at the one-core cost and the execution's CPU, nothing else, every core busy
    const ex = p2pFloors?.executionAlone
    if (ex?.cpu !== undefined) {
      const perTx = p2pFloors.signatureChecks / p2pFloors.transactions / baseline + ex.cpu.total / ex.transactions
      const ceiling = availableParallelism() / perTx / baseline
      figures['ceiling: ratio with signature checks and execution alone (2 workers)'] = ceiling
      figures['archive: ratio verified tx/s to one core ÷ that ceiling'] = figures['archive: ratio verified tx/s to one core'] / ceiling
      figures['p2p: ratio verified tx/s to one core ÷ that ceiling'] = figures['p2p: ratio verified tx/s to one core'] / ceiling
    }
    return figures
  } finally {
    tmp.cleanup()
  }
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  printFigures('archive sync', await run({ quick }))
}
