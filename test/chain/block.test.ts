import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { parseBlock, verifyBlock, signBlock, blockSigningMessage, blockSignatureCheck, compareRefs, refsEqual, ParsedBlock } from '../../src/chain/block.ts'
import { CommitteeInfo } from '../../src/chain/committee.ts'
import { devnetCommittee } from '../../src/chain/genesis.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { sha256, bytesEqual, utf8 } from '../../src/crypto/hash.ts'
import { verify, deriveKeyPair } from '../../src/crypto/keys.ts'
import { InvalidSignatureError, MalformedMessageError } from '../../src/errors.ts'
import { testChain, block, transfer, fakeDigest, flipBit, hex } from '../helpers/chain.ts'

const c = testChain('block-test')
const committee0 = new CommitteeInfo(c.g.genesis.committee)

function smallBlock (): ParsedBlock {
  return block(c, {
    round: 2,
    author: 1,
    ancestors: [{ round: 1, author: 0, digest: fakeDigest('a0') }, { round: 1, author: 2, digest: fakeDigest('a2') }],
    transactions: [transfer(c, 0, 1, 5, 0)],
    commitVotes: [{ index: 1, digest: fakeDigest('commit 1') }]
  })
}

describe('digest and signature', () => {
  test('digest = sha256(SignedBlock bytes); signature over "soma/block/v1" || sha256(Block bytes)', () => {
    const b = smallBlock()
    assert.equal(hex(b.digest), hex(sha256(b.bytes)))
    assert.deepEqual(Buffer.from(b.bytes), Buffer.from(Codecs.SignedBlock.encode({ block: b.signed.block, signature: b.signed.signature })))
    const msg = blockSigningMessage(b.signed.block)
    assert.deepEqual(Buffer.from(msg), Buffer.concat([utf8.encode('soma/block/v1'), sha256(b.signed.block)]))
    assert.ok(verify(c.validators[1].publicKey, msg, b.signed.signature))
    // the digest covers the signature, not only the block
    assert.notEqual(hex(b.digest), hex(sha256(b.signed.block)))
    assert.deepEqual(b.ref, { round: 2, author: 1, digest: b.digest })
  })

  test('parse + verify accepts a well-formed block signed by its author', () => {
    const b = smallBlock()
    const p = parseBlock(b.bytes, c.chainId)
    assert.equal(hex(p.digest), hex(b.digest))
    assert.equal(verifyBlock(p, committee0), p)
  })

  test('flipping any one bit of the signed block bytes is rejected by parse or verify (and changes the digest)', () => {
    const b = smallBlock()
    assert.ok(b.bytes.length < 600, `small block: ${b.bytes.length} bytes`)
    const accepted: string[] = []
    for (let i = 0; i < b.bytes.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const x = flipBit(b.bytes, i, bit)
        assert.ok(!bytesEqual(sha256(x), b.digest))
        try {
          verifyBlock(parseBlock(x, c.chainId), committee0)
          accepted.push(`${i}.${bit}`)
        } catch (err) {
          assert.ok(err instanceof MalformedMessageError || err instanceof InvalidSignatureError, `byte ${i} bit ${bit}: ${err}`)
        }
      }
    }
    assert.deepEqual(accepted, [])
  })

  test('a block signed by a non-member fails with InvalidSignatureError', () => {
    const stranger = deriveKeyPair('block-test', 'not-a-validator')
    // member's index, stranger's key
    const forged = block(c, { round: 2, author: 1, key: stranger })
    assert.throws(() => verifyBlock(parseBlock(forged.bytes, c.chainId), committee0), InvalidSignatureError)
    // author index outside the committee
    const outside = block(c, { round: 2, author: 4, key: stranger })
    assert.throws(() => verifyBlock(parseBlock(outside.bytes, c.chainId), committee0), (e: any) => e instanceof InvalidSignatureError && /not in the committee/.test(e.message))
    // another member's key
    const wrongMember = block(c, { round: 2, author: 1, key: c.validators[2] })
    assert.throws(() => verifyBlock(wrongMember, committee0), InvalidSignatureError)
  })

  test('a block checked against another epoch\'s committee fails with InvalidSignatureError', () => {
    const b = smallBlock()
    // the same keys, but the committee of epoch 1
    const sameKeysEpoch1 = new CommitteeInfo({ ...c.g.genesis.committee, epoch: 1 })
    assert.throws(() => verifyBlock(b, sameKeysEpoch1), (e: any) => e instanceof InvalidSignatureError && /epoch/.test(e.message))
    // a block of epoch 1 signed by its author in epoch 1's committee, checked against epoch 0
    const { committee: c1, keys: k1 } = devnetCommittee(c.seed, 1, [0, 1, 2, 5])
    const b1 = block(c, { epoch: 1, round: 9, author: 3, key: k1[3] })
    assert.equal(verifyBlock(b1, new CommitteeInfo(c1)), b1)
    assert.throws(() => verifyBlock(b1, committee0), InvalidSignatureError)
    assert.throws(() => blockSignatureCheck(b1, committee0), InvalidSignatureError)
  })

  test('a block re-signed over different content does not verify with the old signature', () => {
    const b = smallBlock()
    const other = Codecs.Block.encode({ ...b.block, timestampMs: b.block.timestampMs + 1 })
    const spliced = Codecs.SignedBlock.encode({ block: other, signature: b.signed.signature })
    assert.throws(() => verifyBlock(parseBlock(spliced, c.chainId), committee0), InvalidSignatureError)
  })
})

describe('parseBlock structure checks', () => {
  test('wrong chain id', () => {
    const b = block(c, { round: 1, author: 0, chainId: fakeDigest('another chain') })
    assert.throws(() => parseBlock(b.bytes, c.chainId), (e: any) => e instanceof MalformedMessageError && /another chain/.test(e.message))
  })

  test('signature that is not 64 bytes', () => {
    const b = smallBlock()
    const bytes = Codecs.SignedBlock.encode({ block: b.signed.block, signature: b.signed.signature.subarray(0, 63) })
    assert.throws(() => parseBlock(bytes, c.chainId), MalformedMessageError)
  })

  test('ancestor at the same or a higher round, or with a short digest', () => {
    const sameRound = block(c, { round: 2, author: 0, ancestors: [{ round: 2, author: 1, digest: fakeDigest('x') }] })
    assert.throws(() => parseBlock(sameRound.bytes, c.chainId), /not below/)
    const shortDigest = block(c, { round: 2, author: 0, ancestors: [{ round: 1, author: 1, digest: new Uint8Array(31) }] })
    assert.throws(() => parseBlock(shortDigest.bytes, c.chainId), MalformedMessageError)
  })

  test('commit vote with a digest that is not 32 bytes', () => {
    const b = block(c, { round: 2, author: 0, commitVotes: [{ index: 1, digest: new Uint8Array(33) }] })
    assert.throws(() => parseBlock(b.bytes, c.chainId), MalformedMessageError)
  })

  test('garbage bytes', () => {
    assert.throws(() => parseBlock(Uint8Array.from([0x0a, 0x40, 1, 2]), c.chainId), MalformedMessageError)
  })
})

describe('refs', () => {
  test('compareRefs orders by round, then author, then digest; refsEqual', () => {
    const r = (round: number, author: number, d: string) => ({ round, author, digest: fakeDigest(d) })
    assert.ok(compareRefs(r(1, 5, 'a'), r(2, 0, 'a')) < 0)
    assert.ok(compareRefs(r(2, 1, 'a'), r(2, 0, 'a')) > 0)
    assert.equal(compareRefs(r(2, 1, 'a'), r(2, 1, 'a')), 0)
    assert.notEqual(compareRefs(r(2, 1, 'a'), r(2, 1, 'b')), 0)
    assert.ok(refsEqual(r(2, 1, 'a'), r(2, 1, 'a')))
    assert.ok(!refsEqual(r(2, 1, 'a'), r(2, 1, 'b')))
  })

  test('signBlock output parses back to the same digest', () => {
    const b = signBlock({ epoch: 0, round: 3, author: 2, timestampMs: 5, ancestors: [], transactions: [], commitVotes: [], chainId: c.chainId }, c.validators[2])
    assert.equal(hex(parseBlock(b.bytes, c.chainId).digest), hex(b.digest))
  })
})
