import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { ChainStore } from '../../src/store/chain-store.ts'
import { CommitExecutor } from '../../src/executor/commit-executor.ts'
import { DevnetProducer } from '../../src/devnet/producer.ts'
import { createGenesis } from '../../src/chain/genesis.ts'
import { loadConfig } from '../../src/config.ts'
import { runSnapshotCommand, snapshotHelp } from '../../src/cli/snapshot.ts'
import { SnapshotStore } from '../../src/snapshot/snapshot-store.ts'
import { overwriteBlob } from '../helpers/packs.ts'
import { ConfigError, InvalidChunkError, StoreError } from '../../src/errors.ts'
import { tmpDir } from '../helpers/tmp.ts'
import { flipBit, hex } from '../helpers/chain.ts'

const SEED = 'cli-snapshots'
const genesis = createGenesis({ seed: SEED, validators: 4, accounts: 120, initialBalance: 1e9, embeddingDim: 8 })

async function produce (dataDir: string, upTo: number): Promise<void> {
  const store = await ChainStore.openDataDir(dataDir, { genesis })
  try {
    const p = new DevnetProducer(store, new CommitExecutor(store), { seed: SEED, epochLength: 5, txsPerBlock: 10, roundIntervalMs: 0 })
    await p.load()
    await p.produceUntil(upTo)
  } finally {
    await store.close()
  }
}

async function run (dataDir: string, args: string[], flags: string[] = []): Promise<{ code: number, out: string }> {
  const { config, positionals } = loadConfig({ argv: ['--data-dir', dataDir, '--devnet-seed', SEED, '--snapshot-target-chunk-bytes', '2KiB', ...flags, ...args], command: 'snapshot' })
  const lines: string[] = []
  const code = await runSnapshotCommand(positionals, config, { out: l => lines.push(l) })
  return { code, out: lines.join('\n') }
}

async function fails (p: Promise<unknown>, cls: new (...a: any[]) => Error, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: any) => {
    assert.ok(e instanceof cls, `${e?.name}: ${e?.message}`)
    assert.match(e.message, re)
    return true
  })
}

describe('soma-sync snapshot', { timeout: 60_000 }, () => {
  test('create, list, inspect, verify on a devnet data dir', async (t) => {
    const dir = tmpDir(t)
    await produce(dir, 12)
    assert.match((await run(dir, ['list'])).out, /no snapshots in/)

    const c1 = await run(dir, ['create'])
    assert.equal(c1.code, 0)
    assert.match(c1.out, /created the snapshot of commit 12 \(epoch 2\)/)
    assert.match(c1.out, /full build \(no earlier snapshot is stored\)/)
    assert.match(c1.out, /signed by the 4 members of the devnet committee of epoch 2/)
    assert.match((await run(dir, ['create'])).out, /snapshot of commit 12 \(the highest executed\) already exists/)

    await produce(dir, 16)
    const c2 = await run(dir, ['create'])
    assert.match(c2.out, /created the snapshot of commit 16 \(epoch 3\)/)
    assert.match(c2.out, /incremental from the snapshot of commit 12: \d+ accounts and \d+ embeddings changed/)

    const l = await run(dir, ['list'])
    const rows = l.out.split('\n')
    assert.match(rows[0], /^commit\s+epoch\s+chunks\s+size\s+attested stake\s+state root\s+final checksum$/)
    assert.equal(rows.length, 3)
    assert.match(rows[1], /^12\s+2\s+\d+\s+[\d.]+ KiB\s+\d+\/\d+\s+[0-9a-f]{16}/)
    assert.match(rows[2], /^16\s+3\s/)

    const i = await run(dir, ['inspect'])
    assert.match(i.out, /^snapshot of commit 16$/m)
    assert.match(i.out, /state root\s+[0-9a-f]{64}/)
    assert.match(i.out, /attestation\s+4 signatures by authorities 0, 1, 2, 3; valid: \d+ of \d+ stake/)
    assert.match(i.out, /chunking\s+target 2048 B, max 8192 B, hot epochs 2/)
    assert.match(i.out, /accounts\/hot\s+\d+\s+\d+/)
    assert.match(i.out, /accounts\/cold\s+\d+\s+\d+/)
    assert.match(i.out, /embeddings\/0\s+\d+/)
    assert.match((await run(dir, ['inspect', '12'])).out, /^snapshot of commit 12$/m)

    const v = await run(dir, ['verify'])
    assert.match(v.out, /snapshot of commit 16 \(epoch 3\): OK/)
    assert.match(v.out, /attestation: 4 valid signatures/)
    assert.match(v.out, /state rebuilt from 1\d\d accounts and \d+ embeddings has the manifest's state root [0-9a-f]{64}, the store's root of that commit/)
    assert.match((await run(dir, ['verify', '12'])).out, /OK/)
  })

  test('clear errors: usage, no store, empty store, no such snapshot, a corrupt chunk', async (t) => {
    const dir = tmpDir(t)
    await fails(run(dir, []), ConfigError, /needs a subcommand: create, list, inspect or verify/)
    await fails(run(dir, ['frobnicate']), ConfigError, /unknown snapshot subcommand "frobnicate"/)
    await fails(run(dir, ['inspect', 'abc']), ConfigError, /"abc" is not a commit index/)
    await fails(run(dir, ['list', '3']), ConfigError, /unexpected argument "3" for `snapshot list`/)
    await fails(run(path.join(dir, 'nowhere'), ['list']), StoreError, /no soma-sync store in .*nowhere/)

    // a store with genesis only
    const empty = await ChainStore.openDataDir(dir, { genesis })
    await empty.close()
    await fails(run(dir, ['create']), StoreError, /has executed no commit yet: nothing to snapshot/)
    await fails(run(dir, ['inspect']), StoreError, /no snapshot is stored in .*snapshot create/)
    await fails(run(dir, ['verify']), StoreError, /no snapshot is stored/)

    await produce(dir, 6)
    // another seed: the snapshot is made, unattested
    const c = await run(dir, ['create'], ['--devnet-seed', 'not-this-chain'])
    assert.match(c.out, /unattested/)
    assert.match((await run(dir, ['list'])).out, /\bunsigned\b/)
    assert.match((await run(dir, ['verify'])).out, /attestation: none \(unsigned snapshot\)/)
    await fails(run(dir, ['inspect', '2']), StoreError, /no snapshot of commit 2 in .* \(stored: 6\)/)

    // corrupt one chunk of the stored snapshot: verify names it
    const store = await ChainStore.openDataDir(dir)
    const listing = await new SnapshotStore(store).getListing(6)
    const victim = listing[Math.floor(listing.length / 2)].hash
    const bytes = (await new SnapshotStore(store).getChunk(victim))!
    await overwriteBlob(store, victim, flipBit(bytes, 20, 2))
    await store.close()
    await fails(run(dir, ['verify']), InvalidChunkError, new RegExp(`chunk ${hex(victim)} is corrupt`))
  })

  test('--help lists the snapshot options', () => {
    const h = snapshotHelp()
    assert.match(h, /^Usage: soma-sync snapshot <create \| list \| inspect \[commit\] \| verify \[commit\]>/)
    for (const flag of ['--data-dir', '--devnet-seed', '--snapshot-target-chunk-bytes', '--snapshot-hot-epochs', '--snapshot-embedding-window-commits', '--snapshot-keep']) assert.ok(h.includes(flag), flag)
    assert.ok(!h.includes('--snapshot-every'), 'the producer schedule is not an option of `snapshot`')
    assert.match(h, /\[snapshot\]/)
  })
})
