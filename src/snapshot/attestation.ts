/**
 * Snapshot attestation: signatures over the manifest by the committee of the manifest's epoch.
 *
 *     manifest digest = sha256(manifest bytes)
 *     signature       = ed25519(authority key, "soma/snapshot/v1" ‖ manifest digest)
 *
 * A manifest is attested when valid signatures of distinct committee members carry at least 2f+1 of the
 * epoch's stake. `verifyAttestation` refuses anything else with an InvalidSnapshotError that names what
 * is wrong (it never ignores a bad signature: a peer that sends one is lying).
 */
import { sha256, utf8, bytesEqual, toHex } from '../crypto/hash.ts'
import { sign, verify, type KeyPair } from '../crypto/keys.ts'
import { CommitteeInfo } from '../chain/committee.ts'
import { validatorKey, devnetCommittee } from '../chain/genesis.ts'
import type { Committee, Genesis } from '../chain/types.ts'
import { InvalidSnapshotError } from '../errors.ts'
import { decodeAttestation, decodeManifest, encodeManifest, type AttestationSignature, type SnapshotAttestation, type SnapshotManifest } from './manifest.ts'

const SNAPSHOT_DOMAIN = utf8.encode('soma/snapshot/v1')

export function manifestDigest (manifestBytes: Uint8Array): Uint8Array {
  return sha256(manifestBytes)
}

/** "soma/snapshot/v1" ‖ sha256(manifest bytes): what each authority signs. */
export function snapshotSigningMessage (manifestBytes: Uint8Array): Uint8Array {
  const d = manifestDigest(manifestBytes)
  const m = new Uint8Array(SNAPSHOT_DOMAIN.length + d.length)
  m.set(SNAPSHOT_DOMAIN); m.set(d, SNAPSHOT_DOMAIN.length)
  return m
}

/**
 * Signatures of the manifest by `keys`, each placed at its authority index in `committee` (keys that
 * are not members are an error). Sorted by authority.
 */
export function signManifest (manifestBytes: Uint8Array, committee: Committee, keys: readonly KeyPair[]): AttestationSignature[] {
  const msg = snapshotSigningMessage(manifestBytes)
  const index = new Map(committee.authorities.map((a, i) => [toHex(a.publicKey), i]))
  const out: AttestationSignature[] = []
  for (const k of keys) {
    const i = index.get(toHex(k.publicKey))
    if (i === undefined) throw new RangeError(`key ${toHex(k.publicKey).slice(0, 16)}… is not in the committee of epoch ${committee.epoch}`)
    out.push({ authority: i, signature: sign(k, msg) })
  }
  return out.sort((a, b) => a.authority - b.authority)
}

/** The attestation of a manifest (bytes, or encoded here) signed by `keys` of `committee`. */
export function attestManifest (manifest: SnapshotManifest | Uint8Array, committee: Committee, keys: readonly KeyPair[]): SnapshotAttestation {
  const bytes = manifest instanceof Uint8Array ? manifest : encodeManifest(manifest)
  return { manifest: bytes, signatures: signManifest(bytes, committee, keys) }
}

export interface AttestationCheck {
  manifest: SnapshotManifest
  /** stake of the valid signers */
  stake: number
  signers: number[]
}

/**
 * Verifies an attestation (decoded, or its bytes) against the committee of the manifest's epoch.
 * Throws InvalidSnapshotError for: a manifest that does not decode, another chain (`chainId` given), a
 * committee of another epoch, a signer index outside the committee, an authority that signs twice, a
 * signature that does not verify, or signatures that carry less than 2f+1 of the stake.
 */
export function verifyAttestation (att: SnapshotAttestation | Uint8Array, committee: CommitteeInfo | Committee, opts: { chainId?: Uint8Array } = {}): AttestationCheck {
  const a = att instanceof Uint8Array ? decodeAttestation(att) : att
  const info = committee instanceof CommitteeInfo ? committee : new CommitteeInfo(committee)
  const manifest = decodeManifest(a.manifest)
  const what = `snapshot of commit ${manifest.commitIndex}`
  if (opts.chainId !== undefined && !bytesEqual(manifest.chainId, opts.chainId)) {
    throw new InvalidSnapshotError(`${what} is for chain ${toHex(manifest.chainId)}, not ${toHex(opts.chainId)}`)
  }
  if (manifest.epoch !== info.epoch) {
    throw new InvalidSnapshotError(`${what} is of epoch ${manifest.epoch}; it was checked against the committee of epoch ${info.epoch}`)
  }
  const msg = snapshotSigningMessage(a.manifest)
  const seen = new Set<number>()
  for (const s of a.signatures) {
    const pk = info.publicKey(s.authority)
    if (pk === undefined) throw new InvalidSnapshotError(`${what}: signer ${s.authority} is not in the committee of epoch ${info.epoch} (${info.size} members)`)
    if (seen.has(s.authority)) throw new InvalidSnapshotError(`${what}: authority ${s.authority} signs twice`)
    if (!verify(pk, msg, s.signature)) throw new InvalidSnapshotError(`${what}: the signature of authority ${s.authority} does not verify`)
    seen.add(s.authority)
  }
  const stake = info.stakeOf(seen)
  if (stake < info.quorumThreshold) {
    throw new InvalidSnapshotError(`${what}: signatures carry ${stake} of ${info.totalStake} stake, 2f+1 needs ${info.quorumThreshold}`)
  }
  return { manifest, stake, signers: [...seen].sort((x, y) => x - y) }
}

/**
 * The devnet keys of a committee (in authority order), if they all derive from `seed`: members are
 * validators 0..n-1 at genesis and one fresh validator joins per epoch, so validator numbers below
 * n + epoch are searched. undefined when some member is not a devnet key of this seed.
 */
export function devnetCommitteeKeys (seed: string, committee: Committee): KeyPair[] | undefined {
  const want = new Map(committee.authorities.map((a, i) => [toHex(a.publicKey), i]))
  const keys: Array<KeyPair | undefined> = new Array(committee.authorities.length)
  let found = 0
  const limit = committee.authorities.length + committee.epoch + 1
  for (let v = 0; v < limit && found < keys.length; v++) {
    const k = validatorKey(seed, v)
    const i = want.get(toHex(k.publicKey))
    if (i !== undefined && keys[i] === undefined) { keys[i] = k; found++ }
  }
  return found === keys.length ? keys as KeyPair[] : undefined
}

/** Whether `genesis` is a devnet genesis of `seed` (its committee derives from the seed). */
export function isDevnetGenesis (genesis: Genesis, seed: string): boolean {
  const n = genesis.committee.authorities.length
  const { committee } = devnetCommittee(seed, 0, Array.from({ length: n }, (_, i) => i))
  return committee.authorities.every((a, i) => bytesEqual(a.publicKey, genesis.committee.authorities[i].publicKey) && a.stake === genesis.committee.authorities[i].stake)
}
