/**
 * The node's persistent libp2p identity: an Ed25519 private key in `<dataDir>/peer.key` (libp2p's
 * protobuf key encoding, file mode 0600). The peer id therefore survives restarts.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { ConfigError } from '../errors.ts'

export const PEER_KEY_FILE = 'peer.key'

export interface PeerKey {
  privateKey: PrivateKey
  peerId: PeerId
  /** the key file */
  file: string
  /** true when this call generated the key */
  created: boolean
}

/** Path of the peer key in a data dir. */
export function peerKeyPath (dataDir: string): string {
  return path.join(dataDir, PEER_KEY_FILE)
}

/**
 * Reads `<dataDir>/peer.key`, or generates an Ed25519 key and writes it there (creating the data dir).
 * A file that does not decode raises ConfigError naming it; it is never overwritten.
 */
export async function loadOrCreatePeerKey (dataDir: string): Promise<PeerKey> {
  const file = peerKeyPath(dataDir)
  let bytes: Uint8Array | undefined
  try {
    bytes = readFileSync(file)
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw new ConfigError(`peer key ${file}: cannot read it: ${err.message}`)
  }
  if (bytes !== undefined) {
    let privateKey: PrivateKey
    try {
      privateKey = privateKeyFromProtobuf(bytes)
    } catch (err: any) {
      throw new ConfigError(`peer key ${file} is corrupt (${err.message}); restore it, or remove it to get a new peer id`)
    }
    return { privateKey, peerId: peerIdFromPrivateKey(privateKey), file, created: false }
  }
  const privateKey = await generateKeyPair('Ed25519')
  try {
    mkdirSync(dataDir, { recursive: true })
    // write to a temp file and rename, so a crash never leaves a truncated key behind
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, privateKeyToProtobuf(privateKey), { mode: 0o600 })
    chmodSync(tmp, 0o600)
    renameSync(tmp, file)
  } catch (err: any) {
    throw new ConfigError(`peer key ${file}: cannot write it: ${err.message}`)
  }
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey), file, created: true }
}
