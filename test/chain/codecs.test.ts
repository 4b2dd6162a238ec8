import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { codec, protoRoot, type Codec } from '../../src/chain/proto.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { MalformedMessageError } from '../../src/errors.ts'
import { fakeDigest } from '../helpers/chain.ts'

const key = (n: number): Uint8Array => new Uint8Array(32).fill(n)
const sig = (n: number): Uint8Array => new Uint8Array(64).fill(n)

const authority = (n: number) => ({ publicKey: key(n), stake: 1000 + n, address: `/ip4/10.0.0.${n}/tcp/4001`, name: `validator-${n}` })
const committee = { epoch: 7, authorities: [authority(1), authority(2), authority(3)] }
const blockRef = (n: number) => ({ round: 10 + n, author: n, digest: fakeDigest(`block ${n}`) })
const commitVote = { index: 41, digest: fakeDigest('commit 41') }
const transfer = { to: key(9), amount: 2 ** 32 + 5 }
const submitEmbedding = { vector: new Uint8Array(new Float32Array([0.5, -1, 2, 3.25]).buffer), model: 'clip-vit' }
const changeEpoch = { nextEpoch: 8, nextCommittee: { ...committee, epoch: 8 } }
const txBase = { sender: key(4), nonce: 3, chainId: fakeDigest('chain') }
const signedTx = { tx: Codecs.Transaction.encode({ ...txBase, transfer }), signature: sig(5) }
const block = {
  epoch: 2,
  round: 77,
  author: 3,
  timestampMs: 1_700_000_000_123,
  ancestors: [blockRef(0), blockRef(1)],
  transactions: [signedTx, { tx: new Uint8Array([1, 2, 3]), signature: sig(6) }],
  commitVotes: [commitVote],
  chainId: fakeDigest('chain')
}
const signedBlock = { block: Codecs.Block.encode(block), signature: sig(7) }
const commitBase = {
  index: 42,
  previousDigest: fakeDigest('commit 41'),
  leader: blockRef(2),
  blocks: [blockRef(0), blockRef(1), blockRef(2)],
  epoch: 7,
  timestampMs: 1_700_000_000_999
}

/** Every message of protocols/chain.proto with one or more fully populated sample values. */
const samples: Record<string, any[]> = {
  Authority: [authority(1), { publicKey: key(1), stake: Number.MAX_SAFE_INTEGER, address: '', name: '' }],
  Committee: [committee],
  Account: [{ address: key(8), balance: 123_456_789_012 }],
  Genesis: [
    { chainName: 'soma-test', timestampMs: 1_700_000_000_000, committee: { ...committee, epoch: 0 }, accounts: [{ address: key(8), balance: 5 }, { address: key(9), balance: 6 }], embeddingDim: 768 },
    { chainName: 'soma-test', timestampMs: 1, committee: { ...committee, epoch: 0 }, accounts: [], embeddingDim: 8, embeddingPruning: { mode: 3, maxAgeEpochs: 10, maxDistance: 2.5 } }
  ],
  EmbeddingPruning: [{ mode: 2, maxAgeEpochs: 0, maxDistance: 0.125 }, { mode: 1, maxAgeEpochs: 4, maxDistance: 0 }],
  Transfer: [transfer],
  SubmitEmbedding: [submitEmbedding],
  ChangeEpoch: [changeEpoch],
  Transaction: [{ ...txBase, transfer }, { ...txBase, submitEmbedding }, { sender: new Uint8Array(0), nonce: 0, chainId: fakeDigest('chain'), changeEpoch }],
  SignedTransaction: [signedTx],
  BlockRef: [blockRef(3)],
  CommitVote: [commitVote],
  Block: [block],
  SignedBlock: [signedBlock],
  EndOfEpoch: [{ nextCommittee: { ...committee, epoch: 8 } }],
  Commit: [commitBase, { ...commitBase, endOfEpoch: { nextCommittee: { ...committee, epoch: 8 } } }],
  CommittedSubDag: [{ commit: Codecs.Commit.encode(commitBase), blocks: [Codecs.SignedBlock.encode(signedBlock), new Uint8Array([9, 9])] }],
  AccountState: [{ balance: 999, nonce: 12, lastModifiedEpoch: 3 }],
  Embedding: [{ owner: key(4), commitIndex: 42, vector: submitEmbedding.vector, model: 'clip-vit', epoch: 7 }],
  TransactionEffects: [{ txDigest: fakeDigest('tx'), commitIndex: 42, status: 2, error: 'nonce 3, account is at 2' }, { txDigest: fakeDigest('tx2'), commitIndex: 1, status: 0 }]
}

const hex = (b: Uint8Array): string => `hex:${Buffer.from(b).toString('hex')}`

/**
 * Comparable form of a message of `type`: every field of the schema, absent ones as their proto3
 * default (0, '', empty bytes, [], null for messages); bytes as hex. Fields outside the schema are kept
 * too, so a sample with a misspelt field does not compare equal.
 */
function norm (type: any, v: any): any {
  if (v == null) return null
  const o: Record<string, any> = {}
  for (const f of type.fieldsArray) {
    const x = v[f.name]
    const one = (y: any): any => {
      if (f.resolvedType?.fieldsArray !== undefined) return norm(f.resolvedType, y)
      if (f.type === 'bytes') return hex(y ?? new Uint8Array(0))
      if (f.type === 'string') return y ?? ''
      if (f.type === 'bool') return y ?? false
      return y ?? 0
    }
    o[f.name] = f.repeated ? (x ?? []).map(one) : one(x)
  }
  for (const k of Object.keys(v)) if (!(k in o)) o[`unknown:${k}`] = v[k]
  return o
}

function chainMessageTypes (): any[] {
  const ns = protoRoot.lookup('soma') as any
  return ns.nestedArray.filter((t: any) => t.fieldsArray !== undefined && String(t.filename).endsWith('chain.proto'))
}

const codecs = new Map<string, Codec<any>>()
function codecOf (name: string): Codec<any> { let c = codecs.get(name); if (c === undefined) { c = codec<any>(`soma.${name}`); codecs.set(name, c) } return c }

test('the samples cover every message of chain.proto', () => {
  assert.deepEqual(Object.keys(samples).sort(), chainMessageTypes().map(t => t.name).sort())
})

test('Codecs exposes the same schema as codec()', () => {
  for (const [name, c] of Object.entries(Codecs)) {
    const expected = name === 'CommittedSubDag' ? 'CommittedSubDag' : name
    assert.equal(c.name, expected)
    for (const s of samples[expected] ?? []) assert.deepEqual(c.encode(s), codecOf(expected).encode(s))
  }
})

describe('round trips', () => {
  for (const [name, values] of Object.entries(samples)) {
    test(name, () => {
      const c = codecOf(name)
      const type = protoRoot.lookupType(`soma.${name}`)
      for (const value of values) {
        const bytes = c.encode(value)
        assert.ok(bytes.byteLength > 0)
        const decoded = c.decode(bytes)
        // fields equal
        assert.deepStrictEqual(norm(type, decoded), norm(type, value))
        // bytes equal after decode -> encode (canonical)
        assert.deepEqual(Buffer.from(c.encode(decoded)), Buffer.from(bytes))
        // decoding a Buffer view at an offset gives the same
        const padded = new Uint8Array(bytes.byteLength + 3); padded.set(bytes, 3)
        assert.deepStrictEqual(norm(type, c.decode(padded.subarray(3))), norm(type, value))
      }
    })
  }

  test('Transaction oneof: kind names the member present, the others are absent', () => {
    for (const kind of ['transfer', 'submitEmbedding', 'changeEpoch'] as const) {
      const value = samples.Transaction.find(v => v[kind] !== undefined)
      const d = Codecs.Transaction.decode(Codecs.Transaction.encode(value))
      assert.equal(d.kind, kind)
      for (const other of ['transfer', 'submitEmbedding', 'changeEpoch'] as const) {
        if (other !== kind) assert.equal(d[other] ?? null, null)
      }
    }
    const none = Codecs.Transaction.decode(Codecs.Transaction.encode({ ...txBase }))
    assert.equal(none.kind, undefined)
  })

  test('Commit without endOfEpoch decodes it as absent; with it, as the committee', () => {
    const [plainCommit, eoeCommit] = samples.Commit
    assert.equal(Codecs.Commit.decode(Codecs.Commit.encode(plainCommit)).endOfEpoch ?? null, null)
    const d = Codecs.Commit.decode(Codecs.Commit.encode(eoeCommit))
    assert.equal(d.endOfEpoch!.nextCommittee.epoch, 8)
    assert.equal(d.endOfEpoch!.nextCommittee.authorities.length, 3)
  })

  test('encoding is deterministic and field-ordered (same value, same bytes)', () => {
    const a = Codecs.Block.encode(block)
    const reordered = Object.fromEntries(Object.entries(block).reverse()) as any
    assert.deepEqual(Buffer.from(Codecs.Block.encode(reordered)), Buffer.from(a))
  })

  test('default scalars are omitted: an all-default message encodes to no bytes', () => {
    assert.equal(Codecs.AccountState.encode({ balance: 0, nonce: 0, lastModifiedEpoch: 0 }).byteLength, 0)
    assert.equal(Codecs.BlockRef.encode({ round: 0, author: 0, digest: new Uint8Array(0) }).byteLength, 0)
  })
})

describe('64-bit integers', () => {
  test('2^53-1 round-trips exactly', () => {
    const v = { index: Number.MAX_SAFE_INTEGER, digest: fakeDigest('x') }
    assert.equal(codecOf('CommitVote').decode(codecOf('CommitVote').encode(v)).index, Number.MAX_SAFE_INTEGER)
  })

  test('values above 2^53-1 on the wire are refused, also nested', () => {
    // varint of 2^53 + 1, as field 1 (index) of CommitVote
    const varint = (n: bigint): number[] => { const out: number[] = []; while (n >= 0x80n) { out.push(Number(n & 0x7fn) | 0x80); n >>= 7n } out.push(Number(n)); return out }
    const big = Uint8Array.from([0x08, ...varint(2n ** 53n + 1n)])
    assert.throws(() => codecOf('CommitVote').decode(big), (e: any) => e instanceof MalformedMessageError && /CommitVote/.test(e.message))
    // nested: Block.commit_votes (field 7) holding that vote
    const nested = Uint8Array.from([0x3a, big.length, ...big])
    assert.throws(() => Codecs.Block.decode(nested), (e: any) => e instanceof MalformedMessageError && /Block/.test(e.message))
    // just below the limit is fine
    const ok = Uint8Array.from([0x08, ...varint(2n ** 53n - 1n)])
    assert.equal(codecOf('CommitVote').decode(ok).index, Number.MAX_SAFE_INTEGER)
  })
})

describe('malformed bytes', () => {
  const inputs: Array<[string, Uint8Array]> = [
    ['truncated varint', Uint8Array.from([0x08, 0x80])],
    ['truncated length-delimited field', Uint8Array.from([0x0a, 0x05, 0x01])],
    ['invalid wire type', Uint8Array.from([0x7f])],
    ['length beyond the end', Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])]
  ]
  for (const t of chainMessageTypes()) {
    test(`${t.name}: MalformedMessageError naming the type`, () => {
      const c = codecOf(t.name)
      for (const [what, bytes] of inputs) {
        assert.throws(() => c.decode(bytes), (e: any) => {
          assert.ok(e instanceof MalformedMessageError, `${what}: ${e}`)
          assert.equal(e.code, 'ERR_MALFORMED_MESSAGE')
          assert.match(e.message, new RegExp(`\\b${t.name}\\b`), what)
          return true
        }, what)
      }
    })
  }

  test('a valid message truncated anywhere never decodes silently to the same value', () => {
    const bytes = Codecs.SignedBlock.encode(signedBlock)
    for (let n = 1; n < bytes.length; n++) {
      let same = false
      try { same = Buffer.from(Codecs.SignedBlock.encode(Codecs.SignedBlock.decode(bytes.subarray(0, n)))).equals(Buffer.from(bytes)) } catch {}
      assert.equal(same, false, `truncated at ${n}`)
    }
  })
})

describe('absent fields', () => {
  for (const t of chainMessageTypes()) {
    test(`${t.name}: absent bytes decode as an empty Uint8Array, repeated as []`, () => {
      const d = codecOf(t.name).decode(new Uint8Array(0))
      for (const f of t.fieldsArray) {
        const v = d[f.name]
        if (f.repeated) {
          assert.ok(Array.isArray(v), `${t.name}.${f.name} is an array`)
          assert.equal(v.length, 0)
        } else if (f.type === 'bytes') {
          assert.ok(v instanceof Uint8Array, `${t.name}.${f.name} is a Uint8Array`)
          assert.equal(v.byteLength, 0)
        } else if (f.resolvedType != null && f.resolvedType.fieldsArray !== undefined) {
          assert.equal(v ?? null, null, `${t.name}.${f.name} (a message) is absent`)
        } else if (f.type === 'string') {
          assert.equal(v, '')
        } else {
          assert.equal(v, 0, `${t.name}.${f.name} is 0`)
        }
      }
    })
  }

  test('absent bytes inside nested messages and sub-fields are empty Uint8Arrays too', () => {
    const c = Codecs.Committee.decode(Codecs.Committee.encode({ epoch: 1, authorities: [{ stake: 5 } as any] }))
    assert.ok(c.authorities[0].publicKey instanceof Uint8Array)
    assert.equal(c.authorities[0].publicKey.byteLength, 0)
    const b = Codecs.Block.decode(Codecs.Block.encode({ ...block, ancestors: [{ round: 1, author: 2 } as any] }))
    assert.ok(b.ancestors[0].digest instanceof Uint8Array)
    assert.equal(b.ancestors[0].digest.byteLength, 0)
  })
})
