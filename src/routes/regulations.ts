import { randomBytes } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { MAX_SUBJECTS, REGULATION_TYPES, SUBJECT_TYPES, type Regulation } from '../../jobs/regulations.js'
import { MAX_ID_LENGTH } from '../segment/message.js'
import { ADMIN_ERRORS, AdminError, ref } from './schemas.js'

const Counts = Type.Object({
  subjects: Type.Integer(),
  suppressed: Type.Integer({ description: 'Subjects newly suppressed' }),
  unsuppressed: Type.Integer({ description: 'Subjects no longer suppressed' }),
  profilesDeleted: Type.Integer(),
  linksDeleted: Type.Integer({ description: 'Anonymous and former ids linked to the subjects, or theirs' }),
  membershipsRemoved: Type.Integer({ description: 'Audience memberships removed (no false sent: the person is gone, not leaving)' }),
  messagesDropped: Type.Integer({ description: 'Their messages still waiting in ingest jobs, not processed' }),
  conversionsDeleted: Type.Integer({ description: 'Their conversions not yet delivered (queued, held or dead-lettered), counted as filtered: deleted' })
})

const RegulationSchema = Type.Object({
  id: Type.String(),
  sourceId: Type.String(),
  regulationType: Type.Union(REGULATION_TYPES.map((type) => Type.Literal(type))),
  subjectType: Type.Union(SUBJECT_TYPES.map((type) => Type.Literal(type))),
  status: Type.Union([Type.Literal('running'), Type.Literal('finished'), Type.Literal('failed')]),
  counts: Counts,
  createdAt: Type.String({ format: 'date-time' }),
  finishedAt: Type.Optional(Type.String({ format: 'date-time' })),
  error: Type.Optional(Type.String())
}, { $id: 'Regulation' })

const SourceParams = Type.Object({ sourceId: Type.String({ description: 'Source id (src_…)' }) })

/**
 * Admin API: deletion and suppression requests, Segment's Regulations API semantics. The subjects'
 * ids are kept only in the job that carries a request out.
 */
const regulations: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireAdmin)
  const security = [{ adminToken: [] }]
  app.addSchema(RegulationSchema)

  app.post('/v1/sources/:sourceId/regulations', {
    schema: {
      tags: ['privacy'],
      summary: 'Delete or suppress users\' data (SUPPRESS_ONLY, UNSUPPRESS, SUPPRESS_WITH_DELETE, DELETE_ONLY)',
      description: 'Suppression drops every later message of the subjects at ingestion (answered 200, counted as suppressed); deletion removes their profile, links, audience memberships, undelivered conversions and waiting messages. Carried out by a job: GET /v1/regulations/:id for its status.',
      security,
      params: SourceParams,
      body: Type.Object({
        regulationType: Type.Union(REGULATION_TYPES.map((type) => Type.Literal(type))),
        subjectType: Type.Union(SUBJECT_TYPES.map((type) => Type.Literal(type))),
        subjectIds: Type.Array(Type.String({ minLength: 1, maxLength: MAX_ID_LENGTH }), { minItems: 1, maxItems: MAX_SUBJECTS, uniqueItems: true })
      }, { additionalProperties: false }),
      response: { 202: Type.Object({ id: Type.String() }), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const { sourceId } = request.params
    if (await app.sources.get(sourceId) === undefined) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `source ${sourceId} does not exist` })
    const { regulationType, subjectType, subjectIds } = request.body
    const regulation: Regulation = {
      id: `reg_${randomBytes(8).toString('hex')}`,
      sourceId,
      regulationType,
      subjectType,
      status: 'running',
      counts: { subjects: subjectIds.length, suppressed: 0, unsuppressed: 0, profilesDeleted: 0, linksDeleted: 0, membershipsRemoved: 0, messagesDropped: 0, conversionsDeleted: 0 },
      createdAt: new Date().toISOString()
    }
    await app.regulations.create(regulation)
    await app.regulationQueue.add('regulation', { regulationId: regulation.id, sourceId, regulationType, subjectType, subjectIds }, { jobId: regulation.id })
    return reply.code(202).send({ id: regulation.id })
  })

  app.get('/v1/regulations/:regulationId', {
    schema: {
      tags: ['privacy'],
      summary: 'A regulation\'s status and counts',
      security,
      params: Type.Object({ regulationId: Type.String() }),
      response: { 200: ref(RegulationSchema), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const regulation = await app.regulations.get(request.params.regulationId)
    if (regulation === undefined) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `regulation ${request.params.regulationId} does not exist` })
    return regulation
  })

  app.get('/v1/sources/:sourceId/regulations', {
    schema: {
      tags: ['privacy'],
      summary: 'The source\'s regulations, newest first (at most 1,000)',
      security,
      params: SourceParams,
      response: { 200: Type.Object({ regulations: Type.Array(ref(RegulationSchema)) }), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const { sourceId } = request.params
    if (await app.sources.get(sourceId) === undefined) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `source ${sourceId} does not exist` })
    return { regulations: await app.regulations.listForSource(sourceId) }
  })
}

export default regulations
