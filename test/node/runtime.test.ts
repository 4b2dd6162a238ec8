/**
 * The node process's memory settings (src/node/runtime.ts): what counts as applied, and every launcher
 * of this package applying them — the executable's `#!` line (run for real), `npm start`, the
 * docker-compose services and the namespace testnet's processes.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { NODE_ENV, NODE_FLAGS, missingProcessSettings, withNodeEnv } from '../../src/node/runtime.ts'
import { composeFile } from '../../testnet/compose.ts'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const ALL = [...NODE_FLAGS, ...Object.entries(NODE_ENV).map(([k, v]) => `${k}=${v}`)]

test('missingProcessSettings: flags from execArgv or NODE_OPTIONS, variables from the environment', () => {
  assert.deepEqual(missingProcessSettings([], {}), ALL)
  assert.deepEqual(missingProcessSettings([...NODE_FLAGS], { ...NODE_ENV }), [])
  const flags = ['--max-semi-space-size=16']
  const vars = { MALLOC_ARENA_MAX: '2' }
  assert.deepEqual(missingProcessSettings([], {}, flags, vars), ['--max-semi-space-size=16', 'MALLOC_ARENA_MAX=2'])
  assert.deepEqual(missingProcessSettings([], { ...vars, NODE_OPTIONS: '--inspect --max-semi-space-size=16' }, flags, vars), [])
  // another value is the operator's choice, not a missing setting; V8 takes _ for -
  assert.deepEqual(missingProcessSettings(['--max-semi-space-size=4'], { MALLOC_ARENA_MAX: '1' }, flags, vars), [])
  assert.deepEqual(missingProcessSettings(['--max_semi_space_size=8'], {}, flags, vars), ['MALLOC_ARENA_MAX=2'])
  assert.deepEqual(missingProcessSettings(['--inspect'], vars, flags, vars), ['--max-semi-space-size=16'])
  // withNodeEnv adds the variables without overriding the caller's
  assert.equal(withNodeEnv({ MALLOC_ARENA_MAX: '4', X: '1' }).MALLOC_ARENA_MAX, '4')
  assert.equal(withNodeEnv({ X: '1' }).MALLOC_ARENA_MAX, NODE_ENV.MALLOC_ARENA_MAX)
})

test('the soma-sync executable\'s #! line starts node with every setting', { timeout: 30_000 }, (t) => {
  const shebang = readFileSync(path.join(ROOT, 'bin', 'soma-sync.js'), 'utf8').split('\n')[0]
  const dir = mkdtempSync(path.join(tmpdir(), 'soma-runtime-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const script = path.join(dir, 'probe.mjs')
  // the same #! line over a script that reports what its process got, run by the kernel as bin/soma-sync is
  writeFileSync(script, `${shebang}\nconst { missingProcessSettings } = await import(${JSON.stringify(path.join(ROOT, 'src', 'node', 'runtime.ts'))})\nprocess.stdout.write(JSON.stringify({ missing: missingProcessSettings(), execArgv: process.execArgv }))\n`)
  chmodSync(script, 0o755)
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}` }
  for (const k of Object.keys(NODE_ENV)) delete env[k]
  delete env.NODE_OPTIONS
  const out = JSON.parse(execFileSync(script, [], { env, encoding: 'utf8' }))
  assert.deepEqual(out.missing, [])
  assert.deepEqual(out.execArgv, [...NODE_FLAGS])
})

test('npm start, the docker-compose services and the namespace testnet apply every setting', async () => {
  const start: string = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts.start
  for (const s of ALL) assert.ok(start.includes(s), `npm start lacks ${s}: ${start}`)
  const compose = await composeFile()
  for (const [name, service] of Object.entries<any>(compose.services)) {
    // the optional monitoring profile (Prometheus) is not a soma-sync node
    if (service.profiles !== undefined) continue
    // the s3 service is s3rver (testnet/Dockerfile.s3), the bucket the archival node fills, not a soma-sync node
    if (service.build?.dockerfile === 'testnet/Dockerfile.s3') continue
    assert.deepEqual(service.entrypoint.slice(1, 1 + NODE_FLAGS.length), [...NODE_FLAGS], `${name}'s entrypoint`)
    for (const [k, v] of Object.entries(NODE_ENV)) assert.equal(service.environment[k], v, `${name}'s ${k}`)
  }
  const driver = readFileSync(path.join(ROOT, 'testnet', 'driver.ts'), 'utf8')
  assert.match(driver, /process\.execPath, \.\.\.NODE_FLAGS, \.\.\.args/)
  assert.match(driver, /env: withNodeEnv\(/)
})
