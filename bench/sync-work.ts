/**
 * The necessary work of a snapshot sync, each piece alone, in CPU seconds per GiB of snapshot (issue
 * "write-once snapshot sync": what bounds `snapshotSync/rawIntoLevelDB` if 0.8 stays out of reach). The
 * chunks are the snapshot-sync bench's kind (bench/snapshot-sync.ts): 4 KiB embeddings of dimension
 * 1024 and small accounts in ~1 MiB chunks (the default chunking's target), built in memory here.
 *
 *     node bench/sync-work.ts [--quick]
 *
 * - `sha256`: each chunk hashed once (the check on arrival), main thread;
 * - `decodeChunk`: each chunk decoded and checked strictly (decodeChunk: canonical values and bytes, what
 *   the load does before it writes a chunk's entries), main thread;
 * - `stateElements`: each chunk's partial state hash (chunkPartial: shake256 of every entry to 2048
 *   bytes, summed; the chunk-hash workers' work), one thread;
 * - `packWrite`: each chunk written once, as the download stores it (PackStore.commit: its bytes
 *   appended to a pack file, its index rows in one LevelDB batch), every thread of the process until the
 *   store is closed;
 * - `stateWrite`: the entries written once into the state buckets, as the load writes them (8 MiB
 *   StoreBatches, random keys), every thread of the process until the store is closed (LevelDB's
 *   compactions included);
 * - `noise`: the Noise transport's ChaCha20-Poly1305 (src/net/noise-crypto.ts), each byte encrypted and
 *   decrypted once in 64 KiB messages: the crypto of receive + decrypt (the rest of receiving — TCP,
 *   yamux, framing — is in the snapshot-sync bench's `raw.cpuSecPerGiB.client`).
 * `sum` adds them up. 1 GiB (`--quick`: 32 MiB), one run. Figures are CPU time, so they hold on a busy
 * machine better than rates, but record them on a quiet one.
 */
import { randomBytes, randomFillSync } from 'node:crypto'
import path from 'node:path'
import { createGenesis } from '../src/chain/genesis.ts'
import { Codecs } from '../src/chain/codecs.ts'
import { ChainStore } from '../src/store/chain-store.ts'
import { sha256 } from '../src/crypto/hash.ts'
import { ChunkKind, accountEntry, decodeChunk, embeddingEntry, encodeChunk, type ChunkEntry } from '../src/snapshot/chunk-format.ts'
import { chunkPartial } from '../src/snapshot/sync/chunk-hash-pool.ts'
import { nodeNoiseCrypto } from '../src/net/noise-crypto.ts'
import { TempDirs, isMain, printFigures, log, threadCpu, type Figures, type BenchOptions } from './util.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB
const DIM = 1024

interface Chunk { kind: ChunkKind, bytes: Uint8Array, entries: ChunkEntry[] }

/** ~`total` bytes of chunks: accounts (~1.5 % of the bytes, as in the snapshot-sync bench) and embeddings. */
function makeChunks (total: number): Chunk[] {
  const chunks: Chunk[] = []
  const sorted = (es: ChunkEntry[]): ChunkEntry[] => es.sort((a, b) => Buffer.compare(a.key, b.key))
  let bytes = 0
  // accounts: ~17,000 per 1 MiB chunk
  const accountBytes = Math.max(MiB, Math.floor(total * 0.015))
  while (bytes < accountBytes) {
    const es: ChunkEntry[] = []
    for (let i = 0; i < 17_000; i++) es.push(accountEntry(randomBytes(32), Codecs.AccountState.encode({ balance: 1 + i * 7919, nonce: i % 500, lastModifiedEpoch: 0 })))
    const c = encodeChunk(ChunkKind.ACCOUNTS, 0, sorted(es))
    chunks.push({ kind: ChunkKind.ACCOUNTS, bytes: c, entries: es })
    bytes += c.byteLength
  }
  const owner = randomBytes(32)
  while (bytes < total) {
    const es: ChunkEntry[] = []
    for (let i = 0; i < 250; i++) {
      const words = randomFillSync(new Uint32Array(DIM))
      const vector = new Float32Array(DIM)
      for (let k = 0; k < DIM; k++) vector[k] = words[k] / 2 ** 31 - 1
      es.push(embeddingEntry(randomBytes(32), Codecs.Embedding.encode({ owner, commitIndex: 1 + (i % 20), vector: new Uint8Array(vector.buffer), model: 'bench', epoch: 0 })))
    }
    const c = encodeChunk(ChunkKind.EMBEDDINGS, 0, sorted(es))
    chunks.push({ kind: ChunkKind.EMBEDDINGS, bytes: c, entries: es })
    bytes += c.byteLength
  }
  return chunks
}

/** CPU seconds of `fn`: this thread's (`thread`), or every thread of the process. */
async function cpu (fn: () => unknown, scope: 'thread' | 'process'): Promise<number> {
  if (scope === 'thread') {
    const u0 = process.threadCpuUsage?.() ?? process.cpuUsage()
    await fn()
    const u = process.threadCpuUsage?.(u0) ?? process.cpuUsage(u0)
    return (u.user + u.system) / 1e6
  }
  const a = threadCpu()
  const u0 = process.cpuUsage()
  await fn()
  const b = threadCpu()
  if (a !== undefined && b !== undefined) return b.total - a.total
  const u = process.cpuUsage(u0)
  return (u.user + u.system) / 1e6
}

export async function run (opts: BenchOptions = {}): Promise<Figures> {
  const total = opts.quick === true ? 32 * MiB : GiB
  const tmp = new TempDirs()
  const figures: Figures = {}
  try {
    log(`building ${(total / MiB).toFixed(0)} MiB of chunks`)
    const chunks = makeChunks(total)
    const bytes = chunks.reduce((s, c) => s + c.bytes.byteLength, 0)
    const perGiB = (sec: number): number => sec / (bytes / GiB)
    figures['chunks'] = chunks.length
    figures['MiB'] = bytes / MiB

    log('sha256, decodeChunk, state elements')
    figures['sha256.cpuSecPerGiB'] = perGiB(await cpu(() => { for (const c of chunks) sha256(c.bytes) }, 'thread'))
    figures['decodeChunk.cpuSecPerGiB'] = perGiB(await cpu(() => { for (const c of chunks) decodeChunk(c.bytes) }, 'thread'))
    figures['stateElements.cpuSecPerGiB'] = perGiB(await cpu(() => { for (const c of chunks) chunkPartial(c.bytes) }, 'thread'))

    log('Noise ChaCha20-Poly1305, 64 KiB messages')
    const k = randomBytes(32)
    const ad = new Uint8Array(0)
    const nonce = new Uint8Array(12)
    const msg = randomBytes(64 * 1024 - 16)
    const rounds = Math.ceil(bytes / msg.byteLength)
    figures['noise.cpuSecPerGiB'] = perGiB(await cpu(() => {
      for (let i = 0; i < rounds; i++) {
        const ct = nodeNoiseCrypto.chaCha20Poly1305Encrypt(msg, nonce, ad, k)
        nodeNoiseCrypto.chaCha20Poly1305Decrypt(ct, nonce, ad, k)
      }
    }, 'thread'))

    const genesis = createGenesis({ seed: 'bench-sync-work', validators: 4, accounts: 2, initialBalance: 1, embeddingDim: DIM })
    log('pack writes: each chunk once, with its index rows')
    {
      const store = await ChainStore.open(path.join(tmp.make('packs'), 'chain'), { genesis })
      figures['packWrite.cpuSecPerGiB'] = perGiB(await cpu(async () => {
        // a few in flight, as the download's lanes write them
        const inflight = new Set<Promise<unknown>>()
        for (const c of chunks) {
          const p = store.packs.commit(store.batch(), [{ hash: sha256(c.bytes), bytes: c.bytes }]).finally(() => inflight.delete(p))
          inflight.add(p)
          if (inflight.size >= 4) await Promise.race(inflight)
        }
        await Promise.all(inflight)
        await store.close()
      }, 'process'))
    }

    log('state writes: every entry once, 8 MiB batches')
    {
      const store = await ChainStore.open(path.join(tmp.make('state'), 'chain'), { genesis })
      figures['stateWrite.cpuSecPerGiB'] = perGiB(await cpu(async () => {
        let batch = store.batch()
        let writing: Promise<void> | undefined
        for (const c of chunks) {
          for (const e of c.entries) {
            if (c.kind === ChunkKind.ACCOUNTS) batch.putAccount(e.id, e.value)
            else batch.putEmbedding(e.id, e.value)
          }
          if (batch.byteLength >= 8 * MiB) {
            await writing
            writing = batch.write()
            batch = store.batch()
          }
        }
        await writing
        await batch.write()
        await store.close()
      }, 'process'))
    }
    figures['sum.cpuSecPerGiB'] = ['sha256', 'decodeChunk', 'stateElements', 'noise', 'packWrite', 'stateWrite'].reduce((s, k) => s + figures[`${k}.cpuSecPerGiB`], 0)
    return figures
  } finally {
    tmp.cleanup()
  }
}

if (isMain(import.meta.url)) {
  const figures = await run({ quick: process.argv.includes('--quick') })
  printFigures('snapshot sync: the necessary work, CPU s per GiB', figures)
}
