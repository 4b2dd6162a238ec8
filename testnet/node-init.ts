/**
 * Entry point of a testnet node, in a docker-compose service (the image's `entrypoint` there) and in
 * the namespace testnet (scripts/testnet):
 *
 *   node testnet/node-init.ts <soma-sync command> [options...]
 *
 * Prepares the data dir from the SOMA_TESTNET_* environment, then runs the soma-sync CLI
 * (src/cli/main.ts) in this process, with the same arguments, environment and exit code:
 *
 * - `SOMA_TESTNET_PEER_KEY_SEED`: `<data-dir>/peer.key` is derived from this seed (testnet/keys.ts),
 *   so every node's peer id is known up front and entrypoints can name it.
 * - `SOMA_TESTNET_MAKE_GENESIS=1`: writes `<data-dir>/genesis.pb` from the devnet's genesis parameters
 *   in the environment (`SOMA_DEVNET_SEED`, `SOMA_VALIDATORS`, `SOMA_ACCOUNTS`, `SOMA_INITIAL_BALANCE`,
 *   `SOMA_EMBEDDING_DIM`). A devnet genesis is a pure function of them (src/chain/genesis.ts), so this
 *   is byte for byte the devnet's genesis.pb: no shared volume, no waiting for a file.
 * - `SOMA_TESTNET_JOIN_STATUS_URL` and `SOMA_TESTNET_JOIN_AFTER_COMMIT=<n>`: first waits until that
 *   /status reports `highestExecuted` >= n (the late joiner waits for the producer), at most
 *   `SOMA_TESTNET_JOIN_TIMEOUT` (default 10m).
 * - `SOMA_TESTNET_JOIN_ARCHIVE_URL` and `SOMA_TESTNET_JOIN_ARCHIVE_COMMIT=<n>`: first waits until the archive
 *   there (http(s)://, s3:// with `SOMA_ARCHIVE_S3_ENDPOINT` and the AWS_* credentials, or a directory)
 *   has a manifest whose highest commit is >= n (the bucket node waits for the archival node's upload),
 *   at most `SOMA_TESTNET_JOIN_TIMEOUT`. The node verifies everything it then reads from there itself.
 * - `SOMA_TESTNET_KEEP_SERVING=1` (devnet): after `--max-commits`, keep serving the chain (and /status)
 *   until SIGINT/SIGTERM instead of exiting, so a testnet has a fixed target to converge to.
 * - `SOMA_TESTNET_EXIT_ON_STDIN_EOF=1`: shut down when stdin closes (the namespace testnet's nodes
 *   never outlive the driver that started them).
 */
import { readFileSync } from 'node:fs'
import { createGenesis } from '../src/chain/genesis.ts'
import { loadConfig, type SomaConfig } from '../src/config.ts'
import { genesisPath, writeGenesisFile } from '../src/node/genesis-file.ts'
import { writeTestnetPeerKey } from './keys.ts'

const PREFIX = '[testnet-init]'

function say (msg: string): void {
  process.stderr.write(`${new Date().toISOString()} ${PREFIX} ${msg}\n`)
}

/** The data dir: `--data-dir` among the arguments, else the environment's / default. */
function dataDirOf (args: readonly string[], config: SomaConfig): string {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--data-dir' && args[i + 1] !== undefined) return args[i + 1]
    if (args[i].startsWith('--data-dir=')) return args[i].slice('--data-dir='.length)
  }
  return config.dataDir
}

function parseDuration (raw: string | undefined, fallbackMs: number): number {
  if (raw === undefined || raw === '') return fallbackMs
  const m = /^(\d+)(ms|s|m)?$/.exec(raw.trim())
  if (m === null) throw new Error(`SOMA_TESTNET_JOIN_TIMEOUT: ${JSON.stringify(raw)} is not a duration (e.g. 600s)`)
  return Number(m[1]) * (m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 1)
}

/** Polls `url` until its /status JSON reports highestExecuted >= `commit`. */
async function waitForCommit (url: string, commit: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let lastSay = 0
  let last = 'no answer yet'
  say(`waiting until ${url} reports commit ${commit} before joining`)
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(3000) })
      const status = await res.json() as { highestExecuted?: number }
      const h = status.highestExecuted ?? -1
      if (h >= commit) {
        say(`${url} is at commit ${h}: joining`)
        return
      }
      last = `at commit ${h}`
    } catch (err: any) {
      last = err?.message ?? String(err)
    }
    if (Date.now() - lastSay > 10_000) {
      lastSay = Date.now()
      say(`still waiting for commit ${commit} (${last})`)
    }
    await new Promise(resolve => setTimeout(resolve, 1000))
  }
  throw new Error(`${url} did not reach commit ${commit} within ${timeoutMs} ms (${last})`)
}

/** Polls the archive at `url` until its manifest lists commits up to `commit` at least. */
async function waitForArchive (url: string, commit: number, config: SomaConfig, timeoutMs: number): Promise<void> {
  const { openArchiveSource } = await import('../src/archive/source.ts')
  const { MANIFEST_NAME } = await import('../src/archive/format.ts')
  const deadline = Date.now() + timeoutMs
  let lastSay = 0
  let last = 'no answer yet'
  say(`waiting until the archive ${url} holds commit ${commit} before joining`)
  while (Date.now() < deadline) {
    let source: Awaited<ReturnType<typeof openArchiveSource>> | undefined
    try {
      source = await openArchiveSource(url, { endpoint: config.archiveS3Endpoint, region: config.archiveS3Region })
      const bytes = await source.readAll(MANIFEST_NAME, { signal: AbortSignal.timeout(5000), maxBytes: 64 * 1024 * 1024 })
      const h = Number((JSON.parse(Buffer.from(bytes).toString('utf8')) as { highestCommit?: unknown }).highestCommit)
      if (h >= commit) {
        say(`the archive ${url} holds commits 1..${h}: joining`)
        return
      }
      last = `its manifest lists commits 1..${h}`
    } catch (err: any) {
      last = err?.message ?? String(err)
    } finally {
      source?.close?.()
    }
    if (Date.now() - lastSay > 10_000) {
      lastSay = Date.now()
      say(`still waiting for the archive to hold commit ${commit} (${last})`)
    }
    await new Promise(resolve => setTimeout(resolve, 2000))
  }
  throw new Error(`the archive ${url} did not hold commit ${commit} within ${timeoutMs} ms (${last})`)
}

/** Runs `soma-sync devnet` but keeps it serving after --max-commits; returns the exit code. */
async function devnetKeepServing (args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { config, help } = loadConfig({ argv: args, env, command: 'devnet' })
  if (help) {
    const { main } = await import('../src/cli/main.ts')
    return await main(['devnet', '--help'], env)
  }
  const { startDevnet } = await import('../src/devnet/devnet-node.ts')
  const devnet = await startDevnet(config)
  let failed = false
  devnet.done.then(
    () => { say(`--max-commits ${config.maxCommits} reached: still serving the chain (SOMA_TESTNET_KEEP_SERVING)`) },
    () => { failed = true; process.kill(process.pid, 'SIGTERM') }
  )
  await new Promise<void>(resolve => {
    let signals = 0
    const onSignal = (sig: NodeJS.Signals): void => {
      if (++signals > 1) process.exit(130)
      say(`${sig}: shutting down`)
      resolve()
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  await devnet.stop()
  return failed ? 1 : 0
}

export async function nodeInit (argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [command, ...rest] = argv
  const { config } = loadConfig({ env })
  const dataDir = dataDirOf(rest, config)

  if (env.SOMA_TESTNET_EXIT_ON_STDIN_EOF === '1') {
    const stop = (): void => { process.kill(process.pid, 'SIGTERM') }
    process.stdin.on('end', stop)
    process.stdin.on('error', stop)
    process.stdin.resume()
  }

  const seed = env.SOMA_TESTNET_PEER_KEY_SEED
  if (seed !== undefined && seed !== '') {
    const id = await writeTestnetPeerKey(dataDir, seed)
    say(`peer id ${id} (key derived from ${JSON.stringify(seed)})`)
  }

  if (env.SOMA_TESTNET_MAKE_GENESIS === '1') {
    const bundle = createGenesis({ seed: config.devnetSeed, validators: config.validators, accounts: config.accounts, initialBalance: config.initialBalance, embeddingDim: config.embeddingDim })
    let existing: Uint8Array | undefined
    try {
      existing = new Uint8Array(readFileSync(genesisPath(dataDir)))
    } catch {}
    if (existing === undefined) {
      writeGenesisFile(dataDir, bundle)
      say(`wrote ${genesisPath(dataDir)} (devnet seed ${JSON.stringify(config.devnetSeed)}, ${config.validators} validators, ${config.accounts} accounts)`)
    } else if (Buffer.compare(existing, bundle.bytes) !== 0) {
      throw new Error(`${genesisPath(dataDir)} is another chain's genesis than the devnet parameters in the environment describe: use an empty data dir`)
    }
  }

  const joinUrl = env.SOMA_TESTNET_JOIN_STATUS_URL
  const joinAfter = env.SOMA_TESTNET_JOIN_AFTER_COMMIT
  if (joinUrl !== undefined && joinUrl !== '' && joinAfter !== undefined && joinAfter !== '') {
    if (!/^\d+$/.test(joinAfter)) throw new Error(`SOMA_TESTNET_JOIN_AFTER_COMMIT: ${JSON.stringify(joinAfter)} is not a commit index`)
    await waitForCommit(joinUrl, Number(joinAfter), parseDuration(env.SOMA_TESTNET_JOIN_TIMEOUT, 600_000))
  }

  const archiveUrl = env.SOMA_TESTNET_JOIN_ARCHIVE_URL
  const archiveCommit = env.SOMA_TESTNET_JOIN_ARCHIVE_COMMIT
  if (archiveUrl !== undefined && archiveUrl !== '' && archiveCommit !== undefined && archiveCommit !== '') {
    if (!/^\d+$/.test(archiveCommit)) throw new Error(`SOMA_TESTNET_JOIN_ARCHIVE_COMMIT: ${JSON.stringify(archiveCommit)} is not a commit index`)
    await waitForArchive(archiveUrl, Number(archiveCommit), config, parseDuration(env.SOMA_TESTNET_JOIN_TIMEOUT, 600_000))
  }

  if (command === 'devnet' && env.SOMA_TESTNET_KEEP_SERVING === '1') return await devnetKeepServing(rest, env)
  const { main } = await import('../src/cli/main.ts')
  return await main(argv, env)
}

if (import.meta.main) {
  nodeInit(process.argv.slice(2)).then(code => process.exit(code), err => {
    say(`error: ${err?.message ?? String(err)}`)
    process.exit(1)
  })
}
