import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseTransaction, txSignatureCheck, txSigningMessage, signTransaction, systemTransaction, MAX_MODEL_TAG_BYTES } from '../../src/chain/transaction.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { sha256, utf8 } from '../../src/crypto/hash.ts'
import { verify } from '../../src/crypto/keys.ts'
import { InvalidTransactionError } from '../../src/errors.ts'
import type { SignedTransaction, Transaction } from '../../src/chain/types.ts'
import { testChain, transfer, embedding, fakeDigest, flipBit, hex } from '../helpers/chain.ts'

const DIM = 4
const c = testChain('tx-test', { embeddingDim: DIM })

/** parse + signature check, as block/tx verification does. */
function accept (stx: SignedTransaction, chainId = c.chainId, dim = DIM): boolean {
  const p = parseTransaction(stx, chainId, dim)
  const check = txSignatureCheck(p)
  return check === null || verify(check.publicKey, check.message, check.signature)
}

test('tx digest = sha256(tx bytes); signature over "soma/tx/v1" || digest, by the sender', () => {
  const stx = transfer(c, 0, 1, 10, 0)
  const p = parseTransaction(stx, c.chainId, DIM)
  assert.equal(hex(p.digest), hex(sha256(stx.tx)))
  const check = txSignatureCheck(p)!
  assert.deepEqual(Buffer.from(check.message), Buffer.concat([utf8.encode('soma/tx/v1'), sha256(stx.tx)]))
  assert.equal(hex(check.message), hex(txSigningMessage(p.digest)))
  assert.equal(hex(check.publicKey), hex(c.accounts[0].publicKey))
  assert.ok(verify(check.publicKey, check.message, check.signature))
  assert.ok(accept(embedding(c, 2, 0, DIM)))
})

test('flipping any one bit of the tx bytes or its signature fails parse or signature', () => {
  const stx = transfer(c, 0, 1, 10, 3)
  let checked = 0
  for (const field of ['tx', 'signature'] as const) {
    for (let i = 0; i < stx[field].length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const mutated = { ...stx, [field]: flipBit(stx[field], i, bit) }
        let ok = false
        try { ok = accept(mutated) } catch (err) { assert.ok(err instanceof InvalidTransactionError, String(err)) }
        assert.equal(ok, false, `${field} byte ${i} bit ${bit}`)
        checked++
      }
    }
  }
  assert.equal(checked, (stx.tx.length + 64) * 8)
})

test('a transaction signed by someone other than the sender fails', () => {
  const k = c.accounts[0]
  const forged = signTransaction({ sender: k.publicKey, nonce: 0, chainId: c.chainId, transfer: { to: c.accounts[1].publicKey, amount: 1 } }, c.accounts[1])
  assert.equal(accept(forged), false)
})

test('wrong chain id is rejected', () => {
  const stx = transfer(c, 0, 1, 10, 0, fakeDigest('other chain'))
  assert.throws(() => parseTransaction(stx, c.chainId, DIM), (e: any) => e instanceof InvalidTransactionError && /another chain/.test(e.message))
  // and accepted on that chain
  assert.ok(accept(stx, fakeDigest('other chain')))
})

test('embedding of the wrong dimension is rejected', () => {
  for (const dim of [DIM - 1, DIM + 1, 0]) {
    const stx = embedding(c, 0, 0, dim)
    assert.throws(() => parseTransaction(stx, c.chainId, DIM), (e: any) => e instanceof InvalidTransactionError && /dimensions/.test(e.message), `dim ${dim}`)
  }
  // a byte length that is not a multiple of 4
  const k = c.accounts[0]
  const odd = signTransaction({ sender: k.publicKey, nonce: 0, chainId: c.chainId, submitEmbedding: { vector: new Uint8Array(DIM * 4 + 1) } }, k)
  assert.throws(() => parseTransaction(odd, c.chainId, DIM), InvalidTransactionError)
})

test('embedding model tag longer than 64 bytes is rejected, 64 is fine', () => {
  const k = c.accounts[0]
  const mk = (model: string) => signTransaction({ sender: k.publicKey, nonce: 0, chainId: c.chainId, submitEmbedding: { vector: new Uint8Array(DIM * 4), model } }, k)
  assert.ok(accept(mk('m'.repeat(MAX_MODEL_TAG_BYTES))))
  assert.throws(() => parseTransaction(mk('m'.repeat(MAX_MODEL_TAG_BYTES + 1)), c.chainId, DIM), InvalidTransactionError)
  // bytes, not characters
  assert.throws(() => parseTransaction(mk('é'.repeat(33)), c.chainId, DIM), InvalidTransactionError)
})

test('ChangeEpoch with a sender or a signature is rejected; without both it is accepted without a signature check', () => {
  const ce: Transaction = { sender: new Uint8Array(0), nonce: 0, chainId: c.chainId, changeEpoch: { nextEpoch: 1, nextCommittee: { ...c.g.genesis.committee, epoch: 1 } } }
  const sys = systemTransaction(ce)
  assert.equal(sys.signature.byteLength, 0)
  const p = parseTransaction(sys, c.chainId, DIM)
  assert.equal(p.tx.kind, 'changeEpoch')
  assert.equal(txSignatureCheck(p), null)
  const withSender = signTransaction({ ...ce, sender: c.accounts[0].publicKey }, c.accounts[0])
  assert.throws(() => parseTransaction(withSender, c.chainId, DIM), (e: any) => e instanceof InvalidTransactionError && /ChangeEpoch/.test(e.message))
  const withSenderNoSig = { tx: Codecs.Transaction.encode({ ...ce, sender: c.accounts[0].publicKey }), signature: new Uint8Array(0) }
  assert.throws(() => parseTransaction(withSenderNoSig, c.chainId, DIM), InvalidTransactionError)
  const withSig = { tx: sys.tx, signature: new Uint8Array(64).fill(1) }
  assert.throws(() => parseTransaction(withSig, c.chainId, DIM), InvalidTransactionError)
})

test('malformed transfers and transactions without a kind are rejected', () => {
  const k = c.accounts[0]
  const cases: Array<[string, Transaction]> = [
    ['zero amount', { sender: k.publicKey, nonce: 0, chainId: c.chainId, transfer: { to: c.accounts[1].publicKey, amount: 0 } }],
    ['short recipient', { sender: k.publicKey, nonce: 0, chainId: c.chainId, transfer: { to: new Uint8Array(31), amount: 1 } }],
    ['short sender', { sender: k.publicKey.subarray(0, 31), nonce: 0, chainId: c.chainId, transfer: { to: c.accounts[1].publicKey, amount: 1 } }],
    ['no kind', { sender: k.publicKey, nonce: 0, chainId: c.chainId }]
  ]
  for (const [what, tx] of cases) {
    assert.throws(() => parseTransaction(signTransaction(tx, k), c.chainId, DIM), InvalidTransactionError, what)
  }
  assert.throws(() => parseTransaction({ tx: Uint8Array.from([0x0a, 0x09]), signature: new Uint8Array(64) }, c.chainId, DIM), (e: any) => e instanceof InvalidTransactionError && /does not decode/.test(e.message))
})
