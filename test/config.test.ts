import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { DEFAULTS, OPTIONS, envName, flagName, helpText, loadConfig, markdownTable } from '../src/config.ts'
import { ConfigError } from '../src/errors.ts'

function configFile (t: { after: (fn: () => void) => void }, content: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'soma-config-test-'))
  t.after(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = path.join(dir, 'soma.json')
  writeFileSync(file, content)
  return file
}

/** asserts loadConfig throws a ConfigError whose message contains every `needles` */
function rejects (opts: Parameters<typeof loadConfig>[0], ...needles: string[]): void {
  assert.throws(() => loadConfig(opts), (err: Error) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
    for (const n of needles) assert.ok(err.message.includes(n), `${JSON.stringify(err.message)} should mention ${JSON.stringify(n)}`)
    return true
  })
}

test('no input gives the defaults', () => {
  const { config, positionals, help } = loadConfig()
  assert.deepEqual(config, { ...DEFAULTS })
  assert.deepEqual(positionals, [])
  assert.equal(help, false)
  assert.ok(Object.isFrozen(DEFAULTS))
})

test('every option has a unique flag and environment variable, and a default', () => {
  const flags = new Set(OPTIONS.map(o => flagName(o.key)))
  assert.equal(flags.size, OPTIONS.length)
  for (const o of OPTIONS) {
    assert.ok(o.key in DEFAULTS, o.key)
    assert.match(envName(o.key), /^SOMA_[A-Z0-9_]+$/)
  }
  assert.equal(flagName('roundIntervalMs'), 'round-interval')
  assert.equal(envName('timeoutMs'), 'SOMA_TIMEOUT')
})

test('durations: units, plain milliseconds, errors', () => {
  assert.equal(loadConfig({ argv: ['--timeout', '30s'] }).config.timeoutMs, 30_000)
  assert.equal(loadConfig({ argv: ['--timeout=200ms'] }).config.timeoutMs, 200)
  assert.equal(loadConfig({ argv: ['--timeout', '1.5s'] }).config.timeoutMs, 1500)
  assert.equal(loadConfig({ argv: ['--timeout', '2m'] }).config.timeoutMs, 120_000)
  assert.equal(loadConfig({ argv: ['--timeout', '1h'] }).config.timeoutMs, 3_600_000)
  assert.equal(loadConfig({ argv: ['--round-interval', '250'] }).config.roundIntervalMs, 250)
  assert.equal(loadConfig({ env: { SOMA_PEER_BAN: '5min' } }).config.peerBanMs, 300_000)
  rejects({ argv: ['--timeout', 'soon'] }, '--timeout', '"soon"', 'duration')
  rejects({ argv: ['--timeout', '5 parsecs'] }, '"5 parsecs"')
  rejects({ argv: ['--timeout', '0'] }, 'minimum 1')
  rejects({ env: { SOMA_TIMEOUT: 'xyz' } }, 'SOMA_TIMEOUT', '"xyz"')
})

test('sizes: binary and decimal units, errors', () => {
  assert.equal(loadConfig({ argv: ['--max-fetch-response-bytes', '4MiB'] }).config.maxFetchResponseBytes, 4 * 1024 * 1024)
  assert.equal(loadConfig({ argv: ['--max-fetch-response-bytes', '64KiB'] }).config.maxFetchResponseBytes, 65_536)
  assert.equal(loadConfig({ argv: ['--max-fetch-response-bytes', '2mb'] }).config.maxFetchResponseBytes, 2_000_000)
  assert.equal(loadConfig({ argv: ['--max-total-fetched-bytes', '1GiB'] }).config.maxTotalFetchedBytes, 1024 ** 3)
  assert.equal(loadConfig({ argv: ['--max-fetch-response-bytes', '65536'] }).config.maxFetchResponseBytes, 65_536)
  rejects({ argv: ['--max-fetch-response-bytes', 'lots'] }, '"lots"', 'size')
  rejects({ argv: ['--max-fetch-response-bytes', '1'] }, 'minimum 1024')
})

test('lists: comma-separated from flags and env, arrays from a config file', t => {
  assert.deepEqual(loadConfig({ argv: ['--listen', '/ip4/0.0.0.0/tcp/1, /ip4/0.0.0.0/tcp/2'] }).config.listen, ['/ip4/0.0.0.0/tcp/1', '/ip4/0.0.0.0/tcp/2'])
  assert.deepEqual(loadConfig({ argv: ['--entrypoints', ''] }).config.entrypoints, [])
  assert.deepEqual(loadConfig({ env: { SOMA_ANNOUNCE: '/dns4/x/tcp/1' } }).config.announce, ['/dns4/x/tcp/1'])
  const file = configFile(t, JSON.stringify({ entrypoints: ['/ip4/1.2.3.4/tcp/1/p2p/x', '/ip4/1.2.3.4/tcp/2/p2p/y'] }))
  assert.deepEqual(loadConfig({ argv: ['--config', file] }).config.entrypoints, ['/ip4/1.2.3.4/tcp/1/p2p/x', '/ip4/1.2.3.4/tcp/2/p2p/y'])
  const bad = configFile(t, JSON.stringify({ listen: [1, 2] }))
  rejects({ argv: ['--config', bad] }, bad, 'listen')
})

test('booleans: --flag, --flag false, --no-flag, env, errors', () => {
  assert.equal(DEFAULTS.dhtEnabled, true)
  assert.equal(loadConfig({ argv: ['--no-dht-enabled'] }).config.dhtEnabled, false)
  assert.equal(loadConfig({ argv: ['--dht-enabled', 'false'] }).config.dhtEnabled, false)
  assert.equal(loadConfig({ argv: ['--dht-enabled=no'] }).config.dhtEnabled, false)
  assert.equal(loadConfig({ argv: ['--no-dht-enabled', '--dht-enabled'] }).config.dhtEnabled, true)
  // a bare bool flag does not swallow the next flag or a positional
  const r = loadConfig({ argv: ['--dht-enabled', '--validators', '3', 'extra'] })
  assert.equal(r.config.dhtEnabled, true)
  assert.equal(r.config.validators, 3)
  assert.deepEqual(r.positionals, ['extra'])
  assert.equal(loadConfig({ env: { SOMA_DHT_ENABLED: '0' } }).config.dhtEnabled, false)
  rejects({ env: { SOMA_DHT_ENABLED: 'maybe' } }, 'SOMA_DHT_ENABLED', '"maybe"', 'boolean')
  rejects({ argv: ['--no-validators'] }, '--no-validators')
})

test('integers and choices: parsing, ranges, errors naming the value', () => {
  assert.equal(loadConfig({ argv: ['--validators', '7'] }).config.validators, 7)
  assert.equal(loadConfig({ argv: ['--initial-balance', '1e9'] }).config.initialBalance, 1e9)
  assert.equal(loadConfig({ argv: ['--status-port', '0'] }).config.statusPort, 0)
  assert.equal(loadConfig({ argv: ['--log-level', 'debug'] }).config.logLevel, 'debug')
  rejects({ argv: ['--validators', 'abc'] }, '--validators', '"abc"', 'integer')
  rejects({ argv: ['--validators', '2.5'] }, '"2.5"')
  rejects({ argv: ['--validators', '0'] }, '"0"', 'minimum 1')
  rejects({ argv: ['--status-port', '70000'] }, '--status-port', '"70000"', 'maximum 65535')
  rejects({ argv: ['--accounts', '-5'] }, '"-5"', 'minimum')
  rejects({ argv: ['--log-level', 'loud'] }, '--log-level', '"loud"', 'error, warn, info, debug')
})

test('unknown options, missing values, help and positionals', () => {
  rejects({ argv: ['--frobnicate', '1'], command: 'devnet' }, '--frobnicate', '`devnet`')
  rejects({ argv: ['--validators'] }, '--validators needs a value')
  rejects({ argv: ['--config'] }, '--config needs a file path')
  assert.equal(loadConfig({ argv: ['--help'] }).help, true)
  assert.equal(loadConfig({ argv: ['-h'] }).help, true)
  assert.deepEqual(loadConfig({ argv: ['a', '--validators', '2', 'b'] }).positionals, ['a', 'b'])
})

test('precedence: defaults < config file < environment < flags', t => {
  const file = configFile(t, JSON.stringify({ timeoutMs: '10s', validators: 7, txsPerBlock: 3, dataDir: '/from/file' }))
  const { config } = loadConfig({
    argv: ['--config', file, '--timeout', '30s'],
    env: { SOMA_TIMEOUT: '20s', SOMA_VALIDATORS: '8' }
  })
  assert.equal(config.timeoutMs, 30_000) // flag
  assert.equal(config.validators, 8) // env over file
  assert.equal(config.txsPerBlock, 3) // file
  assert.equal(config.dataDir, '/from/file')
  assert.equal(config.accounts, DEFAULTS.accounts) // default
  // SOMA_CONFIG names the file too; --config wins over it
  assert.equal(loadConfig({ env: { SOMA_CONFIG: file } }).config.validators, 7)
  const other = configFile(t, JSON.stringify({ validators: 9 }))
  assert.equal(loadConfig({ argv: ['--config', other], env: { SOMA_CONFIG: file } }).config.validators, 9)
})

test('config file errors name the file and the bad value', t => {
  const badValue = configFile(t, JSON.stringify({ validators: 'many' }))
  rejects({ argv: ['--config', badValue] }, badValue, '"validators"', '"many"')
  const badJson = configFile(t, '{ "validators": 3,, }')
  rejects({ argv: ['--config', badJson] }, badJson)
  const unknown = configFile(t, JSON.stringify({ validatorz: 3 }))
  rejects({ argv: ['--config', unknown] }, unknown, 'validatorz')
  const notObject = configFile(t, '[1, 2]')
  rejects({ argv: ['--config', notObject] }, notObject, 'JSON object')
  rejects({ argv: ['--config', '/nonexistent/soma.json'] }, '/nonexistent/soma.json', 'does not exist')
})

test('helpText and markdownTable list every option of the command with env and default', () => {
  const text = helpText('devnet', 'soma-sync devnet', 'runs a devnet')
  for (const o of OPTIONS) {
    const listed = text.includes(`--${flagName(o.key)}\n`) || text.includes(`--${flagName(o.key)} <`)
    assert.equal(listed, o.commands.includes('devnet'), o.key)
    if (o.commands.includes('devnet')) assert.ok(text.includes(`env ${envName(o.key)}, default `), o.key)
  }
  assert.match(text, /env SOMA_ROUND_INTERVAL, default 200ms/)
  const table = markdownTable()
  for (const o of OPTIONS) assert.ok(table.includes(`| \`${o.key}\` | \`--${flagName(o.key)}\` | \`${envName(o.key)}\``), o.key)
  assert.match(table, /`maxFetchResponseBytes`.*`4MiB`/)
})
