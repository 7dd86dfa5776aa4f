import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { DESTINATION_STATUSES, type DestinationChanges, type StoredDestination } from '../../plugins/destinations.js'
import { MAX_EVENTS } from '../../jobs/route.js'
import { DESTINATION_TYPE, FacebookSettingsSchema, parseFacebookSettings, type FacebookSettings } from '../facebook/settings.js'
import { ADMIN_ERRORS, AdminError, ref } from './schemas.js'

const DestinationParams = Type.Object({ destinationId: Type.String({ description: 'Destination id (dst_…)' }) })
const SourceParams = Type.Object({ sourceId: Type.String() })

export const DestinationSchema = Type.Object({
  id: Type.String(),
  sourceId: Type.String(),
  type: Type.String({ enum: [DESTINATION_TYPE] }),
  name: Type.String(),
  enabled: Type.Boolean(),
  status: Type.String({
    enum: [...DESTINATION_STATUSES],
    description: 'One status, by precedence: disabled > version_expired (settings.apiVersion is past Meta\'s expiry: conversions are held until it is changed) > ' +
      'needs_reauthorization (after Meta\'s code 190) > permission_denied (after codes 10, 200–299) > needs_token (no access token yet) > active. ' +
      'Conversions are held until a token is set (or the version changed), at most HOLD_MAX.'
  }),
  statusMessage: Type.Optional(Type.String({ description: 'Meta\'s message for the status' })),
  connected: Type.Boolean({ description: 'An access token is stored (tokens are never returned)' }),
  pausedUntil: Type.Optional(Type.String({ format: 'date-time', description: 'Rate limited by Meta: nothing is sent before then' })),
  warnings: Type.Array(Type.String(), {
    description: 'Sentences about what will not work as expected: a Graph version that has expired or expires within 90 days, the closed legacy format, no event mapped. Empty when none.'
  }),
  settings: Type.Unsafe({ $ref: 'FacebookSettings#' }),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' })
}, { $id: 'Destination' })

const Stats = Type.Object({
  received: Type.Integer({ description: 'Conversions routed here (a track in two maps is two; a message that yields none is one)' }),
  filtered: Type.Integer({ description: 'Unmapped events, other calls, messages whose integrations turn this destination off or whose user\'s consent does not allow it' }),
  filteredByReason: Type.Record(Type.String(), Type.Integer(), { description: 'The parts of filtered: unmapped, integrations, consent, disabled (other: counted by earlier builds)' }),
  invalid: Type.Object({ total: Type.Integer(), byReason: Type.Record(Type.String(), Type.Integer()) }, { description: 'Refused locally, never sent' }),
  delivered: Type.Integer(),
  retrying: Type.Integer({ description: 'Not settled yet: queued, backing off, paused for a rate limit, or held' }),
  held: Type.Integer({ description: 'The part of retrying held back until a token is set, or an expired apiVersion is changed (at most HOLD_MAX, then dead-lettered)' }),
  deadLettered: Type.Integer({ description: 'Failed for good; see /failures' }),
  droppedPii: Type.Integer({ description: 'Properties kept out of custom_data because they are named as a match key (email, phone_number, mobile, zip_code, dob…): PII is never sent raw. Not a term of the identity' }),
  lastError: Type.Union([Type.Object({ message: Type.String(), code: Type.Optional(Type.Integer()), subcode: Type.Optional(Type.Integer()), status: Type.Optional(Type.Integer()), fbtraceId: Type.Optional(Type.String()), at: Type.String({ format: 'date-time' }) }), Type.Null()]),
  lastSuccessAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()])
}, { description: 'received = filtered + invalid.total + delivered + deadLettered + retrying; held ≤ retrying' })

const Failure = Type.Object({
  id: Type.String(),
  failedAt: Type.String({ format: 'date-time' }),
  datasetId: Type.String(),
  eventName: Type.String(),
  eventId: Type.String(),
  error: Type.Object({ message: Type.String(), code: Type.Optional(Type.Integer()), subcode: Type.Optional(Type.Integer()), status: Type.Optional(Type.Integer()), fbtraceId: Type.Optional(Type.String()) })
})

/** Admin API for destinations (Facebook Offline Conversions). */
const destinations: FastifyPluginAsyncTypebox = async (app) => {
  // onRequest, not preHandler (which runs after validation): a caller without the token gets
  // 401, not a 400 that describes the schema — as the sources routes do.
  app.addHook('onRequest', app.requireAdmin)
  const security = [{ adminToken: [] }]
  const store = app.destinations
  const notFound = (id: string) => ({ statusCode: 404, error: 'Not Found', message: `destination ${id} does not exist` })
  const badRequest = (message: string) => ({ statusCode: 400, error: 'Bad Request', message })
  // Unknown fields are refused, not dropped: a typo such as `enable: false` would otherwise
  // leave the destination on and sending.
  const unknownFields = (body: unknown, allowed: string[]): string | undefined => {
    if (body === null || typeof body !== 'object') return undefined
    const unknown = Object.keys(body).filter((key) => !allowed.includes(key))
    return unknown.length === 0 ? undefined : `${unknown.join(', ')}: not a field of a destination (${allowed.join(', ')})`
  }

  async function load (id: string): Promise<StoredDestination | undefined> {
    return store.get(id)
  }

  app.post('/v1/sources/:sourceId/destinations', {
    schema: {
      tags: ['destinations'],
      summary: 'Connect a destination to a source',
      security,
      params: SourceParams,
      body: Type.Object({
        type: Type.String({ enum: [DESTINATION_TYPE] }),
        name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
        enabled: Type.Optional(Type.Boolean()),
        settings: Type.Optional(Type.Unsafe<Record<string, unknown>>({ ...FacebookSettingsSchema, $id: undefined, description: 'See the FacebookSettings schema' }))
      }, { additionalProperties: false }),
      response: { 201: ref(DestinationSchema), 404: ref(AdminError), ...ADMIN_ERRORS }
    },
    // Documented here, validated in the handler: parseFacebookSettings names the field and the rule.
    validatorCompiler: () => () => true
  }, async (request, reply) => {
    const body = request.body as { type?: unknown, name?: unknown, enabled?: unknown, settings?: unknown }
    if (body === null || typeof body !== 'object') return reply.code(400).send(badRequest('body must be an object'))
    const unknown = unknownFields(body, ['type', 'name', 'enabled', 'settings'])
    if (unknown !== undefined) return reply.code(400).send(badRequest(unknown))
    if (body.type !== DESTINATION_TYPE) return reply.code(400).send(badRequest(`type must be "${DESTINATION_TYPE}"`))
    if (body.name !== undefined && (typeof body.name !== 'string' || body.name === '')) return reply.code(400).send(badRequest('name must be a non-empty string'))
    if (body.enabled !== undefined && typeof body.enabled !== 'boolean') return reply.code(400).send(badRequest('enabled must be a boolean'))
    if (await app.sources.get(request.params.sourceId) === undefined) {
      return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `source ${request.params.sourceId} does not exist` })
    }
    const parsed = parseFacebookSettings(body.settings ?? {})
    if ('error' in parsed) return reply.code(400).send(badRequest(parsed.error))
    const destination = await store.create({
      sourceId: request.params.sourceId,
      type: DESTINATION_TYPE,
      name: (body.name as string | undefined) ?? 'Facebook Offline Conversions',
      enabled: (body.enabled as boolean | undefined) ?? true,
      settings: parsed.settings
    })
    return reply.code(201).send(await store.toPublic(destination))
  })

  app.get('/v1/sources/:sourceId/destinations', {
    schema: { tags: ['destinations'], summary: 'The source\'s destinations', security, params: SourceParams, response: { 200: Type.Object({ destinations: Type.Array(ref(DestinationSchema)) }), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    // A mistyped source id is a 404, not an empty list that reads as "no destinations".
    if (await app.sources.get(request.params.sourceId) === undefined) {
      return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `source ${request.params.sourceId} does not exist` })
    }
    return { destinations: await Promise.all((await store.listForSource(request.params.sourceId)).map((d) => store.toPublic(d))) }
  })

  app.get('/v1/destinations/:destinationId', {
    schema: { tags: ['destinations'], summary: 'One destination, with its status', security, params: DestinationParams, response: { 200: ref(DestinationSchema), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    const destination = await load(request.params.destinationId)
    if (destination === undefined) return reply.code(404).send(notFound(request.params.destinationId))
    return store.toPublic(destination)
  })

  app.patch('/v1/destinations/:destinationId', {
    schema: {
      tags: ['destinations'],
      summary: 'Change the name, enabled, or settings (top-level keys given replace the current ones; null resets one to its default, or removes testEventCode)',
      security,
      params: DestinationParams,
      body: Type.Object({
        name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
        enabled: Type.Optional(Type.Boolean()),
        settings: Type.Optional(Type.Object({}, { additionalProperties: true }))
      }, { additionalProperties: false }),
      response: { 200: ref(DestinationSchema), 404: ref(AdminError), ...ADMIN_ERRORS }
    },
    // Before validation, which would silently drop unknown fields (Fastify's removeAdditional).
    preValidation: async (request, reply) => {
      const unknown = unknownFields(request.body, ['name', 'enabled', 'settings'])
      if (unknown !== undefined) return reply.code(400).send(badRequest(unknown))
    }
  }, async (request, reply) => {
    const { name, enabled, settings } = request.body
    // A merge patch (RFC 7396): null removes the key, so testEventCode can be turned off again
    // (and any other setting goes back to its default). Merged into the destination as stored at
    // the moment it is written (DestinationStore.update retries with the newer one): two PATCHes
    // of different settings racing each other both land.
    let before: StoredDestination | undefined
    let problem: string | undefined
    const updated = await store.update(request.params.destinationId, (current) => {
      before = current
      problem = undefined
      const changes: DestinationChanges = {}
      if (name !== undefined) changes.name = name
      if (enabled !== undefined) changes.enabled = enabled
      if (settings !== undefined) {
        const merged: Record<string, unknown> = { ...current.settings }
        for (const [key, value] of Object.entries(settings)) {
          if (value === null) delete merged[key]
          else merged[key] = value
        }
        const parsed = parseFacebookSettings(merged)
        if ('error' in parsed) {
          problem = parsed.error
          return null
        }
        changes.settings = parsed.settings
      }
      return changes
    })
    if (updated === undefined) return reply.code(404).send(notFound(request.params.destinationId))
    if (problem !== undefined) return reply.code(400).send(badRequest(problem))
    // A new Graph version (or format) may be one Meta answers: what waited for it goes now.
    if (before !== undefined && (updated.settings.apiVersion !== before.settings.apiVersion || updated.settings.apiFormat !== before.settings.apiFormat)) {
      await app.releaseHeldConversions(updated.id)
    }
    return store.toPublic(updated)
  })

  app.delete('/v1/destinations/:destinationId', {
    schema: { tags: ['destinations'], summary: 'Delete a destination, its token, counters and dead letters', security, params: DestinationParams, response: { 204: Type.Null(), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    if (!await store.remove(request.params.destinationId)) return reply.code(404).send(notFound(request.params.destinationId))
    return reply.code(204).send(null)
  })

  app.put('/v1/destinations/:destinationId/access-token', {
    schema: {
      tags: ['destinations'],
      summary: 'Store an access token (a system-user token, say); encrypted at rest, never returned. Held conversions are released.',
      security,
      params: DestinationParams,
      body: Type.Object({ accessToken: Type.String({ minLength: 10, maxLength: 1000 }) }, { additionalProperties: false }),
      response: { 204: Type.Null(), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const destination = await load(request.params.destinationId)
    if (destination === undefined) return reply.code(404).send(notFound(request.params.destinationId))
    await app.connectDestinationToken(destination.id, request.body.accessToken)
    return reply.code(204).send(null)
  })

  app.delete('/v1/destinations/:destinationId/access-token', {
    schema: { tags: ['destinations'], summary: 'Disconnect: remove the token (conversions are held until a new one is set, at most HOLD_MAX)', security, params: DestinationParams, response: { 204: Type.Null(), 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    if (await load(request.params.destinationId) === undefined) return reply.code(404).send(notFound(request.params.destinationId))
    await store.removeAccessToken(request.params.destinationId)
    return reply.code(204).send(null)
  })

  app.get('/v1/destinations/:destinationId/stats', {
    schema: { tags: ['destinations'], summary: 'What happened to the conversions routed here', security, params: DestinationParams, response: { 200: Stats, 404: ref(AdminError), ...ADMIN_ERRORS } }
  }, async (request, reply) => {
    if (await load(request.params.destinationId) === undefined) return reply.code(404).send(notFound(request.params.destinationId))
    return store.stats(request.params.destinationId)
  })

  app.get('/v1/destinations/:destinationId/failures', {
    schema: {
      tags: ['destinations'],
      summary: 'Dead letters, newest first (Meta\'s error for each)',
      security,
      params: DestinationParams,
      querystring: Type.Object({ cursor: Type.Optional(Type.String({ pattern: '^[0-9]+$' })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })) }),
      response: { 200: Type.Object({ failures: Type.Array(Failure), total: Type.Integer(), nextCursor: Type.Union([Type.String(), Type.Null()]) }), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    if (await load(request.params.destinationId) === undefined) return reply.code(404).send(notFound(request.params.destinationId))
    const offset = Number(request.query.cursor ?? 0)
    const limit = request.query.limit ?? 100
    const { letters, total } = await store.deadLetters(request.params.destinationId, offset, limit)
    return {
      failures: letters.map(({ payload, ...rest }) => rest),
      total,
      nextCursor: offset + letters.length < total ? String(offset + letters.length) : null
    }
  })

  app.post('/v1/destinations/:destinationId/failures/retry', {
    // The body is optional ("all of them"), but a schema'd body that is absent fails validation
    // as "body must be object": a bare POST (curl -X POST) must retry everything.
    preValidation: async (request) => { if (request.body === undefined || request.body === null) request.body = {} },
    schema: {
      tags: ['destinations'],
      summary: 'Send dead letters again (all, or the given ids)',
      security,
      params: DestinationParams,
      body: Type.Optional(Type.Object({ ids: Type.Optional(Type.Array(Type.String(), { maxItems: 10_000 })) }, { additionalProperties: false })),
      response: { 200: Type.Object({ retried: Type.Integer() }), 404: ref(AdminError), ...ADMIN_ERRORS }
    }
  }, async (request, reply) => {
    const destination = await load(request.params.destinationId)
    if (destination === undefined) return reply.code(404).send(notFound(request.params.destinationId))
    const letters = await store.takeDeadLetters(destination.id, request.body?.ids)
    // One request per dataset and payload format: letters keep the format they were written in
    // (apiFormat may have changed since), which decides the Graph version and the batch limit.
    const groups = new Map<string, { datasetId: string, apiFormat: FacebookSettings['apiFormat'], letters: typeof letters }>()
    for (const letter of letters) {
      const apiFormat = letter.apiFormat ?? destination.settings.apiFormat
      const key = `${apiFormat}:${letter.datasetId}`
      let group = groups.get(key)
      if (group === undefined) groups.set(key, (group = { datasetId: letter.datasetId, apiFormat, letters: [] }))
      group.letters.push(letter)
    }
    const jobs = []
    for (const { datasetId, apiFormat, letters: list } of groups.values()) {
      const max = MAX_EVENTS[apiFormat]
      for (let i = 0; i < list.length; i += max) {
        const conversions = list.slice(i, i + max).map((l) => ({ eventId: l.eventId, eventName: l.eventName, eventTime: Number(l.payload.event_time), payload: l.payload }))
        jobs.push({ name: 'conversions', data: { destinationId: destination.id, datasetId, apiFormat, conversions } })
      }
    }
    try {
      if (jobs.length > 0) await app.deliverQueue.addBulk(jobs)
    } catch (err) {
      await store.restoreDeadLetters(destination.id, letters).catch((restoreError) => request.log.error({ err: restoreError, count: letters.length }, 'dead letters taken for a replay could not be put back'))
      throw err
    }
    return { retried: letters.length }
  })
}

export default destinations
