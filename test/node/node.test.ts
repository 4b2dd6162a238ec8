import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { toHex } from '../../src/crypto/hash.ts'
import { ConfigError, ForeignStoreError } from '../../src/errors.ts'
import { createNode, type SomaNode } from '../../src/node/node.ts'
import { dhtProtocol } from '../../src/node/libp2p.ts'
import { loadOrCreatePeerKey } from '../../src/node/peer-key.ts'
import { readGenesisFile, writeGenesisFile } from '../../src/node/genesis-file.ts'
import { createLogger, silentLogger } from '../../src/utils/logger.ts'

const genesis = createGenesis({ seed: 'node-test', validators: 4, accounts: 8, initialBalance: 1000, embeddingDim: 4 })
const otherGenesis = createGenesis({ seed: 'node-test-other', validators: 4, accounts: 8, initialBalance: 1000, embeddingDim: 4 })

function tempDir (t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'soma-node-test-'))
  t.after(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

function config (dataDir: string, overrides: Partial<SomaConfig> = {}): SomaConfig {
  return { ...DEFAULTS, dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], entrypoints: [], statusPort: 0, logLevel: 'error', ...overrides }
}

async function waitFor (what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

test('two nodes on 127.0.0.1 connect through an entrypoint and serve /status, /metrics, /health', { timeout: 120_000 }, async t => {
  const nodes: SomaNode[] = []
  t.after(async () => { for (const n of nodes) await n.stop() })
  const a = await createNode(config(tempDir(t)), { genesis, logger: silentLogger(), statusServer: { host: '127.0.0.1', port: 0 } })
  nodes.push(a)
  await a.start()
  const entry = a.multiaddrs()[0]
  assert.match(entry, /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
  const b = await createNode(config(tempDir(t), { entrypoints: [entry] }), { genesis, logger: silentLogger(), statusServer: { host: '127.0.0.1', port: 0 } })
  nodes.push(b)
  await b.start()
  await waitFor('the nodes to connect', () => a.peerCount() > 0 && b.peerCount() > 0)
  assert.equal(b.libp2p.getPeers()[0].toString(), a.peerId.toString())

  // the DHT is chain-scoped, never the public one
  const protocols = a.libp2p.getProtocols()
  assert.ok(protocols.includes(dhtProtocol(genesis.chainId)), protocols.join(' '))
  assert.ok(!protocols.includes('/ipfs/kad/1.0.0'))
  assert.equal(dhtProtocol(genesis.chainId), `/soma/${toHex(genesis.chainId).slice(0, 8)}/kad/1.0.0`)

  const res = await fetch(`${b.statusUrl!}/status`)
  assert.equal(res.status, 200)
  const status = await res.json() as Record<string, unknown>
  assert.equal(status.chainId, toHex(genesis.chainId))
  assert.equal(status.peerId, b.peerId.toString())
  assert.equal(status.highestSynced, 0)
  assert.equal(status.highestExecuted, 0)
  assert.equal(status.lowestAvailable, 1)
  assert.equal(status.epoch, 0)
  // an empty store starts with snapshot sync (none exists here: after --snapshot-find-timeout, commit sync)
  assert.ok(['snapshot', 'replaying', 'discovering', 'synced'].includes(status.phase as string), status.phase as string)
  assert.equal(status.healthy, true)
  assert.equal(status.version, JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version)
  assert.equal(typeof status.uptimeSeconds, 'number')
  const peerList = status.peerList as Array<Record<string, unknown>>
  const pa = peerList.find(p => p.id === a.peerId.toString())
  assert.ok(pa !== undefined, JSON.stringify(peerList))
  assert.match(pa.address as string, /^\/ip4\/127\.0\.0\.1\/tcp\/\d+/)
  assert.equal(pa.connected, true)
  assert.equal(pa.score, 0)
  assert.equal(pa.wrongChain, false)
  assert.ok((status.peers as number) >= 1)
  assert.match(status.stateRoot as string, /^[0-9a-f]{64}$/)
  assert.ok((status.listen as string[]).length > 0)

  for (const n of [a, b]) {
    const m = await fetch(`${n.statusUrl!}/metrics`)
    assert.equal(m.status, 200)
    assert.match(m.headers.get('content-type') ?? '', /text\/plain/)
    const text = await m.text()
    assert.match(text, /^soma_highest_synced_commit 0$/m)
    assert.match(text, /^soma_highest_executed_commit 0$/m)
    assert.match(text, /^soma_peers [1-9]/m)
    assert.match(text, /^soma_executed_transactions_total 0$/m)
    assert.match(text, /^libp2p_\w+/m, 'a libp2p metric')
  }

  // 206 while it looks for a snapshot, 200 once synced (both at genesis, progressing: within the stall threshold)
  const early = await fetch(`${a.statusUrl!}/health`)
  assert.ok(early.status === 206 || early.status === 200, String(early.status))
  await waitFor('node a to be synced', () => a.phase === 'synced', 60_000)
  const health = await fetch(`${a.statusUrl!}/health`)
  assert.equal(health.status, 200)
  assert.equal(await health.text(), 'ok\n')
  assert.equal((await fetch(`${a.statusUrl!}/nope`)).status, 404)

  // stop is idempotent; a stopped node is unhealthy
  const url = a.statusUrl!
  await a.stop()
  await a.stop()
  assert.equal(a.statusUrl, undefined)
  await assert.rejects(fetch(`${url}/health`))
  assert.equal((await a.status()).healthy, false)
})

test('the peer key persists across restarts, with mode 0600', { timeout: 30_000 }, async t => {
  const dir = tempDir(t)
  const first = await createNode(config(dir), { genesis, logger: silentLogger() })
  await first.start()
  const id = first.peerId.toString()
  await first.stop()
  assert.equal(statSync(path.join(dir, 'peer.key')).mode & 0o777, 0o600)
  // the store keeps its genesis: no genesis needed the second time
  const second = await createNode(config(dir), { logger: silentLogger() })
  t.after(async () => { await second.stop() })
  assert.equal(second.peerId.toString(), id)
  assert.equal(toHex(second.chainId), toHex(genesis.chainId))
  assert.equal((await loadOrCreatePeerKey(dir)).peerId.toString(), id)
})

test('a corrupt peer key is a ConfigError naming the file', async t => {
  const dir = tempDir(t)
  writeFileSync(path.join(dir, 'peer.key'), 'not a key')
  await assert.rejects(loadOrCreatePeerKey(dir), (err: Error) => err instanceof ConfigError && err.message.includes(path.join(dir, 'peer.key')))
  await assert.rejects(createNode(config(dir), { genesis, logger: silentLogger() }), ConfigError)
})

test('a data dir of another chain is a ForeignStoreError', { timeout: 30_000 }, async t => {
  const dir = tempDir(t)
  const node = await createNode(config(dir), { genesis, logger: silentLogger() })
  await node.stop()
  await assert.rejects(createNode(config(dir), { genesis: otherGenesis, logger: silentLogger() }), (err: Error) => {
    assert.ok(err instanceof ForeignStoreError, String(err))
    assert.match(err.message, new RegExp(toHex(genesis.chainId)))
    assert.match(err.message, new RegExp(toHex(otherGenesis.chainId)))
    return true
  })
})

test('genesis: from <dataDir>/genesis.pb or --genesis-file; clear errors when missing or invalid', { timeout: 30_000 }, async t => {
  const dir = tempDir(t)
  await assert.rejects(createNode(config(dir), { logger: silentLogger() }), (err: Error) => err instanceof ConfigError && /no genesis/.test(err.message))

  const file = writeGenesisFile(dir, genesis)
  assert.equal(toHex(readGenesisFile(file).chainId), toHex(genesis.chainId))
  const node = await createNode(config(dir), { logger: silentLogger() })
  assert.equal(toHex(node.chainId), toHex(genesis.chainId))
  await node.stop()

  const other = tempDir(t)
  const otherFile = writeGenesisFile(other, otherGenesis)
  await assert.rejects(createNode(config(dir, { genesisFile: otherFile }), { logger: silentLogger() }), ForeignStoreError)

  const bad = path.join(other, 'bad.pb')
  writeFileSync(bad, Uint8Array.of(1, 2, 3, 4, 5))
  assert.throws(() => readGenesisFile(bad), (err: Error) => err instanceof ConfigError && err.message.includes(bad))
  assert.throws(() => readGenesisFile(path.join(other, 'missing.pb')), /does not exist/)
})

test('bad entrypoints and listen addresses are ConfigErrors naming the value', async t => {
  const dir = tempDir(t)
  await assert.rejects(createNode(config(dir, { entrypoints: ['/ip4/127.0.0.1/tcp/1'] }), { genesis, logger: silentLogger() }), /\/ip4\/127\.0\.0\.1\/tcp\/1.*no \/p2p/)
  await assert.rejects(createNode(config(dir, { entrypoints: ['garbage'] }), { genesis, logger: silentLogger() }), (err: Error) => err instanceof ConfigError && err.message.includes('"garbage"'))
  await assert.rejects(createNode(config(dir, { listen: ['/ip4/nope'] }), { genesis, logger: silentLogger() }), (err: Error) => err instanceof ConfigError && err.message.includes('/ip4/nope'))
})

test('a devnet node reports its progress, epoch and executed transactions; the epoch survives a restart', { timeout: 60_000 }, async t => {
  const { startDevnet } = await import('../../src/devnet/devnet-node.ts')
  const dir = tempDir(t)
  const devnet = await startDevnet(config(dir, { devnetSeed: 'node-test-devnet', accounts: 20, validators: 4, embeddingDim: 4, roundIntervalMs: 0, epochLength: 5, maxCommits: 12, txsPerBlock: 3 }), { logger: silentLogger(), statusServer: { host: '127.0.0.1', port: 0 } })
  let stopped = false
  t.after(async () => { if (!stopped) await devnet.stop() })
  assert.equal(devnet.node.phase, 'producing')
  await devnet.done
  const status = await devnet.node.status()
  assert.equal(status.phase, 'done')
  assert.ok(status.highestExecuted >= 12)
  assert.ok(status.epoch >= 2, `epoch ${status.epoch}`)
  assert.ok(status.executedTransactions > 0)
  const metrics = await (await fetch(`${devnet.node.statusUrl!}/metrics`)).text()
  assert.match(metrics, new RegExp(`^soma_epoch ${status.epoch}$`, 'm'))
  assert.match(metrics, new RegExp(`^soma_highest_executed_commit ${status.highestExecuted}$`, 'm'))
  assert.match(metrics, new RegExp(`^soma_executed_transactions_total ${status.executedTransactions}$`, 'm'))
  assert.equal(toHex(readGenesisFile(devnet.genesisFile).chainId), status.chainId)
  await devnet.stop()
  await devnet.stop()
  stopped = true

  const again = await createNode(config(dir), { logger: silentLogger() })
  t.after(async () => { await again.stop() })
  const s = await again.status()
  assert.equal(s.epoch, status.epoch)
  assert.equal(s.highestExecuted, status.highestExecuted)
  assert.equal(s.stateRoot, status.stateRoot)
})

test('a devnet stops promptly while it waits between rounds', { timeout: 30_000 }, async t => {
  const { startDevnet } = await import('../../src/devnet/devnet-node.ts')
  const dir = tempDir(t)
  const devnet = await startDevnet(config(dir, { accounts: 10, roundIntervalMs: 300 }), { logger: silentLogger() })
  await new Promise(resolve => setTimeout(resolve, 700))
  const t0 = Date.now()
  await devnet.stop()
  assert.ok(Date.now() - t0 < 2000, `stop took ${Date.now() - t0}ms`)
  assert.ok(devnet.node.store.isClosed)
})

test('the store\'s LevelDB write buffer comes from the config (--store-write-buffer-bytes)', { timeout: 60_000 }, async t => {
  // 6 MiB of writes: flushed to table files with a 1 MiB write buffer, still in the memtable with the default
  const tables = async (writeBuffer: number | undefined): Promise<number> => {
    const dir = tempDir(t)
    const node = await createNode(config(dir, writeBuffer === undefined ? {} : { storeWriteBufferBytes: writeBuffer }), { genesis, logger: silentLogger() })
    try {
      const value = new Uint8Array(64 * 1024).fill(7)
      for (let i = 0; i < 96; i++) {
        const id = new Uint8Array(32)
        new DataView(id.buffer).setUint32(0, i)
        await node.store.batch().putEmbedding(id, value).write()
      }
      // a flush is LevelDB's background work: give it a moment
      await new Promise(resolve => setTimeout(resolve, 500))
      return readdirSync(path.join(dir, 'chain')).filter(f => f.endsWith('.ldb')).length
    } finally {
      await node.stop()
    }
  }
  assert.equal(await tables(undefined), 0, `the default write buffer (${DEFAULTS.storeWriteBufferBytes} bytes) holds 6 MiB`)
  assert.ok(await tables(1024 * 1024) > 0, 'a 1 MiB write buffer is flushed to table files')
})

test('the connection monitor waits --ping-timeout for a ping before it closes a connection (not libp2p\'s 5 s)', { timeout: 60_000 }, async t => {
  const monitorTimeout = async (overrides: Partial<SomaConfig>): Promise<{ min: number, next: number }> => {
    const node = await createNode(config(tempDir(t), overrides), { genesis, logger: silentLogger() })
    try {
      // libp2p's ConnectionMonitor keeps an AdaptiveTimeout; a ping's deadline is never below its minimum
      const timeout = (node.libp2p as any).components.connectionMonitor.timeout
      const signal: AbortSignal & { timeout?: number } = timeout.getTimeoutSignal()
      const next = signal.timeout ?? Number.NaN
      timeout.cleanUp(signal)
      return { min: timeout.minTimeout, next }
    } finally {
      await node.stop()
    }
  }
  const d = await monitorTimeout({})
  assert.equal(d.min, DEFAULTS.pingTimeoutMs)
  assert.ok(DEFAULTS.pingTimeoutMs >= 30_000, 'a tolerant default')
  assert.ok(!(d.next < DEFAULTS.pingTimeoutMs), `a ping waits at least ${DEFAULTS.pingTimeoutMs} ms (${d.next})`)
  assert.equal((await monitorTimeout({ pingTimeoutMs: 12_000 })).min, 12_000)
})

test('a connection closed for an error is logged at warn with the error; a normal close is not', { timeout: 60_000 }, async t => {
  const lines: string[] = []
  const a = await createNode(config(tempDir(t)), { genesis, logger: createLogger('node', { level: 'info', write: l => { lines.push(l) } }) })
  const b = await createNode(config(tempDir(t)), { genesis, logger: silentLogger() })
  t.after(async () => { await a.stop(); await b.stop() })
  await a.start()
  await b.start()
  const conn = await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  conn.abort(new Error('test: the ping failed'))
  await waitFor('the warning', () => lines.some(l => l.includes(' WARN ')))
  const warn = lines.find(l => l.includes(' WARN '))!
  assert.match(warn, new RegExp(`connection to ${b.peerId.toString()} \\(/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${b.peerId.toString()}\\) closed here: test: the ping failed`))
  // a clean close says nothing at warn
  lines.length = 0
  const again = await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  await again.close()
  await waitFor('the close', () => again.status === 'closed')
  await new Promise(resolve => setTimeout(resolve, 200))
  assert.deepEqual(lines.filter(l => l.includes(' WARN ')), [])
})
