import { createHash } from 'node:crypto'
import t from 'tap'
import { createAudience, ingest, waitForAudience, waitForIdle } from '../helpers/audience-setup.js'
import { createDestination, settledStats, startDelivery, waitFor } from '../helpers/delivery-setup.js'

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')
// Meta's reference hash (spec/facebook.md) for John_Smith@gmail.com
const JOHN_EMAIL_HASH = '62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f'

t.test('profiles and audiences reach Meta through conversions', async (t) => {
  const { ctx, graph } = await startDelivery(t)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, {
    conversionEvents: { 'Order Completed': '111' },
    audienceEntryEvents: { pro_plan: '222', vip: '333' }
  })

  t.test('a later track gets the match keys its message lacks from the identify', async (t) => {
    await ingest(ctx, source.writeKey, [
      { type: 'identify', userId: 'u1', anonymousId: 'a1', traits: { email: 'John_Smith@gmail.com', phone: '(650)555-1212', address: { country: 'United States' } } }
    ])
    await ingest(ctx, source.writeKey, [
      { type: 'track', userId: 'u1', event: 'Order Completed', messageId: 'order-1', properties: { revenue: 10 } },
      { type: 'track', anonymousId: 'a1', event: 'Order Completed', messageId: 'order-2', properties: { revenue: 20 } }
    ])
    const events = await waitFor(() => {
      const found = graph.events('111').filter((e) => e.event_id === 'order-1' || e.event_id === 'order-2')
      return found.length === 2 ? found : undefined
    }, 20_000, 'both orders delivered')
    for (const event of events) {
      t.same(event.user_data.em, [JOHN_EMAIL_HASH], `${event.event_id}: email hash from the profile`)
      t.same(event.user_data.ph, ['e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176'], `${event.event_id}: phone hash from the profile`)
      t.same(event.user_data.external_id, [sha256('u1')], `${event.event_id}: the user id (the anonymous one through its link)`)
    }
  })

  t.test('audience entry sends one conversion; members carry the property on later conversions', async (t) => {
    const audience = await createAudience(ctx, source.id, { name: 'Pro plan', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
    t.equal(audience.key, 'pro_plan')
    // The user joins after the audience's initial sync. (Joining while it scans can send the
    // entry twice, from the scan and from the change log, under one event_id: the last test.)
    await waitForIdle(ctx, audience.id)
    await ingest(ctx, source.writeKey, [{ type: 'identify', userId: 'u1', traits: { plan: 'pro' } }])
    await waitForAudience(ctx, audience.id, (a) => a.size === 1 && a.lastSync !== null, 'u1 is a member')
    const entries = await waitFor(() => {
      const found = graph.events('222')
      return found.length > 0 ? found : undefined
    }, 20_000, 'the entry conversion')
    t.equal(entries.length, 1, 'one entry conversion')
    t.equal(entries[0].event_name, 'pro_plan', 'named after the audience key')
    t.match(entries[0].event_id, /^personas_/, 'event_id is the emitted identify\'s messageId')
    t.same(entries[0].user_data.em, [JOHN_EMAIL_HASH])

    await ingest(ctx, source.writeKey, [{ type: 'track', userId: 'u1', event: 'Order Completed', messageId: 'order-3', properties: { revenue: 5 } }])
    const order = await waitFor(() => graph.events('111').find((e) => e.event_id === 'order-3'), 20_000, 'order-3 delivered')
    t.equal(order.custom_data.pro_plan, true, 'the audience property rides along in custom_data')

    const stats = await settledStats(ctx, destination.id, 6)
    t.equal(stats.delivered, 4, 'three orders and one entry delivered')
    t.equal(stats.received, stats.filtered + stats.invalid.total + stats.delivered + stats.deadLettered + stats.retrying, 'the counts add up')
  })

  t.test('a member sent by the initial sync and again by the change log is one entry: the same event_id', async (t) => {
    // u1 qualifies before the audience exists: the build makes it a member, the initial sync sends it.
    const audience = await createAudience(ctx, source.id, { name: 'VIP', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
    t.equal(audience.key, 'vip')
    await waitForAudience(ctx, audience.id, (a) => a.size === 1 && a.lastSync !== null, 'u1 is a member, synced')
    const first = await waitFor(() => graph.events('333')[0], 20_000, 'the entry conversion of the initial sync')
    // The race: u1 joining while the initial sync scans is in the scan and in the change log
    // (recorded as the real-time path does); the next sync sends it again.
    await ctx.app.redis.xadd(ctx.app.keys.audienceChanges(audience.id), '*', 'u', 'u1', 'm', '1')
    await ctx.app.audienceSyncQueue.add('sync', { audienceId: audience.id })
    const entries = await waitFor(() => {
      const found = graph.events('333')
      return found.length === 2 ? found : undefined
    }, 20_000, 'the entry sent again')
    t.equal(entries[1].event_id, first.event_id, 'one event_id: Meta counts one entry')
  })
})
