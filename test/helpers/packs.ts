/** Test helpers for the pack files (src/store/packs.ts): damaging a stored chunk in place, checking the packs after a crash. */
import assert from 'node:assert/strict'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { open } from 'node:fs/promises'
import path from 'node:path'
import type { ChainStore } from '../../src/store/chain-store.ts'
import { PackKeys, packFileName } from '../../src/store/packs.ts'
import { sha256, toHex } from '../../src/crypto/hash.ts'

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

/**
 * The pack layout's consistency after a crash (and the open that recovers from it): every indexed blob
 * reads back and hashes to its key, has its record row, and every pack file has indexed blobs and ends
 * at its last one (no unindexed tail). Returns the indexed hashes (hex).
 */
export async function checkPacks (store: ChainStore): Promise<Set<string>> {
  const ends = new Map<number, number>()
  const hashes = new Set<string>()
  for await (const e of store.packs.entries()) {
    const bytes = await store.packs.read(e.loc)
    assert.ok(bytes !== undefined, `blob ${toHex(e.hash)} reads back`)
    assert.equal(toHex(sha256(bytes)), toHex(e.hash), `blob ${toHex(e.hash)} is intact`)
    assert.ok(await store.db.get(PackKeys.record(e.loc.pack, e.loc.offset)) !== undefined, `blob ${toHex(e.hash)} has its record row`)
    ends.set(e.loc.pack, Math.max(ends.get(e.loc.pack) ?? 0, e.loc.offset + e.loc.length))
    hashes.add(toHex(e.hash))
  }
  const files = existsSync(store.packs.dir) ? readdirSync(store.packs.dir).filter(f => f.endsWith('.pack')) : []
  for (const f of files) {
    const id = parseInt(f, 16)
    assert.ok(ends.has(id), `pack ${f} has indexed blobs (else it is deleted at open)`)
    assert.equal(statSync(path.join(store.packs.dir, f)).size, ends.get(id), `pack ${f} ends at its last indexed blob`)
  }
  return hashes
}
