import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { loadConfig, type Config } from '../../src/config.js'
import { startTestRedis, type TestRedis } from './redis.js'

export const ADMIN_TOKEN = 'test-admin-token-0123456789'

export interface TestContext {
  app: FastifyInstance
  config: Config
  redis: TestRedis
  /** Base URL when `listen` was asked for. */
  url: string
  admin: (method: string, url: string, body?: unknown) => Promise<{ statusCode: number, json: any }>
  createSource: (name?: string) => Promise<{ id: string, writeKey: string }>
}

interface Teardown { teardown: (fn: () => unknown) => void }

/**
 * The whole service against a Redis of the test's own, closed in teardown. `env` overrides the
 * configuration exactly as environment variables would.
 */
export async function buildTestApp (t: Teardown, options: { env?: Record<string, string>, listen?: boolean, redis?: TestRedis, now?: () => number } = {}): Promise<TestContext> {
  const redis = options.redis ?? await startTestRedis()
  const config = loadConfig({
    REDIS_URL: redis.url,
    ...(redis.clusterNodes === undefined ? {} : { REDIS_CLUSTER_NODES: redis.clusterNodes }),
    REDIS_PREFIX: redis.prefix,
    ADMIN_TOKEN,
    SECRET_KEY: 'test-secret-key-0123456789abcdef0123456789',
    LOG_LEVEL: 'silent',
    ...options.env
  })
  const app = await buildApp({ config, now: options.now })
  let url = ''
  if (options.listen === true) url = await app.listen({ port: 0, host: '127.0.0.1' })
  else await app.ready()
  t.teardown(async () => {
    await app.close()
    if (options.redis === undefined) await redis.close()
  })
  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await app.inject({
      method: method as 'GET',
      url: path,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      ...(body === undefined ? {} : { payload: body as object })
    })
    return { statusCode: response.statusCode, json: response.body === '' ? undefined : response.json() }
  }
  return {
    app,
    config,
    redis,
    url,
    admin,
    createSource: async (name = 'test source') => {
      const { statusCode, json } = await admin('POST', '/v1/sources', { name })
      if (statusCode !== 201) throw new Error(`could not create a source: ${statusCode} ${JSON.stringify(json)}`)
      return json
    }
  }
}

export function basicAuth (writeKey: string, colon = true): string {
  return `Basic ${Buffer.from(colon ? `${writeKey}:` : writeKey).toString('base64')}`
}
