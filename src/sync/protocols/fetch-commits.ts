/**
 * /soma/fetch-commits/1.0.0 — a range of commits plus the certifier blocks that vote for the last one.
 *
 * The server answers at most `commitSyncBatchSize` commits, never past the last commit of the epoch
 * of the range's start, and never more than `maxFetchResponseBytes` in all: it truncates to the
 * longest prefix that fits and that it can certify with stored votes of 2f+1 stake.
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import { SyncCodecs, PROTOCOL_FETCH_COMMITS, type FetchCommitsRequest, type FetchCommitsResponse } from './messages.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { OversizedResponseError, ProtocolViolationError } from '../../errors.ts'

export interface FetchCommitsInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
  /** Most commits per request (seed: commit_sync_batch_size). @default 100 */
  commitSyncBatchSize?: number
  /** Most bytes per response (seed: max_fetch_response_bytes). @default 4 MiB */
  maxFetchResponseBytes?: number
}

export type FetchCommitsComponents = RpcComponents

export class FetchCommits implements Startable {
  readonly [Symbol.toStringTag] = '@soma/fetch-commits'
  readonly [serviceCapabilities] = ['@soma/fetch-commits']
  readonly rpc: RpcProtocol<FetchCommitsRequest, FetchCommitsResponse>
  readonly batchSize: number
  readonly maxResponseBytes: number
  private readonly store?: ChainStore

  constructor (components: FetchCommitsComponents, init: FetchCommitsInit = {}) {
    this.store = init.store
    this.batchSize = init.commitSyncBatchSize ?? 100
    this.maxResponseBytes = init.maxFetchResponseBytes ?? 4 * 1024 * 1024
    this.rpc = new RpcProtocol(components, PROTOCOL_FETCH_COMMITS, {
      request: SyncCodecs.FetchCommitsRequest,
      response: SyncCodecs.FetchCommitsResponse
    }, { ...init, maxRequestBytes: 64, maxResponseBytes: this.maxResponseBytes + 64 * 1024, price: () => this.maxResponseBytes },
    this.store === undefined ? undefined : async (req) => await this.serve(req))
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop() }

  /** The server side, exposed for tests. */
  async serve (req: FetchCommitsRequest): Promise<FetchCommitsResponse> {
    const store = this.store!
    const empty = (error: string): FetchCommitsResponse => ({ commits: [], certifierBlocks: [], error })
    if (!Number.isSafeInteger(req.start) || !Number.isSafeInteger(req.end) || req.start < 1 || req.end < req.start) {
      return empty(`bad range ${req.start}..${req.end}`)
    }
    if (req.start < store.lowestAvailable || req.start > store.highestSynced) {
      return empty(`commit ${req.start} not available (have ${store.lowestAvailable}..${store.highestSynced})`)
    }
    let end = Math.min(req.end, req.start + this.batchSize - 1, store.highestSynced)
    const first = await store.getCommit(req.start)
    if (first === undefined) return empty(`commit ${req.start} not stored`)
    // epoch boundary: answer only up to the last commit of the epoch of the range's start
    const lastOfEpoch = await store.getLastCommitIndexOfEpoch(first.epoch)
    if (lastOfEpoch !== undefined) end = Math.min(end, lastOfEpoch)
    const commits = await store.getCommitRange(req.start, end)
    // the longest prefix that ends on a commit we can certify and that fits the response limit
    let prefixBytes = commits.reduce((s, c) => s + c.bytes.byteLength + 8, 0)
    for (let e = commits.length - 1; e >= 0; e--) {
      const c = commits[e]
      if (e < commits.length - 1) prefixBytes -= commits[e + 1].bytes.byteLength + 8
      const committee = await store.getCommittee(c.epoch)
      if (committee === undefined) continue
      const q = await store.quorumVotes(c.index, c.digest, committee)
      if ('short' in q) continue
      const blocks = await store.getBlocks(q.votes.map(v => v.ref))
      if (blocks.some(b => b === undefined)) continue
      const size = prefixBytes + blocks.reduce((s, b) => s + b!.byteLength + 8, 0)
      if (size > this.maxResponseBytes) continue
      return { commits: commits.slice(0, e + 1).map(x => x.bytes), certifierBlocks: blocks as Uint8Array[] }
    }
    return empty(`cannot certify commits ${req.start}..${end} within ${this.maxResponseBytes} bytes`)
  }

  /**
   * Fetches commits start..end from a peer. Only the shape is checked here (count, size); the
   * sync logic verifies chain links and certification.
   */
  async fetch (peer: PeerId, start: number, end: number, options?: AbortOptions): Promise<FetchCommitsResponse> {
    const res = await this.rpc.request(peer, { start, end }, options)
    if (res.commits.length === 0) throw new ProtocolViolationError(`${peer.toString()} returned no commits for ${start}..${end}`)
    if (res.commits.length > end - start + 1) throw new ProtocolViolationError(`${peer.toString()} returned ${res.commits.length} commits for a range of ${end - start + 1}`)
    const size = res.commits.reduce((s, c) => s + c.byteLength, 0) + res.certifierBlocks.reduce((s, b) => s + b.byteLength, 0)
    if (size > this.maxResponseBytes) throw new OversizedResponseError(`${peer.toString()} sent ${size} bytes of commits, the limit is ${this.maxResponseBytes}`)
    return res
  }
}

export function fetchCommits (init: FetchCommitsInit = {}): (components: FetchCommitsComponents) => FetchCommits {
  return (components) => new FetchCommits(components, init)
}
