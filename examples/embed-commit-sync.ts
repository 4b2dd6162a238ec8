// Commit sync inside your own libp2p application: a complete program.
//
//   node examples/embed-commit-sync.ts <genesis file> <entrypoint multiaddr with /p2p/<id>> [data dir]
//
// It opens (or creates) the store from the genesis, starts a libp2p node with the commit-sync services,
// keeps the entrypoint connected, logs progress, and stops once it has executed every commit its peers
// have (printing the commit and its state root).
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import {
  ChainStore, CommitExecutor, commitSyncServices, createLogger, keepEntrypointsConnected, loadOrCreatePeerKey,
  readGenesisFile, toHex
} from 'soma-sync'

const [genesisFile, entrypoint, dataDir = './data'] = process.argv.slice(2)
if (genesisFile === undefined || entrypoint === undefined) {
  process.stderr.write('usage: node examples/embed-commit-sync.ts <genesis file> <entrypoint multiaddr> [data dir]\n')
  process.exit(2)
}

const log = createLogger('embed', { level: 'info' })
const store = await ChainStore.openDataDir(dataDir, { genesis: readGenesisFile(genesisFile) })
const executor = new CommitExecutor(store)
const { privateKey } = await loadOrCreatePeerKey(dataDir) // the same peer id across restarts
const node = await createLibp2p({
  privateKey,
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ...commitSyncServices({ store, executor, logger: log.child('commit-sync') }) }
})
// libp2p dials nothing by itself: keep the entrypoint connected (dialed now, redialed while it is not)
const entrypoints = keepEntrypointsConnected(node, [entrypoint], { logger: log })

while (true) {
  await new Promise(resolve => setTimeout(resolve, 500))
  const p = node.services.stateSync.progress() // { phase, highestSynced, highestExecuted, target, peers, commitsPerSecond, ... }
  if (p === undefined) continue
  log.info('%s: commit %d/%d, %d peers', p.phase, p.highestExecuted, p.target, p.peers)
  if (p.phase === 'synced' && p.highestExecuted > 0 && p.highestExecuted === p.highestSynced) break
}
const executed = store.highestExecuted
const root = await store.getStateRoot(executed)
process.stdout.write(`synced commit ${executed} state root ${toHex(root!)}\n`)
entrypoints.stop()
await node.stop()
await store.close()
