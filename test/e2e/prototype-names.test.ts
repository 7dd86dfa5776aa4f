// Names a client chooses are looked up as own properties only: `constructor`, `__proto__`,
// `toString` and `hasOwnProperty` as event names, audience keys and trait names are names like any
// other — never Object.prototype's members read as a setting, a trait or a dataset id.
import t from 'tap'
import { createAudience, ingest, ingestDrained, waitForAudience, waitForIdle } from '../helpers/audience-setup.js'
import { assertAccounted, createDestination, settledStats, startDelivery, waitFor } from '../helpers/delivery-setup.js'
import { send, sourceStats } from '../helpers/ingest-send.js'

const NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf']

t.test('prototype member names as event names, audience keys and trait names', async (t) => {
  const { ctx, graph } = await startDelivery(t)
  const source = await ctx.createSource()
  const destination = await createDestination(ctx, source.id, {
    conversionEvents: { 'Order Completed': '1111' },
    audienceEntryEvents: { constructor: '2222' }
  })

  t.test('as event names: unmapped, filtered, never sent', async (t) => {
    await ingest(ctx, source.writeKey, NAMES.map((event, i) => ({ type: 'track', userId: 'u-events', event, messageId: `event-${i}`, properties: { revenue: 1 } })))
    const stats = await settledStats(ctx, destination.id, NAMES.length)
    t.equal(stats.filtered, NAMES.length, 'each one unmapped')
    assertAccounted(t, stats, NAMES.length)
    t.equal(graph.received.length, 0, 'no request to Meta')
  })

  t.test('as trait names: a condition on the trait `constructor` needs the user\'s own', async (t) => {
    const audience = await createAudience(ctx, source.id, { name: 'Has a constructor trait', condition: { type: 'trait', trait: 'constructor', op: 'exists' } })
    const toString = await createAudience(ctx, source.id, { name: 'toString', key: 'to_string', condition: { type: 'trait', trait: 'toString', op: 'exists' } })
    await waitForIdle(ctx, audience.id)
    await waitForIdle(ctx, toString.id)
    await ingest(ctx, source.writeKey, [
      { type: 'identify', userId: 'u-plain', traits: { plan: 'free' } },
      { type: 'identify', userId: 'u-own', traits: { constructor: 'mine', toString: 'text', hasOwnProperty: 1, valueOf: 2 } }
    ])
    await ingestDrained(ctx)
    const members = await waitForAudience(ctx, audience.id, (a) => a.size === 1, 'only the user with the trait of their own')
    t.equal(members.size, 1)
    const listed = await ctx.admin('GET', `/v1/audiences/${audience.id}/members`)
    t.same(listed.json.members.map((m: { userId: string }) => m.userId), ['u-own'])
    t.equal((await waitForAudience(ctx, toString.id, (a) => a.size === 1, 'toString: the user with the trait')).size, 1)
  })

  t.test('as an audience key: `constructor` entries are sent where the destination maps that key', async (t) => {
    const audience = await createAudience(ctx, source.id, { name: 'constructor', condition: { type: 'event', event: 'toString', atLeast: 1, withinDays: 30 } })
    t.equal(audience.key, 'constructor')
    await waitForIdle(ctx, audience.id)
    await ingest(ctx, source.writeKey, [{ type: 'track', userId: 'u-entry', event: 'toString', properties: {} }])
    const entries = await waitFor(() => { const found = graph.events('2222'); return found.length > 0 ? found : undefined }, 20_000, 'the entry conversion')
    t.equal(entries[0].event_name, 'constructor', 'sent to the dataset the destination maps')
    for (const batch of graph.received) t.match(batch.datasetId, /^\d+$/, `a request to a dataset id: ${batch.datasetId}`)
  })

  t.test('as an Engage computation key: a membership nobody maps is filtered', async (t) => {
    // A source of its own: the audiences above would add their syncs' identifies to the counts.
    const engage = await ctx.createSource('engage')
    const engageDestination = await createDestination(ctx, engage.id, { audienceEntryEvents: { constructor: '3333' } })
    await ingest(ctx, engage.writeKey, NAMES.filter((name) => name !== '__proto__').map((key, i) => ({
      type: 'identify', userId: `u-engage-${i}`, traits: { [key]: true }, context: { personas: { computation_class: 'audience', computation_key: key } }
    })))
    // An identify whose traits lack the key is no membership, whatever Object.prototype has.
    await ingest(ctx, engage.writeKey, [{ type: 'identify', userId: 'u-engage-none', traits: {}, context: { personas: { computation_class: 'audience', computation_key: 'hasOwnProperty' } } }])
    const stats = await settledStats(ctx, engageDestination.id, NAMES.length)
    // `constructor` is mapped (audienceEntryEvents): that user's entry is a conversion.
    t.equal(stats.delivered, 1, 'the mapped key sends one entry')
    t.equal(graph.events('3333')[0]?.event_name, 'constructor')
    t.equal(stats.filtered, NAMES.length - 1, 'the others are filtered')
    assertAccounted(t, stats, NAMES.length)
    const failures = await ctx.admin('GET', `/v1/destinations/${engageDestination.id}/failures`)
    t.equal(failures.statusCode, 200)
    t.equal(failures.json.total, 0, 'nothing dead-lettered')
  })

  t.test('as keys of a message: `__proto__` is refused alone; the others are data', async (t) => {
    const response = await send(ctx.app, '/v1/batch', `{"batch": [
      {"type": "identify", "userId": "u-keys", "traits": {"constructor": 1, "toString": 2, "hasOwnProperty": 3}},
      {"type": "identify", "userId": "u-keys", "traits": {"__proto__": {"polluted": true}}}
    ]}`, { writeKey: source.writeKey })
    t.equal(response.statusCode, 200)
    t.match(response.json().rejected, [{ index: 1, error: /forbidden key/ }])
    t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched')
    t.equal((await sourceStats(ctx, source.id)).unprocessable, 0, 'nothing the worker could not process')
  })
})
