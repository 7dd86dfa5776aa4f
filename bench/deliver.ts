/**
 * `npm run bench:deliver` — the Facebook destination, in one run, on this machine:
 * 1. transform throughput on one core, hashing included (bench/transform.ts);
 * 2. end to end: HTTP batches → API → ingest workers → deliver workers → a fake Graph API
 *    (which validates every event like Meta), as fast as it goes: events/s delivered, the median
 *    of BENCH_ROUNDS runs (3);
 * 3. event-to-delivery latency p50/p95 at a steady 5,000 events/s;
 * 4. peak memory of the service process(es) and of Redis.
 * The service runs as BENCH_PROCESSES processes (default: one `api` and two `worker`s — the
 * fastest mix measured on 2 cores: a worker waits on Redis and Meta part of the time), each with
 * its own Node.js event loop, against its own redis-server (AOF everysec). Not a test: it prints.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { findOnPath, freePort, startRedisServer } from '../src/local-redis.js'
import { startFakeGraph } from '../test/fixtures/fake-graph.js'
import { compiled, SERVICE_NODE_FLAGS } from './service.js'
import { stopChildren } from './children.js'

const TOTAL = Number(process.env.BENCH_EVENTS ?? 300_000)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const BATCH = 500
const CONCURRENCY = 6
const STEADY_RATE = 5000
const STEADY_SECONDS = Number(process.env.BENCH_STEADY_SECONDS ?? 20)
const ROLES = (process.env.BENCH_PROCESSES ?? 'api,worker,worker').split(',')
const ADMIN_TOKEN = 'bench-admin-token-0123456789'
const DATASET = '794041057373779'

console.log('1. transform (one core, bench/transform.ts):')
console.log(execFileSync(process.execPath, ['--import', 'tsx', new URL('./transform.ts', import.meta.url).pathname, '100000'], { encoding: 'utf8' })
  .split('\n').filter((line) => /events\/s|heap/.test(line)).map((line) => '  ' + line.trim()).join('\n'))

const binary = findOnPath('redis-server')
if (binary === undefined) throw new Error('bench:deliver needs redis-server on PATH')
const dir = mkdtempSync(join(tmpdir(), 'relay-bench-deliver-'))
const redisServer = await startRedisServer({ binary, dir })
const probe = new Redis(redisServer.url)

let delivered = 0
let latencies: number[] = []
let measuring = false
const graph = await startFakeGraph({
  onBatch: (batch) => {
    delivered += batch.body.data.length
    if (measuring) {
      const now = Date.now()
      for (const event of batch.body.data) latencies.push(now - Number(event.custom_data.sent_ms))
    }
    graph.received.length = 0 // keep the fake's memory flat
  }
})

// The service compiled, as `npm start` runs it.
const [relayScript] = compiled('bench/relay-server.ts')

function start (role: string, port: number): Promise<{ child: ChildProcess, url: string }> {
  return new Promise((resolve, reject) => {
    const child = fork(relayScript, [], {
      env: {
        ...process.env,
        REDIS_URL: redisServer.url,
        ROLE: role,
        PORT: String(port),
        ADMIN_TOKEN,
        SECRET_KEY: 'bench-secret-key-0123456789abcdef0123456789',
        FACEBOOK_GRAPH_URL: graph.url,
        LOG_LEVEL: 'warn',
        RATE_LIMIT_EVENTS_PER_SECOND: '0',
        INGEST_MAX_BACKLOG_JOBS: '1000000'
      },
      // BENCH_CPU_PROF=<dir> writes a CPU profile of each service process.
      execArgv: [...SERVICE_NODE_FLAGS, ...(process.env.BENCH_CPU_PROF === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}/${role}`])],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    child.once('message', (m: any) => resolve({ child, url: m.url }))
    child.once('exit', (code) => reject(new Error(`relay ${role} exited with ${code}`)))
  })
}

// The fake Graph API's counter moves in its callback: poll it.
async function until (done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`not delivered within ${timeoutMs / 1000} s (${delivered} so far)`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function maxRss (child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('message', (m: any) => resolve(m.maxRss))
    child.send('memory')
  })
}

function track (i: number, sentMs: number) {
  const user = i % 20_000
  return {
    type: 'track',
    userId: `user-${user}`,
    event: i % 3 === 0 ? 'Product Added' : 'Order Completed',
    messageId: `bench-${sentMs}-${i}`,
    properties: { order_id: `o-${i}`, revenue: 39.95, price: 18.99, product_id: `p-${i % 500}`, currency: 'USD', sent_ms: sentMs },
    context: {
      traits: { email: `user-${user}@example.com`, phone: `401${String(1000000 + user).slice(-7)}`, firstName: 'Ham', lastName: 'Solo', address: { city: 'East Greenwich', state: 'RI', postalCode: '02818', country: 'USA' } }
    }
  }
}

const children: ChildProcess[] = []
try {
  const processes = await Promise.all(ROLES.map(async (role) => start(role, await freePort())))
  children.push(...processes.map((p) => p.child))
  const api = processes[ROLES.findIndex((role) => role !== 'worker')].url
  const admin = async (method: string, path: string, body?: unknown): Promise<any> => {
    const response = await fetch(api + path, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
    return response.status === 204 ? undefined : response.json()
  }
  const source = await admin('POST', '/v1/sources', { name: 'bench' })
  const destination = await admin('POST', `/v1/sources/${source.id}/destinations`, { type: 'facebook-offline-conversions', settings: { conversionEvents: { 'Order Completed': DATASET, 'Product Added': DATASET } } })
  await admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: 'test-token' })
  const auth = `Basic ${Buffer.from(`${source.writeKey}:`).toString('base64')}`
  const postBody = async (body: string) => {
    const response = await fetch(`${api}/v1/batch`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body })
    if (response.status !== 200) throw new Error(`ingestion answered ${response.status}: ${await response.text()}`)
  }
  const post = async (batch: unknown[]) => postBody(JSON.stringify({ batch, sentAt: new Date().toISOString() }))

  console.log(`\n2. end to end, ${ROLES.length} service process(es) (${ROLES.join(' + ')}), ${ROUNDS} runs of ${TOTAL.toLocaleString('en')} events in batches of ${BATCH}, ${CONCURRENCY} at a time:`)
  // Several runs on the same processes, and their median: this VM's speed drifts by tens of %
  // within minutes, and the first run also pays for the JIT's warm-up.
  const rates: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    // Request bodies are made before the clock starts (the load generator shares the 2 cores);
    // each run's events are new (messageIds), or the duplicate check would drop them.
    const offset = round * TOTAL
    const bodies: string[] = []
    for (let first = 0; first < TOTAL; first += BATCH) {
      bodies.push(JSON.stringify({ batch: Array.from({ length: Math.min(BATCH, TOTAL - first) }, (_, k) => track(offset + first + k, 0)), sentAt: new Date().toISOString() }))
    }
    let next = 0
    const target = delivered + TOTAL
    const started = Date.now()
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < bodies.length) await postBody(bodies[next++])
    }))
    const acceptedMs = Date.now() - started
    await until(() => delivered >= target, 600_000)
    const e2eMs = Date.now() - started
    rates.push(Math.round(TOTAL / e2eMs * 1000))
    console.log(`  run ${round + 1}: accepted in ${(acceptedMs / 1000).toFixed(1)} s (${Math.round(TOTAL / acceptedMs * 1000).toLocaleString('en')} events/s); all delivered to the fake Graph API in ${(e2eMs / 1000).toFixed(1)} s: ${rates[round].toLocaleString('en')} events/s end to end`)
  }
  const median = [...rates].sort((a, b) => a - b)[Math.floor(rates.length / 2)]
  console.log(`  median of ${ROUNDS} runs: ${median.toLocaleString('en')} events/s end to end (target ≥ 30,000)`)

  console.log(`\n3. latency at a steady ${STEADY_RATE.toLocaleString('en')} events/s for ${STEADY_SECONDS} s (batches of 50 every 10 ms):`)
  latencies = []
  measuring = true
  const steadyStart = Date.now()
  const before = delivered
  let sent = 0
  for (let tick = 0; Date.now() - steadyStart < STEADY_SECONDS * 1000; tick++) {
    const due = steadyStart + tick * 10
    const wait = due - Date.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    const first = ROUNDS * TOTAL + sent
    post(Array.from({ length: STEADY_RATE / 100 }, (_, k) => track(first + k, Date.now()))).catch((err) => console.error(err.message))
    sent += STEADY_RATE / 100
  }
  await until(() => delivered - before >= sent, 600_000)
  measuring = false
  latencies.sort((a, b) => a - b)
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]
  console.log(`  ${latencies.length.toLocaleString('en')} events: event-to-delivery p50 ${at(0.5)} ms, p95 ${at(0.95)} ms, p99 ${at(0.99)} ms (target p95 ≤ 2,000 ms)`)

  const stats = await admin('GET', `/v1/destinations/${destination.id}/stats`)
  console.log(`  destination stats: ${JSON.stringify(stats)}`)
  console.log('\n4. peak memory:')
  for (const [i, p] of processes.entries()) console.log(`  ${ROLES[i]} process: ${Math.round(await maxRss(p.child) / 1024)} MiB max RSS`)
  const info = await probe.info('memory')
  console.log(`  redis-server: ${(Number(/used_memory_peak:(\d+)/.exec(info)![1]) / 1048576).toFixed(0)} MiB peak used memory`)
} finally {
  await stopChildren(children)
  probe.disconnect()
  await graph.close()
  await redisServer.stop()
  rmSync(dir, { recursive: true, force: true })
}
