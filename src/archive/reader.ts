/**
 * ArchiveSync: the fast mode of archival sync (issue 14). Downloads the segments an archive's manifest
 * lists (in parallel: at most `concurrency` downloads and `maxInflightBytes` of segments downloaded and
 * not yet stored), resumes a partial download with a Range request, checks each file's size and sha256
 * against the manifest, then verifies every commit exactly as commit sync does (chained to the store's
 * commit before it, certified by signature-checked blocks of the epoch's committee with 2f+1 stake,
 * every block's digest, round and author equal to the commit's ref and its signature its author's,
 * every transaction's signature through the VerifyPool), optionally spot-checks sampled commits against
 * P2P peers, and stores each segment in one atomic batch (blocks, votes, commits, highest synced) before
 * handing its commits to the CommitExecutor. The archive is untrusted: nothing is stored that did not
 * verify from genesis. The resume point is the store's highest synced commit; files in `cacheDir` are
 * re-hashed before use.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import { open } from 'node:fs/promises'
import path from 'node:path'
import type { ChainStore } from '../store/chain-store.ts'
import type { CommitExecutor } from '../executor/commit-executor.ts'
import type { CommittedSubDag } from '../chain/subdag.ts'
import { parseBlock, refString, type ParsedBlock } from '../chain/block.ts'
import { parseCommit, verifyChain, verifyCertification, type ParsedCommit } from '../chain/commit.ts'
import { chainAnchor, type CommitAnchor } from '../sync/commit-fetcher.ts'
import { BoundedChannel } from '../sync/channel.ts'
import type { SignedBlockVerifier } from '../sync/block-verifier.ts'
import type { TxVerifier } from '../sync/tx-verifier.ts'
import { bytesEqual, sha256, toHex } from '../crypto/hash.ts'
import { ArchiveSourceError, InvalidArchiveError, SomaError, SpotCheckError, StoreError } from '../errors.ts'
import type { Logger } from '../utils/logger.ts'
import type { ArchiveSource } from './source.ts'
import { MANIFEST_NAME, decodeSegment, parseManifest, type ArchiveManifest, type SegmentEntry } from './format.ts'
import type { SpotChecker } from './spot-check.ts'
import { SegmentScheduler, fetchSegmentFromPeer, type SegmentSource } from './combined.ts'
import type { PeerId } from '@libp2p/interface'
import type { FetchCommits } from '../sync/protocols/fetch-commits.ts'
import type { FetchBlocks } from '../sync/protocols/fetch-blocks.ts'
import type { SegmentBody, SegmentHeader } from './format.ts'

export interface ArchiveSyncOptions {
  /** segments downloading at once. @default 4 */
  concurrency?: number
  /** segment bytes downloaded and not yet stored (one segment is always allowed). @default 256 MiB */
  maxInflightBytes?: number
  /** one request (GET of one object) may take this long. @default 60 s */
  requestTimeoutMs?: number
  /** attempts per object on source errors (HTTP errors, timeouts, short reads). @default 3 */
  attempts?: number
  /** first back-off between attempts; doubles. @default 500 ms */
  retryDelayMs?: number
  /** most bytes the manifest may have. @default 64 MiB */
  maxManifestBytes?: number
  /** commits queued for the executor. @default 50 */
  executorQueue?: number
  /** stop after storing this commit (tests, benches). @default the manifest's highest */
  stopAt?: number
}

export interface ArchiveSyncDeps {
  store: ChainStore
  executor: CommitExecutor
  source: ArchiveSource
  blockVerifier: SignedBlockVerifier
  txVerifier: TxVerifier
  /** where segment downloads are kept until stored (created if missing) */
  cacheDir: string
  log: Logger
  spotChecker?: SpotChecker
  /**
   * The combined download (src/archive/combined.ts): P2P peers fetch segments' ranges too, alongside the
   * archive, by measured throughput with work stealing. Absent: the archive alone.
   */
  combined?: { peers: () => PeerId[], fetchCommits: FetchCommits, fetchBlocks: FetchBlocks, maxBlocksPerFetch: number, slotsPerPeer?: number }
}

export interface ArchiveSyncResult {
  /** 'synced': every listed segment is stored and executed; 'failed': stopped at `error` */
  outcome: 'synced' | 'failed'
  highestSynced: number
  highestExecuted: number
  error?: Error
}

export interface ArchiveProgress {
  phase: 'manifest' | 'downloading' | 'done' | 'failed'
  target: number
  highestSynced: number
  segments: number
  segmentsStored: number
  downloadedBytes: number
  resumedBytes: number
  spotChecks: number
  error?: string
}

export class ArchiveSync {
  private readonly deps: ArchiveSyncDeps
  private readonly opts: Required<Omit<ArchiveSyncOptions, 'stopAt'>> & { stopAt?: number }
  manifest?: ArchiveManifest
  readonly stats: ArchiveProgress = { phase: 'manifest', target: 0, highestSynced: 0, segments: 0, segmentsStored: 0, downloadedBytes: 0, resumedBytes: 0, spotChecks: 0 }

  constructor (deps: ArchiveSyncDeps, opts: ArchiveSyncOptions = {}) {
    this.deps = deps
    this.opts = {
      concurrency: opts.concurrency ?? 4,
      maxInflightBytes: opts.maxInflightBytes ?? 256 * 1024 * 1024,
      requestTimeoutMs: opts.requestTimeoutMs ?? 60_000,
      attempts: opts.attempts ?? 3,
      retryDelayMs: opts.retryDelayMs ?? 500,
      maxManifestBytes: opts.maxManifestBytes ?? 64 * 1024 * 1024,
      executorQueue: opts.executorQueue ?? 50,
      stopAt: opts.stopAt
    }
    if (!Number.isInteger(this.opts.concurrency) || this.opts.concurrency < 1) throw new RangeError(`archive download concurrency must be >= 1, got ${this.opts.concurrency}`)
  }

  /**
   * Syncs from the archive; never throws for bad input or a failing source: the result says where it
   * stopped and why (the error is logged), and the caller goes on from another source (P2P).
   */
  async run (signal: AbortSignal): Promise<ArchiveSyncResult> {
    const { store, executor, log } = this.deps
    const channel = new BoundedChannel<CommittedSubDag>(this.opts.executorQueue)
    const execAbort = new AbortController()
    let execError: Error | undefined
    const executing = executor.run(channel, AbortSignal.any([signal, execAbort.signal])).catch((err: Error) => {
      execError = err
      execAbort.abort(err)
    })
    let error: Error | undefined
    try {
      await this.replay(channel, execAbort.signal)
      await this.sync(channel, AbortSignal.any([signal, execAbort.signal]))
    } catch (err: any) {
      error = execError ?? err
    } finally {
      channel.close()
      await executing
    }
    error ??= execError
    this.stats.highestSynced = store.highestSynced
    if (error !== undefined && signal.aborted && !(error instanceof SomaError)) {
      this.stats.phase = 'failed'
      return { outcome: 'failed', highestSynced: store.highestSynced, highestExecuted: store.highestExecuted, error: signal.reason ?? error }
    }
    if (error !== undefined) {
      this.stats.phase = 'failed'
      this.stats.error = error.message
      log.error('archive sync stopped at commit %d: %s', store.highestSynced, error.message)
      return { outcome: 'failed', highestSynced: store.highestSynced, highestExecuted: store.highestExecuted, error }
    }
    this.stats.phase = 'done'
    log.info('archive sync done: commits 1..%d stored and executed (%d segments, %d bytes downloaded, %d spot checks)', store.highestSynced, this.stats.segmentsStored, this.stats.downloadedBytes, this.stats.spotChecks)
    return { outcome: 'synced', highestSynced: store.highestSynced, highestExecuted: store.highestExecuted }
  }

  /** Commits stored but not executed (after a restart) go to the executor first. */
  private async replay (channel: BoundedChannel<CommittedSubDag>, signal: AbortSignal): Promise<void> {
    const store = this.deps.store
    for (let i = store.highestExecuted + 1; i <= store.highestSynced; i++) {
      const commit = await store.getCommit(i)
      if (commit === undefined) throw new StoreError(`commit ${i} is marked synced but not stored`)
      const raw = await store.getBlocks(commit.commit.blocks)
      const blocks = raw.map((b, j) => {
        if (b === undefined) throw new StoreError(`commit ${i}: block ${j} is marked synced but not stored`)
        return parseBlock(b, store.chainId)
      })
      await channel.send({ commit, blocks }, signal)
    }
  }

  private async sync (channel: BoundedChannel<CommittedSubDag>, signal: AbortSignal): Promise<void> {
    const { store, source, log } = this.deps
    const manifestBytes = await this.withRetries(MANIFEST_NAME, signal, async (s) => await source.readAll(MANIFEST_NAME, { signal: s, maxBytes: this.opts.maxManifestBytes }))
    const manifest = parseManifest(manifestBytes, source.describe(MANIFEST_NAME), store.chainId)
    this.manifest = manifest
    const stopAt = Math.min(this.opts.stopAt ?? Infinity, manifest.highestCommit)
    const todo = manifest.segments.filter(s => s.lastCommit > store.highestSynced && s.firstCommit <= stopAt)
    this.stats.target = stopAt
    this.stats.segments = todo.length
    this.stats.phase = 'downloading'
    log.info('archive %s: commits 1..%d in %d segments; %d segments to fetch from commit %d', source.url, manifest.highestCommit, manifest.segments.length, todo.length, store.highestSynced + 1)
    if (todo.length === 0) return
    if (store.highestSynced + 1 < store.lowestAvailable || todo[0].firstCommit < store.lowestAvailable) {
      throw new StoreError(`this store holds commits from ${store.lowestAvailable} (it synced a snapshot): archive sync needs a store synced from genesis`)
    }
    mkdirSync(this.deps.cacheDir, { recursive: true })
    const epochCommits = new Map<number, number>()
    for (const s of manifest.segments) epochCommits.set(s.epoch, (epochCommits.get(s.epoch) ?? 0) + s.lastCommit - s.firstCommit + 1)

    if (this.deps.combined !== undefined) {
      await this.syncCombined(todo, channel, epochCommits, signal)
      return
    }
    const downloads = new Map<number, Promise<Uint8Array>>()
    const local = new AbortController()
    const dsignal = AbortSignal.any([signal, local.signal])
    let next = 0
    let active = 0
    let inflight = 0
    const startMore = (): void => {
      while (next < todo.length && active < this.opts.concurrency && (inflight === 0 || inflight + todo[next].size <= this.opts.maxInflightBytes)) {
        const i = next++
        active++
        inflight += todo[i].size
        const p = this.download(todo[i], dsignal).finally(() => { active--; startMore() })
        p.catch(() => {})
        downloads.set(i, p)
      }
    }
    let anchor: CommitAnchor | undefined
    try {
      for (let i = 0; i < todo.length; i++) {
        startMore()
        const entry = todo[i]
        const bytes = await downloads.get(i)!
        downloads.delete(i)
        const what = source.describe(entry.name)
        anchor = await this.apply(entry, { ...decodeSegment(bytes, what), what, fromArchive: true }, anchor, channel, epochCommits.get(entry.epoch) ?? 1, signal)
        inflight -= entry.size
        this.stats.segmentsStored++
        this.stats.highestSynced = store.highestSynced
      }
    } finally {
      local.abort(new Error('archive sync stopped'))
      await Promise.allSettled(downloads.values())
    }
  }

  /** Segments from the archive and P2P peers together (src/archive/combined.ts), stored in order. */
  private async syncCombined (todo: SegmentEntry[], channel: BoundedChannel<CommittedSubDag>, epochCommits: Map<number, number>, signal: AbortSignal): Promise<void> {
    const { source, log } = this.deps
    const c = this.deps.combined!
    const archive: SegmentSource = {
      id: `archive ${source.url}`,
      kind: 'archive',
      slots: this.opts.concurrency,
      fetch: async (entry, s) => {
        const bytes = await this.download(entry, s)
        const what = source.describe(entry.name)
        return { ...decodeSegment(bytes, what), what, source: `archive ${source.url}`, bytes: bytes.byteLength }
      }
    }
    const peerSources = new Map<string, SegmentSource>()
    const discover = (): SegmentSource[] => {
      for (const p of c.peers()) {
        const id = p.toString()
        if (peerSources.has(id)) continue
        peerSources.set(id, {
          id,
          kind: 'peer',
          slots: c.slotsPerPeer ?? 2,
          fetch: async (entry, s) => await fetchSegmentFromPeer(p, entry, c, AbortSignal.any([s, AbortSignal.timeout(this.opts.requestTimeoutMs)]))
        })
      }
      return [...peerSources.values()]
    }
    const scheduler = new SegmentScheduler(todo, [archive], { maxInflightBytes: this.opts.maxInflightBytes, log, signal, discover })
    let anchor: CommitAnchor | undefined
    try {
      for (let i = 0; i < todo.length; i++) {
        const entry = todo[i]
        for (;;) {
          const f = await scheduler.get(i)
          try {
            anchor = await this.apply(entry, { header: f.header, body: f.body, what: f.what, fromArchive: f.source === archive.id }, anchor, channel, epochCommits.get(entry.epoch) ?? 1, signal)
            break
          } catch (err: any) {
            // bad data from one source: drop it, the segment comes from another (a spot check that
            // fails, or a store error, stops the fast mode)
            if (signal.aborted || !(err instanceof SomaError) || err instanceof StoreError || err instanceof SpotCheckError) throw err
            log.warn('%s', err.message)
            scheduler.reject(i, f.source, err)
          }
        }
        scheduler.release(i)
        this.stats.segmentsStored++
        this.stats.highestSynced = this.deps.store.highestSynced
      }
    } finally {
      this.combinedStats = scheduler.stats()
      await scheduler.close()
    }
  }

  /** Per source of the last combined download: segments delivered, bytes/s. */
  combinedStats?: ReturnType<SegmentScheduler['stats']>

  private cacheFile (entry: SegmentEntry): string {
    return path.join(this.deps.cacheDir, path.basename(entry.name))
  }

  /** Runs `fn` up to `attempts` times on source errors, with a per-attempt timeout and back-off. */
  private async withRetries<T> (name: string, signal: AbortSignal, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    let delay = this.opts.retryDelayMs
    for (let attempt = 1; ; attempt++) {
      signal.throwIfAborted()
      try {
        return await fn(AbortSignal.any([signal, AbortSignal.timeout(this.opts.requestTimeoutMs)]))
      } catch (err: any) {
        if (signal.aborted || !(err instanceof ArchiveSourceError) || attempt >= this.opts.attempts) throw err
        this.deps.log.warn('archive object %s, attempt %d of %d: %s; retrying in %d ms', name, attempt, this.opts.attempts, err.message, delay)
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, delay)
          const onAbort = (): void => { clearTimeout(t); reject(signal.reason) }
          signal.addEventListener('abort', onAbort, { once: true })
        })
        delay *= 2
      }
    }
  }

  /**
   * The bytes of one segment, checked against the manifest's size and sha256. A complete file in the
   * cache is re-hashed; a partial one is continued with a Range request.
   */
  private async download (entry: SegmentEntry, signal: AbortSignal): Promise<Uint8Array> {
    const { source } = this.deps
    const what = source.describe(entry.name)
    const done = this.cacheFile(entry)
    const part = done + '.part'
    if (existsSync(done)) {
      const bytes = readFileSync(done)
      if (bytes.byteLength === entry.size && toHex(sha256(bytes)) === entry.sha256) return bytes
      this.deps.log.warn('cached segment %s does not match the manifest: downloading it again', done)
      rmSync(done, { force: true })
    }
    await this.withRetries(entry.name, signal, async (s) => {
      let offset = existsSync(part) ? statSync(part).size : 0
      if (offset > entry.size) { rmSync(part, { force: true }); offset = 0 }
      if (offset > 0) this.stats.resumedBytes += offset
      if (offset < entry.size) {
        const fh = await open(part, offset === 0 ? 'w' : 'a')
        try {
          for await (const chunk of await source.read(entry.name, { offset, signal: s })) {
            if (offset + chunk.byteLength > entry.size) {
              throw new InvalidArchiveError(`${what} is larger than the ${entry.size} bytes the manifest lists`)
            }
            await fh.write(chunk)
            offset += chunk.byteLength
            this.stats.downloadedBytes += chunk.byteLength
          }
        } finally {
          await fh.close()
        }
      }
      if (offset < entry.size) throw new ArchiveSourceError(`${what} ended after ${offset} of the ${entry.size} bytes the manifest lists (truncated)`)
    }).catch((err) => {
      if (err instanceof InvalidArchiveError) rmSync(part, { force: true })
      throw err
    })
    const bytes = readFileSync(part)
    const hash = toHex(sha256(bytes))
    if (hash !== entry.sha256) {
      rmSync(part, { force: true })
      throw new InvalidArchiveError(`${what}: sha256 ${hash.slice(0, 16)}… is not the manifest's ${entry.sha256.slice(0, 16)}…`)
    }
    renameSync(part, done)
    return bytes
  }

  /** Verifies one segment, spot-checks it, stores its new commits in one batch and queues them for execution. */
  private async apply (entry: SegmentEntry, seg: { header?: SegmentHeader, body: SegmentBody, what: string, fromArchive: boolean }, anchorIn: CommitAnchor | undefined, channel: BoundedChannel<CommittedSubDag>, epochCommits: number, signal: AbortSignal): Promise<CommitAnchor> {
    const { store, blockVerifier, txVerifier } = this.deps
    const { header, body, what } = seg
    const fail = (msg: string): never => { throw new InvalidArchiveError(`${what}: ${msg}`) }
    const wrap = async <T>(fn: () => T | Promise<T>): Promise<T> => {
      try { return await fn() } catch (err: any) {
        if (err instanceof InvalidArchiveError || err instanceof StoreError) throw err
        throw new InvalidArchiveError(`${what}: ${err.message}`, { cause: err })
      }
    }
    if (header !== undefined) {
      if (!bytesEqual(header.chainId, store.chainId)) fail(`a segment of chain ${toHex(header.chainId).slice(0, 16)}…, not of this chain`)
      if (header.epoch !== entry.epoch || header.firstCommit !== entry.firstCommit || header.lastCommit !== entry.lastCommit || header.endsEpoch !== entry.endsEpoch) {
        fail(`its header (epoch ${header.epoch}, commits ${header.firstCommit}..${header.lastCommit}) is not what the manifest lists (epoch ${entry.epoch}, ${entry.firstCommit}..${entry.lastCommit})`)
      }
    }
    if (body.commits.length !== entry.lastCommit - entry.firstCommit + 1) fail(`${body.commits.length} commits for the range ${entry.firstCommit}..${entry.lastCommit}`)
    const commits: ParsedCommit[] = await wrap(() => body.commits.map(b => parseCommit(b)))
    const anchor = anchorIn !== undefined && anchorIn.index === entry.firstCommit - 1 ? anchorIn : await chainAnchor(store, entry.firstCommit)
    await wrap(() => { verifyChain(anchor, commits) })
    const last = commits[commits.length - 1]
    if (commits[0].epoch !== entry.epoch) fail(`commit ${commits[0].index} is of epoch ${commits[0].epoch}, the manifest says ${entry.epoch}`)
    if (last.isEndOfEpoch !== entry.endsEpoch) fail(`commit ${last.index} ${last.isEndOfEpoch ? 'ends' : 'does not end'} its epoch, the manifest says otherwise`)
    const committee = await store.getCommittee(last.epoch)
    if (committee === undefined) throw new StoreError(`no committee stored for epoch ${last.epoch}`)
    // certification of the last commit (the chain certifies the ones before it)
    const certifiers: ParsedBlock[] = await wrap(() => body.certifierBlocks.map(b => parseBlock(b, store.chainId)))
    const foreign = certifiers.find(b => b.epoch !== last.epoch)
    if (foreign !== undefined) fail(`certifier block ${refString(foreign.ref)} is of epoch ${foreign.epoch}, not ${last.epoch}`)
    await wrap(async () => { await blockVerifier.verify(certifiers, committee) })
    await wrap(() => { verifyCertification(last, certifiers, committee) })
    // every block the commits reference, in order
    const blocks: ParsedBlock[] = await wrap(() => body.blocks.map(b => parseBlock(b, store.chainId)))
    const perCommit: ParsedBlock[][] = []
    let k = 0
    for (const c of commits) {
      const mine: ParsedBlock[] = []
      for (const r of c.commit.blocks) {
        const b = blocks[k++]
        if (b === undefined) fail(`commit ${c.index} references ${c.commit.blocks.length} blocks, the segment ends before block ${refString(r)}`)
        if (b.round !== r.round || b.author !== r.author || !bytesEqual(b.digest, r.digest)) fail(`commit ${c.index}: block ${refString(b.ref)} where the commit references ${refString(r)}`)
        mine.push(b)
      }
      perCommit.push(mine)
    }
    if (k !== blocks.length) fail(`${blocks.length - k} blocks no commit of the segment references`)
    const [bv, tv] = await Promise.allSettled([wrap(async () => { await blockVerifier.verify(blocks, committee) }), wrap(async () => { await txVerifier.verifyBlocks([...blocks, ...certifiers]) })])
    if (bv.status === 'rejected') throw bv.reason
    if (tv.status === 'rejected') throw tv.reason
    // P2P spot checks before anything is stored
    if (this.deps.spotChecker !== undefined && seg.fromArchive) {
      this.stats.spotChecks += await this.deps.spotChecker.check(commits, what, epochCommits, signal)
    }
    // store the commits this store does not have, in one batch
    const from = store.highestSynced + 1
    const fresh = commits.map((c, i) => ({ c, blocks: perCommit[i] })).filter(x => x.c.index >= from && x.c.index <= (this.opts.stopAt ?? Infinity))
    if (fresh.length > 0) {
      const batch = store.batch()
      for (const { c, blocks: bs } of fresh) {
        for (const b of bs) batch.putBlock(b.ref, b.bytes).putVotes(b.ref, b.block.commitVotes)
        batch.putCommit(c)
      }
      if (fresh[fresh.length - 1].c.index === last.index) {
        for (const b of certifiers) batch.putBlock(b.ref, b.bytes).putVotes(b.ref, b.block.commitVotes)
      }
      batch.setHighestSynced(fresh[fresh.length - 1].c.index)
      await batch.write()
      for (const { c, blocks: bs } of fresh) await channel.send({ commit: c, blocks: bs }, signal)
    }
    rmSync(this.cacheFile(entry), { force: true })
    return { index: last.index, digest: last.digest, epoch: last.epoch, endOfEpoch: last.isEndOfEpoch }
  }
}
