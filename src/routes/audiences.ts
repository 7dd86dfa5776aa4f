import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { StoredAudience } from '../../plugins/audiences.js'
import { AudienceConditionSchema, conditionTraits, parseCondition } from '../audiences/condition.js'
import { audienceKeyFromName, checkAudienceKey } from '../audiences/key.js'
import { parseSchedule } from '../audiences/schedule.js'
import { matchKeyTraitOf } from '../facebook/trait-spellings.js'
import { ADMIN_ERRORS, AdminError, ref } from './schemas.js'

const AudienceParams = Type.Object({ audienceId: Type.String({ description: 'Audience id (aud_…)' }) })
const SourceParams = Type.Object({ sourceId: Type.String() })

export const AudienceSchema = Type.Object({
  id: Type.String(),
  sourceId: Type.String(),
  name: Type.String(),
  key: Type.String({ description: 'The user property synced: snake_cased name, unique per source, never changes' }),
  condition: Type.Unsafe({ $ref: 'AudienceCondition#' }),
  destinations: Type.Array(Type.String(), { description: 'Destination ids its memberships are synced to' }),
  schedule: Type.Object({ every: Type.String({ description: 'ISO-8601 duration between scheduled re-evaluations' }) }),
  createdAt: Type.String({ format: 'date-time' }),
  size: Type.Integer({ description: 'Members now' }),
  status: Type.String({ enum: ['building', 'syncing', 'idle', 'failed'] }),
  error: Type.Optional(Type.String({ description: 'Why the last sync failed (it is retried)' })),
  lastSync: Type.Union([Type.Object({ at: Type.String({ format: 'date-time' }), added: Type.Integer(), removed: Type.Integer() }), Type.Null()]),
  nextSyncAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()])
}, { $id: 'Audience' })

/** Admin API for Engage-style audiences. */
const audiences: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.requireAdmin)
  const security = [{ adminToken: [] }]
  const store = app.audiences
  const queue = app.audienceSyncQueue
  const retentionDays = Math.floor(app.config.historyRetentionMs / 86_400_000)
  const badRequest = (message: string) => ({ statusCode: 400, error: 'Bad Request', message })
  const notFound = (id: string) => ({ statusCode: 404, error: 'Not Found', message: `audience ${id} does not exist` })

  async function load (id: string): Promise<StoredAudience | undefined> {
    const audience = await store.get(id)
    return audience === undefined || audience.deleted === true ? undefined : audience
  }

  async function present (audience: StoredAudience) {
    const [state, size, scheduler] = await Promise.all([
      store.state(audience.id),
      store.size(audience.id),
      queue.getJobScheduler(`expire-${audience.id}`)
    ])
    return {
      id: audience.id,
      sourceId: audience.sourceId,
      name: audience.name,
      key: audience.key,
      condition: audience.condition,
      destinations: audience.destinations,
      schedule: { every: audience.schedule.every },
      createdAt: audience.createdAt,
      size,
      status: state.status,
      ...(state.status === 'failed' && state.error ? { error: state.error } : {}),
      lastSync: state.lastSyncAt === undefined ? null : { at: state.lastSyncAt, added: state.lastSyncAdded, removed: state.lastSyncRemoved },
      nextSyncAt: scheduler?.next === undefined ? null : new Date(scheduler.next).toISOString()
    }
  }

  async function checkDestinations (sourceId: string, ids: unknown): Promise<string[] | { error: string }> {
    const own = (await app.destinations.listForSource(sourceId)).map((d) => d.id)
    if (ids === undefined) return own
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) return { error: 'destinations: must be an array of destination ids' }
    const unknown = ids.filter((id) => !own.includes(id))
    if (unknown.length > 0) return { error: `destinations: ${unknown.join(', ')} is not a destination of source ${sourceId}` }
    return [...new Set(ids as string[])]
  }

  async function schedule (audience: StoredAudience): Promise<void> {
    // First run one interval from now: BullMQ runs an `every` scheduler at once otherwise, a
    // duplicate of the build job queued with it, which raced it for the audience and, when it ran
    // second, replaced the initial sync's lastSync ({added: <members>}) with {added: 0} a second later.
    const startDate = Date.now() + audience.schedule.everyMs
    await queue.upsertJobScheduler(`expire-${audience.id}`, { every: audience.schedule.everyMs, startDate }, { name: 'expire', data: { audienceId: audience.id } })
  }

  app.post('/v1/sources/:sourceId/audiences', {
    schema: {
      tags: ['audiences'],
      summary: 'Create an audience: its history is evaluated, then every member is synced once (initial sync)',
      security,
      params: SourceParams,
      body: Type.Object({
        name: Type.String({ minLength: 1, maxLength: 200 }),
        key: Type.Optional(Type.String({ description: 'Default: the snake_cased name (e.g. "Order Completed Last 30days" → order_completed_last_30days)' })),
        condition: Type.Unsafe({ $ref: 'AudienceCondition#' }),
        destinations: Type.Optional(Type.Array(Type.String(), { description: 'Default: every destination of the source' })),
        schedule: Type.Optional(Type.Object({ every: Type.String({ default: 'PT15M' }) }))
      }),
      response: { 201: ref(AudienceSchema), 404: ref(AdminError), 409: ref(AdminError), ...ADMIN_ERRORS }
    },
    // Documented here, checked in the handler, whose messages name the field and the rule.
    validatorCompiler: () => () => true
  }, async (request, reply) => {
    const body = request.body as Record<string, unknown> | null
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return reply.code(400).send(badRequest('body must be an object'))
    const { sourceId } = request.params
    if (await app.sources.get(sourceId) === undefined) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `source ${sourceId} does not exist` })
    if (typeof body.name !== 'string' || body.name.trim() === '') return reply.code(400).send(badRequest('name: must be a non-empty string'))
    for (const field of Object.keys(body)) {
      if (!['name', 'key', 'condition', 'destinations', 'schedule'].includes(field)) return reply.code(400).send(badRequest(`${field}: is not a field of an audience`))
    }
    let key: string | undefined
    if (body.key !== undefined) {
      if (typeof body.key !== 'string') return reply.code(400).send(badRequest('key: must be a string'))
      const problem = checkAudienceKey(body.key)
      if (problem !== undefined) return reply.code(400).send(badRequest(problem))
      key = body.key
    } else {
      key = audienceKeyFromName(body.name)
      if (key === undefined) return reply.code(400).send(badRequest('name: gives an empty key (no letters or digits); give a key'))
      const problem = checkAudienceKey(key)
      if (problem !== undefined) return reply.code(400).send(badRequest(`${problem} (derived from the name; give another key)`))
    }
    const condition = parseCondition(body.condition, { retentionDays })
    if ('error' in condition) return reply.code(400).send(badRequest(condition.error))
    // Profiles keep match-key traits only as hashes (no raw PII at rest): a condition on one was
    // accepted and could never hold — an audience that stays empty with no word why.
    for (const trait of conditionTraits(condition.condition)) {
      // any spelling (`first_name`, `mobile`, `zip`): src/facebook/trait-spellings.ts
      const matchKey = matchKeyTraitOf(trait)
      if (matchKey !== undefined) return reply.code(400).send(badRequest(`condition: trait "${trait}" is the match key "${matchKey}", kept only hashed (no raw PII at rest); an audience cannot test it`))
    }
    const every = parseSchedule(body.schedule)
    if ('error' in every) return reply.code(400).send(badRequest(every.error))
    const destinations = await checkDestinations(sourceId, body.destinations)
    if ('error' in destinations) return reply.code(400).send(badRequest(destinations.error))

    const audience = await store.create({ sourceId, name: body.name, key, condition: condition.condition, destinations, schedule: every })
    if (audience === undefined) return reply.code(409).send({ statusCode: 409, error: 'Conflict', message: `key "${key}" is already used by another audience of this source` })
    await schedule(audience)
    await queue.add('build', { audienceId: audience.id }, { jobId: `build-${audience.id}` })
    return reply.code(201).send(await present(audience))
  })

  app.get('/v1/sources/:sourceId/audiences', {
    schema: { tags: ['audiences'], summary: 'The source\'s audiences', security, params: SourceParams, response: { 200: Type.Object({ audiences: Type.Array(ref(AudienceSchema)) }), ...ADMIN_ERRORS } }
  }, async (request) => ({
    audiences: await Promise.all((await store.listForSource(request.params.sourceId)).filter((a) => a.deleted !== true).map(present))
  }))

  app.get('/v1/audiences/:audienceId', {
    schema: { tags: ['audiences'], summary: 'An audience with its size and sync state', security, params: AudienceParams, response: { 200: ref(AudienceSchema), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    const audience = await load(request.params.audienceId)
    if (audience === undefined) return reply.code(404).send(notFound(request.params.audienceId))
    return present(audience)
  })

  app.patch('/v1/audiences/:audienceId', {
    schema: {
      tags: ['audiences'],
      summary: 'Rename, change the schedule, or connect and unlink destinations (a connected one gets every member; an unlinked one gets false for each). Key and condition never change.',
      security,
      params: AudienceParams,
      body: Type.Object({
        name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
        destinations: Type.Optional(Type.Array(Type.String())),
        schedule: Type.Optional(Type.Object({ every: Type.String() }))
      }),
      response: { 200: ref(AudienceSchema), 404: ref(AdminError), ...ADMIN_ERRORS }
    },
    validatorCompiler: () => () => true
  }, async (request, reply) => {
    const audience = await load(request.params.audienceId)
    if (audience === undefined) return reply.code(404).send(notFound(request.params.audienceId))
    const body = request.body as Record<string, unknown> | null
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return reply.code(400).send(badRequest('body must be an object'))
    for (const field of Object.keys(body)) {
      if (field === 'key' || field === 'condition') return reply.code(400).send(badRequest(`${field}: never changes after creation; create another audience`))
      if (!['name', 'destinations', 'schedule'].includes(field)) return reply.code(400).send(badRequest(`${field}: is not a field of an audience`))
    }
    const changes: Parameters<typeof store.update>[1] = {}
    if (body.name !== undefined) {
      if (typeof body.name !== 'string' || body.name.trim() === '') return reply.code(400).send(badRequest('name: must be a non-empty string'))
      changes.name = body.name
    }
    if (body.schedule !== undefined) {
      const every = parseSchedule(body.schedule)
      if ('error' in every) return reply.code(400).send(badRequest(every.error))
      changes.schedule = every
    }
    let linked: string[] = []
    let unlinked: string[] = []
    if (body.destinations !== undefined) {
      const destinations = await checkDestinations(audience.sourceId, body.destinations)
      if ('error' in destinations) return reply.code(400).send(badRequest(destinations.error))
      linked = destinations.filter((id) => !audience.destinations.includes(id))
      unlinked = audience.destinations.filter((id) => !destinations.includes(id))
      changes.destinations = destinations
    }
    const updated = (await store.update(audience.id, changes))!
    if (changes.schedule !== undefined) await schedule(updated)
    if (linked.length > 0) await queue.add('link', { audienceId: audience.id, destinationIds: linked })
    if (unlinked.length > 0) await queue.add('unlink', { audienceId: audience.id, destinationIds: unlinked })
    return present(updated)
  })

  app.delete('/v1/audiences/:audienceId', {
    schema: { tags: ['audiences'], summary: 'Delete an audience: its members are sent false, then its data goes', security, params: AudienceParams, response: { 204: Type.Null(), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    const audience = await load(request.params.audienceId)
    if (audience === undefined) return reply.code(404).send(notFound(request.params.audienceId))
    await store.markDeleted(audience)
    await queue.removeJobScheduler(`expire-${audience.id}`)
    await queue.add('remove', { audienceId: audience.id }, { jobId: `remove-${audience.id}` })
    return reply.code(204).send(null)
  })

  app.get('/v1/audiences/:audienceId/members', {
    schema: {
      tags: ['audiences'],
      summary: 'Members, oldest first, a page at a time',
      security,
      params: AudienceParams,
      querystring: Type.Object({ cursor: Type.Optional(Type.String({ pattern: '^[0-9]+$' })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })) }),
      response: { 200: Type.Object({ members: Type.Array(Type.Object({ userId: Type.String(), since: Type.String({ format: 'date-time' }) })), nextCursor: Type.Union([Type.String(), Type.Null()]) }), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const audience = await load(request.params.audienceId)
    if (audience === undefined) return reply.code(404).send(notFound(request.params.audienceId))
    return store.members(audience.id, Number(request.query.cursor ?? 0), request.query.limit ?? 100)
  })

  app.post('/v1/audiences/:audienceId/sync', {
    schema: {
      tags: ['audiences'],
      summary: 'Sync now: window expiries and pending changes go out',
      security,
      params: AudienceParams,
      response: { 202: Type.Object({ queued: Type.Boolean() }), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const audience = await load(request.params.audienceId)
    if (audience === undefined) return reply.code(404).send(notFound(request.params.audienceId))
    await queue.add('expire', { audienceId: audience.id })
    return reply.code(202).send({ queued: true })
  })
}

export default audiences
export { AudienceConditionSchema }
