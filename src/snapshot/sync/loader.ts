/**
 * The last phases of snapshot sync: `final-check`, `load` and `anchor`.
 *
 * final-check (seed 002, "False Positive Rate"): the final checksum over the hashes of every stored,
 * verified chunk (HAVE rows, which LevelDB yields sorted) must be the manifest's, and every listed chunk
 * must be there: 100 % certainty that the stored chunks are exactly the attested set.
 *
 * load (begun during the chunks phase by ArrivalLoader, below, which loads verified chunks as they
 * arrive; the load phase continues from its cursor): the node's accounts and embeddings are replaced by
 * the snapshot's. A snapshot-synced store was initialized from genesis like any other (genesis meta,
 * committee 0, genesis accounts at commit 0), so the ACCOUNT and EMBEDDING buckets are cleared first (the
 * genesis accounts, or an older state, must not linger), after the persisted `state-replaced` flag is
 * set. Then the chunks are read back from the pack files in listing order, a window at a time (4 MiB or
 * 256 chunks), each re-hashed against its row (unless the download handed its verified bytes over: ArrivedChunks), decoded strictly, checked against its row and the manifest's grouping (checkChunkContent), its entries written, and its
 * partial state hash added to an LtHash. The partial (the sum of the state elements of the chunk's
 * entries, chunk-hash-pool.ts) was computed by worker threads when the chunk arrived and stored with its
 * HAVE row (bucket 0x1a), so the load adds up 2048-byte partials instead of hashing every entry; a chunk
 * without one (reused from the store, an older store) has it computed here (by the pool, while the
 * chunks are decoded). Entries are written in batches, each with the load cursor and the LtHash as of its
 * last chunk; one batch is written while the next is filled (never more than one write in flight, in
 * order), so a restart resumes mid-load from the last batch written. This is rebuildState's work
 * (src/snapshot/rebuild.ts), done resumably and in O(batch) memory (rebuildState holds the listing and
 * restarts from scratch). The rebuilt root must equal the manifest's state root. If it does not, every
 * chunk's partial is recomputed from its bytes: if their sum is the manifest's root, stored partials (or
 * the persisted LtHash) were damaged and are replaced, no one blamed; else the snapshot is wrong
 * (BadSnapshotError).
 *
 * anchor: commit S itself (certified by 2f+1 of its epoch's committee — from the stored epoch proof when
 * S ends its epoch, else fetched with /soma/fetch-commits/1.0.0 [S..S]; the chain link cannot be checked
 * without S-1, so certification and index/epoch are) and, in ONE atomic batch: the state root of S and the
 * LtHash, commit S (with the committee of the next epoch when S ends its epoch), highest synced = highest
 * executed = S, lowest available = S+1, the snapshot registered in the SnapshotStore (this node serves it
 * from then on; older snapshots beyond `keep` pruned with their unshared chunks) and the end of the sync.
 * Commit sync then continues from S+1 with commit S as its chain anchor.
 */
import type { PeerId } from '@libp2p/interface'
import { createHash } from 'node:crypto'
import type { ChainStore } from '../../store/chain-store.ts'
import { Bucket, Keys } from '../../store/keys.ts'
import { sha256, bytesEqual, toHex } from '../../crypto/hash.ts'
import { parseCommit, verifyCertification, type ParsedCommit } from '../../chain/commit.ts'
import type { SignedBlockVerifier } from '../../sync/block-verifier.ts'
import type { FetchCommits } from '../../sync/protocols/fetch-commits.ts'
import { InvalidSnapshotError, ProtocolViolationError, MalformedMessageError } from '../../errors.ts'
import { ChunkKind, decodeChunk, type ChunkInfo } from '../chunk-format.ts'
import { checkChunkContent, entriesPartial } from '../rebuild.ts'
import { decodeListing, type SnapshotManifest } from '../manifest.ts'
import { SnapshotStore } from '../snapshot-store.ts'
import { frameListingRow } from '../protocols/messages.ts'
import type { SyncState } from './sync-state.ts'
import { LtHash } from '../../crypto/lthash.ts'
import { chunkPartial, type ChunkHashPool } from './chunk-hash-pool.ts'

/** The stored chunks are not all there or not all intact: the named ones must be fetched again. */
export class MissingChunksError extends Error {
  override readonly name = 'MissingChunksError'
  readonly count: number
  constructor (message: string, count: number) {
    super(message)
    this.count = count
  }
}

/**
 * The attested snapshot itself is wrong (a chunk whose hash is attested does not match its row or the
 * grouping, or the state does not have the attested root): no peer is to blame, the snapshot is refused.
 */
export class BadSnapshotError extends InvalidSnapshotError {}

/** final-check: the final checksum over the stored chunk hashes. MissingChunksError when some are missing. */
export async function finalCheck (state: SyncState, manifest: SnapshotManifest): Promise<void> {
  const h = createHash('sha256')
  let n = 0
  for await (const have of state.haves()) { h.update(have.hash); n++ }
  if (n < manifest.chunkCount) throw new MissingChunksError(`${manifest.chunkCount - n} of ${manifest.chunkCount} chunks are not stored yet`, manifest.chunkCount - n)
  const fc = h.digest()
  if (n !== manifest.chunkCount || !bytesEqual(fc, manifest.finalChecksum)) {
    // cannot happen unless the store was altered: find the culprits (HAVE rows not listed) and drop them
    let dropped = 0
    const batch = state.store.batch()
    const list: Uint8Array[] = []
    for await (const have of state.haves()) list.push(new Uint8Array(have.hash))
    for (let i = 0; i < list.length; i += 1024) {
      const part = list.slice(i, i + 1024)
      const listed = await state.listed(part)
      part.forEach((x, j) => { if (!listed[j]) { state.delHave(batch, x); dropped++ } })
    }
    await batch.write()
    throw new MissingChunksError(`the final checksum over ${n} stored chunks is ${toHex(fc)}, the manifest says ${toHex(manifest.finalChecksum)}: ${dropped} unlisted chunks dropped`, dropped)
  }
}

export interface LoadStats {
  chunks: number
  /** accounts and embeddings loaded (over every run of the load) */
  accounts: number
  embeddings: number
  /** chunks loaded by this call whose partial state hash was read from the store */
  storedPartials: number
  /** chunks loaded by this call whose partial state hash was not stored and was computed by the load */
  computedPartials: number
  /** stored partial state hashes found damaged (their sum was not the state root) and replaced */
  repairedPartials: number
}

export interface LoadOptions {
  /** entry bytes per write batch (a batch ends at a chunk boundary). @default 8 MiB */
  batchBytes?: number
  /** entries per write batch (a batch ends at a chunk boundary). @default 16384 */
  batchEntries?: number
  /**
   * computes the partial state hashes the store lacks while the load decodes the chunks (and all of
   * them if the sum of the stored ones is not the state root). @default on the main thread
   */
  hashPool?: ChunkHashPool
  signal?: AbortSignal
  onProgress?: (done: number, total: number) => void
  log?: (msg: string, ...args: unknown[]) => void
  /**
   * Follow the download (ArrivalLoader): load the rows whose chunk is stored and verified (a HAVE row),
   * in listing order, waiting `followWaitMs` whenever the next one is not there yet; no root check.
   * Runs until every row is loaded or `signal` aborts (then it rejects with the reason).
   */
  follow?: boolean
  /** @default 100 ms */
  followWaitMs?: number
  /**
   * verified chunk bytes the download hands over (ArrivedChunks): a chunk found there is loaded from
   * them, neither read back from its pack nor hashed again
   */
  arrived?: ArrivedChunks
}

/** chunk bytes the download hands to the load at most (ArrivedChunks): a few responses' worth */
export const ARRIVED_CHUNK_BYTES = 16 * 1024 * 1024

/**
 * The bytes of chunks the download has just verified (sha256 equal to the hash they were asked by) and
 * stored, handed to the load so that it need not read them back from the pack files and hash them again
 * (a second sha256 of every byte on the main thread). Keyed by that hash; the load takes a chunk by the
 * hash of its listing row, so the bytes it gets hash to the row. Bounded: while `maxBytes` are held, new
 * chunks are not kept (the load reads those from the packs, and checks them, as before). The bytes are
 * views into the received messages, never modified.
 */
export class ArrivedChunks {
  readonly maxBytes: number
  bytes = 0
  /** chunks handed over and taken (a measure of how closely the load follows) */
  taken = 0
  private readonly map = new Map<string, Uint8Array>()

  constructor (maxBytes: number) { this.maxBytes = maxBytes }

  put (hash: Uint8Array, bytes: Uint8Array): void {
    // full: the new one is not kept (the load takes the oldest first: dropping those would make a load
    // that trails the download by more than maxBytes miss every chunk)
    if (this.bytes + bytes.byteLength > this.maxBytes) return
    const k = toHex(hash)
    if (this.map.has(k)) return
    // a view into a larger buffer (a whole decoded response) would keep all of that buffer alive: keep a copy
    if (bytes.byteOffset !== 0 || bytes.byteLength !== bytes.buffer.byteLength) bytes = bytes.slice()
    this.map.set(k, bytes)
    this.bytes += bytes.byteLength
  }

  take (hash: Uint8Array): Uint8Array | undefined {
    const k = toHex(hash)
    const b = this.map.get(k)
    if (b === undefined) return undefined
    this.map.delete(k)
    this.bytes -= b.byteLength
    this.taken++
    return b
  }

  clear (): void { this.map.clear(); this.bytes = 0 }
}

/** chunk bytes read from the store at once */
const LOAD_READ_BYTES = 4 * 1024 * 1024
/** chunks read from the store at once */
const LOAD_READ_CHUNKS = 256

/** A stored chunk, re-hashed: MissingChunksError (and its HAVE row dropped) when lost or damaged. */
async function checkStoredChunk (state: SyncState, row: ChunkInfo, bytes: Uint8Array | undefined): Promise<Uint8Array> {
  if (bytes !== undefined && bytesEqual(sha256(bytes), row.hash)) return bytes
  // lost or damaged since it was verified: fetch it again (the load starts over after it)
  const batch = state.delHave(state.store.batch(), row.hash)
  await state.store.packs.del(batch, [row.hash])
  await batch.write()
  throw new MissingChunksError(`verified chunk ${toHex(row.hash)} is missing or damaged in the store`, 1)
}

/**
 * load: replaces the node's state by the snapshot's (see the module comment). Resumable at chunk
 * granularity. Memory is bounded by one read window (4 MiB of chunks) and two write batches (the one
 * being written and the one being filled; each bounded in entries as well as bytes: a MiB of small
 * accounts is ~18,000 entries, each with its key and LevelDB operation).
 */
export async function loadState (store: ChainStore, state: SyncState, manifest: SnapshotManifest, opts: LoadOptions = {}): Promise<LoadStats> {
  const maxBatchBytes = opts.batchBytes ?? 8 * 1024 * 1024
  const maxBatchEntries = opts.batchEntries ?? 16384
  const pool = opts.hashPool
  const p = await state.load()
  if (p.next === 0) {
    // genesis accounts (or an older state) must not linger; idempotent, so a restart here clears again
    for (const b of [Bucket.ACCOUNT, Bucket.EMBEDDING]) {
      const [gte, lt] = Keys.bucketRange(b)
      await store.db.clear({ gte, lt })
    }
  }
  const snaps = new SnapshotStore(store)
  const total = manifest.chunkCount
  const stats: LoadStats = { chunks: total, accounts: 0, embeddings: 0, storedPartials: 0, computedPartials: 0, repairedPartials: 0 }
  // the work in progress: entries since the last flush, and the accumulator including them
  const lthash = p.lthash
  let accounts = p.accounts
  let embeddings = p.embeddings
  let next = p.next
  let batch = store.batch()
  let batchEntries = 0
  // the batch being written (at most one in flight, written in order: each carries the load cursor and
  // accumulator as of its last chunk, so what is persisted is always a prefix of the rows, loaded)
  let writing: Promise<void> | undefined
  let flushed = p.next
  const flush = async (): Promise<void> => {
    const prog = { next, lthash, accounts, embeddings }
    state.putLoad(batch, prog) // serialized now
    const b = batch
    batch = store.batch()
    batchEntries = 0
    flushed = next
    if (writing !== undefined) await writing
    const w = b.write().then(() => { opts.onProgress?.(prog.next, total) })
    w.catch(() => {}) // awaited by the next flush or at the end
    writing = w
  }
  let window: Array<[number, ChunkInfo]> = []
  let windowBytes = 0
  const loadWindow = async (): Promise<void> => {
    const hashes = window.map(([, r]) => r.hash)
    // handed over by the download (verified against these hashes), else read back and checked
    const arrived = hashes.map(h => opts.arrived?.take(h))
    const [raw, stored] = await Promise.all([snaps.getChunks(hashes.filter((_, i) => arrived[i] === undefined)), state.partials(hashes)])
    const chunks: Uint8Array[] = []
    let r = 0
    for (let i = 0; i < window.length; i++) chunks.push(arrived[i] ?? await checkStoredChunk(state, window[i][1], raw[r++]))
    // partials the store lacks (a reused chunk, an older store) are computed by the pool meanwhile
    const computing = stored.map((s, i) => s === undefined && pool !== undefined && pool.workers > 0 ? pool.partial(chunks[i]).catch(() => undefined) : undefined)
    for (let i = 0; i < window.length; i++) {
      opts.signal?.throwIfAborted()
      const [index, row] = window[i]
      let chunk
      try {
        chunk = decodeChunk(chunks[i], `chunk ${toHex(row.hash)}`)
        checkChunkContent(manifest, row, chunk)
      } catch (err: any) {
        throw new BadSnapshotError(`snapshot of commit ${manifest.commitIndex}: attested chunk ${toHex(row.hash)} is invalid: ${err.message}`)
      }
      if (chunk.kind === ChunkKind.ACCOUNTS) {
        for (const e of chunk.entries) batch.putAccount(e.id, e.value)
        accounts += chunk.entries.length
      } else {
        for (const e of chunk.entries) batch.putEmbedding(e.id, e.value)
        embeddings += chunk.entries.length
      }
      const partial = stored[i] ?? await computing[i]
      if (stored[i] !== undefined) stats.storedPartials++
      else stats.computedPartials++
      if (partial !== undefined) lthash.merge(LtHash.fromBytes(partial))
      else lthash.merge(entriesPartial(chunk))
      batchEntries += chunk.entries.length
      next = index + 1
      if (batchEntries >= maxBatchEntries || batch.byteLength >= maxBatchBytes) await flush()
    }
    window = []
    windowBytes = 0
  }
  try {
    if (opts.follow === true) {
      // the rows whose chunk is stored, from the cursor on, up to the first that is not (yet)
      while (next < total) {
        opts.signal?.throwIfAborted()
        const rows: Array<[number, ChunkInfo]> = []
        let bytes = 0
        for await (const r of state.rows(next, Math.min(total, next + LOAD_READ_CHUNKS))) {
          rows.push(r)
          if ((bytes += r[1].size) >= LOAD_READ_BYTES) break
        }
        const have = await state.have(rows.map(([, r]) => r.hash))
        const k = have.indexOf(false)
        window = k < 0 ? rows : rows.slice(0, k)
        windowBytes = window.reduce((s, [, r]) => s + r.size, 0)
        if (window.length > 0) { await loadWindow(); continue }
        // wait for the next chunk; what is loaded so far is persisted meanwhile
        if (batchEntries > 0 || next !== flushed) await flush()
        await sleep(opts.followWaitMs ?? 100, opts.signal)
      }
      if (batchEntries > 0 || next !== flushed) await flush()
      if (writing !== undefined) await writing
      stats.accounts = accounts
      stats.embeddings = embeddings
      return stats
    }
    for await (const r of state.rows(p.next)) {
      opts.signal?.throwIfAborted()
      window.push(r)
      windowBytes += r[1].size
      if (windowBytes >= LOAD_READ_BYTES || window.length >= LOAD_READ_CHUNKS) await loadWindow()
    }
    if (window.length > 0) await loadWindow()
    if (batchEntries > 0 || next !== flushed) await flush()
    if (writing !== undefined) await writing
  } finally {
    if (writing !== undefined) await writing.catch(() => {})
  }
  if (next !== total) throw new MissingChunksError(`the load stopped at row ${next} of ${total}`, total - next)
  stats.accounts = accounts
  stats.embeddings = embeddings
  const root = lthash.checksum()
  if (!bytesEqual(root, manifest.stateRoot)) {
    // the stored partials (or the persisted accumulator) may be damaged: recompute every chunk's
    // partial from its bytes. Their sum is the state's root; if it is not the manifest's either, the
    // snapshot is wrong
    opts.log?.('the loaded state has root %s, the manifest says %s: recomputing every chunk\'s partial state hash', toHex(root), toHex(manifest.stateRoot))
    opts.signal?.throwIfAborted()
    const r = await recomputePartials(state, snaps, manifest, pool, opts.signal)
    stats.repairedPartials = r.repaired
    const recomputed = r.lthash.checksum()
    if (!bytesEqual(recomputed, manifest.stateRoot)) {
      throw new BadSnapshotError(`snapshot of commit ${manifest.commitIndex}: the state rebuilt from its ${total} chunks has root ${toHex(recomputed)}, the manifest says ${toHex(manifest.stateRoot)}`)
    }
    const b = store.batch()
    state.putLoad(b, { next, lthash: r.lthash, accounts, embeddings })
    await b.write()
    opts.log?.('%d damaged partial state hashes replaced; the recomputed root is the manifest\'s', r.repaired)
  }
  return stats
}

const sleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
  await new Promise<void>(resolve => {
    const t = setTimeout(done, ms)
    function done (): void { clearTimeout(t); signal?.removeEventListener('abort', done); resolve() }
    signal?.addEventListener('abort', done, { once: true })
  })
}

/**
 * Loads chunks as they arrive (seed 002: chunks are loaded into the local database while the others
 * download), off the download's path: during the chunks phase, once the listing has verified against
 * the manifest, `loadState` in follow mode advances the load cursor over the rows whose chunks are
 * stored and verified, in listing order (the download asks for them in that order, so the cursor
 * trails it closely). It takes each chunk's bytes from the download's hand-over (ArrivedChunks: verified
 * moments ago, so neither read back nor hashed again) or else reads it back from its pack (the page
 * cache, not LevelDB) and re-hashes it, decodes and checks it, and writes its entries with the cursor and the accumulator in the load's batches, so that
 * a restart resumes with exactly the rows below the persisted cursor loaded. The state's accounts and
 * embeddings are cleared (under the `state-replaced` flag) when the cursor is 0, as the load phase does.
 *
 * Only rows of the verified listing are loaded, and only chunks whose bytes hash to their row: a chunk
 * that arrived before the listing verified, vouched for by the filter only, is loaded once its row is
 * attested; one the listing does not have is never loaded (its HAVE row is dropped, as before). So
 * the final checksum cannot find a loaded chunk bad; a chunk of the attested snapshot that does not
 * decode or does not match its row fails the snapshot (BadSnapshotError) whether loaded early or late,
 * and the next sync clears the state buckets again. What is left when the chunks phase ends (rows whose
 * chunks came last, or all of them if this stopped on an error) is loaded by the load phase, which
 * continues from the cursor, then checks the root. `stop()` aborts it and waits for its write in
 * flight, so the load phase never reads a cursor that is about to move.
 */
export class ArrivalLoader {
  private readonly ctrl = new AbortController()
  private running?: Promise<void>
  private readonly store: ChainStore
  private readonly state: SyncState
  private readonly manifest: SnapshotManifest
  private readonly opts: LoadOptions & { ready: () => boolean }
  /** the error that stopped it early, if any (the load phase does the rest) */
  error?: Error

  constructor (store: ChainStore, state: SyncState, manifest: SnapshotManifest, opts: LoadOptions & { ready: () => boolean }) {
    this.store = store
    this.state = state
    this.manifest = manifest
    this.opts = opts
  }

  /** Starts following the download once `ready()` (the listing verified). */
  start (signal: AbortSignal): void {
    const sig = AbortSignal.any([signal, this.ctrl.signal])
    this.running = (async () => {
      while (!this.opts.ready()) {
        if (sig.aborted) return
        await sleep(100, sig)
      }
      await (await this.state.prepareLoad()).write()
      await loadState(this.store, this.state, this.manifest, { ...this.opts, signal: sig, follow: true })
    })().catch((err: any) => {
      if (sig.aborted) return
      this.error = err
      this.opts.log?.('loading chunks as they arrive stopped at an error (the load phase loads the rest): %s', err?.message ?? err)
    })
  }

  /** Stops and waits until nothing is being written. */
  async stop (): Promise<void> {
    this.ctrl.abort()
    await this.running
  }
}

/**
 * Every listed chunk's partial state hash recomputed from its bytes (re-hashed against its row), and
 * their sum. Stored partials that differ (damaged) or are missing are replaced in the store.
 */
async function recomputePartials (state: SyncState, snaps: SnapshotStore, manifest: SnapshotManifest, pool: ChunkHashPool | undefined, signal?: AbortSignal): Promise<{ lthash: LtHash, repaired: number }> {
  const sum = new LtHash()
  let repaired = 0
  let window: ChunkInfo[] = []
  let windowBytes = 0
  const flush = async (): Promise<void> => {
    const hashes = window.map(r => r.hash)
    const [raw, stored] = await Promise.all([snaps.getChunks(hashes), state.partials(hashes)])
    const chunks: Uint8Array[] = []
    for (let i = 0; i < window.length; i++) chunks.push(await checkStoredChunk(state, window[i], raw[i]))
    const partials = await Promise.all(chunks.map(async bytes => pool === undefined ? chunkPartial(bytes) : await pool.partial(bytes).catch(() => chunkPartial(bytes))))
    const fixes = state.store.batch()
    for (let i = 0; i < window.length; i++) {
      const part = partials[i]
      if (part === undefined) throw new BadSnapshotError(`snapshot of commit ${manifest.commitIndex}: attested chunk ${toHex(window[i].hash)} does not decode`)
      sum.merge(LtHash.fromBytes(part))
      const s = stored[i]
      if (s !== undefined && bytesEqual(s, part)) continue
      if (s !== undefined) repaired++
      state.putPartial(fixes, window[i].hash, part)
    }
    if (fixes.length > 0) await fixes.write()
    window = []
    windowBytes = 0
  }
  for await (const [, r] of state.rows(0)) {
    signal?.throwIfAborted()
    window.push(r)
    windowBytes += r.size
    if (windowBytes >= LOAD_READ_BYTES || window.length >= LOAD_READ_CHUNKS) await flush()
  }
  if (window.length > 0) await flush()
  return { lthash: sum, repaired }
}

export interface AnchorDeps {
  store: ChainStore
  fetchCommits: FetchCommits
  blockVerifier: SignedBlockVerifier
  /** peers to ask for commit S, best first */
  peers: () => PeerId[]
  penalize: (peer: PeerId, err: unknown) => void
  timeoutMs: number
}

/**
 * Commit S of the manifest, certified by 2f+1 of the committee of its epoch (which the store knows):
 * from the stored epoch proof of that epoch when S ends it, else from a peer. undefined when no peer
 * could give it now.
 */
export async function anchorCommit (deps: AnchorDeps, manifest: SnapshotManifest, signal: AbortSignal): Promise<ParsedCommit | undefined> {
  const S = manifest.commitIndex
  const e = manifest.epoch
  const store = deps.store
  const committee = await store.getCommittee(e)
  if (committee === undefined) throw new InvalidSnapshotError(`the committee of epoch ${e} is not known`)
  const check = (c: ParsedCommit): void => {
    if (c.index !== S) throw new ProtocolViolationError(`commit ${c.index} answered for commit ${S}`)
    if (c.epoch !== e) throw new BadSnapshotError(`the snapshot of commit ${S} says epoch ${e}, the certified commit is of epoch ${c.epoch}`)
  }
  // an epoch proof stored by committee sync was verified against the committee of its epoch
  const proof = await store.getEpochProof(e)
  if (proof !== undefined) {
    const c = parseCommit(proof.commit)
    if (c.index === S) { check(c); return c }
  }
  for (const peer of deps.peers()) {
    signal.throwIfAborted()
    try {
      const res = await deps.fetchCommits.fetch(peer, S, S, { signal: AbortSignal.any([signal, AbortSignal.timeout(deps.timeoutMs)]) })
      const c = parseCommit(res.commits[0])
      check(c)
      const parsed = res.certifierBlocks.map(b => deps.blockVerifier.parse(b)).filter(b => b.epoch === e)
      if (parsed.length > committee.size) throw new MalformedMessageError(`${parsed.length} certifier blocks for a committee of ${committee.size}`)
      const certifiers = await deps.blockVerifier.verify(parsed, committee)
      verifyCertification(c, certifiers, committee)
      return c
    } catch (err) {
      if (signal.aborted) throw err
      if (err instanceof BadSnapshotError) throw err
      deps.penalize(peer, err)
    }
  }
  return undefined
}

/**
 * anchor: the one atomic batch that makes the snapshot the node's state at commit S (module comment),
 * then the sync rows are cleared.
 */
export async function anchorSnapshot (store: ChainStore, state: SyncState, manifest: SnapshotManifest, commit: ParsedCommit, opts: { attestation: Uint8Array, filter: Uint8Array, keep: number }): Promise<{ prunedSnapshots: number[], sweptChunks: number }> {
  const S = manifest.commitIndex
  const load = await state.load()
  const root = load.lthash.checksum()
  if (!bytesEqual(root, manifest.stateRoot)) throw new BadSnapshotError(`snapshot of commit ${S}: the loaded state has root ${toHex(root)}, the manifest says ${toHex(manifest.stateRoot)}`)
  const listing = await state.listing()
  // the listing's stored form (SnapshotListing bytes), as the server side serves it
  const parts: Uint8Array[] = []
  let size = 0
  for await (const row of state.rowBytes()) { const f = frameListingRow(row); parts.push(f); size += f.byteLength }
  const listingBytes = new Uint8Array(size)
  let o = 0
  for (const part of parts) { listingBytes.set(part, o); o += part.byteLength }
  if (!bytesEqual(sha256(listingBytes), manifest.listingHash)) throw new InvalidSnapshotError(`snapshot of commit ${S}: the stored listing no longer matches the manifest`)

  const snaps = new SnapshotStore(store)
  const batch = store.batch()
  batch.putStateRoot(S, root, load.lthash)
  batch.putCommit(commit)
  batch.setHighestSynced(S).setHighestExecuted(S).setLowestAvailable(S + 1)
  snaps.putRows(batch, { commit: S, attestation: opts.attestation, listing: listingBytes, filter: opts.filter, multiset: listing.multiset.toBytes() })
  const pruned = await snaps.prune(batch, opts.keep, { commit: S, listing: decodeListing(listingBytes) })
  state.finish(batch)
  await batch.write()
  await state.clear()
  // pack files holding only swept chunks are deleted (a crash before: the next collection does it)
  await snaps.collectPacks()
  return { prunedSnapshots: pruned.prunedSnapshots, sweptChunks: pruned.sweptChunks }
}

