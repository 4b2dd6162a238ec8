import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { byteStream } from '@libp2p/utils'
import { connectionMonitorInit, createLibp2pNode } from '../../src/node/libp2p.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(here, '..', 'helpers', 'busy-peer.ts')

type Host = Awaited<ReturnType<typeof createLibp2pNode>>

/** A started Soma libp2p host on 127.0.0.1 (no DHT) with these settings, stopped after the test. */
async function host (t: { after: (fn: () => Promise<void>) => void }, overrides: Partial<SomaConfig> = {}): Promise<Host> {
  const n = await createLibp2pNode({
    config: { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], entrypoints: [], dhtEnabled: false, ...overrides },
    chainId: new Uint8Array(32),
    privateKey: await generateKeyPair('Ed25519'),
    start: true
  })
  t.after(async () => { await n.stop() })
  return n
}

test('pings never overlap: the heartbeat is longer than the ping timeout', () => {
  for (const timeout of [1000, 12_000, DEFAULTS.pingTimeoutMs]) {
    const init = connectionMonitorInit(timeout)
    assert.equal(init.pingTimeout.minTimeout, timeout)
    assert.equal(init.pingTimeout.maxTimeout, timeout)
    assert.ok(init.pingInterval > timeout, `a ping every ${init.pingInterval} ms, each given ${timeout} ms`)
  }
})

test('a peer whose event loop is blocked for 25 s (under a 30 s ping timeout) keeps its connection', { timeout: 90_000 }, async t => {
  // with libp2p's heartbeat (a ping every 10 s, one outbound ping stream per connection) the ping sent
  // while the peer is busy waits for it, the next heartbeat's ping is refused that one stream, and the
  // connection is closed
  const pingTimeoutMs = 30_000
  const child = spawn(process.execPath, [CHILD, String(pingTimeoutMs)], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.after(() => { child.stdin.end(); setTimeout(() => child.kill('SIGKILL'), 5000).unref() })
  const lines = createInterface({ input: child.stdout })
  const next = async (prefix: string): Promise<string> => await new Promise((resolve, reject) => {
    const onLine = (l: string): void => { if (l.startsWith(prefix)) { lines.off('line', onLine); resolve(l.slice(prefix.length)) } }
    lines.on('line', onLine)
    child.once('exit', code => { reject(new Error(`busy peer exited with ${code}`)) })
  })
  const addr = await next('LISTEN ')
  const node = await host(t, { pingTimeoutMs })
  const closed: string[] = []
  node.addEventListener('connection:close', evt => { closed.push(evt.detail.id) })
  const conn = await node.dial(multiaddr(addr))
  // longer than two of libp2p's heartbeats, shorter than the ping timeout: at least one ping waits for it
  child.stdin.write('busy 25000 1\n')
  await next('DONE')
  // the peer answers again over the same connection (identify: a ping of our own would be a second
  // outbound ping stream beside the monitor's, which the protocol's limit refuses)
  const id = await node.services.identify.identify(conn, { signal: AbortSignal.timeout(10_000) })
  assert.equal(id.peerId.toString(), conn.remotePeer.toString())
  assert.deepEqual(closed, [], 'no connection was closed')
  assert.equal(conn.status, 'open')
  assert.deepEqual(node.getConnections().map(c => c.id), [conn.id], 'the first connection is the one still in use')
})

test('--inbound-connection-rate: new connections from one address beyond it in a second are refused, up to it accepted', { timeout: 60_000 }, async t => {
  // six dialers (all on 127.0.0.1) connect at once
  const dialers = await Promise.all(Array.from({ length: 6 }, async () => await host(t)))
  const connectAll = async (server: Host): Promise<number> => {
    const r = await Promise.allSettled(dialers.map(async d => await d.dial(server.getMultiaddrs()[0], { signal: AbortSignal.timeout(10_000) })))
    return r.filter(x => x.status === 'fulfilled').length
  }
  const strict = await host(t, { inboundConnectionRate: 2 })
  const accepted = await connectAll(strict)
  assert.ok(accepted >= 1 && accepted <= 2, `${accepted} of 6 accepted at 2 per second`)
  const open = await host(t, { inboundConnectionRate: 100 })
  assert.equal(await connectAll(open), 6, 'all 6 accepted at 100 per second')
})

test('the answering side of a ping waits --ping-timeout for its bytes (libp2p\'s handler gave up after 10 s)', { timeout: 60_000 }, async t => {
  const [answering, pinging] = [await host(t, { pingTimeoutMs: 30_000 }), await host(t, { pingTimeoutMs: 30_000 })]
  // a pinging node that opens the stream, then is busy for 12 s before it sends the ping's bytes
  const stream = await pinging.dialProtocol(answering.getMultiaddrs()[0], '/ipfs/ping/1.0.0', { signal: AbortSignal.timeout(10_000) })
  const bytes = byteStream(stream)
  await new Promise(resolve => setTimeout(resolve, 12_000))
  const ping = crypto.getRandomValues(new Uint8Array(32))
  await bytes.write(ping, { signal: AbortSignal.timeout(5000) })
  const echo = await bytes.read({ bytes: 32, signal: AbortSignal.timeout(5000) })
  assert.deepEqual(new Uint8Array(echo.subarray()), ping)
  await stream.close()
})
