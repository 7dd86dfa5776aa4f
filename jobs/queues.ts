import type { JobsOptions } from 'bullmq'
import type { GraphOutcome } from '../src/facebook/graph-response.js'
import type { FacebookSettings } from '../src/facebook/settings.js'
import { DateTime } from 'luxon'
import { isPlainObject, parseTime, prepareMessage, type RequestEnvelope } from '../src/segment/message.js'
import type { MessageType, SegmentMessage } from '../src/segment/types.js'
import { faultInjection } from './isolation.js'

/**
 * A request as the API stores it: what the API decided, its body as received (after
 * decompression) being a field of the job's `bodies` hash. The worker parses the body again and
 * sets the server fields (prepareMessage), which costs it less than the API would pay to
 * serialise every message once more; and a body kept apart is written as it is (inside the job's
 * JSON it was escaped).
 */
export interface StoredRequest {
  sourceId: string
  /** The server's clock when the request arrived, in ms. */
  receivedAt: number
  /** Given by a single-message path (`/v1/track`): the body is one message. */
  pathType?: MessageType
  /**
   * Messages sent without an id get `<idPrefix>-<index>`. Absent when every message has one
   * (nearly always: Segment's libraries send ids), which spares the job the text.
   */
  idPrefix?: string
  /** Its body's field in the job's `bodies` hash. */
  body?: number
  /** Where its body is, in jobs stored by earlier builds (a string key of its own). */
  bodyKey?: string
  /**
   * A part of a batch whose messages went to several ingest partitions: its body holds only this
   * partition's messages, and `positions[k]` is message k's index in the batch as sent (the id a
   * message without one is given follows it). Absent: the body is the request as sent. `skip`
   * and `checked` count in the part's own order.
   */
  positions?: number[]
  /** Indexes in `batch` not to process: rejected, or repeats of an id earlier in the same flush. */
  skip?: number[]
  /**
   * The messages whose client-given ids went through the duplicate check, by index: the answer
   * for `indexes[k]` is character `at + k` of the job's `dedupAnswer` ('1': seen, '2': its subject
   * is suppressed — neither is processed).
   */
  checked?: { at: number, indexes: number[] }
}

/**
 * How long a stored body outlives its request while its job waits: a queue left unprocessed for
 * a month loses them. A job that fails for good shortens it to FAILED_BODY_RETENTION from then.
 */
export const INGEST_BODY_TTL_MS = 30 * 24 * 3600 * 1000

/**
 * One ingest job carries many requests (group commit): per-message jobs cap near 7–12k/s.
 * `messages` are prepared messages, `[sourceId, message]`, as the audience engine emits them.
 */
export interface IngestJobData {
  requests?: StoredRequest[]
  /**
   * The requests' bodies as received: one hash for the job (RedisKeys.ingestBodies), written
   * with one command however many requests share the flush; removed once the job is processed.
   */
  bodies?: string
  /**
   * Where the duplicate check wrote its answer: in the same script as the job, so the API
   * stores a flush in one round trip without knowing the answer first (RedisKeys.ingestDedupAnswer).
   */
  dedupAnswer?: string
  messages?: Array<[string, SegmentMessage]>
}

/**
 * The messages of an ingest job, in order, as `[sourceId, message]`. `bodies` are the texts of
 * `data.requests`, in order (null: the body is gone — an error); `dedupAnswer` the text under
 * `data.dedupAnswer` (missing: the check did not run, and no message is taken for a duplicate).
 * A body or message that cannot be read (the API accepted it, so a build whose rules differ, or a
 * bug) goes to `onUnprocessable` and the others are read; without it, the read throws.
 */
export function jobMessages (
  data: IngestJobData,
  bodies: Array<string | null> = [],
  dedupAnswer?: string | null,
  onUnprocessable?: (sourceId: string, error: unknown, messageId?: string) => void
): Array<[string, SegmentMessage]> {
  const out: Array<[string, SegmentMessage]> = data.messages ?? []
  const setAside = onUnprocessable ?? ((_sourceId: string, error: unknown) => { throw error })
  for (const [r, request] of (data.requests ?? []).entries()) {
    const text = bodies[r]
    if (text === null || text === undefined) throw new Error(`the body of stored request ${r} (${request.bodyKey ?? `${data.bodies} field ${request.body}`}) is missing`)
    let body: Record<string, unknown>
    try {
      body = JSON.parse(text)
    } catch (error) {
      setAside(request.sourceId, error)
      continue
    }
    // A batch body that parses to something other than an object (`null` above all: reading its
    // `batch` threw outside any guard and failed the whole job, every time it was retried). The
    // API refuses one; stored by a build with other rules, or a bug, it is set aside as a body
    // that does not parse is.
    if (request.pathType === undefined && !isPlainObject(body)) {
      setAside(request.sourceId, new TypeError(`the body of stored request ${r} is not a JSON object (a batch)`))
      continue
    }
    const envelope: RequestEnvelope = { receivedAt: DateTime.fromMillis(request.receivedAt, { zone: 'utc' }), pathType: request.pathType, idPrefix: request.idPrefix }
    let items: unknown[] = [body]
    if (request.pathType === undefined) {
      items = Array.isArray(body.batch) ? body.batch : []
      envelope.sentAt = parseTime(body.sentAt) ?? undefined
      if (isPlainObject(body.context)) envelope.context = body.context
      if (isPlainObject(body.integrations)) envelope.integrations = body.integrations
    }
    const skip = new Set(request.skip)
    if (request.checked !== undefined && typeof dedupAnswer === 'string') {
      const { at, indexes } = request.checked
      // '1': seen before; '2': its subject is suppressed. Either way, not processed.
      for (let k = 0; k < indexes.length; k++) {
        const answer = dedupAnswer.charCodeAt(at + k)
        if (answer === SEEN || answer === SUPPRESSED) skip.add(indexes[k])
      }
    }
    items.forEach((item, index) => {
      if (skip.has(index)) return
      try {
        faultInjection.at?.('prepare', isPlainObject(item) ? item : {})
        // The API accepted it: the same checks pass again (a failure is a bug, or a build whose
        // rules differ from the API's that accepted it).
        const prepared = prepareMessage(item, envelope, request.positions?.[index] ?? index)
        if (!prepared.ok) throw new Error(`stored message ${index} no longer passes: ${prepared.error}`)
        out.push([request.sourceId, prepared.message])
      } catch (error) {
        const messageId = isPlainObject(item) && typeof item.messageId === 'string' ? item.messageId : undefined
        setAside(request.sourceId, error, messageId)
      }
    })
  }
  return out
}

const SEEN = 0x31 // '1'
const SUPPRESSED = 0x32 // '2'

/**
 * An ingest job's options (INGEST_ATTEMPTS, INGEST_BACKOFF_MS). `failedRetentionMs`: how long a
 * job that failed every attempt is kept (with its bodies, for a replay: FAILED_BODY_RETENTION).
 */
export function ingestJobOptions (options: { failedRetentionMs: number, attempts: number, backoffMs: number }): JobsOptions {
  return {
    // Queued messages carry raw traits: a finished job keeps nothing.
    removeOnComplete: true,
    removeOnFail: { age: Math.ceil(options.failedRetentionMs / 1000), count: 10_000 },
    attempts: options.attempts,
    backoff: { type: 'exponential', delay: options.backoffMs }
  }
}

/** The keys an ingest job's bodies live under (its bodies hash and duplicate answer, or a key per body). */
export function bodyKeysOf (data: IngestJobData): string[] {
  const keys: string[] = []
  if (data.bodies !== undefined) keys.push(data.bodies)
  else for (const request of data.requests ?? []) if (request.bodyKey !== undefined) keys.push(request.bodyKey)
  if (data.dedupAnswer !== undefined) keys.push(data.dedupAnswer)
  return keys
}

export const DELIVER_QUEUE = 'deliver'

/** One conversion of a deliver job: the event exactly as it goes into the request's `data`. */
export interface QueuedConversion {
  eventId: string
  eventName: string
  eventTime: number
  /**
   * As JSON: serialised once, when routed, and written into the request as it is. (Jobs queued
   * by earlier builds, and dead letters sent again, hold the object.)
   */
  payload: string | Record<string, unknown>
}

export function payloadJson (conversion: QueuedConversion): string {
  return typeof conversion.payload === 'string' ? conversion.payload : JSON.stringify(conversion.payload)
}

export function payloadObject (conversion: QueuedConversion): Record<string, unknown> {
  return typeof conversion.payload === 'string' ? JSON.parse(conversion.payload) : conversion.payload
}

/** One request's worth of conversions for one destination and dataset. */
export interface DeliverJobData {
  destinationId: string
  datasetId: string
  /**
   * The format the payloads were written in. It decides the Graph version, so conversions queued
   * before `apiFormat` changes still go where Meta takes them. Absent on jobs queued by older
   * builds: the destination's current setting.
   */
  apiFormat?: FacebookSettings['apiFormat']
  conversions: QueuedConversion[]
  /** Meta's answer to the request's first attempt, made when it was routed (jobs/deliver.ts deliverNow). */
  firstAttempt?: FirstAttempt
  /** When it was first held (for a token, or an expired Graph version), in ms on the app's clock. */
  heldSince?: number
}

export interface FirstAttempt {
  outcome: GraphOutcome
  /** A digest of the token the request carried (the token itself is never in a job). */
  token: string
}
