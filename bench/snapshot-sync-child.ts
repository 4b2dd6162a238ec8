/**
 * Child process of bench/snapshot-sync.ts (never run by the bench runner: it exports no `run`). Modes:
 *
 *   serve [<storeDir> <genesisFile>]
 *       A Soma libp2p node (createLibp2pNode: tcp + noise + yamux, identify, ping, kad-dht, gossipsub)
 *       serving the raw bench protocol and, with a store, the commit sync and snapshot sync protocols
 *       (serve only). Prints `LISTEN <multiaddr>`; runs until stdin closes.
 *   fetch <multiaddr> <serverPid> <rawBytes> <streams,...> <reps> [<storeDir> <genesisFile> <verifyWorkers> <writeBufferBytes> <maxInflightBytes> <loadOnArrival 1|0>]
 *       With a store, first a node with a fresh store (LevelDB write buffer <writeBufferBytes>;
 *       snapshot sync on with <verifyWorkers> chunk-hash workers and <maxInflightBytes> in flight,
 *       commit sync held) dials the server and syncs the snapshot it offers; then a second node of the
 *       same kind in this same process downloads <rawBytes> over 1, 4, ... parallel streams of the raw
 *       protocol (64 KiB writes, best of <reps>). Each phase also reports the CPU time of this
 *       process's threads and of the server process (<serverPid>) over it (Linux /proc). Prints one
 *       JSON line of figures.
 *   floor <multiaddr> <serverPid> <rawBytes> <streams,...> <reps> <storeDir> <genesisFile>
 *       The floor, in a process of its own: a node downloads <rawBytes> over the most streams of the raw
 *       protocol into a fresh store (each 1 MiB hashed and written as a LevelDB chunk row), with its
 *       time, CPU (and the server's), peak anonymous RSS and bytes written. One JSON line.
 *   helia-serve <blocks> <blockBytes> <cidsFile>
 *       Helia 7 (createHeliaLight + withLibp2pLight + withBitswap; tcp + noise + yamux + identify),
 *       memory blockstore holding <blocks> raw blocks of <blockBytes> (deterministic bytes); writes their
 *       CIDs to <cidsFile>, prints `LISTEN <multiaddr>`, runs until stdin closes.
 *   helia-fetch <multiaddr> <cidsFile> <wants> <memory|level|fs> <dir>
 *       The same Helia composition: dials the server and fetches every CID with <wants> blocks wanted
 *       at once (bitswap), into a blockstore: memory (blockstore-core's MemoryBlockstore), level
 *       (blockstore-level, LevelDB in <dir>) or fs (blockstore-fs, a file per block in <dir>), the disk
 *       blockstores Helia's users run. Prints one JSON line of figures.
 *
 * Every fetch mode samples its RSS every 50 ms while it transfers, and reports the bytes it made the
 * kernel write to storage (/proc/self/io write_bytes, counted when pages are dirtied; LevelDB's
 * compactions included, as its thread is this process's) from before its store opens to after it
 * closes.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream } from '@libp2p/interface'
import { DEFAULTS, type SomaConfig } from '../src/config.ts'
import { createLibp2pNode, type SomaLibp2p, type ServiceFactory } from '../src/node/libp2p.ts'
import { ChainStore } from '../src/store/chain-store.ts'
import { CommitExecutor } from '../src/executor/commit-executor.ts'
import { decodeGenesis } from '../src/chain/genesis.ts'
import { commitSyncServices } from '../src/sync/state-sync.ts'
import { snapshotSyncServices, snapshotSyncConfig, type SnapshotSyncService } from '../src/snapshot/sync/service.ts'
import { threadCpu, cpuDelta, type ThreadCpu } from './util.ts'
import { SnapshotBucket, SnapshotKeys } from '../src/snapshot/store-keys.ts'
import { sha256 } from '../src/crypto/hash.ts'

const RAW_PROTOCOL = '/soma-bench/raw/1.0.0'
const WRITE_BYTES = 64 * 1024
/** piece size of the raw download into LevelDB: the snapshot's target chunk size (1 MiB) */
const PIECE_BYTES = 1024 * 1024
/** pieces fetchRawIntoStore has written, over all its streams */
let pieces = 0

const [mode, ...args] = process.argv.slice(2)

/** write_bytes of /proc/self/io: bytes this process caused to be written to storage; undefined off Linux. */
function writeBytes (): number | undefined {
  try {
    const m = /write_bytes:\s+(\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))
    return m === null ? undefined : Number(m[1])
  } catch {
    return undefined
  }
}

/** RssAnon of /proc/self/status in bytes (heap, buffers, LevelDB memtables and cache; not mapped files); 0 off Linux. */
function rssAnon (): number {
  try {
    const m = /RssAnon:\s+(\d+)\s+kB/.exec(readFileSync('/proc/self/status', 'utf8'))
    return m === null ? 0 : Number(m[1]) * 1024
  } catch {
    return 0
  }
}

/**
 * Peak RSS over a phase, sampled every 50 ms, and peak RssAnon: RSS also counts the pages of LevelDB's
 * memory-mapped table files, which the kernel reclaims under pressure.
 */
class Rss {
  peak = 0
  peakAnon = 0
  /** the main thread's V8 heap and ArrayBuffers when the anonymous peak was sampled */
  atPeakAnon = { heapTotal: 0, arrayBuffers: 0 }
  private readonly t = setInterval(() => { this.sample() }, 50)
  constructor () { this.sample() }
  private sample (): void {
    this.peak = Math.max(this.peak, process.memoryUsage.rss())
    const anon = rssAnon()
    if (anon > this.peakAnon) {
      this.peakAnon = anon
      const m = process.memoryUsage()
      this.atPeakAnon = { heapTotal: m.heapTotal, arrayBuffers: m.arrayBuffers }
    }
  }

  /**
   * What the anonymous peak held, in MiB: the main thread's V8 heap, its ArrayBuffers (Buffers and
   * Uint8Arrays: chunks, Noise messages, batches), and the rest (malloc: LevelDB's memtables and
   * block cache, classic-level's batch copies, the worker threads' heaps, code).
   */
  peakAnonParts (prefix: string): Record<string, number> {
    const mib = (b: number): number => b / (1024 * 1024)
    return {
      [`${prefix}PeakAnonV8HeapMiB`]: mib(this.atPeakAnon.heapTotal),
      [`${prefix}PeakAnonArrayBuffersMiB`]: mib(this.atPeakAnon.arrayBuffers),
      [`${prefix}PeakAnonOtherMiB`]: mib(this.peakAnon - this.atPeakAnon.heapTotal - this.atPeakAnon.arrayBuffers)
    }
  }

  stop (): number { clearInterval(this.t); this.sample(); return this.peak / (1024 * 1024) }
  get peakAnonMiB (): number { return this.peakAnon / (1024 * 1024) }
}

function nodeConfig (): SomaConfig {
  return { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], entrypoints: [], statusPort: 0, logLevel: 'error', maxConnections: 100 }
}

async function somaNode (chainId: Uint8Array, services: Record<string, ServiceFactory> = {}): Promise<SomaLibp2p> {
  return await createLibp2pNode({ config: nodeConfig(), chainId, privateKey: await generateKeyPair('Ed25519'), services, start: true })
}

/** Sends `size` bytes in 64 KiB writes, respecting back-pressure. */
async function sendBytes (stream: Stream, size: number): Promise<void> {
  const buf = new Uint8Array(WRITE_BYTES)
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 31 + 7) & 0xff
  let sent = 0
  while (sent < size) {
    const n = Math.min(buf.length, size - sent)
    const ok = stream.send(n === buf.length ? buf : buf.subarray(0, n))
    sent += n
    if (!ok) await stream.onDrain()
  }
  await stream.close()
}

/** Serves the raw protocol: the request is a u64 (big-endian) byte count, the response that many bytes. */
async function handleRaw (node: SomaLibp2p): Promise<void> {
  await node.handle(RAW_PROTOCOL, async (stream) => {
    try {
      let req = new Uint8Array(0)
      for await (const chunk of stream) {
        const c = chunk instanceof Uint8Array ? chunk : chunk.subarray()
        const joined = new Uint8Array(req.length + c.length)
        joined.set(req); joined.set(c, req.length)
        req = joined
        if (req.length >= 8) break
      }
      const size = Number(new DataView(req.buffer, req.byteOffset, 8).getBigUint64(0))
      await sendBytes(stream, size)
    } catch (err: any) {
      stream.abort(err)
    }
  }, { maxInboundStreams: 64 })
}

/** Downloads `size` bytes over one stream of the raw protocol; returns the bytes received. */
async function fetchRaw (node: SomaLibp2p, addr: string, size: number): Promise<number> {
  const stream = await node.dialProtocol(multiaddr(addr), RAW_PROTOCOL)
  const req = new Uint8Array(8)
  new DataView(req.buffer).setBigUint64(0, BigInt(size))
  stream.send(req)
  let received = 0
  for await (const chunk of stream) received += chunk.byteLength
  if (received !== size) throw new Error(`raw stream: received ${received} of ${size} bytes`)
  return received
}

/**
 * Downloads `size` bytes over one stream of the raw protocol into `store`: the bytes are cut into
 * pieces of PIECE_BYTES, and each piece is hashed (sha256) and written in the chunk bucket under a
 * unique random key, one LevelDB batch per piece, as the snapshot sync writes a verified chunk.
 * Nothing else: no protocol, no verification against anything, no state.
 */
async function fetchRawIntoStore (node: SomaLibp2p, addr: string, size: number, store: ChainStore): Promise<number> {
  const stream = await node.dialProtocol(multiaddr(addr), RAW_PROTOCOL)
  const req = new Uint8Array(8)
  new DataView(req.buffer).setBigUint64(0, BigInt(size))
  stream.send(req)
  let received = 0
  let piece = Buffer.allocUnsafe(PIECE_BYTES)
  let filled = 0
  const flush = async (): Promise<void> => {
    const bytes = piece.subarray(0, filled)
    // the raw protocol's bytes repeat every 64 KiB, so every piece has the same hash: the key is made
    // unique (and as random as chunk hashes are) by hashing the piece's hash with a piece counter
    const counter = new Uint8Array(8)
    new DataView(counter.buffer).setFloat64(0, pieces++)
    await store.batch().put(SnapshotKeys.chunk(sha256(sha256(bytes), counter)), bytes).write()
    piece = Buffer.allocUnsafe(PIECE_BYTES)
    filled = 0
  }
  for await (const chunk of stream) {
    const c = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    received += c.byteLength
    let off = 0
    while (off < c.byteLength) {
      const n = Math.min(c.byteLength - off, PIECE_BYTES - filled)
      piece.set(c.subarray(off, off + n), filled)
      filled += n
      off += n
      if (filled === PIECE_BYTES) await flush()
    }
  }
  if (filled > 0) await flush()
  if (received !== size) throw new Error(`raw stream: received ${received} of ${size} bytes`)
  return received
}

/** The raw download over `streams` parallel streams: MiB/s. */
async function rawThroughput (node: SomaLibp2p, addr: string, total: number, streams: number): Promise<number> {
  const each = Math.floor(total / streams)
  const t0 = performance.now()
  const got = await Promise.all(Array.from({ length: streams }, async () => await fetchRaw(node, addr, each)))
  const s = (performance.now() - t0) / 1000
  return got.reduce((a, b) => a + b, 0) / (1024 * 1024) / s
}

function waitForStdinEnd (onEnd: () => Promise<void>): void {
  process.stdin.resume()
  process.stdin.on('end', () => { void onEnd().then(() => process.exit(0), (err) => { console.error(err); process.exit(1) }) })
}

// ---------------------------------------------------------------------------------------------------
// the snapshot sync core (src/snapshot/sync/) and the commit sync services it needs

/**
 * The sync services of a node: commit sync (`fetchCommits` and `epochProofs` serve the certified commit
 * of the snapshot and the committees; a syncing node holds its loop with `startPaused`) and snapshot
 * sync (`snapshotManifest`/`Filter`/`Listing`/`Chunks` serve the store's snapshots; `snapshotSync`
 * syncs when `sync`).
 */
function syncServices (store: ChainStore, sync: boolean, hashWorkers = DEFAULTS.verifyWorkers, maxInflightBytes = DEFAULTS.snapshotMaxInflightBytes, loadOnArrival = true): Record<string, ServiceFactory> {
  return {
    ...commitSyncServices({ store, executor: new CommitExecutor(store), sync, startPaused: sync, verifyWorkers: 0 }),
    ...snapshotSyncServices({ ...snapshotSyncConfig({ ...DEFAULTS, snapshotMaxInflightBytes: maxInflightBytes }), hashWorkers, store, sync, minPeers: 1, loadOnArrival })
  }
}

/**
 * Syncs the snapshot the server offers into `store`: from the dial to the sync's end. `chunksEnd` is set
 * to performance.now() when the chunks phase ends (every chunk stored and verified).
 */
async function syncSnapshot (node: SomaLibp2p, addr: string, marks: { chunksEnd?: number }): Promise<Record<string, number>> {
  const service = (node.services as any).snapshotSync as SnapshotSyncService
  await node.dial(multiaddr(addr))
  // the service started with the node; it ends when the snapshot is anchored (or none is found)
  while (service.done === undefined) await new Promise(resolve => setTimeout(resolve, 5))
  service.snapshotSync?.on('phase', (p) => { if (p === 'final-check') marks.chunksEnd ??= performance.now() })
  await service.done
  if (service.error !== undefined) throw service.error
  if (service.result?.outcome !== 'synced') throw new Error(`snapshot sync ended with ${JSON.stringify(service.result?.outcome)}`)
  const sync = service.snapshotSync!
  const p = sync.progress()
  return { commit: service.result.commit ?? 0, fetchedBytes: sync.stats.fetchedBytes, fetchedChunks: sync.stats.fetchedChunks, requests: sync.stats.requests, duplicates: sync.stats.duplicates, peers: p.peers }
}

// ---------------------------------------------------------------------------------------------------

if (mode === 'serve') {
  const [storeDir, genesisFile] = args
  let store: ChainStore | undefined
  let services: Record<string, ServiceFactory> = {}
  let chainId: Uint8Array = new Uint8Array(32)
  if (storeDir !== undefined) {
    store = await ChainStore.open(storeDir, { genesis: decodeGenesis(readFileSync(genesisFile)) })
    chainId = store.chainId
    services = syncServices(store, false)
  }
  const node = await somaNode(chainId, services)
  await handleRaw(node)
  process.stdout.write(`LISTEN ${node.getMultiaddrs()[0].toString()}\n`)
  waitForStdinEnd(async () => { await node.stop(); await store?.close() })
} else if (mode === 'fetch' || mode === 'floor') {
  const [addr, serverPidStr, rawBytesStr, streamsStr, repsStr, storeDir, genesisFile, verifyWorkersStr, writeBufferStr, inflightStr, loadOnArrivalStr] = args
  const rawBytes = Number(rawBytesStr)
  const reps = Number(repsStr)
  const serverPid = Number(serverPidStr)
  const figures: Record<string, number | string> = {}
  // CPU seconds of this process (by kind of thread) and of the serving process over a phase (Linux)
  const cpuNow = (): { client?: ThreadCpu, server?: ThreadCpu } => ({ client: threadCpu(), server: threadCpu(serverPid) })
  const cpuFigures = (prefix: string, a: ReturnType<typeof cpuNow>, b: ReturnType<typeof cpuNow>): void => {
    if (a.client === undefined || b.client === undefined || a.server === undefined || b.server === undefined) return
    const c = cpuDelta(a.client, b.client)
    figures[`${prefix}.cpu.main`] = c.main
    figures[`${prefix}.cpu.workers`] = c.workers
    figures[`${prefix}.cpu.v8`] = c.v8
    figures[`${prefix}.cpu.libuv`] = c.libuv
    figures[`${prefix}.cpu.other`] = c.other
    figures[`${prefix}.cpu.exited`] = c.exited
    figures[`${prefix}.cpu.client`] = c.total
    figures[`${prefix}.cpu.server`] = cpuDelta(a.server, b.server).total
  }
  // 1. the snapshot sync, from a fresh node with a fresh store: first, so that its peak RSS is its own
  //    (a process keeps the heap and malloc arenas a 1 GiB download grew)
  if (storeDir !== undefined && mode === 'fetch') {
    const w0 = writeBytes()
    const store = await ChainStore.open(storeDir, { genesis: decodeGenesis(readFileSync(genesisFile)), writeBufferSize: Number(writeBufferStr ?? DEFAULTS.storeWriteBufferBytes) })
    const r = new Rss()
    const cpu0 = cpuNow()
    const t0 = performance.now()
    const synced = await somaNode(store.chainId, syncServices(store, true, Number(verifyWorkersStr), Number(inflightStr ?? DEFAULTS.snapshotMaxInflightBytes), loadOnArrivalStr !== '0'))
    const marks: { chunksEnd?: number } = {}
    const extra = await syncSnapshot(synced, addr, marks)
    figures.snapshotMs = performance.now() - t0
    if (marks.chunksEnd !== undefined) figures.snapshotToChunksEndMs = marks.chunksEnd - t0
    cpuFigures('snapshot', cpu0, cpuNow())
    figures.snapshotPeakRssMiB = r.stop()
    figures.snapshotPeakRssAnonMiB = r.peakAnonMiB
    Object.assign(figures, r.peakAnonParts('snapshot'))
    for (const [k, v] of Object.entries(extra)) figures[`snapshot.${k}`] = v
    await synced.stop()
    figures.snapshotHighestExecuted = store.highestExecuted
    await store.close()
    const w1 = writeBytes()
    if (w0 !== undefined && w1 !== undefined) figures.snapshotWriteBytes = w1 - w0
  }
  // 2. raw streams, in the same process towards the same server, from a node without a store
  const node = await somaNode(new Uint8Array(32))
  if (mode === 'fetch') {
    const rss = new Rss()
    const cpu0 = cpuNow()
    const t0 = performance.now()
    let rawTotal = 0
    for (const streams of streamsStr.split(',').map(Number)) {
      let best = 0
      for (let r = 0; r < reps; r++) { best = Math.max(best, await rawThroughput(node, addr, rawBytes, streams)); rawTotal += rawBytes }
      figures[`raw${streams}`] = best
    }
    // every raw download together: their bytes, time and CPU
    figures.rawMs = performance.now() - t0
    figures.rawBytes = rawTotal
    cpuFigures('raw', cpu0, cpuNow())
    figures.rawPeakRssMiB = rss.stop()
  }
  // 3. floor (a process of its own, so that its peak RSS is its own): the raw download over the most
  //    parallel streams, each 1 MiB piece hashed and written to a fresh store as the sync used to write
  //    a chunk (fetchRawIntoStore)
  if (storeDir !== undefined && mode === 'floor') {
    const streams = Math.max(...streamsStr.split(',').map(Number))
    const w0 = writeBytes()
    const store = await ChainStore.open(storeDir, { genesis: decodeGenesis(readFileSync(genesisFile)) })
    const each = Math.floor(rawBytes / streams)
    const rss = new Rss()
    const c0 = cpuNow()
    const t1 = performance.now()
    const got = await Promise.all(Array.from({ length: streams }, async () => await fetchRawIntoStore(node, addr, each, store)))
    figures.rawIntoStoreMs = performance.now() - t1
    rss.stop()
    figures.rawIntoStorePeakRssAnonMiB = rss.peakAnonMiB
    Object.assign(figures, rss.peakAnonParts('rawIntoStore'))
    cpuFigures('rawIntoStore', c0, cpuNow())
    figures.rawIntoStoreBytes = got.reduce((a, b) => a + b, 0)
    const stored = await store.countBucket(SnapshotBucket.CHUNK)
    if (stored !== pieces) throw new Error(`raw download into LevelDB: ${stored} pieces stored, ${pieces} written`)
    await store.close()
    const w1 = writeBytes()
    if (w0 !== undefined && w1 !== undefined) figures.rawIntoStoreWriteBytes = w1 - w0
  }
  await node.stop()
  process.stdout.write(JSON.stringify(figures) + '\n')
  process.exit(0)
} else if (mode === 'helia-serve' || mode === 'helia-fetch') {
  const { createHeliaLight } = await import('helia')
  const { withLibp2pLight } = await import('@helia/libp2p')
  const { withBitswap } = await import('@helia/bitswap')
  const { MemoryBlockstore } = await import('blockstore-core')
  const { tcp } = await import('@libp2p/tcp')
  const { noise } = await import('@chainsafe/libp2p-noise')
  const { yamux } = await import('@chainsafe/libp2p-yamux')
  const { identify } = await import('@libp2p/identify')
  const { CID } = await import('multiformats/cid')
  const { sha256 } = await import('multiformats/hashes/sha2')
  const raw = await import('multiformats/codecs/raw')

  const makeHelia = async (blockstore: any = new MemoryBlockstore()): Promise<any> => {
    const helia = withBitswap(withLibp2pLight(createHeliaLight({ blockstore }), {
      privateKey: await generateKeyPair('Ed25519'),
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify() }
    }) as any)
    await helia.start()
    return helia
  }

  if (mode === 'helia-serve') {
    const [blocksStr, blockBytesStr, cidsFile] = args
    const blocks = Number(blocksStr)
    const blockBytes = Number(blockBytesStr)
    const helia = await makeHelia()
    const cids: string[] = []
    let x = 0x9e3779b9
    for (let i = 0; i < blocks; i++) {
      const bytes = new Uint8Array(blockBytes)
      const words = new Uint32Array(bytes.buffer)
      x = (x ^ (i + 1)) >>> 0 || 1
      for (let j = 0; j < words.length; j++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; words[j] = x >>> 0 }
      const cid = CID.createV1(raw.code, await sha256.digest(bytes))
      await helia.blockstore.put(cid, bytes)
      cids.push(cid.toString())
    }
    writeFileSync(cidsFile, cids.join('\n'))
    process.stdout.write(`LISTEN ${helia.libp2p.getMultiaddrs()[0].toString()}\n`)
    waitForStdinEnd(async () => { await helia.stop() })
  } else {
    const [addr, cidsFile, wantsStr, kind, dir] = args
    const wants = Number(wantsStr)
    const cids = readFileSync(cidsFile, 'utf8').split('\n').filter(s => s !== '').map(s => CID.parse(s))
    const w0 = writeBytes()
    let blockstore: any
    if (kind === 'memory') blockstore = new MemoryBlockstore()
    else if (kind === 'level') blockstore = new (await import('blockstore-level')).LevelBlockstore(dir)
    else if (kind === 'fs') blockstore = new (await import('blockstore-fs')).FsBlockstore(dir)
    else throw new Error(`unknown blockstore ${JSON.stringify(kind)} (memory, level or fs)`)
    await blockstore.open?.()
    const helia = await makeHelia(blockstore)
    await helia.libp2p.dial(multiaddr(addr))
    const cpu0 = process.cpuUsage()
    const rss = new Rss()
    let bytes = 0
    let next = 0
    const t0 = performance.now()
    await Promise.all(Array.from({ length: Math.min(wants, cids.length) }, async () => {
      while (next < cids.length) {
        const cid = cids[next++]
        for await (const b of helia.blockstore.get(cid, { signal: AbortSignal.timeout(60_000) })) bytes += b.byteLength
      }
    }))
    const s = (performance.now() - t0) / 1000
    const cpu = process.cpuUsage(cpu0)
    const figures: Record<string, number> = { MiBPerSec: bytes / (1024 * 1024) / s, MiB: bytes / (1024 * 1024), blocks: cids.length, peakRssMiB: rss.stop(), maxRssMiB: process.resourceUsage().maxRSS / 1024, cpuSec: (cpu.user + cpu.system) / 1e6 }
    // the blocks are in the blockstore (bitswap stores what it fetched)
    for (const cid of [cids[0], cids[cids.length - 1]]) if (!await blockstore.has(cid)) throw new Error(`block ${cid.toString()} is not in the ${kind} blockstore`)
    await helia.stop()
    await blockstore.close?.()
    const w1 = writeBytes()
    if (w0 !== undefined && w1 !== undefined) figures.writeBytes = w1 - w0
    process.stdout.write(JSON.stringify(figures) + '\n')
    process.exit(0)
  }
} else if (mode !== undefined) {
  console.error(`unknown mode ${mode}`)
  process.exit(2)
}
