import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyRequest, FastifyServerOptions } from 'fastify'
import type { Config } from './config.js'

export const REQUEST_ID_HEADER = 'x-request-id'

// What a proxy or a client may set as a request id and we echo in a header and write to logs: no
// spaces, quotes or line breaks, not long.
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * Fastify's `genReqId`: the incoming `x-request-id` when it is a safe token (a proxy's or a
 * client's id ties their logs to ours), else a random one. Fastify's own `requestIdHeader`
 * would take any value as it comes.
 */
export function requestId (req: IncomingMessage): string {
  const given = req.headers[REQUEST_ID_HEADER]
  return typeof given === 'string' && SAFE_REQUEST_ID.test(given) ? given : randomUUID()
}

/** A URL without its query string: tokens arrive there (OAuth's `code`, `?access_token=`). */
export function pathOnly (url: string): string {
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}

/**
 * Pino serialisers of the request log lines ("incoming request", 5xx errors): Fastify's, but the
 * URL without its query string.
 */
export const LOG_SERIALIZERS = {
  req (request: FastifyRequest) {
    const version = request.headers?.['accept-version']
    return {
      method: request.method,
      url: pathOnly(request.url),
      version: typeof version === 'string' ? version : undefined,
      host: request.host,
      remoteAddress: request.ip,
      remotePort: request.socket?.remotePort
    }
  }
}

/**
 * Node's HTTP server timeouts (see HTTP_* in config.ts). Fastify sets `connectionTimeout`,
 * `requestTimeout` and `keepAliveTimeout` itself; Node's `headersTimeout` and the interval at
 * which it looks for requests past their time are options of `http.createServer`. That interval
 * is 30 s by default, which would let a 10 s timeout run to 40 s: a tenth of the shortest one,
 * at most a second (a walk over the connections receiving a request, in C++).
 */
export function serverTimeouts (config: Config): Pick<FastifyServerOptions, 'connectionTimeout' | 'requestTimeout' | 'keepAliveTimeout'> & { http: { requestTimeout: number, headersTimeout: number, connectionsCheckingInterval: number } } {
  const limits = [config.HTTP_REQUEST_TIMEOUT_MS, config.HTTP_HEADERS_TIMEOUT_MS].filter((ms) => ms > 0)
  const connectionsCheckingInterval = limits.length === 0 ? 30_000 : Math.min(1000, Math.max(10, Math.floor(Math.min(...limits) / 10)))
  return {
    connectionTimeout: config.HTTP_CONNECTION_TIMEOUT_MS,
    requestTimeout: config.HTTP_REQUEST_TIMEOUT_MS,
    keepAliveTimeout: config.HTTP_KEEP_ALIVE_TIMEOUT_MS,
    http: {
      requestTimeout: config.HTTP_REQUEST_TIMEOUT_MS,
      headersTimeout: config.HTTP_HEADERS_TIMEOUT_MS,
      connectionsCheckingInterval
    }
  }
}
