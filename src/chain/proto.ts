/**
 * Loads the `.proto` files in `protocols/` (the one source of truth for the wire and the disk) with
 * protobufjs reflection, and exposes typed codecs for them.
 *
 * A codec has the `{ encode, decode }` shape that `@libp2p/utils`' `pbStream` expects.
 */
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import type { Uint8ArrayList } from 'uint8arraylist'
import { MalformedMessageError } from '../errors.ts'

const require = createRequire(import.meta.url)
// protobufjs is CommonJS; the full build (with the .proto parser) is its main entry.
const protobuf = require('protobufjs') as typeof import('protobufjs')

// 64-bit integers decode as JS numbers, never Long objects. Values above 2^53-1 are refused in decode().
protobuf.util.Long = null as any
protobuf.configure()

const here = path.dirname(fileURLToPath(import.meta.url))

/** Finds `protocols/` whether we run from `src/` (TypeScript) or `dist/src/` (compiled). */
function protocolsDir (): string {
  const candidates = [path.resolve(here, '../../protocols'), path.resolve(here, '../../../protocols')]
  for (const c of candidates) {
    try {
      require('node:fs').accessSync(path.join(c, 'chain.proto'))
      return c
    } catch {}
  }
  throw new Error(`cannot find the protocols/ folder near ${here}`)
}

export const PROTOCOLS_DIR = protocolsDir()

const root = new protobuf.Root()
root.resolvePath = (_origin: string, target: string) => path.isAbsolute(target) ? target : path.join(PROTOCOLS_DIR, target)
root.loadSync(['chain.proto', 'sync.proto', 'snapshot.proto', 'archive.proto'].filter(f => {
  try { require('node:fs').accessSync(path.join(PROTOCOLS_DIR, f)); return true } catch { return false }
}), { keepCase: false })
root.resolveAll()

// protobufjs' default for an absent `bytes` field is a plain empty array; make it an empty Uint8Array
// so that every bytes field is a Uint8Array whether or not it was on the wire.
const EMPTY_BYTES = new Uint8Array(0)
function fixBytesDefaults (ns: any): void {
  for (const nested of ns.nestedArray ?? []) {
    if (nested instanceof protobuf.Type) {
      for (const f of nested.fieldsArray) {
        if (f.type === 'bytes' && !f.repeated) (nested.ctor.prototype as any)[f.name] = EMPTY_BYTES
      }
    }
    fixBytesDefaults(nested)
  }
}
fixBytesDefaults(root)

export interface Codec<T> {
  readonly name: string
  encode: (value: T) => Uint8Array
  decode: (data: Uint8Array | Uint8ArrayList) => T
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER

/**
 * Returns a typed codec for a message of `protocols/*.proto`, e.g. `codec<Block>('soma.Block')`.
 * decode() throws MalformedMessageError naming the message type on any malformed input.
 */
export function codec<T> (typeName: string): Codec<T> {
  const type = root.lookupType(typeName)
  const shortName = typeName.split('.').pop() ?? typeName
  return {
    name: shortName,
    encode (value: T): Uint8Array {
      return type.encode(value as any).finish()
    },
    decode (data: Uint8Array | Uint8ArrayList): T {
      const bytes = data instanceof Uint8Array ? data : data.subarray()
      let msg: any
      try {
        msg = type.decode(bytes)
      } catch (err: any) {
        throw new MalformedMessageError(`malformed ${shortName}: ${err.message}`)
      }
      checkLongs(type, msg, shortName)
      return msg as T
    }
  }
}

const LONG_TYPES = new Set(['uint64', 'int64', 'sint64', 'fixed64', 'sfixed64'])

/** The fields of a message type that checkLongs looks at: 64-bit integers and nested messages. */
interface LongField { name: string, map: boolean, repeated: boolean, long: boolean, type?: any }

/** Per message type, its LongFields (worked out once: decoding is on the hot path of sync). */
const longFields = new Map<any, LongField[]>()

function longFieldsOf (type: any): LongField[] {
  let fields = longFields.get(type)
  if (fields === undefined) {
    fields = []
    for (const f of type.fieldsArray) {
      f.resolve()
      const long = LONG_TYPES.has(f.type)
      if (long || f.resolvedType instanceof protobuf.Type) fields.push({ name: f.name, map: f.map === true, repeated: f.repeated === true, long, type: long ? undefined : f.resolvedType })
    }
    longFields.set(type, fields)
  }
  return fields
}

function checkLong (x: any, f: LongField, where: string): void {
  if (f.long) {
    if (!Number.isSafeInteger(x)) throw new MalformedMessageError(`malformed ${where}: ${f.name} ${x} is beyond 2^53-1`)
  } else {
    checkLongs(f.type, x, where)
  }
}

/** Refuses 64-bit values beyond 2^53-1 anywhere in a decoded message (they would have lost precision). */
function checkLongs (type: any, msg: any, where: string): void {
  for (const f of longFieldsOf(type)) {
    const v = msg[f.name]
    if (v == null) continue
    if (f.map) {
      for (const x of Object.values(v)) checkLong(x, f, where)
    } else if (f.repeated) {
      for (let i = 0; i < v.length; i++) checkLong(v[i], f, where)
    } else {
      checkLong(v, f, where)
    }
  }
}

/** Throws if any 64-bit field decoded above 2^53-1 (protobufjs then loses precision). */
export function checkSafeInteger (value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0 || value > MAX_SAFE) {
    throw new MalformedMessageError(`${what} is not a non-negative safe integer: ${value}`)
  }
  return value
}

export { root as protoRoot }
