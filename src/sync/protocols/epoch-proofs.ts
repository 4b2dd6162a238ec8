/**
 * /soma/epoch-proofs/1.0.0 — the trust chain of committees: for epochs from_epoch, from_epoch+1, …
 * the end-of-epoch commit of the epoch and blocks of that epoch voting for it with 2f+1 stake. A node
 * that knows only genesis checks each proof against the committee it already trusts and so learns the
 * next one (src/sync/committee-sync.ts).
 *
 * The server answers at most `maxEpochsPerRequest` proofs, truncated to `maxFetchResponseBytes`,
 * stopping at the first epoch it cannot prove. A proof is made from the stored end-of-epoch commit and
 * its stored votes (a minimal set of certifier blocks reaching the quorum, as FetchCommits does), or,
 * when those are not stored (a node that learned the committees by proofs, or pruned), from the stored
 * proof itself (the EPOCH_PROOF bucket).
 */
import { serviceCapabilities, type AbortOptions, type PeerId, type Startable } from '@libp2p/interface'
import { RpcProtocol, type RpcComponents, type RpcInit } from '../../net/rpc.ts'
import { SyncCodecs, PROTOCOL_EPOCH_PROOFS, type EpochProof, type GetEpochProofsRequest, type GetEpochProofsResponse } from './messages.ts'
import type { ChainStore } from '../../store/chain-store.ts'
import { OversizedResponseError } from '../../errors.ts'

export interface EpochProofsInit extends RpcInit {
  /** The store answered from; without one the service is client-only. */
  store?: ChainStore
  /** Most proofs (epochs) per response. @default 100 */
  maxEpochsPerRequest?: number
  /** Most bytes per response (seed: max_fetch_response_bytes). @default 4 MiB */
  maxFetchResponseBytes?: number
}

export type EpochProofsComponents = RpcComponents

/** Bytes a proof adds to a response: its commit and blocks plus a generous allowance for framing. */
export function epochProofSize (p: EpochProof): number {
  return p.commit.byteLength + 8 + p.certifierBlocks.reduce((s, b) => s + b.byteLength + 8, 0)
}

export class EpochProofs implements Startable {
  readonly [Symbol.toStringTag] = '@soma/epoch-proofs'
  readonly [serviceCapabilities] = ['@soma/epoch-proofs']
  readonly rpc: RpcProtocol<GetEpochProofsRequest, GetEpochProofsResponse>
  readonly maxEpochsPerRequest: number
  readonly maxResponseBytes: number
  private readonly store?: ChainStore

  constructor (components: EpochProofsComponents, init: EpochProofsInit = {}) {
    this.store = init.store
    this.maxEpochsPerRequest = init.maxEpochsPerRequest ?? 100
    this.maxResponseBytes = init.maxFetchResponseBytes ?? 4 * 1024 * 1024
    if (!Number.isSafeInteger(this.maxEpochsPerRequest) || this.maxEpochsPerRequest < 1) throw new RangeError(`maxEpochsPerRequest must be an integer >= 1, got ${init.maxEpochsPerRequest}`)
    this.rpc = new RpcProtocol(components, PROTOCOL_EPOCH_PROOFS, {
      request: SyncCodecs.GetEpochProofsRequest,
      response: SyncCodecs.GetEpochProofsResponse
    }, { ...init, maxRequestBytes: 64, maxResponseBytes: this.maxResponseBytes + 64 * 1024, price: () => this.maxResponseBytes },
    this.store === undefined ? undefined : async (req) => await this.serve(req))
  }

  async start (): Promise<void> { await this.rpc.start() }
  async stop (): Promise<void> { await this.rpc.stop() }

  /** The server side, exposed for tests. */
  async serve (req: GetEpochProofsRequest): Promise<GetEpochProofsResponse> {
    if (!Number.isSafeInteger(req.fromEpoch) || req.fromEpoch < 0) return { proofs: [], error: `bad epoch ${req.fromEpoch}` }
    const proofs: EpochProof[] = []
    let size = 0
    for (let epoch = req.fromEpoch; proofs.length < this.maxEpochsPerRequest && Number.isSafeInteger(epoch); epoch++) {
      const proof = await this.proofOf(epoch)
      if (proof === undefined) break
      const s = epochProofSize(proof)
      if (size + s > this.maxResponseBytes) {
        if (proofs.length === 0) return { proofs: [], error: `the proof of epoch ${epoch} (${s} bytes) exceeds ${this.maxResponseBytes} bytes` }
        break
      }
      proofs.push(proof)
      size += s
    }
    return { proofs }
  }

  /**
   * The proof of the committee of `epoch + 1`: from the stored end-of-epoch commit of `epoch` and its
   * votes when this node has them, else the stored proof; undefined when it has neither.
   */
  async proofOf (epoch: number): Promise<EpochProof | undefined> {
    return await this.proofFromCommit(epoch) ?? await this.store!.getEpochProof(epoch)
  }

  private async proofFromCommit (epoch: number): Promise<EpochProof | undefined> {
    const store = this.store!
    const index = await store.getLastCommitIndexOfEpoch(epoch)
    if (index === undefined) return undefined
    const [commit, committee] = await Promise.all([store.getCommit(index), store.getCommittee(epoch)])
    if (commit === undefined || committee === undefined || !commit.isEndOfEpoch || commit.epoch !== epoch) return undefined
    // a minimal set of blocks voting for the commit's digest, one per author, reaching 2f+1
    const q = await store.quorumVotes(index, commit.digest, committee)
    if ('short' in q) return undefined
    const blocks = await store.getBlocks(q.votes.map(v => v.ref))
    if (blocks.some(b => b === undefined)) return undefined
    return { commit: commit.bytes, certifierBlocks: blocks as Uint8Array[] }
  }

  /**
   * Fetches the proofs of epochs fromEpoch, fromEpoch+1, … from a peer. Only the size is checked here;
   * the committee sync logic verifies each proof. An empty list: the peer knows no further epoch.
   */
  async fetch (peer: PeerId, fromEpoch: number, options?: AbortOptions): Promise<GetEpochProofsResponse> {
    const res = await this.rpc.request(peer, { fromEpoch }, options)
    const size = res.proofs.reduce((s, p) => s + epochProofSize(p), 0)
    if (size > this.maxResponseBytes) throw new OversizedResponseError(`${peer.toString()} sent ${size} bytes of epoch proofs, the limit is ${this.maxResponseBytes}`)
    return res
  }
}

export function epochProofs (init: EpochProofsInit = {}): (components: EpochProofsComponents) => EpochProofs {
  return (components) => new EpochProofs(components, init)
}
