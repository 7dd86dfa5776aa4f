import fp from 'fastify-plugin'

/**
 * The admin API's JSON parser takes an empty body as no body. Fastify's own refuses it with 400
 * (FST_ERR_CTP_EMPTY_JSON_BODY), which turned away `Content-Type: application/json` sent with
 * nothing — as HTTP clients and generated SDKs do — on the POST routes that take no body (an
 * audience's sync, a write key's rotation, a replay of failures). A route whose body is required
 * still answers 400, from its schema. A body that is not empty is parsed exactly as Fastify does
 * (its own parser, prototype poisoning refused).
 *
 * Registered at the root before the routes, which inherit it. Ingestion does not: its routes'
 * encapsulated scope (src/routes/ingest.ts) removes every parser and takes every body its own way.
 */
export default fp(async (app) => {
  const json = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined)
    json(request, body as string, done)
  })
}, { name: 'empty-body' })
