/**
 * Child process for test/store/crash.test.ts: opens (or creates) a devnet store and produces + executes
 * commits in a tight loop until it is killed. Prints "ready <progress json>" once it is producing.
 * usage: node crash-writer.ts <dir> <seed>
 */
import { pathToFileURL } from 'node:url'
import { createGenesis } from '../../src/chain/genesis.ts'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'

export const CRASH_GENESIS = { validators: 4, accounts: 100, initialBalance: 1e9, embeddingDim: 8 }
export const CRASH_PRODUCER = { epochLength: 7, txsPerBlock: 20 }

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [dir, seed] = process.argv.slice(2)
  const store = await ChainStore.open(dir, { genesis: createGenesis({ seed, ...CRASH_GENESIS }) })
  const executor = new CommitExecutor(store)
  const producer = new DevnetProducer(store, executor, { seed, ...CRASH_PRODUCER })
  await producer.load()
  process.stdout.write(`ready ${JSON.stringify(store.getProgress())}\n`)
  // a safety net: never outlive the test by much
  setTimeout(() => process.exit(3), 60_000).unref()
  while (true) await producer.produceOne()
}
