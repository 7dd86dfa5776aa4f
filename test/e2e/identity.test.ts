// One profile per person: a message carrying both an anonymousId and a userId (an identify, a
// track) and an alias (previousId → userId) join the anonymous visitor's profile — or a former
// user id's — to the user's: history adds up, keys and traits fill the gaps, memberships are
// evaluated again, and the old id resolves to the user from then on.
import { createHash } from 'node:crypto'
import t from 'tap'
import { ProfileStore } from '../../plugins/profiles.js'
import { allMembers, createAudience, ingest, ingestDrained, trackBy, waitForAudience, waitForIdle } from '../helpers/audience-setup.js'
import { createDestination, startDelivery, waitFor } from '../helpers/delivery-setup.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())
const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')
const TWICE = { type: 'event', event: 'Order Completed', atLeast: 2, withinDays: 30 }

/** The sum of a profile's history counts (h: fields). */
async function historyTotal (ctx: Awaited<ReturnType<typeof startDelivery>>['ctx'], sourceId: string, profileId: string): Promise<number> {
  const fields = await ctx.app.redis.hgetall(ctx.app.keys.profile(sourceId, profileId))
  return Object.entries(fields).filter(([field]) => field.startsWith('h:')).reduce((sum, [, n]) => sum + Number(n), 0)
}

t.test('an order made anonymously and one made signed in count as two for the user', async (t) => {
  const { ctx } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const audience = await createAudience(ctx, source.id, { name: 'Ordered twice', condition: TWICE })
  await waitForIdle(ctx, audience.id)
  await ingest(ctx, source.writeKey, [{ type: 'track', anonymousId: 'a1', event: 'Order Completed', properties: {} }])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [{ type: 'identify', userId: 'u1', anonymousId: 'a1', traits: { email: 'u1@example.com' } }])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [trackBy('u1', 'Order Completed')])
  await waitForAudience(ctx, audience.id, (a) => a.size === 1, 'u1 has ordered twice')
  t.same(await allMembers(ctx, audience.id), ['u1'])
  t.equal(await historyTotal(ctx, source.id, 'u1'), 2)
  t.equal(await ctx.app.redis.exists(ctx.app.keys.profile(source.id, 'anon:a1')), 0, 'the anonymous profile is gone: a link to the user now')

  // The same join again (every web event carries both ids) adds nothing twice.
  await ingest(ctx, source.writeKey, [{ type: 'track', userId: 'u1', anonymousId: 'a1', event: 'Page Seen', properties: {} }])
  await ingestDrained(ctx)
  t.equal(await historyTotal(ctx, source.id, 'u1'), 3, 'the new event only')
})

t.test('a track carrying both ids joins too; later anonymous-only messages are the user\'s, enriched from the user\'s profile', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1111' } })
  await ingest(ctx, source.writeKey, [
    { type: 'track', anonymousId: 'a2', event: 'Product Viewed', properties: {}, context: { traits: { firstName: 'Ann' } } },
    { type: 'identify', userId: 'u2', traits: { email: 'u2@example.com', phone: '+14015550100' } }
  ])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [{ type: 'track', userId: 'u2', anonymousId: 'a2', event: 'Signed In', properties: {} }])
  await ingestDrained(ctx)
  t.equal(await historyTotal(ctx, source.id, 'u2'), 2, 'the anonymous Product Viewed joined the user\'s history')
  await ingest(ctx, source.writeKey, [{ type: 'track', anonymousId: 'a2', event: 'Order Completed', messageId: 'anon-order', properties: { revenue: 10 } }])
  const [order] = await waitFor(() => { const found = graph.events('1111'); return found.length > 0 ? found : undefined }, 20_000, 'the anonymous order delivered')
  t.same(order.user_data.em, [sha256('u2@example.com')], 'the user\'s email, from the profile')
  t.same(order.user_data.external_id, [sha256('u2')], 'the user\'s id')
})

t.test('a chain: anonymous → user A, then alias A → B; A then resolves to B', async (t) => {
  const { ctx } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const audience = await createAudience(ctx, source.id, { name: 'Ordered twice', condition: TWICE })
  await waitForIdle(ctx, audience.id)
  await ingest(ctx, source.writeKey, [{ type: 'track', anonymousId: 'a3', event: 'Order Completed', properties: {} }])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [{ type: 'identify', userId: 'A', anonymousId: 'a3', traits: { plan: 'free' } }])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [{ type: 'alias', previousId: 'A', userId: 'B' }])
  await ingestDrained(ctx)
  t.equal(await ctx.app.redis.exists(ctx.app.keys.profile(source.id, 'A')), 0, 'A\'s profile joined B\'s')
  t.equal(await historyTotal(ctx, source.id, 'B'), 1, 'with the anonymous order')
  // A message still sent as A, and one as the anonymous visitor, are B's.
  await ingest(ctx, source.writeKey, [trackBy('A', 'Order Completed')])
  await waitForAudience(ctx, audience.id, (a) => a.size === 1, 'B has ordered twice')
  t.same(await allMembers(ctx, audience.id), ['B'])
  const traits = await ctx.app.redis.hget(ctx.app.keys.profile(source.id, 'B'), 't:plan')
  t.equal(traits, '"free"', 'A\'s traits filled B\'s')
})

t.test('two joins of one anonymous profile racing: one wins, its history counted once', async (t) => {
  const { ctx } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  await ingest(ctx, source.writeKey, [
    { type: 'track', anonymousId: 'a4', event: 'Order Completed', properties: {} },
    { type: 'track', anonymousId: 'a4', event: 'Order Completed', properties: {} }
  ])
  await ingestDrained(ctx)
  const joined = await Promise.all([
    ctx.app.profiles.merge(source.id, 'anon:a4', 'x1'),
    ctx.app.profiles.merge(source.id, 'anon:a4', 'x2')
  ])
  t.equal(joined.filter(Boolean).length, 1, 'exactly one join')
  const totals = [await historyTotal(ctx, source.id, 'x1'), await historyTotal(ctx, source.id, 'x2')]
  t.same(totals.sort(), [0, 2], 'the two orders counted once, for the winner')
  // A store of another process (no memory of the join): Redis alone keeps it from happening twice.
  const other = new ProfileStore(ctx.app.redis, ctx.app.keys, ctx.app.profiles.retentionMs)
  t.notOk(await other.merge(source.id, 'anon:a4', 'x1'), 'a replay joins nothing')
  t.same([await historyTotal(ctx, source.id, 'x1'), await historyTotal(ctx, source.id, 'x2')].sort(), [0, 2])
})

t.test('a join interrupted after adding, before removing, adds nothing when run again', async (t) => {
  const { ctx } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  await ingest(ctx, source.writeKey, [
    { type: 'track', anonymousId: 'a5', event: 'Order Completed', properties: {} },
    { type: 'track', anonymousId: 'a5', event: 'Order Completed', properties: {} }
  ])
  await ingestDrained(ctx)
  const from = ctx.app.keys.profile(source.id, 'anon:a5')
  const claim = `_m:${createHash('sha256').update('anon:a5').digest('base64url').slice(0, 12)}`
  // The first two steps of a join, as a process that died then had done them.
  const pairs = await ctx.app.redis.profileMergeClaimBuffer(from, 'y1')
  await ctx.app.redis.profileMergeInto(ctx.app.keys.profile(source.id, 'y1'), claim, ...pairs!)
  t.equal(await historyTotal(ctx, source.id, 'y1'), 2)
  const other = new ProfileStore(ctx.app.redis, ctx.app.keys, ctx.app.profiles.retentionMs)
  t.ok(await other.merge(source.id, 'anon:a5', 'y1'), 'run again, the join finishes')
  t.equal(await historyTotal(ctx, source.id, 'y1'), 2, 'without adding the history twice')
  t.equal(await ctx.app.redis.exists(from), 0, 'the anonymous profile is gone')
})
