import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'
import { htmlPageHeaders } from './http-hardening.js'

export const OPENAPI_INFO = {
  title: 'Conversion Relay',
  description: 'Segment-compatible ingestion, Engage-style audiences and Meta offline conversions, self-hosted.',
  version: '0.1.0'
}

/** OpenAPI from the routes' own schemas; UI at /docs, JSON at /openapi.json. */
export default fp(async (app) => {
  await app.register(swagger, {
    // Shared schemas keep their $id as the component name.
    refResolver: { buildLocalReference: (json, baseUri, fragment, i) => String(json.$id ?? `def-${i}`) },
    openapi: {
      openapi: '3.1.0',
      info: OPENAPI_INFO,
      tags: [
        { name: 'ingestion', description: 'Segment HTTP Tracking API (write key)' },
        { name: 'sources', description: 'Sources and write keys (admin)' },
        { name: 'destinations', description: 'Facebook Offline Conversions destinations, tokens, stats and dead letters (admin)' },
        { name: 'audiences', description: 'Engage-style audiences synced as user properties (admin)' },
        { name: 'health', description: 'Liveness and readiness' },
        { name: 'monitoring', description: 'Metrics and the queue dashboard (/admin/queues)' }
      ],
      components: {
        securitySchemes: {
          writeKey: { type: 'http', scheme: 'basic', description: 'Segment write key as the user name, empty password' },
          adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' }
        }
      }
    }
  })
  // The UI's pages and assets in a scope of their own: HTML page headers there, not on the API.
  await app.register(async (docs) => {
    await htmlPageHeaders(docs)
    await docs.register(swaggerUi, { routePrefix: '/docs' })
  })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
}, { name: 'swagger' })
