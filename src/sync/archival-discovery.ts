/**
 * Archival discovery: archival nodes (src/sync/archival.ts) announce themselves the way snapshot holders
 * announce snapshots (src/snapshot/discovery.ts), and a node that needs history no connected peer has
 * finds and dials them.
 *
 * On the network (protocols/sync.proto, `ArchiveAnnouncement`):
 *   1. the gossipsub topic `/soma/<8 hex>/archive/1` (the chain-scoped `topicPrefix` of
 *      src/node/libp2p.ts): an archival node publishes an ArchiveAnnouncement (its chain, tip, lowest
 *      available commit 0 and its addresses) at start and every `announceIntervalMs`; gossipsub signs it,
 *      so its `from` is the archival node itself, whoever forwarded it. Every node subscribes (and so
 *      forwards), archival or not;
 *   2. a kad-dht provider record under the CID "archive of chain X" (`archiveCid`: v1, raw, sha2-256 of
 *      `/soma-archive/<chain id hex>`, made with the snapshot records' `cidOfDigest`), re-provided every
 *      `reprovideIntervalMs`.
 *
 * A syncing node calls `historyMissing()` when every peer that has the commits it needs has them only
 * from a commit above the one it needs (the event loop's `onHistoryMissing`): it logs the range and the
 * peers, looks up providers in the DHT (gossip announcements arrive on their own), and dials every
 * archival peer found that it is not connected to (and, for a minute after, each one found later). Commit sync then sees the peer's lowest available
 * commit 0 in its availability answer and syncs from it.
 *
 * ## Trust
 *
 * Being archival cannot be proven in an announcement; nothing has to be: an announcement of another
 * chain, or with a lowest available commit other than 0, is refused (gossip `reject`, which lowers the
 * sender's gossipsub score), and whatever an archival peer then serves is verified by commit sync from
 * genesis, exactly as any peer's data (a liar is penalized and banned there). The archives remembered are
 * bounded (`maxArchives`, least recently seen dropped first).
 */
import type { PeerId, PeerStore, Startable } from '@libp2p/interface'
import type { ConnectionManager } from '@libp2p/interface-internal'
import type { KadDHT, QueryEvent } from '@libp2p/kad-dht'
import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { CID } from 'multiformats/cid'
import type { ChainStore } from '../store/chain-store.ts'
import { DEFAULTS, type SomaConfig } from '../config.ts'
import { bytesEqual, sha256, short, toHex, utf8 } from '../crypto/hash.ts'
import { codec } from '../chain/proto.ts'
import { MalformedMessageError, WrongChainError } from '../errors.ts'
import { silentLogger, type Logger } from '../utils/logger.ts'
import { cidOfDigest } from '../snapshot/discovery/records.ts'
import type { DiscoveryPubSub } from '../snapshot/discovery.ts'
import { topicPrefix } from '../node/libp2p.ts'

export interface ArchiveAnnouncement {
  genesisDigest: Uint8Array
  highestSyncedCommit: number
  lowestAvailableCommit: number
  addrs: Uint8Array[]
  timestampMs: number
}

export const ArchiveAnnouncementCodec = codec<ArchiveAnnouncement>('soma.ArchiveAnnouncement')

/** Largest announcement accepted (a few addresses of ~50 bytes). */
export const MAX_ANNOUNCEMENT_BYTES = 16 * 1024
/** An archival peer found within this long of `historyMissing` is dialed as soon as it is found. */
const MISSING_WINDOW_MS = 60_000
/** Most addresses taken from one announcement. */
export const MAX_ANNOUNCED_ADDRS = 16

/** The gossipsub topic archival nodes announce on: `/soma/<8 hex>/archive/1`. */
export function archiveTopic (chainId: Uint8Array): string {
  return `${topicPrefix(chainId)}archive/1`
}

/** The CID whose DHT providers are the archival nodes of a chain ("archive of chain X"). */
export function archiveCid (chainId: Uint8Array): CID {
  return cidOfDigest(sha256(utf8.encode(`/soma-archive/${toHex(chainId)}`)))
}

/** Decodes and checks an announcement: WrongChainError for another chain, MalformedMessageError for a bad shape or a lowest available commit other than 0. */
export function decodeAnnouncement (bytes: Uint8Array, chainId: Uint8Array): ArchiveAnnouncement {
  if (bytes.byteLength > MAX_ANNOUNCEMENT_BYTES) throw new MalformedMessageError(`archive announcement is ${bytes.byteLength} bytes (max ${MAX_ANNOUNCEMENT_BYTES})`)
  const a = ArchiveAnnouncementCodec.decode(bytes)
  if (!bytesEqual(a.genesisDigest, chainId)) throw new WrongChainError(`archive announcement of chain ${toHex(a.genesisDigest).slice(0, 16)}…, not ${toHex(chainId).slice(0, 16)}…`)
  if (a.lowestAvailableCommit !== 0) throw new MalformedMessageError(`archive announcement with lowest available commit ${a.lowestAvailableCommit}: an archival node has every commit since genesis (0)`)
  return a
}

export interface ArchivalDiscoveryConfig {
  /** re-announce period of an archival node (gossip; the provider record every reprovideIntervalMs). @default 30 s */
  announceIntervalMs: number
  /** time limit of one DHT query (provide, findProviders) and of one dial. @default config.timeoutMs */
  queryTimeoutMs: number
  /** a provider record is re-published after this long (records live 48 h in kad-dht). @default 1 h */
  reprovideIntervalMs: number
  /** least time between two lookups started by `historyMissing`. @default 5 s */
  lookupIntervalMs: number
  /** archival peers remembered (least recently seen dropped first). @default 64 */
  maxArchives: number
}

export const DEFAULT_ARCHIVAL_DISCOVERY_CONFIG: Readonly<ArchivalDiscoveryConfig> = Object.freeze({
  announceIntervalMs: DEFAULTS.archivalAnnounceIntervalMs,
  queryTimeoutMs: DEFAULTS.timeoutMs,
  reprovideIntervalMs: 60 * 60_000,
  lookupIntervalMs: 5000,
  maxArchives: 64
})

/** The discovery settings of a node's config. */
export function archivalDiscoveryConfig (config: Partial<Pick<SomaConfig, 'archivalAnnounceIntervalMs' | 'timeoutMs'>>): Partial<ArchivalDiscoveryConfig> {
  const out: Partial<ArchivalDiscoveryConfig> = {}
  if (config.archivalAnnounceIntervalMs !== undefined) out.announceIntervalMs = config.archivalAnnounceIntervalMs
  if (config.timeoutMs !== undefined) out.queryTimeoutMs = config.timeoutMs
  return out
}

/** The libp2p pieces archival discovery uses (a libp2p node's components). */
export interface ArchivalDiscoveryComponents {
  peerId: PeerId
  pubsub: DiscoveryPubSub
  /** without a DHT, discovery is by gossip only */
  dht?: KadDHT
  peerStore: Pick<PeerStore, 'merge'>
  connectionManager: Pick<ConnectionManager, 'openConnection' | 'getConnections'>
  /** this node's addresses, announced by an archival node */
  addressManager?: { getAddresses: () => Multiaddr[] }
}

export interface ArchivalDiscoveryInit {
  /** the node's store: chain id, tip, and whether it is archival (then it announces itself) */
  store: ChainStore
  config?: Partial<ArchivalDiscoveryConfig>
  /** @default silent */
  logger?: Logger
}

/** An archival peer found on the network. */
export interface ArchivePeer {
  peerId: PeerId
  addrs: Multiaddr[]
  /** its tip, as announced (0 when found through the DHT only) */
  highest: number
  via: 'gossip' | 'dht'
  lastSeen: number
}

/** What the sync loop saw: every peer that has commit `from` has history only from a higher commit. */
export interface HistoryMissing {
  /** the first commit needed */
  from: number
  /** the last commit below every such peer's lowest available one */
  to: number
  peers: Array<{ peer: PeerId, lowest: number, height: number }>
}

export class ArchivalDiscovery implements Startable {
  readonly [Symbol.toStringTag] = '@soma/archival-discovery'
  readonly config: ArchivalDiscoveryConfig
  readonly topic: string
  readonly cid: CID
  private readonly c: ArchivalDiscoveryComponents
  private readonly store: ChainStore
  private readonly log: Logger
  private readonly archives = new Map<string, ArchivePeer>()
  private timer?: NodeJS.Timeout
  private running = false
  private abort = new AbortController()
  private readonly inflight = new Set<Promise<unknown>>()
  private lastProvided = 0
  private lastLookup = 0
  private lookup?: Promise<number>
  private readonly dialing = new Set<string>()
  /** archival peers logged as connected */
  private readonly reported = new Set<string>()
  private announcing = false
  /** when history was last reported missing: archival peers found soon after are dialed at once */
  private missingAt = 0
  stats = { announced: 0, accepted: 0, rejected: 0, lookups: 0, dialed: 0, dialFailures: 0 }

  constructor (components: ArchivalDiscoveryComponents, init: ArchivalDiscoveryInit) {
    if (components.pubsub == null) throw new TypeError('ArchivalDiscovery needs a pubsub (gossipsub) service')
    this.c = components
    this.store = init.store
    this.log = init.logger ?? silentLogger('archival-discovery')
    this.config = { ...DEFAULT_ARCHIVAL_DISCOVERY_CONFIG, ...init.config }
    this.topic = archiveTopic(this.store.chainId)
    this.cid = archiveCid(this.store.chainId)
  }

  get isStarted (): boolean { return this.running }

  /** Subscribes to the topic (with its validator); an archival node announces now and every interval. */
  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.abort = new AbortController()
    this.c.pubsub.topicValidators.set(this.topic, this.validateMessage)
    this.c.pubsub.subscribe(this.topic)
    if (this.store.archival) {
      this.background(this.announce())
      if (this.config.announceIntervalMs > 0) {
        this.timer = setInterval(() => { this.background(this.announce()) }, this.config.announceIntervalMs)
        this.timer.unref()
      }
    }
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.abort.abort()
    try {
      this.c.pubsub.unsubscribe(this.topic)
    } catch {}
    if (this.c.pubsub.topicValidators.get(this.topic) === this.validateMessage) this.c.pubsub.topicValidators.delete(this.topic)
    await Promise.allSettled([...this.inflight])
  }

  private background (p: Promise<unknown>): void {
    const q = p.catch((err: any) => { if (this.running) this.log.warn('archival discovery: %s', err?.message ?? err) })
    this.inflight.add(q)
    void q.finally(() => this.inflight.delete(q))
  }

  private signal (outer?: AbortSignal): AbortSignal {
    const signals = [this.abort.signal, AbortSignal.timeout(this.config.queryTimeoutMs)]
    if (outer !== undefined) signals.push(outer)
    return AbortSignal.any(signals)
  }

  /**
   * Announces this (archival) node: gossip, and the provider record when it is due. Returns the gossip
   * recipients and the peers sent the provider record (undefined: not re-provided this time).
   */
  async announce (): Promise<{ gossipRecipients: number, providerPeers?: number }> {
    if (!this.running || this.store.isClosed || !this.store.archival || this.announcing) return { gossipRecipients: 0 }
    this.announcing = true
    try {
      return await this.announceNow()
    } finally {
      this.announcing = false
    }
  }

  private async announceNow (): Promise<{ gossipRecipients: number, providerPeers?: number }> {
    const addrs = (this.c.addressManager?.getAddresses() ?? []).slice(0, MAX_ANNOUNCED_ADDRS).map(a => a.bytes)
    const msg = ArchiveAnnouncementCodec.encode({
      genesisDigest: this.store.chainId,
      highestSyncedCommit: this.store.highestSynced,
      lowestAvailableCommit: 0,
      addrs,
      timestampMs: Date.now()
    })
    let gossipRecipients = 0
    try {
      gossipRecipients = (await this.c.pubsub.publish(this.topic, msg)).recipients.length
    } catch (err: any) {
      this.log.debug('gossip of the archive announcement failed: %s', err.message)
    }
    let providerPeers: number | undefined
    if (this.c.dht !== undefined && Date.now() - this.lastProvided >= this.config.reprovideIntervalMs) {
      providerPeers = 0
      this.lastProvided = Date.now()
      try {
        for await (const e of this.c.dht.provide(this.cid, { signal: this.signal() })) {
          if (e.name === 'PEER_RESPONSE' && String(e.messageType) === 'ADD_PROVIDER') providerPeers++
        }
      } catch (err: any) {
        this.lastProvided = 0 // retried at the next announce
        this.log.debug('DHT provide of the archive record failed: %s', err.message)
      }
    }
    this.stats.announced++
    if (this.stats.announced === 1 || providerPeers !== undefined) {
      this.log.info('announced this archival node (synced to commit %d): gossip to %d peers, DHT provider record to %s peers', this.store.highestSynced, gossipRecipients, providerPeers ?? 'no (DHT disabled)')
    } else {
      this.log.debug('re-announced this archival node (synced to commit %d): gossip to %d peers', this.store.highestSynced, gossipRecipients)
    }
    return { gossipRecipients, providerPeers }
  }

  /** gossipsub validator of the topic: remember valid announcements, reject others. */
  private readonly validateMessage = async (propagationSource: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    const from = msg.type === 'signed' ? msg.from : propagationSource
    let a: ArchiveAnnouncement
    try {
      a = decodeAnnouncement(msg.data, this.store.chainId)
    } catch (err: any) {
      this.stats.rejected++
      this.log.debug('refused an archive announcement from %s: %s', from.toString(), err.message)
      return TopicValidatorResult.Reject
    }
    if (from.equals(this.c.peerId)) return TopicValidatorResult.Ignore
    const addrs: Multiaddr[] = []
    for (const b of a.addrs.slice(0, MAX_ANNOUNCED_ADDRS)) {
      try { addrs.push(multiaddr(b)) } catch {}
    }
    this.stats.accepted++
    this.remember(from, addrs, a.highestSyncedCommit, 'gossip')
    return TopicValidatorResult.Accept
  }

  private remember (peerId: PeerId, addrs: Multiaddr[], highest: number, via: 'gossip' | 'dht'): void {
    const key = peerId.toString()
    const prev = this.archives.get(key)
    if (prev === undefined) this.log.info('archival peer found: %s via %s (synced to commit %d as announced, %d addresses)', key, via === 'gossip' ? 'gossip' : 'the DHT provider record', highest, addrs.length)
    this.archives.delete(key) // re-insert: the Map's order is the eviction order
    this.archives.set(key, {
      peerId,
      addrs: addrs.length > 0 ? addrs : (prev?.addrs ?? []),
      highest: Math.max(highest, prev?.highest ?? 0),
      via: prev?.via === 'gossip' ? 'gossip' : via,
      lastSeen: Date.now()
    })
    while (this.archives.size > this.config.maxArchives) this.archives.delete(this.archives.keys().next().value as string)
    // found while history is missing (an announcement arriving after the lookup): use it now
    if (prev === undefined && this.running && Date.now() - this.missingAt < MISSING_WINDOW_MS) this.background(this.dialArchives())
  }

  /** The archival peers found so far (never this node), most recently seen first. */
  found (): ArchivePeer[] {
    return [...this.archives.values()].reverse()
  }

  /** Looks up the providers of the chain's archive CID in the DHT; returns how many archival peers are known. */
  async findProviders (opts: { signal?: AbortSignal } = {}): Promise<number> {
    if (this.c.dht === undefined) return this.archives.size
    this.stats.lookups++
    try {
      for await (const ev of this.c.dht.findProviders(this.cid, { signal: this.signal(opts.signal) }) as AsyncIterable<QueryEvent>) {
        if (ev.name !== 'PROVIDER') continue
        for (const p of ev.providers) {
          if (p.id.equals(this.c.peerId)) continue
          this.remember(p.id, p.multiaddrs, 0, 'dht')
        }
      }
    } catch (err: any) {
      if (opts.signal?.aborted === true) throw err
      this.log.debug('DHT providers of the archive record: %s', err.message)
    }
    return this.archives.size
  }

  /**
   * Dials every archival peer found that is not connected (one already connected, e.g. by a DHT query,
   * is logged once as such); returns how many connections were opened.
   */
  async dialArchives (opts: { signal?: AbortSignal } = {}): Promise<number> {
    let opened = 0
    await Promise.all(this.found().map(async a => {
      const key = a.peerId.toString()
      if (this.dialing.has(key)) return
      if (this.c.connectionManager.getConnections(a.peerId).length > 0) {
        if (!this.reported.has(key)) {
          this.reported.add(key)
          this.log.info('archival peer %s is connected: commit sync asks it for the missing history', key)
        }
        return
      }
      this.dialing.add(key)
      try {
        if (a.addrs.length > 0) await this.c.peerStore.merge(a.peerId, { multiaddrs: a.addrs })
        await this.c.connectionManager.openConnection(a.peerId, { signal: this.signal(opts.signal) })
        opened++
        this.stats.dialed++
        this.reported.add(key)
        this.log.info('dialed archival peer %s: commit sync asks it for the missing history', key)
      } catch (err: any) {
        this.stats.dialFailures++
        if (this.running) this.log.warn('archival peer %s unreachable: %s', key, err.message)
      } finally {
        this.dialing.delete(key)
      }
    }))
    return opened
  }

  /**
   * The sync loop needs commits no connected peer has (see HistoryMissing): logs it, looks for archival
   * peers (DHT providers; gossip announcements are already remembered) and dials those not connected.
   * At most one lookup runs at a time, and one starts at most every `lookupIntervalMs`.
   */
  historyMissing (m: HistoryMissing): void {
    this.missingAt = Date.now()
    if (!this.running || this.lookup !== undefined || Date.now() - this.lastLookup < this.config.lookupIntervalMs) return
    this.lastLookup = Date.now()
    const peers = m.peers.map(p => `${p.peer.toString()} has ${p.lowest}..${p.height}`).join(', ')
    this.log.warn('history missing: commits %d..%d are not served by any connected peer (%s); looking for an archival peer', m.from, m.to, peers)
    const run = async (): Promise<number> => {
      await this.findProviders()
      if (this.archives.size === 0) {
        this.log.warn('no archival peer of chain %s found yet (DHT provider record, gossip): retrying while history is missing', short(this.store.chainId))
        return 0
      }
      return await this.dialArchives()
    }
    this.lookup = run()
    this.background(this.lookup.finally(() => { this.lookup = undefined; this.lastLookup = Date.now() }))
  }

  /** Fields for the node's /status. */
  status (): Record<string, unknown> {
    return {
      archivalDiscovery: {
        announcing: this.running && this.store.archival,
        archivesFound: this.archives.size,
        archives: this.found().slice(0, 8).map(a => ({ peer: a.peerId.toString(), highest: a.highest, via: a.via }))
      }
    }
  }
}

/**
 * A libp2p service factory of archival discovery (`archivalDiscovery` in a node's services): it reads
 * `pubsub`, `dht`, the peer store, connection and address managers from the node's components and starts
 * after libp2p has (it publishes and queries the DHT).
 */
export function archivalDiscoveryService (init: ArchivalDiscoveryInit): (components: any) => ArchivalDiscovery & { afterStart: () => Promise<void>, beforeStop: () => Promise<void> } {
  return (components: any) => {
    // libp2p's components object throws for a service that does not exist (a node without a DHT)
    const get = (name: string): any => { try { return components[name] } catch { return undefined } }
    const d = new ArchivalDiscovery({
      peerId: components.peerId,
      pubsub: get('pubsub'),
      dht: get('dht'),
      peerStore: components.peerStore,
      connectionManager: components.connectionManager,
      addressManager: get('addressManager')
    }, init) as ArchivalDiscovery & { afterStart: () => Promise<void>, beforeStop: () => Promise<void> }
    const start = d.start.bind(d)
    d.start = async () => {}
    d.afterStart = start
    d.beforeStop = d.stop.bind(d)
    return d
  }
}
