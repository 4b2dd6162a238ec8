/**
 * The archive parts of a node (src/node/node.ts adds them as NodeComponents):
 * - the writer (`--archive-dir`): writes every epoch that closes into the directory, serves it read-only
 *   over HTTP (`--archive-http-port`) and uploads it to a bucket (`--archive-upload-url`);
 * - the fast mode (`--archive-url`): syncs history from an archive first (src/archive/reader.ts), with
 *   P2P spot checks, while commit sync is held; then lets commit sync go on from where it stopped (the
 *   archive's end, or the commit before a bad object).
 */
import path from 'node:path'
import type { PeerId } from '@libp2p/interface'
import type { SomaConfig } from '../config.ts'
import type { ChainStore } from '../store/chain-store.ts'
import type { CommitExecutor } from '../executor/commit-executor.ts'
import type { Logger } from '../utils/logger.ts'
import { VerifyPool } from '../crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../sync/block-verifier.ts'
import { TxVerifier } from '../sync/tx-verifier.ts'
import type { FetchCommits } from '../sync/protocols/fetch-commits.ts'
import type { FetchBlocks } from '../sync/protocols/fetch-blocks.ts'
import { ArchiveWriter } from './writer.ts'
import { ArchiveHttpServer } from './http-server.ts'
import { uploadArchive } from './s3-upload.ts'
import { ArchiveSync, type ArchiveSyncResult } from './reader.ts'
import { SpotChecker } from './spot-check.ts'
import { openArchiveSource, type ArchiveSource } from './source.ts'
import type { Compression } from './format.ts'

/** The NodeComponent shape (src/node/node.ts), repeated here to keep this module free of the node. */
export interface ArchiveComponent {
  readonly name: string
  start: () => Promise<void>
  stop: () => Promise<void>
  status: () => Record<string, unknown>
  healthy?: () => boolean
}

/** How often the writer looks for closed epochs besides the executor's end-of-epoch events. */
export const ARCHIVE_WRITE_INTERVAL_MS = 10_000

export function archiveWriterComponent (deps: { config: SomaConfig, store: ChainStore, executor: CommitExecutor, log: Logger }): ArchiveComponent {
  const { config, store, executor } = deps
  const log = deps.log.child('archive')
  const writer = new ArchiveWriter(store, config.archiveDir, { segmentCommits: config.archiveSegmentCommits, compression: config.archiveCompression as Compression })
  let server: ArchiveHttpServer | undefined
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let again = false
  let stopped = false
  const controller = new AbortController()
  let highest = 0
  let segments = 0
  let lastError: string | undefined
  let uploaded = 0
  const write = async (): Promise<void> => {
    const r = await writer.writeClosedEpochs({ signal: controller.signal })
    highest = r.highestCommit
    if (r.epochs > 0) {
      segments += r.segments.length
      log.info('archived %d epochs (%d segments) into %s: commits 1..%d', r.epochs, r.segments.length, config.archiveDir, r.highestCommit)
    }
    if (config.archiveUploadUrl !== '' && (r.epochs > 0 || uploaded < highest)) {
      await uploadArchive(config.archiveDir, config.archiveUploadUrl, { endpoint: config.archiveS3Endpoint, region: config.archiveS3Region }, log, AbortSignal.any([controller.signal, AbortSignal.timeout(3_600_000)]))
      uploaded = highest
    }
    lastError = undefined
  }
  const trigger = (): void => {
    if (stopped) return
    if (running !== undefined) { again = true; return }
    running = write().catch((err: Error) => {
      if (controller.signal.aborted) return
      // logged once per distinct error; retried at the next epoch end or tick
      if (err.message !== lastError) log.error('archive writer: %s', err.message)
      lastError = err.message
    }).finally(() => {
      running = undefined
      if (again) { again = false; trigger() }
    })
  }
  const onExecuted = (r: { nextEpoch?: number }): void => { if (r.nextEpoch !== undefined) trigger() }
  return {
    name: 'archive-writer',
    start: async () => {
      if (config.archiveHttpPort > 0) {
        server = new ArchiveHttpServer({ dir: config.archiveDir, host: config.statusHost, port: config.archiveHttpPort, log })
        await server.start()
        log.info('archive %s served on %s/manifest.json', config.archiveDir, server.url)
      }
      executor.on('executed', onExecuted)
      timer = setInterval(trigger, ARCHIVE_WRITE_INTERVAL_MS)
      timer.unref()
      trigger()
    },
    stop: async () => {
      stopped = true
      executor.off('executed', onExecuted)
      if (timer !== undefined) clearInterval(timer)
      controller.abort(new Error('archive writer stopping'))
      await running
      await server?.stop()
    },
    status: () => ({ archive: { dir: config.archiveDir, highestCommit: highest, segmentsWritten: segments, url: server?.url, upload: config.archiveUploadUrl === '' ? undefined : config.archiveUploadUrl, error: lastError } })
  }
}

export interface ArchiveSyncComponentDeps {
  config: SomaConfig
  store: ChainStore
  executor: CommitExecutor
  log: Logger
  /** the node's fetch-commits service (spot checks) */
  fetchCommits: () => FetchCommits | undefined
  /** the node's fetch-blocks service (combined download) */
  fetchBlocks: () => FetchBlocks | undefined
  connectedPeers: () => PeerId[]
  /** lets commit sync run (it is held while the fast mode runs) */
  resumeCommitSync: () => void
  /** sets the node's phase */
  setPhase: (phase: string) => void
}

export function archiveSyncComponent (deps: ArchiveSyncComponentDeps): ArchiveComponent & { readonly done: Promise<ArchiveSyncResult | undefined> } {
  const { config, store, executor } = deps
  const log = deps.log.child('archive-sync')
  const controller = new AbortController()
  let sync: ArchiveSync | undefined
  let source: ArchiveSource | undefined
  let pool: VerifyPool | undefined
  let task: Promise<ArchiveSyncResult | undefined> | undefined
  let resolveDone!: (r: ArchiveSyncResult | undefined) => void
  const done = new Promise<ArchiveSyncResult | undefined>(resolve => { resolveDone = resolve })
  const run = async (): Promise<ArchiveSyncResult | undefined> => {
    try {
      source = await openArchiveSource(config.archiveUrl, { endpoint: config.archiveS3Endpoint, region: config.archiveS3Region })
      pool = new VerifyPool({ workers: config.verifyWorkers })
      const fc = deps.fetchCommits()
      const fb = deps.fetchBlocks()
      const spotChecker = config.archiveSpotChecksPerEpoch > 0 && fc !== undefined
        ? new SpotChecker(fc, deps.connectedPeers, log, { perEpoch: config.archiveSpotChecksPerEpoch, peers: config.archiveSpotCheckPeers, timeoutMs: Math.min(config.timeoutMs, 10_000) })
        : undefined
      sync = new ArchiveSync({
        store,
        executor,
        source,
        blockVerifier: new SignedBlockVerifier(pool, store.chainId),
        txVerifier: new TxVerifier(pool, store.chainId, store.genesis.genesis.embeddingDim),
        cacheDir: path.join(config.dataDir, 'archive-download'),
        log,
        spotChecker,
        combined: config.archiveCombined && fc !== undefined && fb !== undefined
          ? { peers: deps.connectedPeers, fetchCommits: fc, fetchBlocks: fb, maxBlocksPerFetch: config.maxBlocksPerFetch }
          : undefined
      }, {
        concurrency: config.archiveDownloadConcurrency,
        maxInflightBytes: config.archiveMaxInflightBytes,
        requestTimeoutMs: config.archiveRequestTimeoutMs,
        executorQueue: config.syncedCommitBroadcastChannelCapacity
      })
      deps.setPhase('archive')
      const r = await sync.run(controller.signal)
      if (controller.signal.aborted) return r
      if (r.outcome === 'failed') log.warn('archive fast mode stopped at commit %d; commit sync goes on from peers (P2P) from commit %d', r.highestSynced, r.highestSynced + 1)
      return r
    } catch (err: any) {
      if (!controller.signal.aborted) log.error('archive fast mode: %s; commit sync goes on from peers (P2P)', err.message)
      return undefined
    } finally {
      source?.close?.()
      await pool?.close()
      if (!controller.signal.aborted) deps.resumeCommitSync()
    }
  }
  return {
    name: 'archive-sync',
    done,
    start: async () => {
      log.info('fast mode: syncing history from the archive %s first', config.archiveUrl)
      task = run()
      void task.then(resolveDone)
    },
    stop: async () => {
      controller.abort(new Error('archive sync stopping'))
      await task
    },
    status: () => {
      const p = sync?.stats
      if (p === undefined) return {}
      return { archiveSync: { url: config.archiveUrl, phase: p.phase, target: p.target, highestSynced: store.highestSynced, segments: p.segments, segmentsStored: p.segmentsStored, downloadedBytes: p.downloadedBytes, spotChecks: p.spotChecks, error: p.error, sources: sync?.combinedStats } }
    },
    healthy: () => true
  }
}
