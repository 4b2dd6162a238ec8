/**
 * Snapshot candidates: attested snapshots offered by peers, not verified yet. Snapshot sync takes them
 * from any number of sources: the discovery service (gossip / DHT, src/snapshot/discovery.ts) plugs in
 * as a `SnapshotCandidateSource`, and {@link peerCandidates} — asking connected peers directly with
 * /soma/snapshot-manifest/1.0.0 — is always used as well (the fallback that needs nothing but a
 * connection, e.g. to the trusted entrypoints).
 */
import type { PeerId } from '@libp2p/interface'
import { sha256, toHex } from '../../crypto/hash.ts'
import { decodeAttestation, decodeManifest, type SnapshotManifest } from '../manifest.ts'
import type { SnapshotManifestService } from '../protocols/snapshot-manifest.ts'

/** One attested snapshot as some peers offer it (the same attestation bytes). */
export interface SnapshotCandidate {
  /** encode(SnapshotAttestation), as received: not verified */
  attestationBytes: Uint8Array
  /** decoded from the attestation: not verified */
  manifest: SnapshotManifest
  /** peers that offer it (they serve its filter, listing and chunks) */
  peers: PeerId[]
}

/**
 * Where snapshot sync looks for candidates (e.g. `(o) => discovery.candidates(o)`). `penalize` reports a
 * peer that broke a protocol rule while the source asked it (the sync's peer scores).
 */
export type SnapshotCandidateSource = (opts: { signal: AbortSignal, penalize?: (peer: PeerId, err: Error) => void }) => Promise<SnapshotCandidate[]>

/** sha256 of the manifest bytes: the identity of a snapshot (attestations may differ in signatures). */
export function manifestDigestOf (attestationBytes: Uint8Array): Uint8Array {
  return sha256(decodeAttestation(attestationBytes).manifest)
}

/** Merges candidates with the same attestation bytes (their peers are united). */
export function mergeCandidates (lists: ReadonlyArray<readonly SnapshotCandidate[]>): SnapshotCandidate[] {
  const byAtt = new Map<string, SnapshotCandidate>()
  for (const list of lists) {
    for (const c of list) {
      const k = toHex(sha256(c.attestationBytes))
      const prev = byAtt.get(k)
      if (prev === undefined) { byAtt.set(k, { ...c, peers: [...c.peers] }); continue }
      for (const p of c.peers) if (!prev.peers.some(q => q.equals(p))) prev.peers.push(p)
    }
  }
  return [...byAtt.values()]
}

/**
 * Asks each peer for its newest snapshot (or the one of `commit`) and groups the answers by attestation.
 * Errors are reported through `onError` (a peer without the protocol, or none to offer, is not an error
 * worth a penalty: `onError` gets only answers that do not decode).
 */
export async function peerCandidates (service: SnapshotManifestService, peers: readonly PeerId[], opts: { signal: AbortSignal, timeoutMs: number, commit?: number, onError?: (peer: PeerId, err: Error) => void }): Promise<SnapshotCandidate[]> {
  const found: SnapshotCandidate[] = []
  await Promise.all(peers.map(async peer => {
    try {
      const a = await service.get(peer, opts.commit ?? 0, { signal: AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]) })
      const manifest = decodeManifest(decodeAttestation(a.attestationBytes).manifest)
      found.push({ attestationBytes: a.attestationBytes, manifest, peers: [peer] })
    } catch (err: any) {
      if (opts.signal.aborted) return
      if (err?.name === 'InvalidSnapshotError' || err?.name === 'MalformedMessageError' || err?.name === 'ProtocolViolationError') opts.onError?.(peer, err)
    }
  }))
  return mergeCandidates([found])
}

/** A source's candidates; a source that fails offers none. */
export async function collectCandidates (source: SnapshotCandidateSource, signal: AbortSignal, penalize?: (peer: PeerId, err: Error) => void): Promise<SnapshotCandidate[]> {
  try {
    return await source({ signal, penalize })
  } catch {
    return []
  }
}
