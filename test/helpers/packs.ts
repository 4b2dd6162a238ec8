/** Test helpers for the pack files (src/store/packs.ts): damaging a stored chunk in place. */
import { open } from 'node:fs/promises'
import path from 'node:path'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { packFileName } from '../../src/store/packs.ts'

/** The path of a pack file of a store. */
export function packPath (store: ChainStore, pack: number): string {
  return path.join(store.packs.dir, packFileName(pack))
}

/** Overwrites the stored bytes of an indexed blob in its pack file (same length), as a failing disk would. */
export async function overwriteBlob (store: ChainStore, hash: Uint8Array, bytes: Uint8Array): Promise<void> {
  const [loc] = await store.packs.locate([hash])
  if (loc === undefined) throw new Error('blob not stored')
  if (loc.length !== bytes.byteLength) throw new Error(`blob is ${loc.length} bytes, not ${bytes.byteLength}`)
  const fh = await open(packPath(store, loc.pack), 'r+')
  try {
    await fh.write(bytes, 0, bytes.byteLength, loc.offset)
  } finally {
    await fh.close()
  }
}
