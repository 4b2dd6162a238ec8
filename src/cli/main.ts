/**
 * The `soma-sync` command line: `soma-sync <command> [options]`.
 *
 * Options come from the one config object (src/config.ts): every command's `--help` lists its options
 * with their environment variables and defaults. Exit codes: 0 success, 1 runtime error, 2 invalid
 * input (unknown command or option, bad value, unreadable config file), 130 on a second Ctrl-C.
 * Heavy modules (libp2p, LevelDB) load only for the commands that need them.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { envName, flagName, helpText, loadConfig, OPTIONS, type Command, type SomaConfig } from '../config.ts'
import { ConfigError, FatalNodeError } from '../errors.ts'
import { createLogger, LogOutput, type Logger } from '../utils/logger.ts'
import { VERSION } from '../version.ts'
import { SNAPSHOT_USAGE, SNAPSHOT_DESCRIPTION, snapshotHelp } from './snapshot.ts'
import { ARCHIVE_USAGE, ARCHIVE_DESCRIPTION, archiveHelp } from './archive-help.ts'

/** A long-running command: stop() ends it; `done` (optional) resolves when it finishes by itself. */
interface Running {
  stop: () => Promise<void>
  done?: Promise<void>
}

interface CommandDef {
  /** one line for the command list */
  summary: string
  usage: string
  description: string
  /** whose options it takes (for --help and flag checks); 'all' for every option */
  options: Command | 'all'
  /** extra arguments it accepts besides the options */
  extraFlags?: string[]
  /** extra `--flag <value>` (or `--flag=value`) arguments it accepts besides the options */
  takesValues?: string[]
  /** takes positional arguments (a subcommand and its arguments) */
  positionals?: boolean
  /** help text, when not derived from usage/description/options alone */
  help?: () => string
  /** returns an exit code, or a running service to wait for */
  run: (config: SomaConfig, log: Logger, env: NodeJS.ProcessEnv, positionals: string[], extra: Record<string, string>) => Promise<number | Running>
}

const COMMANDS: Record<string, CommandDef> = {
  start: {
    summary: 'run a full node: join a chain through entrypoints and commit-sync to its tip',
    usage: 'soma-sync start --genesis-file <file> --entrypoints <multiaddr> [options]',
    description: 'Runs a full node: opens the store in <data-dir>/chain (genesis from --genesis-file or <data-dir>/genesis.pb),\njoins the network through --entrypoints and reaches the tip. With --sync-mode snapshot (the default for an\nempty data dir) it first syncs the newest snapshot attested by 2f+1 of its epoch\'s committee (committees\nlearned from genesis, filter, listing and every chunk verified, chunks fetched in parallel from every peer\nserving it, state root checked), then commit-syncs from the snapshot\'s commit (verifying every commit, block\nand transaction) and executes what it syncs; serves the sync and snapshot protocols to others, and /status,\n/metrics and /health. On a terminal it shows progress (snapshot: chunks, bytes, MB/s, peers, ETA; then\ncommit, commits/s, peers, ETA). Resumes where it stopped, a snapshot download included. Stop with Ctrl-C.',
    options: 'start',
    run: async (config, log) => {
      const { runStart } = await import('./start.ts')
      const handle = await runStart(config, { logger: log })
      return { stop: handle.stop, done: handle.failed } // failed: --exit-on-fatal
    }
  },
  devnet: {
    summary: 'produce a local devnet chain (writes <data-dir>/genesis.pb)',
    usage: 'soma-sync devnet [options]',
    description: 'Creates a devnet chain in --data-dir (or resumes the one there), writes <data-dir>/genesis.pb, and produces\ncommits with a simulated committee until Ctrl-C, or until --max-commits is reached (then exits 0).',
    options: 'devnet',
    run: async (config, log) => {
      const { startDevnet } = await import('../devnet/devnet-node.ts')
      const devnet = await startDevnet(config, { logger: log })
      return { stop: devnet.stop, done: devnet.done } // done: --max-commits reached
    }
  },
  demo: {
    summary: 'a local devnet and a full node joining it, in one process (npm start)',
    usage: 'soma-sync demo [options]',
    description: 'Starts a devnet on --listen (default 127.0.0.1:7700, status port 7780) and a full node on the next ports\n(7701, 7781) whose entrypoint is the devnet. Data goes to temp dirs removed on exit (or to <data-dir>/devnet\nand <data-dir>/node if --data-dir is given). Runs until Ctrl-C, or for SOMA_DEMO_DURATION_MS milliseconds.',
    options: 'demo',
    run: async (config, _log, env) => {
      const raw = env.SOMA_DEMO_DURATION_MS
      let durationMs = 0
      if (raw !== undefined && raw !== '') {
        if (!/^\d+$/.test(raw)) throw new ConfigError(`environment SOMA_DEMO_DURATION_MS: ${JSON.stringify(raw)} is not a number of milliseconds`)
        durationMs = Number(raw)
      }
      const { runDemo } = await import('./demo.ts')
      const demo = await runDemo(config, { logger: _log })
      const done = Promise.race([demo.node.failed, durationMs > 0 ? new Promise<void>(resolve => setTimeout(resolve, durationMs)) : new Promise<void>(() => {})])
      return { stop: demo.stop, done }
    }
  },
  keygen: {
    summary: 'create <data-dir>/peer.key if missing; print the peer id',
    usage: 'soma-sync keygen [--data-dir <dir>]',
    description: 'Creates the node identity <data-dir>/peer.key (Ed25519, mode 0600) unless it exists, and prints its peer id.',
    options: 'keygen',
    run: async (config, log) => {
      const { loadOrCreatePeerKey } = await import('../node/peer-key.ts')
      const key = await loadOrCreatePeerKey(config.dataDir)
      log.info(key.created ? 'created %s' : '%s exists, kept', key.file)
      process.stdout.write(key.peerId.toString() + '\n')
      return 0
    }
  },
  snapshot: {
    summary: 'create, list, inspect or verify state snapshots in a data dir',
    usage: SNAPSHOT_USAGE,
    description: SNAPSHOT_DESCRIPTION,
    options: 'snapshot',
    positionals: true,
    help: snapshotHelp,
    run: async (config, _log, _env, positionals) => {
      const { runSnapshotCommand } = await import('./snapshot.ts')
      return await runSnapshotCommand(positionals, config)
    }
  },
  archive: {
    summary: 'export, verify or list history archives (segment files for a bucket)',
    usage: ARCHIVE_USAGE,
    description: ARCHIVE_DESCRIPTION,
    options: 'archive',
    positionals: true,
    help: archiveHelp,
    run: async (config, _log, _env, positionals) => {
      const { runArchiveCommand } = await import('./archive.ts')
      return await runArchiveCommand(positionals, config)
    }
  },
  status: {
    summary: 'print a running node\'s status (its /status, pretty): phase, progress, why it waits, peers',
    usage: 'soma-sync status [--url http://127.0.0.1:7780] [--json]',
    description: 'Reads GET <url>/status of a running node (default http://<status-host>:<status-port>, i.e. http://127.0.0.1:7780)\nand prints it for a person: phase, health, progress towards the target, why the node waits (with the evidence),\neach peer (address, height, lowest available, RTT, score, ban), last commit time, version, uptime. --json prints\nthe raw JSON. Exit status: 0 healthy (200), 1 syncing (206) or stuck (503), 2 bad input, 4 node unreachable.',
    options: 'status',
    takesValues: ['--url'],
    extraFlags: ['--json'],
    run: async (config, _log, _env, _positionals, extra) => {
      const { runStatusCommand } = await import('./status.ts')
      return await runStatusCommand(config, { url: extra['--url'], json: extra['--json'] !== undefined })
    }
  },
  config: {
    summary: 'print the effective configuration as JSON (config --print)',
    usage: 'soma-sync config --print [options]',
    description: 'Prints the configuration that the given --config file, SOMA_* environment and flags produce, as JSON.\nAccepts every option of every command.',
    options: 'all',
    extraFlags: ['--print'],
    run: async (config) => {
      process.stdout.write(JSON.stringify(config, null, 2) + '\n')
      return 0
    }
  }
}

/** The commands, in help order. */
export const COMMAND_NAMES: readonly string[] = Object.keys(COMMANDS)

/** Help of the command list. */
export function mainHelp (): string {
  const width = Math.max(...Object.keys(COMMANDS).map(c => c.length))
  return [
    'Usage: soma-sync <command> [options]',
    '',
    'libp2p state-sync node for the Soma blockchain.',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    `  ${'help'.padEnd(width)}  this text; \`soma-sync help <command>\` or \`soma-sync <command> --help\` for its options`,
    '',
    'Options are flags, SOMA_* environment variables or a JSON --config file; precedence:',
    'defaults < --config file < environment < flags.'
  ].join('\n')
}

/** --help of one command, derived from OPTIONS. */
export function commandHelp (name: string): string {
  const c = COMMANDS[name]
  if (c.help !== undefined) return c.help()
  if (c.options !== 'all') return helpText(c.options, c.usage, c.description)
  const lines = [`Usage: ${c.usage}`, '', c.description, '', 'Options (see `soma-sync <command> --help` for their documentation and defaults):',
    '  --config <file>  (env SOMA_CONFIG)']
  for (const o of OPTIONS) lines.push(`  --${flagName(o.key)}  (env ${envName(o.key)})`)
  return lines.join('\n')
}

/** Rejects positionals and flags that are not options of the command (loadConfig takes any option). */
function checkArgs (name: string, def: CommandDef, argv: string[], positionals: string[]): void {
  if (positionals.length > 0 && def.positionals !== true) throw new ConfigError(`unexpected argument ${JSON.stringify(positionals[0])} for \`${name}\` (see soma-sync ${name} --help)`)
  if (def.options === 'all') return
  const command = def.options
  for (const a of argv) {
    if (!a.startsWith('--') || a === '--help' || a === '--config' || a.startsWith('--config=')) continue
    let flag = a.slice(2).split('=')[0]
    if (flag.startsWith('no-') && OPTIONS.some(o => o.type === 'bool' && flagName(o.key) === flag.slice(3))) flag = flag.slice(3)
    const spec = OPTIONS.find(o => flagName(o.key) === flag)
    if (spec !== undefined && !spec.commands.includes(command)) throw new ConfigError(`option --${flag} does not apply to \`${name}\` (see soma-sync ${name} --help)`)
  }
}

/** Waits until `running` finishes by itself, or SIGINT/SIGTERM; then stops it. Returns the exit code. */
async function runUntilSignal (running: Running, log: Logger): Promise<number> {
  let onSignal!: (sig: NodeJS.Signals) => void
  const signalled = new Promise<NodeJS.Signals>(resolve => { onSignal = resolve })
  let stopping = false
  const handler = (sig: NodeJS.Signals): void => {
    if (stopping) {
      log.warn('%s while shutting down: exiting without a clean shutdown', sig)
      process.exit(130)
    }
    stopping = true
    onSignal(sig)
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  let code = 0
  try {
    const outcome = await Promise.race([
      signalled.then(sig => `${sig}`),
      (running.done ?? new Promise<void>(() => {})).then(() => 'done')
    ])
    if (outcome !== 'done') log.info('%s: shutting down (again to force)', outcome)
  } catch (err: any) {
    log.error('%s', err?.message ?? err)
    code = err instanceof FatalNodeError ? EXIT_FATAL : 1
  }
  stopping = true
  await running.stop()
  log.info('stopped')
  process.off('SIGINT', handler)
  process.off('SIGTERM', handler)
  return code
}

/** Exit status when the node failed (--exit-on-fatal): the executor or a store write (ENOSPC, EIO). */
export const EXIT_FATAL = 3

/** Takes a command's extra flags out of argv: `--json`, `--url <u>`/`--url=<u>`. */
function takeExtra (def: CommandDef, argv: string[]): { args: string[], extra: Record<string, string> } {
  const args: string[] = []
  const extra: Record<string, string> = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const name = a.split('=')[0]
    if ((def.extraFlags ?? []).includes(a)) { extra[a] = ''; continue }
    if ((def.takesValues ?? []).includes(name)) {
      const v = a.includes('=') ? a.slice(name.length + 1) : argv[++i]
      if (v === undefined || v === '') throw new ConfigError(`${name} needs a value`)
      extra[name] = v
      continue
    }
    args.push(a)
  }
  return { args, extra }
}

/** Runs the CLI with `argv` (arguments after `soma-sync`); returns the exit code. */
export async function main (argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let log = createLogger('soma-sync', { level: 'info' })
  let output: LogOutput | undefined
  try {
    const [first, ...rest] = argv
    if (first === undefined) {
      process.stderr.write(mainHelp() + '\n')
      return 2
    }
    if (first === '--version' || first === '-V' || first === 'version') {
      process.stdout.write(`soma-sync ${VERSION} (node ${process.version})\n`)
      return 0
    }
    if (first === 'help' || first === '--help' || first === '-h') {
      const topic = rest[0]
      if (topic === undefined) process.stdout.write(mainHelp() + '\n')
      else if (Object.hasOwn(COMMANDS, topic)) process.stdout.write(commandHelp(topic) + '\n')
      else throw new ConfigError(`unknown command ${JSON.stringify(topic)} (commands: ${Object.keys(COMMANDS).join(', ')}, help)`)
      return 0
    }
    if (!Object.hasOwn(COMMANDS, first)) {
      throw new ConfigError(`unknown command ${JSON.stringify(first)} (commands: ${Object.keys(COMMANDS).join(', ')}, help)`)
    }
    const def = COMMANDS[first]
    const { args, extra } = takeExtra(def, rest)
    const { config, positionals, help } = loadConfig({ argv: args, env, command: def.options === 'all' ? undefined : def.options })
    if (help) {
      process.stdout.write(commandHelp(first) + '\n')
      return 0
    }
    checkArgs(first, def, args, positionals)
    output = config.logFile !== '' ? new LogOutput({ file: config.logFile }) : undefined
    log = createLogger(first, { level: config.logLevel, format: config.logFormat, output })
    const result = await def.run(config, log, env, positionals, extra)
    return typeof result === 'number' ? result : await runUntilSignal(result, log)
  } catch (err: any) {
    if (err instanceof ConfigError) {
      process.stderr.write(`error: ${err.message}\n`)
      return 2
    }
    process.stderr.write(`error: ${err?.message ?? String(err)}\n`)
    if (log.enabled('debug') && err?.stack !== undefined) process.stderr.write(err.stack + '\n')
    return 1
  } finally {
    output?.close()
  }
}

function isEntryPoint (): boolean {
  if (import.meta.main !== undefined) return import.meta.main
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(code => process.exit(code), err => {
    process.stderr.write(`error: ${err?.message ?? String(err)}\n`)
    process.exit(1)
  })
}
