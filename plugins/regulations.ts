import { Queue, Worker } from 'bullmq'
import fp from 'fastify-plugin'
import { superviseWorker, type SupervisedWorker } from '../jobs/worker-supervisor.js'
import { REGULATION_QUEUE, RegulationEngine, RegulationStore, type RegulationJobData } from '../jobs/regulations.js'
import { TtlCache } from '../src/ttl-cache.js'

/**
 * Whether a source has suppressed subjects, per API process for a moment (the ingestion routes ask
 * it per request): while none has, requests carry no subject ids to the flush.
 */
export const SUPPRESSION_CACHE_MS = 1000

declare module 'fastify' {
  interface FastifyInstance {
    regulations: RegulationStore
    regulationQueue: Queue<RegulationJobData>
    /** Whether the source has suppressed subjects; without a promise when cached. */
    suppressionActive: (sourceId: string) => boolean | Promise<boolean>
  }
}

/**
 * Regulations (deletion and suppression): their store and queue in every role (the admin API
 * creates them), and in worker roles the worker that carries them out (jobs/regulations.ts).
 */
export default fp(async (app) => {
  const store = new RegulationStore(app.redis, app.keys)
  const queue = new Queue<RegulationJobData>(REGULATION_QUEUE, {
    connection: app.redis,
    prefix: app.keys.queuePrefixOf('regulations'),
    // The subjects live only in the job: gone once it is done.
    defaultJobOptions: { attempts: 10, backoff: { type: 'exponential', delay: 2000 }, removeOnComplete: true, removeOnFail: { age: 7 * 24 * 3600 } }
  })
  queue.on('error', (err) => app.log.warn({ err }, 'regulation queue error'))
  const active = new TtlCache<boolean>(SUPPRESSION_CACHE_MS)
  app.decorate('regulations', store)
  app.decorate('regulationQueue', queue)
  app.decorate('suppressionActive', (sourceId: string) => active.get(sourceId, async () => (await app.redis.exists(app.keys.suppressed(sourceId))) === 1))

  let supervised: SupervisedWorker<RegulationJobData> | undefined
  if (app.config.ROLE !== 'api') {
    const engine = new RegulationEngine({
      redis: app.redis,
      keys: app.keys,
      regulations: store,
      audiences: app.audiences,
      profiles: app.profiles,
      destinations: app.destinations,
      ingestQueues: app.queues.ingestPartitions,
      deliverQueue: app.deliverQueue,
      suppressionCacheMs: SUPPRESSION_CACHE_MS,
      log: app.log
    })
    supervised = superviseWorker(queue, () => {
      const worker = new Worker<RegulationJobData>(REGULATION_QUEUE, engine.createProcessor(), {
        connection: app.workerConnection,
        prefix: app.keys.queuePrefixOf('regulations'),
        concurrency: 1,
        lockDuration: app.config.STALLED_INTERVAL_MS,
        stalledInterval: app.config.STALLED_INTERVAL_MS,
        // Every phase can run again: a worker dying mid-way hands the job on, however often.
        maxStalledCount: 10,
        autorun: false
      })
      worker.on('error', (err) => app.log.warn({ err }, 'regulation worker error'))
      worker.on('failed', (job, err) => app.log.error({ err, jobId: job?.id, regulationId: job?.data.regulationId }, 'regulation failed'))
      return worker
    }, { redis: app.redis, intervalMs: app.config.STALLED_INTERVAL_MS, log: app.log })
    app.addHook('onReady', async () => { supervised!.start() })
  }
  app.addHook('onClose', async () => {
    await supervised?.close(app.config.SHUTDOWN_TIMEOUT_MS)
    await queue.close()
  })
}, { name: 'regulations', dependencies: ['queues', 'audiences', 'profiles', 'destinations', 'delivery'] })
