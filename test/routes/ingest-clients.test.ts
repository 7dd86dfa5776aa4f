import { createHash, randomUUID } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { Analytics } from '@segment/analytics-node'
import t from 'tap'
import { basicAuth, buildTestApp } from '../helpers/app.js'
import { ingestQueue } from '../helpers/ingest-queue.js'

// Real HTTP: what Segment's clients send, the way they send it (spec/segment.md).
const ctx = await buildTestApp(t, { env: { ROLE: 'api' }, listen: true })
const { stored } = ingestQueue(t, ctx.redis)

/** An analytics-node 3.x client pointed at the service, recording every answer it got. */
function nodeClient (writeKey: string, flushAt: number) {
  const analytics = new Analytics({ writeKey, host: ctx.url, path: '/v1/batch', flushAt, flushInterval: 50, maxRetries: 0 })
  const statuses: number[] = []
  const errors: unknown[] = []
  analytics.on('http_response', (response) => statuses.push(response.status))
  analytics.on('error', (err) => errors.push(err))
  return { analytics, statuses, errors }
}

t.test('@segment/analytics-node 3.x: track and identify arrive intact', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const { analytics, statuses, errors } = nodeClient(writeKey, 1)
  const before = Date.now()
  analytics.identify({ userId: 'user-1', traits: { email: 'ada@example.com', plan: 'pro' } })
  analytics.track({
    userId: 'user-1',
    event: 'Order Completed',
    properties: { order_id: 'o-1', value: 99.5, currency: 'EUR', products: [{ sku: 'A', quantity: 2 }] },
    context: { ip: '203.0.113.9' },
    integrations: { All: true, 'Facebook Offline Conversions': { dataset: '1' } }
  })
  await analytics.closeAndFlush()
  t.same(errors, [], 'the client reported no error')
  t.same(statuses, [200, 200], 'one request per call (flushAt 1), each answered 200')

  // Two requests, possibly in flight together: stored in the order they arrived, either way.
  const messages = await stored(id)
  t.equal(messages.length, 2, 'both calls stored')
  const [identify, track] = messages.sort((a, b) => String(a.type).localeCompare(String(b.type)))
  t.match(identify, {
    type: 'identify',
    userId: 'user-1',
    traits: { email: 'ada@example.com', plan: 'pro' },
    messageId: /^node-next-\d+-[0-9a-f-]{36}$/,
    context: { library: { name: '@segment/analytics-node', version: /^3\./ } }
  })
  t.match(track, {
    type: 'track',
    userId: 'user-1',
    event: 'Order Completed',
    properties: { order_id: 'o-1', value: 99.5, currency: 'EUR', products: [{ sku: 'A', quantity: 2 }] },
    context: { ip: '203.0.113.9', library: { name: '@segment/analytics-node' } },
    integrations: { All: true, 'Facebook Offline Conversions': { dataset: '1' } },
    messageId: /^node-next-/
  })
  t.not(identify.messageId, track.messageId)
  for (const message of [identify, track]) {
    t.notOk('writeKey' in message, 'the write key the client put in the body is not kept')
    t.ok(Date.parse(message.receivedAt) >= before, 'receivedAt set')
    t.ok(message.sentAt !== undefined && message.originalTimestamp !== undefined, 'sentAt and originalTimestamp set from the batch')
    t.ok(Math.abs(Date.parse(message.timestamp) - Date.parse(message.originalTimestamp)) < 60_000, 'same clock: the corrected timestamp stays near the client one')
  }
})

t.test('@segment/analytics-node 3.x: five calls in one batch', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const { analytics, statuses, errors } = nodeClient(writeKey, 5)
  analytics.identify({ anonymousId: 'anon-1', traits: { country: 'FR' } })
  analytics.track({ anonymousId: 'anon-1', event: 'Product Viewed', properties: { sku: 'A' } })
  analytics.page({ anonymousId: 'anon-1', name: 'Home', category: 'Landing', properties: { path: '/' } })
  analytics.alias({ userId: 'user-2', previousId: 'anon-1' })
  analytics.group({ userId: 'user-2', groupId: 'acme', traits: { employees: 10 } })
  await analytics.closeAndFlush()
  t.same(errors, [])
  t.same(statuses, [200], 'one request for the five calls')
  const messages = await stored(id)
  t.same(messages.map((m) => m.type), ['identify', 'track', 'page', 'alias', 'group'], 'all five, in order')
  t.match(messages, [
    { anonymousId: 'anon-1', traits: { country: 'FR' } },
    { anonymousId: 'anon-1', event: 'Product Viewed', properties: { sku: 'A' } },
    { anonymousId: 'anon-1', name: 'Home', category: 'Landing', properties: { path: '/' } },
    { userId: 'user-2', previousId: 'anon-1' },
    { userId: 'user-2', groupId: 'acme', traits: { employees: 10 } }
  ])
  t.equal(new Set(messages.map((m) => m.messageId)).size, 5, 'five distinct messageIds')
})

t.test('legacy analytics-node (Basic only, batch-level timestamp)', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const now = new Date().toISOString()
  const message = { type: 'track', userId: 'user-3', event: 'Signed Up', properties: { plan: 'free' }, timestamp: now, context: { library: { name: 'analytics-node', version: '6.2.0' } } }
  const messageId = `node-${createHash('md5').update(JSON.stringify(message)).digest('hex')}-${randomUUID()}`
  const res = await fetch(`${ctx.url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: basicAuth(writeKey), 'content-type': 'application/json', 'user-agent': 'analytics-node/6.2.0' },
    body: JSON.stringify({ batch: [{ ...message, messageId }], timestamp: now, sentAt: now })
  })
  t.equal(res.status, 200)
  t.same(await res.json(), { success: true })
  t.match(await stored(id), [{ type: 'track', userId: 'user-3', event: 'Signed Up', messageId, properties: { plan: 'free' }, context: { library: { name: 'analytics-node' } } }])
})

t.test('browser (analytics.js 2.0): /v1/t, text/plain, writeKey and sentAt in the message', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  // A browser clock 10 minutes ahead: the event happened 1 s before it was sent.
  const skew = 10 * 60_000
  const clientNow = Date.now() + skew
  const res = await fetch(`${ctx.url}/v1/t`, {
    method: 'POST',
    headers: { 'content-type': 'text/plain', origin: 'https://shop.example' },
    body: JSON.stringify({
      type: 'track',
      event: 'Add to Cart',
      anonymousId: 'b1f5c0e2-6f2d-4c1b-9d59-5b3c8e3a1d7e',
      properties: { price: 12 },
      messageId: `ajs-next-${randomUUID()}`,
      timestamp: new Date(clientNow - 1000).toISOString(),
      sentAt: new Date(clientNow).toISOString(),
      writeKey,
      context: { page: { path: '/cart', url: 'https://shop.example/cart' }, userAgent: 'Mozilla/5.0' },
      integrations: {},
      _metadata: { bundled: ['Segment.io'], unbundled: [] }
    })
  })
  t.equal(res.status, 200)
  t.equal(res.headers.get('access-control-allow-origin'), '*', 'the browser may read the answer')
  const [message] = await stored(id)
  t.match(message, { type: 'track', event: 'Add to Cart', properties: { price: 12 }, context: { page: { path: '/cart' } }, messageId: /^ajs-next-/ })
  t.notOk('writeKey' in message)
  const corrected = Date.parse(message.timestamp)
  const received = Date.parse(message.receivedAt)
  t.equal(corrected, received - 1000, 'the skewed browser clock is corrected from the message sentAt')
})

t.test('Kotlin: /v1/b, gzip, text/plain, writeKey in the body and no auth header', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const sentAt = new Date().toISOString()
  const body = gzipSync(JSON.stringify({
    batch: [
      { type: 'screen', anonymousId: 'k-1', name: 'Checkout', properties: {}, messageId: randomUUID(), timestamp: sentAt, context: { library: { name: 'analytics-kotlin', version: '1.16.0' }, os: { name: 'Android' } } },
      { type: 'track', anonymousId: 'k-1', event: 'Checkout Started', properties: { value: 5 }, messageId: randomUUID(), timestamp: sentAt }
    ],
    sentAt,
    writeKey
  }))
  const res = await fetch(`${ctx.url}/v1/b`, { method: 'POST', headers: { 'content-type': 'text/plain', 'content-encoding': 'gzip', 'user-agent': 'analytics-kotlin/1.16.0' }, body })
  t.equal(res.status, 200)
  t.same(await res.json(), { success: true })
  t.match(await stored(id), [
    { type: 'screen', name: 'Checkout', context: { library: { name: 'analytics-kotlin' }, os: { name: 'Android' } } },
    { type: 'track', event: 'Checkout Started', properties: { value: 5 } }
  ])
})

t.test('Java: /v1/import/ with the trailing slash, Basic, batch-level context', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  const sentAt = new Date().toISOString()
  const res = await fetch(`${ctx.url}/v1/import/`, {
    method: 'POST',
    headers: { authorization: basicAuth(writeKey), 'content-type': 'application/json; charset=utf-8', 'user-agent': 'analytics-java/3.5.1' },
    body: JSON.stringify({
      batch: [{ type: 'identify', userId: 'java-1', traits: { email: 'j@example.com' }, messageId: randomUUID(), timestamp: sentAt }],
      sentAt,
      context: { library: { name: 'analytics-java', version: '3.5.1' } },
      sequence: 0,
      writeKey
    })
  })
  t.equal(res.status, 200)
  t.match(await stored(id), [{ type: 'identify', userId: 'java-1', traits: { email: 'j@example.com' }, context: { library: { name: 'analytics-java' } } }], 'the batch context reached the message')
})

t.test('a client that sends over 4 MB gets a readable 413, and the server carries on', async (t) => {
  const { id, writeKey } = await ctx.createSource()
  // analytics-node mis-measures batches; one far over the limit must be answered, not cut off.
  const body = JSON.stringify({ writeKey, batch: Array.from({ length: 170 }, () => ({ type: 'track', userId: 'u', event: 'E', properties: { filler: 'z'.repeat(30_000) } })) })
  const res = await fetch(`${ctx.url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  t.equal(res.status, 413)
  t.match(await res.json(), { success: false, error: /over 4194304 bytes/ })
  const next = await fetch(`${ctx.url}/v1/track`, { method: 'POST', headers: { authorization: basicAuth(writeKey) }, body: JSON.stringify({ userId: 'u', event: 'After' }) })
  t.equal(next.status, 200, 'the next request is served')
  t.match(await stored(id), [{ event: 'After' }])
  t.equal((await stored(id)).length, 1, 'nothing of the oversized batch was stored')
})
