/**
 * Keeps a libp2p node connected to its trusted entrypoints: dials each one that is not connected now and
 * every `intervalMs` after (libp2p's bootstrap discovery dials once only, so an entrypoint that restarts
 * or was unreachable at start would stay unconnected). What SomaNode runs; exported for embedders.
 */
import type { Connection, Libp2p } from '@libp2p/interface'
import { parseEntrypoints, type Entrypoint } from './libp2p.ts'
import type { Logger } from '../utils/logger.ts'

/** How often unconnected entrypoints are redialed. */
export const ENTRYPOINT_REDIAL_MS = 5000

export interface EntrypointDialerOptions {
  /** @default ENTRYPOINT_REDIAL_MS */
  intervalMs?: number
  /** time limit of one dial. @default 10 s */
  dialTimeoutMs?: number
  /** an unreachable entrypoint is logged at warn, a connection at debug */
  logger?: Logger
}

export interface EntrypointDialer {
  /** dials every unconnected entrypoint now */
  dialNow: () => void
  /** stops redialing and aborts dials in flight */
  stop: () => void
}

/**
 * Dials `entrypoints` (multiaddrs with /p2p/<peer id>, or parsed ones) now and every `intervalMs` while
 * they are not connected. Bad addresses raise ConfigError at once.
 */
export function keepEntrypointsConnected (libp2p: Pick<Libp2p, 'peerId' | 'dial' | 'getConnections'>, entrypoints: readonly string[] | readonly Entrypoint[], opts: EntrypointDialerOptions = {}): EntrypointDialer {
  const list: Entrypoint[] = entrypoints.length > 0 && typeof entrypoints[0] === 'string' ? parseEntrypoints(entrypoints as string[]) : [...entrypoints as Entrypoint[]]
  const controller = new AbortController()
  const dialing = new Set<string>()
  const dialNow = (): void => {
    if (controller.signal.aborted) return
    for (const e of list) {
      const id = e.peerId.toString()
      if (e.peerId.equals(libp2p.peerId) || dialing.has(id) || libp2p.getConnections(e.peerId).length > 0) continue
      dialing.add(id)
      libp2p.dial(e.multiaddr, { signal: AbortSignal.any([controller.signal, AbortSignal.timeout(opts.dialTimeoutMs ?? 10_000)]) })
        .then((c: Connection) => { opts.logger?.debug('connected to entrypoint %s', c.remoteAddr.toString()) })
        .catch((err: Error) => { if (!controller.signal.aborted) opts.logger?.warn('entrypoint %s unreachable: %s', e.multiaddr.toString(), err.message) })
        .finally(() => dialing.delete(id))
    }
  }
  const timer = list.length > 0 ? setInterval(dialNow, opts.intervalMs ?? ENTRYPOINT_REDIAL_MS) : undefined
  timer?.unref()
  dialNow()
  return {
    dialNow,
    stop: () => {
      if (timer !== undefined) clearInterval(timer)
      controller.abort(new Error('entrypoint dialer stopped'))
    }
  }
}
