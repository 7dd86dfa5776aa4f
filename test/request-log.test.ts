import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { ADMIN_TOKEN } from './helpers/app.js'
import { startTestRedis, type TestRedis } from './helpers/redis.js'

type LogLine = Record<string, any>

const redis = await startTestRedis()
t.teardown(() => redis.close())

/**
 * The app with its log written where the test reads it, at `info` (the default). `beforeReady`
 * may add routes of the test's own.
 */
async function loggedApp (t: Test, env: Record<string, string> = {}, beforeReady?: (app: Awaited<ReturnType<typeof buildApp>>) => void, testRedis: TestRedis = redis) {
  const text: string[] = []
  const stream = new Writable({ write (chunk, _encoding, done) { text.push(String(chunk)); done() } })
  const config = loadConfig({ REDIS_URL: testRedis.url, REDIS_PREFIX: testRedis.prefix, ADMIN_TOKEN, SECRET_KEY: 'test-secret-key-0123456789abcdef0123456789', ROLE: 'api', ...env })
  const app = await buildApp({ config, logger: { level: 'info', stream } })
  t.teardown(() => app.close())
  beforeReady?.(app)
  await app.ready()
  return {
    app,
    /** Everything written so far, as one text. */
    text: () => text.join(''),
    lines: (): LogLine[] => text.join('').split('\n').filter(Boolean).map((line) => JSON.parse(line))
  }
}

t.test('query strings never reach the request log: tokens arrive there', async (t) => {
  const log = await loggedApp(t)
  const requests = [
    '/health?access_token=SECRET_HEALTH',
    '/v1/sources?access_token=SECRET_ADMIN&x=1',
    '/v1/no-such-route?code=SECRET_404&state=SECRET_STATE',
    '/oauth/facebook/callback?code=SECRET_CODE&state=SECRET_OAUTH_STATE',
    '/v1/track?writeKey=SECRET_WRITE_KEY',
    '/admin/queues?token=SECRET_DASHBOARD'
  ]
  for (const url of requests) await log.app.inject({ url })
  const text = log.text()
  t.ok(text.includes('incoming request'), 'the request lines were captured')
  t.notOk(/SECRET/.test(text), 'no query value is in the log')
  const incoming = log.lines().filter((line) => line.msg === 'incoming request').map((line) => line.req.url)
  t.same(incoming, ['/v1/sources', '/v1/no-such-route', '/v1/track', '/admin/queues'], 'the paths are logged, without their queries (probes and the OAuth callback log only warnings)')
  t.match(log.lines().find((line) => line.msg === 'incoming request'), { req: { method: 'GET', remoteAddress: '127.0.0.1' } }, 'the rest of the request line is as before')
})

t.test('health and readiness probes write no request lines at info; warnings still come', async (t) => {
  const own = await startTestRedis()
  t.teardown(() => own.close())
  const log = await loggedApp(t, {}, undefined, own)
  for (const url of ['/health', '/ready', '/health/', '/ready']) t.equal((await log.app.inject({ url })).statusCode, 200)
  t.same(log.lines().filter((line) => line.reqId !== undefined), [], 'no line for the probes')
  await log.app.inject({ url: '/v1/sources', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.same(log.lines().filter((line) => line.reqId !== undefined).map((line) => line.msg), ['incoming request', 'request completed'], 'other routes log as before')

  if (!own.owned) {
    t.comment('the rest needs a redis-server of its own to stop')
    return
  }
  await own.stop()
  const ready = await log.app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 503)
  const lines = log.lines().filter((line) => line.reqId === ready.headers['x-request-id'])
  t.same(lines.map((line) => [line.level, line.msg]), [[40, 'not ready']], 'a failed readiness check is a warning, and only that')
})

t.test('the log\'s reqId is the answer\'s x-request-id', async (t) => {
  const log = await loggedApp(t)
  const given = await log.app.inject({ url: '/v1/sources', headers: { 'x-request-id': 'lb-trace-42' } })
  t.equal(given.headers['x-request-id'], 'lb-trace-42')
  const generated = await log.app.inject({ url: '/v1/sources', headers: { 'x-request-id': 'not safe!' } })
  const ids = [...new Set(log.lines().filter((line) => line.msg === 'incoming request').map((line) => line.reqId))]
  t.same(ids, ['lb-trace-42', generated.headers['x-request-id']])
})

t.test('X-Forwarded-For is ignored unless TRUST_PROXY names the proxy', async (t) => {
  const ipRoute = (app: Awaited<ReturnType<typeof buildApp>>) => { app.get('/test/ip', async (request) => ({ ip: request.ip })) }
  const forwarded = { 'x-forwarded-for': '203.0.113.9' }
  const cases: Array<[Record<string, string>, string, string]> = [
    [{}, '127.0.0.1', 'by default, the peer\'s address'],
    [{ TRUST_PROXY: '10.0.0.0/8' }, '127.0.0.1', 'from a peer that is not a listed proxy'],
    [{ TRUST_PROXY: '127.0.0.1' }, '203.0.113.9', 'from a listed proxy'],
    [{ TRUST_PROXY: '127.0.0.0/8,::1' }, '203.0.113.9', 'from a proxy in a listed CIDR'],
    [{ TRUST_PROXY: 'true' }, '203.0.113.9', 'from anyone with true']
  ]
  for (const [env, ip, why] of cases) {
    const log = await loggedApp(t, env, ipRoute)
    // inject's peer is 127.0.0.1.
    t.same((await log.app.inject({ url: '/test/ip', headers: forwarded })).json(), { ip }, `${ip} ${why}`)
    t.equal(log.lines().find((line) => line.msg === 'incoming request')?.req.remoteAddress, ip, 'and in the request log')
  }
})
