/**
 * The libp2p host of a Soma node: TCP + Noise + Yamux, identify, ping, a chain-scoped kad-dht,
 * gossipsub, bootstrap from the configured entrypoints, and Prometheus metrics.
 *
 * The DHT speaks `/soma/<first 8 hex chars of the chain id>/kad/1.0.0`, so nodes of one chain only
 * ever find each other, never the public IPFS DHT, and there is no public bootstrap list: a node only
 * knows the entrypoints it is given. Its addresses are kept as they are (private and loopback too), so
 * a testnet on a LAN or on 127.0.0.1 works.
 *
 * A host application with its own libp2p can merge `libp2pServices(config, chainId)` into its service
 * map instead of calling `createLibp2pNode`.
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { somaNoise } from '../net/noise-crypto.ts'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper, type KadDHT, type SelectFn, type ValidateFn } from '@libp2p/kad-dht'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { bootstrap } from '@libp2p/bootstrap'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import { KEEP_ALIVE, type PrivateKey, type PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { CODE_P2P, multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { SomaConfig } from '../config.ts'
import { ConfigError } from '../errors.ts'
import { toHex } from '../crypto/hash.ts'
import { snapshotDhtRecords } from '../snapshot/discovery/records.ts'

/** The services every Soma node runs (`dht` only when `config.dhtEnabled`), plus any added ones. */
export interface SomaServices {
  identify: Identify
  ping: Ping
  dht?: KadDHT
  pubsub: GossipSub
  [name: string]: unknown
}

/** A libp2p service factory, as in libp2p's `services` option. */
export type ServiceFactory = (components: any) => unknown

export type SomaLibp2p = Libp2p<SomaServices>

/** Tag given to entrypoint peers: libp2p keeps their connections and redials them when they drop. */
export const ENTRYPOINT_TAG = `${KEEP_ALIVE}-soma-entrypoint`

/** The chain-scoped DHT protocol id. */
export function dhtProtocol (chainId: Uint8Array): string {
  return `/soma/${toHex(chainId).slice(0, 8)}/kad/1.0.0`
}

/** The chain-scoped gossipsub topic prefix (`/soma/<8 hex>/`), for topics added by sync code. */
export function topicPrefix (chainId: Uint8Array): string {
  return `/soma/${toHex(chainId).slice(0, 8)}/`
}

/** DHT record validators and selectors, by key namespace (the `<ns>` of `/<ns>/...`). */
export interface DhtRecordOptions {
  /** merged over the defaults: `soma-snapshot` (src/snapshot/discovery/records.ts, chain check only) */
  dhtValidators?: Record<string, ValidateFn>
  dhtSelectors?: Record<string, SelectFn>
}

/**
 * The base service map (identify, ping, dht, pubsub) for `createLibp2p({ services })`. A host
 * application merges it into its own; `createLibp2pNode` uses it.
 *
 * The DHT accepts `/soma-snapshot/<chain id>` records (the latest attested snapshot manifest, see
 * src/snapshot/discovery.ts) of this chain; pass `dhtValidators`/`dhtSelectors` built from the node's
 * store (`SnapshotRecordChecker`) to also verify their attestations, or let SnapshotDiscovery install
 * them when it starts.
 */
export function libp2pServices (config: SomaConfig, chainId: Uint8Array, opts: DhtRecordOptions = {}): Record<string, ServiceFactory> {
  const services: Record<string, ServiceFactory> = {
    identify: identify(),
    // the answering side of a ping aborts its stream after `timeout` (10 s by default): a pinging peer
    // busy for longer found the stream gone and closed the connection; it waits --ping-timeout instead
    ping: ping({ timeout: config.pingTimeoutMs }),
    pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
  }
  if (config.dhtEnabled) {
    const snapshotRecords = snapshotDhtRecords({ chainId })
    services.dht = kadDHT({
      protocol: dhtProtocol(chainId),
      // every node of a (test)net serves the DHT; libp2p would otherwise wait for a public address
      clientMode: false,
      // keep private and loopback addresses: the DHT is scoped to one chain, often a LAN or localhost
      peerInfoMapper: passthroughMapper,
      validators: { ...snapshotRecords.validators, ...opts.dhtValidators },
      selectors: { ...snapshotRecords.selectors, ...opts.dhtSelectors }
    })
  }
  return services
}

/** A parsed entrypoint: its multiaddr and the peer id it names. */
export interface Entrypoint {
  multiaddr: Multiaddr
  peerId: PeerId
}

function parseMultiaddr (raw: string, what: string): Multiaddr {
  try {
    return multiaddr(raw)
  } catch (err: any) {
    throw new ConfigError(`${what} ${JSON.stringify(raw)} is not a valid multiaddr: ${err.message}`)
  }
}

/** Checks the listen, announce and entrypoint addresses (ConfigError naming a bad one); nothing is created. */
export function validateAddresses (config: Pick<SomaConfig, 'listen' | 'announce' | 'entrypoints'>): void {
  for (const a of config.listen) parseMultiaddr(a, 'listen address (--listen)')
  for (const a of config.announce) parseMultiaddr(a, 'announce address (--announce)')
  parseEntrypoints(config.entrypoints)
}

/** Parses `config.entrypoints`; ConfigError naming any that is not a multiaddr ending in /p2p/<peer id>. */
export function parseEntrypoints (entrypoints: readonly string[]): Entrypoint[] {
  return entrypoints.map(raw => {
    const ma = parseMultiaddr(raw, 'entrypoint')
    const id = ma.getComponents().findLast(c => c.code === CODE_P2P)?.value
    if (id === undefined) throw new ConfigError(`entrypoint ${JSON.stringify(raw)} has no /p2p/<peer id>`)
    try {
      return { multiaddr: ma, peerId: peerIdFromString(id) }
    } catch (err: any) {
      throw new ConfigError(`entrypoint ${JSON.stringify(raw)}: ${JSON.stringify(id)} is not a peer id (${err.message})`)
    }
  })
}

// prom-client metrics are process-global and @libp2p/prometheus-metrics clears the default registry
// when it is created. Only a node created while no other is alive may do so; nodes alive at the same
// time share the metrics of the first (a process normally runs one node).
const metricNodes = new Set<object>()

function metricsFactory (): ReturnType<typeof prometheusMetrics> {
  const first = metricNodes.size === 0
  return prometheusMetrics(first ? {} : { preserveExistingMetrics: true, collectDefaultMetrics: false })
}

/**
 * Lets the next node created reset the process's metrics. Called when the node stops; call it for a
 * node that is dropped without ever being started. Idempotent.
 */
export function releaseLibp2pMetrics (node: object): void {
  metricNodes.delete(node)
}

export interface CreateLibp2pNodeOptions extends DhtRecordOptions {
  config: SomaConfig
  chainId: Uint8Array
  privateKey: PrivateKey
  /** extra services, merged over the base ones (same name replaces) */
  services?: Record<string, ServiceFactory>
  /** start listening right away. @default false (SomaNode starts it) */
  start?: boolean
}

/**
 * libp2p's connection monitor pings every connection (`/ipfs/ping/1.0.0`) and closes one whose ping
 * fails. Its defaults closed healthy connections to a peer whose event loop (or ours) was busy for a few
 * seconds, dropping every request on them (bench/load.ts: 20 clients on 2 cores), in three ways:
 * - its adaptive timeout (5 s at least) expired: the timeout is `pingTimeoutMs` instead;
 * - a ping slower than the 10 s heartbeat overlapped the next one, whose stream the ping protocol's
 *   limit of one outbound stream per connection (the spec's) refused, and any failure but "unsupported"
 *   closes the connection: the heartbeat is therefore 1 s longer than the timeout, so a ping has
 *   always ended (answered or timed out) before the next starts;
 * - the answering side gave up after 10 s: its timeout is set where the ping service is made
 *   (libp2pServices).
 */
export function connectionMonitorInit (pingTimeoutMs: number): { pingInterval: number, pingTimeout: { minTimeout: number, maxTimeout: number } } {
  return { pingInterval: pingTimeoutMs + 1000, pingTimeout: { minTimeout: pingTimeoutMs, maxTimeout: pingTimeoutMs } }
}

/**
 * Creates the libp2p node from the config: `listen`/`announce` addresses, `maxConnections`,
 * `dhtEnabled`, bootstrap from `entrypoints` (only if non-empty). Bad addresses raise ConfigError.
 */
export async function createLibp2pNode (opts: CreateLibp2pNodeOptions): Promise<SomaLibp2p> {
  const { config, chainId } = opts
  for (const a of config.listen) parseMultiaddr(a, 'listen address')
  for (const a of config.announce) parseMultiaddr(a, 'announce address')
  const entrypoints = parseEntrypoints(config.entrypoints)
  const node = await createLibp2p({
    privateKey: opts.privateKey,
    start: opts.start ?? false,
    addresses: { listen: [...config.listen], announce: [...config.announce] },
    transports: [tcp()],
    connectionEncrypters: [somaNoise()],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections: config.maxConnections, inboundConnectionThreshold: config.inboundConnectionRate },
    connectionMonitor: connectionMonitorInit(config.pingTimeoutMs),
    peerDiscovery: entrypoints.length > 0
      ? [bootstrap({ list: entrypoints.map(e => e.multiaddr.toString()), timeout: 100, tagName: ENTRYPOINT_TAG })]
      : [],
    metrics: metricsFactory(),
    services: { ...libp2pServices(config, chainId, opts), ...opts.services } as any
  }) as SomaLibp2p
  metricNodes.add(node)
  node.addEventListener('stop', () => { releaseLibp2pMetrics(node) }, { once: true })
  return node
}
