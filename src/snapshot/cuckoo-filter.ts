/**
 * A Cuckoo filter over 32-byte item hashes (sha256 digests of snapshot chunks), built for two jobs:
 * answering "is this chunk hash in the attested snapshot?" very fast, and being *reproducible*: the
 * same set of hashes gives a byte-identical filter (and so the same {@link CuckooFilter.hash}) on every
 * machine, whatever order the hashes arrive in.
 *
 * ## Layout
 *
 * - `2^log2Buckets` buckets of {@link BUCKET_SIZE} = 4 slots, one flat typed array (`Uint8Array`,
 *   `Uint16Array` or `Uint32Array` by fingerprint width, see below). Slot value 0 means empty.
 * - Items are already uniformly distributed digests, so nothing is rehashed:
 *   - primary bucket `i1 = u32le(hash[0..4]) & mask`,
 *   - fingerprint `fp = u32le(hash[4..8]) >>> (32 - f)` (the top `f` bits of that word); the value 0
 *     is reserved for "empty", so a zero fingerprint is stored as 1,
 *   - alternate bucket `i2 = i1 XOR (altHash(fp) & mask)`. Because the bucket count is a power of two,
 *     `mask = numBuckets - 1` and XOR is an involution: from either bucket, `i XOR altHash(fp)` gives the
 *     other one. (Filters that reduce with `% numBuckets` for a non-power-of-two size lose this
 *     property, so a kicked fingerprint can land where lookups never look: false negatives.)
 *   - `altHash` is a fixed 32-bit integer mix (`Math.imul` by 0x5bd1e995 and xor-shifts, see
 *     {@link altHash}); exact integer arithmetic, so it is the same on every machine. It is part of
 *     format version 1.
 * - Every bucket is kept in *canonical order* at all times: non-empty fingerprints ascending (as
 *   unsigned integers), empty slots last. All mutating methods maintain this, the serialization is the
 *   raw slot array, and {@link CuckooFilter.fromBytes} rejects non-canonical buckets, so the state ↔
 *   bytes mapping is one-to-one and a filter loaded from bytes evolves exactly like the original
 *   under the same sequence of operations (kick choices depend only on bucket contents).
 *
 * ## False-positive rate and the default fingerprint width
 *
 * A lookup for a non-member compares its fingerprint with the (occupied) slots of 2 buckets × b = 4
 * slots. Each occupied slot matches with probability ≈ 2^-f, so at load α
 *
 *     FPR(f, α) = 1 - (1 - 2^-f)^(2bα)  ≤  2b / 2^f = 8 / 2^f.
 *
 * The requirement FPR ≤ ε = 1e-5 at the design load needs 2^f ≥ 8/ε = 8e5, i.e. f ≥ log2(8e5) = 19.6
 * → f ≥ 20 bits. Fingerprints are stored in aligned typed-array slots (8, 16 or 32 bits: one load per
 * slot, no bit unpacking, which is what makes lookups fast), so any f in 17..32 costs a 32-bit slot.
 * {@link CuckooFilter.forCapacity} therefore rounds the fingerprint width derived from the requested
 * FPR up to the slot width: the default (ε = 1e-5 → 20 bits → 32-bit slots) uses **f = 32**, which has
 * the same speed and memory as f = 20 and FPR ≈ 8/2^32 ≈ 1.9e-9 (7.6e-6 would be the figure at f = 20).
 * Space at the design load: 32 / 0.95 ≈ 33.7 bits per item. (Bit-packed 20- or 24-bit slots would save
 * 25–37 % of that but need multi-byte unaligned loads per slot; not done: speed first.) An explicit
 * `fingerprintBits` (any integer 8..32) is honoured as given, e.g. 12 or 16 to make the FPR measurable.
 *
 * Because the bucket count is a power of two, the actual load after {@link CuckooFilter.forCapacity}(n)
 * is between loadFactor/2 and loadFactor, so bits/item ranges from 33.7 up to 67.4 (f = 32).
 *
 * Note: with small fingerprints (f = 8) there are only 255 distinct alternate-bucket offsets, which lowers
 * the load reachable in large tables (a known cuckoo-filter property); the defaults do not have this issue.
 *
 * ## Insertion, kicks and failures
 *
 * If both candidate buckets are full, a deterministic kick chain starts (no `Math.random`): the victim
 * slot is `(kick + carriedFingerprint) & 3` (skipping a slot holding the carried fingerprint itself),
 * the victim moves to its alternate bucket, and so on, for at most `maxKicks` (default 500) steps.
 * Every bucket touched is logged; when the chain fails the log is replayed backwards so the filter is
 * restored **exactly** (byte-identical) to its state before the call, and `insert` returns false
 * (`add` throws {@link CuckooFilterFullError}). An insert therefore never reports success while dropping
 * an item, and a failed insert never drops one: no false negatives, ever.
 *
 * ## Deletion
 *
 * `delete(hash)` removes exactly one copy of the item's fingerprint from its primary bucket, or else its
 * alternate bucket. Deleting an item that *was* inserted can never cause a false negative for another
 * item: another item with the same fingerprint whose buckets include one of ours has the *same* bucket
 * pair (its other bucket is `i XOR altHash(fp)` too), so whichever identical copy is removed, one copy
 * remains for the survivor. Deleting an item that was never inserted is the caller's error: if its
 * fingerprint collides with a stored one in its buckets (probability ≈ FPR), that other item's
 * fingerprint is removed and the other item may then be reported absent — the standard cuckoo-filter
 * caveat. Inserting the same hash k times stores k copies (up to 2b = 8); each delete removes one.
 *
 * ## The canonical filter of a set (what a snapshot attests)
 *
 * Plain cuckoo insertion is order-dependent: which bucket of its pair a fingerprint ends up in depends
 * on what was inserted and deleted before. {@link CuckooFilter.build} makes construction a function of
 * the *set* alone:
 *
 * 1. size: `log2Buckets = forCapacity(n).log2Buckets` for the number n of distinct hashes (and the
 *    fingerprint width): a function of the count alone, never of the items;
 * 2. the distinct hashes are inserted in ascending bytewise order, each with the deterministic kicks
 *    above, into the empty table;
 * 3. a hash whose kick chain fails (the table is restored exactly, as for any failed insert) goes to the
 *    **stash**: a sorted list of full 32-byte hashes kept beside the table, and insertion goes on with
 *    the next hash. At the default 95 % sizing this is rare (it happens for some small sets at the
 *    sizing edge); it replaces the former retry with twice the buckets, which made the size depend on
 *    the items.
 *
 * Incremental `insert`/`delete` sequences are deterministic too, but build(S) followed by updates
 * generally differs from build(S') for the resulting set S'; snapshots therefore always attest
 * `build(listing hashes)` (src/snapshot/builder.ts). A verifier holding the sorted hashes recomputes the
 * canonical filter in one pass ({@link CuckooFilter.canonicalBuilder}: no sort) and compares bytes.
 *
 * Lookups check the stash (binary search) only when neither bucket matches and the stash is not empty.
 * `delete` removes a stashed hash too; `insert` never stashes (it returns false when the table is full).
 *
 * ## Serialization (format version 1)
 *
 *     offset size
 *     0      4    magic "SCF1" (0x53 0x43 0x46 0x31)
 *     4      1    version = 1
 *     5      1    fingerprint bits f (8..32)
 *     6      1    bucket size (= 4)
 *     7      1    log2(numBuckets) (0..29)
 *     8      4    count (u32 little-endian) = items held: non-empty slots + stashed hashes
 *     12     ...  numBuckets × 4 slots, each 1/2/4 bytes (f ≤ 8 / ≤ 16 / ≤ 32), little-endian
 *     ...    32·s the stash: s = count − (non-empty slots) full 32-byte hashes, strictly ascending
 *
 * A filter without a stash (s = 0, almost always) is byte-identical to the format before the stash was
 * added; a decoder from before it refuses a stashed filter ("trailing bytes"), it never misreads one.
 * {@link CuckooFilter.hash} is sha256 over exactly these bytes, so it covers the parameters, the bitmap
 * and the stash.
 */
import { sha256 } from '../crypto/hash.ts'
import { SomaError } from '../errors.ts'

/** Length of the items this filter holds: sha256 digests. */
export const HASH_BYTES = 32
/** Slots per bucket (fixed; part of the format). */
export const BUCKET_SIZE = 4
export const MIN_FINGERPRINT_BITS = 8
export const MAX_FINGERPRINT_BITS = 32
/** Largest supported table: 2^29 buckets (2^31 slots). Keeps slot positions within int32 arithmetic. */
export const MAX_LOG2_BUCKETS = 29
/** Default target false-positive rate of {@link CuckooFilter.forCapacity} and {@link CuckooFilter.build}. */
export const DEFAULT_FPR = 1e-5
/** Default fingerprint width: the slot width that meets {@link DEFAULT_FPR} (see the module comment). */
export const DEFAULT_FINGERPRINT_BITS = 32
/** Default maximum load targeted by {@link CuckooFilter.forCapacity}. */
export const DEFAULT_LOAD_FACTOR = 0.95
/** Default length limit of a kick chain before an insert is declared failed (and rolled back). */
export const DEFAULT_MAX_KICKS = 500
/** Serialization: magic, version and header length. */
export const FILTER_MAGIC = 'SCF1'
export const FILTER_FORMAT_VERSION = 1
export const FILTER_HEADER_BYTES = 12

const MAGIC_BYTES = [0x53, 0x43, 0x46, 0x31]
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** Bytes that are not a valid serialized filter (wrong magic or version, truncated, bad parameters, ...). */
export class InvalidFilterError extends SomaError {
  static override readonly code: string = 'ERR_INVALID_FILTER'
}

/**
 * An insert whose kick chain reached `maxKicks`: the filter is too full. The filter was restored to its
 * exact state before the call; nothing was dropped.
 */
export class CuckooFilterFullError extends SomaError {
  static override readonly code: string = 'ERR_CUCKOO_FILTER_FULL'
  readonly count: number
  readonly capacity: number
  constructor (message: string, count: number, capacity: number) {
    super(message)
    this.count = count
    this.capacity = capacity
  }
}

/**
 * Slot storage. 32-bit fingerprints live in an Int32Array (same bits, same little-endian bytes as a
 * Uint32Array) so every value stays an int32 in optimized code: comparing Uint32Array loads above 2^31
 * goes through doubles and costs ~35 % of non-member lookup speed. Fingerprints are therefore handled
 * as int32 bit patterns (`| 0`) and ordered as unsigned via {@link SIGN} flipping.
 */
type Slots = Uint8Array | Uint16Array | Int32Array

/** `(a ^ SIGN) > (b ^ SIGN)` compares the int32 bit patterns a, b as unsigned 32-bit integers. */
const SIGN = 0x80000000 | 0

/** Parameters of a filter of a given size; see {@link CuckooFilter.forCapacity} to size it for n items. */
export interface CuckooFilterParams {
  /** log2 of the number of buckets, 0..{@link MAX_LOG2_BUCKETS}. */
  log2Buckets: number
  /** Fingerprint width f, integer 8..32. Default {@link DEFAULT_FINGERPRINT_BITS}. */
  fingerprintBits?: number
  /** Kick-chain limit. Default {@link DEFAULT_MAX_KICKS}. Not serialized: a runtime policy. */
  maxKicks?: number
}

export interface CuckooFilterSizing {
  /**
   * Target false-positive rate at full load (default {@link DEFAULT_FPR}). The fingerprint width is
   * `ceil(log2(8 / fpr))` rounded up to the slot width (8, 16 or 32). Ignored for the width if
   * `fingerprintBits` is given (then it is checked against it when given too).
   */
  fpr?: number
  /** Explicit fingerprint width, integer 8..32; overrides the width derived from `fpr`. */
  fingerprintBits?: number
  /** Maximum load the table is sized for, in (0, 1]. Default {@link DEFAULT_LOAD_FACTOR}. */
  loadFactor?: number
  /** Kick-chain limit. Default {@link DEFAULT_MAX_KICKS}. */
  maxKicks?: number
}

export interface FromBytesOptions {
  maxKicks?: number
}

/**
 * The alternate-bucket mix of a fingerprint (murmur2-style: multiply by 0x5bd1e995, xor-shift, twice).
 * Pure int32 arithmetic: identical on every machine. The caller masks the result. Frozen by format v1.
 */
export function altHash (fp: number): number {
  let h = Math.imul(fp, 0x5bd1e995)
  h ^= h >>> 13
  h = Math.imul(h, 0x5bd1e995)
  return h ^ (h >>> 15)
}

/** FPR of a non-member lookup with f-bit fingerprints at the given load: 1 - (1 - 2^-f)^(2·b·load). */
export function theoreticalFpr (fingerprintBits: number, load = 1): number {
  // -expm1(n·log1p(-p)) is 1 - (1 - p)^n without cancellation for tiny p.
  return -Math.expm1(2 * BUCKET_SIZE * load * Math.log1p(-Math.pow(2, -fingerprintBits)))
}

/** Smallest f with 2b/2^f ≤ fpr (no rounding to a slot width). */
export function minFingerprintBitsForFpr (fpr: number): number {
  if (!(fpr > 0 && fpr < 1)) throw new RangeError(`fpr must be in (0, 1), got ${fpr}`)
  let f = Math.ceil(Math.log2(2 * BUCKET_SIZE / fpr))
  // guard the float log against an off-by-one at exact powers of two
  while (f > 1 && 2 * BUCKET_SIZE / Math.pow(2, f - 1) <= fpr) f--
  while (2 * BUCKET_SIZE / Math.pow(2, f) > fpr) f++
  return Math.max(f, MIN_FINGERPRINT_BITS)
}

function storageBitsFor (fingerprintBits: number): 8 | 16 | 32 {
  return fingerprintBits <= 8 ? 8 : fingerprintBits <= 16 ? 16 : 32
}

function checkFingerprintBits (f: number): void {
  if (!Number.isInteger(f) || f < MIN_FINGERPRINT_BITS || f > MAX_FINGERPRINT_BITS) {
    throw new RangeError(`fingerprintBits must be an integer in ${MIN_FINGERPRINT_BITS}..${MAX_FINGERPRINT_BITS}, got ${f}`)
  }
}

function checkLog2Buckets (l: number): void {
  if (!Number.isInteger(l) || l < 0 || l > MAX_LOG2_BUCKETS) {
    throw new RangeError(`log2Buckets must be an integer in 0..${MAX_LOG2_BUCKETS}, got ${l}`)
  }
}

function checkMaxKicks (k: number): void {
  if (!Number.isInteger(k) || k < 0 || k > 1_000_000) throw new RangeError(`maxKicks must be an integer in 0..1000000, got ${k}`)
}

function allocSlots (storageBits: 8 | 16 | 32, length: number): Slots {
  return storageBits === 8 ? new Uint8Array(length) : storageBits === 16 ? new Uint16Array(length) : new Int32Array(length)
}

function checkHashAt (buf: Uint8Array, offset: number): void {
  if (!(buf instanceof Uint8Array)) throw new TypeError('item hash must be a Uint8Array')
  if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`hash offset must be a non-negative integer, got ${offset}`)
  if (offset + HASH_BYTES > buf.length) {
    throw new RangeError(`need ${HASH_BYTES} hash bytes at offset ${offset} of a ${buf.length}-byte buffer`)
  }
}

/**
 * Cuckoo filter, bucket size 4, f-bit fingerprints (8..32), power-of-two bucket count; see the module
 * comment for the design, the FPR math and the determinism guarantees.
 */
export class CuckooFilter {
  /** Slots per bucket (4). */
  static readonly BUCKET_SIZE = BUCKET_SIZE

  private readonly slots: Slots
  private readonly mask: number
  private readonly fpShift: number
  private readonly _log2Buckets: number
  private readonly _fingerprintBits: number
  private readonly _storageBits: 8 | 16 | 32
  private readonly _maxKicks: number
  /** Non-empty slots (the stash is counted apart). */
  private _count = 0
  private _kicks = 0
  /** The stash: `stashCount` full hashes, strictly ascending, back to back (see the module comment). */
  private stash: Uint8Array = new Uint8Array(0)
  private stashCount = 0
  /** Undo log of a kick chain: bucket index and its 4 slot values before the kick. Allocated lazily. */
  private logBuckets: Int32Array | null = null
  private logSlots: Int32Array | null = null

  /** An empty filter of `2^log2Buckets` buckets. */
  constructor (params: CuckooFilterParams) {
    const { log2Buckets, fingerprintBits = DEFAULT_FINGERPRINT_BITS, maxKicks = DEFAULT_MAX_KICKS } = params
    checkLog2Buckets(log2Buckets)
    checkFingerprintBits(fingerprintBits)
    checkMaxKicks(maxKicks)
    this._log2Buckets = log2Buckets
    this._fingerprintBits = fingerprintBits
    this._storageBits = storageBitsFor(fingerprintBits)
    this._maxKicks = maxKicks
    this.mask = (2 ** log2Buckets) - 1
    this.fpShift = 32 - fingerprintBits
    this.slots = allocSlots(this._storageBits, (2 ** log2Buckets) * BUCKET_SIZE)
  }

  /**
   * An empty filter sized for `n` items: the fewest power-of-two buckets with `n ≤ loadFactor × slots`,
   * and the fingerprint width from `fpr` (rounded up to the slot width) or `fingerprintBits`.
   * Throws RangeError on bad parameters or if `n` needs more than 2^29 buckets.
   */
  static forCapacity (n: number, opts: CuckooFilterSizing = {}): CuckooFilter {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`n must be a non-negative integer, got ${n}`)
    const loadFactor = opts.loadFactor ?? DEFAULT_LOAD_FACTOR
    if (!(loadFactor > 0 && loadFactor <= 1)) throw new RangeError(`loadFactor must be in (0, 1], got ${loadFactor}`)
    const fingerprintBits = CuckooFilter.fingerprintBitsFor(opts)
    const buckets = Math.max(1, Math.ceil(Math.ceil(n / loadFactor) / BUCKET_SIZE))
    const log2Buckets = Math.ceil(Math.log2(buckets))
    if (log2Buckets > MAX_LOG2_BUCKETS) throw new RangeError(`${n} items at load ${loadFactor} need more than 2^${MAX_LOG2_BUCKETS} buckets`)
    return new CuckooFilter({ log2Buckets, fingerprintBits, maxKicks: opts.maxKicks })
  }

  /**
   * The fingerprint width {@link forCapacity} uses: `fingerprintBits` if given (checked against `fpr`
   * if both are given), else `ceil(log2(8 / fpr))` rounded up to 8, 16 or 32 (default fpr 1e-5 → 32).
   */
  static fingerprintBitsFor (opts: Pick<CuckooFilterSizing, 'fpr' | 'fingerprintBits'> = {}): number {
    if (opts.fingerprintBits !== undefined) {
      checkFingerprintBits(opts.fingerprintBits)
      if (opts.fpr !== undefined && theoreticalFpr(opts.fingerprintBits) > opts.fpr) {
        throw new RangeError(`fingerprintBits ${opts.fingerprintBits} cannot meet fpr ${opts.fpr} (needs ≥ ${minFingerprintBitsForFpr(opts.fpr)})`)
      }
      return opts.fingerprintBits
    }
    const f = minFingerprintBitsForFpr(opts.fpr ?? DEFAULT_FPR)
    if (f > MAX_FINGERPRINT_BITS) throw new RangeError(`fpr ${opts.fpr} needs ${f}-bit fingerprints; at most ${MAX_FINGERPRINT_BITS} are supported`)
    return storageBitsFor(f)
  }

  /**
   * The canonical filter of a SET of 32-byte hashes: duplicates removed, sorted bytewise, inserted in
   * that order with deterministic kicks into a table sized by {@link forCapacity}(number of distinct
   * hashes, opts); a hash whose kick chain fails goes to the stash. Byte-identical output for the same
   * set and options, whatever the iteration order; the size depends on the count alone.
   */
  static build (hashes: Iterable<Uint8Array>, opts: CuckooFilterSizing = {}): CuckooFilter {
    const list = Array.isArray(hashes) ? hashes as Uint8Array[] : Array.from(hashes)
    const all = new Uint8Array(list.length * HASH_BYTES)
    for (let i = 0; i < list.length; i++) {
      const h = list[i]
      if (!(h instanceof Uint8Array) || h.length !== HASH_BYTES) throw new RangeError(`item ${i} is not a ${HASH_BYTES}-byte hash`)
      all.set(h, i * HASH_BYTES)
    }
    const order = sortedDistinct(all, list.length)
    const filter = CuckooFilter.forCapacity(order.length, opts)
    for (let k = 0; k < order.length; k++) filter.insertOrStashAt(all, order[k] * HASH_BYTES)
    return filter
  }

  /**
   * The canonical filter ({@link build}) of `n` distinct hashes fed one at a time in strictly ascending
   * bytewise order: one pass, no sort, nothing but the filter held. `push` throws RangeError on a hash
   * that is not above the previous one; `finish` throws RangeError unless exactly `n` were pushed and
   * returns the filter, byte-identical to `build` of the same hashes. This is how a syncing node checks
   * that an attested filter is the canonical one for the listing it streams in sorted order.
   */
  static canonicalBuilder (n: number, opts: CuckooFilterSizing = {}): { push: (buf: Uint8Array, offset?: number) => void, finish: () => CuckooFilter } {
    const filter = CuckooFilter.forCapacity(n, opts)
    const last = new Uint8Array(HASH_BYTES)
    let pushed = 0
    return {
      push (buf: Uint8Array, offset = 0): void {
        checkHashAt(buf, offset)
        if (pushed >= n) throw new RangeError(`more than the ${n} hashes announced`)
        if (pushed > 0) {
          let d = 0
          for (let j = 0; j < HASH_BYTES && d === 0; j++) d = buf[offset + j] - last[j]
          if (d <= 0) throw new RangeError(`hash ${pushed} is not above the previous one (hashes must be distinct and ascending)`)
        }
        last.set(buf.subarray(offset, offset + HASH_BYTES))
        filter.insertOrStashAt(buf, offset)
        pushed++
      },
      finish (): CuckooFilter {
        if (pushed !== n) throw new RangeError(`${pushed} hashes pushed, ${n} announced`)
        return filter
      }
    }
  }

  /** Canonical construction step: insert, or else (the table restored) append to the stash. */
  private insertOrStashAt (buf: Uint8Array, offset: number): void {
    if (this.insertAt(buf, offset)) return
    this.stashInsert(buf, offset)
  }

  /** Insert a hash into the stash in sorted position (build appends: its input is ascending). */
  private stashInsert (buf: Uint8Array, offset: number): void {
    const k = this.stashCount
    if ((k + 1) * HASH_BYTES > this.stash.length) {
      const grown = new Uint8Array(Math.max(4, 2 * k) * HASH_BYTES)
      grown.set(this.stash.subarray(0, k * HASH_BYTES))
      this.stash = grown
    }
    const pos = this.stashSearch(buf, offset)
    const at = pos < 0 ? ~pos : pos
    this.stash.copyWithin((at + 1) * HASH_BYTES, at * HASH_BYTES, k * HASH_BYTES)
    this.stash.set(buf.subarray(offset, offset + HASH_BYTES), at * HASH_BYTES)
    this.stashCount = k + 1
  }

  /** Index of the hash in the stash, or `~insertionPoint` when absent (binary search). */
  private stashSearch (buf: Uint8Array, offset: number): number {
    const st = this.stash
    let lo = 0
    let hi = this.stashCount - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const o = mid * HASH_BYTES
      let d = 0
      for (let j = 0; j < HASH_BYTES && d === 0; j++) d = st[o + j] - buf[offset + j]
      if (d === 0) return mid
      if (d < 0) lo = mid + 1
      else hi = mid - 1
    }
    return ~lo
  }

  /**
   * Parse {@link toBytes} output. Validates magic, version, parameters, exact length, that no slot has
   * bits above f, that every bucket is in canonical order, that the count matches the slots and the
   * stash, and that the stash is strictly ascending; throws {@link InvalidFilterError} otherwise. The
   * input is copied. (Whether the filter is the *canonical* one of a set needs the set: see
   * {@link CuckooFilter.canonicalBuilder}.)
   */
  static fromBytes (bytes: Uint8Array, opts: FromBytesOptions = {}): CuckooFilter {
    if (!(bytes instanceof Uint8Array)) throw new InvalidFilterError('filter bytes must be a Uint8Array')
    if (bytes.length < FILTER_HEADER_BYTES) throw new InvalidFilterError(`truncated filter: ${bytes.length} bytes, the header alone is ${FILTER_HEADER_BYTES}`)
    for (let i = 0; i < 4; i++) {
      if (bytes[i] !== MAGIC_BYTES[i]) throw new InvalidFilterError(`bad filter magic: expected "${FILTER_MAGIC}"`)
    }
    const version = bytes[4]
    const f = bytes[5]
    const bucketSize = bytes[6]
    const log2Buckets = bytes[7]
    if (version !== FILTER_FORMAT_VERSION) throw new InvalidFilterError(`unsupported filter version ${version} (expected ${FILTER_FORMAT_VERSION})`)
    if (f < MIN_FINGERPRINT_BITS || f > MAX_FINGERPRINT_BITS) throw new InvalidFilterError(`bad fingerprint bits ${f} (expected ${MIN_FINGERPRINT_BITS}..${MAX_FINGERPRINT_BITS})`)
    if (bucketSize !== BUCKET_SIZE) throw new InvalidFilterError(`bad bucket size ${bucketSize} (expected ${BUCKET_SIZE})`)
    if (log2Buckets > MAX_LOG2_BUCKETS) throw new InvalidFilterError(`bad log2(numBuckets) ${log2Buckets} (max ${MAX_LOG2_BUCKETS})`)
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const count = dv.getUint32(8, true)
    const storageBytes = storageBitsFor(f) / 8
    const nSlots = (2 ** log2Buckets) * BUCKET_SIZE
    const expected = FILTER_HEADER_BYTES + nSlots * storageBytes
    if (bytes.length < expected) throw new InvalidFilterError(`truncated filter: ${bytes.length} bytes, expected ${expected}`)

    // the parameters were validated above; only a bad opts.maxKicks (the caller's error) can throw here
    const filter = new CuckooFilter({ log2Buckets, fingerprintBits: f, maxKicks: opts.maxKicks })
    const s = filter.slots
    if (LITTLE_ENDIAN_HOST) {
      new Uint8Array(s.buffer, s.byteOffset, s.byteLength).set(bytes.subarray(FILTER_HEADER_BYTES, expected))
    } else {
      for (let i = 0, o = FILTER_HEADER_BYTES; i < nSlots; i++, o += storageBytes) {
        s[i] = storageBytes === 1 ? bytes[o] : storageBytes === 2 ? dv.getUint16(o, true) : dv.getInt32(o, true)
      }
    }
    const limit = 2 ** f
    let used = 0
    for (let b = 0; b < nSlots; b += BUCKET_SIZE) {
      let prev = 0
      for (let j = 0; j < BUCKET_SIZE; j++) {
        const v = s[b + j] >>> 0
        if (v >= limit) throw new InvalidFilterError(`slot ${b + j} holds ${v}, which does not fit in ${f} bits`)
        if (v === 0) { prev = -1; continue }
        if (prev === -1) throw new InvalidFilterError(`bucket ${b / BUCKET_SIZE} is not canonical: an empty slot precedes a fingerprint`)
        if (v < prev) throw new InvalidFilterError(`bucket ${b / BUCKET_SIZE} is not canonical: fingerprints are not sorted`)
        prev = v
        used++
      }
    }
    if (used > count) throw new InvalidFilterError(`count mismatch: header says ${count}, the buckets hold ${used}`)
    // the rest of the count is the stash, which must follow the slots exactly
    const stashCount = count - used
    const extra = bytes.length - expected
    if (extra > stashCount * HASH_BYTES) {
      throw new InvalidFilterError(`${extra - stashCount * HASH_BYTES} trailing bytes after the filter (expected ${expected + stashCount * HASH_BYTES} bytes: the buckets hold ${used} of the ${count} items, ${stashCount} stashed)`)
    }
    if (extra < stashCount * HASH_BYTES) {
      throw new InvalidFilterError(`count mismatch: header says ${count}, the buckets hold ${used}, so ${stashCount} stashed hashes (${stashCount * HASH_BYTES} bytes) must follow the slots; ${extra} bytes do`)
    }
    const stash = bytes.slice(expected)
    for (let k = 1; k < stashCount; k++) {
      let d = 0
      for (let j = 0; j < HASH_BYTES && d === 0; j++) d = stash[k * HASH_BYTES + j] - stash[(k - 1) * HASH_BYTES + j]
      if (d <= 0) throw new InvalidFilterError(`the stash is not canonical: hash ${k} is not above hash ${k - 1}`)
    }
    filter._count = used
    filter.stash = stash
    filter.stashCount = stashCount
    return filter
  }

  // ---------------------------------------------------------------- parameters and statistics

  /** Number of stored items (inserted and not deleted, counting duplicates): slots used + stashed hashes. */
  get count (): number { return this._count + this.stashCount }
  /** Hashes held in the stash (not in the table): 0 for nearly every filter. */
  get stashed (): number { return this.stashCount }
  /** Total slots: numBuckets × 4. */
  get capacity (): number { return this.slots.length }
  get numBuckets (): number { return this.mask + 1 }
  get log2Buckets (): number { return this._log2Buckets }
  get bucketSize (): number { return BUCKET_SIZE }
  /** Fingerprint width f. */
  get fingerprintBits (): number { return this._fingerprintBits }
  /** Bits of storage per slot: 8, 16 or 32. */
  get storageBits (): number { return this._storageBits }
  get maxKicks (): number { return this._maxKicks }
  /** Size of the slot array in bytes (the serialization is this plus the 12-byte header). */
  get byteLength (): number { return this.slots.byteLength }
  /** Total kick steps performed by successful and failed inserts since construction (diagnostic). */
  get kicks (): number { return this._kicks }

  /** Slots used / capacity (the stash is not counted). */
  loadFactor (): number { return this._count / this.slots.length }

  /** Memory bits per stored item: (capacity × slot width + stash) / count (Infinity when empty). */
  bitsPerItem (): number { return this.count === 0 ? Infinity : (this.slots.length * this._storageBits + this.stashCount * HASH_BYTES * 8) / this.count }

  /**
   * Theoretical FPR of a non-member lookup: 1 - (1 - 2^-f)^(2·b·load) with load = 1 by default (the
   * upper bound ≈ 8/2^f); pass `this.loadFactor()` for the figure at the current load.
   */
  theoreticalFpr (load = 1): number { return theoreticalFpr(this._fingerprintBits, load) }

  // ---------------------------------------------------------------- lookups (hot path)

  /** Whether the 32-byte hash may be in the set (no false negatives; false positives at ≈ FPR). */
  contains (hash: Uint8Array): boolean {
    if (hash.length !== HASH_BYTES) throw new RangeError(`item hash must be ${HASH_BYTES} bytes, got ${hash.length}`)
    return this.lookup(hash, 0)
  }

  /** {@link contains} for the hash at `buf[offset .. offset+32)`, without allocating a subarray. */
  containsAt (buf: Uint8Array, offset: number): boolean {
    if (!(Number.isInteger(offset) && offset >= 0 && offset + HASH_BYTES <= buf.length)) checkHashAt(buf, offset)
    return this.lookup(buf, offset)
  }

  private lookup (b: Uint8Array, o: number): boolean {
    const mask = this.mask
    const i1 = (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) & mask
    let fp = ((b[o + 4] | (b[o + 5] << 8) | (b[o + 6] << 16) | (b[o + 7] << 24)) >>> this.fpShift) | 0
    if (fp === 0) fp = 1
    const s = this.slots
    let p = i1 << 2
    if (s[p] === fp || s[p + 1] === fp || s[p + 2] === fp || s[p + 3] === fp) return true
    p = ((i1 ^ altHash(fp)) & mask) << 2
    if (s[p] === fp || s[p + 1] === fp || s[p + 2] === fp || s[p + 3] === fp) return true
    return this.stashCount !== 0 && this.stashSearch(b, o) >= 0
  }

  // ---------------------------------------------------------------- updates

  /**
   * Insert a 32-byte hash. Returns false, leaving the filter exactly as it was, if the kick chain
   * reaches `maxKicks` (the filter is too full); never drops an item.
   */
  insert (hash: Uint8Array): boolean {
    if (hash.length !== HASH_BYTES) throw new RangeError(`item hash must be ${HASH_BYTES} bytes, got ${hash.length}`)
    return this.insertAt(hash, 0)
  }

  /** {@link insert} but throws {@link CuckooFilterFullError} instead of returning false. Returns this. */
  add (hash: Uint8Array): this {
    if (!this.insert(hash)) {
      throw new CuckooFilterFullError(`cuckoo filter full: ${this._count}/${this.slots.length} slots used, kick chain exceeded ${this._maxKicks}`, this._count, this.slots.length)
    }
    return this
  }

  /** {@link insert} for the hash at `buf[offset .. offset+32)`. */
  insertAt (buf: Uint8Array, offset: number): boolean {
    if (!(Number.isInteger(offset) && offset >= 0 && offset + HASH_BYTES <= buf.length)) checkHashAt(buf, offset)
    const b = buf
    const o = offset
    const mask = this.mask
    const i1 = (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) & mask
    let fp = ((b[o + 4] | (b[o + 5] << 8) | (b[o + 6] << 16) | (b[o + 7] << 24)) >>> this.fpShift) | 0
    if (fp === 0) fp = 1
    const i2 = (i1 ^ altHash(fp)) & mask
    if (this.putIfFree(i1, fp) || this.putIfFree(i2, fp)) {
      this._count++
      return true
    }
    return this.kickInsert((fp & 1) === 0 ? i1 : i2, fp)
  }

  /**
   * Remove one copy of the hash's fingerprint (primary bucket first). Returns false if neither bucket
   * holds it. Only delete hashes that were inserted (see the module comment for the collision caveat).
   */
  delete (hash: Uint8Array): boolean {
    if (hash.length !== HASH_BYTES) throw new RangeError(`item hash must be ${HASH_BYTES} bytes, got ${hash.length}`)
    return this.deleteAt(hash, 0)
  }

  /** {@link delete} for the hash at `buf[offset .. offset+32)`. */
  deleteAt (buf: Uint8Array, offset: number): boolean {
    if (!(Number.isInteger(offset) && offset >= 0 && offset + HASH_BYTES <= buf.length)) checkHashAt(buf, offset)
    const b = buf
    const o = offset
    const mask = this.mask
    const i1 = (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) & mask
    let fp = ((b[o + 4] | (b[o + 5] << 8) | (b[o + 6] << 16) | (b[o + 7] << 24)) >>> this.fpShift) | 0
    if (fp === 0) fp = 1
    if (this.removeFrom(i1, fp) || this.removeFrom((i1 ^ altHash(fp)) & mask, fp)) {
      this._count--
      return true
    }
    if (this.stashCount !== 0) {
      const k = this.stashSearch(buf, offset)
      if (k >= 0) {
        this.stash.copyWithin(k * HASH_BYTES, (k + 1) * HASH_BYTES, this.stashCount * HASH_BYTES)
        this.stashCount--
        this.stash.fill(0, this.stashCount * HASH_BYTES, (this.stashCount + 1) * HASH_BYTES)
        return true
      }
    }
    return false
  }

  /** Put fp into bucket `bucket` in sorted position if it has a free slot. */
  private putIfFree (bucket: number, fp: number): boolean {
    const s = this.slots
    const p = bucket << 2
    if (s[p + 3] !== 0) return false // canonical: empties last, so a non-empty last slot means full
    let n = s[p] === 0 ? 0 : s[p + 1] === 0 ? 1 : s[p + 2] === 0 ? 2 : 3
    const key = fp ^ SIGN
    while (n > 0 && (s[p + n - 1] ^ SIGN) > key) { s[p + n] = s[p + n - 1]; n-- }
    s[p + n] = fp
    return true
  }

  /** Remove one copy of fp from the bucket, shifting the rest left to keep it canonical. */
  private removeFrom (bucket: number, fp: number): boolean {
    const s = this.slots
    const p = bucket << 2
    for (let j = 0; j < BUCKET_SIZE; j++) {
      const v = s[p + j]
      if (v === fp) {
        for (let k = j; k < BUCKET_SIZE - 1; k++) s[p + k] = s[p + k + 1]
        s[p + BUCKET_SIZE - 1] = 0
        return true
      }
      if (v === 0) return false
    }
    return false
  }

  /**
   * Both candidate buckets are full: run the deterministic kick chain starting at `bucket`. On failure
   * undo every kick from the log (newest first) and return false.
   */
  private kickInsert (bucket: number, fp: number): boolean {
    const maxKicks = this._maxKicks
    if (maxKicks === 0) return false
    if (this.logBuckets === null || this.logSlots === null) {
      this.logBuckets = new Int32Array(maxKicks)
      this.logSlots = new Int32Array(maxKicks * BUCKET_SIZE)
    }
    const logB = this.logBuckets
    const logS = this.logSlots
    const s = this.slots
    const mask = this.mask
    let carried = fp
    let b = bucket
    for (let k = 0; k < maxKicks; k++) {
      const p = b << 2
      logB[k] = b
      const q = k << 2
      logS[q] = s[p]; logS[q + 1] = s[p + 1]; logS[q + 2] = s[p + 2]; logS[q + 3] = s[p + 3]
      // bucket is full here; pick the victim deterministically
      let v = (k + carried) & 3
      if (s[p + v] === carried) v = (v + 1) & 3
      const victim = s[p + v]
      // remove the victim (shift left), then insert the carried fingerprint in sorted position
      for (let j = v; j < 3; j++) s[p + j] = s[p + j + 1]
      let n = 3
      const key = carried ^ SIGN
      while (n > 0 && (s[p + n - 1] ^ SIGN) > key) { s[p + n] = s[p + n - 1]; n-- }
      s[p + n] = carried
      this._kicks++
      carried = victim
      b = (b ^ altHash(carried)) & mask
      if (this.putIfFree(b, carried)) {
        this._count++
        return true
      }
    }
    for (let k = maxKicks - 1; k >= 0; k--) {
      const p = logB[k] << 2
      const q = k << 2
      s[p] = logS[q]; s[p + 1] = logS[q + 1]; s[p + 2] = logS[q + 2]; s[p + 3] = logS[q + 3]
    }
    return false
  }

  /**
   * Sort every bucket into canonical order (fingerprints ascending, empties last). All methods keep
   * buckets canonical already, so this is a no-op on any filter built through this API; it is the
   * normalization the serialization is defined by. Returns this.
   */
  canonicalize (): this {
    const s = this.slots
    for (let p = 0; p < s.length; p += BUCKET_SIZE) {
      for (let i = 1; i < BUCKET_SIZE; i++) {
        const v = s[p + i]
        const key = v === 0 ? Infinity : v >>> 0
        let j = i
        while (j > 0) {
          const u = s[p + j - 1]
          if ((u === 0 ? Infinity : u >>> 0) <= key) break
          s[p + j] = u
          j--
        }
        s[p + j] = v
      }
    }
    return this
  }

  // ---------------------------------------------------------------- serialization

  /** The canonical serialization (format v1, see the module comment). */
  toBytes (): Uint8Array {
    const s = this.slots
    const out = new Uint8Array(FILTER_HEADER_BYTES + s.byteLength + this.stashCount * HASH_BYTES)
    out.set(MAGIC_BYTES, 0)
    out[4] = FILTER_FORMAT_VERSION
    out[5] = this._fingerprintBits
    out[6] = BUCKET_SIZE
    out[7] = this._log2Buckets
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength)
    dv.setUint32(8, this.count, true)
    if (LITTLE_ENDIAN_HOST) {
      out.set(new Uint8Array(s.buffer, s.byteOffset, s.byteLength), FILTER_HEADER_BYTES)
    } else {
      const w = this._storageBits / 8
      for (let i = 0, o = FILTER_HEADER_BYTES; i < s.length; i++, o += w) {
        if (w === 1) out[o] = s[i]
        else if (w === 2) dv.setUint16(o, s[i], true)
        else dv.setInt32(o, s[i], true)
      }
    }
    out.set(this.stash.subarray(0, this.stashCount * HASH_BYTES), FILTER_HEADER_BYTES + s.byteLength)
    return out
  }

  /** sha256 of {@link toBytes}: commits to the parameters, the count, every slot and the stash. */
  hash (): Uint8Array {
    return sha256(this.toBytes())
  }

  /** Same parameters and same slots (maxKicks, a runtime policy, is not compared). */
  equals (other: CuckooFilter): boolean {
    if (this._fingerprintBits !== other._fingerprintBits || this._log2Buckets !== other._log2Buckets || this._count !== other._count) return false
    if (this.stashCount !== other.stashCount) return false
    const a = this.slots
    const b = other.slots
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
    for (let i = 0; i < this.stashCount * HASH_BYTES; i++) if (this.stash[i] !== other.stash[i]) return false
    return true
  }

  /** An independent copy. */
  clone (): CuckooFilter {
    const c = new CuckooFilter({ log2Buckets: this._log2Buckets, fingerprintBits: this._fingerprintBits, maxKicks: this._maxKicks })
    c.slots.set(this.slots)
    c._count = this._count
    c.stash = this.stash.slice(0, this.stashCount * HASH_BYTES)
    c.stashCount = this.stashCount
    return c
  }
}

/**
 * Indices of the distinct 32-byte hashes in `all` (n hashes back to back), in ascending bytewise order.
 * LSD radix sort (4 passes of 16 bits) on the first 8 bytes, then runs with equal first 8 bytes (rare;
 * adversarial input at worst costs a comparison sort of the run) are sorted bytewise.
 */
function sortedDistinct (all: Uint8Array, n: number): Uint32Array {
  const hi = new Uint32Array(n)
  const lo = new Uint32Array(n)
  for (let i = 0, o = 0; i < n; i++, o += HASH_BYTES) {
    hi[i] = (all[o] << 24) | (all[o + 1] << 16) | (all[o + 2] << 8) | all[o + 3]
    lo[i] = (all[o + 4] << 24) | (all[o + 5] << 16) | (all[o + 6] << 8) | all[o + 7]
  }
  const cmpBytes = (a: number, b: number): number => {
    const oa = a * HASH_BYTES
    const ob = b * HASH_BYTES
    for (let j = 0; j < HASH_BYTES; j++) {
      const d = all[oa + j] - all[ob + j]
      if (d !== 0) return d
    }
    return 0
  }
  let idx = new Uint32Array(n)
  for (let i = 0; i < n; i++) idx[i] = i
  if (n < 4096) {
    idx.sort((a, b) => (hi[a] - hi[b]) || (lo[a] - lo[b]) || cmpBytes(a, b))
  } else {
    let tmp = new Uint32Array(n)
    const counts = new Uint32Array(65536)
    for (let pass = 0; pass < 4; pass++) {
      const words = pass < 2 ? lo : hi
      const shift = (pass & 1) === 0 ? 0 : 16
      counts.fill(0)
      for (let i = 0; i < n; i++) counts[(words[idx[i]] >>> shift) & 0xffff]++
      for (let d = 0, sum = 0; d < 65536; d++) { const c = counts[d]; counts[d] = sum; sum += c }
      for (let i = 0; i < n; i++) { const x = idx[i]; tmp[counts[(words[x] >>> shift) & 0xffff]++] = x }
      const t = idx; idx = tmp; tmp = t
    }
    for (let i = 0; i < n;) {
      let j = i + 1
      while (j < n && hi[idx[j]] === hi[idx[i]] && lo[idx[j]] === lo[idx[i]]) j++
      if (j - i > 1) idx.subarray(i, j).sort(cmpBytes)
      i = j
    }
  }
  let m = 0
  for (let i = 0; i < n; i++) {
    const x = idx[i]
    if (m > 0) {
      const y = idx[m - 1]
      if (hi[x] === hi[y] && lo[x] === lo[y] && cmpBytes(y, x) === 0) continue
    }
    idx[m++] = x
  }
  return idx.subarray(0, m)
}
