/**
 * Snapshot sync benchmark (issue "Snapshot sync"): a ≥ 1 GB attested snapshot is synced between two
 * processes over libp2p on 127.0.0.1, and compared with what the same processes reach on raw libp2p
 * streams, and with Helia's bitswap moving the same number of bytes.
 *
 * Targets: snapshot sync MiB/s end to end into LevelDB ≥ 0.7 × the raw libp2p stream throughput
 * between the same processes, measured in the same run (measured on this machine kind: 207–274 MiB/s);
 * faster than Helia 7 + bitswap (measured here: ~95 MiB/s); peak RSS of the syncing process ≤ 300 MB
 * and flat in the snapshot's size.
 *
 * 1. Setup (this process, not timed): a devnet store with 25 real commits (epoch 0), then state written
 *    straight into its account and embedding buckets (FULL: 200,000 accounts and 256,000 embeddings of
 *    dimension 1024, ~1.03 GiB of chunks), its state root computed over the buckets, and `buildSnapshot`
 *    of commit 20 (default chunking: 1 MiB target chunks) attested by the genesis committee's devnet
 *    keys. Commit 20 is certified in the store, so the syncing node can anchor the snapshot there.
 * 2. Two child processes (bench/snapshot-sync-child.ts), each a Soma libp2p node (createLibp2pNode:
 *    tcp + noise + yamux, identify, ping, kad-dht, gossipsub), started as the node runs
 *    (src/node/runtime.ts: NODE_FLAGS and NODE_ENV). The server serves the raw bench protocol and the
 *    snapshot sync protocols (`snapshotSyncServices`, serve only) from that store. The client
 *    - first, a node with a fresh LevelDB store and the sync services (`commitSyncServices` held with
 *      startPaused, `snapshotSyncServices` with sync on) dials the server and syncs the snapshot it
 *      offers, timed from the node's creation to the sync's end (manifest, attestation, filter, listing
 *      and chunks verified, final checksum, state loaded and checked against the state root, snapshot
 *      anchored at its certified commit): `snapshotSync.MiBPerSec` (snapshot bytes ÷ time),
 *      `snapshotSync.peakRssMiB` (sampled every 50 ms). First, so that the peak RSS is the sync's own:
 *      a process keeps the heap pages and malloc arenas a 1 GiB download grew;
 *    - then, in the same process towards the same server, a second node downloads 1 GiB over 1 stream,
 *      then over 4 parallel streams, with 64 KiB writes (best of 2): `raw.1stream.MiBPerSec`,
 *      `raw.4streams.MiBPerSec` — the baseline. `snapshotSync/raw` = the sync's MiB/s ÷ the better of
 *      the two raw figures.
 * 3. Helia: more processes, Helia 7 composed with createHeliaLight + withLibp2pLight + withBitswap
 *    (tcp + noise + yamux + identify); the server holds as many bytes as the snapshot in 1 MiB raw
 *    blocks in a memory blockstore, a client process fetches them all with 64 blocks wanted at once
 *    into a memory blockstore, blockstore-level (LevelDB) or blockstore-fs (a file per block), the
 *    disk blockstores Helia's users run: 3 runs of each, interleaved run by run (memory, level, fs,
 *    memory, ...), medians: `helia.<memory|level|fs>.MiBPerSec`, `.cpuSecPerGiB` (the fetching
 *    process), `.peakRssMiB`, `.diskWrittenGiBPerGiB` (disk blockstores). `helia.disk.MiBPerSec` is the
 *    faster disk blockstore's. (--quick: 32 MiB, one run each.)
 *
 * The ratios of the targets (issue "write-once snapshot sync"), all measured in the same run:
 * `snapshotSync/rawIntoLevelDB` (end to end ÷ the raw-into-LevelDB floor, ≥ 0.8),
 * `snapshotSync/helia.disk` (end to end ÷ Helia into the faster disk blockstore, ≥ 1.0) and
 * `snapshotSync.toChunksEnd/helia.disk` (the node's creation to the end of the chunks phase, ≥ 1.5).
 * `snapshotSync.peakRssAnon-rawIntoLevelDB.MiB` (≤ 100): the sync's peak anonymous RSS minus the floor's,
 * which runs in a process of its own for that. `snapshotSync.diskWrittenGiBPerGiB` and
 * `rawIntoLevelDB.diskWrittenGiBPerGiB`: bytes each process
 * made the kernel write to storage (/proc/self/io write_bytes, LevelDB's compactions included) per byte
 * of snapshot (of download), from before its store opened to after it closed.
 *
 * `--setup-dir=DIR` keeps the serving snapshot in DIR and reuses it in later runs of the same sizes
 * (experiments); `--raw-mib=N` sizes each raw download (1024; smaller for runs that look at the sync
 * alone, figures against the raw rate then not comparable; the floor still downloads 1024 MiB).
 *
 * `--quick` (and the smoke test): small sizes, figures not comparable. `run({ parts })` runs a subset
 * ('raw', 'helia', 'snapshot'); without the snapshot part, the raw baseline runs between two processes
 * with no store.
 */
import { availableParallelism } from 'node:os'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { randomFillSync } from 'node:crypto'
import { createGenesis, type GenesisBundle } from '../src/chain/genesis.ts'
import { ChainStore } from '../src/store/chain-store.ts'
import { Bucket, keySuffix } from '../src/store/keys.ts'
import { Codecs } from '../src/chain/codecs.ts'
import { LtHash } from '../src/crypto/lthash.ts'
import { accountElement, embeddingElement } from '../src/store/state-hash.ts'
import { CommitExecutor } from '../src/executor/commit-executor.ts'
import { DevnetProducer } from '../src/devnet/producer.ts'
import { buildSnapshot } from '../src/snapshot/builder.ts'
import { devnetCommitteeKeys, signManifest } from '../src/snapshot/attestation.ts'
import { DEFAULTS } from '../src/config.ts'
import { TempDirs, isMain, log, printFigures, measure, type BenchOptions, type Figures } from './util.ts'
import { NODE_FLAGS, withNodeEnv } from '../src/node/runtime.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(here, 'snapshot-sync-child.ts')
const MiB = 1024 * 1024

export type Part = 'raw' | 'helia' | 'snapshot'

export interface Sizes {
  accounts: number
  embeddings: number
  dim: number
  /** commit of the snapshot (real devnet commits, epoch 0); embeddings are spread over commits 1..commits */
  commits: number
  /** raw download per measurement (split over the streams) */
  rawBytes: number
  /** the raw download into LevelDB (the floor). @default rawBytes */
  floorBytes?: number
  rawReps: number
  /** Helia blocks when the snapshot part does not run (else: the snapshot's bytes) */
  heliaBytes: number
  blockBytes: number
  wants: number
  /** Helia runs per blockstore (memory, level, fs interleaved run by run; the median is reported) */
  heliaReps: number
  /**
   * Largest chunk the builder cuts (undefined: the default, 4 × the 1 MiB target). The chunks protocol
   * sizes its read buffer to the message, so chunks of 4 MiB and more go through.
   */
  maxChunkBytes?: number
}

export const FULL: Sizes = { accounts: 200_000, embeddings: 256_000, dim: 1024, commits: 20, rawBytes: 1024 * MiB, rawReps: 2, heliaBytes: 1024 * MiB, blockBytes: MiB, wants: 64, heliaReps: 3 }
const QUICK: Sizes = { accounts: 5_000, embeddings: 2_000, dim: 256, commits: 20, rawBytes: 64 * MiB, rawReps: 1, heliaBytes: 32 * MiB, blockBytes: MiB, wants: 64, heliaReps: 1 }

/** Helia's blockstores in the comparison: memory, and the disk blockstores its users run */
const HELIA_STORES = ['memory', 'level', 'fs'] as const
type HeliaStore = typeof HELIA_STORES[number]

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

const SEED = 'bench-snapshot-sync'

export interface SnapshotSyncBenchOptions extends BenchOptions {
  /** @default all */
  parts?: Part[]
  /** overrides of the sizes (e.g. to check that the sync's peak RSS stays flat as the snapshot grows) */
  sizes?: Partial<Sizes>
  /** the syncing node's `verifyWorkers` (its chunk-hash pool). @default the config default (2) */
  verifyWorkers?: number
  /** the syncing node's `storeWriteBufferBytes` (LevelDB memtable). @default the config default (64 MiB) */
  storeWriteBufferBytes?: number
  /** the syncing node's `snapshotMaxInflightBytes`. @default the config default (64 MiB) */
  snapshotMaxInflightBytes?: number
  /** load chunks as they arrive (SnapshotSyncConfig.loadOnArrival). @default true */
  loadOnArrival?: boolean
  /** keep the serving snapshot in this directory and reuse it in later runs of the same sizes. @default a temp dir, removed */
  setupDir?: string
}

/** Writes the synthetic state; returns the bytes of vectors written. */
async function writeState (store: ChainStore, s: Sizes): Promise<void> {
  const addresses = randomFillSync(new Uint8Array(32 * s.accounts))
  for (let i = 0; i < s.accounts; i += 50_000) {
    const batch = store.batch()
    for (let j = i; j < Math.min(s.accounts, i + 50_000); j++) {
      batch.putAccount(addresses.subarray(32 * j, 32 * j + 32), Codecs.AccountState.encode({ balance: 1 + (j * 7919) % 1e9, nonce: j % 500, lastModifiedEpoch: 0 }))
    }
    await batch.write()
  }
  const perBatch = Math.max(1, Math.floor(16 * MiB / (4 * s.dim)))
  for (let i = 0; i < s.embeddings; i += perBatch) {
    const batch = store.batch()
    const n = Math.min(s.embeddings, i + perBatch) - i
    const vectors = new Float32Array(n * s.dim)
    // random floats in [-1, 1): random bytes would make NaNs, harmless but unrealistic
    const words = randomFillSync(new Uint32Array(vectors.length))
    for (let k = 0; k < vectors.length; k++) vectors[k] = words[k] / 2 ** 31 - 1
    const ids = randomFillSync(new Uint8Array(32 * n))
    for (let j = 0; j < n; j++) {
      const commit = 1 + Math.floor((i + j) * s.commits / s.embeddings)
      batch.putEmbedding(ids.subarray(32 * j, 32 * j + 32), Codecs.Embedding.encode({
        owner: addresses.subarray(32 * ((i + j) % s.accounts), 32 * ((i + j) % s.accounts) + 32),
        commitIndex: commit,
        vector: new Uint8Array(vectors.buffer, 4 * j * s.dim, 4 * s.dim),
        model: 'bench',
        epoch: 0
      }))
    }
    await batch.write()
  }
}

/** The state root over the store's account and embedding buckets (as the executor defines it). */
async function stateRootOf (store: ChainStore): Promise<Uint8Array> {
  const lt = new LtHash()
  for await (const [k, v] of store.db.iterator({ gte: Uint8Array.of(Bucket.ACCOUNT), lt: Uint8Array.of(Bucket.ACCOUNT + 1) })) lt.addLanes(accountElement(keySuffix(k), v))
  for await (const [k, v] of store.db.iterator({ gte: Uint8Array.of(Bucket.EMBEDDING), lt: Uint8Array.of(Bucket.EMBEDDING + 1) })) lt.addLanes(embeddingElement(keySuffix(k), v))
  return lt.checksum()
}

export interface ServingSnapshot { storeDir: string, genesisFile: string, bytes: number, chunks: number, commit: number }

/**
 * The serving store with one attested snapshot of the synthetic state. The chain is real up to a few
 * commits past the snapshot's (devnet, epoch 0), so that the syncing node can fetch the certified
 * commit it anchors the snapshot at; the bulk of the state is then written straight into the buckets
 * and the snapshot's state root computed over them (the devnet committee signs whatever it is given).
 */
export async function makeServingSnapshot (dir: string, s: Sizes, figures: Figures): Promise<ServingSnapshot> {
  const genesis: GenesisBundle = createGenesis({ seed: SEED, validators: 4, accounts: 4, initialBalance: 1e9, embeddingDim: s.dim })
  const storeDir = path.join(dir, 'chain')
  const genesisFile = path.join(dir, 'genesis.pb')
  writeFileSync(genesisFile, genesis.bytes)
  const store = await ChainStore.open(storeDir, { genesis })
  try {
    const producer = new DevnetProducer(store, new CommitExecutor(store), { seed: SEED, epochLength: 1000, txsPerBlock: 2, embeddingEvery: 0, roundIntervalMs: 0 })
    await producer.load()
    await producer.produceUntil(s.commits + 5)
    log(`writing ${s.accounts.toLocaleString()} accounts and ${s.embeddings.toLocaleString()} embeddings of dimension ${s.dim}`)
    const setup = await measure(async () => { await writeState(store, s) })
    figures['setup.writeStateMs'] = setup.ms
    const stateRoot = await stateRootOf(store)
    const committee = (await store.getCommittee(0))!.committee
    const keys = devnetCommitteeKeys(SEED, committee)!
    log('building and attesting the snapshot')
    const built = await measure(async () => await buildSnapshot(store, {
      point: { commitIndex: s.commits, epoch: 0, stateRoot },
      maxChunkBytes: s.maxChunkBytes,
      sign: bytes => signManifest(bytes, committee, keys)
    }))
    figures['setup.buildMs'] = built.ms
    // a serving node's store has long been compacted: do not make the server read through fresh level-0
    // files (the chunks' index rows; the chunk bytes are in pack files)
    await store.db.compactRange(Uint8Array.of(Bucket.PACK_INDEX), Uint8Array.of(Bucket.PACK_RECORD + 1))
    figures['snapshot.largestChunkMiB'] = Math.max(...built.result.listing.map(i => i.size)) / MiB
    return { storeDir, genesisFile, bytes: built.result.stats.totalBytes, chunks: built.result.stats.chunks, commit: s.commits }
  } finally {
    await store.close()
  }
}

/** The sizes that make a serving snapshot (a kept setup is reused only for the same ones). */
function setupKey (s: Sizes): string {
  return JSON.stringify({ accounts: s.accounts, embeddings: s.embeddings, dim: s.dim, commits: s.commits, maxChunkBytes: s.maxChunkBytes ?? null, seed: SEED })
}

/**
 * The serving snapshot: made in a temp dir, or with `setupDir` kept there and reused by later runs of
 * the same sizes (`setup.json` records them; another size makes it again), so that experiments on the
 * sync do not each spend minutes writing 1 GiB of state. The serving store is only read by the server.
 */
async function servingSnapshot (tmp: TempDirs, s: Sizes, figures: Figures, setupDir: string | undefined): Promise<ServingSnapshot> {
  if (setupDir === undefined) return await makeServingSnapshot(tmp.make('snapshot-sync-server'), s, figures)
  const meta = path.join(setupDir, 'setup.json')
  if (existsSync(meta)) {
    const kept = JSON.parse(readFileSync(meta, 'utf8')) as { key: string, snap: ServingSnapshot }
    if (kept.key === setupKey(s)) {
      log(`reusing the serving snapshot in ${setupDir}`)
      return kept.snap
    }
  }
  rmSync(setupDir, { recursive: true, force: true })
  mkdirSync(setupDir, { recursive: true })
  const snap = await makeServingSnapshot(setupDir, s, figures)
  writeFileSync(meta, JSON.stringify({ key: setupKey(s), snap }))
  return snap
}

/** Spawns a serving child and waits for its `LISTEN <addr>` line. */
async function serve (args: string[]): Promise<{ child: ChildProcess, addr: string }> {
  const child = spawn(process.execPath, [...NODE_FLAGS, CHILD, ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: withNodeEnv() })
  const rl = createInterface({ input: child.stdout! })
  const addr: string = await new Promise((resolve, reject) => {
    rl.on('line', (l) => { if (l.startsWith('LISTEN ')) resolve(l.slice(7)) })
    child.once('exit', (c) => { reject(new Error(`${args[0]} child exited with ${c}`)) })
  })
  return { child, addr }
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  child.stdin?.end()
  const t = setTimeout(() => { child.kill('SIGKILL') }, 30_000)
  await once(child, 'exit')
  clearTimeout(t)
}

/** Runs a fetching child; returns its JSON line. */
async function fetch (args: string[]): Promise<Record<string, number | string>> {
  const child = spawn(process.execPath, [...NODE_FLAGS, CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: withNodeEnv() })
  let out = ''
  child.stdout.on('data', (d) => { out += String(d) })
  const [code] = await once(child, 'exit')
  if (code !== 0) throw new Error(`${args[0]} child exited with ${code}`)
  return JSON.parse(out.trim().split('\n').pop()!)
}

export async function run (opts: SnapshotSyncBenchOptions = {}): Promise<Figures> {
  const s = { ...(opts.quick === true ? QUICK : FULL), ...opts.sizes }
  const parts = new Set<Part>(opts.parts ?? ['raw', 'helia', 'snapshot'])
  const tmp = new TempDirs()
  const figures: Figures = {}
  try {
    let snap: ServingSnapshot | undefined
    if (parts.has('snapshot')) {
      snap = await servingSnapshot(tmp, s, figures, opts.setupDir)
      figures['snapshot.MiB'] = snap.bytes / MiB
      figures['snapshot.chunks'] = snap.chunks
      log(`snapshot of ${(snap.bytes / MiB).toFixed(0)} MiB in ${snap.chunks} chunks`)
    }

    if (parts.has('raw') || snap !== undefined) {
      const server = await serve(snap === undefined ? ['serve'] : ['serve', snap.storeDir, snap.genesisFile])
      try {
        log(`${snap !== undefined ? 'the snapshot sync, then ' : ''}raw libp2p download of ${(s.rawBytes / MiB).toFixed(0)} MiB over 1 and 4 streams`)
        const clientArgs = ['fetch', server.addr, String(server.child.pid), String(s.rawBytes), '1,4', String(s.rawReps)]
        if (snap !== undefined) clientArgs.push(path.join(tmp.make('snapshot-sync-client'), 'chain'), snap.genesisFile, String(opts.verifyWorkers ?? DEFAULTS.verifyWorkers), String(opts.storeWriteBufferBytes ?? DEFAULTS.storeWriteBufferBytes), String(opts.snapshotMaxInflightBytes ?? DEFAULTS.snapshotMaxInflightBytes), opts.loadOnArrival === false ? '0' : '1')
        const r = await fetch(clientArgs)
        // the raw-into-LevelDB floor, in a process of its own (its peak RSS is its own), same server
        if (snap !== undefined) Object.assign(r, await fetch(['floor', server.addr, String(server.child.pid), String(s.floorBytes ?? s.rawBytes), '1,4', String(s.rawReps), path.join(tmp.make('snapshot-sync-floor'), 'chain'), snap.genesisFile]))
        figures['raw.1stream.MiBPerSec'] = r.raw1 as number
        figures['raw.4streams.MiBPerSec'] = r.raw4 as number
        figures['raw.peakRssMiB'] = r.rawPeakRssMiB as number
        if (snap !== undefined) {
          const rawBest = Math.max(r.raw1 as number, r.raw4 as number)
          if (r['snapshot.commit'] !== snap.commit) throw new Error(`the client synced the snapshot of commit ${r['snapshot.commit']}, not ${snap.commit}`)
          const mibs = snap.bytes / MiB / ((r.snapshotMs as number) / 1000)
          figures['snapshotSync.ms'] = r.snapshotMs as number
          figures['snapshotSync.MiBPerSec'] = mibs
          figures['snapshotSync.MBPerSec'] = snap.bytes / 1e6 / ((r.snapshotMs as number) / 1000)
          figures['snapshotSync.peakRssMiB'] = r.snapshotPeakRssMiB as number
          figures['snapshotSync.peakRssAnonMiB'] = r.snapshotPeakRssAnonMiB as number
          figures['snapshotSync/raw'] = mibs / rawBest
          figures['snapshotSync.fetchedMiB'] = (r['snapshot.fetchedBytes'] as number) / MiB
          // from the node's creation to the end of the chunks phase (every chunk stored and verified)
          if (r.snapshotToChunksEndMs !== undefined) figures['snapshotSync.toChunksEnd.MiBPerSec'] = snap.bytes / MiB / ((r.snapshotToChunksEndMs as number) / 1000)
          // bytes the syncing process wrote to storage (LevelDB's WAL, tables and compactions, packs) per GiB of snapshot
          if (r.snapshotWriteBytes !== undefined) figures['snapshotSync.diskWrittenGiBPerGiB'] = (r.snapshotWriteBytes as number) / snap.bytes
          figures['snapshotSync.requests'] = r['snapshot.requests'] as number
          if (r['snapshot.cpu.client'] !== undefined && r['raw.cpu.client'] !== undefined) {
            // where the CPU goes (Linux: /proc/<pid>/task), in CPU seconds per GiB moved
            const gib = snap.bytes / (1024 * MiB)
            const rawGib = (r.rawBytes as number) / (1024 * MiB)
            const n = (k: string): number => r[k] as number
            figures['snapshotSync.cpuSecPerGiB.clientMain'] = n('snapshot.cpu.main') / gib
            // the chunk-hash workers stop when the chunks phase ends: their threads have exited by then
            figures['snapshotSync.cpuSecPerGiB.clientHashWorkers'] = (n('snapshot.cpu.workers') + n('snapshot.cpu.exited')) / gib
            figures['snapshotSync.cpuSecPerGiB.clientV8Helpers'] = n('snapshot.cpu.v8') / gib
            // LevelDB's compaction thread is started from libuv's pool and carries its name
            figures['snapshotSync.cpuSecPerGiB.clientLibuvAndLevelDB'] = (n('snapshot.cpu.libuv') + n('snapshot.cpu.other')) / gib
            figures['snapshotSync.cpuSecPerGiB.server'] = n('snapshot.cpu.server') / gib
            const syncPerGib = (n('snapshot.cpu.client') + n('snapshot.cpu.server')) / gib
            figures['snapshotSync.cpuSecPerGiB'] = syncPerGib
            figures['snapshotSync.coresBusy'] = syncPerGib * gib / (n('snapshotMs') / 1000)
            figures['raw.cpuSecPerGiB.client'] = n('raw.cpu.client') / rawGib
            figures['raw.cpuSecPerGiB.server'] = n('raw.cpu.server') / rawGib
            const rawPerGib = (n('raw.cpu.client') + n('raw.cpu.server')) / rawGib
            figures['raw.cpuSecPerGiB'] = rawPerGib
            figures['raw.coresBusy'] = rawPerGib * rawGib / (n('rawMs') / 1000)
            // the ratio a sync with these CPU costs would reach with every core busy and no waiting
            figures['snapshotSync/raw allowed by its CPU'] = availableParallelism() / syncPerGib * 1024 / rawBest
          }
          // the floor of any sync into LevelDB: the raw download, each 1 MiB hashed and written once as
          // a chunk is, nothing else (the snapshot sync also verifies, and writes the state a second time)
          const intoStoreMiB = (r.rawIntoStoreBytes as number) / MiB
          const intoStore = intoStoreMiB / ((r.rawIntoStoreMs as number) / 1000)
          figures['rawIntoLevelDB.MiBPerSec'] = intoStore
          figures['rawIntoLevelDB/raw'] = intoStore / rawBest
          // target: the snapshot sync end to end ≥ 0.8 × this floor
          figures['snapshotSync/rawIntoLevelDB'] = mibs / intoStore
          figures['rawIntoLevelDB.peakRssAnonMiB'] = r.rawIntoStorePeakRssAnonMiB as number
          // target: the sync's peak anonymous RSS ≤ the floor's + 100 MiB
          figures['snapshotSync.peakRssAnon-rawIntoLevelDB.MiB'] = (r.snapshotPeakRssAnonMiB as number) - (r.rawIntoStorePeakRssAnonMiB as number)
          // what each peak held: the main thread's V8 heap, its ArrayBuffers, the rest (malloc: LevelDB,
          // classic-level's copies, worker threads' heaps)
          for (const [from, to] of [['snapshot', 'snapshotSync'], ['rawIntoStore', 'rawIntoLevelDB']]) {
            for (const part of ['V8Heap', 'ArrayBuffers', 'Other']) {
              const v = r[`${from}PeakAnon${part}MiB`]
              if (v !== undefined) figures[`${to}.peakRssAnon.${part[0].toLowerCase()}${part.slice(1)}MiB`] = v as number
            }
          }
          if (r.rawIntoStoreWriteBytes !== undefined) figures['rawIntoLevelDB.diskWrittenGiBPerGiB'] = (r.rawIntoStoreWriteBytes as number) / (r.rawIntoStoreBytes as number)
          if (r['rawIntoStore.cpu.client'] !== undefined) {
            const perGib = ((r['rawIntoStore.cpu.client'] as number) + (r['rawIntoStore.cpu.server'] as number)) / (intoStoreMiB / 1024)
            figures['rawIntoLevelDB.cpuSecPerGiB.clientLibuvAndLevelDB'] = ((r['rawIntoStore.cpu.libuv'] as number) + (r['rawIntoStore.cpu.other'] as number)) / (intoStoreMiB / 1024)
            figures['rawIntoLevelDB.cpuSecPerGiB'] = perGib
            figures['rawIntoLevelDB.coresBusy'] = perGib * (intoStoreMiB / 1024) / ((r.rawIntoStoreMs as number) / 1000)
            figures['rawIntoLevelDB/raw allowed by its CPU'] = availableParallelism() / perGib * 1024 / rawBest
          }
        }
      } finally {
        await stop(server.child)
      }
    }

    if (parts.has('helia')) {
      // the snapshot's bytes (FULL); --quick snapshots are too small for a meaningful transfer
      const bytes = opts.quick === true ? s.heliaBytes : snap?.bytes ?? s.heliaBytes
      const blocks = Math.ceil(bytes / s.blockBytes)
      const cidsFile = path.join(tmp.make('helia'), 'cids.txt')
      log(`Helia bitswap: ${blocks} blocks of ${(s.blockBytes / MiB).toFixed(0)} MiB, ${s.wants} wants in flight, into ${HELIA_STORES.join(', ')} blockstores (${s.heliaReps} runs each, interleaved)`)
      const server = await serve(['helia-serve', String(blocks), String(s.blockBytes), cidsFile])
      try {
        const runs = new Map<HeliaStore, Array<Record<string, number | string>>>(HELIA_STORES.map(k => [k, []]))
        // interleaved run by run, so that the machine's drift over the run touches every blockstore alike
        for (let rep = 0; rep < s.heliaReps; rep++) {
          for (const kind of HELIA_STORES) {
            const dir = tmp.make(`helia-${kind}-${rep}`)
            runs.get(kind)!.push(await fetch(['helia-fetch', server.addr, cidsFile, String(s.wants), kind, path.join(dir, 'blocks')]))
          }
        }
        for (const kind of HELIA_STORES) {
          const rs = runs.get(kind)!
          const n = (k: string): number[] => rs.map(r => r[k] as number)
          const mib = median(n('MiB'))
          figures[`helia.${kind}.MiBPerSec`] = median(n('MiBPerSec'))
          figures[`helia.${kind}.MiB`] = mib
          figures[`helia.${kind}.peakRssMiB`] = Math.max(...n('peakRssMiB'))
          figures[`helia.${kind}.cpuSecPerGiB`] = median(n('cpuSec')) / (mib / 1024)
          // a memory blockstore writes nothing to disk
          if (kind !== 'memory' && rs.every(r => r.writeBytes !== undefined)) figures[`helia.${kind}.diskWrittenGiBPerGiB`] = median(n('writeBytes')) / (mib * MiB)
        }
        const disk = Math.max(figures['helia.level.MiBPerSec'], figures['helia.fs.MiBPerSec'])
        figures['helia.disk.MiBPerSec'] = disk
        const rawBest = Math.max(figures['raw.1stream.MiBPerSec'] ?? 0, figures['raw.4streams.MiBPerSec'] ?? 0)
        if (rawBest > 0) figures['raw.best/helia.memory'] = rawBest / figures['helia.memory.MiBPerSec']
        if (figures['snapshotSync.MiBPerSec'] !== undefined) {
          figures['snapshotSync/helia.memory'] = figures['snapshotSync.MiBPerSec'] / figures['helia.memory.MiBPerSec']
          // targets: end to end ≥ 1.0 × Helia into the faster disk blockstore; the chunks phase ≥ 1.5 ×
          figures['snapshotSync/helia.disk'] = figures['snapshotSync.MiBPerSec'] / disk
          if (figures['snapshotSync.toChunksEnd.MiBPerSec'] !== undefined) figures['snapshotSync.toChunksEnd/helia.disk'] = figures['snapshotSync.toChunksEnd.MiBPerSec'] / disk
        }
      } finally {
        await stop(server.child)
      }
    }
    return figures
  } finally {
    tmp.cleanup()
  }
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  const only = process.argv.find(a => a.startsWith('--parts='))?.slice('--parts='.length).split(',') as Part[] | undefined
  const arg = (name: string): number | undefined => {
    const v = process.argv.find(a => a.startsWith(`--${name}=`))?.slice(name.length + 3)
    if (v === undefined) return undefined
    if (!/^\d+$/.test(v)) throw new Error(`--${name}=${v}: expected a whole number`)
    return Number(v)
  }
  const embeddings = arg('embeddings')
  const rawMib = arg('raw-mib')
  const mib = (v: number | undefined): number | undefined => v === undefined ? undefined : v * MiB
  const setupDir = process.argv.find(a => a.startsWith('--setup-dir='))?.slice('--setup-dir='.length)
  printFigures(`snapshot-sync${quick ? ' (quick)' : ''}`, await run({
    quick,
    parts: only,
    setupDir: setupDir === undefined ? undefined : path.resolve(setupDir),
    sizes: { ...(embeddings === undefined ? {} : { embeddings }), ...(rawMib === undefined ? {} : { rawBytes: rawMib * MiB, floorBytes: FULL.rawBytes }) },
    verifyWorkers: arg('verify-workers'),
    storeWriteBufferBytes: mib(arg('write-buffer-mib')),
    snapshotMaxInflightBytes: mib(arg('inflight-mib')),
    loadOnArrival: arg('load-on-arrival') === undefined ? undefined : arg('load-on-arrival') !== 0
  }))
}
