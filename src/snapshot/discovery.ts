/**
 * Snapshot discovery (seed 002, "Syncing Using Snapshots" step 1: "The operator finds the latest
 * snapshot using peer-to-peer gossip, initiated with a set of trusted entrypoint nodes").
 *
 * A node holding snapshots announces each attested manifest it serves, on start, when a snapshot is
 * stored (`announce()`, or seen at the next tick) and every `announceIntervalMs`:
 *   1. publishes the SnapshotAttestation bytes on the gossipsub topic `/soma/<8 hex>/snapshots/1`;
 *   2. puts the kad-dht record `/soma-snapshot/<chain id hex>` = the attestation of the newest snapshot
 *      it knows of (its own, or a newer one it verified): the chain's "latest snapshot" record;
 *   3. provides the manifest's CID (v1, raw, sha2-256 of the manifest bytes) in the DHT.
 * Names, CID and the record checks are in ./discovery/records.ts.
 *
 * Every node runs it (src/node/node.ts), whether or not it makes snapshots: it forwards the announcements
 * and remembers the verified ones with who made them, and `book()` is what it answers on the snapshot peer
 * exchange /soma/snapshot-peers/1.0.0 (./discovery/exchange.ts). A node looking for a snapshot asks its
 * connected peers there and dials the serving peers it learns, plus `servingPeers()` (announcers and DHT
 * providers it found itself; a DHT round runs in the background). The snapshot sync then asks the
 * serving peers themselves (/soma/snapshot-manifest/1.0.0), so what discovery learned is only where to dial.
 *
 * A node looking for a snapshot (it needs only its trusted entrypoints: the DHT and gossipsub mesh are
 * reached through them) listens to the topic, reads the DHT record, keeping every valid record any peer
 * returns (not only the one the selector picks), and asks the DHT for the providers of each candidate.
 * `candidates()` ranks what was found:
 *   - newest epoch first (its committee is the freshest trust anchor; the commits after the snapshot
 *     are then fetched by commit sync);
 *   - then the most serving peers (download spread over more peers, fewer chances of a withheld chunk);
 *   - then the highest commit index;
 * and skips snapshots served by fewer than `minSnapshotPeers` peers. Serving peers are the DHT
 * providers of the manifest's CID and the peers that announced it on gossip (the signed origin of the
 * message, not the peer that forwarded it); this node itself is never one.
 *
 * ## Trust
 *
 * Every attestation received is checked for shape and chain; its signatures are checked against the
 * committee of its epoch when the local store has it (a forged one is refused: gossip `reject`, which
 * lowers the sender's gossipsub score, and the DHT validator throws). A node that has not learned that
 * committee keeps the snapshot as an *unverified* candidate (`verified: false`); the sync core learns
 * the committees (epoch proofs), calls `verifyCandidates()` (or verifies itself) and drops forged ones.
 * An unverified candidate can therefore be a lie; `candidates({ verifiedOnly: true })` leaves them out.
 * The number of candidates kept is bounded (`maxCandidates`, lowest ranked dropped first).
 */
import type { PeerId, Startable } from '@libp2p/interface'
import type { KadDHT, QueryEvent } from '@libp2p/kad-dht'
import { TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { CID } from 'multiformats/cid'
import type { ChainStore } from '../store/chain-store.ts'
import type { SomaConfig } from '../config.ts'
import { DEFAULTS } from '../config.ts'
import { toHex } from '../crypto/hash.ts'
import { InvalidSnapshotError } from '../errors.ts'
import { silentLogger, type Logger } from '../utils/logger.ts'
import type { SnapshotAttestation, SnapshotManifest } from './manifest.ts'
import type { SnapshotStore } from './snapshot-store.ts'
import {
  SNAPSHOT_RECORD_NAMESPACE, SnapshotRecordChecker, cidOfDigest, snapshotRecordKey, snapshotTopic, type CheckedAttestation
} from './discovery/records.ts'
import type { BookEntry } from './discovery/exchange.ts'

export {
  SNAPSHOT_RECORD_NAMESPACE, SnapshotRecordChecker, manifestCid, snapshotRecordKey, snapshotTopic, snapshotDhtRecords
} from './discovery/records.ts'

export interface SnapshotDiscoveryConfig {
  /** re-announce period of the latest snapshot (gossip + DHT record); 0: no periodic announce. @default 30 s */
  announceIntervalMs: number
  /** snapshots served by fewer peers are not candidates. @default 1 */
  minSnapshotPeers: number
  /** time limit of one DHT query (get, put, provide, findProviders). @default 30 s (config.timeoutMs) */
  queryTimeoutMs: number
  /** snapshots remembered (lowest ranked dropped first). @default 32 */
  maxCandidates: number
  /** serving peers remembered per snapshot. @default 64 */
  maxPeersPerCandidate: number
  /** candidates whose providers one `discover()` looks up (best ranked first). @default 8 */
  maxProviderQueries: number
  /** own snapshots re-announced on each tick (the newest ones). @default 4 */
  maxAnnounced: number
  /** a provider record is re-published after this long (records live 48 h in kad-dht). @default 1 h */
  reprovideIntervalMs: number
}

export const DEFAULT_DISCOVERY_CONFIG: Readonly<SnapshotDiscoveryConfig> = Object.freeze({
  announceIntervalMs: DEFAULTS.snapshotAnnounceIntervalMs,
  minSnapshotPeers: DEFAULTS.minSnapshotPeers,
  queryTimeoutMs: DEFAULTS.timeoutMs,
  maxCandidates: 32,
  maxPeersPerCandidate: 64,
  maxProviderQueries: 8,
  maxAnnounced: 4,
  reprovideIntervalMs: 60 * 60_000
})

/** The discovery settings of a node's config. */
export function snapshotDiscoveryConfig (config: Partial<Pick<SomaConfig, 'snapshotAnnounceIntervalMs' | 'minSnapshotPeers' | 'timeoutMs'>>): Partial<SnapshotDiscoveryConfig> {
  const out: Partial<SnapshotDiscoveryConfig> = {}
  if (config.snapshotAnnounceIntervalMs !== undefined) out.announceIntervalMs = config.snapshotAnnounceIntervalMs
  if (config.minSnapshotPeers !== undefined) out.minSnapshotPeers = config.minSnapshotPeers
  if (config.timeoutMs !== undefined) out.queryTimeoutMs = config.timeoutMs
  return out
}

/** The parts of pubsub discovery uses (gossipsub's). */
export type DiscoveryPubSub = Pick<GossipSub, 'subscribe' | 'unsubscribe' | 'publish' | 'topicValidators' | 'getSubscribers'>

/** The libp2p pieces discovery uses: a libp2p node's `peerId`, `services.pubsub` and `services.dht`. */
export interface SnapshotDiscoveryComponents {
  peerId: PeerId
  pubsub: DiscoveryPubSub
  /** without a DHT, discovery is by gossip only */
  dht?: KadDHT
}

export interface SnapshotDiscoveryInit {
  /** a libp2p node with `services.pubsub` (gossipsub) and optionally `services.dht` (kad-dht) */
  libp2p?: { peerId: PeerId, services: { pubsub?: unknown, dht?: unknown } }
  /** or the pieces themselves */
  components?: SnapshotDiscoveryComponents
  /** the node's store: chain id and committees */
  store: ChainStore
  /** the snapshots this node serves: the latest is announced on start and on every tick */
  snapshotStore?: SnapshotStore
  config?: Partial<SnapshotDiscoveryConfig>
  /** @default silent */
  logger?: Logger
}

/** How a snapshot came to be known. */
export type CandidateSource = 'gossip' | 'dht-record' | 'providers' | 'local'

/** A snapshot found on the network, with the peers that serve it. */
export interface SnapshotCandidate {
  /** the SnapshotAttestation bytes (with the most signing stake seen for this manifest) */
  attestationBytes: Uint8Array
  attestation: SnapshotAttestation
  manifest: SnapshotManifest
  /** sha256 of the manifest bytes */
  digest: Uint8Array
  /** the CID its providers are found under */
  cid: CID
  commitIndex: number
  epoch: number
  /** serving peers: DHT providers and gossip announcers, never this node */
  peers: PeerId[]
  /** the attestation was checked against a locally known committee */
  verified: boolean
  /** signing stake, when verified */
  stake?: number
  sources: CandidateSource[]
  /** the DHT record of the chain named this snapshot as the latest */
  latestRecord: boolean
}

interface PeerEntry { peerId: PeerId, lastSeen: number, via: 'gossip' | 'providers' }

interface Entry {
  checked: CheckedAttestation
  cid: CID
  peers: Map<string, PeerEntry>
  sources: Set<CandidateSource>
  lastSeen: number
}

export interface AnnounceResult {
  commitIndex: number
  epoch: number
  /** peers the gossip message was sent to */
  gossipRecipients: number
  /** the commit index of the DHT record put (may be a newer snapshot than the one announced), or undefined */
  recordCommit?: number
  /** peers that stored the DHT record */
  recordPeers: number
  /** peers that were sent the provider record (undefined: not re-provided this time) */
  providerPeers?: number
}

export interface DiscoverOptions {
  signal?: AbortSignal
  /** @default config.queryTimeoutMs */
  timeoutMs?: number
}

export interface CandidateFilter {
  /** @default config.minSnapshotPeers */
  minPeers?: number
  /** only snapshots whose attestation was verified here */
  verifiedOnly?: boolean
}

/** Preference order of candidates: epoch, then serving peers, then commit index (all descending). */
export function compareCandidates (a: Pick<SnapshotCandidate, 'epoch' | 'commitIndex' | 'peers'>, b: Pick<SnapshotCandidate, 'epoch' | 'commitIndex' | 'peers'>): number {
  return (b.epoch - a.epoch) || (b.peers.length - a.peers.length) || (b.commitIndex - a.commitIndex)
}

export class SnapshotDiscovery implements Startable {
  readonly name = 'snapshot-discovery'
  readonly [Symbol.toStringTag] = '@soma/snapshot-discovery'
  readonly config: SnapshotDiscoveryConfig
  readonly topic: string
  readonly recordKey: Uint8Array
  readonly checker: SnapshotRecordChecker
  private readonly peerId: PeerId
  private readonly pubsub: DiscoveryPubSub
  private readonly dht?: KadDHT
  private readonly store: ChainStore
  private readonly snapshotStore?: SnapshotStore
  private readonly log: Logger
  private readonly entries = new Map<string, Entry>()
  /** own snapshots announced: digest hex → checked attestation */
  private readonly announced = new Map<string, CheckedAttestation>()
  private readonly lastProvided = new Map<string, number>()
  /** the best record known to be genuine (own, or verified): the DHT record's floor */
  private trusted?: CheckedAttestation
  private latestRecordDigest?: string
  private lastStoredCommit?: number
  private timer?: NodeJS.Timeout
  private running = false
  private abort = new AbortController()
  private readonly inflight = new Set<Promise<unknown>>()
  private previousValidator?: unknown
  private previousSelector?: unknown
  private backgroundRound?: Promise<void>
  private lastBackgroundRound = -Infinity
  stats = { announced: 0, gossipAccepted: 0, gossipRejected: 0, recordsSeen: 0, recordsRejected: 0 }

  constructor (init: SnapshotDiscoveryInit) {
    const c: SnapshotDiscoveryComponents | undefined = init.components ?? (init.libp2p === undefined
      ? undefined
      : { peerId: init.libp2p.peerId, pubsub: init.libp2p.services.pubsub as DiscoveryPubSub, dht: init.libp2p.services.dht as KadDHT | undefined })
    if (c === undefined) throw new TypeError('SnapshotDiscovery needs `libp2p` or `components`')
    if (c.pubsub == null) throw new TypeError('SnapshotDiscovery needs a pubsub (gossipsub) service')
    this.peerId = c.peerId
    this.pubsub = c.pubsub
    this.dht = c.dht ?? undefined
    this.store = init.store
    this.snapshotStore = init.snapshotStore
    this.log = init.logger ?? silentLogger('snapshot-discovery')
    this.config = { ...DEFAULT_DISCOVERY_CONFIG, ...init.config }
    for (const k of ['minSnapshotPeers', 'maxCandidates', 'maxPeersPerCandidate', 'maxAnnounced'] as const) {
      if (!Number.isInteger(this.config[k]) || this.config[k] < 1) throw new RangeError(`${k} must be an integer >= 1, got ${this.config[k]}`)
    }
    this.topic = snapshotTopic(this.store.chainId)
    this.recordKey = snapshotRecordKey(this.store.chainId)
    this.checker = new SnapshotRecordChecker({
      chainId: this.store.chainId,
      committee: async epoch => this.store.isClosed ? undefined : await this.store.getCommittee(epoch),
      floor: () => this.trusted?.manifest.commitIndex
    })
  }

  get isStarted (): boolean { return this.running }

  /**
   * Subscribes to the topic (with a validator), installs the store-aware DHT validator and selector,
   * announces the latest stored snapshot (in the background) and starts the announce timer.
   */
  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.abort = new AbortController()
    this.pubsub.topicValidators.set(this.topic, this.validateMessage)
    this.pubsub.subscribe(this.topic)
    if (this.dht !== undefined) {
      // kad-dht shares these maps with its RPC handlers and queries: replacing the entry upgrades the
      // chain-only checks installed by libp2pServices to ones that read this node's committees
      this.previousValidator = this.dht.validators[SNAPSHOT_RECORD_NAMESPACE]
      this.previousSelector = this.dht.selectors[SNAPSHOT_RECORD_NAMESPACE]
      Object.assign(this.dht.validators, this.checker.dhtRecords().validators)
      Object.assign(this.dht.selectors, this.checker.dhtRecords().selectors)
    }
    this.background(this.tick())
    if (this.config.announceIntervalMs > 0) {
      this.timer = setInterval(() => { this.background(this.tick()) }, this.config.announceIntervalMs)
      this.timer.unref()
    }
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.abort.abort()
    try {
      this.pubsub.unsubscribe(this.topic)
    } catch {}
    if (this.pubsub.topicValidators.get(this.topic) === this.validateMessage) this.pubsub.topicValidators.delete(this.topic)
    if (this.dht !== undefined) {
      if (this.dht.validators[SNAPSHOT_RECORD_NAMESPACE] === this.checker.validate && this.previousValidator !== undefined) this.dht.validators[SNAPSHOT_RECORD_NAMESPACE] = this.previousValidator as any
      if (this.dht.selectors[SNAPSHOT_RECORD_NAMESPACE] === this.checker.select && this.previousSelector !== undefined) this.dht.selectors[SNAPSHOT_RECORD_NAMESPACE] = this.previousSelector as any
    }
    await Promise.allSettled([...this.inflight])
  }

  private background (p: Promise<unknown>): void {
    const q = p.catch((err: any) => { if (this.running) this.log.warn('snapshot discovery: %s', err?.message ?? err) })
    this.inflight.add(q)
    void q.finally(() => this.inflight.delete(q))
  }

  /** One announce round: the newest stored snapshot if it changed, then the own snapshots announced. */
  private async tick (): Promise<void> {
    if (!this.running) return
    if (this.snapshotStore !== undefined && !this.store.isClosed) {
      const latest = await this.snapshotStore.latest()
      if (latest !== undefined && latest !== this.lastStoredCommit) {
        const s = await this.snapshotStore.get(latest)
        if (s !== undefined && s.attestation.signatures.length > 0) {
          this.lastStoredCommit = latest
          try {
            await this.announce(s.attestationBytes)
          } catch (err: any) {
            // e.g. not attested by 2f+1 (a snapshot stored without a committee's signatures)
            this.log.warn('the stored snapshot of commit %d is not announced: %s', latest, err.message)
          }
          return
        }
      }
    }
    if (this.announced.size > 0) await this.reannounce()
  }

  /** Re-publishes the own announced snapshots and re-puts the DHT record (periodic). */
  private async reannounce (): Promise<void> {
    for (const a of this.ownNewestFirst()) await this.publish(a)
    await this.putRecord()
    const newest = this.ownNewestFirst()[0]
    if (newest !== undefined) await this.provide(newest, false)
  }

  private ownNewestFirst (): CheckedAttestation[] {
    return [...this.announced.values()].sort((a, b) => b.manifest.commitIndex - a.manifest.commitIndex)
  }

  /**
   * Announces a snapshot this node serves: gossip, DHT record (if it is the newest known), provider
   * record. Throws InvalidSnapshotError if the attestation is malformed, of another chain, or (the
   * committee of its epoch being known) not attested by 2f+1 of the stake. Network failures are logged,
   * not thrown (the next tick tries again).
   */
  async announce (attestationBytes: Uint8Array): Promise<AnnounceResult> {
    const checked = await this.checker.check(attestationBytes)
    const id = toHex(checked.digest)
    const prev = this.announced.get(id)
    if (prev === undefined || (checked.stake ?? checked.signers) > (prev.stake ?? prev.signers)) this.announced.set(id, checked)
    // keep the newest few
    const own = this.ownNewestFirst()
    for (const old of own.slice(this.config.maxAnnounced)) {
      this.announced.delete(toHex(old.digest))
      this.lastProvided.delete(toHex(old.digest))
    }
    this.trust(checked)
    this.stats.announced++
    const gossipRecipients = await this.publish(checked)
    const put = await this.putRecord()
    const providerPeers = await this.provide(checked, true)
    this.log.debug('announced the snapshot of commit %d (epoch %d): gossip to %d peers, DHT record on %d, provider record to %s', checked.manifest.commitIndex, checked.manifest.epoch, gossipRecipients, put.peers, providerPeers)
    return { commitIndex: checked.manifest.commitIndex, epoch: checked.manifest.epoch, gossipRecipients, recordCommit: put.commit, recordPeers: put.peers, providerPeers }
  }

  /** Raises the DHT record floor to a record known to be genuine. */
  private trust (c: CheckedAttestation): void {
    const t = this.trusted
    if (t === undefined || c.manifest.commitIndex > t.manifest.commitIndex ||
      (c.manifest.commitIndex === t.manifest.commitIndex && c.verified && (!t.verified || c.stake! > t.stake!))) this.trusted = c
  }

  private async publish (c: CheckedAttestation): Promise<number> {
    if (!this.running) return 0
    try {
      const r = await this.pubsub.publish(this.topic, c.attestationBytes)
      return r.recipients.length
    } catch (err: any) {
      this.log.debug('gossip of the snapshot of commit %d failed: %s', c.manifest.commitIndex, err.message)
      return 0
    }
  }

  private signal (timeoutMs = this.config.queryTimeoutMs, outer?: AbortSignal): AbortSignal {
    const signals = [this.abort.signal, AbortSignal.timeout(timeoutMs)]
    if (outer !== undefined) signals.push(outer)
    return AbortSignal.any(signals)
  }

  /** Puts the best genuine record known (own or verified) as the chain's latest snapshot record. */
  private async putRecord (): Promise<{ commit?: number, peers: number }> {
    const best = this.trusted
    if (this.dht === undefined || best === undefined || !this.running) return { peers: 0 }
    let peers = 0
    try {
      for await (const e of this.dht.put(this.recordKey, best.attestationBytes, { signal: this.signal() })) {
        if (e.name === 'PEER_RESPONSE' && String(e.messageType) === 'PUT_VALUE') peers++
      }
    } catch (err: any) {
      this.log.debug('DHT put of the snapshot record failed: %s', err.message)
    }
    return { commit: best.manifest.commitIndex, peers }
  }

  private async provide (c: CheckedAttestation, force: boolean): Promise<number | undefined> {
    if (this.dht === undefined || !this.running) return undefined
    const id = toHex(c.digest)
    const last = this.lastProvided.get(id)
    if (!force && last !== undefined && Date.now() - last < this.config.reprovideIntervalMs) return undefined
    let peers = 0
    try {
      for await (const e of this.dht.provide(cidOfDigest(c.digest), { signal: this.signal() })) {
        if (e.name === 'PEER_RESPONSE' && String(e.messageType) === 'ADD_PROVIDER') peers++
      }
      this.lastProvided.set(id, Date.now())
    } catch (err: any) {
      this.log.debug('DHT provide of the snapshot of commit %d failed: %s', c.manifest.commitIndex, err.message)
    }
    return peers
  }

  /** gossipsub validator of the topic: accept (and remember) valid announcements, reject others. */
  private readonly validateMessage = async (propagationSource: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    const from = msg.type === 'signed' ? msg.from : propagationSource
    const verdict = await this.consider(msg.data, { from, source: 'gossip' })
    if (verdict === 'reject') this.stats.gossipRejected++
    else if (verdict === 'accept') this.stats.gossipAccepted++
    return verdict === 'accept' ? TopicValidatorResult.Accept : verdict === 'reject' ? TopicValidatorResult.Reject : TopicValidatorResult.Ignore
  }

  /**
   * Takes in an attestation seen on the network (`from`: a peer that serves it). 'reject': malformed,
   * another chain, or forged (committee known); 'accept': remembered (verified or not); 'ignore': this
   * node's own announcement.
   */
  async consider (attestationBytes: Uint8Array, opts: { from?: PeerId, source: CandidateSource }): Promise<'accept' | 'reject' | 'ignore'> {
    let checked: CheckedAttestation
    try {
      checked = await this.checker.check(attestationBytes)
    } catch (err: any) {
      if (!(err instanceof InvalidSnapshotError)) throw err
      this.log.debug('refused a snapshot announcement%s: %s', opts.from !== undefined ? ` from ${opts.from.toString()}` : '', err.message)
      return 'reject'
    }
    if (opts.from !== undefined && opts.from.equals(this.peerId)) return 'ignore'
    this.remember(checked, opts.source, opts.from)
    return 'accept'
  }

  private remember (checked: CheckedAttestation, source: CandidateSource, from?: PeerId): Entry {
    const id = toHex(checked.digest)
    let e = this.entries.get(id)
    const now = Date.now()
    if (e === undefined) {
      e = { checked, cid: cidOfDigest(checked.digest), peers: new Map(), sources: new Set(), lastSeen: now }
      this.entries.set(id, e)
    } else if (betterAttestation(checked, e.checked)) {
      e.checked = checked
    }
    e.sources.add(source)
    e.lastSeen = now
    if (checked.verified) this.trust(checked)
    if (from !== undefined && !from.equals(this.peerId)) this.addPeer(e, from, source === 'gossip' ? 'gossip' : 'providers', now)
    this.evict()
    return e
  }

  private addPeer (e: Entry, peerId: PeerId, via: 'gossip' | 'providers', now: number): void {
    const k = peerId.toString()
    const p = e.peers.get(k)
    if (p !== undefined) { p.lastSeen = now; return }
    if (e.peers.size >= this.config.maxPeersPerCandidate) {
      // replace the least recently seen
      let oldest: string | undefined
      let t = Infinity
      for (const [key, v] of e.peers) if (v.lastSeen < t) { t = v.lastSeen; oldest = key }
      if (oldest !== undefined) e.peers.delete(oldest)
    }
    e.peers.set(k, { peerId, lastSeen: now, via })
  }

  private evict (): void {
    if (this.entries.size <= this.config.maxCandidates) return
    const ranked = [...this.entries.entries()].map(([id, e]) => ({ id, c: this.toCandidate(e) }))
    ranked.sort((a, b) => (Number(b.c.verified) - Number(a.c.verified)) || compareCandidates(a.c, b.c))
    for (const { id } of ranked.slice(this.config.maxCandidates)) this.entries.delete(id)
  }

  private toCandidate (e: Entry): SnapshotCandidate {
    const c = e.checked
    return {
      attestationBytes: c.attestationBytes,
      attestation: c.attestation,
      manifest: c.manifest,
      digest: c.digest,
      cid: e.cid,
      commitIndex: c.manifest.commitIndex,
      epoch: c.manifest.epoch,
      peers: [...e.peers.values()].map(p => p.peerId),
      verified: c.verified,
      stake: c.stake,
      sources: [...e.sources],
      latestRecord: this.latestRecordDigest === toHex(c.digest)
    }
  }

  /**
   * The snapshots found, best first (epoch, then serving peers, then commit index), without those
   * served by fewer than `minPeers` peers.
   */
  candidates (filter: CandidateFilter = {}): SnapshotCandidate[] {
    const minPeers = filter.minPeers ?? this.config.minSnapshotPeers
    return [...this.entries.values()]
      .map(e => this.toCandidate(e))
      .filter(c => c.peers.length >= minPeers && (filter.verifiedOnly !== true || c.verified))
      .sort(compareCandidates)
  }

  /** The best candidate, or undefined. */
  best (filter: CandidateFilter = {}): SnapshotCandidate | undefined {
    return this.candidates(filter)[0]
  }

  /**
   * Re-checks the unverified candidates against the committees now in the store (after committee
   * sync): forged ones are dropped; returns how many were dropped.
   */
  async verifyCandidates (): Promise<number> {
    let dropped = 0
    for (const [id, e] of [...this.entries]) {
      if (e.checked.verified) continue
      try {
        const c = await this.checker.check(e.checked.attestationBytes)
        if (c.verified) { e.checked = c; this.trust(c) }
      } catch (err) {
        if (!(err instanceof InvalidSnapshotError)) throw err
        this.entries.delete(id)
        dropped++
      }
    }
    return dropped
  }

  /** Forgets a candidate (e.g. the sync core found it forged or unservable). */
  forget (digest: Uint8Array): boolean {
    return this.entries.delete(toHex(digest))
  }

  /**
   * One discovery round: reads the chain's DHT record (every valid record peers return is a
   * candidate), then the DHT providers of the best ranked candidates. Returns `candidates()`.
   * Network failures are logged and end the round early, never thrown; an abort of `signal` is thrown.
   */
  async discover (opts: DiscoverOptions = {}): Promise<SnapshotCandidate[]> {
    await this.verifyCandidates()
    if (this.dht !== undefined) {
      await this.readRecord(opts)
      opts.signal?.throwIfAborted()
      const targets = [...this.entries.values()]
        .map(e => ({ e, c: this.toCandidate(e) }))
        .sort((a, b) => compareCandidates(a.c, b.c))
        .slice(0, this.config.maxProviderQueries)
      await Promise.all(targets.map(async t => { await this.findProviders(t.e, opts) }))
      opts.signal?.throwIfAborted()
    }
    return this.candidates()
  }

  private async readRecord (opts: DiscoverOptions): Promise<void> {
    const seen = new Map<string, Uint8Array>()
    let final: Uint8Array | undefined
    try {
      for await (const e of this.dht!.get(this.recordKey, { signal: this.signal(opts.timeoutMs, opts.signal) }) as AsyncIterable<QueryEvent>) {
        // records in responses were validated by kad-dht (our validator) before being yielded
        if (e.name === 'PEER_RESPONSE' && e.record != null) seen.set(toHex(e.record.value), e.record.value)
        else if (e.name === 'VALUE') { final = e.value; seen.set(toHex(e.value), e.value) }
      }
    } catch (err: any) {
      if (opts.signal?.aborted === true) throw err
      // e.g. NotFound, a correction that failed, a timeout: the records seen so far still count
      this.log.debug('DHT get of the snapshot record: %s', err.message)
    }
    for (const value of seen.values()) {
      this.stats.recordsSeen++
      const verdict = await this.consider(value, { source: 'dht-record' })
      if (verdict === 'reject') this.stats.recordsRejected++
    }
    if (final !== undefined) {
      try {
        this.latestRecordDigest = toHex((await this.checker.check(final)).digest)
      } catch {}
    } else if (seen.size > 0) {
      // the get ended before choosing (e.g. a failed correction): choose among what was seen
      const values = [...seen.values()]
      const i = await this.checker.select(this.recordKey, values)
      try {
        this.latestRecordDigest = toHex((await this.checker.check(values[i])).digest)
      } catch {}
    }
  }

  private async findProviders (e: Entry, opts: DiscoverOptions): Promise<void> {
    try {
      for await (const ev of this.dht!.findProviders(e.cid, { signal: this.signal(opts.timeoutMs, opts.signal) }) as AsyncIterable<QueryEvent>) {
        if (ev.name !== 'PROVIDER') continue
        const now = Date.now()
        for (const p of ev.providers) {
          if (p.id.equals(this.peerId)) continue
          this.addPeer(e, p.id, 'providers', now)
          e.sources.add('providers')
        }
      }
    } catch (err: any) {
      if (opts.signal?.aborted === true) throw err
      this.log.debug('DHT providers of the snapshot of commit %d: %s', e.checked.manifest.commitIndex, err.message)
    }
  }

  /**
   * Runs discovery rounds until a candidate passes `filter` (and `until`, if given), or throws
   * AbortedError-like errors when `timeoutMs` passes or `signal` aborts.
   */
  async waitForCandidates (opts: DiscoverOptions & CandidateFilter & { intervalMs?: number, until?: (c: SnapshotCandidate[]) => boolean } = {}): Promise<SnapshotCandidate[]> {
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000)
    const intervalMs = opts.intervalMs ?? 1000
    for (;;) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) throw new Error(`no snapshot found within ${opts.timeoutMs ?? 60_000} ms (${this.entries.size} seen, none served by ${opts.minPeers ?? this.config.minSnapshotPeers} peers)`)
      await this.discover({ signal: opts.signal, timeoutMs: Math.min(remaining, this.config.queryTimeoutMs) })
      const found = this.candidates(opts)
      if (found.length > 0 && (opts.until === undefined || opts.until(found))) return found
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, Math.min(intervalMs, Math.max(0, deadline - Date.now())))
        opts.signal?.addEventListener('abort', () => { clearTimeout(t); reject(opts.signal!.reason) }, { once: true })
      })
    }
  }

  /**
   * A candidate source for snapshot sync (`SnapshotCandidateSource` of src/snapshot/sync/candidates.ts):
   * each call runs one discovery round and returns the candidates, best first.
   *
   *     snapshotSyncServices({ store, sync: true, candidates: [o => discovery.candidateSource()(o)] })
   */
  candidateSource (filter: CandidateFilter = {}): (opts: { signal: AbortSignal }) => Promise<SnapshotCandidate[]> {
    return async ({ signal }) => {
      await this.discover({ signal })
      return this.candidates(filter)
    }
  }

  /**
   * What this node tells peers on /soma/snapshot-peers/1.0.0 (./discovery/exchange.ts): the snapshots it
   * announced itself (it is their first serving peer), then those whose attestation it verified against
   * the committee of their epoch (gossip announcements, DHT records; unverified ones are re-checked
   * first), newest commit first, each with its serving peers, at most `max`.
   */
  async book (max: number): Promise<BookEntry[]> {
    if (this.running && !this.store.isClosed) await this.verifyCandidates()
    const out = new Map<string, BookEntry>()
    for (const a of this.ownNewestFirst()) out.set(toHex(a.digest), { attestationBytes: a.attestationBytes, commitIndex: a.manifest.commitIndex, peers: [this.peerId] })
    const verified = [...this.entries.entries()]
      .filter(([, e]) => e.checked.verified && e.peers.size > 0)
      .sort(([, a], [, b]) => b.checked.manifest.commitIndex - a.checked.manifest.commitIndex)
    for (const [id, e] of verified) {
      const peers = [...e.peers.values()].sort((a, b) => b.lastSeen - a.lastSeen).map(p => p.peerId)
      const own = out.get(id)
      if (own !== undefined) own.peers.push(...peers)
      else out.set(id, { attestationBytes: e.checked.attestationBytes, commitIndex: e.checked.manifest.commitIndex, peers })
    }
    return [...out.values()].sort((a, b) => b.commitIndex - a.commitIndex).slice(0, Math.max(0, max))
  }

  /**
   * The serving peers of the snapshots found (gossip announcers, DHT providers), best candidate first,
   * for a node looking for a snapshot to dial; starts a discovery round (DHT) in the background when
   * none runs and the last began over `intervalMs` ago, so the caller never waits for the DHT.
   */
  servingPeers (intervalMs: number): Array<{ peerId: PeerId, commitIndex: number }> {
    if (this.running && this.dht !== undefined && this.backgroundRound === undefined && Date.now() - this.lastBackgroundRound >= intervalMs) {
      this.lastBackgroundRound = Date.now()
      const round: Promise<void> = this.discover({ signal: this.abort.signal })
        .then(() => {}, (err: any) => { this.log.debug('snapshot discovery round: %s', err?.message ?? err) })
        .finally(() => { this.backgroundRound = undefined; this.inflight.delete(round) })
      this.backgroundRound = round
      this.inflight.add(round)
    }
    return this.candidates({ minPeers: 1 }).flatMap(c => c.peers.map(peerId => ({ peerId, commitIndex: c.commitIndex })))
  }

  /** Fields for the node's /status. */
  status (): Record<string, unknown> {
    const best = this.best()
    return {
      snapshotDiscovery: {
        candidates: this.entries.size,
        announced: [...this.announced.values()].map(a => a.manifest.commitIndex).sort((a, b) => b - a),
        best: best === undefined ? null : { commit: best.commitIndex, epoch: best.epoch, peers: best.peers.length, verified: best.verified }
      }
    }
  }
}

/** More signing stake (verified beats unverified), else the one already held. */
function betterAttestation (a: CheckedAttestation, b: CheckedAttestation): boolean {
  if (a.verified !== b.verified) return a.verified
  return (a.stake ?? a.signers) > (b.stake ?? b.signers)
}

/**
 * A libp2p service factory of snapshot discovery, for `createLibp2p({ services: { snapshotDiscovery:
 * snapshotDiscoveryService({ store }) } })`: it reads `pubsub` and `dht` from the node's components and
 * starts after libp2p has (it publishes and queries the DHT).
 */
export function snapshotDiscoveryService (init: Omit<SnapshotDiscoveryInit, 'libp2p' | 'components'>): (components: any) => SnapshotDiscovery & { afterStart: () => Promise<void>, beforeStop: () => Promise<void> } {
  return (components: any) => {
    // libp2p's components object throws for a service that does not exist (a node without a DHT)
    const get = (name: string): any => { try { return components[name] } catch { return undefined } }
    const d = new SnapshotDiscovery({ ...init, components: { peerId: components.peerId, pubsub: get('pubsub'), dht: get('dht') } }) as SnapshotDiscovery & { afterStart: () => Promise<void>, beforeStop: () => Promise<void> }
    // libp2p calls start() on every service before afterStart(): run discovery's start once all are up
    const start = d.start.bind(d)
    d.start = async () => {}
    d.afterStart = start
    d.beforeStop = d.stop.bind(d)
    return d
  }
}
