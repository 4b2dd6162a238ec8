/**
 * Disk full (issue 17 item 4), on a small tmpfs this test mounts (root only; skipped otherwise, saying
 * why): the node's store write or executor fails with ENOSPC, the node moves to phase `failed` with the
 * error logged, /status says `disk-full`, /health answers 503; with --no-exit-on-fatal it restarts commit
 * sync with back-off and resumes once space is freed; the CLI with --exit-on-fatal (its default) exits 3.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULTS, type SomaConfig } from '../../src/config.ts'
import { createNode, type SomaNode } from '../../src/node/node.ts'
import { startDevnet, type DevnetHandle } from '../../src/devnet/devnet-node.ts'
import { createLogger, silentLogger } from '../../src/utils/logger.ts'
import { tmpDir } from '../helpers/tmp.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** Mounts a tmpfs of `size` on a fresh dir; unmounted and removed after the test. Undefined (with why) when it cannot. */
function smallTmpfs (t: { after: (fn: () => void | Promise<void>) => void }, size: string): { dir: string } | { skip: string } {
  if (process.getuid?.() !== 0) return { skip: 'mounting a tmpfs needs root (run the suite as root to test disk full)' }
  const dir = mkdtempSync(path.join(tmpdir(), 'soma-diskfull-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch (err: any) {
    rmSync(dir, { recursive: true, force: true })
    return { skip: `cannot mount a tmpfs here: ${String(err.stderr ?? err.message).trim()}` }
  }
  t.after(() => {
    try { execFileSync('umount', ['-l', dir], { stdio: 'pipe' }) } catch {}
    rmSync(dir, { recursive: true, force: true })
  })
  return { dir }
}

function config (dataDir: string, overrides: Partial<SomaConfig> = {}): SomaConfig {
  return { ...DEFAULTS, dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], entrypoints: [], statusPort: 0, logLevel: 'error', syncMode: 'commits', peerHeightQueryIntervalMs: 300, ...overrides }
}

async function waitFor (what: string, cond: () => boolean | Promise<boolean>, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function fastDevnet (t: { after: (fn: () => void | Promise<void>) => void }): Promise<DevnetHandle> {
  const devnet = await startDevnet(config(tmpDir(t), { devnetSeed: 'disk-full', accounts: 500, validators: 4, embeddingDim: 4, roundIntervalMs: 0, txsPerBlock: 200, embeddingEvery: 0 }), { logger: silentLogger(), statusServer: false })
  t.after(async () => { await devnet.stop() })
  return devnet
}

test('disk full on a tmpfs: phase failed, status disk-full, /health 503, the error logged; back-off restarts resume once space is freed', { timeout: 240_000 }, async t => {
  const fs = smallTmpfs(t, '3m')
  if ('skip' in fs) { t.skip(fs.skip); return }
  const devnet = await fastDevnet(t)
  const lines: string[] = []
  const node: SomaNode = await createNode(config(fs.dir, { entrypoints: [devnet.node.multiaddrs()[0]], genesisFile: devnet.genesisFile, exitOnFatal: false, fatalRetryMs: 500 }), {
    logger: createLogger('node', { level: 'info', write: l => { lines.push(l) } }),
    statusServer: { host: '127.0.0.1', port: 0 }
  })
  t.after(async () => { await node.stop() })
  await node.start()
  await waitFor('the node to fail for lack of space', () => node.phase === 'failed')
  const s = await node.status()
  assert.equal(s.phase, 'failed')
  assert.equal(s.waiting?.code, 'disk-full')
  assert.match(s.waiting!.message, /No space left|ENOSPC/i)
  const res = await fetch(`${node.statusUrl!}/health`)
  assert.equal(res.status, 503)
  assert.match(await res.text(), /^stuck: disk-full: /)
  const text = lines.join('')
  assert.match(text, /ERROR \[node\] FAILED: (store write|executor) failed: .*(No space left|ENOSPC).*restarting commit sync in \d+ s/i)
  const metrics = await (await fetch(`${node.statusUrl!}/metrics`)).text()
  assert.match(metrics, /^soma_node_faults_total\{source="(store write|executor)",code="disk-full"\} [1-9]/m)

  // free space: the next restart resumes, and the node executes past where it failed
  const failedAt = node.store.highestExecuted
  execFileSync('mount', ['-o', 'remount,size=512m', fs.dir])
  await waitFor('the node to resume after space was freed', () => node.phase !== 'failed' && node.store.highestExecuted > failedAt + 20, 120_000)
  assert.match(lines.join(''), /INFO  \[node\] restarted commit sync after the (store write|executor) failure/)
  assert.equal((await node.status()).waiting?.code === 'disk-full', false)
})

test('disk full with the CLI\'s --exit-on-fatal (default): `soma-sync start` logs the failure and exits 3', { timeout: 240_000 }, async t => {
  const fs = smallTmpfs(t, '3m')
  if ('skip' in fs) { t.skip(fs.skip); return }
  const devnet = await fastDevnet(t)
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SOMA_')) env[k] = v
  const child = spawn(process.execPath, [path.join(ROOT, 'src', 'cli', 'main.ts'), 'start', '--data-dir', fs.dir, '--genesis-file', devnet.genesisFile,
    '--entrypoints', devnet.node.multiaddrs()[0], '--listen', '/ip4/127.0.0.1/tcp/0', '--status-port', '0', '--sync-mode', 'commits', '--log-format', 'json'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', d => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), 200_000)
  t.after(() => { clearTimeout(timer); child.kill('SIGKILL') })
  const code = await new Promise<number | null>(resolve => child.on('close', c => resolve(c)))
  assert.equal(code, 3, stderr)
  const entries = stderr.trim().split('\n').map(l => JSON.parse(l) as { level: string, component: string, msg: string })
  assert.ok(entries.some(e => e.level === 'error' && /FAILED: .*(No space left|ENOSPC).*exiting \(--exit-on-fatal\)/i.test(e.msg)), stderr)
})
