/**
 * Child process for test/store/packs.test.ts: opens (or creates) a store and commits blobs to its packs
 * in a tight loop, three writers at once (so that a kill can leave unindexed bytes inside a pack as well
 * as at its tail), in small packs (1 MiB: many roll-overs), until it is killed. Prints "ready" once
 * writing. usage: node pack-writer.ts <dir> <seed>
 */
import { pathToFileURL } from 'node:url'
import { createHash } from 'node:crypto'
import { createGenesis } from '../../src/chain/genesis.ts'
import { ChainStore } from '../../src/store/chain-store.ts'

export const PACK_WRITER_GENESIS = { validators: 4, accounts: 10, initialBalance: 1e9, embeddingDim: 8 }
export const PACK_WRITER_MAX_PACK_BYTES = 1024 * 1024

/** Deterministic blob bytes of a counter (8 B to 12 KiB). */
export function writerBlob (seed: string, n: number): Uint8Array {
  const h = createHash('sha256').update(`${seed}/${n}`).digest()
  const len = 8 + (h.readUInt32BE(0) % (12 * 1024))
  const out = Buffer.alloc(len)
  for (let i = 0; i < len; i += 32) h.copy(out, i, 0, Math.min(32, len - i))
  out.writeUInt32BE(n >>> 0, 0)
  return out
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [dir, seed] = process.argv.slice(2)
  const store = await ChainStore.open(dir, { genesis: createGenesis({ seed, ...PACK_WRITER_GENESIS }), maxPackBytes: PACK_WRITER_MAX_PACK_BYTES })
  let n = Math.floor(Math.random() * 1e9)
  process.stdout.write('ready\n')
  setTimeout(() => process.exit(3), 60_000).unref()
  const writer = async (): Promise<void> => {
    while (true) {
      const blobs = Array.from({ length: 1 + (n % 5) }, () => {
        const bytes = writerBlob(seed, n++)
        return { hash: new Uint8Array(createHash('sha256').update(bytes).digest()), bytes }
      })
      await store.packs.commit(store.batch(), blobs)
    }
  }
  await Promise.all([writer(), writer(), writer()])
}
