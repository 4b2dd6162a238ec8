/**
 * A syncing node in its own process, for crash tests (test/sync/commit-sync.test.ts SIGKILLs it).
 *
 *   node test/helpers/sync-child.ts <storeDir> <serverMultiaddr> [commitSyncBatchSize]
 *
 * Opens (or creates, from the test genesis) the store, starts a plain libp2p sync node, dials the
 * server and prints `synced <n> executed <m>` on stdout whenever its progress changes. It exits when
 * its stdin closes, so it never outlives the test that spawned it.
 */
import { multiaddr } from '@multiformats/multiaddr'
import { ChainStore } from '../../src/store/chain-store.ts'
import { syncNode, testGenesis } from './sync-net.ts'

const [dir, addr, batch] = process.argv.slice(2)
if (dir === undefined || addr === undefined) {
  process.stderr.write('usage: sync-child.ts <storeDir> <serverMultiaddr> [commitSyncBatchSize]\n')
  process.exit(2)
}

process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()

const store = await ChainStore.open(dir, { genesis: testGenesis() })
// small batches and block requests: many atomic writes, so a kill lands mid-sync
const node = await syncNode(store, { commitSyncBatchSize: Number(batch ?? 5), maxBlocksPerFetch: 8 })
let last = ''
const report = (): void => {
  const line = `synced ${store.highestSynced} executed ${store.highestExecuted}`
  if (line !== last) { last = line; process.stdout.write(line + '\n') }
}
setInterval(report, 5)
report()
await node.dial(multiaddr(addr))
