import { Queue } from 'bullmq'
import fp from 'fastify-plugin'
import { ingestJobOptions, QUEUE_NAMES, type IngestJobData } from '../jobs/queues.js'

declare module 'fastify' {
  interface FastifyInstance {
    queues: { ingest: Queue<IngestJobData> }
  }
}

/** Producers only; workers live in plugins/workers.ts. Shares the fail-fast Redis connection. */
export default fp(async (app) => {
  const ingest = new Queue<IngestJobData>(QUEUE_NAMES.ingest, {
    connection: app.redis,
    prefix: app.keys.queuePrefix,
    defaultJobOptions: ingestJobOptions({ failedRetentionMs: app.config.failedBodyRetentionMs, attempts: app.config.INGEST_ATTEMPTS, backoffMs: app.config.INGEST_BACKOFF_MS })
  })
  ingest.on('error', (err) => app.log.warn({ err }, 'ingest queue error'))
  app.decorate('queues', { ingest })
  app.addHook('onClose', async () => {
    await ingest.close()
  })
}, { name: 'queues', dependencies: ['redis'] })
