import type { FastifyPluginAsync } from 'fastify'
import { Type } from 'typebox'

const Health = Type.Object({ status: Type.String() })

const health: FastifyPluginAsync = async (app) => {
  app.get('/health', {
    schema: { tags: ['health'], summary: 'The process is up', response: { 200: Health } }
  }, async () => ({ status: 'ok' }))

  app.get('/ready', {
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
