import t from 'tap'
import { RateLimiter } from '../src/rate-limit.js'

/** A limiter at `rate` messages a second whose clock the test moves. */
function limiter (rate: number) {
  const clock = { now: 1_000_000 }
  return { clock, limiter: new RateLimiter(rate, () => clock.now) }
}

t.test('a burst of twice the rate passes, then the source waits', async (t) => {
  const { limiter: l } = limiter(10)
  for (let i = 0; i < 20; i++) t.equal(l.take('src', 1), 0, `message ${i + 1} of the burst`)
  t.equal(l.take('src', 1), 1, 'the 21st asks to retry after 1 s')
})

t.test('the bucket refills at the rate', async (t) => {
  const { clock, limiter: l } = limiter(10)
  t.equal(l.take('src', 20), 0)
  t.ok(l.take('src', 1) > 0, 'empty')
  clock.now += 500
  t.equal(l.take('src', 5), 0, 'half a second later 5 messages pass')
  t.ok(l.take('src', 1) > 0, 'and no more')
  clock.now += 60_000
  t.equal(l.take('src', 20), 0, 'a long pause refills it completely')
  t.ok(l.take('src', 1) > 0, 'but never beyond the burst')
})

t.test('Retry-After is the whole seconds needed for the tokens asked', async (t) => {
  const { clock, limiter: l } = limiter(10)
  t.equal(l.take('src', 20), 0)
  t.equal(l.take('src', 15), 2, '15 messages at 10/s: 2 s')
  t.equal(l.take('src', 10), 1, '10 messages: 1 s')
  clock.now += 900
  t.equal(l.take('src', 10), 1, '9 tokens back, 1 missing: still rounds up to 1 s')
  clock.now += 100
  t.equal(l.take('src', 10), 0, 'after the second it passes')
})

t.test('a refused request takes nothing', async (t) => {
  const { limiter: l } = limiter(5)
  t.equal(l.take('src', 8), 0)
  t.ok(l.take('src', 5) > 0, '2 tokens left, 5 asked')
  t.equal(l.take('src', 2), 0, 'the 2 are still there')
})

t.test('sources have their own buckets', async (t) => {
  const { limiter: l } = limiter(1)
  t.equal(l.take('a', 2), 0)
  t.ok(l.take('a', 1) > 0)
  t.equal(l.take('b', 2), 0, 'source b is not slowed by source a')
})

t.test('rate 0 turns the limit off', async (t) => {
  const { limiter: l } = limiter(0)
  for (let i = 0; i < 5; i++) t.equal(l.take('src', 1_000_000), 0)
})

t.test('a request larger than the bucket passes when the bucket is full, then the source waits longer', async (t) => {
  const { clock, limiter: l } = limiter(10)
  t.equal(l.take('src', 50), 0, 'a 50-message batch never fits a 20-token bucket, but is not refused forever')
  t.equal(l.take('src', 1), 4, 'the bucket is 30 in debt: 3.1 s to wait for one token, rounded up')
  clock.now += 3000
  t.ok(l.take('src', 1) > 0, 'still in debt after 3 s')
  clock.now += 100
  t.equal(l.take('src', 1), 0, 'one token back after 3.1 s')
  t.ok(l.take('src', 50) > 0, 'the next large batch waits for a full bucket')
  clock.now += 2000
  t.equal(l.take('src', 50), 0, 'and passes once it is full again')
})
