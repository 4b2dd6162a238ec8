/**
 * Renders docker-compose.yml from the testnet topology (testnet/topology.ts, testnet/compose.ts).
 *
 *   node scripts/gen-compose.ts          rewrite docker-compose.yml
 *   node scripts/gen-compose.ts --check  exit 1 if docker-compose.yml differs from the topology
 */
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { renderCompose } from '../testnet/compose.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const COMPOSE_PATH = path.join(root, 'docker-compose.yml')

if (import.meta.main) {
  const text = await renderCompose()
  if (process.argv.includes('--check')) {
    let current = ''
    try { current = readFileSync(COMPOSE_PATH, 'utf8') } catch {}
    if (current !== text) {
      process.stderr.write('docker-compose.yml differs from testnet/topology.ts: run `node scripts/gen-compose.ts`\n')
      process.exit(1)
    }
    process.stdout.write('docker-compose.yml is up to date\n')
  } else {
    writeFileSync(COMPOSE_PATH, text)
    process.stdout.write(`wrote ${path.relative(process.cwd(), COMPOSE_PATH) || COMPOSE_PATH}\n`)
  }
}
