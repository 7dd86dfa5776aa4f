import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { safeEqual } from './sources.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** preHandler for admin routes: `Authorization: Bearer <ADMIN_TOKEN>`. */
    requireAdmin: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

/**
 * The admin token a request presents: `Authorization: Bearer <token>`, or — where a browser must
 * be able to log in (the queue dashboard) — the password of HTTP Basic.
 */
export function presentedAdminToken (header: string | undefined, options: { basic?: boolean } = {}): string | undefined {
  if (header === undefined) return undefined
  if (header.slice(0, 7).toLowerCase() === 'bearer ') return header.slice(7).trim()
  if (options.basic === true && header.slice(0, 6).toLowerCase() === 'basic ') {
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8')
    return decoded.slice(decoded.indexOf(':') + 1)
  }
  return undefined
}

/** Constant-time check of a presented admin token. */
export function isAdminToken (given: string | undefined, token: string | undefined): boolean {
  return token !== undefined && given !== undefined && safeEqual(given, token)
}

export default fp(async (app) => {
  const token = app.config.ADMIN_TOKEN
  app.decorate('requireAdmin', async (request: FastifyRequest, reply: FastifyReply) => {
    const given = presentedAdminToken(request.headers.authorization)
    if (!isAdminToken(given, token)) {
      reply.header('www-authenticate', 'Bearer')
      return reply.code(401).send({
        statusCode: 401,
        error: 'Unauthorized',
        message: given === undefined ? 'missing admin token: send Authorization: Bearer <ADMIN_TOKEN>' : 'invalid admin token'
      })
    }
  })
}, { name: 'auth', dependencies: ['config'] })
