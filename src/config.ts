import { isIP } from 'node:net'
import envSchema from 'env-schema'
import { Duration } from 'luxon'
import { Type, type Static } from 'typebox'
import { parseClusterNodes } from './redis-client.js'

/**
 * The one configuration schema. Nothing else reads `process.env`: the entry point loads this
 * once, and a bad value stops the process with a message naming the variable.
 */
export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ default: 3000, minimum: 0, maximum: 65535 }),
  HOST: Type.String({ default: '127.0.0.1' }),
  ROLE: Type.Enum(['all', 'api', 'worker'], { default: 'all' }),
  // Processes running the role (node:cluster; they share the HTTP port). One Node.js process uses
  // about one core: on N cores, N processes take about N times the batched traffic.
  PROCESSES: Type.Integer({ default: 1, minimum: 1, maximum: 64 }),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
  // Unset: `npm start` uses a Redis on 127.0.0.1:REDIS_LOCAL_PORT when one answers there, else
  // launches a local redis-server on that port.
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  // Seed nodes of a Redis Cluster, `host:port,…` (an entry may be `rediss://user:password@host:port`:
  // its credentials and TLS apply to every node). Set, it wins over REDIS_URL.
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 1 })),
  // Ingest queues, each with its own hash tag (a message's partition follows its user):
  // unset, 1 on one Redis and 16 on a cluster (docs/operations.md: sizing).
  INGEST_PARTITIONS: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
  REDIS_LOCAL_PORT: Type.Integer({ default: 6379, minimum: 1, maximum: 65535 }),
  // BullMQ loses jobs on a Redis that evicts keys: the service refuses to start on one whose
  // `maxmemory-policy` is known and is not `noeviction`, unless this is true.
  REDIS_ALLOW_EVICTION: Type.Boolean({ default: false }),
  // Data keys start with `<prefix>:`; BullMQ keys with `{<prefix>}` (one hash slot on Redis Cluster).
  REDIS_PREFIX: Type.String({ default: 'relay', pattern: '^[A-Za-z0-9_.-]+$' }),
  DATA_DIR: Type.String({ default: './data' }),
  ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 16 })),
  SECRET_KEY: Type.Optional(Type.String({ minLength: 32 })),
  PUBLIC_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  FACEBOOK_GRAPH_URL: Type.String({ default: 'https://graph.facebook.com', pattern: '^https?://' }),
  FACEBOOK_APP_ID: Type.Optional(Type.String()),
  FACEBOOK_APP_SECRET: Type.Optional(Type.String()),
  // Where "Connect to Facebook" sends the browser (Meta's OAuth dialog).
  FACEBOOK_OAUTH_DIALOG_URL: Type.String({ default: 'https://www.facebook.com/v26.0/dialog/oauth', pattern: '^https?://' }),
  METRICS_PUBLIC: Type.Boolean({ default: false }),
  // The queue dashboard (/admin/queues) only shows jobs unless this is true: retry, clean,
  // promote, pause, empty and the like are refused (bull-board's readOnlyMode).
  ADMIN_DASHBOARD_WRITE: Type.Boolean({ default: false }),
  // Node's HTTP server timeouts, each 0 for none. Headers and request (headers and body) are
  // counted from the connection's opening (from its first byte for a later request on a
  // kept-alive connection) and answered 408, then the connection is closed. The connection
  // timeout is socket inactivity at any point (a client that does not read its answer, a handler
  // that hangs): it closes without an answer, so it is longer than the request timeout.
  // Keep-alive: how long an idle connection is kept between requests, above load balancers' 60 s
  // (theirs must close first, or a request can meet a socket just closed).
  HTTP_REQUEST_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 0 }),
  HTTP_HEADERS_TIMEOUT_MS: Type.Integer({ default: 10_000, minimum: 0 }),
  HTTP_CONNECTION_TIMEOUT_MS: Type.Integer({ default: 60_000, minimum: 0 }),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: Type.Integer({ default: 72_000, minimum: 1 }),
  // Which proxies' X-Forwarded-* headers to believe (request.ip, protocol, host): `false`,
  // `true` (any: only when nothing but the proxy can reach the port), or a comma-separated list
  // of addresses and CIDRs (or loopback, linklocal, uniquelocal).
  TRUST_PROXY: Type.String({ default: 'false' }),
  // Ingestion limits (DESIGN.md): 32 KB a message, 2,500 a batch, 4 MB a request after gunzip.
  MAX_MESSAGE_BYTES: Type.Integer({ default: 32 * 1024, minimum: 1024 }),
  MAX_BATCH_MESSAGES: Type.Integer({ default: 2500, minimum: 1 }),
  MAX_REQUEST_BYTES: Type.Integer({ default: 4 * 1024 * 1024, minimum: 1024 }),
  // Messages a second per source and API process; 0 turns the limit off. Bursts of twice that pass.
  RATE_LIMIT_EVENTS_PER_SECOND: Type.Integer({ default: 20000, minimum: 0 }),
  // Above this many waiting ingest jobs the API answers 503 (official clients retry).
  INGEST_MAX_BACKLOG_JOBS: Type.Integer({ default: 20000, minimum: 1 }),
  // Group commit: at most this many messages in one ingest job.
  INGEST_JOB_MAX_MESSAGES: Type.Integer({ default: 2000, minimum: 1 }),
  // An ingest job waits on Meta too (a request's first attempt is made in it): 8 delivered
  // 12–34 % more events a second end to end than 4 on 2 cores, 16 no more than 8.
  INGEST_CONCURRENCY: Type.Integer({ default: 8, minimum: 1 }),
  // An ingest job fails only for the infrastructure (Redis, a crash); it is tried this often, with
  // exponential backoff from INGEST_BACKOFF_MS (the defaults span about two minutes), then kept.
  INGEST_ATTEMPTS: Type.Integer({ default: 8, minimum: 1 }),
  INGEST_BACKOFF_MS: Type.Integer({ default: 1000, minimum: 1 }),
  DEDUP_WINDOW: Type.String({ default: 'PT24H' }),
  // Remembered message ids per source and window; past it the oldest window is dropped early
  // (a duplicate may then pass — a new message is never dropped).
  DEDUP_MAX_IDS: Type.Integer({ default: 5_000_000, minimum: 1 }),
  WRITE_KEY_GRACE: Type.String({ default: 'PT24H' }),
  WRITE_KEY_CACHE_TTL_MS: Type.Integer({ default: 5000, minimum: 0 }),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ default: 10000, minimum: 100 }),
  // A job whose worker died (a crash, SIGKILL) goes back to another worker after about twice
  // this long: a job's lock lasts this long (renewed at half) and the stalled-job check runs
  // this often (BullMQ's lockDuration and stalledInterval; its default is 30 s).
  STALLED_INTERVAL_MS: Type.Integer({ default: 30_000, minimum: 100 }),
  // Delivery to Meta: transient errors back off exponentially with jitter, from
  // DELIVER_BACKOFF_MS up to DELIVER_MAX_BACKOFF_MS; the default attempts span about 4 hours
  // (as Segment retries) before the conversions are dead-lettered.
  DELIVER_CONCURRENCY: Type.Integer({ default: 8, minimum: 1 }),
  DELIVER_ATTEMPTS: Type.Integer({ default: 25, minimum: 1 }),
  DELIVER_BACKOFF_MS: Type.Integer({ default: 5000, minimum: 1 }),
  DELIVER_MAX_BACKOFF_MS: Type.Integer({ default: 15 * 60_000, minimum: 1 }),
  GRAPH_TIMEOUT_MS: Type.Integer({ default: 30_000, minimum: 100 }),
  // Conversions held for a token (Meta's code 190, a missing permission, none set) look again
  // this often, and are released at once when a token is set; after HOLD_MAX they are dead-lettered.
  HOLD_RECHECK_MS: Type.Integer({ default: 5 * 60_000, minimum: 10 }),
  HOLD_MAX: Type.String({ default: 'P7D' }),
  // Audiences: event history kept per (user, event) in UTC-day buckets; the widest window.
  HISTORY_RETENTION: Type.String({ default: 'P90D' }),
  // An ingest job that failed every attempt (Redis trouble, a crash) keeps its bodies — raw
  // messages — this long from its failure, for a replay; then they go, and the job with them.
  FAILED_BODY_RETENTION: Type.String({ default: 'PT72H' }),
  AUDIENCE_SYNC_CONCURRENCY: Type.Integer({ default: 2, minimum: 1 })
})

type RawConfig = Static<typeof ConfigSchema>

export interface Config extends RawConfig {
  /** TRUST_PROXY as Fastify's `trustProxy` takes it. */
  trustProxy: boolean | string[]
  /** INGEST_PARTITIONS, or its default for the kind of Redis. */
  ingestPartitions: number
  dedupWindowMs: number
  writeKeyGraceMs: number
  holdMaxMs: number
  historyRetentionMs: number
  failedBodyRetentionMs: number
}

export class ConfigError extends Error {}

function durationMs (name: string, value: string): number {
  const duration = Duration.fromISO(value)
  if (!duration.isValid || duration.toMillis() <= 0) {
    throw new ConfigError(`${name} must be a positive ISO-8601 duration such as PT24H (got "${value}")`)
  }
  return duration.toMillis()
}

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

/** An address, a CIDR (`10.0.0.0/8`, `fd00::/8`) or an IPv4 address with a netmask, as proxy-addr takes them. */
function isProxyAddress (entry: string): boolean {
  if (PROXY_NAMES.has(entry)) return true
  const slash = entry.indexOf('/')
  const address = slash === -1 ? entry : entry.slice(0, slash)
  const family = isIP(address)
  if (family === 0 || slash === -1) return family !== 0
  const range = entry.slice(slash + 1)
  if (/^\d{1,3}$/.test(range)) return Number(range) <= (family === 4 ? 32 : 128)
  return family === 4 && isIP(range) === 4
}

function trustProxy (value: string): boolean | string[] {
  const trimmed = value.trim()
  if (/^(true|false)$/i.test(trimmed)) return trimmed.toLowerCase() === 'true'
  if (/^\d+$/.test(trimmed)) {
    // Fastify 5 takes a hop count as "trust nothing": it cannot tell a proxy from a client that
    // connects directly and writes its own X-Forwarded-For. Said at boot, not found out later.
    throw new ConfigError(`TRUST_PROXY=${trimmed}: a hop count is not supported (Fastify 5 refuses hop-count trust, which lets a client that bypasses the proxy spoof its address); list the proxies' addresses or CIDRs instead, e.g. TRUST_PROXY=10.0.0.0/8`)
  }
  const entries = trimmed.split(',').map((entry) => entry.trim())
  const bad = entries.find((entry) => !isProxyAddress(entry))
  if (bad !== undefined) {
    throw new ConfigError(`TRUST_PROXY must be true, false, or a comma-separated list of addresses and CIDRs (got "${value}": "${bad}" is none of them)`)
  }
  return entries
}

/** Validates the environment; throws a ConfigError naming the variable at fault. */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  let raw: RawConfig
  try {
    // env-schema merges process.env under `data` unless told not to: a caller that passes its
    // own variables (tests, tools) must not get the shell's ROLE or PORT as well.
    raw = envSchema<RawConfig>({ schema: ConfigSchema, data: env, env: false, dotenv: false })
  } catch (err) {
    // env-schema says "env/PORT must be integer"; keep the variable's name up front.
    throw new ConfigError(`invalid configuration: ${(err as Error).message.replace(/env\//g, '')}`)
  }
  if (raw.HTTP_HEADERS_TIMEOUT_MS > 0 && raw.HTTP_REQUEST_TIMEOUT_MS > 0 && raw.HTTP_HEADERS_TIMEOUT_MS > raw.HTTP_REQUEST_TIMEOUT_MS) {
    // Node's http.Server refuses it: the headers are part of the request.
    throw new ConfigError(`HTTP_HEADERS_TIMEOUT_MS (${raw.HTTP_HEADERS_TIMEOUT_MS}) must not be above HTTP_REQUEST_TIMEOUT_MS (${raw.HTTP_REQUEST_TIMEOUT_MS})`)
  }
  if (raw.REDIS_CLUSTER_NODES !== undefined) {
    try {
      parseClusterNodes(raw.REDIS_CLUSTER_NODES)
    } catch (err) {
      throw new ConfigError(`invalid configuration: ${(err as Error).message}`)
    }
  }
  return {
    ...raw,
    ingestPartitions: raw.INGEST_PARTITIONS ?? (raw.REDIS_CLUSTER_NODES === undefined ? 1 : 16),
    trustProxy: trustProxy(raw.TRUST_PROXY),
    dedupWindowMs: durationMs('DEDUP_WINDOW', raw.DEDUP_WINDOW),
    writeKeyGraceMs: durationMs('WRITE_KEY_GRACE', raw.WRITE_KEY_GRACE),
    holdMaxMs: durationMs('HOLD_MAX', raw.HOLD_MAX),
    historyRetentionMs: durationMs('HISTORY_RETENTION', raw.HISTORY_RETENTION),
    failedBodyRetentionMs: durationMs('FAILED_BODY_RETENTION', raw.FAILED_BODY_RETENTION)
  }
}
