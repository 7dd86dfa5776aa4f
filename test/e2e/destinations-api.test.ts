// The destinations admin API end to end: CRUD and its 400s (each naming the field), 404s, the
// admin token, access tokens (encrypted at rest, never returned, never logged), deleting a source,
// and "Connect to Facebook" (OAuth) against the fake Graph API's dialog and token endpoints.
import { Writable } from 'node:stream'
import t from 'tap'
import { buildApp, LOG_REDACT } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { DEFAULT_TOKEN, startFakeGraph } from '../fixtures/fake-graph.js'
import { ADMIN_TOKEN, buildTestApp, type TestContext } from '../helpers/app.js'
import {
  assertAccounted, createDestination, DESTINATION_TYPE, FAST_DELIVERY_ENV, getDestination, sendBatch, settledStats,
  startDelivery, track, waitFor
} from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { allKeys, startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const SETTINGS = { conversionEvents: { 'Order Completed': '794041057373779' } }

/** Every key of the app's prefix with its value(s) as text: what someone reading Redis sees. */
async function redisDump (ctx: TestContext): Promise<string> {
  const out: string[] = []
  // Data keys, and BullMQ's (`{prefix}…` on one Redis, `{prefix:queue}…` on a cluster), on every primary.
  for (const pattern of [`${ctx.config.REDIS_PREFIX}:*`, `{${ctx.config.REDIS_PREFIX}[}:]*`]) {
    for (const key of await allKeys(ctx.app.redis, pattern)) {
      const type = await ctx.app.redis.type(key)
      if (type === 'string') out.push(key, String(await ctx.app.redis.get(key)))
      else if (type === 'hash') out.push(key, JSON.stringify(await ctx.app.redis.hgetall(key)))
      else if (type === 'list') out.push(key, JSON.stringify(await ctx.app.redis.lrange(key, 0, -1)))
      else if (type === 'set') out.push(key, JSON.stringify(await ctx.app.redis.smembers(key)))
      else if (type === 'zset') out.push(key, JSON.stringify(await ctx.app.redis.zrange(key, 0, -1)))
      else out.push(key)
    }
  }
  return out.join('\n')
}

async function request (ctx: TestContext, method: string, url: string, options: { body?: unknown, token?: string | null } = {}) {
  const headers: Record<string, string> = {}
  const token = options.token === undefined ? ADMIN_TOKEN : options.token
  if (token !== null) headers.authorization = `Bearer ${token}`
  const response = await ctx.app.inject({ method: method as 'GET', url, headers, ...(options.body === undefined ? {} : { payload: options.body as object }) })
  return { statusCode: response.statusCode, json: response.body === '' ? undefined : response.json(), body: response.body, headers: response.headers }
}

t.test('create, read, list, update and delete a destination', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const created = await ctx.admin('POST', `/v1/sources/${source.id}/destinations`, { type: DESTINATION_TYPE, settings: SETTINGS })
  t.equal(created.statusCode, 201)
  t.match(created.json, {
    id: /^dst_/,
    sourceId: source.id,
    type: DESTINATION_TYPE,
    name: 'Facebook Offline Conversions',
    enabled: true,
    status: 'needs_token',
    connected: false,
    warnings: [],
    settings: {
      conversionEvents: SETTINGS.conversionEvents,
      completeRegistrationEvents: {},
      leadEvents: {},
      valueFieldIdentifier: 'value',
      limitedDataUse: false,
      apiFormat: 'conversions-api',
      apiVersion: 'v26.0',
      uploadTag: 'Segment',
      sendAudienceProperties: true
    }
  })
  t.notOk('pausedUntil' in created.json)
  t.notOk('testEventCode' in created.json.settings, 'no test event code unless set')
  const id = created.json.id

  t.same((await ctx.admin('GET', `/v1/destinations/${id}`)).json, created.json, 'GET shows what POST answered')
  const list = await ctx.admin('GET', `/v1/sources/${source.id}/destinations`)
  t.same(list.json.destinations.map((d: any) => d.id), [id])

  const renamed = await ctx.admin('PATCH', `/v1/destinations/${id}`, { name: 'Stores', enabled: false })
  t.equal(renamed.statusCode, 200)
  t.match(renamed.json, { name: 'Stores', enabled: false, status: 'disabled' })

  // Settings merge by top-level key: what is not given stays.
  const patched = await ctx.admin('PATCH', `/v1/destinations/${id}`, { settings: { testEventCode: 'TEST123', leadEvents: { 'Lead Generated': '5504831519607222' } } })
  t.equal(patched.statusCode, 200)
  t.same(patched.json.settings.conversionEvents, SETTINGS.conversionEvents, 'untouched setting kept')
  t.equal(patched.json.settings.testEventCode, 'TEST123')
  t.same(patched.json.settings.leadEvents, { 'Lead Generated': '5504831519607222' })
  // null removes a setting (JSON merge patch): the test event code can be turned off again.
  const cleared = await ctx.admin('PATCH', `/v1/destinations/${id}`, { settings: { testEventCode: null } })
  t.equal(cleared.statusCode, 200, JSON.stringify(cleared.json))
  t.notOk('testEventCode' in (cleared.json?.settings ?? {}), 'testEventCode removed')
  t.same(cleared.json?.settings.leadEvents, { 'Lead Generated': '5504831519607222' })

  t.equal((await ctx.admin('DELETE', `/v1/destinations/${id}`)).statusCode, 204)
  t.equal((await ctx.admin('GET', `/v1/destinations/${id}`)).statusCode, 404)
  t.same((await ctx.admin('GET', `/v1/sources/${source.id}/destinations`)).json, { destinations: [] })
})

t.test('an admin change and a worker\'s status change made at once are both kept', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const { id } = await createDestination(ctx, source.id, SETTINGS)
  // Both read the stored destination before either writes (one connection, sent together).
  await Promise.all([
    ctx.app.destinations.update(id, { name: 'Renamed', settings: { ...SETTINGS, testEventCode: 'TEST42' } as any }),
    ctx.app.destinations.update(id, { authStatus: 'needs_reauthorization', authMessage: 'token expired' }),
    ctx.app.destinations.update(id, { enabled: false })
  ])
  t.match(await getDestination(ctx, id), { name: 'Renamed', enabled: false, status: 'disabled', settings: { testEventCode: 'TEST42' } })
  t.match(await ctx.app.destinations.get(id), { authStatus: 'needs_reauthorization', authMessage: 'token expired' })
  t.equal(await ctx.app.destinations.update('no-such-destination', { name: 'x' }), undefined)
})

t.test('bad input: 400s that name the field', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const path = `/v1/sources/${source.id}/destinations`
  const cases: Array<[string, unknown, RegExp]> = [
    ['no type', { settings: SETTINGS }, /type/],
    ['another type', { type: 'webhook', settings: SETTINGS }, /type must be "facebook-offline-conversions"/],
    ['an empty name', { type: DESTINATION_TYPE, name: '' }, /name/],
    ['enabled not a boolean', { type: DESTINATION_TYPE, enabled: 'yes' }, /enabled/],
    ['settings not an object', { type: DESTINATION_TYPE, settings: [] }, /settings/],
    ['a dataset id that is not digits', { type: DESTINATION_TYPE, settings: { conversionEvents: { 'Order Completed': 'abc' } } }, /settings\.conversionEvents\["Order Completed"\]/],
    ['an unknown setting', { type: DESTINATION_TYPE, settings: { conversionEvent: {} } }, /settings\.conversionEvent: is not a setting/],
    ['a bad apiFormat', { type: DESTINATION_TYPE, settings: { apiFormat: 'v2' } }, /settings\.apiFormat/],
    ['a bad apiVersion', { type: DESTINATION_TYPE, settings: { apiVersion: '21' } }, /settings\.apiVersion/],
    ['a bad valueFieldIdentifier', { type: DESTINATION_TYPE, settings: { valueFieldIdentifier: 'revenue' } }, /settings\.valueFieldIdentifier/],
    ['an unknown top-level field', { type: DESTINATION_TYPE, settings: SETTINGS, enable: false }, /enable/]
  ]
  for (const [name, body, message] of cases) {
    const response = await ctx.admin('POST', path, body)
    t.equal(response.statusCode, 400, name)
    t.match(response.json, { statusCode: 400, error: 'Bad Request', message }, name)
  }
  const both = await ctx.admin('POST', path, { type: DESTINATION_TYPE, settings: { limitedDataUse: 'yes', uploadTag: '' } })
  t.match(both.json.message, /settings\.limitedDataUse.*settings\.uploadTag|settings\.uploadTag.*settings\.limitedDataUse/, 'every problem at once')
  t.same((await ctx.admin('GET', `/v1/sources/${source.id}/destinations`)).json, { destinations: [] }, 'nothing was created')

  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const patches: Array<[string, unknown, RegExp]> = [
    ['a bad setting', { settings: { leadEvents: { x: '12a' } } }, /settings\.leadEvents\["x"\]/],
    ['an unknown setting', { settings: { foo: 1 } }, /settings\.foo/],
    ['settings not an object', { settings: 'x' }, /settings/],
    ['an empty name', { name: '' }, /name/],
    ['an unknown field', { type: 'x' }, /type|additional/]
  ]
  for (const [name, body, message] of patches) {
    const response = await ctx.admin('PATCH', `/v1/destinations/${destination.id}`, body)
    t.equal(response.statusCode, 400, name)
    t.match(response.json?.message, message, name)
  }
  t.same((await getDestination(ctx, destination.id)).settings.conversionEvents, SETTINGS.conversionEvents, 'unchanged')

  // Found by the fuzz tests: settings nested 10,000 levels deep answered 500 (a stack overflow).
  const deep = `{"leadEvents":${'['.repeat(10_000)}${']'.repeat(10_000)}}`
  for (const [method, url, body] of [['POST', path, `{"type":"${DESTINATION_TYPE}","settings":${deep}}`], ['PATCH', `/v1/destinations/${destination.id}`, `{"settings":${deep}}`]]) {
    const response = await ctx.app.inject({ method: method as 'POST', url, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, payload: body })
    t.equal(response.statusCode, 400, `${method}: deep settings are a 400`)
    t.match(response.json(), { statusCode: 400, error: 'Bad Request', message: /settings\.leadEvents: must be an object/ }, `${method}: naming the setting`)
  }

  const short = await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, { accessToken: 'short' })
  t.equal(short.statusCode, 400)
  t.match(short.json.message, /accessToken/)
  t.notOk(short.json.message.includes('short'), 'the refused token is not echoed')
  t.equal((await ctx.admin('PUT', `/v1/destinations/${destination.id}/access-token`, {})).statusCode, 400)
})

t.test('unknown ids answer 404', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const missing = 'dst_0000000000000000'
  const routes: Array<[string, string, unknown?]> = [
    ['GET', `/v1/destinations/${missing}`],
    ['PATCH', `/v1/destinations/${missing}`, { name: 'x' }],
    ['DELETE', `/v1/destinations/${missing}`],
    ['PUT', `/v1/destinations/${missing}/access-token`, { accessToken: DEFAULT_TOKEN }],
    ['DELETE', `/v1/destinations/${missing}/access-token`],
    ['GET', `/v1/destinations/${missing}/stats`],
    ['GET', `/v1/destinations/${missing}/failures`],
    ['POST', `/v1/destinations/${missing}/failures/retry`, {}],
    ['POST', '/v1/sources/src_0000000000000000/destinations', { type: DESTINATION_TYPE, settings: SETTINGS }],
    ['GET', '/v1/sources/src_0000000000000000/destinations']
  ]
  for (const [method, url, body] of routes) {
    const response = await ctx.admin(method, url, body)
    t.equal(response.statusCode, 404, `${method} ${url}`)
    t.match(response.json, { statusCode: 404, error: 'Not Found', message: /does not exist/ }, `${method} ${url}`)
  }
})

t.test('every destination route needs the admin token, checked before the body', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const id = destination.id
  const routes: Array<[string, string, unknown?]> = [
    ['POST', `/v1/sources/${source.id}/destinations`, { type: DESTINATION_TYPE }],
    ['GET', `/v1/sources/${source.id}/destinations`],
    ['GET', `/v1/destinations/${id}`],
    // invalid bodies: without the token the answer is 401, never a 400 that describes the schema
    ['PATCH', `/v1/destinations/${id}`, { enabled: 'nope' }],
    ['DELETE', `/v1/destinations/${id}`],
    ['PUT', `/v1/destinations/${id}/access-token`, { accessToken: 'x' }],
    ['DELETE', `/v1/destinations/${id}/access-token`],
    ['GET', `/v1/destinations/${id}/stats`],
    ['GET', `/v1/destinations/${id}/failures?limit=0`],
    ['POST', `/v1/destinations/${id}/failures/retry`, { ids: 'x' }],
    ['GET', `/v1/destinations/${id}/oauth/start`]
  ]
  for (const token of [null, 'wrong-admin-token-0123456789']) {
    for (const [method, url, body] of routes) {
      const response = await request(ctx, method, url, { body, token })
      t.equal(response.statusCode, 401, `${method} ${url} with ${token === null ? 'no' : 'a wrong'} token`)
      t.match(response.json, { statusCode: 401, error: 'Unauthorized' })
    }
  }
  t.equal((await getDestination(ctx, id)).name, 'Facebook Offline Conversions', 'nothing changed')
})

t.test('access tokens: stored encrypted, never returned, removable', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const token = 'EAAsecret-system-user-token-0123456789'
  graph.addToken(token)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token })
  t.equal(destination.connected, true)

  const raw = await ctx.app.redis.get(`${ctx.config.REDIS_PREFIX}:access-token:${destination.id}`)
  t.ok(raw, 'stored')
  t.match(raw, /^v1\./, 'in the encrypted format')
  t.notOk(raw!.includes(token), 'not in clear')
  t.notOk(raw!.includes(Buffer.from(token).toString('base64')), 'nor merely encoded')

  await sendBatch(ctx, source.writeKey, [track('Order Completed', { revenue: 1 })])
  const stats = await settledStats(ctx, destination.id, 1)
  assertAccounted(t, stats, 1)
  t.equal(stats.delivered, 1, 'the stored token works')

  const answers = [
    await ctx.admin('GET', `/v1/destinations/${destination.id}`),
    await ctx.admin('GET', `/v1/sources/${source.id}/destinations`),
    await ctx.admin('GET', `/v1/destinations/${destination.id}/stats`),
    await ctx.admin('GET', `/v1/destinations/${destination.id}/failures`),
    await ctx.admin('PATCH', `/v1/destinations/${destination.id}`, { name: 'renamed' })
  ]
  for (const answer of answers) t.notOk(JSON.stringify(answer.json).includes(token), 'no answer carries the token')
  t.notOk((await redisDump(ctx)).includes(token), 'nowhere in Redis in clear')

  t.equal((await ctx.admin('DELETE', `/v1/destinations/${destination.id}/access-token`)).statusCode, 204)
  t.equal((await getDestination(ctx, destination.id)).connected, false)
  t.equal(await ctx.app.redis.exists(`${ctx.config.REDIS_PREFIX}:access-token:${destination.id}`), 0)
})

t.test('deleting a source deletes its destinations, their tokens and counters', async (t) => {
  const { ctx } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const other = await ctx.createSource('other')
  const first = await createDestination(ctx, source.id, SETTINGS)
  const second = await createDestination(ctx, source.id, SETTINGS)
  const kept = await createDestination(ctx, other.id, SETTINGS)
  await sendBatch(ctx, source.writeKey, [track('Order Completed', { revenue: 1 })])
  await settledStats(ctx, first.id, 1)

  t.equal((await ctx.admin('DELETE', `/v1/sources/${source.id}`)).statusCode, 204)
  for (const { id } of [first, second]) {
    t.equal((await ctx.admin('GET', `/v1/destinations/${id}`)).statusCode, 404)
    t.equal((await ctx.admin('GET', `/v1/destinations/${id}/stats`)).statusCode, 404)
  }
  const left = await redisDump(ctx)
  t.notOk(left.includes(first.id) || left.includes(second.id), 'no key or value mentions them')
  t.equal((await getDestination(ctx, kept.id)).status, 'active', 'another source\'s destination stays')
})

const OAUTH = { APP_ID: '1234567890', APP_SECRET: 'fake-app-secret-0123456789', PUBLIC_URL: 'https://relay.example.com' }

/** The service (listening, fast delivery) and a fake Graph API that checks the app's id and secret. */
async function oauthSetup (t: { teardown: (fn: () => unknown) => void }) {
  const graph = await startFakeGraph({ appId: OAUTH.APP_ID, appSecret: OAUTH.APP_SECRET })
  t.teardown(() => graph.close())
  const ctx = await buildTestApp(t, {
    redis: freshPrefix(redis),
    listen: true,
    env: {
      ...FAST_DELIVERY_ENV,
      FACEBOOK_GRAPH_URL: graph.url,
      FACEBOOK_APP_ID: OAUTH.APP_ID,
      FACEBOOK_APP_SECRET: OAUTH.APP_SECRET,
      PUBLIC_URL: OAUTH.PUBLIC_URL,
      FACEBOOK_OAUTH_DIALOG_URL: `${graph.url}/v21.0/dialog/oauth`
    }
  })
  return { ctx, graph }
}

interface Flow {
  /** The dialog URL /oauth/start redirected to */
  dialog: URL
  /** The Set-Cookie header /oauth/start answered */
  setCookie: string
  /** `name=value`, as the browser sends it back */
  cookie: string
  /** The callback URL Meta's dialog sends the browser to */
  callback: URL
}

/** A browser's "Connect to Facebook": /oauth/start (admin token as Bearer unless told), then Meta's dialog. */
async function startFlow (ctx: TestContext, destinationId: string, headers: Record<string, string> = { authorization: `Bearer ${ADMIN_TOKEN}` }): Promise<Flow> {
  const start = await ctx.app.inject({ url: `/v1/destinations/${destinationId}/oauth/start`, headers })
  if (start.statusCode !== 302) throw new Error(`oauth/start: ${start.statusCode} ${start.body}`)
  const setCookie = String(start.headers['set-cookie'])
  const dialog = new URL(String(start.headers.location))
  const answer = await fetch(dialog, { redirect: 'manual' })
  if (answer.status !== 302) throw new Error(`the dialog answered ${answer.status}`)
  return { dialog, setCookie, cookie: setCookie.split(';')[0], callback: new URL(answer.headers.get('location')!) }
}

/** The browser arriving at the callback, with a cookie or none. */
function callback (ctx: TestContext, url: URL, cookie?: string) {
  return ctx.app.inject({ url: url.pathname + url.search, headers: cookie === undefined ? {} : { cookie } })
}

t.test('Connect to Facebook (OAuth)', async (t) => {
  const { ctx, graph } = await oauthSetup(t)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })

  const start = await request(ctx, 'GET', `/v1/destinations/${destination.id}/oauth/start`)
  t.equal(start.statusCode, 302)
  const location = new URL(String(start.headers.location))
  t.equal(`${location.origin}${location.pathname}`, `${graph.url}/v21.0/dialog/oauth`)
  t.equal(location.searchParams.get('client_id'), OAUTH.APP_ID)
  t.equal(location.searchParams.get('redirect_uri'), `${OAUTH.PUBLIC_URL}/oauth/facebook/callback`)
  t.equal(location.searchParams.get('scope'), 'ads_management,public_profile')
  const state = location.searchParams.get('state')
  t.match(state, /^[A-Za-z0-9_-]{20,}$/)
  // The state is bound to this browser: a short-lived cookie only the callback receives.
  const attributes = String(start.headers['set-cookie']).split(';').map((part) => part.trim())
  t.equal(attributes[0], `relay_oauth_state=${state}`)
  t.same(attributes.slice(1).sort(), ['HttpOnly', 'Max-Age=600', 'Path=/oauth/facebook/callback', 'SameSite=Lax', 'Secure'], 'HttpOnly, SameSite=Lax, Secure under an https PUBLIC_URL, 10 minutes, the callback\'s path')

  // A conversion waits for the connection…
  const message = track('Order Completed', { revenue: 42 })
  await sendBatch(ctx, source.writeKey, [message])
  await waitFor(async () => (await ctx.admin('GET', `/v1/destinations/${destination.id}/stats`)).json.received === 1, 10_000, 'the conversion to be queued')

  const flow = await startFlow(ctx, destination.id)
  t.equal(`${flow.callback.origin}${flow.callback.pathname}`, `${OAUTH.PUBLIC_URL}/oauth/facebook/callback`)
  const connected = await callback(ctx, flow.callback, flow.cookie)
  t.equal(connected.statusCode, 200, connected.body)
  t.match(connected.body, /Connected/)
  t.match(connected.headers['set-cookie'], /^relay_oauth_state=; Max-Age=0;/, 'the flow\'s cookie is cleared')
  const after = await getDestination(ctx, destination.id)
  t.match(after, { connected: true, status: 'active' })

  // The code and the client secret went to Meta in POSTed forms, never in a URL.
  t.equal(graph.tokenRequests.length, 2, 'code → short-lived token, short → long-lived')
  for (const exchange of graph.tokenRequests) {
    t.match(exchange, { method: 'POST', url: /^\/v\d+\.\d+\/oauth\/access_token$/, contentType: /^application\/x-www-form-urlencoded/, status: 200 })
    t.notOk(exchange.url.includes('?'), 'no query string')
  }
  // The long-lived token: stored encrypted, never returned.
  const token = await ctx.app.destinations.accessToken(destination.id)
  t.match(token, /^EAA/, 'the fake\'s long-lived token is stored')
  const raw = await ctx.app.redis.get(`${ctx.config.REDIS_PREFIX}:access-token:${destination.id}`)
  t.match(raw, /^v1\./, 'encrypted')
  t.notOk(raw!.includes(token!), 'not in clear')
  t.notOk(JSON.stringify(after).includes(token!), 'the destination\'s GET does not carry it')
  t.notOk(connected.body.includes(token!), 'nor the page')

  // …and the waiting conversion goes out with it (the fake checks appsecret_proof).
  const stats = await settledStats(ctx, destination.id, 1)
  assertAccounted(t, stats, 1)
  t.equal(stats.delivered, 1)
  t.same(graph.events().map((e) => e.event_id), [message.messageId])

  const reused = await callback(ctx, flow.callback, flow.cookie)
  t.equal(reused.statusCode, 400, 'a state is used once')
  t.match(reused.body, /expired or was already used/)
  t.equal((await callback(ctx, new URL('https://relay.example.com/oauth/facebook/callback?code=abc'))).statusCode, 400, 'no state')

  graph.denyNextAuthorization()
  const denied = await startFlow(ctx, destination.id)
  t.equal(denied.callback.searchParams.get('error'), 'access_denied')
  const deniedPage = await callback(ctx, denied.callback, denied.cookie)
  t.equal(deniedPage.statusCode, 400)
  t.match(deniedPage.body, /did not authorise/)
  t.equal((await getDestination(ctx, destination.id)).connected, true, 'the earlier token stays')

  // A destination deleted while its owner was on Facebook's dialog is not brought back.
  const gone = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const late = await startFlow(ctx, gone.id)
  t.equal((await ctx.admin('DELETE', `/v1/destinations/${gone.id}`)).statusCode, 204)
  t.equal((await callback(ctx, late.callback, late.cookie)).statusCode, 400)
  t.equal(await ctx.app.redis.exists(`${ctx.config.REDIS_PREFIX}:access-token:${gone.id}`), 0, 'no orphan token stored')

  t.equal((await ctx.admin('GET', '/v1/destinations/dst_0000000000000000/oauth/start')).statusCode, 404)
})

t.test('OAuth: the callback is refused in a browser that did not start the flow, and stores nothing', async (t) => {
  const { ctx, graph } = await oauthSetup(t)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const stored = async () => ctx.app.redis.exists(`${ctx.config.REDIS_PREFIX}:access-token:${destination.id}`)

  const flow = await startFlow(ctx, destination.id)
  // The callback URL alone (leaked, or opened in another browser): no cookie.
  const withoutCookie = await callback(ctx, flow.callback)
  t.equal(withoutCookie.statusCode, 400)
  t.match(withoutCookie.body, /<h1>Not connected<\/h1>/)
  t.match(withoutCookie.body, /did not start this connection/)
  t.equal(await stored(), 0, 'no token stored')
  t.equal((await getDestination(ctx, destination.id)).connected, false)
  t.equal(graph.tokenRequests.length, 0, 'the code was not exchanged')

  // Another flow's cookie: a browser that started its own flow, handed this one's link.
  const other = await startFlow(ctx, destination.id)
  const mismatched = await callback(ctx, flow.callback, other.cookie)
  t.equal(mismatched.statusCode, 400)
  t.match(mismatched.body, /not for the connection this browser started/)
  t.equal(await stored(), 0, 'no token stored')
  t.equal(graph.tokenRequests.length, 0, 'the code was not exchanged')
  const forged = await callback(ctx, flow.callback, 'relay_oauth_state=made-up; other=1')
  t.equal(forged.statusCode, 400, 'a made-up cookie')
  t.equal(await stored(), 0)

  // Neither refusal used the state up: the browser that started the flow still completes it.
  const completed = await callback(ctx, flow.callback, `theme=dark; ${flow.cookie}`)
  t.equal(completed.statusCode, 200, completed.body)
  t.equal(await stored(), 1)
  t.equal((await getDestination(ctx, destination.id)).connected, true)
})

t.test('OAuth start: a browser signs in with the admin token as the Basic password, or with the web app\'s admin session', async (t) => {
  const { ctx } = await oauthSetup(t)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const url = `/v1/destinations/${destination.id}/oauth/start`

  const anonymous = await ctx.app.inject({ url })
  t.equal(anonymous.statusCode, 401)
  t.match(anonymous.headers['www-authenticate'], /^Basic realm=/, 'a browser is asked for the token')
  t.match(anonymous.json(), { statusCode: 401, error: 'Unauthorized' })
  const basic = await ctx.app.inject({ url, headers: { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` } })
  t.equal(basic.statusCode, 302, 'the admin token as the Basic password')
  t.match(basic.headers['set-cookie'], /^relay_oauth_state=/)
  t.equal((await ctx.app.inject({ url, headers: { authorization: `Basic ${Buffer.from('admin:wrong').toString('base64')}` } })).statusCode, 401)

  // The settings web app, when there is one, registers how it recognises an admin's session.
  ctx.app.setAdminSessionCheck((request) => request.headers.cookie === 'relay_session=an-admin-session')
  t.throws(() => ctx.app.setAdminSessionCheck(() => true), /already registered/, 'one check, not a chain anyone can widen')
  t.equal((await ctx.app.inject({ url, headers: { cookie: 'relay_session=an-admin-session' } })).statusCode, 302, 'an admin session starts the flow')
  t.equal((await ctx.app.inject({ url, headers: { cookie: 'relay_session=someone-else' } })).statusCode, 401)
  t.equal((await ctx.app.inject({ url: '/v1/sources', headers: { cookie: 'relay_session=an-admin-session' } })).statusCode, 401,
    'the JSON admin API does not take the session (not before the web app checks CSRF on it)')
})

t.test('OAuth without its configuration: 400 naming the missing variables', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { FACEBOOK_APP_ID: '1234567890' } })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const response = await ctx.admin('GET', `/v1/destinations/${destination.id}/oauth/start`)
  t.equal(response.statusCode, 400)
  t.match(response.json.message, /FACEBOOK_APP_SECRET/)
  t.match(response.json.message, /PUBLIC_URL/)
  t.notMatch(response.json.message, /FACEBOOK_APP_ID/, 'only what is missing')
})

t.test('tokens never reach the log', async (t) => {
  const APP_ID = '1234567890'
  const APP_SECRET = 'fake-app-secret-0123456789'
  const graph = await startFakeGraph({ appId: APP_ID, appSecret: APP_SECRET })
  t.teardown(() => graph.close())
  const lines: string[] = []
  const stream = new Writable({ write (chunk, _encoding, done) { lines.push(String(chunk)); done() } })
  const prefixed = freshPrefix(redis)
  const config = loadConfig({
    ...FAST_DELIVERY_ENV,
    REDIS_URL: prefixed.url,
    ...(prefixed.clusterNodes === undefined ? {} : { REDIS_CLUSTER_NODES: prefixed.clusterNodes }),
    REDIS_PREFIX: prefixed.prefix,
    ADMIN_TOKEN,
    SECRET_KEY: 'test-secret-key-0123456789abcdef0123456789',
    FACEBOOK_GRAPH_URL: graph.url,
    FACEBOOK_APP_ID: APP_ID,
    FACEBOOK_APP_SECRET: APP_SECRET,
    PUBLIC_URL: 'https://relay.example.com',
    FACEBOOK_OAUTH_DIALOG_URL: `${graph.url}/v21.0/dialog/oauth`
  })
  const app = await buildApp({ config, logger: { level: 'trace', redact: LOG_REDACT, stream } })
  t.teardown(() => app.close())
  await app.ready()
  const ctx = { app, config, admin: async (method: string, url: string, body?: unknown) => request({ app } as TestContext, method, url, { body }) } as unknown as TestContext
  ctx.createSource = async () => (await ctx.admin('POST', '/v1/sources', { name: 'logged' })).json

  const source = await ctx.createSource()
  const pasted = 'EAApasted-token-never-logged-0123456789'
  graph.addToken(pasted)
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: pasted })
  // A revoked token makes the worker log Meta's 190.
  graph.revokeToken(pasted)
  const message = track('Order Completed', { revenue: 3 })
  await app.inject({ method: 'POST', url: '/v1/batch', headers: { authorization: `Basic ${Buffer.from(`${source.writeKey}:`).toString('base64')}` }, payload: { batch: [message] } })
  await waitFor(async () => (await getDestination(ctx, destination.id)).status === 'needs_reauthorization', 10_000, 'status needs_reauthorization')

  // Reconnect through OAuth: the code, the short- and the long-lived tokens pass through the app.
  const flow = await startFlow({ app } as TestContext, destination.id)
  const code = flow.callback.searchParams.get('code')!
  t.equal((await callback({ app } as TestContext, flow.callback, flow.cookie)).statusCode, 200)
  const longLived = await app.destinations.accessToken(destination.id)
  t.ok(longLived)
  const stats = await settledStats(ctx, destination.id, 1)
  t.equal(stats.delivered, 1)

  const log = lines.join('')
  t.ok(log.includes('Meta refused the token'), 'the log was captured')
  for (const secret of [pasted, longLived!, code, APP_SECRET, ADMIN_TOKEN, source.writeKey]) {
    t.notOk(log.includes(secret), `${secret.slice(0, 6)}… not in the log`)
  }
})

t.test('PATCHes of different settings racing each other all land (the merge is atomic)', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const created = await ctx.admin('POST', `/v1/sources/${source.id}/destinations`, { type: 'facebook-offline-conversions', settings: {} })
  const id = created.json.id
  const patches: Array<Record<string, unknown>> = [
    { testEventCode: 'TEST1' }, { uploadTag: 'store-7' }, { valueFieldIdentifier: 'price' }, { limitedDataUse: true },
    { sendAudienceProperties: false }, { apiVersion: 'v25.0' }, { consentCategories: ['Advertising'] }, { requireConsent: true },
    { conversionEvents: { 'Order Completed': '1' } }, { leadEvents: { Lead: '2' } }
  ]
  const answers = await Promise.all(patches.map((settings) => ctx.admin('PATCH', `/v1/destinations/${id}`, { settings })))
  t.same(answers.map((a) => a.statusCode), patches.map(() => 200))
  const { json } = await ctx.admin('GET', `/v1/destinations/${id}`)
  for (const patch of patches) t.match(json.settings, patch, `kept: ${Object.keys(patch)[0]}`)
  t.equal((await ctx.admin('PATCH', `/v1/destinations/${id}`, { settings: { apiVersion: 'nope' } })).statusCode, 400, 'a bad patch is refused')
  t.equal((await ctx.admin('GET', `/v1/destinations/${id}`)).json.updatedAt, json.updatedAt, 'and writes nothing')
})
