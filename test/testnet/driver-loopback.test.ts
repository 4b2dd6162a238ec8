/**
 * The testnet driver's fallback (testnet/driver.ts) where network namespaces are not available: the
 * same nodes on 127.0.0.1 ports, with a message saying so; faults that need namespaces refuse clearly;
 * delay (the proxies), SIGKILL and restart work, and the nodes converge. Forced with mode 'loopback'.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { FaultUnsupportedError, Testnet } from '../../testnet/driver.ts'
import { testnetNodes } from '../../testnet/topology.ts'
import { envName } from '../../src/config.ts'

test('loopback testnet: clear fallback message, unsupported faults refused, delay + SIGKILL/restart, convergence', { timeout: 180_000 }, async t => {
  const messages: string[] = []
  const nodes = testnetNodes().filter(n => n.name === 'devnet' || n.name === 'full1')
  const net = await Testnet.create({
    mode: 'loopback',
    nodes,
    nodeEnv: { devnet: { [envName('maxCommits')]: '60', [envName('roundIntervalMs')]: '50ms', SOMA_TESTNET_KEEP_SERVING: '1' } },
    log: m => { messages.push(m) }
  })
  t.after(async () => { await net.close() })
  assert.equal(net.mode, 'loopback')
  assert.ok(messages.some(m => /not available.*127\.0\.0\.1/.test(m)), messages.join('\n'))
  await assert.rejects(net.setLoss('all', 5), FaultUnsupportedError)
  await assert.rejects(net.setRate('full1', '1mbit'), FaultUnsupportedError)
  await assert.rejects(net.partition(['full1']), /needs network namespaces/)
  await net.setDelay('all', 20)
  await net.start()
  await net.waitFor('full1 to sync 20 commits', async () => (await net.status('full1')).highestExecuted >= 20, 60_000)
  await net.kill('full1')
  assert.equal(net.running('full1'), false)
  await net.restart('full1')
  const converged = await net.waitConverged({ timeoutMs: 90_000, atCommit: 60 }).catch(err => { throw new Error(`${err.message}\n${net.logTail('full1')}`) })
  assert.equal(converged.full1.stateRoot, converged.devnet.stateRoot)
  assert.equal(converged.full1.highestExecuted, 60)
})
