// One message never costs another its place: a message that fails anywhere in the ingest worker is
// set aside alone — counted as `unprocessable` for its source and, where it was routed, invalid
// (`unprocessable`) for the destination — while every other message of its job, from its own
// source and from others, is processed. The job itself never fails for its content.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import { faultInjection, isInfrastructureError, type IngestStep } from '../../jobs/isolation.js'
import { assertAccounted, createDestination, deliveredEventIds, settledStats, startDelivery, waitFor, type DeliverySetup } from '../helpers/delivery-setup.js'
import { sourceStats } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())
t.afterEach(() => { faultInjection.at = undefined })

const SETTINGS_A = { conversionEvents: { 'Order Completed': '1111' } }
const SETTINGS_B = { conversionEvents: { 'Order Completed': '2222' } }

function order (messageId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'track', messageId, userId: `user-${messageId}`, event: 'Order Completed', properties: { revenue: 10, currency: 'USD' }, timestamp: new Date().toISOString(), ...extra }
}

/** Two sources, each with a destination; requests of both stored in one ingest job. */
async function twoSources (t: Parameters<typeof startDelivery>[0]) {
  const setup = await startDelivery(t, { redis })
  const { ctx } = setup
  const a = await ctx.createSource('a')
  const b = await ctx.createSource('b')
  const destinationA = await createDestination(ctx, a.id, SETTINGS_A)
  const destinationB = await createDestination(ctx, b.id, SETTINGS_B)
  return { ...setup, a, b, destinationA, destinationB }
}

/**
 * Stores batches of several sources as the API does, in one flush: one ingest job. The bodies
 * skip the API's checks, as a build with other rules (or a bug) would let them through.
 */
async function storeTogether (setup: DeliverySetup, requests: Array<{ sourceId: string, batch: Array<Record<string, unknown>> | string }>): Promise<void> {
  const stored = requests.map(({ sourceId, batch }) => {
    const body = Buffer.from(typeof batch === 'string' ? batch : JSON.stringify({ batch, sentAt: new Date().toISOString() }))
    const count = typeof batch === 'string' ? 1 : batch.length
    return setup.ctx.app.ingestBuffer.submit({ request: { sourceId, receivedAt: Date.now() }, body, valid: count, ids: [], indexes: [], rejected: 0 })
  })
  await Promise.all(stored)
}

async function failedIngestJobs (setup: DeliverySetup): Promise<number> {
  return setup.ctx.app.queues.ingest.getFailedCount()
}

const STEPS: IngestStep[] = ['prepare', 'profiles', 'audiences', 'route', 'transform']

for (const step of STEPS) {
  t.test(`a message that throws at "${step}" is set aside alone; its job's other messages, of both sources, are delivered`, async (t) => {
    const setup = await twoSources(t)
    const { ctx, graph, a, b, destinationA, destinationB } = setup
    const poisonId = `poison-${randomUUID()}`
    faultInjection.at = (at, message) => {
      if (at === step && message.messageId === poisonId) throw new Error(`injected at ${step}`)
    }
    // At `profiles` the poison is an identify (only identifies update profiles there).
    const poison = step === 'profiles'
      ? { type: 'identify', messageId: poisonId, userId: 'poisoned', traits: { plan: 'pro' } }
      : order(poisonId)
    await storeTogether(setup, [
      { sourceId: a.id, batch: [order('a-1'), poison, order('a-2')] },
      { sourceId: b.id, batch: [order('b-1'), order('b-2')] }
    ])

    // Routed to A only when it failed at A's own steps (route, transform): then A counts it invalid.
    const routed = step === 'route' || step === 'transform'
    const statsA = await settledStats(ctx, destinationA.id, routed ? 3 : 2)
    const statsB = await settledStats(ctx, destinationB.id, 2)
    t.equal(statsA.delivered, 2, 'both good messages of source a delivered')
    t.equal(statsB.delivered, 2, 'the other source\'s messages in the same job delivered')
    t.same(deliveredEventIds(graph, '1111').sort(), ['a-1', 'a-2'])
    t.same(deliveredEventIds(graph, '2222').sort(), ['b-1', 'b-2'])
    if (routed) t.same(statsA.invalid.byReason, { unprocessable: 1 }, 'the destination counts it invalid: unprocessable')
    assertAccounted(t, statsA, routed ? 3 : 2)
    const source = await waitFor(async () => { const s = await sourceStats(ctx, a.id); return s.unprocessable === 1 && s })
    t.equal(source.unprocessable, 1, 'the source counts one unprocessable message')
    t.equal((await sourceStats(ctx, b.id)).unprocessable, 0)
    t.equal(await failedIngestJobs(setup), 0, 'the ingest job did not fail')
    t.same(await ctx.app.redis.keys(`${ctx.config.REDIS_PREFIX}:ingest-body:*`), [], 'its bodies are gone: the job was processed')
  })
}

t.test('real poisons in one job: deep nesting, a huge numeric string, a prototype-named audience key', async (t) => {
  const setup = await twoSources(t)
  const { ctx, graph, a, b, destinationA, destinationB } = setup
  // 20,000 levels: JSON.parse takes it; JSON.stringify of the traits (the profile) or of the
  // properties (custom_data) overflows the stack. Written as text: the test could not stringify it.
  const deep = '{"d":'.repeat(20_000) + 'true' + '}'.repeat(20_000)
  const text = (message: Record<string, unknown>, deepAt?: 'traits' | 'properties') => {
    const json = JSON.stringify(message)
    return deepAt === undefined ? json : json.replace(`"${deepAt}":{`, `"${deepAt}":{"deep":${deep},`)
  }
  const poisoned = [
    text(order('a-good-1')),
    text({ type: 'identify', messageId: 'deep-identify', userId: 'u-deep', traits: { plan: 'pro' } }, 'traits'),
    text(order('deep-track'), 'properties'),
    // quadratic for a backtracking parser of decimals
    text(order('huge-revenue', { properties: { revenue: '1'.repeat(100_000) + 'x' } })),
    // `constructor` must not be read as the destination's setting
    text({ type: 'identify', messageId: 'proto-key', userId: 'u-proto', traits: { constructor: true }, context: { personas: { computation_class: 'audience', computation_key: 'constructor' } } }),
    text(order('a-good-2'))
  ]
  const started = Date.now()
  await storeTogether(setup, [
    { sourceId: a.id, batch: `{"batch":[${poisoned.join(',')}]}` },
    { sourceId: b.id, batch: [order('b-good-1')] }
  ])
  // 4 routed: the worker sets the deep ones aside as it reads them (the API would have refused them)
  const statsA = await settledStats(ctx, destinationA.id, 4)
  const statsB = await settledStats(ctx, destinationB.id, 1)
  t.ok(Date.now() - started < 15_000, 'processed without stalling')
  t.same(deliveredEventIds(graph, '1111').sort(), ['a-good-1', 'a-good-2'], 'the good messages of a delivered')
  t.same(deliveredEventIds(graph, '2222'), ['b-good-1'], 'the other source\'s message delivered')
  t.equal(statsB.delivered, 1)
  t.equal(statsA.invalid.byReason.invalid_value, 1, 'the huge revenue is an invalid value, not a stall')
  assertAccounted(t, statsA, 4)
  t.equal(graph.received.filter((batch) => /constructor|function/i.test(JSON.stringify(batch))).length, 0, 'no request to a dataset named after a prototype member')
  const source = await waitFor(async () => { const s = await sourceStats(ctx, a.id); return s.unprocessable >= 2 && s })
  t.equal(source.unprocessable, 2, 'the deep identify and the deep track are set aside')
  t.equal(await failedIngestJobs(setup), 0, 'the job did not fail')
  const failures = await ctx.admin('GET', `/v1/destinations/${destinationA.id}/failures`)
  t.equal(failures.statusCode, 200, 'the destination\'s failures still answer')
})

t.test('a body the worker cannot parse is set aside; the rest of the job goes on', async (t) => {
  const setup = await twoSources(t)
  const { ctx, a, b, destinationB } = setup
  await storeTogether(setup, [
    { sourceId: a.id, batch: '{"batch": [' },
    { sourceId: b.id, batch: [order('b-1')] }
  ])
  t.equal((await settledStats(ctx, destinationB.id, 1)).delivered, 1)
  t.ok(await waitFor(async () => (await sourceStats(ctx, a.id)).unprocessable === 1), 'counted unprocessable')
  t.equal(await failedIngestJobs(setup), 0)
})

t.test('a stage that fails as a whole for one message is halved until that message stands alone', async (t) => {
  const setup = await twoSources(t)
  const { ctx, a, destinationA } = setup
  const seen: string[][] = []
  // A stage with no guard of its own: any list holding the poison fails.
  setup.ctx.app.workers.ingestStages.push(async (_sourceId, messages) => {
    seen.push(messages.map((m) => m.messageId))
    if (messages.some((m) => m.messageId === 'poison')) throw new TypeError('a bug this message sets off')
  })
  await storeTogether(setup, [{ sourceId: a.id, batch: ['a-1', 'a-2', 'poison', 'a-3', 'a-4'].map((id) => order(id)) }])
  t.equal((await settledStats(ctx, destinationA.id, 5)).delivered, 5, 'the stages before it delivered every conversion')
  t.ok(await waitFor(async () => (await sourceStats(ctx, a.id)).unprocessable === 1), 'the poison alone is unprocessable')
  t.ok(seen.some((list) => list.length === 1 && list[0] === 'poison'), 'the poison was run alone')
  t.ok(seen.some((list) => list.includes('a-4') && !list.includes('poison')), 'its neighbours were run without it')
  t.equal(await failedIngestJobs(setup), 0)
})

t.test('an infrastructure error fails the job, which runs again and loses nothing', async (t) => {
  const setup = await twoSources(t)
  const { ctx, a } = setup
  let failures = 0
  let processed: string[] = []
  setup.ctx.app.workers.ingestStages.push(async (_sourceId, messages) => {
    if (failures++ === 0) throw new Error('Connection is closed.')
    processed = messages.map((m) => m.messageId)
  })
  await storeTogether(setup, [{ sourceId: a.id, batch: [order('a-1'), order('a-2')] }])
  t.ok(await waitFor(() => processed.length === 2, 10_000), 'the retry processed both messages')
  t.equal((await sourceStats(ctx, a.id)).unprocessable, 0, 'nothing set aside')
})

t.test('the infrastructure, not the content, fails a job', async (t) => {
  const { ReplyError } = await import('ioredis')
  t.ok(isInfrastructureError(new ReplyError('LOADING Redis is loading the dataset in memory')))
  t.ok(isInfrastructureError(new ReplyError('OOM command not allowed when used memory > \'maxmemory\'.')))
  t.ok(isInfrastructureError(new Error('Connection is closed.')))
  // ioredis Cluster, while a primary is away (test/cluster/primary-restart.test.ts met the first).
  t.ok(isInfrastructureError(new Error('Too many Cluster redirections. Last error: Error: Connection is closed.')))
  t.ok(isInfrastructureError(new Error('Cluster isn\'t ready and enableOfflineQueue options is false')))
  t.ok(isInfrastructureError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })))
  t.notOk(isInfrastructureError(new ReplyError('ERR hash value is not an integer')), 'Redis refusing what it was given: the content')
  t.notOk(isInfrastructureError(new RangeError('Maximum call stack size exceeded')))
  t.notOk(isInfrastructureError(new TypeError('Cannot read properties of undefined')))
  t.notOk(isInfrastructureError('a string'))
})

t.test('through the API: a broken client clock (+275760-09-13) costs nothing, the message and its neighbours are delivered', async (t) => {
  const setup = await twoSources(t)
  const { ctx, graph, a, destinationA } = setup
  const response = await fetch(`${ctx.url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${a.writeKey}:`).toString('base64')}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      sentAt: new Date().toISOString(),
      batch: [order('clock-1'), order('far-future', { timestamp: '+275760-09-13T00:00:00Z', sentAt: '2020-01-01T00:00:00Z' }), order('year-zero', { timestamp: '0000-01-01T00:00:00Z' }), order('clock-2')]
    })
  })
  t.same(await response.json(), { success: true }, 'every message accepted')
  const stats = await settledStats(ctx, destinationA.id, 4)
  t.equal(stats.delivered, 4, 'all four delivered')
  const farFuture = graph.events('1111').find((event) => event.event_id === 'far-future')
  t.ok(Math.abs(farFuture.event_time * 1000 - Date.now()) < 60_000, 'its time is when it was received')
  t.equal(await failedIngestJobs(setup), 0)
})
