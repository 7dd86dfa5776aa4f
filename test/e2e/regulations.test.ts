// Deletion and suppression (Segment's Regulations API semantics), through the admin API: a
// suppressed subject's later messages are answered 200 and dropped, counted as suppressed; a
// deleted subject leaves nothing behind — profile, history, links, memberships (no false sent),
// undelivered conversions — and the job finishes even when its worker dies mid-way.
import { createHash } from 'node:crypto'
import t from 'tap'
import { FAST_DELIVERY_ENV, assertAccounted, createDestination, deliveredEventIds, destinationStats, sendBatch, settledStats, startDelivery, track, waitFor } from '../helpers/delivery-setup.js'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import { allMembers, captureEmitted, createAudience, ingest, ingestDrained, waitForAudience, waitForIdle } from '../helpers/audience-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { send, sourceStats } from '../helpers/ingest-send.js'
import { allKeys, startTestRedis } from '../helpers/redis.js'
import { killWorkerProcess, startWorkerProcess, workerEnv } from '../helpers/worker-process.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())
const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')

async function regulate (ctx: TestContext, sourceId: string, body: Record<string, unknown>): Promise<any> {
  const created = await ctx.admin('POST', `/v1/sources/${sourceId}/regulations`, body)
  if (created.statusCode !== 202) throw new Error(`regulation refused: ${created.statusCode} ${JSON.stringify(created.json)}`)
  return waitFor(async () => {
    const { json } = await ctx.admin('GET', `/v1/regulations/${created.json.id}`)
    return json.status !== 'running' && json
  }, 30_000, 'the regulation to finish')
}

/** Every key and value under the test's prefix, as text. */
async function everything (ctx: TestContext): Promise<string> {
  const { redis } = ctx.app
  const parts: string[] = []
  for (const key of await allKeys(redis, `*${ctx.config.REDIS_PREFIX}*`)) {
    parts.push(key)
    const type = await redis.type(key)
    if (type === 'string') parts.push((await redis.getBuffer(key))?.toString('latin1') ?? '')
    else if (type === 'hash') parts.push(...Object.entries(await redis.hgetallBuffer(key)).flat().map((part) => part.toString('latin1')))
    else if (type === 'list') parts.push(...await redis.lrange(key, 0, -1))
    else if (type === 'set') parts.push(...(await redis.smembersBuffer(key)).map((member) => member.toString('latin1')))
    else if (type === 'zset') parts.push(...await redis.zrange(key, 0, -1))
    else if (type === 'stream') parts.push(JSON.stringify(await redis.xrange(key, '-', '+')))
  }
  return parts.join('\n')
}

t.test('suppress: later messages answered 200, never stored for processing, counted; unsuppress: they flow again', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1111' } })
  const done = await regulate(ctx, source.id, { regulationType: 'SUPPRESS_ONLY', subjectType: 'userId', subjectIds: ['gone-user'] })
  t.match(done, { status: 'finished', counts: { subjects: 1, suppressed: 1 } })
  const anonymous = await regulate(ctx, source.id, { regulationType: 'SUPPRESS_ONLY', subjectType: 'anonymousId', subjectIds: ['gone-anon'] })
  t.equal(anonymous.status, 'finished')

  const single = await send(ctx.app, '/v1/track', { userId: 'gone-user', event: 'Order Completed', properties: { revenue: 1 } }, { writeKey: source.writeKey })
  t.same(single.json(), { success: true }, 'answered 200: the client must not retry')
  await sendBatch(ctx, source.writeKey, [
    track('Order Completed', { revenue: 1 }, { userId: 'gone-user', messageId: 'suppressed-1' }),
    track('Order Completed', { revenue: 1 }, { userId: undefined, anonymousId: 'gone-anon', messageId: 'suppressed-2' }),
    track('Order Completed', { revenue: 1 }, { userId: 'kept-user', messageId: 'kept-1' }),
    track('Order Completed', { revenue: 1 }, { userId: 'kept-user', anonymousId: 'gone-anon', messageId: 'suppressed-3' })
  ])
  await ingestDrained(ctx)
  const stats = await settledStats(ctx, destination.id, 1)
  t.same(deliveredEventIds(graph, '1111'), ['kept-1'], 'only the other user\'s message went anywhere')
  t.equal(stats.received, 1, 'the destination never saw the suppressed ones')
  const source1 = await sourceStats(ctx, source.id)
  t.match(source1, { received: 5, accepted: 1, suppressed: 4 })
  t.equal(source1.received, source1.accepted + source1.duplicate + source1.rejected + source1.suppressed, 'received = accepted + duplicate + rejected + suppressed')
  t.equal(await ctx.app.redis.exists(ctx.app.keys.profile(source.id, 'gone-user')), 0, 'no profile made for the suppressed user')

  await regulate(ctx, source.id, { regulationType: 'UNSUPPRESS', subjectType: 'userId', subjectIds: ['gone-user'] })
  await sendBatch(ctx, source.writeKey, [track('Order Completed', { revenue: 1 }, { userId: 'gone-user', messageId: 'back-1' })])
  await settledStats(ctx, destination.id, 2)
  t.same(deliveredEventIds(graph, '1111').sort(), ['back-1', 'kept-1'], 'unsuppressed, the user\'s messages flow again')
  t.match(await sourceStats(ctx, source.id), { accepted: 2, suppressed: 4 })
})

t.test('delete: a user with a profile, history, two audiences, a held conversion and a dead letter leaves nothing', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const emitted = captureEmitted(ctx.app)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1111', 'Product Added': '2222' } })
  const noToken = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '3333' } }, { token: null })
  const ordered = await createAudience(ctx, source.id, { name: 'Ordered', condition: { type: 'event', event: 'Order Completed', atLeast: 1, withinDays: 30 } })
  const pro = await createAudience(ctx, source.id, { name: 'Pro', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
  await waitForIdle(ctx, ordered.id)
  await waitForIdle(ctx, pro.id)
  // Meta refuses the user's Product Added: a dead letter.
  graph.failNext({ kind: 'graph', code: 100, status: 400 }, 1, { datasetId: '2222' })
  await ingest(ctx, source.writeKey, [
    { type: 'identify', userId: 'doomed', anonymousId: 'doomed-anon', traits: { plan: 'pro', email: 'doomed@example.com', city: 'Providence' } },
    { type: 'track', userId: 'doomed', event: 'Order Completed', messageId: 'doomed-order', properties: { revenue: 5 } },
    { type: 'track', userId: 'doomed', event: 'Product Added', messageId: 'doomed-product', properties: { price: 5 } },
    { type: 'identify', userId: 'other', traits: { plan: 'pro' } },
    { type: 'track', userId: 'other', event: 'Order Completed', messageId: 'other-order', properties: { revenue: 5 } }
  ])
  await waitForAudience(ctx, ordered.id, (a) => a.size === 2, 'both ordered')
  await waitForAudience(ctx, pro.id, (a) => a.size === 2, 'both pro')
  await ingestDrained(ctx)
  await waitFor(async () => (await destinationStats(ctx, destination.id)).deadLettered === 1, 20_000, 'the dead letter')
  await waitFor(async () => (await destinationStats(ctx, noToken.id)).held === 2, 20_000, 'the held conversions')
  const falsesBefore = emitted.filter(({ message }) => message.userId === 'doomed' && Object.values(message.traits).includes(false)).length

  const done = await regulate(ctx, source.id, { regulationType: 'DELETE_ONLY', subjectType: 'userId', subjectIds: ['doomed'] })
  t.match(done, { status: 'finished', counts: { subjects: 1, profilesDeleted: 1, linksDeleted: 1, membershipsRemoved: 2, conversionsDeleted: 2 } })
  t.same(await allMembers(ctx, ordered.id), ['other'], 'the audience\'s size drops')
  t.same(await allMembers(ctx, pro.id), ['other'])
  await ingestDrained(ctx)
  t.equal(emitted.filter(({ message }) => message.userId === 'doomed' && Object.values(message.traits).includes(false)).length, falsesBefore, 'no false sent: the person is gone, not leaving')

  const stored = await everything(ctx)
  for (const trace of ['doomed', sha256('doomed'), sha256('doomed@example.com'), 'doomed-order', 'doomed-product', 'doomed-anon']) {
    t.notOk(stored.includes(trace), `nothing of the user left in Redis: ${trace.slice(0, 16)}`)
  }
  t.ok(stored.includes('other'), 'the other user is untouched')
  const stats = await destinationStats(ctx, destination.id)
  assertAccounted(t, stats, stats.received)
  const held = await destinationStats(ctx, noToken.id)
  t.match(held, { held: 1, retrying: 1, filteredByReason: { deleted: 1 } }, 'the other user\'s conversion still held, the deleted user\'s counted')
  t.equal(held.received, held.filtered + held.invalid.total + held.delivered + held.deadLettered + held.retrying)
  t.equal((await destinationStats(ctx, destination.id)).filteredByReason.deleted, 1, 'the dead letter deleted, counted')
})

t.test('deletion drops the subject\'s messages still waiting in ingest jobs', async (t) => {
  const shared = freshPrefix(redis)
  const api = await buildTestApp(t, { redis: shared, env: { ROLE: 'api' } })
  const source = await api.createSource()
  await send(api.app, '/v1/batch', { batch: [{ type: 'identify', userId: 'late', traits: { plan: 'x' } }, { type: 'identify', userId: 'stays', traits: { plan: 'y' } }] }, { writeKey: source.writeKey })
  // The ingest queues paused, as when workers fall behind: the message is still waiting.
  for (const queue of api.app.queues.ingestPartitions) await queue.pause()
  const created = await api.admin('POST', `/v1/sources/${source.id}/regulations`, { regulationType: 'DELETE_ONLY', subjectType: 'userId', subjectIds: ['late'] })
  const worker = await buildTestApp(t, { redis: shared, env: { ROLE: 'worker', ...FAST_DELIVERY_ENV } })
  const done = await waitFor(async () => { const { json } = await api.admin('GET', `/v1/regulations/${created.json.id}`); return json.status === 'finished' && json }, 30_000, 'the regulation')
  t.equal(done.counts.messagesDropped, 1)
  for (const queue of api.app.queues.ingestPartitions) await queue.resume()
  await ingestDrained(worker)
  t.equal(await api.app.redis.exists(api.app.keys.profile(source.id, 'late')), 0, 'the waiting message did not recreate the profile')
  t.equal(await api.app.redis.exists(api.app.keys.profile(source.id, 'stays')), 1)
})

t.test('a regulation whose worker is killed mid-way finishes on another', async (t) => {
  const shared = freshPrefix(redis)
  const api = await buildTestApp(t, { redis: shared, listen: true, env: { ROLE: 'api' } })
  const source = await api.createSource()
  await send(api.app, '/v1/batch', { batch: [{ type: 'identify', userId: 'victim', traits: { plan: 'x' } }] }, { writeKey: source.writeKey })
  const first = await startWorkerProcess(t, 'test/helpers/delivery-worker.ts', workerEnv(api))
  await waitFor(async () => (await api.app.redis.exists(api.app.keys.profile(source.id, 'victim'))) === 1, 20_000, 'the profile')
  const created = await api.admin('POST', `/v1/sources/${source.id}/regulations`, { regulationType: 'SUPPRESS_WITH_DELETE', subjectType: 'userId', subjectIds: ['victim'] })
  // Killed once the suppression is written, while it waits out the API processes' cache.
  await waitFor(async () => (await api.app.redis.exists(api.app.keys.suppressed(source.id))) === 1, 20_000, 'the suppression')
  await killWorkerProcess(first.child)
  t.equal((await api.admin('GET', `/v1/regulations/${created.json.id}`)).json.status, 'running')
  await buildTestApp(t, { redis: shared, env: { ROLE: 'worker', STALLED_INTERVAL_MS: '500' } })
  const done = await waitFor(async () => { const { json } = await api.admin('GET', `/v1/regulations/${created.json.id}`); return json.status === 'finished' && json }, 30_000, 'the regulation to finish on the other worker')
  t.match(done.counts, { subjects: 1, profilesDeleted: 1 })
  t.equal(await api.app.redis.exists(api.app.keys.profile(source.id, 'victim')), 0)
})

t.test('the admin API: 404 for an unknown source or regulation, 400 for a bad request, the source\'s list', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  t.equal((await ctx.admin('POST', '/v1/sources/src_none/regulations', { regulationType: 'DELETE_ONLY', subjectType: 'userId', subjectIds: ['u'] })).statusCode, 404)
  t.equal((await ctx.admin('GET', '/v1/regulations/reg_none')).statusCode, 404)
  for (const body of [
    { regulationType: 'FORGET', subjectType: 'userId', subjectIds: ['u'] },
    { regulationType: 'DELETE_ONLY', subjectType: 'email', subjectIds: ['u'] },
    { regulationType: 'DELETE_ONLY', subjectType: 'userId', subjectIds: [] },
    { regulationType: 'DELETE_ONLY', subjectType: 'userId', subjectIds: Array.from({ length: 5001 }, (_, i) => `u${i}`) }
  ]) t.equal((await ctx.admin('POST', `/v1/sources/${source.id}/regulations`, body)).statusCode, 400)
  const created = await ctx.admin('POST', `/v1/sources/${source.id}/regulations`, { regulationType: 'SUPPRESS_ONLY', subjectType: 'anonymousId', subjectIds: ['a'] })
  const list = await ctx.admin('GET', `/v1/sources/${source.id}/regulations`)
  t.same(list.json.regulations.map((r: { id: string }) => r.id), [created.json.id])
})
