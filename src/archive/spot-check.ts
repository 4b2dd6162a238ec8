/**
 * Spot checks (issue 14): while the fast mode reads an archive, it samples commits (at least
 * `perEpoch` per epoch, spread over the epoch's segments in proportion to their commits) and asks at
 * least `peers` P2P peers for them over /soma/fetch-commits/1.0.0; a peer whose commit has another
 * digest stops the fast mode with a SpotCheckError naming the commit, the archive object and the
 * peers. Peers that cannot answer (no such commit, unreachable) are skipped; when fewer than `peers`
 * answer within the wait, the sample is logged at warn as unchecked.
 */
import type { PeerId } from '@libp2p/interface'
import type { ParsedCommit } from '../chain/commit.ts'
import { parseCommit } from '../chain/commit.ts'
import type { FetchCommits } from '../sync/protocols/fetch-commits.ts'
import { bytesEqual, short } from '../crypto/hash.ts'
import { SpotCheckError } from '../errors.ts'
import type { Logger } from '../utils/logger.ts'

export interface SpotCheckOptions {
  /** commits sampled per epoch (0: no spot checks). @default 2 */
  perEpoch?: number
  /** peers that must agree on each sample. @default 2 */
  peers?: number
  /** one request's timeout. @default 10 s */
  timeoutMs?: number
  /** how long to wait for enough peers to answer one sample. @default 30 s */
  waitMs?: number
  /** random in [0, 1) (tests). @default Math.random */
  random?: () => number
}

export class SpotChecker {
  private readonly fetchCommits: FetchCommits
  private readonly connectedPeers: () => PeerId[]
  private readonly log: Logger
  private readonly opts: Required<SpotCheckOptions>
  /** samples fewer than `peers` peers answered */
  unchecked = 0

  constructor (fetchCommits: FetchCommits, connectedPeers: () => PeerId[], log: Logger, opts: SpotCheckOptions = {}) {
    this.fetchCommits = fetchCommits
    this.connectedPeers = connectedPeers
    this.log = log
    this.opts = { perEpoch: opts.perEpoch ?? 2, peers: opts.peers ?? 2, timeoutMs: opts.timeoutMs ?? 10_000, waitMs: opts.waitMs ?? 30_000, random: opts.random ?? Math.random }
  }

  /** How many of a segment's `count` commits to sample when its epoch has `epochCommits`. */
  samples (count: number, epochCommits: number): number {
    if (this.opts.perEpoch <= 0) return 0
    return Math.min(count, Math.max(1, Math.ceil(this.opts.perEpoch * count / Math.max(1, epochCommits))))
  }

  /**
   * Samples commits of one verified segment (`object` names it) and compares them with peers'.
   * Returns the number of samples that enough peers confirmed; throws SpotCheckError on a difference.
   */
  async check (commits: readonly ParsedCommit[], object: string, epochCommits: number, signal: AbortSignal): Promise<number> {
    const n = this.samples(commits.length, epochCommits)
    const picked = new Set<number>()
    while (picked.size < n) picked.add(Math.floor(this.opts.random() * commits.length))
    const results = await Promise.all([...picked].map(async i => await this.checkOne(commits[i], object, signal)))
    return results.filter(Boolean).length
  }

  private async checkOne (commit: ParsedCommit, object: string, signal: AbortSignal): Promise<boolean> {
    const agreed: string[] = []
    const asked = new Set<string>()
    const deadline = Date.now() + this.opts.waitMs
    while (agreed.length < this.opts.peers && Date.now() < deadline) {
      signal.throwIfAborted()
      const candidates = this.connectedPeers().filter(p => !asked.has(p.toString()))
      if (candidates.length === 0) {
        await new Promise(resolve => setTimeout(resolve, 200))
        continue
      }
      // random order: which peers are asked is not predictable by a bucket or a peer
      candidates.sort(() => this.opts.random() - 0.5)
      for (const peer of candidates) {
        if (agreed.length >= this.opts.peers) break
        asked.add(peer.toString())
        let digest: Uint8Array
        try {
          // asked with the next commit too: a server answers only a prefix it can certify with stored
          // votes, and a node that synced the chain holds the votes for the commit before an epoch's
          // last only through the last one's certifiers (protocols/README.md, Archive)
          const res = await this.fetchCommits.fetch(peer, commit.index, commit.index + 1, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.opts.timeoutMs)]) })
          const theirs = parseCommit(res.commits[0])
          if (theirs.index !== commit.index) throw new Error(`answered commit ${theirs.index}`)
          digest = theirs.digest
        } catch (err: any) {
          if (signal.aborted) throw err
          this.log.info('spot check of commit %d: peer %s did not answer: %s', commit.index, peer.toString(), err.message)
          continue
        }
        if (!bytesEqual(digest, commit.digest)) {
          throw new SpotCheckError(`spot check of commit ${commit.index} failed: peer ${peer.toString()} has digest ${short(digest)}, ${object} has ${short(commit.digest)}${agreed.length > 0 ? ` (peers ${agreed.join(', ')} agree with the archive)` : ''}`)
        }
        agreed.push(peer.toString())
      }
    }
    if (agreed.length < this.opts.peers) {
      this.unchecked++
      this.log.warn('spot check of commit %d (%s): %d of %d peers answered; unchecked', commit.index, object, agreed.length, this.opts.peers)
      return false
    }
    this.log.debug('spot check of commit %d: peers %s agree', commit.index, agreed.join(', '))
    return true
  }
}
