import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { ADMIN_TOKEN, buildTestApp } from '../helpers/app.js'
import { eventually, freshPrefix } from '../helpers/ingest-queue.js'
import { send } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

// No write-key cache, so that a deleted or expired key fails on the very next request.
const ctx = await buildTestApp(t, { env: { ROLE: 'api', WRITE_KEY_CACHE_TTL_MS: '0', WRITE_KEY_GRACE: 'PT2S' }, redis: freshPrefix(redis) })
const { app, admin } = ctx

function assertAdminError (t: Test, res: { statusCode: number, json: any }, statusCode: number, message: RegExp, name = `answers ${statusCode}`) {
  t.equal(res.statusCode, statusCode, name)
  t.same(Object.keys(res.json ?? {}).sort(), ['error', 'message', 'statusCode'], `${name}: body is {statusCode, error, message}`)
  t.equal(res.json?.statusCode, statusCode, `${name}: statusCode in the body`)
  t.match(res.json?.message, message, `${name}: the message says why`)
}

const asJson = (res: LightMyRequestResponse) => ({ statusCode: res.statusCode, json: res.body === '' ? undefined : res.json() })
const track = { userId: 'u1', event: 'Order Completed' }
const ingestStatus = async (writeKey: string) => (await send(app, '/v1/track', track, { writeKey })).statusCode

t.test('the admin API needs the admin token', async (t) => {
  const missing = asJson(await app.inject({ method: 'GET', url: '/v1/sources' }))
  assertAdminError(t, missing, 401, /missing admin token/, 'no token')
  t.equal(missing.json.error, 'Unauthorized')

  const wrong = asJson(await app.inject({ method: 'GET', url: '/v1/sources', headers: { authorization: 'Bearer not-the-admin-token' } }))
  assertAdminError(t, wrong, 401, /invalid admin token/, 'a wrong token')

  const basic = asJson(await app.inject({ method: 'GET', url: '/v1/sources', headers: { authorization: `Basic ${Buffer.from(`${ADMIN_TOKEN}:`).toString('base64')}` } }))
  assertAdminError(t, basic, 401, /missing admin token/, 'the token as Basic')

  const unauthenticatedBadBody = asJson(await app.inject({ method: 'POST', url: '/v1/sources', payload: {} }))
  assertAdminError(t, unauthenticatedBadBody, 401, /missing admin token/, 'auth is checked before the body')

  for (const [method, url] of [['GET', '/v1/sources/src_x'], ['DELETE', '/v1/sources/src_x'], ['POST', '/v1/sources/src_x/write-key'], ['GET', '/v1/sources/src_x/stats']] as const) {
    const res = await app.inject({ method, url })
    t.equal(res.statusCode, 401, `${method} ${url} needs the token`)
  }
  t.equal((await admin('GET', '/v1/sources')).statusCode, 200, 'Bearer with the token passes')
  const lower = await app.inject({ method: 'GET', url: '/v1/sources', headers: { authorization: `bearer ${ADMIN_TOKEN}` } })
  t.equal(lower.statusCode, 200, 'the scheme is case-insensitive')
})

t.test('create, list, get', async (t) => {
  const created = await admin('POST', '/v1/sources', { name: 'Web shop' })
  t.equal(created.statusCode, 201)
  t.match(created.json, { id: /^src_/, name: 'Web shop', writeKey: /^\S{20,}$/ })
  t.ok(!Number.isNaN(Date.parse(created.json.createdAt)), 'createdAt is an ISO-8601 time')
  t.equal(created.json.writeKeyHint, created.json.writeKey.slice(-4), 'the hint is the last four characters')
  const other = await admin('POST', '/v1/sources', { name: 'App' })
  t.not(other.json.writeKey, created.json.writeKey, 'every source has its own key')
  t.not(other.json.id, created.json.id)

  t.equal(await ingestStatus(created.json.writeKey), 200, 'the new write key works at once')

  const list = await admin('GET', '/v1/sources')
  t.equal(list.statusCode, 200)
  const listed = list.json.sources.find((s: { id: string }) => s.id === created.json.id)
  t.same(listed, { id: created.json.id, name: 'Web shop', createdAt: created.json.createdAt, writeKeyHint: created.json.writeKeyHint }, 'listed without the write key')
  t.ok(list.json.sources.some((s: { id: string }) => s.id === other.json.id))
  t.notMatch(JSON.stringify(list.json), created.json.writeKey, 'the key is shown only on creation')

  const one = await admin('GET', `/v1/sources/${created.json.id}`)
  t.equal(one.statusCode, 200)
  t.same(one.json, listed, 'get answers the same, without the write key')
})

t.test('body validation names the field', async (t) => {
  const before = (await admin('GET', '/v1/sources')).json.sources.length
  assertAdminError(t, await admin('POST', '/v1/sources', {}), 400, /name/, 'no name')
  assertAdminError(t, await admin('POST', '/v1/sources', { name: '' }), 400, /name.*(fewer than 1|at least)/, 'an empty name')
  assertAdminError(t, await admin('POST', '/v1/sources', { name: 'n'.repeat(201) }), 400, /name.*more than 200/, 'a name too long')
  assertAdminError(t, await admin('POST', '/v1/sources', { name: { first: 'x' } }), 400, /name must be string/, 'a name of the wrong type')
  const malformed = await app.inject({ method: 'POST', url: '/v1/sources', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, payload: '{"name":' })
  assertAdminError(t, asJson(malformed), 400, /JSON/i, 'malformed JSON')
  t.equal((await admin('GET', '/v1/sources')).json.sources.length, before, 'no source created by a bad request')
})

t.test('404s name the source id', async (t) => {
  const id = 'src_doesnotexist'
  assertAdminError(t, await admin('GET', `/v1/sources/${id}`), 404, new RegExp(`source ${id} does not exist`), 'get')
  assertAdminError(t, await admin('DELETE', `/v1/sources/${id}`), 404, new RegExp(id), 'delete')
  assertAdminError(t, await admin('POST', `/v1/sources/${id}/write-key`), 404, new RegExp(id), 'rotate')
  assertAdminError(t, await admin('GET', `/v1/sources/${id}/stats`), 404, new RegExp(id), 'stats')
  assertAdminError(t, await admin('GET', '/v1/nothing-here'), 404, /no route GET \/v1\/nothing-here/, 'an unknown route')
})

t.test('delete: the write key stops working', async (t) => {
  const { id, writeKey } = await ctx.createSource('to delete')
  t.equal(await ingestStatus(writeKey), 200)
  const removed = await admin('DELETE', `/v1/sources/${id}`)
  t.equal(removed.statusCode, 204)
  t.equal(removed.json, undefined, 'no body')
  t.equal(await ingestStatus(writeKey), 401, 'the key is refused')
  t.equal((await admin('GET', `/v1/sources/${id}`)).statusCode, 404)
  t.notOk((await admin('GET', '/v1/sources')).json.sources.some((s: { id: string }) => s.id === id), 'no longer listed')
  t.equal((await admin('DELETE', `/v1/sources/${id}`)).statusCode, 404, 'a second delete is a 404')
})

t.test('rotate: the new key works, the old one only during WRITE_KEY_GRACE', async (t) => {
  const { id, writeKey: oldKey } = await ctx.createSource('to rotate')
  const rotated = await admin('POST', `/v1/sources/${id}/write-key`)
  t.equal(rotated.statusCode, 200)
  t.match(rotated.json, { id, name: 'to rotate', writeKey: /^\S{20,}$/ })
  const newKey: string = rotated.json.writeKey
  t.not(newKey, oldKey)
  t.equal(rotated.json.writeKeyHint, newKey.slice(-4))
  const validUntil = Date.parse(rotated.json.previousKeyValidUntil)
  t.ok(validUntil > Date.now() && validUntil <= Date.now() + 2000, 'previousKeyValidUntil is the grace period from now')
  t.equal((await admin('GET', `/v1/sources/${id}`)).json.writeKeyHint, newKey.slice(-4), 'the source shows the new hint')

  t.equal(await ingestStatus(newKey), 200, 'the new key works')
  t.equal(await ingestStatus(oldKey), 200, 'the old key still works during the grace period')
  t.ok(await eventually(async () => (await ingestStatus(oldKey)) === 401, 5000, 250), 'the old key stops working after the grace period')
  t.ok(Date.now() >= validUntil, 'not before previousKeyValidUntil')
  t.equal(await ingestStatus(newKey), 200, 'the new key still works')
})

t.test('delete after a rotation: the key in its grace period stops working too', async (t) => {
  const { id, writeKey: oldKey } = await ctx.createSource('rotate then delete')
  const { json: { writeKey: newKey } } = await admin('POST', `/v1/sources/${id}/write-key`)
  t.equal(await ingestStatus(oldKey), 200, 'in its grace period')
  t.equal((await admin('DELETE', `/v1/sources/${id}`)).statusCode, 204)
  t.equal(await ingestStatus(newKey), 401, 'the current key is refused')
  t.equal(await ingestStatus(oldKey), 401, 'the previous key is refused as well')
})

t.test('/health and /ready', async (t) => {
  const health = await app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 200)
  t.same(health.json(), { status: 'ok' })
  const ready = await app.inject({ method: 'GET', url: '/ready' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready' })
  t.notOk('access-control-allow-origin' in health.headers, 'no CORS outside ingestion')
})
