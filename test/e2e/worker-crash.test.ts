// A worker killed mid-delivery loses nothing: the API runs here (ROLE api), the worker in a child
// process (ROLE worker) whose request to the fake Graph API is held in flight when it gets
// SIGKILL. BullMQ's stalled-job check hands the job to the next worker, and the conversions are
// delivered (a duplicate would be fine: Meta de-duplicates by event_id).
import t from 'tap'
import { startFakeGraph } from '../fixtures/fake-graph.js'
import { buildTestApp } from '../helpers/app.js'
import {
  assertAccounted, createDestination, deliveredEventIds, destinationStats, FAST_DELIVERY_ENV, sendBatch, settledStats,
  track, waitFor
} from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'
import { killWorkerProcess, startWorkerProcess, workerEnv } from '../helpers/worker-process.js'

const SETTINGS = { conversionEvents: { 'Order Completed': '1001' } }

const redis = await startTestRedis()
t.teardown(() => redis.close())

t.test('a worker killed mid-delivery loses nothing', async (t) => {
  for (const kills of [1, 2]) {
    await t.test(`killed ${kills === 1 ? 'once' : 'twice, the second time while retrying the same job'}`, async (t) => {
      let heldRequests = 0
      const graph = await startFakeGraph({ onReject: (rejection) => { if (rejection.scripted === 'timeout') heldRequests++ } })
      t.teardown(() => graph.close())
      const shared = freshPrefix(redis)
      const api = await buildTestApp(t, { redis: shared, listen: true, env: { ROLE: 'api', FACEBOOK_GRAPH_URL: graph.url } })
      const source = await api.createSource()
      const destination = await createDestination(api, source.id, SETTINGS)
      // Meta holds each request the killed workers make: the job is in flight when they die. The
      // first is the ingest job's first attempt, which gives up after 5 s and queues the request.
      graph.failNext({ kind: 'timeout' }, kills + 1)
      const env = workerEnv(api, {
        FACEBOOK_GRAPH_URL: graph.url,
        // longer than the test: only the kill ends the request
        GRAPH_TIMEOUT_MS: '600000'
      })

      const messages = Array.from({ length: 5 }, (_, i) => track('Order Completed', { revenue: i + 1 }))
      await sendBatch(api, source.writeKey, messages)
      for (let attempt = 1; attempt <= kills; attempt++) {
        const worker = (await startWorkerProcess(t, 'test/helpers/delivery-worker.ts', env)).child
        // The deliver worker's own request, held, and the ingest job over: a kill before the end
        // of the ingest job would run it again and count its conversions twice (they are still
        // delivered once: see "Crashes" in docs/operations.md).
        await waitFor(() => heldRequests === attempt + 1, 30_000, `request ${attempt + 1} to be in flight`)
        await waitFor(async () => await api.app.queues.ingest.getActiveCount() === 0, 10_000, 'the ingest job to end')
        const inFlight = await waitFor(async () => { const s = await destinationStats(api, destination.id); return s.received === 5 && s }, 10_000, 'the count')
        t.match(inFlight, { received: 5, retrying: 5, delivered: 0 }, 'in flight, not delivered')
        await killWorkerProcess(worker)
      }

      // Another worker takes the job back once its lock has expired. (A generous Graph timeout:
      // on a loaded machine four timeouts of 0.5 s would dead-letter what this test expects delivered.)
      await buildTestApp(t, { redis: shared, env: { ...FAST_DELIVERY_ENV, GRAPH_TIMEOUT_MS: '10000', ROLE: 'worker', FACEBOOK_GRAPH_URL: graph.url, STALLED_INTERVAL_MS: '500' } })
      const stats = await settledStats(api, destination.id, 5, 60_000)
      assertAccounted(t, stats, 5)
      t.match(stats, { delivered: 5, deadLettered: 0 })
      t.same(new Set(deliveredEventIds(graph)), new Set(messages.map((m) => m.messageId)), 'every conversion reached Meta, by event_id')
    })
  }
})
