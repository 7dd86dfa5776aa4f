import { Queue, Worker } from 'bullmq'
import fp from 'fastify-plugin'
import { AUDIENCE_SYNC_QUEUE, AudienceEngine, type AudienceSyncJobData } from '../jobs/audiences.js'
import { countProcessed } from '../jobs/queue-stats.js'
import { superviseWorker, type SupervisedWorker } from '../jobs/worker-supervisor.js'

declare module 'fastify' {
  interface FastifyInstance {
    audienceSyncQueue: Queue<AudienceSyncJobData>
    audienceEngine: AudienceEngine
  }
}

/**
 * The audience engine: its ingest stage (profiles, history, real-time membership — registered
 * before routing, so a track is enriched by an identify earlier in the same job) and, in worker
 * roles, the audience-sync worker (build, scheduled expiry, initial and incremental syncs).
 */
export default fp(async (app) => {
  const config = app.config
  const syncQueue = new Queue<AudienceSyncJobData>(AUDIENCE_SYNC_QUEUE, {
    connection: app.redis,
    prefix: app.keys.queuePrefixOf('audience-sync'),
    defaultJobOptions: { attempts: 10, backoff: { type: 'exponential', delay: 2000 }, removeOnComplete: true, removeOnFail: { age: 7 * 24 * 3600, count: 1000 } }
  })
  syncQueue.on('error', (err) => app.log.warn({ err }, 'audience-sync queue error'))
  const engine = new AudienceEngine({
    redis: app.redis,
    keys: app.keys,
    audiences: app.audiences,
    profiles: app.profiles,
    ingestQueues: app.queues.ingestPartitions,
    syncQueue,
    retentionMs: config.historyRetentionMs,
    lockMs: config.STALLED_INTERVAL_MS,
    legacyFormat: async (sourceId) => (await app.destinations.forSource(sourceId)).some((d) => d.settings.apiFormat === 'offline-conversions'),
    consentRules: async (sourceId) => (await app.destinations.forSource(sourceId))
      .filter((d) => d.enabled && d.settings.consentCategories.length > 0)
      .map((d) => ({ destinationId: d.id, rule: { categories: d.settings.consentCategories, requireConsent: d.settings.requireConsent } })),
    now: app.now,
    log: app.log,
    observeSync: app.metrics.observeAudienceSync
  })
  app.decorate('audienceSyncQueue', syncQueue)
  app.decorate('audienceEngine', engine)

  let supervised: SupervisedWorker<AudienceSyncJobData> | undefined
  if (config.ROLE !== 'api') {
    app.workers.ingestStages.push(engine.stage)
    supervised = superviseWorker(syncQueue, () => {
      const worker = new Worker<AudienceSyncJobData>(AUDIENCE_SYNC_QUEUE, app.work.audienceSyncJobs.wrap(engine.createProcessor()), {
        connection: app.workerConnection,
        prefix: app.keys.queuePrefixOf('audience-sync'),
        concurrency: config.AUDIENCE_SYNC_CONCURRENCY,
        // As the other workers: a sync whose worker died goes to another after STALLED_INTERVAL_MS
        // (BullMQ's 30 s default before). Syncs resume from their cursors, so running one again is
        // safe: a worker dying more than once does not fail it for good (BullMQ's default is once).
        lockDuration: config.STALLED_INTERVAL_MS,
        stalledInterval: config.STALLED_INTERVAL_MS,
        maxStalledCount: 10,
        autorun: false
      })
      countProcessed(worker, app.workerConnection, app.keys.queueProcessed)
      worker.on('error', (err) => app.log.warn({ err }, 'audience-sync worker error'))
      worker.on('failed', (job, err) => app.log.error({ err, jobId: job?.id, audienceId: job?.data.audienceId }, 'audience sync failed'))
      return worker
    }, { redis: app.redis, intervalMs: config.STALLED_INTERVAL_MS, log: app.log })
    app.addHook('onReady', async () => { supervised!.start() })
  }
  app.addHook('onClose', async () => {
    await supervised?.close(config.SHUTDOWN_TIMEOUT_MS)
    await syncQueue.close()
  })
}, { name: 'audience-engine', dependencies: ['audiences', 'profiles', 'queues', 'destinations', 'metrics'] })
