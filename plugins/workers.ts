import { Worker } from 'bullmq'
import fp from 'fastify-plugin'
import { connectRedis, redisTarget, type RedisClient } from '../src/redis-client.js'
import { createIngestProcessor, type IngestStage } from '../jobs/ingest.js'
import { countProcessed } from '../jobs/queue-stats.js'
import { QUEUE_NAMES, type IngestJobData } from '../jobs/queues.js'

declare module 'fastify' {
  interface FastifyInstance {
    workers: { ingest: Worker<IngestJobData>, ingestStages: IngestStage[] }
    /** The workers' shared connection (BullMQ duplicates it for its blocking commands). */
    workerConnection: RedisClient
  }
}

/**
 * BullMQ workers (ROLE `all` or `worker`). Workers get their own connection with
 * `maxRetriesPerRequest: null`, as BullMQ requires for blocking commands, and wait out Redis
 * outages instead of failing. On close they finish the jobs in hand first.
 */
export default fp(async (app) => {
  const connection = connectRedis(redisTarget(app.config), { maxRetriesPerRequest: null })
  connection.on('error', () => {}) // the workers' own 'error' events are logged below
  const ingestStages: IngestStage[] = []
  const ingest = new Worker<IngestJobData>(QUEUE_NAMES.ingest, app.work.ingestJobs.wrap(createIngestProcessor(ingestStages, connection, {
    countUnprocessable: (bySource, once) => app.sources.countUnprocessable(bySource, once),
    log: app.log
  })), {
    connection,
    prefix: app.keys.queuePrefix,
    concurrency: app.config.INGEST_CONCURRENCY,
    lockDuration: app.config.STALLED_INTERVAL_MS,
    stalledInterval: app.config.STALLED_INTERVAL_MS,
    // A job whose worker died is handed to another; BullMQ's default fails it after one such
    // stall, which would leave its messages unprocessed. Stages are idempotent: let it run again.
    maxStalledCount: 10,
    autorun: false
  })
  ingest.on('failed', (job, err) => {
    if (job === undefined || job.attemptsMade < (job.opts.attempts ?? 1)) {
      app.log.warn({ err, jobId: job?.id, attempts: job?.attemptsMade }, 'ingest job failed; it will run again')
      return
    }
    app.log.error({ err, jobId: job.id, attempts: job.attemptsMade }, 'ingest job failed for good: kept with its bodies for FAILED_BODY_RETENTION (GET /v1/ingest/failures)')
    app.ingestFailures.failedForGood(job.data).catch((error) => app.log.warn({ err: error, jobId: job.id }, 'could not set the failed job\'s bodies to expire'))
  })
  countProcessed(ingest, connection, app.keys.queueProcessed)
  ingest.on('error', (err) => app.log.warn({ err }, 'ingest worker error'))
  app.decorate('workers', { ingest, ingestStages })
  app.decorate<RedisClient>('workerConnection', connection)
  // Stages register during boot; start consuming once every plugin is loaded.
  app.addHook('onReady', async () => { ingest.run().catch((err) => app.log.error({ err }, 'ingest worker stopped')) })
  app.addHook('onClose', async () => {
    await ingest.close()
    await connection.quit().catch(() => connection.disconnect())
  })
}, { name: 'workers', dependencies: ['config', 'sources', 'ingest-failures'] })
