#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node
// The soma-sync executable: runs the compiled CLI (dist/src/cli/main.js, built by `npm run build`), with
// the node process's memory settings of src/node/runtime.ts on the line above (`env -S`: coreutils 8.30+).
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const compiled = new URL('../dist/src/cli/main.js', import.meta.url)
if (!existsSync(fileURLToPath(compiled))) {
  process.stderr.write('soma-sync is not built: run `npm run build` first (or run `node src/cli/main.ts` with Node >= 22.18)\n')
  process.exit(1)
}
const { main } = await import(compiled.href)
process.exit(await main(process.argv.slice(2)))
