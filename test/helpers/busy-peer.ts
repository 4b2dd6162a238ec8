/**
 * A Soma libp2p host in its own process whose event loop can be made busy, for the connection monitor
 * test (test/node/connections.test.ts): a peer on a CPU-saturated machine answers pings late.
 *
 *   node test/helpers/busy-peer.ts <pingTimeoutMs>
 *
 * Prints `LISTEN <multiaddr>`. On a stdin line `busy <ms> <rounds>` it blocks its event loop for <ms>,
 * lets it run for 50 ms, <rounds> times, then prints `DONE`. Exits when its stdin closes, so it never
 * outlives the test that spawned it.
 */
import { createInterface } from 'node:readline'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { DEFAULTS } from '../../src/config.ts'
import { createLibp2pNode } from '../../src/node/libp2p.ts'

const pingTimeoutMs = Number(process.argv[2])
if (!Number.isInteger(pingTimeoutMs)) {
  process.stderr.write('usage: busy-peer.ts <pingTimeoutMs>\n')
  process.exit(2)
}

const node = await createLibp2pNode({
  config: { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], entrypoints: [], dhtEnabled: false, pingTimeoutMs },
  chainId: new Uint8Array(32),
  privateKey: await generateKeyPair('Ed25519'),
  start: true
})
process.stdout.write(`LISTEN ${node.getMultiaddrs()[0].toString()}\n`)

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const m = /^busy (\d+) (\d+)$/.exec(line)
  if (m === null) return
  const [ms, rounds] = [Number(m[1]), Number(m[2])]
  let round = 0
  const spin = (): void => {
    const until = Date.now() + ms
    while (Date.now() < until) { /* busy: no timer, socket or ping is served */ }
    if (++round < rounds) setTimeout(spin, 50)
    else process.stdout.write('DONE\n')
  }
  spin()
})
rl.on('close', () => { void Promise.resolve(node.stop()).finally(() => process.exit(0)) })
