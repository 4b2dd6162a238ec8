/**
 * Benchmark of src/snapshot/cuckoo-filter.ts against the `bloom-filters` package's CuckooFilter.
 *
 *     node bench/cuckoo-filter.ts [n]        # default n = 1 000 000
 *
 * Prints a JSON object of figures, then a human-readable table, to stdout (progress goes to stderr).
 * `run()` returns the same figures for a bench runner.
 *
 * What is measured (all items are 32-byte pseudo-random "digests" from a fixed-seed generator, so runs
 * are comparable; the filter cannot tell them from sha256 output):
 * - ours at the default parameters (FPR ≤ 1e-5 → 32-bit fingerprints), sized by forCapacity(n):
 *   insert, build() (dedupe + sort + insert), lookups of members / non-members through containsAt()
 *   (no allocation) and through contains() on per-item subarray views, bits per item, measured FPR;
 * - ours filled to 95 % of the largest table that n items can fill that much (the design load, where
 *   kick chains happen): the same figures;
 * - `bloom-filters` CuckooFilter.create(bloomN, 1e-5) (bucket size 4, 500 kicks), on a smaller N because
 *   it is slow: insert/lookup ops/s, insert failures, false negatives (inserted items whose has() is
 *   false), measured FPR, nominal and heap-measured bits per item; and ours at the same N.
 *
 * Timings are the median of several rounds (best also given for ours); the machine is a noisy VM.
 */
import { pathToFileURL } from 'node:url'
import v8 from 'node:v8'
import vm from 'node:vm'
import bloomFilters from 'bloom-filters' // CommonJS: under Node ESM only the default import (module.exports) is reliable
import { CuckooFilter, DEFAULT_FPR, HASH_BYTES, BUCKET_SIZE } from '../src/snapshot/cuckoo-filter.ts'

const TARGET_LOOKUPS_PER_SEC = 10_000_000

export interface CuckooBenchOptions {
  /** Items for our filter (default 1 000 000). */
  n?: number
  /** Items for the bloom-filters CuckooFilter (default min(n, 100 000)). */
  bloomN?: number
  /** Timing rounds (default 5). */
  rounds?: number
}

/** splitmix32: fixed-seed pseudo-random words. */
function randomHashes (count: number, seed: number): Uint8Array {
  let s = seed >>> 0
  const words = new Uint32Array(count * 8)
  for (let i = 0; i < words.length; i++) {
    s = (s + 0x9e3779b9) | 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    words[i] = (z ^ (z >>> 16)) >>> 0
  }
  return new Uint8Array(words.buffer)
}

function views (buf: Uint8Array, count: number): Uint8Array[] {
  const out = new Array<Uint8Array>(count)
  for (let i = 0; i < count; i++) out[i] = buf.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES)
  return out
}

/** Buffer views (the bloom-filters input type), built in their own frame so no temporaries stay reachable. */
function buffers (buf: Uint8Array, count: number): Buffer[] {
  const out = new Array<Buffer>(count)
  for (let i = 0; i < count; i++) out[i] = Buffer.from(buf.buffer, buf.byteOffset + i * HASH_BYTES, HASH_BYTES)
  return out
}

interface Timing { median: number, best: number }

/** ops/s over `rounds` runs of `body` (each after an untimed `setup`): median and best. */
function opsPerSec (rounds: number, ops: number, body: () => void, setup: () => void = () => {}): Timing {
  const rates: number[] = []
  for (let r = 0; r < rounds; r++) {
    setup()
    const t0 = process.hrtime.bigint()
    body()
    const ns = Number(process.hrtime.bigint() - t0)
    rates.push(ops / (ns / 1e9))
  }
  rates.sort((a, b) => a - b)
  return { median: rates[Math.floor(rates.length / 2)], best: rates[rates.length - 1] }
}

let gcFn: (() => void) | null | undefined
function gc (): boolean {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc')
      gcFn = vm.runInNewContext('gc') as () => void
    } catch {
      gcFn = null
    }
  }
  if (gcFn === null) return false
  gcFn(); gcFn()
  return true
}

function log (msg: string): void { process.stderr.write(`[cuckoo-bench] ${msg}\n`) }

/** Insert + lookup figures for our filter, filled with `count` items of `members`. */
function measureOurs (filter: () => CuckooFilter, members: Uint8Array, count: number, non: Uint8Array, nonCount: number, rounds: number) {
  let f = filter()
  const insert = opsPerSec(Math.max(3, Math.ceil(rounds / 2)), count, () => {
    for (let i = 0, o = 0; i < count; i++, o += HASH_BYTES) {
      if (!f.insertAt(members, o)) throw new Error(`our filter rejected item ${i} at load ${f.loadFactor()}`)
    }
  }, () => { f = filter() })
  let found = 0
  const member = opsPerSec(rounds, count, () => {
    found = 0
    for (let i = 0, o = 0; i < count; i++, o += HASH_BYTES) if (f.containsAt(members, o)) found++
  })
  let fps = 0
  const nonMember = opsPerSec(rounds, nonCount, () => {
    fps = 0
    for (let i = 0, o = 0; i < nonCount; i++, o += HASH_BYTES) if (f.containsAt(non, o)) fps++
  })
  return { filter: f, insert, member, nonMember, falseNegatives: count - found, falsePositives: fps }
}

export async function run (opts: CuckooBenchOptions = {}): Promise<Record<string, number>> {
  const n = opts.n ?? 1_000_000
  const bloomN = opts.bloomN ?? Math.min(n, 100_000)
  const rounds = opts.rounds ?? 5
  const nonCount = Math.max(2 * n, 2_000_000)
  const out: Record<string, number> = {}

  log(`generating ${n} member and ${nonCount} non-member hashes`)
  const members = randomHashes(n, 1)
  const non = randomHashes(nonCount, 2)

  // ---- bloom-filters CuckooFilter on bloomN items (first, so that the heap measurement is not disturbed
  // by garbage from the other phases), then ours on the same items further down
  log(`bloom-filters CuckooFilter: n=${bloomN}`)
  const bloomMembers = buffers(members, bloomN)
  const bloomNonCount = Math.min(nonCount, 2 * bloomN)
  const bloomNon = buffers(non, bloomNonCount)
  const haveGc = gc()
  const heapBefore = process.memoryUsage().heapUsed
  let bf = bloomFilters.CuckooFilter.create(bloomN, DEFAULT_FPR)
  let bloomRejected = 0
  const accepted = new Uint8Array(bloomN)
  const bloomInsert = opsPerSec(1, bloomN, () => {
    for (let i = 0; i < bloomN; i++) {
      if (bf.add(bloomMembers[i])) accepted[i] = 1
      else bloomRejected++
    }
  })
  gc()
  const heapAfter = process.memoryUsage().heapUsed
  let bloomFalseNegatives = 0
  const bloomMember = opsPerSec(Math.min(rounds, 3), bloomN, () => {
    bloomFalseNegatives = 0
    for (let i = 0; i < bloomN; i++) if (!bf.has(bloomMembers[i]) && accepted[i] === 1) bloomFalseNegatives++
  })
  let bloomFps = 0
  const bloomNonMember = opsPerSec(Math.min(rounds, 3), bloomNonCount, () => {
    bloomFps = 0
    for (let i = 0; i < bloomNonCount; i++) if (bf.has(bloomNon[i])) bloomFps++
  })
  // fingerprints are the first `fingerprintLength` hex characters of a 64-bit hash: 4 bits each
  const bloomFpBits = bf.fingerprintLength * 4
  const bloomSlots = bf.size * bf.bucketSize
  Object.assign(out, {
    bloomN,
    bloomFingerprintBits: bloomFpBits,
    bloomBuckets: bf.size,
    bloomBucketsPowerOfTwo: Number((bf.size & (bf.size - 1)) === 0),
    bloomInsertOpsPerSec: bloomInsert.median,
    bloomInsertFailures: bloomRejected,
    bloomLookupMemberOpsPerSec: bloomMember.median,
    bloomLookupNonMemberOpsPerSec: bloomNonMember.median,
    bloomFalseNegatives,
    bloomNonMemberLookups: bloomNonCount,
    bloomFalsePositives: bloomFps,
    bloomMeasuredFpr: bloomFps / bloomNonCount,
    bloomTheoreticalFpr: 1 - Math.pow(1 - Math.pow(2, -bloomFpBits), 2 * bf.bucketSize * (bf.length / bloomSlots)),
    bloomNominalBitsPerItem: bloomSlots * bloomFpBits / bloomN,
    bloomHeapBitsPerItem: haveGc ? (heapAfter - heapBefore) * 8 / bloomN : NaN
  })
  bf = null as unknown as typeof bf

  // ---- ours, default parameters, sized by forCapacity(n)
  log(`ours: n=${n}, default parameters`)
  const main = measureOurs(() => CuckooFilter.forCapacity(n), members, n, non, nonCount, rounds)
  const f = main.filter
  const memberViews = views(members, n)
  let viewFound = 0
  const viaViews = opsPerSec(rounds, n, () => {
    viewFound = 0
    for (let i = 0; i < n; i++) if (f.contains(memberViews[i])) viewFound++
  })
  let built: CuckooFilter | null = null
  const build = opsPerSec(3, n, () => { built = CuckooFilter.build(memberViews) })
  const builtFilter = built as unknown as CuckooFilter
  Object.assign(out, {
    n,
    fingerprintBits: f.fingerprintBits,
    log2Buckets: f.log2Buckets,
    loadFactor: f.loadFactor(),
    insertOpsPerSec: main.insert.median,
    insertOpsPerSecBest: main.insert.best,
    buildOpsPerSec: build.median,
    lookupMemberOpsPerSec: main.member.median,
    lookupMemberOpsPerSecBest: main.member.best,
    lookupNonMemberOpsPerSec: main.nonMember.median,
    lookupNonMemberOpsPerSecBest: main.nonMember.best,
    lookupViaViewsOpsPerSec: viaViews.median,
    falseNegatives: main.falseNegatives + (n - viewFound) + (builtFilter.count === n ? 0 : n - builtFilter.count),
    nonMemberLookups: nonCount,
    falsePositives: main.falsePositives,
    measuredFpr: main.falsePositives / nonCount,
    theoreticalFpr: f.theoreticalFpr(f.loadFactor()),
    theoreticalFprFullLoad: f.theoreticalFpr(),
    targetFpr: DEFAULT_FPR,
    bitsPerItem: f.bitsPerItem(),
    serializedBytes: f.toBytes().length
  })

  // ---- ours at the design load (95 %): the largest power-of-two table that ≤ n items fill to 95 %
  const log2At95 = Math.max(0, Math.floor(Math.log2(n / (BUCKET_SIZE * 0.95))))
  const n95 = Math.floor(0.95 * BUCKET_SIZE * 2 ** log2At95)
  log(`ours: ${n95} items at 95 % load (2^${log2At95} buckets)`)
  const d = measureOurs(() => new CuckooFilter({ log2Buckets: log2At95 }), members, n95, non, nonCount, rounds)
  Object.assign(out, {
    n95,
    log2Buckets95: log2At95,
    loadFactor95: d.filter.loadFactor(),
    insert95OpsPerSec: d.insert.median,
    lookup95MemberOpsPerSec: d.member.median,
    lookup95NonMemberOpsPerSec: d.nonMember.median,
    falseNegatives95: d.falseNegatives,
    falsePositives95: d.falsePositives,
    measuredFpr95: d.falsePositives / nonCount,
    theoreticalFpr95: d.filter.theoreticalFpr(d.filter.loadFactor()),
    bitsPerItem95: d.filter.bitsPerItem()
  })

  log(`ours: n=${bloomN}, default parameters`)
  const small = measureOurs(() => CuckooFilter.forCapacity(bloomN), members, bloomN, non, bloomNonCount, rounds)
  Object.assign(out, {
    oursAtBloomNInsertOpsPerSec: small.insert.median,
    oursAtBloomNLookupMemberOpsPerSec: small.member.median,
    oursAtBloomNLookupNonMemberOpsPerSec: small.nonMember.median,
    oursAtBloomNFalseNegatives: small.falseNegatives,
    oursAtBloomNBitsPerItem: small.filter.bitsPerItem()
  })

  const worstLookup = Math.min(out.lookupMemberOpsPerSec, out.lookupNonMemberOpsPerSec)
  out.lookupVsTarget = worstLookup / TARGET_LOOKUPS_PER_SEC
  out.lookup95VsTarget = Math.min(out.lookup95MemberOpsPerSec, out.lookup95NonMemberOpsPerSec) / TARGET_LOOKUPS_PER_SEC
  out.lookupSpeedupVsBloom = out.oursAtBloomNLookupMemberOpsPerSec / out.bloomLookupMemberOpsPerSec
  out.insertSpeedupVsBloom = out.oursAtBloomNInsertOpsPerSec / out.bloomInsertOpsPerSec
  return out
}

function fmtRate (x: number): string { return `${(x / 1e6).toFixed(2)} M/s` }
function fmtFpr (x: number): string { return x === 0 ? '0' : x.toExponential(2) }
function fmtNum (x: number, digits = 2): string {
  if (!Number.isFinite(x)) return String(x)
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e7)) return x.toExponential(digits)
  return Number.isInteger(x) ? String(x) : x.toFixed(digits)
}

/** A plain-text table of `run()` figures. */
export function formatTable (r: Record<string, number>): string {
  const rows: Array<[string, string, string, string]> = [
    ['', `ours, n=${r.n} (forCapacity)`, `ours, n=${r.n95} (95 % load)`, `bloom-filters, n=${r.bloomN}`],
    ['fingerprint bits', String(r.fingerprintBits), String(r.fingerprintBits), `${r.bloomFingerprintBits} (asked for FPR ${fmtFpr(r.targetFpr)})`],
    ['buckets', `2^${r.log2Buckets}`, `2^${r.log2Buckets95}`, `${r.bloomBuckets} (power of two: ${r.bloomBucketsPowerOfTwo === 1 ? 'yes' : 'no'})`],
    ['load factor', fmtNum(r.loadFactor, 3), fmtNum(r.loadFactor95, 3), '-'],
    ['insert', fmtRate(r.insertOpsPerSec), fmtRate(r.insert95OpsPerSec), fmtRate(r.bloomInsertOpsPerSec)],
    ['build() (dedupe+sort+insert)', fmtRate(r.buildOpsPerSec), '-', '-'],
    ['lookup, members', fmtRate(r.lookupMemberOpsPerSec), fmtRate(r.lookup95MemberOpsPerSec), fmtRate(r.bloomLookupMemberOpsPerSec)],
    ['lookup, non-members', fmtRate(r.lookupNonMemberOpsPerSec), fmtRate(r.lookup95NonMemberOpsPerSec), fmtRate(r.bloomLookupNonMemberOpsPerSec)],
    ['lookup, contains(view)', fmtRate(r.lookupViaViewsOpsPerSec), '-', '-'],
    ['false negatives', String(r.falseNegatives), String(r.falseNegatives95), `${r.bloomFalseNegatives} (+${r.bloomInsertFailures} rejected inserts)`],
    ['measured FPR', `${fmtFpr(r.measuredFpr)} (${r.falsePositives}/${r.nonMemberLookups})`, `${fmtFpr(r.measuredFpr95)} (${r.falsePositives95}/${r.nonMemberLookups})`, `${fmtFpr(r.bloomMeasuredFpr)} (${r.bloomFalsePositives}/${r.bloomNonMemberLookups})`],
    ['theoretical FPR at this load', fmtFpr(r.theoreticalFpr), fmtFpr(r.theoreticalFpr95), fmtFpr(r.bloomTheoreticalFpr)],
    ['bits per item', fmtNum(r.bitsPerItem, 1), fmtNum(r.bitsPerItem95, 1), `${fmtNum(r.bloomNominalBitsPerItem, 1)} nominal, ${fmtNum(r.bloomHeapBitsPerItem, 0)} heap`]
  ]
  const widths = [0, 1, 2, 3].map(c => Math.max(...rows.map(row => row[c].length)))
  const line = (row: string[]): string => row.map((cell, c) => cell.padEnd(widths[c])).join(' | ')
  const lines = [line(rows[0]), widths.map(w => '-'.repeat(w)).join('-|-'), ...rows.slice(1).map(line)]
  lines.push('')
  lines.push(`ours at n=${r.bloomN}: insert ${fmtRate(r.oursAtBloomNInsertOpsPerSec)}, lookup members ${fmtRate(r.oursAtBloomNLookupMemberOpsPerSec)}, non-members ${fmtRate(r.oursAtBloomNLookupNonMemberOpsPerSec)}, ${r.oursAtBloomNFalseNegatives} false negatives, ${fmtNum(r.oursAtBloomNBitsPerItem, 1)} bits/item`)
  lines.push(`speed-up vs bloom-filters at n=${r.bloomN}: lookups ×${fmtNum(r.lookupSpeedupVsBloom, 0)}, inserts ×${fmtNum(r.insertSpeedupVsBloom, 0)}`)
  lines.push(`lookups vs the 10 M/s target (slower of members/non-members): ×${fmtNum(r.lookupVsTarget)} at n=${r.n}, ×${fmtNum(r.lookup95VsTarget)} at 95 % load`)
  lines.push('(rates: median of rounds; bloom-filters fingerprints are hex characters, 4 bits each)')
  return lines.join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = process.argv[2]
  const result = await run(arg !== undefined ? { n: Number(arg) } : {})
  process.stdout.write(JSON.stringify(result, null, 2) + '\n\n' + formatTable(result) + '\n')
}
