import { randomUUID } from 'node:crypto'
import { deflateSync, gzipSync } from 'node:zlib'
import type { LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { basicAuth, buildTestApp, type TestContext } from '../helpers/app.js'
import type { StoredRequest } from '../../jobs/queues.js'
import { eventually, freshPrefix, ingestQueue } from '../helpers/ingest-queue.js'
import { send, sourceStats } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

// One redis-server for the file; every app below gets a key prefix of its own.
const redis = await startTestRedis()
t.teardown(() => redis.close())

/** Every non-2xx ingestion answer: Segment's `{success: false, error}`, CORS included. */
function assertIngestError (t: Test, res: LightMyRequestResponse, statusCode: number, error: RegExp, name = `answers ${statusCode}`) {
  t.equal(res.statusCode, statusCode, name)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['error', 'success'], `${name}: body is {success, error}`)
  t.equal(body.success, false, `${name}: success is false`)
  t.match(body.error, error, `${name}: the error says why`)
  t.equal(res.headers['access-control-allow-origin'], '*', `${name}: with CORS`)
}

function assertOk (t: Test, res: LightMyRequestResponse, name = 'answers 200 {success: true}') {
  t.equal(res.statusCode, 200, name)
  t.same(res.json(), { success: true }, name)
}

const ctx: TestContext = await buildTestApp(t, { env: { ROLE: 'api' }, redis: freshPrefix(redis) })
const { queue: storedQueue, stored } = ingestQueue(t, ctx.redis)
const { app } = ctx

const track = (fields: Record<string, unknown> = {}) => ({ type: 'track', userId: 'u1', event: 'Order Completed', properties: { value: 10 }, ...fields })

t.test('every ingestion path, with and without a trailing slash', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const bodies: Record<string, Record<string, unknown>> = {
    track: { userId: 'u1', event: 'Signed Up' },
    identify: { userId: 'u1', traits: { plan: 'pro' } },
    page: { anonymousId: 'a1', name: 'Home' },
    screen: { userId: 'u1', name: 'Settings' },
    group: { userId: 'u1', groupId: 'g1' },
    alias: { userId: 'u1', previousId: 'a1' }
  }
  const expected: string[] = []
  for (const [type, body] of Object.entries(bodies)) {
    for (const path of [`/v1/${type}`, `/v1/${type}/`, `/v1/${type[0]}`, `/v1/${type[0]}/`]) {
      const messageId = `${path}-${randomUUID()}`
      assertOk(t, await send(app, path, { ...body, messageId }, { writeKey }), `POST ${path}`)
      expected.push(`${type} ${messageId}`)
    }
  }
  for (const path of ['/v1/batch', '/v1/batch/', '/v1/b', '/v1/b/', '/v1/import', '/v1/import/']) {
    const messageId = `${path}-${randomUUID()}`
    assertOk(t, await send(app, path, { batch: [{ type: 'identify', userId: 'u1', messageId }] }, { writeKey }), `POST ${path}`)
    expected.push(`identify ${messageId}`)
  }
  const messages = await stored(id)
  t.same(messages.map((m) => `${m.type} ${m.messageId}`), expected, 'every message stored once, with the type its path gives')
})

t.test('write key', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const cases: Array<[string, string, unknown, Parameters<typeof send>[3]]> = [
    ['Basic with the colon', '/v1/track', track({ messageId: 'auth-1' }), { writeKey }],
    ['Basic without the colon', '/v1/track', track({ messageId: 'auth-2' }), { writeKey, auth: 'basic-no-colon' }],
    ['lower-case basic', '/v1/track', track({ messageId: 'auth-3' }), { headers: { authorization: basicAuth(writeKey).replace('Basic', 'basic') } }],
    ['writeKey in a single message body', '/v1/t', track({ messageId: 'auth-4', writeKey }), {}],
    ['writeKey at the top of a batch', '/v1/batch', { batch: [track({ messageId: 'auth-5' })], writeKey }, {}],
    ['writeKey in a batch message only', '/v1/batch', { batch: [track({ messageId: 'auth-6', writeKey })] }, {}],
    ['OAuth Bearer plus writeKey in the body', '/v1/batch', { batch: [track({ messageId: 'auth-7' })], writeKey }, { headers: { authorization: 'Bearer some-oauth-token' } }]
  ]
  for (const [name, path, body, options] of cases) assertOk(t, await send(app, path, body, options), name)
  t.same((await stored(id)).map((m) => m.messageId), ['auth-1', 'auth-2', 'auth-3', 'auth-4', 'auth-5', 'auth-6', 'auth-7'], 'all stored for the source')
  t.notOk((await stored(id)).some((m) => 'writeKey' in m), 'no stored message carries the write key')

  assertIngestError(t, await send(app, '/v1/track', track()), 401, /missing write key/, 'no key at all')
  assertIngestError(t, await send(app, '/v1/batch', { batch: [track()] }), 401, /missing write key/, 'no key in a batch')
  assertIngestError(t, await send(app, '/v1/track', track(), { writeKey: 'not-a-key' }), 401, /^unknown write key$/, 'unknown key in Basic')
  assertIngestError(t, await send(app, '/v1/batch', { batch: [track()], writeKey: 'not-a-key' }), 401, /unknown write key/, 'unknown key in the body')
  assertIngestError(t, await send(app, '/v1/track', track(), { headers: { authorization: 'Bearer x' } }), 401, /missing write key/, 'Bearer without a body key')
  t.equal((await stored(id)).length, 7, 'nothing more stored')
})

t.test('bodies are JSON whatever the Content-Type says', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  // Hand-written clients send anything, malformed media types included.
  const types = ['application/json', 'application/json; charset=utf-8', 'text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'json', 'text', '', undefined]
  for (const [i, type] of types.entries()) {
    assertOk(t, await send(app, '/v1/track', JSON.stringify(track({ messageId: `ct-${i}` })), { writeKey, headers: { 'content-type': type } }), `content-type ${type ?? 'absent'}`)
  }
  t.same((await stored(id)).map((m) => m.messageId), types.map((_, i) => `ct-${i}`))
})

t.test('bad JSON', async (t) => {
  const { writeKey } = await ctx.createSource()
  assertIngestError(t, await send(app, '/v1/track', '{"userId": "u1",', { writeKey }), 400, /malformed JSON/, 'truncated JSON')
  assertIngestError(t, await send(app, '/v1/batch', 'hello', { writeKey, headers: { 'content-type': 'text/plain' } }), 400, /malformed JSON/, 'not JSON, text/plain')
  assertIngestError(t, await send(app, '/v1/track', '', { writeKey }), 400, /^the body is empty/, 'empty body')
  assertIngestError(t, await send(app, '/v1/batch', '', { writeKey, headers: { 'content-type': undefined } }), 400, /must be a JSON object with a batch array/, 'no body and no Content-Type')
  assertIngestError(t, await send(app, '/v1/track', '[1,2]', { writeKey }), 400, /must be a JSON object/, 'an array for a single message')
  assertIngestError(t, await send(app, '/v1/batch', '{"batch": {}}', { writeKey }), 400, /batch must be an array/, 'batch not an array')
  assertIngestError(t, await send(app, '/v1/batch', '{"events": []}', { writeKey }), 400, /batch must be an array/, 'no batch')
  assertIngestError(t, await send(app, '/v1/track', '{"userId": "u1", "__proto__": {"admin": true}}', { writeKey }), 400, /forbidden key/, '__proto__')
  // In a batch, the message with one is rejected alone: a client drops a batch answered 400.
  const poisoned = await send(app, '/v1/batch', '{"batch": [{"type": "identify", "userId": "u1"}, {"type": "identify", "userId": "u1", "constructor": {"prototype": {"admin": true}}}, {"type": "identify", "userId": "u1", "traits": {"\\u005f_proto__": {"admin": true}}}]}', { writeKey })
  t.equal(poisoned.statusCode, 200, 'a batch with prototype keys in some messages: 200')
  t.match(poisoned.json().rejected, [{ index: 1, error: /forbidden key/ }, { index: 2, error: /forbidden key/ }], 'each message with one listed in rejected')
  t.equal(poisoned.json().rejected.length, 2, 'its neighbour accepted')
  assertIngestError(t, await send(app, '/v1/batch', '{"batch": [], "context": {"__proto__": {"admin": true}}}', { writeKey }), 400, /forbidden key/, 'a prototype key in the batch\'s own context')
  t.equal(({} as Record<string, unknown>).admin, undefined, 'Object.prototype untouched')
})

t.test('compressed bodies', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const gzipped = gzipSync(JSON.stringify({ batch: [track({ messageId: 'gz-1' })] }))
  assertOk(t, await send(app, '/v1/batch', gzipped, { writeKey, headers: { 'content-encoding': 'gzip', 'content-type': 'text/plain' } }), 'gzip')
  const deflated = deflateSync(JSON.stringify(track({ messageId: 'df-1' })))
  assertOk(t, await send(app, '/v1/track', deflated, { writeKey, headers: { 'content-encoding': 'deflate' } }), 'deflate')
  assertOk(t, await send(app, '/v1/track', JSON.stringify(track({ messageId: 'id-1' })), { writeKey, headers: { 'content-encoding': 'identity' } }), 'identity')
  assertOk(t, await send(app, '/v1/track', gzipSync(JSON.stringify(track({ messageId: 'gz-2' }))), { writeKey, headers: { 'content-encoding': 'GZIP' } }), 'encoding names are case-insensitive')
  t.same((await stored(id)).map((m) => m.messageId), ['gz-1', 'df-1', 'id-1', 'gz-2'])

  const corrupt = Buffer.from(gzipped)
  corrupt.fill(0x41, 10, 30)
  assertIngestError(t, await send(app, '/v1/batch', corrupt, { writeKey, headers: { 'content-encoding': 'gzip' } }), 400, /could not be decompressed/, 'corrupt gzip')
  assertIngestError(t, await send(app, '/v1/batch', gzipped.subarray(0, gzipped.length - 12), { writeKey, headers: { 'content-encoding': 'gzip' } }), 400, /could not be decompressed/, 'truncated gzip')
  assertIngestError(t, await send(app, '/v1/batch', JSON.stringify({ batch: [] }), { writeKey, headers: { 'content-encoding': 'gzip' } }), 400, /could not be decompressed/, 'plain JSON labelled gzip')
  assertIngestError(t, await send(app, '/v1/batch', gzipped, { writeKey, headers: { 'content-encoding': 'br' } }), 415, /unsupported Content-Encoding "br"/, 'brotli')
  t.equal((await stored(id)).length, 4, 'nothing more stored')
})

t.test('a single invalid message: 400 naming the field, counted as rejected', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const cases: Array<[string, string, Record<string, unknown>, RegExp]> = [
    ['no userId or anonymousId', '/v1/identify', { traits: { plan: 'pro' } }, /userId or anonymousId is required/],
    ['track without event', '/v1/track', { userId: 'u1' }, /event is required/],
    ['group without groupId', '/v1/group', { userId: 'u1' }, /groupId is required/],
    ['alias without previousId', '/v1/alias', { userId: 'u1' }, /previousId is required/],
    ['messageId over 100 characters', '/v1/identify', { userId: 'u1', messageId: 'm'.repeat(101) }, /messageId must be at most 100 characters/],
    ['properties not an object', '/v1/track', { userId: 'u1', event: 'E', properties: ['a'] }, /properties must be an object/],
    ['userId over 1,024 characters', '/v1/track', { userId: 'u'.repeat(1025), event: 'E' }, /userId must be at most 1024 characters/],
    ['type against the path', '/v1/t', { type: 'identify', userId: 'u1' }, /does not match the path/]
  ]
  for (const [name, path, body, error] of cases) assertIngestError(t, await send(app, path, body, { writeKey }), 400, error, name)
  t.equal((await stored(id)).length, 0, 'nothing stored')
  t.ok(await eventually(async () => (await sourceStats(ctx, id)).rejected === cases.length), 'all counted as rejected')
  t.match(await sourceStats(ctx, id), { received: cases.length, accepted: 0, duplicate: 0, rejected: cases.length })
})

t.test('a batch keeps its valid messages and lists the invalid ones', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const res = await send(app, '/v1/batch', {
    writeKey,
    batch: [
      track({ messageId: 'ok-0' }),
      track({ messageId: 'bad-1', event: undefined }),
      { type: 'identify', messageId: 'bad-2', traits: {} },
      { type: 'identify', userId: 'u2', messageId: 'ok-3' },
      'not a message',
      { type: 'group', userId: 'u1', messageId: 'bad-5' }
    ]
  })
  t.equal(res.statusCode, 200, 'one bad message never fails its neighbours')
  t.same(res.json(), {
    success: true,
    rejected: [
      { index: 1, messageId: 'bad-1', error: 'event is required for track and must be a non-empty string' },
      { index: 2, messageId: 'bad-2', error: 'userId or anonymousId is required' },
      { index: 4, error: 'message must be a JSON object' },
      { index: 5, messageId: 'bad-5', error: 'groupId is required for group' }
    ]
  })
  t.same((await stored(id)).map((m) => m.messageId), ['ok-0', 'ok-3'])
  t.match(await sourceStats(ctx, id), { received: 6, accepted: 2, duplicate: 0, rejected: 4 })

  const allBad = await send(app, '/v1/import', { writeKey, batch: [{ type: 'track', userId: 'u1' }, { type: 'nope' }] })
  t.equal(allBad.statusCode, 200, 'a batch of only invalid messages is still a 200')
  t.match(allBad.json(), { success: true, rejected: [{ index: 0, error: /event is required/ }, { index: 1, error: /type must be one of/ }] })
  t.equal(allBad.json().rejected.length, 2)
  t.equal((await stored(id)).length, 2, 'nothing more stored')

  const empty = await send(app, '/v1/batch', { writeKey, batch: [] })
  assertOk(t, empty, 'an empty batch is fine')
  t.match(await sourceStats(ctx, id), { received: 8, accepted: 2, duplicate: 0, rejected: 6 })

  assertOk(t, await send(app, '/v1/batch', { writeKey, batch: [], sentAt: 'soon' }), 'a bad batch sentAt is ignored')
  assertIngestError(t, await send(app, '/v1/batch', { writeKey, batch: [], context: 'web' }), 400, /context must be an object/, 'a bad batch context')
})

t.test('batch context, integrations and sentAt apply to every message; server fields are set', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const before = Date.now()
  // A client whose clock is an hour behind: its event happened 5 s before it sent the batch.
  const hourAgo = Date.now() - 3600_000
  const res = await send(app, '/v1/batch', {
    writeKey,
    sentAt: new Date(hourAgo).toISOString(),
    context: { library: { name: 'analytics-go', version: '3' }, ip: '10.0.0.1' },
    integrations: { All: false, Mixpanel: true },
    batch: [
      track({ messageId: 'ctx-1', userId: 42, timestamp: new Date(hourAgo - 5000).toISOString(), context: { ip: '192.0.2.1' } }),
      { type: 'identify', anonymousId: 'a1', integrations: { Mixpanel: false } }
    ]
  })
  assertOk(t, res)
  const [first, second] = await stored(id)
  t.equal(first.userId, '42', 'a numeric userId becomes a string')
  t.same(first.context, { library: { name: 'analytics-go', version: '3' }, ip: '192.0.2.1' }, 'batch context merged, the message value wins')
  t.same(first.integrations, { All: false, Mixpanel: true })
  t.same(second.integrations, { All: false, Mixpanel: false })
  t.equal(first.originalTimestamp, new Date(hourAgo - 5000).toISOString(), 'originalTimestamp is the client timestamp')
  const received = Date.parse(first.receivedAt)
  t.ok(received >= before && received <= Date.now(), 'receivedAt is the server clock')
  t.equal(Date.parse(first.timestamp), received - 5000, 'timestamp corrected for the client clock: receivedAt − (sentAt − timestamp)')
  t.match(second.messageId, /\S{10,}/, 'a messageId is generated when absent')
  // Ids given by the server are new in every request, and never mistaken for repeats.
  for (let i = 0; i < 2; i++) assertOk(t, await send(app, '/v1/identify', { anonymousId: 'a1' }, { writeKey }))
  const given = (await stored(id)).slice(2).map((m: { messageId: string }) => m.messageId)
  t.equal(given.length, 2, 'both requests without ids are stored')
  t.not(given[0], given[1], 'each request gets ids of its own')
  t.not(given[0], second.messageId, '…unlike those of earlier requests')
  t.match(second.messageId, /^relay-.+-1$/, "a given id names the message's place in its request")
  // A request whose messages all have ids stores no prefix for ids.
  const storedRequests = async () => (await storedQueue.getWaiting(0, -1))
    .sort((a, b) => Number(a.id) - Number(b.id))
    .flatMap((job) => job.data.requests).filter((r): r is StoredRequest => r?.sourceId === id)
  t.same((await storedRequests()).map((r) => typeof r.idPrefix), ['string', 'string', 'string'], 'the batch with a message without an id and both identifies have one')
  assertOk(t, await send(app, '/v1/track', track({ messageId: 'named-1' }), { writeKey }))
  assertOk(t, await send(app, '/v1/batch', { writeKey, batch: [track({ messageId: 'named-2' })] }))
  t.same((await storedRequests()).slice(3).map((r) => r.idPrefix), [undefined, undefined], 'requests whose messages all have ids have none')
  t.equal(second.timestamp, second.receivedAt, 'no client timestamp: the server time')
})

t.test('size limits', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const big = 'x'.repeat(33 * 1024)

  const tooMany = await send(app, '/v1/batch', { writeKey, batch: Array.from({ length: 2501 }, (_, i) => ({ type: 'identify', userId: `u${i}` })) })
  assertIngestError(t, tooMany, 400, /batch has 2501 messages; the limit is 2500/, 'over 2,500 messages')
  const justEnough = await send(app, '/v1/batch', { writeKey, batch: Array.from({ length: 2500 }, (_, i) => ({ type: 'identify', userId: `u${i}`, messageId: `full-${i}` })) })
  assertOk(t, justEnough, '2,500 messages are fine')
  t.equal((await stored(id)).length, 2500)

  const mixed = await send(app, '/v1/batch', {
    writeKey,
    batch: [
      track({ messageId: 'small-0' }),
      track({ messageId: 'huge-1', properties: { big } }),
      track({ messageId: 'small-2' })
    ]
  })
  t.equal(mixed.statusCode, 200, 'a batch with a message over 32 KB is a 200')
  t.match(mixed.json(), { success: true, rejected: [{ index: 1, messageId: 'huge-1', error: /message is \d+ bytes; the limit is 32768 bytes/ }] })
  t.equal(mixed.json().rejected.length, 1)
  t.same((await stored(id)).slice(2500).map((m) => m.messageId), ['small-0', 'small-2'], 'its neighbours are stored')

  // analytics-node mis-measures and sends batches far over Segment's 500 KB: taken up to 4 MB.
  const large = await send(app, '/v1/batch', { writeKey, batch: Array.from({ length: 100 }, (_, i) => track({ messageId: `large-${i}`, properties: { filler: 'y'.repeat(30_000) } })) })
  assertOk(t, large, 'a 3 MB batch of messages under 32 KB each is taken')

  const single = await send(app, '/v1/track', track({ messageId: 'huge-single', properties: { big } }), { writeKey })
  assertIngestError(t, single, 413, /message is \d+ bytes; the limit is 32768 bytes/, 'a single message over 32 KB')

  const tooBig = await send(app, '/v1/batch', { writeKey, batch: Array.from({ length: 150 }, () => track({ properties: { filler: 'z'.repeat(30_000) } })) })
  assertIngestError(t, tooBig, 413, /over 4194304 bytes/, 'a body over 4 MB')

  // Small on the wire, over 4 MB once inflated: the limit applies after decompression.
  const bomb = gzipSync(JSON.stringify({ writeKey, batch: [track({ properties: { filler: ' '.repeat(6 * 1024 * 1024) } })] }))
  t.ok(bomb.length < 64 * 1024, `the compressed body is small (${bomb.length} bytes)`)
  assertIngestError(t, await send(app, '/v1/batch', bomb, { writeKey, headers: { 'content-encoding': 'gzip' } }), 413, /over 4194304 bytes \(after decompression\)/, 'a gzip body over 4 MB inflated')

  assertOk(t, await send(app, '/v1/track', track({ messageId: 'after-limits' }), { writeKey }), 'the server still answers')
  const messages = await stored(id)
  t.equal(messages.length, 2500 + 2 + 100 + 1, 'only the messages within the limits were stored')
  t.notOk(messages.some((m) => m.messageId === 'huge-1' || m.messageId === 'huge-single'))
  t.ok(await eventually(async () => (await sourceStats(ctx, id)).rejected === 2), 'the oversized messages are counted as rejected')
  t.match(await sourceStats(ctx, id), { received: 2603 + 2, accepted: 2603, duplicate: 0, rejected: 2 })
})

t.test('duplicates: a messageId seen before for the source is answered 200 and stored once', async (t) => {
  const a = await ctx.createSource('a')
  const b = await ctx.createSource('b')
  assertOk(t, await send(app, '/v1/track', track({ messageId: 'dup-1' }), { writeKey: a.writeKey }))
  assertOk(t, await send(app, '/v1/track', track({ messageId: 'dup-1', event: 'Retried' }), { writeKey: a.writeKey }), 'a retry answers 200')
  assertOk(t, await send(app, '/v1/batch', { batch: [track({ messageId: 'dup-2' }), track({ messageId: 'dup-2' }), track({ messageId: 'dup-1' }), track({ messageId: 'new-3' })] }, { writeKey: a.writeKey }), 'repeats within a batch')
  assertOk(t, await send(app, '/v1/track', track({ messageId: 'dup-1' }), { writeKey: b.writeKey }), 'another source')

  const storedA = await stored(a.id)
  t.same(storedA.map((m) => m.messageId), ['dup-1', 'dup-2', 'new-3'], 'each id stored once for source a')
  t.equal(storedA[0].event, 'Order Completed', 'the first copy is the one kept')
  t.same((await stored(b.id)).map((m) => m.messageId), ['dup-1'], 'the same id from another source is not a duplicate')
  t.match(await sourceStats(ctx, a.id), { received: 6, accepted: 3, duplicate: 3, rejected: 0 })
  t.match(await sourceStats(ctx, b.id), { received: 1, accepted: 1, duplicate: 0, rejected: 0 })

  // Concurrent requests land in one group commit: still one copy.
  const concurrent = await Promise.all(Array.from({ length: 5 }, () => send(app, '/v1/track', track({ messageId: 'race-1' }), { writeKey: a.writeKey })))
  t.same(concurrent.map((r) => r.statusCode), [200, 200, 200, 200, 200])
  t.equal((await stored(a.id)).filter((m) => m.messageId === 'race-1').length, 1, 'concurrent copies stored once')
  t.match(await sourceStats(ctx, a.id), { received: 11, accepted: 4, duplicate: 7, rejected: 0 })
})

t.test('stats: received = accepted + duplicate + rejected', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  t.match(await sourceStats(ctx, id), { received: 0, accepted: 0, duplicate: 0, rejected: 0 }, 'a new source')
  await send(app, '/v1/batch', { writeKey, batch: [track({ messageId: 's-1' }), track({ messageId: 's-2' }), track({ messageId: 's-1' }), { type: 'track' }] })
  await send(app, '/v1/identify', { userId: 'u1', messageId: 's-2' }, { writeKey })
  await send(app, '/v1/identify', { traits: {} }, { writeKey })
  await send(app, '/v1/identify', { userId: 'u9' }, { writeKey: 'unknown' })
  t.ok(await eventually(async () => (await sourceStats(ctx, id)).rejected === 2))
  const stats = await sourceStats(ctx, id)
  t.match(stats, { received: 6, accepted: 2, duplicate: 2, rejected: 2 })
  t.equal(stats.received, stats.accepted + stats.duplicate + stats.rejected)
  t.equal((await ctx.admin('GET', '/v1/sources/src_missing/stats')).statusCode, 404)
})

t.test('CORS: ingestion answers any origin; the admin API answers none', async (t) => {
  const { writeKey } = await ctx.createSource()
  const origin = { origin: 'https://shop.example' }
  const ok = await send(app, '/v1/t', track({ writeKey }), { headers: { ...origin, 'content-type': 'text/plain' } })
  t.equal(ok.statusCode, 200)
  t.equal(ok.headers['access-control-allow-origin'], '*', 'on a 200')
  const unauthorized = await send(app, '/v1/t', track(), { headers: origin })
  t.equal(unauthorized.headers['access-control-allow-origin'], '*', 'on an error, so the browser can read it')

  for (const url of ['/v1/t', '/v1/batch', '/v1/import/']) {
    const preflight = await app.inject({
      method: 'OPTIONS',
      url,
      headers: { ...origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' }
    })
    t.ok(preflight.statusCode >= 200 && preflight.statusCode < 300, `preflight ${url} succeeds`)
    t.equal(preflight.headers['access-control-allow-origin'], '*')
    t.match(preflight.headers['access-control-allow-methods'], /POST/)
    t.match(preflight.headers['access-control-allow-headers'], /authorization/i)
  }

  const admin = await app.inject({ method: 'GET', url: '/v1/sources', headers: { ...origin, authorization: `Bearer ${ctx.config.ADMIN_TOKEN}` } })
  t.equal(admin.statusCode, 200)
  t.notOk('access-control-allow-origin' in admin.headers, 'no CORS on an admin answer')
  const adminPreflight = await app.inject({ method: 'OPTIONS', url: '/v1/sources', headers: { ...origin, 'access-control-request-method': 'POST' } })
  t.notOk('access-control-allow-origin' in adminPreflight.headers, 'no CORS on an admin preflight')
  const adminError = await app.inject({ method: 'POST', url: '/v1/sources', headers: origin, payload: { name: 'x' } })
  t.equal(adminError.statusCode, 401)
  t.notOk('access-control-allow-origin' in adminError.headers, 'no CORS on an admin error')
})

t.test('rate limit: 429 with Retry-After, per source', async (t) => {
  const limited = await buildTestApp(t, { env: { ROLE: 'api', RATE_LIMIT_EVENTS_PER_SECOND: '2' }, redis: freshPrefix(redis) })
  const a = await limited.createSource('a')
  const b = await limited.createSource('b')
  // A burst of twice the rate passes.
  assertOk(t, await send(limited.app, '/v1/batch', { batch: [track(), track(), track()] }, { writeKey: a.writeKey }))
  assertOk(t, await send(limited.app, '/v1/track', track(), { writeKey: a.writeKey }))
  const res = await send(limited.app, '/v1/track', track(), { writeKey: a.writeKey })
  assertIngestError(t, res, 429, /rate limit of 2 messages a second/, 'over the rate')
  t.match(res.headers['retry-after'], /^[1-9]\d*$/, 'Retry-After in whole seconds')
  assertOk(t, await send(limited.app, '/v1/track', track(), { writeKey: b.writeKey }), 'another source is not limited')
})

t.test('rate limit: one per source across API processes', async (t) => {
  // Two apps on one Redis prefix: two API processes (PROCESSES=2, or replicas).
  const shared = freshPrefix(redis)
  const env = { ROLE: 'api', RATE_LIMIT_EVENTS_PER_SECOND: '2' }
  const first = await buildTestApp(t, { env, redis: shared })
  const second = await buildTestApp(t, { env, redis: shared })
  const { writeKey } = await first.createSource()
  const answers = []
  for (let i = 0; i < 6; i++) answers.push((await send((i % 2 === 0 ? first : second).app, '/v1/track', track(), { writeKey })).statusCode)
  t.same(answers, [200, 200, 200, 200, 429, 429], 'the burst of 4 is shared: a limit per process would take 8')
})

t.test('backlog over INGEST_MAX_BACKLOG_JOBS: 503 with Retry-After', async (t) => {
  const backlogged = await buildTestApp(t, { env: { ROLE: 'api', INGEST_MAX_BACKLOG_JOBS: '1' }, redis: freshPrefix(redis) })
  const { writeKey } = await backlogged.createSource()
  for (let i = 0; i < 3; i++) assertOk(t, await send(backlogged.app, '/v1/track', track({ messageId: `backlog-${i}` }), { writeKey }))
  // The backlog is read once a second.
  let last: LightMyRequestResponse | undefined
  const shed = await eventually(async () => {
    last = await send(backlogged.app, '/v1/track', track(), { writeKey })
    return last.statusCode === 503
  }, 5000, 250)
  t.ok(shed, 'the API sheds load once the backlog is read')
  assertIngestError(t, last!, 503, /backlog is over 1 jobs/, 'over the backlog')
  t.match(last!.headers['retry-after'], /^[1-9]\d*$/, 'with Retry-After')
})

t.test('with a worker (ROLE all) the queue drains and finished jobs keep no payload', async (t) => {
  const full = await buildTestApp(t, { env: { ROLE: 'all' }, redis: freshPrefix(redis) })
  const { queue } = ingestQueue(t, full.redis)
  const { writeKey } = await full.createSource()
  assertOk(t, await send(full.app, '/v1/batch', { batch: [track({ traits: { email: 'pii@example.com' } }), { type: 'identify', userId: 'u1', traits: { email: 'pii@example.com' } }] }, { writeKey }))
  const drained = await eventually(async () => {
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized')
    return Object.values(counts).every((n) => n === 0)
  })
  t.ok(drained, 'the worker took the job')
  t.same(await queue.getJobCounts('completed', 'failed'), { completed: 0, failed: 0 }, 'completed and removed, none failed')
  const client = new Redis(full.redis.url)
  t.teardown(() => client.quit())
  const keys = await client.keys(`{${full.redis.prefix}}:ingest:*`)
  const dump = (await Promise.all(keys.map(async (key) => (await client.type(key)) === 'hash' ? JSON.stringify(await client.hgetall(key)) : ''))).join('\n')
  t.ok(keys.length > 0, 'the queue keys were read')
  t.notMatch(dump, /pii@example\.com/, 'no raw traits left in Redis')
})
