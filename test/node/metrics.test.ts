/**
 * /metrics serves exactly the soma_* series declared in METRICS (the README table is generated from it),
 * and a syncing node feeds them: target and distance, executor batches, LevelDB writes.
 */
import { test } from 'node:test'
import { readFileSync } from 'node:fs'
import assert from 'node:assert/strict'
import { DEFAULTS } from '../../src/config.ts'
import { createNode } from '../../src/node/node.ts'
import { startDevnet } from '../../src/devnet/devnet-node.ts'
import { METRICS, metricsMarkdownTable } from '../../src/node/metrics.ts'
import { silentLogger } from '../../src/utils/logger.ts'
import { tmpDir } from '../helpers/tmp.ts'

test('/metrics serves every METRICS series and no other soma_* one; a syncing node feeds them', { timeout: 120_000 }, async t => {
  const base = { ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'], announce: [], statusPort: 0, logLevel: 'error', syncMode: 'commits' }
  const devnet = await startDevnet({ ...base, dataDir: tmpDir(t), devnetSeed: 'metrics-test', accounts: 20, roundIntervalMs: 20, txsPerBlock: 3, embeddingDim: 4 }, { logger: silentLogger(), statusServer: false })
  t.after(async () => { await devnet.stop() })
  while (devnet.node.store.highestExecuted < 30) await new Promise(resolve => setTimeout(resolve, 100))
  const node = await createNode({ ...base, dataDir: tmpDir(t), entrypoints: [devnet.node.multiaddrs()[0]], genesisFile: devnet.genesisFile }, { logger: silentLogger(), statusServer: { host: '127.0.0.1', port: 0 } })
  t.after(async () => { await node.stop() })
  await node.start()
  while (node.store.highestExecuted < 30) await new Promise(resolve => setTimeout(resolve, 100))
  const text = await (await fetch(`${node.statusUrl!}/metrics`)).text()
  const served = new Set([...text.matchAll(/^# TYPE (soma_\w+) (\w+)$/gm)].map(m => `${m[1]} ${m[2]}`))
  assert.deepEqual([...served].sort(), METRICS.map(m => `${m.name} ${m.type}`).sort())
  const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN)
  assert.ok(value(/^soma_sync_target (\d+)$/m) >= 30)
  assert.ok(value(/^soma_sync_distance (\d+)$/m) >= 0)
  assert.ok(value(/^soma_executor_batch_seconds_count (\d+)$/m) >= 1)
  assert.ok(value(/^soma_executor_batch_commits_sum (\d+)$/m) >= 30)
  assert.ok(value(/^soma_leveldb_write_seconds_count (\d+)$/m) >= 2)
  assert.equal(value(/^soma_peers_by_state\{state="connected"\} (\d+)$/m), 1)
  assert.equal(value(/^soma_peers_by_state\{state="usable"\} (\d+)$/m), 1)
  assert.ok([200, 206].includes(value(/^soma_health_status (\d+)$/m)))
  assert.ok(value(/^soma_uptime_seconds (\d+)$/m) >= 0)
  for (const m of METRICS) assert.ok(metricsMarkdownTable().includes(`\`${m.name}\``))
})

test('the Grafana dashboard (monitoring/grafana-dashboard.json) queries only series the node serves', () => {
  const dash = JSON.parse(readFileSync(new URL('../../monitoring/grafana-dashboard.json', import.meta.url), 'utf8')) as { panels: Array<{ title: string, targets: Array<{ expr: string }> }> }
  const names = new Set(METRICS.flatMap(m => m.type === 'histogram' ? [`${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`] : [m.name]))
  const used = new Set<string>()
  for (const p of dash.panels) {
    assert.ok(p.targets.length > 0, p.title)
    for (const t of p.targets) {
      const series = [...t.expr.matchAll(/\bsoma_\w+/g)].map(m => m[0])
      assert.ok(series.length > 0, `${p.title}: ${t.expr}`)
      for (const s of series) { assert.ok(names.has(s), `${p.title}: ${s} is not a METRICS series`); used.add(s.replace(/_(bucket|sum|count)$/, '')) }
    }
  }
  // the list: target, synced/executed, distance, rate, snapshot progress, failures, penalties, bans, peers, executor, LevelDB
  for (const must of ['soma_sync_target', 'soma_highest_synced_commit', 'soma_highest_executed_commit', 'soma_sync_distance', 'soma_commits_per_second', 'soma_snapshot_bytes', 'soma_snapshot_chunks', 'soma_range_failures_total', 'soma_chunk_failures_total', 'soma_penalties_total', 'soma_bans_total', 'soma_peers_by_state', 'soma_executor_batch_seconds', 'soma_leveldb_write_seconds']) {
    assert.ok(used.has(must), `the dashboard shows ${must}`)
  }
})
