/**
 * Snapshot benchmark (seed 002, src/snapshot/): a full snapshot build of a large state, and incremental
 * updates after 1% of the accounts changed, against that full build.
 *
 * State (FULL sizes): 1,000,000 accounts and 100,000 embeddings of dimension 768 (~300 MB of vectors),
 * written straight into the store's account and embedding buckets with StoreBatch (no transactions),
 * as of commit 10,000 of epoch 10: 2% of the accounts were modified in the last 2 epochs (the hot
 * group), the others earlier; embeddings were created over commits 1..10,000 (10 per commit, windows of
 * 1,000 commits). The state root in the manifests is a placeholder: the bench measures snapshots, not
 * the executor's LtHash (which the foundation bench covers).
 *
 * 1. full: `buildSnapshot` at commit 10,000 with the default parameters (1 MiB chunks, K = 2 hot
 *    epochs), chunks written to LevelDB. Time, peak RSS (sampled), MiB/s of state.
 * 2. incremental (hot): 1% of the accounts (10,000), all already hot, change again in commit 10,001
 *    (new balance, nonce; written with their state change log rows, as the executor would); the
 *    incremental snapshot of commit 10,001. `incremental/full` = its time ÷ the full build's (target
 *    ≤ 0.05).
 * 3. incremental (random): 1% of the accounts picked uniformly (so ~99% of them were cold and move to
 *    the hot group) change in commit 10,002; the incremental snapshot of 10,002. `incrementalRandom/full`
 *    is reported for honesty: such changes touch most cold chunks, so most of the account chunks (not
 *    the embeddings) are re-cut: `incrementalRandom.accountChunksTouched` is that share, which bounds
 *    it. Its manifest must be byte-identical to a full build's of the same state (issue 16).
 *
 * Every build's time per phase (`BuildStats.phases`: base, changes, aging, recut, diff, full, filter,
 * checksums, encode, sign, write, prune, trim) is reported as `<build>.phase.<name>.ms`: where the fixed
 * cost of an incremental update goes.
 *
 * 4. filter: the canonical filter's build against the former in-place update and the final checksum, for
 *    1k..1M hashes ({@link filterFigures}; `--filter-only` runs just these).
 *
 * Run directly: `node bench/snapshot.ts [--quick] [--filter-only] [--accounts N] [--embeddings N]
 * [--target-chunk-bytes N]` (the last three override the sizes, e.g. many small chunks to expose
 * per-chunk costs), or through `node bench/run.ts --only snapshot`.
 */
import { createGenesis } from '../src/chain/genesis.ts'
import { ChainStore } from '../src/store/chain-store.ts'
import { Bucket } from '../src/store/keys.ts'
import { Codecs } from '../src/chain/codecs.ts'
import { buildSnapshot, type SnapshotBuildResult, type SnapshotPoint } from '../src/snapshot/builder.ts'
import { CuckooFilter } from '../src/snapshot/cuckoo-filter.ts'
import { finalChecksum } from '../src/snapshot/manifest.ts'
import { sha256 } from '../src/crypto/hash.ts'
import { readFileSync } from 'node:fs'
import { TempDirs, measure, maxRssMiB, maybeGc, log, printFigures, isMain, type BenchOptions, type Figures } from './util.ts'

interface Sizes {
  accounts: number
  embeddings: number
  dim: number
  /** fraction of the accounts in the hot group */
  hot: number
  /** fraction of the accounts changed per incremental update */
  changed: number
  commits: number
  epochLength: number
  /** snapshot chunk target (default 1 MiB); smaller values make many chunks (per-chunk costs) */
  targetChunkBytes?: number
}

const FULL: Sizes = { accounts: 1_000_000, embeddings: 100_000, dim: 768, hot: 0.02, changed: 0.01, commits: 10_000, epochLength: 1000 }
const QUICK: Sizes = { accounts: 20_000, embeddings: 2_000, dim: 64, hot: 0.02, changed: 0.01, commits: 1_000, epochLength: 100 }

/** Hash counts of the filter figures (FULL: up to a million chunks, a ~1 TiB state at 1 MiB chunks). */
const FILTER_COUNTS_FULL = [1_000, 10_000, 100_000, 1_000_000]
const FILTER_COUNTS_QUICK = [1_000, 10_000]

/** xorshift32: fast deterministic bytes for the synthetic state. */
class Rand {
  private s: number
  constructor (seed: number) { this.s = seed >>> 0 || 1 }
  u32 (): number {
    let x = this.s
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    this.s = x >>> 0
    return this.s
  }

  int (n: number): number { return this.u32() % n }
  fill (b: Uint8Array): Uint8Array {
    for (let i = 0; i < b.length; i += 4) {
      const v = this.u32()
      b[i] = v; if (i + 1 < b.length) b[i + 1] = v >>> 8; if (i + 2 < b.length) b[i + 2] = v >>> 16; if (i + 3 < b.length) b[i + 3] = v >>> 24
    }
    return b
  }
}

/** The accounts written, in flat arrays (so that the bench's own memory stays small next to the builder's). */
class Accounts {
  readonly addresses: Uint8Array
  readonly balance: Float64Array
  readonly nonce: Float64Array
  readonly epoch: Float64Array
  constructor (n: number) {
    this.addresses = new Uint8Array(32 * n)
    this.balance = new Float64Array(n)
    this.nonce = new Float64Array(n)
    this.epoch = new Float64Array(n)
  }

  get length (): number { return this.balance.length }
  address (i: number): Uint8Array { return this.addresses.subarray(32 * i, 32 * i + 32) }
  state (i: number): Uint8Array { return Codecs.AccountState.encode({ balance: this.balance[i], nonce: this.nonce[i], lastModifiedEpoch: this.epoch[i] }) }
}

async function writeState (store: ChainStore, s: Sizes, rnd: Rand): Promise<Accounts> {
  const epoch = Math.floor(s.commits / s.epochLength)
  const accounts = new Accounts(s.accounts)
  rnd.fill(accounts.addresses)
  const hotCount = Math.round(s.accounts * s.hot)
  for (let i = 0; i < s.accounts; i += 50_000) {
    const batch = store.batch()
    for (let j = i; j < Math.min(s.accounts, i + 50_000); j++) {
      // the first hotCount accounts (random addresses, so spread over the key space) are hot
      accounts.balance[j] = 1 + rnd.int(1e9)
      accounts.nonce[j] = rnd.int(500)
      accounts.epoch[j] = j < hotCount ? epoch - rnd.int(2) : rnd.int(epoch - 1)
      batch.putAccount(accounts.address(j), accounts.state(j))
    }
    await batch.write()
  }
  const perCommit = s.embeddings / s.commits
  const vec = new Float32Array(s.dim)
  for (let i = 0; i < s.embeddings; i += 5_000) {
    const batch = store.batch()
    for (let j = i; j < Math.min(s.embeddings, i + 5_000); j++) {
      const commit = 1 + Math.floor(j / perCommit)
      for (let d = 0; d < s.dim; d++) vec[d] = (rnd.u32() / 2 ** 32) * 2 - 1
      batch.putEmbedding(rnd.fill(new Uint8Array(32)), Codecs.Embedding.encode({
        owner: accounts.address(rnd.int(accounts.length)),
        commitIndex: commit,
        vector: new Uint8Array(vec.buffer.slice(0)),
        model: 'bench',
        epoch: Math.floor(commit / s.epochLength)
      }))
    }
    await batch.write()
  }
  return accounts
}

/** Changes `which` accounts in `commit` (of the current epoch), with their state change log rows. */
async function changeAccounts (store: ChainStore, accounts: Accounts, which: number[], commit: number, epoch: number): Promise<void> {
  const batch = store.batch()
  for (const i of which) {
    const before = accounts.state(i)
    accounts.balance[i] += 1; accounts.nonce[i] += 1; accounts.epoch[i] = epoch
    batch.putAccount(accounts.address(i), accounts.state(i))
    batch.putChange(commit, Bucket.ACCOUNT, accounts.address(i), before)
  }
  await batch.write()
}

function distinct (n: number, from: number, to: number, rnd: Rand): number[] {
  const picked = new Set<number>()
  while (picked.size < n) picked.add(from + rnd.int(to - from))
  return [...picked]
}

/** The build's time per phase (BuildStats.phases) as figures `<prefix>.phase.<name>.ms`. */
function phaseFigures (prefix: string, r: SnapshotBuildResult): Figures {
  const out: Figures = {}
  for (const [name, ms] of Object.entries(r.stats.phases)) out[`${prefix}.phase.${name}.ms`] = ms
  return out
}

export async function run (opts: BenchOptions & { sizes?: Partial<Sizes> } = {}): Promise<Figures> {
  const s = { ...(opts.quick === true ? QUICK : FULL), ...opts.sizes }
  const tmp = new TempDirs()
  const rnd = new Rand(0x5eed)
  try {
    const g = createGenesis({ seed: 'bench-snapshot', validators: 4, accounts: 2, initialBalance: 1, embeddingDim: s.dim })
    const store = await ChainStore.open(tmp.make('snapshot'), { genesis: g })
    try {
      const epoch = Math.floor(s.commits / s.epochLength)
      log(`writing ${s.accounts.toLocaleString()} accounts and ${s.embeddings.toLocaleString()} embeddings of dimension ${s.dim}`)
      const setup = await measure(async () => {
        const a = await writeState(store, s, rnd)
        // a node's store is compacted by the time it snapshots: do not time the setup's compactions
        await store.db.compactRange(Uint8Array.of(0), Uint8Array.of(0xff))
        return a
      })
      const accounts = setup.result
      const root = new Uint8Array(32)
      const point = (commitIndex: number): SnapshotPoint => ({ commitIndex, epoch, stateRoot: root })
      maybeGc()

      log('full build')
      const anon = new AnonRssSampler()
      const baselineAnon = anon.current
      const chunking = s.targetChunkBytes === undefined ? {} : { targetChunkBytes: s.targetChunkBytes }
      const full = await measure(async () => await buildSnapshot(store, { ...chunking, point: point(s.commits) }))
      const fullAnon = anon.stop()
      const f = full.result
      const changed = Math.round(s.accounts * s.changed)
      const hotCount = Math.round(s.accounts * s.hot)

      log(`incremental: ${changed.toLocaleString()} hot accounts change again`)
      await changeAccounts(store, accounts, distinct(changed, 0, hotCount, rnd), s.commits + 1, epoch)
      maybeGc()
      const hot = await measure(async () => await buildSnapshot(store, { ...chunking, point: point(s.commits + 1) }))
      check(hot.result, 'hot')

      log(`incremental: ${changed.toLocaleString()} random accounts change`)
      await changeAccounts(store, accounts, distinct(changed, 0, s.accounts, rnd), s.commits + 2, epoch)
      maybeGc()
      const random = await measure(async () => await buildSnapshot(store, { ...chunking, point: point(s.commits + 2) }))
      check(random.result, 'random')
      // the incremental result is what a full build gives
      const again = await buildSnapshot(store, { ...chunking, point: point(s.commits + 2), incremental: false, write: false })
      if (Buffer.compare(again.manifestBytes, random.result.manifestBytes) !== 0) throw new Error('the incremental snapshot\'s manifest differs from a full build\'s of the same state')

      const stateMiB = f.stats.totalBytes / (1024 * 1024)
      const groupCount = (r: SnapshotBuildResult, kind: number, group?: number): number => r.listing.filter(i => i.kind === kind && (group === undefined || i.group === group)).length
      return {
        accounts: s.accounts,
        embeddings: s.embeddings,
        embeddingDim: s.dim,
        changedAccounts: changed,
        'setup.ms': setup.ms,
        chunks: f.stats.chunks,
        'chunks.accountsHot': groupCount(f, 1, 1),
        'chunks.accountsCold': groupCount(f, 1, 0),
        'chunks.embeddings': groupCount(f, 2),
        stateMiB,
        'full.ms': full.ms,
        'full.MiBPerSec': stateMiB / (full.ms / 1000),
        'full.peakRssMiB': full.peakRssMiB,
        'full.peakRssAnonMiB': fullAnon,
        'baselineRssAnonMiB': baselineAnon,
        'incrementalHot.ms': hot.ms,
        'incrementalHot.chunksEncoded': hot.result.stats.chunksEncoded,
        'incrementalHot.chunksRead': hot.result.stats.chunksRead,
        'incrementalHot.MiBEncoded': hot.result.stats.bytesEncoded / (1024 * 1024),
        'incrementalHot.peakRssMiB': hot.peakRssMiB,
        'incremental/full': hot.ms / full.ms,
        'incrementalRandom.ms': random.ms,
        'incrementalRandom.chunksEncoded': random.result.stats.chunksEncoded,
        'incrementalRandom.chunksRead': random.result.stats.chunksRead,
        'incrementalRandom.MiBEncoded': random.result.stats.bytesEncoded / (1024 * 1024),
        'incrementalRandom/full': random.ms / full.ms,
        // what bounds the uniform case: the share of the account chunks it re-cuts
        'incrementalRandom.accountChunksTouched': random.result.stats.chunksEncoded / Math.max(1, groupCount(random.result, 1)),
        ...phaseFigures('full', f),
        ...phaseFigures('incrementalHot', hot.result),
        ...phaseFigures('incrementalRandom', random.result),
        ...filterFigures([f.stats.chunks]),
        maxRssMiB: maxRssMiB()
      }
    } finally {
      await store.close()
    }
  } finally {
    tmp.cleanup()
  }
}

/** Median time of `reps` runs of fn, ms. */
function medianMs (reps: number, fn: () => void): number {
  const t: number[] = []
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now()
    fn()
    t.push(performance.now() - t0)
  }
  return t.sort((a, b) => a - b)[Math.floor(reps / 2)]
}

/**
 * What the attested filter costs a snapshot (issue 16, protocols/README.md "Canonical filter"), for n
 * chunk hashes: `filter.n.build.ms` builds the canonical filter (what every snapshot now attests),
 * `filter.n.update9.ms` / `filter.n.update1pct.ms` the former in-place update of the previous filter
 * (load its bytes, delete the hashes that left, insert the new ones, serialize and hash) with 9 hashes
 * (the hot-group case) or 1 % of them replaced, and `filter.n.finalChecksum.ms` the final checksum over
 * the same hashes (sort + sha256), which every snapshot, full or incremental, computes anyway.
 */
export function filterFigures (counts: readonly number[]): Figures {
  const out: Figures = {}
  const rnd = new Rand(0xf1175)
  for (const n of counts) {
    const reps = n >= 1_000_000 ? 3 : n >= 100_000 ? 5 : 21
    const old = Array.from({ length: n }, () => rnd.fill(new Uint8Array(32)))
    const base = CuckooFilter.build(old).toBytes()
    for (const [label, k] of [['update9', 9], ['update1pct', Math.max(1, Math.round(n / 100))]] as const) {
      const removed = old.slice(0, k)
      const added = Array.from({ length: k }, () => rnd.fill(new Uint8Array(32)))
      out[`filter.${n}.${label}.ms`] = medianMs(reps, () => {
        const f = CuckooFilter.fromBytes(base)
        for (const h of removed) f.delete(h)
        for (const h of added) f.insert(h)
        sha256(f.toBytes())
      })
      if (label === 'update9') {
        const now = [...added, ...old.slice(k)]
        out[`filter.${n}.build.ms`] = medianMs(reps, () => { sha256(CuckooFilter.build(now).toBytes()) })
        out[`filter.${n}.finalChecksum.ms`] = medianMs(reps, () => { finalChecksum(now) })
      }
    }
  }
  return out
}

/**
 * Peak anonymous resident memory (RssAnon of /proc/self/status: heap, buffers, LevelDB's memtables and
 * cache), without the file pages of LevelDB's memory-mapped tables that RSS also counts. 0 off Linux.
 */
class AnonRssSampler {
  private peak = 0
  private readonly timer: NodeJS.Timeout
  constructor () {
    this.sample()
    this.timer = setInterval(() => { this.sample() }, 50)
    this.timer.unref()
  }

  /** RssAnon now, MiB */
  get current (): number {
    try {
      const m = /RssAnon:\s+(\d+)\s+kB/.exec(readFileSync('/proc/self/status', 'utf8'))
      return m === null ? 0 : Number(m[1]) / 1024
    } catch {
      return 0
    }
  }

  private sample (): void {
    this.peak = Math.max(this.peak, this.current)
  }

  stop (): number {
    this.sample()
    clearInterval(this.timer)
    return this.peak
  }
}

function check (r: SnapshotBuildResult, what: string): void {
  if (r.stats.mode !== 'incremental') throw new Error(`the ${what} update was a full build: ${r.stats.fullReason}`)
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  if (process.argv.includes('--filter-only')) {
    printFigures(`snapshot filter${quick ? ' (quick)' : ''}`, filterFigures(quick ? FILTER_COUNTS_QUICK : FILTER_COUNTS_FULL))
  } else {
    // --accounts N / --embeddings N override the sizes (profiling at an intermediate size)
    const num = (flag: string): number | undefined => {
      const i = process.argv.indexOf(flag)
      return i < 0 ? undefined : Number(process.argv[i + 1])
    }
    const sizes: Partial<Sizes> = {}
    if (num('--accounts') !== undefined) sizes.accounts = num('--accounts')
    if (num('--embeddings') !== undefined) sizes.embeddings = num('--embeddings')
    if (num('--target-chunk-bytes') !== undefined) sizes.targetChunkBytes = num('--target-chunk-bytes')
    const figures = await run({ quick, sizes })
    printFigures(`snapshot${quick ? ' (quick)' : ''}`, figures)
  }
}
