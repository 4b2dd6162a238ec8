/**
 * scripts/testnet-docker's helpers, without Docker: `bounded` (its deadline wrapper) must leave a command
 * in the terminal's foreground process group (timeout --foreground), or the kernel stops it (state T) as
 * soon as it reads the terminal, as apt-get did; `apt_install` prints what apt-get set up.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { tmpDir } from '../helpers/tmp.ts'

const SCRIPT = fileURLToPath(new URL('../../scripts/testnet-docker', import.meta.url))

/** The shell functions `names` as the script defines them (each from `name() {` to its closing `}`). */
function functions (...names: string[]): string {
  const text = readFileSync(SCRIPT, 'utf8')
  return names.map(n => {
    const m = new RegExp(`^${n}\\(\\) \\{[\\s\\S]*?^\\}$`, 'm').exec(text)
    assert.ok(m !== null, `scripts/testnet-docker defines ${n}()`)
    return m[0]
  }).join('\n')
}

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0

test('bounded: a command that reads the terminal is not stopped (timeout --foreground)', { timeout: 60_000, skip: hasScript ? false : 'util-linux `script` (a pseudo-terminal) is not installed' }, t => {
  const dir = tmpDir(t)
  const body = `set -u\n${functions('log', 'bounded')}\nDEADLINE=$(( $(date +%s) + 12 ))\n` +
    // reads the terminal (stdin is the pty): a background process group would get SIGTTIN and stop
    // until timeout kills it at the deadline (rc 124)
    `bounded bash -c 'read -t 2 line; echo "read returned"'\necho "bounded rc=$?"\n`
  const file = path.join(dir, 'bounded.sh')
  writeFileSync(file, body)
  const t0 = Date.now()
  // `script` runs bash on a new pseudo-terminal, as a person's terminal would
  const r = spawnSync('script', ['-qec', `bash ${file}`, '/dev/null'], { encoding: 'utf8', timeout: 25_000, stdio: ['ignore', 'pipe', 'pipe'] })
  const elapsed = Date.now() - t0
  assert.match(r.stdout, /read returned/, `stdout: ${r.stdout} stderr: ${r.stderr}`)
  assert.match(r.stdout, /bounded rc=0/)
  assert.ok(elapsed < 10_000, `took ${elapsed} ms: the command was stopped until the deadline`)
})

test('apt_install prints each package apt-get set up, and apt-get\'s output when it fails', t => {
  const dir = tmpDir(t)
  const bin = path.join(dir, 'bin')
  spawnSync('mkdir', ['-p', bin])
  writeFileSync(path.join(bin, 'apt-get'), '#!/bin/sh\n[ -t 0 ] && { echo "apt-get was given the terminal" >&2; exit 9; }\n' +
    'if [ "$FAIL" = 1 ]; then echo "E: Unable to locate package $4"; exit 100; fi\n' +
    'echo "Unpacking docker.io (20.10.24+dfsg1-1+b3) ..."\necho "Setting up docker.io (20.10.24+dfsg1-1+b3) ..."\necho "Setting up docker-compose (1.29.2-3) ..."\n')
  chmodSync(path.join(bin, 'apt-get'), 0o755)
  const run = (fail: boolean): ReturnType<typeof spawnSync> => spawnSync('bash', ['-c', `set -u\nWORK=${dir}\n${functions('log', 'die', 'bounded', 'apt_install')}\nDEADLINE=$(( $(date +%s) + 30 ))\napt_install docker.io docker-compose`],
    { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, FAIL: fail ? '1' : '0' }, timeout: 20_000 })
  const ok = run(false)
  assert.equal(ok.status, 0, String(ok.stderr))
  assert.match(String(ok.stdout), /\[testnet-docker\] installed: docker\.io 20\.10\.24\+dfsg1-1\+b3, docker-compose 1\.29\.2-3$/m)
  const bad = run(true)
  assert.equal(bad.status, 1)
  assert.match(String(bad.stdout), /E: Unable to locate package/)
  assert.match(String(bad.stdout), /ERROR: apt-get install docker\.io docker-compose failed/)
})
