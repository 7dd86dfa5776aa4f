// Audience membership and syncs end to end: an audience created over existing history has the
// right members; its initial sync emits one `true` identify per member, in Engage's shape and
// through the ingest pipeline; later syncs emit only the net changes; a time window ages members
// out with no new event (the engine's clock is moved forward); trait audiences follow identifies;
// deleting an audience or unlinking a destination sends `false`, connecting one sends every
// member; a sync that fails is retried without leaving a wrong final state.
import t from 'tap'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import {
  allMembers, captureEmitted, createAudience, DAY_MS, emittedFor, getAudience, identifyBy, ingest, ingestDrained, ORDERED_30_DAYS,
  trackBy, valuesByUser, waitFor, waitForAudience, waitForIdle, type Emitted
} from '../helpers/audience-setup.js'
import { createDestination } from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())

const SETTINGS = { conversionEvents: { 'Order Completed': '1001' } }
const PRO_PLAN = { type: 'trait', trait: 'plan', op: 'equals', value: 'pro' }

interface Teardown { teardown: (fn: () => unknown) => void }

/** The service with its own key prefix and a clock the test moves, observing what the engine emits. */
async function setup (t: Teardown, env: Record<string, string> = {}) {
  const clock = { now: Date.now() }
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), now: () => clock.now, env })
  const emitted = captureEmitted(ctx.app)
  const source = await ctx.createSource()
  return { ctx, clock, emitted, source }
}

/** Waits until `count` identifies of the audience have gone through the pipeline, and the pipeline is idle. */
async function waitForEmitted (ctx: TestContext, emitted: Emitted[], audienceId: string, count: number): Promise<Emitted[]> {
  await waitFor(() => emittedFor(emitted, audienceId).length >= count, 20_000, () => `${count} identifies of ${audienceId} (got ${emittedFor(emitted, audienceId).length})`)
  await ingestDrained(ctx)
  return emittedFor(emitted, audienceId)
}

/**
 * Waits until nothing but the schedulers' future runs is left in the audience-sync queue (a
 * scheduler's job id ends with the time it is due: `repeat:<scheduler>:<ms>`).
 */
async function syncQueueSettled (ctx: TestContext): Promise<void> {
  let pending: string[] = []
  await waitFor(async () => {
    const jobs = await ctx.app.audienceSyncQueue.getJobs(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'])
    pending = jobs.filter((job) => {
      if (job === undefined) return false
      const due = /^repeat:.*:([0-9]+)$/.exec(String(job.id))
      return due === null || Number(due[1]) <= Date.now()
    }).map((job) => `${job.name} ${job.id}`)
    return pending.length === 0
  }, 20_000, () => `the audience-sync queue to settle (pending: ${pending.join(', ')})`)
}

function profileAudienceValue (ctx: TestContext, sourceId: string, userId: string, key: string): Promise<boolean | undefined> {
  return ctx.app.profiles.get(sourceId, userId).then((profile) => profile.audiences[key])
}

t.test('an audience over existing history: members, the initial sync, incremental syncs and a window ageing out', async (t) => {
  const { ctx, clock, emitted, source } = await setup(t)
  const destination = await createDestination(ctx, source.id, SETTINGS, { token: null })
  await ingest(ctx, source.writeKey, [
    trackBy('user-1', 'Order Completed'),
    trackBy('user-1', 'Order Completed'),
    trackBy('user-2', 'Order Completed', clock.now - 3 * DAY_MS),
    trackBy('user-3', 'Order Completed', clock.now - 29 * DAY_MS),
    trackBy('user-4', 'Product Viewed'),
    trackBy('user-5', 'Order Completed', clock.now - 40 * DAY_MS)
  ])
  await ingestDrained(ctx)

  const created = await createAudience(ctx, source.id, { name: 'Order Completed Last 30days', condition: ORDERED_30_DAYS })
  t.equal(created.key, 'order_completed_last_30days')
  await waitForIdle(ctx, created.id)
  await syncQueueSettled(ctx)
  const idle = await getAudience(ctx, created.id)
  t.same(await allMembers(ctx, created.id), ['user-1', 'user-2', 'user-3'], 'the history kept decides the members: not empty because new')
  t.match(idle, { size: 3, status: 'idle', lastSync: { added: 3, removed: 0, at: new Date(clock.now).toISOString() } }, 'the initial sync\'s report stays')
  t.ok(Date.parse(idle.nextSyncAt) > Date.now() + 10 * 60_000, `the next scheduled run is one schedule (15 minutes) away (${idle.nextSyncAt})`)

  const initial = await waitForEmitted(ctx, emitted, created.id, 3)
  t.equal(initial.length, 3, 'exactly one identify per member')
  t.same(initial.map((e) => e.message.userId).sort(), ['user-1', 'user-2', 'user-3'])
  for (const { sourceId, message } of initial) {
    t.equal(sourceId, source.id, 'emitted into the ingest queue of the audience\'s source')
    t.match(message, {
      type: 'identify',
      messageId: /^personas_[A-Za-z0-9_-]+$/,
      traits: { order_completed_last_30days: true },
      integrations: { All: false, 'Facebook Offline Conversions': true },
      context: {
        personas: { computation_class: 'audience', computation_id: created.id, computation_key: 'order_completed_last_30days', namespace: /^spa_/, space_id: /^spa_/ },
        relay: { destinationIds: [destination.id] }
      }
    }, `${message.userId}: Engage's shape`)
    t.same(Object.keys(message.traits), ['order_completed_last_30days'], 'no other trait')
  }
  t.equal(new Set(initial.map((e) => e.message.messageId)).size, 3, 'a messageId each')
  t.equal(await profileAudienceValue(ctx, source.id, 'user-1', created.key), true, 'membership is a property of the profile')
  t.equal(await profileAudienceValue(ctx, source.id, 'user-5', created.key), undefined, 'a non-member has none')

  // A new member is sent; a member's further orders send nothing.
  await ingest(ctx, source.writeKey, [trackBy('user-6', 'Order Completed'), trackBy('user-1', 'Order Completed'), trackBy('user-2', 'Product Viewed')])
  const afterNew = await waitForEmitted(ctx, emitted, created.id, 4)
  const incremental = await waitForAudience(ctx, created.id, (a) => a.size === 4 && a.status === 'idle' && a.lastSync.added === 1, 'the incremental sync')
  t.match(incremental.lastSync, { added: 1, removed: 0 })
  t.equal(afterNew.length, 4, 'one more identify')
  t.match(afterNew[3].message, { userId: 'user-6', traits: { order_completed_last_30days: true } })
  t.same([...valuesByUser(emitted, created.id, created.key).entries()].sort(), [['user-1', [true]], ['user-2', [true]], ['user-3', [true]], ['user-6', [true]]], 'nobody was sent twice')

  // Day 2: user-3's order (29 days ago) has left the window; no new event needed.
  clock.now += 1.5 * DAY_MS
  t.equal((await ctx.admin('POST', `/v1/audiences/${created.id}/sync`)).statusCode, 202)
  const aged = await waitForAudience(ctx, created.id, (a) => a.size === 3 && a.status === 'idle' && a.lastSync.at === new Date(clock.now).toISOString(), 'user-3 to age out')
  t.match(aged.lastSync, { added: 0, removed: 1 })
  await waitForEmitted(ctx, emitted, created.id, 5)
  t.same(valuesByUser(emitted, created.id, created.key).get('user-3'), [true, false], 'user-3 got false')
  t.equal(await profileAudienceValue(ctx, source.id, 'user-3', created.key), false)

  // 31 days on, every order has aged out. Syncs asked for at once queue behind each other.
  clock.now += 30 * DAY_MS
  for (let i = 0; i < 3; i++) t.equal((await ctx.admin('POST', `/v1/audiences/${created.id}/sync`)).statusCode, 202)
  const empty = await waitForAudience(ctx, created.id, (a) => a.size === 0 && a.status === 'idle' && a.lastSync.at === new Date(clock.now).toISOString(), 'every member to age out')
  await syncQueueSettled(ctx)
  const all = await waitForEmitted(ctx, emitted, created.id, 8)
  t.equal(all.length, 8, 'a false for each of the three left, nothing else')
  t.same([...valuesByUser(emitted, created.id, created.key).entries()].sort(), [
    ['user-1', [true, false]], ['user-2', [true, false]], ['user-3', [true, false]], ['user-6', [true, false]]
  ])
  t.same(await allMembers(ctx, created.id), [])
  t.match((await getAudience(ctx, created.id)), { size: 0, status: 'idle' })
  t.match(empty.lastSync, { removed: 3 }, 'the sync that aged them out counted them')
})

t.test('a user who enters and leaves between two syncs is sent nothing', async (t) => {
  const { ctx, emitted, source } = await setup(t)
  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: PRO_PLAN })
  await waitForIdle(ctx, audience.id)
  await ingest(ctx, source.writeKey, [identifyBy('steady', { plan: 'pro' })])
  await waitForEmitted(ctx, emitted, audience.id, 1)
  await waitForAudience(ctx, audience.id, (a) => a.status === 'idle' && a.lastSync.added === 1, 'steady\'s sync')

  // No sync runs while the user enters and leaves.
  await ctx.app.audienceSyncQueue.pause()
  await ingest(ctx, source.writeKey, [identifyBy('flicker', { plan: 'pro' })])
  await waitForAudience(ctx, audience.id, (a) => a.size === 2, 'flicker to enter')
  await ingest(ctx, source.writeKey, [identifyBy('flicker', { plan: 'free' }), identifyBy('late', { plan: 'pro' })])
  await waitForAudience(ctx, audience.id, (a) => a.size === 2, 'flicker to leave, late to enter')
  await ingestDrained(ctx)
  await ctx.app.audienceSyncQueue.resume()

  await waitForEmitted(ctx, emitted, audience.id, 2)
  await syncQueueSettled(ctx)
  await ingestDrained(ctx)
  const values = valuesByUser(emitted, audience.id, audience.key)
  t.same(values.get('late'), [true], 'late, who entered, is sent true')
  t.notOk(values.has('flicker'), 'flicker, in and out between syncs, is sent nothing')
  t.same(values.get('steady'), [true], 'steady is not sent again')
  t.match(await getAudience(ctx, audience.id), { size: 2, status: 'idle', lastSync: { added: 1, removed: 0 } })
})

t.test('a trait audience: in on an identify, out when the trait changes', async (t) => {
  const { ctx, emitted, source } = await setup(t)
  await ingest(ctx, source.writeKey, [identifyBy('already-pro', { plan: 'pro' }), identifyBy('free', { plan: 'free' })])
  await ingestDrained(ctx)
  const audience = await createAudience(ctx, source.id, { name: 'Pro customers', condition: PRO_PLAN })
  await waitForIdle(ctx, audience.id)
  t.same(await allMembers(ctx, audience.id), ['already-pro'], 'built from the profiles')

  await ingest(ctx, source.writeKey, [identifyBy('upgrader', { plan: 'pro', seats: 3 })])
  await waitForEmitted(ctx, emitted, audience.id, 2)
  t.same(await allMembers(ctx, audience.id), ['already-pro', 'upgrader'])
  t.same(valuesByUser(emitted, audience.id, audience.key).get('upgrader'), [true])
  t.equal(await profileAudienceValue(ctx, source.id, 'upgrader', 'pro_customers'), true)

  // An identify that does not touch the trait changes nothing; one that does makes the user leave.
  await ingest(ctx, source.writeKey, [identifyBy('upgrader', { seats: 4 })])
  await ingest(ctx, source.writeKey, [identifyBy('upgrader', { plan: 'team' })])
  await waitForEmitted(ctx, emitted, audience.id, 3)
  t.same(valuesByUser(emitted, audience.id, audience.key).get('upgrader'), [true, false])
  t.same(await allMembers(ctx, audience.id), ['already-pro'])
  t.equal(await profileAudienceValue(ctx, source.id, 'upgrader', 'pro_customers'), false)
  t.match(await waitForAudience(ctx, audience.id, (a) => a.status === 'idle' && a.lastSync.removed === 1, 'the leave to be synced'), { size: 1, lastSync: { added: 0, removed: 1 } })
})

t.test('deleting an audience sends false for each member, then its data goes', async (t) => {
  const { ctx, emitted, source } = await setup(t)
  await ingest(ctx, source.writeKey, ['a', 'b', 'c'].map((id) => identifyBy(id, { plan: 'pro' })))
  await ingestDrained(ctx)
  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: PRO_PLAN })
  await waitForIdle(ctx, audience.id)
  await waitForEmitted(ctx, emitted, audience.id, 3)

  t.equal((await ctx.admin('DELETE', `/v1/audiences/${audience.id}`)).statusCode, 204)
  t.equal((await ctx.admin('GET', `/v1/audiences/${audience.id}`)).statusCode, 404, 'gone from the API at once')
  await waitForEmitted(ctx, emitted, audience.id, 6)
  await syncQueueSettled(ctx)
  await ingestDrained(ctx)
  t.same([...valuesByUser(emitted, audience.id, 'pro').entries()].sort(), [['a', [true, false]], ['b', [true, false]], ['c', [true, false]]], 'false for each member, once')
  for (const { message } of emittedFor(emitted, audience.id).slice(3)) t.match(message, { traits: { pro: false }, context: { personas: { computation_id: audience.id } } })
  const keys = ctx.app.keys
  t.same(await ctx.app.redis.exists(keys.audienceMembers(audience.id), keys.audienceState(audience.id), keys.audienceChanges(audience.id)), 0, 'its members, state and changes are removed')
  t.equal(await ctx.app.audienceSyncQueue.getJobScheduler(`expire-${audience.id}`), undefined, 'and its schedule')
  t.equal(await profileAudienceValue(ctx, source.id, 'a', 'pro'), false, 'the profiles say false')

  // Profiles changing later do not bring it back.
  await ingest(ctx, source.writeKey, [identifyBy('d', { plan: 'pro' })])
  await ingestDrained(ctx)
  await syncQueueSettled(ctx)
  t.equal(emittedFor(emitted, audience.id).length, 6, 'nothing more is sent for it')
})

t.test('destinations: connecting one sends every member to it, unlinking one sends false to it', async (t) => {
  const { ctx, emitted, source } = await setup(t)
  const first = await createDestination(ctx, source.id, SETTINGS, { token: null, name: 'first' })
  const second = await createDestination(ctx, source.id, SETTINGS, { token: null, name: 'second' })
  await ingest(ctx, source.writeKey, ['m1', 'm2'].map((id) => identifyBy(id, { plan: 'pro' })))
  await ingestDrained(ctx)
  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: PRO_PLAN, destinations: [first.id] })
  await waitForIdle(ctx, audience.id)
  const initial = await waitForEmitted(ctx, emitted, audience.id, 2)
  t.ok(initial.every((e) => e.message.context.relay.destinationIds.length === 1 && e.message.context.relay.destinationIds[0] === first.id), 'the initial sync goes to the linked destination')

  const linked = await ctx.admin('PATCH', `/v1/audiences/${audience.id}`, { destinations: [first.id, second.id] })
  t.equal(linked.statusCode, 200)
  t.same(linked.json.destinations, [first.id, second.id])
  const afterLink = (await waitForEmitted(ctx, emitted, audience.id, 4)).slice(2)
  t.same(afterLink.map((e) => e.message.userId).sort(), ['m1', 'm2'], 'every member sent to the connected destination')
  for (const { message } of afterLink) t.match(message, { traits: { pro: true }, context: { relay: { destinationIds: [second.id] } } })
  t.ok(afterLink.every((e) => e.message.context.relay.destinationIds.length === 1), 'to it alone')

  const unlinked = await ctx.admin('PATCH', `/v1/audiences/${audience.id}`, { destinations: [second.id] })
  t.equal(unlinked.statusCode, 200)
  const afterUnlink = (await waitForEmitted(ctx, emitted, audience.id, 6)).slice(4)
  t.same(afterUnlink.map((e) => e.message.userId).sort(), ['m1', 'm2'], 'every member sent to the unlinked destination')
  for (const { message } of afterUnlink) t.match(message, { traits: { pro: false }, context: { relay: { destinationIds: [first.id] } } })
  t.ok(afterUnlink.every((e) => e.message.context.relay.destinationIds.length === 1), 'to it alone')
  await syncQueueSettled(ctx)
  t.same(await allMembers(ctx, audience.id), ['m1', 'm2'], 'still members')
  t.equal(await profileAudienceValue(ctx, source.id, 'm1', 'pro'), true, 'the profile still says member: false went to one destination only')

  // Later changes go to the destinations linked now.
  await ingest(ctx, source.writeKey, [identifyBy('m3', { plan: 'pro' })])
  const later = (await waitForEmitted(ctx, emitted, audience.id, 7)).slice(6)
  t.match(later[0].message, { userId: 'm3', traits: { pro: true }, context: { relay: { destinationIds: [second.id] } } })
})

t.test('a sync that fails is retried, and the final state sent is the user\'s', async (t) => {
  const { ctx, emitted, source } = await setup(t)
  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: PRO_PLAN })
  await waitForIdle(ctx, audience.id)

  // The next emission reaches the queue, then the sync fails before it records what it sent
  // (as a crash or Redis error would) — held there until the test has changed the user.
  const engine = ctx.app.audienceEngine as unknown as { emit: (...args: unknown[]) => Promise<void> }
  const emit = engine.emit.bind(engine)
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  let emittedOnce!: () => void
  const inFlight = new Promise<void>((resolve) => { emittedOnce = resolve })
  let failures = 0
  engine.emit = async (...args: unknown[]) => {
    await emit(...args)
    if (failures++ > 0) return
    emittedOnce()
    await released
    throw new Error('injected failure after the identifies were queued')
  }

  await ingest(ctx, source.writeKey, [identifyBy('u', { plan: 'pro' })])
  await inFlight
  await waitForEmitted(ctx, emitted, audience.id, 1)
  // The user leaves before the failed sync is retried.
  await ingest(ctx, source.writeKey, [identifyBy('u', { plan: 'free' })])
  await waitForAudience(ctx, audience.id, (a) => a.size === 0, 'u to leave')
  release()
  const failed = await waitForAudience(ctx, audience.id, (a) => a.status === 'failed' || a.status === 'idle', 'the sync to fail')
  t.match(failed, { status: 'failed', error: /injected failure/ }, 'the failure is visible')

  await waitForAudience(ctx, audience.id, (a) => a.status === 'idle', 'the retry to succeed', 30_000)
  await syncQueueSettled(ctx)
  await ingestDrained(ctx)
  const values = valuesByUser(emitted, audience.id, audience.key).get('u') ?? []
  t.equal(values.at(-1), false, `the last state sent is false, as the user is (sent ${JSON.stringify(values)})`)
  t.same(await allMembers(ctx, audience.id), [])
})

t.test('a change recorded while a sync is finishing goes out in the next one, not at the next scheduled run', async (t) => {
  const { ctx, emitted, source } = await setup(t)
  const audience = await createAudience(ctx, source.id, { name: 'Pro', condition: PRO_PLAN, schedule: { every: 'P1D' } })
  await waitForIdle(ctx, audience.id)
  await syncQueueSettled(ctx)

  // Hold the next sync at its very end (after its last look at the changes, before it completes).
  const store = ctx.app.audiences
  const setState = store.setState.bind(store)
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  let finishing!: () => void
  const atEnd = new Promise<void>((resolve) => { finishing = resolve })
  let held = false
  store.setState = async (id, changes) => {
    if (!held && id === audience.id && changes.status === 'idle') {
      held = true
      finishing()
      await released
    }
    return setState(id, changes)
  }

  await ingest(ctx, source.writeKey, [identifyBy('first', { plan: 'pro' })])
  await atEnd
  await ingest(ctx, source.writeKey, [identifyBy('second', { plan: 'pro' })])
  await waitForAudience(ctx, audience.id, (a) => a.size === 2, 'second to enter')
  release()

  await waitForEmitted(ctx, emitted, audience.id, 2)
  t.same(valuesByUser(emitted, audience.id, audience.key).get('second'), [true], 'second is sent without waiting a day')
})
