// Match keys Meta can use (issue 15), end to end: junk is not sent, and an event whose only keys
// were junk is rejected locally as too weak, and counted under that reason.
import { createHash } from 'node:crypto'
import t from 'tap'
import { assertAccounted, createDestination, sendBatch, settledStats, startDelivery, track } from '../helpers/delivery-setup.js'

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')

t.test('junk keys are dropped: only a junk phone and a gender is too weak; N/A is no country', async (t) => {
  const { ctx, graph } = await startDelivery(t)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1111' } })
  await sendBatch(ctx, source.writeKey, [
    // No userId: its only keys are a junk phone (too few digits once parsed) and a gender.
    track('Order Completed', { revenue: 5 }, { userId: undefined, anonymousId: 'anon-junk', messageId: 'junk-only', context: { traits: { phone: '1-800-FLOWERS', gender: 'male' } } }),
    track('Order Completed', { revenue: 5 }, { userId: undefined, anonymousId: 'anon-na', messageId: 'na-country', context: { traits: { email: 'Good@Example.com', address: { country: 'N/A', city: 'n/a' } } } })
  ])
  const stats = await settledStats(ctx, destination.id, 2)
  t.same(stats.invalid.byReason, { weak_match_keys: 1 }, 'the junk-only event: rejected as too weak, counted so')
  t.equal(stats.delivered, 1)
  assertAccounted(t, stats, 2)
  const [sent] = graph.events('1111')
  t.equal(sent.event_id, 'na-country')
  t.same(sent.user_data, { em: [sha256('good@example.com')] }, 'sent with its email only: no country, no city made of a placeholder')
})
