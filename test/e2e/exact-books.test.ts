// Exact books across crashes: a worker killed after an ingest job counted its conversions and
// before the job ended runs the job again on another worker, which counts nothing twice, sends and
// queues nothing twice: `received` equals the conversions routed, and `retrying` is 0 once the
// queues drain.
import t from 'tap'
import { startFakeGraph } from '../fixtures/fake-graph.js'
import { buildTestApp } from '../helpers/app.js'
import { assertAccounted, createDestination, deliveredEventIds, destinationStats, FAST_DELIVERY_ENV, sendBatch, settledStats, track, waitFor } from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'
import { killWorkerProcess, startWorkerProcess, workerEnv } from '../helpers/worker-process.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

for (const firstAttempt of ['delivered', 'queued'] as const) {
  t.test(`a worker killed after the job's counts (first attempts ${firstAttempt}) counts nothing twice when the job runs again`, async (t) => {
    const graph = await startFakeGraph()
    t.teardown(() => graph.close())
    const shared = freshPrefix(redis)
    const api = await buildTestApp(t, { redis: shared, listen: true, env: { ROLE: 'api', FACEBOOK_GRAPH_URL: graph.url } })
    const source = await api.createSource()
    const destination = await createDestination(api, source.id, { conversionEvents: { 'Order Completed': '1001', 'Product Added': '1002' } })
    const other = await createDestination(api, source.id, { conversionEvents: { 'Order Completed': '2001' } })
    // Queued: Meta fails the first attempts (one per dataset and destination), the deliver jobs succeed.
    if (firstAttempt === 'queued') graph.failNext({ kind: 'http', status: 503 }, 3)
    // Deliver jobs wait until the crash: a deliver job of the dying worker's own, killed between
    // Meta's answer and its end, runs again and sends its request twice — allowed (Meta
    // de-duplicates by event_id), and not what this test is about.
    await api.app.deliverQueue.pause()
    const worker = await startWorkerProcess(t, 'test/helpers/hanging-worker.ts', workerEnv(api, { FACEBOOK_GRAPH_URL: graph.url, ...FAST_DELIVERY_ENV }))

    // The routed conversions, counted here: 4 orders (two destinations), 2 products, 1 unmapped.
    const messages = [
      ...Array.from({ length: 4 }, (_, i) => track('Order Completed', { revenue: i + 1 }, i === 0 ? { messageId: 'hang-order' } : {})),
      track('Product Added', { price: 2 }), track('Product Added', { price: 3 }),
      track('Signed Up', {})
    ]
    await sendBatch(api, source.writeKey, messages)
    await worker.printed('counted')
    const counted = await destinationStats(api, destination.id)
    t.match(counted, { received: 7 }, 'the job counted its conversions before it died')
    await killWorkerProcess(worker.child)
    await api.app.deliverQueue.resume()

    // Another worker takes the job once its lock expires, and runs it again from the start.
    await buildTestApp(t, { redis: shared, env: { ROLE: 'worker', FACEBOOK_GRAPH_URL: graph.url, STALLED_INTERVAL_MS: '500', ...FAST_DELIVERY_ENV } })
    await waitFor(async () => Object.values(await api.app.queues.ingest.getJobCounts('waiting', 'active', 'delayed')).every((n) => n === 0), 30_000, 'the job to run again and end')
    const stats = await settledStats(api, destination.id, 7, 30_000)
    const otherStats = await settledStats(api, other.id, 5, 30_000)
    t.match(stats, { received: 7, delivered: 6, filtered: 1, retrying: 0 }, 'exact: each conversion counted once')
    t.match(otherStats, { received: 7, delivered: 4, filtered: 3, retrying: 0 })
    assertAccounted(t, stats, 7)
    assertAccounted(t, otherStats, 7)
    const sent = deliveredEventIds(graph, '1001')
    t.equal(new Set(sent).size, 4, 'every order reached Meta')
    if (firstAttempt === 'queued') t.equal(sent.length, 4, 'queued once: no deliver job twice')
  })
}
