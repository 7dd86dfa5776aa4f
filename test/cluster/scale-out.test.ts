// Scale-out on a 3-primary Redis Cluster: two API processes and two worker processes; 50,000
// events with unique ids in batches, then 5,000 of them sent again in other batches through the
// other API. Every accepted event reaches the fake Graph API exactly once; the repeats are counted
// as duplicates, not delivered; the source's and the destination's stats add up; the ingest
// partitions spread over every primary.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { startFakeGraph } from '../fixtures/fake-graph.js'
import { basicAuth, buildTestApp, type TestContext } from '../helpers/app.js'
import { assertAccounted, createDestination, deliveredEventIds, FAST_DELIVERY_ENV, settledStats } from '../helpers/delivery-setup.js'
import { sourceStats } from '../helpers/ingest-send.js'
import { clusterTestRedis, startTestRedisCluster } from '../helpers/redis-cluster.js'
import { startWorkerProcess, workerEnv } from '../helpers/worker-process.js'
import { Redis } from 'ioredis'

// Longer than the runner's 120 s a file: tens of thousands of events through a cluster.
t.setTimeout(600_000)
const cluster = await startTestRedisCluster()
if (cluster === undefined) {
  t.plan(0, 'redis-server and redis-cli are needed on PATH for a Redis Cluster')
} else {
  t.teardown(() => cluster.close())
  const redis = clusterTestRedis(cluster, `scale-${randomUUID().slice(0, 8)}`)
  const EVENTS = 50_000
  const REPEATS = 5_000
  const BATCH = 500

  t.test('two APIs and two workers on a cluster: every event delivered once, the repeats counted', { timeout: 600_000 }, async (t) => {
    const graph = await startFakeGraph()
    t.teardown(() => graph.close())
    // Meta's timeout as configured by default: with FAST_DELIVERY_ENV's 500 ms, a request of 1,000
    // events that the loaded fake Graph answers late is sent again (Meta de-duplicates it by
    // event_id; the count here would not).
    const env = { FACEBOOK_GRAPH_URL: graph.url, RATE_LIMIT_EVENTS_PER_SECOND: '0', ...FAST_DELIVERY_ENV, GRAPH_TIMEOUT_MS: '30000' }
    const apis = [
      await buildTestApp(t, { redis, listen: true, env: { ...env, ROLE: 'api' } }),
      await buildTestApp(t, { redis, listen: true, env: { ...env, ROLE: 'api' } })
    ]
    for (let i = 0; i < 2; i++) await startWorkerProcess(t, 'test/helpers/delivery-worker.ts', workerEnv(apis[0], env))
    const source = await apis[0].createSource()
    const destination = await createDestination(apis[0], source.id, { conversionEvents: { 'Order Completed': '1001' } })

    const order = (i: number) => ({ type: 'track', messageId: `order-${i}`, userId: `user-${i % 1000}`, event: 'Order Completed', properties: { order_id: `o-${i}`, revenue: 10, currency: 'USD' }, timestamp: new Date().toISOString() })
    const batches: Array<Array<Record<string, unknown>>> = []
    for (let i = 0; i < EVENTS; i += BATCH) batches.push(Array.from({ length: BATCH }, (_, k) => order(i + k)))
    // The repeats: every 10th event, sent again in batches of their own, with a new one in each.
    const repeats = Array.from({ length: REPEATS }, (_, k) => order(k * 10))
    for (let i = 0; i < REPEATS; i += 250) batches.push([...repeats.slice(i, i + 250), order(EVENTS + i / 250)])
    const extra = REPEATS / 250

    // Four at a time, the APIs in turn.
    let next = 0
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < batches.length) {
        const b = next++
        await postBatch(apis[b % 2], source.writeKey, batches[b])
      }
    }))

    const stats = await settledStats(apis[1], destination.id, EVENTS + extra, 300_000)
    t.match(stats, { received: EVENTS + extra, delivered: EVENTS + extra, retrying: 0, deadLettered: 0 })
    assertAccounted(t, stats, EVENTS + extra)
    const sent = deliveredEventIds(graph, '1001')
    const counted = new Map<string, number>()
    for (const id of sent) counted.set(id, (counted.get(id) ?? 0) + 1)
    t.equal(sent.length, EVENTS + extra, `Meta got each event once (${[...counted].filter(([, n]) => n > 1).slice(0, 5).map(([id, n]) => `${id} ×${n}`).join(', ')})`)
    t.equal(new Set(sent).size, EVENTS + extra)
    t.match(await sourceStats(apis[0], source.id), { accepted: EVENTS + extra, duplicate: REPEATS, rejected: 0 }, 'the repeats counted as duplicates')

    // The ingest partitions' jobs were spread over the primaries: each served a part of the work.
    const calls = await Promise.all(cluster.ports.map(async (port) => {
      const node = new Redis(port, '127.0.0.1')
      try {
        const info = await node.info('commandstats')
        return [...info.matchAll(/calls=(\d+)/g)].reduce((total, match) => total + Number(match[1]), 0)
      } finally {
        node.disconnect()
      }
    }))
    const total = calls.reduce((a, b) => a + b, 0)
    t.ok(calls.every((n) => n / total > 0.15), `every primary served its share of the commands (${calls.map((n) => `${(100 * n / total).toFixed(0)} %`).join(', ')})`)
  })
}

async function postBatch (api: TestContext, writeKey: string, batch: Array<Record<string, unknown>>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(`${api.url}/v1/batch`, {
      method: 'POST',
      headers: { authorization: basicAuth(writeKey), 'content-type': 'application/json' },
      body: JSON.stringify({ batch, sentAt: new Date().toISOString() })
    })
    const body = await response.json() as { success: boolean, rejected?: unknown[] }
    if (response.status === 200 && body.success && body.rejected === undefined) return
    if (response.status !== 503 || attempt > 20) throw new Error(`batch not accepted: ${response.status} ${JSON.stringify(body)}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}
