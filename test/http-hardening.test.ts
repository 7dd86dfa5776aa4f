import t from 'tap'
import { ADMIN_TOKEN, basicAuth, buildTestApp } from './helpers/app.js'
import { startTestRedis } from './helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` }

t.test('x-request-id: on every answer, an incoming safe one echoed, any other replaced', async (t) => {
  const ctx = await buildTestApp(t, { redis, env: { ROLE: 'api' } })
  const source = await ctx.createSource()
  const calls: Array<{ name: string, method?: 'GET' | 'POST' | 'DELETE', url: string, headers?: Record<string, string>, payload?: string, status: number }> = [
    { name: 'health', url: '/health', status: 200 },
    { name: 'readiness', url: '/ready', status: 200 },
    { name: 'ingestion', method: 'POST', url: '/v1/track', headers: { authorization: basicAuth(source.writeKey) }, payload: '{"userId":"u1","event":"A"}', status: 200 },
    { name: 'an ingestion error', method: 'POST', url: '/v1/batch', headers: { authorization: basicAuth(source.writeKey) }, payload: '{"batch": [', status: 400 },
    { name: 'an admin call', url: '/v1/sources', headers: bearer, status: 200 },
    { name: 'an admin call without a token', url: '/v1/sources', status: 401 },
    { name: 'a 404', url: '/v1/nothing-here', status: 404 },
    { name: 'a URL the router cannot decode', url: '/v1/%E0%A4%A', status: 400 },
    { name: 'the docs', url: '/docs', status: 200 },
    { name: 'the OpenAPI document', url: '/openapi.json', status: 200 },
    { name: 'the dashboard', url: '/admin/queues', headers: bearer, status: 200 },
    { name: 'the dashboard without a token', url: '/admin/queues', status: 401 },
    { name: 'metrics', url: '/metrics', headers: bearer, status: 200 }
  ]
  const hostile = ['x'.repeat(129), 'has space', 'line\nbreak', 'quote"d', "it's", '', 'tab\there', 'semi;colon', 'caf\u00e9']
  for (const call of calls) {
    const send = (requestId?: string) => ctx.app.inject({
      method: call.method ?? 'GET',
      url: call.url,
      headers: { ...call.headers, ...(requestId === undefined ? {} : { 'x-request-id': requestId }) },
      ...(call.payload === undefined ? {} : { payload: call.payload })
    })
    const safe = await send('edge-7f3a.b_9:42')
    t.equal(safe.statusCode, call.status, `${call.name}: ${call.status}`)
    t.equal(safe.headers['x-request-id'], 'edge-7f3a.b_9:42', `${call.name}: a safe incoming id is echoed`)
    const [first, second] = [await send(), await send()]
    t.match(first.headers['x-request-id'], UUID, `${call.name}: without one, a random id`)
    t.not(first.headers['x-request-id'], second.headers['x-request-id'], 'a new one each time')
    for (const value of hostile) {
      const replaced = await send(value)
      t.match(replaced.headers['x-request-id'], UUID, `${call.name}: ${JSON.stringify(value.slice(0, 12))} is replaced`)
    }
  }
  const longest = 'a'.repeat(128)
  t.equal((await ctx.app.inject({ url: '/health', headers: { 'x-request-id': longest } })).headers['x-request-id'], longest, '128 characters are taken')
})
