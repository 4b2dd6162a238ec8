/**
 * The genesis file: the raw Genesis protobuf bytes (chain id = sha256 of them). `devnet` writes it to
 * `<dataDir>/genesis.pb`; a full node reads it from `--genesis-file` or from there.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { decodeGenesis, type GenesisBundle } from '../chain/genesis.ts'
import { ConfigError } from '../errors.ts'

export const GENESIS_FILE = 'genesis.pb'

/** Path of the genesis file in a data dir. */
export function genesisPath (dataDir: string): string {
  return path.join(dataDir, GENESIS_FILE)
}

/** Writes `bundle.bytes` to `<dataDir>/genesis.pb` (atomically) and returns the path. */
export function writeGenesisFile (dataDir: string, bundle: GenesisBundle): string {
  const file = genesisPath(dataDir)
  mkdirSync(dataDir, { recursive: true })
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, bundle.bytes)
  renameSync(tmp, file)
  return file
}

/** Reads and decodes a genesis file; ConfigError naming the file if it is missing or does not decode. */
export function readGenesisFile (file: string): GenesisBundle {
  let bytes: Uint8Array
  try {
    bytes = new Uint8Array(readFileSync(file))
  } catch (err: any) {
    throw new ConfigError(`genesis file ${file}: ${err.code === 'ENOENT' ? 'does not exist' : `cannot read it: ${err.message}`}`)
  }
  try {
    return decodeGenesis(bytes)
  } catch (err: any) {
    throw new ConfigError(`genesis file ${file} is not a valid Soma genesis: ${err.message}`)
  }
}

/** The genesis file of a data dir, if there is one. */
export function findGenesisFile (dataDir: string): string | undefined {
  const file = genesisPath(dataDir)
  return existsSync(file) ? file : undefined
}
