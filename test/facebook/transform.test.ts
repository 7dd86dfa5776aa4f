import { createHash } from 'node:crypto'
import t from 'tap'
import { hashedTraitKeys, type MatchKeys } from '../../src/facebook/match-keys.js'
import { parseFacebookSettings, type FacebookSettings } from '../../src/facebook/settings.js'
import {
  audienceEntryConversion,
  checkEventTime,
  transformTrack,
  type Conversion,
  type TransformOptions,
  type TransformResult
} from '../../src/facebook/transform.js'
import type { SegmentMessage } from '../../src/segment/types.js'

const NOW = Date.parse('2025-06-01T12:00:00.000Z')
const TIMESTAMP = '2025-06-01T11:59:30.750Z'
const EVENT_TIME = Math.floor(Date.parse(TIMESTAMP) / 1000)
const DAY_MS = 24 * 60 * 60 * 1000
const DATASET = '794041057373779'

function sha (value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex')
}

let counter = 0
function track (event: string, fields: Partial<SegmentMessage> = {}): SegmentMessage {
  counter++
  return {
    type: 'track',
    messageId: `msg-${counter}`,
    userId: 'user-1',
    event,
    timestamp: TIMESTAMP,
    originalTimestamp: TIMESTAMP,
    receivedAt: TIMESTAMP,
    ...fields
  }
}

function settingsWith (input: Record<string, unknown>): FacebookSettings {
  const result = parseFacebookSettings(input)
  if ('error' in result) throw new Error(result.error)
  return result.settings
}

const SEMANTIC: Array<[string, string]> = [
  ['Products Searched', 'Search'],
  ['Product Viewed', 'ViewContent'],
  ['Product List Viewed', 'ViewContent'],
  ['Product Added to Wishlist', 'AddToWishlist'],
  ['Product Added', 'AddToCart'],
  ['Checkout Started', 'InitiateCheckout'],
  ['Payment Info Entered', 'AddPaymentInfo'],
  ['Order Completed', 'Purchase']
]

const conversionEvents: Record<string, string> = { 'Membership Upgraded': DATASET }
for (const [event] of SEMANTIC) conversionEvents[event] = DATASET
const capi = settingsWith({ conversionEvents })
const legacy = settingsWith({ conversionEvents, apiFormat: 'offline-conversions' })
const ldu = settingsWith({ conversionEvents, limitedDataUse: true })
const options: TransformOptions = { now: NOW }

function conversions (results: TransformResult[]): Conversion[] {
  return results.map((result) => {
    if (result.kind !== 'conversion') throw new Error(`expected a conversion, got ${result.reason}: ${result.message}`)
    return result.conversion
  })
}

function one (message: SegmentMessage, settings = capi, transformOptions = options): Conversion {
  const results = conversions(transformTrack(message, settings, transformOptions))
  if (results.length !== 1) throw new Error(`expected one conversion, got ${results.length}`)
  return results[0]
}

function payload (message: SegmentMessage, settings = capi, transformOptions = options): Record<string, any> {
  return one(message, settings, transformOptions).payload
}

function invalid (message: SegmentMessage, settings = capi, transformOptions = options) {
  const results = transformTrack(message, settings, transformOptions)
  if (results.length !== 1 || results[0].kind !== 'invalid') throw new Error(`expected one invalid result, got ${JSON.stringify(results)}`)
  return results[0]
}

t.test('routing: events in no map are not sent', async (t) => {
  t.same(transformTrack(track('Page Scrolled'), capi, options), [])
  t.same(transformTrack(track('order completed'), capi, options), [], 'names match case-sensitively')
  t.same(transformTrack(track('constructor'), capi, options), [], 'an inherited property is not a map entry')
  t.same(transformTrack(track('__proto__'), capi, options), [])
  t.same(transformTrack(track('Order Completed', { type: 'identify' }), capi, options), [], 'only track events')
  t.same(transformTrack(track('Order Completed', { event: undefined }), capi, options), [])
  t.same(transformTrack(track('Order Completed', { properties: { revenue: 1 } }), settingsWith({}), options), [], 'empty maps')
})

t.test('routing: the semantic table of the seed', async (t) => {
  for (const [event, metaEvent] of SEMANTIC) {
    const properties = event === 'Order Completed' ? { revenue: 10 } : {}
    const conversion = one(track(event, { properties }))
    t.equal(conversion.eventName, metaEvent, event)
    t.equal(conversion.payload.event_name, metaEvent)
    t.equal(conversion.datasetId, DATASET)
    t.equal(one(track(event, { properties }), legacy).payload.event_name, metaEvent, `${event} (legacy)`)
  }
})

t.test('routing: a custom event is itself in the Conversions API, Other in the legacy format', async (t) => {
  t.equal(one(track('Membership Upgraded')).payload.event_name, 'Membership Upgraded')
  t.equal(one(track('Membership Upgraded')).eventName, 'Membership Upgraded')
  t.equal(one(track('Membership Upgraded'), legacy).payload.event_name, 'Other')
  t.equal(one(track('Membership Upgraded'), legacy).eventName, 'Other')
})

t.test('routing: CompleteRegistration and Lead maps', async (t) => {
  const settings = settingsWith({
    completeRegistrationEvents: { 'Signed Up': '1104832229607827' },
    leadEvents: { 'Lead Generated': '5504831519607222' }
  })
  const registration = one(track('Signed Up'), settings)
  t.equal(registration.eventName, 'CompleteRegistration')
  t.equal(registration.datasetId, '1104832229607827')
  const lead = one(track('Lead Generated'), settings)
  t.equal(lead.eventName, 'Lead')
  t.equal(lead.datasetId, '5504831519607222')
  t.equal(one(track('Signed Up'), { ...settings, apiFormat: 'offline-conversions' }).payload.event_name, 'CompleteRegistration')
})

t.test('routing: a track in several maps is one conversion per map, in map order', async (t) => {
  const settings = settingsWith({
    completeRegistrationEvents: { 'Order Completed': '1' },
    leadEvents: { 'Order Completed': '2' },
    conversionEvents: { 'Order Completed': '3' }
  })
  const message = track('Order Completed', { properties: { revenue: 5, currency: 'eur' } })
  const results = conversions(transformTrack(message, settings, options))
  t.same(results.map((c) => [c.datasetId, c.eventName]), [['1', 'CompleteRegistration'], ['2', 'Lead'], ['3', 'Purchase']])
  for (const conversion of results) {
    t.equal(conversion.eventId, message.messageId, 'one event id: the messageId')
    t.same(conversion.payload.custom_data, { value: 5, currency: 'EUR' }, 'Order Completed is valued by revenue in every map')
  }
})

t.test('routing: a Purchase rejected for its value does not stop the other maps', async (t) => {
  const settings = settingsWith({ leadEvents: { 'Order Completed': '2' }, conversionEvents: { 'Order Completed': '3' } })
  const results = transformTrack(track('Order Completed', { properties: { revenue: 'lots' } }), settings, options)
  t.equal(results.length, 2)
  t.equal(results[0].kind, 'conversion', 'Lead: a bad value is left out')
  t.notOk('custom_data' in (results[0] as { conversion: Conversion }).conversion.payload)
  t.match(results[1], { kind: 'invalid', datasetId: '3', eventName: 'Purchase', reason: 'invalid_value' })
})

t.test('event_time, event_id, action_source', async (t) => {
  const message = track('Product Viewed')
  const conversion = one(message)
  t.equal(conversion.eventTime, EVENT_TIME, 'whole seconds, rounded down')
  t.equal(conversion.eventTime, 1748779170)
  t.equal(conversion.payload.event_time, 1748779170)
  t.equal(conversion.eventId, message.messageId)
  t.equal(conversion.payload.event_id, message.messageId)
  t.equal(conversion.payload.action_source, 'physical_store')
  t.equal(one(track('Product Viewed', { timestamp: '2025-06-01T11:59:30+02:00' })).eventTime,
    Math.floor(Date.parse('2025-06-01T09:59:30Z') / 1000), 'offsets are honoured')
  t.equal(one(track('Product Viewed', { timestamp: 'garbage' })).eventTime, EVENT_TIME, 'falls back to receivedAt')
  t.equal(one(track('Product Viewed', { timestamp: 'garbage', receivedAt: 'garbage' })).eventTime, NOW / 1000, 'then to the clock')
  t.equal(one(track('Product Viewed', { timestamp: undefined as unknown as string })).eventTime, EVENT_TIME, 'no timestamp: receivedAt')
  t.equal(one(track('Product Viewed', { timestamp: 1 as unknown as string, receivedAt: 2 as unknown as string })).eventTime, NOW / 1000)
  const legacyPayload = payload(message, legacy)
  t.notOk('event_id' in legacyPayload, 'the legacy format has no event_id')
  t.notOk('action_source' in legacyPayload)
})

t.test('event_time older than 62 days or more than 10 minutes ahead is rejected', async (t) => {
  const at = (ms: number) => new Date(ms).toISOString()
  t.equal(invalid(track('Product Viewed', { timestamp: at(NOW - 62 * DAY_MS - 1000) })).reason, 'event_too_old')
  t.match(invalid(track('Product Viewed', { timestamp: at(NOW - 62 * DAY_MS - 1000) })).message, /62 days/)
  one(track('Product Viewed', { timestamp: at(NOW - 62 * DAY_MS) }))
  t.equal(invalid(track('Product Viewed', { timestamp: at(NOW + 10 * 60 * 1000 + 1000) })).reason, 'event_in_future')
  one(track('Product Viewed', { timestamp: at(NOW + 10 * 60 * 1000) }))
  t.match(invalid(track('Order Completed', { timestamp: at(NOW + DAY_MS) }), legacy), {
    kind: 'invalid', datasetId: DATASET, eventName: 'Purchase', reason: 'event_in_future'
  })
})

t.test('checkEventTime, re-checked at send time', async (t) => {
  const seconds = NOW / 1000
  t.equal(checkEventTime(seconds, NOW), undefined)
  t.equal(checkEventTime(seconds - 62 * 86400, NOW), undefined, 'exactly 62 days is still fine')
  t.equal(checkEventTime(seconds - 62 * 86400 - 1, NOW), 'event_too_old')
  t.equal(checkEventTime(seconds, NOW + 63 * DAY_MS), 'event_too_old', 'an event held back ages out')
  t.equal(checkEventTime(seconds + 600, NOW), undefined)
  t.equal(checkEventTime(seconds + 601, NOW), 'event_in_future')
})

t.test('value: Order Completed uses revenue, then total', async (t) => {
  t.same(payload(track('Order Completed', { properties: { revenue: 39.95, total: 50 } })).custom_data, { value: 39.95, currency: 'USD' })
  t.same(payload(track('Order Completed', { properties: { total: 50 } })).custom_data, { value: 50, currency: 'USD' })
  t.same(payload(track('Order Completed', { properties: { revenue: null, total: 50 } })).custom_data, { value: 50, currency: 'USD' })
  t.same(payload(track('Order Completed', { properties: { revenue: '18.99' } })).custom_data, { value: 18.99, currency: 'USD' },
    'numeric strings become numbers')
  t.same(payload(track('Order Completed', { properties: { revenue: 0 } })).custom_data, { value: 0, currency: 'USD' }, '0 is a value')
  t.same(payload(track('Order Completed', { properties: { revenue: 10, value: 99, price: 5 } })).custom_data, { value: 10, currency: 'USD' },
    'not value or price, and neither goes to custom_data')
})

t.test('value: a Purchase without a valid value is invalid', async (t) => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{}, 'missing_value'],
    [{ revenue: null }, 'missing_value'],
    [{ revenue: '' }, 'missing_value'],
    [{ revenue: 'abc' }, 'invalid_value'],
    [{ revenue: '12,50' }, 'invalid_value'],
    [{ revenue: '$12' }, 'invalid_value'],
    [{ revenue: -1 }, 'invalid_value'],
    [{ revenue: '-1' }, 'invalid_value'],
    [{ revenue: Number.NaN }, 'invalid_value'],
    [{ revenue: Number.POSITIVE_INFINITY }, 'invalid_value'],
    [{ revenue: 'Infinity' }, 'invalid_value'],
    [{ revenue: '1e400' }, 'invalid_value'],
    [{ revenue: true }, 'invalid_value'],
    [{ revenue: { amount: 5 } }, 'invalid_value'],
    [{ total: 'x' }, 'invalid_value']
  ]
  for (const [properties, reason] of cases) {
    const result = invalid(track('Order Completed', { properties }))
    t.equal(result.reason, reason, JSON.stringify(properties))
    t.equal(result.eventName, 'Purchase')
    t.equal(result.datasetId, DATASET)
  }
  t.match(invalid(track('Order Completed')).message, /properties\.total is missing/)
  t.match(invalid(track('Order Completed', { properties: { revenue: 'x' } })).message, /properties\.revenue must be a finite number/)
  t.equal(invalid(track('Order Completed'), legacy).reason, 'missing_value', 'in the legacy format too')
})

t.test('value: other events use valueFieldIdentifier; a bad value is left out', async (t) => {
  t.same(payload(track('Product Added', { properties: { value: 12, price: 3 } })).custom_data, { value: 12, currency: 'USD' })
  t.same(payload(track('Product Added', { properties: { price: 3 } })).custom_data, undefined, 'price is not the value field')
  const byPrice = settingsWith({ conversionEvents, valueFieldIdentifier: 'price' })
  t.same(payload(track('Product Added', { properties: { value: 12, price: '3.50' } }), byPrice).custom_data, { value: 3.5, currency: 'USD' })
  t.same(payload(track('Order Completed', { properties: { revenue: 7, price: 3 } }), byPrice).custom_data, { value: 7, currency: 'USD' },
    'Order Completed ignores the setting')
  t.same(payload(track('Product Added', { properties: { value: 'lots', currency: 'EUR', sku: 'G-32' } })).custom_data, { sku: 'G-32' },
    'left out, with its currency')
  t.same(payload(track('Product Added', { properties: { value: -5 } })).custom_data, undefined)
  t.same(payload(track('Membership Upgraded', { properties: { value: '5' } })).custom_data, { value: 5, currency: 'USD' })
})

t.test('currency: upper-cased ISO 4217, USD by default, only with a value', async (t) => {
  t.same(payload(track('Order Completed', { properties: { revenue: 5, currency: 'eur' } })).custom_data, { value: 5, currency: 'EUR' })
  t.same(payload(track('Order Completed', { properties: { revenue: 5, currency: ' gbp ' } })).custom_data, { value: 5, currency: 'GBP' })
  t.same(payload(track('Order Completed', { properties: { revenue: 5, currency: '' } })).custom_data, { value: 5, currency: 'USD' })
  t.same(payload(track('Product Viewed', { properties: { currency: 'EUR' } })).custom_data, undefined, 'no value: no currency')
  for (const currency of ['XYZ', 'euro', 'US', 978, true]) {
    const result = invalid(track('Order Completed', { properties: { revenue: 5, currency } }))
    t.equal(result.reason, 'invalid_currency', String(currency))
  }
  t.match(invalid(track('Product Added', { properties: { value: 5, currency: 'XYZ' } })), { reason: 'invalid_currency', eventName: 'AddToCart' },
    'any event that sends a value')
  t.same(payload(track('Product Viewed', { properties: { currency: 'XYZ' } })).custom_data, undefined,
    'a bad code with no value is not sent, so not a reason to drop the event')
  t.match(invalid(track('Order Completed', { properties: { revenue: 5, currency: 'XYZ' } })).message, /"XYZ" is not an ISO 4217/)
  const long = invalid(track('Order Completed', { properties: { revenue: 5, currency: 'U'.repeat(100_000) } })).message
  t.equal(long, `properties.currency "${'U'.repeat(16)}…" is not an ISO 4217 currency code`, 'a long value is cut in the message')
  t.match(invalid(track('Order Completed', { properties: { revenue: 5, currency: { code: 'USD' } } })).message, /currency a value of type object is not/)
})

t.test('content: Product List Viewed is a product_group of its category', async (t) => {
  t.same(payload(track('Product List Viewed', { properties: { category: 'Games', list_id: 'l1', products: [{ product_id: 'p1' }] } })).custom_data, {
    content_type: 'product_group',
    content_ids: ['Games'],
    list_id: 'l1'
  }, 'category becomes the content id and leaves custom_data; products are not used')
  t.same(payload(track('Product List Viewed', { properties: { list_id: 'l1' } })).custom_data, { list_id: 'l1' }, 'no category: no content')
  t.same(payload(track('Product List Viewed', { properties: { category: 7 } })).custom_data, { content_type: 'product_group', content_ids: ['7'] })
})

t.test('content: products[].product_id or the single product_id, always strings', async (t) => {
  t.same(payload(track('Checkout Started', { properties: { products: [{ product_id: 'a', sku: 's' }, { product_id: 2 }, { sku: 'x' }, 'junk', null] } })).custom_data, {
    content_type: 'product',
    content_ids: ['a', '2']
  }, 'products and product_id never go to custom_data')
  t.same(payload(track('Product Viewed', { properties: { product_id: 507, category: 'Games' } })).custom_data, {
    content_type: 'product',
    content_ids: ['507'],
    category: 'Games'
  }, 'category stays in custom_data when it is not a content id')
  t.same(payload(track('Product Viewed', { properties: { products: [{ sku: 'x' }], product_id: 'p9' } })).custom_data, {
    content_type: 'product',
    content_ids: ['p9']
  }, 'products without ids fall back to product_id')
  t.same(payload(track('Product Viewed', { properties: { products: [], product_id: '' } })).custom_data, undefined, 'none: neither field')
  t.same(payload(track('Product Viewed', { properties: { product_id: { id: 1 } } })).custom_data, undefined)
})

t.test('order_id', async (t) => {
  t.same(payload(track('Order Completed', { properties: { revenue: 1, order_id: 'o-1' } })).custom_data, { value: 1, currency: 'USD', order_id: 'o-1' })
  t.same(payload(track('Order Completed', { properties: { revenue: 1, order_id: 42 } })).custom_data, { value: 1, currency: 'USD', order_id: '42' })
  t.same(payload(track('Order Completed', { properties: { revenue: 1, order_id: '' } })).custom_data, { value: 1, currency: 'USD' })
  t.same(payload(track('Order Completed', { properties: { revenue: 1, order_id: ['x'] } })).custom_data, { value: 1, currency: 'USD' })
  t.match(payload(track('Order Completed', { properties: { revenue: 1, order_id: 'o-1' } }), legacy), { value: 1, currency: 'USD', order_id: 'o-1' },
    'legacy: a top-level field')
})

t.test('custom_data: every remaining property, keys and values as sent', async (t) => {
  const properties = {
    revenue: 18.99,
    total: 20,
    value: 1,
    price: 2,
    currency: 'USD',
    products: [{ product_id: 'p1' }],
    product_id: 'p0',
    order_id: 'o1',
    shippingMethod: '2-day',
    'Gift Wrap': true,
    coupon: null,
    nested: { a: [1, 2] },
    quantity: 3
  }
  t.same(payload(track('Order Completed', { properties })).custom_data, {
    value: 18.99,
    currency: 'USD',
    content_type: 'product',
    content_ids: ['p1'],
    order_id: 'o1',
    shippingMethod: '2-day',
    'Gift Wrap': true,
    coupon: null,
    nested: { a: [1, 2] },
    quantity: 3
  })
  t.same(payload(track('Product Viewed', { properties: { content_ids: ['mine'], content_type: 'hotel', product_id: 'p1' } })).custom_data, {
    content_type: 'product',
    content_ids: ['p1']
  }, 'Meta fields we set win over properties of the same name')
  t.same(payload(track('Membership Upgraded', { properties: { content_ids: ['mine'] } })).custom_data, { content_ids: ['mine'] },
    'but a property we do not replace is sent as is')
  const polluted = JSON.parse('{"__proto__": {"polluted": true}, "ok": 1}') as Record<string, unknown>
  const customData = payload(track('Membership Upgraded', { properties: polluted })).custom_data
  t.same(customData, { ok: 1 }, '__proto__ is not copied')
  t.equal(Object.getPrototypeOf(customData), Object.prototype)
  t.notOk('custom_data' in payload(track('Product Viewed')), 'nothing to send: no custom_data')
  t.notOk('custom_data' in payload(track('Product Viewed', { properties: [1, 2] as unknown as Record<string, unknown> })))
})

t.test('custom_data: audience memberships when sendAudienceProperties is on', async (t) => {
  const audienceProperties = { order_completed_last_30days: true, vip: false, shippingMethod: true }
  const withAudiences = { now: NOW, audienceProperties }
  t.same(payload(track('Product Viewed', { properties: { shippingMethod: 'x' } }), capi, withAudiences).custom_data, {
    shippingMethod: 'x',
    order_completed_last_30days: true,
    vip: false
  }, 'the event\'s own property wins')
  t.same(payload(track('Product Viewed'), legacy, withAudiences).custom_data, audienceProperties, 'legacy custom_data too')
  const off = settingsWith({ conversionEvents, sendAudienceProperties: false })
  t.notOk('custom_data' in payload(track('Product Viewed'), off, withAudiences), 'off: not sent')
  t.same(payload(track('Product Viewed'), capi, { now: NOW, audienceProperties: JSON.parse('{"__proto__": true, "a": true}') }).custom_data, { a: true })
})

t.test('match keys: context.traits, userId, leadId', async (t) => {
  const traits = { email: 'Mary@Example.com', phone: '4011234567', address: { country: 'US' } }
  const userData = payload(track('Product Viewed', {
    userId: '  User-42 ',
    context: { traits, 'Facebook Offline Conversions': { leadId: '1234567890' } }
  })).user_data
  t.same(userData, {
    em: [sha('mary@example.com')],
    ph: [sha('14011234567')],
    country: sha('us'),
    external_id: [sha('User-42')],
    lead_id: '1234567890'
  }, 'external_id: the SHA-256 of the trimmed userId, case kept; lead_id as given')
  const matchKeys = payload(track('Product Viewed', {
    userId: '  User-42 ',
    context: { traits, 'Facebook Offline Conversions': { leadId: 1234567890 } }
  }), legacy).match_keys
  t.same(matchKeys, {
    email: [sha('mary@example.com')],
    phone: [sha('14011234567')],
    country: sha('us'),
    extern_id: 'User-42',
    lead_id: '1234567890'
  }, 'legacy: extern_id raw')
  t.same(payload(track('Product Viewed', { userId: 12345 as unknown as string })).user_data, { external_id: [sha('12345')] },
    'a numeric userId is read as text')
})

t.test('match keys: a lead id that is not one is left out', async (t) => {
  const leadIdOf = (leadId: unknown) => payload(track('Product Viewed', { context: { 'Facebook Offline Conversions': { leadId } } })).user_data.lead_id
  t.equal(leadIdOf('l:987'), '987', 'Meta\'s uploader strips l:')
  t.equal(leadIdOf(' 987 '), '987')
  t.equal(leadIdOf('<LEAD ADS ID>'), undefined, 'the seed\'s placeholder')
  t.equal(leadIdOf(''), undefined)
  t.equal(leadIdOf(1.5), undefined)
  t.equal(leadIdOf(-1), undefined)
  t.equal(leadIdOf({}), undefined)
  t.equal(payload(track('Product Viewed', { context: { 'Facebook Offline Conversions': true } })).user_data.lead_id, undefined)
})

t.test('match keys: the profile fills what the message lacks', async (t) => {
  const profileKeys: MatchKeys = hashedTraitKeys({ email: 'old@example.com', phone: '+16505551212', address: { city: 'Paris' } })
  const before = JSON.stringify(profileKeys)
  const userData = payload(track('Product Viewed', { context: { traits: { email: 'new@example.com' } } }), capi, { now: NOW, profileKeys }).user_data
  t.same(userData, {
    em: [sha('new@example.com')],
    ph: [sha('16505551212')],
    ct: sha('paris'),
    external_id: [sha('user-1')]
  })
  const fromProfile = payload(track('Product Viewed', { userId: undefined }), capi, { now: NOW, profileKeys }).user_data
  t.same(fromProfile, { em: [sha('old@example.com')], ph: [sha('16505551212')], ct: sha('paris') }, 'no traits, no userId: the profile alone')
  payload(track('Product Viewed', { userId: 'someone' }), capi, { now: NOW, profileKeys })
  t.equal(JSON.stringify(profileKeys), before, 'the profile is not changed')
})

t.test('match keys: none at all, or too weak', async (t) => {
  const anonymous = { userId: undefined, anonymousId: 'anon-1' }
  t.match(invalid(track('Product Viewed', anonymous)), { reason: 'no_match_key', eventName: 'ViewContent', datasetId: DATASET })
  t.equal(invalid(track('Product Viewed', { userId: '   ' })).reason, 'no_match_key', 'a blank userId is none')
  t.equal(invalid(track('Product Viewed', { ...anonymous, context: { traits: { gender: 'x' } } })).reason, 'no_match_key')
  const weak = invalid(track('Product Viewed', { ...anonymous, context: { traits: { gender: 'f', address: { city: 'Paris', state: 'IDF', country: 'FR' } } } }))
  t.equal(weak.reason, 'weak_match_keys')
  t.match(weak.message, /ge, ct, st, country/)
  t.equal(invalid(track('Product Viewed', { ...anonymous, context: { traits: { birthday: '1990-01-01' } } })).reason, 'weak_match_keys')
  t.equal(invalid(track('Product Viewed', { ...anonymous, context: { traits: { firstName: 'Mary', gender: 'f' } } })).reason, 'weak_match_keys')
  t.equal(invalid(track('Product Viewed', anonymous), capi, { now: NOW, profileKeys: { ln: sha('smith'), ge: sha('f') } }).reason, 'weak_match_keys',
    'profile keys count too')
  one(track('Product Viewed', { ...anonymous, context: { traits: { firstName: 'Mary', lastName: 'Smith' } } }))
  one(track('Product Viewed', { ...anonymous, context: { traits: { gender: 'f' }, 'Facebook Offline Conversions': { leadId: '123' } } }))
  one(track('Product Viewed', { context: { traits: { gender: 'f' } } }), capi)
  t.equal(invalid(track('Product Viewed', anonymous), legacy).reason, 'no_match_key', 'legacy too')
})

t.test('issue 15: an event whose only keys are junk is rejected as too weak', async (t) => {
  const anonymous = { userId: undefined, anonymousId: 'anon-1' }
  for (const phone of ['1-800-FLOWERS', '6505551212 6505551213', '123', 'n/a']) {
    const result = invalid(track('Product Viewed', { ...anonymous, context: { traits: { phone, gender: 'm' } } }))
    t.equal(result.reason, 'weak_match_keys', `a junk phone (${phone}) and a gender`)
    t.match(result.message, /\(only ge\)/, 'the message names what is left: the gender')
  }
  t.equal(invalid(track('Product Viewed', { ...anonymous, context: { traits: { email: 'not-an-email', gender: 'f' } } }), legacy).reason, 'weak_match_keys',
    'a junk email, legacy format too')
  t.equal(invalid(track('Product Viewed', { ...anonymous, context: { traits: { email: 'user@localhost', phone: '1-800-FLOWERS' } } })).reason, 'no_match_key',
    'only junk: no match key at all')
  t.equal(invalid(track('Product Viewed', { ...anonymous, context: { traits: { birthday: '1997', email: 'n/a' } } })).reason, 'no_match_key',
    'a year alone is no birthday')
})

t.test('issue 15: a placeholder country is left out, the rest is sent', async (t) => {
  const message = track('Product Viewed', { userId: undefined, context: { traits: { email: 'Mary@Example.com', address: { country: 'N/A', city: 'unknown', state: 'Texas' } } } })
  t.same(payload(message).user_data, { em: [sha('mary@example.com')], st: sha('tx') }, 'no country (N/A is not Namibia), no city')
  t.same(payload(message, legacy).match_keys, { email: [sha('mary@example.com')], st: sha('tx') })
  t.same(payload(track('Product Viewed', { userId: 'unknown' })).user_data, { external_id: [sha('unknown')] },
    'a userId is not a match-key trait: kept as sent, whatever it reads')
})

t.test('issue 15: a year alone is no db; the legacy format gets the year only', async (t) => {
  const message = track('Product Viewed', { context: { traits: { birthday: '1997-02', email: 'a@b.co' } } })
  t.same(payload(message).user_data, { em: [sha('a@b.co')], external_id: [sha('user-1')] }, 'no db')
  t.same(payload(message, legacy).match_keys, { email: [sha('a@b.co')], doby: sha('1997'), extern_id: 'user-1' }, 'doby, no month or day made up')
  const profileKeys = hashedTraitKeys({ birthday: '1985-12-10' })
  t.same(payload(message, legacy, { now: NOW, profileKeys }).match_keys, {
    email: [sha('a@b.co')], doby: sha('1985'), dobm: sha('12'), dobd: sha('10'), extern_id: 'user-1'
  }, 'the profile\'s whole date replaces a year alone: one date, never two mixed')
  t.same(payload(message, capi, { now: NOW, profileKeys }).user_data.db, sha('19851210'))
})

t.test('issue 14: spellings of match-key traits are hashed as the key they spell', async (t) => {
  const message = track('Product Viewed', { context: { traits: { mobile: '(650) 555-1212', Email_Address: 'Mary@Example.com', zip: '94107', country_code: 'US' } } })
  t.same(payload(message).user_data, {
    em: [sha('mary@example.com')],
    ph: [sha('16505551212')],
    zp: sha('94107'),
    country: sha('us'),
    external_id: [sha('user-1')]
  })
})

t.test('Limited Data Use', async (t) => {
  const withOptions = (dataProcessingOptions: unknown, extra: Record<string, unknown> = {}) =>
    track('Product Viewed', { integrations: { ...extra, 'Facebook Offline Conversions': { dataProcessingOptions } } })
  const fields = (p: Record<string, any>) => ({
    options: p.data_processing_options,
    country: p.data_processing_options_country,
    state: p.data_processing_options_state
  })

  t.same(fields(payload(withOptions([[], 1, 1000]), ldu)), { options: [], country: 1, state: 1000 }, 'the seed\'s example')
  t.same(fields(payload(withOptions([['LDU']]), ldu)), { options: ['LDU'], country: 0, state: 0 }, 'country and state default to 0')
  t.same(fields(payload(withOptions([['LDU'], 1]), ldu)), { options: ['LDU'], country: 1, state: 0 })
  t.same(fields(payload(withOptions([['ldu'], 1, 1000]), ldu)), { options: ['LDU'], country: 1, state: 1000 })
  t.same(fields(payload(track('Product Viewed'), ldu)), { options: [], country: undefined, state: undefined }, 'on, no options: LDU off for the event')
  t.notOk('data_processing_options_country' in payload(track('Product Viewed'), ldu))
  t.same(fields(payload(track('Product Viewed', { integrations: { 'Facebook Offline Conversions': true } }), ldu)), { options: [], country: undefined, state: undefined })
  t.same(fields(payload(withOptions(null), ldu)), { options: [], country: undefined, state: undefined })

  const legacyLdu = { ...ldu, apiFormat: 'offline-conversions' as const }
  t.same(fields(payload(withOptions([[], 1, 1000]), legacyLdu)), { options: [], country: 1, state: 1000 }, 'legacy format too')

  for (const malformed of ['LDU', [], ['LDU'], [['XYZ']], [[1]], [[], 'one'], [[], 1.5], [[], 1, -1], [[], 1, 1000, 5], { options: [] }, 1]) {
    const result = invalid(withOptions(malformed), ldu)
    t.equal(result.reason, 'invalid_data_processing_options', JSON.stringify(malformed))
    t.match(result.message, /dataProcessingOptions/)
  }

  const off = payload(withOptions([['LDU'], 1, 1000]))
  t.notOk('data_processing_options' in off, 'setting off: no data-processing fields')
  t.notOk('data_processing_options_country' in off)
  t.notOk('data_processing_options' in payload(withOptions('garbage')), 'setting off: a malformed value is not a problem')
  t.not(payload(track('Product Viewed'), ldu).data_processing_options, payload(track('Product Viewed'), ldu).data_processing_options,
    'a fresh array per event')
})

t.test('the seed\'s hamsolo813 Product Added, both formats, exactly', async (t) => {
  const message = track('Product Added', {
    userId: 'hamsolo813',
    properties: {
      cart_id: 'cart1234',
      product_id: 'product12356',
      sku: 'G-32',
      category: 'Games',
      name: 'Monopoly: 3rd Edition',
      brand: 'Hasbro',
      variant: '200 pieces',
      price: 18.99,
      quantity: 1,
      coupon: 'MAYDEALS',
      position: 3
    },
    context: {
      traits: {
        email: 'hamsolo813@hamsolo813.com',
        phone: '4011234567',
        gender: 'm',
        name: 'ham solo',
        address: { city: 'East Greenwich', state: 'RI', postalCode: '02818', country: 'USA' }
      }
    },
    integrations: { 'Facebook Offline Conversions': { dataProcessingOptions: [[], 1, 1000] } }
  })
  const seedSettings = {
    completeRegistrationEvents: { 'Signed Up': '1104832229607827' },
    leadEvents: { 'Lead Generated': '5504831519607222' },
    conversionEvents: { 'Order Completed': DATASET, 'Product Added': DATASET },
    valueFieldIdentifier: 'price',
    limitedDataUse: true
  }
  const remaining = {
    cart_id: 'cart1234',
    sku: 'G-32',
    category: 'Games',
    name: 'Monopoly: 3rd Edition',
    brand: 'Hasbro',
    variant: '200 pieces',
    quantity: 1,
    coupon: 'MAYDEALS',
    position: 3
  }
  const hashes = {
    em: sha('hamsolo813@hamsolo813.com'),
    ph: sha('14011234567'),
    ge: sha('m'),
    fn: sha('ham'),
    ln: sha('solo'),
    ct: sha('eastgreenwich'),
    st: sha('ri'),
    zp: sha('02818'),
    country: '79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621'
  }
  t.equal(hashes.ph, '89fe36dd70ef72f0249e4772cf73606c2aafa70f0cb4f73df3265bffc1c0a5ac')
  t.equal(hashes.ge, '62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a')

  const capiConversion = one(message, settingsWith(seedSettings))
  t.same(capiConversion, {
    datasetId: DATASET,
    eventName: 'AddToCart',
    eventTime: EVENT_TIME,
    eventId: message.messageId,
    payload: {
      event_name: 'AddToCart',
      event_time: EVENT_TIME,
      event_id: message.messageId,
      action_source: 'physical_store',
      user_data: {
        em: [hashes.em],
        ph: [hashes.ph],
        ge: hashes.ge,
        fn: hashes.fn,
        ln: hashes.ln,
        ct: hashes.ct,
        st: hashes.st,
        zp: hashes.zp,
        country: hashes.country,
        external_id: [sha('hamsolo813')]
      },
      custom_data: { value: 18.99, currency: 'USD', content_type: 'product', content_ids: ['product12356'], ...remaining },
      data_processing_options: [],
      data_processing_options_country: 1,
      data_processing_options_state: 1000
    }
  })
  t.strictSame(Object.keys(capiConversion.payload), [
    'event_name', 'event_time', 'event_id', 'action_source', 'user_data', 'custom_data',
    'data_processing_options', 'data_processing_options_country', 'data_processing_options_state'
  ], 'fields in the documented order')

  const legacyConversion = one(message, settingsWith({ ...seedSettings, apiFormat: 'offline-conversions' }))
  t.same(legacyConversion.payload, {
    match_keys: {
      email: [hashes.em],
      phone: [hashes.ph],
      gen: hashes.ge,
      fn: hashes.fn,
      ln: hashes.ln,
      ct: hashes.ct,
      st: hashes.st,
      zip: hashes.zp,
      country: hashes.country,
      extern_id: 'hamsolo813'
    },
    event_name: 'AddToCart',
    event_time: EVENT_TIME,
    value: 18.99,
    currency: 'USD',
    content_type: 'product',
    content_ids: ['product12356'],
    custom_data: remaining,
    data_processing_options: [],
    data_processing_options_country: 1,
    data_processing_options_state: 1000
  })
})

t.test('legacy match_keys carry the birthday as year, month and day', async (t) => {
  const message = track('Product Viewed', { context: { traits: { birthday: '1997-02-16', email: 'a@b.c' } } })
  t.same(payload(message, legacy).match_keys, {
    email: [sha('a@b.c')],
    doby: sha('1997'),
    dobm: sha('02'),
    dobd: sha('16'),
    extern_id: 'user-1'
  })
  t.same(payload(message).user_data, { em: [sha('a@b.c')], db: sha('19970216'), external_id: [sha('user-1')] })
})

t.test('the seed\'s Order Completed with revenue and shippingMethod', async (t) => {
  const message = track('Order Completed', { userId: '019mr8mf4r', properties: { revenue: 39.95, shippingMethod: '2-day' } })
  t.same(payload(message).custom_data, { value: 39.95, currency: 'USD', shippingMethod: '2-day' })
  t.same(payload(message, legacy), {
    match_keys: { extern_id: '019mr8mf4r' },
    event_name: 'Purchase',
    event_time: EVENT_TIME,
    value: 39.95,
    currency: 'USD',
    custom_data: { shippingMethod: '2-day' }
  })
})

t.test('audienceEntryConversion', async (t) => {
  const profileKeys = hashedTraitKeys({ email: 'hamsolo813@hamsolo813.com' })
  const args = {
    audienceKey: 'order_completed_last_30days',
    datasetId: '1234',
    messageId: 'identify-1',
    timestamp: TIMESTAMP,
    userId: 'hamsolo813',
    profileKeys
  }
  t.same(audienceEntryConversion(args, capi, NOW), {
    kind: 'conversion',
    conversion: {
      datasetId: '1234',
      eventName: 'order_completed_last_30days',
      eventTime: EVENT_TIME,
      eventId: 'identify-1',
      payload: {
        event_name: 'order_completed_last_30days',
        event_time: EVENT_TIME,
        event_id: 'identify-1',
        action_source: 'physical_store',
        user_data: { em: [sha('hamsolo813@hamsolo813.com')], external_id: [sha('hamsolo813')] }
      }
    },
    droppedPii: 0
  })
  t.same(audienceEntryConversion(args, { ...legacy, limitedDataUse: true }, NOW), {
    kind: 'conversion',
    conversion: {
      datasetId: '1234',
      eventName: 'Other',
      eventTime: EVENT_TIME,
      eventId: 'identify-1',
      payload: {
        match_keys: { email: [sha('hamsolo813@hamsolo813.com')], extern_id: 'hamsolo813' },
        event_name: 'Other',
        event_time: EVENT_TIME,
        custom_data: { audience_key: 'order_completed_last_30days' },
        data_processing_options: []
      }
    },
    droppedPii: 0
  }, 'legacy: Other with the key in custom_data; LDU on: []')
  t.notOk('external_id' in profileKeys, 'the profile is not changed')
  t.match(audienceEntryConversion({ ...args, userId: undefined, profileKeys: undefined }, capi, NOW), {
    kind: 'invalid', reason: 'no_match_key', datasetId: '1234', eventName: 'order_completed_last_30days'
  })
  t.match(audienceEntryConversion({ ...args, userId: undefined, profileKeys: { ge: sha('m') } }, capi, NOW), { reason: 'weak_match_keys' })
  t.match(audienceEntryConversion({ ...args, timestamp: new Date(NOW - 63 * DAY_MS).toISOString() }, capi, NOW), { reason: 'event_too_old' })
  t.match(audienceEntryConversion({ ...args, profileKeys: undefined }, capi, NOW), {
    kind: 'conversion', conversion: { payload: { user_data: { external_id: [sha('hamsolo813')] } } }
  })
})

t.test('custom_data never carries a property named as a match key: PII is dropped and counted (droppedPii)', async (t) => {
  const properties = {
    email: 'raw@example.com',
    phone_number: '+1 401 555 0100',
    Mobile: '4015550100',
    zip_code: '02818',
    dob: '1990-01-02',
    'e-mail': 'other@example.com',
    name: 'Monopoly: 3rd Edition',
    brand: 'Hasbro',
    price: 18.99
  }
  for (const settings of [capi, legacy]) {
    const [result] = transformTrack(track('Product Added', { properties }), settings, options)
    const conversion = one(track('Product Added', { properties }), settings)
    t.equal(result.kind === 'conversion' && result.droppedPii, 6, `${settings.apiFormat}: six properties dropped`)
    const customData = conversion.payload.custom_data as Record<string, unknown>
    if (settings.apiFormat === 'offline-conversions') customData.value = customData.currency = undefined
    t.same(Object.keys(customData).filter((key) => !['value', 'currency'].includes(key)).sort(), ['brand', 'name'], `${settings.apiFormat}: only the product's own properties`)
    t.notMatch(JSON.stringify(conversion.payload), /raw@example\.com|401 555|4015550100|02818|1990-01-02|other@example/, `${settings.apiFormat}: no raw value anywhere in the payload`)
  }
  const [clean] = transformTrack(track('Product Added', { properties: { name: 'x', price: 1 } }), capi, options)
  t.equal(clean.kind === 'conversion' && clean.droppedPii, 0, 'none to drop: 0')
})
