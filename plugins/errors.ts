import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { pathOnly, REQUEST_ID_HEADER } from '../src/http-options.js'

/**
 * Admin API errors: `{statusCode, error, message}`. A 4xx names what is wrong; a 5xx says little
 * to the client and everything to the log. (The ingestion routes answer Segment's shape instead,
 * from their own handler.)
 */
export default fp(async (app) => {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const statusCode = err.statusCode !== undefined && err.statusCode >= 400 ? err.statusCode : 500
    // A command that failed because Redis is away (the connection fails fast) is an outage the
    // client should retry, not a bug: 503 with Retry-After, as ingestion answers.
    if (statusCode === 500 && app.hasDecorator('redis') && app.redis.status !== 'ready') {
      request.log.warn({ err }, 'request failed: redis is unreachable')
      reply.header('retry-after', '5')
      return reply.code(503).send({ statusCode: 503, error: STATUS_CODES[503], message: 'storage (Redis) is unreachable; retry later' })
    }
    if (statusCode >= 500) {
      request.log.error({ err }, 'request failed')
      const unavailable = statusCode === 503
      return reply.code(statusCode).send({
        statusCode,
        error: STATUS_CODES[statusCode],
        message: unavailable ? err.message : 'internal error; see the server log'
      })
    }
    return reply.code(statusCode).send({ statusCode, error: STATUS_CODES[statusCode], message: err.message })
  })

  // Every route's URL with its methods, so that a known path called with another method is
  // answered 405 with Allow (RFC 9110), not 404. Registered before any route: onRoute hooks see
  // only the routes added after them (Fastify's HEAD twins of GET routes included).
  const known = new Map<string, KnownPath>()
  app.addHook('onRoute', (route) => {
    let path = known.get(route.url)
    if (path === undefined) known.set(route.url, path = { pattern: routePattern(route.url), methods: new Set(), ingestion: false })
    for (const method of Array.isArray(route.method) ? route.method : [route.method]) path.methods.add(method)
    if ((route.schema as { tags?: string[] } | undefined)?.tags?.includes('ingestion') === true) path.ingestion = true
  })

  app.setNotFoundHandler((request, reply) => {
    // Timed here: a request no route matched runs no route's hooks (plugins/metrics.ts).
    app.metrics.timeUnmatched(reply)
    const path = pathOnly(request.url)
    const allowed = allowedMethods(known, path)
    if (allowed === undefined || allowed.methods.includes(request.method)) {
      return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no route ${request.method} ${path}` })
    }
    // Ingestion paths say `Allow: POST` (DESIGN.md): their OPTIONS is a browser's preflight, not
    // a method a client calls.
    const methods = allowed.ingestion ? allowed.methods.filter((method) => method !== 'OPTIONS') : allowed.methods
    const message = `method ${request.method} is not allowed on ${path} (allowed: ${methods.join(', ')})`
    reply.code(405).header('allow', methods.join(', '))
    if (!allowed.ingestion) return reply.send({ statusCode: 405, error: STATUS_CODES[405], message })
    // Ingestion's shape, and its CORS: a page on any origin may read every ingestion answer.
    return reply.header('access-control-allow-origin', '*').send({ success: false, error: message })
  })
}, { name: 'errors', dependencies: ['metrics'] })

interface KnownPath {
  pattern: RegExp
  methods: Set<string>
  /** Ingestion routes answer errors in Segment's shape (`{success: false, error}`). */
  ingestion: boolean
}

const METHOD_ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

/** The methods routed for a concrete path (every route URL that matches it), or undefined. */
function allowedMethods (known: ReadonlyMap<string, KnownPath>, rawPath: string): { methods: string[], ingestion: boolean } | undefined {
  let path = rawPath
  try {
    path = decodeURI(rawPath)
  } catch {}
  const methods = new Set<string>()
  let ingestion = false
  for (const route of known.values()) {
    if (!route.pattern.test(path)) continue
    for (const method of route.methods) methods.add(method)
    ingestion ||= route.ingestion
  }
  if (methods.size === 0) return undefined
  const rank = (method: string) => METHOD_ORDER.includes(method) ? METHOD_ORDER.indexOf(method) : METHOD_ORDER.length
  return { methods: [...methods].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)), ingestion }
}

/**
 * A route URL in find-my-way's syntax as a RegExp over paths: `:param` (up to a `/`, or to a
 * `-` or `.` that follows it), a param's `(regex)` (taken as any value: at worst a 405 where the
 * router would say 404), `::` for a colon, a last `*`; a trailing slash optional, as the app's
 * router is told (ignoreTrailingSlash).
 */
export function routePattern (url: string): RegExp {
  let source = ''
  for (let i = 0; i < url.length; i++) {
    const char = url[i]
    if (char === ':' && url[i + 1] === ':') {
      source += ':'
      i++
    } else if (char === ':') {
      while (i + 1 < url.length && !'/-.('.includes(url[i + 1])) i++
      if (url[i + 1] === '(') {
        let depth = 0
        do {
          i++
          if (url[i] === '\\') i++
          else if (url[i] === '(') depth++
          else if (url[i] === ')') depth--
        } while (depth > 0 && i < url.length)
      }
      source += '[^/]+?'
    } else if (char === '*') {
      source += '.*'
    } else {
      source += char.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    }
  }
  if (source.length > 1 && source.endsWith('/')) source = source.slice(0, -1)
  return new RegExp(`^${source}/?$`)
}

/**
 * Fastify's `frameworkErrors`: a URL the router cannot decode (400) or a parameter over its
 * length (414) is answered before any route or hook runs; in the admin shape, with the request id.
 */
export function frameworkErrors (err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const statusCode = err.statusCode !== undefined && err.statusCode >= 400 ? err.statusCode : 400
  reply.header(REQUEST_ID_HEADER, request.id).code(statusCode).send({ statusCode, error: STATUS_CODES[statusCode], message: err.message })
}

/** An error with an HTTP status, for handlers to throw. */
export function httpError (statusCode: number, message: string): FastifyError {
  const err = new Error(message) as FastifyError
  err.statusCode = statusCode
  return err
}
