import Fastify from 'fastify'
import secureJson from 'secure-json-parse'
import { checkMessage, isPlainObject } from '../src/segment/message.js'

/**
 * The baseline for bench/ingest.ts: a bare Fastify route that only parses and validates the same
 * bodies (same parser, same per-message validation), and stores nothing.
 */
const app = Fastify({ logger: false })
app.removeAllContentTypeParsers()
app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: 4 * 1024 * 1024 }, (request, body, done) => {
  try { done(null, secureJson.parse(body as Buffer, undefined, { protoAction: 'error', constructorAction: 'error' })) } catch (err) { done(err as Error, undefined) }
})
app.post('/v1/track', async (request, reply) => {
  const checked = checkMessage(request.body, 'track')
  return reply.code(checked.ok ? 200 : 400).send(checked.ok ? { success: true } : { success: false, error: checked.error })
})
app.post('/v1/batch', async (request, reply) => {
  const body = request.body as Record<string, unknown>
  const items = isPlainObject(body) && Array.isArray(body.batch) ? body.batch : []
  let rejected = 0
  for (const item of items) if (!checkMessage(item).ok) rejected++
  return reply.send(rejected > 0 ? { success: true, rejected } : { success: true })
})
const url = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' })
process.send?.({ url })
