import { execFileSync } from 'node:child_process'
import { createRequire } from 'node:module'

/**
 * The Node.js flags `npm start` runs the service with (package.json's `start` script), so that
 * the benchmarks measure the service as it runs. A 32 MB young generation (16 MB by default)
 * halves the scavenges of the parse-heavy hot paths: about 10 % more events a second.
 */
export const SERVICE_NODE_FLAGS = ['--max-semi-space-size=32']

const root = new URL('..', import.meta.url)

/**
 * Compiles the service and the benchmarks' server scripts (tsconfig.bench.json) and gives the
 * compiled path of each script asked for. The benchmarks run the JavaScript that `npm start`
 * runs: run through tsx, the same service used ~10 % more CPU a request.
 */
export function compiled (...scripts: string[]): string[] {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  execFileSync(process.execPath, [tsc, '-p', new URL('tsconfig.bench.json', root).pathname], { stdio: 'inherit' })
  return scripts.map((script) => new URL(`dist/${script.replace(/\.ts$/, '.js')}`, root).pathname)
}
