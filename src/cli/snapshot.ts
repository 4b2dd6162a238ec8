/**
 * `soma-sync snapshot create | list | inspect [commit] | verify [commit]`: state snapshots of the store
 * in `--data-dir` (seed 002; formats in protocols/snapshot.proto, code in src/snapshot/).
 *
 * Wiring (src/cli/main.ts): the subcommand and commit are positional arguments; call
 * `runSnapshotCommand(positionals, config)` and print `snapshotHelp()` for --help. Usage errors are
 * ConfigError (exit 2); a missing store or snapshot, or a snapshot that fails verification, throws a
 * SomaError whose message says what is wrong (exit 1).
 */
import { existsSync } from 'node:fs'
import path from 'node:path'
import { helpText, type SomaConfig } from '../config.ts'
import { ChainStore } from '../store/chain-store.ts'
import { ConfigError, StoreError } from '../errors.ts'
import { toHex } from '../crypto/hash.ts'
import { buildSnapshot, type SnapshotBuildResult, type SnapshotOptions } from '../snapshot/builder.ts'
import { SnapshotStore } from '../snapshot/snapshot-store.ts'
import { devnetCommitteeKeys, isDevnetGenesis, signManifest, verifyAttestation } from '../snapshot/attestation.ts'
import { verifyStoredSnapshot } from '../snapshot/verify.ts'
import { groupName } from '../snapshot/manifest.ts'
import type { ChunkInfo } from '../snapshot/chunk-format.ts'

export const SNAPSHOT_USAGE = 'soma-sync snapshot <create | list | inspect [commit] | verify [commit]> [options]'

export const SNAPSHOT_DESCRIPTION = [
  'State snapshots of the store in <data-dir>/chain (seed 002: chunked state, Cuckoo filter, attested manifest).',
  '  create           snapshot the highest executed commit (incrementally from the latest snapshot when',
  '                   possible); signed by the devnet committee when the store is a devnet chain of',
  '                   --devnet-seed, unattested otherwise; keeps the newest --snapshot-keep snapshots',
  '  list             the stored snapshots',
  '  inspect [commit] a snapshot\'s manifest, attestation and chunks by group (default: the latest)',
  '  verify [commit]  re-hash every chunk, check the filter, listing, checksums and attestation, and rebuild',
  '                   the state root from the chunks (default: the latest)'
].join('\n')

export function snapshotHelp (): string {
  return helpText('snapshot', SNAPSHOT_USAGE, SNAPSHOT_DESCRIPTION)
}

export interface SnapshotCommandIO {
  /** one line of output */
  out: (line: string) => void
}

const STDOUT: SnapshotCommandIO = { out: (line) => { process.stdout.write(line + '\n') } }

type Sub = (store: ChainStore, config: SomaConfig, io: SnapshotCommandIO, commit: number | undefined) => Promise<number>

const SUBCOMMANDS: Record<string, { takesCommit: boolean, run: Sub }> = {
  create: { takesCommit: false, run: create },
  list: { takesCommit: false, run: list },
  inspect: { takesCommit: true, run: inspect },
  verify: { takesCommit: true, run: verify }
}

/** Runs `soma-sync snapshot <args...>`; returns the exit code (errors are thrown). */
export async function runSnapshotCommand (args: string[], config: SomaConfig, io: SnapshotCommandIO = STDOUT): Promise<number> {
  const [sub, arg, ...extra] = args
  if (sub === undefined) throw new ConfigError(`snapshot needs a subcommand: create, list, inspect or verify (usage: ${SNAPSHOT_USAGE})`)
  const def = SUBCOMMANDS[sub]
  if (def === undefined || !Object.hasOwn(SUBCOMMANDS, sub)) throw new ConfigError(`unknown snapshot subcommand ${JSON.stringify(sub)} (create, list, inspect, verify)`)
  if (extra.length > 0 || (arg !== undefined && !def.takesCommit)) throw new ConfigError(`unexpected argument ${JSON.stringify(extra[0] ?? arg)} for \`snapshot ${sub}\` (usage: ${SNAPSHOT_USAGE})`)
  let commit: number | undefined
  if (arg !== undefined && arg !== 'latest') {
    if (!/^\d+$/.test(arg) || !Number.isSafeInteger(Number(arg))) throw new ConfigError(`snapshot ${sub}: ${JSON.stringify(arg)} is not a commit index`)
    commit = Number(arg)
  }
  const chainDir = path.join(config.dataDir, 'chain')
  if (!existsSync(path.join(chainDir, 'CURRENT'))) {
    throw new StoreError(`no soma-sync store in ${config.dataDir} (${chainDir} does not exist or holds no database); create one with \`soma-sync devnet\` or \`soma-sync start\``)
  }
  const store = await ChainStore.openDataDir(config.dataDir, { writeBufferSize: config.storeWriteBufferBytes, cacheSize: config.storeCacheBytes })
  try {
    return await def.run(store, config, io, commit)
  } finally {
    await store.close()
  }
}

/** The snapshot to inspect or verify: `commit`, or the latest. */
async function pick (store: ChainStore, commit: number | undefined): Promise<number> {
  const stored = await new SnapshotStore(store).list()
  if (stored.length === 0) throw new StoreError(`no snapshot is stored in ${store.dir}; make one with \`soma-sync snapshot create\``)
  if (commit === undefined) return stored[stored.length - 1]
  if (!stored.includes(commit)) throw new StoreError(`no snapshot of commit ${commit} in ${store.dir} (stored: ${stored.join(', ')})`)
  return commit
}

function mib (bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(2)} MiB` : bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} B`
}

function table (rows: string[][]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map(r => r[c].length)))
  return rows.map(r => r.map((cell, c) => c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])).join('  ').trimEnd())
}

async function create (store: ChainStore, config: SomaConfig, io: SnapshotCommandIO): Promise<number> {
  const commit = store.highestExecuted
  if (commit === 0) throw new StoreError(`the store in ${store.dir} has executed no commit yet: nothing to snapshot`)
  const snaps = new SnapshotStore(store)
  if (await snaps.has(commit)) {
    io.out(`a snapshot of commit ${commit} (the highest executed) already exists; nothing to do`)
    return 0
  }
  let sign: SnapshotOptions['sign']
  let signer = 'unattested: the store is not a devnet chain of --devnet-seed, whose committee keys this node would hold'
  if (isDevnetGenesis(store.genesis.genesis, config.devnetSeed)) {
    sign = async (bytes, manifest) => {
      const committee = await store.getCommittee(manifest.epoch)
      if (committee === undefined) throw new StoreError(`${store.dir}: no committee of epoch ${manifest.epoch}`)
      const keys = devnetCommitteeKeys(config.devnetSeed, committee.committee)
      if (keys === undefined) throw new StoreError(`the committee of epoch ${manifest.epoch} is not made of devnet keys of seed ${JSON.stringify(config.devnetSeed)}`)
      signer = `signed by the ${keys.length} members of the devnet committee of epoch ${manifest.epoch}`
      return signManifest(bytes, committee.committee, keys)
    }
  }
  const r = await buildSnapshot(store, {
    targetChunkBytes: config.snapshotTargetChunkBytes,
    hotEpochs: config.snapshotHotEpochs,
    embeddingWindowCommits: config.snapshotEmbeddingWindowCommits,
    keep: config.snapshotKeep,
    sign
  })
  printCreated(r, signer, io)
  return 0
}

function printCreated (r: SnapshotBuildResult, signer: string, io: SnapshotCommandIO): void {
  const s = r.stats
  const m = r.manifest
  io.out(`created the snapshot of commit ${m.commitIndex} (epoch ${m.epoch}) in ${s.ms.toFixed(0)} ms`)
  io.out(`  ${s.mode === 'full' ? `full build (${s.fullReason})` : `incremental from the snapshot of commit ${s.baseCommit}: ${s.changedAccounts} accounts and ${s.changedEmbeddings} embeddings changed, ${s.agedAccounts} accounts aged from hot to cold`}`)
  io.out(`  ${s.chunks} chunks, ${mib(s.totalBytes)}; ${s.chunksEncoded} chunks encoded (${mib(s.bytesEncoded)}), ${s.chunksAdded} new, ${s.chunksRemoved} dropped`)
  io.out(`  filter: 2^${m.filter.log2Buckets} buckets, ${m.filter.fingerprintBits}-bit fingerprints, ${s.filterRebuilt ? `rebuilt (${s.filterReason})` : 'updated in place'}`)
  io.out(`  state root ${toHex(m.stateRoot)}`)
  io.out(`  final checksum ${toHex(m.finalChecksum)}`)
  io.out(`  ${signer}`)
  if (s.prunedSnapshots.length > 0) io.out(`  pruned the snapshots of commits ${s.prunedSnapshots.join(', ')} (${s.sweptChunks} chunks no kept snapshot uses)`)
}

async function list (store: ChainStore, _config: SomaConfig, io: SnapshotCommandIO): Promise<number> {
  const snaps = new SnapshotStore(store)
  const commits = await snaps.list()
  if (commits.length === 0) {
    io.out(`no snapshots in ${store.dir}`)
    return 0
  }
  const rows = [['commit', 'epoch', 'chunks', 'size', 'attested stake', 'state root', 'final checksum']]
  for (const c of commits) {
    const s = (await snaps.get(c))!
    const m = s.manifest
    let attested = 'unsigned'
    if (s.attestation.signatures.length > 0) {
      const committee = await store.getCommittee(m.epoch)
      if (committee === undefined) attested = `${s.attestation.signatures.length} sigs, no committee`
      else {
        try {
          const check = verifyAttestation(s.attestation, committee, { chainId: store.chainId })
          attested = `${check.stake}/${committee.totalStake}`
        } catch (err: any) {
          attested = `INVALID: ${err.message}`
        }
      }
    }
    rows.push([String(c), String(m.epoch), String(m.chunkCount), mib(m.totalBytes), attested, toHex(m.stateRoot).slice(0, 16), toHex(m.finalChecksum).slice(0, 16)])
  }
  for (const line of table(rows)) io.out(line)
  return 0
}

async function inspect (store: ChainStore, _config: SomaConfig, io: SnapshotCommandIO, commit: number | undefined): Promise<number> {
  const c = await pick(store, commit)
  const snaps = new SnapshotStore(store)
  const s = (await snaps.get(c))!
  const m = s.manifest
  const ch = m.chunking
  io.out(`snapshot of commit ${m.commitIndex}`)
  io.out(`  chain id          ${toHex(m.chainId)}`)
  io.out(`  epoch             ${m.epoch}`)
  io.out(`  state root        ${toHex(m.stateRoot)}`)
  io.out(`  chunks            ${m.chunkCount} (${mib(m.totalBytes)}, ${m.totalBytes} bytes)`)
  io.out(`  final checksum    ${toHex(m.finalChecksum)}`)
  io.out(`  multiset hash     ${toHex(m.multisetHash)}`)
  io.out(`  listing hash      ${toHex(m.listingHash)}`)
  io.out(`  filter            2^${m.filter.log2Buckets} buckets × ${m.filter.bucketSize}, ${m.filter.fingerprintBits}-bit fingerprints, ${m.filter.count} items; hash ${toHex(m.filterHash)}`)
  io.out(`  chunking          target ${ch.targetChunkBytes} B, max ${ch.maxChunkBytes} B, hot epochs ${ch.hotEpochs}, embedding window ${ch.embeddingWindowCommits} commits, boundary moduli ${ch.accountBoundaryModulus} (accounts) / ${ch.embeddingBoundaryModulus} (embeddings)`)
  io.out(`  format version    ${m.formatVersion}`)
  const committee = await store.getCommittee(m.epoch)
  if (s.attestation.signatures.length === 0) {
    io.out('  attestation       none (unsigned)')
  } else {
    let verdict: string
    try {
      verdict = committee === undefined ? 'committee not stored' : `valid: ${verifyAttestation(s.attestation, committee, { chainId: store.chainId }).stake} of ${committee.totalStake} stake (2f+1 = ${committee.quorumThreshold})`
    } catch (err: any) {
      verdict = `INVALID: ${err.message}`
    }
    io.out(`  attestation       ${s.attestation.signatures.length} signatures by authorities ${s.attestation.signatures.map(x => x.authority).join(', ')}; ${verdict}`)
  }
  const listing = await snaps.getListing(c)
  const groups = new Map<string, ChunkInfo[]>()
  for (const i of listing) {
    const g = groupName(i.kind, i.group)
    if (!groups.has(g)) groups.set(g, [])
    groups.get(g)!.push(i)
  }
  io.out('  chunks by group:')
  const rows = [['group', 'chunks', 'entries', 'bytes', 'min', 'avg', 'max']]
  for (const [g, infos] of groups) {
    const sizes = infos.map(i => i.size)
    const total = sizes.reduce((a, b) => a + b, 0)
    rows.push([g, String(infos.length), String(infos.reduce((a, i) => a + i.entries, 0)), mib(total), mib(Math.min(...sizes)), mib(Math.round(total / infos.length)), mib(Math.max(...sizes))])
  }
  for (const line of table(rows)) io.out(`    ${line}`)
  return 0
}

async function verify (store: ChainStore, _config: SomaConfig, io: SnapshotCommandIO, commit: number | undefined): Promise<number> {
  const c = await pick(store, commit)
  const t0 = performance.now()
  const r = await verifyStoredSnapshot(store, c)
  const m = r.manifest
  io.out(`snapshot of commit ${c} (epoch ${m.epoch}): OK`)
  io.out(r.attestation === null ? '  attestation: none (unsigned snapshot)' : `  attestation: ${r.attestation.signers.length} valid signatures, ${r.attestation.stake} stake (>= 2f+1)`)
  io.out(`  filter hash, listing hash, chunk count, total bytes, final checksum and multiset hash match the manifest`)
  io.out(`  ${r.chunks} chunks (${mib(r.bytes)}) re-hashed, found in the filter and decoded`)
  io.out(`  state rebuilt from ${r.accounts} accounts and ${r.embeddings} embeddings has the manifest's state root ${toHex(m.stateRoot)}${r.matchesStoreRoot === true ? ', the store\'s root of that commit' : ''}`)
  io.out(`  verified in ${(performance.now() - t0).toFixed(0)} ms`)
  return 0
}
