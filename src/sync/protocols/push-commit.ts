/**
 * /soma/push-commit/1.0.0 — notification: "I now have commits up to N". A received push raises that
 * peer's known height (the `push` event) and wakes the sync loop.
 */
import { serviceCapabilities, TypedEventEmitter, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import { SyncCodecs, PROTOCOL_PUSH_COMMIT, type PushCommitRequest, type PushCommitResponse } from './messages.ts'
import type { PeerAvailability } from './commit-availability.ts'

export type PushCommitInit = RpcInit
export type PushCommitComponents = RpcComponents

export interface PushEventDetail extends PeerAvailability { peer: PeerId }

export interface PushCommitEvents {
  push: CustomEvent<PushEventDetail>
}

export class PushCommit extends TypedEventEmitter<PushCommitEvents> implements Startable {
  readonly [Symbol.toStringTag] = '@soma/push-commit'
  readonly [serviceCapabilities] = ['@soma/push-commit']
  readonly rpc: RpcProtocol<PushCommitRequest, PushCommitResponse>

  constructor (components: PushCommitComponents, init: PushCommitInit = {}) {
    super()
    this.rpc = new RpcProtocol(components, PROTOCOL_PUSH_COMMIT, {
      request: SyncCodecs.PushCommitRequest,
      response: SyncCodecs.PushCommitResponse
    }, { ...init, maxRequestBytes: 256, maxResponseBytes: 1024 }, async (req, ctx) => {
      if (!Number.isSafeInteger(req.highestSyncedCommit) || req.genesisDigest.byteLength !== 32) return { error: 'malformed push' }
      this.safeDispatchEvent('push', {
        detail: { peer: ctx.peer, highestSynced: req.highestSyncedCommit, lowestAvailable: req.lowestAvailableCommit, genesisDigest: req.genesisDigest }
      })
      return {}
    })
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop() }

  async push (peer: PeerId, info: PeerAvailability, options?: AbortOptions): Promise<void> {
    await this.rpc.request(peer, { highestSyncedCommit: info.highestSynced, lowestAvailableCommit: info.lowestAvailable, genesisDigest: info.genesisDigest }, options)
  }
}

export function pushCommit (init: PushCommitInit = {}): (components: PushCommitComponents) => PushCommit {
  return (components) => new PushCommit(components, init)
}
