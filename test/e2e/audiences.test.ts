// The audiences admin API end to end: create (key derived or given, unique per source, never a
// match-key trait), read with the sync state, list, rename and reschedule, delete; every bad
// definition a 400 naming the problem; members a page at a time with a cursor.
import t from 'tap'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import { allMembers, createAudience, identifyBy, ingest, ORDERED_30_DAYS, waitForAudience } from '../helpers/audience-setup.js'
import { createDestination } from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const SETTINGS = { conversionEvents: { 'Order Completed': '1001' } }

interface Teardown { teardown: (fn: () => unknown) => void }

async function setup (t: Teardown): Promise<{ ctx: TestContext, source: { id: string, writeKey: string } }> {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  return { ctx, source }
}

t.test('create, read, list, rename, reschedule and delete an audience', async (t) => {
  const { ctx, source } = await setup(t)
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })

  const created = await ctx.admin('POST', `/v1/sources/${source.id}/audiences`, { name: 'Order Completed Last 30days', condition: ORDERED_30_DAYS })
  t.equal(created.statusCode, 201, JSON.stringify(created.json))
  t.match(created.json, {
    id: /^aud_/,
    sourceId: source.id,
    name: 'Order Completed Last 30days',
    key: 'order_completed_last_30days',
    condition: ORDERED_30_DAYS,
    destinations: [destination.id],
    schedule: { every: 'PT15M' },
    size: 0,
    status: /^(building|syncing|idle)$/
  }, 'the key is the snake_cased name; every destination of the source by default; every 15 minutes')
  t.ok(!Number.isNaN(Date.parse(created.json.createdAt)), 'createdAt is a time')
  const id = created.json.id

  // The history (none here) is evaluated and the initial sync (of no one) runs at once.
  const idle = await waitForAudience(ctx, id, (a) => a.status === 'idle' && a.lastSync !== null, 'the initial sync')
  t.match(idle.lastSync, { added: 0, removed: 0 })
  t.ok(Date.parse(idle.nextSyncAt) > Date.now() - 1000, `nextSyncAt is the next scheduled run (${idle.nextSyncAt})`)

  const explicit = await createAudience(ctx, source.id, { name: 'Big spenders', key: 'vip', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }, destinations: [], schedule: { every: 'PT1H' } })
  t.match(explicit, { key: 'vip', destinations: [], schedule: { every: 'PT1H' } }, 'a key, destinations and a schedule may be given')

  const list = await ctx.admin('GET', `/v1/sources/${source.id}/audiences`)
  t.equal(list.statusCode, 200)
  t.same(list.json.audiences.map((a: { id: string }) => a.id), [id, explicit.id], 'the source\'s audiences, oldest first')
  t.match(list.json.audiences[0], { size: 0, status: 'idle' }, 'listed with their state')

  const renamed = await ctx.admin('PATCH', `/v1/audiences/${id}`, { name: 'Recent buyers', schedule: { every: 'PT5M' } })
  t.equal(renamed.statusCode, 200, JSON.stringify(renamed.json))
  t.match(renamed.json, { name: 'Recent buyers', key: 'order_completed_last_30days', schedule: { every: 'PT5M' } }, 'renamed; the key never changes')
  t.ok(Date.parse(renamed.json.nextSyncAt) <= Date.now() + 5 * 60_000, `the next run follows the new schedule (${renamed.json.nextSyncAt})`)
  t.match((await ctx.admin('GET', `/v1/audiences/${id}`)).json, { name: 'Recent buyers', key: 'order_completed_last_30days' })
  for (const field of ['key', 'condition']) {
    const patched = await ctx.admin('PATCH', `/v1/audiences/${id}`, { [field]: field === 'key' ? 'other' : ORDERED_30_DAYS })
    t.equal(patched.statusCode, 400, `PATCH ${field}`)
    t.match(patched.json.message, new RegExp(`^${field}: never changes`), patched.json.message)
  }
  t.equal((await ctx.admin('PATCH', `/v1/audiences/${id}`, { schedule: { every: 'PT5S' } })).statusCode, 400, 'a bad schedule is refused on PATCH too')
  t.equal((await ctx.admin('PATCH', '/v1/audiences/aud_missing', { name: 'x' })).statusCode, 404)

  const deleted = await ctx.admin('DELETE', `/v1/audiences/${id}`)
  t.equal(deleted.statusCode, 204)
  t.equal((await ctx.admin('GET', `/v1/audiences/${id}`)).statusCode, 404, 'gone at once')
  t.equal((await ctx.admin('DELETE', `/v1/audiences/${id}`)).statusCode, 404, 'deleting twice: 404')
  t.equal((await ctx.admin('GET', `/v1/audiences/${id}/members`)).statusCode, 404)
  t.equal((await ctx.admin('POST', `/v1/audiences/${id}/sync`)).statusCode, 404)
  t.same((await ctx.admin('GET', `/v1/sources/${source.id}/audiences`)).json.audiences.map((a: { id: string }) => a.id), [explicit.id], 'no longer listed')
  const again = await ctx.admin('POST', `/v1/sources/${source.id}/audiences`, { name: 'Order Completed Last 30days', condition: ORDERED_30_DAYS })
  t.equal(again.statusCode, 201, 'a deleted audience\'s key is free again')
  t.not(again.json.id, id, 'under a new id')

  const sync = await ctx.admin('POST', `/v1/audiences/${explicit.id}/sync`)
  t.equal(sync.statusCode, 202)
  t.same(sync.json, { queued: true })
})

t.test('keys: unique per source (409), never a match-key trait (400), the same key on another source is fine', async (t) => {
  const { ctx, source } = await setup(t)
  const other = await ctx.createSource('other')
  await createAudience(ctx, source.id, { name: 'High Value', condition: ORDERED_30_DAYS })

  const duplicateName = await ctx.admin('POST', `/v1/sources/${source.id}/audiences`, { name: 'high value', condition: ORDERED_30_DAYS })
  t.equal(duplicateName.statusCode, 409, 'the same snake_cased name')
  t.match(duplicateName.json, { statusCode: 409, error: 'Conflict', message: /"high_value" is already used/ })
  const duplicateKey = await ctx.admin('POST', `/v1/sources/${source.id}/audiences`, { name: 'Something else', key: 'high_value', condition: ORDERED_30_DAYS })
  t.equal(duplicateKey.statusCode, 409, 'the same explicit key')
  t.equal((await ctx.admin('POST', `/v1/sources/${other.id}/audiences`, { name: 'High Value', condition: ORDERED_30_DAYS })).statusCode, 201, 'another source may use the key')

  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['key "email"', { name: 'Mail', key: 'email' }, /key "email" collides with the match-key trait "email"/],
    ['key "first_name"', { name: 'Names', key: 'first_name' }, /key "first_name" collides with the match-key trait "firstName"/],
    ['a name deriving "email"', { name: 'Email' }, /key "email" collides with the match-key trait "email".*give another key/],
    ['a name deriving "first_name"', { name: 'First Name' }, /key "first_name" collides with the match-key trait "firstName"/],
    ['a key not in snake_case', { name: 'x', key: 'HighValue' }, /^key must be snake_case/],
    ['a name with no letter or digit', { name: '!!!' }, /^name: gives an empty key/]
  ]
  for (const [what, body, message] of cases) {
    const response = await ctx.admin('POST', `/v1/sources/${source.id}/audiences`, { ...body, condition: ORDERED_30_DAYS })
    t.equal(response.statusCode, 400, what)
    t.match(response.json, { statusCode: 400, error: 'Bad Request', message }, `${what}: ${response.json.message}`)
  }
})

t.test('bad definitions: 400 naming the problem', async (t) => {
  const { ctx, source } = await setup(t)
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  const foreign = await createDestination(ctx, (await ctx.createSource('other')).id, SETTINGS, { token: null })
  const cases: Array<[string, unknown, RegExp]> = [
    ['no name', { condition: ORDERED_30_DAYS }, /^name: must be a non-empty string/],
    ['no condition', { name: 'a' }, /condition/],
    ['an unknown condition type', { name: 'a', condition: { type: 'purchase' } }, /condition\.type: must be one of event, trait, all, any/],
    ['withinDays missing', { name: 'a', condition: { type: 'event', event: 'Order Completed' } }, /condition\.withinDays: must be an integer from 1 to 90/],
    ['withinDays past the history kept', { name: 'a', condition: { ...ORDERED_30_DAYS, withinDays: 365 } }, /condition\.withinDays: must be an integer from 1 to 90/],
    ['atLeast 0', { name: 'a', condition: { ...ORDERED_30_DAYS, atLeast: 0 } }, /condition\.atLeast: must be an integer/],
    ['an unknown trait op', { name: 'a', condition: { type: 'trait', trait: 'plan', op: 'contains', value: 'p' } }, /condition\.op: must be one of equals, exists, gt, gte, lt, lte/],
    ['a nested problem', { name: 'a', condition: { type: 'all', conditions: [ORDERED_30_DAYS, { type: 'event', event: '', withinDays: 1 }] } }, /^condition\.conditions\[1\]\.event: must be a non-empty string/],
    ['an empty group', { name: 'a', condition: { type: 'any', conditions: [] } }, /condition\.conditions/],
    ['a trait kept only hashed', { name: 'a', condition: { type: 'trait', trait: 'email', op: 'exists' } }, /^condition: trait "email" is the match key "email", kept only hashed/],
    ['a trait kept only hashed, nested and snake_cased', { name: 'a', condition: { type: 'all', conditions: [ORDERED_30_DAYS, { type: 'trait', trait: 'first_name', op: 'equals', value: 'Ada' }] } }, /^condition: trait "first_name" is the match key "firstName"/],
    ['a trait kept only hashed, in another spelling', { name: 'a', condition: { type: 'trait', trait: 'zip_code', op: 'exists' } }, /^condition: trait "zip_code" is the match key "address.postalCode"/],
    ['a schedule too short', { name: 'a', condition: ORDERED_30_DAYS, schedule: { every: 'PT10S' } }, /^schedule\.every: must be an ISO-8601 duration from PT1M to P1D/],
    ['a schedule that is no duration', { name: 'a', condition: ORDERED_30_DAYS, schedule: { every: 'hourly' } }, /^schedule\.every: must be an ISO-8601 duration/],
    ['a schedule that is no object', { name: 'a', condition: ORDERED_30_DAYS, schedule: 'PT15M' }, /^schedule: must be an object/],
    ['an unknown destination', { name: 'a', condition: ORDERED_30_DAYS, destinations: [destination.id, 'dst_nope'] }, /^destinations: dst_nope is not a destination of source/],
    ['another source\'s destination', { name: 'a', condition: ORDERED_30_DAYS, destinations: [foreign.id] }, new RegExp(`^destinations: ${foreign.id} is not a destination of source ${source.id}`)],
    ['an unknown field', { name: 'a', condition: ORDERED_30_DAYS, size: 3 }, /^size: is not a field of an audience/],
    ['a body that is no object', [1, 2], /^body must be an object/]
  ]
  for (const [what, body, message] of cases) {
    const response = await ctx.admin('POST', `/v1/sources/${source.id}/audiences`, body)
    t.equal(response.statusCode, 400, what)
    t.match(response.json, { statusCode: 400, error: 'Bad Request', message }, `${what}: ${response.json?.message}`)
  }
  t.same((await ctx.admin('GET', `/v1/sources/${source.id}/audiences`)).json.audiences, [], 'nothing was created')
  t.equal((await ctx.admin('POST', '/v1/sources/src_missing/audiences', { name: 'a', condition: ORDERED_30_DAYS })).statusCode, 404, 'an unknown source: 404')
  t.equal((await ctx.admin('GET', '/v1/audiences/aud_missing')).statusCode, 404)

  const linked = await createAudience(ctx, source.id, { name: 'b', condition: ORDERED_30_DAYS, destinations: [destination.id] })
  const patched = await ctx.admin('PATCH', `/v1/audiences/${linked.id}`, { destinations: ['dst_nope'] })
  t.equal(patched.statusCode, 400)
  t.match(patched.json.message, /^destinations: dst_nope is not a destination of source/)

  const anonymous = await ctx.app.inject({ method: 'GET', url: `/v1/audiences/${linked.id}` })
  t.equal(anonymous.statusCode, 401, 'the admin token is required')
})

t.test('members: a page at a time, with a cursor', async (t) => {
  const { ctx, source } = await setup(t)
  const audience = await createAudience(ctx, source.id, { name: 'Pro plan', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
  const users = Array.from({ length: 7 }, (_, i) => `member-${i}`)
  await ingest(ctx, source.writeKey, [
    ...users.map((id) => identifyBy(id, { plan: 'pro' })),
    identifyBy('not-a-member', { plan: 'free' })
  ])
  await waitForAudience(ctx, audience.id, (a) => a.size === 7, 'seven members')

  const pages: Array<Array<{ userId: string, since: string }>> = []
  let cursor: string | null = null
  do {
    const { statusCode, json }: { statusCode: number, json: any } = await ctx.admin('GET', `/v1/audiences/${audience.id}/members?limit=3${cursor === null ? '' : `&cursor=${cursor}`}`)
    t.equal(statusCode, 200)
    pages.push(json.members)
    cursor = json.nextCursor
  } while (cursor !== null && pages.length < 10)
  t.same(pages.slice(0, 3).map((page) => page.length), [3, 3, 1], 'pages of 3, 3 and 1')
  t.equal(pages.length, 3, 'no cursor after the last page')
  const seen = pages.flat().map((m) => m.userId)
  t.same([...seen].sort(), users, 'every member once, nobody else')
  t.ok(pages.flat().every((m) => !Number.isNaN(Date.parse(m.since))), 'each with the time it joined')
  t.same(await allMembers(ctx, audience.id), users)
  const exact: { json: any } = await ctx.admin('GET', `/v1/audiences/${audience.id}/members?limit=7`)
  t.equal(exact.json.members.length, 7, 'a page as large as the audience holds everyone')
  t.equal(exact.json.nextCursor, null, 'and announces no empty page after it')

  t.equal((await ctx.admin('GET', `/v1/audiences/${audience.id}/members?limit=0`)).statusCode, 400, 'limit 0')
  t.equal((await ctx.admin('GET', `/v1/audiences/${audience.id}/members?limit=5000`)).statusCode, 400, 'limit over 1000')
  t.equal((await ctx.admin('GET', `/v1/audiences/${audience.id}/members?cursor=abc`)).statusCode, 400, 'a cursor that is no cursor')
})
