/**
 * The namespace testnet's control agent. The host has no address on the testnet bridge, so the driver
 * (testnet/driver.ts) runs this in a control namespace on the bridge and asks it, over stdin/stdout,
 * to fetch URLs there (the nodes' /status):
 *
 *   in:  {"id": 1, "url": "http://10.77.0.10:7780/status", "timeoutMs": 3000}
 *   out: {"id": 1, "status": 200, "body": "..."}   or   {"id": 1, "error": "..."}
 *
 * One JSON object per line. It exits when stdin closes.
 */

import { onStdinLines } from './lines.ts'

interface Request { id: number, url: string, timeoutMs?: number }

async function handle (req: Request): Promise<void> {
  let reply: Record<string, unknown>
  try {
    const res = await fetch(req.url, { signal: AbortSignal.timeout(req.timeoutMs ?? 3000) })
    reply = { id: req.id, status: res.status, body: await res.text() }
  } catch (err: any) {
    reply = { id: req.id, error: err?.cause?.code ?? err?.message ?? String(err) }
  }
  process.stdout.write(JSON.stringify(reply) + '\n')
}

onStdinLines(line => {
  let req: Request
  try {
    req = JSON.parse(line) as Request
  } catch {
    return
  }
  void handle(req)
})
process.stdin.on('end', () => { process.exit(0) })
process.stdout.write(JSON.stringify({ ready: true }) + '\n')
