/**
 * The README's embedding examples are complete programs (examples/*.ts), shown whole in the README (a
 * generated section, `npm run docs`) and run here against a devnet on 127.0.0.1: each must reach the
 * devnet's chain and print the state root the devnet has at the same commit.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULTS } from '../../src/config.ts'
import { startDevnet } from '../../src/devnet/devnet-node.ts'
import { toHex } from '../../src/crypto/hash.ts'
import { silentLogger } from '../../src/utils/logger.ts'
import { EXAMPLES } from '../../scripts/docs.ts'
import { tmpDir } from '../helpers/tmp.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

test('the README shows each example program whole', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  for (const name of EXAMPLES) {
    const source = readFileSync(path.join(ROOT, 'examples', `${name}.ts`), 'utf8').trimEnd()
    assert.ok(readme.includes(`<!-- example:${name}:start -->\n\`\`\`ts\n${source}\n\`\`\`\n<!-- example:${name}:end -->`), `README shows examples/${name}.ts (npm run docs)`)
    assert.match(source, /from 'soma-sync'/)
  }
})

async function runExample (name: string, args: string[], timeoutMs: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, ['--import', path.join(ROOT, 'examples', 'resolve-soma-sync.ts'), path.join(ROOT, 'examples', `${name}.ts`), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', d => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', d => { stderr += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>(resolve => child.on('close', c => resolve(c)))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

for (const name of EXAMPLES) {
  test(`examples/${name}.ts syncs from a devnet and prints the devnet's state root`, { timeout: 240_000 }, async t => {
    const devnet = await startDevnet({ ...DEFAULTS, dataDir: tmpDir(t), listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], statusPort: 0, logLevel: 'error', devnetSeed: `example-${name}`, accounts: 20, validators: 4, embeddingDim: 4, roundIntervalMs: 50, epochLength: 10, txsPerBlock: 3 }, { logger: silentLogger(), statusServer: false })
    t.after(async () => { await devnet.stop() })
    // snapshots exist at epoch ends: let two epochs pass
    while (devnet.node.store.highestExecuted < 25) await new Promise(resolve => setTimeout(resolve, 200))
    const r = await runExample(name, [devnet.genesisFile, devnet.node.multiaddrs()[0], tmpDir(t)], 200_000)
    assert.equal(r.code, 0, r.stderr)
    const m = /synced commit (\d+) state root ([0-9a-f]{64})$/m.exec(r.stdout)
    assert.ok(m !== null, r.stdout + r.stderr)
    const commit = Number(m[1])
    assert.ok(commit >= 25, `commit ${commit}`)
    assert.equal(m[2], toHex((await devnet.node.store.getStateRoot(commit))!))
    assert.match(r.stderr, /INFO {2}\[embed(:commit-sync)?\] /, 'the example logs through the node logger')
    if (name === 'embed-snapshot-sync') {
      const s = /^snapshot (\d+);/m.exec(r.stdout)
      assert.ok(s !== null && Number(s[1]) >= 10, `a snapshot was synced: ${r.stdout}${r.stderr}`)
    }
  })
}
