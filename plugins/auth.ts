import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { safeEqual } from './sources.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** preHandler for admin routes: `Authorization: Bearer <ADMIN_TOKEN>`. */
    requireAdmin: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

export default fp(async (app) => {
  const token = app.config.ADMIN_TOKEN
  app.decorate('requireAdmin', async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers.authorization
    const given = header !== undefined && header.slice(0, 7).toLowerCase() === 'bearer ' ? header.slice(7).trim() : undefined
    if (token === undefined || given === undefined || !safeEqual(given, token)) {
      reply.header('www-authenticate', 'Bearer')
      return reply.code(401).send({
        statusCode: 401,
        error: 'Unauthorized',
        message: given === undefined ? 'missing admin token: send Authorization: Bearer <ADMIN_TOKEN>' : 'invalid admin token'
      })
    }
  })
}, { name: 'auth', dependencies: ['config'] })
