import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { SharedRateLimiter } from '../plugins/rate-limit.js'
import { redisKeys } from '../src/keys.js'
import { startTestRedis } from './helpers/redis.js'

// The buckets refill on Redis's clock, which a test cannot move: rates are low enough that the
// milliseconds a test takes refill less than a token.
const redis = await startTestRedis()
t.teardown(() => redis.close())

/**
 * `processes` limiters at `rate` on one key prefix, each with a Redis connection of its own, as
 * API processes have.
 */
function limiters (t: Test, rate: number, processes = 1) {
  const keys = redisKeys(`${redis.prefix}-${randomUUID().slice(0, 8)}`)
  return Array.from({ length: processes }, () => {
    const connection = new Redis(redis.url)
    t.teardown(() => connection.quit())
    return { limiter: new SharedRateLimiter(connection, keys, rate), connection, keys }
  })
}

async function take (limiter: SharedRateLimiter, source: string, count: number): Promise<number> {
  return await limiter.take(source, count)
}

t.test('a burst of twice the rate passes, then the source waits', async (t) => {
  const [{ limiter }] = limiters(t, 2)
  for (let i = 0; i < 4; i++) t.equal(await take(limiter, 'src', 1), 0, `message ${i + 1} of the burst`)
  t.equal(await take(limiter, 'src', 1), 1, 'the 5th asks to retry after 1 s')
})

t.test('API processes share one bucket per source', async (t) => {
  const [a, b] = limiters(t, 2, 2)
  let allowed = 0
  for (let i = 0; i < 8; i++) if (await take((i % 2 === 0 ? a : b).limiter, 'src', 1) === 0) allowed++
  t.equal(allowed, 4, 'two processes together pass the burst of one (a bucket each would pass 8)')
})

t.test('concurrent requests in one process never take more than the bucket', async (t) => {
  const [{ limiter }] = limiters(t, 2)
  const waits = await Promise.all(Array.from({ length: 20 }, () => take(limiter, 'src', 1)))
  t.equal(waits.filter((wait) => wait === 0).length, 4, '4 of 20 at once pass')
})

t.test('the bucket refills at the rate, on the clock of Redis', async (t) => {
  const [{ limiter }] = limiters(t, 10)
  t.equal(await take(limiter, 'src', 20), 0)
  t.ok(await take(limiter, 'src', 1) > 0, 'empty')
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(await take(limiter, 'src', 4), 0, 'half a second later 4 messages pass (5 tokens are back)')
  t.ok(await take(limiter, 'src', 3) > 0, 'and not 3 more')
})

t.test('Retry-After is the whole seconds needed for the tokens asked', async (t) => {
  const [{ limiter }] = limiters(t, 10)
  t.equal(await take(limiter, 'src', 20), 0)
  t.equal(await take(limiter, 'src', 15), 2, '15 messages at 10/s: 2 s')
  t.equal(await take(limiter, 'src', 10), 1, '10 messages: 1 s')
})

t.test('a refused request takes nothing', async (t) => {
  const [{ limiter }] = limiters(t, 5)
  t.equal(await take(limiter, 'src', 8), 0)
  t.ok(await take(limiter, 'src', 5) > 0, '2 tokens left, 5 asked')
  t.equal(await take(limiter, 'src', 2), 0, 'the 2 are still there')
})

t.test('sources have their own buckets', async (t) => {
  const [{ limiter }] = limiters(t, 1)
  t.equal(await take(limiter, 'a', 2), 0)
  t.ok(await take(limiter, 'a', 1) > 0)
  t.equal(await take(limiter, 'b', 2), 0, 'source b is not slowed by source a')
})

t.test('a request larger than the bucket passes when the bucket is full, then the source waits longer', async (t) => {
  const [{ limiter }] = limiters(t, 10)
  t.equal(await take(limiter, 'src', 50), 0, 'a 50-message batch never fits a 20-token bucket, but is not refused forever')
  t.equal(await take(limiter, 'src', 1), 4, 'the bucket is 30 in debt: 3.1 s to wait for one token, rounded up')
  t.ok(await take(limiter, 'src', 50) > 0, 'the next large batch waits for a full bucket')
})

t.test('a process spends a lease of a tenth of the rate without asking Redis', async (t) => {
  const [{ limiter, connection, keys }] = limiters(t, 100)
  t.equal(await take(limiter, 'src', 1), 0, 'the first message asks Redis')
  t.equal(await connection.hget(keys.rateLimit('src'), 'tokens'), '189', 'for itself and a lease of 10, from the 200 of the bucket')
  for (let i = 0; i < 10; i++) t.equal(limiter.take('src', 1), 0, `message ${i + 2} is allowed from the lease, without a promise (no Redis call)`)
  const next = limiter.take('src', 1)
  t.ok(next instanceof Promise, 'the lease spent, the next message asks Redis again')
  t.equal(await next, 0)
})

t.test('rate 0 turns the limit off', async (t) => {
  const [{ limiter }] = limiters(t, 0)
  for (let i = 0; i < 5; i++) t.equal(limiter.take('src', 1_000_000), 0, 'allowed, without a promise')
})

t.test('Redis unreachable: the request is let through (storing it answers 503)', async (t) => {
  const offline = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 })
  t.teardown(() => offline.disconnect())
  const limiter = new SharedRateLimiter(offline, redisKeys('offline'), 2)
  t.equal(await take(limiter, 'src', 1), 0)
})
