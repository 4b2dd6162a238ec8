#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node
// The soma-sync executable: runs the compiled CLI (dist/src/cli/main.js, built by `npm run build`), with
// the node process's memory settings of src/node/runtime.ts on the line above (`env -S`: coreutils 8.30+).
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

// soma-sync needs Node.js 22 or newer (Promise.withResolvers, Error.isError, …): say so before anything
// else fails with an obscure error. This file itself runs on any Node.js with ES modules.
const major = Number(process.versions.node.split('.')[0])
if (!(major >= 22)) {
  process.stderr.write(`error: soma-sync needs Node.js >= 22; this is Node.js ${process.version} (${process.execPath}). Install Node.js 22 or newer, or put it first in PATH.\n`)
  process.exit(2)
}

const compiled = new URL('../dist/src/cli/main.js', import.meta.url)
if (!existsSync(fileURLToPath(compiled))) {
  process.stderr.write('soma-sync is not built: run `npm run build` first (or run `node src/cli/main.ts` with Node >= 22.18)\n')
  process.exit(1)
}
const { main } = await import(compiled.href)
process.exit(await main(process.argv.slice(2)))
