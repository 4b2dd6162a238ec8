/** Temporary directories for tests: created under os.tmpdir() with the prefix soma-test-, removed after. */
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export function makeTmpDir (): string {
  return mkdtempSync(path.join(os.tmpdir(), 'soma-test-'))
}

export function removeDir (dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
}

/** A temp dir removed when the test (or suite) context `t` finishes. */
export function tmpDir (t: { after: (fn: () => void | Promise<void>) => void }): string {
  const dir = makeTmpDir()
  t.after(() => { removeDir(dir) })
  return dir
}
