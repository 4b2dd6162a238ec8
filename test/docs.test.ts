import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { renderReadme } from '../scripts/docs.ts'
import { OPTIONS, flagName } from '../src/config.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

test('README.md is up to date with the CLI help, the config object and BENCHMARKS.md (npm run docs)', () => {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8')
  const rendered = renderReadme(readme, readFileSync(path.join(root, 'BENCHMARKS.md'), 'utf8'))
  assert.equal(readme, rendered, 'README.md is stale: run `npm run docs`')
  for (const o of OPTIONS) assert.ok(readme.includes(`\`--${flagName(o.key)}\``), `README lacks --${flagName(o.key)}`)
})

test('README opens with the set-up commands', () => {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8')
  const setup = readme.slice(0, readme.indexOf('npm test') + 20)
  assert.ok(setup.indexOf('npm install') < setup.indexOf('npm start'))
  assert.ok(setup.indexOf('npm start') < setup.indexOf('npm test'))
})

test('.ci/run runs exactly the README test command after npm ci', () => {
  const ci = readFileSync(path.join(root, '.ci/run'), 'utf8')
  assert.match(ci, /^npm ci$/m)
  assert.match(ci, /^npm test$/m)
})
