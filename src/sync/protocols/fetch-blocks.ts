/**
 * /soma/fetch-blocks/1.0.0 — blocks by ref. At most `maxBlocksPerFetch` refs per request; the server
 * answers the longest prefix of the refs, in order, that it stores and that fits `maxFetchResponseBytes`.
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import { SyncCodecs, PROTOCOL_FETCH_BLOCKS, type FetchBlocksRequest, type FetchBlocksResponse } from './messages.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import type { BlockRef } from '../../chain/types.ts'
import { OversizedResponseError, ProtocolViolationError } from '../../errors.ts'

export interface FetchBlocksInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
  /** Most block refs per request (seed: max_blocks_per_fetch). @default 1000 */
  maxBlocksPerFetch?: number
  /** Most bytes per response (seed: max_fetch_response_bytes). @default 4 MiB */
  maxFetchResponseBytes?: number
}

export type FetchBlocksComponents = RpcComponents

/** Wire size of one BlockRef in a request (round, author, 32-byte digest, framing). */
const REF_WIRE_BYTES = 56

export class FetchBlocks implements Startable {
  readonly [Symbol.toStringTag] = '@soma/fetch-blocks'
  readonly [serviceCapabilities] = ['@soma/fetch-blocks']
  readonly rpc: RpcProtocol<FetchBlocksRequest, FetchBlocksResponse>
  readonly maxBlocksPerFetch: number
  readonly maxResponseBytes: number
  private readonly store?: ChainStore

  constructor (components: FetchBlocksComponents, init: FetchBlocksInit = {}) {
    this.store = init.store
    this.maxBlocksPerFetch = init.maxBlocksPerFetch ?? 1000
    this.maxResponseBytes = init.maxFetchResponseBytes ?? 4 * 1024 * 1024
    this.rpc = new RpcProtocol(components, PROTOCOL_FETCH_BLOCKS, {
      request: SyncCodecs.FetchBlocksRequest,
      response: SyncCodecs.FetchBlocksResponse
    }, { ...init, maxRequestBytes: this.maxBlocksPerFetch * REF_WIRE_BYTES + 1024, maxResponseBytes: this.maxResponseBytes + 64 * 1024, price: () => this.maxResponseBytes },
    this.store === undefined ? undefined : async (req) => await this.serve(req))
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop() }

  /** The server side, exposed for tests. */
  async serve (req: FetchBlocksRequest): Promise<FetchBlocksResponse> {
    if (req.blockRefs.length > this.maxBlocksPerFetch) return { blocks: [], error: `${req.blockRefs.length} refs requested, the limit is ${this.maxBlocksPerFetch}` }
    if (req.blockRefs.some(r => r.digest.byteLength !== 32)) return { blocks: [], error: 'block ref digest is not 32 bytes' }
    const found = await this.store!.getBlocks(req.blockRefs)
    const blocks: Uint8Array[] = []
    let size = 0
    for (const b of found) {
      if (b === undefined) break
      if (size + b.byteLength + 8 > this.maxResponseBytes) break
      blocks.push(b)
      size += b.byteLength + 8
    }
    if (blocks.length === 0 && found.length > 0) return { blocks: [], error: found[0] === undefined ? 'block not stored' : 'block larger than the response limit' }
    return { blocks }
  }

  /**
   * Fetches blocks from a peer: returns a non-empty prefix of the requested refs' blocks (raw bytes).
   * The sync logic verifies each against its ref.
   */
  async fetch (peer: PeerId, refs: readonly BlockRef[], options?: AbortOptions): Promise<Uint8Array[]> {
    if (refs.length > this.maxBlocksPerFetch) throw new RangeError(`at most ${this.maxBlocksPerFetch} refs per request`)
    const res = await this.rpc.request(peer, { blockRefs: [...refs] }, options)
    if (res.blocks.length === 0 && refs.length > 0) throw new ProtocolViolationError(`${peer.toString()} returned no blocks`)
    if (res.blocks.length > refs.length) throw new ProtocolViolationError(`${peer.toString()} returned ${res.blocks.length} blocks for ${refs.length} refs`)
    const size = res.blocks.reduce((s, b) => s + b.byteLength, 0)
    if (size > this.maxResponseBytes) throw new OversizedResponseError(`${peer.toString()} sent ${size} bytes of blocks, the limit is ${this.maxResponseBytes}`)
    return res.blocks
  }
}

export function fetchBlocks (init: FetchBlocksInit = {}): (components: FetchBlocksComponents) => FetchBlocks {
  return (components) => new FetchBlocks(components, init)
}
