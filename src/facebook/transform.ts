// Segment track → Meta offline conversions (spec/facebook.md). Pure: a message, the destination's
// settings and the clock in; conversions, or the reason a conversion may not be sent, out.
// One canonical reading of the message, then one of two serializers: the Conversions API
// (`action_source: physical_store`) or the legacy offline conversions payload.
import { Duration } from 'luxon'
import { parseDecimal } from '../decimal.js'
import { destinationOptions } from '../segment/integrations.js'
import type { SegmentMessage } from '../segment/types.js'
import {
  fillMatchKeys,
  hashedExternalId,
  hashedTraitKeys,
  hasNoMatchKey,
  isTooWeak,
  mergeMatchKeys,
  type MatchKeys
} from './match-keys.js'
import { DESTINATION_NAME, type FacebookSettings } from './settings.js'
import { isMatchKeyTrait } from './trait-spellings.js'

export type InvalidReason =
  | 'no_match_key'
  | 'weak_match_keys'
  | 'event_too_old'
  | 'event_in_future'
  | 'missing_value'
  | 'invalid_value'
  | 'invalid_currency'
  | 'invalid_data_processing_options'
  // not the transform's: a message the worker could not process at all (jobs/isolation.ts)
  | 'unprocessable'

export interface Conversion {
  datasetId: string
  /** `event_name` as sent (per `apiFormat`) */
  eventName: string
  /** `event_time`: whole Unix seconds */
  eventTime: number
  /** the message's `messageId`: the same on every retry */
  eventId: string
  /**
   * the event object exactly as it goes into the request's `data`, per `apiFormat`. Read-only:
   * the conversions of one message share parts (user_data, content_ids) with each other and
   * with the profile keys passed in
   */
  payload: Record<string, unknown>
}

export type TransformResult =
  /** `droppedPii`: properties of the message kept out of custom_data as PII (spellings of match keys) */
  | { kind: 'conversion', conversion: Conversion, droppedPii: number }
  | { kind: 'invalid', datasetId: string, eventName: string, reason: InvalidReason, message: string }

export interface TransformOptions {
  /** the clock, in ms */
  now: number
  /** hashed match keys from the user's profile: they fill what the message does not carry */
  profileKeys?: MatchKeys
  /** the user's audience memberships (audience key → member), sent in custom_data */
  audienceProperties?: Record<string, boolean>
}

// Segment's semantic ecommerce events → Meta standard events (the seed's table)
const SEMANTIC_EVENTS: ReadonlyMap<string, string> = new Map([
  ['Products Searched', 'Search'],
  ['Product Viewed', 'ViewContent'],
  ['Product List Viewed', 'ViewContent'],
  ['Product Added to Wishlist', 'AddToWishlist'],
  ['Product Added', 'AddToCart'],
  ['Checkout Started', 'InitiateCheckout'],
  ['Payment Info Entered', 'AddPaymentInfo'],
  ['Order Completed', 'Purchase']
])

type EventMapSetting = 'completeRegistrationEvents' | 'leadEvents' | 'conversionEvents'

// The three maps of the seed, in the order their conversions are returned. `metaEvent`
// undefined: the semantic table above, else a custom event
const ROUTES: ReadonlyArray<{ setting: EventMapSetting, metaEvent?: string }> = [
  { setting: 'completeRegistrationEvents', metaEvent: 'CompleteRegistration' },
  { setting: 'leadEvents', metaEvent: 'Lead' },
  { setting: 'conversionEvents' }
]

const ORDER_COMPLETED = 'Order Completed'
const PRODUCT_LIST_VIEWED = 'Product List Viewed'
const PURCHASE = 'Purchase'
// the legacy API only knew an enum of event names: a custom event is sent as `Other`
const LEGACY_CUSTOM_EVENT = 'Other'
const ACTION_SOURCE = 'physical_store'
const DEFAULT_CURRENCY = 'USD'

// Properties that become Meta fields, so custom_data does not repeat them (spec: custom_data);
// `category` is left out only when it became the content_ids of Product List Viewed
const MAPPED_PROPERTIES: ReadonlySet<string> = new Set([
  'currency', 'value', 'price', 'revenue', 'total', 'products', 'product_id', 'order_id'
])

// ISO 4217 codes in use, from ICU (Node ships full ICU)
const CURRENCIES: ReadonlySet<string> = new Set(Intl.supportedValuesOf('currency'))

// Match keys → Conversions API `user_data` keys (external_id is hashed on the way, see below)
const CAPI_USER_DATA_KEYS: ReadonlyArray<readonly [keyof MatchKeys, string]> = [
  ['em', 'em'], ['ph', 'ph'], ['ge', 'ge'], ['db', 'db'], ['fn', 'fn'], ['ln', 'ln'], ['ct', 'ct'],
  ['st', 'st'], ['zp', 'zp'], ['country', 'country'], ['lead_id', 'lead_id']
]
// Match keys → legacy `match_keys` names (Meta's uploader schema)
const LEGACY_MATCH_KEYS: ReadonlyArray<readonly [keyof MatchKeys, string]> = [
  ['em', 'email'], ['ph', 'phone'], ['ge', 'gen'], ['fn', 'fn'], ['ln', 'ln'], ['ct', 'ct'],
  ['st', 'st'], ['zp', 'zip'], ['country', 'country'], ['doby', 'doby'], ['dobm', 'dobm'],
  ['dobd', 'dobd'], ['external_id', 'extern_id'], ['lead_id', 'lead_id']
]

// spec: events older than 62 days (Meta: physical_store uploads within 62 days) or more than
// 10 minutes ahead of our clock are rejected locally
const MAX_AGE_MS = Duration.fromObject({ days: 62 }).toMillis()
const MAX_AHEAD_MS = Duration.fromObject({ minutes: 10 }).toMillis()

// value states besides a real value (which is always ≥ 0)
const NO_VALUE = -1
const BAD_VALUE = -2
const LEAD_ID = /^(?:l:)?(\d+)$/

interface Rejection { reason: InvalidReason, message: string }

interface DataProcessing { options: string[], country?: number, state?: number }

/**
 * Whether an event time (Unix seconds) may still be sent at `nowMs`. Checked when the track is
 * transformed and again at every send: events held back (rate limits, a revoked token) age out.
 */
export function checkEventTime (eventTime: number, nowMs: number): InvalidReason | undefined {
  const eventMs = eventTime * 1000
  if (eventMs < nowMs - MAX_AGE_MS) return 'event_too_old'
  if (eventMs > nowMs + MAX_AHEAD_MS) return 'event_in_future'
  return undefined
}

function timeRejection (eventTime: number, now: number): Rejection | undefined {
  const reason = checkEventTime(eventTime, now)
  if (reason === undefined) return undefined
  const at = new Date(eventTime * 1000).toISOString()
  return reason === 'event_too_old'
    ? { reason, message: `event_time ${at} is more than 62 days old: Meta no longer takes offline events that old` }
    : { reason, message: `event_time ${at} is more than 10 minutes in the future` }
}

/** `event_time`: the (skew-corrected) timestamp in whole Unix seconds, rounded down. */
function eventTimeOf (timestamp: unknown, fallback: unknown, now: number): number {
  // Date.parse rather than luxon here: the ingest API wrote these ISO-8601 strings itself, and
  // this runs for every event (luxon's parser costs several microseconds)
  let ms = typeof timestamp === 'string' ? Date.parse(timestamp) : Number.NaN
  if (Number.isNaN(ms)) ms = typeof fallback === 'string' ? Date.parse(fallback) : Number.NaN
  if (Number.isNaN(ms)) ms = now
  return Math.floor(ms / 1000)
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** `map[event]` when it is the map's own entry (`constructor` is not an event name to map). */
function datasetFor (map: Record<string, string>, event: string): string | undefined {
  return Object.hasOwn(map, event) ? map[event] : undefined
}

/** A number ≥ 0 from a number or a numeric string; NO_VALUE when absent, BAD_VALUE otherwise. */
function readValue (raw: unknown): number {
  if (raw === undefined || raw === null) return NO_VALUE
  if (typeof raw === 'number') return Number.isFinite(raw) && raw >= 0 ? raw : BAD_VALUE
  if (typeof raw === 'string') {
    if (raw.trim() === '') return NO_VALUE
    const value = parseDecimal(raw)
    return Number.isFinite(value) && value >= 0 ? value : BAD_VALUE
  }
  return BAD_VALUE
}

/** Upper-cased ISO 4217 code, `USD` when none is given, undefined when not a known code. */
function readCurrency (raw: unknown): string | undefined {
  if (raw === undefined || raw === null || raw === '') return DEFAULT_CURRENCY
  // An ISO 4217 code, perhaps with spaces around: a longer text is none (and is not copied).
  if (typeof raw !== 'string' || raw.length > 16) return undefined
  const code = raw.trim().toUpperCase()
  return CURRENCIES.has(code) ? code : undefined
}

/** A content id: always a string (numbers as text); nothing for empty or other values. */
function contentId (raw: unknown): string | undefined {
  if (typeof raw === 'string') return raw === '' ? undefined : raw
  if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw)
  return undefined
}

function orderIdOf (raw: unknown): string | undefined {
  if (typeof raw === 'string') return raw === '' ? undefined : raw
  if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw)
  return undefined
}

/**
 * The Lead Ads id, "as given" but only when it is one: Meta takes a numeric id, not hashed, and
 * one bad event fails a whole Conversions API batch. Meta's uploader strips an `l:` prefix.
 */
function leadIdOf (context: Record<string, unknown> | undefined): string | undefined {
  const options = context?.[DESTINATION_NAME]
  if (!isRecord(options)) return undefined
  const raw = options.leadId
  if (typeof raw === 'number') return Number.isSafeInteger(raw) && raw > 0 ? String(raw) : undefined
  // Meta's lead ids are ~15–20 digits; a longer text is not one (and is not worth a look).
  if (typeof raw !== 'string' || raw.length > 64) return undefined
  const match = LEAD_ID.exec(raw.trim())
  return match === null ? undefined : match[1]
}

function userIdOf (raw: unknown): string | undefined {
  if (typeof raw === 'string') {
    const userId = raw.trim()
    return userId === '' ? undefined : userId
  }
  if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw)
  return undefined
}

const NO_DATA_PROCESSING: DataProcessing = { options: [] }
const NO_PROPERTIES: Record<string, unknown> = Object.freeze({})

/**
 * Limited Data Use options from `integrations["Facebook Offline Conversions"].dataProcessingOptions`
 * (`[options, country?, state?]`, the seed's form). Absent → LDU off for the event (`[]`);
 * undefined when malformed.
 */
function dataProcessingOf (integrations: Record<string, unknown> | undefined): DataProcessing | undefined {
  const raw = destinationOptions(integrations, DESTINATION_NAME)?.dataProcessingOptions
  if (raw === undefined || raw === null) return NO_DATA_PROCESSING
  if (!Array.isArray(raw) || raw.length < 1 || raw.length > 3) return undefined
  const options: unknown = raw[0]
  // Meta knows one option, LDU; anything else would fail the whole batch there
  if (!Array.isArray(options) || !options.every((option) => typeof option === 'string' && option.toUpperCase() === 'LDU')) {
    return undefined
  }
  // country and state default to 0: "let Meta geolocate"
  const country: unknown = raw.length > 1 ? raw[1] : 0
  const state: unknown = raw.length > 2 ? raw[2] : 0
  if (!isCode(country) || !isCode(state)) return undefined
  return { options: options.length > 0 ? ['LDU'] : [], country, state }
}

function isCode (value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0
}

const DATA_PROCESSING_RULE = `integrations["${DESTINATION_NAME}"].dataProcessingOptions must be ` +
  '[options, country?, state?]: options [] or ["LDU"], country and state integers (0 = let Meta geolocate)'

function addDataProcessing (payload: Record<string, unknown>, dataProcessing: DataProcessing | undefined): void {
  if (dataProcessing === undefined) return
  // a fresh array per event rather than one shared by every payload ever made
  payload.data_processing_options = dataProcessing.options.length === 0 ? [] : ['LDU']
  if (dataProcessing.country !== undefined) payload.data_processing_options_country = dataProcessing.country
  if (dataProcessing.state !== undefined) payload.data_processing_options_state = dataProcessing.state
}

function weakMessage (keys: MatchKeys): string {
  const present = Object.keys(keys).filter((name) => !name.startsWith('dob')).join(', ')
  return `customer information too weak for Meta (only ${present}): since Marketing API v13 a subset of ` +
    'ct+country+st+zp+ge, db, fn+ge or ln+ge is rejected; send an email, phone, userId or lead id'
}

function keysRejection (keys: MatchKeys): Rejection | undefined {
  if (hasNoMatchKey(keys)) {
    return { reason: 'no_match_key', message: 'no customer information: no userId, no match-key traits, nothing in the profile' }
  }
  if (isTooWeak(keys)) return { reason: 'weak_match_keys', message: weakMessage(keys) }
  return undefined
}

/** Conversions API `user_data`: hashed keys, `external_id` the SHA-256 of the trimmed userId. */
function capiUserData (keys: MatchKeys): Record<string, unknown> {
  const userData: Record<string, unknown> = {}
  for (const [name, field] of CAPI_USER_DATA_KEYS) {
    const value = keys[name]
    if (value !== undefined) userData[field] = value
  }
  if (keys.external_id !== undefined) userData.external_id = [hashedExternalId(keys.external_id)]
  return userData
}

/** Legacy `match_keys`: hashed keys under the uploader's names, `extern_id` as is. */
function legacyMatchKeys (keys: MatchKeys): Record<string, unknown> {
  const matchKeys: Record<string, unknown> = {}
  for (const [name, field] of LEGACY_MATCH_KEYS) {
    const value = keys[name]
    if (value !== undefined) matchKeys[field] = value
  }
  return matchKeys
}

/** What one track says, read once however many maps it is in. */
interface TrackReading {
  eventTime: number
  eventId: string
  /** per-message reason no conversion of it may be sent */
  rejection?: Rejection
  customerData?: Record<string, unknown>
  dataProcessing?: DataProcessing
  value: number
  valueField: string
  currency?: string
  rawCurrency?: unknown
  contentType?: string
  contentIds?: string[]
  orderId?: string
  properties: Record<string, unknown>
  /** whether `category` became the content id (so it is not repeated in custom_data) */
  categoryUsed: boolean
  /** audience memberships for custom_data, when sent */
  audiences?: Record<string, boolean>
  /** properties kept out of custom_data: spellings of match keys (PII, never sent raw) */
  droppedPii: number
}

function readTrack (message: SegmentMessage, event: string, settings: FacebookSettings, options: TransformOptions): TrackReading {
  const eventTime = eventTimeOf(message.timestamp, message.receivedAt, options.now)
  // every field set here, so all readings share one shape
  const reading: TrackReading = {
    eventTime,
    eventId: message.messageId,
    rejection: timeRejection(eventTime, options.now),
    customerData: undefined,
    dataProcessing: undefined,
    value: NO_VALUE,
    valueField: '',
    currency: undefined,
    rawCurrency: undefined,
    contentType: undefined,
    contentIds: undefined,
    orderId: undefined,
    properties: NO_PROPERTIES,
    categoryUsed: false,
    audiences: undefined,
    droppedPii: 0
  }
  if (reading.rejection !== undefined) return reading

  const context = isRecord(message.context) ? message.context : undefined
  // hashedTraitKeys returns a new object: the profile's keys and the message's own ids (which
  // the profile never holds) are added to it in place
  const keys = hashedTraitKeys(isRecord(context?.traits) ? context.traits : undefined)
  if (options.profileKeys !== undefined) fillMatchKeys(keys, options.profileKeys)
  const userId = userIdOf(message.userId)
  if (userId !== undefined) keys.external_id = userId
  const leadId = leadIdOf(context)
  if (leadId !== undefined) keys.lead_id = leadId
  const keysProblem = keysRejection(keys)
  if (keysProblem !== undefined) {
    reading.rejection = keysProblem
    return reading
  }
  if (settings.limitedDataUse) {
    const dataProcessing = dataProcessingOf(message.integrations)
    if (dataProcessing === undefined) {
      reading.rejection = { reason: 'invalid_data_processing_options', message: DATA_PROCESSING_RULE }
      return reading
    }
    reading.dataProcessing = dataProcessing
  }
  reading.customerData = settings.apiFormat === 'offline-conversions' ? legacyMatchKeys(keys) : capiUserData(keys)

  const properties = isRecord(message.properties) ? message.properties : {}
  // spec: Order Completed (whatever map it is in) is valued by revenue, then total; others by
  // the property the Value Field Identifier setting names
  let valueField: string = settings.valueFieldIdentifier
  if (event === ORDER_COMPLETED) {
    valueField = properties.revenue === undefined || properties.revenue === null ? 'total' : 'revenue'
  }
  reading.valueField = valueField
  reading.value = readValue(properties[valueField])
  reading.rawCurrency = properties.currency
  reading.currency = readCurrency(properties.currency)

  reading.properties = properties
  for (const key in properties) if (isPiiProperty(key)) reading.droppedPii++
  if (event === PRODUCT_LIST_VIEWED) {
    // seed: only Product List Viewed is a product_group, identified by its category
    const category = contentId(properties.category)
    if (category !== undefined) {
      reading.contentType = 'product_group'
      reading.contentIds = [category]
      reading.categoryUsed = true
    }
  } else {
    let ids: string[] | undefined
    const products = properties.products
    if (Array.isArray(products)) {
      for (const product of products) {
        const id = isRecord(product) ? contentId(product.product_id) : undefined
        if (id === undefined) continue
        if (ids === undefined) ids = [id]
        else ids.push(id)
      }
    }
    if (ids === undefined) {
      const id = contentId(properties.product_id)
      if (id !== undefined) ids = [id]
    }
    if (ids !== undefined) {
      reading.contentType = 'product'
      reading.contentIds = ids
    }
  }
  reading.orderId = orderIdOf(properties.order_id)

  if (settings.sendAudienceProperties) reading.audiences = options.audienceProperties
  return reading
}

/** The reason this conversion may not be sent, after the per-message checks. */
function valueRejection (reading: TrackReading, eventName: string): Rejection | undefined {
  if (eventName === PURCHASE) {
    // spec: a Purchase must have a value; elsewhere a bad value is simply left out
    if (reading.value === NO_VALUE) {
      return { reason: 'missing_value', message: `a Purchase needs a value: properties.${reading.valueField} is missing` }
    }
    if (reading.value === BAD_VALUE) {
      return { reason: 'invalid_value', message: `properties.${reading.valueField} must be a finite number ≥ 0` }
    }
  }
  // the currency goes out only with a value, so only then can a bad code hurt
  if (reading.value >= 0 && reading.currency === undefined) {
    return {
      reason: 'invalid_currency',
      message: `properties.currency ${shown(reading.rawCurrency)} is not an ISO 4217 currency code`
    }
  }
  return undefined
}

/**
 * A property named as a match key is PII (`email`, `phone_number`, `mobile`, `zip_code`, `dob`…:
 * src/facebook/trait-spellings.ts): never copied raw into custom_data. Except `name`: in a track's
 * properties it is the product's or page's name (Segment's ecommerce spec), not the person's.
 */
function isPiiProperty (key: string): boolean {
  return key !== 'name' && isMatchKeyTrait(key)
}

/**
 * Copies every remaining property — keys and values as sent — then the audience memberships
 * into `customData`, never over a key already there (when `guarded`: Meta's own fields, and
 * always: the event's properties win over a membership of the same name). True when any was.
 */
function addRemaining (customData: Record<string, unknown>, reading: TrackReading, guarded: boolean): boolean {
  let added = false
  const properties = reading.properties
  for (const key of Object.keys(properties)) {
    // spec: the properties that became Meta fields are not repeated. `__proto__` from
    // JSON.parse is an own key; assigning it would set a prototype instead
    if (MAPPED_PROPERTIES.has(key) || key === '__proto__' || (key === 'category' && reading.categoryUsed) || isPiiProperty(key)) continue
    if (guarded && Object.hasOwn(customData, key)) continue
    customData[key] = properties[key]
    added = true
  }
  const audiences = reading.audiences
  if (audiences !== undefined) {
    for (const key of Object.keys(audiences)) {
      if (key === '__proto__' || Object.hasOwn(customData, key)) continue
      customData[key] = audiences[key]
      added = true
    }
  }
  return added
}

function capiPayload (reading: TrackReading, eventName: string): Record<string, unknown> {
  const payload: Record<string, unknown> = {
    event_name: eventName,
    event_time: reading.eventTime,
    event_id: reading.eventId,
    action_source: ACTION_SOURCE,
    user_data: reading.customerData
  }
  const customData: Record<string, unknown> = {}
  let hasCustomData = false
  if (reading.value >= 0) {
    customData.value = reading.value
    customData.currency = reading.currency
    hasCustomData = true
  }
  if (reading.contentIds !== undefined) {
    customData.content_type = reading.contentType
    customData.content_ids = reading.contentIds
    hasCustomData = true
  }
  if (reading.orderId !== undefined) {
    customData.order_id = reading.orderId
    hasCustomData = true
  }
  // Meta's own fields win over a remaining property of the same name (content_ids, …)
  if (addRemaining(customData, reading, hasCustomData)) hasCustomData = true
  if (hasCustomData) payload.custom_data = customData
  addDataProcessing(payload, reading.dataProcessing)
  return payload
}

function legacyPayload (reading: TrackReading, eventName: string): Record<string, unknown> {
  const payload: Record<string, unknown> = {
    match_keys: reading.customerData,
    event_name: eventName,
    event_time: reading.eventTime
  }
  if (reading.value >= 0) {
    payload.value = reading.value
    payload.currency = reading.currency
  }
  if (reading.contentIds !== undefined) {
    payload.content_type = reading.contentType
    payload.content_ids = reading.contentIds
  }
  if (reading.orderId !== undefined) payload.order_id = reading.orderId
  const customData: Record<string, unknown> = {}
  if (addRemaining(customData, reading, false)) payload.custom_data = customData
  addDataProcessing(payload, reading.dataProcessing)
  return payload
}

/** `event_name` for one map: the route's, the semantic table's, or the event itself (custom). */
function metaEventName (metaEvent: string | undefined, event: string, legacy: boolean): string {
  if (metaEvent !== undefined) return metaEvent
  return SEMANTIC_EVENTS.get(event) ?? (legacy ? LEGACY_CUSTOM_EVENT : event)
}

/**
 * The conversions one track event makes: one per map it is in (`[]` when in none — the caller
 * counts it as filtered). Whether `integrations` let the message reach this destination is the
 * caller's check (isDestinationEnabled).
 */
export function transformTrack (message: SegmentMessage, settings: FacebookSettings, options: TransformOptions): TransformResult[] {
  const event = message.event
  if (message.type !== 'track' || typeof event !== 'string') return []
  const legacy = settings.apiFormat === 'offline-conversions'
  let results: TransformResult[] | undefined
  let reading: TrackReading | undefined
  for (const route of ROUTES) {
    const datasetId = datasetFor(settings[route.setting], event)
    if (datasetId === undefined) continue
    reading ??= readTrack(message, event, settings, options)
    const eventName = metaEventName(route.metaEvent, event, legacy)
    const rejection = reading.rejection ?? valueRejection(reading, eventName)
    let result: TransformResult
    if (rejection !== undefined) {
      result = { kind: 'invalid', datasetId, eventName, reason: rejection.reason, message: rejection.message }
    } else {
      const payload = legacy ? legacyPayload(reading, eventName) : capiPayload(reading, eventName)
      result = {
        kind: 'conversion',
        conversion: { datasetId, eventName, eventTime: reading.eventTime, eventId: reading.eventId, payload },
        droppedPii: reading.droppedPii
      }
    }
    if (results === undefined) results = [result]
    else results.push(result)
  }
  return results ?? []
}

export interface AudienceEntry {
  /** the audience's key: the conversion's event name */
  audienceKey: string
  datasetId: string
  /** the emitted identify's messageId: the conversion's event_id */
  messageId: string
  /** the identify's timestamp (ISO-8601) */
  timestamp: string
  userId?: string
  profileKeys?: MatchKeys
}

/**
 * A conversion for a user entering an audience (DESIGN.md: `audienceEntryEvents`). The event is
 * named after the audience key; the legacy format only had an enum of names, so there it is
 * `Other` with the key in `custom_data.audience_key`.
 */
export function audienceEntryConversion (args: AudienceEntry, settings: FacebookSettings, now: number): TransformResult {
  const legacy = settings.apiFormat === 'offline-conversions'
  const eventName = legacy ? LEGACY_CUSTOM_EVENT : args.audienceKey
  const { datasetId } = args
  const eventTime = eventTimeOf(args.timestamp, undefined, now)
  const keys = mergeMatchKeys({}, args.profileKeys)
  const userId = userIdOf(args.userId)
  if (userId !== undefined) keys.external_id = userId
  const rejection = timeRejection(eventTime, now) ?? keysRejection(keys)
  if (rejection !== undefined) return { kind: 'invalid', datasetId, eventName, reason: rejection.reason, message: rejection.message }

  // the identify carries no data-processing options: with LDU on, LDU is off for this event
  const dataProcessing = settings.limitedDataUse ? NO_DATA_PROCESSING : undefined
  let payload: Record<string, unknown>
  if (legacy) {
    payload = {
      match_keys: legacyMatchKeys(keys),
      event_name: eventName,
      event_time: eventTime,
      custom_data: { audience_key: args.audienceKey }
    }
  } else {
    payload = {
      event_name: eventName,
      event_time: eventTime,
      event_id: args.messageId,
      action_source: ACTION_SOURCE,
      user_data: capiUserData(keys)
    }
  }
  addDataProcessing(payload, dataProcessing)
  return { kind: 'conversion', conversion: { datasetId, eventName, eventTime, eventId: args.messageId, payload }, droppedPii: 0 }
}

/**
 * A client's value as a reason's message shows it: a string cut to 16 characters (a currency code
 * has 3; the message is stored and logged, and must not grow with what a client sends), else its
 * kind.
 */
function shown (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 16 ? `${value.slice(0, 16)}…` : value)
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value)
  return Array.isArray(value) ? 'a list' : `a value of type ${typeof value}`
}
