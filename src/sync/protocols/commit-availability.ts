/**
 * /soma/commit-availability/1.0.0 — height discovery: a peer's highest synced commit, lowest available
 * commit and genesis digest.
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import { SyncCodecs, PROTOCOL_COMMIT_AVAILABILITY, type GetCommitAvailabilityRequest, type GetCommitAvailabilityResponse } from './messages.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { MalformedMessageError } from '../../errors.ts'

export interface CommitAvailabilityInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
}

export type CommitAvailabilityComponents = RpcComponents

export interface PeerAvailability {
  highestSynced: number
  lowestAvailable: number
  genesisDigest: Uint8Array
}

export class CommitAvailability implements Startable {
  readonly [Symbol.toStringTag] = '@soma/commit-availability'
  readonly [serviceCapabilities] = ['@soma/commit-availability']
  readonly rpc: RpcProtocol<GetCommitAvailabilityRequest, GetCommitAvailabilityResponse>

  constructor (components: CommitAvailabilityComponents, init: CommitAvailabilityInit = {}) {
    const store = init.store
    this.rpc = new RpcProtocol<GetCommitAvailabilityRequest, GetCommitAvailabilityResponse>(components, PROTOCOL_COMMIT_AVAILABILITY, {
      request: SyncCodecs.GetCommitAvailabilityRequest,
      response: SyncCodecs.GetCommitAvailabilityResponse
    }, { ...init, maxRequestBytes: 64, maxResponseBytes: 1024 }, store === undefined
      ? undefined
      : async () => ({
        highestSyncedCommit: store.highestSynced,
        lowestAvailableCommit: store.lowestAvailable,
        genesisDigest: store.chainId
      }))
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop() }

  /** Asks a peer for its commit availability. */
  async query (peer: PeerId, options?: AbortOptions): Promise<PeerAvailability> {
    const res = await this.rpc.request(peer, { timestampMs: Date.now() }, options)
    if (res.genesisDigest.byteLength !== 32) throw new MalformedMessageError(`${peer.toString()}: availability without a 32-byte genesis digest`)
    if (!Number.isSafeInteger(res.highestSyncedCommit) || !Number.isSafeInteger(res.lowestAvailableCommit)) throw new MalformedMessageError(`${peer.toString()}: availability out of range`)
    return { highestSynced: res.highestSyncedCommit, lowestAvailable: res.lowestAvailableCommit, genesisDigest: res.genesisDigest }
  }
}

export function commitAvailability (init: CommitAvailabilityInit = {}): (components: CommitAvailabilityComponents) => CommitAvailability {
  return (components) => new CommitAvailability(components, init)
}
