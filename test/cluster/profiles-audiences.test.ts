// Profiles and audiences on a real 3-primary Redis Cluster: every store method of the profile
// store, the audience store and the audience engine, with users enough that their keys spread over
// every primary — identifies, history, joins (identify, alias), links, consent, real-time
// membership, a build (a scan of every primary), expiry, syncs, a user's data deleted, an audience
// removed — and the source's profile count exact throughout. No command may cross slots (ioredis
// refuses such a pipeline, Redis answers CROSSSLOT to such a script or MGET).
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { JobIsolation } from '../../jobs/isolation.js'
import type { SegmentMessage } from '../../src/segment/types.js'
import { scanKeys } from '../../src/redis-client.js'
import { slotOf } from '../../src/slots.js'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import { ORDERED_30_DAYS, DAY_MS } from '../helpers/audience-setup.js'
import type { StoredAudience } from '../../plugins/audiences.js'
import { startTestRedisCluster } from '../helpers/redis-cluster.js'
import type { TestRedis } from '../helpers/redis.js'

const cluster = await startTestRedisCluster()
if (cluster === undefined) {
  t.pass('skipped: redis-server and redis-cli are needed for a cluster')
  t.end()
  process.exit(0)
}
t.teardown(() => cluster.close())

const redis: TestRedis = {
  url: `redis://127.0.0.1:${cluster.ports[0]}`,
  clusterNodes: cluster.nodes,
  prefix: `test-${randomUUID().slice(0, 8)}`,
  owned: true,
  stop: async () => {},
  start: async () => {},
  close: async () => {}
}

const USERS = 240
const user = (i: number) => `user-${i}`
const anon = (i: number) => `anon-${i}`
const former = (i: number) => `former-${i}`

let clock = Date.now()
// The API role: no worker takes the jobs the engine queues; the test calls the engine itself.
const ctx: TestContext = await buildTestApp(t, { redis, env: { ROLE: 'api' }, now: () => clock })
const { app } = ctx
t.ok(app.redis.isCluster, 'the app runs on the cluster')
// A source's id only: the stores need no more (the sources' admin API is not this test's).
const source = { id: `src_${randomUUID().slice(0, 8)}` }

async function createAudience (_ctx: TestContext, sourceId: string, body: { name: string, key?: string, condition: unknown, destinations: string[] }) {
  const audience = await app.audiences.create({
    sourceId,
    name: body.name,
    key: body.key ?? body.name.toLowerCase().replace(/\W+/g, '_'),
    condition: body.condition as StoredAudience['condition'],
    destinations: body.destinations,
    schedule: { every: 'PT15M', everyMs: 900_000 }
  })
  if (audience === undefined) throw new Error('the key is taken')
  return audience
}

let jobs = 0
async function stage (messages: Array<Record<string, unknown>>): Promise<void> {
  const isolation = new JobIsolation()
  const at = new Date(clock).toISOString()
  const full = messages.map((m) => ({ messageId: randomUUID(), timestamp: at, ...m })) as SegmentMessage[]
  await app.audienceEngine.stage(source.id, full, isolation.context(source.id, `job-${++jobs}`))
  if (isolation.records.length > 0) throw new Error(`messages set aside: ${JSON.stringify(isolation.records.map((r) => String(r.error)))}`)
}

/** Every profile key of the source, found on every primary. */
async function profileKeys (): Promise<string[]> {
  const found: string[] = []
  for await (const keys of scanKeys(app.redis, app.keys.profilePattern(source.id))) found.push(...keys)
  return found
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

t.test('the users\' keys spread over every primary', async (t) => {
  const nodes = new Set(range(USERS).map((i) => (app.redis as any).slots[slotOf(app.keys.profile(source.id, user(i)))][0]))
  t.equal(nodes.size, 3)
})

let ordered: StoredAudience
let pro: StoredAudience

t.test('anonymous history, then identifies that join it to the users, then aliases', async (t) => {
  ordered = await createAudience(ctx, source.id, { name: 'Ordered', key: 'order_completed_last_30days', condition: ORDERED_30_DAYS, destinations: [] })
  pro = await createAudience(ctx, source.id, { name: 'Pro', key: 'pro_users', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }, destinations: [] })
  // Anonymous visitors order; former user ids identify themselves.
  await stage(range(USERS).map((i) => ({ type: 'track', anonymousId: anon(i), event: 'Order Completed', properties: {} })))
  await stage(range(USERS).map((i) => ({ type: 'identify', userId: former(i), traits: { nickname: `n${i}` } })))
  t.equal(await app.audiences.size(ordered.id), USERS, 'every anonymous visitor who ordered is a member')
  t.equal(await app.profiles.count(source.id, clock), 2 * USERS, 'a profile each, counted')

  // Identifies with both ids: the visitors' profiles join the users'.
  await stage(range(USERS).map((i) => ({ type: 'identify', userId: user(i), anonymousId: anon(i), traits: { email: `u${i}@example.com`, plan: 'pro', name: `User ${i}` } })))
  t.equal(await app.audiences.size(pro.id), USERS, 'every user is in the trait audience')
  const members = (await app.redis.zrange(app.keys.audienceMembers(ordered.id), 0, -1)).sort()
  t.same(members, range(USERS).map(user).sort(), 'the history joined the users: they are members, the visitors no longer')

  // An anonymous track after the identify counts for the user (the link).
  const identities = await app.profiles.identities(source.id, range(USERS).map((i) => ({ anonymousId: anon(i) })))
  t.same(identities, range(USERS).map(user), 'each anonymous id resolves to its user')

  // Aliases: the former ids' profiles join the users'.
  await stage(range(USERS).map((i) => ({ type: 'alias', userId: user(i), previousId: former(i) })))
  const resolved = await app.profiles.identities(source.id, range(USERS).map((i) => ({ userId: former(i) })))
  t.same(resolved, range(USERS).map(user), 'each former id resolves to its user')

  const profiles = await app.profiles.getMany(source.id, range(USERS).map(user))
  t.equal(profiles.length, USERS)
  profiles.forEach((profile, i) => {
    if (profile.traits.nickname !== `n${i}` || profile.traits.plan !== 'pro' || profile.matchKeys.em?.length !== 1 || profile.audiences.order_completed_last_30days !== true) {
      t.fail(`profile ${i}: ${JSON.stringify(profile)}`)
    }
  })
  const keys = await profileKeys()
  t.equal(keys.length, USERS, 'the joined profiles are gone: one profile per user')
  t.equal(await app.profiles.count(source.id, clock), USERS, 'the count follows')
})

t.test('tracks add up in each user\'s history; consent is recorded', async (t) => {
  await stage(range(USERS).flatMap((i) => [
    { type: 'track', userId: user(i), event: 'Order Completed', properties: {} },
    { type: 'track', anonymousId: anon(i), event: 'Viewed', properties: {} }
  ]))
  const code = await app.redis.hget(app.keys.eventCodes(source.id), 'Order Completed')
  const day = Math.floor(clock / DAY_MS)
  const counts = await Promise.all(range(USERS).map((i) => app.redis.hget(app.keys.profile(source.id, user(i)), `h:${code}.${day}`)))
  t.same(counts, range(USERS).map(() => '2'), 'the visitor\'s order and the user\'s, each user')

  const consent = new Map(range(USERS).map((i) => [user(i), { consent: { Advertising: i % 2 === 0 }, at: clock }]))
  const changed = await app.profiles.recordConsent(source.id, consent)
  t.equal(changed.size, USERS, 'every user\'s consent is new')
  t.same((await app.profiles.get(source.id, user(3))).consent, { Advertising: false })
})

t.test('a new audience is built from every primary; syncs; expiry', async (t) => {
  const later = await createAudience(ctx, source.id, { name: 'Later', key: 'later_pro', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }, destinations: [] })
  const stored = (await app.audiences.get(later.id))!
  await app.audienceEngine.build(stored, await app.audiences.state(later.id))
  t.equal(await app.audiences.size(later.id), USERS, 'every user found, whichever primary holds them')
  t.equal((await app.audiences.state(later.id)).built, true)

  t.equal(await app.audienceEngine.initialSync(stored, await app.audiences.state(later.id)), USERS, 'the initial sync sends every member')
  t.same(await app.audienceEngine.sendAll(stored, true, [], 'link-test'), USERS)
  t.same(await app.audienceEngine.incrementalSync((await app.audiences.get(ordered.id))!), { added: USERS, removed: 0 })

  // 31 days on: nobody ordered within 30 days; the profiles still are members of the trait audiences.
  clock += 31 * DAY_MS
  const changes = await app.audienceEngine.expire((await app.audiences.get(ordered.id))!)
  t.equal(changes, USERS, 'every order aged out')
  t.equal(await app.audiences.size(ordered.id), 0)
  t.same(await app.audienceEngine.incrementalSync((await app.audiences.get(ordered.id))!), { added: 0, removed: USERS })
  t.equal(await app.profiles.count(source.id, clock), USERS, 'kept: members of the trait audiences')
})

t.test('an audience removed: its members are sent false and leave; its data goes', async (t) => {
  const stored = (await app.audiences.get(pro.id))!
  await app.audiences.markDeleted(stored)
  t.equal(await app.audienceEngine.sendAll(stored, false, [], 'remove-test', true), USERS)
  await app.audiences.remove(stored)
  t.equal(await app.audiences.get(pro.id), undefined)
  t.equal((await app.profiles.get(source.id, user(0))).audiences.pro_users, false, 'the property is false')
  t.equal(await app.redis.exists(app.keys.audienceMembers(pro.id)), 0)
})

t.test('deleting users\' data; members of no audience expire with their count', async (t) => {
  // The last audience holding the users: they leave it, and are counted by day again.
  const later = (await app.audiences.listForSource(source.id)).find((a) => a.key === 'later_pro')!
  await app.audiences.markDeleted(later)
  await app.audienceEngine.sendAll(later, false, [], 'remove-later', true)
  await app.audiences.remove(later)
  t.equal(await app.profiles.count(source.id, clock), USERS)

  let dropped = 0
  for (let i = 0; i < USERS; i += 3) dropped += await app.profiles.drop(source.id, user(i))
  t.equal(dropped, USERS / 3)
  t.equal((await profileKeys()).length, USERS - USERS / 3)
  t.equal(await app.profiles.count(source.id, clock), USERS - USERS / 3, 'the count follows the deletions')

  // Past the retention: counted no more (their keys expire in Redis at the same time).
  t.equal(await app.profiles.count(source.id, clock + app.config.historyRetentionMs + 2 * DAY_MS), 0)
  await app.profiles.dropCounts(source.id)
  t.equal(await app.profiles.count(source.id, clock), 0, 'a deleted source\'s counts are gone')
})
