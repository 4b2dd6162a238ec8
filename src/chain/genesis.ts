import { Codecs } from './codecs.ts'
import { EmbeddingPruneMode, type Authority, type Committee, type EmbeddingPruning, type Genesis } from './types.ts'
import { validateCommittee } from './committee.ts'
import { sha256, toHex } from '../crypto/hash.ts'
import { deriveKeyPair, type KeyPair } from '../crypto/keys.ts'
import { MalformedMessageError } from '../errors.ts'

export interface GenesisInit {
  /** Seed from which every key derives. */
  seed: string
  chainName?: string
  validators: number
  accounts: number
  initialBalance: number
  embeddingDim: number
  timestampMs?: number
  /** chain-wide embedding pruning; omitted (the default) means none, and leaves the genesis bytes as before */
  embeddingPruning?: EmbeddingPruning
}

export interface GenesisBundle {
  genesis: Genesis
  bytes: Uint8Array
  chainId: Uint8Array
}

export function validatorKey (seed: string, n: number): KeyPair {
  return deriveKeyPair(seed, `validator/${n}`)
}

export function accountKey (seed: string, n: number): KeyPair {
  return deriveKeyPair(seed, `account/${n}`)
}

/** Validator stake in the devnet: deterministic, varied, so quorum math is not trivially n-based. */
export function devnetStake (seed: string, validator: number, epoch: number): number {
  const h = sha256(new TextEncoder().encode(`soma/stake/${seed}/${validator}/${epoch}`))
  return 1000 + (h[0] << 8 | h[1]) % 1000
}

export function devnetCommittee (seed: string, epoch: number, members: number[]): { committee: Committee, keys: KeyPair[] } {
  const keys = members.map(m => validatorKey(seed, m))
  const authorities: Authority[] = members.map((m, i) => ({
    publicKey: keys[i].publicKey,
    stake: devnetStake(seed, m, epoch),
    address: '',
    name: `validator-${m}`
  }))
  return { committee: { epoch, authorities }, keys }
}

export function createGenesis (init: GenesisInit): GenesisBundle {
  if (!Number.isInteger(init.validators) || init.validators < 1) throw new RangeError(`validators must be >= 1, got ${init.validators}`)
  if (!Number.isInteger(init.accounts) || init.accounts < 0) throw new RangeError(`accounts must be >= 0, got ${init.accounts}`)
  const members = Array.from({ length: init.validators }, (_, i) => i)
  const { committee } = devnetCommittee(init.seed, 0, members)
  const genesis: Genesis = {
    chainName: init.chainName ?? 'soma-devnet',
    timestampMs: init.timestampMs ?? 0,
    committee,
    accounts: Array.from({ length: init.accounts }, (_, i) => ({ address: accountKey(init.seed, i).publicKey, balance: init.initialBalance })),
    embeddingDim: init.embeddingDim
  }
  if (init.embeddingPruning !== undefined && init.embeddingPruning.mode !== EmbeddingPruneMode.NONE) genesis.embeddingPruning = init.embeddingPruning
  const bytes = Codecs.Genesis.encode(genesis)
  return decodeGenesis(bytes)
}

/** Decodes genesis bytes and checks them; chain id = sha256(bytes). */
export function decodeGenesis (bytes: Uint8Array): GenesisBundle {
  const genesis = Codecs.Genesis.decode(bytes)
  if (genesis.committee == null) throw new MalformedMessageError('genesis has no committee')
  validateCommittee(genesis.committee)
  if (genesis.committee.epoch !== 0) throw new MalformedMessageError('genesis committee must be of epoch 0')
  if (!Number.isInteger(genesis.embeddingDim) || genesis.embeddingDim < 1 || genesis.embeddingDim > 65536) {
    throw new MalformedMessageError(`genesis embedding dimension ${genesis.embeddingDim} is out of range 1..65536`)
  }
  validatePruning(genesis.embeddingPruning)
  const seen = new Set<string>()
  for (const a of genesis.accounts) {
    if (a.address.byteLength !== 32) throw new MalformedMessageError('genesis account address is not 32 bytes')
    const k = toHex(a.address)
    if (seen.has(k)) throw new MalformedMessageError(`genesis account ${k} appears twice`)
    seen.add(k)
  }
  return { genesis, bytes, chainId: sha256(bytes) }
}

function validatePruning (p: EmbeddingPruning | null | undefined): void {
  if (p == null) return
  const modes: number[] = Object.values(EmbeddingPruneMode)
  if (!modes.includes(p.mode)) throw new MalformedMessageError(`genesis embedding pruning mode ${p.mode} is unknown`)
  if (!Number.isSafeInteger(p.maxAgeEpochs) || p.maxAgeEpochs < 0) throw new MalformedMessageError(`genesis embedding pruning max age ${p.maxAgeEpochs} is not a non-negative integer`)
  if (!Number.isFinite(p.maxDistance) || p.maxDistance < 0) throw new MalformedMessageError(`genesis embedding pruning max distance ${p.maxDistance} is not a finite non-negative number`)
}

/** The genesis' pruning rule, or null when it prunes nothing. */
export function pruningRule (g: Genesis): EmbeddingPruning | null {
  const p = g.embeddingPruning
  return p == null || p.mode === EmbeddingPruneMode.NONE ? null : p
}
