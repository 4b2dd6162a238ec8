/** Helpers of the snapshot tests: stores with hand-made commits across epochs, and chunk inspection. */
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor, type ExecutedCommit } from '../../src/executor/commit-executor.ts'
import { createGenesis, devnetCommittee, accountKey, type GenesisBundle, type GenesisInit } from '../../src/chain/genesis.ts'
import { signBlock } from '../../src/chain/block.ts'
import { encodeCommit } from '../../src/chain/commit.ts'
import { signTransaction } from '../../src/chain/transaction.ts'
import type { Committee, SignedTransaction } from '../../src/chain/types.ts'
import type { KeyPair } from '../../src/crypto/keys.ts'
import { compareBytes } from '../../src/crypto/hash.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { decodeChunk, isBoundary, type ChunkInfo } from '../../src/snapshot/chunk-format.ts'
import { tmpDir } from '../helpers/tmp.ts'
import { hex } from '../helpers/chain.ts'

/**
 * A store whose commits are made by hand: one block per commit (signed by the epoch's first member),
 * any transactions, and end-of-epoch commits that hand over to the next devnet committee.
 */
export class HandChain {
  readonly store: ChainStore
  readonly executor: CommitExecutor
  readonly g: GenesisBundle
  readonly seed: string
  private prev: Uint8Array
  private round = 0
  epoch = 0
  private committee: { committee: Committee, keys: KeyPair[] }
  private readonly members: number[]
  private readonly keys = new Map<number, KeyPair>()
  private readonly nonces = new Map<number, number>()

  private constructor (store: ChainStore, g: GenesisBundle, seed: string) {
    this.store = store
    this.executor = new CommitExecutor(store)
    this.g = g
    this.seed = seed
    this.prev = g.chainId
    this.members = g.genesis.committee.authorities.map((_, i) => i)
    this.committee = devnetCommittee(seed, 0, this.members)
  }

  static async open (t: { after: (fn: () => void | Promise<void>) => void }, init: Omit<GenesisInit, 'validators' | 'initialBalance'> & { validators?: number, initialBalance?: number }): Promise<HandChain> {
    const g = createGenesis({ validators: 4, initialBalance: 1_000_000, ...init })
    const store = await ChainStore.open(tmpDir(t), { genesis: g })
    t.after(async () => { await store.close() })
    return new HandChain(store, g, init.seed)
  }

  key (account: number): KeyPair {
    let k = this.keys.get(account)
    if (k === undefined) { k = accountKey(this.seed, account); this.keys.set(account, k) }
    return k
  }

  private nonce (account: number): number {
    const n = this.nonces.get(account) ?? 0
    this.nonces.set(account, n + 1)
    return n
  }

  transfer (from: number, to: number, amount = 1): SignedTransaction {
    const k = this.key(from)
    return signTransaction({ sender: k.publicKey, nonce: this.nonce(from), chainId: this.g.chainId, transfer: { to: this.key(to).publicKey, amount } }, k)
  }

  embedding (from: number, vector: number[]): SignedTransaction {
    const k = this.key(from)
    const v = new Float32Array(vector)
    return signTransaction({ sender: k.publicKey, nonce: this.nonce(from), chainId: this.g.chainId, submitEmbedding: { vector: new Uint8Array(v.buffer), model: 't' } }, k)
  }

  /** Executes the next commit with these transactions; `endOfEpoch` hands over to the next epoch. */
  async exec (txs: SignedTransaction[], opts: { endOfEpoch?: boolean } = {}): Promise<ExecutedCommit> {
    this.round++
    const b = signBlock({ epoch: this.epoch, round: this.round, author: 0, timestampMs: this.round, ancestors: [], transactions: txs, commitVotes: [], chainId: this.g.chainId }, this.committee.keys[0])
    const next = opts.endOfEpoch === true ? devnetCommittee(this.seed, this.epoch + 1, this.members) : undefined
    const commit = encodeCommit({ index: this.store.highestExecuted + 1, previousDigest: this.prev, leader: b.ref, blocks: [b.ref], epoch: this.epoch, timestampMs: this.round, endOfEpoch: next !== undefined ? { nextCommittee: next.committee } : null })
    // the executor only executes what is synced; a hand chain stores the commit as certified
    await this.store.batch().putCommit(commit).putBlock(b.ref, b.bytes).setHighestSynced(commit.index).write()
    const r = await this.executor.execute({ commit, blocks: [b] })
    this.prev = commit.digest
    if (next !== undefined) { this.epoch++; this.committee = next }
    return r
  }
}

export interface DecodedListing {
  /** group id "kind/group" → chunks (in listing order) with their decoded entries */
  groups: Map<string, Array<{ info: ChunkInfo, keys: Uint8Array[], values: Map<string, string> }>>
}

/** Reads and decodes (strictly) every chunk of a listing from the store. */
export async function decodeListingChunks (store: ChainStore, listing: readonly ChunkInfo[]): Promise<DecodedListing> {
  const snaps = new SnapshotStore(store)
  const groups: DecodedListing['groups'] = new Map()
  const raw = await snaps.getChunks(listing.map(i => i.hash))
  listing.forEach((info, i) => {
    const d = decodeChunk(raw[i]!)
    const gid = `${info.kind}/${info.group}`
    if (!groups.has(gid)) groups.set(gid, [])
    groups.get(gid)!.push({ info, keys: d.entries.map(e => e.key), values: new Map(d.entries.map(e => [hex(e.key), hex(e.value)])) })
  })
  return { groups }
}

/**
 * The chunks of `after` that must differ from every chunk of `before`, derived from the definition of
 * content-defined chunking alone (not from the builder). Per group, with the keys whose value changed,
 * appeared or disappeared:
 * - the new chunk holding each changed or added key is new;
 * - an old chunk that lost a key is not kept: the new chunks holding its remaining keys are new (a lost
 *   boundary key merges them with the following chunk);
 * - an added boundary key splits the old chunk that spanned its place, so the chunk after it is new too,
 *   unless an old chunk already began right after it (its old predecessor was a boundary).
 * Returns "group/index" ids of new chunks, the changed keys per group, and `rescans`: old chunks that an
 * incremental builder re-cuts although they come out unchanged, because a key was added right after their
 * end (in the gap before the next old chunk; a listing has first keys only, so such a key is taken to be
 * in the chunk before the gap).
 */
export function expectedRewrites (before: DecodedListing, after: DecodedListing, modulusOf: (gid: string) => number): { chunks: Set<string>, changed: Map<string, string[]>, rescans: number } {
  const chunks = new Set<string>()
  const unchangedRescans = new Set<string>()
  const changed = new Map<string, string[]>()
  const gids = new Set([...before.groups.keys(), ...after.groups.keys()])
  for (const gid of gids) {
    const oldChunks = before.groups.get(gid) ?? []
    const newChunks = after.groups.get(gid) ?? []
    const oldValues = new Map<string, string>()
    const oldChunkOf = new Map<string, number>()
    const oldKeys: Uint8Array[] = []
    oldChunks.forEach((c, i) => {
      for (const [k, v] of c.values) { oldValues.set(k, v); oldChunkOf.set(k, i) }
      oldKeys.push(...c.keys)
    })
    const newValues = new Map<string, string>()
    const newChunkOf = new Map<string, number>()
    newChunks.forEach((c, i) => { for (const [k, v] of c.values) { newValues.set(k, v); newChunkOf.set(k, i) } })
    const d: string[] = []
    for (const [k, v] of newValues) if (oldValues.get(k) !== v) d.push(k)
    const removed: string[] = []
    for (const k of oldValues.keys()) if (!newValues.has(k)) { d.push(k); removed.push(k) }
    changed.set(gid, d)
    const m = modulusOf(gid)
    for (const k of d) {
      const c = newChunkOf.get(k)
      if (c === undefined) continue
      chunks.add(`${gid}/${c}`)
      const key = Buffer.from(k, 'hex')
      const chunkKeys = newChunks[c].keys
      const isLast = hex(chunkKeys[chunkKeys.length - 1]) === k
      if (!oldValues.has(k)) {
        // an added key in the gap after an old chunk: that chunk is re-cut (and stays the same unless new)
        let pred: Uint8Array | undefined
        for (const ok of oldKeys) if (compareBytes(ok, key) < 0) pred = ok
        if (pred !== undefined) {
          const p = oldChunks[oldChunkOf.get(hex(pred))!]
          if (hex(p.keys[p.keys.length - 1]) === hex(pred)) unchangedRescans.add(`${gid}/${hex(p.info.hash)}`)
        }
      }
      if (!oldValues.has(k) && isBoundary(key.subarray(key.length - 32), m) && isLast && c + 1 < newChunks.length) {
        let pred: Uint8Array | undefined
        for (const ok of oldKeys) if (compareBytes(ok, key) < 0) pred = ok
        if (pred !== undefined && !isBoundary(pred.subarray(pred.length - 32), m)) chunks.add(`${gid}/${c + 1}`)
      }
    }
    for (const k of removed) {
      for (const x of oldChunks[oldChunkOf.get(k)!].keys) {
        const c = newChunkOf.get(hex(x))
        if (c !== undefined) chunks.add(`${gid}/${c}`)
      }
    }
  }
  // rescans that produce a new chunk are counted in `chunks` already
  const newHashes = new Set<string>()
  for (const [gid, cs] of after.groups) for (const c of cs) newHashes.add(`${gid}/${hex(c.info.hash)}`)
  const rescans = [...unchangedRescans].filter(x => newHashes.has(x)).length
  return { chunks, changed, rescans }
}

/** "group/index" ids of the chunks of `after` whose hash is not in `before`. */
export function rewrittenChunks (before: readonly ChunkInfo[], after: DecodedListing): Set<string> {
  const old = new Set(before.map(i => hex(i.hash)))
  const out = new Set<string>()
  for (const [gid, chunks] of after.groups) chunks.forEach((c, i) => { if (!old.has(hex(c.info.hash))) out.add(`${gid}/${i}`) })
  return out
}
