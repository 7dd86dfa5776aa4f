// Destinations, sources, regulations and the rate limiter on a 3-primary Redis Cluster, with
// enough of each that their keys land on every primary: no store method may send a command (a
// pipeline, MULTI, script, MGET, DEL…) whose keys are in different hash slots.
import { createHash } from 'node:crypto'
import type { Cluster } from 'ioredis'
import t from 'tap'
import { SharedRateLimiter } from '../../plugins/rate-limit.js'
import type { DeadLetter, StatsDelta } from '../../plugins/destinations.js'
import { subjectFingerprints } from '../../jobs/regulations.js'
import { scanKeys } from '../../src/redis-client.js'
import { slotOf } from '../../src/slots.js'
import { ADMIN_TOKEN } from '../helpers/app.js'
import { createDestination, getDestination, startDelivery, waitFor } from '../helpers/delivery-setup.js'
import { startTestRedisCluster } from '../helpers/redis-cluster.js'
import type { TestRedis } from '../helpers/redis.js'

const cluster = await startTestRedisCluster()
if (cluster === undefined) {
  t.plan(0, 'needs redis-server and redis-cli on PATH')
  process.exit(0)
}
t.teardown(() => cluster.close())
const redis: TestRedis = {
  url: `redis://127.0.0.1:${cluster.ports[0]}`,
  clusterNodes: cluster.nodes,
  prefix: 'cluster-stores',
  owned: true,
  stop: async () => {},
  start: async () => {},
  close: async () => {}
}

const OAUTH = { APP_ID: '1234567890', APP_SECRET: 'fake-app-secret-0123456789', PUBLIC_URL: 'https://relay.example.com' }
const SETTINGS = { conversionEvents: { 'Order Completed': '1111' } }
const { ctx } = await startDelivery(t, {
  redis,
  graph: { appId: OAUTH.APP_ID, appSecret: OAUTH.APP_SECRET },
  env: {
    FACEBOOK_APP_ID: OAUTH.APP_ID,
    FACEBOOK_APP_SECRET: OAUTH.APP_SECRET,
    PUBLIC_URL: OAUTH.PUBLIC_URL,
    FACEBOOK_OAUTH_DIALOG_URL: 'http://127.0.0.1:1/v21.0/dialog/oauth'
  }
})
const { app } = ctx
const keys = app.keys
const client = app.redis as Cluster
t.equal(client.isCluster, true, 'the app runs on the cluster')
t.ok(keys.ingestPartitions.length > 1, 'ingest is partitioned on a cluster')

/** The primaries (host:port) serving the keys' slots. */
function primariesOf (list: string[]): Set<string> {
  const slots = (client as unknown as { slots: string[][] }).slots
  return new Set(list.map((key) => slots[slotOf(key)][0]))
}

/** Every key on every primary that names `id`. */
async function keysNaming (id: string): Promise<string[]> {
  const found: string[] = []
  for await (const batch of scanKeys(client, `*${id}*`)) found.push(...batch)
  return found.sort()
}

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')

function letter (n: number, externalId = `user-${n}`): DeadLetter {
  return {
    id: `dl_test_${n}`,
    failedAt: new Date().toISOString(),
    datasetId: '1111',
    eventName: 'Purchase',
    eventId: `evt-${n}`,
    error: { message: 'test' },
    payload: { event_name: 'Purchase', event_time: Math.floor(Date.now() / 1000), event_id: `evt-${n}`, action_source: 'physical_store', user_data: { external_id: [sha256(externalId)] }, custom_data: { currency: 'USD', value: 1 } }
  }
}

// 12 sources with 3 destinations each: their keys on every primary.
const sources: Array<{ id: string, writeKey: string }> = []
const destinations: string[] = []
t.test('sources and destinations created, listed, rotated: on every primary', async (t) => {
  for (let i = 0; i < 12; i++) sources.push(await ctx.createSource(`source ${i}`))
  for (const source of sources) {
    for (let d = 0; d < 3; d++) destinations.push((await createDestination(ctx, source.id, SETTINGS, { name: `d${d}` })).id)
  }
  t.equal(primariesOf(sources.map((s) => keys.sourceStats(s.id))).size, 3, 'sources on all 3 primaries')
  t.equal(primariesOf(sources.map((s) => keys.writeKey(sha256(s.writeKey)))).size, 3, 'write keys on all 3 primaries')
  t.equal(primariesOf(destinations.map((id) => keys.destinationStats(id))).size, 3, 'destinations on all 3 primaries')
  const listed = await ctx.admin('GET', '/v1/sources')
  t.equal(listed.json.sources.filter((s: { id: string }) => sources.some((x) => x.id === s.id)).length, 12)
  for (const source of sources) {
    const { json } = await ctx.admin('GET', `/v1/sources/${source.id}/destinations`)
    t.equal(json.destinations.length, 3, `3 destinations listed for ${source.id}`)
  }
  const first = await getDestination(ctx, destinations[0])
  t.match(first, { connected: true, status: 'active' })
  // Rotation: the new key works at once, the old one expires after the grace period.
  for (const source of sources.slice(0, 6)) {
    const rotated = await ctx.admin('POST', `/v1/sources/${source.id}/write-key`)
    t.equal(rotated.statusCode, 200)
    t.equal(await app.sources.resolveWriteKey(rotated.json.writeKey), source.id)
    t.ok(await client.pttl(keys.writeKey(sha256(source.writeKey))) > 0, 'the old key expires')
  }
})

t.test('concurrent PATCHes of different settings all land', async (t) => {
  const id = destinations[1]
  const patches = [
    { settings: { leadEvents: { Lead: '2222' } } },
    { settings: { completeRegistrationEvents: { 'Signed Up': '3333' } } },
    { settings: { uploadTag: 'cluster-tag' } },
    { settings: { testEventCode: 'TEST123' } },
    { settings: { audienceEntryEvents: { vip: '4444' } } },
    { name: 'renamed' }
  ]
  const answers = await Promise.all(patches.map((body) => ctx.admin('PATCH', `/v1/destinations/${id}`, body)))
  for (const answer of answers) t.equal(answer.statusCode, 200)
  const after = await getDestination(ctx, id)
  t.match(after, {
    name: 'renamed',
    settings: { conversionEvents: { 'Order Completed': '1111' }, leadEvents: { Lead: '2222' }, completeRegistrationEvents: { 'Signed Up': '3333' }, uploadTag: 'cluster-tag', testEventCode: 'TEST123', audienceEntryEvents: { vip: '4444' } }
  })
})

t.test('counts of many destinations at once, held conversions and their release', async (t) => {
  const deltas = new Map<string, StatsDelta>(destinations.map((id, i) => [id, { received: i + 10, delivered: i, filtered: { unmapped: 3 }, invalid: { no_match_key: 2 } }]))
  await app.destinations.count(deltas, undefined, 'cluster-test-count')
  await app.destinations.count(deltas, undefined, 'cluster-test-count')
  for (const [i, id] of destinations.entries()) {
    const stats = await app.destinations.stats(id)
    t.match(stats, { received: i + 10, delivered: i, filtered: 3, invalid: { total: 2 }, retrying: 5 }, `counted once on ${id}`)
    t.equal(await app.destinations.counted(id, 'cluster-test-count'), true)
  }
  for (const id of destinations.slice(0, 9)) {
    await app.destinations.hold(id, 'job-1', 2)
    await app.destinations.hold(id, 'job-2', 3)
    await app.destinations.release(id, 'job-1')
    t.equal((await app.destinations.stats(id)).held, 3, 'held: the jobs still held')
    t.same(await app.destinations.takeHeld(id), ['job-2'])
    t.equal((await app.destinations.stats(id)).held, 0)
  }
  // A destination's token set: its held jobs released (none here), the destination authorised.
  await app.destinations.update(destinations[2], { authStatus: 'needs_reauthorization', authMessage: 'expired' })
  t.equal((await getDestination(ctx, destinations[2])).status, 'needs_reauthorization')
  const put = await ctx.admin('PUT', `/v1/destinations/${destinations[2]}/access-token`, { accessToken: 'test-token' })
  t.equal(put.statusCode, 204)
  t.equal((await getDestination(ctx, destinations[2])).status, 'active')
})

t.test('dead letters: listed, replayed by id and all, put back', async (t) => {
  for (const id of destinations.slice(0, 6)) {
    const letters = Array.from({ length: 5 }, (_, n) => letter(n))
    await app.destinations.addDeadLetters(id, letters, { message: 'test' }, `cluster-dl-${id}`)
    await app.destinations.addDeadLetters(id, letters, { message: 'test' }, `cluster-dl-${id}`)
    const listed = await ctx.admin('GET', `/v1/destinations/${id}/failures?limit=2`)
    t.match(listed.json, { total: 5, nextCursor: '2' }, 'dead-lettered once')
    t.equal(listed.json.failures.length, 2)
  }
  const id = destinations[3]
  // Disabled: replayed letters are filtered (disabled) rather than sent, so the books are exact.
  t.equal((await ctx.admin('PATCH', `/v1/destinations/${id}`, { enabled: false })).statusCode, 200)
  const byId = await ctx.admin('POST', `/v1/destinations/${id}/failures/retry`, { ids: ['dl_test_0', 'dl_test_1'] })
  t.same(byId.json, { retried: 2 })
  const all = await ctx.admin('POST', `/v1/destinations/${id}/failures/retry`)
  t.same(all.json, { retried: 3 })
  t.equal((await ctx.admin('GET', `/v1/destinations/${id}/failures`)).json.total, 0)
  await waitFor(async () => (await app.destinations.stats(id)).filteredByReason.disabled === 5, 10_000, 'the replayed letters to be filtered')
  t.equal((await app.destinations.stats(id)).deadLettered, 0)
  await app.destinations.restoreDeadLetters(destinations[4], [letter(99)])
  t.equal((await app.destinations.stats(destinations[4])).deadLettered, 6)
})

t.test('pauses and access tokens', async (t) => {
  const until = Date.now() + 60_000
  for (const id of destinations.slice(0, 9)) await app.destinations.pause(id, until)
  for (const id of destinations.slice(0, 9)) t.equal(await app.destinations.pausedUntil(id), until)
  t.equal((await getDestination(ctx, destinations[5])).pausedUntil, new Date(until).toISOString())
  const removed = await ctx.admin('DELETE', `/v1/destinations/${destinations[6]}/access-token`)
  t.equal(removed.statusCode, 204)
  t.match(await getDestination(ctx, destinations[6]), { connected: false, status: 'needs_token' })
})

t.test('OAuth: the state is stored and used up once', async (t) => {
  const start = await ctx.app.inject({ url: `/v1/destinations/${destinations[7]}/oauth/start`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(start.statusCode, 302)
  const state = new URL(String(start.headers.location)).searchParams.get('state')!
  t.equal(await client.get(keys.oauthState(state)), destinations[7])
  const cookie = String(start.headers['set-cookie']).split(';')[0]
  // Meta's answer without a code: the flow ends, the state used up.
  const answer = await ctx.app.inject({ url: `/oauth/facebook/callback?state=${state}&error=access_denied`, headers: { cookie } })
  t.equal(answer.statusCode, 400)
  t.equal(await client.exists(keys.oauthState(state)), 0, 'the state is used up')
})

t.test('source stats: its own hash plus every partition\'s; unprocessable counted once per source', async (t) => {
  const partitions = keys.ingestPartitions
  t.ok(partitions.every((p) => p.sourceStats('x') !== keys.sourceStats('x')), 'a partition\'s hash is another key')
  for (const source of sources.slice(0, 4)) {
    await client.hincrby(keys.sourceStats(source.id), 'accepted', 1000)
    for (const partition of partitions) {
      await client.hset(partition.sourceStats(source.id), { accepted: partition.index + 1, duplicate: 2, rejected: 1, suppressed: 1 })
    }
  }
  t.equal(primariesOf(partitions.map((p) => p.sourceStats(sources[0].id))).size, 3, 'the partitions\' hashes are on all 3 primaries')
  await app.sources.countUnprocessable(new Map(sources.slice(0, 4).map((s, i) => [s.id, i + 1])), 'cluster-unprocessable')
  await app.sources.countUnprocessable(new Map(sources.slice(0, 4).map((s, i) => [s.id, i + 1])), 'cluster-unprocessable')
  const n = partitions.length
  const accepted = 1000 + n * (n + 1) / 2
  for (const [i, source] of sources.slice(0, 4).entries()) {
    const { json } = await ctx.admin('GET', `/v1/sources/${source.id}/stats`)
    t.match(json, { accepted, duplicate: 2 * n, rejected: n, suppressed: n, unprocessable: i + 1, received: accepted + 4 * n })
  }
})

t.test('regulations: suppression in the set and every partition\'s copy, and back', async (t) => {
  const source = sources[8]
  const subjects = ['gone-1', 'gone-2', 'gone-3']
  const fingerprints = subjectFingerprints('userId', subjects)
  const copies = keys.ingestPartitions.map((p) => p.suppressed(source.id))
  const regulate = async (body: Record<string, unknown>) => {
    const created = await ctx.admin('POST', `/v1/sources/${source.id}/regulations`, body)
    t.equal(created.statusCode, 202, JSON.stringify(created.json))
    return waitFor(async () => {
      const { json } = await ctx.admin('GET', `/v1/regulations/${created.json.id}`)
      return json.status !== 'running' && json
    }, 30_000, 'the regulation to finish')
  }
  const suppressed = await regulate({ regulationType: 'SUPPRESS_ONLY', subjectType: 'userId', subjectIds: subjects })
  t.match(suppressed, { status: 'finished', counts: { suppressed: 3 } })
  for (const key of [keys.suppressed(source.id), ...copies]) {
    t.same(await client.smismember(key, ...fingerprints), [1, 1, 1], `suppressed in ${key}`)
  }
  t.equal(await app.suppressionActive(source.id), true)
  const back = await regulate({ regulationType: 'UNSUPPRESS', subjectType: 'userId', subjectIds: ['gone-2'] })
  t.match(back, { status: 'finished', counts: { unsuppressed: 1 } })
  for (const key of [keys.suppressed(source.id), ...copies]) {
    t.same(await client.smismember(key, ...fingerprints), [1, 0, 1], `gone-2 no longer suppressed in ${key}`)
  }
  const listed = await ctx.admin('GET', `/v1/sources/${source.id}/regulations`)
  t.equal(listed.json.regulations.length, 2)
})

t.test('regulations: deletion phases (links on every primary, dead letters)', async (t) => {
  const source = sources[9]
  const ofSource = destinations.slice(27, 30)
  // The user's anonymous ids and former ids, each link in its own slot, all over the cluster.
  const anonymous = Array.from({ length: 30 }, (_, i) => `anon-${i}`)
  for (const id of anonymous) await client.set(keys.anonymousLink(source.id, id), 'doomed')
  await client.set(keys.anonymousLink(source.id, 'someone-else'), 'kept')
  await client.set(keys.userLink(source.id, 'old-id'), 'doomed')
  t.equal(primariesOf(anonymous.map((id) => keys.anonymousLink(source.id, id))).size, 3)
  for (const id of ofSource) await app.destinations.addDeadLetters(id, [letter(1, 'doomed'), letter(2, 'kept')], { message: 'test' })
  const created = await ctx.admin('POST', `/v1/sources/${source.id}/regulations`, { regulationType: 'DELETE_ONLY', subjectType: 'userId', subjectIds: ['doomed'] })
  t.equal(created.statusCode, 202)
  await waitFor(async () => (await Promise.all(anonymous.map((id) => client.exists(keys.anonymousLink(source.id, id))))).every((n) => n === 0), 30_000, 'the links to be deleted')
  t.equal(await client.exists(keys.userLink(source.id, 'old-id')), 0, 'the former id\'s link is deleted')
  const done = await waitFor(async () => {
    const { json } = await ctx.admin('GET', `/v1/regulations/${created.json.id}`)
    return json.status !== 'running' && json
  }, 30_000, 'the deletion to finish')
  t.match(done, { status: 'finished', counts: { linksDeleted: 31, conversionsDeleted: 3 } }, JSON.stringify(done))
  t.equal(await client.get(keys.anonymousLink(source.id, 'someone-else')), 'kept')
  for (const id of ofSource) {
    t.equal((await ctx.admin('GET', `/v1/destinations/${id}/failures`)).json.total, 1, 'the other user\'s letter stays')
    t.match(await app.destinations.stats(id), { deadLettered: 1, filteredByReason: { deleted: 1 } })
  }
})

t.test('delete: a destination, then sources, leave no key behind', async (t) => {
  const id = destinations[0]
  await app.destinations.hold(id, 'job-x', 1)
  t.equal((await ctx.admin('DELETE', `/v1/destinations/${id}`)).statusCode, 204)
  t.same(await keysNaming(id), [], 'nothing of the destination is left')
  t.equal((await ctx.admin('GET', `/v1/destinations/${id}`)).statusCode, 404)

  for (const source of sources.slice(0, 4)) {
    // What ingest would have left: duplicate windows and suppression copies in every partition.
    for (const partition of keys.ingestPartitions) {
      const window = partition.dedup(source.id)
      await client.sadd(window.current, 'm1')
      await client.sadd(partition.suppressed(source.id), 'x')
    }
    await client.sadd(keys.suppressed(source.id), 'x')
    t.equal((await ctx.admin('DELETE', `/v1/sources/${source.id}`)).statusCode, 204)
    t.same(await keysNaming(source.id), [], `nothing of ${source.id} is left`)
    t.equal(await app.sources.resolveWriteKey(source.writeKey), null)
  }
  for (const other of destinations.slice(1, 12)) t.same(await keysNaming(other), [], `${other} went with its source`)
})

t.test('the rate limiter: a bucket per source, shared, on every primary', async (t) => {
  const limiter = new SharedRateLimiter(client, keys, 2)
  const ids = Array.from({ length: 30 }, (_, i) => `rate-src-${i}`)
  t.equal(primariesOf(ids.map((id) => keys.rateLimit(id))).size, 3)
  for (const id of ids) {
    for (let i = 0; i < 4; i++) t.equal(await limiter.take(id, 1), 0)
    t.equal(await limiter.take(id, 1), 1, `${id}: the burst spent`)
  }
})
