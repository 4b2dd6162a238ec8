/**
 * Convergence of a testnet, judged from the nodes' `GET /status` (src/node/status-server.ts): a node
 * has converged when it reports the producer's state root at the same commit. The producer may still
 * be producing, so the producer's and every node's (commit → state root) observations are kept, and a
 * node matches as soon as both were seen at one commit; with a producer stopped by --max-commits that
 * happens at its last commit, for certain. A node that reports another root than the producer at the
 * same commit, or another chain id, has diverged.
 */

/** The fields of /status this uses. */
export interface NodeStatus {
  chainId: string
  peerId?: string
  highestSynced: number
  highestExecuted: number
  lowestAvailable: number
  stateRoot: string
  epoch: number
  peers: number
  phase: string
  healthy: boolean
  [key: string]: unknown
}

export type Verdict =
  | { state: 'pending' }
  | { state: 'matched', commit: number, stateRoot: string }
  | { state: 'diverged', detail: string }

/** Checks a /status answer's shape; returns it typed, or throws naming what is missing. */
export function asStatus (json: unknown): NodeStatus {
  const s = json as NodeStatus
  if (s === null || typeof s !== 'object' || typeof s.highestExecuted !== 'number' || typeof s.stateRoot !== 'string' || typeof s.chainId !== 'string') {
    throw new Error(`not a soma-sync /status answer: ${JSON.stringify(json)?.slice(0, 200)}`)
  }
  return s
}

export class Convergence {
  readonly producer: string
  readonly nodes: readonly string[]
  private readonly history = new Map<string, Map<number, string>>()
  private readonly verdicts = new Map<string, Verdict>()
  private readonly last = new Map<string, NodeStatus | Error>()
  private chainId?: string

  /** `nodes`: the nodes that must converge (the producer is not one of them). */
  constructor (producer: string, nodes: readonly string[]) {
    this.producer = producer
    this.nodes = nodes.filter(n => n !== producer)
    for (const n of [producer, ...this.nodes]) this.history.set(n, new Map())
  }

  /** Records one node's /status answer (or the error fetching it). */
  observe (name: string, status: NodeStatus | Error): void {
    this.last.set(name, status)
    if (status instanceof Error) return
    if (name === this.producer) {
      this.chainId = status.chainId
      if (status.stateRoot === '') return
      this.history.get(name)!.set(status.highestExecuted, status.stateRoot)
      for (const n of this.nodes) {
        const root = this.history.get(n)!.get(status.highestExecuted)
        if (root !== undefined) this.judge(n, status.highestExecuted, root)
      }
      return
    }
    const h = this.history.get(name)
    if (h === undefined || status.stateRoot === '') return
    if (this.chainId !== undefined && status.chainId !== this.chainId) {
      this.verdicts.set(name, { state: 'diverged', detail: `chain id ${status.chainId.slice(0, 16)} is not the producer's ${this.chainId.slice(0, 16)}` })
      return
    }
    h.set(status.highestExecuted, status.stateRoot)
    this.judge(name, status.highestExecuted, status.stateRoot)
  }

  private judge (name: string, commit: number, root: string): void {
    const want = this.history.get(this.producer)!.get(commit)
    if (want === undefined || this.verdicts.get(name)?.state === 'diverged') return
    if (want !== root) {
      this.verdicts.set(name, { state: 'diverged', detail: `state root ${root.slice(0, 16)} at commit ${commit}, the producer's is ${want.slice(0, 16)}` })
      return
    }
    const prev = this.verdicts.get(name)
    if (prev?.state !== 'matched' || prev.commit < commit) this.verdicts.set(name, { state: 'matched', commit, stateRoot: root })
  }

  verdict (name: string): Verdict {
    return this.verdicts.get(name) ?? { state: 'pending' }
  }

  /** The last /status answer (or error) of a node. */
  latest (name: string): NodeStatus | Error | undefined {
    return this.last.get(name)
  }

  /** Every node matched the producer (at some commit >= `atLeast`). */
  converged (atLeast = 0): boolean {
    return this.nodes.every(n => {
      const v = this.verdict(n)
      return v.state === 'matched' && v.commit >= atLeast
    })
  }

  /** Nodes that diverged. */
  diverged (): Array<{ name: string, detail: string }> {
    const out: Array<{ name: string, detail: string }> = []
    for (const n of this.nodes) {
      const v = this.verdict(n)
      if (v.state === 'diverged') out.push({ name: n, detail: v.detail })
    }
    return out
  }

  /** A table of the nodes' last status and verdicts. */
  table (): string {
    return formatTable([this.producer, ...this.nodes].map(name => {
      const s = this.last.get(name)
      const v = name === this.producer ? undefined : this.verdict(name)
      const verdict = v === undefined
        ? 'producer'
        : v.state === 'matched' ? `matches the producer at commit ${v.commit}` : v.state === 'diverged' ? `DIVERGED: ${v.detail}` : 'not yet'
      if (s === undefined) return [name, '-', '-', '-', '-', '-', '-', verdict]
      if (s instanceof Error) return [name, '-', '-', '-', '-', '-', `unreachable (${s.message.slice(0, 40)})`, verdict]
      return [name, String(s.highestExecuted), String(s.lowestAvailable), s.stateRoot.slice(0, 16), String(s.epoch), String(s.peers), s.phase, verdict]
    }), ['node', 'commit', 'lowest', 'state root', 'epoch', 'peers', 'phase', 'converged'])
  }
}

/**
 * Evidence, from its /status, that a node restored a snapshot instead of executing every commit from
 * genesis; undefined when there is none. Snapshot sync reports `snapshot: { phase, commit, fetched,
 * reused, ... }` (src/node/node.ts, snapshotSyncComponent): phase 'done' with a commit is the evidence.
 * A node that restored a snapshot also keeps no commit below it: `lowestAvailable` above 1.
 */
export function snapshotSyncEvidence (s: NodeStatus): string | undefined {
  const snap = s.snapshot as { phase?: string, commit?: number, fetched?: unknown, reused?: unknown } | undefined
  if (snap?.phase === 'done' && typeof snap.commit === 'number' && snap.commit > 0) {
    const count = (x: unknown): string => typeof x === 'number' ? `${x} chunks` : typeof x === 'object' && x !== null ? `${(x as any).chunks ?? '?'} chunks, ${(x as any).bytes ?? '?'} bytes` : '?'
    return `restored the snapshot of commit ${snap.commit} (fetched ${count(snap.fetched)}; reused ${count(snap.reused)}), lowest available commit ${s.lowestAvailable}`
  }
  if (snap === undefined && s.lowestAvailable > 1) return `lowest available commit ${s.lowestAvailable}: the state below it came from a snapshot`
  return undefined
}

/**
 * What a node's /status shows of archival mode (src/sync/archival.ts): a description when it runs
 * archival (`archival: true`, lowest available commit 0, full history from genesis), else undefined.
 */
export function archivalEvidence (s: NodeStatus): string | undefined {
  if (s.archival !== true || s.lowestAvailable !== 0) return undefined
  const d = s.archivalDiscovery as { announcing?: boolean } | undefined
  return `archival: every commit from genesis to ${s.highestSynced} kept and served (lowest available commit 0)${d?.announcing === true ? ', announced as an archive of the chain' : ''}`
}

/**
 * Evidence, from its /status, that a node fast-synced history from an archive (--archive-url,
 * src/archive/service.ts): `archiveSync` in phase 'done' with spot checks that P2P peers confirmed;
 * undefined when there is none.
 */
export function archiveSyncEvidence (s: NodeStatus): string | undefined {
  const a = s.archiveSync as { url?: string, phase?: string, target?: number, segmentsStored?: number, downloadedBytes?: number, spotChecks?: number } | undefined
  if (a?.phase !== 'done' || typeof a.spotChecks !== 'number' || a.spotChecks <= 0) return undefined
  return `fast-synced history up to commit ${a.target ?? '?'} from the archive ${a.url ?? '?'} (${a.segmentsStored ?? '?'} segments, ${a.downloadedBytes ?? '?'} bytes, since its last start), ${a.spotChecks} spot checks confirmed by P2P peers; commit sync from there`
}

/** A plain text table. */
export function formatTable (rows: string[][], header: string[]): string {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map(r => (r[i] ?? '').length)))
  const line = (r: string[]): string => r.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd()
  return [line(header), widths.map(w => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}
