// Profiles are bounded: a user's profile lives HISTORY_RETENTION past their last activity, unless
// they belong to an audience, and the source's stats count the profiles kept.
import t from 'tap'
import { createAudience, ingest, ingestDrained, waitForAudience, waitForIdle } from '../helpers/audience-setup.js'
import { buildTestApp } from '../helpers/app.js'
import { waitFor } from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { sourceStats } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

const DAY_MS = 86_400_000
const RETENTION_MS = 90 * DAY_MS
const redis = await startTestRedis()
t.teardown(() => redis.close())

t.test('an active profile expires HISTORY_RETENTION after its last day; a member\'s is kept; both are counted', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  const source = await ctx.createSource()
  const profileKey = (userId: string) => ctx.app.keys.profile(source.id, userId)
  await ingest(ctx, source.writeKey, [
    { type: 'identify', userId: 'u1', traits: { plan: 'free' } },
    { type: 'track', userId: 'u2', event: 'Signed Up', properties: {} },
    { type: 'track', anonymousId: 'a3', event: 'Signed Up', properties: {} }
  ])
  await ingestDrained(ctx)
  t.equal((await waitFor(async () => { const s = await sourceStats(ctx, source.id); return s.profiles === 3 && s })).profiles, 3, 'three profiles, an anonymous one included')
  const endOfToday = (Math.floor(Date.now() / DAY_MS) + 1) * DAY_MS
  for (const user of ['u1', 'u2', 'anon:a3']) {
    const ttl = await ctx.app.redis.pttl(profileKey(user))
    t.ok(Math.abs(Date.now() + ttl - (endOfToday + RETENTION_MS)) < 5000, `${user}: expires 90 days after today's end`)
  }

  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
  await waitForIdle(ctx, audience.id)
  await ingest(ctx, source.writeKey, [{ type: 'identify', userId: 'u1', traits: { plan: 'pro' } }])
  await waitForAudience(ctx, audience.id, (a) => a.size === 1, 'u1 joins')
  t.ok(await waitFor(async () => await ctx.app.redis.pttl(profileKey('u1')) === -1), 'a member\'s profile does not expire')
  t.equal((await sourceStats(ctx, source.id)).profiles, 3, 'still three: one kept, two by their day')

  await ingest(ctx, source.writeKey, [{ type: 'identify', userId: 'u1', traits: { plan: 'free' } }])
  await waitForAudience(ctx, audience.id, (a) => a.size === 0, 'u1 leaves')
  t.ok(await waitFor(async () => await ctx.app.redis.pttl(profileKey('u1')) > 0), 'having left, it expires again')
  t.equal((await sourceStats(ctx, source.id)).profiles, 3)
})

t.test('profiles whose last activity is older than HISTORY_RETENTION are no longer counted; members are', async (t) => {
  const prefixed = freshPrefix(redis)
  const ctx = await buildTestApp(t, { redis: prefixed })
  const source = await ctx.createSource()
  const audience = await createAudience(ctx, source.id, { name: 'VIP', condition: { type: 'trait', trait: 'vip', op: 'equals', value: true } })
  await waitForIdle(ctx, audience.id)
  await ingest(ctx, source.writeKey, [
    { type: 'identify', userId: 'inactive-1', traits: { plan: 'free' } },
    { type: 'track', userId: 'inactive-2', event: 'Signed Up', properties: {} },
    { type: 'identify', userId: 'member', traits: { vip: true } }
  ])
  await waitForAudience(ctx, audience.id, (a) => a.size === 1, 'the member joins')
  await ingestDrained(ctx)
  t.equal((await waitFor(async () => { const s = await sourceStats(ctx, source.id); return s.profiles === 3 && s })).profiles, 3)
  t.equal(await ctx.app.redis.pttl(ctx.app.keys.profile(source.id, 'member')), -1, 'the member\'s profile has no expiry')
  t.ok(await ctx.app.redis.pttl(ctx.app.keys.profile(source.id, 'inactive-1')) > 0, 'the others expire (Redis removes them then)')

  // 92 days on, without activity: Redis has removed the two (their expiry has passed), and the
  // count no longer has them.
  const later = await buildTestApp(t, { redis: prefixed, env: { ROLE: 'api' }, now: () => Date.now() + 92 * DAY_MS })
  t.equal((await sourceStats(later, source.id)).profiles, 1, 'one profile kept: the member')
})
