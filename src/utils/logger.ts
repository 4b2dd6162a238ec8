/**
 * A tiny leveled logger: one line per message, `<ISO time> <LEVEL> [<component>] <message>`, to stderr
 * (stdout stays free for command output such as `keygen`'s peer id or `config --print`'s JSON).
 * Messages below the logger's level (config.logLevel) are dropped. `%p` (libp2p's peer id placeholder) is
 * written like `%s`, so messages read the same as libp2p's debug logs.
 */
import { format } from 'node:util'

export type LogLevel = 'error' | 'warn' | 'info' | 'debug'

export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug']

export interface Logger {
  readonly component: string
  readonly level: LogLevel
  error: (message: string, ...args: unknown[]) => void
  warn: (message: string, ...args: unknown[]) => void
  info: (message: string, ...args: unknown[]) => void
  debug: (message: string, ...args: unknown[]) => void
  /** true when messages of `level` are written (to skip building expensive debug output) */
  enabled: (level: LogLevel) => boolean
  /** a logger for a sub-component (`parent:name`) with the same level and sink */
  child: (name: string) => Logger
}

export interface LoggerOptions {
  /** @default 'info' */
  level?: string
  /** where lines go. @default process.stderr */
  write?: (line: string) => void
}

function rank (level: string): number {
  const i = LOG_LEVELS.indexOf(level as LogLevel)
  if (i < 0) throw new RangeError(`unknown log level ${JSON.stringify(level)} (one of ${LOG_LEVELS.join(', ')})`)
  return i
}

/** Creates a logger for `component`, e.g. `createLogger('node', { level: config.logLevel })`. */
export function createLogger (component: string, opts: LoggerOptions = {}): Logger {
  const level = (opts.level ?? 'info') as LogLevel
  const max = rank(level)
  const write = opts.write ?? ((line: string) => { process.stderr.write(line) })
  const emit = (l: LogLevel, message: string, args: unknown[]): void => {
    if (rank(l) > max) return
    write(`${new Date().toISOString()} ${l.toUpperCase().padEnd(5)} [${component}] ${format(message.replaceAll('%p', '%s'), ...args)}\n`)
  }
  return {
    component,
    level,
    error: (m, ...a) => { emit('error', m, a) },
    warn: (m, ...a) => { emit('warn', m, a) },
    info: (m, ...a) => { emit('info', m, a) },
    debug: (m, ...a) => { emit('debug', m, a) },
    enabled: l => rank(l) <= max,
    child: name => createLogger(`${component}:${name}`, { level, write })
  }
}

/** A logger that drops everything (the default for library use and tests). */
export function silentLogger (component = 'soma'): Logger {
  return createLogger(component, { level: 'error', write: () => {} })
}
