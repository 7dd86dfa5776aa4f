/**
 * `npm run bench:ingest -- --cluster` — batches of 100 against a 3-primary Redis Cluster on
 * loopback (REDIS_CLUSTER_NODES, 16 ingest partitions) and against one redis-server, the two
 * services taking turns (the median of each: this VM's speed drifts). Prints events/s, the cluster's
 * throughput as a ratio to one Redis's in the same run, and, from each primary's INFO
 * commandstats (reset before each cluster turn, summed over the turns), the share of the commands
 * each primary served. One service process each (ROLE=api: the jobs are dropped between turns, as
 * workers would take them). On this 2-core machine the three primaries share the cores with the
 * service and the load generator. Not a test: it prints figures.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { redisKeys } from '../src/keys.js'
import { findOnPath, freePort, startRedisServer } from '../src/local-redis.js'
import { connectRedis, parseClusterNodes, primariesOf, scanKeys, type RedisClient } from '../src/redis-client.js'
import { startTestRedisCluster } from '../test/helpers/redis-cluster.js'
import { stopChildren } from './children.js'
import { compiled, SERVICE_NODE_FLAGS } from './service.js'

const DURATION = Number(process.env.BENCH_SECONDS ?? 15)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const PARTITIONS = Number(process.env.BENCH_PARTITIONS ?? 16)
const ADMIN_TOKEN = 'bench-admin-token-0123456789'

let requests = 0
const template = JSON.stringify({
  batch: Array.from({ length: 100 }, (_, i) => ({
    type: 'track',
    messageId: '@',
    userId: `user-${i}`,
    event: 'Order Completed',
    properties: { order_id: `o-${i}`, revenue: 39.95, currency: 'USD', products: [{ product_id: 'p1', price: 19.95 }, { product_id: 'p2', price: 20 }] },
    context: { traits: { email: `user-${i}@example.com`, phone: '4011234567' }, library: { name: '@segment/analytics-node', version: '3.1.0' } },
    timestamp: new Date().toISOString()
  })),
  sentAt: new Date().toISOString()
}).split('"@"')
function batchBody (): string {
  const request = requests++
  let body = template[0]
  for (let i = 1; i < template.length; i++) body += `"m-${request}-${i}"${template[i]}`
  return body
}

async function startService (env: Record<string, string>): Promise<{ child: ChildProcess, url: string }> {
  const port = await freePort()
  const child = spawn(process.execPath, [...SERVICE_NODE_FLAGS, serverScript], { env: { ...process.env, ...env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  for (let tries = 0; ; tries++) {
    if ((await fetch(`${url}/ready`).catch(() => undefined))?.status === 200) return { child, url }
    if (child.exitCode !== null || tries > 300) throw new Error('the service did not start')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function createSource (url: string): Promise<{ id: string, writeKey: string }> {
  const response = await fetch(`${url}/v1/sources`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bench' }) })
  if (response.status !== 201) throw new Error(`could not create a source: ${response.status} ${await response.text()}`)
  return await response.json() as { id: string, writeKey: string }
}

async function run (name: string, url: string, writeKey: string): Promise<number> {
  const headers = { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}` }
  const requests = [{ setupRequest: (request: any) => ({ ...request, body: batchBody() }) }]
  const duration = DURATION / ROUNDS
  await autocannon({ url: `${url}/v1/batch`, method: 'POST', headers, requests, connections: CONNECTIONS, duration: 2 })
  const result = await autocannon({ url: `${url}/v1/batch`, method: 'POST', headers, requests, connections: CONNECTIONS, duration })
  const eventsPerSecond = Math.round(result['2xx'] * 100 / duration)
  const failed = result.non2xx + result.errors + result.timeouts
  console.log(`${name.padEnd(24)} ${String(eventsPerSecond).padStart(9)} events/s  p50 ${result.latency.p50} ms  p99 ${result.latency.p99} ms${failed > 0 ? `  (${failed} non-2xx/errors)` : ''}`)
  return eventsPerSecond
}

/** Drops the stored jobs and bodies (ROLE=api has no workers), key by key: a cluster's keys are in many slots. */
async function drain (redis: RedisClient, queues: Queue[]): Promise<void> {
  for (const queue of queues) await queue.drain()
  for await (const keys of scanKeys(redis, 'relay:ingest-body:*')) await Promise.all(keys.map((key) => redis.unlink(key)))
}

function median (values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
}

const binary = findOnPath('redis-server')
if (binary === undefined) throw new Error('bench:ingest --cluster needs redis-server and redis-cli on PATH')
const [serverScript] = compiled('src/server.ts')
const dir = mkdtempSync(join(tmpdir(), 'relay-bench-'))
const single = await startRedisServer({ binary, dir })
const cluster = await startTestRedisCluster(3)
if (cluster === undefined) throw new Error('bench:ingest --cluster needs redis-cli on PATH')
const children: ChildProcess[] = []
const singleRedis = new Redis(single.url)
const clusterRedis = connectRedis(parseClusterNodes(cluster.nodes))
try {
  console.log(`ingestion on a Redis Cluster: 3 primaries on loopback (AOF everysec), ${PARTITIONS} ingest partitions; batches of 100, ${CONNECTIONS} connections, ${ROUNDS} turns of ${DURATION / ROUNDS} s each, node ${process.version}`)
  const env = { ROLE: 'api', ADMIN_TOKEN, SECRET_KEY: 'bench-secret-key-0123456789abcdef0123456789', LOG_LEVEL: 'warn', RATE_LIMIT_EVENTS_PER_SECOND: '0', INGEST_MAX_BACKLOG_JOBS: '100000000' }
  const onSingle = await startService({ ...env, REDIS_URL: single.url })
  children.push(onSingle.child)
  const onCluster = await startService({ ...env, REDIS_CLUSTER_NODES: cluster.nodes, INGEST_PARTITIONS: String(PARTITIONS) })
  children.push(onCluster.child)
  const singleSource = await createSource(onSingle.url)
  const clusterSource = await createSource(onCluster.url)
  const singleQueues = [new Queue('ingest', { connection: singleRedis, prefix: '{relay}' })]
  const clusterQueues = redisKeys('relay', { cluster: true, ingestPartitions: PARTITIONS }).ingestPartitions.map((partition) => new Queue(partition.name, { connection: clusterRedis as never, prefix: partition.queuePrefix }))
  const primaries = primariesOf(clusterRedis)
  const calls = new Map<string, number>()

  const singleRuns: number[] = []
  const clusterRuns: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    singleRuns.push(await run('one redis-server', onSingle.url, singleSource.writeKey))
    await drain(singleRedis, singleQueues)
    await Promise.all(primaries.map((node) => node.config('RESETSTAT')))
    clusterRuns.push(await run('3-primary cluster', onCluster.url, clusterSource.writeKey))
    for (const node of primaries) {
      const info = await node.info('commandstats')
      const served = [...info.matchAll(/calls=(\d+)/g)].reduce((total, match) => total + Number(match[1]), 0)
      const name = `${node.options.host}:${node.options.port}`
      calls.set(name, (calls.get(name) ?? 0) + served)
    }
    await drain(clusterRedis, clusterQueues)
  }
  const total = [...calls.values()].reduce((a, b) => a + b, 0)
  const shares = [...calls].map(([name, n]) => ({ name, share: 100 * n / total }))
  const busiest = Math.max(...shares.map((share) => share.share))
  console.log()
  console.log(`medians of ${ROUNDS} turns: one Redis ${median(singleRuns)} events/s, the cluster ${median(clusterRuns)} events/s: ${(100 * median(clusterRuns) / median(singleRuns)).toFixed(0)} % of one Redis (goal ≥ 70 %; turn by turn ${clusterRuns.map((n, i) => `${(100 * n / singleRuns[i]).toFixed(0)} %`).join(', ')})`)
  console.log(`commands served by each primary (INFO commandstats over the cluster's turns): ${shares.map((share) => `${share.name} ${share.share.toFixed(1)} %`).join(', ')}; the busiest ${busiest.toFixed(1)} % (goal ≤ 45 %; even is 33 %)`)
  for (const queue of [...singleQueues, ...clusterQueues]) await queue.close()
} finally {
  await stopChildren(children)
  singleRedis.disconnect()
  clusterRedis.disconnect()
  await single.stop()
  await cluster.close()
  rmSync(dir, { recursive: true, force: true })
}
