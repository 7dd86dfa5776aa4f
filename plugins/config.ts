import fp from 'fastify-plugin'
import type { Config } from '../src/config.js'
import { redisKeys, type RedisKeys } from '../src/keys.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    keys: RedisKeys
  }
}

export default fp<{ config: Config }>(async (app, { config }) => {
  app.decorate('config', config)
  app.decorate('keys', redisKeys(config.REDIS_PREFIX, { cluster: config.REDIS_CLUSTER_NODES !== undefined, ingestPartitions: config.ingestPartitions }))
}, { name: 'config' })
