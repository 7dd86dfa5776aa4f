// GET /v1/queues moving: jobs wait while only the API runs (ROLE api: no worker), then a worker
// process on the same Redis takes them and processedTotal grows — for ingest, deliver (a job held
// for a token, then released) and audience-sync.
import t from 'tap'
import { combinePartitions, type QueueStats } from '../../jobs/queue-stats.js'
import { createAudience } from '../helpers/audience-setup.js'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import { createDestination, FAST_DELIVERY_ENV, settledStats, track, waitFor } from '../helpers/delivery-setup.js'
import { startFakeGraph, DEFAULT_TOKEN } from '../fixtures/fake-graph.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { send } from '../helpers/ingest-send.js'
import { scrape, valueOf } from '../helpers/metrics.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

async function queues (ctx: TestContext): Promise<Record<string, QueueStats>> {
  const { statusCode, json } = await ctx.admin('GET', '/v1/queues')
  if (statusCode !== 200) throw new Error(`/v1/queues: ${statusCode} ${JSON.stringify(json)}`)
  return Object.fromEntries(json.queues.map((queue: QueueStats) => [queue.name, queue]))
}

t.test('GET /v1/queues: jobs waiting with no worker, then processed', async (t) => {
  const graph = await startFakeGraph()
  t.teardown(() => graph.close())
  const shared = freshPrefix(redis)
  const env = { ...FAST_DELIVERY_ENV, FACEBOOK_GRAPH_URL: graph.url }
  const api = await buildTestApp(t, { redis: shared, env: { ...env, ROLE: 'api' } })

  const idle = await api.admin('GET', '/v1/queues')
  t.equal(idle.statusCode, 200)
  t.same(idle.json.queues.map((queue: QueueStats) => queue.name), ['ingest', 'deliver', 'audience-sync'])
  for (const queue of idle.json.queues) {
    t.same(queue, { name: queue.name, waiting: 0, active: 0, delayed: 0, failed: 0, oldestWaitingAgeMs: null, processedTotal: 0 }, `${queue.name}: nothing yet, no partitions with one ingest queue`)
  }
  t.equal((await api.app.inject({ url: '/v1/queues' })).statusCode, 401, 'admin only')

  // No worker: what the API stores waits. Two requests one after the other: two jobs.
  const source = await api.createSource()
  const destination = await createDestination(api, source.id, { conversionEvents: { 'Order Completed': '1001' } }, { token: null })
  const sentAt = Date.now()
  for (const revenue of [1, 2]) {
    t.equal((await send(api.app, '/v1/batch', { batch: [track('Order Completed', { revenue })] }, { writeKey: source.writeKey })).statusCode, 200)
  }
  await createAudience(api, source.id, { name: 'Buyers', condition: { type: 'event', event: 'Order Completed', atLeast: 1, withinDays: 30 } })
  await new Promise((resolve) => setTimeout(resolve, 30))
  const waiting = await queues(api)
  t.match(waiting.ingest, { waiting: 2, active: 0, delayed: 0, failed: 0, processedTotal: 0 })
  t.ok(waiting.ingest.oldestWaitingAgeMs! >= 30 && waiting.ingest.oldestWaitingAgeMs! <= Date.now() - sentAt + 5, `the oldest job's age (${waiting.ingest.oldestWaitingAgeMs} ms)`)
  t.match(waiting['audience-sync'], { waiting: 1, processedTotal: 0 }, 'the audience\'s build')
  t.notOk('partitions' in waiting.ingest)
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok((await queues(api)).ingest.oldestWaitingAgeMs! >= waiting.ingest.oldestWaitingAgeMs! + 20, 'it ages')
  const metrics = (await scrape(api)).samples
  t.ok(valueOf(metrics, 'relay_queue_oldest_waiting_age_seconds', { queue: 'ingest' }) >= 0.05, '/metrics has the oldest wait too')
  t.equal(valueOf(metrics, 'relay_queue_processed_jobs_total', { queue: 'ingest' }), 0)

  // A worker process on the same Redis takes them; the destination has no token: its request is held.
  const worker = await buildTestApp(t, { redis: shared, env: { ...env, ROLE: 'worker' } })
  let seen = waiting
  await waitFor(async () => {
    seen = await queues(api)
    return seen.ingest.processedTotal >= 2 && seen.deliver.delayed >= 1 && seen['audience-sync'].processedTotal >= 1
  }, 20_000, () => `the worker to take the jobs (${JSON.stringify(seen)})`)
  t.match(seen.ingest, { waiting: 0, oldestWaitingAgeMs: null })
  t.ok(seen.deliver.delayed >= 1, 'the conversions held for a token wait in delayed')
  t.equal(seen.deliver.processedTotal, 0, 'held is not done')

  // A token releases them: delivered, and counted as processed.
  t.equal((await api.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: DEFAULT_TOKEN })).statusCode, 204)
  const stats = await settledStats(api, destination.id, 2)
  t.equal(stats.delivered, 2)
  await waitFor(async () => {
    seen = await queues(api)
    return seen.deliver.delayed === 0 && seen.deliver.waiting === 0 && seen.deliver.active === 0 && seen.deliver.processedTotal >= 1
  }, 20_000, () => `the held deliver jobs to be processed (${JSON.stringify(seen)})`)
  t.equal(valueOf((await scrape(api)).samples, 'relay_queue_processed_jobs_total', { queue: 'ingest' }), seen.ingest.processedTotal, '/metrics reads the same counter')
  // The worker may still finish a job between two reads (an audience's scheduled sync, say):
  // the figures agree once nothing moves between the API's read and the worker's.
  let fromWorker: Record<string, QueueStats> = {}
  await waitFor(async () => {
    seen = await queues(api)
    fromWorker = Object.fromEntries((await worker.app.queueStats()).map((queue) => [queue.name, queue]))
    return JSON.stringify(fromWorker) === JSON.stringify(seen)
  }, 5_000, () => `the API and the worker to read the same figures (${JSON.stringify({ seen, fromWorker })})`)
  t.same(fromWorker, seen, 'every process reads the same figures from Redis')
})

t.test('ingest partitions combine into one entry that lists them', async (t) => {
  const part = (name: string, fields: Partial<QueueStats>): QueueStats => ({ name, waiting: 0, active: 0, delayed: 0, failed: 0, oldestWaitingAgeMs: null, processedTotal: 0, ...fields })
  const one = part('ingest', { waiting: 3, oldestWaitingAgeMs: 40 })
  t.same(combinePartitions('ingest', [one]), one, 'one partition: no partitions field')
  const parts = [part('ingest-0', { waiting: 3, active: 1, oldestWaitingAgeMs: 40, processedTotal: 10 }), part('ingest-1', { delayed: 2, failed: 1, processedTotal: 5 }), part('ingest-2', { waiting: 1, oldestWaitingAgeMs: 900 })]
  t.same(combinePartitions('ingest', parts), {
    name: 'ingest', waiting: 4, active: 1, delayed: 2, failed: 1, oldestWaitingAgeMs: 900, processedTotal: 15, partitions: parts
  })
  t.equal(combinePartitions('ingest', [part('a', {}), part('b', {})]).oldestWaitingAgeMs, null, 'none waits anywhere')
})
