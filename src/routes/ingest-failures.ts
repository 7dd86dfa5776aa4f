import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ADMIN_ERRORS } from './schemas.js'

const IngestFailure = Type.Object({
  id: Type.String(),
  failedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  attempts: Type.Integer(),
  reason: Type.String({ description: 'Why its last attempt failed: the infrastructure (a job never fails for its content)' }),
  sources: Type.Array(Type.String()),
  requests: Type.Integer({ description: 'Requests stored by the API (a message or a batch each)' }),
  messages: Type.Integer({ description: 'Prepared messages (audience syncs)' }),
  bodiesKept: Type.Boolean({ description: 'The stored bodies are still there: it can be replayed' }),
  bodiesExpireAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'FAILED_BODY_RETENTION after the failure' })
})

const Ids = Type.Optional(Type.Array(Type.String(), { maxItems: 10_000, description: 'Only these jobs; all when absent' }))

/**
 * Admin API: ingest jobs that failed every attempt. Their bodies — raw messages — are kept
 * FAILED_BODY_RETENTION from the failure for a replay, then go with the job.
 */
const ingestFailures: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireAdmin)
  const security = [{ adminToken: [] }]
  const store = app.ingestFailures

  app.get('/v1/ingest/failures', {
    schema: {
      tags: ['monitoring'],
      summary: 'Ingest jobs that failed every attempt (Redis trouble, a crash), newest first',
      security,
      querystring: Type.Object({
        offset: Type.Integer({ minimum: 0, default: 0 }),
        limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 })
      }),
      response: { 200: Type.Object({ total: Type.Integer(), failures: Type.Array(IngestFailure) }), ...ADMIN_ERRORS }
    }
  }, async (request) => store.list(request.query.offset, request.query.limit))

  app.post('/v1/ingest/failures', {
    // No body means "all of them" (curl -X POST): a schema'd body that is absent would be a 400.
    preValidation: async (request) => { if (request.body === undefined || request.body === null) request.body = {} },
    schema: {
      tags: ['monitoring'],
      summary: 'Replay failed ingest jobs (all, or the given ids) whose bodies are still kept',
      security,
      body: Type.Optional(Type.Object({ ids: Ids }, { additionalProperties: false })),
      response: {
        200: Type.Object({
          replayed: Type.Integer(),
          notReplayed: Type.Array(Type.Object({ id: Type.String(), reason: Type.String() }))
        }),
        ...ADMIN_ERRORS
      }
    }
  }, async (request) => store.replay(request.body?.ids))

  app.delete('/v1/ingest/failures', {
    schema: {
      tags: ['monitoring'],
      summary: 'Purge failed ingest jobs (all, or the given ids) and their bodies',
      security,
      querystring: Type.Object({ id: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 1000 })], { description: 'A job id (repeatable); all when absent' })) }),
      response: { 200: Type.Object({ purged: Type.Integer() }), ...ADMIN_ERRORS }
    }
  }, async (request) => {
    const { id } = request.query
    return { purged: await store.purge(id === undefined ? undefined : Array.isArray(id) ? id : [id]) }
  })
}

export default ingestFailures
