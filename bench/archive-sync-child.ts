/**
 * Child process of bench/archive-sync.ts:
 *   serve-http <archiveDir>   serve an archive directory read-only over HTTP on 127.0.0.1 (prints
 *                             `LISTEN <url>`), until stdin closes
 */
import { ArchiveHttpServer } from '../src/archive/http-server.ts'

const [mode, dir] = process.argv.slice(2)
if (mode !== 'serve-http' || dir === undefined) {
  process.stderr.write('usage: archive-sync-child.ts serve-http <archiveDir>\n')
  process.exit(2)
}
const server = new ArchiveHttpServer({ dir, host: '127.0.0.1', port: 0 })
await server.start()
process.stdout.write(`LISTEN ${server.url}\n`)
process.stdin.resume()
process.stdin.on('end', () => { void server.stop().then(() => process.exit(0)) })
