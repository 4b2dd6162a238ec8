/**
 * The names and checks snapshot discovery (../discovery.ts) puts on the network, kept apart from the
 * discovery service so that the libp2p host (src/node/libp2p.ts) can install the kad-dht validator and
 * selector without importing the service:
 *
 * - gossipsub topic `/soma/<first 8 hex chars of the chain id>/snapshots/1` (the chain-scoped prefix of
 *   `topicPrefix` in src/node/libp2p.ts): each message is the bytes of one SnapshotAttestation;
 * - kad-dht record `/soma-snapshot/<chain id hex>` (namespace `soma-snapshot`): the attestation of the
 *   latest attested manifest of the chain;
 * - provider records under the manifest's CID: CID v1, raw codec (0x55), sha2-256 multihash of the
 *   manifest bytes (its digest = the manifest digest of protocols/snapshot.proto), provided by every
 *   node that serves the snapshot.
 *
 * ## Checking a record
 *
 * A record (or a gossip message) is accepted when its attestation decodes, its manifest is well formed
 * and of this chain (and, for a DHT record, its key names this chain). Its signatures can only be checked
 * against the committee of the manifest's epoch: when the local store has that committee, the
 * attestation must carry 2f+1 of its stake (verifyAttestation) or the record is refused; when it does not
 * (a node that has not synced that far), the record is kept as *unverified*: the sync core verifies it
 * once it has learned the committees (epoch proofs) and moves to the next candidate if it is forged.
 *
 * The selector prefers the highest commit index, then the most stake (verified stake when the
 * committee is known, else the number of distinct signers).
 *
 * kad-dht (js, 16.x) stores any valid record it is sent, even an older one than it holds; go's kad-dht
 * refuses a record its selector ranks below the stored one. The same is done here with `floor`: a node
 * that holds a record it trusts (its own snapshot, or one it verified) refuses records of a lower commit
 * index, so a node that serves the latest snapshot never lets its DHT record regress.
 */
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import type { SelectFn, ValidateFn } from '@libp2p/kad-dht'
import { CommitteeInfo } from '../../chain/committee.ts'
import { bytesEqual, sha256, toHex, utf8 } from '../../crypto/hash.ts'
import { InvalidSnapshotError } from '../../errors.ts'
import { manifestDigest, verifyAttestation } from '../attestation.ts'
import { decodeAttestation, decodeManifest, type SnapshotAttestation, type SnapshotManifest } from '../manifest.ts'

/** The kad-dht namespace of snapshot records (the `<ns>` of `/<ns>/<...>`). */
export const SNAPSHOT_RECORD_NAMESPACE = 'soma-snapshot'
/** multicodec of raw bytes */
export const RAW_CODEC = 0x55
/** multihash code of sha2-256 */
export const SHA2_256_CODE = 0x12
/** Largest attestation accepted from the network (a manifest is ~300 bytes, a signature ~70). */
export const MAX_ATTESTATION_BYTES = 256 * 1024

/** The DHT key of the chain's latest snapshot record: `/soma-snapshot/<chain id hex>`. */
export function snapshotRecordKey (chainId: Uint8Array): Uint8Array {
  return utf8.encode(`/${SNAPSHOT_RECORD_NAMESPACE}/${toHex(chainId)}`)
}

/** The gossipsub topic on which snapshot holders announce attestations. */
export function snapshotTopic (chainId: Uint8Array): string {
  return `/soma/${toHex(chainId).slice(0, 8)}/snapshots/1`
}

/** The CID providers of a snapshot are found under: v1, raw, sha2-256 of the manifest bytes. */
export function manifestCid (manifestBytes: Uint8Array): CID {
  return cidOfDigest(manifestDigest(manifestBytes))
}

/** The CID of a manifest digest (sha256 of the manifest bytes). */
export function cidOfDigest (digest: Uint8Array): CID {
  return CID.createV1(RAW_CODEC, Digest.create(SHA2_256_CODE, digest))
}

/** Looks up the committee of an epoch; undefined when it is not known locally. */
export type CommitteeLookup = (epoch: number) => Promise<CommitteeInfo | undefined> | CommitteeInfo | undefined

/** What a check of an attestation found. */
export interface CheckedAttestation {
  attestationBytes: Uint8Array
  attestation: SnapshotAttestation
  manifest: SnapshotManifest
  /** sha256 of the manifest bytes */
  digest: Uint8Array
  /** the signatures were checked against a locally known committee (2f+1 of its stake) */
  verified: boolean
  /** stake of the valid signers when verified; otherwise undefined */
  stake?: number
  /** distinct signer indices claimed (all valid when verified) */
  signers: number
}

export interface SnapshotRecordCheckerInit {
  chainId: Uint8Array
  /** committees known locally; without it nothing is verified (chain and shape only) */
  committee?: CommitteeLookup
  /**
   * The commit index below which records are refused as stale (a record this node trusts: see the
   * module doc). undefined: no floor.
   */
  floor?: () => number | undefined
  /** results remembered (by attestation hash). @default 256 */
  cacheSize?: number
}

/**
 * Checks attestations received from the network (gossip messages, DHT records) and remembers the
 * verdicts of the last few, since the DHT validates the same record many times (every response, every
 * local read). A verdict of "unverified" is not cached: the committee may be learned later.
 */
export class SnapshotRecordChecker {
  readonly chainId: Uint8Array
  readonly key: Uint8Array
  private readonly committee?: CommitteeLookup
  private readonly floor?: () => number | undefined
  private readonly cache = new Map<string, CheckedAttestation | InvalidSnapshotError>()
  private readonly cacheSize: number

  constructor (init: SnapshotRecordCheckerInit) {
    this.chainId = init.chainId
    this.key = snapshotRecordKey(init.chainId)
    this.committee = init.committee
    this.floor = init.floor
    this.cacheSize = init.cacheSize ?? 256
  }

  /**
   * Decodes and checks an attestation: InvalidSnapshotError when it does not decode, is of another
   * chain, or (committee known) does not carry 2f+1 of the stake with valid signatures.
   */
  async check (bytes: Uint8Array): Promise<CheckedAttestation> {
    if (bytes.byteLength > MAX_ATTESTATION_BYTES) throw new InvalidSnapshotError(`snapshot attestation is ${bytes.byteLength} bytes (max ${MAX_ATTESTATION_BYTES})`)
    const id = toHex(sha256(bytes))
    const cached = this.cache.get(id)
    if (cached instanceof InvalidSnapshotError) throw cached
    if (cached !== undefined) return cached
    try {
      const r = await this.checkNow(bytes)
      if (r.verified) this.remember(id, r)
      return r
    } catch (err) {
      if (err instanceof InvalidSnapshotError) this.remember(id, err)
      throw err
    }
  }

  private remember (id: string, v: CheckedAttestation | InvalidSnapshotError): void {
    if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!)
    this.cache.set(id, v)
  }

  private async checkNow (bytes: Uint8Array): Promise<CheckedAttestation> {
    const attestation = decodeAttestation(bytes)
    const manifest = decodeManifest(attestation.manifest)
    if (!bytesEqual(manifest.chainId, this.chainId)) {
      throw new InvalidSnapshotError(`snapshot of commit ${manifest.commitIndex} is for chain ${toHex(manifest.chainId).slice(0, 16)}…, not ${toHex(this.chainId).slice(0, 16)}…`)
    }
    const digest = manifestDigest(attestation.manifest)
    const signers = new Set(attestation.signatures.map(s => s.authority)).size
    const committee = await this.committee?.(manifest.epoch)
    if (committee === undefined) return { attestationBytes: bytes, attestation, manifest, digest, verified: false, signers }
    const r = verifyAttestation(attestation, committee, { chainId: this.chainId })
    return { attestationBytes: bytes, attestation, manifest, digest, verified: true, stake: r.stake, signers: r.signers.length }
  }

  /** The kad-dht validator: the key must be this chain's record key, the value a valid attestation. */
  readonly validate = async (key: Uint8Array, value: Uint8Array): Promise<void> => {
    if (!bytesEqual(key, this.key)) {
      throw new InvalidSnapshotError(`snapshot record key ${new TextDecoder().decode(key)} is not this chain's (${new TextDecoder().decode(this.key)})`)
    }
    const r = await this.check(value)
    const floor = this.floor?.()
    if (floor !== undefined && r.manifest.commitIndex < floor) {
      throw new InvalidSnapshotError(`snapshot record of commit ${r.manifest.commitIndex} is older than the snapshot of commit ${floor} this node holds`)
    }
  }

  /** The kad-dht selector: highest commit index, then most stake (or signers when unverified). */
  readonly select = async (_key: Uint8Array, records: Uint8Array[]): Promise<number> => {
    let best = -1
    let bestRank: [number, number, number] = [-1, -1, -1]
    for (let i = 0; i < records.length; i++) {
      let r: CheckedAttestation
      try {
        r = await this.check(records[i])
      } catch {
        continue
      }
      const rank: [number, number, number] = [r.manifest.commitIndex, r.verified ? 1 : 0, r.verified ? r.stake! : r.signers]
      if (best < 0 || compareRank(rank, bestRank) > 0) { best = i; bestRank = rank }
    }
    return Math.max(best, 0)
  }

  /** `{ validators, selectors }` to merge into the kad-dht init. */
  dhtRecords (): { validators: Record<string, ValidateFn>, selectors: Record<string, SelectFn> } {
    return { validators: { [SNAPSHOT_RECORD_NAMESPACE]: this.validate }, selectors: { [SNAPSHOT_RECORD_NAMESPACE]: this.select } }
  }
}

function compareRank (a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i]
  return 0
}

/**
 * The kad-dht validator and selector of snapshot records for a chain. With `committee` the attestation
 * is verified when the committee of its epoch is known; without it only the chain and the shape are
 * checked (what `libp2pServices` installs by default; SnapshotDiscovery replaces it with one that reads
 * the node's committees).
 */
export function snapshotDhtRecords (init: SnapshotRecordCheckerInit): { validators: Record<string, ValidateFn>, selectors: Record<string, SelectFn> } {
  return new SnapshotRecordChecker(init).dhtRecords()
}
