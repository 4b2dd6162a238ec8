/**
 * Snapshot peer exchange: /soma/snapshot-peers/1.0.0 — "which attested snapshots do you know of, and who
 * serves them?" (protocols/snapshot.proto, `GetSnapshotPeersRequest`).
 *
 * Why: a node looking for a snapshot asks its connected peers for one directly
 * (/soma/snapshot-manifest/1.0.0), but its entrypoints may make no snapshots; gossip reaches it only at
 * the next announcement and the DHT only once its routing table has filled. Every node therefore
 * remembers the snapshot announcements it accepted on gossipsub (SnapshotDiscovery: verified against the
 * committee of their epoch, 2f+1 of the stake) and who made them, and answers this request from them
 * (and from the snapshots it serves itself), so one hop through any entrypoint finds the serving peers.
 *
 * Server (`serve`): the book (`SnapshotDiscovery.book()`: own snapshots first, then verified ones by
 * newest commit), at most `maxSnapshots` (and the client's `max_snapshots`) sources of at most
 * `maxProviders` providers each, every provider with the addresses the peer store has for it (at most
 * MAX_PROVIDER_ADDRS), the node itself with its own.
 *
 * Client (`ask`): the answer is checked for shape and limits (more sources or providers than asked or
 * allowed: ProtocolViolationError; a peer id or address that does not decode: MalformedMessageError) and
 * every attestation with the node's committees (SnapshotRecordChecker: another chain, or forged with the
 * committee of its epoch known: InvalidSnapshotError). The caller penalizes the answering peer for each.
 *
 * Finder (`find`, what a syncing node runs each discovery round): asks each connected peer at most once
 * per `intervalMs`, remembers the providers it learned (at most 128, forgotten after 10 intervals without
 * news), and dials in the background those it is not connected to (newest snapshot first, at most
 * `maxDials` at once, each dial bounded by `dialTimeoutMs`; after a failure the provider is tried again
 * after `intervalMs` × 2^(failures−1), at most 8×), with the addresses it learned.
 * Nothing a provider is said to serve is taken on trust: once connected, the snapshot sync asks the
 * provider itself (/soma/snapshot-manifest/1.0.0) and verifies what it offers, as for any peer. So a
 * lying answer costs at most a bounded number of dials, never a wrong candidate or an innocent peer's
 * penalty.
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type PeerStore, type Startable } from '@libp2p/interface'
import type { ConnectionManager } from '@libp2p/interface-internal'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import * as Digest from 'multiformats/hashes/digest'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import { codec } from '../../chain/proto.ts'
import { DEFAULTS, type SomaConfig } from '../../config.ts'
import { InvalidSnapshotError, MalformedMessageError, OversizedResponseError, ProtocolViolationError } from '../../errors.ts'
import { silentLogger, type Logger } from '../../utils/logger.ts'
import type { CheckedAttestation, SnapshotRecordChecker } from './records.ts'

export const PROTOCOL_SNAPSHOT_PEERS = '/soma/snapshot-peers/1.0.0'
/** Largest attestation in an answer (as /soma/snapshot-manifest/1.0.0). */
export const MAX_EXCHANGE_ATTESTATION_BYTES = 128 * 1024
/** Most addresses per provider (served, and accepted). */
export const MAX_PROVIDER_ADDRS = 8
/** Largest address (binary multiaddr) accepted. */
export const MAX_ADDR_BYTES = 256
/** Providers a finder remembers (to dial again after a failure). */
const MAX_TARGETS = 128

interface DialTarget { peerId: PeerId, commitIndex: number, addrs: Multiaddr[], learnedAt: number, failures: number, nextDial: number }

export interface GetSnapshotPeersRequest { maxSnapshots: number }
export interface SnapshotProviderMessage { peerId: Uint8Array, addrs: Uint8Array[] }
export interface SnapshotSourceMessage { attestation: Uint8Array, providers: SnapshotProviderMessage[] }
export interface GetSnapshotPeersResponse { sources: SnapshotSourceMessage[], error?: string }

export const SnapshotPeersCodecs = {
  GetSnapshotPeersRequest: codec<GetSnapshotPeersRequest>('soma.GetSnapshotPeersRequest'),
  GetSnapshotPeersResponse: codec<GetSnapshotPeersResponse>('soma.GetSnapshotPeersResponse')
}

/** One snapshot a node knows of, with the peers that serve it (this node's own peer id when it does). */
export interface BookEntry {
  attestationBytes: Uint8Array
  commitIndex: number
  peers: PeerId[]
}

/** What a node knows of (newest first, at most `max`): SnapshotDiscovery.book. */
export type SnapshotBook = (max: number) => Promise<BookEntry[]>

/** A snapshot a peer told of: its checked attestation and the providers with their addresses. */
export interface ExchangedSnapshot {
  checked: CheckedAttestation
  providers: Array<{ peerId: PeerId, addrs: Multiaddr[] }>
}

export interface SnapshotExchangeConfig {
  /** sources per answer (served and accepted). @default 8 */
  maxSnapshots: number
  /** providers per source (served and accepted). @default 16 */
  maxProviders: number
  /** a connected peer is asked, and a provider dialed, at most once per this. @default 10 s */
  intervalMs: number
  /** providers dialed per `find` round. @default 8 */
  maxDials: number
  /** time limit of one ask. @default min(config.timeoutMs, 5 s) */
  askTimeoutMs: number
  /** time limit of one dial. @default config.timeoutMs */
  dialTimeoutMs: number
}

export const DEFAULT_EXCHANGE_CONFIG: Readonly<SnapshotExchangeConfig> = Object.freeze({
  maxSnapshots: DEFAULTS.snapshotExchangeMaxSnapshots,
  maxProviders: DEFAULTS.snapshotExchangeMaxProviders,
  intervalMs: DEFAULTS.snapshotExchangeIntervalMs,
  maxDials: DEFAULTS.snapshotExchangeMaxDials,
  askTimeoutMs: Math.min(DEFAULTS.timeoutMs, 5000),
  dialTimeoutMs: DEFAULTS.timeoutMs
})

/** The exchange settings of a node's config. */
export function snapshotExchangeConfig (config: Partial<Pick<SomaConfig, 'snapshotExchangeMaxSnapshots' | 'snapshotExchangeMaxProviders' | 'snapshotExchangeIntervalMs' | 'snapshotExchangeMaxDials' | 'timeoutMs'>>): Partial<SnapshotExchangeConfig> {
  const out: Partial<SnapshotExchangeConfig> = {}
  if (config.snapshotExchangeMaxSnapshots !== undefined) out.maxSnapshots = config.snapshotExchangeMaxSnapshots
  if (config.snapshotExchangeMaxProviders !== undefined) out.maxProviders = config.snapshotExchangeMaxProviders
  if (config.snapshotExchangeIntervalMs !== undefined) out.intervalMs = config.snapshotExchangeIntervalMs
  if (config.snapshotExchangeMaxDials !== undefined) out.maxDials = config.snapshotExchangeMaxDials
  if (config.timeoutMs !== undefined) { out.askTimeoutMs = Math.min(config.timeoutMs, 5000); out.dialTimeoutMs = config.timeoutMs }
  return out
}

/** The libp2p components the exchange uses (a libp2p node's). */
export interface SnapshotExchangeComponents extends RpcComponents {
  peerId: PeerId
  peerStore?: Pick<PeerStore, 'get' | 'merge'>
  addressManager?: { getAddresses: () => Multiaddr[] }
  connectionManager: RpcComponents['connectionManager'] & Pick<ConnectionManager, 'getConnections' | 'openConnection'>
}

export interface SnapshotExchangeInit extends RpcInit {
  /** checks attestations of answers (chain; signatures when the committee of the epoch is known) */
  checker: SnapshotRecordChecker
  /** what this node answers from; without one it answers none (client only) */
  book?: SnapshotBook
  config?: Partial<SnapshotExchangeConfig>
  /** @default silent */
  logger?: Logger
}

/** What a `find` round did. */
export interface FindResult {
  /** peers asked this round */
  asked: number
  /** of them, peers that answered with at least one snapshot */
  knowing: number
  /** distinct snapshots learned, newest commit first */
  commits: number[]
  /** dials started (in the background: see `dialsSettled()`) */
  dialed: number
  /** providers learned this round that this node is already connected to */
  connected: number
}

export class SnapshotExchange implements Startable {
  readonly [Symbol.toStringTag] = '@soma/snapshot-peers'
  readonly [serviceCapabilities] = ['@soma/snapshot-peers']
  readonly rpc: RpcProtocol<GetSnapshotPeersRequest, GetSnapshotPeersResponse>
  readonly config: SnapshotExchangeConfig
  readonly stats = { served: 0, asked: 0, answers: 0, refused: 0, dialed: 0, dialFailures: 0 }
  private readonly c: SnapshotExchangeComponents
  private readonly checker: SnapshotRecordChecker
  private readonly book?: SnapshotBook
  private readonly log: Logger
  private readonly lastAsked = new Map<string, number>()
  private lastNoPeerLog = -Infinity
  /** providers learned (bounded, least recently learned dropped first) and the dials in flight */
  private readonly targets = new Map<string, DialTarget>()
  private readonly dialing = new Map<string, Promise<void>>()
  private stopping = new AbortController()

  constructor (components: SnapshotExchangeComponents, init: SnapshotExchangeInit) {
    this.c = components
    this.checker = init.checker
    this.book = init.book
    this.log = init.logger ?? silentLogger('snapshot-peers')
    this.config = { ...DEFAULT_EXCHANGE_CONFIG, ...init.config }
    for (const k of ['maxSnapshots', 'maxProviders', 'intervalMs', 'askTimeoutMs', 'dialTimeoutMs'] as const) {
      if (!Number.isInteger(this.config[k]) || this.config[k] < 1) throw new RangeError(`snapshot exchange ${k} must be an integer >= 1, got ${this.config[k]}`)
    }
    if (!Number.isInteger(this.config.maxDials) || this.config.maxDials < 0) throw new RangeError(`snapshot exchange maxDials must be an integer >= 0, got ${this.config.maxDials}`)
    const perProvider = 64 + MAX_PROVIDER_ADDRS * (MAX_ADDR_BYTES + 4)
    this.rpc = new RpcProtocol(components, PROTOCOL_SNAPSHOT_PEERS, {
      request: SnapshotPeersCodecs.GetSnapshotPeersRequest,
      response: SnapshotPeersCodecs.GetSnapshotPeersResponse
    }, {
      ...init,
      maxRequestBytes: 16,
      maxResponseBytes: this.config.maxSnapshots * (MAX_EXCHANGE_ATTESTATION_BYTES + 16 + this.config.maxProviders * perProvider) + 1024
    }, this.book === undefined ? undefined : async (req) => await this.serve(req))
  }

  async start (): Promise<void> {
    if (this.stopping.signal.aborted) this.stopping = new AbortController()
    await this.rpc.start()
  }

  async stop (): Promise<void> {
    this.stopping.abort()
    await this.rpc.stop()
    await this.dialsSettled()
  }

  /** The server side, exposed for tests. */
  async serve (req: GetSnapshotPeersRequest): Promise<GetSnapshotPeersResponse> {
    if (!Number.isSafeInteger(req.maxSnapshots) || req.maxSnapshots < 0) return { sources: [], error: `bad max_snapshots ${req.maxSnapshots}` }
    const max = req.maxSnapshots === 0 ? this.config.maxSnapshots : Math.min(req.maxSnapshots, this.config.maxSnapshots)
    const entries = this.book === undefined ? [] : await this.book(max)
    const sources: SnapshotSourceMessage[] = []
    for (const e of entries) {
      if (sources.length >= max) break
      if (e.attestationBytes.byteLength > MAX_EXCHANGE_ATTESTATION_BYTES || e.peers.length === 0) continue
      const providers: SnapshotProviderMessage[] = []
      for (const p of e.peers.slice(0, this.config.maxProviders)) {
        providers.push({ peerId: p.toMultihash().bytes, addrs: (await this.addrsOf(p)).map(a => a.bytes) })
      }
      sources.push({ attestation: e.attestationBytes, providers })
    }
    this.stats.served++
    return { sources }
  }

  /** A peer's addresses as this node knows them (its own for itself), at most MAX_PROVIDER_ADDRS. */
  private async addrsOf (peer: PeerId): Promise<Multiaddr[]> {
    let addrs: Multiaddr[] = []
    try {
      if (peer.equals(this.c.peerId)) addrs = this.c.addressManager?.getAddresses() ?? []
      else if (this.c.peerStore !== undefined) addrs = (await this.c.peerStore.get(peer)).addresses.map(a => a.multiaddr)
    } catch {
      // not in the peer store: the peer id alone
    }
    return addrs.filter(a => a.bytes.byteLength <= MAX_ADDR_BYTES).slice(0, MAX_PROVIDER_ADDRS)
  }

  /**
   * Asks a peer which snapshots it knows of and who serves them. Throws PeerTimeoutError /
   * PeerRequestFailedError (network, refusal: no penalty worth it), OversizedResponseError,
   * MalformedMessageError, ProtocolViolationError (over the limits) or InvalidSnapshotError (an
   * attestation of another chain, malformed, or forged when the committee of its epoch is known here).
   */
  async ask (peer: PeerId, options: AbortOptions = {}): Promise<ExchangedSnapshot[]> {
    const max = this.config.maxSnapshots
    const res = await this.rpc.request(peer, { maxSnapshots: max }, options)
    const who = peer.toString()
    if (res.sources.length > max) throw new ProtocolViolationError(`${who} answered /soma/snapshot-peers with ${res.sources.length} snapshots, more than the ${max} asked`)
    const out: ExchangedSnapshot[] = []
    for (const s of res.sources) {
      if (s.providers.length > this.config.maxProviders) throw new ProtocolViolationError(`${who} named ${s.providers.length} providers of one snapshot, the limit is ${this.config.maxProviders}`)
      if (s.attestation.byteLength > MAX_EXCHANGE_ATTESTATION_BYTES) throw new OversizedResponseError(`${who} sent a snapshot attestation of ${s.attestation.byteLength} bytes (max ${MAX_EXCHANGE_ATTESTATION_BYTES})`)
      const providers: ExchangedSnapshot['providers'] = []
      for (const p of s.providers) {
        let peerId: PeerId
        try {
          peerId = peerIdFromMultihash(Digest.decode(p.peerId))
        } catch (err: any) {
          throw new MalformedMessageError(`${who} named a provider whose peer id does not decode: ${err.message}`)
        }
        if (p.addrs.length > MAX_PROVIDER_ADDRS) throw new ProtocolViolationError(`${who} sent ${p.addrs.length} addresses of provider ${peerId.toString()}, the limit is ${MAX_PROVIDER_ADDRS}`)
        const addrs: Multiaddr[] = []
        for (const a of p.addrs) {
          if (a.byteLength > MAX_ADDR_BYTES) throw new ProtocolViolationError(`${who} sent an address of ${a.byteLength} bytes (max ${MAX_ADDR_BYTES})`)
          try {
            addrs.push(multiaddr(a))
          } catch (err: any) {
            throw new MalformedMessageError(`${who} sent an address of provider ${peerId.toString()} that does not decode: ${err.message}`)
          }
        }
        providers.push({ peerId, addrs })
      }
      let checked: CheckedAttestation
      try {
        checked = await this.checker.check(s.attestation)
      } catch (err: any) {
        if (err instanceof InvalidSnapshotError) throw new InvalidSnapshotError(`${who} told of a snapshot that is not attested: ${err.message}`)
        throw err
      }
      out.push({ checked, providers })
    }
    return out
  }

  /**
   * One round of finding serving peers (see the module doc): asks the connected peers not asked within
   * `intervalMs`, penalizes (through `penalize`) those whose answer breaks the rules, remembers the
   * providers learned (and `extraTargets`, e.g. serving peers known from gossip or the DHT), and starts
   * dials (in the background: a dial outlives the round, bounded by `dialTimeoutMs`) to those this node
   * is not connected to, newest snapshot first, at most `maxDials` at once; a provider whose dial failed
   * is tried again after `intervalMs` × 2^failures (at most 8×). Logs at info what it found, or why it
   * found nothing. Resolves once the asks are answered (`dialsSettled()` waits for the dials).
   */
  async find (opts: { signal: AbortSignal, penalize?: (peer: PeerId, err: Error) => void, extraTargets?: Array<{ peerId: PeerId, commitIndex: number }> }): Promise<FindResult> {
    const now = Date.now()
    const self = this.c.peerId.toString()
    const connected = new Map(this.c.connectionManager.getConnections().map(c => [c.remotePeer.toString(), c.remotePeer]))
    const toAsk = [...connected.entries()].filter(([k]) => now - (this.lastAsked.get(k) ?? -Infinity) >= this.config.intervalMs).map(([, p]) => p)
    for (const p of toAsk) this.lastAsked.set(p.toString(), now)
    this.trim(this.lastAsked, now)
    const result: FindResult = { asked: toAsk.length, knowing: 0, commits: [], dialed: 0, connected: 0 }
    const learned = new Set<string>()
    const target = (peerId: PeerId, commitIndex: number, addrs: Multiaddr[]): void => {
      const k = peerId.toString()
      if (k === self) return
      learned.add(k)
      const t = this.targets.get(k)
      if (t === undefined) {
        this.targets.set(k, { peerId, commitIndex, addrs: addrs.slice(0, MAX_PROVIDER_ADDRS), learnedAt: now, failures: 0, nextDial: 0 })
        // bounded: the least recently learned go first
        while (this.targets.size > MAX_TARGETS) this.targets.delete(this.targets.keys().next().value!)
      } else {
        t.commitIndex = Math.max(t.commitIndex, commitIndex)
        t.learnedAt = now
        if (addrs.length > 0) t.addrs = addrs.slice(0, MAX_PROVIDER_ADDRS)
      }
    }
    const commits = new Set<number>()
    await Promise.all(toAsk.map(async peer => {
      this.stats.asked++
      try {
        const found = await this.ask(peer, { signal: AbortSignal.any([opts.signal, AbortSignal.timeout(this.config.askTimeoutMs)]) })
        this.stats.answers++
        if (found.length > 0) result.knowing++
        for (const s of found) {
          commits.add(s.checked.manifest.commitIndex)
          for (const p of s.providers) target(p.peerId, s.checked.manifest.commitIndex, p.addrs)
        }
      } catch (err: any) {
        if (opts.signal.aborted) return
        if (err instanceof InvalidSnapshotError || err instanceof MalformedMessageError || err instanceof ProtocolViolationError || err instanceof OversizedResponseError) {
          this.stats.refused++
          this.log.warn('snapshot discovery: %s refused: %s', peer.toString(), err.message)
          opts.penalize?.(peer, err)
        } else {
          // an older peer without the protocol, a refusal, a timeout: nothing learned from it this round
          this.log.debug('snapshot discovery: /soma/snapshot-peers to %s failed: %s', peer.toString(), err.message)
        }
      }
    }))
    for (const t of opts.extraTargets ?? []) target(t.peerId, t.commitIndex, [])
    result.commits = [...commits].sort((a, b) => b - a)
    opts.signal.throwIfAborted()
    // forget providers not heard of for a while; dial those due, newest snapshot first
    for (const [k, t] of this.targets) if (now - t.learnedAt > 10 * this.config.intervalMs) this.targets.delete(k)
    const due: DialTarget[] = []
    for (const [k, t] of this.targets) {
      if (connected.has(k)) { if (learned.has(k)) result.connected++; t.failures = 0; continue }
      if (!this.dialing.has(k) && now >= t.nextDial) due.push(t)
    }
    due.sort((a, b) => b.commitIndex - a.commitIndex)
    for (const t of due.slice(0, Math.max(0, this.config.maxDials - this.dialing.size))) {
      result.dialed++
      this.dial(t)
    }
    if (connected.size === 0) {
      if (now - this.lastNoPeerLog >= this.config.intervalMs) {
        this.lastNoPeerLog = now
        this.log.info('snapshot discovery: waiting for a snapshot source: no peer is connected to ask')
      }
    } else if (toAsk.length > 0 || result.dialed > 0) {
      if (commits.size === 0 && learned.size === 0) this.log.info('snapshot discovery: waiting for a snapshot source: none of the %d peers asked knows a snapshot (they make none and heard no announcement yet); asking again in %d s, and listening to gossip', toAsk.length, Math.round(this.config.intervalMs / 1000))
      else this.log.info('snapshot discovery: %d of %d peers asked know snapshots (commits %s); %d serving peers learned: %d already connected, %d dials started (%d in flight)', result.knowing, toAsk.length, result.commits.join(', ') || '-', learned.size, result.connected, result.dialed, this.dialing.size)
    }
    return result
  }

  /** Dials a provider in the background (bounded by dialTimeoutMs and stop()); a failure backs off. */
  private dial (t: DialTarget): void {
    const k = t.peerId.toString()
    const p = (async () => {
      try {
        if (t.addrs.length > 0 && this.c.peerStore !== undefined) await this.c.peerStore.merge(t.peerId, { multiaddrs: t.addrs })
        await this.c.connectionManager.openConnection(t.peerId, { signal: AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.config.dialTimeoutMs)]) })
        t.failures = 0
        this.stats.dialed++
        this.log.info('snapshot discovery: dialed %s, which serves the snapshot of commit %d: the snapshot sync asks it directly', k, t.commitIndex)
      } catch (err: any) {
        if (this.stopping.signal.aborted) return
        t.failures++
        const backoff = this.config.intervalMs * 2 ** Math.min(t.failures - 1, 3)
        t.nextDial = Date.now() + backoff
        this.stats.dialFailures++
        this.log.info('snapshot discovery: %s (said to serve the snapshot of commit %d) is unreachable: %s; trying again in %d s', k, t.commitIndex, err.message, Math.round(backoff / 1000))
      }
    })()
    this.dialing.set(k, p)
    void p.finally(() => { this.dialing.delete(k) })
  }

  /** Resolves when the dials started so far have ended (tests). */
  async dialsSettled (): Promise<void> {
    await Promise.allSettled([...this.dialing.values()])
  }

  /** Forgets timestamps older than the interval (bounded maps). */
  private trim (m: Map<string, number>, now: number): void {
    if (m.size < 1024) return
    for (const [k, t] of m) if (now - t >= this.config.intervalMs) m.delete(k)
  }
}

/** The exchange as a libp2p service (`createLibp2p({ services: { snapshotExchange: snapshotExchange({...}) } })`). */
export function snapshotExchange (init: SnapshotExchangeInit): (components: SnapshotExchangeComponents) => SnapshotExchange {
  return (components) => new SnapshotExchange(components, init)
}
