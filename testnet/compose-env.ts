/**
 * Prints shell assignments of the docker-compose.yml host port variables (SOMA_TESTNET_<NODE>_STATUS_PORT),
 * each the file's default port when it is free on 127.0.0.1, else a free one; scripts/testnet-docker
 * evals them, so the testnet does not clash with anything listening on 7780-7784.
 *
 *   eval "$(node testnet/compose-env.ts)"
 */
import { createServer } from 'node:net'
import { hostPortVariable } from './compose.ts'
import { testnetNodes } from './topology.ts'

async function tryListen (port: number): Promise<number | undefined> {
  return await new Promise(resolve => {
    const s = createServer()
    s.once('error', () => { resolve(undefined) })
    s.listen(port, '127.0.0.1', () => {
      const a = s.address()
      s.close(() => { resolve(typeof a === 'object' && a !== null ? a.port : undefined) })
    })
  })
}

const taken = new Set<number>()
for (const n of testnetNodes()) {
  let port = await tryListen(n.hostStatusPort)
  while (port === undefined || taken.has(port)) port = await tryListen(0)
  taken.add(port)
  process.stdout.write(`export ${hostPortVariable(n.name)}=${port}\n`)
}
