/**
 * scripts/testnet: the testnet of testnet/topology.ts (the same as docker-compose.yml) without Docker,
 * as processes from this checkout, each node in its own network namespace (testnet/driver.ts).
 *
 *   scripts/testnet up [options]     start it and keep it running; commands on stdin (type `help`)
 *   scripts/testnet check [options]  start it, wait until every node has the producer's state root at its
 *                                    last commit (and the bucket node shows its finished archive fast
 *                                    sync with spot checks), print the table, tear down; exit 0 when so
 *   scripts/testnet cleanup          remove namespaces and links left by killed runs
 *   scripts/testnet deps             install what it needs (iproute2, iptables) with apt-get
 *
 * Options: --loss <pct>  --delay <ms>  --rate <tc rate, e.g. 1mbit>  (on every node)
 *          --max-commits <n> (the producer stops there and keeps serving; `check` default 300, `up` 0 = never)
 *          --round-interval <duration>  --timeout <duration> (check, default 300s)
 *          --loopback (no namespaces)  --snapshot-sync (the late joiner gets --sync-mode snapshot)
 *          --work-dir <dir> (data and logs, kept)
 */
import { execFileSync } from 'node:child_process'
import { createInterface } from 'node:readline'
import { Convergence, archiveSyncEvidence } from '../testnet/converge.ts'
import { Testnet, cleanupStale, haveCommand, statusTable, type TestnetOptions } from '../testnet/driver.ts'
import { envName } from '../src/config.ts'

const USAGE = `usage: scripts/testnet up|check|cleanup|deps [--loss <pct>] [--delay <ms>] [--rate <rate>] [--max-commits <n>]
                      [--round-interval <duration>] [--timeout <duration>] [--loopback] [--snapshot-sync] [--work-dir <dir>]`

const COMMANDS = `commands (on stdin):
  status                          every node's commit, state root, peers, phase
  kill <node>                     SIGKILL it            restart <node>   start it again on its data
  stop <node>                     SIGTERM it            start <node>     start a stopped node
  loss <node|all> <pct>           drop pct% of the packets it receives (0: none)
  delay <node|all> <ms>           add ms each way to the connections it accepts
  rate <node|all> <rate|off>      limit what it sends (tc tbf), e.g. 1mbit
  partition <node>[,<node>...]    cut these off from the others       heal   undo partitions
  logs <node> [lines]             the end of its log
  quit                            tear everything down and exit`

interface Args { cmd: string, flags: Record<string, string | true> }

/** Flags with a value, and flags without; anything else is refused (a typo must not run a testnet without it). */
const VALUE_FLAGS = ['loss', 'delay', 'rate', 'max-commits', 'round-interval', 'timeout', 'work-dir']
const BOOLEAN_FLAGS = ['loopback', 'snapshot-sync', 'help']

/** Bad command-line input: exit status 2. */
class UsageError extends Error {}

function parseArgs (argv: string[]): Args {
  const [cmd = 'help', ...rest] = argv
  const flags: Record<string, string | true> = {}
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument ${a}\n${USAGE}`)
    const name = a.slice(2)
    if (BOOLEAN_FLAGS.includes(name)) flags[name] = true
    else if (!VALUE_FLAGS.includes(name)) throw new UsageError(`unknown option --${name} (options: ${[...VALUE_FLAGS, ...BOOLEAN_FLAGS].map(f => `--${f}`).join(' ')})\n${USAGE}`)
    else {
      const v = rest[++i]
      if (v === undefined || v.startsWith('--')) throw new UsageError(`--${name} needs a value`)
      flags[name] = v
    }
  }
  return { cmd, flags }
}

function ms (raw: string): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(raw)
  if (m === null) throw new Error(`${raw} is not a duration (e.g. 300s)`)
  return Number(m[1]) * (m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 1)
}

function say (line: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`)
}

async function bringUp (flags: Args['flags'], defaultMaxCommits: number): Promise<Testnet> {
  const maxCommits = flags['max-commits'] !== undefined ? String(flags['max-commits']) : String(defaultMaxCommits)
  const producerEnv: Record<string, string> = { [envName('maxCommits')]: maxCommits, SOMA_TESTNET_KEEP_SERVING: '1' }
  if (typeof flags['round-interval'] === 'string') producerEnv[envName('roundIntervalMs')] = flags['round-interval']
  const opts: TestnetOptions = {
    mode: flags.loopback === true ? 'loopback' : 'auto',
    snapshotSync: flags['snapshot-sync'] === true ? true : undefined,
    workDir: typeof flags['work-dir'] === 'string' ? flags['work-dir'] : undefined,
    nodeEnv: { devnet: producerEnv },
    log: say
  }
  const t = await Testnet.create(opts)
  say(`testnet ${t.id}: ${t.mode === 'netns' ? `network namespaces ${t.nodes.map(n => `${n.name}=${t.ip(n.name)}`).join(' ')}` : '127.0.0.1 ports'}; data and logs in ${t.workDir}`)
  try {
    if (typeof flags.loss === 'string') await t.setLoss('all', Number(flags.loss))
    if (typeof flags.delay === 'string') await t.setDelay('all', Number(flags.delay))
    if (typeof flags.rate === 'string') await t.setRate('all', flags.rate)
    await t.start()
  } catch (err) {
    await t.close()
    throw err
  }
  return t
}

async function check (flags: Args['flags']): Promise<number> {
  const t = await bringUp(flags, 300)
  const stop = (): void => { void t.close().then(() => process.exit(130)) }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  try {
    const target = Number(flags['max-commits'] ?? 300)
    const c = new Convergence('devnet', t.nodes.map(n => n.name))
    const deadline = Date.now() + ms(typeof flags.timeout === 'string' ? flags.timeout : '300s')
    let lastPrint = 0
    while (Date.now() < deadline) {
      const all = await t.statuses()
      for (const [n, s] of Object.entries(all)) c.observe(n, s)
      if (Date.now() - lastPrint > 10_000) { lastPrint = Date.now(); process.stdout.write(statusTable(all) + '\n') }
      if (c.diverged().length > 0) break
      if (c.converged(target)) break
      await new Promise(resolve => setTimeout(resolve, 500))
    }
    process.stdout.write('\n' + c.table() + '\n\n')
    let ok = c.converged(target)
    // a node that fast-syncs from an archive (the bucket node) must show it did, with spot checks
    for (const n of t.nodes.filter(x => x.archiveFrom !== undefined)) {
      const s = c.latest(n.name)
      const evidence = s === undefined || s instanceof Error ? undefined : archiveSyncEvidence(s)
      say(evidence !== undefined ? `${n.name}: ${evidence}` : `${n.name}: NO finished archive fast sync with spot checks in its /status`)
      if (evidence === undefined) ok = false
    }
    say(ok ? `converged: every node has the producer's state root at commit ${target}` : 'NOT converged')
    if (!ok) for (const n of t.nodes) process.stdout.write(`---- ${n.name} log (end)\n${t.logTail(n.name, 15)}\n`)
    return ok ? 0 : 1
  } finally {
    await t.close()
    say('torn down')
  }
}

async function up (flags: Args['flags']): Promise<number> {
  const t = await bringUp(flags, 0)
  say(`running; type \`help\` for commands, Ctrl-C or \`quit\` to tear down. /status of each node: \`status\``)
  let closing = false
  const finish = async (): Promise<void> => {
    if (closing) return
    closing = true
    await t.close()
    say('torn down')
  }
  const rl = createInterface({ input: process.stdin })
  let endUp = (): void => {}
  const done = new Promise<void>(resolve => {
    endUp = resolve
    process.once('SIGINT', () => { void finish().then(resolve) })
    process.once('SIGTERM', () => { void finish().then(resolve) })
    rl.on('close', () => {
      // Ctrl-D on a terminal tears down; the end of piped input leaves it running until a signal
      if (process.stdin.isTTY === true) void finish().then(resolve)
      else if (!closing) say('stdin ended: still running; SIGINT/SIGTERM (or Ctrl-C) tears it down')
    })
  })
  const ticker = setInterval(() => { void t.statuses().then(s => { if (!closing) process.stdout.write(statusTable(s) + '\n') }) }, 15_000)
  let queue: Promise<void> = Promise.resolve()
  rl.on('line', line => {
    const [cmd, a, b] = line.trim().split(/\s+/)
    const act = async (): Promise<void> => {
      switch (cmd) {
        case '': return
        case 'help': process.stdout.write(COMMANDS + '\n'); return
        case 'status': process.stdout.write(statusTable(await t.statuses()) + '\n'); return
        case 'kill': await t.kill(a); return
        case 'stop': await t.stop(a); return
        case 'start': await t.start([a]); return
        case 'restart': await t.restart(a); return
        case 'loss': await t.setLoss(a, Number(b)); return
        case 'delay': await t.setDelay(a, Number(b)); return
        case 'rate': await t.setRate(a, b === 'off' ? undefined : b); return
        case 'partition': await t.partition(a.split(',')); return
        case 'heal': await t.heal(); return
        case 'logs': process.stdout.write(t.logTail(a, Number(b ?? 30)) + '\n'); return
        case 'quit': case 'exit': await finish(); endUp(); return
        default: process.stdout.write(`unknown command ${cmd}\n${COMMANDS}\n`)
      }
    }
    // one command at a time, in the order typed
    queue = queue.then(act).catch(err => { process.stdout.write(`error: ${err.message}\n`) })
  })
  await done
  clearInterval(ticker)
  return 0
}

async function main (argv: string[]): Promise<number> {
  const { cmd, flags } = parseArgs(argv)
  switch (cmd) {
    case 'up': return await up(flags)
    case 'check': return await check(flags)
    case 'cleanup': {
      const n = await cleanupStale(say)
      say(n === 0 ? 'nothing to clean up' : `removed ${n} leftovers`)
      return 0
    }
    case 'deps': {
      const missing = [['ip', 'iproute2'], ['iptables', 'iptables'], ['tc', 'iproute2']].filter(([c]) => !haveCommand(c)).map(([, p]) => p)
      if (missing.length === 0) { say('iproute2 and iptables are installed'); return 0 }
      if (process.getuid?.() !== 0) {
        say(`${[...new Set(missing)].join(' ')} missing and not root: cannot install (the namespace testnet and its tests need root anyway)`)
        return 0
      }
      say(`installing ${[...new Set(missing)].join(' ')}`)
      execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', timeout: 300_000 })
      execFileSync('apt-get', ['install', '-y', '-qq', ...new Set(missing)], { stdio: 'inherit', timeout: 600_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
      return 0
    }
    default:
      process.stdout.write(`${USAGE}\n\n${COMMANDS}\n`)
      return cmd === 'help' || flags.help === true ? 0 : 2
  }
}

main(process.argv.slice(2)).then(code => process.exit(code), err => {
  process.stderr.write(`error: ${err?.message ?? String(err)}\n`)
  process.exit(err instanceof UsageError ? 2 : 1)
})
