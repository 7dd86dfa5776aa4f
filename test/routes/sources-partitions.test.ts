// Sources and regulations with partitioned ingestion (INGEST_PARTITIONS 4, one Redis): a source's
// counts are its own hash plus every partition's, deleting a source takes the partitions' keys,
// suppression reaches every partition's copy of the set (where each flush reads it), and a deletion
// drops the subject's messages waiting in any partition.
import t from 'tap'
import { RegulationEngine, subjectFingerprints, suppressionCopies } from '../../jobs/regulations.js'
import { partitionOf } from '../../src/ingest-partitions.js'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import { track, waitFor } from '../helpers/delivery-setup.js'
import { freshPrefix, ingestQueue } from '../helpers/ingest-queue.js'
import { send, sourceStats } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())
const PARTITIONS = 4
const ENV = { INGEST_PARTITIONS: String(PARTITIONS) }

async function regulate (ctx: TestContext, sourceId: string, body: Record<string, unknown>): Promise<any> {
  const created = await ctx.admin('POST', `/v1/sources/${sourceId}/regulations`, body)
  if (created.statusCode !== 202) throw new Error(`regulation refused: ${created.statusCode} ${JSON.stringify(created.json)}`)
  return waitFor(async () => {
    const { json } = await ctx.admin('GET', `/v1/regulations/${created.json.id}`)
    return json.status !== 'running' && json
  }, 30_000, 'the regulation to finish')
}

/** A batch over HTTP (inject), every message accepted or counted. */
async function batch (ctx: TestContext, writeKey: string, messages: Array<Record<string, unknown>>): Promise<void> {
  const response = await send(ctx.app, '/v1/batch', { batch: messages }, { writeKey })
  if (response.statusCode !== 200) throw new Error(`batch: ${response.statusCode} ${response.body}`)
}

t.test('stats: the source\'s own hash plus each partition\'s; delete takes every partition\'s keys', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { ...ENV, ROLE: 'api' } })
  const { app } = ctx
  const keys = app.keys
  t.equal(keys.ingestPartitions.length, PARTITIONS)
  const source = await ctx.createSource()
  t.ok(keys.ingestPartitions.every((p) => p.sourceStats(source.id) !== keys.sourceStats(source.id)), 'the partitions count in hashes of their own')
  await app.redis.hset(keys.sourceStats(source.id), { accepted: 100, duplicate: 1, unprocessable: 2 })
  for (const partition of keys.ingestPartitions) {
    await app.redis.hset(partition.sourceStats(source.id), { accepted: 10 * (partition.index + 1), duplicate: 1, rejected: 2, suppressed: 3 })
  }
  t.same(await sourceStats(ctx, source.id), { received: 200 + 5 + 8 + 12, accepted: 200, duplicate: 5, rejected: 8, suppressed: 12, unprocessable: 2, profiles: 0 })

  for (const partition of keys.ingestPartitions) {
    await app.redis.sadd(partition.dedup(source.id).current, 'm')
    await app.redis.sadd(partition.suppressed(source.id), 'x')
  }
  t.equal((await ctx.admin('DELETE', `/v1/sources/${source.id}`)).statusCode, 204)
  t.same(await app.redis.keys(`*${source.id}*`), [], 'no key of the source is left in any partition')
})

t.test('ingested through partitions: the source\'s counts add up', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: ENV })
  const source = await ctx.createSource()
  const messages = Array.from({ length: 40 }, (_, i) => track('Order Completed', { revenue: 1 }, { messageId: `m-${i}` }))
  t.ok(new Set(messages.map((m) => partitionOf(m.messageId, PARTITIONS))).size === PARTITIONS, 'the messages span every partition')
  await batch(ctx, source.writeKey, messages)
  await batch(ctx, source.writeKey, messages.slice(0, 10))
  await batch(ctx, source.writeKey, [{ type: 'track' }])
  const stats = await sourceStats(ctx, source.id)
  t.match(stats, { received: 51, accepted: 40, duplicate: 10, rejected: 1, suppressed: 0 })
})

t.test('suppression: every partition\'s copy, so every flush drops the subject; unsuppressed, its messages flow again', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: ENV })
  const { app } = ctx
  const source = await ctx.createSource()
  const copies = suppressionCopies(app.keys, source.id)
  t.equal(copies.length, PARTITIONS, 'a copy per partition')
  const done = await regulate(ctx, source.id, { regulationType: 'SUPPRESS_ONLY', subjectType: 'userId', subjectIds: ['gone', 'also-gone'] })
  t.match(done, { status: 'finished', counts: { suppressed: 2 } })
  const fingerprints = subjectFingerprints('userId', ['gone', 'also-gone'])
  for (const key of [app.keys.suppressed(source.id), ...copies]) t.same(await app.redis.smismember(key, ...fingerprints), [1, 1], key)

  // Again (a job run twice): nothing new, the copies unchanged.
  const again = await regulate(ctx, source.id, { regulationType: 'SUPPRESS_ONLY', subjectType: 'userId', subjectIds: ['gone'] })
  t.match(again, { status: 'finished', counts: { suppressed: 0 } })
  for (const key of copies) t.equal(await app.redis.scard(key), 2)

  const gone = Array.from({ length: 20 }, (_, i) => track('Order Completed', {}, { userId: 'gone', messageId: `gone-${i}` }))
  const kept = Array.from({ length: 20 }, (_, i) => track('Order Completed', {}, { userId: 'kept', messageId: `kept-${i}` }))
  t.equal(new Set(gone.map((m) => partitionOf(m.messageId, PARTITIONS))).size, PARTITIONS, 'the subject\'s messages span every partition')
  await batch(ctx, source.writeKey, [...gone, ...kept])
  t.match(await sourceStats(ctx, source.id), { received: 40, accepted: 20, suppressed: 20 })

  const back = await regulate(ctx, source.id, { regulationType: 'UNSUPPRESS', subjectType: 'userId', subjectIds: ['gone'] })
  t.match(back, { status: 'finished', counts: { unsuppressed: 1 } })
  for (const key of [app.keys.suppressed(source.id), ...copies]) t.same(await app.redis.smismember(key, ...fingerprints), [0, 1], key)
  const later = Array.from({ length: 20 }, (_, i) => track('Order Completed', {}, { userId: 'gone', messageId: `back-${i}` }))
  await batch(ctx, source.writeKey, later)
  t.match(await sourceStats(ctx, source.id), { received: 60, accepted: 40, suppressed: 20 })
})

t.test('deletion: the subject\'s messages waiting in every partition are dropped', async (t) => {
  const prefixed = freshPrefix(redis)
  const ctx = await buildTestApp(t, { redis: prefixed, env: { ...ENV, ROLE: 'api' } })
  const { app } = ctx
  const source = await ctx.createSource()
  const gone = Array.from({ length: 20 }, (_, i) => track('Order Completed', {}, { userId: 'gone', messageId: `gone-${i}` }))
  const kept = Array.from({ length: 20 }, (_, i) => track('Order Completed', {}, { userId: 'kept', messageId: `kept-${i}` }))
  await batch(ctx, source.writeKey, [...gone, ...kept])
  await batch(ctx, source.writeKey, [track('Signed Up', {}, { userId: 'gone', messageId: 'single' })])
  const { stored } = ingestQueue(t, prefixed, PARTITIONS)
  t.equal((await stored(source.id)).length, 41, 'all waiting (ROLE api: no worker)')
  // The engine as a worker has it (its ingest-job phase; the API role runs no regulation worker).
  const engine = new RegulationEngine({
    redis: app.redis,
    keys: app.keys,
    regulations: app.regulations,
    audiences: app.audiences,
    profiles: app.profiles,
    destinations: app.destinations,
    ingestQueues: app.queues.ingestPartitions,
    deliverQueue: app.deliverQueue,
    suppressionCacheMs: 0,
    log: { warn: () => {} }
  })
  const dropped = await (engine as unknown as { dropWaitingMessages: (data: object) => Promise<number> }).dropWaitingMessages({ regulationId: 'r', sourceId: source.id, regulationType: 'DELETE_ONLY', subjectType: 'userId', subjectIds: ['gone'] })
  t.equal(dropped, 21)
  const left = await stored(source.id)
  t.equal(left.length, 20)
  t.ok(left.every((message) => message.userId === 'kept'), 'only the other user\'s messages are left')
})
