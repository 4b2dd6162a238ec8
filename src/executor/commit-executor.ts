/**
 * CommitExecutor: executes CommittedSubDags strictly in commit-index order.
 *
 * For each commit: transactions are taken in a deterministic order (blocks in commit order — sorted by
 * round, then author — and transactions in block order); those already executed (effects stored, or
 * earlier in the same commit) are skipped; transfers move balances and advance nonces; embedding
 * submissions are stored with owner and commit; a failure (bad nonce, overdraft) is a failed effect
 * that changes nothing, never a crash. The state root (LtHash over all accounts and embeddings) is
 * updated in O(changed entries). At an end-of-epoch commit, the genesis' embedding pruning rule (if
 * any, see src/executor/pruning.ts) deletes the embeddings it selects. Everything the commit changes, a
 * state change log row per changed entry (for incremental snapshots, see src/store/keys.ts), its
 * effects, its state root and `highest executed` land in one atomic batch.
 */
import { EventEmitter } from 'node:events'
import type { ChainStore } from '../store/chain-store.ts'
import type { CommittedSubDag } from '../chain/subdag.ts'
import { parseTransaction, type ParsedTransaction } from '../chain/transaction.ts'
import { Codecs } from '../chain/codecs.ts'
import { ExecutionStatus, type AccountState, type TransactionEffects } from '../chain/types.ts'
import { LtHash } from '../crypto/lthash.ts'
import { accountElement, embeddingElement, encodeAccount, encodeEmbedding } from './state-hash.ts'
import { bytesEqual, sha256, toHex } from '../crypto/hash.ts'
import { refsEqual } from '../chain/block.ts'
import { pruningRule } from '../chain/genesis.ts'
import { Bucket, u64 } from '../store/keys.ts'
import { selectPrunedEmbeddings, type LiveEmbedding } from './pruning.ts'
import { SomaError, StoreError } from '../errors.ts'

export class ExecutionOrderError extends SomaError { static override readonly code: string = 'ERR_EXECUTION_ORDER' }

export interface ExecutionResult {
  index: number
  epoch: number
  stateRoot: Uint8Array
  executed: number
  skipped: number
  failed: number
  /** embeddings deleted by the genesis' pruning rule (end-of-epoch commits only; 0 otherwise) */
  prunedEmbeddings?: number
  /** set when this commit ended its epoch */
  nextEpoch?: number
}

export interface CommitExecutorEvents {
  executed: [ExecutionResult]
}

interface AccountSlot {
  address: Uint8Array
  /** encoding stored before this commit, undefined if the account did not exist */
  before?: Uint8Array
  state: AccountState
  dirty: boolean
}

/** Accounts kept by the executor's write-through cache (about 100 bytes each). */
const ACCOUNT_CACHE_SIZE = 100_000

export class CommitExecutor extends EventEmitter<CommitExecutorEvents> {
  private readonly accountCache = new Map<string, Uint8Array>()
  private readonly store: ChainStore
  private lthash?: LtHash
  private queue: Promise<unknown> = Promise.resolve()
  /** totals since start, for metrics */
  readonly stats = { commits: 0, transactions: 0, failed: 0, skipped: 0 }

  constructor (store: ChainStore) {
    super()
    this.store = store
  }

  get highestExecuted (): number { return this.store.highestExecuted }

  /** Executes one sub-dag; it must be the commit right after the highest executed one. */
  async execute (subdag: CommittedSubDag): Promise<ExecutionResult> {
    const p = this.queue.then(async () => {
      try {
        return await this.executeNow(subdag)
      } catch (err) {
        this.lthash = undefined // the in-memory accumulator may be ahead of the store: reload it
        this.accountCache.clear()
        throw err
      }
    })
    this.queue = p.catch(() => {})
    return await p
  }

  private async executeNow (subdag: CommittedSubDag): Promise<ExecutionResult> {
    const { commit, blocks } = subdag
    const expected = this.store.highestExecuted + 1
    if (commit.index !== expected) throw new ExecutionOrderError(`commit ${commit.index} handed to the executor, expected ${expected}`)
    if (blocks.length !== commit.commit.blocks.length || blocks.some((b, i) => !refsEqual(b.ref, commit.commit.blocks[i]))) {
      throw new ExecutionOrderError(`commit ${commit.index}: the blocks given do not match the commit's block refs`)
    }
    const lthash = this.lthash ?? await this.store.getLtHash()
    this.lthash = lthash
    const g = this.store.genesis
    const chainId = g.chainId
    const dim = g.genesis.embeddingDim
    const epoch = commit.epoch

    // 1. transactions in deterministic order, parsed
    const txs: Array<{ parsed?: ParsedTransaction, error?: string, digest: Uint8Array, inLeader: boolean }> = []
    for (const b of blocks) {
      const inLeader = refsEqual(b.ref, commit.commit.leader)
      for (const stx of b.block.transactions) {
        try {
          const parsed = parseTransaction(stx, chainId, dim)
          txs.push({ parsed, digest: parsed.digest, inLeader })
        } catch (err: any) {
          txs.push({ error: err.message, digest: sha256(stx.tx), inLeader })
        }
      }
    }
    // 2. skip executed ones (stored effects, or seen earlier in this commit)
    const executedMask = await this.store.executedMask(txs.map(t => t.digest))
    const seen = new Set<string>()
    const todo: typeof txs = []
    let skipped = 0
    txs.forEach((t, i) => {
      const k = toHex(t.digest)
      if (executedMask[i] || seen.has(k)) { skipped++; return }
      seen.add(k)
      todo.push(t)
    })

    // 3. load touched accounts
    const slots = new Map<string, AccountSlot>()
    const addrs: Uint8Array[] = []
    const want = (a: Uint8Array): void => {
      const k = toHex(a)
      if (!slots.has(k)) { slots.set(k, undefined as any); addrs.push(a) }
    }
    for (const t of todo) {
      const tx = t.parsed?.tx
      if (tx == null) continue
      if (tx.kind === 'transfer') { want(tx.sender); want(tx.transfer!.to) } else if (tx.kind === 'submitEmbedding') want(tx.sender)
    }
    const raw = await this.readAccounts(addrs)
    addrs.forEach((a, i) => {
      const before = raw[i]
      const state = before === undefined ? { balance: 0, nonce: 0, lastModifiedEpoch: epoch } : Codecs.AccountState.decode(before)
      slots.set(toHex(a), { address: a, before, state: { balance: state.balance, nonce: state.nonce, lastModifiedEpoch: state.lastModifiedEpoch }, dirty: false })
    })

    // 4. execute
    const batch = this.store.batch()
    const effects: TransactionEffects[] = []
    const added: LiveEmbedding[] = []
    let failed = 0
    let nextEpoch: number | undefined
    for (const t of todo) {
      const fail = (status: ExecutionStatus, error: string): void => {
        failed++
        effects.push({ txDigest: t.digest, commitIndex: commit.index, status, error })
      }
      if (t.parsed === undefined) { fail(ExecutionStatus.INVALID_TRANSACTION, t.error ?? 'invalid'); continue }
      const tx = t.parsed.tx
      if (tx.kind === 'changeEpoch') {
        const eoe = commit.commit.endOfEpoch
        const ce = tx.changeEpoch!
        if (eoe == null || !t.inLeader) { fail(ExecutionStatus.INVALID_TRANSACTION, 'ChangeEpoch outside the leader block of an end-of-epoch commit'); continue }
        if (ce.nextEpoch !== epoch + 1 || ce.nextCommittee == null || !bytesEqual(Codecs.Committee.encode(ce.nextCommittee), Codecs.Committee.encode(eoe.nextCommittee))) {
          fail(ExecutionStatus.INVALID_TRANSACTION, 'ChangeEpoch does not match the commit\'s next committee'); continue
        }
        nextEpoch = ce.nextEpoch
        effects.push({ txDigest: t.digest, commitIndex: commit.index, status: ExecutionStatus.SUCCESS })
        continue
      }
      const sender = slots.get(toHex(tx.sender))!
      if (tx.nonce !== sender.state.nonce) { fail(ExecutionStatus.BAD_NONCE, `nonce ${tx.nonce}, account is at ${sender.state.nonce}`); continue }
      if (tx.kind === 'transfer') {
        const amount = tx.transfer!.amount
        if (amount > sender.state.balance) { fail(ExecutionStatus.INSUFFICIENT_BALANCE, `transfer of ${amount} with a balance of ${sender.state.balance}`); continue }
        const to = slots.get(toHex(tx.transfer!.to))!
        sender.state.balance -= amount
        sender.state.nonce++
        sender.state.lastModifiedEpoch = epoch
        sender.dirty = true
        to.state.balance += amount
        to.state.lastModifiedEpoch = epoch
        to.dirty = true
        if (!Number.isSafeInteger(to.state.balance)) throw new StoreError(`balance overflow on ${toHex(to.address)}`)
      } else if (tx.kind === 'submitEmbedding') {
        sender.state.nonce++
        sender.state.lastModifiedEpoch = epoch
        sender.dirty = true
        const se = tx.submitEmbedding!
        const enc = encodeEmbedding({ owner: tx.sender, commitIndex: commit.index, vector: se.vector, model: se.model ?? '', epoch })
        batch.putEmbedding(t.digest, enc)
        batch.putChange(commit.index, Bucket.EMBEDDING, t.digest, undefined)
        lthash.addLanes(embeddingElement(t.digest, enc))
        added.push({ id: t.digest, encoded: enc, addedNow: true })
      }
      effects.push({ txDigest: t.digest, commitIndex: commit.index, status: ExecutionStatus.SUCCESS })
    }
    if (commit.commit.endOfEpoch != null) {
      // the committee is installed for the next epoch even if the leader omitted the ChangeEpoch tx
      batch.putCommittee(commit.commit.endOfEpoch.nextCommittee)
      nextEpoch = epoch + 1
    }
    let prunedEmbeddings = 0
    const rule = pruningRule(g.genesis)
    if (commit.commit.endOfEpoch != null && rule !== null) {
      for (const p of await selectPrunedEmbeddings(this.store, added, epoch, rule)) {
        batch.delEmbedding(p.id)
        lthash.removeLanes(embeddingElement(p.id, p.encoded))
        // one change row per entry and commit, with its state before the commit: an embedding added by
        // this same commit already has its row ("did not exist")
        if (!p.addedNow) batch.putChange(commit.index, Bucket.EMBEDDING, p.id, u64(p.commitIndex))
        prunedEmbeddings++
      }
    }

    // 5. state changes, effects, root, progress: one batch
    const written: Array<[Uint8Array, Uint8Array]> = []
    for (const s of slots.values()) {
      if (!s.dirty) continue
      const enc = encodeAccount(s.state)
      if (s.before !== undefined) lthash.removeLanes(accountElement(s.address, s.before))
      lthash.addLanes(accountElement(s.address, enc))
      batch.putAccount(s.address, enc)
      batch.putChange(commit.index, Bucket.ACCOUNT, s.address, s.before)
      written.push([s.address, enc])
    }
    for (const e of effects) batch.putEffects(e)
    const stateRoot = lthash.checksum()
    batch.putStateRoot(commit.index, stateRoot, lthash)
    batch.setHighestExecuted(commit.index)
    await batch.write()
    for (const [a, enc] of written) this.cacheAccount(a, enc)
    const result: ExecutionResult = { index: commit.index, epoch, stateRoot, executed: todo.length, skipped, failed, prunedEmbeddings, nextEpoch }
    this.stats.commits++
    this.stats.transactions += todo.length
    this.stats.failed += failed
    this.stats.skipped += skipped
    this.emit('executed', result)
    return result
  }

  /**
   * Account states as stored, from a write-through cache of the accounts this executor wrote (the
   * executor is the only writer of accounts while it runs); misses are read from the store in one
   * getMany. Whoever writes accounts outside the executor (a snapshot load) calls resetCaches().
   */
  private async readAccounts (addrs: Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    const out: Array<Uint8Array | undefined> = new Array(addrs.length)
    const missing: number[] = []
    addrs.forEach((a, i) => {
      const hit = this.accountCache.get(Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('latin1'))
      if (hit !== undefined) out[i] = hit
      else missing.push(i)
    })
    if (missing.length > 0) {
      const raw = await this.store.getAccountsRaw(missing.map(i => addrs[i]))
      missing.forEach((i, j) => { out[i] = raw[j] })
    }
    return out
  }

  private cacheAccount (address: Uint8Array, enc: Uint8Array): void {
    const key = Buffer.from(address.buffer, address.byteOffset, address.byteLength).toString('latin1')
    this.accountCache.delete(key) // re-insert: the Map's order is the eviction order
    if (this.accountCache.size >= ACCOUNT_CACHE_SIZE) this.accountCache.delete(this.accountCache.keys().next().value as string)
    this.accountCache.set(key, enc)
  }

  /** Forgets cached state; call after writing accounts or the accumulator outside the executor. */
  resetCaches (): void {
    this.accountCache.clear()
    this.lthash = undefined
  }

  /** Drains sub-dags from an async source (the bounded channel from sync) until it ends or aborts. */
  async run (source: AsyncIterable<CommittedSubDag>, signal?: AbortSignal): Promise<void> {
    for await (const s of source) {
      if (signal?.aborted === true) return
      if (s.commit.index <= this.store.highestExecuted) continue
      await this.execute(s)
    }
  }
}
