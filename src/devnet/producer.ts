/**
 * The devnet producer: consensus is out of scope, so this simulates a committee whose keys it holds.
 *
 * Each round every authority of the epoch's committee makes a signed block that references all blocks
 * of the previous round and carries user transactions (transfers and embedding submissions signed by
 * the accounts' keys) and a vote for the previous round's commit. The leader of round r (authority
 * r mod n) is committed by commit r: its sub-dag is the leader plus the previous round's not yet
 * committed blocks. Commit c is certified by the votes in the next round's blocks, so the highest
 * certified ("synced") commit trails the newest by one. Every `epochLength` commits an end-of-epoch
 * commit hands over to the next committee (stakes change and one authority rotates out); the old
 * committee adds one certifier round that only votes, and the new epoch starts with fresh ancestors.
 *
 * Transaction execution order is leader(r), then the non-leaders of r by author, then leader(r+1)...;
 * the producer generates transactions in that same order so its projected nonces are exact.
 *
 * With `snapshots` set, right after executing a commit that ends its epoch (or every `every` commits)
 * the producer builds a state snapshot, incrementally from the previous one, signed by all members of
 * that commit's epoch committee, and emits `snapshot` (src/snapshot/snapshotter.ts).
 */
import { EventEmitter } from 'node:events'
import type { ChainStore } from '../store/chain-store.ts'
import type { CommitExecutor, ExecutedCommit } from '../executor/commit-executor.ts'
import { signBlock, type ParsedBlock, compareRefs } from '../chain/block.ts'
import { encodeCommit, type ParsedCommit } from '../chain/commit.ts'
import { signTransaction, systemTransaction } from '../chain/transaction.ts'
import { accountKey, devnetCommittee } from '../chain/genesis.ts'
import { Codecs } from '../chain/codecs.ts'
import type { Block, BlockRef, Committee, CommitVote, SignedTransaction } from '../chain/types.ts'
import type { KeyPair } from '../crypto/keys.ts'
import { Prng } from './prng.ts'
import { toHex } from '../crypto/hash.ts'
import { Keys, readU64 } from '../store/keys.ts'
import { Snapshotter, type ScheduledSnapshotOptions } from '../snapshot/snapshotter.ts'
import type { SnapshotBuildResult } from '../snapshot/builder.ts'

export interface DevnetProducerInit {
  /** Seed of the genesis the store was created from (keys derive from it). */
  seed: string
  /** @default 200 */
  roundIntervalMs?: number
  /** @default 10 */
  txsPerBlock?: number
  /** every n-th user transaction is an embedding submission; 0 for none. @default 5 */
  embeddingEvery?: number
  /** commits per epoch. @default 50 */
  epochLength?: number
  /** stop after this many commits; 0 for never. @default 0 */
  maxCommits?: number
  /** accounts the workload uses (the first n genesis accounts). @default all genesis accounts */
  activeAccounts?: number
  /**
   * Take state snapshots signed by the epoch's committee: after every end-of-epoch commit and every
   * `every` commits (see src/snapshot/snapshotter.ts). @default none
   */
  snapshots?: ScheduledSnapshotOptions
}

export interface ProducedCommit {
  commit: ParsedCommit
  blocks: ParsedBlock[]
}

export interface DevnetProducerEvents {
  /** a commit became certified (and was executed) */
  certified: [ProducedCommit, ExecutedCommit]
  /** a snapshot was built and attested right after a certified commit was executed */
  snapshot: [SnapshotBuildResult]
  epoch: [number]
  error: [Error]
  done: []
}

interface EpochState {
  epoch: number
  committee: Committee
  keys: KeyPair[]
  /** validator numbers of the members (for key derivation and rotation) */
  members: number[]
}

interface Projected { balance: number, nonce: number }

export class DevnetProducer extends EventEmitter<DevnetProducerEvents> {
  readonly store: ChainStore
  readonly executor: CommitExecutor
  readonly init: Required<Omit<DevnetProducerInit, 'snapshots'>>
  readonly snapshotter?: Snapshotter
  private epoch!: EpochState
  private round = 0
  private lastCommit?: ParsedCommit
  /** blocks of the previous round of this epoch (ancestors of the next round) */
  private prevRound: ParsedBlock[] = []
  /** the leader of the previous round (already committed) */
  private prevLeader?: BlockRef
  /** the newest commit, not yet certified */
  private uncertified?: ProducedCommit
  private commitsInEpoch = 0
  private accountKeys: KeyPair[] = []
  private projected = new Map<string, Projected>()
  private prng!: Prng
  private txCounter = 0
  private timer?: NodeJS.Timeout
  private wakeSleep?: () => void
  private running = false
  private producing?: Promise<void>

  constructor (store: ChainStore, executor: CommitExecutor, init: DevnetProducerInit) {
    super()
    this.store = store
    this.executor = executor
    this.init = {
      seed: init.seed,
      roundIntervalMs: init.roundIntervalMs ?? 200,
      txsPerBlock: init.txsPerBlock ?? 10,
      embeddingEvery: init.embeddingEvery ?? 5,
      epochLength: init.epochLength ?? 50,
      maxCommits: init.maxCommits ?? 0,
      activeAccounts: init.activeAccounts ?? store.genesis.genesis.accounts.length
    }
    if (init.snapshots !== undefined) this.snapshotter = new Snapshotter(store, init.seed, init.snapshots)
  }

  get highestCommit (): number { return this.lastCommit?.index ?? 0 }
  get currentEpoch (): number { return this.epoch.epoch }

  /** Loads the producer's position from the store (resuming after a restart), verifying the seed. */
  async load (): Promise<void> {
    const g = this.store.genesis.genesis
    const n = Math.min(this.init.activeAccounts, g.accounts.length)
    this.accountKeys = Array.from({ length: n }, (_, i) => accountKey(this.init.seed, i))
    if (n > 0 && toHex(this.accountKeys[0].publicKey) !== toHex(g.accounts[0].address)) {
      throw new Error('the devnet seed does not match the genesis in the store')
    }
    const first = devnetCommittee(this.init.seed, 0, g.committee.authorities.map((_, i) => i))
    if (toHex(Codecs.Committee.encode(first.committee)) !== toHex(Codecs.Committee.encode(g.committee))) {
      throw new Error('the devnet seed does not match the genesis committee in the store')
    }
    this.epoch = { epoch: 0, committee: first.committee, keys: first.keys, members: g.committee.authorities.map((_, i) => i) }

    // replay epochs from stored end-of-epoch commits to find the current committee
    let e = 0
    while (true) {
      const last = await this.store.getLastCommitIndexOfEpoch(e)
      if (last === undefined) break
      const c = await this.store.getCommit(last)
      if (c === undefined) break
      this.epoch = this.nextEpochState(this.epoch)
      e++
    }
    // resume: newest stored commit (may be one past highest synced: uncertified)
    let newest: ParsedCommit | undefined
    for await (const [, v] of this.store.db.iterator({ gte: Keys.commit(1), lt: Keys.commit(Number.MAX_SAFE_INTEGER), reverse: true, limit: 1 })) {
      const { parseCommit } = await import('../chain/commit.ts')
      newest = parseCommit(v)
    }
    this.prng = new Prng(`${this.init.seed}/workload/${newest?.index ?? 0}`)
    for (let i = 0; i < n; i++) this.projected.set(toHex(this.accountKeys[i].publicKey), { balance: 0, nonce: 0 })
    // projected state = executed state ...
    const raw = await this.store.getAccountsRaw(this.accountKeys.map(k => k.publicKey))
    raw.forEach((r, i) => {
      const s = r === undefined ? { balance: 0, nonce: 0 } : Codecs.AccountState.decode(r)
      this.projected.set(toHex(this.accountKeys[i].publicKey), { balance: s.balance, nonce: s.nonce })
    })
    if (newest === undefined) return
    this.lastCommit = newest
    this.commitsInEpoch = newest.isEndOfEpoch ? 0 : newest.index - ((newest.epoch === 0) ? 0 : (await this.store.getLastCommitIndexOfEpoch(newest.epoch - 1) ?? 0))
    // highest stored round
    for await (const k of this.store.db.keys({ gte: Keys.block(0, 0, new Uint8Array(32)), lt: Uint8Array.of(Keys.block(0, 0, new Uint8Array(32))[0] + 1), reverse: true, limit: 1 })) {
      this.round = readU64(k, 1)
    }
    if (newest.isEndOfEpoch) {
      // the certifier round was written with the end-of-epoch commit; the next epoch starts fresh
      this.prevRound = []
      this.prevLeader = undefined
    } else {
      this.prevRound = await this.loadRound(this.round)
      this.prevLeader = newest.commit.leader
      if (newest.index > this.store.highestSynced) {
        this.uncertified = { commit: newest, blocks: await this.loadBlocks(newest.commit.blocks) }
      }
    }
    // ... plus what is stored but not executed yet, in execution order
    for (let i = this.store.highestExecuted + 1; i <= newest.index; i++) {
      const c = await this.store.getCommit(i)
      if (c === undefined) continue
      for (const b of await this.loadBlocks(c.commit.blocks)) this.project(b.block.transactions)
    }
    if (!newest.isEndOfEpoch) {
      for (const b of this.prevRound) if (b.author !== newest.commit.leader.author) this.project(b.block.transactions)
    }
    // a crash between writing a round and executing what it certified leaves certified commits
    // unexecuted: execute them now (the projection above already counts their transactions)
    for (let i = this.store.highestExecuted + 1; i <= this.store.highestSynced; i++) {
      const c = await this.store.getCommit(i)
      if (c === undefined) throw new Error(`devnet store is missing certified commit ${i}`)
      await this.executor.execute({ commit: c, blocks: await this.loadBlocks(c.commit.blocks) })
    }
  }

  private project (txs: SignedTransaction[]): void {
    for (const stx of txs) {
      const tx = Codecs.Transaction.decode(stx.tx)
      const s = this.projected.get(toHex(tx.sender))
      if (s === undefined) continue
      if (tx.nonce !== s.nonce) continue
      s.nonce++
      if (tx.kind === 'transfer') {
        s.balance -= tx.transfer!.amount
        const to = this.projected.get(toHex(tx.transfer!.to))
        if (to !== undefined) to.balance += tx.transfer!.amount
      }
    }
  }

  private async loadRound (round: number): Promise<ParsedBlock[]> {
    const { parseBlock } = await import('../chain/block.ts')
    const out: ParsedBlock[] = []
    const lo = Keys.block(round, 0, new Uint8Array(32))
    const hi = Keys.block(round + 1, 0, new Uint8Array(32))
    for await (const [, v] of this.store.db.iterator({ gte: lo, lt: hi })) out.push(parseBlock(v, this.store.chainId))
    return out
  }

  private async loadBlocks (refs: BlockRef[]): Promise<ParsedBlock[]> {
    const { parseBlock } = await import('../chain/block.ts')
    const raw = await this.store.getBlocks(refs)
    return raw.map((r, i) => {
      if (r === undefined) throw new Error(`devnet store is missing block ${refs[i].round}/${refs[i].author}`)
      return parseBlock(r, this.store.chainId)
    })
  }

  private nextEpochState (cur: EpochState): EpochState {
    // one authority rotates: the member at position (epoch mod n) is replaced by a fresh validator
    const members = [...cur.members]
    const pos = cur.epoch % members.length
    members[pos] = Math.max(...members) + 1
    const { committee, keys } = devnetCommittee(this.init.seed, cur.epoch + 1, members)
    return { epoch: cur.epoch + 1, committee, keys, members }
  }

  private makeUserTxs (count: number): SignedTransaction[] {
    const out: SignedTransaction[] = []
    const n = this.accountKeys.length
    if (n < 2) return out
    const chainId = this.store.chainId
    const dim = this.store.genesis.genesis.embeddingDim
    for (let i = 0; i < count; i++) {
      const si = this.prng.int(n)
      const sender = this.accountKeys[si]
      const s = this.projected.get(toHex(sender.publicKey))!
      this.txCounter++
      if (this.init.embeddingEvery > 0 && this.txCounter % this.init.embeddingEvery === 0) {
        const v = new Float32Array(dim)
        for (let d = 0; d < dim; d++) v[d] = this.prng.next() * 2 - 1
        out.push(signTransaction({ sender: sender.publicKey, nonce: s.nonce, chainId, submitEmbedding: { vector: new Uint8Array(v.buffer), model: 'devnet' } }, sender))
        s.nonce++
      } else {
        let ri = this.prng.int(n - 1)
        if (ri >= si) ri++
        const to = this.accountKeys[ri]
        const amount = 1 + this.prng.int(Math.max(1, Math.min(1000, s.balance)))
        if (amount > s.balance) continue
        out.push(signTransaction({ sender: sender.publicKey, nonce: s.nonce, chainId, transfer: { to: to.publicKey, amount } }, sender))
        s.nonce++
        s.balance -= amount
        this.projected.get(toHex(to.publicKey))!.balance += amount
      }
    }
    return out
  }

  private makeRound (opts: { withTxs: boolean, leaderOnlyTxs?: boolean, votes: CommitVote[], extraLeaderTxs?: SignedTransaction[] }): ParsedBlock[] {
    this.round++
    const round = this.round
    const n = this.epoch.committee.authorities.length
    const leader = round % n
    const ancestors = this.prevRound.map(b => b.ref).sort(compareRefs)
    const txsFor = new Map<number, SignedTransaction[]>()
    // execution order: leader first, then the others by author
    const order = [leader, ...Array.from({ length: n }, (_, i) => i).filter(i => i !== leader)]
    for (const a of order) {
      const mayHaveTxs = opts.withTxs && (opts.leaderOnlyTxs !== true || a === leader)
      const txs = mayHaveTxs ? this.makeUserTxs(this.init.txsPerBlock) : []
      if (a === leader && opts.extraLeaderTxs !== undefined) txs.push(...opts.extraLeaderTxs)
      txsFor.set(a, txs)
    }
    const ts = Date.now()
    const blocks: ParsedBlock[] = []
    for (let a = 0; a < n; a++) {
      const block: Block = {
        epoch: this.epoch.epoch,
        round,
        author: a,
        timestampMs: ts,
        ancestors,
        transactions: txsFor.get(a)!,
        commitVotes: opts.votes,
        chainId: this.store.chainId
      }
      blocks.push(signBlock(block, this.epoch.keys[a]))
    }
    return blocks
  }

  /**
   * Produces one round and its commit; certifies (and executes) the previous commit.
   * Returns the newly certified commit, if any.
   */
  async produceOne (): Promise<ProducedCommit | undefined> {
    const prevCommit = this.lastCommit
    const endOfEpoch = this.commitsInEpoch + 1 >= this.init.epochLength
    const votes: CommitVote[] = this.uncertified !== undefined ? [{ index: this.uncertified.commit.index, digest: this.uncertified.commit.digest }] : []
    let nextState: EpochState | undefined
    let changeEpoch: SignedTransaction[] | undefined
    if (endOfEpoch) {
      nextState = this.nextEpochState(this.epoch)
      changeEpoch = [systemTransaction({ sender: new Uint8Array(0), nonce: 0, chainId: this.store.chainId, changeEpoch: { nextEpoch: nextState.epoch, nextCommittee: nextState.committee } })]
    }
    // in the last round of an epoch only the leader's block is committed: only it carries transactions
    const blocks = this.makeRound({ withTxs: true, leaderOnlyTxs: endOfEpoch, votes, extraLeaderTxs: changeEpoch })
    const leaderBlock = blocks[this.round % blocks.length]
    const subdag = [...this.prevRound.filter(b => this.prevLeader === undefined || compareRefs(b.ref, this.prevLeader) !== 0), leaderBlock]
    subdag.sort((a, b) => compareRefs(a.ref, b.ref))
    const commit = encodeCommit({
      index: (prevCommit?.index ?? 0) + 1,
      previousDigest: prevCommit?.digest ?? this.store.chainId,
      leader: leaderBlock.ref,
      blocks: subdag.map(b => b.ref),
      epoch: this.epoch.epoch,
      timestampMs: leaderBlock.block.timestampMs,
      endOfEpoch: nextState !== undefined ? { nextCommittee: nextState.committee } : null
    })
    const produced: ProducedCommit = { commit, blocks: subdag }
    const certified: ProducedCommit[] = []
    if (this.uncertified !== undefined) certified.push(this.uncertified)

    const batch = this.store.batch()
    for (const b of blocks) batch.putBlock(b.ref, b.bytes).putVotes(b.ref, b.block.commitVotes)
    batch.putCommit(commit)
    let certifierRound: ParsedBlock[] = []
    if (endOfEpoch) {
      // the old committee certifies the end-of-epoch commit with one more round that only votes
      this.prevRound = blocks
      certifierRound = this.makeRound({ withTxs: false, votes: [{ index: commit.index, digest: commit.digest }] })
      for (const b of certifierRound) batch.putBlock(b.ref, b.bytes).putVotes(b.ref, b.block.commitVotes)
      certified.push(produced)
    }
    if (certified.length > 0) batch.setHighestSynced(certified[certified.length - 1].commit.index)
    await batch.write()

    this.lastCommit = commit
    if (endOfEpoch) {
      this.epoch = nextState!
      this.commitsInEpoch = 0
      this.prevRound = []
      this.prevLeader = undefined
      this.uncertified = undefined
      this.round++ // a gap round between epochs keeps rounds strictly increasing
    } else {
      this.commitsInEpoch++
      this.prevRound = blocks
      this.prevLeader = leaderBlock.ref
      this.uncertified = produced
    }
    let last: ProducedCommit | undefined
    for (const c of certified) {
      const result = await this.executor.execute({ commit: c.commit, blocks: c.blocks })
      this.emit('certified', c, result)
      const snapshot = await this.snapshotter?.afterCommit(result)
      if (snapshot !== undefined) this.emit('snapshot', snapshot)
      if (result.nextEpoch !== undefined) this.emit('epoch', result.nextEpoch)
      last = c
    }
    return last
  }

  /** Produces rounds every `roundIntervalMs` until stop() or `maxCommits`. */
  start (): void {
    if (this.running) return
    this.running = true
    const loop = async (): Promise<void> => {
      while (this.running) {
        if (this.init.maxCommits > 0 && this.store.highestSynced >= this.init.maxCommits) {
          this.running = false
          this.emit('done')
          return
        }
        const t0 = Date.now()
        try {
          await this.produceOne()
        } catch (err: any) {
          this.running = false
          this.emit('error', err)
          return
        }
        const wait = this.init.roundIntervalMs - (Date.now() - t0)
        if (wait > 0 && this.running) {
          await new Promise<void>(resolve => { this.wakeSleep = resolve; this.timer = setTimeout(resolve, wait) })
          this.wakeSleep = undefined
        }
        else await new Promise<void>(resolve => setImmediate(resolve))
      }
    }
    this.producing = loop()
  }

  /** Produces until `highestSynced` >= n (as fast as possible). */
  async produceUntil (n: number): Promise<void> {
    while (this.store.highestSynced < n) await this.produceOne()
  }

  async stop (): Promise<void> {
    this.running = false
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.wakeSleep?.() // a stop during the pause between rounds ends the pause
    await this.producing
  }
}
