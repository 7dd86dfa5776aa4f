import { Worker } from 'bullmq'
import fp from 'fastify-plugin'
import { connectRedis, redisTarget, type RedisClient } from '../src/redis-client.js'
import { createIngestProcessor, type IngestStage } from '../jobs/ingest.js'
import { countProcessed } from '../jobs/queue-stats.js'
import { superviseWorker, type SupervisedWorker } from '../jobs/worker-supervisor.js'
import type { IngestJobData } from '../jobs/queues.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** `ingest`: a worker per ingest partition. */
    workers: { ingest: Array<SupervisedWorker<IngestJobData>>, ingestStages: IngestStage[] }
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
  const processor = app.work.ingestJobs.wrap(createIngestProcessor(ingestStages, connection, {
    countUnprocessable: (bySource, once) => app.sources.countUnprocessable(bySource, once),
    log: app.log
  }))
  // A worker for every ingest partition: INGEST_CONCURRENCY jobs at once in all, at least one a partition.
  const partitions = app.keys.ingestPartitions
  const concurrency = Math.max(1, Math.ceil(app.config.INGEST_CONCURRENCY / partitions.length))
  const ingest = partitions.map((partition, p) => superviseWorker(app.queues.ingestPartitions[p], () => {
    const worker = new Worker<IngestJobData>(partition.name, processor, {
      connection,
      prefix: partition.queuePrefix,
      concurrency,
      lockDuration: app.config.STALLED_INTERVAL_MS,
      stalledInterval: app.config.STALLED_INTERVAL_MS,
      // A job whose worker died is handed to another; BullMQ's default fails it after one such
      // stall, which would leave its messages unprocessed. Stages are idempotent: let it run again.
      maxStalledCount: 10,
      autorun: false
    })
    worker.on('failed', (job, err) => {
      if (job === undefined || job.attemptsMade < (job.opts.attempts ?? 1)) {
        app.log.warn({ err, queue: partition.name, jobId: job?.id, attempts: job?.attemptsMade }, 'ingest job failed; it will run again')
        return
      }
      app.log.error({ err, queue: partition.name, jobId: job.id, attempts: job.attemptsMade }, 'ingest job failed for good: kept with its bodies for FAILED_BODY_RETENTION (GET /v1/ingest/failures)')
      app.ingestFailures.failedForGood(job.data).catch((error) => app.log.warn({ err: error, jobId: job.id }, 'could not set the failed job\'s bodies to expire'))
    })
    countProcessed(worker, connection, app.keys.queueProcessed)
    worker.on('error', (err) => app.log.warn({ err, queue: partition.name }, 'ingest worker error'))
    return worker
  }, { redis: app.redis, intervalMs: app.config.STALLED_INTERVAL_MS, log: app.log }))
  app.decorate('workers', { ingest, ingestStages })
  app.decorate<RedisClient>('workerConnection', connection)
  // Stages register during boot; start consuming once every plugin is loaded.
  app.addHook('onReady', async () => {
    for (const supervised of ingest) supervised.start()
  })
  app.addHook('onClose', async () => {
    await Promise.all(ingest.map((supervised) => supervised.close(app.config.SHUTDOWN_TIMEOUT_MS)))
    await connection.quit().catch(() => connection.disconnect())
  })
}, { name: 'workers', dependencies: ['config', 'queues', 'sources', 'ingest-failures'] })
