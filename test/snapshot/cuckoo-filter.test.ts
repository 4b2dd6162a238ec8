import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  CuckooFilter, CuckooFilterFullError, InvalidFilterError, HASH_BYTES, FILTER_HEADER_BYTES,
  DEFAULT_FINGERPRINT_BITS, minFingerprintBitsForFpr, theoreticalFpr
} from '../../src/snapshot/cuckoo-filter.ts'
import { sha256, toHex } from '../../src/crypto/hash.ts'

// ------------------------------------------------------------------ helpers

/** sha256 of a label and a counter: the kind of item the filter holds. */
function shaItem (label: string, i: number): Uint8Array {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(i)
  return sha256(Buffer.from(label), b)
}

function shaItems (label: string, n: number): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let i = 0; i < n; i++) out.push(shaItem(label, i))
  return out
}

/** Deterministic PRNG (splitmix32): reproducible "random" hashes without the cost of sha256. */
function prng (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x9e3779b9) | 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
}

/** n pseudo-random 32-byte hashes back to back. */
function randomHashes (n: number, seed: number): Uint8Array {
  const rnd = prng(seed)
  const words = new Uint32Array(n * 8)
  for (let i = 0; i < words.length; i++) words[i] = rnd()
  return new Uint8Array(words.buffer)
}

function hashAt (buf: Uint8Array, i: number): Uint8Array {
  return buf.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES)
}

function shuffled<T> (arr: readonly T[], seed: number): T[] {
  const out = arr.slice()
  const rnd = prng(seed)
  for (let i = out.length - 1; i > 0; i--) {
    const j = rnd() % (i + 1)
    const t = out[i]; out[i] = out[j]; out[j] = t
  }
  return out
}

/** Fill a fresh filter with the hashes of `buf` up to `load` of its slots; asserts every insert succeeds. */
function fillTo (filter: CuckooFilter, buf: Uint8Array, load: number): number {
  const n = Math.floor(load * filter.capacity)
  assert.ok(n * HASH_BYTES <= buf.length)
  for (let i = 0; i < n; i++) assert.equal(filter.insertAt(buf, i * HASH_BYTES), true, `insert ${i} of ${n} failed`)
  return n
}

function isInvalidFilter (re: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof InvalidFilterError, `expected InvalidFilterError, got ${String(err)}`)
    assert.equal(err.name, 'InvalidFilterError')
    assert.match(err.message, re)
    return true
  }
}

// ------------------------------------------------------------------ membership

test('every inserted sha256 hash is found, at 95 % load, with kicks', () => {
  const filter = new CuckooFilter({ log2Buckets: 16 }) // 262 144 slots, default 32-bit fingerprints
  const n = Math.floor(0.95 * filter.capacity) // 249 036 items
  const items = shaItems('member', n)
  let failed = 0
  for (let i = 0; i < n; i++) if (!filter.insert(items[i])) failed++
  assert.equal(failed, 0, 'inserts failed below 95 % load')
  assert.equal(filter.count, n)
  assert.ok(filter.loadFactor() >= 0.95 - 1e-5 && filter.loadFactor() <= 0.95 + 1e-5)
  assert.ok(filter.kicks > 1000, `expected kick chains at 95 % load, got ${filter.kicks} kicks`)
  let missing = 0
  for (const h of items) if (!filter.contains(h)) missing++
  assert.equal(missing, 0, 'false negatives')
  // the same through containsAt on one concatenated buffer
  const all = Buffer.concat(items)
  for (let i = 0; i < n; i++) if (!filter.containsAt(all, i * HASH_BYTES)) missing++
  assert.equal(missing, 0, 'false negatives via containsAt')
})

test('build() of 200k sha256 hashes finds them all and sizes for the default FPR', () => {
  const items = shaItems('build', 200_000)
  const filter = CuckooFilter.build(items)
  assert.equal(filter.count, 200_000)
  assert.equal(filter.fingerprintBits, DEFAULT_FINGERPRINT_BITS)
  assert.ok(filter.loadFactor() <= 0.95)
  for (const h of items) assert.equal(filter.contains(h), true)
})

// ------------------------------------------------------------------ false positives

for (const [bits, lookups] of [[12, 2_000_000], [16, 4_000_000]] as const) {
  test(`measured FPR at 95 % load is within 2x of theory (f = ${bits})`, () => {
    const filter = new CuckooFilter({ log2Buckets: 16, fingerprintBits: bits })
    const members = randomHashes(Math.floor(0.95 * filter.capacity), 1000 + bits)
    fillTo(filter, members, 0.95)
    const theory = filter.theoreticalFpr(filter.loadFactor())
    let fp = 0
    const batch = 1 << 16
    let seed = 2000 + bits
    for (let done = 0; done < lookups; done += batch) {
      const non = randomHashes(batch, seed++)
      for (let i = 0; i < batch; i++) if (filter.containsAt(non, i * HASH_BYTES)) fp++
    }
    const measured = fp / lookups
    assert.ok(measured >= theory / 2 && measured <= theory * 2, `measured FPR ${measured} vs theory ${theory}`)
    // and the theoretical value is the one documented: ≈ 2·b·load / 2^f
    assert.ok(Math.abs(theory - 8 * 0.95 / 2 ** bits) / theory < 0.01)
  })
}

test('the default parameters meet FPR <= 1e-5 (theoretically), and measure ~0 false positives', () => {
  assert.equal(minFingerprintBitsForFpr(1e-5), 20)
  assert.ok(theoreticalFpr(20) <= 1e-5 && theoreticalFpr(19) > 1e-5)
  const filter = CuckooFilter.forCapacity(100_000)
  assert.equal(filter.fingerprintBits, 32)
  assert.ok(filter.theoreticalFpr() <= 1e-5, 'upper bound at full load')
  assert.ok(filter.theoreticalFpr(0.95) <= 1e-5, 'at the design load')
  assert.ok(filter.theoreticalFpr() < 2e-9)
  const members = randomHashes(100_000, 7)
  for (let i = 0; i < 100_000; i++) assert.equal(filter.insertAt(members, i * HASH_BYTES), true)
  let fp = 0
  for (let round = 0; round < 16; round++) {
    const non = randomHashes(1 << 16, 100 + round)
    for (let i = 0; i < 1 << 16; i++) if (filter.containsAt(non, i * HASH_BYTES)) fp++
  }
  assert.ok(fp <= 1, `${fp} false positives in 1M lookups at FPR ~1e-9`)
})

test('forCapacity: power-of-two buckets, load <= loadFactor, fingerprint width from fpr', () => {
  for (const n of [0, 1, 3, 4, 100, 996_147, 996_148, 1_000_000]) {
    const f = CuckooFilter.forCapacity(n)
    assert.equal(f.numBuckets, 2 ** f.log2Buckets)
    assert.ok(n <= 0.95 * f.capacity, `n=${n} capacity=${f.capacity}`)
    if (f.log2Buckets > 0) assert.ok(n > 0.95 * f.capacity / 2, `n=${n}: not the smallest table`)
  }
  assert.equal(CuckooFilter.forCapacity(1_000_000).log2Buckets, 19) // 2^18 buckets hold only 996 147 at 95 %
  assert.equal(CuckooFilter.forCapacity(1000, { fpr: 1e-3 }).fingerprintBits, 16) // needs 13 → 16-bit slots
  assert.equal(CuckooFilter.forCapacity(1000, { fpr: 0.05 }).fingerprintBits, 8) // needs 8
  assert.equal(CuckooFilter.forCapacity(1000, { fpr: 1e-8 }).fingerprintBits, 32) // needs 30
  assert.equal(CuckooFilter.forCapacity(1000, { fingerprintBits: 12 }).fingerprintBits, 12)
  assert.equal(CuckooFilter.forCapacity(1000, { fingerprintBits: 12 }).storageBits, 16)
  assert.equal(CuckooFilter.forCapacity(1000, { fingerprintBits: 20 }).storageBits, 32)
  assert.equal(CuckooFilter.forCapacity(100, { loadFactor: 0.5 }).capacity, 256)
  assert.throws(() => CuckooFilter.forCapacity(1000, { fingerprintBits: 12, fpr: 1e-5 }), RangeError)
  assert.throws(() => CuckooFilter.forCapacity(1000, { fpr: 1e-12 }), RangeError)
  assert.throws(() => CuckooFilter.forCapacity(1000, { fingerprintBits: 7 }), RangeError)
  assert.throws(() => CuckooFilter.forCapacity(1000, { fingerprintBits: 33 }), RangeError)
  assert.throws(() => CuckooFilter.forCapacity(1000, { loadFactor: 1.5 }), RangeError)
  assert.throws(() => CuckooFilter.forCapacity(-1), RangeError)
  assert.throws(() => new CuckooFilter({ log2Buckets: 30 }), RangeError)
  const f = new CuckooFilter({ log2Buckets: 10, fingerprintBits: 16 })
  assert.equal(f.bitsPerItem(), Infinity)
  fillTo(f, randomHashes(4096, 3), 0.5)
  assert.equal(f.bitsPerItem(), 32)
})

// ------------------------------------------------------------------ deletion

for (const bits of [8, 16, 32]) {
  test(`deleting half near full load never removes another item (f = ${bits})`, () => {
    const filter = new CuckooFilter({ log2Buckets: 14, fingerprintBits: bits })
    const buf = randomHashes(filter.capacity, 50 + bits)
    const n = fillTo(filter, buf, 0.95)
    assert.ok(filter.kicks > 0, 'no kicks happened')
    for (let i = 1; i < n; i += 2) assert.equal(filter.deleteAt(buf, i * HASH_BYTES), true, `delete ${i}`)
    assert.equal(filter.count, n - Math.floor(n / 2))
    for (let i = 0; i < n; i += 2) assert.equal(filter.containsAt(buf, i * HASH_BYTES), true, `item ${i} lost`)
    if (bits === 32) {
      let still = 0
      for (let i = 1; i < n; i += 2) if (filter.containsAt(buf, i * HASH_BYTES)) still++
      assert.equal(still, 0, 'deleted items still reported present with 32-bit fingerprints')
    }
    // refill with the deleted half (more kicks), then delete the other half
    for (let i = 1; i < n; i += 2) assert.equal(filter.insertAt(buf, i * HASH_BYTES), true)
    for (let i = 0; i < n; i += 2) assert.equal(filter.deleteAt(buf, i * HASH_BYTES), true)
    for (let i = 1; i < n; i += 2) assert.equal(filter.containsAt(buf, i * HASH_BYTES), true, `item ${i} lost`)
  })
}

test('random insert/delete churn at ~95 % load keeps every live item (f = 8: many fingerprint collisions)', () => {
  const filter = new CuckooFilter({ log2Buckets: 10, fingerprintBits: 8 })
  const pool = randomHashes(8000, 99)
  const live: number[] = []
  const isLive = new Uint8Array(8000)
  let next = 0
  const rnd = prng(5)
  const target = Math.floor(0.95 * filter.capacity)
  for (let step = 0; step < 40_000; step++) {
    const doInsert = live.length < target - 20 || (live.length < target + 20 && rnd() % 2 === 0)
    if (doInsert) {
      let k = rnd() % 8000
      if (next < 8000 && rnd() % 4 !== 0) k = next++
      if (isLive[k]) continue
      const before = filter.toBytes()
      if (filter.insertAt(pool, k * HASH_BYTES)) {
        live.push(k); isLive[k] = 1
      } else {
        assert.deepEqual(filter.toBytes(), before, 'a failed insert changed the filter')
      }
    } else {
      const pos = rnd() % live.length
      const k = live[pos]
      live[pos] = live[live.length - 1]; live.pop(); isLive[k] = 0
      assert.equal(filter.deleteAt(pool, k * HASH_BYTES), true)
    }
    if (step % 2000 === 0 || step === 39_999) {
      assert.equal(filter.count, live.length)
      for (const k of live) assert.equal(filter.containsAt(pool, k * HASH_BYTES), true, `live item ${k} lost at step ${step}`)
    }
  }
  assert.ok(filter.kicks > 1000)
})

test('duplicates: each insert stores a copy, each delete removes one', () => {
  const filter = new CuckooFilter({ log2Buckets: 4 })
  const h = shaItem('dup', 1)
  assert.equal(filter.insert(h), true)
  assert.equal(filter.insert(h), true)
  assert.equal(filter.count, 2)
  assert.equal(filter.delete(h), true)
  assert.equal(filter.contains(h), true)
  assert.equal(filter.delete(h), true)
  assert.equal(filter.contains(h), false)
  assert.equal(filter.delete(h), false)
  assert.equal(filter.count, 0)
})

// ------------------------------------------------------------------ overload

test('insert at overload fails cleanly: exact rollback, nothing dropped, add() throws CuckooFilterFullError', () => {
  const filter = new CuckooFilter({ log2Buckets: 8, fingerprintBits: 16 }) // 1024 slots
  const buf = randomHashes(4000, 11)
  const members: number[] = []
  let i = 0
  while (filter.insertAt(buf, i * HASH_BYTES)) members.push(i++)
  assert.ok(filter.loadFactor() > 0.9, `first failure at load ${filter.loadFactor()}`)
  let failures = 0
  for (i = i + 0; i < 4000; i++) {
    const before = filter.toBytes()
    const count = filter.count
    if (filter.insertAt(buf, i * HASH_BYTES)) {
      members.push(i)
    } else {
      failures++
      assert.deepEqual(filter.toBytes(), before, `failed insert ${i} modified the filter`)
      assert.equal(filter.count, count)
    }
  }
  assert.ok(failures > 2000, `only ${failures} failures`)
  assert.equal(filter.count, members.length)
  for (const k of members) assert.equal(filter.containsAt(buf, k * HASH_BYTES), true, `member ${k} dropped`)

  const before = filter.toBytes()
  const extra = shaItem('overflow', 0)
  assert.throws(() => filter.add(extra), (err: unknown) => {
    assert.ok(err instanceof CuckooFilterFullError)
    assert.equal(err.name, 'CuckooFilterFullError')
    assert.equal(err.capacity, 1024)
    return true
  })
  assert.deepEqual(filter.toBytes(), before)
})

// ------------------------------------------------------------------ determinism

test('build() is order-independent: shuffled, reversed and duplicated input give identical bytes and hash', () => {
  for (const n of [1000, 20_000]) { // both sort paths (comparison sort < 4096 ≤ radix sort)
    const items = shaItems(`set-${n}`, n)
    const ref = CuckooFilter.build(items)
    const refBytes = ref.toBytes()
    const refHash = ref.hash()
    const variants: Iterable<Uint8Array>[] = [
      items.slice().reverse(),
      shuffled(items, 1),
      shuffled(items, 2),
      new Set(shuffled(items, 3)),
      [...items, ...shuffled(items, 4).slice(0, 100).map(h => Uint8Array.from(h))] // duplicates (as copies)
    ]
    for (const v of variants) {
      const f = CuckooFilter.build(v)
      assert.equal(f.count, n)
      assert.deepEqual(f.toBytes(), refBytes)
      assert.deepEqual(f.hash(), refHash)
    }
    // the canonical bucket order is an invariant: canonicalize() changes nothing
    assert.deepEqual(ref.clone().canonicalize().toBytes(), refBytes)
    // a different set gives a different filter
    assert.notDeepEqual(CuckooFilter.build(items.slice(1)).hash(), refHash)
  }
})

test('build() sorts bytewise beyond the first 8 bytes (ties) and dedupes', () => {
  const base = randomHashes(1250, 21)
  const items: Uint8Array[] = []
  for (let i = 0; i < 1250; i++) {
    for (let v = 0; v < 4; v++) { // 4 hashes sharing their first 8 bytes, differing at byte 31 or 8
      const h = Uint8Array.from(hashAt(base, i))
      if (v & 1) h[31] ^= 0x55
      if (v & 2) h[8] ^= 0x0f
      items.push(h)
    }
  }
  const ref = CuckooFilter.build(items, { fingerprintBits: 16 }).toBytes() // 5000 items: radix path
  assert.deepEqual(CuckooFilter.build(shuffled(items, 8), { fingerprintBits: 16 }).toBytes(), ref)
  const small = items.slice(0, 400)
  assert.deepEqual(CuckooFilter.build(shuffled(small, 9), { fingerprintBits: 16 }).toBytes(), CuckooFilter.build(small, { fingerprintBits: 16 }).toBytes())
  // identical fingerprints and buckets (same first 8 bytes) but distinct items: all 4 stored
  assert.equal(CuckooFilter.build(items, { fingerprintBits: 16 }).count, 5000)
})

test('golden vectors: the filter of a fixed set has a fixed hash on every machine', () => {
  const items = shaItems('golden', 1000)
  const filter = CuckooFilter.build(items)
  assert.equal(filter.log2Buckets, 9)
  assert.equal(filter.fingerprintBits, 32)
  assert.equal(toHex(filter.toBytes().subarray(0, FILTER_HEADER_BYTES)), '53434631' + '01' + '20' + '04' + '09' + 'e8030000')
  assert.equal(toHex(filter.hash()), 'a0b655f902333a0d2fc122f5792291a540d3fc58cae8d37a450b012bc3e16421')
  // 12-bit fingerprints at 94.7 % load: pins the kick sequence and the alternate-bucket hash as well
  const f12 = CuckooFilter.build(items.slice(0, 970), { fingerprintBits: 12 })
  assert.equal(f12.log2Buckets, 8)
  assert.ok(f12.kicks > 100)
  assert.equal(toHex(f12.hash()), '4a3c990c29d5585f20a277a664bfa199708706821141b7ac546e789973c6a7c9')
  // a set that does not fit at 97.7 % keeps the size its count gives (2^8 buckets) and stashes the two
  // hashes whose kick chains failed. (Changed deliberately in issue 16: this vector used to be rebuilt
  // with twice the buckets, hash 41dd9901…, which made the size depend on the items.)
  const over = CuckooFilter.build(shuffled(items, 6), { fingerprintBits: 12, loadFactor: 0.98 })
  assert.equal(over.log2Buckets, 8)
  assert.equal(over.stashed, 2)
  assert.equal(over.toBytes().length, FILTER_HEADER_BYTES + 1024 * 2 + 2 * 32)
  assert.equal(toHex(over.hash()), '3d31e32b8e598028cb1dd520a33f7d2bad777cbd777948dcd5216b63d31b8a53')
})

test('replaying the same updates on a deserialized copy gives the same bytes', () => {
  const original = CuckooFilter.build(shaItems('replay', 1900), { fingerprintBits: 16 }) // ~93 % of 2048 slots
  const copy = CuckooFilter.fromBytes(original.toBytes())
  const extra = shaItems('replay-extra', 200)
  for (const f of [original, copy]) {
    for (let i = 0; i < 1900; i += 3) f.delete(shaItem('replay', i))
    for (const h of extra) f.insert(h)
  }
  assert.ok(original.kicks > 0)
  assert.deepEqual(copy.toBytes(), original.toBytes())
})

// ------------------------------------------------------------------ serialization

test('toBytes/fromBytes round trip for every slot width', () => {
  const items = shaItems('roundtrip', 3000)
  for (const bits of [8, 12, 16, 20, 24, 32]) {
    const filter = CuckooFilter.build(items, { fingerprintBits: bits })
    const bytes = filter.toBytes()
    const width = bits <= 8 ? 1 : bits <= 16 ? 2 : 4
    assert.equal(bytes.length, FILTER_HEADER_BYTES + filter.capacity * width)
    assert.equal(Buffer.from(bytes.subarray(0, 4)).toString('latin1'), 'SCF1')
    assert.equal(bytes[4], 1)
    assert.equal(bytes[5], bits)
    assert.equal(bytes[6], 4)
    assert.equal(bytes[7], filter.log2Buckets)
    assert.equal(Buffer.from(bytes).readUInt32LE(8), 3000)
    // parse from an unaligned copy
    const unaligned = new Uint8Array(bytes.length + 1).subarray(1)
    unaligned.set(bytes)
    const back = CuckooFilter.fromBytes(unaligned)
    assert.ok(back.equals(filter))
    assert.equal(back.count, 3000)
    assert.equal(back.fingerprintBits, bits)
    assert.deepEqual(back.toBytes(), bytes)
    assert.deepEqual(back.hash(), filter.hash())
    for (const h of items) assert.equal(back.contains(h), true)
  }
  const empty = new CuckooFilter({ log2Buckets: 0 })
  assert.ok(CuckooFilter.fromBytes(empty.toBytes()).equals(empty))
})

test('fromBytes rejects malformed input with InvalidFilterError', () => {
  const filter = CuckooFilter.build(shaItems('bad', 500), { fingerprintBits: 12 }) // 256 buckets, 16-bit slots
  const good = filter.toBytes()
  const mutate = (fn: (b: Uint8Array, dv: DataView) => void): Uint8Array => {
    const b = Uint8Array.from(good)
    fn(b, new DataView(b.buffer))
    return b
  }
  const slotAt = (b: Uint8Array, i: number): number => b[FILTER_HEADER_BYTES + 2 * i] | (b[FILTER_HEADER_BYTES + 2 * i + 1] << 8)
  // find a bucket with >= 2 fingerprints and one with exactly 1
  let full = -1
  let single = -1
  for (let k = 0; k < filter.numBuckets; k++) {
    const used = [0, 1, 2, 3].filter(j => slotAt(good, 4 * k + j) !== 0).length
    if (used >= 2 && full < 0 && slotAt(good, 4 * k) !== slotAt(good, 4 * k + 1)) full = k
    if (used === 1 && single < 0) single = k
  }
  assert.ok(full >= 0 && single >= 0)
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['empty', new Uint8Array(0), /truncated/],
    ['header only, short', good.subarray(0, 11), /truncated/],
    ['truncated body', good.subarray(0, good.length - 1), /truncated/],
    ['header without body', good.subarray(0, FILTER_HEADER_BYTES), /truncated/],
    ['trailing byte', Uint8Array.from([...good, 0]), /trailing/],
    ['bad magic', mutate(b => { b[3] = 0x32 }), /magic/],
    ['garbage', randomHashes(100, 1), /magic/],
    ['version 2', mutate(b => { b[4] = 2 }), /version/],
    ['version 0', mutate(b => { b[4] = 0 }), /version/],
    ['fingerprint bits 7', mutate(b => { b[5] = 7 }), /fingerprint bits/],
    ['fingerprint bits 33', mutate(b => { b[5] = 33 }), /fingerprint bits/],
    ['fingerprint bits 32 (wrong width)', mutate(b => { b[5] = 32 }), /truncated|trailing/],
    ['bucket size 2', mutate(b => { b[6] = 2 }), /bucket size/],
    ['log2 buckets 30', mutate(b => { b[7] = 30 }), /log2/],
    ['log2 buckets 9 (wrong length)', mutate(b => { b[7] = 9 }), /truncated/],
    ['count + 1', mutate((_b, dv) => { dv.setUint32(8, 501, true) }), /count mismatch/],
    ['count 0', mutate((_b, dv) => { dv.setUint32(8, 0, true) }), /count mismatch/],
    ['fingerprint above 12 bits', mutate((_b, dv) => { dv.setUint16(FILTER_HEADER_BYTES + 8 * full, 0x1000 | slotAt(good, 4 * full), true) }), /does not fit/],
    ['unsorted bucket', mutate((_b, dv) => {
      const a = slotAt(good, 4 * full); const c = slotAt(good, 4 * full + 1)
      dv.setUint16(FILTER_HEADER_BYTES + 8 * full, c, true); dv.setUint16(FILTER_HEADER_BYTES + 8 * full + 2, a, true)
    }), /not canonical/],
    ['empty slot first', mutate((_b, dv) => {
      const a = slotAt(good, 4 * single)
      dv.setUint16(FILTER_HEADER_BYTES + 8 * single, 0, true); dv.setUint16(FILTER_HEADER_BYTES + 8 * single + 2, a, true)
    }), /not canonical/]
  ]
  for (const [name, bytes, re] of cases) {
    assert.throws(() => CuckooFilter.fromBytes(bytes), isInvalidFilter(re), name)
  }
  assert.ok(CuckooFilter.fromBytes(good).equals(filter), 'the unmodified bytes parse')
})

test('a single flipped bit anywhere in the serialization changes hash()', () => {
  const filter = CuckooFilter.build(shaItems('flip', 700))
  const bytes = filter.toBytes()
  const ref = toHex(filter.hash())
  assert.equal(ref, toHex(sha256(bytes)))
  const rnd = prng(77)
  let parsed = 0
  const positions = [...Array.from({ length: FILTER_HEADER_BYTES * 8 }, (_, i) => i), ...Array.from({ length: 300 }, () => rnd() % (bytes.length * 8))]
  for (const bit of positions) {
    const flipped = Uint8Array.from(bytes)
    flipped[bit >> 3] ^= 1 << (bit & 7)
    assert.notEqual(toHex(sha256(flipped)), ref)
    let other: CuckooFilter
    try { other = CuckooFilter.fromBytes(flipped) } catch (err) { assert.ok(err instanceof InvalidFilterError); continue }
    parsed++
    assert.notEqual(toHex(other.hash()), ref, `bit ${bit}`)
    assert.equal(other.equals(filter), false)
  }
  assert.ok(parsed > 0)
  // and any content change changes it: one delete
  const g = filter.clone()
  assert.equal(g.delete(shaItem('flip', 5)), true)
  assert.notEqual(toHex(g.hash()), ref)
})

// ------------------------------------------------------------------ API edges

test('inputs must be 32-byte hashes; canonicalize() restores canonical buckets', () => {
  const filter = new CuckooFilter({ log2Buckets: 4, fingerprintBits: 16 })
  assert.throws(() => filter.insert(new Uint8Array(31)), RangeError)
  assert.throws(() => filter.contains(new Uint8Array(33)), RangeError)
  assert.throws(() => filter.delete(new Uint8Array(0)), RangeError)
  const buf = randomHashes(3, 4)
  assert.throws(() => filter.containsAt(buf, 65), RangeError)
  assert.throws(() => filter.insertAt(buf, -1), RangeError)
  assert.throws(() => CuckooFilter.build([new Uint8Array(16)]), RangeError)
  assert.equal(filter.containsAt(buf, 64), false)
  assert.equal(filter.insertAt(buf, 64), true)
  assert.equal(filter.containsAt(buf, 64), true)

  const built = CuckooFilter.build(shaItems('canon', 50), { fingerprintBits: 16 })
  const bytes = built.toBytes()
  const scrambled = built.clone()
  const slots = (scrambled as unknown as { slots: Uint16Array }).slots
  for (let p = 0; p < slots.length; p += 4) slots.subarray(p, p + 4).reverse()
  assert.notDeepEqual(scrambled.toBytes(), bytes)
  assert.throws(() => CuckooFilter.fromBytes(scrambled.toBytes()), InvalidFilterError)
  assert.deepEqual(scrambled.canonicalize().toBytes(), bytes)
})

// ------------------------------------------------------------------ canonical form (issue 16)

test('build(): the size is a function of the count alone; sets that do not fit stash, nothing doubles', () => {
  let stashedSets = 0
  for (let t = 0; t < 600; t++) {
    // at the 95 % sizing edge of 1..128 buckets, where kick chains fail most
    const k = t % 8
    const n = Math.floor(0.95 * 4 * 2 ** k)
    const hashes = randomHashes(n, 50_000 + t)
    const items = Array.from({ length: n }, (_, i) => hashAt(hashes, i))
    const f = CuckooFilter.build(items)
    assert.equal(f.log2Buckets, CuckooFilter.forCapacity(n).log2Buckets, `set ${t}`)
    assert.equal(f.count, n)
    for (const h of items) assert.equal(f.contains(h), true)
    if (f.stashed > 0) {
      stashedSets++
      const back = CuckooFilter.fromBytes(f.toBytes())
      assert.ok(back.equals(f))
      assert.equal(back.stashed, f.stashed)
      for (const h of items) assert.equal(back.contains(h), true)
    }
  }
  assert.ok(stashedSets > 5, `${stashedSets} sets needed the stash`) // ~5 % do
})

test('canonicalBuilder: ascending hashes one at a time give build()\'s bytes; order and count are enforced', () => {
  for (const [n, seed] of [[0, 1], [7, 2], [243, 3], [2000, 4]] as const) {
    const items = Array.from({ length: n }, (_, i) => hashAt(randomHashes(n, seed), i))
    const sorted = [...items].sort((a, b) => Buffer.compare(a, b))
    const b = CuckooFilter.canonicalBuilder(n)
    for (const h of sorted) b.push(h)
    assert.deepEqual(b.finish().toBytes(), CuckooFilter.build(items).toBytes())
  }
  // with stashed hashes too
  let found = false
  for (let t = 0; t < 200 && !found; t++) {
    const items = Array.from({ length: 121 }, (_, i) => hashAt(randomHashes(121, 90_000 + t), i))
    const ref = CuckooFilter.build(items)
    if (ref.stashed === 0) continue
    found = true
    const b = CuckooFilter.canonicalBuilder(121)
    const all = new Uint8Array(121 * 32)
    items.sort((x, y) => Buffer.compare(x, y)).forEach((h, i) => all.set(h, i * 32))
    for (let i = 0; i < 121; i++) b.push(all, i * 32)
    assert.deepEqual(b.finish().toBytes(), ref.toBytes())
  }
  assert.ok(found)
  const h = randomHashes(3, 5)
  const sorted = [0, 1, 2].map(i => hashAt(h, i)).sort((a, b) => Buffer.compare(a, b))
  const b = CuckooFilter.canonicalBuilder(3)
  b.push(sorted[1])
  assert.throws(() => b.push(sorted[0]), /not above the previous/)
  assert.throws(() => b.push(sorted[1]), /not above the previous/)
  assert.throws(() => b.finish(), /1 hashes pushed, 3 announced/)
  b.push(sorted[2])
  assert.throws(() => b.push(h, 0.5), /non-negative integer/)
})

test('incremental updates reach another placement than build() of the same set (why snapshots rebuild)', () => {
  // the situation of the issue: the same set through two histories
  const a = shaItems('history-a', 900)
  const b = shaItems('history-b', 100)
  const viaUpdates = CuckooFilter.build([...a, ...b], { fingerprintBits: 32 })
  for (const h of b) assert.equal(viaUpdates.delete(h), true)
  const extra = shaItems('history-c', 100)
  for (const h of extra) assert.equal(viaUpdates.insert(h), true)
  const canonical = CuckooFilter.build([...a, ...extra])
  assert.equal(viaUpdates.count, canonical.count)
  assert.equal(viaUpdates.log2Buckets, canonical.log2Buckets)
  assert.notEqual(toHex(viaUpdates.hash()), toHex(canonical.hash()), 'placement depends on history')
  for (const h of [...a, ...extra]) assert.equal(viaUpdates.contains(h), true)
})

test('the stash: lookups, deletes and fromBytes validation', () => {
  let f: CuckooFilter | undefined
  let items: Uint8Array[] = []
  for (let t = 0; f === undefined; t++) {
    items = Array.from({ length: 60 }, (_, i) => hashAt(randomHashes(60, 70_000 + t), i))
    const g = CuckooFilter.build(items, { fingerprintBits: 8, loadFactor: 1 }) // 16 buckets, 64 slots
    if (g.stashed >= 2) f = g
  }
  const bytes = f.toBytes()
  const slotsEnd = FILTER_HEADER_BYTES + f.capacity
  const stashed = Array.from({ length: f.stashed }, (_, k) => bytes.subarray(slotsEnd + 32 * k, slotsEnd + 32 * (k + 1)))
  for (const h of stashed) assert.equal(f.contains(h), true)
  // a stashed hash is deleted from the stash
  const g = f.clone()
  assert.equal(g.delete(stashed[0]), true)
  assert.equal(g.stashed, f.stashed - 1)
  assert.equal(g.count, f.count - 1)
  assert.equal(CuckooFilter.fromBytes(g.toBytes()).equals(g), true)
  // non-canonical stashes are refused
  const swapped = Uint8Array.from(bytes)
  swapped.set(stashed[1], slotsEnd)
  swapped.set(stashed[0], slotsEnd + 32)
  assert.throws(() => CuckooFilter.fromBytes(swapped), isInvalidFilter(/stash is not canonical/))
  const dup = Uint8Array.from(bytes)
  dup.set(stashed[0], slotsEnd + 32)
  assert.throws(() => CuckooFilter.fromBytes(dup), isInvalidFilter(/stash is not canonical/))
  assert.throws(() => CuckooFilter.fromBytes(bytes.subarray(0, bytes.length - 32)), isInvalidFilter(/count mismatch/))
  assert.throws(() => CuckooFilter.fromBytes(Uint8Array.from([...bytes, ...stashed[0]])), isInvalidFilter(/trailing/))
  assert.ok(CuckooFilter.fromBytes(bytes).equals(f))
})

test('offsets are checked as integers on every path: insertAt(buf, 0.5) is refused', () => {
  const filter = new CuckooFilter({ log2Buckets: 4, fingerprintBits: 16 })
  const buf = randomHashes(3, 6)
  for (const bad of [0.5, 1.5, 32.25, NaN, Infinity, -0.5, -1]) {
    assert.throws(() => filter.insertAt(buf, bad), /non-negative integer/, `insertAt ${bad}`)
    assert.throws(() => filter.containsAt(buf, bad), /non-negative integer/, `containsAt ${bad}`)
    assert.throws(() => filter.deleteAt(buf, bad), /non-negative integer/, `deleteAt ${bad}`)
  }
  assert.equal(filter.count, 0, 'nothing was inserted')
  assert.equal(filter.insertAt(buf, 32), true)
  assert.equal(filter.containsAt(buf, 32), true)
})
