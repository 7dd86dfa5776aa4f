import { readFileSync } from 'node:fs'
import t from 'tap'
import { openapiDocument, OPENAPI_PATH } from '../scripts/openapi-document.js'
import { startTestRedis } from './helpers/redis.js'

t.test('openapi/openapi.json is the document the routes produce (run `npm run openapi` after a route change)', async (t) => {
  const redis = await startTestRedis()
  t.teardown(() => redis.close())
  const current = await openapiDocument(redis.url)
  const committed = readFileSync(OPENAPI_PATH, 'utf8')
  t.equal(committed, current, 'the committed document is out of date: run `npm run openapi`')
})

t.test('every route documents its tags and every status code it sends', async (t) => {
  const document = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8'))
  for (const [path, methods] of Object.entries<Record<string, any>>(document.paths)) {
    for (const [method, operation] of Object.entries<any>(methods)) {
      t.ok(operation.tags?.length > 0, `${method.toUpperCase()} ${path} has a tag`)
      t.ok(operation.responses?.['200'] ?? operation.responses?.['201'] ?? operation.responses?.['202'] ?? operation.responses?.['204'] ?? operation.responses?.['302'], `${method.toUpperCase()} ${path} documents its success`)
      if (path.startsWith('/v1/') && method === 'post') t.ok(operation.responses['400'], `${method.toUpperCase()} ${path} documents its 400`)
    }
  }
})
