import type { IncomingMessage, ServerResponse } from 'node:http'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import audienceEnginePlugin from '../plugins/audience-engine.js'
import audiencesPlugin from '../plugins/audiences.js'
import authPlugin from '../plugins/auth.js'
import configPlugin from '../plugins/config.js'
import deliveryPlugin from '../plugins/delivery.js'
import destinationsPlugin from '../plugins/destinations.js'
import emptyBodyPlugin from '../plugins/empty-body.js'
import errorsPlugin, { frameworkErrors } from '../plugins/errors.js'
import httpHardeningPlugin from '../plugins/http-hardening.js'
import ingestBufferPlugin from '../plugins/ingest-buffer.js'
import ingestFailuresPlugin from '../plugins/ingest-failures.js'
import metricsPlugin from '../plugins/metrics.js'
import monitoringPlugin from '../plugins/monitoring.js'
import profilesPlugin from '../plugins/profiles.js'
import queuesPlugin from '../plugins/queues.js'
import rateLimitPlugin from '../plugins/rate-limit.js'
import redisPlugin from '../plugins/redis.js'
import regulationsPlugin from '../plugins/regulations.js'
import sourcesPlugin from '../plugins/sources.js'
import swaggerPlugin from '../plugins/swagger.js'
import workersPlugin from '../plugins/workers.js'
import type { Config } from './config.js'
import { FacebookSettingsSchema } from './facebook/settings.js'
import { LOG_SERIALIZERS, requestId, serverTimeouts } from './http-options.js'
import audienceRoutes, { AudienceConditionSchema, AudienceSchema } from './routes/audiences.js'
import destinationRoutes, { DestinationSchema } from './routes/destinations.js'
import healthRoutes from './routes/health.js'
import regulationRoutes from './routes/regulations.js'
import ingestFailureRoutes from './routes/ingest-failures.js'
import ingestRoutes from './routes/ingest.js'
import oauthRoutes from './routes/oauth.js'
import queueRoutes from './routes/queues.js'
import { SHARED_SCHEMAS } from './routes/schemas.js'
import sourceRoutes from './routes/sources.js'
import { workCounts, type WorkCounts } from './work-counter.js'

export interface BuildOptions {
  config: Config
  logger?: FastifyServerOptions['logger']
  /** A logger made from `loggerOptions` instead (the entry point's: it logs before the app exists). */
  loggerInstance?: FastifyBaseLogger
  /** The clock of the audience engine and the transform (tests move time forward with it). */
  now?: () => number
}

declare module 'fastify' {
  interface FastifyInstance {
    now: () => number
    /** Requests, flushes and jobs started and finished: what a shutdown drained. */
    work: WorkCounts
  }
}

/** Pino redaction: write keys, tokens and match keys never reach a log line. */
export const LOG_REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  '*.accessToken',
  '*.access_token',
  '*.writeKey'
]

/** Pino options: redaction, and request lines without query strings, whatever the caller adds. */
export function loggerOptions (config: Config, logger: BuildOptions['logger']): FastifyServerOptions['logger'] {
  if (logger === false) return false
  const given = typeof logger === 'object' ? logger : {}
  return { level: config.LOG_LEVEL, redact: LOG_REDACT, ...given, serializers: { ...LOG_SERIALIZERS, ...given.serializers } }
}

/**
 * The app for a role: `api` serves HTTP, `worker` consumes queues (and serves only /health,
 * /ready and /metrics), `all` does both.
 */
export async function buildApp ({ config, logger, loggerInstance, now = Date.now }: BuildOptions): Promise<FastifyInstance> {
  const app = Fastify({
    ...(loggerInstance === undefined ? { logger: loggerOptions(config, logger) } : { loggerInstance }),
    routerOptions: { ignoreTrailingSlash: true },
    // Ingestion enforces its own limit (after decompression); admin bodies are small.
    bodyLimit: 1024 * 1024,
    // Off unless TRUST_PROXY says which proxies to believe: X-Forwarded-For from anyone else
    // would let a client choose its own request.ip.
    trustProxy: config.trustProxy,
    // The request id: an incoming safe x-request-id, else a random one; the log's reqId and
    // the x-request-id of every answer (plugins/http-hardening.ts).
    requestIdHeader: false,
    genReqId: requestId,
    frameworkErrors,
    ...serverTimeouts(config)
  }).withTypeProvider<TypeBoxTypeProvider>()

  await app.register(configPlugin, { config })
  app.decorate('now', now)
  const work = workCounts()
  app.decorate('work', work)
  // Every request, answered or not (a 404, a 503 while closing), until its response is done.
  const answering = new Set<ServerResponse>()
  app.server.on('request', (_request: IncomingMessage, response: ServerResponse) => {
    work.requests.started++
    answering.add(response)
    response.once('close', () => {
      work.requests.finished++
      answering.delete(response)
    })
  })
  // Closing: the answers still to come close their connections. A kept-alive connection that falls
  // idle after the close began would hold the shutdown until its client dropped it (Node's agent
  // after 5 s, a load balancer after minutes), past SHUTDOWN_TIMEOUT_MS.
  app.addHook('preClose', async () => {
    for (const response of answering) if (!response.headersSent) response.setHeader('connection', 'close')
  })
  await app.register(httpHardeningPlugin)
  // Before every route: it times each by its pattern (an onRoute hook sees only later routes).
  await app.register(metricsPlugin)
  await app.register(errorsPlugin)
  await app.register(emptyBodyPlugin)
  for (const schema of [...SHARED_SCHEMAS, FacebookSettingsSchema, DestinationSchema, AudienceConditionSchema, AudienceSchema]) app.addSchema(schema)
  await app.register(swaggerPlugin)
  await app.register(redisPlugin)
  await app.register(healthRoutes)

  await app.register(queuesPlugin)
  await app.register(ingestFailuresPlugin)
  await app.register(sourcesPlugin)
  await app.register(destinationsPlugin)
  await app.register(profilesPlugin)
  await app.register(audiencesPlugin)
  if (config.ROLE !== 'api') await app.register(workersPlugin)
  // Stage order: the audience engine (profiles, history) runs before routing to destinations.
  await app.register(audienceEnginePlugin)
  await app.register(deliveryPlugin)
  await app.register(regulationsPlugin)
  // /metrics in every role (a worker's own metrics: Graph requests, syncs); the dashboard in the API roles.
  await app.register(monitoringPlugin)

  if (config.ROLE !== 'worker') {
    await app.register(ingestBufferPlugin)
    await app.register(rateLimitPlugin)
    await app.register(authPlugin)
    await app.register(ingestRoutes)
    await app.register(sourceRoutes)
    await app.register(ingestFailureRoutes)
    await app.register(regulationRoutes)
    await app.register(destinationRoutes)
    await app.register(audienceRoutes)
    await app.register(oauthRoutes)
    await app.register(queueRoutes)
  }
  return app
}
