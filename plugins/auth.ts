import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { safeEqual } from './sources.js'

/**
 * How the settings web app (there is none yet) recognises its admin session: it reads the
 * request's session cookie and answers whether an admin is signed in. It is registered once, with
 * `app.setAdminSessionCheck`, by the plugin that issues the sessions.
 */
export type AdminSessionCheck = (request: FastifyRequest) => boolean | Promise<boolean>

declare module 'fastify' {
  interface FastifyInstance {
    /** preHandler for admin routes: `Authorization: Bearer <ADMIN_TOKEN>`. */
    requireAdmin: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
    /**
     * For the admin pages a browser is sent to (GETs that change nothing but start a flow, such as
     * "Connect to Facebook"): the Bearer token, the admin token as the HTTP Basic password (the
     * browser's own login prompt), or the web app's admin session once there is one.
     */
    requireAdminInBrowser: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
    /**
     * Lets requireAdminInBrowser accept the web app's admin session. Only there: the JSON routes
     * take it once the web app checks CSRF on them (DESIGN.md: the session cookie "with CSRF
     * protection"); a GET that only redirects needs none.
     */
    setAdminSessionCheck: (check: AdminSessionCheck) => void
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
  let sessionCheck: AdminSessionCheck | undefined

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

  app.decorate('requireAdminInBrowser', async (request: FastifyRequest, reply: FastifyReply) => {
    if (isAdminToken(presentedAdminToken(request.headers.authorization, { basic: true }), token)) return
    if (sessionCheck !== undefined && await sessionCheck(request)) return
    // A browser without a session asks for the token (as the password; any user name).
    reply.header('www-authenticate', 'Basic realm="conversion-relay admin", charset="UTF-8"')
    return reply.code(401).send({
      statusCode: 401,
      error: 'Unauthorized',
      message: 'the admin token is required: Authorization: Bearer <ADMIN_TOKEN>, or as the HTTP Basic password in a browser'
    })
  })

  app.decorate('setAdminSessionCheck', (check: AdminSessionCheck) => {
    if (sessionCheck !== undefined) throw new Error('an admin session check is already registered')
    sessionCheck = check
  })
}, { name: 'auth', dependencies: ['config'] })
