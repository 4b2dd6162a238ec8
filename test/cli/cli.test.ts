import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULTS, OPTIONS, envName, flagName, type Command, type OptionSpec } from '../../src/config.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { readGenesisFile } from '../../src/node/genesis-file.ts'
import { toHex } from '../../src/crypto/hash.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts')

interface Run { code: number | null, stdout: string, stderr: string }

/** Runs `node src/cli/main.ts ...args` with a clean SOMA_* environment, killed after `timeoutMs`. */
async function cli (args: string[], opts: { env?: Record<string, string>, timeoutMs?: number } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SOMA_')) env[k] = v
  Object.assign(env, opts.env)
  const child = spawn(process.execPath, [MAIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', d => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', d => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000)
  const code = await new Promise<number | null>(resolve => child.on('close', c => resolve(c)))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

function tempDir (t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'soma-cli-test-'))
  t.after(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** The default as help prints it (mirrors config.ts). */
function shownDefault (o: OptionSpec): string {
  const v = DEFAULTS[o.key]
  if (o.type === 'list') return (v as string[]).length === 0 ? '(none)' : (v as string[]).join(',')
  if (o.type === 'duration') return `${v as number}ms`
  if (o.type === 'bytes') {
    const n = v as number
    return n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)}MiB` : n % 1024 === 0 ? `${n / 1024}KiB` : String(n)
  }
  return v === '' ? '(none)' : String(v)
}

/** asserts exit code 2 and a one-line stderr mentioning every needle */
function assertUsageError (r: Run, ...needles: string[]): void {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`)
  const lines = r.stderr.trim().split('\n')
  assert.equal(lines.length, 1, `one line: ${r.stderr}`)
  assert.match(lines[0], /^error: /)
  for (const n of needles) assert.ok(lines[0].includes(n), `${JSON.stringify(lines[0])} should mention ${JSON.stringify(n)}`)
}

test('--help of each command lists each of its options with env variable and default', { timeout: 60_000 }, async () => {
  const commands: Command[] = ['start', 'devnet', 'keygen', 'demo']
  for (const command of commands) {
    const r = await cli([command, '--help'])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, new RegExp(`^Usage: soma-sync ${command}`))
    for (const o of OPTIONS) {
      const flag = `  --${flagName(o.key)}${o.type === 'bool' ? '\n' : ' <'}`
      if (!o.commands.includes(command)) {
        assert.ok(!r.stdout.includes(flag), `${command} --help should not list --${flagName(o.key)}`)
        continue
      }
      assert.ok(r.stdout.includes(flag), `${command} --help lists --${flagName(o.key)}`)
      assert.ok(r.stdout.includes(`env ${envName(o.key)}, default ${shownDefault(o)}\n`), `${command} --help: default of ${o.key} (${shownDefault(o)})`)
      assert.ok(r.stdout.includes(o.doc), `${command} --help: doc of ${o.key}`)
    }
  }
  const h = await cli(['help', 'devnet'])
  assert.equal(h.code, 0)
  assert.equal(h.stdout, (await cli(['devnet', '--help'])).stdout)
  const main = await cli(['--help'])
  assert.equal(main.code, 0)
  for (const c of [...commands, 'config --print', 'help']) assert.ok(main.stdout.includes(c), c)
  const cfg = await cli(['config', '--help'])
  assert.equal(cfg.code, 0)
  for (const o of OPTIONS) assert.ok(cfg.stdout.includes(`--${flagName(o.key)}`), o.key)
  // no command: the command list, as an error
  const none = await cli([])
  assert.equal(none.code, 2)
  assert.match(none.stderr, /Usage: soma-sync <command>/)
})

test('invalid input exits 2 with a one-line error naming the bad value', { timeout: 90_000 }, async t => {
  const dir = tempDir(t)
  assertUsageError(await cli(['frobnicate']), '"frobnicate"', 'unknown command')
  assertUsageError(await cli(['help', 'frobnicate']), '"frobnicate"')
  assertUsageError(await cli(['devnet', '--frob', '1']), '--frob')
  assertUsageError(await cli(['devnet', '--validators', 'abc']), '--validators', '"abc"')
  assertUsageError(await cli(['start', '--status-port', '70000']), '--status-port', '"70000"')
  assertUsageError(await cli(['devnet', '--log-level', 'loud']), '--log-level', '"loud"')
  assertUsageError(await cli(['keygen', '--listen', '/ip4/1.2.3.4/tcp/1']), '--listen', '`keygen`')
  assertUsageError(await cli(['start', 'now']), '"now"')
  assertUsageError(await cli(['start'], { env: { SOMA_TIMEOUT: 'xyz' } }), 'SOMA_TIMEOUT', '"xyz"')
  assertUsageError(await cli(['demo'], { env: { SOMA_DEMO_DURATION_MS: 'soon' } }), 'SOMA_DEMO_DURATION_MS', '"soon"')

  const badValue = path.join(dir, 'bad-value.json')
  writeFileSync(badValue, JSON.stringify({ validators: 'many' }))
  assertUsageError(await cli(['devnet', '--config', badValue]), badValue, '"many"')
  const badJson = path.join(dir, 'bad.json')
  writeFileSync(badJson, '{ "validators": ')
  assertUsageError(await cli(['devnet', '--config', badJson]), badJson)
  assertUsageError(await cli(['devnet', '--config', path.join(dir, 'missing.json')]), 'missing.json', 'does not exist')
  assertUsageError(await cli(['devnet'], { env: { SOMA_CONFIG: badJson } }), badJson)

  // a full node without a genesis is a usage error too
  assertUsageError(await cli(['start', '--data-dir', path.join(dir, 'node'), '--status-port', '0', '--listen', '/ip4/127.0.0.1/tcp/0']), 'no genesis', '--genesis-file')
  // a genesis file that is not one: exit 2, naming it
  assertUsageError(await cli(['start', '--genesis-file', badJson, '--data-dir', path.join(dir, 'node')]), badJson)
})

test('precedence: config file < SOMA_* environment < flags (config --print)', { timeout: 30_000 }, async t => {
  const dir = tempDir(t)
  const file = path.join(dir, 'soma.json')
  writeFileSync(file, JSON.stringify({ timeoutMs: '10s', validators: 7, txsPerBlock: 3, listen: ['/ip4/0.0.0.0/tcp/9000'] }))
  const r = await cli(['config', '--print', '--config', file, '--timeout', '30s', '--no-dht-enabled'], { env: { SOMA_TIMEOUT: '20s', SOMA_VALIDATORS: '8' } })
  assert.equal(r.code, 0, r.stderr)
  const config = JSON.parse(r.stdout)
  assert.equal(config.timeoutMs, 30_000)
  assert.equal(config.validators, 8)
  assert.equal(config.txsPerBlock, 3)
  assert.deepEqual(config.listen, ['/ip4/0.0.0.0/tcp/9000'])
  assert.equal(config.dhtEnabled, false)
  assert.equal(config.accounts, DEFAULTS.accounts)
  assert.deepEqual(Object.keys(config).sort(), Object.keys(DEFAULTS).sort())
})

test('keygen creates a peer key once and prints the same peer id', { timeout: 30_000 }, async t => {
  const dir = tempDir(t)
  const first = await cli(['keygen', '--data-dir', dir])
  assert.equal(first.code, 0, first.stderr)
  assert.match(first.stdout, /^12D3Koo\w+\n$/)
  assert.equal(statSync(path.join(dir, 'peer.key')).mode & 0o777, 0o600)
  const second = await cli(['keygen', '--data-dir', dir])
  assert.equal(second.code, 0)
  assert.equal(second.stdout, first.stdout)
  writeFileSync(path.join(dir, 'peer.key'), 'garbage')
  assertUsageError(await cli(['keygen', '--data-dir', dir]), path.join(dir, 'peer.key'), 'corrupt')
})

test('devnet --max-commits 5 produces, exits 0, and leaves genesis.pb and the store', { timeout: 60_000 }, async t => {
  const dir = tempDir(t)
  const r = await cli(['devnet', '--max-commits', '5', '--round-interval', '10ms', '--status-port', '0', '--listen', '/ip4/127.0.0.1/tcp/0', '--accounts', '50', '--data-dir', dir], { timeoutMs: 50_000 })
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stderr, /reached --max-commits 5/)
  assert.match(r.stderr, /commit \d+, epoch \d+, \d+ txs/)
  assert.ok(existsSync(path.join(dir, 'genesis.pb')))
  const genesis = readGenesisFile(path.join(dir, 'genesis.pb'))
  const store = await ChainStore.openDataDir(dir)
  try {
    assert.equal(toHex(store.chainId), toHex(genesis.chainId))
    assert.ok(store.highestExecuted >= 5, `executed ${store.highestExecuted}`)
    assert.ok(store.highestSynced >= 5)
    assert.equal(genesis.genesis.accounts.length, 50)
  } finally {
    await store.close()
  }
  // run again: resumes the same chain and goes on to the new maximum
  const again = await cli(['devnet', '--max-commits', '8', '--round-interval', '0', '--status-port', '0', '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', dir], { timeoutMs: 50_000 })
  assert.equal(again.code, 0, again.stderr)
  assert.match(again.stderr, /resuming the devnet chain/)
  const store2 = await ChainStore.openDataDir(dir)
  try {
    assert.ok(store2.highestExecuted >= 8)
  } finally {
    await store2.close()
  }
  // a different seed is refused
  assertUsageError(await cli(['devnet', '--devnet-seed', 'other', '--log-level', 'error', '--max-commits', '9', '--status-port', '0', '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', dir]), '"other"', 'seed')
})

test('demo runs a devnet and a node that connect, and stops after SOMA_DEMO_DURATION_MS', { timeout: 60_000 }, async () => {
  const r = await cli(['demo', '--listen', '/ip4/127.0.0.1/tcp/0', '--status-port', '0', '--round-interval', '50ms'], { env: { SOMA_DEMO_DURATION_MS: '3000' }, timeoutMs: 50_000 })
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stderr, /\[demo:node:node\] peer connected/)
  assert.match(r.stderr, /\[demo:devnet\] commit \d+/)
  assert.match(r.stderr, /stopped/)
  const dataDir = /data in (\S+?),/.exec(r.stderr)?.[1]
  assert.ok(dataDir !== undefined)
  assert.ok(!existsSync(dataDir), 'temp dirs are removed')
})
