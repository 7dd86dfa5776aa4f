import fp from 'fastify-plugin'
import { REQUEST_ID_HEADER } from '../src/http-options.js'

/**
 * App-wide: every answer — errors, 404s and 405s included, on every route — carries the
 * request's id (see `requestId` in src/http-options.ts), the one its log lines carry as `reqId`.
 */
export default fp(async (app) => {
  // In callback form and first at the root: it runs on every request of the hottest routes.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id)
    done()
  })
}, { name: 'http-hardening' })
