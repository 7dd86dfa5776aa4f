/**
 * `npm run demo`: the product page's example calls, end to end, on this machine.
 * Starts Redis if none answers, a fake Graph API (validates like Meta), and the service; creates a
 * source and a Facebook Offline Conversions destination with the page's settings; sends the page's
 * calls through @segment/analytics-node; prints what reached "Meta", the destination's stats and
 * where to look. Keeps running until Ctrl-C (DEMO_EXIT=1 exits at once).
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Analytics } from '@segment/analytics-node'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { findOnPath, freePort, redisAnswers, startRedisServer, type LocalRedis } from '../src/local-redis.js'
import { scanKeys } from '../src/redis-client.js'
import { delBySlot } from '../src/slots.js'
import { startFakeGraph } from '../test/fixtures/fake-graph.js'
import seed from '../test/fixtures/seed-examples.json' with { type: 'json' }

const ADMIN_TOKEN = `demo-${Math.random().toString(36).slice(2)}-admin-token`
let localRedis: LocalRedis | undefined
let redisUrl = process.env.REDIS_URL
// REDIS_CLUSTER_NODES: the demo runs on that Redis Cluster (it wins over REDIS_URL, as in the service).
const clusterNodes = process.env.REDIS_CLUSTER_NODES
if (redisUrl === undefined && clusterNodes === undefined) {
  if (await redisAnswers('127.0.0.1', 6379)) redisUrl = 'redis://127.0.0.1:6379'
  else {
    const binary = findOnPath('redis-server')
    if (binary === undefined) throw new Error('the demo needs Redis: install redis-server or set REDIS_URL')
    localRedis = await startRedisServer({ binary, dir: mkdtempSync(join(tmpdir(), 'relay-demo-')) })
    redisUrl = localRedis.url
  }
}
const graph = await startFakeGraph({ tokens: ['demo-token'] })
const port = Number(process.env.PORT ?? await freePort())
const config = loadConfig({
  ...(redisUrl === undefined ? {} : { REDIS_URL: redisUrl }),
  ...(clusterNodes === undefined ? {} : { REDIS_CLUSTER_NODES: clusterNodes }),
  REDIS_PREFIX: `demo-${Date.now()}`,
  PORT: String(port),
  ADMIN_TOKEN,
  SECRET_KEY: 'demo-secret-key-not-for-production-use-0123456789',
  FACEBOOK_GRAPH_URL: graph.url,
  LOG_LEVEL: 'warn'
})
const app = await buildApp({ config })
const url = await app.listen({ port, host: '127.0.0.1' })

async function admin (method: string, path: string, body?: unknown): Promise<any> {
  const response = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return response.status === 204 ? undefined : response.json()
}

const source = await admin('POST', '/v1/sources', { name: 'demo' })
const destination = await admin('POST', `/v1/sources/${source.id}/destinations`, { type: 'facebook-offline-conversions', name: 'Facebook Offline Conversions (demo)', settings: seed.settings })
await admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: 'demo-token' })
console.log(`service      ${url}   (admin token: ${ADMIN_TOKEN})`)
console.log(`fake Graph   ${graph.url}`)
console.log(`source       ${source.id}   write key ${source.writeKey}`)
console.log(`destination  ${destination.id}   settings ${JSON.stringify(seed.settings)}\n`)

const analytics = new Analytics({ writeKey: source.writeKey, host: url, path: '/v1/batch', flushAt: 20, flushInterval: 100 })
for (const message of seed.messages) {
  const { type, ...call } = message as { type: 'track' | 'identify' } & Record<string, any>
  console.log(`→ ${type} ${call.event ?? ''} (${call.userId})`)
  if (type === 'track') analytics.track(call as any)
  else analytics.identify(call as any)
}
await analytics.closeAndFlush()

let stats: any
for (let i = 0; i < 100; i++) {
  stats = await admin('GET', `/v1/destinations/${destination.id}/stats`)
  if (stats.received > 0 && stats.retrying === 0) break
  await new Promise((resolve) => setTimeout(resolve, 100))
}
console.log('\nWhat reached Meta (the fake Graph API):')
for (const batch of graph.received) {
  console.log(`POST /${batch.version}/${batch.datasetId}/events  upload_tag=${batch.body.upload_tag}`)
  for (const event of batch.body.data) console.log('  ' + JSON.stringify(event))
}
console.log('\nDestination stats:', JSON.stringify(stats, null, 2))
console.log(`\nWhere to look:
  API docs         ${url}/docs
  destination      curl -H 'authorization: Bearer ${ADMIN_TOKEN}' ${url}/v1/destinations/${destination.id}
  stats            curl -H 'authorization: Bearer ${ADMIN_TOKEN}' ${url}/v1/destinations/${destination.id}/stats
  dead letters     curl -H 'authorization: Bearer ${ADMIN_TOKEN}' ${url}/v1/destinations/${destination.id}/failures`)

async function stop () {
  // The demo's keys are its own (a unique prefix): leave a shared Redis as it was. Its queues'
  // keys are `{prefix}…`, or on a cluster `{prefix:deliver}…`; every primary scanned, a DEL per slot.
  for (const pattern of [`${config.REDIS_PREFIX}:*`, `{${config.REDIS_PREFIX}}*`, `{${config.REDIS_PREFIX}:*`]) {
    for await (const keys of scanKeys(app.redis, pattern, 1000)) await delBySlot(app.redis, keys)
  }
  await app.close()
  await graph.close()
  await localRedis?.stop()
  process.exit(0)
}
if (process.env.DEMO_EXIT === '1') await stop()
else {
  console.log('\nRunning; Ctrl-C stops the demo.')
  process.once('SIGINT', () => { stop().catch(() => process.exit(1)) })
  process.once('SIGTERM', () => { stop().catch(() => process.exit(1)) })
}
