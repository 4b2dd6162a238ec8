/**
 * The one config object: every limit, timeout and setting soma-sync has, with its default, its type,
 * its documentation, the CLI flag and the SOMA_* environment variable that set it. CLI help text and
 * README's config table are derived from OPTIONS (`npm run docs` rewrites the README table).
 *
 * Precedence, lowest to highest: defaults < JSON config file (--config) < SOMA_* environment < flags.
 */
import { readFileSync } from 'node:fs'
import { ConfigError } from './errors.ts'

export type OptionType = 'string' | 'int' | 'bool' | 'list' | 'duration' | 'bytes' | 'choice'

export type Command = 'start' | 'devnet' | 'keygen' | 'snapshot' | 'demo' | 'archive' | 'status'

export interface OptionSpec {
  /** key in SomaConfig */
  key: keyof SomaConfig
  type: OptionType
  doc: string
  group: 'node' | 'devnet' | 'sync' | 'snapshot' | 'archival' | 'archive'
  /** commands that use it */
  commands: readonly Command[]
  min?: number
  max?: number
  choices?: readonly string[]
}

export interface SomaConfig {
  // ---- node
  dataDir: string
  listen: string[]
  announce: string[]
  entrypoints: string[]
  genesisFile: string
  statusHost: string
  statusPort: number
  logLevel: string
  logFormat: string
  logFile: string
  progressIntervalMs: number
  exitOnFatal: boolean
  fatalRetryMs: number
  healthNoPeersMs: number
  healthStallMs: number
  verifyWorkers: number
  dhtEnabled: boolean
  maxConnections: number
  /** a connection whose liveness ping (libp2p's connection monitor, one every pingTimeoutMs + 1 s) is unanswered this long is closed */
  pingTimeoutMs: number
  /** new inbound connections accepted per second from one IP address (libp2p's inboundConnectionThreshold) */
  inboundConnectionRate: number
  storeWriteBufferBytes: number
  storeCacheBytes: number
  // ---- devnet producer
  devnetSeed: string
  validators: number
  accounts: number
  initialBalance: number
  embeddingDim: number
  roundIntervalMs: number
  txsPerBlock: number
  embeddingEvery: number
  epochLength: number
  maxCommits: number
  // ---- commit sync (seed 000 table + ours)
  mailboxCapacity: number
  syncedCommitBroadcastChannelCapacity: number
  executionBatchCommits: number
  waitIntervalWhenNoPeerToSyncContentMs: number
  timeoutMs: number
  commitSyncBatchSize: number
  maxBlocksPerFetch: number
  maxFetchResponseBytes: number
  maxTotalFetchedBytes: number
  commitSummaryDownloadConcurrency: number
  tickIntervalMs: number
  blockFetchStaggerMs: number
  syncRangesInFlight: number
  peerHeightQueryIntervalMs: number
  pushFanout: number
  handlerTimeoutMs: number
  inboundRequestsPerSecond: number
  maxInboundStreams: number
  maxOutboundStreams: number
  peerBanMs: number
  syncedLagCommits: number
  syncedLagMs: number
  servePeerBytesPerSecond: number
  servePeerBurstBytes: number
  serveTotalBytesPerSecond: number
  serveTotalBurstBytes: number
  serveRequestBytes: number
  serveMaxInflightBytes: number
  // ---- snapshots (seed 002)
  snapshotTargetChunkBytes: number
  snapshotHotEpochs: number
  snapshotEmbeddingWindowCommits: number
  snapshotKeep: number
  snapshotEvery: number
  // ---- snapshot discovery (src/snapshot/discovery.ts)
  snapshotAnnounceIntervalMs: number
  minSnapshotPeers: number
  snapshotExchangeMaxSnapshots: number
  snapshotExchangeMaxProviders: number
  snapshotExchangeIntervalMs: number
  snapshotExchangeMaxDials: number
  // ---- snapshot sync (seed 002, "Syncing Using Snapshots"; src/snapshot/sync/)
  syncMode: string
  snapshotMaxRequestsPerPeer: number
  snapshotMaxChunksPerRequest: number
  snapshotChunkResponseBytes: number
  snapshotMaxInflightBytes: number
  snapshotListingPageRows: number
  snapshotMaxFilterBytes: number
  snapshotWaitForPeers: number
  snapshotPeerWaitMs: number
  snapshotFindTimeoutMs: number
  snapshotChunkRequestsPerSecond: number
  snapshotStallTimeoutMs: number
  snapshotWaitReminderMs: number
  snapshotAbandon: boolean
  // ---- archival mode (src/sync/archival.ts, archival-discovery.ts)
  archivalAnnounceIntervalMs: number
  // ---- archives (issue 14; src/archive/)
  archiveDir: string
  archiveSegmentCommits: number
  archiveCompression: string
  archiveHttpPort: number
  archiveUploadUrl: string
  archiveS3Endpoint: string
  archiveS3Region: string
  archiveUrl: string
  archiveDownloadConcurrency: number
  archiveMaxInflightBytes: number
  archiveRequestTimeoutMs: number
  archiveSpotChecksPerEpoch: number
  archiveSpotCheckPeers: number
  archiveCombined: boolean
}

const ALL: readonly Command[] = ['start', 'devnet', 'demo']
const SYNC: readonly Command[] = ['start', 'devnet', 'demo']
const DEVNET: readonly Command[] = ['devnet', 'demo']
const SNAPSHOT: readonly Command[] = ['snapshot', 'devnet', 'demo']

export const DEFAULTS: Readonly<SomaConfig> = Object.freeze({
  dataDir: './data',
  listen: ['/ip4/127.0.0.1/tcp/7700'],
  announce: [],
  entrypoints: [],
  genesisFile: '',
  statusHost: '127.0.0.1',
  statusPort: 7780,
  logLevel: 'info',
  logFormat: 'text',
  logFile: '',
  progressIntervalMs: 10_000,
  exitOnFatal: true,
  fatalRetryMs: 5000,
  healthNoPeersMs: 60_000,
  healthStallMs: 120_000,
  verifyWorkers: 2,
  dhtEnabled: true,
  maxConnections: 100,
  pingTimeoutMs: 60_000,
  inboundConnectionRate: 5,
  storeWriteBufferBytes: 64 * 1024 * 1024,
  storeCacheBytes: 32 * 1024 * 1024,

  devnetSeed: 'soma-devnet',
  validators: 4,
  accounts: 1000,
  initialBalance: 1_000_000_000,
  embeddingDim: 16,
  roundIntervalMs: 200,
  txsPerBlock: 10,
  embeddingEvery: 5,
  epochLength: 50,
  maxCommits: 0,

  mailboxCapacity: 50,
  syncedCommitBroadcastChannelCapacity: 50,
  executionBatchCommits: 50,
  waitIntervalWhenNoPeerToSyncContentMs: 1000,
  timeoutMs: 30_000,
  commitSyncBatchSize: 100,
  maxBlocksPerFetch: 1000,
  maxFetchResponseBytes: 4 * 1024 * 1024,
  maxTotalFetchedBytes: 128 * 1024 * 1024,
  commitSummaryDownloadConcurrency: 400,
  tickIntervalMs: 100,
  blockFetchStaggerMs: 200,
  syncRangesInFlight: 2,
  peerHeightQueryIntervalMs: 5000,
  pushFanout: 8,
  handlerTimeoutMs: 30_000,
  inboundRequestsPerSecond: 50,
  maxInboundStreams: 32,
  maxOutboundStreams: 64,
  peerBanMs: 10 * 60_000,
  syncedLagCommits: 10,
  syncedLagMs: 10_000,
  servePeerBytesPerSecond: 128 * 1024 * 1024,
  servePeerBurstBytes: 32 * 1024 * 1024,
  serveTotalBytesPerSecond: 256 * 1024 * 1024,
  serveTotalBurstBytes: 64 * 1024 * 1024,
  serveRequestBytes: 4096,
  serveMaxInflightBytes: 64 * 1024 * 1024,

  snapshotTargetChunkBytes: 1024 * 1024,
  snapshotHotEpochs: 2,
  snapshotEmbeddingWindowCommits: 1000,
  snapshotKeep: 3,
  snapshotEvery: 0,
  snapshotAnnounceIntervalMs: 30_000,
  minSnapshotPeers: 1,
  snapshotExchangeMaxSnapshots: 8,
  snapshotExchangeMaxProviders: 16,
  snapshotExchangeIntervalMs: 10_000,
  snapshotExchangeMaxDials: 8,

  syncMode: 'auto',
  snapshotMaxRequestsPerPeer: 8,
  snapshotMaxChunksPerRequest: 1024,
  snapshotChunkResponseBytes: 4 * 1024 * 1024,
  snapshotMaxInflightBytes: 64 * 1024 * 1024,
  snapshotListingPageRows: 8192,
  snapshotMaxFilterBytes: 128 * 1024 * 1024,
  snapshotWaitForPeers: 1,
  snapshotPeerWaitMs: 3000,
  snapshotFindTimeoutMs: 10_000,
  snapshotChunkRequestsPerSecond: 200,
  snapshotStallTimeoutMs: 60_000,
  snapshotWaitReminderMs: 60_000,
  snapshotAbandon: false,

  archivalAnnounceIntervalMs: 30_000,

  archiveDir: '',
  archiveSegmentCommits: 1000,
  archiveCompression: 'none',
  archiveHttpPort: 0,
  archiveUploadUrl: '',
  archiveS3Endpoint: '',
  archiveS3Region: 'us-east-1',
  archiveUrl: '',
  archiveDownloadConcurrency: 4,
  archiveMaxInflightBytes: 256 * 1024 * 1024,
  archiveRequestTimeoutMs: 60_000,
  archiveSpotChecksPerEpoch: 2,
  archiveSpotCheckPeers: 2,
  archiveCombined: true
})

export const OPTIONS: readonly OptionSpec[] = [
  { key: 'dataDir', type: 'string', group: 'node', commands: [...ALL, 'keygen', 'snapshot', 'archive'], doc: 'data directory: LevelDB store, peer key, genesis' },
  { key: 'listen', type: 'list', group: 'node', commands: ALL, doc: 'libp2p listen multiaddrs (comma-separated)' },
  { key: 'announce', type: 'list', group: 'node', commands: ALL, doc: 'multiaddrs to announce instead of the listen addresses (comma-separated)' },
  { key: 'entrypoints', type: 'list', group: 'node', commands: ['start', 'demo'], doc: 'trusted entrypoint multiaddrs with /p2p/<peer id> (comma-separated)' },
  { key: 'genesisFile', type: 'string', group: 'node', commands: ['start', 'archive'], doc: 'genesis file (default: <data-dir>/genesis.pb, written by `devnet`)' },
  { key: 'statusHost', type: 'string', group: 'node', commands: [...ALL, 'status'], doc: 'address the status/metrics HTTP server binds' },
  { key: 'statusPort', type: 'int', group: 'node', commands: [...ALL, 'status'], min: 0, max: 65535, doc: 'port of the status (/status) and Prometheus (/metrics) server; 0 disables it' },
  { key: 'logLevel', type: 'choice', group: 'node', commands: [...ALL, 'snapshot', 'archive'], choices: ['error', 'warn', 'info', 'debug'], doc: 'log verbosity' },
  { key: 'logFormat', type: 'choice', group: 'node', commands: [...ALL, 'snapshot', 'archive'], choices: ['text', 'json'], doc: 'log line format: `text` (`<time> <LEVEL> [<component>] <message>`) or `json` (one JSON object per line: time, level, component, msg)' },
  { key: 'logFile', type: 'string', group: 'node', commands: [...ALL, 'snapshot', 'archive'], doc: 'append log lines to this file instead of stderr (the terminal progress line stays on stderr)' },
  { key: 'progressIntervalMs', type: 'duration', group: 'node', commands: ['start', 'demo'], min: 0, doc: 'off a terminal, how often a progress line (height/target, rate, peers, ETA, phase, why it waits) is logged; on a terminal the line is redrawn in place every second instead; 0: never logged' },
  { key: 'exitOnFatal', type: 'bool', group: 'node', commands: ['start', 'demo'], doc: 'exit non-zero (status 3) when the executor or a store write fails (ENOSPC, EIO), so that docker/systemd restarts the node; --no-exit-on-fatal: stay up in phase `failed` and retry with back-off' },
  { key: 'fatalRetryMs', type: 'duration', group: 'node', commands: ['start', 'demo'], min: 100, doc: 'first back-off before a failed executor is restarted (with --no-exit-on-fatal); doubles up to 5 minutes' },
  { key: 'healthNoPeersMs', type: 'duration', group: 'node', commands: ['start', 'demo'], min: 0, doc: '/health answers 503 once the node has had no usable peer (none, all on another chain, none serving what it needs) for longer than this' },
  { key: 'healthStallMs', type: 'duration', group: 'node', commands: ['start', 'demo'], min: 1000, doc: '/health answers 503 once no new commit has been synced for longer than this (a dead producer, a stuck sync)' },
  { key: 'verifyWorkers', type: 'int', group: 'node', commands: [...ALL, 'archive'], min: 0, max: 64, doc: 'worker threads for signature checks, and for the state hashes of snapshot chunks as snapshot sync receives them; 0: on the main thread' },
  { key: 'dhtEnabled', type: 'bool', group: 'node', commands: ALL, doc: 'run the chain-scoped kad-dht' },
  { key: 'maxConnections', type: 'int', group: 'node', commands: ALL, min: 1, max: 100000, doc: 'libp2p connection manager limit' },
  { key: 'pingTimeoutMs', type: 'duration', group: 'node', commands: ALL, min: 1000, doc: 'close a connection whose liveness ping is unanswered this long (a ping is sent every this + 1 s, so that pings never overlap); libp2p\'s defaults (a 5 s adaptive timeout, a ping every 10 s) closed busy peers\' connections on a CPU-saturated machine (bench/load.ts)' },
  { key: 'inboundConnectionRate', type: 'int', group: 'node', commands: ALL, min: 1, max: 100000, doc: 'new inbound connections accepted per second from one IP address (libp2p\'s inboundConnectionThreshold; more are reset, and the dialer retries); raise it where many peers share an address (a NAT, a loopback testnet, bench/load.ts)' },
  { key: 'storeWriteBufferBytes', type: 'bytes', group: 'node', commands: [...ALL, 'snapshot'], min: 1024 * 1024, doc: 'LevelDB write buffer (memtable) of the store; up to two are in memory while one is flushed. Smaller saves memory at a cost in write speed (a 1 GiB snapshot sync, one run each: 16 MiB took 60 % longer and held ~90 MiB less)' },
  { key: 'storeCacheBytes', type: 'bytes', group: 'node', commands: [...ALL, 'snapshot'], min: 1024 * 1024, doc: 'LevelDB block cache of the store' },

  { key: 'devnetSeed', type: 'string', group: 'devnet', commands: [...DEVNET, 'snapshot'], doc: 'seed every devnet key derives from (`snapshot create` signs with the devnet committee when the store\'s genesis is of this seed)' },
  { key: 'validators', type: 'int', group: 'devnet', commands: DEVNET, min: 1, max: 256, doc: 'committee size' },
  { key: 'accounts', type: 'int', group: 'devnet', commands: DEVNET, min: 2, max: 10_000_000, doc: 'genesis accounts' },
  { key: 'initialBalance', type: 'int', group: 'devnet', commands: DEVNET, min: 0, doc: 'genesis balance of each account' },
  { key: 'embeddingDim', type: 'int', group: 'devnet', commands: DEVNET, min: 1, max: 65536, doc: 'dimension of embeddings (float32)' },
  { key: 'roundIntervalMs', type: 'duration', group: 'devnet', commands: DEVNET, min: 0, doc: 'time between rounds (one commit per round); 0 produces as fast as possible' },
  { key: 'txsPerBlock', type: 'int', group: 'devnet', commands: DEVNET, min: 0, max: 10000, doc: 'user transactions in each block' },
  { key: 'embeddingEvery', type: 'int', group: 'devnet', commands: DEVNET, min: 0, doc: 'every n-th transaction is an embedding submission; 0 for none' },
  { key: 'epochLength', type: 'int', group: 'devnet', commands: DEVNET, min: 1, doc: 'commits per epoch' },
  { key: 'maxCommits', type: 'int', group: 'devnet', commands: DEVNET, min: 0, doc: 'stop producing after this many commits; 0 for never' },

  { key: 'mailboxCapacity', type: 'int', group: 'sync', commands: SYNC, min: 1, doc: 'capacity of the state sync message mailbox' },
  { key: 'syncedCommitBroadcastChannelCapacity', type: 'int', group: 'sync', commands: SYNC, min: 1, doc: 'capacity of the commit broadcast channel to the CommitExecutor (sync never runs further ahead of execution)' },
  { key: 'executionBatchCommits', type: 'int', group: 'sync', commands: SYNC, min: 1, max: 10000, doc: 'most synced commits the CommitExecutor executes as one batch (one LevelDB write, state root at the batch end; cut after end-of-epoch commits)' },
  { key: 'waitIntervalWhenNoPeerToSyncContentMs', type: 'duration', group: 'sync', commands: SYNC, min: 0, doc: 'wait when no peer can serve the needed commits' },
  { key: 'timeoutMs', type: 'duration', group: 'sync', commands: SYNC, min: 1, doc: 'network request timeout' },
  { key: 'commitSyncBatchSize', type: 'int', group: 'sync', commands: SYNC, min: 1, max: 10000, doc: 'maximum commits per fetch request' },
  { key: 'maxBlocksPerFetch', type: 'int', group: 'sync', commands: SYNC, min: 1, max: 100000, doc: 'maximum blocks per fetch request' },
  { key: 'maxFetchResponseBytes', type: 'bytes', group: 'sync', commands: SYNC, min: 1024, doc: 'maximum bytes in one fetch response' },
  { key: 'maxTotalFetchedBytes', type: 'bytes', group: 'sync', commands: SYNC, min: 1024, doc: 'maximum bytes one sync operation holds in memory' },
  { key: 'commitSummaryDownloadConcurrency', type: 'int', group: 'sync', commands: SYNC, min: 1, doc: 'concurrent download operations' },
  { key: 'tickIntervalMs', type: 'duration', group: 'sync', commands: SYNC, min: 1, doc: 'event loop tick' },
  { key: 'blockFetchStaggerMs', type: 'duration', group: 'sync', commands: SYNC, min: 0, doc: 'start delay between pipelined block fetch requests (request i starts after i × this)' },
  { key: 'syncRangesInFlight', type: 'int', group: 'sync', commands: SYNC, min: 1, max: 16, doc: 'commit ranges fetched, downloaded and verified at once (pipelined; stored in order; they share max-total-fetched-bytes)' },
  { key: 'peerHeightQueryIntervalMs', type: 'duration', group: 'sync', commands: SYNC, min: 1, doc: 'how often each peer is asked for its commit availability' },
  { key: 'pushFanout', type: 'int', group: 'sync', commands: SYNC, min: 1, max: 1000, doc: 'PushCommit fan-out: a node that reaches a new height pushes it to at most this many of the peers known to be lower, chosen at random (the rest learn it from those peers or their next availability query; bounds the fetches a well-connected node draws per commit)' },
  { key: 'handlerTimeoutMs', type: 'duration', group: 'sync', commands: SYNC, min: 1, doc: 'time limit of one inbound request' },
  { key: 'inboundRequestsPerSecond', type: 'int', group: 'sync', commands: SYNC, min: 1, doc: 'inbound requests one peer may make per second, per protocol' },
  { key: 'maxInboundStreams', type: 'int', group: 'sync', commands: SYNC, min: 1, doc: 'inbound streams per connection, per protocol' },
  { key: 'maxOutboundStreams', type: 'int', group: 'sync', commands: SYNC, min: 1, doc: 'outbound streams per connection, per protocol' },
  { key: 'peerBanMs', type: 'duration', group: 'sync', commands: SYNC, min: 0, doc: 'how long a peer that lied is not asked again' },
  { key: 'syncedLagCommits', type: 'int', group: 'sync', commands: SYNC, min: 0, doc: 'phase hysteresis: a synced node stays `synced` while it is at most this many commits behind the sync target (it still fetches them)' },
  { key: 'syncedLagMs', type: 'duration', group: 'sync', commands: SYNC, min: 0, doc: 'phase hysteresis: a synced node that is behind the sync target (by any amount) for longer than this turns `syncing`' },
  { key: 'servePeerBytesPerSecond', type: 'bytes', group: 'sync', commands: SYNC, min: 0, doc: 'bytes per second one peer may be served, over every protocol (GCRA; a request is priced by its worst-case response, settled to its real size; refused with a retry hint); 0: no per-peer byte limit' },
  { key: 'servePeerBurstBytes', type: 'bytes', group: 'sync', commands: SYNC, min: 1024, doc: 'bytes one peer may be served at once after a pause (the per-peer GCRA\'s burst)' },
  { key: 'serveTotalBytesPerSecond', type: 'bytes', group: 'sync', commands: SYNC, min: 0, doc: 'bytes per second all peers together may be served (GCRA); 0: no total limit' },
  { key: 'serveTotalBurstBytes', type: 'bytes', group: 'sync', commands: SYNC, min: 1024, doc: 'bytes all peers together may be served at once after a pause (the total GCRA\'s burst)' },
  { key: 'serveRequestBytes', type: 'bytes', group: 'sync', commands: SYNC, min: 0, doc: 'price of any served request besides its response bytes (charged to both quotas)' },
  { key: 'serveMaxInflightBytes', type: 'bytes', group: 'sync', commands: SYNC, min: 0, doc: 'response bytes all served requests may hold at once (each counted at its worst case until its response is built, then at its size, until written); a request past it waits its turn, first come first served. Bounds the serving node\'s memory (README, Load); 0: no limit' },

  { key: 'snapshotTargetChunkBytes', type: 'bytes', group: 'snapshot', commands: SNAPSHOT, min: 64, max: 1024 * 1024 * 1024, doc: 'average size state chunks are cut to (content-defined boundaries; a chunk is cut at 4x this at the latest)' },
  { key: 'snapshotHotEpochs', type: 'int', group: 'snapshot', commands: SNAPSHOT, min: 1, max: 1_000_000, doc: 'K: accounts modified in the last K epochs go to the hot chunks, the rest to the cold ones' },
  { key: 'snapshotEmbeddingWindowCommits', type: 'int', group: 'snapshot', commands: SNAPSHOT, min: 1, doc: 'embeddings are grouped into chunks by creation window of this many commits' },
  { key: 'snapshotKeep', type: 'int', group: 'snapshot', commands: [...SNAPSHOT, 'start'], min: 1, max: 1000, doc: 'snapshots kept (the newest); older ones and the chunks only they use are pruned (a node that synced a snapshot keeps it and serves it)' },
  { key: 'snapshotEvery', type: 'int', group: 'snapshot', commands: DEVNET, min: 0, doc: 'the devnet producer snapshots at every epoch end and also every this many commits; 0: only at epoch ends' },
  { key: 'snapshotAnnounceIntervalMs', type: 'duration', group: 'snapshot', commands: SYNC, min: 0, doc: 'how often a node holding snapshots re-announces its latest attested manifest (gossip, DHT record, provider record); 0: only when a snapshot is stored' },
  { key: 'minSnapshotPeers', type: 'int', group: 'snapshot', commands: SYNC, min: 1, max: 1000, doc: 'a snapshot served by fewer peers than this is not a sync candidate' },
  { key: 'snapshotExchangeMaxSnapshots', type: 'int', group: 'snapshot', commands: SYNC, min: 1, max: 64, doc: 'most snapshots one /soma/snapshot-peers answer carries (served, and accepted: more is a protocol violation)' },
  { key: 'snapshotExchangeMaxProviders', type: 'int', group: 'snapshot', commands: SYNC, min: 1, max: 256, doc: 'most serving peers per snapshot in a /soma/snapshot-peers answer (served, and accepted)' },
  { key: 'snapshotExchangeIntervalMs', type: 'duration', group: 'snapshot', commands: SYNC, min: 100, doc: 'a node looking for a snapshot asks each connected peer which snapshots it knows of, and who serves them (/soma/snapshot-peers), at most once per this' },
  { key: 'snapshotExchangeMaxDials', type: 'int', group: 'snapshot', commands: SYNC, min: 0, max: 256, doc: 'serving peers learned by /soma/snapshot-peers that a node looking for a snapshot dials per round (0: it dials none)' },
  { key: 'syncMode', type: 'choice', group: 'snapshot', commands: ['start', 'demo'], choices: ['auto', 'snapshot', 'commits', 'archival'], doc: 'how a node reaches the tip: `snapshot` syncs the newest attested snapshot ahead of its store, then commit-syncs from it; `commits` replays every commit from the store\'s tip; `auto`: snapshot for an empty store (nothing synced yet), else commits. A snapshot sync in progress is always resumed. `archival`: commit-syncs every commit from genesis and keeps the full history (commits, blocks, effects, pruned embeddings), advertises lowest available commit 0 and announces itself as an archive; refused on a data dir that was snapshot-synced or pruned' },
  { key: 'snapshotMaxRequestsPerPeer', type: 'int', group: 'snapshot', commands: ['start', 'demo'], min: 1, max: 256, doc: 'most chunk requests in flight to one peer (the window starts at 2 and grows while the peer answers fast)' },
  { key: 'snapshotMaxChunksPerRequest', type: 'int', group: 'snapshot', commands: SYNC, min: 1, max: 65536, doc: 'most chunks per /soma/snapshot-chunks request (asked, and served)' },
  { key: 'snapshotChunkResponseBytes', type: 'bytes', group: 'snapshot', commands: SYNC, min: 1024, doc: 'most chunk bytes per /soma/snapshot-chunks response (asked, and served; a larger chunk is still sent, alone)' },
  { key: 'snapshotMaxInflightBytes', type: 'bytes', group: 'snapshot', commands: ['start', 'demo'], min: 1024, doc: 'chunk bytes requested and not yet stored, over all peers (bounds snapshot sync\'s memory); serving, chunk bytes held for responses over all sessions' },
  { key: 'snapshotListingPageRows', type: 'int', group: 'snapshot', commands: SYNC, min: 1, max: 1_000_000, doc: 'listing rows per /soma/snapshot-listing page (asked, and served)' },
  { key: 'snapshotMaxFilterBytes', type: 'bytes', group: 'snapshot', commands: SYNC, min: 1024, doc: 'largest snapshot Cuckoo filter served or accepted' },
  { key: 'snapshotWaitForPeers', type: 'int', group: 'snapshot', commands: ['start', 'demo'], min: 1, max: 1000, doc: 'peers serving the chosen snapshot to wait for (up to --snapshot-peer-wait) before downloading its chunks' },
  { key: 'snapshotPeerWaitMs', type: 'duration', group: 'snapshot', commands: ['start', 'demo'], min: 0, doc: 'how long to wait for --snapshot-wait-for-peers serving peers' },
  { key: 'snapshotFindTimeoutMs', type: 'duration', group: 'snapshot', commands: ['start', 'demo'], min: 0, doc: 'how long snapshot sync looks for a snapshot ahead of the store before the node commit-syncs instead (0: forever)' },
  { key: 'snapshotChunkRequestsPerSecond', type: 'int', group: 'snapshot', commands: SYNC, min: 1, doc: 'inbound /soma/snapshot-chunks requests one peer may make per second (responses are byte-bounded)' },
  { key: 'snapshotStallTimeoutMs', type: 'duration', group: 'snapshot', commands: ['start', 'demo'], min: 100, doc: 'a snapshot sync with no serving peer, or no progress, for this long turns `waiting`: the snapshot and its verified chunks are kept until a serving peer returns (it resumes at once) or a newer attested snapshot supersedes it' },
  { key: 'snapshotWaitReminderMs', type: 'duration', group: 'snapshot', commands: ['start', 'demo'], min: 100, doc: 'while snapshot sync is `waiting`, how often an info line says so again (the first line is a warning)' },
  { key: 'snapshotAbandon', type: 'bool', group: 'snapshot', commands: ['start'], doc: 'abandon the snapshot sync in progress in the data dir at start (its verified chunks stay stored and are reused by a later snapshot): the node then syncs as --sync-mode says (a node whose state was already cleared for the snapshot must sync another snapshot)' },
  { key: 'archivalAnnounceIntervalMs', type: 'duration', group: 'archival', commands: ['start', 'demo'], min: 0, doc: 'how often an archival node (--sync-mode archival) re-announces itself on gossip (the DHT provider record of its chain\'s archive is re-published hourly); 0: only at start' },
  { key: 'archiveDir', type: 'string', group: 'archive', commands: ['start', 'devnet', 'archive'], doc: 'archive writer: write every closed epoch as archive segments into this directory (\'\': no archive); `archive export` writes here too' },
  { key: 'archiveSegmentCommits', type: 'int', group: 'archive', commands: ['start', 'devnet', 'archive'], min: 1, max: 1_000_000, doc: 'archive segments are cut after every commit whose index is a multiple of this, and at epoch ends (every writer of one archive must use the same value)' },
  { key: 'archiveCompression', type: 'choice', group: 'archive', commands: ['start', 'devnet', 'archive'], choices: ['none', 'gzip', 'brotli', 'zstd'], doc: 'compression of archive segment bodies (named in each segment\'s header)' },
  { key: 'archiveHttpPort', type: 'int', group: 'archive', commands: ['start', 'devnet'], min: 0, max: 65535, doc: 'serve --archive-dir read-only over HTTP (GET/HEAD with Range) on this port of --status-host (0: not served)' },
  { key: 'archiveUploadUrl', type: 'string', group: 'archive', commands: ['start', 'devnet', 'archive'], doc: 'archive writer: also upload segments to this S3-compatible bucket, s3://<bucket>/<prefix> (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); finished objects are never overwritten' },
  { key: 'archiveS3Endpoint', type: 'string', group: 'archive', commands: ['start', 'devnet', 'archive'], doc: 'endpoint URL of an S3-compatible service, e.g. http://127.0.0.1:4568 (\'\': AWS S3)' },
  { key: 'archiveS3Region', type: 'string', group: 'archive', commands: ['start', 'devnet', 'archive'], doc: 'S3 region' },
  { key: 'archiveUrl', type: 'string', group: 'archive', commands: ['start', 'archive'], doc: 'fast mode: sync history from this archive first, http(s)://<host>/<prefix> or s3://<bucket>/<prefix> (untrusted: every commit is verified as commit sync does, sampled commits are spot-checked against P2P peers), then commit-sync from peers; a bad object\'s range comes from the peers (--archive-combined), or the fast mode stops and commit sync goes on from the last verified commit' },
  { key: 'archiveDownloadConcurrency', type: 'int', group: 'archive', commands: ['start', 'archive'], min: 1, max: 256, doc: 'archive segments downloading at once' },
  { key: 'archiveMaxInflightBytes', type: 'bytes', group: 'archive', commands: ['start', 'archive'], min: 1, doc: 'archive segment bytes downloaded and not yet stored (one segment is always allowed)' },
  { key: 'archiveRequestTimeoutMs', type: 'duration', group: 'archive', commands: ['start', 'archive'], min: 1, doc: 'one archive object request may take this long (3 attempts with back-off)' },
  { key: 'archiveSpotChecksPerEpoch', type: 'int', group: 'archive', commands: ['start'], min: 0, max: 1_000_000, doc: 'fast mode: commits per epoch sampled from the archive and compared with --archive-spot-check-peers P2P peers\' (0: no spot checks)' },
  { key: 'archiveSpotCheckPeers', type: 'int', group: 'archive', commands: ['start'], min: 1, max: 100, doc: 'fast mode: peers that must agree with the archive on each sampled commit (fewer answering: logged at warn as unchecked)' },
  { key: 'archiveCombined', type: 'bool', group: 'archive', commands: ['start'], doc: 'fast mode: connected P2P peers fetch ranges of the archive\'s segments too, each range from the source with the best measured throughput (work stealing; a segment the store waits for is also fetched by an idle source); a source whose data fails is dropped and its range fetched elsewhere. Spot checks sample the segments that came from the archive' }
]

export function flagName (key: string): string {
  return key.replace(/Ms$/, '').replace(/[A-Z]/g, c => '-' + c.toLowerCase())
}

export function envName (key: string): string {
  return 'SOMA_' + flagName(key).replace(/-/g, '_').toUpperCase()
}

const SPEC_BY_FLAG = new Map(OPTIONS.map(o => [flagName(o.key), o]))
const SPEC_BY_KEY = new Map(OPTIONS.map(o => [o.key, o]))

export function specFor (key: keyof SomaConfig): OptionSpec {
  const s = SPEC_BY_KEY.get(key)
  if (s === undefined) throw new Error(`no spec for ${key}`)
  return s
}

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1000, kb: 1000, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3 }
const TIME_UNITS: Record<string, number> = { '': 1, ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 }

function parseScaled (raw: string, units: Record<string, number>, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(raw)
  const unit = m?.[2].toLowerCase() ?? ''
  if (m == null || units[unit] === undefined) throw new ConfigError(`${what}: ${JSON.stringify(raw)} is not a ${units === BYTE_UNITS ? 'size (e.g. 4MiB, 65536)' : 'duration (e.g. 30s, 200ms)'}`)
  return Math.round(parseFloat(m[1]) * units[unit])
}

/** Converts one raw value (string from flags/env, or any JSON value from a file) to the option's type. */
export function coerce (spec: OptionSpec, raw: unknown, source: string): unknown {
  const what = `${source} ${spec.key === undefined ? '' : `(${flagName(spec.key)})`}`.trim()
  let v: unknown
  switch (spec.type) {
    case 'string':
      if (typeof raw !== 'string') throw new ConfigError(`${what}: expected a string, got ${JSON.stringify(raw)}`)
      v = raw
      break
    case 'choice':
      if (typeof raw !== 'string' || !(spec.choices ?? []).includes(raw)) throw new ConfigError(`${what}: ${JSON.stringify(raw)} is not one of ${(spec.choices ?? []).join(', ')}`)
      v = raw
      break
    case 'bool':
      if (typeof raw === 'boolean') v = raw
      else if (raw === 'true' || raw === '1' || raw === 'yes') v = true
      else if (raw === 'false' || raw === '0' || raw === 'no') v = false
      else throw new ConfigError(`${what}: ${JSON.stringify(raw)} is not a boolean (true/false)`)
      break
    case 'list':
      if (Array.isArray(raw) && raw.every(x => typeof x === 'string')) v = raw
      else if (typeof raw === 'string') v = raw.split(',').map(s => s.trim()).filter(s => s !== '')
      else throw new ConfigError(`${what}: expected a comma-separated list or an array of strings, got ${JSON.stringify(raw)}`)
      break
    case 'int':
      if (typeof raw === 'number') v = raw
      else if (typeof raw === 'string' && /^\s*-?\d+\s*$/.test(raw)) v = Number(raw)
      else if (typeof raw === 'string' && /^\s*\d+(\.\d+)?e\d+\s*$/i.test(raw)) v = Number(raw)
      else throw new ConfigError(`${what}: ${JSON.stringify(raw)} is not an integer`)
      if (!Number.isSafeInteger(v)) throw new ConfigError(`${what}: ${JSON.stringify(raw)} is not an integer`)
      break
    case 'duration':
      v = typeof raw === 'number' ? raw : typeof raw === 'string' ? parseScaled(raw, TIME_UNITS, what) : NaN
      if (!Number.isSafeInteger(v)) throw new ConfigError(`${what}: ${JSON.stringify(raw)} is not a duration`)
      break
    case 'bytes':
      v = typeof raw === 'number' ? raw : typeof raw === 'string' ? parseScaled(raw, BYTE_UNITS, what) : NaN
      if (!Number.isSafeInteger(v)) throw new ConfigError(`${what}: ${JSON.stringify(raw)} is not a size`)
      break
  }
  if (typeof v === 'number') {
    if (spec.min !== undefined && v < spec.min) throw new ConfigError(`${what}: ${JSON.stringify(raw)} is below the minimum ${spec.min}`)
    if (spec.max !== undefined && v > spec.max) throw new ConfigError(`${what}: ${JSON.stringify(raw)} is above the maximum ${spec.max}`)
  }
  return v
}

export interface LoadConfigOptions {
  /** command-line arguments after the command name */
  argv?: string[]
  env?: NodeJS.ProcessEnv
  command?: Command
}

export interface LoadedConfig {
  config: SomaConfig
  /** arguments that are not --flags */
  positionals: string[]
  help: boolean
}

/**
 * Builds the config: defaults, then the JSON file named by --config (or SOMA_CONFIG), then SOMA_*
 * environment variables, then flags. Every bad value raises ConfigError naming the source and option.
 */
export function loadConfig (opts: LoadConfigOptions = {}): LoadedConfig {
  const argv = opts.argv ?? []
  const env = opts.env ?? {}
  const config: Record<string, unknown> = structuredClone({ ...DEFAULTS }) as any
  const positionals: string[] = []
  const flags: Array<[OptionSpec, string, string]> = []
  let configFile: string | undefined = env.SOMA_CONFIG
  let help = false

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--help' || a === '-h') { help = true; continue }
    if (!a.startsWith('--')) { positionals.push(a); continue }
    let name = a.slice(2)
    let value: string | undefined
    const eq = name.indexOf('=')
    if (eq >= 0) { value = name.slice(eq + 1); name = name.slice(0, eq) }
    if (name === 'config') {
      configFile = value ?? argv[++i]
      if (configFile === undefined) throw new ConfigError('--config needs a file path')
      continue
    }
    let spec = SPEC_BY_FLAG.get(name)
    if (spec === undefined && name.startsWith('no-')) {
      const s = SPEC_BY_FLAG.get(name.slice(3))
      if (s?.type === 'bool' && value === undefined) { flags.push([s, 'false', `--${name}`]); continue }
    }
    if (spec === undefined) throw new ConfigError(`unknown option --${name}${opts.command !== undefined ? ` for \`${opts.command}\`` : ''} (see --help)`)
    if (value === undefined) {
      if (spec.type === 'bool' && (argv[i + 1] === undefined || argv[i + 1].startsWith('--') || !['true', 'false', '1', '0', 'yes', 'no'].includes(argv[i + 1]))) value = 'true'
      else value = argv[++i]
    }
    if (value === undefined) throw new ConfigError(`--${name} needs a value`)
    flags.push([spec, value, `--${name}`])
  }

  if (configFile !== undefined && configFile !== '') {
    let json: unknown
    try {
      json = JSON.parse(readFileSync(configFile, 'utf8'))
    } catch (err: any) {
      throw new ConfigError(`config file ${configFile}: ${err.code === 'ENOENT' ? 'does not exist' : err.message}`)
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`config file ${configFile}: expected a JSON object`)
    for (const [k, raw] of Object.entries(json)) {
      const spec = SPEC_BY_KEY.get(k as keyof SomaConfig)
      if (spec === undefined) throw new ConfigError(`config file ${configFile}: unknown option "${k}"`)
      config[k] = coerce(spec, raw, `config file ${configFile}: "${k}"`)
    }
  }
  for (const spec of OPTIONS) {
    const raw = env[envName(spec.key)]
    if (raw !== undefined) config[spec.key] = coerce(spec, raw, `environment ${envName(spec.key)}`)
  }
  for (const [spec, raw, src] of flags) config[spec.key] = coerce(spec, raw, src)

  return { config: config as unknown as SomaConfig, positionals, help }
}

function formatDefault (spec: OptionSpec, value: unknown): string {
  if (spec.type === 'list') return (value as string[]).length === 0 ? '(none)' : (value as string[]).join(',')
  if (spec.type === 'duration') return `${value as number}ms`
  if (spec.type === 'bytes') {
    const n = value as number
    if (n % (1024 * 1024) === 0) return `${n / (1024 * 1024)}MiB`
    if (n % 1024 === 0) return `${n / 1024}KiB`
    return String(n)
  }
  if (value === '') return '(none)'
  return String(value)
}

/** --help text for a command, derived from OPTIONS. */
export function helpText (command: Command, usage: string, description: string): string {
  const rows = OPTIONS.filter(o => o.commands.includes(command))
  const lines = [`Usage: ${usage}`, '', description, '', 'Options (flag / environment variable, default):']
  lines.push('  --config <file>  JSON file of options (keys as in the table below, camelCase); env SOMA_CONFIG')
  let group = ''
  for (const o of rows) {
    if (o.group !== group) { group = o.group; lines.push('', `  [${group}]`) }
    const arg = o.type === 'bool' ? '' : ` <${o.type === 'choice' ? (o.choices ?? []).join('|') : o.type}>`
    lines.push(`  --${flagName(o.key)}${arg}`)
    lines.push(`      ${o.doc}`)
    lines.push(`      env ${envName(o.key)}, default ${formatDefault(o, DEFAULTS[o.key])}`)
  }
  lines.push('', 'Precedence: defaults < --config file < SOMA_* environment < flags.')
  return lines.join('\n')
}

/** The README's config table (markdown), derived from OPTIONS. */
export function markdownTable (): string {
  const lines = ['| option (JSON key) | flag | environment | default | commands | description |', '|---|---|---|---|---|---|']
  for (const o of OPTIONS) {
    lines.push(`| \`${o.key}\` | \`--${flagName(o.key)}\` | \`${envName(o.key)}\` | \`${formatDefault(o, DEFAULTS[o.key])}\` | ${o.commands.join(', ')} | ${o.doc} |`)
  }
  return lines.join('\n')
}
