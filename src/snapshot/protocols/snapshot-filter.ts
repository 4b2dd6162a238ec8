/**
 * /soma/snapshot-filter/1.0.0 — the Cuckoo filter of a snapshot. Filters are large (a 32-bit filter of
 * n chunks is ≈ 4–8 bytes × n), so the response limit is not the protocol's usual one: the server
 * refuses filters above `maxFilterBytes`, and a client bounds each response by the exact size the
 * attested manifest's FilterParams imply (see {@link filterBytesFor}), which a lying server cannot
 * inflate. Rate limited harder than the other protocols (a filter is asked once per sync).
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { SnapshotStore } from '../snapshot-store.ts'
import { FILTER_HEADER_BYTES, BUCKET_SIZE, HASH_BYTES, MAX_LOG2_BUCKETS } from '../cuckoo-filter.ts'
import type { FilterParams } from '../manifest.ts'
import { InvalidSnapshotError, OversizedResponseError } from '../../errors.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_FILTER, type GetSnapshotFilterRequest, type GetSnapshotFilterResponse } from './messages.ts'

export const DEFAULT_MAX_FILTER_BYTES = 128 * 1024 * 1024

export interface SnapshotFilterInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
  /** Largest filter served or accepted. @default 128 MiB */
  maxFilterBytes?: number
}

/** The exact serialized size of a filter with these parameters (format SCF1: header + slots + stash). */
export function filterBytesFor (p: FilterParams): number {
  const stash = p.stash ?? 0
  if (!Number.isInteger(stash) || stash < 0 || !(stash <= p.count)) throw new InvalidSnapshotError(`filter parameters: bad stash size ${stash} for ${p.count} items`)
  if (!Number.isInteger(p.log2Buckets) || p.log2Buckets < 0 || p.log2Buckets > MAX_LOG2_BUCKETS) throw new InvalidSnapshotError(`filter parameters: bad log2(buckets) ${p.log2Buckets}`)
  if (!Number.isInteger(p.fingerprintBits) || p.fingerprintBits < 1 || p.fingerprintBits > 32) throw new InvalidSnapshotError(`filter parameters: bad fingerprint bits ${p.fingerprintBits}`)
  if (p.bucketSize !== BUCKET_SIZE) throw new InvalidSnapshotError(`filter parameters: bucket size ${p.bucketSize}, expected ${BUCKET_SIZE}`)
  const slotBytes = p.fingerprintBits <= 8 ? 1 : p.fingerprintBits <= 16 ? 2 : 4
  return FILTER_HEADER_BYTES + 2 ** p.log2Buckets * BUCKET_SIZE * slotBytes + stash * HASH_BYTES
}

export class SnapshotFilterService implements Startable {
  readonly [Symbol.toStringTag] = '@soma/snapshot-filter'
  readonly [serviceCapabilities] = ['@soma/snapshot-filter']
  readonly rpc: RpcProtocol<GetSnapshotFilterRequest, GetSnapshotFilterResponse>
  readonly maxFilterBytes: number
  private readonly store?: ChainStore

  constructor (components: RpcComponents, init: SnapshotFilterInit = {}) {
    this.store = init.store
    this.maxFilterBytes = init.maxFilterBytes ?? DEFAULT_MAX_FILTER_BYTES
    this.rpc = new RpcProtocol(components, PROTOCOL_SNAPSHOT_FILTER, {
      request: SnapshotSyncCodecs.GetSnapshotFilterRequest,
      response: SnapshotSyncCodecs.GetSnapshotFilterResponse
    }, { ...init, maxRequestBytes: 64, maxResponseBytes: this.maxFilterBytes + 64 * 1024 },
    this.store === undefined ? undefined : async (req) => await this.serve(req))
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop() }

  /** The server side, exposed for tests. */
  async serve (req: GetSnapshotFilterRequest): Promise<GetSnapshotFilterResponse> {
    const empty = (error: string): GetSnapshotFilterResponse => ({ filter: new Uint8Array(0), error })
    if (!Number.isSafeInteger(req.commitIndex) || req.commitIndex < 1) return empty(`bad commit ${req.commitIndex}`)
    const snaps = new SnapshotStore(this.store!)
    if (!await snaps.has(req.commitIndex)) return empty(`no snapshot of commit ${req.commitIndex}`)
    const filter = await snaps.getFilterBytes(req.commitIndex)
    if (filter.byteLength > this.maxFilterBytes) return empty(`the filter (${filter.byteLength} bytes) exceeds ${this.maxFilterBytes} bytes`)
    return { filter }
  }

  /**
   * Fetches the filter of the snapshot of `commit`, whose attested parameters are `params`: the
   * response may be at most the size they imply. Not verified here (verifyFilter does).
   */
  async fetch (peer: PeerId, commit: number, params: FilterParams, options: AbortOptions = {}): Promise<Uint8Array> {
    const expected = filterBytesFor(params)
    if (expected > this.maxFilterBytes) throw new InvalidSnapshotError(`the snapshot of commit ${commit} has a ${expected}-byte filter, above the limit of ${this.maxFilterBytes}`)
    const res = await this.rpc.request(peer, { commitIndex: commit }, { ...options, maxResponseBytes: expected + 1024 })
    if (res.filter.byteLength > expected) throw new OversizedResponseError(`${peer.toString()} sent a ${res.filter.byteLength}-byte filter, the manifest implies ${expected}`)
    return res.filter
  }
}

export function snapshotFilter (init: SnapshotFilterInit = {}): (components: RpcComponents) => SnapshotFilterService {
  return (components) => new SnapshotFilterService(components, init)
}
