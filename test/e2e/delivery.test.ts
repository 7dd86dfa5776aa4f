// Delivery end to end: Segment calls in over HTTP (analytics-node or plain fetch), the ingest and
// deliver workers, and what reaches a fake Graph API that validates like Meta's. Every test ends
// with each conversion delivered, filtered, invalid or dead-lettered, and the counts adding up.
import { createHash } from 'node:crypto'
import t from 'tap'
import seed from '../fixtures/seed-examples.json' with { type: 'json' }
import {
  assertAccounted, createDestination, deliveredEventIds, sendBatch, sendWithAnalytics, settledStats, startDelivery, track, waitFor
} from '../helpers/delivery-setup.js'
import { allKeys, startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex')
const DAY_MS = 24 * 60 * 60 * 1000

t.test('the seed example, end to end through analytics-node', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, seed.settings)
  t.equal(destination.status, 'active')
  t.equal(destination.connected, true)

  // The page's calls with known message ids, plus one call for each of the other two maps
  // carrying Limited Data Use options (the seed's [[], 1, 1000] and an LDU one).
  const calls: Array<Record<string, any>> = seed.messages.map((m, i) => ({ ...m, messageId: `seed-${i}` }))
  calls.push({
    type: 'track',
    messageId: 'seed-signed-up',
    userId: 'hamsolo813',
    event: 'Signed Up',
    properties: {},
    integrations: { 'Facebook Offline Conversions': { dataProcessingOptions: [[], 1, 1000] } }
  }, {
    type: 'track',
    messageId: 'seed-lead',
    userId: 'hamsolo813',
    event: 'Lead Generated',
    properties: {},
    integrations: { 'Facebook Offline Conversions': { dataProcessingOptions: [['LDU'], 1, 1000] } }
  })
  await sendWithAnalytics(ctx, source.writeKey, calls)

  const stats = await settledStats(ctx, destination.id, 7)
  // 7 routed messages: 5 conversions; Membership Upgraded (in no map) and the identify are filtered
  t.match(stats, { received: 7, filtered: 2, invalid: { total: 0 }, delivered: 5, deadLettered: 0 })
  assertAccounted(t, stats, 7)
  // The API stored the requests' bodies under keys of their own: processed, they are gone.
  const bodies = () => allKeys(ctx.app.redis, `${ctx.config.REDIS_PREFIX}:ingest-body:*`)
  t.ok(await waitFor(async () => (await bodies()).length === 0, 10_000, 'the stored bodies removed'), 'no stored body is left')
  t.ok(stats.lastSuccessAt, 'lastSuccessAt set')
  // Every request succeeded at its first attempt, made in the ingest job: none was queued.
  const ingestCounters = await Promise.all(ctx.app.queues.ingestPartitions.map((queue) => ctx.app.redis.get(queue.keys.id)))
  t.ok(ingestCounters.some((counter) => counter !== null), 'ingest jobs were numbered')
  t.equal(await ctx.app.redis.get(ctx.app.deliverQueue.keys.id), null, 'no deliver job was queued')

  for (const batch of graph.received) {
    t.equal(batch.version, 'v26.0', 'the Conversions API at the default version')
    t.equal(batch.body.upload_tag, 'Segment', 'upload_tag "Segment", as in the seed')
    t.equal(batch.body.test_event_code, undefined, 'no test_event_code unless set')
  }
  t.same([...new Set(graph.received.map((b) => b.datasetId))].sort(), ['1104832229607827', '5504831519607222', '794041057373779'], 'the three datasets of the seed\'s maps')

  const byId = new Map(graph.events().map((event) => [event.event_id, event]))
  t.same([...byId.keys()].sort(), ['seed-0', 'seed-1', 'seed-2', 'seed-lead', 'seed-signed-up'], 'event_id is the messageId; each conversion once')
  t.same(new Set(deliveredEventIds(graph, '794041057373779')), new Set(['seed-0', 'seed-1', 'seed-2']))
  t.same(deliveredEventIds(graph, '1104832229607827'), ['seed-signed-up'])
  t.same(deliveredEventIds(graph, '5504831519607222'), ['seed-lead'])

  for (const event of byId.values()) t.equal(event.action_source, 'physical_store')

  const purchase = byId.get('seed-0')
  t.equal(purchase.event_name, 'Purchase', 'Order Completed → Purchase')
  t.same(purchase.custom_data, { value: 39.95, currency: 'USD', shippingMethod: '2-day' }, 'revenue is the value, USD by default, the rest as sent')
  t.same(purchase.user_data, { external_id: [sha256('019mr8mf4r')] }, 'the userId, hashed')
  t.same(purchase.data_processing_options, [], 'LDU on, no options on the message: LDU off for the event')
  t.notOk('data_processing_options_country' in purchase)

  const addToCart = byId.get('seed-1')
  t.equal(addToCart.event_name, 'AddToCart', 'Product Added → AddToCart')
  t.same(addToCart.custom_data.content_ids, ['product12356'])
  t.equal(addToCart.custom_data.content_type, 'product')
  t.notOk('value' in addToCart.custom_data, 'valueFieldIdentifier "value": the price is not the value')
  t.equal(addToCart.custom_data.sku, 'G-32')
  t.same(addToCart.user_data.em, [sha256('hamsolo813@hamsolo813.com')])
  t.same(addToCart.user_data.ph, [sha256('14011234567')], 'US phone in E.164 digits, hashed')
  t.equal(addToCart.user_data.country, sha256('us'))

  const leadPurchase = byId.get('seed-2')
  t.equal(leadPurchase.event_name, 'Purchase')
  t.same({ value: leadPurchase.custom_data.value, currency: leadPurchase.custom_data.currency }, { value: 18.99, currency: 'USD' })
  t.notOk('lead_id' in leadPurchase.user_data, 'a placeholder lead id is not sent')

  const signedUp = byId.get('seed-signed-up')
  t.equal(signedUp.event_name, 'CompleteRegistration')
  t.same([signedUp.data_processing_options, signedUp.data_processing_options_country, signedUp.data_processing_options_state], [[], 1, 1000], 'the seed\'s [[], 1, 1000]')
  const lead = byId.get('seed-lead')
  t.equal(lead.event_name, 'Lead')
  t.same([lead.data_processing_options, lead.data_processing_options_country, lead.data_processing_options_state], [['LDU'], 1, 1000])
})

t.test('several destinations on one source; integrations turn a destination off', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const first = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '111' } }, { name: 'first' })
  // A track in two maps is two conversions.
  const second = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '222' }, leadEvents: { 'Order Completed': '333' } }, { name: 'second' })
  const disabled = await createDestination(ctx, source.id, { conversionEvents: { 'Order Completed': '444' } }, { name: 'off', enabled: false })
  t.equal(disabled.status, 'disabled')

  const messages = [
    track('Order Completed', { revenue: 10 }),
    track('Order Completed', { revenue: 11 }, { integrations: { 'Facebook Offline Conversions': false } }),
    track('Order Completed', { revenue: 12 }, { integrations: { All: false } }),
    track('Order Completed', { revenue: 13 }, { integrations: { All: false, 'Facebook Offline Conversions': true } }),
    track('Something Unmapped', {}),
    { type: 'page', messageId: 'page-1', userId: 'user-1', name: 'Home' }
  ]
  await sendBatch(ctx, source.writeKey, messages)
  const on = [messages[0].messageId, messages[3].messageId].sort()

  const firstStats = await settledStats(ctx, first.id, 6)
  t.match(firstStats, { delivered: 2, filtered: 4, invalid: { total: 0 }, deadLettered: 0 })
  assertAccounted(t, firstStats, 6)
  const secondStats = await settledStats(ctx, second.id, 8)
  t.match(secondStats, { delivered: 4, filtered: 4, invalid: { total: 0 }, deadLettered: 0 })
  assertAccounted(t, secondStats, 8)
  const disabledStats = await settledStats(ctx, disabled.id, 0)
  assertAccounted(t, disabledStats, 0)

  t.same(deliveredEventIds(graph, '111').sort(), on, 'opted-out messages never reach the first destination')
  t.same(deliveredEventIds(graph, '222').sort(), on)
  t.same(deliveredEventIds(graph, '333').sort(), on)
  t.same(graph.events('333').map((e) => e.event_name), ['Lead', 'Lead'])
  t.same(graph.events('444'), [], 'a disabled destination gets nothing')
})

t.test('test_event_code, upload_tag and apiVersion from the settings', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, {
    conversionEvents: { 'Order Completed': '555' },
    testEventCode: 'TEST12345',
    uploadTag: 'store-upload',
    // Newer than every version this build knows, so never expired (v19.0 was, on 2026-09-24 at the latest)
    apiVersion: 'v27.0'
  })
  await sendBatch(ctx, source.writeKey, [track('Order Completed', { revenue: 5, currency: 'eur' })])
  const stats = await settledStats(ctx, destination.id, 1)
  assertAccounted(t, stats, 1)
  t.equal(stats.delivered, 1)
  t.equal(graph.received.length, 1)
  const [batch] = graph.received
  t.equal(batch.version, 'v27.0')
  t.equal(batch.body.test_event_code, 'TEST12345')
  t.equal(batch.body.upload_tag, 'store-upload')
  t.equal(batch.body.data[0].custom_data.currency, 'EUR')
})

t.test('the legacy offline-conversions format goes to v16.0', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, {
    apiFormat: 'offline-conversions',
    apiVersion: 'v21.0',
    conversionEvents: { 'Order Completed': '666', 'Membership Upgraded': '666' }
  })
  const messages = [
    track('Order Completed', { revenue: 39.95, order_id: 'o-1' }, { userId: '019mr8mf4r' }),
    track('Membership Upgraded', { tier: 'gold' }, { userId: '019mr8mf4r' })
  ]
  await sendBatch(ctx, source.writeKey, messages)
  const stats = await settledStats(ctx, destination.id, 2)
  assertAccounted(t, stats, 2)
  t.equal(stats.delivered, 2)
  t.ok(graph.received.length > 0)
  for (const batch of graph.received) {
    t.equal(batch.version, 'v16.0', 'whatever apiVersion says')
    t.equal(batch.body.upload_tag, 'Segment')
  }
  const events = graph.events('666')
  const purchase = events.find((e) => e.event_name === 'Purchase')
  t.same(purchase.match_keys, { extern_id: '019mr8mf4r' }, 'extern_id as is')
  t.same([purchase.value, purchase.currency, purchase.order_id], [39.95, 'USD', 'o-1'])
  const other = events.find((e) => e.event_name === 'Other')
  t.ok(other, 'a custom event is "Other" in the legacy format')
  t.same(other.custom_data, { tier: 'gold' })
})

t.test('a batch of 2,500 events goes out in requests of at most 1,000 (2,000 legacy)', async (t) => {
  // Meta's answers may be slow under load (a cluster splits the batch into 16 jobs at once): a
  // request that times out is sent again (Meta de-duplicates), which this test is not about.
  const { ctx, graph } = await startDelivery(t, { redis, env: { GRAPH_TIMEOUT_MS: '10000' } })
  const source = await ctx.createSource()
  const capi = await createDestination(ctx, source.id, { conversionEvents: { 'Product Viewed': '777' } })
  const legacy = await createDestination(ctx, source.id, { apiFormat: 'offline-conversions', conversionEvents: { 'Product Viewed': '888' } })
  const messages = Array.from({ length: 2500 }, (_, i) => track('Product Viewed', { product_id: `p-${i}` }, { userId: `user-${i}` }))
  await sendBatch(ctx, source.writeKey, messages)

  const capiStats = await settledStats(ctx, capi.id, 2500, 60_000)
  assertAccounted(t, capiStats, 2500)
  t.equal(capiStats.delivered, 2500)
  const legacyStats = await settledStats(ctx, legacy.id, 2500, 60_000)
  assertAccounted(t, legacyStats, 2500)
  t.equal(legacyStats.delivered, 2500)

  const capiSizes = graph.received.filter((b) => b.datasetId === '777').map((b) => b.body.data.length)
  t.ok(capiSizes.every((n) => n <= 1000), `Conversions API requests of at most 1,000 (${capiSizes})`)
  t.ok(capiSizes.length >= 3)
  const legacySizes = graph.received.filter((b) => b.datasetId === '888').map((b) => b.body.data.length)
  t.ok(legacySizes.every((n) => n <= 2000), `legacy requests of at most 2,000 (${legacySizes})`)
  // (On ingest partitions the batch's messages are in 16 jobs: each one's requests are smaller.)
  if (ctx.config.ingestPartitions === 1) t.ok(legacySizes.some((n) => n > 1000), 'the legacy format uses its larger limit')
  const sent = new Set(messages.map((m) => m.messageId))
  const ids = deliveredEventIds(graph, '777')
  t.equal(ids.length, 2500, 'each conversion once')
  t.same(new Set(ids), sent, 'every one of them')
})

t.test('invalid events are counted by reason and never sent', async (t) => {
  const { ctx, graph } = await startDelivery(t, { redis })
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, {
    conversionEvents: { 'Order Completed': '999', 'Product Added': '999' },
    limitedDataUse: true
  })
  const now = Date.now()
  const good = track('Order Completed', { revenue: 20 })
  const messages = [
    track('Order Completed', { shipping: 'fast' }),
    track('Product Added', { price: 3 }, { timestamp: new Date(now - 70 * DAY_MS).toISOString() }),
    track('Product Added', { price: 3 }, { timestamp: new Date(now + DAY_MS).toISOString() }),
    track('Product Added', {}, { userId: undefined, anonymousId: 'anon-1' }),
    track('Order Completed', { revenue: 20, currency: 'XYZ' }),
    track('Order Completed', { revenue: 'lots' }),
    track('Product Added', {}, { integrations: { 'Facebook Offline Conversions': { dataProcessingOptions: 'LDU' } } }),
    good
  ]
  await sendBatch(ctx, source.writeKey, messages)
  const stats = await settledStats(ctx, destination.id, messages.length)
  assertAccounted(t, stats, messages.length)
  t.same(stats.invalid.byReason, {
    missing_value: 1,
    event_too_old: 1,
    event_in_future: 1,
    no_match_key: 1,
    invalid_currency: 1,
    invalid_value: 1,
    invalid_data_processing_options: 1
  })
  t.equal(stats.invalid.total, 7)
  t.equal(stats.delivered, 1)
  t.same(deliveredEventIds(graph), [good.messageId], 'only the valid event reached Meta')
  t.equal(graph.requests, 1)
})
