import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ADMIN_ERRORS, AdminError, Source, ref } from './schemas.js'

const SourceParams = Type.Object({ sourceId: Type.String({ description: 'Source id (src_…)' }) })
const CreatedSource = Type.Object({
  id: Type.String(),
  name: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  writeKeyHint: Type.String(),
  writeKey: Type.String({ description: 'Shown in full only here and on rotation' })
})
const SourceStats = Type.Object({
  received: Type.Integer({ description: 'accepted + duplicate + rejected + suppressed' }),
  accepted: Type.Integer({ description: 'Stored for processing' }),
  duplicate: Type.Integer({ description: 'Answered 200 but not stored again (messageId seen within the dedup window)' }),
  rejected: Type.Integer({ description: 'Invalid, reported to the client' }),
  suppressed: Type.Integer({ description: 'Messages of suppressed subjects (regulations): answered 200, never stored for processing nor sent' }),
  unprocessable: Type.Integer({ description: 'A part of accepted: messages the worker could not process (set aside alone, the rest of their job went on; see the log by messageId)' }),
  profiles: Type.Integer({ description: 'User profiles kept: those active within HISTORY_RETENTION, and audience members (an inactive non-member\'s profile expires)' })
})

/** Admin API for sources. Every route needs the admin token. */
const sources: FastifyPluginAsyncTypebox = async (app) => {
  // onRequest, not preHandler: a caller without the token gets 401 before any body validation
  // (which would answer 400 and describe the schema to anyone).
  app.addHook('onRequest', app.requireAdmin)
  const security = [{ adminToken: [] }]
  const notFound = (sourceId: string) => ({ statusCode: 404, error: 'Not Found', message: `source ${sourceId} does not exist` })

  app.post('/v1/sources', {
    schema: {
      tags: ['sources'],
      summary: 'Create a source and its write key',
      security,
      body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
      response: { 201: CreatedSource, ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const source = await app.sources.create(request.body.name)
    return reply.code(201).send(source)
  })

  app.get('/v1/sources', {
    schema: { tags: ['sources'], summary: 'List sources', security, response: { 200: Type.Object({ sources: Type.Array(ref(Source)) }), ...ADMIN_ERRORS } }
  }, async () => ({ sources: await app.sources.list() }))

  app.get('/v1/sources/:sourceId', {
    schema: { tags: ['sources'], summary: 'One source', security, params: SourceParams, response: { 200: ref(Source), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    const source = await app.sources.get(request.params.sourceId)
    if (source === undefined) return reply.code(404).send(notFound(request.params.sourceId))
    return source
  })

  app.delete('/v1/sources/:sourceId', {
    schema: { tags: ['sources'], summary: 'Delete a source and its destinations; its write key stops working', security, params: SourceParams, response: { 204: Type.Null(), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    const removed = await app.sources.remove(request.params.sourceId)
    if (!removed) return reply.code(404).send(notFound(request.params.sourceId))
    await app.destinations.removeAllForSource(request.params.sourceId)
    // Its profile counts (on a cluster, a hash in each slot that holds its profiles).
    await app.profiles.dropCounts(request.params.sourceId)
    return reply.code(204).send(null)
  })

  app.post('/v1/sources/:sourceId/write-key', {
    schema: {
      tags: ['sources'],
      summary: 'Rotate the write key; the previous one keeps working for WRITE_KEY_GRACE',
      security,
      params: SourceParams,
      response: {
        200: Type.Object({ ...CreatedSource.properties, previousKeyValidUntil: Type.String({ format: 'date-time' }) }),
        404: ref(AdminError),
        ...ADMIN_ERRORS
      }
    }
  }, async (request, reply) => {
    const rotated = await app.sources.rotateWriteKey(request.params.sourceId)
    if (rotated === undefined) return reply.code(404).send(notFound(request.params.sourceId))
    return rotated
  })

  app.get('/v1/sources/:sourceId/stats', {
    schema: { tags: ['sources'], summary: 'What the ingestion API did with this source\'s messages', security, params: SourceParams, response: { 200: SourceStats, 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    const { sourceId } = request.params
    if (await app.sources.get(sourceId) === undefined) return reply.code(404).send(notFound(sourceId))
    const [stats, profiles] = await Promise.all([app.sources.stats(sourceId), app.profiles.count(sourceId, app.now())])
    return { ...stats, profiles }
  })
}

export default sources
