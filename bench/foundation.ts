/**
 * Foundation benchmark: the costs every sync path is built on, measured in one run so that ratios
 * compare figures taken under the same machine load.
 *
 * 1. ed25519 sign rate (node:crypto) over SIGS tx-signing messages: the baseline of the devnet ratio.
 * 2. Devnet production: blocks/s and tx/s of DevnetProducer.produceUntil (4 validators, 50 tx per
 *    block, no round interval), including the execution of what it certifies. Ratio: tx/s ÷ sign/s.
 *    The producer signs every transaction once (plus one block signature per 50 transactions), so
 *    the ratio is the share of production time that goes to signing: ~0.98 if signing were all of it.
 * 3. Executor: the same sub-dags (read back from the devnet store and parsed beforehand, so reading
 *    is not timed) executed on a fresh store; tx/s and commits/s. Its final state root must equal the
 *    devnet store's.
 * 4. State root: an LtHash over ACCOUNTS account entries; updating CHANGED entries incrementally
 *    (remove the old element, add the new) vs recomputing the LtHash of the whole state. The full
 *    recompute of the updated state must equal the incremental result.
 * 5. Signature verification: the same SIGS signatures verified inline on one thread (KeyObjects
 *    cached) vs with `new VerifyPool({ workers: 2 })` (256 checks per worker message). Ratio:
 *    pool ÷ single. Best of REPS interleaved repetitions each, after a warm-up.
 *
 * Run directly: `node bench/foundation.ts [--quick]`, or through `node bench/run.ts`.
 */
import { createGenesis, accountKey, type GenesisBundle } from '../src/chain/genesis.ts'
import { parseBlock } from '../src/chain/block.ts'
import type { CommittedSubDag } from '../src/chain/subdag.ts'
import { txSigningMessage } from '../src/chain/transaction.ts'
import { ChainStore, Bucket } from '../src/store/chain-store.ts'
import { CommitExecutor } from '../src/executor/commit-executor.ts'
import { accountElement, encodeAccount } from '../src/store/state-hash.ts'
import { DevnetProducer } from '../src/devnet/producer.ts'
import { sign, verify, type KeyPair } from '../src/crypto/keys.ts'
import { VerifyPool, type SignatureCheck } from '../src/crypto/verify-pool.ts'
import { LtHash } from '../src/crypto/lthash.ts'
import { sha256, bytesEqual, toHex, utf8 } from '../src/crypto/hash.ts'
import { TempDirs, measure, now, msSince, perSec, maxRssMiB, maybeGc, log, printFigures, isMain, type BenchOptions, type Figures } from './util.ts'

interface Sizes {
  /** signatures for the sign rate and the verify comparison */
  sigs: number
  /** distinct signing keys among them */
  sigKeys: number
  /** timed repetitions of each verify variant (best kept) */
  verifyReps: number
  /** devnet commits produced before timing starts (JIT warm-up) */
  devnetWarmup: number
  /** devnet commits timed (highest synced commit reached = warm-up + this) */
  devnetCommits: number
  /** genesis accounts of the devnet */
  accounts: number
  /** accounts in the state-root bench */
  stateAccounts: number
  /** entries changed per incremental update */
  stateChanged: number
  /** incremental update batches timed (median kept) */
  stateReps: number
}

const FULL: Sizes = {
  sigs: 20_000,
  sigKeys: 1000,
  verifyReps: 4,
  devnetWarmup: 10,
  devnetCommits: 1000,
  accounts: 1000,
  stateAccounts: 100_000,
  stateChanged: 1000,
  stateReps: 15
}

const QUICK: Sizes = {
  sigs: 2000,
  sigKeys: 100,
  verifyReps: 1,
  devnetWarmup: 2,
  devnetCommits: 20,
  accounts: 200,
  stateAccounts: 5000,
  stateChanged: 100,
  stateReps: 3
}

const SEED = 'bench/foundation'
const VALIDATORS = 4
/** commits per executeBatch in the batched executor run (the default of `executionBatchCommits`) */
const EXEC_BATCH = 50
const TXS_PER_BLOCK = 50
const EPOCH_LENGTH = 50

export async function run (opts: BenchOptions = {}): Promise<Figures> {
  const s = opts.quick === true ? QUICK : FULL
  const tmp = new TempDirs()
  try {
    log(`signing ${s.sigs} messages with ${s.sigKeys} keys`)
    const sig = makeSignatures(s)

    const genesis = createGenesis({ seed: SEED, validators: VALIDATORS, accounts: s.accounts, initialBalance: 1e9, embeddingDim: 16 })
    log(`devnet: ${s.devnetWarmup} + ${s.devnetCommits} commits (${VALIDATORS} validators, ${TXS_PER_BLOCK} tx/block)`)
    const devnet = await benchDevnet(tmp, genesis, s)
    maybeGc()
    log(`executor: re-executing ${devnet.subdags.length} commits on a fresh store`)
    const exec = await benchExecutor(tmp, genesis, devnet.subdags, devnet.stateRoot)
    maybeGc()
    log(`executor: the same in batches of ${EXEC_BATCH} commits`)
    const execBatched = await benchExecutor(tmp, genesis, devnet.subdags, devnet.stateRoot, EXEC_BATCH)
    devnet.subdags.length = 0
    maybeGc()
    log(`state root: ${s.stateAccounts} accounts, ${s.stateChanged} changed per update`)
    const state = benchStateRoot(s)
    maybeGc()
    log(`verify: ${s.sigs} signatures, one thread vs VerifyPool({ workers: 2 })`)
    const ver = await benchVerify(sig.items, s)

    return {
      'devnet.blocksPerSec': devnet.blocksPerSec,
      'devnet.txPerSec': devnet.txPerSec,
      'devnet.commitsPerSec': devnet.commitsPerSec,
      'ed25519.signPerSec': sig.signPerSec,
      'devnet.txPerSec/signPerSec': devnet.txPerSec / sig.signPerSec,
      'devnet.peakRssMiB': devnet.peakRssMiB,
      'executor.txPerSec': exec.txPerSec,
      'executor.commitsPerSec': exec.commitsPerSec,
      'executor.commits': exec.commits,
      'executor.peakRssMiB': exec.peakRssMiB,
      'executor.batched.txPerSec': execBatched.txPerSec,
      'executor.batched/single': execBatched.txPerSec / exec.txPerSec,
      'stateRoot.accounts': s.stateAccounts,
      'stateRoot.changedPerUpdate': s.stateChanged,
      'stateRoot.incrementalUsPerChangedEntry': state.incrementalUsPerEntry,
      'stateRoot.incrementalUpdateMs': state.incrementalMs,
      'stateRoot.fullRecomputeMs': state.fullMs,
      'stateRoot.fullUsPerEntry': state.fullMs * 1000 / s.stateAccounts,
      'stateRoot.fullRecompute/incrementalUpdate': state.fullMs / state.incrementalMs,
      'verify.signatures': s.sigs,
      'verify.singlePerSec': ver.singlePerSec,
      'verify.pool2PerSec': ver.poolPerSec,
      'verify.pool2/single': ver.poolPerSec / ver.singlePerSec,
      maxRssMiB: maxRssMiB()
    }
  } finally {
    tmp.cleanup()
  }
}

// ---------------------------------------------------------------------------------------------------
// 1. signing

function makeSignatures (s: Sizes): { items: SignatureCheck[], signPerSec: number } {
  const keys: KeyPair[] = Array.from({ length: s.sigKeys }, (_, i) => accountKey(`${SEED}/sigs`, i))
  const messages = Array.from({ length: s.sigs }, (_, i) => txSigningMessage(sha256(utf8.encode(`tx ${i}`))))
  // warm-up (JIT, OpenSSL) on a few messages, then time the whole set
  for (let i = 0; i < Math.min(200, s.sigs); i++) sign(keys[i % keys.length], messages[i])
  const items: SignatureCheck[] = new Array(s.sigs)
  const t0 = now()
  for (let i = 0; i < s.sigs; i++) {
    const key = keys[i % keys.length]
    items[i] = { publicKey: key.publicKey, message: messages[i], signature: sign(key, messages[i]) }
  }
  return { items, signPerSec: perSec(s.sigs, msSince(t0)) }
}

// ---------------------------------------------------------------------------------------------------
// 2. devnet production

async function benchDevnet (tmp: TempDirs, genesis: GenesisBundle, s: Sizes): Promise<{
  blocksPerSec: number, txPerSec: number, commitsPerSec: number, peakRssMiB: number, subdags: CommittedSubDag[], stateRoot: Uint8Array
}> {
  const store = await ChainStore.open(tmp.make('devnet'), { genesis })
  try {
    const ex = new CommitExecutor(store)
    const p = new DevnetProducer(store, ex, { seed: SEED, epochLength: EPOCH_LENGTH, txsPerBlock: TXS_PER_BLOCK, roundIntervalMs: 0 })
    await p.load()
    await p.produceUntil(s.devnetWarmup)
    const blocks0 = await store.countBucket(Bucket.BLOCK)
    const tx0 = ex.stats.transactions
    const commits0 = store.highestSynced
    const target = s.devnetWarmup + s.devnetCommits
    const m = await measure(async () => { await p.produceUntil(target) })
    const blocks = await store.countBucket(Bucket.BLOCK) - blocks0
    const txs = ex.stats.transactions - tx0
    const commits = store.highestSynced - commits0

    // the sub-dags of every certified commit, parsed, for the executor bench
    const n = store.highestSynced
    const subdags: CommittedSubDag[] = []
    for (let i = 1; i <= n; i++) {
      const commit = await store.getCommit(i)
      if (commit === undefined) throw new Error(`devnet store has no commit ${i}`)
      const raw = await store.getBlocks(commit.commit.blocks)
      subdags.push({
        commit,
        blocks: raw.map((b, j) => {
          if (b === undefined) throw new Error(`devnet store has no block ${j} of commit ${i}`)
          return parseBlock(b, store.chainId)
        })
      })
    }
    const stateRoot = await store.getStateRoot(n)
    if (stateRoot === undefined) throw new Error(`devnet store has no state root for commit ${n}`)
    return {
      blocksPerSec: perSec(blocks, m.ms),
      txPerSec: perSec(txs, m.ms),
      commitsPerSec: perSec(commits, m.ms),
      peakRssMiB: m.peakRssMiB,
      subdags,
      stateRoot
    }
  } finally {
    await store.close()
  }
}

// ---------------------------------------------------------------------------------------------------
// 3. executor

async function benchExecutor (tmp: TempDirs, genesis: GenesisBundle, subdags: CommittedSubDag[], expectedRoot: Uint8Array, batchCommits = 1): Promise<{
  txPerSec: number, commitsPerSec: number, commits: number, peakRssMiB: number
}> {
  const store = await ChainStore.open(tmp.make(`executor-${batchCommits}`), { genesis })
  try {
    const ex = new CommitExecutor(store)
    let root: Uint8Array | undefined
    const m = await measure(async () => {
      // batches of `batchCommits` consecutive commits, cut after each end-of-epoch commit (as `run` cuts them)
      let batch: CommittedSubDag[] = []
      for (const sd of subdags) {
        batch.push(sd)
        if (batch.length >= batchCommits || sd.commit.commit.endOfEpoch != null || sd === subdags[subdags.length - 1]) {
          const rs = await ex.executeBatch(batch)
          root = rs[rs.length - 1].stateRoot
          batch = []
        }
      }
    })
    if (root === undefined || !bytesEqual(root, expectedRoot)) {
      throw new Error(`re-execution ended at state root ${root === undefined ? 'none' : toHex(root)}, the devnet store has ${toHex(expectedRoot)}`)
    }
    return {
      txPerSec: perSec(ex.stats.transactions, m.ms),
      commitsPerSec: perSec(ex.stats.commits, m.ms),
      commits: ex.stats.commits,
      peakRssMiB: m.peakRssMiB
    }
  } finally {
    await store.close()
  }
}

// ---------------------------------------------------------------------------------------------------
// 4. state root

function benchStateRoot (s: Sizes): { incrementalUsPerEntry: number, incrementalMs: number, fullMs: number } {
  const addresses: Uint8Array[] = new Array(s.stateAccounts)
  const states: Uint8Array[] = new Array(s.stateAccounts)
  for (let i = 0; i < s.stateAccounts; i++) {
    addresses[i] = sha256(utf8.encode(`account ${i}`))
    states[i] = encodeAccount({ balance: 1e9, nonce: 0, lastModifiedEpoch: 0 })
  }
  const full = (): LtHash => {
    const h = new LtHash()
    for (let i = 0; i < s.stateAccounts; i++) h.addLanes(accountElement(addresses[i], states[i]))
    h.checksum()
    return h
  }
  const lthash = full() // the initial state (also warms up)

  // incremental: each rep changes `stateChanged` distinct accounts spread over the state
  const stride = Math.max(1, Math.floor(s.stateAccounts / s.stateChanged))
  const times: number[] = []
  let root: Uint8Array = new Uint8Array(0)
  for (let rep = 0; rep < s.stateReps; rep++) {
    const t0 = now()
    for (let k = 0; k < s.stateChanged; k++) {
      const i = (k * stride + rep) % s.stateAccounts
      const before = states[i]
      const after = encodeAccount({ balance: 1e9 - rep - 1, nonce: rep + 1, lastModifiedEpoch: rep + 1 })
      lthash.removeLanes(accountElement(addresses[i], before))
      lthash.addLanes(accountElement(addresses[i], after))
      states[i] = after
    }
    root = lthash.checksum()
    times.push(msSince(t0))
  }
  const incrementalMs = median(times)

  // full recompute of the updated state: best of 2, and it must agree with the incremental root
  let fullMs = Infinity
  for (let rep = 0; rep < 2; rep++) {
    const t0 = now()
    const h = full()
    fullMs = Math.min(fullMs, msSince(t0))
    if (!bytesEqual(h.checksum(), root)) throw new Error('incremental LtHash update disagrees with the full recompute')
  }
  return { incrementalUsPerEntry: incrementalMs * 1000 / s.stateChanged, incrementalMs, fullMs }
}

// ---------------------------------------------------------------------------------------------------
// 5. verification: one thread vs a pool of 2 workers

async function benchVerify (items: SignatureCheck[], s: Sizes): Promise<{ singlePerSec: number, poolPerSec: number }> {
  const single = (list: readonly SignatureCheck[]): number => {
    let ok = 0
    for (const it of list) if (verify(it.publicKey, it.message, it.signature)) ok++
    return ok
  }
  const pool = new VerifyPool({ workers: 2, batchSize: 256 })
  try {
    // warm-up: KeyObject caches of this thread and of both workers, JIT, worker start-up
    const warm = items.slice(0, Math.min(items.length, s.sigKeys * 2))
    single(warm)
    await pool.verifyBatch(warm)
    await pool.verifyBatch(warm)

    let bestSingle = Infinity
    let bestPool = Infinity
    for (let rep = 0; rep < s.verifyReps; rep++) {
      let t0 = now()
      const ok = single(items)
      bestSingle = Math.min(bestSingle, msSince(t0))
      if (ok !== items.length) throw new Error(`${items.length - ok} valid signatures failed to verify inline`)

      t0 = now()
      const res = await pool.verifyBatch(items)
      bestPool = Math.min(bestPool, msSince(t0))
      if (res.length !== items.length || res.includes(false)) throw new Error('valid signatures failed to verify in the pool')
    }
    return { singlePerSec: perSec(items.length, bestSingle), poolPerSec: perSec(items.length, bestPool) }
  } finally {
    await pool.close()
  }
}

function median (xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y)
  const m = a.length >> 1
  return a.length % 2 === 1 ? a[m] : (a[m - 1] + a[m]) / 2
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick')
  const figures = await run({ quick })
  printFigures(`foundation${quick ? ' (quick)' : ''}`, figures)
}
