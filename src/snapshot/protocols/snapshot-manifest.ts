/**
 * /soma/snapshot-manifest/1.0.0 — the attestation (manifest + signatures) of a snapshot the server
 * serves: the one of the commit asked for, or the newest (commit 0), plus the commits of every
 * snapshot it serves. Only attested snapshots (at least one signature) are served: an unsigned one
 * (e.g. `soma-sync snapshot create` without the committee's keys) is useless to a syncing node.
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { SnapshotStore } from '../snapshot-store.ts'
import { decodeAttestation, decodeManifest } from '../manifest.ts'
import { ProtocolViolationError } from '../../errors.ts'
import { SnapshotSyncCodecs, PROTOCOL_SNAPSHOT_MANIFEST, type GetSnapshotManifestRequest, type GetSnapshotManifestResponse } from './messages.ts'

export interface SnapshotManifestInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
}

/** Largest attestation accepted: a manifest (< 1 KiB) and up to 1024 signatures of ~70 bytes. */
export const MAX_ATTESTATION_BYTES = 128 * 1024

export interface ManifestAnswer {
  /** the attestation bytes as the peer stores them (manifest + signatures); not verified */
  attestationBytes: Uint8Array
  /** commits of every snapshot the peer serves */
  snapshots: number[]
}

export class SnapshotManifestService implements Startable {
  readonly [Symbol.toStringTag] = '@soma/snapshot-manifest'
  readonly [serviceCapabilities] = ['@soma/snapshot-manifest']
  readonly rpc: RpcProtocol<GetSnapshotManifestRequest, GetSnapshotManifestResponse>
  private readonly store?: ChainStore

  constructor (components: RpcComponents, init: SnapshotManifestInit = {}) {
    this.store = init.store
    this.rpc = new RpcProtocol(components, PROTOCOL_SNAPSHOT_MANIFEST, {
      request: SnapshotSyncCodecs.GetSnapshotManifestRequest,
      response: SnapshotSyncCodecs.GetSnapshotManifestResponse
    }, { ...init, maxRequestBytes: 64, maxResponseBytes: MAX_ATTESTATION_BYTES + 64 * 1024 },
    this.store === undefined ? undefined : async (req) => await this.serve(req))
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop() }

  /** Commits of the attested snapshots this store serves, ascending. */
  async attested (): Promise<Array<{ commit: number, attestation: Uint8Array }>> {
    const snaps = new SnapshotStore(this.store!)
    const out: Array<{ commit: number, attestation: Uint8Array }> = []
    for (const commit of await snaps.list()) {
      const s = await snaps.get(commit)
      if (s !== undefined && s.attestation.signatures.length > 0 && s.attestationBytes.byteLength <= MAX_ATTESTATION_BYTES) out.push({ commit, attestation: s.attestationBytes })
    }
    return out
  }

  /** The server side, exposed for tests. */
  async serve (req: GetSnapshotManifestRequest): Promise<GetSnapshotManifestResponse> {
    const empty = (error: string): GetSnapshotManifestResponse => ({ attestation: new Uint8Array(0), snapshots: [], error })
    if (!Number.isSafeInteger(req.commitIndex) || req.commitIndex < 0) return empty(`bad commit ${req.commitIndex}`)
    const all = await this.attested()
    const chosen = req.commitIndex === 0 ? all[all.length - 1] : all.find(s => s.commit === req.commitIndex)
    if (chosen === undefined) return empty(req.commitIndex === 0 ? 'no snapshot' : `no snapshot of commit ${req.commitIndex}`)
    return { attestation: chosen.attestation, snapshots: all.map(s => s.commit) }
  }

  /**
   * Asks a peer for the attestation of the snapshot of `commit` (0: its newest). Only the shape is
   * checked here (it decodes; the commit asked for); the sync verifies the signatures.
   */
  async get (peer: PeerId, commit: number, options?: AbortOptions): Promise<ManifestAnswer> {
    const res = await this.rpc.request(peer, { commitIndex: commit }, options)
    const att = decodeAttestation(res.attestation)
    if (commit !== 0) {
      const m = decodeManifest(att.manifest)
      if (m.commitIndex !== commit) throw new ProtocolViolationError(`${peer.toString()} answered the snapshot of commit ${m.commitIndex} for ${commit}`)
    }
    return { attestationBytes: res.attestation, snapshots: res.snapshots }
  }
}

export function snapshotManifest (init: SnapshotManifestInit = {}): (components: RpcComponents) => SnapshotManifestService {
  return (components) => new SnapshotManifestService(components, init)
}
