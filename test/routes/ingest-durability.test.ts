import type { LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { eventually, ingestQueue } from '../helpers/ingest-queue.js'
import { send } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

/** The answer, or a failure naming the request when none comes: an outage must not hang a client. */
async function answer (request: Promise<LightMyRequestResponse>, what: string): Promise<LightMyRequestResponse> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise<never>((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within 15 s`)), 15_000) })
  try {
    return await Promise.race([request, hang])
  } finally {
    clearTimeout(timer)
  }
}

t.test('a Redis outage: 503 while it lasts, nothing accepted is lost', { skip: redis.owned ? false : 'needs a redis-server of its own to stop and start' }, async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' }, redis })
  const { app } = ctx
  const { stored } = ingestQueue(t, redis)
  const { id, writeKey } = await ctx.createSource()
  const other = await ctx.createSource('not used before the outage')

  const before = ['before-1', 'before-2', 'before-3', 'before-4', 'before-5']
  // Batches of over 32 KB: their bodies are stored by HSET in the flush's transaction (the single
  // messages' go through the flush script), before the outage and after it.
  const filler = 'x'.repeat(10_000)
  const batch = await send(app, '/v1/batch', { batch: before.slice(0, 4).map((messageId) => ({ type: 'track', userId: 'u1', event: 'Order Completed', messageId, properties: { filler } })) }, { writeKey })
  t.equal(batch.statusCode, 200)
  t.equal((await send(app, '/v1/identify', { userId: 'u1', messageId: 'before-5' }, { writeKey })).statusCode, 200)

  await redis.stop()

  const single = await answer(send(app, '/v1/track', { userId: 'u1', event: 'E', messageId: 'during-1' }, { writeKey }), 'single message')
  t.equal(single.statusCode, 503, 'a message that cannot be stored is answered 503, not 200')
  t.match(single.json(), { success: false, error: /unreachable|retry/ })
  t.match(single.headers['retry-after'], /^[1-9]\d*$/, 'with Retry-After, so clients back off')
  t.equal(single.headers['access-control-allow-origin'], '*')

  const duringBatch = await answer(send(app, '/v1/batch', { batch: [{ type: 'identify', userId: 'u2', messageId: 'during-2' }] }, { writeKey }), 'batch')
  t.equal(duringBatch.statusCode, 503, 'a batch too')
  t.match(duringBatch.json(), { success: false, error: /\S/ })
  t.match(duringBatch.headers['retry-after'], /^[1-9]\d*$/)

  const uncached = await answer(send(app, '/v1/track', { userId: 'u1', event: 'E' }, { writeKey: other.writeKey }), 'a key not looked up before')
  t.equal(uncached.statusCode, 503, 'a key that cannot be checked is a 503, not a 401 the client would drop the batch for')
  t.match(uncached.json(), { success: false, error: /\S/ })

  const ready = await answer(app.inject({ method: 'GET', url: '/ready' }), '/ready')
  t.equal(ready.statusCode, 503, '/ready says the service cannot take traffic')
  t.match(ready.json(), { status: 'unavailable', message: /Redis/ })
  const health = await answer(app.inject({ method: 'GET', url: '/health' }), '/health')
  t.equal(health.statusCode, 200, '/health: the process itself is fine')

  const adminDuring = await answer(app.inject({ method: 'GET', url: '/v1/sources', headers: { authorization: `Bearer ${ctx.config.ADMIN_TOKEN}` } }), 'admin')
  t.equal(adminDuring.statusCode, 503, 'the admin API answers 503 too')
  t.match(adminDuring.json(), { statusCode: 503, error: 'Service Unavailable', message: /Redis/ })
  t.match(adminDuring.headers['retry-after'], /^[1-9]\d*$/)

  await redis.start()
  t.ok(await eventually(async () => (await app.inject({ method: 'GET', url: '/ready' })).statusCode === 200, 20_000, 200), '/ready is 200 again once Redis is back')

  t.same((await stored(id)).map((m) => m.messageId), before, 'every message accepted before the outage is still queued (AOF)')

  const after = await send(app, '/v1/batch', { batch: [{ type: 'identify', userId: 'u2', messageId: 'during-2', traits: { filler } }, { type: 'identify', userId: 'u3', messageId: 'after-1', traits: { filler, more: filler, still: filler } }] }, { writeKey })
  t.equal(after.statusCode, 200, 'new messages are accepted again')
  t.equal((await send(app, '/v1/track', { userId: 'u1', event: 'E', messageId: 'after-2' }, { writeKey: other.writeKey })).statusCode, 200)
  t.same((await stored(id)).map((m) => m.messageId), [...before, 'during-2', 'after-1'], 'the retried and the new messages are stored, once')
  t.same((await stored(other.id)).map((m) => m.messageId), ['after-2'])
  const stats = await ctx.admin('GET', `/v1/sources/${id}/stats`)
  t.match(stats.json, { received: 7, accepted: 7, duplicate: 0, rejected: 0 }, 'the 503s were not counted as received')
})

t.test('a flush whose job cannot be added is answered 503 and leaves its ids unremembered: the retry is stored, not taken for a duplicate', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' }, redis })
  const { app } = ctx
  const { stored } = ingestQueue(t, redis)
  const { id, writeKey } = await ctx.createSource()
  // BullMQ numbers jobs with INCR on this key: a value that is no number makes the add fail
  // inside the flush's transaction, after the bodies and before the duplicate check.
  const jobCounter = `{${redis.prefix}}:ingest:id`
  await app.redis.set(jobCounter, 'not a number')
  const message = { userId: 'u1', event: 'Order Completed', messageId: 'add-fails-1' }
  const bodies = () => app.redis.keys(`${ctx.config.REDIS_PREFIX}:ingest-body:*`)
  const bodiesBefore = await bodies()
  const other = await ctx.createSource('its messages have no ids')
  const [failed, failedOther] = await Promise.all([
    send(app, '/v1/track', message, { writeKey }),
    send(app, '/v1/track', { userId: 'u2', event: 'Signed Up' }, { writeKey: other.writeKey })
  ])
  t.equal(failed.statusCode, 503, 'not stored: 503, and the client retries')
  t.equal(failedOther.statusCode, 503)
  // A flush of large bodies stores them before the script, in its transaction: they go too.
  const large = await send(app, '/v1/batch', { batch: Array.from({ length: 3 }, (_, i) => ({ ...message, type: 'track', messageId: `large-${i}`, properties: { filler: 'x'.repeat(20_000) } })) }, { writeKey })
  t.equal(large.statusCode, 503, 'a large batch: 503')
  const none = { received: 0, accepted: 0, duplicate: 0, rejected: 0 }
  t.match((await ctx.admin('GET', `/v1/sources/${id}/stats`)).json, none, 'nothing counted')
  t.match((await ctx.admin('GET', `/v1/sources/${other.id}/stats`)).json, none)
  t.same((await bodies()).sort(), bodiesBefore.sort(), 'no body left behind')

  await app.redis.del(jobCounter)
  const retried = await send(app, '/v1/track', message, { writeKey })
  t.equal(retried.statusCode, 200)
  t.same((await stored(id)).map((m) => m.messageId), ['add-fails-1'], 'the retry is stored')
  t.match((await ctx.admin('GET', `/v1/sources/${id}/stats`)).json, { received: 1, accepted: 1, duplicate: 0, rejected: 0 })
})

t.test('Redis out of memory: 503 saying so, nothing counted; once it has room the retry is stored', { skip: redis.owned ? false : 'needs a redis-server of its own to reconfigure' }, async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' }, redis })
  const { app } = ctx
  const { stored } = ingestQueue(t, redis)
  const { id, writeKey } = await ctx.createSource()
  const message = { userId: 'u1', event: 'Order Completed', messageId: 'full-1' }
  // Under noeviction a full Redis refuses every write that needs memory.
  await app.redis.config('SET', 'maxmemory', '1')
  t.teardown(() => app.redis.config('SET', 'maxmemory', '0'))
  const full = await answer(send(app, '/v1/track', message, { writeKey }), 'a message while Redis is full')
  t.equal(full.statusCode, 503, 'not stored: 503, and the client retries')
  t.match(full.json(), { success: false, error: /out of memory/ }, 'the answer says Redis is full')
  t.match(full.headers['retry-after'], /^[1-9]\d*$/)
  // A large batch's bodies go by HSET in the flush's transaction, which Redis discards.
  const batch = await answer(send(app, '/v1/batch', { batch: Array.from({ length: 3 }, (_, i) => ({ ...message, type: 'track', messageId: `full-large-${i}`, properties: { filler: 'x'.repeat(20_000) } })) }, { writeKey }), 'a large batch while Redis is full')
  t.equal(batch.statusCode, 503)
  t.match(batch.json(), { success: false, error: /out of memory/ })

  await app.redis.config('SET', 'maxmemory', '0')
  t.match((await ctx.admin('GET', `/v1/sources/${id}/stats`)).json, { received: 0, accepted: 0 }, 'nothing counted while full')
  t.equal((await send(app, '/v1/track', message, { writeKey })).statusCode, 200, 'room again: the retry is accepted')
  t.same((await stored(id)).map((m) => m.messageId), ['full-1'], 'and stored, not taken for a duplicate')
})

t.test('jobs stored by an earlier build, with a key per body, are still read', async (t) => {
  const ctx = await buildTestApp(t, { env: { ROLE: 'api' }, redis })
  const { queue, stored } = ingestQueue(t, redis)
  const bodyKey = `${ctx.config.REDIS_PREFIX}:ingest-body:{older-build}:0`
  await ctx.app.redis.set(bodyKey, JSON.stringify({ userId: 'u1', event: 'Signed Up', messageId: 'old-1' }))
  await queue.add('requests', { requests: [{ sourceId: 'src-old', receivedAt: Date.now(), pathType: 'track', idPrefix: 'relay-old', bodyKey }] })
  t.same((await stored('src-old')).map((m) => [m.messageId, m.event]), [['old-1', 'Signed Up']])
})
