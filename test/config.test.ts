import t from 'tap'
import { ConfigError, loadConfig } from '../src/config.js'

t.test('defaults: what DESIGN.md documents', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    PORT: 3000,
    HOST: '127.0.0.1',
    ROLE: 'all',
    REDIS_PREFIX: 'relay',
    FACEBOOK_GRAPH_URL: 'https://graph.facebook.com',
    METRICS_PUBLIC: false,
    MAX_MESSAGE_BYTES: 32 * 1024,
    MAX_BATCH_MESSAGES: 2500,
    MAX_REQUEST_BYTES: 4 * 1024 * 1024,
    dedupWindowMs: 24 * 3600 * 1000,
    writeKeyGraceMs: 24 * 3600 * 1000,
    HTTP_REQUEST_TIMEOUT_MS: 30_000,
    HTTP_HEADERS_TIMEOUT_MS: 10_000,
    HTTP_CONNECTION_TIMEOUT_MS: 60_000,
    HTTP_KEEP_ALIVE_TIMEOUT_MS: 72_000,
    trustProxy: false,
    ADMIN_DASHBOARD_WRITE: false
  })
  t.equal(config.REDIS_URL, undefined, 'unset: npm start finds or launches a local Redis')
  t.equal(config.REDIS_LOCAL_PORT, 6379, 'where it looks for one, and launches one')
  t.equal(config.REDIS_ALLOW_EVICTION, false, 'a Redis that evicts keys is refused')
  t.equal(config.ADMIN_TOKEN, undefined, 'unset: generated and kept in DATA_DIR')
  t.equal(config.SECRET_KEY, undefined)
})

t.test('values are read from the environment as strings and converted', async (t) => {
  const config = loadConfig({
    PORT: '8080',
    ROLE: 'api',
    REDIS_URL: 'rediss://cache.example:6380',
    METRICS_PUBLIC: 'true',
    RATE_LIMIT_EVENTS_PER_SECOND: '0',
    DEDUP_WINDOW: 'P2D',
    WRITE_KEY_GRACE: 'PT15M'
  })
  t.equal(config.PORT, 8080)
  t.equal(config.ROLE, 'api')
  t.equal(config.REDIS_URL, 'rediss://cache.example:6380')
  t.equal(config.METRICS_PUBLIC, true)
  t.equal(config.RATE_LIMIT_EVENTS_PER_SECOND, 0, '0 turns the rate limit off')
  t.equal(config.dedupWindowMs, 2 * 24 * 3600 * 1000)
  t.equal(config.writeKeyGraceMs, 15 * 60 * 1000)
})

t.test('a bad value stops the boot with a message naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'abc' }, /PORT must be integer/],
    [{ PORT: '70000' }, /PORT must be <= 65535/],
    [{ ROLE: 'x' }, /ROLE must be equal to one of the allowed values/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
    [{ DEDUP_WINDOW: 'x' }, /DEDUP_WINDOW must be a positive ISO-8601 duration.*"x"/],
    [{ DEDUP_WINDOW: 'PT0S' }, /DEDUP_WINDOW must be a positive/],
    [{ WRITE_KEY_GRACE: '24h' }, /WRITE_KEY_GRACE must be a positive ISO-8601 duration/],
    [{ REDIS_URL: 'http://x' }, /REDIS_URL must match pattern/],
    [{ FACEBOOK_GRAPH_URL: 'graph.facebook.com' }, /FACEBOOK_GRAPH_URL must match pattern/],
    [{ ADMIN_TOKEN: 'short' }, /ADMIN_TOKEN must NOT have fewer than 16 characters/],
    [{ RATE_LIMIT_EVENTS_PER_SECOND: '-1' }, /RATE_LIMIT_EVENTS_PER_SECOND must be >= 0/],
    [{ METRICS_PUBLIC: 'yes' }, /METRICS_PUBLIC must be boolean/],
    [{ HTTP_REQUEST_TIMEOUT_MS: '-1' }, /HTTP_REQUEST_TIMEOUT_MS must be >= 0/],
    [{ HTTP_KEEP_ALIVE_TIMEOUT_MS: '0' }, /HTTP_KEEP_ALIVE_TIMEOUT_MS must be >= 1/],
    [{ HTTP_HEADERS_TIMEOUT_MS: '40000' }, /HTTP_HEADERS_TIMEOUT_MS \(40000\) must not be above HTTP_REQUEST_TIMEOUT_MS \(30000\)/],
    [{ ADMIN_DASHBOARD_WRITE: 'on' }, /ADMIN_DASHBOARD_WRITE must be boolean/],
    [{ TRUST_PROXY: '1' }, /TRUST_PROXY=1: a hop count is not supported.*list the proxies' addresses or CIDRs/],
    [{ TRUST_PROXY: 'proxy.internal' }, /TRUST_PROXY must be true, false, or a comma-separated list.*"proxy.internal" is none of them/],
    [{ TRUST_PROXY: '10.0.0.0/33' }, /"10.0.0.0\/33" is none of them/],
    [{ TRUST_PROXY: '10.0.0.1,' }, /"" is none of them/],
    [{ TRUST_PROXY: 'yes' }, /TRUST_PROXY must be/],
    [{ REDIS_LOCAL_PORT: '0' }, /REDIS_LOCAL_PORT must be >= 1/],
    [{ REDIS_ALLOW_EVICTION: 'yes' }, /REDIS_ALLOW_EVICTION must be boolean/]
  ]
  for (const [env, message] of cases) {
    t.throws(() => loadConfig(env), { constructor: ConfigError, message }, JSON.stringify(env))
  }
})

t.test('TRUST_PROXY: true, false, or the proxies\' addresses and CIDRs', async (t) => {
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true)
  t.equal(loadConfig({ TRUST_PROXY: 'FALSE' }).trustProxy, false)
  t.same(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,::1,fd00::/8, 192.168.0.0/255.255.0.0,loopback' }).trustProxy,
    ['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8', '192.168.0.0/255.255.0.0', 'loopback'])
  t.same(loadConfig({ TRUST_PROXY: '172.16.0.1' }).trustProxy, ['172.16.0.1'], 'one address is a list of one')
})

t.test('0 timeouts are Node\'s "none", and then the headers may take what they like', async (t) => {
  t.match(loadConfig({ HTTP_REQUEST_TIMEOUT_MS: '0', HTTP_HEADERS_TIMEOUT_MS: '40000' }), { HTTP_REQUEST_TIMEOUT_MS: 0, HTTP_HEADERS_TIMEOUT_MS: 40_000 })
})

t.test('an explicit environment is the only one read', async (t) => {
  // Tests and tools pass their own variables: the shell's must not leak in.
  const saved = { ROLE: process.env.ROLE, PORT: process.env.PORT }
  t.teardown(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  })
  process.env.ROLE = 'worker'
  process.env.PORT = '4242'
  const config = loadConfig({ HOST: '0.0.0.0' })
  t.equal(config.ROLE, 'all', 'the shell ROLE is not read')
  t.equal(config.PORT, 3000, 'the shell PORT is not read')
  t.equal(config.HOST, '0.0.0.0')
  t.match(loadConfig(), { ROLE: 'worker', PORT: 4242 }, 'without an argument, process.env is read')
})
