/**
 * Operating details (issue 17 items 1 and 6): the log output (text, JSON, file, the progress line that log
 * lines never glue to), --version, the Node < 22 message, flags validated before anything is created, a
 * one-line error for a port in use, unknown flags refused, and `soma-sync status` against a running devnet.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createLogger, LogOutput } from '../../src/utils/logger.ts'
import { formatStatus } from '../../src/cli/status.ts'
import { joinAddress } from '../../src/devnet/devnet-node.ts'
import { tmpDir } from '../helpers/tmp.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts')
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version

interface Run { code: number | null, stdout: string, stderr: string }

async function cli (args: string[], opts: { timeoutMs?: number, node?: string, script?: string } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SOMA_')) env[k] = v
  const child = spawn(opts.node ?? process.execPath, [opts.script ?? MAIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', d => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', d => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000)
  const code = await new Promise<number | null>(resolve => child.on('close', c => resolve(c)))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

test('log output: text and JSON lines, a file, and a terminal progress line cleared before every log line', t => {
  const raw: string[] = []
  const out = new LogOutput({ write: s => { raw.push(s) }, tty: true })
  const log = createLogger('node', { level: 'info', output: out })
  out.progress('syncing: commit 1/10')
  log.info('peer %p connected', 'QmPeer')
  log.debug('dropped')
  out.progress('syncing: commit 2/10')
  const screen = raw.join('')
  // the log line starts on a cleared line and the progress line is redrawn after it: never glued
  assert.match(screen, /^\r\x1b\[2Ksyncing: commit 1\/10\r\x1b\[2K\d{4}-\d\d-\d\dT[\d:.]+Z INFO  \[node\] peer QmPeer connected\nsyncing: commit 1\/10\r\x1b\[2Ksyncing: commit 2\/10$/)
  out.clearProgress()
  log.warn('after')
  assert.match(raw.join(''), /\r\x1b\[2K\S+ WARN  \[node\] after\n$/)

  // off a terminal: no progress drawing at all
  const plain: string[] = []
  const off = new LogOutput({ write: s => { plain.push(s) }, tty: false })
  off.progress('x')
  createLogger('a', { output: off }).child('b').error('boom %d', 7)
  assert.equal(plain.length, 1)
  assert.match(plain[0], /^\S+ ERROR \[a:b\] boom 7\n$/)

  // JSON: one object per line
  const json: string[] = []
  createLogger('node', { format: 'json', write: s => { json.push(s) } }).child('commit-sync').warn('peer %s: %s', 'p1', 'bad "quote"\nnext')
  assert.equal(json.length, 1)
  assert.ok(json[0].endsWith('}\n') && !json[0].slice(0, -1).includes('\n'))
  const e = JSON.parse(json[0])
  assert.equal(e.level, 'warn')
  assert.equal(e.component, 'node:commit-sync')
  assert.equal(e.msg, 'peer p1: bad "quote"\nnext')
  assert.ok(!Number.isNaN(Date.parse(e.time)))
  assert.throws(() => createLogger('x', { format: 'yaml' }), /unknown log format/)

  // a file: appended, synchronously
  const file = path.join(tmpDir(t), 'logs', 'node.log')
  const fo = new LogOutput({ file })
  createLogger('node', { output: fo }).info('one')
  createLogger('node', { output: fo }).info('two')
  fo.close()
  assert.match(readFileSync(file, 'utf8'), /INFO  \[node\] one\n.*INFO  \[node\] two\n$/)
})

test('--version; a clear message and exit 2 on Node < 22', { timeout: 60_000 }, async t => {
  const v = await cli(['--version'])
  assert.equal(v.code, 0)
  assert.equal(v.stdout, `soma-sync ${VERSION} (node ${process.version})\n`)
  const old = spawnSync('/usr/bin/node', ['--version'], { encoding: 'utf8' })
  const major = Number(/^v(\d+)/.exec(old.stdout ?? '')?.[1] ?? NaN)
  if (old.error !== undefined || !(major < 22)) { t.skip(`no Node.js < 22 at /usr/bin/node (${old.stdout?.trim() ?? old.error?.message})`); return }
  const r = await cli(['--version'], { node: '/usr/bin/node', script: path.join(ROOT, 'bin', 'soma-sync.js') })
  assert.equal(r.code, 2)
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
  assert.match(r.stderr, /^error: soma-sync needs Node\.js >= 22; this is Node\.js v2\d\./)
})

test('flags are validated before the data dir or peer key is created; unknown flags refused; a port in use is one line', { timeout: 120_000 }, async t => {
  const dir = tmpDir(t)
  const devnet = await cli(['devnet', '--data-dir', path.join(dir, 'devnet'), '--max-commits', '2', '--round-interval', '0', '--listen', '/ip4/127.0.0.1/tcp/0', '--status-port', '0', '--accounts', '10'], { timeoutMs: 60_000 })
  assert.equal(devnet.code, 0, devnet.stderr)
  const genesis = path.join(dir, 'devnet', 'genesis.pb')
  const data = path.join(dir, 'node')
  for (const bad of [['--listen', 'foo'], ['--announce', '/nope/1'], ['--entrypoints', '/ip4/127.0.0.1/tcp/1']]) {
    const r = await cli(['start', '--data-dir', data, '--genesis-file', genesis, '--status-port', '0', ...bad])
    assert.equal(r.code, 2, r.stderr)
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
    assert.ok(r.stderr.includes(bad[1]), r.stderr)
    assert.equal(existsSync(data), false, `${bad.join(' ')} created ${data}`)
  }
  for (const args of [['start', '--nope'], ['status', '--nope'], ['status', '--listen', '/ip4/1.2.3.4/tcp/1'], ['status', '--url']]) {
    const r = await cli(args)
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
  }

  const srv = createServer()
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  t.after(() => { srv.close() })
  const port = (srv.address() as { port: number }).port
  const r = await cli(['start', '--data-dir', data, '--genesis-file', genesis, '--status-port', '0', '--listen', `/ip4/127.0.0.1/tcp/${port}`], { timeoutMs: 60_000 })
  assert.equal(r.code, 2, r.stderr)
  const errors = r.stderr.trim().split('\n').filter(l => l.startsWith('error: '))
  assert.deepEqual(errors, [`error: cannot listen on /ip4/127.0.0.1/tcp/${port}: the address is in use (another soma-sync running?): choose another --listen address`], r.stderr)
  assert.ok(!r.stderr.includes('    at '), `no stack trace: ${r.stderr}`)
})

test('the devnet join command names a reachable address: announced, else not loopback, else loopback with a note', () => {
  assert.deepEqual(joinAddress(['/ip4/10.0.0.5/tcp/7700/p2p/Qm'], true), { address: '/ip4/10.0.0.5/tcp/7700/p2p/Qm' })
  assert.deepEqual(joinAddress(['/ip4/127.0.0.1/tcp/7700/p2p/Qm', '/ip4/172.18.0.2/tcp/7700/p2p/Qm'], false), { address: '/ip4/172.18.0.2/tcp/7700/p2p/Qm' })
  const local = joinAddress(['/ip4/127.0.0.1/tcp/7700/p2p/Qm'], false)
  assert.equal(local.address, '/ip4/127.0.0.1/tcp/7700/p2p/Qm')
  assert.match(local.note ?? '', /--announce/)
})

test('soma-sync status pretty-prints a running devnet\'s /status; unreachable is exit 4', { timeout: 120_000 }, async t => {
  const dir = tmpDir(t)
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SOMA_')) env[k] = v
  const free = createServer()
  await new Promise<void>(resolve => free.listen(0, '127.0.0.1', resolve))
  const statusPort = (free.address() as { port: number }).port
  await new Promise(resolve => free.close(resolve))
  const child = spawn(process.execPath, [MAIN, 'devnet', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--status-port', String(statusPort), '--round-interval', '100', '--accounts', '10', '--log-format', 'json'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { child.kill('SIGKILL') })
  let stderr = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`no status URL in: ${stderr}`)) }, 60_000)
    child.stderr.setEncoding('utf8').on('data', d => {
      stderr += d
      const m = /status on (http:\/\/127\.0\.0\.1:\d+)\/status/.exec(stderr)
      if (m !== null) { clearTimeout(timer); resolve(m[1]) }
    })
  })
  // every log line of --log-format json is a JSON object
  for (const line of stderr.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), line)
  // a first start says what it is doing before it writes the genesis
  const first = stderr.trim().split('\n').map(l => JSON.parse(l) as { msg: string })
  assert.match(first[0].msg, /^first start: creating the store in \S+ from the genesis \(10 accounts, 4 validators\)$/)
  await new Promise(resolve => setTimeout(resolve, 1500))
  const r = await cli(['status', '--url', url])
  assert.equal(r.code, 0, r.stderr + r.stdout)
  assert.match(r.stdout, /^node {6}\S+ {2}\(soma-sync \d+\.\d+\.\d+, up \d+ s\)$/m)
  assert.match(r.stdout, /^phase {5}producing {3}health: ok \(200\)$/m)
  assert.match(r.stdout, /^progress {2}executed \d+ \/ target \d+/m)
  assert.match(r.stdout, /^last {6}new commit \d+ s ago/m)
  assert.match(r.stdout, /^waiting {3}nothing$/m)
  const j = await cli(['status', '--url', `${url}/status`, '--json'])
  assert.equal(j.code, 0)
  assert.equal(JSON.parse(j.stdout).phase, 'producing')
  child.kill('SIGKILL')
  const gone = await cli(['status', '--url', url])
  assert.equal(gone.code, 4)
  assert.match(gone.stderr, /^error: cannot reach http:\/\/127\.0\.0\.1:\d+\/status: /)
})

test('formatStatus shows why a node waits, with the evidence, and each peer', () => {
  const now = Date.parse('2026-12-04T12:00:00Z')
  const text = formatStatus({
    chainId: 'ab'.repeat(32), peerId: '12D3KooWself', listen: [], highestSynced: 4800, highestExecuted: 4790, lowestAvailable: 1, stateRoot: '', epoch: 3, peers: 1, phase: 'syncing', executedTransactions: 0, healthy: false,
    health: 'stuck', healthStatus: 503, version: '0.1.0', uptimeSeconds: 600, lastCommitAt: '2026-12-04T11:58:00.000Z', sync: { target: 12000, commitsPerSecond: 0 },
    waiting: { code: 'peers-other-chain', message: 'every peer met is on another chain', since: now - 65_000, evidence: { ourGenesis: 'abab', otherChainPeers: ['12D3KooWother'] } },
    peerList: [{ id: '12D3KooWother', address: '/ip4/127.0.0.1/tcp/7700', connected: true, height: 12000, lowestAvailable: 1, rttMs: 3, score: -100, bannedUntil: '2026-12-04T12:10:00.000Z', wrongChain: true }]
  }, now)
  assert.match(text, /^phase {5}syncing {3}health: stuck \(503\)$/m)
  assert.match(text, /^progress {2}executed 4790 \/ target 12000 \(39\.9%\)/m)
  assert.match(text, /^last {6}new commit 2 min ago/m)
  assert.match(text, /^WAITING {3}peers-other-chain: every peer met is on another chain$/m)
  assert.match(text, /^ {10}since 2026-12-04T11:58:55\.000Z \(65 s\)$/m)
  assert.match(text, /^ {10}otherChainPeers: \["12D3KooWother"\]$/m)
  assert.match(text, /^ {2}12D3KooWother {2}\/ip4\/127\.0\.0\.1\/tcp\/7700, height 12000, lowest 1, rtt 3 ms, score -100, BANNED until 2026-12-04T12:10:00\.000Z, OTHER CHAIN$/m)
})

test('scripts/testnet refuses unknown options (exit 2) before starting anything', { timeout: 60_000 }, async () => {
  for (const args of [['check', '--lose', '5'], ['up', '--delay'], ['up', 'extra']]) {
    const r = await cli(args, { script: path.join(ROOT, 'scripts', 'testnet.ts') })
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}${r.stdout}`)
    assert.match(r.stderr, /^error: (unknown option --lose|--delay needs a value|unexpected argument extra)/)
    assert.equal(r.stdout, '', 'nothing started')
  }
})
