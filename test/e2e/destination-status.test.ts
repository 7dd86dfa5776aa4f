// A destination's status, warnings and held conversions, end to end against the fake Graph API:
// the default Graph version (v26.0), a version that expires (warned 90 days before, then
// version_expired with its conversions held until apiVersion is changed, or HOLD_MAX), a
// destination without a token (needs_token), the status precedence, the warning about maps
// that are all empty, the days-left gauge in /metrics and the start-up log. The app's clock is
// moved (buildTestApp's `now`) instead of depending on today's date.
import t from 'tap'
import { logGraphVersionWarnings } from '../../plugins/destinations.js'
import { startFakeGraph } from '../fixtures/fake-graph.js'
import { ADMIN_TOKEN, buildTestApp, type TestContext } from '../helpers/app.js'
import {
  assertAccounted, createDestination, deliveredEventIds, destinationStats, FAST_DELIVERY_ENV, getDestination, sendBatch,
  settledStats, startDelivery, track, waitFor
} from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const DATASET = '1001'
const SETTINGS = { conversionEvents: { 'Order Completed': DATASET } }
// 47.5 days before v21.0's expiry (2027-01-21): within the 90 days that are warned about.
const DEC_4 = Date.parse('2026-12-04T12:00:00Z')
const JAN_22 = Date.parse('2027-01-22T00:00:00Z')
const DAY_MS = 24 * 3600 * 1000
const NO_EVENT_MAPPED = /^No event is mapped: .* all empty, so every event is filtered/

/** The service and a fake Graph API sharing a clock the test moves. */
async function clocked (t: Parameters<typeof buildTestApp>[0], start: number, env: Record<string, string> = {}) {
  const clock = { now: start }
  const graph = await startFakeGraph({ now: () => clock.now })
  t.teardown(() => graph.close())
  const ctx = await buildTestApp(t, {
    listen: true,
    redis: freshPrefix(redis),
    now: () => clock.now,
    env: { FACEBOOK_GRAPH_URL: graph.url, ...FAST_DELIVERY_ENV, ...env }
  })
  return { ctx, graph, clock }
}

/** Orders that happened at the app's clock. */
function ordersAt (clock: { now: number }, n: number) {
  return Array.from({ length: n }, (_, i) => track('Order Completed', { revenue: 10 + i }, { timestamp: new Date(clock.now).toISOString() }))
}

async function metricsText (ctx: TestContext): Promise<string> {
  const response = await ctx.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(response.statusCode, 200)
  return response.body
}

t.test('a new destination is on Graph v26.0, and its requests go to /v26.0', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS)
  t.equal(destination.settings.apiVersion, 'v26.0')
  t.same(destination.warnings, [], 'nothing to warn about')
  const messages = [track('Order Completed', { revenue: 5 })]
  await sendBatch(ctx, source.writeKey, messages)
  const stats = await settledStats(ctx, destination.id, 1)
  assertAccounted(t, stats, 1)
  t.equal(stats.delivered, 1)
  t.same(graph.received.map((b) => b.version), ['v26.0'], `POST ${graph.url}/v26.0/${DATASET}/events`)
  t.same(deliveredEventIds(graph), messages.map((m) => m.messageId))
})

t.test('a destination on v21.0: warned before 2027-01-21, version_expired after it with its conversions held, released by a PATCH of apiVersion', async (t) => {
  const { ctx, graph, clock } = await clocked(t, DEC_4)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { ...SETTINGS, apiVersion: 'v21.0' })
  t.equal(destination.status, 'active')
  t.same(destination.warnings, ['Graph API v21.0 expires on 2027-01-21 (in 47 days): change settings.apiVersion to v26.0 before then, or conversions will be held from that day.'])
  await sendBatch(ctx, source.writeKey, ordersAt(clock, 1))
  t.equal((await settledStats(ctx, destination.id, 1)).delivered, 1)
  t.same(graph.received.map((b) => b.version), ['v21.0'], 'still sent while it lasts')

  clock.now = JAN_22
  const expired = await getDestination(ctx, destination.id)
  t.equal(expired.status, 'version_expired')
  t.equal(expired.warnings.length, 1)
  t.match(expired.warnings[0], /^Graph API v21\.0 expired on 2027-01-21: conversions are held/)
  const list = (await ctx.admin('GET', `/v1/sources/${source.id}/destinations`)).json.destinations
  t.equal(list[0].status, 'version_expired', 'in the source\'s list too')

  const held = ordersAt(clock, 3)
  await sendBatch(ctx, source.writeKey, held)
  let stats = await waitFor(async () => { const s = await destinationStats(ctx, destination.id); return s.received === 4 && s.held === 3 && s }, 10_000, 'the conversions held')
  t.match(stats, { received: 4, delivered: 1, retrying: 3, held: 3, deadLettered: 0 })
  // A few rechecks later (HOLD_RECHECK_MS is 200 ms here) they are still held, counted once.
  await new Promise((resolve) => setTimeout(resolve, 700))
  stats = await destinationStats(ctx, destination.id)
  t.match(stats, { received: 4, delivered: 1, retrying: 3, held: 3, deadLettered: 0 }, 'held, not dead-lettered')
  t.equal(graph.requests, 1, 'nothing was sent to Meta on the expired version')

  const patched = await ctx.admin('PATCH', `/v1/destinations/${destination.id}`, { settings: { apiVersion: 'v26.0' } })
  t.equal(patched.statusCode, 200)
  t.match(patched.json, { status: 'active', warnings: [] })
  stats = await settledStats(ctx, destination.id, 4)
  assertAccounted(t, stats, 4)
  t.match(stats, { delivered: 4, held: 0, deadLettered: 0 })
  const released = graph.received.filter((b) => b.version === 'v26.0').flatMap((b) => b.body.data.map((e) => e.event_id))
  t.same(new Set(released), new Set(held.map((m) => m.messageId)), 'released to v26.0')
  t.equal(graph.requests, 2, 'in one request, at once (not after HOLD_RECHECK_MS: it is 5 minutes by default)')
})

t.test('conversions held for an expired version go to the dead letters after HOLD_MAX (app clock), and can be replayed', async (t) => {
  const { ctx, graph, clock } = await clocked(t, JAN_22)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { ...SETTINGS, apiVersion: 'v21.0' })
  t.equal(destination.status, 'version_expired')
  const messages = ordersAt(clock, 2)
  await sendBatch(ctx, source.writeKey, messages)
  await waitFor(async () => (await destinationStats(ctx, destination.id)).held === 2, 10_000, 'the conversions held')

  clock.now += 7 * DAY_MS - 60_000
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.match(await destinationStats(ctx, destination.id), { held: 2, deadLettered: 0 }, 'a minute short of HOLD_MAX (7 days): still held')
  clock.now += 60_000
  let stats = await settledStats(ctx, destination.id, 2)
  assertAccounted(t, stats, 2)
  t.match(stats, { delivered: 0, deadLettered: 2, held: 0, lastError: { message: /held for 1 week \(HOLD_MAX\): Graph API v21\.0 expired on 2027-01-21/ } })
  const failures = (await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`)).json
  t.equal(failures.total, 2)
  t.equal(graph.requests, 0, 'never sent')

  t.equal((await ctx.admin('PATCH', `/v1/destinations/${destination.id}`, { settings: { apiVersion: 'v25.0' } })).statusCode, 200)
  t.same((await ctx.admin('POST', `/v1/destinations/${destination.id}/failures/retry`)).json, { retried: 2 })
  stats = await waitFor(async () => { const s = await destinationStats(ctx, destination.id); return s.delivered === 2 && s.retrying === 0 && s }, 20_000, 'the replay')
  assertAccounted(t, stats, 2)
  t.same(graph.received.map((b) => b.version), ['v25.0'])
})

t.test('needs_token: the conversions waiting for a token are counted as held, and released when one is set', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  t.match(destination, { status: 'needs_token', connected: false, warnings: [] })
  const messages = [track('Order Completed', { revenue: 1 }), track('Order Completed', { revenue: 2 })]
  await sendBatch(ctx, source.writeKey, messages)
  const held = await waitFor(async () => { const s = await destinationStats(ctx, destination.id); return s.received === 2 && s.held === 2 && s }, 10_000, 'the conversions held')
  t.match(held, { received: 2, retrying: 2, held: 2, delivered: 0, deadLettered: 0, lastError: null })
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.match(await destinationStats(ctx, destination.id), { retrying: 2, held: 2 }, 'counted once however often they are held again')

  t.equal((await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: 'test-token' })).statusCode, 204)
  t.match(await getDestination(ctx, destination.id), { status: 'active', connected: true })
  const stats = await settledStats(ctx, destination.id, 2)
  assertAccounted(t, stats, 2)
  t.match(stats, { delivered: 2, held: 0 })
  t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)))

  t.equal((await ctx.admin('DELETE', `/v1/destinations/${destination.id}/access-token`)).statusCode, 204)
  t.equal((await getDestination(ctx, destination.id)).status, 'needs_token', 'disconnected: needs a token again')
})

t.test('held goes down when held conversions are filtered (destination disabled)', async (t) => {
  const { ctx } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  await sendBatch(ctx, source.writeKey, [track('Order Completed', { revenue: 1 }), track('Order Completed', { revenue: 2 }), track('Order Completed', { revenue: 3 })])
  await waitFor(async () => (await destinationStats(ctx, destination.id)).held === 3, 10_000, 'the conversions held')
  t.equal((await ctx.admin('PATCH', `/v1/destinations/${destination.id}`, { enabled: false })).statusCode, 200)
  const stats = await settledStats(ctx, destination.id, 3)
  assertAccounted(t, stats, 3)
  t.match(stats, { filtered: 3, held: 0 })
})

t.test('one status at a time: disabled > version_expired > needs_reauthorization > permission_denied > needs_token > active', async (t) => {
  const clock = { now: DEC_4 }
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), now: () => clock.now })
  const source = await ctx.createSource()
  const { id } = await createDestination(ctx, source.id, { ...SETTINGS, apiVersion: 'v20.0' }, { token: null })
  const status = async () => (await getDestination(ctx, id)).status
  const patch = async (body: unknown) => t.equal((await ctx.admin('PATCH', `/v1/destinations/${id}`, body)).statusCode, 200)

  t.equal(await status(), 'version_expired', 'an expired version (v20.0) and no token')
  await patch({ enabled: false })
  t.equal(await status(), 'disabled', 'disabled and expired')
  await patch({ enabled: true })
  await ctx.app.destinations.update(id, { authStatus: 'needs_reauthorization', authMessage: 'Error validating access token' })
  t.equal(await status(), 'version_expired', 'expired and Meta\'s 190')
  await patch({ settings: { apiVersion: 'v26.0' } })
  t.equal(await status(), 'needs_reauthorization', '190 and no token')
  t.equal((await getDestination(ctx, id)).statusMessage, 'Error validating access token')
  await ctx.app.destinations.update(id, { authStatus: 'permission_denied' })
  t.equal(await status(), 'permission_denied', 'a permission error and no token')
  await ctx.app.destinations.update(id, { authStatus: 'ok' })
  t.equal(await status(), 'needs_token')
  t.equal((await ctx.admin('PUT', `/v1/destinations/${id}/access-token`, { accessToken: 'test-token' })).statusCode, 204)
  t.equal(await status(), 'active')

  await patch({ settings: { apiVersion: 'v21.0' } })
  t.equal(await status(), 'active', 'v21.0 on 2026-12-04: warned, not expired')
  clock.now = Date.parse('2027-01-21T00:00:00Z')
  t.equal(await status(), 'version_expired', 'from the start (UTC) of its expiry date')
  await patch({ settings: { apiFormat: 'offline-conversions' } })
  const legacy = await getDestination(ctx, id)
  t.equal(legacy.status, 'active', 'the legacy format goes to v16.0 by design: never version_expired')
  t.match(legacy.warnings, [/legacy offline conversions API, which Meta has closed/])
})

t.test('a destination whose maps are all empty is accepted, with a warning on create, PATCH and GET', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const created = await ctx.admin('POST', `/v1/sources/${source.id}/destinations`, { type: 'facebook-offline-conversions', settings: {} })
  t.equal(created.statusCode, 201)
  t.equal(created.json.warnings.length, 1)
  t.match(created.json.warnings[0], NO_EVENT_MAPPED)
  const id = created.json.id
  t.match((await getDestination(ctx, id)).warnings, [NO_EVENT_MAPPED])

  const mapped = await ctx.admin('PATCH', `/v1/destinations/${id}`, { settings: { leadEvents: { 'Lead Generated': '5504831519607222' } } })
  t.same(mapped.json.warnings, [], 'one map is enough')
  const emptied = await ctx.admin('PATCH', `/v1/destinations/${id}`, { settings: { leadEvents: null } })
  t.equal(emptied.statusCode, 200)
  t.match(emptied.json.warnings, [NO_EVENT_MAPPED], 'said again once the last map is emptied')
  const renamed = await ctx.admin('PATCH', `/v1/destinations/${id}`, { name: 'Still nothing mapped' })
  t.match(renamed.json.warnings, [NO_EVENT_MAPPED], 'on any PATCH')
  t.match((await getDestination(ctx, id)).warnings, [NO_EVENT_MAPPED])

  const other = await createDestination(ctx, source.id, { audienceEntryEvents: { vip: DATASET } }, { token: null })
  t.same(other.warnings, [], 'an audience map alone maps something')
  const list = (await ctx.admin('GET', `/v1/sources/${source.id}/destinations`)).json.destinations
  t.same(list.map((d: any) => d.warnings.length), [1, 0], 'every destination carries warnings')
})

t.test('/metrics: days left of each destination\'s Graph version, negative once expired', async (t) => {
  const clock = { now: DEC_4 }
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), now: () => clock.now, env: { ROLE: 'api' } })
  const source = await ctx.createSource()
  const v21 = await createDestination(ctx, source.id, { ...SETTINGS, apiVersion: 'v21.0' }, { token: null })
  const current = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const legacy = await createDestination(ctx, source.id, { ...SETTINGS, apiFormat: 'offline-conversions' }, { token: null })
  const gauge = (id: string, version: string) => new RegExp(`relay_destination_graph_version_days_left\\{destination="${id}",version="${version}"\\} (-?\\d+)`)

  let body = await metricsText(ctx)
  t.match(body, /# HELP relay_destination_graph_version_days_left /)
  t.equal(gauge(v21.id, 'v21.0').exec(body)?.[1], '47', 'v21.0 on 2026-12-04 (noon): 47 whole days')
  t.equal(gauge(legacy.id, 'v16.0').exec(body)?.[1], '-570', 'the legacy format goes to v16.0, retired on 2025-05-14')
  t.notMatch(body, new RegExp(`graph_version_days_left\\{destination="${current.id}"`), 'v26.0 has no expiry date: left out')
  t.match(body, new RegExp(`relay_destination_conversions\\{destination="${v21.id}",outcome="held"\\} 0`), 'held among the conversion counts')

  clock.now = JAN_22
  body = await metricsText(ctx)
  t.equal(gauge(v21.id, 'v21.0').exec(body)?.[1], '-1', 'negative once expired')
  await ctx.admin('PATCH', `/v1/destinations/${v21.id}`, { settings: { apiVersion: 'v25.0' } })
  body = await metricsText(ctx)
  t.notMatch(body, gauge(v21.id, 'v21.0'), 'the old version\'s series is gone')
  t.equal(gauge(v21.id, 'v25.0').exec(body)?.[1], '554')
})

t.test('start-up: one warning per destination on a version that has expired or expires within 90 days', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { ROLE: 'api' } })
  const source = await ctx.createSource()
  const v21 = await createDestination(ctx, source.id, { ...SETTINGS, apiVersion: 'v21.0' }, { token: null })
  await createDestination(ctx, source.id, SETTINGS, { token: null })
  await createDestination(ctx, source.id, { ...SETTINGS, apiVersion: 'v22.0' }, { token: null })
  const v20 = await createDestination(ctx, source.id, { ...SETTINGS, apiVersion: 'v20.0' }, { token: null, enabled: false })
  const legacy = await createDestination(ctx, source.id, { ...SETTINGS, apiFormat: 'offline-conversions' }, { token: null })
  const lines: Array<{ obj: any, msg: string }> = []
  const logged = await logGraphVersionWarnings(ctx.app.destinations, DEC_4, { warn: (obj, msg) => { lines.push({ obj, msg }) } })
  t.equal(logged, 3)
  const byId = new Map(lines.map((line) => [line.obj.destinationId, line]))
  t.same([...byId.keys()].sort(), [v21.id, v20.id, legacy.id].sort(), 'one line each, none for v26.0 or v22.0 (166 days left)')
  t.match(byId.get(v21.id), { obj: { sourceId: source.id, graphVersion: 'v21.0', expiresOn: '2027-01-21', enabled: true }, msg: /^Graph API v21\.0 expires on 2027-01-21 \(in 47 days\)/ })
  t.match(byId.get(v20.id), { obj: { graphVersion: 'v20.0', expiresOn: '2026-09-24', enabled: false }, msg: /^Graph API v20\.0 expired on 2026-09-24/ })
  t.match(byId.get(legacy.id), { obj: { graphVersion: 'v16.0' }, msg: /legacy offline conversions API/ })
})
