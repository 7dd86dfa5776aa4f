// Admin routes that take no body answer `Content-Type: application/json` with an empty body as
// they answer a bare POST (curl -X POST -H 'content-type: application/json'), not 400 "Body cannot
// be empty". A body that is there is parsed as before, and ingestion keeps its own parser.
import t from 'tap'
import { createAudience } from '../helpers/audience-setup.js'
import { ADMIN_TOKEN, basicAuth, buildTestApp } from '../helpers/app.js'
import { createDestination } from '../helpers/delivery-setup.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const json = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }

t.test('every admin route that takes no body accepts an empty JSON body', async (t) => {
  const ctx = await buildTestApp(t, { redis, env: { ROLE: 'api' }, listen: true })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1001' } }, { token: null })
  const audience = await createAudience(ctx, source.id, { name: 'Pro plan', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })

  const routes: Array<[string, string, number, RegExp?]> = [
    ['POST', `/v1/destinations/${destination.id}/failures/retry`, 200, /"retried":0/],
    ['POST', `/v1/audiences/${audience.id}/sync`, 202, /"queued":true/],
    ['POST', `/v1/sources/${source.id}/write-key`, 200, /"writeKey"/],
    ['POST', '/v1/ingest/failures', 200, /"replayed":0/],
    // DELETEs take no body either; some clients send the header with every call.
    ['DELETE', '/v1/ingest/failures', 200, /"purged":0/],
    ['DELETE', `/v1/destinations/${destination.id}/access-token`, 204]
  ]
  for (const [method, url, status, body] of routes) {
    const injected = await ctx.app.inject({ method: method as 'POST', url, headers: json })
    t.equal(injected.statusCode, status, `${method} ${url}: ${injected.body}`)
    if (body !== undefined) t.match(injected.body, body)
    // Over the network too: Content-Length 0, as curl and fetch send it.
    const fetched = await fetch(`${ctx.url}${url}`, { method, headers: json })
    t.equal(fetched.status, status, `${method} ${url} over HTTP`)
  }
  const charset = await ctx.app.inject({ method: 'POST', url: `/v1/audiences/${audience.id}/sync`, headers: { ...json, 'content-type': 'application/json; charset=utf-8' } })
  t.equal(charset.statusCode, 202, 'with a charset')
})

t.test('a body is still parsed as before; a route that needs one still says so', async (t) => {
  const ctx = await buildTestApp(t, { redis, env: { ROLE: 'api' } })
  const source = await ctx.createSource()
  const post = (url: string, payload: string) => ctx.app.inject({ method: 'POST', url, headers: json, payload })

  const missing = await post('/v1/sources', '')
  t.equal(missing.statusCode, 400)
  t.match(missing.json(), { statusCode: 400, error: 'Bad Request', message: /body/ }, 'the schema names what is missing')
  t.notMatch(missing.json().message, /cannot be empty/i)

  t.equal((await post('/v1/sources', '{"name":"web"}')).statusCode, 201)
  const malformed = await post('/v1/sources', '{"name":')
  t.equal(malformed.statusCode, 400)
  t.match(malformed.json(), { statusCode: 400, message: /JSON/ })
  const poisoned = await post('/v1/sources', '{"name":"x","__proto__":{"admin":true}}')
  t.equal(poisoned.statusCode, 400, 'prototype poisoning is refused as Fastify refuses it')
  const retried = await post('/v1/ingest/failures', '{"ids":["nope"]}')
  t.equal(retried.statusCode, 200)
  t.same(retried.json().notReplayed.map((r: { id: string }) => r.id), ['nope'], 'a given body is read')

  // Ingestion has a parser of its own: an empty body is its own 400, in Segment's shape.
  const empty = await ctx.app.inject({ method: 'POST', url: '/v1/track', headers: { authorization: basicAuth(source.writeKey), 'content-type': 'application/json' } })
  t.equal(empty.statusCode, 400)
  t.same(empty.json(), { success: false, error: 'the body is empty; send a JSON message or batch' })
})
