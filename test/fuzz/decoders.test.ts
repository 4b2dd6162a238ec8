/**
 * Fuzzing of every wire and disk decoder (issue 16 item 6) with fast-check: random bytes, mutations and
 * truncations of valid encodings taken from a real produced chain with snapshots. Each case ends in a
 * value or a named error (SomaError: MalformedMessageError, InvalidFilterError, InvalidChunkError,
 * ConfigError, ...), never another exception, and a value holds at most a small multiple of its input
 * (harness.ts). FUZZ_RUNS cases per target (`npm run fuzz`: 10,000).
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import { RUNS, fcParams, inputs, checkDecoder } from './harness.ts'
import { snapshotProducer, snapshotGenesis, type SnapshotProducer } from '../helpers/snapshot-net.ts'
import { parseBlock } from '../../src/chain/block.ts'
import { parseCommit } from '../../src/chain/commit.ts'
import { decodeGenesis } from '../../src/chain/genesis.ts'
import { parseTransaction } from '../../src/chain/transaction.ts'
import { Codecs } from '../../src/chain/codecs.ts'
import { readVarint } from '../../src/chain/varint.ts'
import { SyncCodecs } from '../../src/sync/protocols/messages.ts'
import { SnapshotSyncCodecs, listingRowOffsets, encodeChunksResponseList } from '../../src/snapshot/protocols/messages.ts'
import { decodeListing, decodeManifest, decodeAttestation } from '../../src/snapshot/manifest.ts'
import { decodeChunk, parseOwnChunk } from '../../src/snapshot/chunk-format.ts'
import { CuckooFilter } from '../../src/snapshot/cuckoo-filter.ts'
import { decodeFrameLength } from '../../src/net/framing.ts'
import { readGenesisFile } from '../../src/node/genesis-file.ts'
import { loadOrCreatePeerKey } from '../../src/node/peer-key.ts'
import { loadConfig, DEFAULTS } from '../../src/config.ts'
import { ConfigError, SomaError } from '../../src/errors.ts'

describe('fuzz: decoders', () => {
  let dir: string
  let P: SnapshotProducer
  const s: Record<string, Uint8Array[]> = {}
  let chainId: Uint8Array
  let dim: number

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'soma-fuzz-'))
    P = await snapshotProducer(dir, 21, { genesis: snapshotGenesis(300) })
    const store = P.store
    chainId = store.chainId
    dim = store.genesis.genesis.embeddingDim
    const commits = await store.getCommitRange(1, 21)
    s.commit = commits.map(c => c.bytes)
    s.block = []
    for (const c of commits.slice(0, 6)) for (const b of await store.getBlocks(c.commit.blocks ?? [])) if (b !== undefined) s.block.push(b)
    s.tx = []
    for (const b of s.block.slice(0, 6)) for (const t of parseBlock(b, chainId).block.transactions ?? []) s.tx.push(Codecs.SignedTransaction.encode(t))
    s.genesis = [store.genesis.bytes]
    const commit = (await P.snapshots.list()).at(-1)!
    const snap = (await P.snapshots.get(commit))!
    s.listing = [await P.snapshots.getListingBytes(commit)]
    s.filter = [await P.snapshots.getFilterBytes(commit)]
    s.attestation = [snap.attestationBytes]
    s.manifest = [snap.attestation.manifest]
    const listing = decodeListing(s.listing[0])
    s.chunk = (await P.snapshots.getChunks(listing.slice(0, 12).map(r => r.hash))).filter((c): c is Uint8Array => c !== undefined)
    s.chunksResponse = [SnapshotSyncCodecs.GetSnapshotChunksResponse.encode({ chunks: s.chunk.slice(0, 4) }), SnapshotSyncCodecs.GetSnapshotChunksResponse.encode({ chunks: [], error: 'rate limited' })]
    s.listingResponse = [SnapshotSyncCodecs.GetSnapshotListingResponse.encode({ chunks: listing.slice(0, 8) })]
    assert.ok(s.commit.length > 0 && s.block.length > 0 && s.tx.length > 0 && s.chunk.length > 0 && s.attestation.length > 0, 'valid samples')
  })
  after(async () => {
    await P?.store.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const prop = (name: string, samples: () => Uint8Array[], decode: (b: Uint8Array) => unknown, runs = RUNS): void => {
    it(`${name}: a value or a named error`, () => {
      fc.assert(fc.property(inputs(samples()), b => { checkDecoder(decode, b) }), fcParams(runs))
    })
  }

  // chain
  prop('Block (parseBlock)', () => s.block, b => parseBlock(b, chainId))
  prop('Commit (parseCommit)', () => s.commit, b => parseCommit(b))
  prop('SignedTransaction (decode + parseTransaction)', () => s.tx, b => parseTransaction(Codecs.SignedTransaction.decode(b), chainId, dim))
  prop('Genesis (decodeGenesis)', () => s.genesis, b => decodeGenesis(b))
  prop('varint (readVarint)', () => [Uint8Array.of(0x96, 0x01), Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f)], b => readVarint(b, 0, 'fuzz'))
  prop('frame length prefix (decodeFrameLength)', () => [Uint8Array.of(0x05), Uint8Array.of(0x80, 0x80, 0x01)], b => decodeFrameLength(b, 4 * 1024 * 1024))

  // sync messages
  for (const [name, c] of Object.entries(SyncCodecs)) {
    prop(`sync ${name}`, () => name === 'FetchCommitsResponse' ? [c.encode({ commits: s.commit.slice(0, 3) } as any)] : name === 'FetchBlocksResponse' ? [c.encode({ blocks: s.block.slice(0, 3) } as any)] : [], b => (c as any).decode(b))
  }

  // snapshot messages, listing, manifest, chunks, filter
  for (const [name, c] of Object.entries(SnapshotSyncCodecs)) {
    if (name === 'reference') continue
    prop(`snapshot ${name}`, () => name === 'GetSnapshotChunksResponse' ? s.chunksResponse : name === 'GetSnapshotListingResponse' ? s.listingResponse : [], b => (c as any).decode(b))
  }
  prop('chunk response as views (encodeChunksResponseList round trip)', () => s.chunksResponse, b => {
    const res = SnapshotSyncCodecs.GetSnapshotChunksResponse.decode(b)
    const again = encodeChunksResponseList(res).subarray()
    assert.deepEqual(SnapshotSyncCodecs.GetSnapshotChunksResponse.decode(again), res)
    return res
  })
  prop('SnapshotListing (decodeListing)', () => s.listing, b => decodeListing(b))
  prop('SnapshotListing rows (listingRowOffsets)', () => s.listing, b => listingRowOffsets(b))
  prop('SnapshotManifest (decodeManifest)', () => s.manifest, b => decodeManifest(b))
  prop('SnapshotAttestation (decodeAttestation)', () => s.attestation, b => decodeAttestation(b))
  prop('StateChunk (decodeChunk)', () => s.chunk, b => decodeChunk(b))
  prop('StateChunk, own store (parseOwnChunk)', () => s.chunk, b => parseOwnChunk(b))
  prop('Cuckoo filter (CuckooFilter.fromBytes)', () => s.filter, b => CuckooFilter.fromBytes(b))

  // disk: genesis file, peer key, config file (ConfigError naming the file, or a value)
  it('genesis file (readGenesisFile): a genesis or a ConfigError', () => {
    const file = path.join(dir, 'genesis.pb')
    fc.assert(fc.property(inputs(s.genesis), b => {
      writeFileSync(file, b)
      checkDecoder(() => readGenesisFile(file), b)
    }), fcParams(Math.max(50, Math.floor(RUNS / 2))))
  })

  it('peer key (loadOrCreatePeerKey): a key or a ConfigError, the file never overwritten', async () => {
    const keyDir = path.join(dir, 'key')
    const valid = (await loadOrCreatePeerKey(keyDir)).file
    const sample = new Uint8Array(await import('node:fs').then(f => f.readFileSync(valid)))
    await fc.assert(fc.asyncProperty(inputs([sample], 128), async b => {
      writeFileSync(valid, b)
      try {
        const k = await loadOrCreatePeerKey(keyDir)
        assert.equal(k.created, false)
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err
      }
    }), fcParams(Math.max(50, Math.floor(RUNS / 2))))
  })

  it('config file (loadConfig --config): a config or a ConfigError', () => {
    const file = path.join(dir, 'config.json')
    const valid = new TextEncoder().encode(JSON.stringify({ ...DEFAULTS, listen: ['/ip4/127.0.0.1/tcp/0'] }))
    const json = fc.json().map(j => new TextEncoder().encode(j))
    const objects = fc.dictionary(fc.constantFrom(...Object.keys(DEFAULTS), 'nope'), fc.jsonValue()).map(o => new TextEncoder().encode(JSON.stringify(o)))
    fc.assert(fc.property(fc.oneof(inputs([valid], 256), json, objects), b => {
      writeFileSync(file, b)
      try {
        loadConfig({ argv: ['--config', file], command: 'start' })
      } catch (err) {
        if (!(err instanceof SomaError)) throw new Error(`config ${Buffer.from(b).toString()}: ${(err as Error)?.stack}`)
      }
    }), fcParams(Math.max(50, Math.floor(RUNS / 2))))
  })
})
