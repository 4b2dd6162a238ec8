/**
 * Committee sync: a node that knows only genesis learns the committee of each epoch from the certified
 * end-of-epoch commits (/soma/epoch-proofs/1.0.0), each checked with commit sync's checks by the
 * committee before it, so that it can check what is attested in epoch N (e.g. a snapshot) against
 * 2f+1 stake of epoch N's committee without having the commits.
 *
 * Trust chain: the committee of epoch 0 is in genesis. The proof of epoch e is the end-of-epoch commit
 * of epoch e plus blocks of epoch e voting for its digest; their signatures are checked against the
 * committee of epoch e (already trusted) and their votes must carry 2f+1 of its stake. The commit's
 * `endOfEpoch.nextCommittee` is then the trusted committee of epoch e+1. Each epoch lands atomically
 * (one StoreBatch): the committee of e+1 and the proof itself (EPOCH_PROOF bucket), so the node can
 * serve the proof to others.
 */
import type { PeerId } from '@libp2p/interface'
import { parseCommit, verifyCertification, type ParsedCommit } from '../chain/commit.ts'
import { CommitteeInfo } from '../chain/committee.ts'
import type { VerifiedBlock } from '../chain/block.ts'
import type { ChainStore } from '../store/chain-store.ts'
import type { EpochProofs } from './protocols/epoch-proofs.ts'
import type { EpochProof } from './protocols/messages.ts'
import type { SignedBlockVerifier } from './block-verifier.ts'
import { InsufficientVotesError, ProtocolViolationError, StoreError } from '../errors.ts'

export interface CommitteeSyncDeps {
  store: ChainStore
  epochProofs: EpochProofs
  blockVerifier: SignedBlockVerifier
}

export interface CommitteeSyncOptions {
  /** Aborts the whole sync (the abort error is thrown, no peer is blamed). */
  signal: AbortSignal
  /** Stop once the committee of this epoch is known. @default as far as the peers can prove */
  upToEpoch?: number
  /**
   * Called with every error a peer caused (failed request, or a proof that does not verify:
   * ProtocolViolationError, InsufficientVotesError, InvalidSignatureError, MalformedMessageError, …);
   * the caller penalizes it (PEER_PENALTIES, e.g. PeerScores.penalize). The next peer is then tried.
   */
  onPeerError?: (peer: PeerId, err: Error) => void
  /** Time limit of one request. @default the EpochProofs service's timeoutMs */
  timeoutMs?: number
}

export interface VerifiedEpochProof {
  /** the end-of-epoch commit of the epoch */
  commit: ParsedCommit
  /** its certifier blocks, signature-checked */
  certifiers: VerifiedBlock[]
  /** the committee of epoch + 1 it proves */
  nextCommittee: CommitteeInfo
}

/**
 * Verifies the proof of epoch `committee.epoch` against that (trusted) committee; returns the committee
 * of the next epoch. Throws MalformedMessageError (undecodable commit or block), ProtocolViolationError
 * (a commit of another epoch, not end-of-epoch, blocks of another epoch, more blocks than members),
 * InsufficientVotesError (votes for the commit's digest below 2f+1) or InvalidSignatureError.
 */
export async function verifyEpochProof (proof: EpochProof, committee: CommitteeInfo, blockVerifier: SignedBlockVerifier): Promise<VerifiedEpochProof> {
  const epoch = committee.epoch
  const commit = parseCommit(proof.commit)
  if (commit.epoch !== epoch) throw new ProtocolViolationError(`the proof of epoch ${epoch} carries commit ${commit.index} of epoch ${commit.epoch}`)
  if (!commit.isEndOfEpoch) throw new ProtocolViolationError(`the proof of epoch ${epoch} carries commit ${commit.index}, which does not end the epoch`)
  if (proof.certifierBlocks.length === 0) throw new InsufficientVotesError(`commit ${commit.index}: no certifier blocks`)
  if (proof.certifierBlocks.length > committee.size) {
    throw new ProtocolViolationError(`the proof of epoch ${epoch} has ${proof.certifierBlocks.length} certifier blocks, the committee has ${committee.size} members`)
  }
  const parsed = proof.certifierBlocks.map(b => blockVerifier.parse(b))
  const other = parsed.find(b => b.epoch !== epoch)
  if (other !== undefined) throw new ProtocolViolationError(`the proof of epoch ${epoch} has a certifier block of epoch ${other.epoch}`)
  // the stake count first (cheap), then the signatures of the blocks counted
  verifyCertification(commit, parsed, committee)
  const certifiers = await blockVerifier.verify(parsed, committee)
  return { commit, certifiers, nextCommittee: new CommitteeInfo(commit.commit.endOfEpoch!.nextCommittee) }
}

/**
 * Learns committees from `peers`, in order, starting from the highest epoch whose committee the store
 * has (genesis: 0). A peer is asked until it has no further proof; a peer that fails or sends a proof
 * that does not verify is reported through `onPeerError` and the next peer is tried. Nothing
 * unverified is stored. Returns the highest epoch whose committee is now known (it may be below
 * `upToEpoch` when no peer could prove more).
 */
export async function syncCommittees (deps: CommitteeSyncDeps, peers: readonly PeerId[], options: CommitteeSyncOptions): Promise<number> {
  const { store, epochProofs, blockVerifier } = deps
  const { signal, upToEpoch } = options
  const timeoutMs = options.timeoutMs ?? epochProofs.rpc.timeoutMs
  let epoch = await store.highestCommitteeEpoch()
  let committee = await store.getCommittee(epoch)
  if (committee === undefined) throw new StoreError(`no committee stored for epoch ${epoch}`)
  const done = (): boolean => upToEpoch !== undefined && epoch >= upToEpoch
  const failed = (peer: PeerId, err: any): void => {
    if (signal.aborted) throw err
    options.onPeerError?.(peer, err instanceof Error ? err : new Error(String(err)))
  }

  peers: for (const peer of peers) {
    while (!done()) {
      signal.throwIfAborted()
      let proofs: EpochProof[]
      try {
        proofs = (await epochProofs.fetch(peer, epoch, { signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) })).proofs
      } catch (err) {
        failed(peer, err)
        continue peers
      }
      if (proofs.length === 0) continue peers // this peer knows no further epoch
      for (const proof of proofs) {
        if (done()) break
        let verified: VerifiedEpochProof
        try {
          verified = await verifyEpochProof(proof, committee, blockVerifier)
        } catch (err) {
          failed(peer, err)
          continue peers
        }
        await store.batch()
          .putCommittee(verified.nextCommittee.committee)
          .putEpochProof(epoch, proof)
          .write()
        epoch++
        committee = verified.nextCommittee
      }
    }
    break
  }
  return epoch
}
