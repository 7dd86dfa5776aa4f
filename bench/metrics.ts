// What the per-request metrics cost: the HTTP histogram's observation (prom-client's own
// `labels(…).observe()` against the prebound series plugins/metrics.ts keeps), the whole onResponse
// hook a route gets, alone and run by Fastify's hook runner, and a bound counter's inc (ingestion
// counts per flush and source, not per request). Best of five runs of 2,000,000 each.
// Run: npm run bench:metrics   (a few seconds on one core; no Redis)
import { createRequire } from 'node:module'
import Fastify, { type FastifyReply, type FastifyRequest, type onResponseHookHandler } from 'fastify'
import { Counter, Histogram, Registry } from 'prom-client'
import metricsPlugin, { PreboundHistogram } from '../plugins/metrics.js'

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const OPS = 2_000_000

function nsPerOp (fn: (i: number) => void, ops = OPS): number {
  for (let i = 0; i < 200_000; i++) fn(i)
  let best = Infinity
  for (let run = 0; run < 5; run++) {
    const started = process.hrtime.bigint()
    for (let i = 0; i < ops; i++) fn(i)
    best = Math.min(best, Number(process.hrtime.bigint() - started) / ops)
  }
  return best
}

const registry = new Registry()
const library = new Histogram({ name: 'library_seconds', help: 'h', labelNames: ['route', 'method', 'status'], buckets: BUCKETS, registers: [registry] })
const libraryChild = library.labels('/v1/track', 'POST', '200')
const prebound = new PreboundHistogram('prebound_seconds', 'h', ['route', 'method', 'status'], BUCKETS).series('/v1/track', 'POST', '200')
const counter = new Counter({ name: 'c_total', help: 'c', labelNames: ['source', 'outcome'], registers: [registry] }).labels('src_1', 'accepted')
// Latencies as ingestion sees them: mostly under a millisecond.
const latency = (i: number) => (i % 97) / 50_000

// The hook plugins/metrics.ts gives a route, taken from the route's options.
const app = Fastify({ logger: false })
await app.register(metricsPlugin)
let hook: onResponseHookHandler | undefined
app.addHook('onRoute', (route) => { if (route.url === '/v1/track') hook = [route.onResponse].flat().at(-1) as onResponseHookHandler })
app.post('/v1/track', async () => ({ success: true }))
await app.ready()
// A reply as Fastify's is when onResponse hooks run: its clock already stopped at 'finish'.
class FinishedReply {
  statusCode = 200
  start = performance.now()
  end = this.start + 0.4
  get elapsedTime () { return this.end - this.start }
}
const fakeRequest = { method: 'POST' } as FastifyRequest
const fakeReply = new FinishedReply() as unknown as FastifyReply
const done = () => {}
// Fastify's own runner of onResponse hooks (an internal module: for this measure only). A route
// without any onResponse hook skips it.
const { onResponseHookRunner } = createRequire(import.meta.url)('fastify/lib/hooks.js') as {
  onResponseHookRunner: (hooks: onResponseHookHandler[], request: FastifyRequest, reply: FastifyReply, cb: () => void) => void
}

// As Fastify keeps a route's hooks: bound to the instance, in an array made once.
const routeHooks = [hook!.bind(app)]

const rows: Array<[string, number]> = [
  ['prom-client histogram, labels(…) bound once, observe()', nsPerOp((i) => libraryChild.observe(latency(i)))],
  ['prom-client histogram, observe({labels}, v)', nsPerOp((i) => library.observe({ route: '/v1/track', method: 'POST', status: '200' }, latency(i)))],
  ['prebound series observe() (plugins/metrics.ts)', nsPerOp((i) => prebound.observe(latency(i)))],
  ['the route\'s onResponse hook (status lookup, elapsedTime, observe)', nsPerOp(() => hook!.call(app, fakeRequest, fakeReply, done))],
  ['the same, run by Fastify\'s onResponse hook runner', nsPerOp(() => onResponseHookRunner(routeHooks, fakeRequest, fakeReply, done))],
  ['prom-client counter, labels(…) bound once, inc(n) (per flush and source)', nsPerOp(() => counter.inc(3))]
]
for (const [name, ns] of rows) console.log(`${ns.toFixed(1).padStart(8)} ns  ${name}`)

await app.close()
