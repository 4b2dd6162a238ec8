/**
 * The namespace testnet: the topology of testnet/topology.ts (the one docker-compose.yml is made from)
 * as processes straight from the checkout, each node in its own network namespace on a bridge, with
 * faults: packet loss (iptables `statistic` match in the node's namespace), bandwidth (`tc tbf` on its
 * interface), latency (a user-space delay proxy in front of the node: this kernel has no netem),
 * SIGKILL and restart, partition and heal. scripts/testnet is its command line; test/e2e uses it.
 *
 * Layout (netns mode, needs root and `ip netns`):
 *
 *   bridge sst<id>br (no host address)
 *     ├─ namespace sst<id>-ctl     10.77.0.2   control agent: fetches the nodes' /status for the driver
 *     ├─ namespace sst<id>-devnet  10.77.0.10  delay proxy 10.77.0.10:7700 → node 127.0.0.1:7700, status :7780
 *     ├─ namespace sst<id>-full1   10.77.0.11  ...
 *     └─ ...
 *
 * The host has no address on the bridge, so everything the driver says to the nodes goes through the
 * control agent (testnet/ctl-agent.ts) over its stdin/stdout. Each namespace's INPUT chain jumps to
 * SOMA-PART (partition: drops from the other side's addresses) and SOMA-LOSS (random drops; the control
 * namespace is exempt, so /status stays readable). Nodes announce their proxy's address, so every
 * connection between two nodes passes the proxy of the node that accepted it.
 *
 * Where namespaces are not available (not root, no `ip`), the same nodes run on 127.0.0.1 ports
 * (loopback mode, with a message saying so): kill/restart and delay work, loss, bandwidth and
 * partitions do not (they throw FaultUnsupportedError).
 *
 * Every process the driver starts exits when the driver's end of its stdin closes; close() also kills
 * them, deletes the namespaces, the bridge and the temp dir.
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { createServer } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { asStatus, type NodeStatus } from './converge.ts'
export { archiveSyncEvidence, snapshotSyncEvidence } from './converge.ts'
import { ARCHIVE_HTTP_PORT, P2P_PORT, STATUS_PORT, launchSpecs, snapshotSyncOn, testnetNodes, type LaunchSpec, type Placement, type TestnetNode } from './topology.ts'
import { NODE_FLAGS, withNodeEnv } from '../src/node/runtime.ts'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const NODE_INIT = path.join(ROOT, 'testnet', 'node-init.ts')
const DELAY_PROXY = path.join(ROOT, 'testnet', 'delay-proxy.ts')
const CTL_AGENT = path.join(ROOT, 'testnet', 'ctl-agent.ts')

/** Prefix of every namespace and link the driver makes (scripts/testnet cleanup removes leftovers). */
export const NAME_PREFIX = 'sst'
/** The testnet subnet (inside the driver's own namespaces only: the host has no address on it). */
export const SUBNET = '10.77.0'
const CTL_IP = `${SUBNET}.2`

export type Mode = 'netns' | 'loopback'

export class FaultUnsupportedError extends Error {
  constructor (fault: string, reason: string) {
    super(`${fault} needs network namespaces, and this testnet runs on 127.0.0.1 (${reason})`)
    this.name = 'FaultUnsupportedError'
  }
}

export interface TestnetOptions {
  /** 'auto' (default): netns when available, else loopback */
  mode?: Mode | 'auto'
  /** @default testnetNodes() */
  nodes?: TestnetNode[]
  /** the late joiner snapshot-syncs. @default SOMA_TESTNET_SNAPSHOT_SYNC=1/0, else SNAPSHOT_SYNC of the topology */
  snapshotSync?: boolean | 'auto'
  /** SOMA_* environment added to every node (e.g. faster rounds) */
  env?: Record<string, string>
  /** SOMA_* environment added to one node, by name (e.g. { devnet: { SOMA_MAX_COMMITS: '300' } }) */
  nodeEnv?: Record<string, Record<string, string>>
  /** where data dirs and logs go; kept. @default a temp dir, removed by close() */
  workDir?: string
  /** progress messages. @default none */
  log?: (line: string) => void
}

interface Running {
  child: ChildProcess
  exited: Promise<number | null>
}

interface ProxyHandle extends Running {
  replies: string[]
  waiters: Array<(line: string) => void>
}

/** Whether namespaces can be used here; the reason when not. */
export function netnsAvailability (): { ok: true } | { ok: false, reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `${process.platform} has no network namespaces` }
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root' }
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5000 })
  } catch (err: any) {
    return { ok: false, reason: `\`ip netns\` does not work (${err.code === 'ENOENT' ? 'iproute2 is not installed' : err.message})` }
  }
  return { ok: true }
}

/** Whether `cmd` runs (`cmd -V` for ip and tc, else `cmd --version`). */
export function haveCommand (cmd: string): boolean {
  try {
    execFileSync(cmd, cmd === 'ip' || cmd === 'tc' ? ['-V'] : ['--version'], { stdio: 'ignore', timeout: 5000 })
    return true
  } catch {
    return false
  }
}

async function run (cmd: string, args: string[], timeoutMs = 15_000): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${(stderr || err.message).trim()}`))
      else resolve(stdout)
    })
  })
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => { typeof a === 'object' && a !== null ? resolve(a.port) : reject(new Error('no port')) })
    })
  })
}

function exitPromise (child: ChildProcess): Promise<number | null> {
  return new Promise(resolve => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode)
    else child.once('exit', code => { resolve(code) })
  })
}

/** Reads lines from a child's stdout into a callback. */
function onLines (child: ChildProcess, fn: (line: string) => void): void {
  let buf = ''
  child.stdout?.setEncoding('utf8')
  child.stdout?.on('data', (d: string) => {
    buf += d
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      fn(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
}

/** Environment of a child: this process's, without any SOMA_* (nodes get exactly their spec's). */
function baseEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SOMA_')) env[k] = v
  return env
}

const live = new Set<Testnet>()
let exitHookInstalled = false
function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // last resort when the process exits without close(): kill children, delete namespaces and bridge
  process.on('exit', () => { for (const t of live) t.closeSync() })
}

export class Testnet {
  readonly mode: Mode
  /** why namespaces are not used (loopback mode) */
  readonly fallbackReason?: string
  readonly id: string
  readonly nodes: readonly TestnetNode[]
  /** the late joiner snapshot-syncs */
  readonly snapshotSync: boolean
  readonly workDir: string
  private readonly ownWorkDir: boolean
  private readonly log: (line: string) => void
  private readonly specs = new Map<string, LaunchSpec>()
  private readonly ips = new Map<string, string>()
  private readonly ports = new Map<string, { p2p: number, internal: number, status: number, archive: number }>()
  private readonly procs = new Map<string, Running>()
  private readonly proxies = new Map<string, ProxyHandle>()
  private agent?: Running & { pending: Map<number, (reply: any) => void>, next: number }
  private readonly namespaces: string[] = []
  private readonly links: string[] = []
  private readonly extraEnv: Record<string, string>
  private readonly nodeEnv: Record<string, Record<string, string>>
  private closed = false

  private constructor (mode: Mode, fallbackReason: string | undefined, nodes: TestnetNode[], snapshotSync: boolean, opts: TestnetOptions) {
    this.mode = mode
    this.snapshotSync = snapshotSync
    this.fallbackReason = fallbackReason
    this.id = randomBytes(2).toString('hex')
    this.nodes = nodes
    this.ownWorkDir = opts.workDir === undefined
    this.workDir = opts.workDir ?? mkdtempSync(path.join(os.tmpdir(), 'soma-testnet-'))
    mkdirSync(this.workDir, { recursive: true })
    this.log = opts.log ?? (() => {})
    this.extraEnv = opts.env ?? {}
    this.nodeEnv = opts.nodeEnv ?? {}
  }

  /** Sets up namespaces (or ports), the control agent and the delay proxies; starts no node. */
  static async create (opts: TestnetOptions = {}): Promise<Testnet> {
    const fromEnv = process.env.SOMA_TESTNET_SNAPSHOT_SYNC
    const snapshotSync = opts.snapshotSync ?? (fromEnv === '1' ? true : fromEnv === '0' ? false : undefined)
    const nodes = opts.nodes ?? testnetNodes({ snapshotSync })
    let mode: Mode = opts.mode === 'loopback' ? 'loopback' : 'netns'
    let reason: string | undefined
    if (opts.mode !== 'loopback') {
      const a = netnsAvailability()
      if (!a.ok) {
        if (opts.mode === 'netns') throw new Error(`network namespaces are not available: ${a.reason}`)
        mode = 'loopback'
        reason = a.reason
      }
    } else {
      reason = 'loopback mode asked for'
    }
    const t = new Testnet(mode, reason, nodes, snapshotSyncOn({ snapshotSync }), opts)
    live.add(t)
    installExitHook()
    try {
      if (mode === 'loopback') {
        t.log(`network namespaces are not available (${reason ?? ''}): running the testnet on 127.0.0.1 ports; loss, bandwidth and partitions are not available`)
        await t.setUpLoopback()
      } else {
        await t.setUpNetns()
      }
      for (const spec of await launchSpecs(nodes, t.placement())) t.specs.set(spec.name, spec)
      for (const n of nodes) await t.startProxy(n.name)
    } catch (err) {
      await t.close()
      throw err
    }
    return t
  }

  // ---------------------------------------------------------------------------------- set-up

  private ns (name: string): string {
    return `${NAME_PREFIX}${this.id}-${name}`
  }

  /** The node's address on the bridge (netns mode). */
  ip (name: string): string {
    const ip = this.ips.get(name)
    if (ip === undefined) throw new Error(`no node ${name}`)
    return ip
  }

  private async setUpNetns (): Promise<void> {
    const bridge = `${NAME_PREFIX}${this.id}br`
    await run('ip', ['link', 'add', bridge, 'type', 'bridge'])
    this.links.push(bridge)
    // bridged frames must not go through the host's iptables (a FORWARD policy of DROP would eat them)
    await run('ip', ['link', 'set', bridge, 'type', 'bridge', 'nf_call_iptables', '0']).catch(() => {})
    await run('ip', ['link', 'set', bridge, 'up'])
    const attach = async (name: string, hostIf: string, ip: string): Promise<void> => {
      const ns = this.ns(name)
      await run('ip', ['netns', 'add', ns])
      this.namespaces.push(ns)
      await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', `${hostIf}p`, 'netns', ns])
      this.links.push(hostIf)
      await run('ip', ['link', 'set', hostIf, 'master', bridge, 'up'])
      const inNs = async (...args: string[]): Promise<string> => await run('ip', ['netns', 'exec', ns, ...args])
      await inNs('ip', 'link', 'set', `${hostIf}p`, 'name', 'eth0')
      await inNs('ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0')
      await inNs('ip', 'link', 'set', 'eth0', 'up')
      await inNs('ip', 'link', 'set', 'lo', 'up')
    }
    await attach('ctl', `${NAME_PREFIX}${this.id}c`, CTL_IP)
    const iptables = haveCommand('iptables')
    for (const [i, n] of this.nodes.entries()) {
      const ip = `${SUBNET}.${10 + i}`
      this.ips.set(n.name, ip)
      await attach(n.name, `${NAME_PREFIX}${this.id}n${i}`, ip)
      if (iptables) {
        const ns = this.ns(n.name)
        for (const chain of ['SOMA-PART', 'SOMA-LOSS']) {
          await run('ip', ['netns', 'exec', ns, 'iptables', '-N', chain])
          await run('ip', ['netns', 'exec', ns, 'iptables', '-A', 'INPUT', '-i', 'eth0', '-j', chain])
        }
      }
    }
    if (!iptables) this.log('iptables is not installed: packet loss and partitions are not available (scripts/testnet deps installs it)')
    // the control agent
    const child = spawn('ip', ['netns', 'exec', this.ns('ctl'), process.execPath, CTL_AGENT], { cwd: ROOT, env: baseEnv(), stdio: ['pipe', 'pipe', 'inherit'] })
    const agent = { child, exited: exitPromise(child), pending: new Map<number, (reply: any) => void>(), next: 1 }
    this.agent = agent
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('the control agent did not start')) }, 15_000)
      onLines(child, line => {
        let msg: any
        try { msg = JSON.parse(line) } catch { return }
        if (msg.ready === true) { clearTimeout(timer); resolve(); return }
        const cb = agent.pending.get(msg.id)
        if (cb !== undefined) { agent.pending.delete(msg.id); cb(msg) }
      })
      void agent.exited.then(code => { clearTimeout(timer); reject(new Error(`the control agent exited (${code})`)) })
    })
  }

  private async setUpLoopback (): Promise<void> {
    for (const n of this.nodes) {
      this.ports.set(n.name, { p2p: await freePort(), internal: await freePort(), status: await freePort(), archive: await freePort() })
    }
  }

  /** Where the nodes run (addresses, ports, data dirs): the topology's placement for this mode. */
  placement (): Placement {
    const dataDir = (name: string): string => path.join(this.workDir, name, 'data')
    if (this.mode === 'netns') {
      return {
        addr: name => `/ip4/${this.ip(name)}`,
        p2pPort: () => P2P_PORT,
        listen: () => [`/ip4/127.0.0.1/tcp/${P2P_PORT}`], // behind the delay proxy on the namespace's address
        announce: name => [`/ip4/${this.ip(name)}/tcp/${P2P_PORT}`],
        statusHost: () => '0.0.0.0',
        statusPort: () => STATUS_PORT,
        statusUrl: (_from, of) => `http://${this.ip(of)}:${STATUS_PORT}/status`,
        dataDir,
        archiveHttpPort: () => ARCHIVE_HTTP_PORT,
        archiveHttpUrl: (_from, of) => `http://${this.ip(of)}:${ARCHIVE_HTTP_PORT}`
      }
    }
    const port = (name: string): { p2p: number, internal: number, status: number, archive: number } => this.ports.get(name)!
    return {
      addr: () => '/ip4/127.0.0.1',
      p2pPort: name => port(name).p2p,
      listen: name => [`/ip4/127.0.0.1/tcp/${port(name).internal}`],
      announce: name => [`/ip4/127.0.0.1/tcp/${port(name).p2p}`],
      statusHost: () => '127.0.0.1',
      statusPort: name => port(name).status,
      statusUrl: (_from, of) => `http://127.0.0.1:${port(of).status}/status`,
      dataDir,
      archiveHttpPort: name => port(name).archive,
      archiveHttpUrl: (_from, of) => `http://127.0.0.1:${port(of).archive}`
    }
  }

  /** The node's /status URL (as reachable from the control agent, or from here in loopback mode). */
  statusUrl (name: string): string {
    return this.placement().statusUrl('ctl', name)
  }

  private spawnIn (name: string | undefined, args: string[], opts: { env?: NodeJS.ProcessEnv, stdout: 'pipe' | number, stderr: 'inherit' | number }): ChildProcess {
    const [cmd, argv] = this.mode === 'netns' && name !== undefined
      ? ['ip', ['netns', 'exec', this.ns(name), process.execPath, ...NODE_FLAGS, ...args]]
      : [process.execPath, [...NODE_FLAGS, ...args]]
    return spawn(cmd, argv, { cwd: ROOT, env: withNodeEnv(opts.env ?? baseEnv()), stdio: ['pipe', opts.stdout, opts.stderr] })
  }

  private async startProxy (name: string): Promise<void> {
    const [listen, target] = this.mode === 'netns'
      ? [`${this.ip(name)}:${P2P_PORT}`, `127.0.0.1:${P2P_PORT}`]
      : [`127.0.0.1:${this.ports.get(name)!.p2p}`, `127.0.0.1:${this.ports.get(name)!.internal}`]
    const log = openSync(path.join(this.nodeDir(name), 'proxy.log'), 'a')
    const child = this.spawnIn(name, [DELAY_PROXY, listen, target, '0'], { stdout: 'pipe', stderr: log })
    closeSync(log)
    const handle: ProxyHandle = { child, exited: exitPromise(child), replies: [], waiters: [] }
    this.proxies.set(name, handle)
    onLines(child, line => {
      const w = handle.waiters.shift()
      if (w !== undefined) w(line)
      else handle.replies.push(line)
    })
    const first = await this.proxyReply(name, 15_000)
    if (!first.startsWith('listening')) throw new Error(`delay proxy of ${name}: ${first}`)
  }

  private async proxyReply (name: string, timeoutMs = 5000): Promise<string> {
    const h = this.proxies.get(name)!
    const queued = h.replies.shift()
    if (queued !== undefined) return queued
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`delay proxy of ${name} does not answer (see ${path.join(this.nodeDir(name), 'proxy.log')})`)) }, timeoutMs)
      h.waiters.push(line => { clearTimeout(timer); resolve(line) })
      void h.exited.then(code => { clearTimeout(timer); reject(new Error(`delay proxy of ${name} exited (${code})`)) })
    })
  }

  private nodeDir (name: string): string {
    const dir = path.join(this.workDir, name)
    mkdirSync(dir, { recursive: true })
    return dir
  }

  /** The node's log file. */
  logFile (name: string): string {
    return path.join(this.nodeDir(name), 'node.log')
  }

  /** The last lines of a node's log. */
  logTail (name: string, lines = 30): string {
    if (!existsSync(this.logFile(name))) return ''
    return readFileSync(this.logFile(name), 'utf8').split('\n').slice(-lines - 1).join('\n')
  }

  /** How node `name` is launched (command and environment). */
  spec (name: string): LaunchSpec {
    const s = this.specs.get(name)
    if (s === undefined) throw new Error(`no node ${name} (nodes: ${this.nodes.map(n => n.name).join(', ')})`)
    return s
  }

  // ---------------------------------------------------------------------------------- nodes

  /** Starts nodes (all, by default, in topology order; the late joiner waits for its commit itself). */
  async start (names: readonly string[] = this.nodes.map(n => n.name)): Promise<void> {
    for (const name of names) {
      const spec = this.spec(name)
      if (this.running(name)) throw new Error(`${name} is already running`)
      const env: NodeJS.ProcessEnv = { ...baseEnv(), ...spec.env, ...this.extraEnv, ...this.nodeEnv[name], SOMA_TESTNET_EXIT_ON_STDIN_EOF: '1' }
      const logFile = this.logFile(name)
      const fd = openSync(logFile, 'a')
      writeSync(fd, `\n==== ${new Date().toISOString()} testnet: starting ${name}: soma-sync ${spec.command.join(' ')}\n`)
      const child = this.spawnIn(name, [NODE_INIT, ...spec.command], { env, stdout: fd, stderr: fd })
      closeSync(fd)
      this.procs.set(name, { child, exited: exitPromise(child) })
      this.log(`started ${name} (pid ${child.pid ?? '?'}, log ${logFile})`)
    }
  }

  running (name: string): boolean {
    const p = this.procs.get(name)
    return p !== undefined && p.child.exitCode === null && p.child.signalCode === null
  }

  /** Sends `signal` (default SIGKILL) to a node and waits until it has exited. */
  async kill (name: string, signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 20_000): Promise<void> {
    const p = this.procs.get(name)
    if (p === undefined || !this.running(name)) return
    p.child.kill(signal)
    const timer = setTimeout(() => { p.child.kill('SIGKILL') }, timeoutMs)
    await p.exited
    clearTimeout(timer)
    this.log(`${name} ${signal === 'SIGKILL' ? 'killed (SIGKILL)' : `stopped (${signal})`}`)
  }

  /** Stops a node gracefully (SIGTERM; SIGKILL after 20 s). */
  async stop (name: string): Promise<void> {
    await this.kill(name, 'SIGTERM')
  }

  /** Starts a stopped or killed node again, on its data dir. */
  async restart (name: string): Promise<void> {
    if (this.running(name)) await this.kill(name)
    await this.start([name])
  }

  // ---------------------------------------------------------------------------------- status

  /** GET a URL from where the nodes are (the control namespace, or here in loopback mode). */
  async get (url: string, timeoutMs = 3000): Promise<{ status: number, body: string }> {
    if (this.mode === 'loopback') {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
      return { status: res.status, body: await res.text() }
    }
    const agent = this.agent
    if (agent === undefined || agent.child.exitCode !== null) throw new Error('the control agent is not running')
    const id = agent.next++
    const reply = await new Promise<any>((resolve, reject) => {
      const timer = setTimeout(() => { agent.pending.delete(id); reject(new Error(`no answer for ${url}`)) }, timeoutMs + 2000)
      agent.pending.set(id, msg => { clearTimeout(timer); resolve(msg) })
      agent.child.stdin!.write(JSON.stringify({ id, url, timeoutMs }) + '\n')
    })
    if (reply.error !== undefined) throw new Error(`${url}: ${String(reply.error)}`)
    return { status: reply.status, body: reply.body }
  }

  /** A node's /status. */
  async status (name: string): Promise<NodeStatus> {
    const { status, body } = await this.get(this.statusUrl(name))
    if (status !== 200) throw new Error(`${name}: /status answered ${status}`)
    return asStatus(JSON.parse(body))
  }

  /** Every node's /status, or the error getting it. */
  async statuses (names: readonly string[] = this.nodes.map(n => n.name)): Promise<Record<string, NodeStatus | Error>> {
    const got = await Promise.all(names.map(async n => {
      try {
        return await this.status(n)
      } catch (err: any) {
        return err instanceof Error ? err : new Error(String(err))
      }
    }))
    return Object.fromEntries(names.map((n, i) => [n, got[i]])) // in the order asked
  }

  /** Polls `fn` every `intervalMs` until it returns a value other than undefined/false; throws after `timeoutMs`. */
  async waitFor<T> (what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, intervalMs = 250): Promise<T> {
    const deadline = Date.now() + timeoutMs
    let lastErr: unknown
    while (Date.now() < deadline) {
      try {
        const v = await fn()
        if (v !== undefined && v !== false) return v
      } catch (err) {
        lastErr = err
      }
      await new Promise(resolve => setTimeout(resolve, intervalMs))
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr !== undefined ? ` (last error: ${(lastErr as Error).message})` : ''}`)
  }

  /**
   * Waits until every node in `names` (default all) reports the producer's highestExecuted and state
   * root, with the producer at `atCommit` or beyond (e.g. its --max-commits). Returns the statuses.
   */
  async waitConverged (opts: { timeoutMs: number, names?: readonly string[], atCommit?: number }): Promise<Record<string, NodeStatus>> {
    const producer = this.nodes.find(n => n.role === 'devnet')!.name
    const names = opts.names ?? this.nodes.map(n => n.name)
    let last: Record<string, NodeStatus | Error> = {}
    try {
      return await this.waitFor('convergence', async () => {
        last = await this.statuses([producer, ...names.filter(n => n !== producer)])
        const p = last[producer]
        if (p instanceof Error || p.highestExecuted < (opts.atCommit ?? 0)) return undefined
        for (const n of names) {
          const s = last[n]
          if (s instanceof Error || s.chainId !== p.chainId || s.highestExecuted !== p.highestExecuted || s.stateRoot !== p.stateRoot) return undefined
        }
        return last as Record<string, NodeStatus>
      }, opts.timeoutMs, 500)
    } catch (err: any) {
      throw new Error(`${err.message}\n${statusTable(last)}`)
    }
  }

  // ---------------------------------------------------------------------------------- faults

  private targets (which: string | readonly string[]): string[] {
    const names = which === 'all' ? this.nodes.map(n => n.name) : typeof which === 'string' ? [which] : [...which]
    for (const n of names) this.spec(n)
    return names
  }

  private needNetns (fault: string): void {
    if (this.mode !== 'netns') throw new FaultUnsupportedError(fault, this.fallbackReason ?? 'loopback mode')
    if ((fault === 'packet loss' || fault === 'a partition') && !haveCommand('iptables')) throw new Error(`${fault} needs iptables: apt-get install iptables (or scripts/testnet deps)`)
  }

  private async inNs (name: string, ...args: string[]): Promise<string> {
    return await run('ip', ['netns', 'exec', this.ns(name), ...args])
  }

  /** Drops `percent`% of the packets arriving at the nodes (iptables statistic match; 0 removes it). */
  async setLoss (which: string | readonly string[], percent: number): Promise<void> {
    this.needNetns('packet loss')
    if (!(percent >= 0 && percent < 100)) throw new RangeError(`loss must be 0..100%, got ${percent}`)
    for (const n of this.targets(which)) {
      await this.inNs(n, 'iptables', '-F', 'SOMA-LOSS')
      if (percent > 0) {
        await this.inNs(n, 'iptables', '-A', 'SOMA-LOSS', '-s', CTL_IP, '-j', 'RETURN')
        await this.inNs(n, 'iptables', '-A', 'SOMA-LOSS', '-m', 'statistic', '--mode', 'random', '--probability', String(percent / 100), '-j', 'DROP')
      }
    }
    this.log(`packet loss ${percent}% on ${this.targets(which).join(', ')}`)
  }

  /** Limits the bandwidth the nodes send with (tc tbf, e.g. '1mbit'); undefined removes the limit. */
  async setRate (which: string | readonly string[], rate: string | undefined): Promise<void> {
    this.needNetns('a bandwidth limit')
    for (const n of this.targets(which)) {
      if (rate === undefined) await this.inNs(n, 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root').catch(() => {})
      else await this.inNs(n, 'tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '400ms')
    }
    this.log(`bandwidth ${rate ?? 'unlimited'} on ${this.targets(which).join(', ')}`)
  }

  /** Adds `ms` of latency each way to every connection the nodes accept (their delay proxies). */
  async setDelay (which: string | readonly string[], ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`delay must be >= 0 ms, got ${ms}`)
    for (const n of this.targets(which)) {
      this.proxies.get(n)!.child.stdin!.write(JSON.stringify({ delayMs: ms }) + '\n')
      const reply = await this.proxyReply(n)
      if (reply !== `delay ${ms}`) throw new Error(`delay proxy of ${n}: ${reply}`)
    }
    this.log(`delay ${ms} ms each way on ${this.targets(which).join(', ')}`)
  }

  /** Cuts `group` off from the other nodes (both ways; the control namespace still reaches all). */
  async partition (group: readonly string[]): Promise<void> {
    this.needNetns('a partition')
    const inside = new Set(this.targets(group))
    await this.heal(false)
    for (const n of this.nodes.map(x => x.name)) {
      const others = this.nodes.map(x => x.name).filter(o => inside.has(n) !== inside.has(o))
      for (const o of others) await this.inNs(n, 'iptables', '-A', 'SOMA-PART', '-s', this.ip(o), '-j', 'DROP')
    }
    this.log(`partition: ${[...inside].join(', ')} cut off from the rest`)
  }

  /** Removes every partition. */
  async heal (say = true): Promise<void> {
    this.needNetns('a partition')
    for (const n of this.nodes) await this.inNs(n.name, 'iptables', '-F', 'SOMA-PART')
    if (say) this.log('partitions healed')
  }

  // ---------------------------------------------------------------------------------- teardown

  /** Kills every process, deletes namespaces, links and (unless given) the work dir. Idempotent. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    const all: Running[] = [...this.procs.values(), ...this.proxies.values(), ...(this.agent !== undefined ? [this.agent] : [])]
    for (const p of all) {
      p.child.stdin?.destroy()
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
    }
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.all(all.map(async p => await p.exited)), new Promise(resolve => { timer = setTimeout(resolve, 10_000) })])
    clearTimeout(timer)
    for (const ns of this.namespaces) {
      // anything still in the namespace is ours
      const pids = await run('ip', ['netns', 'pids', ns]).catch(() => '')
      for (const pid of pids.split(/\s+/).filter(x => /^\d+$/.test(x))) {
        try { process.kill(Number(pid), 'SIGKILL') } catch {}
      }
      await run('ip', ['netns', 'del', ns]).catch(() => {})
    }
    for (const l of this.links) await run('ip', ['link', 'del', l]).catch(() => {})
    if (this.ownWorkDir) rmSync(this.workDir, { recursive: true, force: true, maxRetries: 3 })
    live.delete(this)
  }

  /** close() for process exit: synchronous, best effort. */
  closeSync (): void {
    if (this.closed) return
    this.closed = true
    for (const p of [...this.procs.values(), ...this.proxies.values(), ...(this.agent !== undefined ? [this.agent] : [])]) {
      try { p.child.kill('SIGKILL') } catch {}
    }
    for (const ns of this.namespaces) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5000 })
        for (const pid of pids.split(/\s+/).filter(x => /^\d+$/.test(x))) {
          try { process.kill(Number(pid), 'SIGKILL') } catch {}
        }
      } catch {}
      try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 }) } catch {}
    }
    for (const l of this.links) {
      try { execFileSync('ip', ['link', 'del', l], { stdio: 'ignore', timeout: 5000 }) } catch {}
    }
    if (this.ownWorkDir) {
      try { rmSync(this.workDir, { recursive: true, force: true }) } catch {}
    }
    live.delete(this)
  }
}

/** A table of statuses (for messages). */
export function statusTable (statuses: Record<string, NodeStatus | Error>): string {
  return Object.entries(statuses).map(([n, s]) => s instanceof Error
    ? `  ${n.padEnd(8)} unreachable: ${s.message}`
    : `  ${n.padEnd(8)} commit ${String(s.highestExecuted).padStart(5)} (synced ${s.highestSynced}, lowest ${s.lowestAvailable}) root ${s.stateRoot.slice(0, 16)} peers ${s.peers} ${s.phase}`).join('\n')
}

/** Removes namespaces and links of earlier driver runs that were not closed (killed drivers). */
export async function cleanupStale (log: (line: string) => void = () => {}): Promise<number> {
  let n = 0
  const re = new RegExp(`^${NAME_PREFIX}[0-9a-f]{4}`)
  const list = await run('ip', ['netns', 'list']).catch(() => '')
  for (const line of list.split('\n')) {
    const ns = line.split(' ')[0]
    if (ns === undefined || !re.test(ns)) continue
    const pids = await run('ip', ['netns', 'pids', ns]).catch(() => '')
    for (const pid of pids.split(/\s+/).filter(x => /^\d+$/.test(x))) {
      try { process.kill(Number(pid), 'SIGKILL') } catch {}
    }
    await run('ip', ['netns', 'del', ns]).catch(() => {})
    log(`deleted namespace ${ns}`)
    n++
  }
  const links = await run('ip', ['-o', 'link', 'show']).catch(() => '')
  for (const line of links.split('\n')) {
    const name = /^\d+:\s+([^:@]+)/.exec(line)?.[1]
    if (name === undefined || !re.test(name)) continue
    await run('ip', ['link', 'del', name]).catch(() => {})
    log(`deleted link ${name}`)
    n++
  }
  return n
}
