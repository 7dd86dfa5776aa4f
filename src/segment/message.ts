import { randomUUID } from 'node:crypto'
import { DateTime } from 'luxon'
import type { MessageType, SegmentMessage } from './types.js'

export const MESSAGE_TYPES: readonly MessageType[] = ['track', 'identify', 'page', 'screen', 'group', 'alias']

/** Path segment → message type: the long forms and analytics.js 2.0's one-letter forms. */
export const PATH_TYPES: Readonly<Record<string, MessageType>> = {
  track: 'track',
  identify: 'identify',
  page: 'page',
  screen: 'screen',
  group: 'group',
  alias: 'alias',
  t: 'track',
  i: 'identify',
  p: 'page',
  s: 'screen',
  g: 'group',
  a: 'alias'
}

const MAX_MESSAGE_ID_LENGTH = 100
// User, anonymous, previous and group ids name profiles (and so Redis keys): bounded.
export const MAX_ID_LENGTH = 1024
// What the worker can process: JSON.stringify (the profile's traits, a conversion's custom_data)
// recurses once a level and overflows the stack near 5,000; nothing a client means is that deep.
export const MAX_DEPTH = 64
export const MAX_KEYS = 10_000
const OBJECT_FIELDS = ['properties', 'traits', 'context', 'integrations'] as const
const ID_FIELDS = ['userId', 'anonymousId', 'groupId', 'previousId'] as const

export interface RequestEnvelope {
  /** The server's clock when the request arrived. */
  receivedAt: DateTime
  /** Type given by a single-message path (`/v1/track`); batch items carry their own. */
  pathType?: MessageType
  /** Batch-level `sentAt`, `context` and `integrations`, merged into every message. */
  sentAt?: DateTime
  context?: Record<string, unknown>
  integrations?: Record<string, unknown>
  /** Ids given to messages sent without one are `<idPrefix>-<index>`; else `relay-<uuid>`. */
  idPrefix?: string
}

export type Prepared =
  | { ok: true, message: SegmentMessage }
  | { ok: false, error: string, messageId?: string }

export function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Parses a client's ISO-8601 time; `undefined` when absent, `null` when not a time the service
 * takes (see parseTimeMs).
 */
export function parseTime (value: unknown): DateTime | undefined | null {
  const ms = parseTimeMs(value)
  return ms === undefined || ms === null ? ms : DateTime.fromMillis(ms, { zone: 'utc' })
}

// What every official client sends (`2024-05-01T12:00:00.000Z`, or with an offset): Date.parse
// reads it exactly and ten times faster than luxon. Every other ISO-8601 form goes to luxon.
const CANONICAL_ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2})$/
// The longest ISO-8601 date-time worth parsing (`+002024-05-01T12:00:00.123456789+05:30` is 38).
const MAX_TIME_LENGTH = 64
// Client clocks are believed between these (the years 1970 to 2100): a time outside is a broken
// clock, and one far enough out (`+275760-09-13`) is past what a JavaScript Date can hold once
// corrected for skew.
const EARLIEST_TIME_MS = Date.UTC(1970, 0, 1)
const LATEST_TIME_MS = Date.UTC(2101, 0, 1) - 1

/**
 * A client's ISO-8601 time in ms; `undefined` when absent, `null` when it is not a date-time or
 * lies outside the years 1970 to 2100.
 */
export function parseTimeMs (value: unknown): number | undefined | null {
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string' || value.length > MAX_TIME_LENGTH) return null
  let ms = CANONICAL_ISO.test(value) ? Date.parse(value) : Number.NaN
  if (Number.isNaN(ms)) {
    const time = DateTime.fromISO(value, { zone: 'utc' })
    if (!time.isValid) return null
    ms = time.toMillis()
  }
  return ms >= EARLIEST_TIME_MS && ms <= LATEST_TIME_MS ? ms : null
}

function iso (ms: number): string {
  return new Date(ms).toISOString()
}

// A client time already in the stored form (UTC, milliseconds) is kept as sent: no reformatting.
const STORED_FORM = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

// The request's receivedAt (and batch sentAt), formatted once for all its messages.
const formattedReceivedAt = new WeakMap<DateTime, string>()
function isoOfReceived (receivedAt: DateTime): string {
  let formatted = formattedReceivedAt.get(receivedAt)
  if (formatted === undefined) formattedReceivedAt.set(receivedAt, (formatted = iso(receivedAt.toMillis())))
  return formatted
}

function fail (error: string, raw: Record<string, unknown>): { ok: false, error: string, messageId?: string } {
  const messageId = typeof raw.messageId === 'string' ? raw.messageId.slice(0, MAX_MESSAGE_ID_LENGTH) : undefined
  return { ok: false, error, messageId }
}

export type Checked =
  | { ok: true, type: MessageType, messageId?: string, clientTime?: number, ownSentAt?: number, badSentAt?: boolean }
  | { ok: false, error: string, messageId?: string }

/**
 * Validates one message as Segment's API does, without changing it. `messageId` is the client's
 * id (absent when the server must give one); the times are the client's, parsed. Errors name the
 * field and the rule.
 */
export function checkMessage (raw: unknown, pathType?: MessageType): Checked {
  if (!isPlainObject(raw)) return { ok: false, error: 'message must be a JSON object' }

  let type = pathType
  if (raw.type !== undefined) {
    if (typeof raw.type !== 'string' || !MESSAGE_TYPES.includes(raw.type as MessageType)) {
      return fail(`type must be one of ${MESSAGE_TYPES.join(', ')}`, raw)
    }
    if (type !== undefined && raw.type !== type) return fail(`type "${raw.type}" does not match the path's type "${type}"`, raw)
    type = raw.type as MessageType
  }
  if (type === undefined) return fail(`type is required in a batch (one of ${MESSAGE_TYPES.join(', ')})`, raw)

  for (const field of ID_FIELDS) {
    const value = raw[field]
    if (value !== undefined && value !== null && !(typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value)))) {
      return fail(`${field} must be a string`, raw)
    }
    if (typeof value === 'string' && value.length > MAX_ID_LENGTH) return fail(`${field} must be at most ${MAX_ID_LENGTH} characters`, raw)
  }
  if (type === 'alias') {
    if (idString(raw.userId) === undefined) return fail('userId is required for alias', raw)
    if (idString(raw.previousId) === undefined) return fail('previousId is required for alias', raw)
  } else if (idString(raw.userId) === undefined && idString(raw.anonymousId) === undefined) {
    return fail('userId or anonymousId is required', raw)
  }
  if (type === 'track' && (typeof raw.event !== 'string' || raw.event.trim() === '')) {
    return fail('event is required for track and must be a non-empty string', raw)
  }
  if (type === 'group' && idString(raw.groupId) === undefined) return fail('groupId is required for group', raw)

  let messageId: string | undefined
  if (raw.messageId === undefined || raw.messageId === null || raw.messageId === '') {
    messageId = undefined
  } else if (typeof raw.messageId !== 'string') {
    return fail('messageId must be a string', raw)
  } else if (raw.messageId.length > MAX_MESSAGE_ID_LENGTH) {
    return fail(`messageId must be at most ${MAX_MESSAGE_ID_LENGTH} characters`, raw)
  } else {
    messageId = raw.messageId
  }

  for (const field of OBJECT_FIELDS) {
    const value = raw[field]
    if (value !== undefined && value !== null && !isPlainObject(value)) return fail(`${field} must be an object`, raw)
  }
  const shape = shapeError(raw)
  if (shape !== undefined) return fail(shape, raw)
  for (const field of ['name', 'category'] as const) {
    if (raw[field] !== undefined && raw[field] !== null && typeof raw[field] !== 'string') return fail(`${field} must be a string`, raw)
  }

  // A broken client clock must not cost the event: a time that is not one, or is out of range, is
  // ignored as if absent (the corrected time falls back to receivedAt).
  const clientTime = parseTimeMs(raw.timestamp) ?? undefined
  const sentAt = parseTimeMs(raw.sentAt)
  return { ok: true, type, messageId, clientTime, ownSentAt: sentAt ?? undefined, badSentAt: sentAt === null }
}

/**
 * Validates one message (checkMessage) and sets the server fields, as Segment's API does:
 * `messageId` when absent, `receivedAt`, `originalTimestamp` (the client's `timestamp`) and
 * `timestamp = receivedAt − (sentAt − originalTimestamp)`, which corrects a skewed client clock.
 * An accepted message is `raw` itself, completed: the caller hands the parsed message over.
 * `index` is the message's place in its request: with `envelope.idPrefix` it names the id given
 * to a message sent without one.
 */
export function prepareMessage (raw: unknown, envelope: RequestEnvelope, index = 0): Prepared {
  const checked = checkMessage(raw, envelope.pathType)
  if (!checked.ok) return checked
  const { type, clientTime, ownSentAt } = checked
  // The parsed message becomes the stored one: copying it (`{ ...raw }`) cost more than the
  // validation and the parse together, on the API's hottest path.
  const message = raw as SegmentMessage
  const userId = idString(message.userId)
  const anonymousId = idString(message.anonymousId)

  // The browser puts sentAt on each message; server libraries put it on the batch.
  const sentAt = ownSentAt ?? envelope.sentAt?.toMillis()
  const receivedAt = envelope.receivedAt.toMillis()
  const originalTimestamp = clientTime ?? receivedAt
  // Segment's clock-skew correction, in ms: timestamp = receivedAt − (sentAt − originalTimestamp).
  const timestamp = clientTime !== undefined && sentAt !== undefined
    ? receivedAt - (sentAt - clientTime)
    : originalTimestamp

  const receivedIso = isoOfReceived(envelope.receivedAt)
  const originalIso = clientTime === undefined
    ? receivedIso
    : STORED_FORM.test(message.timestamp) ? message.timestamp : iso(clientTime)
  message.type = type
  message.messageId = checked.messageId ?? (envelope.idPrefix !== undefined ? `${envelope.idPrefix}-${index}` : `relay-${randomUUID()}`)
  message.timestamp = timestamp === originalTimestamp ? originalIso : timestamp === receivedAt ? receivedIso : iso(timestamp)
  message.originalTimestamp = originalIso
  message.receivedAt = receivedIso
  // The write key authenticates the request; it is not part of the message we keep. (`delete`
  // only when present: it turns the object into a slow dictionary for JSON.stringify.)
  if ('writeKey' in message) delete message.writeKey
  // A blank or null id counts as absent (above) and is stored as absent: kept as '', a stage
  // keying profiles by `userId ?? anonymousId` would file every such message under user ''.
  if (userId !== undefined) message.userId = userId
  else if ('userId' in message) delete message.userId
  if (anonymousId !== undefined) message.anonymousId = anonymousId
  else if ('anonymousId' in message) delete message.anonymousId
  if (type === 'group') message.groupId = idString(message.groupId)
  if (type === 'alias') message.previousId = idString(message.previousId)
  if (sentAt !== undefined) message.sentAt = ownSentAt === undefined ? isoOfReceived(envelope.sentAt!) : iso(sentAt)
  else if (checked.badSentAt === true) delete message.sentAt
  if (envelope.context !== undefined) message.context = { ...envelope.context, ...message.context }
  if (envelope.integrations !== undefined) message.integrations = { ...envelope.integrations, ...message.integrations }
  return { ok: true, message }
}

/**
 * Whether a message is deeper than MAX_DEPTH levels (the message itself is the first) or has
 * more than MAX_KEYS keys in all; undefined when it is within both. A walk that goes no deeper
 * than the bound, so it cannot overflow the stack itself: on a batch of 100 messages (38 KB) it
 * costs ~13 µs against ~150 µs for JSON.parse and ~42 µs for a scan of the text that skips strings.
 */
export function shapeError (message: Record<string, unknown>): string | undefined {
  const keys = { count: 0 }
  const depth = deepest(message, 1, keys)
  if (depth > MAX_DEPTH) return `message is nested deeper than ${MAX_DEPTH} levels`
  if (keys.count > MAX_KEYS) return `message has more than ${MAX_KEYS} keys in all`
  return undefined
}

/** The depth of `value` at `level`, stopping once past MAX_DEPTH or MAX_KEYS. */
function deepest (value: object, level: number, keys: { count: number }): number {
  if (level > MAX_DEPTH) return level
  let max = level
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      if (typeof item === 'object' && item !== null) {
        const depth = deepest(item, level + 1, keys)
        if (depth > max && (max = depth) > MAX_DEPTH) return max
      }
    }
    return max
  }
  for (const key in value) {
    if (++keys.count > MAX_KEYS) return max
    const item: unknown = (value as Record<string, unknown>)[key]
    if (typeof item === 'object' && item !== null) {
      const depth = deepest(item, level + 1, keys)
      if (depth > max && (max = depth) > MAX_DEPTH) return max
    }
  }
  return max
}

/** Segment ids are strings; some clients send numbers. Blank means absent. */
export function idString (value: unknown): string | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  if (typeof value === 'string' && value.trim() !== '') return value
  return undefined
}
