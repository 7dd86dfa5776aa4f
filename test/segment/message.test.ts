import t from 'tap'
import { DateTime } from 'luxon'
import { isPlainObject, parseTime, PATH_TYPES, prepareMessage, type Prepared, type RequestEnvelope } from '../../src/segment/message.js'
import type { SegmentMessage } from '../../src/segment/types.js'
import { writeKeyFromBody, writeKeyFromHeader } from '../../src/segment/write-key.js'

const receivedAt = DateTime.fromISO('2024-05-01T12:00:00.000Z', { zone: 'utc' })
const batchEnvelope: RequestEnvelope = { receivedAt }

function accepted (prepared: Prepared): SegmentMessage {
  if (!prepared.ok) throw new Error(`expected the message to be accepted, got: ${prepared.error}`)
  return prepared.message
}

function rejected (prepared: Prepared): { error: string, messageId?: string } {
  if (prepared.ok) throw new Error(`expected the message to be rejected, got ${JSON.stringify(prepared.message)}`)
  return prepared
}

const ms = (iso: string) => DateTime.fromISO(iso).toMillis()

t.test('validation rules: each failure names the field and the rule', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['not an object', 'hello', /message must be a JSON object/],
    ['an array', [{ type: 'track' }], /message must be a JSON object/],
    ['null', null, /message must be a JSON object/],
    ['no type in a batch', { userId: 'u1', event: 'E' }, /type is required/],
    ['unknown type', { type: 'purchase', userId: 'u1' }, /type must be one of track, identify, page, screen, group, alias/],
    ['non-string type', { type: 1, userId: 'u1' }, /type must be one of/],
    ['no userId or anonymousId', { type: 'identify', traits: { a: 1 } }, /userId or anonymousId is required/],
    ['blank userId and no anonymousId', { type: 'identify', userId: '  ' }, /userId or anonymousId is required/],
    ['userId of the wrong type', { type: 'identify', userId: { id: 1 } }, /userId must be a string/],
    ['anonymousId of the wrong type', { type: 'identify', anonymousId: true }, /anonymousId must be a string/],
    ['track without event', { type: 'track', userId: 'u1' }, /event is required for track/],
    ['track with an empty event', { type: 'track', userId: 'u1', event: '  ' }, /event is required for track/],
    ['track with a numeric event', { type: 'track', userId: 'u1', event: 42 }, /event is required for track/],
    ['group without groupId', { type: 'group', userId: 'u1' }, /groupId is required for group/],
    ['groupId of the wrong type', { type: 'group', userId: 'u1', groupId: ['g'] }, /groupId must be a string/],
    ['alias without previousId', { type: 'alias', userId: 'u1' }, /previousId is required for alias/],
    ['alias without userId', { type: 'alias', anonymousId: 'a1', previousId: 'p1' }, /userId is required for alias/],
    ['messageId over 100 characters', { type: 'identify', userId: 'u1', messageId: 'm'.repeat(101) }, /messageId must be at most 100 characters/],
    ['numeric messageId', { type: 'identify', userId: 'u1', messageId: 7 }, /messageId must be a string/],
    ['properties an array', { type: 'track', userId: 'u1', event: 'E', properties: [1, 2] }, /properties must be an object/],
    ['properties a string', { type: 'track', userId: 'u1', event: 'E', properties: 'x' }, /properties must be an object/],
    ['traits a number', { type: 'identify', userId: 'u1', traits: 3 }, /traits must be an object/],
    ['context a string', { type: 'identify', userId: 'u1', context: 'c' }, /context must be an object/],
    ['integrations an array', { type: 'identify', userId: 'u1', integrations: [] }, /integrations must be an object/],
    ['page name not a string', { type: 'page', userId: 'u1', name: 5 }, /name must be a string/],
    ['page category not a string', { type: 'page', userId: 'u1', category: {} }, /category must be a string/],
    ['userId over 1,024 characters', { type: 'identify', userId: 'u'.repeat(1025) }, /userId must be at most 1024 characters/],
    ['anonymousId over 1,024 characters', { type: 'identify', anonymousId: 'a'.repeat(1025) }, /anonymousId must be at most 1024 characters/],
    ['previousId over 1,024 characters', { type: 'alias', userId: 'u1', previousId: 'p'.repeat(1025) }, /previousId must be at most 1024 characters/],
    ['groupId over 1,024 characters', { type: 'group', userId: 'u1', groupId: 'g'.repeat(1025) }, /groupId must be at most 1024 characters/],
    ['nested deeper than 64 levels', { type: 'identify', userId: 'u1', traits: nested(64) }, /nested deeper than 64 levels/],
    ['arrays nested deeper than 64 levels', { type: 'track', userId: 'u1', event: 'E', properties: { list: nestedArray(70) } }, /nested deeper than 64 levels/],
    ['more than 10,000 keys in all', { type: 'track', userId: 'u1', event: 'E', properties: manyKeys(10_001) }, /more than 10000 keys/]
  ]
  for (const [name, raw, error] of cases) {
    t.match(rejected(prepareMessage(raw, batchEnvelope)).error, error, name)
  }
})

/** `{d: {d: … {end: true}}}`: with the message around it, `levels` + 1 levels deep. */
function nested (levels: number): Record<string, unknown> {
  let value: Record<string, unknown> = { end: true }
  for (let i = 1; i < levels; i++) value = { d: value }
  return value
}

function nestedArray (levels: number): unknown[] {
  let value: unknown[] = []
  for (let i = 1; i < levels; i++) value = [value]
  return value
}

function manyKeys (count: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, i]))
}

t.test('the worker\'s bounds: 64 levels and 10,000 keys are fine, one more is not', async (t) => {
  // The message is level 1, its traits level 2: traits nested(63) reach level 64.
  accepted(prepareMessage({ type: 'identify', userId: 'u1', traits: nested(63) }, batchEnvelope))
  accepted(prepareMessage({ type: 'track', userId: 'u1', event: 'E', properties: manyKeys(10_000 - 4) }, batchEnvelope))
  accepted(prepareMessage({ type: 'identify', userId: 'u'.repeat(1024) }, batchEnvelope))
  // 20,000 levels: the check itself must not overflow the stack
  let deep: unknown = {}
  for (let i = 0; i < 20_000; i++) deep = { d: deep }
  t.match(rejected(prepareMessage({ type: 'identify', userId: 'u1', traits: deep }, batchEnvelope)).error, /nested deeper than 64 levels/)
})

t.test('a broken client clock does not cost the event: a time that is not one, or out of 1970–2100, is ignored', async (t) => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ['unparseable', { timestamp: 'yesterday' }],
    ['impossible', { timestamp: '2024-13-45T00:00:00Z' }],
    ['numeric', { timestamp: 1714564800000 }],
    ['past JavaScript\'s dates once corrected', { timestamp: '+275760-09-13T00:00:00Z', sentAt: '2020-01-01T00:00:00Z' }],
    ['after 2100', { timestamp: '2101-01-01T00:00:00Z' }],
    ['before 1970', { timestamp: '1969-12-31T23:59:59Z' }],
    ['an overlong text', { timestamp: '2024-05-01T12:00:00' + '0'.repeat(100_000) + 'Z' }],
    ['a bad sentAt with a good timestamp', { timestamp: '2024-05-01T11:59:00.000Z', sentAt: 'now' }]
  ]
  for (const [name, times] of cases) {
    const message = accepted(prepareMessage({ type: 'track', userId: 'u1', event: 'E', ...times }, { receivedAt }))
    t.equal(message.receivedAt, '2024-05-01T12:00:00.000Z', name)
    const expected = name.startsWith('a bad sentAt') ? '2024-05-01T11:59:00.000Z' : '2024-05-01T12:00:00.000Z'
    t.equal(message.timestamp, expected, `${name}: the timestamp falls back (to receivedAt, or to the client's own without a skew correction)`)
    t.equal(message.originalTimestamp, expected, `${name}: originalTimestamp too`)
    if (times.sentAt === '2020-01-01T00:00:00Z') t.equal(message.sentAt, '2020-01-01T00:00:00.000Z', `${name}: a good sentAt is kept`)
    else t.notOk('sentAt' in message, `${name}: no bad sentAt kept`)
  }
  // The edges are in range.
  t.equal(accepted(prepareMessage({ type: 'track', userId: 'u1', event: 'E', timestamp: '1970-01-01T00:00:00.000Z' }, { receivedAt })).originalTimestamp, '1970-01-01T00:00:00.000Z')
  t.equal(accepted(prepareMessage({ type: 'track', userId: 'u1', event: 'E', timestamp: '2100-12-31T23:59:59.999Z' }, { receivedAt })).originalTimestamp, '2100-12-31T23:59:59.999Z')
})

t.test('a rejected message reports its messageId (cut to 100 characters) so the client can find it', async (t) => {
  t.equal(rejected(prepareMessage({ type: 'track', userId: 'u1', messageId: 'm-1' }, batchEnvelope)).messageId, 'm-1')
  t.equal(rejected(prepareMessage({ type: 'track', userId: 'u1', messageId: 'x'.repeat(150) }, batchEnvelope)).messageId, 'x'.repeat(100))
  t.equal(rejected(prepareMessage({ type: 'track', userId: 'u1' }, batchEnvelope)).messageId, undefined)
})

t.test('every documented call is accepted with its minimum fields', async (t) => {
  const minimal: Record<string, Record<string, unknown>> = {
    track: { userId: 'u1', event: 'Order Completed' },
    identify: { anonymousId: 'a1' },
    page: { anonymousId: 'a1' },
    screen: { userId: 'u1' },
    group: { userId: 'u1', groupId: 'g1' },
    alias: { userId: 'u1', previousId: 'a1' }
  }
  for (const [type, fields] of Object.entries(minimal)) {
    t.equal(accepted(prepareMessage({ type, ...fields }, batchEnvelope)).type, type, type)
  }
  t.equal(accepted(prepareMessage({ type: 'identify', userId: 'u1', messageId: 'm'.repeat(100) }, batchEnvelope)).messageId, 'm'.repeat(100), 'a 100-character messageId is fine')
})

t.test('type comes from the path on single-message paths', async (t) => {
  const message = accepted(prepareMessage({ userId: 'u1', event: 'Signed Up' }, { receivedAt, pathType: 'track' }))
  t.equal(message.type, 'track', 'the path gives the type when the body has none')
  t.equal(accepted(prepareMessage({ type: 'track', userId: 'u1', event: 'E' }, { receivedAt, pathType: 'track' })).type, 'track', 'a body type equal to the path is fine (browser)')
  t.match(rejected(prepareMessage({ type: 'identify', userId: 'u1' }, { receivedAt, pathType: 'track' })).error, /type "identify" does not match the path's type "track"/)
  t.match(rejected(prepareMessage({ userId: 'u1' }, { receivedAt, pathType: 'track' })).error, /event is required for track/, 'the path type is validated like a body type')
  t.same(PATH_TYPES.t, 'track')
  t.same(PATH_TYPES.a, 'alias')
  t.equal(Object.keys(PATH_TYPES).length, 12, 'six long paths and six short ones')
})

t.test('server fields', async (t) => {
  t.test('messageId is generated when absent, kept when given', async (t) => {
    const a = accepted(prepareMessage({ type: 'identify', userId: 'u1' }, batchEnvelope))
    const b = accepted(prepareMessage({ type: 'identify', userId: 'u1', messageId: '' }, batchEnvelope))
    const c = accepted(prepareMessage({ type: 'identify', userId: 'u1', messageId: null }, batchEnvelope))
    for (const message of [a, b, c]) {
      t.type(message.messageId, 'string')
      t.ok(message.messageId.length > 10 && message.messageId.length <= 100, 'a generated id fits the 100-character rule')
    }
    t.not(a.messageId, b.messageId, 'generated ids differ')
    t.equal(accepted(prepareMessage({ type: 'identify', userId: 'u1', messageId: 'node-next-1-abc' }, batchEnvelope)).messageId, 'node-next-1-abc')
  })

  t.test('receivedAt is the server clock; without a client timestamp every time is receivedAt', async (t) => {
    const message = accepted(prepareMessage({ type: 'identify', userId: 'u1' }, batchEnvelope))
    t.equal(message.receivedAt, '2024-05-01T12:00:00.000Z')
    t.equal(message.originalTimestamp, '2024-05-01T12:00:00.000Z')
    t.equal(message.timestamp, '2024-05-01T12:00:00.000Z')
    t.notOk('sentAt' in message, 'no sentAt is invented')
  })

  t.test('without sentAt the client timestamp is kept as it is', async (t) => {
    const message = accepted(prepareMessage({ type: 'identify', userId: 'u1', timestamp: '2024-04-01T08:00:00+02:00' }, batchEnvelope))
    t.equal(ms(message.originalTimestamp), ms('2024-04-01T06:00:00Z'))
    t.equal(message.timestamp, message.originalTimestamp)
    t.match(message.timestamp, /Z$/, 'times are stored in UTC')
  })

  t.test('a client clock one hour behind is corrected from sentAt', async (t) => {
    // The event happened 2 s before the request was sent; the client's clock says 10:59:58 when
    // the server's says 12:00:00.
    const message = accepted(prepareMessage({
      type: 'track',
      userId: 'u1',
      event: 'E',
      timestamp: '2024-05-01T10:59:56.000Z',
      sentAt: '2024-05-01T10:59:58.000Z'
    }, batchEnvelope))
    t.equal(message.originalTimestamp, '2024-05-01T10:59:56.000Z', 'originalTimestamp is the client timestamp')
    t.equal(message.timestamp, '2024-05-01T11:59:58.000Z', 'timestamp = receivedAt − (sentAt − originalTimestamp)')
    t.equal(message.sentAt, '2024-05-01T10:59:58.000Z')
    t.equal(message.receivedAt, '2024-05-01T12:00:00.000Z')
  })

  t.test('a historical import keeps its distance from sentAt', async (t) => {
    const message = accepted(prepareMessage({ type: 'track', userId: 'u1', event: 'E', timestamp: '2023-05-01T12:00:00.000Z' }, {
      receivedAt,
      sentAt: DateTime.fromISO('2024-05-01T12:00:00.000Z', { zone: 'utc' })
    }))
    t.equal(message.timestamp, '2023-05-01T12:00:00.000Z')
  })

  t.test('per-message sentAt (browser) wins over the batch sentAt', async (t) => {
    const message = accepted(prepareMessage({
      type: 'track',
      userId: 'u1',
      event: 'E',
      timestamp: '2024-05-01T11:00:00.000Z',
      sentAt: '2024-05-01T11:00:10.000Z'
    }, { receivedAt, sentAt: DateTime.fromISO('2024-05-01T11:30:00.000Z', { zone: 'utc' }) }))
    t.equal(message.timestamp, '2024-05-01T11:59:50.000Z', 'skew computed from the message sentAt')
    t.equal(message.sentAt, '2024-05-01T11:00:10.000Z')
  })

  t.test('the batch sentAt applies to a message without its own', async (t) => {
    const message = accepted(prepareMessage({ type: 'track', userId: 'u1', event: 'E', timestamp: '2024-05-01T11:00:00.000Z' }, {
      receivedAt,
      sentAt: DateTime.fromISO('2024-05-01T11:00:30.000Z', { zone: 'utc' })
    }))
    t.equal(message.timestamp, '2024-05-01T11:59:30.000Z')
    t.equal(message.sentAt, '2024-05-01T11:00:30.000Z')
  })
})

t.test('batch context and integrations merge into each message; the message wins', async (t) => {
  const envelope: RequestEnvelope = {
    receivedAt,
    context: { library: { name: 'analytics-go' }, ip: '10.0.0.1' },
    integrations: { All: false, Mixpanel: true }
  }
  const message = accepted(prepareMessage({
    type: 'identify',
    userId: 'u1',
    context: { ip: '192.0.2.7', locale: 'fr-FR' },
    integrations: { Mixpanel: false, Amplitude: { session_id: 1 } }
  }, envelope))
  t.same(message.context, { library: { name: 'analytics-go' }, ip: '192.0.2.7', locale: 'fr-FR' })
  t.same(message.integrations, { All: false, Mixpanel: false, Amplitude: { session_id: 1 } })

  const bare = accepted(prepareMessage({ type: 'identify', userId: 'u1' }, envelope))
  t.same(bare.context, envelope.context, 'a message without context gets the batch context')
  t.same(bare.integrations, envelope.integrations)

  const alone = accepted(prepareMessage({ type: 'identify', userId: 'u1', context: { ip: '1.2.3.4' } }, batchEnvelope))
  t.same(alone.context, { ip: '1.2.3.4' }, 'without a batch context the message context is kept as is')
  t.notOk('integrations' in alone)

  t.same(envelope.context, { library: { name: 'analytics-go' }, ip: '10.0.0.1' }, 'the batch context itself is not changed')
})

t.test('ids: numbers become strings; the rest of the message is kept', async (t) => {
  const message = accepted(prepareMessage({
    type: 'group',
    userId: 12345,
    anonymousId: 0,
    groupId: 77,
    traits: { plan: 'pro' },
    custom: { nested: [1, 2] }
  }, batchEnvelope))
  t.equal(message.userId, '12345')
  t.equal(message.anonymousId, '0', 'zero is an id, not a missing one')
  t.equal(message.groupId, '77')
  t.same(message.traits, { plan: 'pro' })
  t.same(message.custom, { nested: [1, 2] }, 'unknown fields pass through')
  // A blank id is a missing one: stored as '' it would make one profile of every anonymous visitor.
  const anonymous = accepted(prepareMessage({ type: 'identify', userId: '', anonymousId: 'a1' }, batchEnvelope))
  t.notOk('userId' in anonymous, 'a blank userId is dropped, not stored as ""')
  t.equal(anonymous.anonymousId, 'a1')
  const nullId = accepted(prepareMessage({ type: 'identify', userId: 'u1', anonymousId: null }, batchEnvelope))
  t.notOk('anonymousId' in nullId, 'a null anonymousId is dropped')
  const alias = accepted(prepareMessage({ type: 'alias', userId: 1, previousId: 2 }, batchEnvelope))
  t.equal(alias.userId, '1')
  t.equal(alias.previousId, '2')
})

t.test('the write key is not stored with the message', async (t) => {
  const raw = { type: 'track', userId: 'u1', event: 'E', writeKey: 'secret-key' }
  const message = accepted(prepareMessage(raw, batchEnvelope))
  t.notOk('writeKey' in message)
  t.notMatch(JSON.stringify(message), /secret-key/)
})

t.test('parseTime and isPlainObject', async (t) => {
  t.equal(parseTime(undefined), undefined)
  t.equal(parseTime(null), undefined)
  t.equal(parseTime(12), null)
  t.equal(parseTime('not a date'), null)
  t.equal(parseTime('2024-05-01T12:00:00+02:00')?.toISO(), '2024-05-01T10:00:00.000Z')
  t.ok(isPlainObject({}))
  t.notOk(isPlainObject([]))
  t.notOk(isPlainObject(null))
  t.notOk(isPlainObject('x'))
})

t.test('writeKeyFromHeader', async (t) => {
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  t.equal(writeKeyFromHeader(`Basic ${b64('abc123:')}`), 'abc123', 'Basic with the colon')
  t.equal(writeKeyFromHeader('Basic YWJjMTIzOg=='), 'abc123', 'the documented example')
  t.equal(writeKeyFromHeader(`Basic ${b64('abc123')}`), 'abc123', 'Basic without the colon')
  t.equal(writeKeyFromHeader(`basic ${b64('abc123:')}`), 'abc123', 'lower-case scheme')
  t.equal(writeKeyFromHeader(`BASIC ${b64('abc123:')}`), 'abc123', 'upper-case scheme')
  t.equal(writeKeyFromHeader(`Basic ${b64('abc123:ignored')}`), 'abc123', 'a password is ignored')
  t.equal(writeKeyFromHeader(undefined), undefined, 'no header')
  t.equal(writeKeyFromHeader(''), undefined)
  t.equal(writeKeyFromHeader('Basic'), undefined, 'scheme only')
  t.equal(writeKeyFromHeader('Basic '), undefined, 'scheme and a space only')
  t.equal(writeKeyFromHeader(`Basic ${b64(':')}`), undefined, 'empty user name')
  t.equal(writeKeyFromHeader('Basic !!!!'), undefined, 'not base64 at all')
  t.equal(writeKeyFromHeader('Bearer some-oauth-token'), undefined, 'Bearer (OAuth) carries no write key')
  t.equal(writeKeyFromHeader('garbage'), undefined)
})

t.test('writeKeyFromBody: the body key, then the first message key', async (t) => {
  t.equal(writeKeyFromBody({ writeKey: 'body-key' }, [{ writeKey: 'message-key' }]), 'body-key')
  t.equal(writeKeyFromBody({}, [{ type: 'track' }, { writeKey: 'second' }, { writeKey: 'third' }]), 'second')
  t.equal(writeKeyFromBody({ writeKey: '' }, [{ writeKey: 'message-key' }]), 'message-key', 'an empty body key does not count')
  t.equal(writeKeyFromBody({ writeKey: 42 }, [null, 'x', { writeKey: 7 }]), undefined, 'non-strings and non-objects are skipped')
  t.equal(writeKeyFromBody({}, []), undefined)
})
