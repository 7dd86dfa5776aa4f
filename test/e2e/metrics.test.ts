// /metrics moves with real traffic: ingestion requests (accepted, rejected, duplicate), deliveries
// to the fake Graph API (a first attempt in the ingest job, then the deliver worker's retry after a
// transient error), an audience's initial and incremental syncs, and every HTTP request by its
// route's pattern. A scrape before and one after; each metric must have moved by what was done.
import t from 'tap'
import { createAudience, identifyBy, ingest, waitForIdle } from '../helpers/audience-setup.js'
import { ADMIN_TOKEN, buildTestApp } from '../helpers/app.js'
import { assertAccounted, createDestination, settledStats, startDelivery, track, waitFor } from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { scrape, valueOf, type Sample } from '../helpers/metrics.js'
import { send } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const SETTINGS = { conversionEvents: { 'Order Completed': '1001' } }
const HTTP = 'relay_http_request_duration_seconds_count'
const GRAPH = 'relay_graph_request_duration_seconds_count'

t.test('/metrics moves with ingestion, deliveries to Meta, audience syncs and HTTP requests', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  const before = (await scrape(ctx)).samples
  const moved = (after: Sample[], name: string, labels: Record<string, string> = {}) => valueOf(after, name, labels) - valueOf(before, name, labels)

  // Ingestion: one accepted and one rejected in a batch, the accepted one again (a duplicate), and
  // a single invalid message.
  const order = track('Order Completed', { revenue: 10 })
  const first = await send(ctx.app, '/v1/batch', { batch: [order, { type: 'track', event: 'no user' }] }, { writeKey: source.writeKey })
  t.match(first.json(), { success: true, rejected: [{ index: 1 }] })
  t.equal((await send(ctx.app, '/v1/batch', { batch: [order] }, { writeKey: source.writeKey })).statusCode, 200)
  t.equal((await send(ctx.app, '/v1/track', { userId: 'u1' }, { writeKey: source.writeKey })).statusCode, 400)
  await settledStats(ctx, destination.id, 1)

  // A transient error on the next first attempt: the deliver worker asks Meta again.
  graph.failNext({ kind: 'graph', code: 2, message: 'Service temporarily unavailable' })
  await send(ctx.app, '/v1/batch', { batch: [track('Order Completed', { revenue: 20 })] }, { writeKey: source.writeKey })
  const stats = await settledStats(ctx, destination.id, 2)
  assertAccounted(t, stats, 2)
  t.equal(stats.delivered, 2)

  // An audience: one member when it is created (initial sync), one more later (incremental).
  await ingest(ctx, source.writeKey, [identifyBy('pro-1', { plan: 'pro' })])
  const audience = await createAudience(ctx, source.id, { name: 'Pro plan', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
  await waitForIdle(ctx, audience.id)
  await ingest(ctx, source.writeKey, [identifyBy('pro-2', { plan: 'pro' })])

  // Some admin traffic: a route with a parameter, an unknown path, a HEAD.
  t.equal((await ctx.admin('GET', `/v1/destinations/${destination.id}`)).statusCode, 200)
  t.equal((await ctx.app.inject({ url: '/nowhere' })).statusCode, 404)
  t.equal((await ctx.app.inject({ method: 'HEAD', url: '/health' })).statusCode, 200)

  let after: Sample[] = []
  await waitFor(async () => {
    after = (await scrape(ctx)).samples
    return moved(after, 'relay_audience_sync_users_total', { kind: 'incremental' }) >= 1
  }, 20_000, 'the incremental sync of the second member')

  t.equal(moved(after, 'relay_source_events_total', { source: source.id, outcome: 'accepted' }), 2 + 2, 'accepted: two orders, two identifies')
  t.equal(moved(after, 'relay_source_events_total', { source: source.id, outcome: 'duplicate' }), 1, 'duplicate')
  t.equal(moved(after, 'relay_source_events_total', { source: source.id, outcome: 'rejected' }), 2, 'rejected: in the batch, and the single message')

  t.equal(moved(after, GRAPH, { outcome: 'delivered', code: 'none' }), 2, 'two requests delivered: a first attempt, and the deliver worker\'s retry')
  t.equal(moved(after, GRAPH, { outcome: 'transient', code: '2' }), 1, 'one transient error, by Meta\'s code')
  t.ok(moved(after, 'relay_graph_request_duration_seconds_sum') > 0, 'with their durations')
  t.equal(moved(after, 'relay_graph_request_duration_seconds_bucket', { outcome: 'delivered', code: 'none', le: '+Inf' }), 2)

  t.equal(moved(after, 'relay_audience_sync_duration_seconds_count', { kind: 'initial' }), 1, 'one initial sync')
  t.equal(moved(after, 'relay_audience_sync_users_total', { kind: 'initial' }), 1, 'of its one member')
  t.ok(moved(after, 'relay_audience_sync_duration_seconds_count', { kind: 'incremental' }) >= 1, 'incremental syncs')

  t.equal(moved(after, HTTP, { route: '/v1/batch', method: 'POST', status: '200' }), 5, 'ingestion requests by route pattern and status')
  t.equal(moved(after, HTTP, { route: '/v1/track', method: 'POST', status: '400' }), 1)
  t.ok(moved(after, HTTP, { route: '/v1/destinations/:destinationId', method: 'GET', status: '200' }) >= 1, 'the pattern, not the URL')
  t.notOk(after.some((sample) => sample.labels.route?.includes(destination.id)), 'no label carries an id from a URL')
  t.equal(moved(after, HTTP, { route: 'unmatched', method: 'GET', status: '404' }), 1, 'a request no route matched')
  t.equal(moved(after, HTTP, { route: '/health', method: 'HEAD', status: '200' }), 1, 'HEAD, Fastify\'s twin of a GET route')
  t.ok(moved(after, HTTP, { route: '/metrics', method: 'GET', status: '200' }) >= 1, 'the scrapes themselves')

  const { text } = await scrape(ctx)
  for (const name of ['relay_http_request_duration_seconds', 'relay_graph_request_duration_seconds', 'relay_audience_sync_duration_seconds', 'relay_audience_sync_users_total', 'relay_source_events_total']) {
    t.match(text, new RegExp(`# HELP ${name} .*this process only`), `${name} says it is per process`)
  }
  t.match(text, /# TYPE relay_http_request_duration_seconds histogram/)
  t.match(text, /# TYPE relay_source_events_total counter/)
})

t.test('a worker process serves its own /metrics (behind the admin token), without the dashboard', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { ROLE: 'worker' } })
  t.equal((await ctx.app.inject({ url: '/metrics' })).statusCode, 401)
  const { text } = await scrape(ctx)
  t.match(text, /# TYPE relay_graph_request_duration_seconds histogram/)
  t.match(text, /relay_queue_jobs\{queue="ingest",state="waiting"\} 0/)
  t.equal((await ctx.app.inject({ url: '/admin/queues', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).statusCode, 404, 'the dashboard is the API\'s')
})
