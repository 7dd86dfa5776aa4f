/**
 * `npm run bench:ingest` — ingestion throughput and latency on this machine, in one run:
 * single `/v1/track` and `/v1/batch` (100 events) against the real service (`npm start`'s entry
 * point with ROLE=api, its own redis-server with AOF everysec), and the same bodies against a
 * bare Fastify route that only parses and validates. One process each for the ratios, the two
 * taking turns (the median of each; this VM's speed drifts); batches also with PROCESSES = the
 * machine's cores. Every request carries new client messageIds, as
 * analytics-node sends them, so every message goes through the duplicate check and is stored.
 * Prints events/s, p50/p99 and the ratios; then Redis bytes per remembered message id (dedup).
 * On Linux each run also prints where the CPU went, per request: the server, its Redis, the load
 * generator (this process), and how much of the machine stayed idle.
 * Both run compiled (bench/service.ts). Not a test: it prints figures.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { subjectFingerprint } from '../plugins/ingest-buffer.js'
import { AOF_REWRITE_MIN_SIZE, findOnPath, freePort, startRedisServer } from '../src/local-redis.js'
import { compiled, SERVICE_NODE_FLAGS } from './service.js'
import { stopChildren } from './children.js'

// `-- --cluster`: batches against a 3-primary Redis Cluster instead (bench/ingest-cluster.ts).
if (process.argv.includes('--cluster')) {
  await import('./ingest-cluster.js')
  process.exit(0)
}

// Seconds measured per path and server, split into ROUNDS turns.
const DURATION = Number(process.env.BENCH_SECONDS ?? 15)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const ADMIN_TOKEN = 'bench-admin-token-0123456789'
const PROCESSES = Number(process.env.BENCH_PROCESSES ?? availableParallelism())
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)

// CPU time from /proc (Linux; elsewhere the figures are left out). The three processes share the
// machine's cores, so the server's figure alone does not explain a throughput.
const TICKS_PER_SECOND = (() => {
  try { return Number(execFileSync('getconf', ['CLK_TCK']).toString()) || 100 } catch { return 100 }
})()
function processCpuMicros (pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 1e6 / TICKS_PER_SECOND
  } catch { return NaN }
}
/** The machine's idle and total CPU time, in ticks. */
function machineCpu (): { idle: number, total: number } {
  try {
    const ticks = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    return { idle: ticks[3] + ticks[4], total: ticks.reduce((a, b) => a + b, 0) }
  } catch { return { idle: NaN, total: NaN } }
}
interface CpuSnapshot { server: number, redis: number, load: NodeJS.CpuUsage, machine: { idle: number, total: number } }
function cpuSnapshot (serverPid?: number, redisPid?: number): CpuSnapshot {
  return { server: processCpuMicros(serverPid), redis: processCpuMicros(redisPid), load: process.cpuUsage(), machine: machineCpu() }
}
function cpuLine (before: CpuSnapshot, after: CpuSnapshot, requests: number): string {
  if (Number.isNaN(after.server)) return ''
  const load = process.cpuUsage(before.load)
  const perRequest = (micros: number) => (micros / requests).toFixed(1)
  const redis = Number.isNaN(after.redis) ? '' : `, its redis ${perRequest(after.redis - before.redis)}`
  const idle = 100 * (after.machine.idle - before.machine.idle) / (after.machine.total - before.machine.total)
  return `\n${''.padEnd(34)} CPU µs a request: server ${perRequest(after.server - before.server)}${redis}, load generator ${perRequest(load.user + load.system)}; machine ${idle.toFixed(0)} % idle`
}

function median<T extends { eventsPerSecond: number }> (runs: T[]): T {
  return [...runs].sort((a, b) => a.eventsPerSecond - b.eventsPerSecond)[Math.floor(runs.length / 2)]
}

function track (i: number) {
  return {
    userId: `user-${i % 5000}`,
    event: 'Order Completed',
    properties: { order_id: `o-${i}`, revenue: 39.95, currency: 'USD', products: [{ product_id: 'p1', price: 19.95 }, { product_id: 'p2', price: 20 }] },
    context: { traits: { email: `user-${i % 5000}@example.com`, phone: '4011234567' }, library: { name: '@segment/analytics-node', version: '3.1.0' } },
    timestamp: new Date().toISOString()
  }
}
// A body builder per path: each request gets new messageIds (`m-<request>-<index>`).
let requests = 0
function bodies (count: number | undefined): () => string {
  const template = count === undefined
    ? JSON.stringify({ messageId: '@', ...track(1) })
    : JSON.stringify({ batch: Array.from({ length: count }, (_, i) => ({ type: 'track', messageId: '@', ...track(i) })), sentAt: new Date().toISOString() })
  const parts = template.split('"@"')
  return () => {
    const request = requests++
    let body = parts[0]
    for (let i = 1; i < parts.length; i++) body += `"m-${request}-${i}"${parts[i]}`
    return body
  }
}
const singleBody = bodies(undefined)
const batchBody = bodies(100)

/** The service as `npm start` runs it (src/server.ts), answering once /ready does. */
async function startService (env: Record<string, string>): Promise<{ child: ChildProcess, url: string }> {
  const port = await freePort()
  const child = spawn(process.execPath, [...SERVICE_NODE_FLAGS, serverScript], {
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const url = `http://127.0.0.1:${port}`
  for (let tries = 0; ; tries++) {
    if ((await fetch(`${url}/ready`).catch(() => undefined))?.status === 200) return { child, url }
    if (child.exitCode !== null || tries > 300) throw new Error('the service did not start')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

function start (script: string, env: Record<string, string>): Promise<{ child: ChildProcess, url: string }> {
  return new Promise((resolve, reject) => {
    const child = fork(script, [], {
      env: { ...process.env, ...env },
      // Not this process's flags: it runs through tsx, the bare route runs compiled.
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc']
    })
    child.once('message', (m: any) => resolve({ child, url: m.url }))
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)))
  })
}

type Run = Awaited<ReturnType<typeof run>>

/** `pids`: the server's process and its Redis, for the CPU figures (a cluster's workers are not counted). */
async function run (name: string, url: string, path: string, body: () => string, events: number, writeKey?: string, duration = DURATION, pids: { server?: number, redis?: number } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (writeKey !== undefined) headers.authorization = `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`
  const requests = [{ setupRequest: (request: any) => ({ ...request, body: body() }) }]
  // Warm-up, then the measured run.
  await autocannon({ url: url + path, method: 'POST', headers, requests, connections: CONNECTIONS, duration: 2 })
  const before = cpuSnapshot(pids.server, pids.redis)
  const result = await autocannon({ url: url + path, method: 'POST', headers, requests, connections: CONNECTIONS, duration })
  const after = cpuSnapshot(pids.server, pids.redis)
  const ok = result['2xx']
  const failed = result.non2xx + result.errors + result.timeouts
  const row = {
    name,
    requestsPerSecond: Math.round(ok / duration),
    eventsPerSecond: Math.round((ok * events) / duration),
    p50: result.latency.p50,
    p99: result.latency.p99,
    failed
  }
  console.log(`${name.padEnd(34)} ${String(row.eventsPerSecond).padStart(9)} events/s  ${String(row.requestsPerSecond).padStart(7)} req/s  p50 ${row.p50} ms  p99 ${row.p99} ms${failed > 0 ? `  (${failed} non-2xx/errors)` : ''}${cpuLine(before, after, ok)}`)
  return row
}

const binary = findOnPath('redis-server')
if (binary === undefined) throw new Error('bench:ingest needs redis-server on PATH')
// The service as `npm start` runs it, compiled; the bare route compiled the same way.
const [serverScript, bareScript] = compiled('src/server.ts', 'bench/bare-server.ts')
const dir = mkdtempSync(join(tmpdir(), 'relay-bench-'))
// The local Redis's AOF rewrite bound as `npm start` sets it; BENCH_AOF_REWRITE_MIN_SIZE (e.g. 1gb)
// measures another (docs/operations.md: what a lower bound costs).
const aofRewriteMinSize = process.env.BENCH_AOF_REWRITE_MIN_SIZE ?? AOF_REWRITE_MIN_SIZE
const redisServer = await startRedisServer({ binary, dir, aofRewriteMinSize })
const redis = new Redis(redisServer.url)
const children: ChildProcess[] = []
// The service runs without workers (ROLE=api): between runs the stored jobs and their bodies are
// dropped, as workers would have taken them, so that a run does not pay for the Redis data of the
// one before (kept, the bodies grew Redis by a gigabyte a minute of batches, and its AOF rewrite
// forked that).
const ingestQueue = new Queue('ingest', { connection: redis, prefix: '{relay}' })
async function drainIngest () {
  await ingestQueue.drain()
  for await (const keys of redis.scanStream({ match: 'relay:ingest-body:*', count: 1000 })) {
    if ((keys as string[]).length > 0) await redis.unlink(...keys as string[])
  }
}
try {
  console.log(`ingestion benchmark: ${CONNECTIONS} connections, ${ROUNDS} turns of ${DURATION / ROUNDS} s for each server, node ${process.version}, redis-server with AOF everysec, rewritten past ${aofRewriteMinSize}`)
  const env = {
    REDIS_URL: redisServer.url,
    ROLE: 'api',
    ADMIN_TOKEN,
    SECRET_KEY: 'bench-secret-key-0123456789abcdef0123456789',
    LOG_LEVEL: 'warn',
    RATE_LIMIT_EVENTS_PER_SECOND: '0',
    INGEST_MAX_BACKLOG_JOBS: '100000000'
  }
  const relay = await startService({ ...env, PROCESSES: '1' })
  children.push(relay.child)
  const bare = await start(bareScript, {})
  children.push(bare.child)
  const created = await fetch(`${relay.url}/v1/sources`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bench' }) })
  const source = await created.json() as { id: string, writeKey: string }
  // BENCH_SUPPRESSED=1: the source has a suppressed subject (not one the bench sends), so every
  // request carries its messages' ids to the flush, which looks them up (regulations).
  if (process.env.BENCH_SUPPRESSED === '1') {
    await redis.sadd(`relay:suppressed:{${source.id}}`, Buffer.from(subjectFingerprint('u', 'someone-suppressed'), 'latin1'))
    console.log('the source has a suppressed subject: every message\'s ids are looked up in the flush')
  }

  // This VM's speed drifts by tens of % within minutes: the bare route and the relay take turns,
  // ROUNDS runs each, and the ratio is of their medians — not of two runs minutes apart.
  // Each turn's ratio is printed too: their spread is the measurement's.
  const turns = async (label: string, path: string, body: () => string, events: number) => {
    const bareRuns: Run[] = []
    const relayRuns: Run[] = []
    for (let round = 0; round < ROUNDS; round++) {
      bareRuns.push(await run(`bare fastify  ${label}`, bare.url, path, body, events, undefined, DURATION / ROUNDS, { server: bare.child.pid }))
      relayRuns.push(await run(`relay         ${label}`, relay.url, path, body, events, source.writeKey, DURATION / ROUNDS, { server: relay.child.pid, redis: redisServer.process.pid }))
      await drainIngest()
    }
    const ratios = relayRuns.map((r, i) => `${(100 * r.eventsPerSecond / bareRuns[i].eventsPerSecond).toFixed(0)} %`).join(', ')
    return { bare: median(bareRuns), relay: median(relayRuns), ratios }
  }
  const { bare: bareSingle, relay: relaySingle, ratios: singleRatios } = await turns('/v1/track', '/v1/track', singleBody, 1)
  const { bare: bareBatch, relay: relayBatch } = await turns('/v1/batch x100', '/v1/batch', batchBody, 100)
  await stopChildren([relay.child])
  const cluster = await startService({ ...env, PROCESSES: String(PROCESSES) })
  children.push(cluster.child)
  const clusterBatch = await run(`relay ×${PROCESSES}      /v1/batch x100`, cluster.url, '/v1/batch', batchBody, 100, source.writeKey)

  console.log()
  console.log(`medians of ${ROUNDS} turns: bare /v1/track ${bareSingle.eventsPerSecond}, relay ${relaySingle.eventsPerSecond} events/s (p99 ${relaySingle.p99} ms); bare /v1/batch x100 ${bareBatch.eventsPerSecond}, relay ${relayBatch.eventsPerSecond} events/s`)
  console.log(`single /v1/track: ${(100 * relaySingle.eventsPerSecond / bareSingle.eventsPerSecond).toFixed(0)} % of the bare route, one process each (target ≥ 60 %; turn by turn ${singleRatios}), p99 ${relaySingle.p99} ms (target < 25 ms)`)
  const best = Math.max(relayBatch.eventsPerSecond, clusterBatch.eventsPerSecond)
  console.log(`/v1/batch x100:   ${best} events/s accepted (target ≥ 100,000): one process ${relayBatch.eventsPerSecond} (${(100 * relayBatch.eventsPerSecond / bareBatch.eventsPerSecond).toFixed(0)} % of the bare route), PROCESSES=${PROCESSES} ${clusterBatch.eventsPerSecond}`)

  const relayUrl = cluster.url
  const statsResponse = await fetch(`${relayUrl}/v1/sources/${source.id}/stats`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  const stats = await statsResponse.json() as Record<string, number>
  const prefix = 'relay'
  const dedupKeys = [`${prefix}:dedup:{${source.id}}:cur`, `${prefix}:dedup:{${source.id}}:prev`]
  let ids = 0
  let bytes = 0
  for (const key of dedupKeys) {
    ids += await redis.scard(key)
    bytes += Number(await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') ?? 0)
  }
  console.log(`stats: ${JSON.stringify(stats)}`)
  const persistence = await redis.info('persistence')
  const aofRewrites = /aof_rewrites:(\d+)/.exec(persistence)?.[1] ?? '?'
  console.log(`AOF: rewritten ${aofRewrites} times past ${aofRewriteMinSize} (processed bodies stay readable in the file until a rewrite)`)
  console.log(`dedup: ${ids} message ids remembered in ${(bytes / 1048576).toFixed(1)} MiB = ${(bytes / Math.max(ids, 1)).toFixed(1)} bytes per id`)
} finally {
  await stopChildren(children)
  await ingestQueue.close()
  redis.disconnect()
  await redisServer.stop()
  rmSync(dir, { recursive: true, force: true })
}
