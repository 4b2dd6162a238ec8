/**
 * CommitExecutor: executes CommittedSubDags strictly in commit-index order.
 *
 * For each commit: transactions are taken in a deterministic order (blocks in commit order — sorted by
 * round, then author — and transactions in block order); transfers move balances and advance nonces;
 * embedding submissions are stored with owner and commit; a failure (a nonce ahead of the account's,
 * an overdraft) is a failed effect that changes nothing, never a crash.
 *
 * Which transactions run depends on the state alone, never on the history of effects, so that a node
 * that loaded a snapshot (the state at a commit, without the effects before it) executes every later
 * commit exactly as a node that executed from genesis: a user transaction whose nonce is below its
 * sender's (a replay of one already executed, here or earlier in the batch, or another transaction for
 * a nonce already used) is skipped and records nothing. A transaction that failed did not use its
 * nonce: included again, it runs again. Only transactions that can change no state (those that do not
 * parse, and the sender-less ChangeEpoch) are skipped by digest when they already have effects.
 *
 * At an end-of-epoch commit, the genesis' embedding pruning rule (if any, see
 * src/executor/pruning.ts) deletes the embeddings it selects from the state; an archival store
 * (`store.archival`, src/sync/archival.ts) keeps each of them, with the commit that pruned it, in the
 * same atomic write (ChainStore.getEmbeddingHistory).
 *
 * Commits run in batches of consecutive commits (`executeBatch`; `run` batches what sync has already
 * queued, `execute` is a batch of one). A batch executes its commits one after the other on in-memory
 * account states and lands in one atomic LevelDB batch: every changed entry, one state change log row
 * per changed entry (at the first commit of the batch that changed it, with its state before the batch;
 * see src/store/keys.ts), every effect, the state root of the batch's last commit and `highest
 * executed`. The state root (LtHash over all accounts and embeddings) is updated in O(changed entries):
 * one element removed and one added per account the batch changed, however often it changed. An
 * end-of-epoch commit always ends its batch, so snapshots (taken at batch ends) see exact states.
 */
import { EventEmitter } from 'node:events'
import type { ChainStore } from '../store/chain-store.ts'
import type { CommittedSubDag } from '../chain/subdag.ts'
import { parseTransaction, type ParsedTransaction } from '../chain/transaction.ts'
import { Codecs } from '../chain/codecs.ts'
import { ExecutionStatus, type AccountState } from '../chain/types.ts'
import { LtHash } from '../crypto/lthash.ts'
import { accountElement, embeddingElement, encodeAccount, encodeEmbedding } from '../store/state-hash.ts'
import { bytesEqual, bytesKey, sha256, toHex } from '../crypto/hash.ts'
import { refsEqual } from '../chain/block.ts'
import { pruningRule } from '../chain/genesis.ts'
import { Bucket, u64 } from '../store/keys.ts'
import { selectPrunedEmbeddings, type LiveEmbedding } from './pruning.ts'
import { SomaError, StoreError } from '../errors.ts'

export class ExecutionOrderError extends SomaError { static override readonly code: string = 'ERR_EXECUTION_ORDER' }

export interface ExecutionResult {
  index: number
  epoch: number
  /**
   * The state root after this commit: set on the last commit of an execution batch (every commit
   * executed with `execute`, every end-of-epoch commit), undefined inside a batch.
   */
  stateRoot?: Uint8Array
  /** transactions executed (with a success or failure effect) */
  executed: number
  skipped: number
  failed: number
  /** embeddings deleted by the genesis' pruning rule (end-of-epoch commits only; 0 otherwise) */
  prunedEmbeddings?: number
  /** set when this commit ended its epoch */
  nextEpoch?: number
}

/** The result of a commit executed alone (`execute`), or the last of a batch: its state root is known. */
export type ExecutedCommit = ExecutionResult & { stateRoot: Uint8Array }

export interface CommitExecutorOptions {
  /**
   * Most commits `run` takes from its source at once and executes as one batch (one LevelDB write;
   * each account's state element hashed once per batch; the state root recorded at the batch's last
   * commit). @default 50
   */
  maxBatchCommits?: number
}

export interface CommitExecutorEvents {
  executed: [ExecutionResult]
  /** after each executed batch: its commits and its time (execution and the LevelDB write) */
  batch: [{ commits: number, ms: number }]
}

interface AccountSlot {
  address: Uint8Array
  /** encoding stored before this batch, undefined if the account did not exist */
  before?: Uint8Array
  state: AccountState
  /** index of the batch's first commit that changed the account; 0: unchanged */
  firstChanged: number
}

interface TxItem {
  parsed?: ParsedTransaction
  error?: string
  digest: Uint8Array
  inLeader: boolean
  /** a transaction that changes no state and has effects already (stored, or earlier in this batch) */
  skip?: boolean
  /** bytesKey of the sender and of a transfer's recipient: the keys of their AccountSlots */
  senderKey?: string
  toKey?: string
}

/** Accounts kept by the executor's write-through cache (about 100 bytes each). */
const ACCOUNT_CACHE_SIZE = 100_000

export class CommitExecutor extends EventEmitter<CommitExecutorEvents> {
  private readonly accountCache = new Map<string, Uint8Array>()
  private readonly store: ChainStore
  private lthash?: LtHash
  private queue: Promise<unknown> = Promise.resolve()
  /** totals since start, for metrics */
  readonly stats = { commits: 0, batches: 0, transactions: 0, failed: 0, skipped: 0 }

  /** most commits `run` executes as one batch */
  readonly maxBatchCommits: number

  constructor (store: ChainStore, opts: CommitExecutorOptions = {}) {
    super()
    this.store = store
    this.maxBatchCommits = opts.maxBatchCommits ?? 50
    if (!Number.isInteger(this.maxBatchCommits) || this.maxBatchCommits < 1) throw new RangeError(`maxBatchCommits must be an integer >= 1, got ${this.maxBatchCommits}`)
  }

  get highestExecuted (): number { return this.store.highestExecuted }

  /** Executes one sub-dag; it must be the commit right after the highest executed one. */
  async execute (subdag: CommittedSubDag): Promise<ExecutedCommit> {
    return (await this.executeBatch([subdag]))[0] as ExecutedCommit
  }

  /**
   * Executes consecutive sub-dags (the first right after the highest executed commit) as one batch:
   * one LevelDB write, state root recorded for the last commit only. An end-of-epoch commit may only
   * be a batch's last. Returns one result per commit, in order.
   */
  async executeBatch (subdags: readonly CommittedSubDag[]): Promise<ExecutionResult[]> {
    const p = this.queue.then(async () => {
      try {
        const t0 = performance.now()
        const results = await this.executeNow(subdags)
        if (results.length > 0) this.emit('batch', { commits: results.length, ms: performance.now() - t0 })
        return results
      } catch (err) {
        this.lthash = undefined // the in-memory accumulator may be ahead of the store: reload it
        this.accountCache.clear()
        throw err
      }
    })
    this.queue = p.catch(() => {})
    return await p
  }

  private async executeNow (subdags: readonly CommittedSubDag[]): Promise<ExecutionResult[]> {
    if (subdags.length === 0) return []
    subdags.forEach(({ commit, blocks }, i) => {
      const expected = this.store.highestExecuted + 1 + i
      if (commit.index !== expected) throw new ExecutionOrderError(`commit ${commit.index} handed to the executor, expected ${expected}`)
      if (blocks.length !== commit.commit.blocks.length || blocks.some((b, j) => !refsEqual(b.ref, commit.commit.blocks[j]))) {
        throw new ExecutionOrderError(`commit ${commit.index}: the blocks given do not match the commit's block refs`)
      }
      if (commit.commit.endOfEpoch != null && i !== subdags.length - 1) throw new ExecutionOrderError(`commit ${commit.index} ends epoch ${commit.epoch}: it must be the last of an execution batch`)
    })
    const lthash = this.lthash ?? await this.store.getLtHash()
    this.lthash = lthash
    const g = this.store.genesis
    const chainId = g.chainId
    const dim = g.genesis.embeddingDim

    // 1. transactions in deterministic order, parsed
    const perCommit: TxItem[][] = []
    const all: TxItem[] = []
    for (const { commit, blocks } of subdags) {
      const txs: TxItem[] = []
      for (const b of blocks) {
        const inLeader = refsEqual(b.ref, commit.commit.leader)
        for (const stx of b.block.transactions) {
          let t: TxItem
          try {
            const parsed = parseTransaction(stx, chainId, dim)
            t = { parsed, digest: parsed.digest, inLeader }
          } catch (err: any) {
            t = { error: err.message, digest: sha256(stx.tx), inLeader }
          }
          txs.push(t)
          all.push(t)
        }
      }
      perCommit.push(txs)
    }
    // 2. transactions that change no state (they do not parse, or ChangeEpoch) are skipped when they
    // have effects already (stored, or earlier in this batch); user transactions are skipped by nonce
    const stateless = all.filter(t => t.parsed === undefined || t.parsed.kind === 'changeEpoch')
    const executedMask = await this.store.executedMask(stateless.map(t => t.digest))
    const seen = new Set<string>()
    stateless.forEach((t, i) => {
      const k = bytesKey(t.digest)
      if (executedMask[i] || seen.has(k)) { t.skip = true; return }
      seen.add(k)
    })

    // 3. load touched accounts
    const slots = new Map<string, AccountSlot>()
    const addrs: Uint8Array[] = []
    const addrKeys: string[] = []
    const want = (a: Uint8Array): string => {
      const k = bytesKey(a)
      if (!slots.has(k)) { slots.set(k, undefined as any); addrs.push(a); addrKeys.push(k) }
      return k
    }
    for (const t of all) {
      const p = t.parsed
      if (p === undefined || t.skip === true) continue
      if (p.kind === 'transfer') { t.senderKey = want(p.tx.sender); t.toKey = want(p.tx.transfer!.to) } else if (p.kind === 'submitEmbedding') t.senderKey = want(p.tx.sender)
    }
    const raw = await this.readAccounts(addrs, addrKeys)
    const firstEpoch = subdags[0].commit.epoch
    addrs.forEach((a, i) => {
      const before = raw[i]
      const state = before === undefined ? { balance: 0, nonce: 0, lastModifiedEpoch: firstEpoch } : Codecs.AccountState.decode(before)
      slots.set(addrKeys[i], { address: a, before, state: { balance: state.balance, nonce: state.nonce, lastModifiedEpoch: state.lastModifiedEpoch }, firstChanged: 0 })
    })

    // 4. execute, commit by commit, on the batch's in-memory account states
    const batch = this.store.batch()
    const added: LiveEmbedding[] = []
    const results: ExecutionResult[] = []
    const rule = pruningRule(g.genesis)
    const archival = this.store.archival
    // a failed transaction: its effect, nothing else (one closure per batch, not one per transaction)
    let failed = 0
    const fail = (t: TxItem, index: number, status: ExecutionStatus, error: string): void => {
      failed++
      batch.putEffects({ txDigest: t.digest, commitIndex: index, status, error })
    }
    for (let ci = 0; ci < subdags.length; ci++) {
      const commit = subdags[ci].commit
      const epoch = commit.epoch
      const index = commit.index
      failed = 0
      let executed = 0
      let skipped = 0
      let nextEpoch: number | undefined
      const touch = (s: AccountSlot): void => {
        s.state.lastModifiedEpoch = epoch
        if (s.firstChanged === 0) s.firstChanged = index
      }
      for (const t of perCommit[ci]) {
        if (t.skip === true) { skipped++; continue }
        executed++
        if (t.parsed === undefined) { fail(t, index, ExecutionStatus.INVALID_TRANSACTION, t.error ?? 'invalid'); continue }
        const tx = t.parsed.tx
        const kind = t.parsed.kind
        if (kind === 'changeEpoch') {
          const eoe = commit.commit.endOfEpoch
          const ce = tx.changeEpoch!
          if (eoe == null || !t.inLeader) { fail(t, index, ExecutionStatus.INVALID_TRANSACTION, 'ChangeEpoch outside the leader block of an end-of-epoch commit'); continue }
          if (ce.nextEpoch !== epoch + 1 || ce.nextCommittee == null || !bytesEqual(Codecs.Committee.encode(ce.nextCommittee), Codecs.Committee.encode(eoe.nextCommittee))) {
            fail(t, index, ExecutionStatus.INVALID_TRANSACTION, 'ChangeEpoch does not match the commit\'s next committee'); continue
          }
          nextEpoch = ce.nextEpoch
          batch.putEffects({ txDigest: t.digest, commitIndex: index, status: ExecutionStatus.SUCCESS })
          continue
        }
        const sender = slots.get(t.senderKey!)!
        // below the account's nonce: a replay (or a second transaction for a used nonce), nothing to record
        if (tx.nonce < sender.state.nonce) { executed--; skipped++; continue }
        if (tx.nonce > sender.state.nonce) { fail(t, index, ExecutionStatus.BAD_NONCE, `nonce ${tx.nonce}, account is at ${sender.state.nonce}`); continue }
        if (kind === 'transfer') {
          const amount = tx.transfer!.amount
          if (amount > sender.state.balance) { fail(t, index, ExecutionStatus.INSUFFICIENT_BALANCE, `transfer of ${amount} with a balance of ${sender.state.balance}`); continue }
          const to = slots.get(t.toKey!)!
          if (!Number.isSafeInteger(to.state.balance + amount)) throw new StoreError(`balance overflow on ${toHex(to.address)}`)
          sender.state.balance -= amount
          sender.state.nonce++
          touch(sender)
          to.state.balance += amount
          touch(to)
        } else if (kind === 'submitEmbedding') {
          sender.state.nonce++
          touch(sender)
          const se = tx.submitEmbedding!
          const enc = encodeEmbedding({ owner: tx.sender, commitIndex: index, vector: se.vector, model: se.model ?? '', epoch })
          batch.putEmbedding(t.digest, enc)
          batch.putChange(index, Bucket.EMBEDDING, t.digest, undefined)
          lthash.addLanes(embeddingElement(t.digest, enc))
          added.push({ id: t.digest, encoded: enc, addedNow: true })
        }
        batch.putEffects({ txDigest: t.digest, commitIndex: index, status: ExecutionStatus.SUCCESS })
      }
      let prunedEmbeddings = 0
      if (commit.commit.endOfEpoch != null) {
        // the committee is installed for the next epoch even if the leader omitted the ChangeEpoch tx
        batch.putCommittee(commit.commit.endOfEpoch.nextCommittee)
        nextEpoch = epoch + 1
        if (rule !== null) {
          // an end-of-epoch commit is its batch's last: `added` holds every embedding of the batch
          for (const p of await selectPrunedEmbeddings(this.store, added, epoch, rule)) {
            batch.delEmbedding(p.id)
            // an archival store keeps what the state prunes (src/store/keys.ts, 0x0f), in the same batch
            if (archival) batch.putPrunedEmbedding(p.id, index, p.encoded)
            lthash.removeLanes(embeddingElement(p.id, p.encoded))
            // one change row per entry and batch, with its state before the batch: an embedding added
            // by this batch already has its row ("did not exist")
            if (!p.addedNow) batch.putChange(index, Bucket.EMBEDDING, p.id, u64(p.commitIndex))
            prunedEmbeddings++
          }
        }
      }
      results.push({ index, epoch, executed, skipped, failed, prunedEmbeddings, nextEpoch })
    }

    // 5. state changes (one element out, one in, per account and batch), effects, root, progress: one batch
    const written: Array<[string, Uint8Array]> = []
    for (const [key, s] of slots) {
      if (s.firstChanged === 0) continue
      const enc = encodeAccount(s.state)
      if (s.before !== undefined) lthash.removeLanes(accountElement(s.address, s.before, key))
      lthash.addLanes(accountElement(s.address, enc, key))
      batch.putAccount(s.address, enc)
      batch.putChange(s.firstChanged, Bucket.ACCOUNT, s.address, s.before)
      written.push([key, enc])
    }
    const last = results[results.length - 1]
    last.stateRoot = lthash.checksum()
    batch.putStateRoot(last.index, last.stateRoot, lthash)
    batch.setHighestExecuted(last.index)
    await batch.write()
    for (const [a, enc] of written) this.cacheAccount(a, enc)
    this.stats.batches++
    for (const r of results) {
      this.stats.commits++
      this.stats.transactions += r.executed
      this.stats.failed += r.failed
      this.stats.skipped += r.skipped
    }
    for (const r of results) this.emit('executed', r)
    return results
  }

  /**
   * Account states as stored, from a write-through cache of the accounts this executor wrote (the
   * executor is the only writer of accounts while it runs); misses are read from the store in one
   * getMany. Whoever writes accounts outside the executor (a snapshot load) calls resetCaches().
   */
  private async readAccounts (addrs: Uint8Array[], keys: readonly string[]): Promise<Array<Uint8Array | undefined>> {
    const out: Array<Uint8Array | undefined> = new Array(addrs.length)
    const missing: number[] = []
    addrs.forEach((a, i) => {
      const hit = this.accountCache.get(keys[i])
      if (hit !== undefined) out[i] = hit
      else missing.push(i)
    })
    if (missing.length > 0) {
      const raw = await this.store.getAccountsRaw(missing.map(i => addrs[i]))
      missing.forEach((i, j) => { out[i] = raw[j] })
    }
    return out
  }

  /** `key`: bytesKey(address) */
  private cacheAccount (key: string, enc: Uint8Array): void {
    this.accountCache.delete(key) // re-insert: the Map's order is the eviction order
    if (this.accountCache.size >= ACCOUNT_CACHE_SIZE) this.accountCache.delete(this.accountCache.keys().next().value as string)
    this.accountCache.set(key, enc)
  }

  /** Forgets cached state; call after writing accounts or the accumulator outside the executor. */
  resetCaches (): void {
    this.accountCache.clear()
    this.lthash = undefined
  }

  /**
   * Drains sub-dags from an async source (the bounded channel from sync) until it ends or aborts. When
   * the source can hand over what it already holds (`takeReady`), the executor takes up to
   * `maxBatchCommits` commits at once and executes them as one batch, cut after each end-of-epoch
   * commit.
   */
  async run (source: AsyncIterable<CommittedSubDag> & { takeReady?: (max: number, stopAfter?: (s: CommittedSubDag) => boolean) => CommittedSubDag[] }, signal?: AbortSignal): Promise<void> {
    const it = source[Symbol.asyncIterator]()
    while (true) {
      const r = await it.next()
      if (r.done === true || signal?.aborted === true) return
      const items = [r.value]
      if (source.takeReady !== undefined && this.maxBatchCommits > 1 && r.value.commit.commit.endOfEpoch == null) {
        items.push(...source.takeReady(this.maxBatchCommits - 1, s => s.commit.commit.endOfEpoch != null))
      }
      const todo = items.filter(s => s.commit.index > this.store.highestExecuted)
      if (todo.length > 0) await this.executeBatch(todo)
    }
  }
}
