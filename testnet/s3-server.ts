/**
 * The docker-compose testnet's S3-compatible service: s3rver (the npm package the archive tests use) on
 * 0.0.0.0, its objects as files under a directory (the service's volume), with the testnet's bucket
 * created at start. The archival node uploads its archive there (--archive-upload-url s3://...), the
 * bucket node fast-syncs from it (--archive-url s3://...). s3rver accepts only its fixed credentials
 * (access key S3RVER, secret S3RVER).
 *
 *   node testnet/s3-server.ts
 *
 * Environment: SOMA_TESTNET_S3_PORT (default 4568), SOMA_TESTNET_S3_HOST (default 0.0.0.0),
 * SOMA_TESTNET_S3_DIR (default /data), SOMA_TESTNET_S3_BUCKETS (comma-separated, default soma-archive).
 * Stops on SIGINT/SIGTERM.
 */
import { mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

function say (msg: string): void {
  process.stderr.write(`${new Date().toISOString()} [s3] ${msg}\n`)
}

export interface S3ServerOptions {
  host: string
  port: number
  dir: string
  buckets: string[]
}

export function s3ServerOptions (env: NodeJS.ProcessEnv = process.env): S3ServerOptions {
  const port = Number(env.SOMA_TESTNET_S3_PORT ?? 4568)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`SOMA_TESTNET_S3_PORT: ${JSON.stringify(env.SOMA_TESTNET_S3_PORT)} is not a port`)
  const buckets = (env.SOMA_TESTNET_S3_BUCKETS ?? 'soma-archive').split(',').map(b => b.trim()).filter(b => b !== '')
  for (const b of buckets) {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(b)) throw new Error(`SOMA_TESTNET_S3_BUCKETS: ${JSON.stringify(b)} is not a bucket name (3-63 lowercase letters, digits, dots, dashes)`)
  }
  return { host: env.SOMA_TESTNET_S3_HOST ?? '0.0.0.0', port, dir: env.SOMA_TESTNET_S3_DIR ?? '/data', buckets }
}

/** Starts s3rver; returns its port and a stop function. */
export async function startS3Server (opts: S3ServerOptions): Promise<{ port: number, stop: () => Promise<void> }> {
  const S3rver = require('s3rver')
  mkdirSync(opts.dir, { recursive: true })
  const server = new S3rver({
    address: opts.host,
    port: opts.port,
    silent: true,
    directory: opts.dir,
    // path-style only: a host name such as `s3` must not be read as a bucket name
    vhostBuckets: false,
    configureBuckets: opts.buckets.map(name => ({ name }))
  })
  const addr = await server.run()
  return { port: addr.port, stop: async () => { await server.close() } }
}

if (import.meta.main) {
  try {
    const opts = s3ServerOptions()
    const s = await startS3Server(opts)
    say(`s3rver listening on ${opts.host}:${s.port}, objects in ${opts.dir}, buckets ${opts.buckets.join(', ')}`)
    let stopping = false
    const stop = (sig: string): void => {
      if (stopping) process.exit(130)
      stopping = true
      say(`${sig}: stopping`)
      s.stop().then(() => process.exit(0), err => { say(`stop: ${err?.message ?? String(err)}`); process.exit(1) })
    }
    process.on('SIGINT', () => { stop('SIGINT') })
    process.on('SIGTERM', () => { stop('SIGTERM') })
  } catch (err: any) {
    say(`error: ${err?.message ?? String(err)}`)
    process.exit(1)
  }
}
