/**
 * LevelDB alone: the write and read rates that bound snapshot sync's two LevelDB-heavy phases, measured
 * with the ChainStore's options (src/store/chain-store.ts: 64 MiB write buffer, 32 MiB cache, no
 * compression, 32 MiB files) and writes in 8 MiB batches, as the sync writes them.
 *
 *     node bench/leveldb.ts [--quick]
 *
 * - `write.random1MiB`: 1 MiB values under random 32-byte keys, the shape of snapshot chunks (keyed by
 *   hash) as the chunks phase stores them;
 * - `read.random1MiB`: the same values read back with getMany, 4 at a time in key order of the listing
 *   (random), as the load reads the chunks;
 * - `write.random4KiB`: 4 KiB values under random 32-byte keys, the shape of the embeddings (keyed by
 *   transaction digest) the load writes;
 * - `write.sequential4KiB`: the same under increasing 8-byte keys, which LevelDB moves down its levels
 *   without rewriting them: what a layout with sequential keys would allow.
 *
 * 1 GiB per figure (`--quick`: 32 MiB), one run each on a fresh store; MiB/s of values, and the CPU
 * seconds per GiB the process spent writing them (all its threads, until close() returns; `.levelDB`:
 * libuv's pool and LevelDB's compaction thread).
 */
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { ClassicLevel } from 'classic-level'
import { TempDirs, isMain, printFigures, log, threadCpu, cpuDelta, type Figures, type BenchOptions } from './util.ts'

type Db = ClassicLevel<Uint8Array, Uint8Array>

async function open (dir: string): Promise<Db> {
  const db: Db = new ClassicLevel<Uint8Array, Uint8Array>(dir, {
    keyEncoding: 'view',
    valueEncoding: 'view',
    writeBufferSize: 64 * 1024 * 1024,
    cacheSize: 32 * 1024 * 1024,
    compression: false,
    maxFileSize: 32 * 1024 * 1024
  })
  await db.open()
  return db
}

/** Writes `total` bytes of `valueBytes` values; returns MiB/s and the keys written. */
async function write (db: Db, total: number, valueBytes: number, sequential: boolean): Promise<{ MiBPerSec: number, keys: Uint8Array[] }> {
  const value = randomBytes(valueBytes)
  const n = Math.floor(total / valueBytes)
  const keys: Uint8Array[] = []
  let ops: Array<{ type: 'put', key: Uint8Array, value: Uint8Array }> = []
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    let key: Uint8Array
    if (sequential) {
      const k = Buffer.alloc(8)
      k.writeBigUInt64BE(BigInt(i))
      key = k
    } else {
      key = randomBytes(32)
    }
    keys.push(key)
    ops.push({ type: 'put', key, value })
    if (ops.length * valueBytes >= 8 * 1024 * 1024) { await db.batch(ops); ops = [] }
  }
  if (ops.length > 0) await db.batch(ops)
  const s = (performance.now() - t0) / 1000
  return { MiBPerSec: n * valueBytes / 1024 / 1024 / s, keys }
}

export async function run (opts: BenchOptions = {}): Promise<Figures> {
  const total = opts.quick === true ? 32 * 1024 * 1024 : 1024 * 1024 * 1024
  const tmp = new TempDirs()
  const figures: Figures = { MiB: total / 1024 / 1024 }
  try {
    for (const [name, valueBytes, sequential] of [['random1MiB', 1024 * 1024, false], ['random4KiB', 4096, false], ['sequential4KiB', 4096, true]] as const) {
      log(`writing ${total / 1024 / 1024} MiB of ${valueBytes} B values under ${sequential ? 'sequential' : 'random'} keys`)
      const db = await open(path.join(tmp.make(`leveldb-${name}`), 'db'))
      const cpu0 = threadCpu()
      try {
        const w = await write(db, total, valueBytes, sequential)
        figures[`write.${name}.MiBPerSec`] = w.MiBPerSec
        // CPU of the whole process while it wrote, and until close() had let LevelDB finish the
        // compaction it was running: the main thread making the batches, libuv's threads writing them,
        // the compaction thread (Linux /proc)
        await db.close()
        const cpu1 = threadCpu()
        if (cpu0 !== undefined && cpu1 !== undefined) {
          const d = cpuDelta(cpu0, cpu1)
          const gib = total / (1024 * 1024 * 1024)
          figures[`write.${name}.cpuSecPerGiB`] = d.total / gib
          figures[`write.${name}.cpuSecPerGiB.levelDB`] = (d.libuv + d.other) / gib
        }
        if (name === 'random1MiB') {
          log('reading them back, 4 at a time')
          await db.open()
          const t0 = performance.now()
          let bytes = 0
          for (let i = 0; i < w.keys.length; i += 4) {
            for (const v of await db.getMany(w.keys.slice(i, i + 4))) bytes += v?.byteLength ?? 0
          }
          figures[`read.${name}.MiBPerSec`] = bytes / 1024 / 1024 / ((performance.now() - t0) / 1000)
        }
      } finally {
        await db.close()
      }
    }
    figures['write.sequential4KiB/random4KiB'] = figures['write.sequential4KiB.MiBPerSec'] / figures['write.random4KiB.MiBPerSec']
    return figures
  } finally {
    tmp.cleanup()
  }
}

if (isMain(import.meta.url)) {
  printFigures('leveldb', await run({ quick: process.argv.includes('--quick') }))
}
