/**
 * docker-compose.yml: generated from the topology (no drift), valid against the Compose Specification
 * JSON schema (testnet/compose-spec.json, vendored from compose-spec/compose-spec, Apache-2.0, checked
 * offline with ajv), and sound where the schema does not look: networks, volumes and depends_on name
 * declared things, entrypoints name services of the file and their real peer ids, host ports are
 * unique. When docker-compose (v1) or `docker compose` (v2) is installed, it must accept the file too.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { Ajv2019 } from 'ajv/dist/2019.js'
import { DOCKER_BUCKET, S3_PORT, S3_SERVICE, composeFile, renderCompose, hostPortVariable, type ComposeFile } from '../../testnet/compose.ts'
import { s3ServerOptions, startS3Server } from '../../testnet/s3-server.ts'
import { subsetLock } from '../../testnet/s3-lock.ts'
import { ARCHIVE_HTTP_PORT, BUCKET_JOIN_AFTER_ARCHIVE_COMMIT, ARCHIVAL_SYNC_ARGS, COMMIT_SYNC_ARGS, HAS_SYNC_MODE, LATE_JOIN_AFTER_COMMIT, archivalNodeArgs, SNAPSHOT_SYNC, SNAPSHOT_SYNC_ARGS, fullNodeArgs, lateJoinerArgs, peerIds, peerKeySeed, snapshotSyncOn, testnetNodes } from '../../testnet/topology.ts'
import { testnetPeerId } from '../../testnet/keys.ts'
import { OPTIONS } from '../../src/config.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const COMPOSE = path.join(root, 'docker-compose.yml')

/** Removes draft-04 style `id` keywords (ajv 8 refuses them; they only name subschemas here). */
function dropLegacyIds (node: any, namesHere = false): void {
  if (node === null || typeof node !== 'object') return
  if (Array.isArray(node)) { for (const x of node) dropLegacyIds(x); return }
  if (!namesHere && typeof node.id === 'string') delete node.id
  for (const [k, v] of Object.entries(node)) {
    dropLegacyIds(v, !namesHere && (k === 'properties' || k === 'patternProperties' || k === 'definitions'))
  }
}

function validator (): (doc: unknown) => string[] {
  const schema = JSON.parse(readFileSync(path.join(root, 'testnet/compose-spec.json'), 'utf8'))
  // the schema is draft 2019-09 (Ajv2019; its `$schema` spells the draft's URI as http://...#, which ajv
  // does not know by that name), with legacy `id` keywords and custom formats ("duration"): not strict
  assert.match(schema.$schema, /draft\/2019-09/)
  delete schema.$schema
  dropLegacyIds(schema)
  const ajv = new Ajv2019({ strict: false, allErrors: true, validateFormats: false })
  const validate = ajv.compile(schema)
  return doc => validate(doc) ? [] : (validate.errors ?? []).map(e => `${e.instancePath} ${e.message ?? ''} ${JSON.stringify(e.params)}`)
}

/** What the compose-spec schema does not check: references between parts of the file. */
function referenceProblems (doc: ComposeFile): string[] {
  const problems: string[] = []
  const services: Record<string, any> = doc.services ?? {}
  const networks = new Set(Object.keys(doc.networks ?? {}))
  const volumes = new Set(Object.keys(doc.volumes ?? {}))
  const hostPorts = new Map<string, string>()
  for (const [name, s] of Object.entries(services)) {
    const nets: string[] = Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? {})
    for (const n of nets) if (!networks.has(n)) problems.push(`${name}: network ${n} is not declared`)
    const deps: string[] = Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on ?? {})
    for (const d of deps) if (services[d] === undefined) problems.push(`${name}: depends_on ${d}, not a service`)
    for (const v of s.volumes ?? []) {
      const source = String(v).split(':')[0]
      if (!source.startsWith('/') && !source.startsWith('.') && !volumes.has(source)) problems.push(`${name}: volume ${source} is not declared`)
    }
    for (const p of s.ports ?? []) {
      // "127.0.0.1:${VAR:-7781}:7780" -> host port with the default the file gives it
      const expanded = String(p).replace(/\$\{[A-Z0-9_]+:-([^}]*)\}/g, '$1')
      const parts = expanded.split(':')
      const host = parts.length === 3 ? `${parts[0]}:${parts[1]}` : parts.length === 2 ? parts[0] : undefined
      if (host === undefined) continue
      if (hostPorts.has(host)) problems.push(`${name}: host port ${host} is also published by ${hostPorts.get(host)}`)
      hostPorts.set(host, name)
    }
    for (const e of String(s.environment?.SOMA_ENTRYPOINTS ?? '').split(',').filter(x => x !== '')) {
      const m = /^\/dns4\/([^/]+)\/tcp\/\d+\/p2p\/(\w+)$/.exec(e)
      if (m === null) { problems.push(`${name}: entrypoint ${e} is not /dns4/<service>/tcp/<port>/p2p/<id>`); continue }
      if (services[m[1]] === undefined) problems.push(`${name}: entrypoint ${e} names ${m[1]}, not a service`)
      else if (services[m[1]].environment?.SOMA_TESTNET_PEER_KEY_SEED === undefined) problems.push(`${name}: entrypoint ${m[1]} has no derived peer key`)
    }
  }
  return problems
}

test('docker-compose.yml is the one rendered from testnet/topology.ts (node scripts/gen-compose.ts)', async () => {
  assert.equal(readFileSync(COMPOSE, 'utf8'), await renderCompose(), 'docker-compose.yml is stale: run `node scripts/gen-compose.ts`')
})

test('docker-compose.yml parses to the compose object (the YAML writer is faithful)', async () => {
  assert.deepEqual(parse(readFileSync(COMPOSE, 'utf8')), await composeFile())
})

test('docker-compose.yml is valid against the Compose Specification schema, offline', () => {
  const validate = validator()
  assert.deepEqual(validate(parse(readFileSync(COMPOSE, 'utf8'))), [])
  // the validator is not vacuous: a misspelt key and a wrong type are caught
  const bad = parse(readFileSync(COMPOSE, 'utf8'))
  bad.services.devnet.helthcheck = bad.services.devnet.healthcheck
  bad.services.full1.init = 'yes'
  const errors = validate(bad)
  assert.ok(errors.some(e => e.includes('helthcheck')), errors.join('\n'))
  assert.ok(errors.some(e => e.includes('/services/full1/init')), errors.join('\n'))
})

test('docker-compose.yml: networks, volumes, depends_on and entrypoints name declared things; host ports are unique', async () => {
  const doc = parse(readFileSync(COMPOSE, 'utf8'))
  assert.deepEqual(referenceProblems(doc), [])
  // and the check finds what the schema lets through
  const bad = structuredClone(doc)
  bad.services.full2.networks = ['soma', 'elsewhere']
  bad.services.full3.depends_on = { nobody: { condition: 'service_healthy' } }
  bad.services.late.volumes = ['late-dat:/data']
  bad.services.full1.ports = [bad.services.devnet.ports[0]]
  bad.services.full2.environment.SOMA_ENTRYPOINTS = '/dns4/ghost/tcp/7700/p2p/12D3KooWCJidaVq1GroAWDY6m4nxLMbyjkeHdWRFfCjRb4DewKrk'
  assert.deepEqual(validator()(bad), [], 'the schema accepts all of these')
  const problems = referenceProblems(bad)
  for (const want of ['network elsewhere', 'depends_on nobody', 'volume late-dat', 'host port 127.0.0.1:7780', 'names ghost']) {
    assert.ok(problems.some(p => p.includes(want)), `${want} not reported: ${problems.join('; ')}`)
  }
})

test('docker-compose.yml: the topology in it (roles, peer ids, init, healthchecks, volumes, late joiner)', async () => {
  const doc = parse(readFileSync(COMPOSE, 'utf8'))
  const nodes = testnetNodes()
  const ids = await peerIds(nodes)
  assert.deepEqual(Object.keys(doc.services).filter(k => doc.services[k].profiles === undefined), [...nodes.map(n => n.name), S3_SERVICE])
  // the optional monitoring profile: Prometheus built locally (Debian's package), scraping every node
  const prom = doc.services.prometheus
  assert.deepEqual(prom.profiles, ['monitoring'])
  assert.equal(prom.build.dockerfile, 'monitoring/Dockerfile.prometheus')
  assert.match(readFileSync(path.join(root, 'monitoring/Dockerfile.prometheus'), 'utf8'), /apt-get install -y --no-install-recommends prometheus/)
  const targets = /targets: \[(.*)\]/.exec(readFileSync(path.join(root, 'monitoring/prometheus.yml'), 'utf8'))![1].split(',').map(x => x.trim().replace(/'/g, ''))
  assert.deepEqual(targets, nodes.map(n => `${n.name}:7780`))
  for (const n of nodes) {
    const s = doc.services[n.name]
    assert.equal(s.init, true, `${n.name}: init: true (node as PID 1 would ignore SIGTERM)`)
    assert.equal(s.command[0], n.role === 'devnet' ? 'devnet' : 'start')
    assert.deepEqual(s.networks, ['soma'])
    assert.deepEqual(s.volumes, [`${n.name}-data:/data`])
    assert.match(s.healthcheck.test.join(' '), /\/health/)
    assert.ok(s.healthcheck.start_period !== undefined)
    assert.equal(s.ports[0], `127.0.0.1:\${${hostPortVariable(n.name)}:-${n.hostStatusPort}}:7780`)
    assert.equal(await testnetPeerId(s.environment.SOMA_TESTNET_PEER_KEY_SEED), ids[n.name])
    assert.equal(s.environment.SOMA_TESTNET_PEER_KEY_SEED, peerKeySeed(n.name))
    const eps = String(s.environment.SOMA_ENTRYPOINTS ?? '').split(',').filter(x => x !== '')
    assert.deepEqual(eps, n.entrypoints.map(e => `/dns4/${e}/tcp/7700/p2p/${ids[e]}`))
  }
  assert.equal(doc.networks.soma.driver, 'bridge')
  const late = doc.services.late
  assert.deepEqual(late.command.slice(1), [...lateJoinerArgs()])
  assert.equal(late.environment.SOMA_TESTNET_JOIN_STATUS_URL, 'http://devnet:7780/status')
  // the archival node: --sync-mode archival, from genesis, joining with the late joiner
  const archival = nodes.filter(n => n.role === 'archival')
  assert.deepEqual(archival.map(n => n.name), ['archive'])
  const archive = doc.services.archive
  assert.deepEqual(archive.command, ['start', ...archivalNodeArgs()])
  assert.deepEqual(archivalNodeArgs(), ARCHIVAL_SYNC_ARGS, 'soma-sync has --sync-mode archival')
  assert.equal(archive.environment.SOMA_TESTNET_JOIN_AFTER_COMMIT, String(LATE_JOIN_AFTER_COMMIT))
  assert.ok(archive.environment.SOMA_ENTRYPOINTS.includes(`/dns4/devnet/tcp/7700/p2p/${ids.devnet}`))
  // it writes its archive, serves it and uploads it to the s3 service's bucket
  const bucketUrl = `s3://${DOCKER_BUCKET.bucket}/${DOCKER_BUCKET.prefix}/archive`
  assert.equal(archive.environment.SOMA_ARCHIVE_DIR, '/data/archive')
  assert.equal(archive.environment.SOMA_ARCHIVE_HTTP_PORT, String(ARCHIVE_HTTP_PORT))
  assert.equal(archive.environment.SOMA_ARCHIVE_UPLOAD_URL, bucketUrl)
  assert.equal(archive.environment.SOMA_ARCHIVE_S3_ENDPOINT, `http://${S3_SERVICE}:${S3_PORT}`)
  assert.equal(archive.depends_on[S3_SERVICE].condition, 'service_healthy')
  // the bucket node: archival, fast-syncs from that bucket once it holds commit 150
  const bucket = doc.services.bucket
  assert.deepEqual(bucket.command, ['start', ...archivalNodeArgs()])
  assert.equal(bucket.environment.SOMA_ARCHIVE_URL, bucketUrl)
  assert.equal(bucket.environment.SOMA_ARCHIVE_S3_ENDPOINT, `http://${S3_SERVICE}:${S3_PORT}`)
  assert.equal(bucket.environment.AWS_ACCESS_KEY_ID, DOCKER_BUCKET.accessKeyId)
  assert.equal(bucket.environment.SOMA_TESTNET_JOIN_ARCHIVE_URL, bucketUrl)
  assert.equal(bucket.environment.SOMA_TESTNET_JOIN_ARCHIVE_COMMIT, String(BUCKET_JOIN_AFTER_ARCHIVE_COMMIT))
  assert.equal(bucket.depends_on[S3_SERVICE].condition, 'service_healthy')
  // the s3 service: s3rver built locally, its bucket created from its environment, not on the host
  const s3 = doc.services[S3_SERVICE]
  assert.equal(s3.build.dockerfile, 'testnet/Dockerfile.s3')
  assert.equal(s3.ports, undefined)
  assert.deepEqual(s3ServerOptions(s3.environment), { host: '0.0.0.0', port: S3_PORT, dir: '/data', buckets: [DOCKER_BUCKET.bucket] })
  assert.match(readFileSync(path.join(root, 'testnet/Dockerfile.s3'), 'utf8'), /s3-lock\.ts[^\n]*\n[^\n]*npm ci --ignore-scripts/)
})

test('the s3 image installs s3rver alone, as locked: testnet/s3-lock.ts cuts the project lock down to its closure', () => {
  const lock = JSON.parse(readFileSync(path.join(root, 'package-lock.json'), 'utf8'))
  const { packageJson, lock: sub } = subsetLock(lock, 's3rver')
  assert.deepEqual(packageJson.dependencies, { s3rver: lock.packages['node_modules/s3rver'].version })
  const paths = Object.keys(sub.packages).filter(k => k !== '')
  assert.ok(paths.includes('node_modules/s3rver') && paths.includes('node_modules/koa'), paths.join(' '))
  assert.ok(paths.length < Object.keys(lock.packages).length / 4, `${paths.length} packages`)
  for (const k of paths) {
    // the same version, place and integrity as the project's lock; nothing marked dev
    assert.equal(sub.packages[k].version, lock.packages[k].version, k)
    assert.equal(sub.packages[k].integrity, lock.packages[k].integrity, k)
    assert.equal(sub.packages[k].dev, undefined, k)
    // every dependency resolves inside the subset (node's lookup upwards from the package's place)
    for (const d of Object.keys(sub.packages[k].dependencies ?? {})) {
      let base = k
      let found = false
      while (!found) {
        found = sub.packages[`${base === '' ? '' : `${base}/`}node_modules/${d}`] !== undefined
        if (found || base === '') break
        const i = base.lastIndexOf('/node_modules/')
        base = i < 0 ? '' : base.slice(0, i)
      }
      assert.ok(found, `${d}, needed by ${k}, is not in the subset`)
    }
  }
  assert.throws(() => subsetLock(lock, 'no-such-package-here'), /has no node_modules\/no-such-package-here/)
  // a lock missing a needed package is refused, naming it
  const broken = structuredClone(lock)
  delete broken.packages['node_modules/koa']
  assert.throws(() => subsetLock(broken, 's3rver'), /koa, a dependency of node_modules\/s3rver, is not in the lock/)
})

test('the s3 service (testnet/s3-server.ts) serves its bucket path-style to the archive uploader and reader', { timeout: 60_000 }, async t => {
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(path.join(tmpdir(), 'soma-s3-service-'))
  t.after(() => { rmSync(dir, { recursive: true, force: true }) })
  assert.throws(() => s3ServerOptions({ SOMA_TESTNET_S3_BUCKETS: 'ab' }), /is not a bucket name/)
  assert.throws(() => s3ServerOptions({ SOMA_TESTNET_S3_PORT: 'x' }), /is not a port/)
  const server = await startS3Server({ ...s3ServerOptions({ SOMA_TESTNET_S3_DIR: dir, SOMA_TESTNET_S3_HOST: '127.0.0.1', SOMA_TESTNET_S3_PORT: '0' }) })
  t.after(async () => { await server.stop() })
  const { s3Client } = await import('../../src/archive/source.ts')
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY }
  process.env.AWS_ACCESS_KEY_ID = DOCKER_BUCKET.accessKeyId
  process.env.AWS_SECRET_ACCESS_KEY = DOCKER_BUCKET.secretAccessKey
  t.after(() => {
    if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID; else process.env.AWS_ACCESS_KEY_ID = saved.id
    if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY; else process.env.AWS_SECRET_ACCESS_KEY = saved.secret
  })
  // a host name that is not an IP (like `s3` in compose) must not be read as a virtual-host bucket
  const { client, sdk } = await s3Client({ endpoint: `http://localhost:${server.port}`, region: 'us-east-1' })
  try {
    await client.send(new sdk.PutObjectCommand({ Bucket: DOCKER_BUCKET.bucket, Key: 'testnet/x', Body: Buffer.from('hello') }))
    const got = await client.send(new sdk.GetObjectCommand({ Bucket: DOCKER_BUCKET.bucket, Key: 'testnet/x' }))
    assert.equal(await got.Body.transformToString(), 'hello')
  } finally {
    client.destroy()
  }
  const http = await import('node:http')
  const asHost = await new Promise<{ status?: number, body: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: server.port, path: `/${DOCKER_BUCKET.bucket}/testnet/x`, headers: { Host: `${S3_SERVICE}:${server.port}` }, timeout: 10_000 }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => { resolve({ status: res.statusCode, body }) })
    }).on('error', reject)
  })
  assert.doesNotMatch(asHost.body, /NoSuchBucket/, `Host: ${S3_SERVICE} was read as a bucket name: ${asHost.body}`)
  assert.equal(asHost.status, 200, asHost.body)
  assert.equal(asHost.body, 'hello')
})

test('sync modes: full nodes commit-sync, the late joiner snapshot-syncs (when soma-sync has --sync-mode)', t => {
  assert.equal(HAS_SYNC_MODE, OPTIONS.some(o => (o.key as string) === 'syncMode'))
  if (!HAS_SYNC_MODE) {
    t.diagnostic('PENDING snapshot sync: soma-sync has no --sync-mode yet, so every node commit-syncs and no --sync-mode is passed')
    assert.deepEqual(fullNodeArgs(), [])
    assert.deepEqual(lateJoinerArgs({ snapshotSync: false }), [])
    return
  }
  assert.deepEqual(fullNodeArgs(), COMMIT_SYNC_ARGS)
  assert.deepEqual(lateJoinerArgs({ snapshotSync: true }), SNAPSHOT_SYNC_ARGS)
  assert.deepEqual(lateJoinerArgs({ snapshotSync: false }), COMMIT_SYNC_ARGS)
  assert.equal(snapshotSyncOn(), SNAPSHOT_SYNC === 'auto' ? true : SNAPSHOT_SYNC)
  const spec = OPTIONS.find(o => (o.key as string) === 'syncMode')!
  for (const mode of ['snapshot', 'commits']) assert.ok(spec.choices?.includes(mode), `--sync-mode ${mode} is not a choice of soma-sync`)
})

for (const [label, cmd, args] of [
  ['Compose v1 (docker-compose)', 'docker-compose', ['-f', COMPOSE, 'config', '-q']],
  ['Compose v2 (docker compose)', 'docker', ['compose', '-f', COMPOSE, 'config', '-q']]
] as const) {
  const probe = spawnSync(cmd, cmd === 'docker' ? ['compose', 'version'] : ['version'], { encoding: 'utf8', timeout: 20_000 })
  const available = probe.status === 0
  test(`${label} accepts docker-compose.yml`, { skip: available ? false : `${cmd}${cmd === 'docker' ? ' compose' : ''} is not installed here` }, () => {
    execFileSync(cmd, [...args], { cwd: root, timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] })
  })
}
