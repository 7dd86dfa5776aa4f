import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { startTestRedis } from '../test/helpers/redis.js'

export const OPENAPI_PATH = new URL('../openapi/openapi.json', import.meta.url)

/** The OpenAPI document of the full app (ROLE all), as committed under openapi/. */
export async function openapiDocument (redisUrl?: string): Promise<string> {
  const redis = redisUrl === undefined ? await startTestRedis() : undefined
  const config = loadConfig({ REDIS_URL: redisUrl ?? redis!.url, LOG_LEVEL: 'silent', ADMIN_TOKEN: 'openapi-document-token', SECRET_KEY: 'openapi-document-secret-key-0123456789abcdef', ROLE: 'all' })
  const app = await buildApp({ config })
  try {
    await app.ready()
    return JSON.stringify(app.swagger(), null, 2) + '\n'
  } finally {
    await app.close()
    await redis?.close()
  }
}
