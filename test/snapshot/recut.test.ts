/**
 * Property test of the incremental re-cut (src/snapshot/builder.ts `recut`): for random groups, random
 * edits (inserts, removals, value changes, anywhere: before the first key, between chunks, at the end)
 * and chunk sizes small enough that the size limit forces cuts too, re-cutting the old chunks around the
 * edits gives exactly the chunks of a fresh pass over the new entries, and encodes only chunks whose range
 * held an edit.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { recut } from '../../src/snapshot/builder.ts'
import { ChunkKind, Chunker, accountEntry, type BuiltChunk, type ChunkEntry, type ChunkInfo } from '../../src/snapshot/chunk-format.ts'
import { compareBytes } from '../../src/crypto/hash.ts'
import { Prng } from '../../src/devnet/prng.ts'
import { hex } from '../helpers/chain.ts'

function chunkAll (entries: ChunkEntry[], params: { modulus: number, maxBytes: number }): BuiltChunk[] {
  const out: BuiltChunk[] = []
  const c = new Chunker(ChunkKind.ACCOUNTS, 1, params, x => out.push(x))
  for (const e of entries) c.add(e)
  c.finish()
  return out
}

test('recut around random edits equals a fresh chunking of the new entries', async () => {
  const rng = new Prng('recut-property')
  const key = (): Uint8Array => Uint8Array.from({ length: 32 }, () => rng.int(256))
  const value = (): Uint8Array => Uint8Array.from({ length: 1 + rng.int(12) }, () => rng.int(256))
  let cases = 0
  let forcedCases = 0
  for (let iter = 0; iter < 300; iter++) {
    const n = rng.int(120)
    const params = { modulus: 1 + rng.int(12), maxBytes: 60 + rng.int(400) }
    const old = Array.from({ length: n }, () => accountEntry(key(), value())).sort((a, b) => compareBytes(a.key, b.key))
    const oldChunks = chunkAll(old, params)
    const byHash = new Map(oldChunks.map(c => [hex(c.info.hash), c]))
    const oldEntriesOf = new Map<string, ChunkEntry[]>()
    let i = 0
    for (const c of oldChunks) { oldEntriesOf.set(hex(c.info.hash), old.slice(i, i + c.info.entries)); i += c.info.entries }

    // random edits
    const next = new Map(old.map(e => [hex(e.key), e]))
    const delta = new Map<string, { key: Uint8Array, entry: ChunkEntry | null }>()
    const edits = rng.int(6) + (n === 0 ? 1 : 0)
    for (let k = 0; k < edits; k++) {
      const r = rng.int(3)
      if (r === 0 || next.size === 0) {
        const e = accountEntry(key(), value())
        next.set(hex(e.key), e); delta.set(hex(e.key), { key: e.key, entry: e })
      } else {
        const victim = [...next.values()][rng.int(next.size)]
        if (r === 1) { next.delete(hex(victim.key)); delta.set(hex(victim.key), { key: victim.key, entry: null }) } else {
          const e = accountEntry(victim.key, value())
          next.set(hex(e.key), e); delta.set(hex(e.key), { key: e.key, entry: e })
        }
      }
    }
    const newEntries = [...next.values()].sort((a, b) => compareBytes(a.key, b.key))
    const fresh = chunkAll(newEntries, params)
    if (fresh.some(c => c.bytes.byteLength >= params.maxBytes)) forcedCases++

    let encoded = 0
    const loaded: string[] = []
    const got = await recut(ChunkKind.ACCOUNTS, 1, oldChunks.map(c => c.info), [...delta.values()].sort((a, b) => compareBytes(a.key, b.key)), params,
      async (info: ChunkInfo) => { loaded.push(hex(info.hash)); return oldEntriesOf.get(hex(info.hash))! },
      () => {}, c => { encoded += c.chunks })
    assert.deepEqual(got.map(c => hex(c.hash)), fresh.map(c => hex(c.info.hash)), `case ${iter}`)
    // work: every chunk encoded is new or re-cut because its range held an edit; the old chunks read are
    // those the edits fell in (and at most the ones a forced cut made it run into)
    const kept = got.filter(c => byHash.has(hex(c.hash))).length
    assert.ok(encoded <= got.length - kept + loaded.length, `case ${iter}: ${encoded} encoded`)
    cases++
  }
  assert.equal(cases, 300)
  assert.ok(forcedCases > 30, `forced cuts happen in many cases (${forcedCases})`)
})
