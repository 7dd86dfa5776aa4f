import t, { type Test } from 'tap'
import { routePattern } from '../plugins/errors.js'
import { ADMIN_TOKEN, basicAuth, buildTestApp, type TestContext } from './helpers/app.js'
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
    { name: 'a 405', url: '/v1/track', status: 405 },
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

/** The page's scripts and stylesheets, resolved against the page (or its <base href>). */
function assetsOf (html: string, pageUrl: string): { scripts: URL[], styles: URL[], inlineScripts: number } {
  const base = new URL(/<base href="([^"]+)"/.exec(html)?.[1] ?? pageUrl, 'http://relay.test' + pageUrl)
  const scripts = [...html.matchAll(/<script[^>]*\ssrc="([^"]+)"/g)].map((m) => new URL(m[1], base))
  const styles = [...html.matchAll(/<link[^>]*href="([^"]+)"[^>]*rel="stylesheet"|<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"/g)].map((m) => new URL(m[1] ?? m[2], base))
  // Scripts the browser would run from the page itself (a JSON data block is not run).
  const inlineScripts = [...html.matchAll(/<script(?![^>]*\ssrc=)(?![^>]*type="application\/json")[^>]*>/g)].length
  return { scripts, styles, inlineScripts }
}

function directives (csp: string): Map<string, string[]> {
  return new Map(csp.split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0] !== '').map(([name, ...values]) => [name, values]))
}

/** Checks an HTML page's helmet headers, and that its CSP lets its own scripts and styles load. */
async function checkPage (t: Test, ctx: TestContext, url: string, headers: Record<string, string> = {}) {
  const page = await ctx.app.inject({ url, headers })
  t.equal(page.statusCode, 200, `${url}: 200`)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.body, /<html/i, 'the HTML')
  t.equal(page.headers['x-content-type-options'], 'nosniff')
  t.equal(page.headers['x-frame-options'], 'DENY')
  const csp = directives(String(page.headers['content-security-policy']))
  t.same(csp.get('frame-ancestors'), ["'none'"])
  t.same(csp.get('script-src'), ["'self'"], 'scripts from this origin only')
  t.notOk(csp.has('upgrade-insecure-requests'), 'plain HTTP on a private network keeps working')
  t.notOk(page.headers['strict-transport-security'], 'HSTS is the TLS proxy\'s')
  const { scripts, styles, inlineScripts } = assetsOf(page.body, url)
  t.equal(inlineScripts, 0, 'no inline script the policy would block')
  t.ok(scripts.length > 0 && styles.length > 0, 'the page loads scripts and stylesheets')
  for (const asset of [...scripts, ...styles]) {
    if (asset.origin === 'http://relay.test') {
      const loaded = await ctx.app.inject({ url: asset.pathname, headers })
      t.equal(loaded.statusCode, 200, `${asset.pathname} loads`)
      t.ok(loaded.headers['content-security-policy'], 'with the headers too')
    } else {
      t.ok(styles.includes(asset) && csp.get('style-src')?.includes(asset.origin), `${asset.origin} is allowed by style-src`)
    }
  }
}

t.test('helmet\'s headers on the HTML pages, whose policy lets them load', async (t) => {
  const ctx = await buildTestApp(t, { redis, env: { ROLE: 'api' } })
  await checkPage(t, ctx, '/docs')
  await checkPage(t, ctx, '/docs/')
  await checkPage(t, ctx, '/admin/queues', bearer)
  await checkPage(t, ctx, '/admin/queues/queue/ingest', bearer)

  const callback = await ctx.app.inject({ url: '/oauth/facebook/callback?state=unknown&code=x' })
  t.equal(callback.statusCode, 400)
  t.match(callback.body, /<h1>Not connected<\/h1>/)
  t.match(callback.headers, { 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', 'content-security-policy': /frame-ancestors 'none'/ }, 'the OAuth pages too')
  t.match(callback.headers['content-security-policy'], /style-src [^;]*'unsafe-inline'/, 'whose inline style is allowed')
  const login = await ctx.app.inject({ url: '/admin/queues' })
  t.equal(login.statusCode, 401)
  t.ok(login.headers['content-security-policy'], 'the dashboard\'s login answer too')
})

t.test('the JSON APIs get no helmet headers, and ingestion still answers CORS to any origin', async (t) => {
  const ctx = await buildTestApp(t, { redis, env: { ROLE: 'api' } })
  const source = await ctx.createSource()
  const origin = { origin: 'https://shop.example' }
  const preflight = await ctx.app.inject({ method: 'OPTIONS', url: '/v1/track', headers: { ...origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } })
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['access-control-allow-origin'], '*')
  const tracked = await ctx.app.inject({ method: 'POST', url: '/v1/track', headers: { ...origin, authorization: basicAuth(source.writeKey), 'content-type': 'text/plain' }, payload: '{"userId":"u1","event":"A"}' })
  t.equal(tracked.statusCode, 200)
  t.equal(tracked.headers['access-control-allow-origin'], '*')
  for (const response of [preflight, tracked, await ctx.app.inject({ url: '/v1/sources', headers: bearer }), await ctx.app.inject({ url: '/health' })]) {
    t.notOk(response.headers['content-security-policy'], 'no CSP')
    t.notOk(response.headers['cross-origin-resource-policy'], 'no CORP: a page on another origin may read ingestion answers')
  }
  t.notOk((await ctx.app.inject({ url: '/v1/sources', headers: { ...bearer, ...origin } })).headers['access-control-allow-origin'], 'the admin API answers no CORS')
})

t.test('a known path called with another method: 405 with Allow, in the route family\'s error shape', async (t) => {
  const ctx = await buildTestApp(t, { redis, env: { ROLE: 'api' } })
  const cases: Array<[string, string, string, 'ingestion' | 'admin']> = [
    ['GET', '/v1/track', 'POST', 'ingestion'],
    ['GET', '/v1/t', 'POST', 'ingestion'],
    ['PUT', '/v1/batch/', 'POST', 'ingestion'],
    ['DELETE', '/v1/import', 'POST', 'ingestion'],
    ['DELETE', '/v1/sources', 'GET, HEAD, POST', 'admin'],
    ['PUT', '/v1/sources/src_123', 'GET, HEAD, DELETE', 'admin'],
    ['POST', '/v1/sources/src_123/stats', 'GET, HEAD', 'admin'],
    ['GET', '/v1/destinations/d1/access-token', 'PUT, DELETE', 'admin'],
    ['POST', '/health', 'GET, HEAD', 'admin'],
    ['POST', '/docs', 'GET, HEAD', 'admin']
  ]
  for (const [method, url, allow, family] of cases) {
    const response = await ctx.app.inject({ method: method as 'GET', url, headers: bearer })
    t.equal(response.statusCode, 405, `${method} ${url}: 405`)
    t.equal(response.headers.allow, allow, `Allow: ${allow}`)
    if (family === 'ingestion') {
      t.same(response.json(), { success: false, error: `method ${method} is not allowed on ${url} (allowed: ${allow})` })
      t.equal(response.headers['access-control-allow-origin'], '*', 'readable from any origin, as every ingestion answer')
    } else {
      t.same(response.json(), { statusCode: 405, error: 'Method Not Allowed', message: `method ${method} is not allowed on ${url} (allowed: ${allow})` })
      t.notOk(response.headers['access-control-allow-origin'])
    }
  }
  for (const url of ['/v1/nothing', '/v1/sources/a/b/c', '/v1/trackx', '/v1/sources//stats']) {
    const response = await ctx.app.inject({ method: 'GET', url, headers: bearer })
    t.equal(response.statusCode, 404, `GET ${url}: still 404`)
    t.match(response.json(), { statusCode: 404, error: 'Not Found' })
  }
  t.equal((await ctx.app.inject({ method: 'POST', url: '/v1/track?x=1', payload: '{}' })).statusCode, 401, 'the right method is routed as before')
})

t.test('routePattern: find-my-way\'s route syntax over concrete paths', async (t) => {
  const matches = (url: string, path: string) => routePattern(url).test(path)
  t.ok(matches('/v1/sources/:sourceId', '/v1/sources/src_1'))
  t.ok(matches('/v1/sources/:sourceId', '/v1/sources/src_1/'), 'a trailing slash is ignored')
  t.notOk(matches('/v1/sources/:sourceId', '/v1/sources/'), 'a parameter is not empty')
  t.notOk(matches('/v1/sources/:sourceId', '/v1/sources/a/b'), 'nor spans a slash')
  t.ok(matches('/files/:name.:ext', '/files/report.pdf'))
  t.ok(matches('/range/:from-:to', '/range/1-9'))
  t.ok(matches('/jobs/:id(^\\d+$)/logs', '/jobs/12/logs'))
  t.ok(matches('/static/*', '/static/js/main.js'))
  t.ok(matches('/static/*', '/static/'))
  t.ok(matches('/at::colon', '/at:colon'))
  t.notOk(matches('/v1.track', '/v1xtrack'), 'dots are literal')
})
