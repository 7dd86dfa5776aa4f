import type { FastifyPluginAsync } from 'fastify'
import { Type } from 'typebox'
import { lazyRequestLogger } from '../request-logger.js'

const Health = Type.Object({ status: Type.String() })

// Probes come every few seconds from load balancers and orchestrators: no "incoming request" and
// "request completed" lines at info for them, only warnings (Redis unreachable) and errors.
const probeLogger = lazyRequestLogger('warn')

const health: FastifyPluginAsync = async (app) => {
  app.get('/health', {
    childLoggerFactory: probeLogger,
    schema: { tags: ['health'], summary: 'The process is up', response: { 200: Health } }
  }, async () => ({ status: 'ok' }))

  app.get('/ready', {
    childLoggerFactory: probeLogger,
    schema: {
      tags: ['health'],
      summary: 'Redis is reachable',
      response: { 200: Health, 503: Type.Object({ status: Type.String(), message: Type.String() }) }
    }
  }, async (request, reply) => {
    try {
      await app.redis.ping()
      return { status: 'ready' }
    } catch (err) {
      request.log.warn({ err }, 'not ready')
      return reply.code(503).send({ status: 'unavailable', message: 'Redis is unreachable' })
    }
  })
}

export default health
