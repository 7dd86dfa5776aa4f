// Ingest jobs that failed every attempt (the infrastructure's fault: a job never fails for its
// content) keep their bodies — raw messages — FAILED_BODY_RETENTION from the failure, and the
// admin API lists, replays and purges them.
import t from 'tap'
import { buildTestApp, type TestContext } from '../helpers/app.js'
import { waitFor } from '../helpers/delivery-setup.js'
import { freshPrefix } from '../helpers/ingest-queue.js'
import { send } from '../helpers/ingest-send.js'
import { startTestRedis } from '../helpers/redis.js'

const redis = await startTestRedis()
t.teardown(() => redis.close())
const HOUR_MS = 3_600_000

/** The app with fast retries, and a stage that fails like Redis going away while `outage.on`. */
async function failingApp (t: Parameters<typeof buildTestApp>[0], env: Record<string, string> = {}) {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis), env: { INGEST_ATTEMPTS: '2', INGEST_BACKOFF_MS: '10', ...env } })
  const outage = { on: true }
  const processed: string[] = []
  ctx.app.workers.ingestStages.push(async (_sourceId, messages) => {
    if (outage.on) throw new Error('Connection is closed.')
    processed.push(...messages.map((m) => m.messageId))
  })
  const source = await ctx.createSource()
  return { ctx, outage, processed, source }
}

async function failWith (ctx: TestContext, writeKey: string, messageIds: string[]): Promise<void> {
  const before = await ctx.app.queues.ingest.getFailedCount()
  const response = await send(ctx.app, '/v1/batch', { batch: messageIds.map((messageId) => ({ type: 'identify', userId: 'u1', messageId, traits: { email: 'pii@example.com' } })) }, { writeKey })
  t.equal(response.statusCode, 200)
  await waitFor(async () => await ctx.app.queues.ingest.getFailedCount() > before, 10_000, 'the job to fail every attempt')
}

const bodyKeys = (ctx: TestContext) => ctx.app.redis.keys(`${ctx.config.REDIS_PREFIX}:ingest-body:*`)

t.test('a failed job is listed, its bodies kept FAILED_BODY_RETENTION from the failure, and a replay processes it', async (t) => {
  const { ctx, outage, processed, source } = await failingApp(t, { FAILED_BODY_RETENTION: 'PT1H' })
  await failWith(ctx, source.writeKey, ['m-1', 'm-2'])
  const listed = await ctx.admin('GET', '/v1/ingest/failures')
  t.equal(listed.statusCode, 200)
  t.equal(listed.json.total, 1)
  const [failure] = listed.json.failures
  t.match(failure, { attempts: 2, reason: /Connection is closed/, sources: [source.id], requests: 1, messages: 0, bodiesKept: true })
  t.ok(Math.abs(Date.parse(failure.bodiesExpireAt) - (Date.now() + HOUR_MS)) < 60_000, 'its bodies expire an hour from the failure (not 30 days)')
  const keys = await bodyKeys(ctx)
  t.ok(keys.length > 0, 'the bodies are kept')
  for (const key of keys) t.ok(await ctx.app.redis.pttl(key) <= HOUR_MS, `${key}: at most FAILED_BODY_RETENTION`)

  outage.on = false
  const replay = await ctx.admin('POST', '/v1/ingest/failures')
  t.same(replay.json, { replayed: 1, notReplayed: [] }, 'a bare POST replays every failed job')
  t.ok(await waitFor(() => processed.length === 2, 10_000), 'the replayed job is processed')
  t.same(processed.sort(), ['m-1', 'm-2'])
  t.ok(await waitFor(async () => (await bodyKeys(ctx)).length === 0, 10_000), 'processed, its bodies are gone')
  t.equal((await ctx.admin('GET', '/v1/ingest/failures')).json.total, 0)
})

t.test('a purge removes failed jobs and their bodies; a replay names what it cannot replay', async (t) => {
  const { ctx, source } = await failingApp(t)
  await failWith(ctx, source.writeKey, ['p-1'])
  await failWith(ctx, source.writeKey, ['p-2'])
  const { json } = await ctx.admin('GET', '/v1/ingest/failures')
  t.equal(json.total, 2)
  const [newest, oldest] = json.failures.map((f: { id: string }) => f.id)

  // One job's bodies gone (as after FAILED_BODY_RETENTION): it cannot be replayed.
  const job = await ctx.app.queues.ingest.getJob(oldest)
  await ctx.app.redis.del(job!.data.bodies!)
  const replay = await ctx.admin('POST', '/v1/ingest/failures', { ids: [oldest, 'no-such-job'] })
  t.equal(replay.json.replayed, 0)
  t.match(replay.json.notReplayed, [{ id: oldest, reason: /bodies are gone/ }, { id: 'no-such-job', reason: /no failed ingest job/ }])

  const purgeOne = await ctx.admin('DELETE', `/v1/ingest/failures?id=${newest}`)
  t.same(purgeOne.json, { purged: 1 })
  const purgeAll = await ctx.admin('DELETE', '/v1/ingest/failures')
  t.same(purgeAll.json, { purged: 1 })
  t.equal((await ctx.admin('GET', '/v1/ingest/failures')).json.total, 0)
  t.same(await bodyKeys(ctx), [], 'no body left')
})

t.test('past FAILED_BODY_RETENTION the bodies and the job are gone', async (t) => {
  const { ctx, source } = await failingApp(t, { FAILED_BODY_RETENTION: 'PT1S' })
  await failWith(ctx, source.writeKey, ['e-1'])
  t.equal((await ctx.admin('GET', '/v1/ingest/failures')).json.total, 1)
  t.ok(await waitFor(async () => (await bodyKeys(ctx)).length === 0, 5000), 'the raw bodies expired')
  t.ok(await waitFor(async () => (await ctx.admin('GET', '/v1/ingest/failures')).json.total === 0, 5000), 'and the job with them')
})

t.test('the admin token is required', async (t) => {
  const ctx = await buildTestApp(t, { redis: freshPrefix(redis) })
  for (const method of ['GET', 'POST', 'DELETE'] as const) {
    t.equal((await ctx.app.inject({ method, url: '/v1/ingest/failures' })).statusCode, 401, method)
  }
})
