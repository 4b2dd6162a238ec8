// `node --import ./examples/resolve-soma-sync.ts examples/<program>.ts`: runs an example from this
// checkout, with `import … from 'soma-sync'` resolved to src/index.ts (an installed package resolves it
// to its compiled dist/ itself). The test suite runs the examples this way.
import { registerHooks } from 'node:module'

const INDEX = new URL('../src/index.ts', import.meta.url).href

registerHooks({
  resolve (specifier, context, nextResolve) {
    return nextResolve(specifier === 'soma-sync' ? INDEX : specifier, context)
  }
})
