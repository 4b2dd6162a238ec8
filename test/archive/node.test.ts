/**
 * Archives in running nodes (issue 14): a devnet with --archive-dir writes its closed epochs and serves
 * them over HTTP; a fresh node with --archive-url fast-syncs from it with spot checks against two peers,
 * then commit-syncs the rest to the devnet's tip and state root; a node given a corrupted archive logs
 * the bad object and reaches the tip from P2P peers instead.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { createNode, type SomaNode } from '../../src/node/node.ts'
import { startDevnet } from '../../src/devnet/devnet-node.ts'
import { silentLogger } from '../../src/utils/logger.ts'
import { hex } from '../helpers/chain.ts'
import { recordingLogger } from './helpers.ts'

async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as any).port as number
  await new Promise(resolve => s.close(resolve))
  return port
}

async function waitFor (what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

test('a devnet writes and serves its archive; a fresh node fast-syncs from it with spot checks; a bad archive falls back to P2P', { timeout: 300_000 }, async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), 'soma-archive-node-'))
  const stops: Array<() => Promise<void>> = []
  t.after(async () => {
    for (const s of stops.reverse()) await s().catch(() => {})
    rmSync(root, { recursive: true, force: true })
  })
  const base = (dataDir: string, o: Partial<SomaConfig> = {}): SomaConfig => ({ ...DEFAULTS, dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], statusPort: 0, logLevel: 'error', verifyWorkers: 1, dhtEnabled: false, ...o })
  const archiveDir = path.join(root, 'archive')
  const port = await freePort()
  const devnet = await startDevnet(base(path.join(root, 'devnet'), {
    accounts: 20, roundIntervalMs: 0, epochLength: 10, maxCommits: 60, txsPerBlock: 4,
    archiveDir, archiveSegmentCommits: 5, archiveHttpPort: port, statusHost: '127.0.0.1'
  }), { logger: silentLogger(), statusServer: false })
  stops.push(devnet.stop)
  await devnet.done
  const tip = devnet.node.store.highestSynced
  // the last epoch closed: the archive reaches the devnet's last end-of-epoch commit
  await waitFor('the archive', async () => ((await devnet.node.status()) as any).archive?.highestCommit >= 50, 60_000)
  const archived = ((await devnet.node.status()) as any).archive.highestCommit as number
  const url = `http://127.0.0.1:${port}`
  const m = await (await fetch(`${url}/manifest.json`)).json() as any
  assert.equal(m.highestCommit, archived)
  const ranged = await fetch(`${url}/${m.segments[0].name}`, { headers: { Range: 'bytes=8-11' } })
  assert.equal(ranged.status, 206)
  assert.equal((await ranged.arrayBuffer()).byteLength, 4)

  const entry = devnet.node.multiaddrs()[0]
  const start = async (name: string, o: Partial<SomaConfig>, logger = silentLogger()): Promise<SomaNode> => {
    const n = await createNode(base(path.join(root, name), { genesisFile: devnet.genesisFile, ...o }), { logger, statusServer: false })
    stops.push(async () => { await n.stop() })
    await n.start()
    return n
  }
  // a second peer for the spot checks
  const b = await start('b', { entrypoints: [entry], syncMode: 'commits' })
  await waitFor('b synced', () => b.store.highestExecuted >= tip, 120_000)

  const c = await start('c', { entrypoints: [entry, b.multiaddrs()[0]], archiveUrl: url, archiveSpotChecksPerEpoch: 2, archiveSpotCheckPeers: 2, archiveCombined: false })
  await waitFor('c synced to the tip', () => c.store.highestExecuted >= tip, 120_000)
  const cs = await c.status() as any
  assert.equal(cs.archiveSync.phase, 'done', JSON.stringify(cs.archiveSync))
  assert.equal(cs.archiveSync.highestSynced >= archived, true)
  assert.ok(cs.archiveSync.spotChecks >= 2 * m.epochs.length, `spot checks: ${cs.archiveSync.spotChecks} for ${m.epochs.length} epochs`)
  assert.equal(hex((await c.store.getStateRoot(tip))!), hex((await devnet.node.store.getStateRoot(tip))!))

  // a corrupted copy of the archive: the node names the object, then syncs from peers
  const bad = path.join(root, 'bad-archive')
  cpSync(archiveDir, bad, { recursive: true })
  const seg = m.segments[3]
  const f = path.join(bad, seg.name); const bytes = readFileSync(f); bytes[bytes.length >> 1] ^= 0xff; writeFileSync(f, bytes)
  const log = recordingLogger()
  const d = await start('d', { entrypoints: [entry, b.multiaddrs()[0]], archiveUrl: bad, archiveSpotChecksPerEpoch: 0, archiveCombined: false }, log)
  await waitFor('d synced to the tip from peers', () => d.store.highestExecuted >= tip, 120_000)
  assert.equal(hex((await d.store.getStateRoot(tip))!), hex((await devnet.node.store.getStateRoot(tip))!))
  const errors = log.lines.filter(l => l.includes(' ERROR '))
  assert.ok(errors.some(l => l.includes(seg.name) && /sha256/.test(l)), log.lines.join(''))
  assert.ok(log.lines.some(l => l.includes(' WARN ') && l.includes(`stopped at commit ${m.segments[2].lastCommit}`) && l.includes('P2P')), log.lines.join(''))

  // the same bad archive with the combined download (the default): the peers fetch the bad segment's
  // range and the fast mode completes
  const log2 = recordingLogger()
  const e = await start('e', { entrypoints: [entry, b.multiaddrs()[0]], archiveUrl: bad, archiveSpotChecksPerEpoch: 0 }, log2)
  await waitFor('e synced to the tip', () => e.store.highestExecuted >= tip, 120_000)
  assert.equal(hex((await e.store.getStateRoot(tip))!), hex((await devnet.node.store.getStateRoot(tip))!))
  const es = await e.status() as any
  assert.equal(es.archiveSync.phase, 'done', JSON.stringify(es.archiveSync))
  assert.ok(es.archiveSync.sources.some((s: any) => s.kind === 'peer' && s.segments > 0), JSON.stringify(es.archiveSync.sources))
})
