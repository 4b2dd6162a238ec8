/**
 * Embedding pruning: which embeddings the chain-wide rule of the genesis (`Genesis.embedding_pruning`,
 * see protocols/chain.proto) removes at an end-of-epoch commit. Deterministic on every validator: the
 * same live set gives the same selection (float64 arithmetic in a fixed order, no Math.random, no
 * platform-dependent reductions).
 *
 * Cost: age-only pruning reads every live embedding's metadata once; distance and hybrid read every
 * live embedding twice (centroid, then distances). Both happen only at end-of-epoch commits, and only
 * when the genesis enables pruning.
 */
import type { ChainStore } from '../store/chain-store.ts'
import { Bucket, keySuffix } from '../store/keys.ts'
import { EmbeddingPruneMode, type EmbeddingPruning } from '../chain/types.ts'
import { compareBytes } from '../crypto/hash.ts'
import { MalformedMessageError } from '../errors.ts'
import { readVarint } from '../chain/varint.ts'

/** The fields of an encoded Embedding that pruning and snapshots need, read without a full decode. */
export interface EmbeddingMeta {
  commitIndex: number
  epoch: number
  /** offset and length of the vector bytes inside the encoded embedding */
  vectorOffset: number
  vectorLength: number
}

/**
 * Scans an encoded `Embedding` (owner = 1, commit_index = 2, vector = 3, model = 4, epoch = 5) for its
 * commit index, epoch and vector position. Throws MalformedMessageError on bytes that do not parse.
 */
export function embeddingMeta (b: Uint8Array): EmbeddingMeta {
  const m: EmbeddingMeta = { commitIndex: 0, epoch: 0, vectorOffset: 0, vectorLength: 0 }
  let pos = 0
  while (pos < b.length) {
    let tag: number
    [tag, pos] = readVarint(b, pos, 'Embedding')
    const field = Math.floor(tag / 8)
    const wire = tag & 7
    if (wire === 0) {
      let v: number
      [v, pos] = readVarint(b, pos, 'Embedding')
      if (field === 2) m.commitIndex = v
      else if (field === 5) m.epoch = v
    } else if (wire === 2) {
      let len: number
      [len, pos] = readVarint(b, pos, 'Embedding')
      if (pos + len > b.length) throw new MalformedMessageError('malformed Embedding: length past the end')
      if (field === 3) { m.vectorOffset = pos; m.vectorLength = len }
      pos += len
    } else if (wire === 1) {
      pos += 8
    } else if (wire === 5) {
      pos += 4
    } else {
      throw new MalformedMessageError(`malformed Embedding: wire type ${wire}`)
    }
  }
  if (pos !== b.length) throw new MalformedMessageError('malformed Embedding: field past the end')
  return m
}

export interface LiveEmbedding {
  id: Uint8Array
  encoded: Uint8Array
  /** added by the commit being executed (not in the store yet) */
  addedNow: boolean
}

export interface PrunedEmbedding extends LiveEmbedding {
  commitIndex: number
}

/** Every live embedding in ascending id order: the stored ones merged with the ones the commit adds. */
async function * liveEmbeddings (store: ChainStore, added: readonly LiveEmbedding[]): AsyncGenerator<LiveEmbedding> {
  const fresh = [...added].sort((a, b) => compareBytes(a.id, b.id))
  let i = 0
  for await (const [k, v] of store.iterateBucket(Bucket.EMBEDDING)) {
    const id = keySuffix(k)
    while (i < fresh.length && compareBytes(fresh[i].id, id) < 0) yield fresh[i++]
    yield { id, encoded: v, addedNow: false }
  }
  while (i < fresh.length) yield fresh[i++]
}

function vectorView (e: LiveEmbedding, m: EmbeddingMeta): DataView {
  return new DataView(e.encoded.buffer, e.encoded.byteOffset + m.vectorOffset, m.vectorLength)
}

/**
 * The embeddings the rule prunes at the end-of-epoch commit of `epoch`, in ascending id order.
 * `added` are the embeddings the commit itself stores (they are live and may be pruned too).
 */
export async function selectPrunedEmbeddings (store: ChainStore, added: readonly LiveEmbedding[], epoch: number, rule: EmbeddingPruning): Promise<PrunedEmbedding[]> {
  const byAge = rule.mode === EmbeddingPruneMode.AGE || rule.mode === EmbeddingPruneMode.HYBRID
  const byDistance = rule.mode === EmbeddingPruneMode.DISTANCE || rule.mode === EmbeddingPruneMode.HYBRID
  if (!byAge && !byDistance) return []
  const dim = store.genesis.genesis.embeddingDim

  let centroid: Float64Array | undefined
  if (byDistance) {
    const sum = new Float64Array(dim)
    let n = 0
    for await (const e of liveEmbeddings(store, added)) {
      const m = embeddingMeta(e.encoded)
      if (m.vectorLength !== dim * 4) continue
      const dv = vectorView(e, m)
      let finite = true
      for (let d = 0; d < dim; d++) if (!Number.isFinite(dv.getFloat32(d * 4, true))) { finite = false; break }
      if (!finite) continue
      for (let d = 0; d < dim; d++) sum[d] += dv.getFloat32(d * 4, true)
      n++
    }
    if (n > 0) {
      centroid = new Float64Array(dim)
      for (let d = 0; d < dim; d++) centroid[d] = sum[d] / n
    }
  }

  const out: PrunedEmbedding[] = []
  for await (const e of liveEmbeddings(store, added)) {
    const m = embeddingMeta(e.encoded)
    let prune = byAge && m.epoch + rule.maxAgeEpochs < epoch
    if (!prune && byDistance && centroid !== undefined) prune = distance(vectorView(e, m), centroid, dim) > rule.maxDistance
    if (prune) out.push({ ...e, commitIndex: m.commitIndex })
  }
  return out
}

/** L2 distance of a float32 LE vector from `c`, in float64; +Infinity for a non-finite or wrong-size vector. */
export function distance (v: DataView, c: Float64Array, dim: number): number {
  if (v.byteLength !== dim * 4) return Infinity
  let s = 0
  for (let d = 0; d < dim; d++) {
    const x = v.getFloat32(d * 4, true)
    if (!Number.isFinite(x)) return Infinity
    const diff = x - c[d]
    s += diff * diff
  }
  return Math.sqrt(s)
}
