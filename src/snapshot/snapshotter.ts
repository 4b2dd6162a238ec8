/**
 * Snapshots on a schedule, for the devnet producer: after every end-of-epoch commit and every `every`
 * commits, build a snapshot (incremental from the previous one, full for the first) and attest it with
 * the keys of the commit's epoch committee (all members sign: the devnet holds every key).
 */
import type { ChainStore } from '../store/chain-store.ts'
import type { ExecutedCommit, ExecutionResult } from '../executor/commit-executor.ts'
import type { KeyPair } from '../crypto/keys.ts'
import { buildSnapshot, type SnapshotBuildResult, type SnapshotOptions } from './builder.ts'
import { devnetCommitteeKeys, signManifest } from './attestation.ts'
import { SnapshotStore } from './snapshot-store.ts'
import type { SomaConfig } from '../config.ts'

export interface ScheduledSnapshotOptions extends Omit<SnapshotOptions, 'sign' | 'point' | 'write'> {
  /** also snapshot every this many commits (commit index multiple of it); 0: only at epoch ends. @default 0 */
  every?: number
}

export class Snapshotter {
  readonly store: ChainStore
  readonly seed: string
  readonly opts: ScheduledSnapshotOptions
  private readonly keys = new Map<number, KeyPair[]>()

  constructor (store: ChainStore, seed: string, opts: ScheduledSnapshotOptions = {}) {
    const every = opts.every ?? 0
    if (!Number.isInteger(every) || every < 0) throw new RangeError(`snapshot every must be an integer >= 0 commits, got ${every}`)
    this.store = store
    this.seed = seed
    this.opts = opts
  }

  /** Whether the schedule takes a snapshot after this commit. */
  due (r: ExecutionResult): boolean {
    const every = this.opts.every ?? 0
    return r.nextEpoch !== undefined || (every > 0 && r.index % every === 0)
  }

  private async committeeKeys (epoch: number): Promise<{ committee: NonNullable<Awaited<ReturnType<ChainStore['getCommittee']>>>, keys: KeyPair[] }> {
    const committee = await this.store.getCommittee(epoch)
    if (committee === undefined) throw new Error(`no committee of epoch ${epoch} in the store`)
    let keys = this.keys.get(epoch)
    if (keys === undefined) {
      keys = devnetCommitteeKeys(this.seed, committee.committee)
      if (keys === undefined) throw new Error(`the committee of epoch ${epoch} is not made of devnet keys of this seed`)
      this.keys.clear()
      this.keys.set(epoch, keys)
    }
    return { committee, keys }
  }

  /** Builds and signs the snapshot of the commit just executed, if the schedule says so. */
  async afterCommit (r: ExecutedCommit): Promise<SnapshotBuildResult | undefined> {
    if (!this.due(r)) return undefined
    if (await new SnapshotStore(this.store).has(r.index)) return undefined
    const { committee, keys } = await this.committeeKeys(r.epoch)
    return await buildSnapshot(this.store, {
      ...this.opts,
      point: { commitIndex: r.index, epoch: r.epoch, stateRoot: r.stateRoot },
      sign: (bytes) => signManifest(bytes, committee.committee, keys)
    })
  }
}

/** The producer's snapshot schedule and chunking from the config (`snapshot*` options). */
export function scheduledSnapshotOptions (config: Pick<SomaConfig, 'snapshotTargetChunkBytes' | 'snapshotHotEpochs' | 'snapshotEmbeddingWindowCommits' | 'snapshotKeep' | 'snapshotEvery'>): ScheduledSnapshotOptions {
  return {
    every: config.snapshotEvery,
    targetChunkBytes: config.snapshotTargetChunkBytes,
    hotEpochs: config.snapshotHotEpochs,
    embeddingWindowCommits: config.snapshotEmbeddingWindowCommits,
    keep: config.snapshotKeep
  }
}
