/**
 * docker-compose.yml from the topology (testnet/topology.ts): `composeFile()` is the object,
 * `renderCompose()` its YAML text, exactly what is committed at the repository root
 * (scripts/gen-compose.ts writes it; test/testnet/compose.test.ts fails when they differ).
 *
 * The file uses `version: "2.4"`: Compose v1 (docker-compose 1.29) needs a 2.x version for `init`,
 * healthcheck `start_period` and `depends_on` conditions, and Compose v2 reads it as the Compose
 * Specification (it only warns that `version` is obsolete).
 */
import { envName } from '../src/config.ts'
import { ARCHIVE_HTTP_PORT, BUCKET_JOIN_AFTER_ARCHIVE_COMMIT, P2P_PORT, STATUS_PORT, launchSpecs, testnetNodes, type Placement, type TestnetBucket, type TestnetNode } from './topology.ts'
import { NODE_ENV, NODE_FLAGS } from '../src/node/runtime.ts'

/** Image the compose services run (built from the Dockerfile at the root); SOMA_TESTNET_IMAGE overrides it. */
export const IMAGE = 'soma-sync:testnet'
/** The producer's --max-commits in compose: 0 (never stops) unless SOMA_TESTNET_MAX_COMMITS is set. */
export const MAX_COMMITS_VARIABLE = 'SOMA_TESTNET_MAX_COMMITS'
/** The user-defined bridge network. */
export const NETWORK = 'soma'
/** Where a node's volume is mounted in its container. */
export const DATA_DIR = '/data'

/** The S3-compatible service (s3rver, testnet/s3-server.ts, image from testnet/Dockerfile.s3). */
export const S3_SERVICE = 's3'
/** Its image; SOMA_TESTNET_S3_IMAGE overrides it. */
export const S3_IMAGE = 'soma-sync-s3:testnet'
/** Its port (in the network; not published on the host). */
export const S3_PORT = 4568
/** Where its volume is mounted: the bucket's objects, one file each. */
export const S3_DATA_DIR = '/data'

/** The bucket of the docker-compose testnet (s3rver's fixed credentials: no secret). */
export const DOCKER_BUCKET: TestnetBucket = {
  endpoint: `http://${S3_SERVICE}:${S3_PORT}`,
  bucket: 'soma-archive',
  prefix: 'testnet',
  accessKeyId: 'S3RVER',
  secretAccessKey: 'S3RVER'
}

/** Placement of the nodes in docker-compose: service names are host names, one volume per node. */
export const DOCKER_PLACEMENT: Placement = {
  addr: name => `/dns4/${name}`,
  p2pPort: () => P2P_PORT,
  listen: () => [`/ip4/0.0.0.0/tcp/${P2P_PORT}`],
  announce: () => [],
  statusHost: () => '0.0.0.0',
  statusPort: () => STATUS_PORT,
  statusUrl: (_from, of) => `http://${of}:${STATUS_PORT}/status`,
  dataDir: () => DATA_DIR,
  archiveHttpPort: () => ARCHIVE_HTTP_PORT,
  archiveHttpUrl: (_from, of) => `http://${of}:${ARCHIVE_HTTP_PORT}`,
  bucket: DOCKER_BUCKET
}

/** The environment variable that overrides the host port a node's status is published on. */
export function hostPortVariable (name: string): string {
  return `SOMA_TESTNET_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_STATUS_PORT`
}

/** The healthcheck: the node's own GET /health (200 when its status says healthy). */
export const HEALTHCHECK_TEST = ['CMD', 'node', '-e', `fetch('http://127.0.0.1:${STATUS_PORT}/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))`]

export type ComposeFile = Record<string, any>

/** The compose file as an object. */
export async function composeFile (nodes: readonly TestnetNode[] = testnetNodes()): Promise<ComposeFile> {
  const specs = await launchSpecs(nodes, DOCKER_PLACEMENT)
  const producer = nodes.find(n => n.role === 'devnet')
  const services: Record<string, any> = {}
  for (const spec of specs) {
    const node = nodes.find(n => n.name === spec.name)!
    const service: Record<string, any> = {
      image: `\${SOMA_TESTNET_IMAGE:-${IMAGE}}`,
      build: { context: '.' },
      init: true,
      // the node process's memory settings (src/node/runtime.ts)
      entrypoint: ['node', ...NODE_FLAGS, 'testnet/node-init.ts'],
      command: spec.command,
      environment: node.role === 'devnet'
        // a fixed target when SOMA_TESTNET_MAX_COMMITS is set (scripts/testnet-docker): the producer stops
        // there and keeps serving
        ? { ...NODE_ENV, ...spec.env, [envName('maxCommits')]: `\${${MAX_COMMITS_VARIABLE}:-0}`, SOMA_TESTNET_KEEP_SERVING: '1' }
        : { ...NODE_ENV, ...spec.env },
      volumes: [`${spec.name}-data:${DATA_DIR}`],
      ports: [`127.0.0.1:\${${hostPortVariable(spec.name)}:-${node.hostStatusPort}}:${STATUS_PORT}`],
      networks: [NETWORK]
    }
    if (node.role !== 'devnet' && producer !== undefined) {
      service.depends_on = { [producer.name]: { condition: 'service_healthy' } }
    }
    // the archival node uploads to the bucket, the bucket node reads it
    if (node.role === 'archival' || node.archiveFrom !== undefined) {
      service.depends_on = { ...service.depends_on, [S3_SERVICE]: { condition: 'service_healthy' } }
    }
    service.healthcheck = {
      test: HEALTHCHECK_TEST,
      interval: '5s',
      timeout: '3s',
      retries: 3,
      // the late joiner first waits for the producer's commit (node-init), the bucket node for the
      // archive's, with no /health meanwhile
      start_period: node.joinAfterArchiveCommit !== undefined ? '300s' : node.joinAfterCommit !== undefined ? '120s' : '30s'
    }
    service.stop_grace_period = '15s'
    services[spec.name] = service
  }
  // the S3-compatible bucket the archival node uploads its archive to (s3rver, an npm package, in an
  // image built from the repository: no pull); not published on the host
  services[S3_SERVICE] = {
    image: `\${SOMA_TESTNET_S3_IMAGE:-${S3_IMAGE}}`,
    build: { context: '.', dockerfile: 'testnet/Dockerfile.s3' },
    init: true,
    environment: {
      SOMA_TESTNET_S3_PORT: String(S3_PORT),
      SOMA_TESTNET_S3_DIR: S3_DATA_DIR,
      SOMA_TESTNET_S3_BUCKETS: DOCKER_BUCKET.bucket
    },
    volumes: [`${S3_SERVICE}-data:${S3_DATA_DIR}`],
    networks: [NETWORK],
    healthcheck: {
      // any HTTP answer (an unsigned request gets 403): s3rver is listening
      test: ['CMD', 'node', '-e', `fetch('http://127.0.0.1:${S3_PORT}/').then(() => process.exit(0), () => process.exit(1))`],
      interval: '5s',
      timeout: '3s',
      retries: 3,
      start_period: '30s'
    },
    stop_grace_period: '10s'
  }
  // optional (docker compose --profile monitoring): Prometheus built from Debian's package, no pull
  services.prometheus = {
    image: 'soma-sync-prometheus:testnet',
    build: { context: '.', dockerfile: 'monitoring/Dockerfile.prometheus' },
    profiles: ['monitoring'],
    ports: ['127.0.0.1:${SOMA_TESTNET_PROMETHEUS_PORT:-9090}:9090'],
    networks: [NETWORK]
  }
  return {
    version: '2.4',
    services,
    networks: { [NETWORK]: { driver: 'bridge' } },
    volumes: Object.fromEntries([...specs.map(s => [`${s.name}-data`, {}]), [`${S3_SERVICE}-data`, {}]])
  }
}

const HEADER = `# Generated by scripts/gen-compose.ts from testnet/topology.ts: do not edit, change the topology and run
#   node scripts/gen-compose.ts
# (a test fails when this file and the topology differ; scripts/testnet runs the same topology without Docker).
#
# A devnet producer, three full nodes that commit-sync from it, and a late joiner that waits until the
# producer has passed commit ${testnetNodes().find(n => n.role === 'late')?.joinAfterCommit ?? '?'}, then snapshot-syncs (lateJoinerArgs / SNAPSHOT_SYNC in testnet/topology.ts), and an archival
# node (archive: --sync-mode archival) that joins then too and syncs and keeps every commit from genesis,
# writes each closed epoch as archive segments and uploads them to an S3-compatible bucket (s3: s3rver,
# built from testnet/Dockerfile.s3), and a bucket node that joins once the bucket holds commit ${BUCKET_JOIN_AFTER_ARCHIVE_COMMIT}
# and fast-syncs from it (--archive-url s3://..., P2P spot checks), then commit-syncs the rest.
# Peer keys derive from SOMA_TESTNET_PEER_KEY_SEED and full nodes write the devnet's genesis themselves
# (testnet/node-init.ts), so entrypoints name peer ids up front and nodes share nothing but the network.
#
#   docker compose up --build        (Compose v2)      docker-compose up --build        (Compose v1)
#   curl -s 127.0.0.1:7780/status    the producer; full1..full3 on 7781..7783, late on 7784, archive on 7785, bucket on 7786 (also /metrics, /health)
#
# Variables: SOMA_TESTNET_<NODE>_STATUS_PORT (host ports, e.g. SOMA_TESTNET_LATE_STATUS_PORT=17784),
# SOMA_TESTNET_MAX_COMMITS (the producer stops there and keeps serving; default never), SOMA_TESTNET_IMAGE,
# SOMA_TESTNET_S3_IMAGE.
# scripts/testnet-docker runs all of it for real and waits until every node converges.
`

/** A YAML scalar: plain when unambiguous, else double-quoted (JSON escaping is valid YAML). */
function scalar (v: unknown): string {
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  if (v === null) return 'null'
  const s = String(v)
  const plain = /^[A-Za-z0-9_./][A-Za-z0-9_./@-]*$/.test(s) &&
    !/^(true|false|yes|no|on|off|null|y|n|~)$/i.test(s) && // booleans and null in YAML 1.1
    !/^[0-9._eE+-]+$/.test(s) // anything a YAML 1.1 parser may read as a number
  return plain ? s : JSON.stringify(s)
}

function isScalar (v: unknown): boolean {
  return v === null || typeof v !== 'object'
}

function emit (v: unknown, indent: number, out: string[]): void {
  const pad = ' '.repeat(indent)
  if (Array.isArray(v)) {
    for (const item of v) {
      if (isScalar(item)) out.push(`${pad}- ${scalar(item)}`)
      else throw new Error('nested lists are not used in compose files here')
    }
    return
  }
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    const key = scalar(k)
    if (isScalar(val)) {
      out.push(`${pad}${key}: ${scalar(val)}`)
    } else if (Array.isArray(val)) {
      const flow = `[${val.map(scalar).join(', ')}]`
      if (val.every(isScalar) && (val.length === 0 || pad.length + key.length + flow.length < 100)) out.push(`${pad}${key}: ${flow}`)
      else {
        out.push(`${pad}${key}:`)
        emit(val, indent + 2, out)
      }
    } else if (Object.keys(val as object).length === 0) {
      out.push(`${pad}${key}: {}`)
    } else {
      out.push(`${pad}${key}:`)
      emit(val, indent + 2, out)
    }
  }
}

/** YAML text of a compose object (maps, lists of scalars, scalars). */
export function toYaml (obj: ComposeFile): string {
  const out: string[] = []
  const top = Object.entries(obj)
  top.forEach(([k, v], i) => {
    if (i > 0 && !isScalar(v)) out.push('')
    if (k === 'services' && !isScalar(v)) {
      // a blank line between services
      out.push('services:')
      Object.entries(v as Record<string, unknown>).forEach(([name, service], j) => {
        if (j > 0) out.push('')
        emit({ [name]: service }, 2, out)
      })
    } else emit({ [k]: v }, 0, out)
  })
  return out.join('\n') + '\n'
}

/** The text of docker-compose.yml. */
export async function renderCompose (): Promise<string> {
  return HEADER + '\n' + toYaml(await composeFile())
}
