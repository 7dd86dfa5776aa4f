import fp from 'fastify-plugin'
import { connectRedis, redisTarget, type RedisClient } from '../src/redis-client.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Commands fail at once while Redis is unreachable, so a route can answer 503 instead of hanging. */
    redis: RedisClient
  }
}

export default fp(async (app) => {
  // One Redis, or a Redis Cluster (REDIS_CLUSTER_NODES): the same options for each node's connection.
  const redis = connectRedis(redisTarget(app.config), {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    // Keep trying while Redis is away, at most every 2 s.
    retryStrategy: (times: number) => Math.min(times * 100, 2000)
  })
  let lastWarning = 0
  redis.on('error', (err: Error) => {
    // A Redis outage raises an error per reconnect attempt: log one every 10 s.
    const now = Date.now()
    if (now - lastWarning > 10_000) {
      lastWarning = now
      app.log.warn({ err }, 'redis connection error')
    }
  })
  await new Promise<void>((resolve) => {
    if (redis.status === 'ready') return resolve()
    const timer = setTimeout(resolve, 5000)
    redis.once('ready', () => { clearTimeout(timer); resolve() })
  })
  if (redis.status !== 'ready') app.log.error('redis is not reachable yet; requests that need it answer 503 until it is')
  app.decorate<RedisClient>('redis', redis)
  app.addHook('onClose', async () => {
    await redis.quit().catch(() => redis.disconnect())
  })
}, { name: 'redis', dependencies: ['config'] })
