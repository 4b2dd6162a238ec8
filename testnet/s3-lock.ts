/**
 * The s3 service's image (testnet/Dockerfile.s3) installs s3rver, a devDependency, and only it: this
 * cuts the project's package-lock.json down to s3rver and the packages it needs (~120 of ~1,000), at
 * the same locked versions, paths and integrity hashes, so that `npm ci` there installs exactly what the
 * project's tests run s3rver with, quickly.
 *
 *   node testnet/s3-lock.ts <package-lock.json> <out dir>     writes <out dir>/package.json and package-lock.json
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

interface LockEntry {
  version?: string
  dev?: boolean
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  [key: string]: unknown
}
interface Lock { name?: string, lockfileVersion: number, packages: Record<string, LockEntry>, [key: string]: unknown }

/** Where `dep`, needed by the package at `from` (a lock path), is installed: node's resolution upwards. */
function resolve (packages: Lock['packages'], from: string, dep: string): string | undefined {
  let base = from
  while (true) {
    const candidate = `${base === '' ? '' : `${base}/`}node_modules/${dep}`
    if (packages[candidate] !== undefined) return candidate
    if (base === '') return undefined
    const i = base.lastIndexOf('/node_modules/')
    base = i < 0 ? '' : base.slice(0, i)
  }
}

/** The lock of a project that depends on `pkg` alone: `pkg` and every package it needs, as locked. */
export function subsetLock (lock: Lock, pkg: string): { packageJson: Record<string, unknown>, lock: Lock } {
  if (lock.lockfileVersion < 2) throw new Error(`package-lock.json: lockfileVersion ${lock.lockfileVersion}, need 2 or 3 (a "packages" map)`)
  const root = `node_modules/${pkg}`
  const top = lock.packages[root]
  if (top?.version === undefined) throw new Error(`package-lock.json has no ${root}`)
  const keep = new Set<string>()
  const todo = [root]
  while (todo.length > 0) {
    const at = todo.pop()!
    if (keep.has(at)) continue
    keep.add(at)
    const e = lock.packages[at]
    for (const dep of Object.keys({ ...e.dependencies, ...e.optionalDependencies })) {
      const found = resolve(lock.packages, at, dep)
      if (found === undefined) {
        if (e.optionalDependencies?.[dep] !== undefined) continue
        throw new Error(`package-lock.json: ${dep}, a dependency of ${at}, is not in the lock`)
      }
      todo.push(found)
    }
  }
  const dependencies = { [pkg]: top.version }
  const packages: Lock['packages'] = { '': { name: `${pkg}-only`, dependencies } }
  for (const k of [...keep].sort()) {
    const { dev: _dev, ...entry } = lock.packages[k]
    packages[k] = entry
  }
  return {
    packageJson: { name: `${pkg}-only`, private: true, type: 'module', dependencies },
    lock: { name: `${pkg}-only`, lockfileVersion: lock.lockfileVersion, requires: true, packages }
  }
}

if (import.meta.main) {
  const [lockPath, outDir] = process.argv.slice(2)
  if (lockPath === undefined || outDir === undefined) {
    process.stderr.write('usage: node testnet/s3-lock.ts <package-lock.json> <out dir>\n')
    process.exit(2)
  }
  const { packageJson, lock } = subsetLock(JSON.parse(readFileSync(lockPath, 'utf8')) as Lock, 's3rver')
  mkdirSync(outDir, { recursive: true })
  writeFileSync(path.join(outDir, 'package.json'), JSON.stringify(packageJson, null, 2) + '\n')
  writeFileSync(path.join(outDir, 'package-lock.json'), JSON.stringify(lock, null, 2) + '\n')
  process.stdout.write(`${path.join(outDir, 'package-lock.json')}: s3rver ${String(packageJson.dependencies && (packageJson.dependencies as any).s3rver)} and ${Object.keys(lock.packages).length - 2} packages it needs\n`)
}
