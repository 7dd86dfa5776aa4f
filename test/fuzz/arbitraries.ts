// fast-check generators for the fuzz tests. Messages and bodies are generated as JSON *text*, not
// values: text can spell what no JavaScript value serialises to — a `__proto__` own key, escaped
// keys (`"\u005f_proto__"`), duplicate keys, thousands of levels of nesting (JSON.stringify
// overflows near 5,000), `1e400`. Match-key-like traits carry distinctive values with a marker
// (see PII_MARKER) so that the tests can look for them in Redis and in the log.
import fc from 'fast-check'

/** A JSON text fragment (a value, or a `"key"` with its quotes). */
export type Json = string

const q = (value: string): Json => JSON.stringify(value)

/** `{k: v, …}` from entries whose keys are already JSON text. */
export function objectText (entries: ReadonlyArray<readonly [Json, Json]>): Json {
  return `{${entries.map(([key, value]) => `${key}:${value}`).join(',')}}`
}

export const hex12 = fc.array(fc.constantFrom(...'0123456789abcdef'), { minLength: 12, maxLength: 12 }).map((chars) => chars.join(''))
const digits8 = fc.array(fc.constantFrom(...'0123456789'), { minLength: 8, maxLength: 8 }).map((chars) => chars.join(''))

// ─── PII ────────────────────────────────────────────────────────────────────────────────────────
// Every generated match-key value holds a marker: `fz<c><12 hex>` (emails, names, zips, dates) or
// `555 010<n> <8 digits>` (phones). `c`/`n` says where it was put, so a marker found at rest says
// which invariant it breaks:
//   s / 0: a trait spelt as the service's match-key traits (`email`, `phone`, `firstName`, … and
//          what folds to them: `Email`, `first_name`) — never stored raw on this branch;
//   k / 1: a trait spelt otherwise (`phone_number`, `mobile`, `email_address`, `e-mail`,
//          `zip_code`, `dob`, `birth_date`) — hashed, not stored raw, once main has that work;
//   p / 2: a track property of either spelling (kept out of custom_data once main has that work).
export const PII_MARKER = /fz([skp])[0-9a-f]{12}|555 010([012]) \d{8}/gi
export type PiiKind = 'strict' | 'spelling' | 'property'
export function piiKind (marker: string): PiiKind {
  const code = marker.toLowerCase().startsWith('fz') ? marker[2].toLowerCase() : 'skp'[Number(marker[7])]
  return code === 's' ? 'strict' : code === 'k' ? 'spelling' : 'property'
}

type Shape = 'email' | 'phone' | 'name' | 'zip' | 'date'
const STRICT_TRAITS: ReadonlyArray<readonly [string, Shape]> = [
  ['email', 'email'], ['phone', 'phone'], ['firstName', 'name'], ['lastName', 'name'], ['name', 'name'],
  ['birthday', 'date'], ['Email', 'email'], ['first_name', 'name'], ['last_name', 'name']
]
const SPELT_TRAITS: ReadonlyArray<readonly [string, Shape]> = [
  ['phone_number', 'phone'], ['mobile', 'phone'], ['email_address', 'email'], ['e-mail', 'email'],
  ['zip_code', 'zip'], ['dob', 'date'], ['birth_date', 'date']
]

function piiValue (shape: Shape, code: 's' | 'k' | 'p', hex: string, digits: string, upper: boolean): unknown {
  const marker = `${upper ? 'FZ' : 'fz'}${code}${hex}`
  const phoneGroup = { s: '0', k: '1', p: '2' }[code]
  switch (shape) {
    case 'email': return upper ? `Fuzz-${marker}@Example.COM` : `fuzz-${marker}@example.com`
    case 'phone': return `+1 555 010${phoneGroup} ${digits}`
    case 'name': return `${marker} Fuzzington`
    case 'zip': return `${marker}-1234`
    case 'date': return `1990-01-02 ${marker}`
  }
}

/** A `"trait": value` entry with a marked match-key value; `where` chooses the spellings and the code. */
export function piiEntry (where: 'traits' | 'properties'): fc.Arbitrary<readonly [Json, Json]> {
  return fc.tuple(fc.constantFrom(...STRICT_TRAITS, ...SPELT_TRAITS), hex12, digits8, fc.boolean(), fc.boolean())
    .map(([[name, shape], hex, digits, upper, asList]) => {
      const strict = STRICT_TRAITS.some(([n]) => n === name)
      const code = where === 'properties' ? 'p' : strict ? 's' : 'k'
      const value = piiValue(shape, code, hex, digits, upper)
      // spec: email and phone may be lists
      const json = asList && (shape === 'email' || shape === 'phone') ? JSON.stringify([value, 'second-' + String(value)]) : JSON.stringify(value)
      return [q(name), json] as const
    })
}

/** A marked `address` trait (the spec's object: city, postalCode, …), a match key as a whole. */
export const piiAddress = fc.tuple(hex12, fc.constantFrom('US', 'us', 'United States', 'FR', 'XX', '')).map(([hex, country]) =>
  [q('address'), JSON.stringify({ city: `fzs${hex} City`, postalCode: `fzs${hex}`, street: `1 fzs${hex} St`, country })] as const)

// ─── Leaves ─────────────────────────────────────────────────────────────────────────────────────
const SPECIAL_STRINGS = [
  '', ' ', '\u0000', 'a\u0000b', '\ud800', '\udfff', '\ud83d', 'x\udc00y', '\u202e', '\u200f', '\u200e',
  'e\u0301', '\u0301', '😀', '👩‍👩‍👧‍👦', '\ufeff', '\u2028', '\u2029', '\uffff', '\u0085', 'null',
  'undefined', 'NaN', 'Infinity', '-Infinity', '__proto__', 'constructor', 'prototype', 'toString',
  'hasOwnProperty', 'Order Completed', 'order completed', 'Order Completed ', 'USD', 'usd', 'XXX',
  'LDU', 'ＵＳＤ', 'All', 'Facebook Offline Conversions', '%s%d%n', '{{7*7}}', '$' + '{x}', '\\', '"', '\'',
  '<script>', '\r\n', 'l:123456789012345'
]
const NUMERIC_STRINGS = [
  '10', ' 10 ', '1e3', '1e400', '-1e400', '-1', '-0', '0x1A', '1_000', '١٢٣', '１２３', '10,50', '$10',
  '10.00', '.5', '5.', '1.2.3', '00012', '9007199254740993', '1'.repeat(400), '0.' + '0'.repeat(300) + '1',
  '1'.repeat(5000) + 'x', '+5', '5e-324', 'Infinity'
]
/** Times a client may send: far years, year 0, negative years, out-of-range fields, offsets. */
export const TIME_STRINGS = [
  '+275760-09-13T00:00:00Z', '+275760-09-13T00:00:00.000Z', '+275760-09-14T00:00:00Z',
  '-271821-04-20T00:00:00Z', '-271821-04-19T00:00:00Z', '0000-01-01T00:00:00Z', '0000-01-01T00:00:00.000Z',
  '-000001-01-01T00:00:00Z', '-000001-12-31T23:59:59.999Z', '1969-12-31T23:59:59.999Z',
  '1970-01-01T00:00:00Z', '2100-12-31T23:59:59.999Z', '2101-01-01T00:00:00Z', '9999-12-31T23:59:59Z',
  '2024-02-30T00:00:00Z', '2024-13-01T00:00:00Z', '2024-05-01T24:00:00Z', '2024-05-01T12:00:00.123456789+05:30',
  '2024-05-01T12:00:00+14:00', '2024-05-01T12:00:00-12:00', '2024-05-01', '2024-W18-3', '2024-122', 'T', '',
  'now', '1714564800000', '2024-05-01T12:00:00Z' + ' '.repeat(60), '2024-05-01T12:00:00\u0000Z'
]

export const timeText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: -3 * 86_400_000, max: 5 * 60_000 }).map((offset) => q(new Date(Date.now() + offset).toISOString())) },
  { weight: 3, arbitrary: fc.constantFrom(...TIME_STRINGS).map(q) },
  { weight: 1, arbitrary: fc.date({ noInvalidDate: true }).map((date) => q(date.toISOString())) },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })).map((n) => JSON.stringify(n)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map(q) }
)

/** Strings, as JSON text: any code units (lone surrogates included), graphemes, the special ones. */
export const stringText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 20 }).map(q) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }).map(q) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 8 }).map(q) },
  { weight: 2, arbitrary: fc.string({ unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), maxLength: 3 }).map(q) },
  { weight: 3, arbitrary: fc.constantFrom(...SPECIAL_STRINGS).map(q) },
  { weight: 2, arbitrary: fc.constantFrom(...NUMERIC_STRINGS).map(q) },
  { weight: 1, arbitrary: fc.constantFrom(...TIME_STRINGS).map(q) },
  // escapes as a client may write them: a lone surrogate, NUL, an escaped slash
  { weight: 1, arbitrary: fc.constantFrom('"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', '"\\/"', '"\\u005f_proto__"', '"\\u202e"') }
)

export const numberText: fc.Arbitrary<Json> = fc.oneof(
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)),
  fc.constantFrom('1e400', '-1e400', '-0', '1e-400', '123456789012345678901234567890', '9007199254740993', '0.1', '1E2', '-1', '0')
)

const leafText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom('null', 'true', 'false') },
  { weight: 3, arbitrary: numberText },
  { weight: 5, arbitrary: stringText }
)

const SPECIAL_KEYS = [
  'toString', 'valueOf', 'hasOwnProperty', '__defineGetter__', 'prototype', 'constructor',
  '', ' ', 'All', 'Facebook Offline Conversions', 'h:1', 't:plan', 'a:vip', 'w:x.0', '_d', '_k', '_p', '#',
  'length', '0', 'type', 'userId', 'event', 'revenue', 'currency', 'value', 'price', 'products', 'order_id',
  'category', 'content_ids', 'custom_data', 'event_id', 'relay', 'personas', 'consent', 'leadId',
  'dataProcessingOptions', 'traits', '\ud800', '😀', 'e\u0301', '\u202e'
]
/**
 * Prototype keys, also spelt with escapes (which a parse reads as the key). The API refuses a
 * message holding one: rare enough that most messages still get through.
 */
const PROTOTYPE_KEYS = [
  '"__proto__"', '"\\u005f_proto__"', '"\\u005F\\u005Fproto\\u005F\\u005F"', '"__pro\\u0074o__"', '"constructo\\u0072"', '"\\u0063onstructor"'
]
export const prototypeKeyText: fc.Arbitrary<Json> = fc.constantFrom(...PROTOTYPE_KEYS)
/** Keys as text: any string, the special ones, now and then a prototype key. */
export const keyText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 60, arbitrary: fc.string({ maxLength: 12 }).map(q) },
  { weight: 10, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }).map(q) },
  { weight: 20, arbitrary: fc.constantFrom(...SPECIAL_KEYS).map(q) },
  { weight: 1, arbitrary: prototypeKeyText }
)

/** Deep nesting as text: `[[[…]]]` or `{"d":{"d":…}}`, past what JSON.stringify can write. */
export const deepText: fc.Arbitrary<Json> = fc.tuple(
  fc.oneof(fc.integer({ min: 60, max: 70 }), fc.integer({ min: 71, max: 6000 }), fc.integer({ min: 6000, max: 30_000 })),
  fc.constantFrom('array', 'object', 'proto')
).map(([levels, kind]) => {
  if (kind === 'array') return '['.repeat(levels) + ']'.repeat(levels)
  if (kind === 'object') return '{"d":'.repeat(levels) + 'true' + '}'.repeat(levels)
  // `constructor.prototype` all the way down
  return '{"constructor":{"prototype":'.repeat(levels >> 1) + '1' + '}}'.repeat(levels >> 1)
})

/** A string near the message limit (32 KB) or far past it. */
export const hugeStringText: fc.Arbitrary<Json> = fc.tuple(
  fc.oneof(fc.integer({ min: 32 * 1024 - 400, max: 32 * 1024 + 50 }), fc.integer({ min: 1000, max: 70_000 })),
  fc.constantFrom('x', 'é', '😀', '\\u0000', '1')
).map(([length, unit]) => unit === '\\u0000' ? `"${unit.repeat(length >> 3)}"` : q(unit.repeat(unit === '😀' ? length >> 2 : unit === 'é' ? length >> 1 : length)))

/** Deep nesting or a huge string: rare in a message (one makes it refused), so given its own weight where used. */
export const poisonText: fc.Arbitrary<Json> = fc.oneof({ weight: 4, arbitrary: deepText }, { weight: 1, arbitrary: hugeStringText })

/** Any JSON value as text, objects with adversarial keys (deep nesting and huge strings: poisonText). */
export const { value: valueText } = fc.letrec<{ value: Json, array: Json, object: Json }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { weight: 6, arbitrary: leafText },
    { weight: 2, arbitrary: tie('array') },
    { weight: 3, arbitrary: tie('object') },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) }
  ),
  array: fc.array(tie('value'), { maxLength: 5 }).map((items) => `[${items.join(',')}]`),
  object: fc.array(fc.tuple(keyText, tie('value')), { maxLength: 6 }).map(objectText)
}))

/** An object as text: adversarial entries, and sometimes marked PII (`pii`). */
export function objectOf (extra: Array<fc.Arbitrary<readonly [Json, Json]>> = []): fc.Arbitrary<Json> {
  const entry = fc.oneof(
    { weight: 40, arbitrary: fc.tuple(keyText, valueText) },
    ...extra.map((arbitrary) => ({ weight: 20, arbitrary })),
    // about one message in ten holds one somewhere
    { weight: 1, arbitrary: fc.tuple(keyText, poisonText) }
  )
  return fc.array(entry, { maxLength: 8 }).map(objectText)
}

// ─── Messages ───────────────────────────────────────────────────────────────────────────────────
/** Event names the fuzz destination maps (so generated tracks reach the transform and Meta). */
export const MAPPED_EVENTS = ['Order Completed', 'Product Viewed', 'Lead Generated', 'Signed Up', 'constructor']
const TYPES = ['track', 'identify', 'page', 'screen', 'group', 'alias']

const idText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 40 }).map((n) => q(`fz-user-${n}`)) },
  { weight: 2, arbitrary: stringText },
  { weight: 1, arbitrary: fc.integer().map(String) },
  { weight: 1, arbitrary: fc.constantFrom(q('x'.repeat(1024)), q('x'.repeat(1025)), q('😀'.repeat(512)), q('__proto__'), q('constructor'), q('anon:x'), q('{x}'), q('a:b:{c}'), 'null', '""', '" "', '{}', '[]', '1e400', 'true') }
)

const messageIdText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 6, arbitrary: hex12.map((hex) => q(`fzm-${hex}`)) },
  { weight: 2, arbitrary: stringText },
  { weight: 1, arbitrary: fc.constantFrom(q('m'.repeat(100)), q('m'.repeat(101)), q('😀'.repeat(50)), q('😀'.repeat(51)), '1', 'null', '""', '{}') }
)

const eventText: fc.Arbitrary<Json> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...MAPPED_EVENTS).map(q) },
  { weight: 3, arbitrary: stringText },
  { weight: 1, arbitrary: fc.constantFrom(q('E'.repeat(200)), q('E'.repeat(201)), q('é'.repeat(101)), q('E'.repeat(30_000)), '1', 'null', '{}', '[]') }
)

const revenueText: fc.Arbitrary<Json> = fc.oneof(numberText, fc.constantFrom(...NUMERIC_STRINGS).map(q), valueText)
const currencyText: fc.Arbitrary<Json> = fc.oneof(fc.constantFrom('USD', 'usd', ' eur ', 'XXX', 'ＵＳＤ', '', 'US', 'USDD').map(q), valueText)

const propertiesText = objectOf([
  fc.tuple(fc.constantFrom('revenue', 'value', 'price', 'total').map(q), revenueText),
  fc.tuple(fc.constant(q('currency')), currencyText),
  fc.tuple(fc.constant(q('products')), fc.array(objectOf([fc.tuple(fc.constant(q('product_id')), fc.oneof(stringText, numberText, valueText))]), { maxLength: 4 }).map((items) => `[${items.join(',')}]`)),
  fc.tuple(fc.constantFrom('order_id', 'product_id', 'category').map(q), fc.oneof(stringText, numberText, valueText)),
  piiEntry('properties')
])

const traitsText = objectOf([piiEntry('traits'), piiAddress, fc.tuple(fc.constantFrom('plan', 'age', 'vip', 'tier').map(q), fc.oneof(leafText, valueText))])

const dataProcessingText: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom('[["LDU"],1,1000]', '[["LDU"],0,0]', '[[]]', '[["ldu"]]', '[["LDU"],-1]', '[["LDU"],1.5]', '[]', '[[],1,2,3]', '"LDU"', 'null'),
  valueText
)

const contextText = objectOf([
  fc.tuple(fc.constant(q('traits')), traitsText),
  fc.tuple(fc.constant(q('Facebook Offline Conversions')), objectOf([fc.tuple(fc.constant(q('leadId')), fc.oneof(fc.constantFrom('123456789012345', 'l:123456789012345', '1'.repeat(65)).map(q), numberText, valueText))])),
  fc.tuple(fc.constant(q('relay')), objectOf([fc.tuple(fc.constant(q('destinationIds')), valueText)])),
  fc.tuple(fc.constant(q('personas')), objectOf([
    fc.tuple(fc.constant(q('computation_class')), fc.constantFrom('"audience"', '"trait"', '1', 'null')),
    fc.tuple(fc.constant(q('computation_key')), fc.oneof(fc.constantFrom('__proto__', 'constructor', 'toString', 'vip', 'email').map(q), stringText))
  ])),
  fc.tuple(fc.constant(q('consent')), valueText)
])

const integrationsText = objectOf([
  fc.tuple(fc.constant(q('All')), fc.oneof(fc.constantFrom('true', 'false', 'null', '"false"', '0'), valueText)),
  fc.tuple(fc.constant(q('Facebook Offline Conversions')), fc.oneof(
    fc.constantFrom('true', 'false', 'null', '{}'),
    objectOf([fc.tuple(fc.constant(q('dataProcessingOptions')), dataProcessingText)])
  ))
])

/** `arbitrary`'s value with probability `present`, else null. */
export function maybe<T> (arbitrary: fc.Arbitrary<T>, present: number): fc.Arbitrary<T | null> {
  // oneof's weights, not a generated number: fast-check biases numbers toward their bounds.
  const weight = Math.round(present * 100)
  return fc.oneof({ weight, arbitrary }, { weight: 100 - weight, arbitrary: fc.constant(null) })
}

function field (name: string, value: fc.Arbitrary<Json>, present = 0.85): fc.Arbitrary<ReadonlyArray<readonly [Json, Json]>> {
  return maybe(value, present).map((v) => v === null ? [] : [[q(name), v] as const])
}

/**
 * A message meant to get far: mostly a valid track or identify of a known user, a mapped event, a
 * recent time — its properties, traits, context and integrations adversarial.
 */
export const plausibleMessage: fc.Arbitrary<Json> = fc.tuple(
  field('type', fc.oneof({ weight: 8, arbitrary: fc.constantFrom('track', 'identify').map(q) }, { weight: 2, arbitrary: fc.constantFrom(...TYPES).map(q) }, { weight: 1, arbitrary: stringText }), 0.97),
  field('userId', idText, 0.85),
  field('anonymousId', idText, 0.3),
  field('event', eventText, 0.95),
  field('messageId', messageIdText, 0.8),
  field('timestamp', timeText, 0.8),
  field('sentAt', timeText, 0.2),
  field('properties', propertiesText, 0.8),
  field('traits', traitsText, 0.7),
  field('context', contextText, 0.7),
  field('integrations', integrationsText, 0.3),
  field('groupId', idText, 0.1),
  field('previousId', idText, 0.1),
  fc.array(fc.tuple(keyText, valueText), { maxLength: 2 })
).map((parts) => objectText(parts.flat()))

/** A message with anything in any field, or not an object at all. */
export const wildMessage: fc.Arbitrary<Json> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.tuple(
      field('type', fc.oneof(fc.constantFrom(...TYPES).map(q), valueText), 0.8),
      field('userId', fc.oneof(idText, valueText), 0.6),
      field('anonymousId', fc.oneof(idText, valueText), 0.3),
      field('event', fc.oneof(eventText, valueText), 0.6),
      field('messageId', fc.oneof(messageIdText, valueText), 0.5),
      field('timestamp', fc.oneof(timeText, valueText), 0.5),
      field('properties', valueText, 0.5),
      field('traits', fc.oneof(traitsText, valueText), 0.4),
      field('context', valueText, 0.4),
      field('integrations', valueText, 0.3),
      fc.array(fc.tuple(keyText, fc.oneof({ weight: 10, arbitrary: valueText }, { weight: 1, arbitrary: poisonText })), { maxLength: 4 })
    ).map((parts) => objectText(parts.flat()))
  },
  { weight: 1, arbitrary: valueText }
)

export const messageText: fc.Arbitrary<Json> = fc.oneof({ weight: 3, arbitrary: plausibleMessage }, { weight: 1, arbitrary: wildMessage })

/** The rest of a batch body besides `batch`: sentAt, context, integrations, writeKey, others. */
export const batchEnvelope: fc.Arbitrary<ReadonlyArray<readonly [Json, Json]>> = fc.tuple(
  field('sentAt', timeText, 0.6),
  // Anything but an object here refuses the whole batch: now and then.
  field('context', fc.oneof({ weight: 8, arbitrary: contextText }, { weight: 1, arbitrary: valueText }), 0.3),
  field('integrations', fc.oneof({ weight: 8, arbitrary: integrationsText }, { weight: 1, arbitrary: valueText }), 0.2),
  field('writeKey', stringText, 0.1),
  fc.array(fc.tuple(keyText, valueText), { maxLength: 2 })
).map((parts) => parts.flat())

/** How a batch's messages are framed: `batch` spelt plainly (so message sizes are measured on the text). */
export interface GeneratedBatch {
  messages: Json[]
  envelope: ReadonlyArray<readonly [Json, Json]>
  /** Where the good neighbours go, as fractions of the batch. */
  neighbourAt: number[]
}

export const generatedBatch: fc.Arbitrary<GeneratedBatch> = fc.record({
  messages: fc.array(messageText, { minLength: 0, maxLength: 12 }),
  envelope: batchEnvelope,
  neighbourAt: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 3 })
})
