/**
 * Deterministic peer keys for the testnet: every node's Ed25519 libp2p key derives from a seed string
 * (sha256 of it is the 32-byte Ed25519 seed), so its peer id is known before the node ever runs and
 * entrypoint multiaddrs (`/dns4/<service>/tcp/7700/p2p/<peer id>`) can be written into
 * docker-compose.yml and the namespace testnet up front.
 *
 * These keys are public knowledge (anyone can derive them from the seed): testnets only.
 */
import { generateKeyPairFromSeed, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey } from '@libp2p/interface'
import { createHash } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { peerKeyPath } from '../src/node/peer-key.ts'

/** The private key a seed string derives. */
export async function testnetPrivateKey (seed: string): Promise<PrivateKey> {
  const bytes = new Uint8Array(createHash('sha256').update(`soma-testnet-peer-key\0${seed}`).digest())
  return await generateKeyPairFromSeed('Ed25519', bytes)
}

/** The peer id (base58 string) a seed string derives. */
export async function testnetPeerId (seed: string): Promise<string> {
  return peerIdFromPrivateKey(await testnetPrivateKey(seed)).toString()
}

/**
 * Writes `<dataDir>/peer.key` (the format `soma-sync keygen` writes) from the seed, unless it already
 * holds that key. A different key there is an error: the data dir belongs to another node.
 * Returns the peer id.
 */
export async function writeTestnetPeerKey (dataDir: string, seed: string): Promise<string> {
  const key = await testnetPrivateKey(seed)
  const peerId = peerIdFromPrivateKey(key).toString()
  const file = peerKeyPath(dataDir)
  let existing: Uint8Array | undefined
  try {
    existing = readFileSync(file)
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw err
  }
  if (existing !== undefined) {
    const have = peerIdFromPrivateKey(privateKeyFromProtobuf(existing)).toString()
    if (have !== peerId) throw new Error(`${file} holds the key of ${have}, not ${peerId} (seed ${JSON.stringify(seed)}): use an empty data dir`)
    return peerId
  }
  mkdirSync(dataDir, { recursive: true })
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, privateKeyToProtobuf(key), { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, file)
  return peerId
}
