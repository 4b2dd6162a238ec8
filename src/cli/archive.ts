/**
 * `soma-sync archive export | verify [source] | ls [source]`: archives of the chain's history (issue 14;
 * format in protocols/archive.proto and protocols/README.md, code in src/archive/).
 *
 * Wiring (src/cli/main.ts): the subcommand and source are positional arguments; call
 * `runArchiveCommand(positionals, config)` and print `archiveHelp()` for --help. Usage errors are
 * ConfigError (exit 2); a missing store, an unreadable or invalid archive throws a SomaError whose
 * message names what is wrong (exit 1).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { SomaConfig } from '../config.ts'
import { ARCHIVE_USAGE } from './archive-help.ts'
import { ChainStore } from '../store/chain-store.ts'
import { CommitExecutor } from '../executor/commit-executor.ts'
import { VerifyPool } from '../crypto/verify-pool.ts'
import { SignedBlockVerifier } from '../sync/block-verifier.ts'
import { TxVerifier } from '../sync/tx-verifier.ts'
import { ConfigError, StoreError } from '../errors.ts'
import { toHex } from '../crypto/hash.ts'
import { createLogger } from '../utils/logger.ts'
import { findGenesisFile, readGenesisFile } from '../node/genesis-file.ts'
import type { GenesisBundle } from '../chain/genesis.ts'
import { ArchiveWriter } from '../archive/writer.ts'
import { ArchiveSync } from '../archive/reader.ts'
import { uploadArchive } from '../archive/s3-upload.ts'
import { openArchiveSource } from '../archive/source.ts'
import { MANIFEST_NAME, parseManifest, type Compression } from '../archive/format.ts'

export { ARCHIVE_USAGE, ARCHIVE_DESCRIPTION, archiveHelp } from './archive-help.ts'

export interface ArchiveCommandIO { out: (line: string) => void }
const STDOUT: ArchiveCommandIO = { out: (line) => { process.stdout.write(line + '\n') } }

const SUBCOMMANDS = ['export', 'verify', 'ls']

/** Runs `soma-sync archive <args...>`; returns the exit code (errors are thrown). */
export async function runArchiveCommand (args: string[], config: SomaConfig, io: ArchiveCommandIO = STDOUT): Promise<number> {
  const [sub, arg, ...extra] = args
  if (sub === undefined) throw new ConfigError(`archive needs a subcommand: export, verify or ls (usage: ${ARCHIVE_USAGE})`)
  if (!SUBCOMMANDS.includes(sub)) throw new ConfigError(`unknown archive subcommand ${JSON.stringify(sub)} (export, verify, ls)`)
  if (extra.length > 0 || (sub === 'export' && arg !== undefined)) throw new ConfigError(`unexpected argument ${JSON.stringify(extra[0] ?? arg)} for \`archive ${sub}\` (usage: ${ARCHIVE_USAGE})`)
  if (sub === 'export') return await exportArchive(config, io)
  const source = arg ?? (config.archiveUrl !== '' ? config.archiveUrl : config.archiveDir)
  if (source === '') throw new ConfigError(`archive ${sub}: name the archive (a directory, http(s):// or s3:// URL), or set --archive-url or --archive-dir`)
  return sub === 'ls' ? await ls(source, config, io) : await verify(source, config, io)
}

async function exportArchive (config: SomaConfig, io: ArchiveCommandIO): Promise<number> {
  if (config.archiveDir === '') throw new ConfigError('archive export needs --archive-dir <directory> to write to')
  const chainDir = path.join(config.dataDir, 'chain')
  if (!existsSync(path.join(chainDir, 'CURRENT'))) throw new StoreError(`no soma-sync store in ${config.dataDir} (${chainDir} does not exist or holds no database)`)
  const store = await ChainStore.openDataDir(config.dataDir, { writeBufferSize: config.storeWriteBufferBytes, cacheSize: config.storeCacheBytes })
  try {
    const w = new ArchiveWriter(store, config.archiveDir, { segmentCommits: config.archiveSegmentCommits, compression: config.archiveCompression as Compression })
    const r = await w.writeClosedEpochs()
    const bytes = r.segments.reduce((s, x) => s + x.size, 0)
    io.out(`${config.archiveDir}: ${r.epochs} epochs added (${r.segments.length} segments, ${bytes} bytes); the archive holds commits 1..${r.highestCommit}`)
    if (r.highestCommit < store.highestSynced) io.out(`commits ${r.highestCommit + 1}..${store.highestSynced} are in an epoch that has not closed: archived once it closes`)
  } finally {
    await store.close()
  }
  if (config.archiveUploadUrl !== '') {
    const up = await uploadArchive(config.archiveDir, config.archiveUploadUrl, { endpoint: config.archiveS3Endpoint, region: config.archiveS3Region }, createLogger('archive', { level: config.logLevel }))
    io.out(`${config.archiveUploadUrl}: ${up.uploaded} objects put (${up.bytes} bytes), ${up.skipped} already there`)
  }
  return 0
}

async function ls (url: string, config: SomaConfig, io: ArchiveCommandIO): Promise<number> {
  const source = await openArchiveSource(url, { endpoint: config.archiveS3Endpoint, region: config.archiveS3Region })
  try {
    const m = parseManifest(await source.readAll(MANIFEST_NAME, { signal: AbortSignal.timeout(config.archiveRequestTimeoutMs), maxBytes: 64 * 1024 * 1024 }), source.describe(MANIFEST_NAME))
    const bytes = m.segments.reduce((s, x) => s + x.size, 0)
    io.out(`archive ${source.url}: chain ${m.chainId}, format version ${m.version}, ${m.compression} compression, ${m.segmentCommits} commits per segment`)
    io.out(`commits 1..${m.highestCommit} in ${m.epochs.length} epochs, ${m.segments.length} segments, ${bytes} bytes`)
    for (const s of m.segments) io.out(`  epoch ${String(s.epoch).padStart(5)}  commits ${s.firstCommit}..${s.lastCommit}${s.endsEpoch ? ' (end of epoch)' : ''}  ${s.size} bytes  ${s.name}`)
  } finally {
    source.close?.()
  }
  return 0
}

function genesisFor (config: SomaConfig): GenesisBundle | undefined {
  if (config.genesisFile !== '') return readGenesisFile(config.genesisFile)
  const f = findGenesisFile(config.dataDir)
  return f === undefined ? undefined : readGenesisFile(f)
}

async function verify (url: string, config: SomaConfig, io: ArchiveCommandIO): Promise<number> {
  let genesis = genesisFor(config)
  if (genesis === undefined && existsSync(path.join(config.dataDir, 'chain', 'CURRENT'))) {
    const s = await ChainStore.openDataDir(config.dataDir)
    genesis = s.genesis
    await s.close()
  }
  if (genesis === undefined) throw new ConfigError(`archive verify needs the chain's genesis: --genesis-file <file>, or a --data-dir with genesis.pb or a store`)
  const source = await openArchiveSource(url, { endpoint: config.archiveS3Endpoint, region: config.archiveS3Region })
  const scratch = mkdtempSync(path.join(tmpdir(), 'soma-archive-verify-'))
  const pool = new VerifyPool({ workers: config.verifyWorkers })
  const log = createLogger('archive', { level: config.logLevel })
  try {
    const store = await ChainStore.open(path.join(scratch, 'chain'), { genesis })
    try {
      const sync = new ArchiveSync({
        store,
        executor: new CommitExecutor(store, { maxBatchCommits: config.executionBatchCommits }),
        source,
        blockVerifier: new SignedBlockVerifier(pool, store.chainId),
        txVerifier: new TxVerifier(pool, store.chainId, genesis.genesis.embeddingDim),
        cacheDir: path.join(scratch, 'download'),
        log
      }, { concurrency: config.archiveDownloadConcurrency, maxInflightBytes: config.archiveMaxInflightBytes, requestTimeoutMs: config.archiveRequestTimeoutMs })
      const r = await sync.run(AbortSignal.timeout(24 * 3_600_000))
      if (r.outcome !== 'synced') throw r.error ?? new StoreError('archive verification failed')
      const root = await store.getStateRoot(r.highestExecuted)
      io.out(`${source.url}: OK, commits 1..${r.highestSynced} in ${sync.stats.segmentsStored} segments verified and executed; state root ${root === undefined ? '(none)' : toHex(root)}`)
    } finally {
      await store.close()
    }
  } finally {
    await pool.close()
    source.close?.()
    rmSync(scratch, { recursive: true, force: true })
  }
  return 0
}
