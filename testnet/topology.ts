/**
 * The testnet topology: the one definition both docker-compose.yml (rendered by scripts/gen-compose.ts,
 * a test fails when the committed file differs) and the namespace testnet (testnet/driver.ts,
 * scripts/testnet) are made from, so they cannot drift.
 *
 * - `devnet`: the producer (`soma-sync devnet`), 4 simulated validators, attested snapshots at every
 *   epoch end;
 * - `full1`..`full3`: full nodes that commit-sync from genesis (`soma-sync start`);
 * - `late`: a node that joins once the producer has passed `LATE_JOIN_AFTER_COMMIT` (two epochs, so
 *   snapshots exist) and snapshot-syncs (`lateJoinerArgs`, see SNAPSHOT_SYNC below).
 * - `archive`: an archival node (`--sync-mode archival`, role 'archival', src/sync/archival.ts) that
 *   joins at the same commit as the late joiner and commit-syncs every commit from genesis, keeps the full
 *   history and announces itself as an archive of the chain (`archivalNodeArgs`).
 *
 * - `bucket`: a fresh archival node that joins once the archive holds commit `BUCKET_JOIN_AFTER_ARCHIVE_COMMIT`
 *   and fast-syncs the history from it (`--archive-url`, src/archive/reader.ts), with P2P spot checks,
 *   then commit-syncs the rest from peers. The archival node writes its closed epochs as archive
 *   segments (`--archive-dir`), serves them over HTTP (`--archive-http-port`, port `ARCHIVE_HTTP_PORT`)
 *   and, where the placement has a bucket (docker-compose: the `s3` service, s3rver), uploads them
 *   there (`--archive-upload-url`); the bucket node reads the bucket when there is one, else the
 *   archival node's HTTP endpoint (the namespace testnet).
 *
 * Every node's peer key derives from `SOMA_TESTNET_PEER_KEY_SEED` (testnet/keys.ts), so entrypoints
 * name peer ids up front; full nodes write the devnet's (deterministic) genesis themselves
 * (testnet/node-init.ts). Nothing is shared between nodes but the network.
 */
import { OPTIONS, envName, type SomaConfig } from '../src/config.ts'
import { testnetPeerId } from './keys.ts'

// ---------------------------------------------------------------------------------------------
// Snapshot sync switch. `soma-sync start --sync-mode auto|snapshot|commits` comes with snapshot sync
// (src/snapshot/**); auto, its default, snapshot-syncs an empty data dir. So, once soma-sync has the
// flag, the full nodes get `--sync-mode commits` (they commit-sync from genesis, whatever the default)
// and the late joiner `--sync-mode snapshot`; before, nobody gets a --sync-mode (it would be refused)
// and the late joiner commit-syncs like the others.
//   SNAPSHOT_SYNC = 'auto'  on exactly when soma-sync has --sync-mode (docker-compose.yml is re-rendered
//                           by `node scripts/gen-compose.ts`; a test fails while it is stale)
//   true / false            force it (false: the late joiner gets `--sync-mode commits` too)
// With it on, test/e2e/testnet.test.ts also requires the late joiner's /status to show it restored a
// snapshot (`snapshotSyncEvidence` in testnet/driver.ts). SOMA_TESTNET_SNAPSHOT_SYNC=1/0 overrides it for
// the namespace testnet only.
// ---------------------------------------------------------------------------------------------
export const SNAPSHOT_SYNC: boolean | 'auto' = 'auto'

/** Whether this soma-sync has `start --sync-mode` (snapshot sync). */
export const HAS_SYNC_MODE: boolean = OPTIONS.some(o => (o.key as string) === 'syncMode')

/** Whether the late joiner snapshot-syncs, for `opts` (default SNAPSHOT_SYNC). */
export function snapshotSyncOn (opts: TopologyOptions = {}): boolean {
  const v = opts.snapshotSync ?? SNAPSHOT_SYNC
  return v === 'auto' ? HAS_SYNC_MODE : v
}

/** The late joiner's extra `start` arguments when it snapshot-syncs. */
export const SNAPSHOT_SYNC_ARGS: readonly string[] = ['--sync-mode', 'snapshot']
/** The extra `start` arguments of a node that must commit-sync from genesis (when --sync-mode exists). */
export const COMMIT_SYNC_ARGS: readonly string[] = ['--sync-mode', 'commits']

/** libp2p TCP port of every node (in its container / namespace). */
export const P2P_PORT = 7700
/** status/metrics HTTP port of every node (in its container / namespace). */
export const STATUS_PORT = 7780
/** The late joiner starts once the producer has executed this commit (two epochs of 50: snapshots exist). */
export const LATE_JOIN_AFTER_COMMIT = 110

/** Genesis parameters of the devnet chain (full nodes derive the same genesis.pb from them). */
export const CHAIN: Pick<SomaConfig, 'devnetSeed' | 'validators' | 'accounts' | 'initialBalance' | 'embeddingDim'> = {
  devnetSeed: 'soma-testnet',
  validators: 4,
  accounts: 1000,
  initialBalance: 1_000_000_000,
  embeddingDim: 16
}

/** Producer settings (SOMA_* environment values). */
export const PRODUCER_ENV: Readonly<Record<string, string>> = {
  [envName('roundIntervalMs')]: '100ms',
  [envName('txsPerBlock')]: '5',
  [envName('epochLength')]: '50'
}

/** Settings of every node (SOMA_* environment values). */
export const COMMON_ENV: Readonly<Record<string, string>> = {
  [envName('logLevel')]: 'info',
  [envName('verifyWorkers')]: '1'
}

export type Role = 'devnet' | 'full' | 'late' | 'archival' | 'bucket'

/** Port of the archival node's archive HTTP endpoint (--archive-http-port), in its container / namespace. */
export const ARCHIVE_HTTP_PORT = 7790
/** Segments are cut every this many commits (and at epoch ends): several per epoch, so a fast sync has steps. */
export const ARCHIVE_SEGMENT_COMMITS = 10
/** The bucket node joins once the archive (bucket or HTTP endpoint) holds this commit (three epochs). */
export const BUCKET_JOIN_AFTER_ARCHIVE_COMMIT = 150

/**
 * An S3-compatible bucket the archival node uploads its archive to, and the bucket node reads:
 * docker-compose's `s3` service (s3rver, testnet/s3-server.ts). s3rver accepts its own fixed
 * credentials only (S3RVER / S3RVER): these are no secret.
 */
export interface TestnetBucket {
  /** the endpoint URL as the nodes reach it */
  endpoint: string
  bucket: string
  prefix: string
  accessKeyId: string
  secretAccessKey: string
}

export interface TestnetNode {
  name: string
  role: Role
  /** peers it joins through, by name */
  entrypoints: readonly string[]
  /** host port docker-compose publishes its status port on (127.0.0.1) */
  hostStatusPort: number
  /** soma-sync arguments after the command */
  args: readonly string[]
  /** extra SOMA_* environment of this node */
  env: Readonly<Record<string, string>>
  /** starts once the producer has executed this commit */
  joinAfterCommit?: number
  /** fast-syncs from this node's archive (its bucket upload, or its HTTP endpoint) with --archive-url */
  archiveFrom?: string
  /** starts once that archive holds this commit */
  joinAfterArchiveCommit?: number
}

export interface TopologyOptions {
  /** the late joiner snapshot-syncs. @default SNAPSHOT_SYNC */
  snapshotSync?: boolean | 'auto'
}

/** The late joiner's extra `start` arguments: the one place its sync mode is chosen. */
export function lateJoinerArgs (opts: TopologyOptions = {}): readonly string[] {
  if (snapshotSyncOn(opts)) return SNAPSHOT_SYNC_ARGS
  return HAS_SYNC_MODE ? COMMIT_SYNC_ARGS : []
}

/** A full node's extra `start` arguments: it commit-syncs from genesis. */
export function fullNodeArgs (): readonly string[] {
  return HAS_SYNC_MODE ? COMMIT_SYNC_ARGS : []
}

/** The extra `start` arguments of the archival node (it syncs every commit from genesis and keeps them). */
export const ARCHIVAL_SYNC_ARGS: readonly string[] = ['--sync-mode', 'archival']

/** Whether this soma-sync has archival mode (`start --sync-mode archival`). */
export const HAS_ARCHIVAL_MODE: boolean = OPTIONS.some(o => (o.key as string) === 'syncMode' && (o.choices ?? []).includes('archival'))

/** The archival node's extra `start` arguments (without archival mode it commit-syncs like a full node). */
export function archivalNodeArgs (): readonly string[] {
  return HAS_ARCHIVAL_MODE ? ARCHIVAL_SYNC_ARGS : fullNodeArgs()
}

/** The nodes of the testnet, producer first. */
export function testnetNodes (opts: TopologyOptions = {}): TestnetNode[] {
  return [
    { name: 'devnet', role: 'devnet', entrypoints: [], hostStatusPort: 7780, args: [], env: {} },
    { name: 'full1', role: 'full', entrypoints: ['devnet'], hostStatusPort: 7781, args: fullNodeArgs(), env: {} },
    { name: 'full2', role: 'full', entrypoints: ['devnet', 'full1'], hostStatusPort: 7782, args: fullNodeArgs(), env: {} },
    { name: 'full3', role: 'full', entrypoints: ['devnet', 'full1'], hostStatusPort: 7783, args: fullNodeArgs(), env: {} },
    { name: 'late', role: 'late', entrypoints: ['devnet', 'full1', 'full2', 'full3'], hostStatusPort: 7784, args: lateJoinerArgs(opts), env: {}, joinAfterCommit: LATE_JOIN_AFTER_COMMIT },
    { name: 'archive', role: 'archival', entrypoints: ['devnet', 'full1'], hostStatusPort: 7785, args: archivalNodeArgs(), env: {}, joinAfterCommit: LATE_JOIN_AFTER_COMMIT },
    { name: 'bucket', role: 'bucket', entrypoints: ['devnet', 'full1', 'full2'], hostStatusPort: 7786, args: archivalNodeArgs(), env: {}, archiveFrom: 'archive', joinAfterArchiveCommit: BUCKET_JOIN_AFTER_ARCHIVE_COMMIT }
  ]
}

/** The seed a node's peer key derives from. */
export function peerKeySeed (name: string): string {
  return `soma-testnet/${name}`
}

/** Peer ids of the nodes, by name. */
export async function peerIds (nodes: readonly TestnetNode[]): Promise<Record<string, string>> {
  const ids: Record<string, string> = {}
  for (const n of nodes) ids[n.name] = await testnetPeerId(peerKeySeed(n.name))
  return ids
}

/** Where the nodes run: addresses and directories, docker-compose's or the namespace testnet's. */
export interface Placement {
  /** multiaddr prefix other nodes reach `name` at, e.g. `/dns4/full1` or `/ip4/10.77.0.11` */
  addr: (name: string) => string
  /** its libp2p TCP port as the others dial it */
  p2pPort: (name: string) => number
  /** libp2p listen multiaddrs */
  listen: (name: string) => string[]
  /** multiaddrs announced instead of the listen ones (none: the listen ones) */
  announce: (name: string) => string[]
  /** address the status server binds */
  statusHost: (name: string) => string
  statusPort: (name: string) => number
  /** the producer's /status URL as seen from `name` (the late joiner waits on it) */
  statusUrl: (from: string, of: string) => string
  dataDir: (name: string) => string
  /** port of `name`'s archive HTTP endpoint (--archive-http-port) */
  archiveHttpPort: (name: string) => number
  /** URL of `of`'s archive HTTP endpoint as seen from `from` */
  archiveHttpUrl: (from: string, of: string) => string
  /** the S3-compatible bucket archives are uploaded to and read from (none: read over HTTP) */
  bucket?: TestnetBucket
}

/** Where archival node `name` writes its archive. */
export function archiveDirOf (placement: Placement, name: string): string {
  return `${placement.dataDir(name)}/archive`
}

/** The s3:// URL of `name`'s archive in a bucket. */
export function bucketUrl (bucket: TestnetBucket, name: string): string {
  return `s3://${bucket.bucket}/${bucket.prefix}/${name}`
}

/** How to run one node: `node testnet/node-init.ts ...command` with `env`. */
export interface LaunchSpec {
  name: string
  role: Role
  /** soma-sync command and arguments */
  command: string[]
  /** the complete SOMA_* / SOMA_TESTNET_* environment of the node, in a stable order */
  env: Record<string, string>
}

/** The launch specs of `nodes` under a placement. */
export async function launchSpecs (nodes: readonly TestnetNode[], placement: Placement): Promise<LaunchSpec[]> {
  const ids = await peerIds(nodes)
  const byName = new Map(nodes.map(n => [n.name, n]))
  const producer = nodes.find(n => n.role === 'devnet')
  return nodes.map(n => {
    for (const e of n.entrypoints) if (!byName.has(e)) throw new Error(`${n.name}: entrypoint ${e} is not a node of the topology`)
    const env: Record<string, string> = {
      SOMA_TESTNET_PEER_KEY_SEED: peerKeySeed(n.name),
      [envName('dataDir')]: placement.dataDir(n.name),
      [envName('listen')]: placement.listen(n.name).join(','),
      ...(placement.announce(n.name).length > 0 ? { [envName('announce')]: placement.announce(n.name).join(',') } : {}),
      ...(n.entrypoints.length > 0 ? { [envName('entrypoints')]: n.entrypoints.map(e => `${placement.addr(e)}/tcp/${placement.p2pPort(e)}/p2p/${ids[e]}`).join(',') } : {}),
      [envName('statusHost')]: placement.statusHost(n.name),
      [envName('statusPort')]: String(placement.statusPort(n.name)),
      ...COMMON_ENV,
      // the devnet's genesis parameters: the producer makes its chain from them, the others the same genesis.pb
      [envName('devnetSeed')]: CHAIN.devnetSeed,
      [envName('validators')]: String(CHAIN.validators),
      [envName('accounts')]: String(CHAIN.accounts),
      [envName('initialBalance')]: String(CHAIN.initialBalance),
      [envName('embeddingDim')]: String(CHAIN.embeddingDim)
    }
    if (n.role === 'devnet') Object.assign(env, PRODUCER_ENV)
    else env.SOMA_TESTNET_MAKE_GENESIS = '1'
    if (n.joinAfterCommit !== undefined && producer !== undefined) {
      env.SOMA_TESTNET_JOIN_STATUS_URL = placement.statusUrl(n.name, producer.name)
      env.SOMA_TESTNET_JOIN_AFTER_COMMIT = String(n.joinAfterCommit)
    }
    if (n.role === 'archival') {
      // it writes every closed epoch as archive segments, serves them over HTTP and uploads them
      env[envName('archiveDir')] = archiveDirOf(placement, n.name)
      env[envName('archiveSegmentCommits')] = String(ARCHIVE_SEGMENT_COMMITS)
      env[envName('archiveHttpPort')] = String(placement.archiveHttpPort(n.name))
      if (placement.bucket !== undefined) {
        Object.assign(env, bucketEnv(placement.bucket))
        env[envName('archiveUploadUrl')] = bucketUrl(placement.bucket, n.name)
      }
    }
    if (n.archiveFrom !== undefined) {
      if (!byName.has(n.archiveFrom)) throw new Error(`${n.name}: archive source ${n.archiveFrom} is not a node of the topology`)
      const url = placement.bucket !== undefined ? bucketUrl(placement.bucket, n.archiveFrom) : placement.archiveHttpUrl(n.name, n.archiveFrom)
      if (placement.bucket !== undefined) Object.assign(env, bucketEnv(placement.bucket))
      env[envName('archiveUrl')] = url
      if (n.joinAfterArchiveCommit !== undefined) {
        env.SOMA_TESTNET_JOIN_ARCHIVE_URL = url
        env.SOMA_TESTNET_JOIN_ARCHIVE_COMMIT = String(n.joinAfterArchiveCommit)
      }
    }
    Object.assign(env, n.env)
    return { name: n.name, role: n.role, command: [n.role === 'devnet' ? 'devnet' : 'start', ...n.args], env }
  })
}

/** The environment that points a node at a bucket: the endpoint and s3rver's credentials. */
function bucketEnv (bucket: TestnetBucket): Record<string, string> {
  return {
    [envName('archiveS3Endpoint')]: bucket.endpoint,
    AWS_ACCESS_KEY_ID: bucket.accessKeyId,
    AWS_SECRET_ACCESS_KEY: bucket.secretAccessKey
  }
}
