/**
 * A snapshot-syncing node in its own process, for crash tests (test/snapshot-sync/resume.test.ts
 * SIGKILLs it mid-download; test/snapshot-sync/crash.test.ts during the arrival load, the load phase and
 * around the anchor).
 *
 *   node test/helpers/snapshot-child.ts <storeDir> <genesisFile> <serverMultiaddr> [<options json>]
 *
 * Opens (or creates, from the genesis file) the store, starts a plain libp2p node syncing a snapshot
 * with one small request at a time (many atomic writes, so a kill lands mid-download), dials the server
 * and prints on stdout (pipes are written synchronously, so a line is out before the work after it):
 * - `phase <phase> chunks <done> <total>` whenever that changes (polled every 2 ms);
 * - `load <phase> <done> <total>` whenever the rows loaded change (polled every 2 ms);
 * - `enter <phase>` as the sync enters a phase (from its phase event, before the phase's work);
 * - `anchored <commit>` when the sync ended, `executed <n>` as commit sync executes after it.
 * Options: `snap` (snapshot-sync settings over the defaults above), `selfKill` (the process SIGKILLs
 * itself at an exact point: `enter:<phase>` — as the sync enters the phase, before its work —,
 * `before-anchor-batch` — the anchor batch is built, not written —, `after-anchor-batch` — written, the
 * sync rows not yet cleared —, or `after-anchor-clear` — the rows cleared, the pack collection not yet
 * run). It exits when its stdin closes, so it never outlives the
 * test that spawned it.
 */
import { multiaddr } from '@multiformats/multiaddr'
import { ChainStore } from '../../src/store/chain-store.ts'
import { readGenesisFile } from '../../src/node/genesis-file.ts'
import { snapNode } from './snapshot-net.ts'

const [dir, genesisFile, addr, optsJson] = process.argv.slice(2)
if (dir === undefined || genesisFile === undefined || addr === undefined) {
  process.stderr.write('usage: snapshot-child.ts <storeDir> <genesisFile> <serverMultiaddr> [<options json>]\n')
  process.exit(2)
}
const opts: { snap?: Record<string, unknown>, selfKill?: string } = optsJson === undefined ? {} : JSON.parse(optsJson)

process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()

const store = await ChainStore.open(dir, { genesis: readGenesisFile(genesisFile) })
const node = await snapNode(store, { snapshot: true, snap: { maxChunksPerRequest: 2, maxRequestsPerPeer: 1, initialRequestsPerPeer: 1, ...opts.snap } })
const sync = node.services.snapshotSync.snapshotSync!
const die = (where: string): void => {
  process.stdout.write(`killing myself ${where}\n`)
  process.kill(process.pid, 'SIGKILL')
}
if (opts.selfKill !== undefined) {
  // finish() adds the end of the sync to the anchor batch right before it is written; clear() follows
  // the write; the pack collection follows the clear
  const finish = sync.state.finish.bind(sync.state)
  const clear = sync.state.clear.bind(sync.state)
  const collect = store.packs.collect.bind(store.packs)
  let cleared = false
  sync.state.finish = (batch) => {
    finish(batch)
    if (opts.selfKill === 'before-anchor-batch') die(opts.selfKill)
  }
  sync.state.clear = async (o) => {
    if (o === undefined && opts.selfKill === 'after-anchor-batch') die(opts.selfKill)
    await clear(o)
    if (o === undefined) cleared = true
  }
  store.packs.collect = async () => {
    if (cleared && opts.selfKill === 'after-anchor-clear') die(opts.selfKill)
    return await collect()
  }
}
sync.on('phase', p => {
  process.stdout.write(`enter ${p}\n`)
  if (opts.selfKill === `enter:${p}`) die(opts.selfKill)
})
let last = ''
let lastLoad = ''
let anchored = false
let executed = -1
const report = (): void => {
  const svc = node.services.snapshotSync
  const p = svc.progress()
  if (p !== undefined) {
    const line = `phase ${p.phase} chunks ${p.chunks.done} ${p.chunks.total}`
    if (line !== last) { last = line; process.stdout.write(line + '\n') }
    const load = `load ${p.phase} ${p.load.done} ${p.load.total}`
    if (load !== lastLoad) { lastLoad = load; process.stdout.write(load + '\n') }
  }
  if (!anchored && svc.result !== undefined) { anchored = true; process.stdout.write(`anchored ${svc.result.commit ?? -1}\n`) }
  if (anchored && store.highestExecuted !== executed) { executed = store.highestExecuted; process.stdout.write(`executed ${executed}\n`) }
}
setInterval(report, 2)
await node.dial(multiaddr(addr))
