/** `soma-sync archive export | ls | verify` on a devnet data dir (child processes of the real CLI). */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ChainStore } from '../../src/store/chain-store.ts'
import { toHex } from '../../src/crypto/hash.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts')

async function cli (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SOMA_')) env[k] = v
  const child = spawn(process.execPath, [MAIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', d => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', d => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000)
  const code = await new Promise<number | null>(resolve => child.on('close', c => resolve(c)))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

test('archive export, ls and verify from the command line; verify names a corrupted segment', { timeout: 300_000 }, async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'soma-archive-cli-'))
  t.after(() => { rmSync(dir, { recursive: true, force: true }) })
  const dev = path.join(dir, 'dev')
  const arch = path.join(dir, 'arch')
  const d = await cli(['devnet', '--data-dir', dev, '--max-commits', '35', '--epoch-length', '10', '--round-interval', '0ms', '--accounts', '20', '--status-port', '0', '--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'warn'])
  assert.equal(d.code, 0, d.stderr)
  const e = await cli(['archive', 'export', '--data-dir', dev, '--archive-dir', arch, '--archive-segment-commits', '4', '--archive-compression', 'brotli'])
  assert.equal(e.code, 0, e.stderr)
  assert.match(e.stdout, /3 epochs added \(9 segments, \d+ bytes\); the archive holds commits 1\.\.30/)
  const again = await cli(['archive', 'export', '--data-dir', dev, '--archive-dir', arch, '--archive-segment-commits', '4', '--archive-compression', 'brotli'])
  assert.match(again.stdout, /0 epochs added/)
  const l = await cli(['archive', 'ls', arch])
  assert.equal(l.code, 0, l.stderr)
  assert.match(l.stdout, /commits 1\.\.30 in 3 epochs, 9 segments/)
  assert.equal(l.stdout.trim().split('\n').length, 2 + 9)
  const store = await ChainStore.openDataDir(dev)
  const root = toHex((await store.getStateRoot(30))!)
  await store.close()
  const v = await cli(['archive', 'verify', arch, '--data-dir', dev, '--verify-workers', '0', '--log-level', 'warn'])
  assert.equal(v.code, 0, v.stderr)
  assert.match(v.stdout, new RegExp(`OK, commits 1\\.\\.30 in 9 segments verified and executed; state root ${root}`))
  // a corrupted segment: exit 1, one error line naming it
  const m = JSON.parse(readFileSync(path.join(arch, 'manifest.json'), 'utf8'))
  const f = path.join(arch, m.segments[4].name)
  const b = readFileSync(f); b[b.length - 5] ^= 1; writeFileSync(f, b)
  const bad = await cli(['archive', 'verify', arch, '--data-dir', dev, '--verify-workers', '0', '--log-level', 'warn'])
  assert.equal(bad.code, 1)
  const last = bad.stderr.trim().split('\n').pop()!
  assert.match(last, new RegExp(`^error: .*${m.segments[4].name.replace(/[.]/g, '\\.')}: sha256`))
  // usage errors
  const u = await cli(['archive', 'export', '--data-dir', dev])
  assert.equal(u.code, 2)
  assert.match(u.stderr, /archive export needs --archive-dir/)
})
