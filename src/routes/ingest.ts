import { randomUUID } from 'node:crypto'
import { createGunzip, createInflate } from 'node:zlib'
import type { FastifyError, FastifyPluginAsync, FastifyReply, FastifyRequest, RequestPayload } from 'fastify'
import secureJson from 'secure-json-parse'
import { Type } from 'typebox'
import { UnavailableError, type Submission } from '../../plugins/ingest-buffer.js'
import { batchItemSpans, minimumJsonBytes } from '../segment/batch-text.js'
import { partitionKey, partitionOf, splitByPartition, type PartitionIds } from '../ingest-partitions.js'
import { lazyRequestLogger } from '../request-logger.js'
import { checkMessage, idString, isPlainObject, PATH_TYPES, shapeError } from '../segment/message.js'
import type { MessageType } from '../segment/types.js'
import { writeKeyFromBody, writeKeyFromHeader, writeKeysInText } from '../segment/write-key.js'
import { IngestError, IngestSuccess, ref } from './schemas.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The body as text, after decompression. */
    bodyText?: string
    /** The body's bytes, after decompression: what is stored. */
    bodyBytes?: Buffer
    /** The text spells a prototype key somewhere: the messages are scanned for one. */
    suspectKeys?: boolean
    /** The source of the write key in the request's Basic header, found before the body was read. */
    sourceId?: string
  }
}

// secure-json-parse's tests for a text that may hold a prototype key, escaped spellings included.
const SUSPECT_PROTO = /"(?:_|\\u005[Ff])(?:_|\\u005[Ff])(?:p|\\u0070)(?:r|\\u0072)(?:o|\\u006[Ff])(?:t|\\u0074)(?:o|\\u006[Ff])(?:_|\\u005[Ff])(?:_|\\u005[Ff])"\s*:/
const SUSPECT_CONSTRUCTOR = /"(?:c|\\u0063)(?:o|\\u006[Ff])(?:n|\\u006[Ee])(?:s|\\u0073)(?:t|\\u0074)(?:r|\\u0072)(?:u|\\u0075)(?:c|\\u0063)(?:t|\\u0074)(?:o|\\u006[Ff])(?:r|\\u0072)"\s*:/
const PROTOTYPE_KEY_ERROR = 'forbidden key: __proto__ or constructor.prototype (prototype poisoning)'

/** Whether a parsed value holds `__proto__` or `constructor.prototype` as an own key, at any depth. */
function prototypeKeyIn (value: unknown): boolean {
  return typeof value === 'object' && value !== null && secureJson.scan(value, { safe: true }) === null
}

const NO_BYTES = Buffer.alloc(0)

class IngestHttpError extends Error {
  constructor (readonly statusCode: number, message: string, readonly headers: Record<string, string> = {}) { super(message) }
}

// Documented shapes only: the handler validates messages itself, one by one, so that one bad
// message in a batch never loses its neighbours and every error names its field.
const Message = Type.Object({
  type: Type.Optional(Type.String({ enum: ['track', 'identify', 'page', 'screen', 'group', 'alias'], description: 'Required in a batch; a single-message path gives it' })),
  userId: Type.Optional(Type.String()),
  anonymousId: Type.Optional(Type.String({ description: 'userId or anonymousId is required' })),
  event: Type.Optional(Type.String({ description: 'Required for track' })),
  groupId: Type.Optional(Type.String({ description: 'Required for group' })),
  previousId: Type.Optional(Type.String({ description: 'Required for alias' })),
  messageId: Type.Optional(Type.String({ maxLength: 100, description: 'Generated when absent; a repeat within the dedup window is accepted but not stored again' })),
  timestamp: Type.Optional(Type.String({ format: 'date-time' })),
  sentAt: Type.Optional(Type.String({ format: 'date-time' })),
  properties: Type.Optional(Type.Object({}, { additionalProperties: true })),
  traits: Type.Optional(Type.Object({}, { additionalProperties: true })),
  context: Type.Optional(Type.Object({}, { additionalProperties: true })),
  integrations: Type.Optional(Type.Object({}, { additionalProperties: true })),
  writeKey: Type.Optional(Type.String())
}, { additionalProperties: true, description: 'A Segment message; at most 32 KB' })

const Batch = Type.Object({
  batch: Type.Array(Message, { maxItems: 2500 }),
  writeKey: Type.Optional(Type.String()),
  sentAt: Type.Optional(Type.String({ format: 'date-time' })),
  context: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'Merged into every message' })),
  integrations: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'Merged into every message' }))
}, { additionalProperties: true })

const responses = {
  200: ref(IngestSuccess),
  400: ref(IngestError),
  401: ref(IngestError),
  413: ref(IngestError),
  415: ref(IngestError),
  429: ref(IngestError),
  503: ref(IngestError)
}

/**
 * The Segment HTTP Tracking API. Bodies are JSON whatever the Content-Type says (browsers and
 * Kotlin send text/plain), gzip or deflate encoded or not; limits apply after decompression.
 */
const ingest: FastifyPluginAsync = async (app) => {
  const config = app.config
  const partitions = config.ingestPartitions

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.MAX_REQUEST_BYTES }, (request, body, done) => {
    // This parser takes every body (Fastify's own JSON parser, which would say so, is removed).
    let bytes = body as Buffer
    if (bytes.length === 0) return done(new IngestHttpError(400, 'the body is empty; send a JSON message or batch'), undefined)
    // The bytes are what gets stored (StoredRequest); a byte-order mark is no part of them.
    if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3)
    request.bodyBytes = bytes
    request.bodyText = bytes.toString('utf8')
    // Without a key in the header, the body must give one: a body that gives no known key is
    // refused before its parse (a 4 MB parse costs a core ~30 ms).
    if (request.sourceId !== undefined) return parseBody(request, done)
    const candidates = writeKeysInText(request.bodyText)
    if (candidates === undefined) return parseBody(request, done)
    if (candidates.length === 0) return done(missingWriteKey(), undefined)
    const known = anyKnownWriteKey(candidates)
    if (known === true) return parseBody(request, done)
    if (known === false) return done(new IngestHttpError(401, 'unknown write key'), undefined)
    known.then(
      (found) => found ? parseBody(request, done) : done(new IngestHttpError(401, 'unknown write key'), undefined),
      (err) => done(Object.assign(new UnavailableError('storage (Redis) is unreachable; retry later'), { cause: err }), undefined))
  })

  function parseBody (request: FastifyRequest, done: (err: Error | null, body?: unknown) => void): void {
    const text = request.bodyText!
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch (err) {
      return done(new IngestHttpError(400, `malformed JSON: ${(err as Error).message}`), undefined)
    }
    // Prototype-poisoning keys (__proto__, constructor.prototype) are refused, not stripped —
    // the message that holds one alone (see prototypeKeyIn). Looked for only when the text has
    // one (secure-json-parse's own test).
    request.suspectKeys = SUSPECT_PROTO.test(text) || SUSPECT_CONSTRUCTOR.test(text)
    done(null, body)
  }

  /** Whether any of the keys is a source's; without a promise when the cache knows them all. */
  function anyKnownWriteKey (keys: string[]): boolean | Promise<boolean> {
    const pending: Array<Promise<string | null>> = []
    for (const key of keys) {
      const found = app.sources.resolveWriteKey(key)
      if (typeof found === 'string') return true
      if (found !== null) pending.push(found)
    }
    if (pending.length === 0) return false
    return Promise.all(pending).then((found) => found.some((sourceId) => sourceId !== null))
  }

  function missingWriteKey (): IngestHttpError {
    return new IngestHttpError(401, 'missing write key: send it as the HTTP Basic user name or as writeKey in the body')
  }

  // One hook, in callback form: on every request of the hottest routes, each hook costs a run of
  // Fastify's hook runner, and an async one a promise as well.
  app.addHook('preParsing', (request, reply, payload, done) => {
    // Every answer, errors included, may be read by a page on any origin (analytics.js).
    reply.header('access-control-allow-origin', '*')
    // The body is JSON whatever the Content-Type says; Fastify would refuse a malformed one
    // (`json`, `text`, an empty value) with 415 before any parser runs, and a client drops a
    // batch answered 4xx. The one parser below ignores the type, so any value will do.
    if (request.headers['content-type'] !== undefined) request.headers['content-type'] = 'application/json'
    // Cheap rejection first: a write key in the header is checked before the body is read.
    const headerKey = request.method === 'POST' ? writeKeyFromHeader(request.headers.authorization) : undefined
    if (headerKey === undefined) return decompressed(request, payload, done)
    const found = app.sources.resolveWriteKey(headerKey)
    if (typeof found === 'string') {
      request.sourceId = found
      return decompressed(request, payload, done)
    }
    if (found === null) return done(unknownWriteKey())
    found.then((sourceId) => {
      if (sourceId === null) return done(unknownWriteKey())
      request.sourceId = sourceId
      decompressed(request, payload, done)
    }, (err) => done(Object.assign(new UnavailableError('storage (Redis) is unreachable; retry later'), { cause: err })))
  })

  function decompressed (request: FastifyRequest, payload: RequestPayload, done: (err: Error | null, payload?: RequestPayload) => void): void {
    const encoding = request.headers['content-encoding']?.toLowerCase()
    if (encoding === undefined || encoding === 'identity') return done(null, payload)
    if (encoding !== 'gzip' && encoding !== 'deflate') return done(new IngestHttpError(415, `unsupported Content-Encoding "${encoding}" (gzip, deflate or none)`))
    const inflated = Object.assign(encoding === 'gzip' ? createGunzip() : createInflate(), { receivedEncodedLength: 0 })
    // Fastify compares this with Content-Length, and the inflated bytes with the body limit.
    payload.on('data', (chunk: Buffer) => { inflated.receivedEncodedLength += chunk.length })
    payload.on('error', (err) => inflated.destroy(err))
    done(null, payload.pipe(inflated))
  }

  /** A 401 sent before the body is read: the connection closes rather than take the rest. */
  function unknownWriteKey (): IngestHttpError {
    return new IngestHttpError(401, 'unknown write key', { connection: 'close' })
  }

  app.setErrorHandler((err: FastifyError | IngestHttpError, request, reply) => {
    let statusCode = err.statusCode ?? 500
    let message = err.message
    if (err instanceof UnavailableError) {
      statusCode = 503
      reply.header('retry-after', String(err.retryAfterSeconds))
    } else if ((err as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      message = `request body is over ${config.MAX_REQUEST_BYTES} bytes (after decompression)`
    } else if (err instanceof Error && 'errno' in err && (err as NodeJS.ErrnoException).code?.startsWith('Z_')) {
      statusCode = 400
      message = `the body could not be decompressed: ${err.message}`
    }
    if (statusCode >= 500 && statusCode !== 503) {
      request.log.error({ err }, 'ingestion failed')
      message = 'internal error; retry later'
    }
    if (err instanceof IngestHttpError) reply.headers(err.headers)
    return reply.code(statusCode).send({ success: false, error: message })
  })

  /**
   * The request's source. Its id without a promise when the write key is cached (nearly always):
   * an await costs a single-message request more than the lookup.
   */
  function sourceFor (request: FastifyRequest, body: Record<string, unknown>, messages: readonly unknown[]): string | Promise<string> {
    if (request.sourceId !== undefined) return request.sourceId
    const writeKey = writeKeyFromHeader(request.headers.authorization) ?? writeKeyFromBody(body, messages)
    if (writeKey === undefined) throw missingWriteKey()
    const found = app.sources.resolveWriteKey(writeKey)
    if (typeof found === 'string' || found === null) return knownSource(found)
    return found.then(knownSource, (err) => {
      throw Object.assign(new UnavailableError('storage (Redis) is unreachable; retry later'), { cause: err })
    })
  }

  function knownSource (sourceId: string | null): string {
    if (sourceId === null) throw new IngestHttpError(401, 'unknown write key')
    return sourceId
  }

  /**
   * Whether the source has suppressed subjects (regulations): then a request's messages carry
   * their ids to the flush, whose duplicate check drops the suppressed ones. Cached: a lookup
   * without a promise on nearly every request.
   */
  function suppressing (sourceId: string): boolean | Promise<boolean> {
    const active = app.suppressionActive(sourceId)
    if (typeof active === 'boolean') return active
    return active.catch((err) => { throw Object.assign(new UnavailableError('storage (Redis) is unreachable; retry later'), { cause: err }) })
  }

  /** Throws 429 over the source's rate; a promise only when the process must ask Redis for tokens. */
  function limit (sourceId: string, count: number): void | Promise<void> {
    const wait = app.rateLimiter.take(sourceId, count)
    if (typeof wait === 'number') return refuseOver(wait)
    return wait.then(refuseOver)
  }

  function refuseOver (wait: number): void {
    if (wait > 0) throw new IngestHttpError(429, `rate limit of ${config.RATE_LIMIT_EVENTS_PER_SECOND} messages a second for this source exceeded; retry after ${wait} s`, { 'retry-after': String(wait) })
  }

  function tooLargeError (bytes: number): string {
    return `message is ${bytes} bytes; the limit is ${config.MAX_MESSAGE_BYTES} bytes a message`
  }

  /** Counts one rejected single message; the answer does not wait for the count. */
  function countRejected (request: Submission['request']): void {
    app.ingestBuffer.submit({ request, body: NO_BYTES, valid: 0, ids: [], indexes: [], rejected: 1 }).catch(() => {})
  }

  // A prefix of its own per request: the ids it gives are new by construction, never checked for
  // repeats. A random one per process and a count (a random UUID per request cost more).
  const processPrefix = `relay-${randomUUID()}-`
  let requestCount = 0

  /** `named`: every message has its own id; the others need the request's prefix. */
  function storedRequest (sourceId: string, named: boolean, pathType?: MessageType): Submission['request'] {
    return { sourceId, receivedAt: Date.now(), pathType, idPrefix: named ? undefined : processPrefix + (requestCount++).toString(36) }
  }

  async function single (request: FastifyRequest, reply: FastifyReply, pathType: MessageType) {
    const body = request.body
    if (!isPlainObject(body)) throw new IngestHttpError(400, 'the body must be a JSON object (one message)')
    const source = sourceFor(request, body, [])
    const sourceId = typeof source === 'string' ? source : await source
    const limited = limit(sourceId, 1)
    if (limited !== undefined) await limited
    const checked = request.suspectKeys === true && prototypeKeyIn(body) ? { ok: false as const, error: PROTOTYPE_KEY_ERROR } : checkMessage(body, pathType)
    const stored = storedRequest(sourceId, checked.messageId !== undefined, pathType)
    if (!checked.ok) {
      countRejected(stored)
      throw new IngestHttpError(400, checked.error)
    }
    const bytes = request.bodyBytes!
    if (bytes.length > config.MAX_MESSAGE_BYTES) {
      // Counted as rejected, like an oversized message inside a batch.
      countRejected(stored)
      throw new IngestHttpError(413, tooLargeError(bytes.length))
    }
    const ids = checked.messageId === undefined ? [] : [checked.messageId]
    const submission: Submission = { request: stored, body: bytes, valid: 1, ids, indexes: ids.map(() => 0), rejected: 0, partition: partitionOf(partitionKey(messageIds(body)) ?? stored.idPrefix!, partitions) }
    const active = suppressing(sourceId)
    if (typeof active === 'boolean' ? active : await active) submission.subjects = [[0, idString(body.userId), idString(body.anonymousId)]]
    await app.ingestBuffer.submit(submission)
    return reply.send({ success: true })
  }

  async function batch (request: FastifyRequest, reply: FastifyReply) {
    const body = request.body
    if (!isPlainObject(body)) throw new IngestHttpError(400, 'the body must be a JSON object with a batch array')
    const items = body.batch
    if (!Array.isArray(items)) throw new IngestHttpError(400, 'batch must be an array of messages')
    if (items.length > config.MAX_BATCH_MESSAGES) throw new IngestHttpError(400, `batch has ${items.length} messages; the limit is ${config.MAX_BATCH_MESSAGES}`)
    const source = sourceFor(request, body, items)
    const sourceId = typeof source === 'string' ? source : await source
    await limit(sourceId, Math.max(1, items.length))

    // A batch's sentAt that is not a time (or is out of range) is ignored, as a message's is.
    for (const field of ['context', 'integrations'] as const) {
      if (body[field] !== undefined && body[field] !== null && !isPlainObject(body[field])) throw new IngestHttpError(400, `${field} must be an object`)
    }
    // The batch's context and integrations are merged into every message: bounded like one.
    const envelope = { context: body.context, integrations: body.integrations }
    const envelopeShape = shapeError(envelope)
    if (envelopeShape !== undefined) throw new IngestHttpError(400, `the batch's context and integrations: ${envelopeShape.replace(/^message /, '')}`)
    // Outside its messages (whose own are rejected one by one), a batch with one is refused whole.
    if (request.suspectKeys === true && prototypeKeyIn({ ...body, batch: null })) throw new IngestHttpError(400, `the batch, outside its messages, has a ${PROTOTYPE_KEY_ERROR}`)
    const active = suppressing(sourceId)
    const text = request.bodyText!
    const { submission, rejected } = checkBatch(sourceId, text, request.bodyBytes!, items, request.suspectKeys === true, typeof active === 'boolean' ? active : await active)
    // The messages' places in the text, found once for all the parts (only for a batch that is split).
    let spans: Array<[number, number]> | null | undefined
    const parts = splitByPartition(submission, partitions, (index) => messageIds(items[index]), (positions) => partBody(body, text, items, positions, (spans ??= batchItemSpans(text) ?? null)))
    // Only the bytes are stored: the parsed messages and the text can go before the wait for
    // Redis (kept, they would survive young-generation collections by the thousand under load).
    request.body = undefined
    request.bodyText = undefined
    await app.ingestBuffer.submitParts(parts)
    return reply.send(rejected.length > 0 ? { success: true, rejected } : { success: true })
  }

  /** Checks every message of a batch: what to store, and what is rejected, with why. */
  function checkBatch (sourceId: string, text: string, bytes: Buffer, items: unknown[], suspectKeys: boolean, withSubjects: boolean) {
    const sizes = messageSizes(text, bytes.length, items)
    const rejected: Array<{ index: number, messageId?: string, error: string }> = []
    const ids: string[] = []
    const indexes: number[] = []
    const subjects: Submission['subjects'] = withSubjects ? [] : undefined
    items.forEach((item, index) => {
      const checked = checkMessage(item)
      if (checked.ok && suspectKeys && prototypeKeyIn(item)) {
        rejected.push({ index, messageId: checked.messageId, error: PROTOTYPE_KEY_ERROR })
      } else if (!checked.ok) {
        rejected.push({ index, messageId: checked.messageId, error: checked.error })
      } else if (sizes !== undefined && sizes(index) > config.MAX_MESSAGE_BYTES) {
        rejected.push({ index, messageId: checked.messageId, error: tooLargeError(sizes(index)) })
      } else {
        if (checked.messageId !== undefined) {
          ids.push(checked.messageId)
          indexes.push(index)
        }
        if (subjects !== undefined) subjects.push([index, idString((item as Record<string, unknown>).userId), idString((item as Record<string, unknown>).anonymousId)])
      }
    })
    const valid = items.length - rejected.length
    const stored = storedRequest(sourceId, ids.length === valid)
    if (rejected.length > 0) stored.skip = rejected.map((r) => r.index)
    const submission: Submission = { request: stored, body: bytes, valid, ids, indexes, rejected: rejected.length }
    if (subjects !== undefined) submission.subjects = subjects
    return { submission, rejected }
  }

  /** A valid message's ids that decide its partition (src/ingest-partitions.ts), as the worker reads them. */
  function messageIds (item: unknown): PartitionIds {
    const message = item as Record<string, unknown>
    return { anonymousId: idString(message.anonymousId), userId: idString(message.userId), messageId: idString(message.messageId) }
  }

  /**
   * The body of a batch's part that goes to one ingest partition: its messages as sent (their text
   * cut from the body's), in a batch with the request's sentAt, context and integrations.
   */
  function partBody (body: Record<string, unknown>, text: string, items: unknown[], positions: number[], spans: Array<[number, number]> | null): Buffer {
    const messages = spans === null || spans.length !== items.length
      // A body spelt unusually (an escaped "batch" key): its parsed messages, serialised again.
      ? positions.map((index) => JSON.stringify(items[index]))
      : positions.map((index) => text.slice(spans[index][0], spans[index][1]))
    let envelope = ''
    for (const field of ['sentAt', 'context', 'integrations'] as const) {
      if (body[field] !== undefined) envelope += `,${JSON.stringify(field)}:${JSON.stringify(body[field])}`
    }
    return Buffer.from(`{"batch":[${messages.join(',')}]${envelope}}`)
  }

  /**
   * Each message's size in bytes as sent, or `undefined` when no message can be over the limit.
   * Measured on the body's text: serialising every parsed message again would cost as much as
   * the parse.
   */
  function messageSizes (text: string, bytes: number, items: unknown[]): ((index: number) => number) | undefined {
    const limit = config.MAX_MESSAGE_BYTES
    if (bytes <= limit) return undefined
    // No message is over the limit when the others leave it no room: a message has at most the
    // body's bytes less the others' (lower bounds of) bytes. The walk stops once that is shown.
    let all = 0
    let largest = 0
    for (const item of items) {
      const minimum = minimumJsonBytes(item)
      all += minimum
      if (minimum > largest) largest = minimum
      if (bytes - (all - largest) <= limit) return undefined
    }
    const spans = batchItemSpans(text)
    if (spans === undefined || spans.length !== items.length) {
      // A body spelt unusually (an escaped "batch" key): measure the parsed messages.
      return (index) => Buffer.byteLength(JSON.stringify(items[index]) ?? '')
    }
    return (index) => {
      const [start, end] = spans[index]
      // UTF-8 takes at most 3 bytes per UTF-16 unit: most messages need no byte count.
      return (end - start) * 3 <= limit ? end - start : Buffer.byteLength(text.slice(start, end))
    }
  }

  const noValidation = () => () => true
  const requestLogger = lazyRequestLogger('warn')
  const security = [{ writeKey: [] }]

  for (const [segment, type] of Object.entries(PATH_TYPES)) {
    const short = segment.length === 1
    app.post(`/v1/${segment}`, {
      schema: {
        tags: ['ingestion'],
        summary: short ? `${type} (analytics.js 2.0 short path)` : `Send one ${type} message`,
        security,
        body: Message,
        response: responses
      },
      validatorCompiler: noValidation,
      childLoggerFactory: requestLogger
    }, (request, reply) => single(request, reply, type))
    app.options(`/v1/${segment}`, { schema: { hide: true } }, corsPreflight)
  }
  for (const path of ['/v1/batch', '/v1/b', '/v1/import']) {
    app.post(path, {
      schema: {
        tags: ['ingestion'],
        summary: path === '/v1/batch' ? 'Send a batch of messages (server libraries)' : `Send a batch of messages (${path === '/v1/b' ? 'mobile and browser batching' : 'Ruby, Java'})`,
        security,
        body: Batch,
        response: responses
      },
      validatorCompiler: noValidation,
      childLoggerFactory: requestLogger
    }, batch)
    app.options(path, { schema: { hide: true } }, corsPreflight)
  }
}

/** A browser's preflight (its answer has the allow-origin header from the hook). */
async function corsPreflight (request: FastifyRequest, reply: FastifyReply) {
  const requested = request.headers['access-control-request-headers']
  reply.headers({
    'access-control-allow-methods': 'POST, OPTIONS',
    'access-control-allow-headers': requested ?? 'authorization, content-type, content-encoding',
    'access-control-max-age': '86400'
  })
  return reply.code(204).send()
}

export default ingest
