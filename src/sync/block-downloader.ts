/**
 * Block synchronization (seed 000): the blocks referenced by verified commits, fetched in batches of
 * `maxBlocksPerFetch` refs, pipelined (request i starts i × `blockFetchStaggerMs` after the first)
 * and run concurrently (at most `concurrency` in flight). Every block is checked: it decodes, its
 * digest and (round, author) equal the ref asked for at that position, its signature is its author's
 * in the commit's epoch committee, and every transaction in it verifies (TxVerifier).
 *
 * Memory is bounded by `maxTotalFetchedBytes` (or the part of it a download is given when several run
 * at once): blocks held plus one response per request in flight never exceed it. Whenever the commits at the front have all their blocks, `onReady` stores them
 * and their bytes are released.
 */
import type { PeerId } from '@libp2p/interface'
import type { TrustedCommit } from '../chain/commit.ts'
import { refString, type ParsedBlock } from '../chain/block.ts'
import type { BlockRef } from '../chain/types.ts'
import type { ChainStore } from '../store/chain-store.ts'
import type { FetchBlocks } from './protocols/fetch-blocks.ts'
import type { SignedBlockVerifier } from './block-verifier.ts'
import type { TxVerifier } from './tx-verifier.ts'
import { bytesEqual, toHex } from '../crypto/hash.ts'
import { BlockMismatchError, NoPeerError, RateLimitedError, SomaError, StoreError } from '../errors.ts'

export interface BlockDownloaderOptions {
  maxBlocksPerFetch: number
  maxFetchResponseBytes: number
  maxTotalFetchedBytes: number
  blockFetchStaggerMs: number
  concurrency: number
  timeoutMs: number
}

export interface ReadyCommit {
  commit: TrustedCommit
  /** in commit order */
  blocks: ParsedBlock[]
}

export interface DownloadDeps {
  store: ChainStore
  fetchBlocks: FetchBlocks
  blockVerifier: SignedBlockVerifier
  txVerifier: TxVerifier
  /** called for a peer that sent bad data or failed; returns whether to keep using it */
  onPeerError: (peer: PeerId, err: unknown) => void
  onPeerSuccess?: (peer: PeerId) => void
  /** ms a peer's rate-limit hint still runs (0: it may be asked now) */
  heldFor?: (peer: PeerId) => number
}

export interface DownloadStats {
  requests: number
  blocks: number
  bytes: number
  peakHeldBytes: number
  /** waits for a rate-limit hint on the only peer left */
  rateLimitedWaits: number
}

const key = (r: BlockRef): string => `${r.round}/${r.author}/${toHex(r.digest)}`

export class BlockDownloader {
  private readonly opts: BlockDownloaderOptions
  private readonly deps: DownloadDeps
  readonly stats: DownloadStats = { requests: 0, blocks: 0, bytes: 0, peakHeldBytes: 0, rateLimitedWaits: 0 }

  constructor (deps: DownloadDeps, opts: BlockDownloaderOptions) {
    this.deps = deps
    this.opts = opts
  }

  /**
   * Downloads every block of `commits` (all of one epoch) not already stored or among `verified`, from
   * `peers` in order of preference (falling back on failure), and hands complete commit prefixes to
   * `onReady`. `budgetBytes` (default maxTotalFetchedBytes) bounds the blocks it holds.
   */
  async download (commits: readonly TrustedCommit[], peers: readonly PeerId[], onReady: (ready: ReadyCommit[]) => Promise<void>, signal: AbortSignal, budgetBytes?: number, verified: readonly ParsedBlock[] = []): Promise<void> {
    const { store } = this.deps
    // concurrent downloads share maxTotalFetchedBytes: each is given its part
    const o = { ...this.opts, maxTotalFetchedBytes: budgetBytes ?? this.opts.maxTotalFetchedBytes }
    if (commits.length === 0) return
    const epoch = commits[0].epoch
    const committee = await store.getCommittee(epoch)
    if (committee === undefined) throw new StoreError(`no committee stored for epoch ${epoch}`)

    // what is missing, in commit order
    // blocks verified already (`verified`: the certifier blocks of the range before, not stored yet)
    const known = new Map(verified.map(b => [key(b.ref), b]))
    const have = new Map<string, ParsedBlock>()
    const missing: BlockRef[] = []
    for (const c of commits) {
      const stored = await store.getBlocks(c.commit.blocks)
      c.commit.blocks.forEach((r, i) => {
        const b = stored[i]
        const k = key(r)
        if (b !== undefined) have.set(k, this.deps.blockVerifier.parse(b))
        else if (known.has(k)) have.set(k, known.get(k)!)
        else missing.push(r)
      })
    }
    const batches: BlockRef[][] = []
    for (let i = 0; i < missing.length; i += o.maxBlocksPerFetch) batches.push(missing.slice(i, i + o.maxBlocksPerFetch))

    let held = 0
    let reserved = 0
    let next = 0 // next commit to hand over
    const heldBytes = new Map<string, number>()
    const flush = async (): Promise<void> => {
      const ready: ReadyCommit[] = []
      while (next < commits.length) {
        const c = commits[next]
        const blocks = c.commit.blocks.map(r => have.get(key(r)))
        if (blocks.some(b => b === undefined)) break
        ready.push({ commit: c, blocks: blocks as ParsedBlock[] })
        next++
      }
      if (ready.length === 0) return
      await onReady(ready)
      for (const r of ready) {
        for (const b of r.blocks) {
          const k = key(b.ref)
          held -= heldBytes.get(k) ?? 0
          heldBytes.delete(k)
          have.delete(k)
        }
      }
    }

    const peerList = [...peers]
    if (peerList.length === 0) throw new NoPeerError('no peer to fetch blocks from')
    let peerCursor = 0
    const fetchBatch = async (refs: BlockRef[]): Promise<void> => {
      let remaining = refs
      while (remaining.length > 0) {
        signal.throwIfAborted()
        if (peerList.length === 0) throw new NoPeerError(`no peer left to fetch ${remaining.length} blocks from`)
        const peer = peerList[peerCursor % peerList.length]
        // a peer under a rate-limit hint: another peer that is not, or wait for the hint's end
        const holdMs = this.deps.heldFor?.(peer) ?? 0
        if (holdMs > 0) {
          if (peerList.some(p => (this.deps.heldFor?.(p) ?? 0) === 0)) { peerCursor++; continue }
          await sleep(holdMs, signal)
          continue
        }
        try {
          this.stats.requests++
          const raw = await this.deps.fetchBlocks.fetch(peer, remaining, { signal: AbortSignal.any([signal, AbortSignal.timeout(o.timeoutMs)]) })
          const blocks = raw.map(b => this.deps.blockVerifier.parse(b))
          blocks.forEach((b, i) => {
            const want = remaining[i]
            if (b.round !== want.round || b.author !== want.author || !bytesEqual(b.digest, want.digest)) {
              throw new BlockMismatchError(`asked for block ${refString(want)}, got ${refString(b.ref)}`)
            }
          })
          // block and transaction signatures verified together (both spread over the VerifyPool); a bad
          // block signature is the error reported when both fail
          const [bv, tv] = await Promise.allSettled([this.deps.blockVerifier.verify(blocks, committee), this.deps.txVerifier.verifyBlocks(blocks)])
          if (bv.status === 'rejected') throw bv.reason
          if (tv.status === 'rejected') throw tv.reason
          for (let i = 0; i < blocks.length; i++) {
            const k = key(blocks[i].ref)
            have.set(k, blocks[i])
            heldBytes.set(k, raw[i].byteLength)
            held += raw[i].byteLength
            this.stats.blocks++
            this.stats.bytes += raw[i].byteLength
          }
          this.stats.peakHeldBytes = Math.max(this.stats.peakHeldBytes, held + reserved)
          this.deps.onPeerSuccess?.(peer)
          remaining = remaining.slice(blocks.length)
        } catch (err) {
          if (signal.aborted) throw err
          if (!(err instanceof SomaError) && (err as any)?.name === 'AbortError') throw err
          this.deps.onPeerError(peer, err)
          // rate limited with a hint: the last peer left is asked again once the hint has passed, another
          // peer is preferred while there is one (src/net/rate-limit.ts)
          if (err instanceof RateLimitedError && peerList.length === 1) {
            this.stats.rateLimitedWaits++
            await sleep(err.retryAfterMs, signal)
            continue
          }
          // drop this peer for the rest of the operation and move to the next
          const idx = peerList.indexOf(peer)
          if (idx >= 0) peerList.splice(idx, 1)
          peerCursor++
        }
      }
    }

    // pipelined, concurrent, within the memory budget
    const inflight = new Set<Promise<void>>()
    let failure: unknown
    const t0 = Date.now()
    for (let i = 0; i < batches.length; i++) {
      // a request may bring up to maxFetchResponseBytes: reserve it
      while (failure === undefined && (inflight.size >= o.concurrency || held + reserved + o.maxFetchResponseBytes > o.maxTotalFetchedBytes)) {
        if (inflight.size > 0) await Promise.race(inflight)
        else {
          await flush()
          if (held + o.maxFetchResponseBytes > o.maxTotalFetchedBytes) {
            throw new StoreError(`max_total_fetched_bytes (${o.maxTotalFetchedBytes}) is too small to hold one commit's blocks`)
          }
        }
        if (failure === undefined) await flush()
      }
      if (failure !== undefined) break
      const wait = t0 + i * o.blockFetchStaggerMs - Date.now()
      if (wait > 0) await sleep(wait, signal)
      reserved += o.maxFetchResponseBytes
      const p: Promise<void> = fetchBatch(batches[i])
        .catch(err => { failure ??= err })
        .finally(() => { reserved -= o.maxFetchResponseBytes; inflight.delete(p) })
      inflight.add(p)
    }
    await Promise.all(inflight)
    if (failure !== undefined) {
      await flush() // keep what is complete: partial progress is preserved
      throw failure
    }
    await flush()
    if (next < commits.length) throw new StoreError(`commit ${commits[next].index}: blocks still missing after download`)
  }
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = (): void => { clearTimeout(t); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
