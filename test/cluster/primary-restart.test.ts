// A primary of the cluster restarted (AOF on) during ingestion: while its slots are unreachable
// the API answers 503 with Retry-After, the client sends again, and every message it was answered
// 200 for reaches the fake Graph API — nothing acknowledged is lost.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { startFakeGraph } from '../fixtures/fake-graph.js'
import { basicAuth, buildTestApp } from '../helpers/app.js'
import { createDestination, deliveredEventIds, FAST_DELIVERY_ENV, waitFor } from '../helpers/delivery-setup.js'
import { clusterTestRedis, startTestRedisCluster } from '../helpers/redis-cluster.js'

// Longer than the runner's 120 s a file: tens of thousands of events through a cluster.
t.setTimeout(600_000)
const cluster = await startTestRedisCluster()
if (cluster === undefined) {
  t.plan(0, 'redis-server and redis-cli are needed on PATH for a Redis Cluster')
} else {
  t.teardown(() => cluster.close())
  const redis = clusterTestRedis(cluster, `restart-${randomUUID().slice(0, 8)}`)

  t.test('a primary restarted during ingestion: 503 while it is away, nothing acknowledged lost', { timeout: 540_000 }, async (t) => {
    const graph = await startFakeGraph()
    t.teardown(() => graph.close())
    const ctx = await buildTestApp(t, {
      redis,
      listen: true,
      env: {
        FACEBOOK_GRAPH_URL: graph.url,
        RATE_LIMIT_EVENTS_PER_SECOND: '0',
        ...FAST_DELIVERY_ENV,
        // Jobs whose locks were on the stopped primary run again after this, not BullMQ's 30 s.
        STALLED_INTERVAL_MS: '5000',
        LOG_LEVEL: process.env.DEBUG_LOG ?? 'silent'
      }
    })
    const source = await ctx.createSource()
    const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1001' } })

    const acknowledged = new Set<string>()
    const statuses = new Map<number, number>()
    let sent = 0
    const run = { stopping: false }
    // Answers other than 200 and 503-with-Retry-After: asserted once the clients stop.
    const unexpected: string[] = []
    // A client that sends batches of 20 and sends a batch again until it is answered 200.
    const client = async () => {
      while (!run.stopping) {
        const batch = Array.from({ length: 20 }, () => ({ type: 'track', messageId: `m-${sent++}`, userId: `u${sent % 50}`, event: 'Order Completed', properties: { revenue: 5, currency: 'USD' } }))
        while (!run.stopping) {
          const response = await fetch(`${ctx.url}/v1/batch`, {
            method: 'POST',
            headers: { authorization: basicAuth(source.writeKey), 'content-type': 'application/json' },
            body: JSON.stringify({ batch }),
            signal: AbortSignal.timeout(10_000)
          }).catch(() => undefined)
          const status = response?.status ?? 0
          statuses.set(status, (statuses.get(status) ?? 0) + 1)
          if (status === 200) {
            for (const message of batch) acknowledged.add(message.messageId)
            break
          }
          if (status !== 503 || response!.headers.get('retry-after') === null) unexpected.push(`${status}`)
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      }
    }
    const started = Date.now()
    // Where the time goes, for a run that is slow under load.
    const phase = (name: string) => t.comment(`${name} after ${((Date.now() - started) / 1000).toFixed(1)} s (${acknowledged.size} acknowledged)`)
    const clients = [client(), client()]
    try {
      await waitFor(() => acknowledged.size >= 400, 30_000, 'messages before the restart')
      phase('primary stopped')
      await cluster.stopNode(1)
      await waitFor(() => (statuses.get(503) ?? 0) >= 5, 30_000, 'the API to answer 503 while the primary is away')
      phase('primary restarting')
      await cluster.startNode(1)
      phase('primary restarted')
      const before = acknowledged.size
      await waitFor(() => acknowledged.size >= before + 400, 90_000, () => `ingestion to go on once the primary is back (answers ${JSON.stringify(Object.fromEntries(statuses))})`)
      phase('ingestion went on')
    } finally {
      // The clients stop whatever happened: a test that failed must not leave them sending.
      run.stopping = true
      await Promise.all(clients)
    }
    t.same(unexpected, [], 'every failed request was answered 503 with Retry-After')

    let state = ''
    await waitFor(async () => {
      const delivered = new Set(deliveredEventIds(graph, '1001'))
      state = JSON.stringify({ stats: await ctx.app.destinations.stats(destination.id), source: await ctx.app.sources.stats(source.id), queues: await ctx.app.queueStats(), missing: [...acknowledged].filter((id) => !delivered.has(id)).slice(0, 30) })
      return delivered.size >= acknowledged.size
    }, 120_000, () => `every acknowledged message delivered (${new Set(deliveredEventIds(graph, '1001')).size} of ${acknowledged.size}): ${state}`)
    phase('all delivered')
    const delivered = new Set(deliveredEventIds(graph, '1001'))
    const lost = [...acknowledged].filter((id) => !delivered.has(id))
    t.same(lost, [], `nothing acknowledged is lost (${acknowledged.size} acknowledged; answers ${JSON.stringify(Object.fromEntries(statuses))})`)
    t.ok((statuses.get(503) ?? 0) > 0, 'the API said 503 while the slots were unreachable')
    t.ok(destination.id)
  })
}
