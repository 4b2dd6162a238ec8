/**
 * /soma/snapshot-listing/1.0.0 — the listing of a snapshot, paged: rows start.. in canonical order, at
 * most `limit`, `maxRowsPerPage` and `maxPageBytes` (the first row always, if start is in range).
 *
 * The server keeps the stored listing bytes of the last few snapshots asked for with the offset of each
 * row, and sends a page as a slice of those bytes (the response's field 1 has the same framing as
 * SnapshotListing's): no decoding or re-encoding, 8 bytes of index per row.
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { SnapshotStore } from '../snapshot-store.ts'
import type { ChunkInfo } from '../chunk-format.ts'
import { OversizedResponseError, ProtocolViolationError } from '../../errors.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_LISTING, listingRowOffsets, type GetSnapshotListingRequest, type GetSnapshotListingResponse } from './messages.ts'

export const DEFAULT_LISTING_PAGE_ROWS = 8192
export const DEFAULT_LISTING_PAGE_BYTES = 2 * 1024 * 1024

export interface SnapshotListingInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
  /** Most rows per page (served and asked). @default 8192 */
  maxRowsPerPage?: number
  /** Most bytes of rows per page. @default 2 MiB */
  maxPageBytes?: number
  /** Listings kept indexed in memory by the server. @default 2 */
  cachedListings?: number
}

interface IndexedListing { bytes: Uint8Array, offsets: Float64Array }

export class SnapshotListingService implements Startable {
  readonly [Symbol.toStringTag] = '@soma/snapshot-listing'
  readonly [serviceCapabilities] = ['@soma/snapshot-listing']
  readonly rpc: RpcProtocol<GetSnapshotListingRequest, GetSnapshotListingResponse>
  readonly maxRowsPerPage: number
  readonly maxPageBytes: number
  private readonly store?: ChainStore
  private readonly cache = new Map<number, IndexedListing>()
  private readonly cachedListings: number

  constructor (components: RpcComponents, init: SnapshotListingInit = {}) {
    this.store = init.store
    this.maxRowsPerPage = init.maxRowsPerPage ?? DEFAULT_LISTING_PAGE_ROWS
    this.maxPageBytes = init.maxPageBytes ?? DEFAULT_LISTING_PAGE_BYTES
    this.cachedListings = init.cachedListings ?? 2
    this.rpc = new RpcProtocol(components, PROTOCOL_SNAPSHOT_LISTING, {
      request: SnapshotSyncCodecs.GetSnapshotListingRequest,
      response: SnapshotSyncCodecs.GetSnapshotListingResponse
    }, { ...init, maxRequestBytes: 64, maxResponseBytes: this.maxPageBytes + 64 * 1024 },
    this.store === undefined ? undefined : async (req) => await this.serve(req))
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop(); this.cache.clear() }

  private async indexed (commit: number): Promise<IndexedListing | undefined> {
    const snaps = new SnapshotStore(this.store!)
    if (!await snaps.has(commit)) { this.cache.delete(commit); return undefined }
    let l = this.cache.get(commit)
    if (l === undefined) {
      const bytes = await snaps.getListingBytes(commit)
      l = { bytes, offsets: listingRowOffsets(bytes) }
      this.cache.set(commit, l)
      while (this.cache.size > this.cachedListings) this.cache.delete(this.cache.keys().next().value!)
    } else {
      // most recently used last
      this.cache.delete(commit); this.cache.set(commit, l)
    }
    return l
  }

  /** The server side, exposed for tests. */
  async serve (req: GetSnapshotListingRequest): Promise<GetSnapshotListingResponse> {
    const empty = (error: string): GetSnapshotListingResponse => ({ chunks: [], error })
    if (!Number.isSafeInteger(req.commitIndex) || req.commitIndex < 1 || !Number.isSafeInteger(req.start) || req.start < 0) return empty(`bad request (commit ${req.commitIndex}, start ${req.start})`)
    const l = await this.indexed(req.commitIndex)
    if (l === undefined) return empty(`no snapshot of commit ${req.commitIndex}`)
    const count = l.offsets.length - 1
    if (req.start >= count) return { chunks: [], rows: new Uint8Array(0) }
    const limit = Math.min(req.limit > 0 ? req.limit : this.maxRowsPerPage, this.maxRowsPerPage)
    const maxBytes = req.maxBytes !== undefined && req.maxBytes > 0 ? Math.min(req.maxBytes, this.maxPageBytes) : this.maxPageBytes
    let end = Math.min(count, req.start + limit)
    // at most maxBytes, at least one row: the largest end that fits (binary search)
    const base = l.offsets[req.start]
    if (l.offsets[end] - base > maxBytes) {
      let lo = req.start + 1
      let hi = end
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2)
        if (l.offsets[mid] - base <= maxBytes) lo = mid
        else hi = mid - 1
      }
      end = lo
    }
    return { chunks: [], rows: l.bytes.subarray(l.offsets[req.start], l.offsets[end]) }
  }

  /**
   * Rows start.. of the listing of the snapshot of `commit` from a peer (at most `limit`). Only the
   * shape is checked here; the sync checks every row against the filter and the whole listing against
   * the manifest.
   */
  async fetch (peer: PeerId, commit: number, start: number, limit: number, options?: AbortOptions): Promise<ChunkInfo[]> {
    const res = await this.rpc.request(peer, { commitIndex: commit, start, limit, maxBytes: this.maxPageBytes }, options)
    if (res.chunks.length > limit) throw new ProtocolViolationError(`${peer.toString()} sent ${res.chunks.length} listing rows for a page of ${limit}`)
    if (res.chunks.length > this.maxRowsPerPage) throw new OversizedResponseError(`${peer.toString()} sent ${res.chunks.length} listing rows, the limit is ${this.maxRowsPerPage}`)
    return res.chunks
  }
}

export function snapshotListing (init: SnapshotListingInit = {}): (components: RpcComponents) => SnapshotListingService {
  return (components) => new SnapshotListingService(components, init)
}
