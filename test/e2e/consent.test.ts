// Segment Consent Management: a destination naming consent categories gets a message only when
// every one of them is true in its consent (the message's own, else the last seen for its user);
// without any known consent it flows unless the destination requires consent. What is held back
// is filtered, counted under `consent`; a user who withdraws consent leaves the destination's
// audiences (false sent), and their later messages stay filtered.
import t from 'tap'
import { captureEmitted, createAudience, ingest, ingestDrained, waitForAudience, waitForIdle } from '../helpers/audience-setup.js'
import { assertAccounted, createDestination, deliveredEventIds, settledStats, startDelivery, track, waitFor } from '../helpers/delivery-setup.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const CATEGORIES = ['Advertising', 'Marketing']
const consent = (categoryPreferences: Record<string, boolean>) => ({ consent: { categoryPreferences } })

t.test('the matrix: no consent object, all true, one false, a category missing — with requireConsent off and on', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const lenient = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1111' }, consentCategories: CATEGORIES })
  const strict = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '2222' }, consentCategories: CATEGORIES, requireConsent: true })
  const open = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '3333' } })
  // A different user each, so no profile consent is in play.
  const cases: Array<[string, Record<string, unknown> | undefined, { lenient: boolean, strict: boolean }]> = [
    ['none', undefined, { lenient: true, strict: false }],
    ['all-true', { Advertising: true, Marketing: true, Analytics: false }, { lenient: true, strict: true }],
    ['one-false', { Advertising: true, Marketing: false }, { lenient: false, strict: false }],
    ['missing', { Advertising: true }, { lenient: false, strict: false }],
    ['not-booleans', { Advertising: 'yes', Marketing: 1 }, { lenient: false, strict: false }]
  ]
  await ingest(ctx, source.writeKey, cases.map(([name, preferences]) => track('Order Completed', { revenue: 1 }, {
    userId: `user-${name}`, messageId: `order-${name}`, ...(preferences === undefined ? {} : { context: consent(preferences as Record<string, boolean>) })
  })))
  const expected = (which: 'lenient' | 'strict') => cases.filter(([, , allowed]) => allowed[which]).map(([name]) => `order-${name}`).sort()
  for (const [destination, dataset, which] of [[lenient, '1111', 'lenient'], [strict, '2222', 'strict']] as const) {
    const stats = await settledStats(ctx, destination.id, cases.length)
    t.same(deliveredEventIds(graph, dataset).sort(), expected(which), `${which}: what consent allows is delivered`)
    t.same(stats.filteredByReason, { consent: cases.length - expected(which).length }, `${which}: the rest filtered for consent`)
    assertAccounted(t, stats, cases.length)
  }
  t.equal(deliveredEventIds(graph, '3333').length, cases.length, 'a destination naming no category takes every message')
  t.equal((await settledStats(ctx, open.id, cases.length)).filtered, 0)
})

t.test('the last consent seen holds for later messages without one: a withdrawal mid-stream, then consent again', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '1111' }, consentCategories: ['Advertising'] })
  const order = (id: string, extra: Record<string, unknown> = {}) => track('Order Completed', { revenue: 1 }, { userId: 'u1', messageId: id, ...extra })
  await ingest(ctx, source.writeKey, [order('before-consent')])
  await ingestDrained(ctx)
  // The consent wrapper's own event records it; the next message carries none.
  await ingest(ctx, source.writeKey, [track('Segment Consent Preference Updated', {}, { userId: 'u1', context: consent({ Advertising: false }) })])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [order('after-withdrawal'), order('own-consent', { context: consent({ Advertising: true }) })])
  await ingestDrained(ctx)
  await ingest(ctx, source.writeKey, [order('after-consent')])
  const stats = await settledStats(ctx, destination.id, 5)
  t.same(deliveredEventIds(graph, '1111').sort(), ['after-consent', 'before-consent', 'own-consent'])
  t.same(stats.filteredByReason, { consent: 2 }, 'the withdrawal event itself (its own consent says no) and the order after it are held back for consent')
  assertAccounted(t, stats, 5)
})

t.test('a user who withdraws consent leaves the destination\'s audiences (false sent); entries need consent', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const emitted = captureEmitted(ctx.app)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, { audienceEntryEvents: { pro: '4444' }, consentCategories: ['Advertising'] })
  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' } })
  await waitForIdle(ctx, audience.id)
  await ingest(ctx, source.writeKey, [
    { type: 'identify', userId: 'consenting', traits: { plan: 'pro' }, context: consent({ Advertising: true }) },
    { type: 'identify', userId: 'refusing', traits: { plan: 'pro' }, context: consent({ Advertising: false }) }
  ])
  await waitForAudience(ctx, audience.id, (a) => a.size === 2, 'both join the audience')
  const entries = await waitFor(() => { const found = graph.events('4444'); return found.length > 0 ? found : undefined }, 20_000, 'the entry conversion')
  await ingestDrained(ctx)
  t.equal(entries.length, 1, 'one entry conversion: the consenting user\'s only')

  await ingest(ctx, source.writeKey, [{ type: 'track', userId: 'consenting', event: 'Signed Out', properties: {}, context: consent({ Advertising: false }) }])
  const exits = await waitFor(() => {
    const found = emitted.filter(({ message }) => message.userId === 'consenting' && message.traits.pro === false)
    return found.length > 0 ? found : undefined
  }, 20_000, 'the withdrawal sends false')
  t.same(exits[0].message.context.relay, { destinationIds: [destination.id] }, 'addressed to the destination that needs consent')
  t.equal((await waitForAudience(ctx, audience.id, (a) => a.size === 2, 'still a member of the audience itself')).size, 2)
  await ingestDrained(ctx)
  const stats = await settledStats(ctx, destination.id, 0)
  t.ok(stats.filteredByReason.consent >= 1, 'the refusing user\'s entry held back for consent')
  assertAccounted(t, stats, stats.received)
})
