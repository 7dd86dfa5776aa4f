import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ADMIN_ERRORS } from './schemas.js'

const queueFields = {
  name: Type.String({ description: 'ingest, deliver or audience-sync' }),
  waiting: Type.Integer({ description: 'Ready to run, waiting for a worker' }),
  active: Type.Integer({ description: 'Being processed' }),
  delayed: Type.Integer({ description: 'Waiting for a time: a retry\'s backoff, a destination paused by Meta\'s rate limit, conversions held for a token' }),
  failed: Type.Integer({ description: 'Failed for good and kept (ingest: see /v1/ingest/failures)' }),
  oldestWaitingAgeMs: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Milliseconds since the oldest waiting job was added (a job delayed first, by a retry\'s backoff, counts that time too); null when none waits'
  }),
  processedTotal: Type.Integer({ description: 'Jobs completed by every worker since the deployment began (a counter in Redis: completed jobs are removed at once)' })
}

const QueueState = Type.Object({
  ...queueFields,
  partitions: Type.Optional(Type.Array(Type.Object(queueFields), {
    description: 'ingest only, and only when it is partitioned into more than one queue: each partition\'s figures (the entry is their sum; its oldest wait the oldest of any). Absent with one ingest queue, as today'
  }))
})

/** Admin API: the queues' depths, the oldest wait and the work done. */
const queues: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireAdmin)

  app.get('/v1/queues', {
    schema: {
      tags: ['monitoring'],
      summary: 'The ingest, deliver and audience-sync queues: jobs by state, the oldest wait, jobs processed',
      security: [{ adminToken: [] }],
      response: { 200: Type.Object({ queues: Type.Array(QueueState) }), ...ADMIN_ERRORS }
    }
  }, async () => ({ queues: await app.queueStats() }))
}

export default queues
