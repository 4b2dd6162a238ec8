/**
 * The testnet's user-space latency (testnet/delay-proxy.ts): added delay each way, byte-exact streams
 * in both directions under backpressure, half-close passed on after the data, delay changed live.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { DelayProxy } from '../../testnet/delay-proxy.ts'

async function listen (server: Server): Promise<number> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as { port: number }).port
}

async function connect (port: number): Promise<Socket> {
  return await new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port, allowHalfOpen: true }, () => { resolve(s) })
    s.once('error', reject)
  })
}

async function readAll (s: Socket): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of s) parts.push(c as Buffer)
  return Buffer.concat(parts)
}

test('delay proxy: adds the delay each way, keeps streams exact, passes half-close on, changes delay live', { timeout: 60_000 }, async t => {
  // the target echoes everything back and ends when the client has ended
  const echo = createServer({ allowHalfOpen: true }, s => { s.pipe(s) })
  const target = await listen(echo)
  const proxy = new DelayProxy({ listenHost: '127.0.0.1', listenPort: 0, targetHost: '127.0.0.1', targetPort: target, delayMs: 100, maxQueuedBytes: 256 * 1024 })
  await proxy.start()
  t.after(async () => {
    await proxy.stop()
    await new Promise(resolve => echo.close(resolve))
  })

  // one round trip crosses the proxy twice each way: >= 2 x 100 ms
  const s1 = await connect(proxy.port)
  const t0 = performance.now()
  s1.write('ping')
  await new Promise(resolve => s1.once('data', resolve))
  const rtt = performance.now() - t0
  assert.ok(rtt >= 195, `round trip ${rtt.toFixed(0)} ms < 2 x 100 ms`)
  assert.ok(rtt < 2000, `round trip ${rtt.toFixed(0)} ms`)
  s1.destroy()

  // live change
  proxy.delayMs = 0
  const s2 = await connect(proxy.port)
  const t1 = performance.now()
  s2.write('ping')
  await new Promise(resolve => s2.once('data', resolve))
  assert.ok(performance.now() - t1 < 150, 'delay 0 still slow')
  s2.destroy()

  // 8 MiB through a 256 KiB queue bound: exact, in order, and the end comes after the data
  proxy.delayMs = 5
  const data = randomBytes(8 * 1024 * 1024)
  const s3 = await connect(proxy.port)
  const back = readAll(s3)
  s3.end(data)
  const got = await back
  assert.equal(got.length, data.length)
  assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(data).digest('hex'))
})
