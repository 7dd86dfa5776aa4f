import fp from 'fastify-plugin'
import type { Result } from 'ioredis'
import type { RedisClient } from '../src/redis-client.js'
import type { RedisKeys } from '../src/keys.js'

// A source's token bucket, in Redis so that every API process (PROCESSES, replicas) spends the
// same one: `rate` messages a second, bursts of twice that. Redis's clock, not the processes'.
// A request takes the tokens it still lacks (ARGV[2]) and, when there is room, a lease for the
// process's next requests (ARGV[3]); a refused request takes nothing. A request larger than the
// bucket passes when the bucket is full and leaves it in debt. Answers {granted, seconds to wait}.
const TAKE = `
redis.replicate_commands()
local rate = tonumber(ARGV[1])
local need = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local capacity = rate * 2
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate / 1000)
local required = math.min(need, capacity)
if tokens < required then
  return { 0, math.max(1, math.ceil((required - tokens) / rate)) }
end
local granted = need + math.max(0, math.min(lease, math.floor(tokens - need)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
-- A full bucket is the same as none.
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) * 1000 / rate) + 1000)
return { granted, 0 }`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    rateLimitTake(key: string, rate: number, need: number, lease: number): Result<[number, number], Context>
  }
}

/** How long a process may hold leased tokens: unspent, they are lost to the other processes. */
const LEASE_MS = 1000

/**
 * Per-source rate limits shared by every API process through Redis (TAKE). A process takes tokens
 * in leases of a tenth of a second's rate and spends them in memory, so most requests make no
 * Redis call. Together the processes pass no more than one bucket would; a lease a process leaves
 * unspent can only make the limit stricter, for a second at most.
 */
export class SharedRateLimiter {
  private readonly leases = new Map<string, { tokens: number, expires: number }>()
  /** Per source, the Redis call in flight: the process's other requests wait for it. */
  private readonly taking = new Map<string, Promise<unknown>>()
  private readonly leaseTokens: number

  constructor (private readonly redis: RedisClient, private readonly keys: RedisKeys, private readonly rate: number) {
    this.leaseTokens = Math.floor(rate / 10)
    redis.defineCommand('rateLimitTake', { numberOfKeys: 1, lua: TAKE })
  }

  /**
   * Takes `count` tokens for the source: 0 when allowed, else the whole seconds to wait. Without
   * a promise when the process's lease covers it (nearly always).
   */
  take (sourceId: string, count: number): number | Promise<number> {
    if (this.rate <= 0) return 0
    if (this.spendLease(sourceId, count)) return 0
    return this.takeShared(sourceId, count)
  }

  /** The process's lease for the source, unless it has expired. */
  private lease (sourceId: string): { tokens: number, expires: number } | undefined {
    const lease = this.leases.get(sourceId)
    return lease !== undefined && lease.expires > Date.now() ? lease : undefined
  }

  private spendLease (sourceId: string, count: number): boolean {
    const lease = this.lease(sourceId)
    if (lease === undefined || lease.tokens < count) return false
    lease.tokens -= count
    return true
  }

  private async takeShared (sourceId: string, count: number): Promise<number> {
    let inFlight = this.taking.get(sourceId)
    while (inFlight !== undefined) {
      await inFlight
      if (this.spendLease(sourceId, count)) return 0
      inFlight = this.taking.get(sourceId)
    }
    const held = this.lease(sourceId)?.tokens ?? 0
    const call = this.redis.rateLimitTake(this.keys.rateLimit(sourceId), this.rate, count - held, this.leaseTokens)
    this.taking.set(sourceId, call.catch(() => {}))
    try {
      const [granted, wait] = await call
      if (granted === 0) return wait
      if (this.leases.size > 100_000) this.leases.clear()
      this.leases.set(sourceId, { tokens: held + granted - count, expires: Date.now() + LEASE_MS })
      return 0
    } catch {
      // Redis unreachable: the limit cannot be read, and storing the messages will answer 503.
      return 0
    } finally {
      this.taking.delete(sourceId)
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    rateLimiter: SharedRateLimiter
  }
}

export default fp(async (app) => {
  app.decorate('rateLimiter', new SharedRateLimiter(app.redis, app.keys, app.config.RATE_LIMIT_EVENTS_PER_SECOND))
}, { name: 'rate-limit', dependencies: ['redis'] })
