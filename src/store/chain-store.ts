/**
 * ChainStore: the node's LevelDB (classic-level). Owns every read and write of chain data; the key
 * layout is in ./keys.ts. Writes that belong together go through one `StoreBatch` and land atomically,
 * so a crash (even SIGKILL) at any moment leaves a consistent store:
 * - sync writes a verified commit range (blocks, commits, votes, epoch data) and `highest synced`
 *   in one batch;
 * - the executor writes a commit's state changes, effects, state root and `highest executed` in one batch.
 */
import { ClassicLevel } from 'classic-level'
import { existsSync, mkdirSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { Keys, Bucket, encodeChangeValue, META_SCHEMA, META_CHAIN_ID, META_GENESIS, META_INIT_PENDING, META_LTHASH, META_ARCHIVAL, SCHEMA_VERSION, PROGRESS_SYNCED, PROGRESS_EXECUTED, PROGRESS_LOWEST, u64, readU64, parseVoteKey } from './keys.ts'
import { Codecs } from '../chain/codecs.ts'
import { decodeGenesis, type GenesisBundle } from '../chain/genesis.ts'
import { CommitteeInfo } from '../chain/committee.ts'
import { parseCommit, type ParsedCommit } from '../chain/commit.ts'
import type { AccountState, BlockRef, Committee, Embedding, TransactionEffects } from '../chain/types.ts'
import { bytesEqual, toHex } from '../crypto/hash.ts'
import { LtHash } from '../crypto/lthash.ts'
import { accountElement, encodeAccount } from './state-hash.ts'
import { CorruptStoreError, ForeignStoreError, StoreError } from '../errors.ts'
import { codec } from '../chain/proto.ts'
import type { EpochProof } from '../chain/types.ts'
import { PackStore, type PackLog } from './packs.ts'

const EpochProofCodec = codec<EpochProof>('soma.EpochProof')

export interface ChainStoreOptions {
  /** Genesis to initialize an empty store with, and to check an existing one against. */
  genesis?: GenesisBundle
  /** LevelDB write buffer. @default 64 MiB (measured here: ~5x the write throughput of the 4 MiB default) */
  writeBufferSize?: number
  /** LevelDB block cache. @default 32 MiB */
  cacheSize?: number
  /** Snappy compression. @default false (blocks are mostly signatures and keys, which do not compress) */
  compression?: boolean
  /** pack file size (src/store/packs.ts). @default 256 MiB */
  maxPackBytes?: number
  /** where the packs' recovery and collection messages go (info/warn). @default nowhere */
  logger?: PackLog
}

export interface Progress {
  /** highest commit stored with its blocks (verified) */
  highestSynced: number
  /** highest commit executed into the state */
  highestExecuted: number
  /**
   * lowest commit this store can serve: 1, or snapshot commit + 1; 0 on an archival store (the full
   * history since genesis, kept for good: see src/sync/archival.ts)
   */
  lowestAvailable: number
}

export interface StoredVote {
  ref: BlockRef
  voteDigest: Uint8Array
}

type Level = ClassicLevel<Uint8Array, Uint8Array>

const ENC = { keyEncoding: 'view', valueEncoding: 'view' } as const

/** A set of writes that land together. */
export class StoreBatch {
  private readonly store: ChainStore
  private readonly ops: Array<{ type: 'put', key: Uint8Array, value: Uint8Array } | { type: 'del', key: Uint8Array }> = []
  private progress: Partial<Progress> = {}
  private archival = false
  private bytes = 0

  constructor (store: ChainStore) { this.store = store }

  put (key: Uint8Array, value: Uint8Array): this {
    this.ops.push({ type: 'put', key, value })
    this.bytes += key.byteLength + value.byteLength
    return this
  }

  del (key: Uint8Array): this {
    this.ops.push({ type: 'del', key })
    return this
  }

  putBlock (ref: BlockRef, signedBlockBytes: Uint8Array): this {
    return this.put(Keys.block(ref.round, ref.author, ref.digest), signedBlockBytes)
  }

  /** Index one block's commit votes, so the block can be served as a certifier. */
  putVotes (ref: BlockRef, votes: ReadonlyArray<{ index: number, digest: Uint8Array }>): this {
    for (const v of votes) this.put(Keys.vote(v.index, ref.round, ref.author, ref.digest), v.digest)
    return this
  }

  /** A commit; for an end-of-epoch commit also the epoch's last index and the next committee. */
  putCommit (c: ParsedCommit): this {
    this.put(Keys.commit(c.index), c.bytes)
    if (c.commit.endOfEpoch != null) {
      this.put(Keys.epochLastCommit(c.epoch), u64(c.index))
      this.putCommittee(c.commit.endOfEpoch.nextCommittee)
    }
    return this
  }

  putCommittee (committee: Committee): this {
    return this.put(Keys.committee(committee.epoch), Codecs.Committee.encode(committee))
  }

  putAccount (address: Uint8Array, encodedState: Uint8Array): this {
    return this.put(Keys.account(address), encodedState)
  }

  putEmbedding (id: Uint8Array, encoded: Uint8Array): this {
    return this.put(Keys.embedding(id), encoded)
  }

  delEmbedding (id: Uint8Array): this {
    return this.del(Keys.embedding(id))
  }

  /** An embedding pruned from the state by the end-of-epoch commit `prunedAt`, kept by archival stores (keys.ts). */
  putPrunedEmbedding (id: Uint8Array, prunedAt: number, encoded: Uint8Array): this {
    const v = new Uint8Array(8 + encoded.byteLength)
    v.set(u64(prunedAt), 0); v.set(encoded, 8)
    return this.put(Keys.prunedEmbedding(id), v)
  }

  /** Marks the store archival (src/sync/archival.ts): it keeps its full history from now on. */
  setArchival (): this { this.archival = true; return this.put(Keys.meta(META_ARCHIVAL), u64(0)) }

  /**
   * A state change log row (see keys.ts): commit `commitIndex` changed the entry `key` of bucket `kind`
   * (Bucket.ACCOUNT or Bucket.EMBEDDING); `before` summarizes it before the commit (undefined: absent).
   */
  putChange (commitIndex: number, kind: number, key: Uint8Array, before: Uint8Array | undefined): this {
    return this.put(Keys.change(commitIndex, kind, key), encodeChangeValue(before))
  }

  /**
   * The proof of the committee of `epoch + 1`: the end-of-epoch commit of `epoch` and certifier blocks
   * voting for it (verified by the caller), see keys.ts. Write it with that committee (putCommittee).
   */
  putEpochProof (epoch: number, proof: EpochProof): this {
    return this.put(Keys.epochProof(epoch), EpochProofCodec.encode({ commit: proof.commit, certifierBlocks: proof.certifierBlocks }))
  }

  putEffects (effects: TransactionEffects): this {
    return this.put(Keys.effects(effects.txDigest), Codecs.TransactionEffects.encode(effects))
  }

  putStateRoot (index: number, root: Uint8Array, lthash: LtHash): this {
    this.put(Keys.stateRoot(index), root)
    return this.put(Keys.meta(META_LTHASH), lthash.toBytes())
  }

  setHighestSynced (n: number): this { this.progress.highestSynced = n; return this.put(Keys.progress(PROGRESS_SYNCED), u64(n)) }
  setHighestExecuted (n: number): this { this.progress.highestExecuted = n; return this.put(Keys.progress(PROGRESS_EXECUTED), u64(n)) }
  setLowestAvailable (n: number): this { this.progress.lowestAvailable = n; return this.put(Keys.progress(PROGRESS_LOWEST), u64(n)) }

  get length (): number { return this.ops.length }
  get byteLength (): number { return this.bytes }

  async write (): Promise<void> {
    await this.store.writeBatch(this.ops, this.progress, this.archival)
  }
}

export class ChainStore {
  readonly dir: string
  readonly db: Level
  readonly genesis: GenesisBundle
  /** immutable blobs (snapshot chunks) in pack files under `<dir>/packs`, indexed in `db` */
  packs!: PackStore
  private progress: Progress
  private archivalStore: boolean
  private readonly committees = new Map<number, CommitteeInfo>()
  private closed = false

  private constructor (dir: string, db: Level, genesis: GenesisBundle, progress: Progress, archival: boolean) {
    this.dir = dir
    this.db = db
    this.genesis = genesis
    this.progress = progress
    this.archivalStore = archival
  }

  get chainId (): Uint8Array { return this.genesis.chainId }

  /**
   * Opens (creating if needed) the store in `dir`. An empty store is initialized from `opts.genesis`;
   * an existing one must be of the same chain. Clear errors for a foreign, corrupt or locked dir.
   */
  static async open (dir: string, opts: ChainStoreOptions = {}): Promise<ChainStore> {
    if (existsSync(dir)) {
      const entries = readdirSync(dir)
      if (entries.length > 0 && !entries.includes('CURRENT')) {
        throw new ForeignStoreError(`${dir} is not a soma-sync store: it holds files (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', …' : ''}) but no LevelDB database`)
      }
    } else {
      mkdirSync(dir, { recursive: true })
    }
    const db: Level = new ClassicLevel<Uint8Array, Uint8Array>(dir, {
      ...ENC,
      writeBufferSize: opts.writeBufferSize ?? 64 * 1024 * 1024,
      cacheSize: opts.cacheSize ?? 32 * 1024 * 1024,
      compression: opts.compression ?? false,
      maxFileSize: 32 * 1024 * 1024
    })
    try {
      await db.open()
    } catch (err: any) {
      const cause = err.cause ?? err
      if (cause.code === 'LEVEL_LOCKED' || /lock/i.test(String(cause.message))) {
        throw new StoreError(`${dir} is in use by another process (LevelDB lock held)`, { cause: err })
      }
      if (cause.code === 'LEVEL_CORRUPTION' || /corrupt/i.test(String(cause.message))) {
        throw new CorruptStoreError(`${dir}: the LevelDB database is corrupt (${cause.message}); restore it from a backup or remove the directory and sync again`, { cause: err })
      }
      throw new CorruptStoreError(`${dir}: cannot open the LevelDB database: ${cause.message}`, { cause: err })
    }
    let store: ChainStore
    try {
      store = await ChainStore.init(dir, db, opts)
    } catch (err) {
      await db.close()
      throw err
    }
    try {
      store.packs = await PackStore.open(path.join(dir, 'packs'), { db, batch: () => store.batch() }, { maxPackBytes: opts.maxPackBytes, log: opts.logger })
      await store.migrateChunks()
    } catch (err) {
      await store.packs?.close()
      await db.close()
      throw err
    }
    return store
  }

  /**
   * Schema 1 kept snapshot chunks in LevelDB (0x11): they move into a pack, a few MiB per batch (each
   * batch deletes the rows it indexed: a restart continues), then the schema becomes 2.
   */
  private async migrateChunks (): Promise<void> {
    const schema = await this.db.get(Keys.meta(META_SCHEMA))
    if (schema === undefined || readU64(schema, 0) !== 1) return
    const [gte, lt] = Keys.bucketRange(Bucket.LEGACY_CHUNK)
    let moved = 0
    for (;;) {
      const page: Array<[Uint8Array, Uint8Array]> = await this.db.iterator({ gte, lt, limit: 64 }).all()
      if (page.length === 0) break
      const batch = this.batch()
      for (const [k] of page) batch.del(k)
      await this.packs.commit(batch, page.map(([k, v]) => ({ hash: k.subarray(1), bytes: v })))
      moved += page.length
    }
    await this.db.put(Keys.meta(META_SCHEMA), u64(SCHEMA_VERSION))
    if (moved > 0) this.packs.log?.info('%s: %d snapshot chunks moved from LevelDB into pack files (store schema 1 -> 2)', this.dir, moved)
  }

  private static async init (dir: string, db: Level, opts: ChainStoreOptions): Promise<ChainStore> {
    let schema = await db.get(Keys.meta(META_SCHEMA))
    const pending = await db.get(Keys.meta(META_INIT_PENDING))
    if (pending !== undefined) {
      // a genesis import was cut off: nothing else can have been written yet, start over
      await db.clear()
      schema = undefined
    }
    if (schema === undefined) {
      // empty, or not ours
      for await (const _k of db.keys({ limit: 1 })) {
        throw new ForeignStoreError(`${dir} is a LevelDB database but not a soma-sync store (no schema marker)`)
      }
      if (opts.genesis === undefined) throw new StoreError(`${dir} is empty and no genesis was given to initialize it`)
      await ChainStore.writeGenesis(db, opts.genesis)
      schema = u64(SCHEMA_VERSION)
    }
    const version = readU64(schema, 0)
    // schema 1 differs only in where chunk bytes are: migrated once the packs are open
    if (version !== SCHEMA_VERSION && version !== 1) throw new ForeignStoreError(`${dir} has store schema ${version}; this soma-sync reads schema ${SCHEMA_VERSION}`)
    const genesisBytes = await db.get(Keys.meta(META_GENESIS))
    const chainId = await db.get(Keys.meta(META_CHAIN_ID))
    if (genesisBytes === undefined || chainId === undefined) throw new CorruptStoreError(`${dir}: store has no genesis`)
    let genesis: GenesisBundle
    try {
      genesis = decodeGenesis(genesisBytes)
    } catch (err: any) {
      throw new CorruptStoreError(`${dir}: stored genesis does not decode: ${err.message}`)
    }
    if (!bytesEqual(genesis.chainId, chainId)) throw new CorruptStoreError(`${dir}: stored genesis does not match the stored chain id`)
    if (opts.genesis !== undefined && !bytesEqual(opts.genesis.chainId, chainId)) {
      throw new ForeignStoreError(`${dir} holds chain ${toHex(chainId)}, not the configured chain ${toHex(opts.genesis.chainId)}`)
    }
    const readProgress = async (name: string, dflt: number): Promise<number> => {
      const v = await db.get(Keys.progress(name))
      return v === undefined ? dflt : readU64(v, 0)
    }
    const progress: Progress = {
      highestSynced: await readProgress(PROGRESS_SYNCED, 0),
      highestExecuted: await readProgress(PROGRESS_EXECUTED, 0),
      lowestAvailable: await readProgress(PROGRESS_LOWEST, 1)
    }
    if (progress.highestExecuted > progress.highestSynced) {
      throw new CorruptStoreError(`${dir}: executed commit ${progress.highestExecuted} is beyond synced commit ${progress.highestSynced}`)
    }
    const archival = (await db.get(Keys.meta(META_ARCHIVAL))) !== undefined
    return new ChainStore(dir, db, genesis, progress, archival)
  }

  /** Writes genesis, its committee and accounts, and the state root of commit 0. */
  private static async writeGenesis (db: Level, g: GenesisBundle): Promise<void> {
    const CHUNK = 50_000
    const accounts = g.genesis.accounts
    const lthash = new LtHash()
    const big = accounts.length > CHUNK
    if (big) await db.put(Keys.meta(META_INIT_PENDING), Uint8Array.of(1))
    for (let i = 0; i < accounts.length; i += CHUNK) {
      const batch = db.batch()
      for (const a of accounts.slice(i, i + CHUNK)) {
        const enc = encodeAccount({ balance: a.balance, nonce: 0, lastModifiedEpoch: 0 })
        batch.put(Keys.account(a.address), enc)
        lthash.addLanes(accountElement(a.address, enc))
      }
      if (big) await batch.write()
      else {
        ChainStore.genesisMeta(batch, g, lthash)
        await batch.write()
        return
      }
    }
    const batch = db.batch()
    ChainStore.genesisMeta(batch, g, lthash)
    batch.del(Keys.meta(META_INIT_PENDING))
    await batch.write()
  }

  private static genesisMeta (batch: ReturnType<Level['batch']>, g: GenesisBundle, lthash: LtHash): void {
    batch.put(Keys.committee(0), Codecs.Committee.encode(g.genesis.committee))
    batch.put(Keys.stateRoot(0), lthash.checksum())
    batch.put(Keys.meta(META_LTHASH), lthash.toBytes())
    batch.put(Keys.progress(PROGRESS_SYNCED), u64(0))
    batch.put(Keys.progress(PROGRESS_EXECUTED), u64(0))
    batch.put(Keys.progress(PROGRESS_LOWEST), u64(1))
    batch.put(Keys.meta(META_GENESIS), g.bytes)
    batch.put(Keys.meta(META_CHAIN_ID), g.chainId)
    batch.put(Keys.meta(META_SCHEMA), u64(SCHEMA_VERSION))
  }

  /** Opens the store of a data dir (`<dataDir>/chain`). */
  static async openDataDir (dataDir: string, opts: ChainStoreOptions = {}): Promise<ChainStore> {
    return await ChainStore.open(path.join(dataDir, 'chain'), opts)
  }

  batch (): StoreBatch { return new StoreBatch(this) }

  /**
   * Observers of batch writes: `onWrite` after each (its LevelDB write time, for metrics), `onError` when
   * one fails (the node moves to its `failed` phase on ENOSPC/EIO).
   */
  readonly writeObservers: { onWrite?: (ms: number, ops: number) => void, onError?: (err: Error) => void } = {}

  /** @internal used by StoreBatch */
  async writeBatch (ops: Array<{ type: 'put', key: Uint8Array, value: Uint8Array } | { type: 'del', key: Uint8Array }>, progress: Partial<Progress>, archival = false): Promise<void> {
    if (this.closed) throw new StoreError('store is closed')
    // one atomic LevelDB WriteBatch, filled through classic-level's chained batch: each put hands the
    // binding its key and value as arguments, where db.batch(array) makes abstract-level copy every op
    // and the binding read each op's properties (measured here: ~0.25 vs ~0.72 µs of main thread per op)
    const batch = this.db.batch()
    try {
      for (const op of ops) {
        if (op.type === 'put') batch.put(op.key, op.value)
        else batch.del(op.key)
      }
    } catch (err) {
      await batch.close()
      throw err
    }
    const t0 = performance.now()
    try {
      await batch.write()
    } catch (err: any) {
      this.writeObservers.onError?.(err)
      throw err
    }
    this.writeObservers.onWrite?.(performance.now() - t0, ops.length)
    this.progress = { ...this.progress, ...progress }
    if (archival) this.archivalStore = true
  }

  getProgress (): Progress { return { ...this.progress, lowestAvailable: this.lowestAvailable } }
  get highestSynced (): number { return this.progress.highestSynced }
  get highestExecuted (): number { return this.progress.highestExecuted }
  /** 0 on an archival store (every commit since genesis), else the stored lowest available commit */
  get lowestAvailable (): number { return this.archivalStore ? 0 : this.progress.lowestAvailable }
  /** the lowest available commit as stored (1 on a store that holds every commit since genesis) */
  get storedLowestAvailable (): number { return this.progress.lowestAvailable }
  /**
   * An archival store (META_ARCHIVAL, set by src/sync/archival.ts): it holds every commit, block and
   * effect since genesis, keeps the embeddings pruned from the state (0x0f), and advertises lowest
   * available commit 0.
   */
  get archival (): boolean { return this.archivalStore }

  async getBlock (ref: BlockRef): Promise<Uint8Array | undefined> {
    return await this.db.get(Keys.block(ref.round, ref.author, ref.digest))
  }

  async getBlocks (refs: readonly BlockRef[]): Promise<Array<Uint8Array | undefined>> {
    if (refs.length === 0) return []
    return await this.db.getMany(refs.map(r => Keys.block(r.round, r.author, r.digest)))
  }

  async getCommitBytes (index: number): Promise<Uint8Array | undefined> {
    return await this.db.get(Keys.commit(index))
  }

  async getCommit (index: number): Promise<ParsedCommit | undefined> {
    const b = await this.getCommitBytes(index)
    return b === undefined ? undefined : parseCommit(b)
  }

  /** Commits [from, to] that are stored, in order, stopping at the first gap. */
  async getCommitRange (from: number, to: number): Promise<ParsedCommit[]> {
    const out: ParsedCommit[] = []
    let expect = from
    for await (const [k, v] of this.db.iterator({ gte: Keys.commit(from), lte: Keys.commit(to) })) {
      if (readU64(k, 1) !== expect) break
      out.push(parseCommit(v))
      expect++
    }
    return out
  }

  async getCommittee (epoch: number): Promise<CommitteeInfo | undefined> {
    const cached = this.committees.get(epoch)
    if (cached !== undefined) return cached
    const b = await this.db.get(Keys.committee(epoch))
    if (b === undefined) return undefined
    const info = new CommitteeInfo(Codecs.Committee.decode(b))
    this.committees.set(epoch, info)
    return info
  }

  async getLastCommitIndexOfEpoch (epoch: number): Promise<number | undefined> {
    const b = await this.db.get(Keys.epochLastCommit(epoch))
    return b === undefined ? undefined : readU64(b, 0)
  }

  /** The highest epoch whose committee is stored (0: genesis only). */
  async highestCommitteeEpoch (): Promise<number> {
    const [gte, lt] = Keys.bucketRange(Bucket.COMMITTEE)
    for await (const k of this.db.keys({ gte, lt, reverse: true, limit: 1 })) return readU64(k, 1)
    throw new CorruptStoreError(`${this.dir}: no committee stored, not even the genesis committee`)
  }

  /** The stored proof of the committee of `epoch + 1` (see keys.ts), if committee sync stored one. */
  async getEpochProof (epoch: number): Promise<EpochProof | undefined> {
    const b = await this.db.get(Keys.epochProof(epoch))
    if (b === undefined) return undefined
    try {
      return EpochProofCodec.decode(b)
    } catch (err: any) {
      throw new CorruptStoreError(`${this.dir}: stored epoch proof of epoch ${epoch} does not decode: ${err.message}`)
    }
  }

  /** Blocks stored that vote for commit `index` (any digest). */
  async getVotes (index: number): Promise<StoredVote[]> {
    const [gte, lt] = Keys.voteRange(index)
    const out: StoredVote[] = []
    for await (const [k, v] of this.db.iterator({ gte, lt })) {
      const p = parseVoteKey(k)
      out.push({ ref: { round: p.round, author: p.author, digest: new Uint8Array(p.digest) }, voteDigest: v })
    }
    return out
  }

  /**
   * The certifier votes of commit `index` (digest `digest`) every server and the archive writer pick, so
   * that all pick the same blocks: among the stored votes for that digest, in key order (round, author,
   * block digest), the first of each author until 2f+1 of `committee`'s stake; `short` (the stake they
   * hold) when the stored votes fall short of 2f+1.
   */
  async quorumVotes (index: number, digest: Uint8Array, committee: CommitteeInfo): Promise<{ votes: StoredVote[] } | { short: number }> {
    const votes = (await this.getVotes(index)).filter(v => bytesEqual(v.voteDigest, digest))
    const chosen: StoredVote[] = []
    const authors = new Set<number>()
    let stake = 0
    for (const v of votes) {
      if (authors.has(v.ref.author)) continue
      authors.add(v.ref.author)
      chosen.push(v)
      stake += committee.stake(v.ref.author)
      if (stake >= committee.quorumThreshold) return { votes: chosen }
    }
    return { short: stake }
  }

  async getAccount (address: Uint8Array): Promise<AccountState | undefined> {
    const b = await this.db.get(Keys.account(address))
    return b === undefined ? undefined : Codecs.AccountState.decode(b)
  }

  async getAccountsRaw (addresses: readonly Uint8Array[]): Promise<Array<Uint8Array | undefined>> {
    if (addresses.length === 0) return []
    return await this.db.getMany(addresses.map(a => Keys.account(a)))
  }

  async getEmbedding (id: Uint8Array): Promise<Embedding | undefined> {
    const b = await this.db.get(Keys.embedding(id))
    return b === undefined ? undefined : Codecs.Embedding.decode(b)
  }

  /**
   * An embedding as stored at any time: in the state (`prunedAt` undefined), or pruned from it at
   * end-of-epoch commit `prunedAt` and kept by an archival store. undefined: never stored, or pruned
   * on a store that does not keep history.
   */
  async getEmbeddingHistory (id: Uint8Array): Promise<{ embedding: Embedding, prunedAt?: number } | undefined> {
    const live = await this.getEmbedding(id)
    if (live !== undefined) return { embedding: live }
    const b = await this.db.get(Keys.prunedEmbedding(id))
    if (b === undefined) return undefined
    if (b.byteLength < 8) throw new CorruptStoreError(`${this.dir}: pruned embedding ${toHex(id)} is ${b.byteLength} bytes`)
    return { embedding: Codecs.Embedding.decode(b.subarray(8)), prunedAt: readU64(b, 0) }
  }

  async getEffects (txDigest: Uint8Array): Promise<TransactionEffects | undefined> {
    const b = await this.db.get(Keys.effects(txDigest))
    return b === undefined ? undefined : Codecs.TransactionEffects.decode(b)
  }

  /** Which of these transaction digests already have effects (were executed). */
  async executedMask (txDigests: readonly Uint8Array[]): Promise<boolean[]> {
    if (txDigests.length === 0) return []
    const res = await this.db.getMany(txDigests.map(d => Keys.effects(d)))
    return res.map(v => v !== undefined)
  }

  async getStateRoot (index: number): Promise<Uint8Array | undefined> {
    return await this.db.get(Keys.stateRoot(index))
  }

  async getLtHash (): Promise<LtHash> {
    const b = await this.db.get(Keys.meta(META_LTHASH))
    if (b === undefined) throw new CorruptStoreError(`${this.dir}: no state accumulator`)
    return LtHash.fromBytes(b)
  }

  /** Iterates a whole bucket in key order. */
  async * iterateBucket (bucket: number, opts: { gte?: Uint8Array } = {}): AsyncGenerator<[Uint8Array, Uint8Array]> {
    const [lo, hi] = Keys.bucketRange(bucket)
    yield * this.db.iterator({ gte: opts.gte ?? lo, lt: hi })
  }

  async countBucket (bucket: number): Promise<number> {
    let n = 0
    for await (const _ of this.db.keys({ gte: Keys.bucketRange(bucket)[0], lt: Keys.bucketRange(bucket)[1] })) n++
    return n
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.packs?.close()
    await this.db.close()
  }

  get isClosed (): boolean { return this.closed }
}

export { Bucket }
