import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { REQUEST_ID_HEADER } from '../src/http-options.js'

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
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no route ${request.method} ${request.url.split('?')[0]}` })
  })
}, { name: 'errors' })

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
