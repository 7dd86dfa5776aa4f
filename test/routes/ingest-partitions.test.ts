// Partitioned ingestion (INGEST_PARTITIONS): a message goes to its user's partition (userId,
// else anonymousId, else messageId), so a message sent again inside another batch is still found a
// duplicate and one user's messages keep their order; a batch whose messages span partitions is
// stored as parts, each message once, with the ids it was given; every partition is consumed.
import t from 'tap'
import { partitionKey, partitionOf } from '../../src/ingest-partitions.js'
import { startFakeGraph } from '../fixtures/fake-graph.js'
import { ADMIN_TOKEN, buildTestApp } from '../helpers/app.js'
import { assertAccounted, createDestination, deliveredEventIds, FAST_DELIVERY_ENV, settledStats, track, waitFor } from '../helpers/delivery-setup.js'
import { readJobMessages } from '../../jobs/ingest.js'
import type { Job } from 'bullmq'
import type { IngestJobData } from '../../jobs/queues.js'
import type { SegmentMessage } from '../../src/segment/types.js'
import type { TestContext } from '../helpers/app.js'
import { createAudience, identifyBy, ingest, ingestDrained } from '../helpers/audience-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { send, sourceStats } from '../helpers/ingest-send.js'
import { scrape, valueOf } from '../helpers/metrics.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())
const PARTITIONS = 4

/** What each waiting job holds of the messages `mine` picks, as `label` gives them (jobs holding none left out). */
async function partsHolding (ctx: TestContext, jobs: Array<Job<IngestJobData>>, mine: (message: SegmentMessage) => boolean, label: (message: SegmentMessage) => string): Promise<string[][]> {
  const parts: string[][] = []
  for (const job of jobs) {
    const held = (await readJobMessages(ctx.app.redis, job.data)).messages.map(([, message]) => message).filter(mine).map(label)
    if (held.length > 0) parts.push(held)
  }
  return parts
}

/** The messages every partition's waiting jobs hold (ROLE api: no worker takes them), as the worker reads them. */
async function storedMessages (ctx: TestContext) {
  const jobs = (await Promise.all(ctx.app.queues.ingestPartitions.map((queue) => queue.getWaiting(0, -1)))).flat()
  return (await Promise.all(jobs.map(async (job) => (await readJobMessages(ctx.app.redis, job.data)).messages))).flat()
}

t.test('a key always has the same partition, and keys spread over every partition; the user decides', async (t) => {
  t.equal(partitionKey({ anonymousId: 'a1', userId: 'u1', messageId: 'm1' }), 'u1')
  t.equal(partitionKey({ anonymousId: 'a1', messageId: 'm1' }), 'a1')
  t.equal(partitionKey({ messageId: 'm1' }), 'm1')
  const counts = Array<number>(PARTITIONS).fill(0)
  for (let i = 0; i < 4000; i++) counts[partitionOf(`message-${i}`, PARTITIONS)]++
  t.same(partitionOf('order-1', PARTITIONS), partitionOf('order-1', PARTITIONS))
  for (const count of counts) t.ok(count > 800 && count < 1200, `about a quarter each (${counts.join(', ')})`)
  t.equal(partitionOf('anything', 1), 0)
})

t.test('a batch across partitions is stored as parts: each message once, in order, its given id kept', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { ROLE: 'api', INGEST_PARTITIONS: String(PARTITIONS) } })
  const source = await ctx.createSource()
  const batch = [
    ...Array.from({ length: 12 }, (_, i) => track('Order Completed', { revenue: i + 1 }, { messageId: `order-${i}`, userId: `user-${i}` })),
    track('Signed Up', {}, { messageId: undefined }), // the server gives its id
    { type: 'track' } // rejected: no event, no user
  ]
  const response = await send(ctx.app, '/v1/batch', { batch, context: { app: { name: 'shop' } }, sentAt: new Date().toISOString() }, { writeKey: source.writeKey })
  t.equal(response.statusCode, 200)
  t.match(response.json(), { success: true, rejected: [{ index: 13 }] })
  const byQueue = await Promise.all(ctx.app.queues.ingestPartitions.map((queue) => queue.getWaitingCount()))
  t.ok(byQueue.filter((n) => n > 0).length >= 3, `stored in several partitions (${byQueue.join(', ')})`)
  const stored = (await storedMessages(ctx)).map(([, message]) => message)
  t.equal(stored.length, 13, 'every valid message once')
  const ids = stored.map((message) => message.messageId)
  for (let i = 0; i < 12; i++) t.ok(ids.includes(`order-${i}`), `order-${i} kept its id`)
  const given = stored.find((message) => message.event === 'Signed Up')!
  t.match(given.messageId, /-12$/, 'an id the server gives follows the message\'s place in the batch as sent')
  t.same(given.context?.app, { name: 'shop' }, 'the batch\'s context reaches a part\'s messages')
  for (const message of stored) {
    const partition = partitionOf(message.userId!, PARTITIONS)
    if (message.event === 'Order Completed') t.ok(byQueue[partition] > 0, `${message.messageId} in its user's partition`)
  }
  t.match(await sourceStats(ctx, source.id), { accepted: 13, rejected: 1, duplicate: 0 })
})

t.test('duplicates sent again in other batches are found in their partitions; every partition is consumed', async (t) => {
  const graph = await startFakeGraph()
  t.teardown(() => graph.close())
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), listen: true, env: { ...FAST_DELIVERY_ENV, FACEBOOK_GRAPH_URL: graph.url, INGEST_PARTITIONS: String(PARTITIONS) } })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1001' } })
  const orders = Array.from({ length: 200 }, (_, i) => track('Order Completed', { revenue: i + 1 }, { messageId: `order-${i}`, userId: `user-${i % 40}` }))
  for (let i = 0; i < orders.length; i += 50) {
    t.equal((await send(ctx.app, '/v1/batch', { batch: orders.slice(i, i + 50) }, { writeKey: source.writeKey })).statusCode, 200)
  }
  // The same ids again, batched differently (every 7th order, with new ones between).
  const again = orders.filter((_, i) => i % 7 === 0)
  const fresh = Array.from({ length: 10 }, (_, i) => track('Order Completed', { revenue: 1 }, { messageId: `late-${i}`, userId: `user-${i}` }))
  t.equal((await send(ctx.app, '/v1/batch', { batch: [...fresh, ...again] }, { writeKey: source.writeKey })).statusCode, 200)
  const stats = await settledStats(ctx, destination.id, 210, 30_000)
  t.match(stats, { received: 210, delivered: 210, retrying: 0 })
  const sent = deliveredEventIds(graph, '1001')
  t.equal(sent.length, 210, 'each order reached Meta once')
  t.equal(new Set(sent).size, 210)
  t.match(await sourceStats(ctx, source.id), { accepted: 210, duplicate: again.length, rejected: 0 }, 'the duplicates counted, not delivered')
  await waitFor(async () => (await ctx.app.queueStats())[0].processedTotal > 0)
  const ingest = (await ctx.app.queueStats())[0]
  t.equal(ingest.partitions?.length, PARTITIONS, 'GET /v1/queues lists each partition')
  t.ok(ingest.partitions!.every((part) => part.processedTotal > 0), 'every partition\'s jobs were processed')
  t.equal(ingest.processedTotal, ingest.partitions!.reduce((total, part) => total + part.processedTotal, 0), 'the entry is their sum')
})

t.test('one user\'s messages of a batch stay together, in the order sent', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { ROLE: 'api', INGEST_PARTITIONS: String(PARTITIONS) } })
  const source = await ctx.createSource()
  const batch: Array<Record<string, unknown>> = []
  for (let step = 0; step < 3; step++) {
    // (Some with the anonymousId too, some without: as a signed-in user's browser and server send them.)
    for (let u = 0; u < 8; u++) batch.push(track(`Step ${step}`, {}, { userId: `user-${u}`, ...(step === 1 ? { anonymousId: `anon-${u}` } : {}), messageId: `u${u}-s${step}` }))
  }
  t.equal((await send(ctx.app, '/v1/batch', { batch }, { writeKey: source.writeKey })).statusCode, 200)
  const jobs = (await Promise.all(ctx.app.queues.ingestPartitions.map((queue) => queue.getWaiting(0, -1)))).flat()
  t.ok(jobs.length >= 2, `the batch went to several partitions (${jobs.length} jobs)`)
  for (let u = 0; u < 8; u++) {
    const holding = await partsHolding(ctx, jobs, (message) => message.userId === `user-${u}`, (message) => String(message.event))
    t.same(holding, [['Step 0', 'Step 1', 'Step 2']], `user-${u}: one part, in order`)
  }
})

t.test('the dashboard and /metrics show every partition, and their sum', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { ROLE: 'api', INGEST_PARTITIONS: String(PARTITIONS) } })
  const source = await ctx.createSource()
  const batch = Array.from({ length: 40 }, (_, i) => track('Order Completed', { revenue: 1 }, { userId: `user-${i}` }))
  t.equal((await send(ctx.app, '/v1/batch', { batch }, { writeKey: source.writeKey })).statusCode, 200)
  const waiting = await Promise.all(ctx.app.queues.ingestPartitions.map((queue) => queue.getWaitingCount()))
  const board = await ctx.app.inject({ url: '/admin/queues/api/queues', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(board.statusCode, 200)
  for (let p = 0; p < PARTITIONS; p++) t.match(board.body, new RegExp(`"name":"ingest-${p}"`), `the dashboard lists ingest-${p}`)
  const { samples } = await scrape(ctx)
  t.equal(valueOf(samples, 'relay_queue_jobs', { queue: 'ingest', state: 'waiting' }), waiting.reduce((a, b) => a + b, 0), 'relay_queue_jobs{queue="ingest"} is the partitions\' sum')
  for (let p = 0; p < PARTITIONS; p++) {
    t.equal(valueOf(samples, 'relay_ingest_partition_jobs', { partition: `ingest-${p}`, state: 'waiting' }), waiting[p], `ingest-${p}'s own jobs`)
  }
  t.ok(valueOf(samples, 'relay_ingest_partition_oldest_waiting_age_seconds', { partition: `ingest-${waiting.findIndex((n) => n > 0)}` }) >= 0)
})

t.test('messages joined by a shared id stay together: an identify with both ids, then one id alone', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { ROLE: 'api', INGEST_PARTITIONS: String(PARTITIONS) } })
  const source = await ctx.createSource()
  const batch: Array<Record<string, unknown>> = []
  for (let u = 0; u < 8; u++) {
    batch.push({ type: 'identify', userId: `user-${u}`, anonymousId: `anon-${u}`, traits: { plan: 'pro' } })
    batch.push({ type: 'track', anonymousId: `anon-${u}`, event: 'Anonymous' })
    batch.push({ type: 'identify', userId: `user-${u}`, traits: { plan: 'max' } })
  }
  t.equal((await send(ctx.app, '/v1/batch', { batch }, { writeKey: source.writeKey })).statusCode, 200)
  const jobs = (await Promise.all(ctx.app.queues.ingestPartitions.map((queue) => queue.getWaiting(0, -1)))).flat()
  t.ok(jobs.length >= 2, `the batch went to several partitions (${jobs.length} jobs)`)
  for (let u = 0; u < 8; u++) {
    const holding = await partsHolding(ctx, jobs, (message) => message.userId === `user-${u}` || message.anonymousId === `anon-${u}`,
      (message) => message.type === 'track' ? 'track' : String(message.traits?.plan))
    t.same(holding, [['pro', 'track', 'max']], `user-${u}'s three messages: one part, in order`)
  }
})

t.test('an audience sync sends each member\'s identify through the member\'s own partition', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { INGEST_PARTITIONS: String(PARTITIONS) } })
  // Which partition's job carried each audience identify (an ingest job's id names its queue).
  const carriedBy = new Map<string, string>()
  ctx.app.workers.ingestStages.push(async (_sourceId, messages, context) => {
    for (const message of messages) {
      if ((message.context as { personas?: unknown } | undefined)?.personas !== undefined) carriedBy.set(String(message.userId), context.jobId.split('/')[0])
    }
  })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1001' } }, { token: null })
  const users = Array.from({ length: 24 }, (_, i) => `member-${i}`)
  await ingest(ctx, source.writeKey, users.map((userId) => identifyBy(userId, { plan: 'pro' })))
  await ingestDrained(ctx)
  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }, destinations: [destination.id] })
  await waitFor(() => carriedBy.size === users.length, 20_000, () => `every member's identify (${carriedBy.size} of ${users.length})`)
  t.ok(audience.id)
  for (const userId of users) t.equal(carriedBy.get(userId), `ingest-${partitionOf(userId, PARTITIONS)}`, `${userId}'s identify in its own partition`)
  t.ok(new Set(carriedBy.values()).size > 1, `the sync spread over partitions (${[...new Set(carriedBy.values())].join(', ')})`)
})

t.test('hostile ids decide partitions like any other: prototype names, the longest id, ids shared across users', async (t) => {
  const graph = await startFakeGraph()
  t.teardown(() => graph.close())
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), listen: true, env: { ...FAST_DELIVERY_ENV, FACEBOOK_GRAPH_URL: graph.url, INGEST_PARTITIONS: String(PARTITIONS) } })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1001' } })
  const names = ['__proto__', 'constructor', 'hasOwnProperty', 'toString', 'x'.repeat(1024)]
  const batch = [
    ...names.map((name, i) => track('Order Completed', { revenue: 1 }, { messageId: `proto-user-${i}`, userId: name })),
    ...names.map((name, i) => track('Order Completed', { revenue: 1 }, { messageId: `proto-anon-${i}`, userId: undefined, anonymousId: name })),
    // One anonymous id shared by every user: the whole batch is joined into one group.
    ...names.map((name, i) => track('Order Completed', { revenue: 1 }, { messageId: `proto-both-${i}`, userId: `${name.slice(0, 1000)}-u`, anonymousId: '__proto__' }))
  ]
  t.equal((await send(ctx.app, '/v1/batch', { batch }, { writeKey: source.writeKey })).statusCode, 200)
  t.match(await sourceStats(ctx, source.id), { accepted: batch.length, rejected: 0, unprocessable: 0 }, 'every message accepted')
  const stats = await settledStats(ctx, destination.id, batch.length, 30_000)
  assertAccounted(t, stats, batch.length)
  // Anonymous-only orders have no match key unless their anonymous id was joined to a user ('__proto__' was).
  t.match(stats, { delivered: batch.length - 4, invalid: { total: 4, byReason: { no_match_key: 4 } } }, 'every message processed: delivered, or invalid with its reason')
  const sent = new Set(deliveredEventIds(graph, '1001'))
  t.ok(batch.filter((m) => !String(m.messageId).startsWith('proto-anon-') || m.messageId === 'proto-anon-0').every((m) => sent.has(m.messageId)), 'what has a key reached Meta')
})
