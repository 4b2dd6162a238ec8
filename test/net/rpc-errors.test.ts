import { test } from 'node:test'
import assert from 'node:assert/strict'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { classifyError, errorText } from '../../src/net/rpc.ts'
import { PeerRequestFailedError, PeerTimeoutError } from '../../src/errors.ts'

test('a wait rejected with a stream\'s close Event is named as the stream closing, never "[object Event]"', async () => {
  const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
  const plain = new Event('close')
  assert.equal(errorText(plain), 'the stream closed (its connection was closed or reset)')
  const withError = Object.assign(new Event('close'), { error: new Error('stream reset') })
  assert.equal(errorText(withError), 'the stream closed (stream reset)')
  const err = classifyError(withError, new AbortController().signal, peer, '/soma/fetch-commits/1.0.0')
  assert.ok(err instanceof PeerRequestFailedError)
  assert.equal(err.message, `/soma/fetch-commits/1.0.0 request to ${peer.toString()} failed: the stream closed (stream reset)`)
  assert.doesNotMatch(err.message, /object Event/)
  // errors keep their own message, and a timeout is still a timeout
  assert.equal(errorText(new Error('boom')), 'boom')
  assert.equal(errorText('text'), 'text')
  assert.ok(classifyError(plain, AbortSignal.abort(new DOMException('t', 'TimeoutError')), peer, '/p', 1000) instanceof PeerTimeoutError)
})
