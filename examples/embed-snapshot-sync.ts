// Snapshot sync, then commit sync, inside your own libp2p application: a complete program.
//
//   node examples/embed-snapshot-sync.ts <genesis file> <entrypoint multiaddr with /p2p/<id>> [data dir]
//
// Commit sync starts paused; snapshot sync finds the newest attested snapshot its connected peers offer
// (it always asks them directly; a discovery source such as the node's gossip/DHT service can be added
// with `candidates`), verifies and loads it, then resumes commit sync from the snapshot's commit. The
// program stops once it has executed every commit its peers have.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import {
  ChainStore, CommitExecutor, commitSyncServices, createLogger, keepEntrypointsConnected, loadOrCreatePeerKey,
  readGenesisFile, snapshotSyncServices, toHex
} from 'soma-sync'

const [genesisFile, entrypoint, dataDir = './data'] = process.argv.slice(2)
if (genesisFile === undefined || entrypoint === undefined) {
  process.stderr.write('usage: node examples/embed-snapshot-sync.ts <genesis file> <entrypoint multiaddr> [data dir]\n')
  process.exit(2)
}

const log = createLogger('embed', { level: 'info' })
const store = await ChainStore.openDataDir(dataDir, { genesis: readGenesisFile(genesisFile) })
const executor = new CommitExecutor(store)
const { privateKey } = await loadOrCreatePeerKey(dataDir)
const node = await createLibp2p({
  privateKey,
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ...commitSyncServices({ store, executor, startPaused: true, logger: log.child('commit-sync') }),
    ...snapshotSyncServices({ store, sync: true, logger: log.child('snapshot-sync') })
  }
})
const entrypoints = keepEntrypointsConnected(node, [entrypoint], { logger: log })

while (true) {
  await new Promise(resolve => setTimeout(resolve, 500))
  const s = node.services.snapshotSync.progress() // { phase, commit, chunks, bytes, bytesPerSecond, peers, etaSeconds, ... }
  if (node.services.snapshotSync.running && s !== undefined) {
    log.info('snapshot %s: commit %s, chunks %d/%d', s.phase, s.commit ?? '?', s.chunks.done, s.chunks.total)
    continue
  }
  const p = node.services.stateSync.progress() // while paused: { paused: true, phase: 'stopped', ... }
  if (p === undefined || p.paused) continue
  log.info('%s: commit %d/%d, %d peers', p.phase, p.highestExecuted, p.target, p.peers)
  if (p.phase === 'synced' && p.highestExecuted > 0 && p.highestExecuted === p.highestSynced) break
}
// how the snapshot sync ended: { outcome: 'synced', commit } or { outcome: 'none' } (no usable snapshot)
const snapshotCommit = node.services.snapshotSync.result?.commit
const executed = store.highestExecuted
const root = await store.getStateRoot(executed)
process.stdout.write(`snapshot ${snapshotCommit ?? 'none'}; synced commit ${executed} state root ${toHex(root!)}\n`)
entrypoints.stop()
await node.stop()
await store.close()
