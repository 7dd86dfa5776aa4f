import { Queue } from 'bullmq'
import fp from 'fastify-plugin'
import { ingestJobOptions, type IngestJobData } from '../jobs/queues.js'

declare module 'fastify' {
  interface FastifyInstance {
    queues: {
      /** Ingest's partitions (INGEST_PARTITIONS), in order: a queue each, with its own hash tag. */
      ingestPartitions: Array<Queue<IngestJobData>>
      /** The first partition (the only one on one Redis by default). */
      ingest: Queue<IngestJobData>
    }
  }
}

/** Producers only; workers live in plugins/workers.ts. Shares the fail-fast Redis connection. */
export default fp(async (app) => {
  const defaultJobOptions = ingestJobOptions({ failedRetentionMs: app.config.failedBodyRetentionMs, attempts: app.config.INGEST_ATTEMPTS, backoffMs: app.config.INGEST_BACKOFF_MS })
  const ingestPartitions = app.keys.ingestPartitions.map((partition) => {
    const queue = new Queue<IngestJobData>(partition.name, { connection: app.redis, prefix: partition.queuePrefix, defaultJobOptions })
    queue.on('error', (err) => app.log.warn({ err, queue: partition.name }, 'ingest queue error'))
    return queue
  })
  app.decorate('queues', { ingestPartitions, ingest: ingestPartitions[0] })
  app.addHook('onClose', async () => {
    await Promise.all(ingestPartitions.map((queue) => queue.close()))
  })
}, { name: 'queues', dependencies: ['redis'] })
