import type { FastifyServerOptions } from 'fastify'
import type { Config } from './config.js'

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
