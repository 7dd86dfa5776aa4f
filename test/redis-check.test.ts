import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { findOnPath, freePort, startRedisServer, type RedisServerOptions } from '../src/local-redis.js'
import { judgeRedisSettings, readRedisSettings, redisUrlForLog } from '../src/redis-check.js'

const binary = findOnPath('redis-server')
const SKIP = binary === undefined ? 'needs redis-server on PATH' : false

/** A redis-server of this test's own, configured as given. */
async function redisWith (t: Test, options: Omit<RedisServerOptions, 'binary' | 'dir'> = {}): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'relay-check-'))
  const server = await startRedisServer({ binary: binary!, dir, ...options })
  t.teardown(async () => { await server.stop(); rmSync(dir, { recursive: true, force: true }) })
  return server.url
}

t.test('a Redis as the service wants it: no eviction, AOF everysec — nothing to say', { skip: SKIP }, async (t) => {
  const settings = await readRedisSettings(await redisWith(t))
  t.same(settings, { maxmemoryPolicy: 'noeviction', appendonly: true, appendfsync: 'everysec', unread: [] })
  t.same(judgeRedisSettings(settings, false), { refusal: undefined, warnings: [] })
})

t.test('a Redis that evicts keys is refused, naming the policy and REDIS_ALLOW_EVICTION; allowed, it is a warning', { skip: SKIP }, async (t) => {
  const settings = await readRedisSettings(await redisWith(t, { maxmemoryPolicy: 'volatile-lru' }))
  t.equal(settings.maxmemoryPolicy, 'volatile-lru')
  const refused = judgeRedisSettings(settings, false)
  t.match(refused.refusal, /maxmemory-policy is "volatile-lru".*BullMQ loses jobs.*maxmemory-policy noeviction.*REDIS_ALLOW_EVICTION=true/)
  t.same(refused.warnings, [])
  const allowed = judgeRedisSettings(settings, true)
  t.equal(allowed.refusal, undefined)
  t.match(allowed.warnings, [/maxmemory-policy is "volatile-lru".*Starting anyway because REDIS_ALLOW_EVICTION=true/])
})

t.test('AOF off, or fsync left to the system: a warning', { skip: SKIP }, async (t) => {
  const off = await readRedisSettings(await redisWith(t, { appendonly: false }))
  t.equal(off.appendonly, false)
  t.match(judgeRedisSettings(off, false), { refusal: undefined, warnings: [/without its AOF \(appendonly no\).*appendonly yes/] })
  const lazy = await readRedisSettings(await redisWith(t, { extraArgs: ['--appendfsync', 'no'] }))
  t.equal(lazy.appendfsync, 'no')
  t.match(judgeRedisSettings(lazy, false).warnings, [/appendfsync is "no".*appendfsync everysec/])
})

t.test('CONFIG refused, as managed services do: appendfsync is unknown and said so; INFO still gives the rest', { skip: SKIP }, async (t) => {
  const url = await redisWith(t, { extraArgs: ['--user', 'default', 'on', 'nopass', '~*', '&*', '+@all', '-config'] })
  const settings = await readRedisSettings(url)
  t.match(settings, { maxmemoryPolicy: 'noeviction', appendonly: true, appendfsync: undefined, unread: [/^appendfsync \(CONFIG GET: NOPERM/] })
  t.match(judgeRedisSettings(settings, false), { refusal: undefined, warnings: [/Could not read Redis's settings.*appendfsync.*noeviction and appendonly yes/] })
})

t.test('INFO refused as well: nothing known, nothing refused, one warning listing what was not read', { skip: SKIP }, async (t) => {
  const url = await redisWith(t, { maxmemoryPolicy: 'allkeys-lru', extraArgs: ['--user', 'default', 'on', 'nopass', '~*', '&*', '+@all', '-config', '-info'] })
  const settings = await readRedisSettings(url)
  t.equal(settings.unread.length, 3)
  const verdict = judgeRedisSettings(settings, false)
  t.equal(verdict.refusal, undefined, 'a policy it cannot read is not refused')
  t.match(verdict.warnings, [/maxmemory-policy \(INFO memory: NOPERM.*appendonly \(INFO persistence: NOPERM.*appendfsync/])
})

t.test('an unreachable Redis: unknown, said so, and no exception', async (t) => {
  const settings = await readRedisSettings(`redis://127.0.0.1:${await freePort()}`, 1000)
  t.match(settings, { maxmemoryPolicy: undefined, unread: [/^Redis is unreachable/] })
  t.match(judgeRedisSettings(settings, false).warnings, [/Redis is unreachable/])
})

t.test('a password in REDIS_URL is used, and never logged', { skip: SKIP }, async (t) => {
  const url = await redisWith(t, { extraArgs: ['--requirepass', 's3cret-pass'] })
  const port = new URL(url).port
  t.match(await readRedisSettings(`redis://:s3cret-pass@127.0.0.1:${port}`), { maxmemoryPolicy: 'noeviction', unread: [] })
  t.match(await readRedisSettings(url), { unread: [/NOAUTH/] }, 'without it: unknown, and why')
  t.equal(redisUrlForLog(`redis://:s3cret-pass@127.0.0.1:${port}`), `redis://127.0.0.1:${port}`)
  t.equal(redisUrlForLog('rediss://relay:s3cret-pass@cache.example:6380/2?password=s3cret-pass'), 'rediss://relay@cache.example:6380/2', 'user and database kept; password and query dropped')
})
