/**
 * The node's leveled logger: one logger for the whole node, with components (`node`, `node:commit-sync`,
 * `node:rpc`, …) and levels. Each message is one line:
 * - text (the default): `<ISO time> <LEVEL> [<component>] <message>`;
 * - json (`--log-format json`, for log shippers): `{"time":"…","level":"info","component":"…","msg":"…"}`.
 * Lines go to a LogOutput: stderr by default (stdout stays free for command output such as `keygen`'s
 * peer id or `config --print`'s JSON), or a file (`--log-file`). Messages below the logger's level
 * (config.logLevel) are dropped. `%p` (libp2p's peer id placeholder) is written like `%s`, so messages
 * read the same as libp2p's debug logs.
 *
 * The stderr output also owns the live progress line of a terminal: `progress(line)` redraws it in place,
 * and every log line clears it first and redraws it after, so a log line never glues to it.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs'
import path from 'node:path'
import { format } from 'node:util'

export type LogLevel = 'error' | 'warn' | 'info' | 'debug'

export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug']

export type LogFormat = 'text' | 'json'

export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']

export interface Logger {
  readonly component: string
  readonly level: LogLevel
  error: (message: string, ...args: unknown[]) => void
  warn: (message: string, ...args: unknown[]) => void
  info: (message: string, ...args: unknown[]) => void
  debug: (message: string, ...args: unknown[]) => void
  /** true when messages of `level` are written (to skip building expensive debug output) */
  enabled: (level: LogLevel) => boolean
  /** a logger for a sub-component (`parent:name`) with the same level, format and output */
  child: (name: string) => Logger
  /** where its lines go */
  readonly output?: LogOutput
}

/**
 * Where log lines go. `line(text)` writes one complete line (with its newline). On a terminal the
 * output can also hold a progress line at the bottom: `progress(text)` redraws it, `clearProgress()`
 * removes it; log lines are written above it.
 */
export class LogOutput {
  private readonly writeRaw: (s: string) => void
  private readonly fd?: number
  /** whether this output can redraw a line in place (a terminal) */
  readonly tty: boolean
  private shown = ''

  constructor (opts: { write?: (s: string) => void, file?: string, tty?: boolean } = {}) {
    if (opts.file !== undefined) {
      mkdirSync(path.dirname(path.resolve(opts.file)), { recursive: true })
      const fd = openSync(opts.file, 'a')
      this.fd = fd
      // synchronous appends: the line is in the file even if the process is killed right after
      this.writeRaw = s => { writeSync(fd, s) }
      this.tty = false
    } else {
      this.writeRaw = opts.write ?? (s => { process.stderr.write(s) })
      this.tty = opts.tty ?? (opts.write === undefined && process.stderr.isTTY === true)
    }
  }

  /** Writes a log line (ending in '\n'), above the progress line if one is shown. */
  line (text: string): void {
    if (this.shown !== '') this.writeRaw(`\r\x1b[2K${text}${this.shown}`)
    else this.writeRaw(text)
  }

  /** Shows `text` as the progress line (a terminal only: redrawn in place). */
  progress (text: string): void {
    if (!this.tty) return
    this.shown = text
    this.writeRaw(`\r\x1b[2K${text}`)
  }

  /** Removes the progress line (the cursor stays at the start of an empty line). */
  clearProgress (): void {
    if (this.shown === '') return
    this.shown = ''
    this.writeRaw('\r\x1b[2K')
  }

  /** Closes a file output. */
  close (): void {
    if (this.fd !== undefined) closeSync(this.fd)
  }
}

let stderrOutput: LogOutput | undefined

/** The process's stderr output, shared by every logger that names no other (and by the progress line). */
export function stderrLogOutput (): LogOutput {
  stderrOutput ??= new LogOutput()
  return stderrOutput
}

export interface LoggerOptions {
  /** @default 'info' */
  level?: string
  /** @default 'text' */
  format?: string
  /** where lines go. @default the shared stderr output (stderrLogOutput()) */
  output?: LogOutput
  /** shorthand for `output: new LogOutput({ write })` (tests) */
  write?: (line: string) => void
}

function rank (level: string): number {
  const i = LOG_LEVELS.indexOf(level as LogLevel)
  if (i < 0) throw new RangeError(`unknown log level ${JSON.stringify(level)} (one of ${LOG_LEVELS.join(', ')})`)
  return i
}

/** One formatted line (with its newline). */
export function formatLogLine (fmt: LogFormat, level: LogLevel, component: string, message: string, time = new Date()): string {
  if (fmt === 'json') return JSON.stringify({ time: time.toISOString(), level, component, msg: message }) + '\n'
  return `${time.toISOString()} ${level.toUpperCase().padEnd(5)} [${component}] ${message}\n`
}

/** Creates a logger for `component`, e.g. `createLogger('node', { level: config.logLevel, format: config.logFormat })`. */
export function createLogger (component: string, opts: LoggerOptions = {}): Logger {
  const level = (opts.level ?? 'info') as LogLevel
  const max = rank(level)
  const fmt = (opts.format ?? 'text') as LogFormat
  if (!LOG_FORMATS.includes(fmt)) throw new RangeError(`unknown log format ${JSON.stringify(fmt)} (one of ${LOG_FORMATS.join(', ')})`)
  const output = opts.output ?? (opts.write !== undefined ? new LogOutput({ write: opts.write }) : stderrLogOutput())
  const emit = (l: LogLevel, message: string, args: unknown[]): void => {
    if (rank(l) > max) return
    output.line(formatLogLine(fmt, l, component, format(message.replaceAll('%p', '%s'), ...args)))
  }
  return {
    component,
    level,
    error: (m, ...a) => { emit('error', m, a) },
    warn: (m, ...a) => { emit('warn', m, a) },
    info: (m, ...a) => { emit('info', m, a) },
    debug: (m, ...a) => { emit('debug', m, a) },
    enabled: l => rank(l) <= max,
    child: name => createLogger(`${component}:${name}`, { level, format: fmt, output }),
    output
  }
}

/** A logger that drops everything (the default for library use and tests). */
export function silentLogger (component = 'soma'): Logger {
  return createLogger(component, { level: 'error', write: () => {} })
}
