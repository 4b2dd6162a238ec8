/**
 * Child process of bench/archive-sync.ts. Modes (each prints `LISTEN <address>`, runs until stdin closes):
 *   serve-http <archiveDir> [bytesPerSecond]   an archive directory over HTTP on 127.0.0.1, read-only
 *                                              (src/archive/http-server.ts), or throttled to a rate
 *   serve-p2p <storeDir> [bytesPerSecond]      a chain over the commit-sync protocols on 127.0.0.1, its
 *                                              fetch-commits and fetch-blocks responses throttled to a rate
 */
import { createServer } from 'node:http'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import type { AddressInfo } from 'node:net'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { somaNoise } from '../src/net/noise-crypto.ts'
import { ArchiveHttpServer } from '../src/archive/http-server.ts'
import { ChainStore } from '../src/store/chain-store.ts'
import { CommitExecutor } from '../src/executor/commit-executor.ts'
import { commitSyncServices } from '../src/sync/state-sync.ts'

const [mode, dir, rateArg] = process.argv.slice(2)
const rate = rateArg === undefined ? 0 : Number(rateArg)
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
let stop: () => Promise<void>

if (mode === 'serve-http' && dir !== undefined && rate === 0) {
  const server = new ArchiveHttpServer({ dir, host: '127.0.0.1', port: 0 })
  await server.start()
  process.stdout.write(`LISTEN ${server.url}\n`)
  stop = async () => { await server.stop() }
} else if (mode === 'serve-http' && dir !== undefined) {
  // every response shares one link of `rate` bytes/s: 16 KiB pieces, each when the link is free
  let free = Date.now()
  const server = createServer((req, res) => {
    const file = path.join(dir, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname))
    if (!file.startsWith(dir) || !existsSync(file)) { res.writeHead(404).end(); return }
    const bytes = readFileSync(file)
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
    const start = m === null ? 0 : Number(m[1])
    res.writeHead(m === null ? 200 : 206, { 'Content-Length': bytes.byteLength - start })
    void (async () => {
      for (let at = start; at < bytes.byteLength && !res.destroyed; at += 16384) {
        const piece = bytes.subarray(at, at + 16384)
        free = Math.max(free, Date.now()) + piece.byteLength / rate * 1000
        await sleep(free - Date.now())
        res.write(piece)
      }
      res.end()
    })()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  process.stdout.write(`LISTEN http://127.0.0.1:${(server.address() as AddressInfo).port}\n`)
  stop = async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
} else if (mode === 'serve-p2p' && dir !== undefined) {
  const store = await ChainStore.open(dir)
  const n = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [somaNoise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ...commitSyncServices({ store, executor: new CommitExecutor(store), sync: false, inboundRequestsPerSecond: 100000 }) }
  })
  if (rate > 0) {
    // responses leave one at a time at `rate` bytes/s
    let free = Date.now()
    const throttle = (svc: any, size: (res: any) => number): void => {
      const serve = svc.serve.bind(svc)
      svc.serve = async (req: any) => {
        const res = await serve(req)
        free = Math.max(free, Date.now()) + size(res) / rate * 1000
        await sleep(free - Date.now())
        return res
      }
    }
    const sum = (xs: Uint8Array[]): number => xs.reduce((s, x) => s + x.byteLength, 0)
    throttle((n.services as any).fetchCommits, (r) => sum(r.commits) + sum(r.certifierBlocks))
    throttle((n.services as any).fetchBlocks, (r) => sum(r.blocks))
  }
  process.stdout.write(`LISTEN ${n.getMultiaddrs()[0].toString()}\n`)
  stop = async () => { await n.stop(); await store.close() }
} else {
  process.stderr.write('usage: archive-sync-child.ts serve-http <archiveDir> [bytesPerSecond] | serve-p2p <storeDir> [bytesPerSecond]\n')
  process.exit(2)
}
process.stdin.resume()
process.stdin.on('end', () => { void stop().then(() => process.exit(0)) })
