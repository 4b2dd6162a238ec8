/**
 * A snapshot-syncing node in its own process, for crash tests (test/snapshot-sync/resume.test.ts
 * SIGKILLs it mid-download).
 *
 *   node test/helpers/snapshot-child.ts <storeDir> <genesisFile> <serverMultiaddr>
 *
 * Opens (or creates, from the genesis file) the store, starts a plain libp2p node syncing a snapshot
 * with one small request at a time (many atomic writes, so a kill lands mid-download), dials the server
 * and prints `phase <phase> chunks <done> <total>` on stdout whenever that changes. It exits when its
 * stdin closes, so it never outlives the test that spawned it.
 */
import { multiaddr } from '@multiformats/multiaddr'
import { ChainStore } from '../../src/store/chain-store.ts'
import { readGenesisFile } from '../../src/node/genesis-file.ts'
import { snapNode } from './snapshot-net.ts'

const [dir, genesisFile, addr] = process.argv.slice(2)
if (dir === undefined || genesisFile === undefined || addr === undefined) {
  process.stderr.write('usage: snapshot-child.ts <storeDir> <genesisFile> <serverMultiaddr>\n')
  process.exit(2)
}

process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()

const store = await ChainStore.open(dir, { genesis: readGenesisFile(genesisFile) })
const node = await snapNode(store, { snapshot: true, snap: { maxChunksPerRequest: 2, maxRequestsPerPeer: 1, initialRequestsPerPeer: 1 } })
let last = ''
const report = (): void => {
  const p = node.services.snapshotSync.progress()
  if (p === undefined) return
  const line = `phase ${p.phase} chunks ${p.chunks.done} ${p.chunks.total}`
  if (line !== last) { last = line; process.stdout.write(line + '\n') }
}
setInterval(report, 2)
await node.dial(multiaddr(addr))
