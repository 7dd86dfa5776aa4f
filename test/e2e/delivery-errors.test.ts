// Each row of spec/facebook.md's "Graph errors → what the worker does", end to end against the
// fake Graph API scripted to fail: transient errors retried then dead-lettered (and replayed from
// the admin API), rate limits pausing one destination only, token and permission errors holding
// conversions until a token is set, code 100 isolating the bad events, other 4xx dead-lettered.
import t from 'tap'
import { businessUseCaseUsageHeader, DEFAULT_TOKEN, startFakeGraph, type Failure } from '../fixtures/fake-graph.js'
import { buildTestApp } from '../helpers/app.js'
import { startGateProxy } from '../helpers/delivery-proxy.js'
import {
  assertAccounted, createDestination, deliveredEventIds, destinationStats, FAST_DELIVERY_ENV, getDestination, sendBatch,
  settledStats, startDelivery, track, waitFor
} from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const DATASET = '1001'
const OTHER_DATASET = '2002'
const SETTINGS = { conversionEvents: { 'Order Completed': DATASET } }

function orders (n: number) {
  return Array.from({ length: n }, (_, i) => track('Order Completed', { revenue: 10 + i }))
}

t.test('transient errors are retried and each conversion is delivered once', async (t) => {
  const cases: Array<[string, Failure, RegExp | undefined]> = [
    ['HTTP 503 (not JSON)', { kind: 'http', status: 503 }, /503/],
    ['code 2, is_transient', { kind: 'graph', code: 2, status: 500, isTransient: true }, /unexpected error/],
    ['code 1 on a 400', { kind: 'graph', code: 1, status: 400 }, /unknown error/],
    ['a timeout', { kind: 'timeout' }, /timed out/],
    ['a connection reset', { kind: 'reset' }, /failed/]
  ]
  for (const [name, failure, message] of cases) {
    await t.test(name, async (t) => {
      const { ctx, graph } = await startDelivery(t, { redis })
      const source = await ctx.createSource()
      const destination = await createDestination(ctx, source.id, SETTINGS)
      graph.failNext(failure, 1)
      const messages = orders(3)
      await sendBatch(ctx, source.writeKey, messages)
      const stats = await settledStats(ctx, destination.id, 3)
      assertAccounted(t, stats, 3)
      t.equal(stats.delivered, 3)
      t.equal(stats.deadLettered, 0)
      t.match(stats.lastError, { message })
      t.ok(stats.lastSuccessAt)
      t.equal(graph.requests, 2, 'one failed request, one retry')
      const ids = deliveredEventIds(graph)
      t.equal(ids.length, 3, 'delivered once')
      t.same(new Set(ids), new Set(messages.map((m) => m.messageId)))
    })
  }
})

t.test('after a first attempt fails, the destination\'s requests go to the queue without one: a failing Meta does not hold ingestion up', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  const deliverJobs = async () => Number(await ctx.app.redis.get(ctx.app.deliverQueue.keys.id) ?? 0)
  graph.failNext({ kind: 'http', status: 503 }, 1)
  await sendBatch(ctx, source.writeKey, orders(3))
  await settledStats(ctx, destination.id, 3)
  t.equal(graph.requests, 2, 'the first attempt failed; the queued job\'s retry delivered')
  t.equal(await deliverJobs(), 1, 'one deliver job: the request the first attempt did not deliver')

  await sendBatch(ctx, source.writeKey, orders(2))
  const stats = await settledStats(ctx, destination.id, 5)
  assertAccounted(t, stats, 5)
  t.equal(stats.delivered, 5)
  t.equal(graph.requests, 3, 'the next request was made once, by the deliver worker')
  t.equal(await deliverJobs(), 2, 'queued without a first attempt')
})

t.test('transient errors until the attempts run out: dead letters, then replayed from the admin API', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  // DELIVER_ATTEMPTS is 4: four answers of 503 use them all.
  graph.failNext({ kind: 'http', status: 503 }, 4)
  const messages = orders(3)
  await sendBatch(ctx, source.writeKey, messages)
  let stats = await settledStats(ctx, destination.id, 3)
  assertAccounted(t, stats, 3)
  t.match(stats, { delivered: 0, deadLettered: 3, lastError: { status: 503 } })
  t.equal(graph.requests, 4, 'every attempt was made')
  t.same(graph.received, [])

  const failures = await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)
  t.equal(failures.statusCode, 200)
  t.equal(failures.json.total, 3)
  t.equal(failures.json.nextCursor, null)
  t.same(failures.json.failures.map((f: any) => f.eventId).sort(), messages.map((m) => m.messageId).sort())
  for (const failure of failures.json.failures) {
    t.match(failure, { datasetId: DATASET, eventName: 'Purchase', error: { status: 503, message: 'HTTP 503' } })
    t.notOk('payload' in failure, 'the payload (hashed customer data) stays inside')
  }
  const page = await ctx.admin('GET', `/v1/destinations/${destination.id}/failures?limit=2`)
  t.equal(page.json.failures.length, 2)
  t.equal(page.json.nextCursor, '2')

  const retry = await ctx.admin('POST', `/v1/destinations/${destination.id}/failures/retry`, {})
  t.same(retry, { statusCode: 200, json: { retried: 3 } })
  stats = await waitFor(async () => {
    const s = await destinationStats(ctx, destination.id)
    return s.delivered === 3 && s.retrying === 0 && s
  }, 20_000, 'the replayed conversions to be delivered')
  assertAccounted(t, stats, 3)
  t.equal(stats.deadLettered, 0, 'moved from deadLettered…')
  t.equal(stats.delivered, 3, '…to delivered')
  t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)), 'with the same event_id')
  t.equal((await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json.total, 0)
})

t.test('replaying chosen dead letters by id', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  graph.failNext({ kind: 'graph', code: 2500, status: 400 }, 1)
  await sendBatch(ctx, source.writeKey, orders(3))
  await settledStats(ctx, destination.id, 3)
  const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json.failures
  t.equal(failures.length, 3)
  // Two admins replay the same letter at once: it is sent once.
  const retries = await Promise.all([1, 2].map(() => ctx.admin('POST', `/v1/destinations/${destination.id}/failures/retry`, { ids: [failures[0].id] })))
  t.same(retries.map((r) => r.json.retried).sort(), [0, 1])
  const stats = await waitFor(async () => {
    const s = await destinationStats(ctx, destination.id)
    return s.delivered === 1 && s.retrying === 0 && s
  }, 20_000, 'the chosen conversion to be delivered')
  assertAccounted(t, stats, 3)
  t.equal(stats.deadLettered, 2)
  t.same(deliveredEventIds(graph), [failures[0].eventId])
  const left = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
  t.equal(left.total, 2)
  t.equal(left.total, stats.deadLettered, 'the list and the count agree')
  t.notOk(left.failures.some((f: any) => f.id === failures[0].id))
})

t.test('rate limits pause the destination, then it delivers', async (t) => {
  // Short pauses: Retry-After in seconds, X-Business-Use-Case-Usage in minutes (pauseFromHeaders).
  const cases: Array<[string, Failure]> = [
    ['HTTP 429', { kind: 'graph', status: 429, code: 1, headers: { 'retry-after': '1' } }],
    ['code 4', { kind: 'graph', code: 4, headers: { 'retry-after': '1' } }],
    ['code 17', { kind: 'graph', code: 17, headers: { 'retry-after': '1' } }],
    ['code 613', { kind: 'graph', code: 613, headers: { 'retry-after': '1' } }],
    ['code 80004 with X-Business-Use-Case-Usage', { kind: 'graph', code: 80004, headers: { 'x-business-use-case-usage': businessUseCaseUsageHeader(0.02) } }]
  ]
  for (const [name, failure] of cases) {
    await t.test(name, async (t) => {
      const { ctx, graph } = await startDelivery(t, { redis })
      const source = await ctx.createSource()
      const destination = await createDestination(ctx, source.id, SETTINGS)
      graph.failNext(failure, 1)
      const messages = orders(2)
      const sentAt = Date.now()
      await sendBatch(ctx, source.writeKey, messages)
      const paused = await waitFor(async () => (await getDestination(ctx, destination.id)).pausedUntil as string | undefined, 10_000, 'pausedUntil')
      const pausedUntil = Date.parse(paused)
      t.ok(pausedUntil > sentAt, 'paused into the future')
      t.ok(pausedUntil < sentAt + 60_000, 'for the time the headers give, not the default minute')
      t.equal((await getDestination(ctx, destination.id)).status, 'active', 'a pause is not a status change')

      const stats = await settledStats(ctx, destination.id, 2, 60_000)
      assertAccounted(t, stats, 2)
      t.match(stats, { delivered: 2, deadLettered: 0 })
      t.equal(graph.requests, 2, 'one rate-limited request, then the one that went through')
      const [batch] = graph.received
      t.ok(batch.at >= pausedUntil, 'nothing was sent before the pause ended')
      t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))
      t.notOk((await getDestination(ctx, destination.id)).pausedUntil, 'no pause left')
    })
  }
})

t.test('rate limits use no attempts', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  // More rate-limit answers than DELIVER_ATTEMPTS (4), each a pause of 0.3 s.
  graph.failNext({ kind: 'graph', code: 80004, headers: { 'x-business-use-case-usage': businessUseCaseUsageHeader(0.005) } }, 6)
  const messages = orders(2)
  await sendBatch(ctx, source.writeKey, messages)
  const stats = await settledStats(ctx, destination.id, 2, 60_000)
  assertAccounted(t, stats, 2)
  t.match(stats, { delivered: 2, deadLettered: 0, lastError: { code: 80004 } })
  t.equal(graph.requests, 7, 'six rate-limited requests, then the one that went through')
  t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))
})

t.test('a paused destination never stops the others', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const paused = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': DATASET } }, { name: 'rate limited' })
  const other = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': OTHER_DATASET } }, { name: 'other' })
  graph.failNext({ kind: 'graph', code: 80004, headers: { 'x-business-use-case-usage': businessUseCaseUsageHeader(0.1) } }, 1, { datasetId: DATASET })
  const first = orders(2)
  await sendBatch(ctx, source.writeKey, first)
  const until = Date.parse(await waitFor(async () => (await getDestination(ctx, paused.id)).pausedUntil as string | undefined, 10_000, 'pausedUntil'))

  // While the first destination waits, the second takes more conversions and delivers them.
  const second = orders(3)
  await sendBatch(ctx, source.writeKey, second)
  const otherStats = await settledStats(ctx, other.id, 5)
  assertAccounted(t, otherStats, 5)
  t.equal(otherStats.delivered, 5)
  const otherBatches = graph.received.filter((b) => b.datasetId === OTHER_DATASET)
  t.ok(otherBatches.every((b) => b.at < until), 'the other destination delivered during the pause')
  const pausedNow = await destinationStats(ctx, paused.id)
  t.equal(pausedNow.delivered, 0, 'the paused one sent nothing yet')

  const pausedStats = await settledStats(ctx, paused.id, 5, 30_000)
  assertAccounted(t, pausedStats, 5)
  t.equal(pausedStats.delivered, 5)
  t.ok(graph.received.filter((b) => b.datasetId === DATASET).every((b) => b.at >= until), 'after its pause')
  t.same(new Set(deliveredEventIds(graph, DATASET)), new Set([...first, ...second].map((m) => m.messageId)))
})

t.test('code 190: needs_reauthorization, conversions held until a new token, then delivered', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  graph.revokeToken(DEFAULT_TOKEN)
  const messages = orders(3)
  await sendBatch(ctx, source.writeKey, messages)
  const flagged = await waitFor(async () => {
    const d = await getDestination(ctx, destination.id)
    return d.status === 'needs_reauthorization' && d
  }, 10_000, 'status needs_reauthorization')
  t.match(flagged.statusMessage, /access token/, 'Meta\'s message')
  // (the route stage counts right after queueing: wait for its count rather than race it)
  const held = await waitFor(async () => { const s = await destinationStats(ctx, destination.id); return s.received === 3 && s.held === 3 && s }, 10_000, 'the count')
  t.match(held, { received: 3, retrying: 3, held: 3, delivered: 0, deadLettered: 0, lastError: { code: 190 } })

  graph.addToken('fresh-token-0123456789')
  t.equal((await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: 'fresh-token-0123456789' })).statusCode, 204)
  t.equal((await getDestination(ctx, destination.id)).status, 'active')
  const stats = await settledStats(ctx, destination.id, 3)
  assertAccounted(t, stats, 3)
  t.match(stats, { delivered: 3, deadLettered: 0, held: 0 })
  t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))
  t.equal(graph.requests, 2, 'held conversions wait without calling Meta')
})

t.test('a destination disabled while its conversions wait: they are not sent, and count as filtered', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  graph.revokeToken(DEFAULT_TOKEN)
  await sendBatch(ctx, source.writeKey, orders(3))
  await waitFor(async () => { const s = await destinationStats(ctx, destination.id); return s.retrying === 3 && s.lastError?.code === 190 }, 10_000, 'held conversions')
  const requests = graph.requests

  t.equal((await ctx.admin('PATCH', `/v1/destinations/${destination.id}`, { enabled: false })).statusCode, 200)
  const stats = await waitFor(async () => { const s = await destinationStats(ctx, destination.id); return s.filtered === 3 && s }, 10_000, 'the held conversions filtered')
  assertAccounted(t, stats, 3)
  t.match(stats, { received: 3, filtered: 3, retrying: 0, delivered: 0, deadLettered: 0 })
  t.equal(graph.requests, requests, 'nothing more was sent to Meta')
})

t.test('permission errors: permission_denied, held, delivered once a token is set again', async (t) => {
  for (const code of [200, 10]) {
    await t.test(`code ${code}`, async (t) => {
      const { ctx, graph } = await startDelivery(t, { redis })
      const source = await ctx.createSource()
      const destination = await createDestination(ctx, source.id, SETTINGS)
      graph.failNext({ kind: 'graph', code }, 1)
      const messages = orders(2)
      await sendBatch(ctx, source.writeKey, messages)
      const flagged = await waitFor(async () => {
        const d = await getDestination(ctx, destination.id)
        return d.status === 'permission_denied' && d
      }, 10_000, 'status permission_denied')
      t.match(flagged.statusMessage, /permission/i)
      const held = await waitFor(async () => { const s = await destinationStats(ctx, destination.id); return s.received === 2 && s }, 10_000, 'the count')
      t.match(held, { retrying: 2, delivered: 0, lastError: { code } })

      t.equal((await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: DEFAULT_TOKEN })).statusCode, 204)
      const stats = await settledStats(ctx, destination.id, 2)
      assertAccounted(t, stats, 2)
      t.equal(stats.delivered, 2)
      t.equal((await getDestination(ctx, destination.id)).status, 'active')
      t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))
    })
  }
})

t.test('held past HOLD_MAX: dead letters, replayable once a token is set', async (t) => {
  await t.test('no token was ever set', async (t) => {
    const { ctx, graph } = await startDelivery(t, { redis, env: { HOLD_MAX: 'PT1S' } })
    const source = await ctx.createSource()
    const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
    t.equal(destination.connected, false)
    await sendBatch(ctx, source.writeKey, orders(2))
    const stats = await settledStats(ctx, destination.id, 2)
    assertAccounted(t, stats, 2)
    t.match(stats, { delivered: 0, deadLettered: 2, held: 0 })
    t.equal(graph.requests, 0, 'nothing was sent without a token')
    const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
    t.equal(failures.total, 2)
    t.match(failures.failures[0].error.message, /no access token/)
    t.match(failures.failures[0].error.message, /1 second/, 'says how long they were held (HOLD_MAX)')

    await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: DEFAULT_TOKEN })
    t.same((await ctx.admin('POST', `/v1/destinations/${destination.id}/failures/retry`)).json, { retried: 2 })
    const after = await waitFor(async () => {
      const s = await destinationStats(ctx, destination.id)
      return s.delivered === 2 && s.retrying === 0 && s
    }, 20_000, 'the replayed conversions to be delivered')
    assertAccounted(t, after, 2)
  })

  await t.test('a revoked token (190)', async (t) => {
    const { ctx, graph } = await startDelivery(t, { redis, env: { HOLD_MAX: 'PT1S' } })
    const source = await ctx.createSource()
    const destination = await createDestination(ctx, source.id, SETTINGS)
    graph.revokeToken(DEFAULT_TOKEN)
    await sendBatch(ctx, source.writeKey, orders(2))
    const stats = await settledStats(ctx, destination.id, 2)
    assertAccounted(t, stats, 2)
    t.match(stats, { delivered: 0, deadLettered: 2, held: 0 })
    t.equal((await getDestination(ctx, destination.id)).status, 'needs_reauthorization')
    const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
    t.match(failures.failures[0].error.message, /access token/, 'with Meta\'s reason')
  })
})

t.test('code 100 in a batch: the bad event is isolated and dead-lettered, the rest delivered', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  const messages = orders(10)
  const bad = messages[6]
  graph.failEventsWhere((event) => event.event_id === bad.messageId, 'Invalid parameter: custom_data.value is not accepted')
  await sendBatch(ctx, source.writeKey, messages)
  const stats = await settledStats(ctx, destination.id, 10)
  assertAccounted(t, stats, 10)
  t.match(stats, { delivered: 9, deadLettered: 1, lastError: { code: 100 } })
  const ids = deliveredEventIds(graph)
  t.equal(ids.length, 9, 'each good event delivered once')
  t.same(new Set(ids), new Set(messages.filter((m) => m !== bad).map((m) => m.messageId)))
  const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
  t.equal(failures.total, 1)
  t.match(failures.failures[0], { eventId: bad.messageId, error: { code: 100, status: 400, message: /custom_data\.value is not accepted/ } })
})

t.test('other 4xx errors are dead-lettered with the error', async (t) => {
  const cases: Array<[string, Failure, object]> = [
    ['code 2500', { kind: 'graph', code: 2500, status: 400, message: 'Unknown path components' }, { code: 2500, status: 400, message: 'Unknown path components' }],
    ['HTTP 404 without a Graph body', { kind: 'http', status: 404 }, { status: 404 }]
  ]
  for (const [name, failure, error] of cases) {
    await t.test(name, async (t) => {
      const { ctx, graph } = await startDelivery(t, { redis })
      const source = await ctx.createSource()
      const destination = await createDestination(ctx, source.id, SETTINGS)
      graph.failNext(failure, 1)
      await sendBatch(ctx, source.writeKey, orders(3))
      const stats = await settledStats(ctx, destination.id, 3)
      assertAccounted(t, stats, 3)
      t.match(stats, { delivered: 0, deadLettered: 3, lastError: error })
      t.equal(graph.requests, 1, 'not retried')
      const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
      t.equal(failures.total, 3)
      t.match(failures.failures[0].error, error)
    })
  }
})

t.test('code 100 for an unknown dataset fails the request, not an event: dead-lettered without splitting', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis, graph: { datasets: [DATASET] } })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '3003' } })
  await sendBatch(ctx, source.writeKey, orders(10))
  const stats = await settledStats(ctx, destination.id, 10)
  assertAccounted(t, stats, 10)
  t.match(stats, { delivered: 0, deadLettered: 10, lastError: { code: 100, subcode: 33 } })
  t.equal(graph.requests, 1, 'one request: splitting cannot help when the dataset does not exist')
  const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
  t.match(failures.failures[0].error, { code: 100, subcode: 33, message: /does not exist/ })
})

t.test('a 190 that answers a request made with the old token does not undo a new token', async (t) => {
  const graph = await startFakeGraph()
  t.teardown(() => graph.close())
  const proxy = await startGateProxy(graph.url)
  t.teardown(() => proxy.close())
  const ctx = await buildTestApp(t, {
    listen: true,
    redis: freshPrefix(redis),
    // the held answer must not time out
    env: { ...FAST_DELIVERY_ENV, FACEBOOK_GRAPH_URL: proxy.url, GRAPH_TIMEOUT_MS: '20000' }
  })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  graph.revokeToken(DEFAULT_TOKEN)
  proxy.hold()
  const messages = orders(3)
  await sendBatch(ctx, source.writeKey, messages)
  // Meta has answered 190 for the old token; the answer is on its way back…
  await waitFor(() => proxy.heldAnswers === 1, 10_000, 'Meta\'s 190 answer')
  // …when the admin sets a new token.
  graph.addToken('fresh-token-0123456789')
  t.equal((await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: 'fresh-token-0123456789' })).statusCode, 204)
  proxy.release()

  const stats = await settledStats(ctx, destination.id, 3)
  assertAccounted(t, stats, 3)
  t.equal(stats.delivered, 3, 'delivered with the new token')
  t.equal((await getDestination(ctx, destination.id)).status, 'active', 'the new token is not marked as needing reauthorization')
  t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))
})

t.test('a token this worker cannot decrypt (another SECRET_KEY) holds the conversions, then dead-letters them with the reason', async (t) => {
  const graph = await startFakeGraph()
  t.teardown(() => graph.close())
  const shared = freshPrefix(redis)
  const env = { ...FAST_DELIVERY_ENV, FACEBOOK_GRAPH_URL: graph.url, HOLD_MAX: 'PT2S' }
  const api = await buildTestApp(t, { redis: shared, listen: true, env: { ...env, ROLE: 'api' } })
  // A worker replica started with a SECRET_KEY of its own: it cannot read tokens the API stored.
  await buildTestApp(t, { redis: shared, env: { ...env, ROLE: 'worker', SECRET_KEY: 'another-secret-key-0123456789abcdef0123' } })
  const source = await api.createSource()
  const destination = await createDestination(api, source.id, SETTINGS)
  await sendBatch(api, source.writeKey, orders(2))
  const stats = await settledStats(api, destination.id, 2)
  assertAccounted(t, stats, 2)
  t.match(stats, { delivered: 0, deadLettered: 2 })
  t.equal(graph.requests, 0)
  const failures = (await api.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
  t.equal(failures.total, 2)
  t.match(failures.failures[0].error.message, /SECRET_KEY/, 'says why')
})

t.test('conversions queued before apiFormat changes go out in the format they were made in', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  // No token yet: the conversions wait in the queue (Conversions API format).
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const messages = orders(2)
  await sendBatch(ctx, source.writeKey, messages)
  await waitFor(async () => (await destinationStats(ctx, destination.id)).received === 2, 10_000, 'the conversions to be queued')
  const patched = await ctx.admin('PATCH', `/v1/destinations/${destination.id}`, { settings: { apiFormat: 'offline-conversions' } })
  t.equal(patched.statusCode, 200)
  await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: DEFAULT_TOKEN })
  const stats = await settledStats(ctx, destination.id, 2)
  assertAccounted(t, stats, 2)
  t.match(stats, { delivered: 2, deadLettered: 0 })
  t.same(graph.received.map((b) => b.version), ['v26.0'], 'the queued Conversions API events, to a Conversions API version')
  t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))

  // New conversions use the new format.
  const legacy = track('Order Completed', { revenue: 1 })
  await sendBatch(ctx, source.writeKey, [legacy])
  const after = await settledStats(ctx, destination.id, 3)
  assertAccounted(t, after, 3)
  t.equal(after.delivered, 3)
  t.equal(graph.received.at(-1)?.version, 'v16.0')
  t.ok(graph.received.at(-1)?.body.data[0].match_keys, 'legacy payload')
})

t.test('setting a token releases held conversions at once, not at the next recheck', async (t) => {
  // HOLD_RECHECK_MS far beyond the test: only the release on PUT can deliver them.
  // One ingest job (so one deliver job) per message: many jobs being held back as the token arrives.
  const { ctx, graph } = await startDelivery(t, { redis, env: { HOLD_RECHECK_MS: '600000', INGEST_JOB_MAX_MESSAGES: '1' } })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  // Many small requests: the token arrives while some jobs are still being held back.
  const messages = orders(40)
  await Promise.all(messages.map((message) => sendBatch(ctx, source.writeKey, [message])))
  await waitFor(async () => (await destinationStats(ctx, destination.id)).received >= 10, 10_000, 'conversions to be queued')
  t.equal((await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: DEFAULT_TOKEN })).statusCode, 204)
  const stats = await settledStats(ctx, destination.id, 40, 30_000)
  assertAccounted(t, stats, 40)
  t.equal(stats.delivered, 40)
  t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))
})
