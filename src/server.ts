import cluster from 'node:cluster'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { logGraphVersionWarnings } from '../plugins/destinations.js'
import { buildApp, loggerOptions } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { findOnPath, redisAnswers, startRedisServer, type LocalRedis } from './local-redis.js'
import { judgeRedisSettings, readRedisSettings, redisUrlForLog, type RedisSettings } from './redis-check.js'
import { parseClusterNodes } from './redis-client.js'
import { keptSecret } from './secrets.js'
import { WORK_KINDS, type WorkCounts, type WorkKind } from './work-counter.js'

/**
 * Entry point (`npm start`). Loads the configuration, finds or launches Redis and checks it keeps
 * what it is given, fills in the generated secrets, and runs the role's app until a signal, then
 * shuts down gracefully: stop accepting, finish in-flight requests and jobs, close the queues and
 * Redis, and say what was drained.
 * With PROCESSES > 1 this process does the preparing, then runs that many processes of the role
 * (node:cluster: they share the HTTP port) and restarts any that dies.
 */

/** Where the Redis in use came from, for the start-up summary. */
type RedisOrigin = 'REDIS_URL' | 'REDIS_CLUSTER_NODES' | 'found' | 'launched'

/** What the start-up summary says besides the configuration. */
interface Prepared {
  redisOrigin: RedisOrigin
  redisSettings: RedisSettings
  adminToken: string
  localRedis?: LocalRedis
}

/**
 * JSON lines, as log collectors want them; pino-pretty's lines when a person reads the log in a
 * terminal. The summary's fields are in its message already: pretty output leaves them out.
 */
function logTransport (): pino.TransportSingleOptions | undefined {
  if (process.stdout.isTTY !== true) return undefined
  let target: string
  try {
    target = createRequire(import.meta.url).resolve('pino-pretty')
  } catch {
    return undefined // an install without it: JSON lines in the terminal too, not a crash
  }
  return { target, options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'hostname,startup' } }
}

async function main (): Promise<void> {
  let config: Config
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`conversion-relay: ${err.message}`)
      process.exit(1)
    }
    throw err
  }
  // One logger for the process, the app's too: one pino-pretty thread, not two.
  const log = pino(loggerOptions(config, { transport: logTransport() }) as pino.LoggerOptions)
  const signals = stopSignals(log)

  if (cluster.isWorker) {
    // A service process of PROCESSES > 1: the primary prepared Redis and the secrets, and checked them.
    await runService(config, log, signals)
    return
  }

  const prepared = await prepare(config, log)
  if (config.PROCESSES > 1) {
    runProcesses(config, log, prepared, signals)
    return
  }
  const app = await runService(config, log, signals, prepared.localRedis)
  const line = summary(config, prepared, (app.server.address() as AddressInfo).port)
  log.info(line, summaryMessage(line))
}

/**
 * Finds or launches Redis and checks it; reads or generates the secrets. Exits when Redis cannot
 * be had, or evicts keys (unless REDIS_ALLOW_EVICTION).
 */
async function prepare (config: Config, log: pino.Logger): Promise<Prepared> {
  let localRedis: LocalRedis | undefined
  let redisOrigin: RedisOrigin = 'REDIS_URL'
  if (config.REDIS_CLUSTER_NODES !== undefined) {
    return { ...await checkClusterNodes(config, log), ...await prepareSecrets(config, log) }
  }
  if (config.REDIS_URL === undefined) {
    const port = config.REDIS_LOCAL_PORT
    if (await redisAnswers('127.0.0.1', port)) {
      config.REDIS_URL = `redis://127.0.0.1:${port}`
      redisOrigin = 'found'
    } else {
      const binary = findOnPath('redis-server')
      if (binary === undefined) {
        console.error(`conversion-relay: no Redis answers on 127.0.0.1:${port} and there is no redis-server on PATH.\n` +
          'Install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL=redis://host:port.')
        process.exit(1)
      }
      const dir = `${config.DATA_DIR}/redis`
      localRedis = await startRedisServer({ binary, dir, port, ownProcessGroup: true })
      config.REDIS_URL = localRedis.url
      redisOrigin = 'launched'
      log.info({ url: localRedis.url, dir, redisPid: localRedis.process.pid }, 'started a local redis-server (AOF everysec, noeviction); it stops with the service')
    }
  }

  const redisSettings = await readRedisSettings(config.REDIS_URL)
  const verdict = judgeRedisSettings(redisSettings, config.REDIS_ALLOW_EVICTION)
  if (verdict.refusal !== undefined) {
    log.fatal({ redis: redisUrlForLog(config.REDIS_URL), maxmemoryPolicy: redisSettings.maxmemoryPolicy }, `not starting: ${verdict.refusal}`)
    await localRedis?.stop()
    // Let a pino-pretty thread write the line (pino flushes it on exit).
    process.exit(1)
  }
  for (const warning of verdict.warnings) log.warn({ redis: redisUrlForLog(config.REDIS_URL) }, warning)
  return { redisOrigin, redisSettings, localRedis, ...await prepareSecrets(config, log) }
}

/**
 * A Redis Cluster's seed nodes checked as one Redis is (each primary keeps its slots' data): the
 * service does not start when one of them evicts keys; what they report is summed up as the
 * first node's settings.
 */
async function checkClusterNodes (config: Config, log: pino.Logger): Promise<{ redisOrigin: RedisOrigin, redisSettings: RedisSettings }> {
  const target = parseClusterNodes(config.REDIS_CLUSTER_NODES!)
  const credentials = target.username === undefined && target.password === undefined ? '' : `${encodeURIComponent(target.username ?? '')}:${encodeURIComponent(target.password ?? '')}@`
  let first: RedisSettings | undefined
  for (const node of target.nodes) {
    const url = `${target.tls ? 'rediss' : 'redis'}://${credentials}${node.host.includes(':') ? `[${node.host}]` : node.host}:${node.port}`
    const settings = await readRedisSettings(url)
    first ??= settings
    const verdict = judgeRedisSettings(settings, config.REDIS_ALLOW_EVICTION)
    if (verdict.refusal !== undefined) {
      log.fatal({ redis: redisUrlForLog(url), maxmemoryPolicy: settings.maxmemoryPolicy }, `not starting: ${verdict.refusal}`)
      process.exit(1)
    }
    for (const warning of verdict.warnings) log.warn({ redis: redisUrlForLog(url) }, warning)
  }
  return { redisOrigin: 'REDIS_CLUSTER_NODES', redisSettings: first! }
}

/** The admin token and the secret key, generated and kept under DATA_DIR when not configured. */
async function prepareSecrets (config: Config, log: pino.Logger): Promise<{ adminToken: string }> {
  let adminToken = 'ADMIN_TOKEN'
  if (config.ADMIN_TOKEN === undefined) {
    const secret = keptSecret(config.DATA_DIR, 'admin-token')
    config.ADMIN_TOKEN = secret.value
    adminToken = secret.path
    log.info({ path: secret.path }, secret.created ? 'generated an admin token; it is kept in this file (set ADMIN_TOKEN to choose one)' : 'admin token read from this file (set ADMIN_TOKEN to choose one)')
  }
  if (config.SECRET_KEY === undefined) {
    const secret = keptSecret(config.DATA_DIR, 'secret-key')
    config.SECRET_KEY = secret.value
    log.warn({ path: secret.path }, 'SECRET_KEY is unset: using the key kept in this file. Several replicas must share one SECRET_KEY, or they cannot read each other\'s stored tokens')
  }
  return { adminToken }
}

/**
 * The start-up line: what runs, on which port, against which Redis and how that Redis keeps data,
 * where Meta is, where the admin token is. Its fields as `startup` for log queries, and all of it
 * in the message for a person.
 */
function summary (config: Config, prepared: Prepared, port: number): { startup: Record<string, unknown> } {
  const settings = prepared.redisSettings
  const redis = {
    url: config.REDIS_CLUSTER_NODES === undefined ? redisUrlForLog(config.REDIS_URL!) : `cluster ${parseClusterNodes(config.REDIS_CLUSTER_NODES).nodes.map((node) => `${node.host}:${node.port}`).join(',')}`,
    origin: prepared.redisOrigin,
    maxmemoryPolicy: settings.maxmemoryPolicy ?? 'unknown',
    appendonly: settings.appendonly === undefined ? 'unknown' : settings.appendonly ? 'yes' : 'no',
    appendfsync: settings.appendfsync ?? 'unknown'
  }
  return {
    startup: {
      role: config.ROLE,
      processes: config.PROCESSES,
      host: config.HOST,
      port,
      node: process.versions.node,
      redis,
      ingestPartitions: config.ingestPartitions,
      graphUrl: config.FACEBOOK_GRAPH_URL,
      adminToken: prepared.adminToken,
      docs: `http://${config.HOST}:${port}/docs`
    }
  }
}

const ORIGINS: Record<RedisOrigin, string> = { REDIS_URL: 'REDIS_URL', REDIS_CLUSTER_NODES: 'a Redis Cluster, REDIS_CLUSTER_NODES', found: 'found answering, REDIS_URL unset', launched: 'launched by this service' }

/** The summary as a sentence (pretty logs show it alone). */
function summaryMessage ({ startup }: { startup: Record<string, any> }): string {
  const { redis } = startup
  const processes = startup.processes > 1 ? ` × ${startup.processes} processes` : ''
  return `conversion relay is running: role ${startup.role}${processes} on http://${startup.host}:${startup.port} (Node.js ${startup.node}); ` +
    `Redis ${redis.url} (${ORIGINS[redis.origin as RedisOrigin]}; maxmemory-policy ${redis.maxmemoryPolicy}, appendonly ${redis.appendonly}, appendfsync ${redis.appendfsync})` +
    `${startup.ingestPartitions > 1 ? `, ${startup.ingestPartitions} ingest partitions` : ''}; ` +
    `Graph API ${startup.graphUrl}; admin token ${startup.adminToken === 'ADMIN_TOKEN' ? 'from ADMIN_TOKEN' : `in ${startup.adminToken}`}; docs ${startup.docs}`
}

interface StopSignals {
  /** What the first SIGINT or SIGTERM does from now on. */
  onStop: (stop: (signal: NodeJS.Signals) => void) => void
}

/**
 * SIGINT and SIGTERM, from the start: during start-up one exits at once (a launched redis-server
 * is stopped on exit); once the service runs, the first one starts the graceful shutdown. A
 * terminal's Ctrl-C reaches this process twice — from the terminal, which signals its whole
 * foreground process group, and again from npm, which forwards it — and a service process of
 * PROCESSES > 1 gets the terminal's SIGINT and its primary's SIGTERM: a repeat within a second is
 * the same request, not an impatient second one (close-with-grace took it for one, and exited at
 * once). A later one exits at once.
 */
function stopSignals (log: pino.Logger): StopSignals {
  let stop = (signal: NodeJS.Signals): void => {
    log.warn(`${signal} during start-up: exiting`)
    process.exit(0)
  }
  let first = 0
  const handler = (signal: NodeJS.Signals) => {
    if (first === 0) {
      first = Date.now()
      stop(signal)
    } else if (Date.now() - first > 1000) {
      log.error(`second ${signal}: exiting without finishing the shutdown`)
      process.exit(1)
    }
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return { onStop: (fn) => { stop = fn } }
}

type WorkSnapshot = Record<WorkKind, { finished: number, inProgress: number }>

function snapshot (work: WorkCounts): WorkSnapshot {
  return Object.fromEntries(WORK_KINDS.map((kind) => [kind, { finished: work[kind].finished, inProgress: work[kind].inProgress }])) as WorkSnapshot
}

const WORK_NAMES: Record<WorkKind, [string, string]> = {
  requests: ['request', 'requests'],
  ingestFlushes: ['flush of the ingest buffer', 'flushes of the ingest buffer'],
  ingestJobs: ['ingest job', 'ingest jobs'],
  deliverJobs: ['deliver job', 'deliver jobs'],
  audienceSyncJobs: ['audience-sync job', 'audience-sync jobs']
}

function counted (counts: Record<WorkKind, number>): string {
  return WORK_KINDS.map((kind) => `${counts[kind]} ${WORK_NAMES[kind][counts[kind] === 1 ? 0 : 1]}`).join(', ')
}

/**
 * The app of this process's role, listening, shut down gracefully on a signal: one line then
 * says what it finished meanwhile (requests in flight, flushes of the ingest buffer, jobs in
 * hand and any it took before its workers stopped) — or, past SHUTDOWN_TIMEOUT_MS, what it left.
 */
async function runService (config: Config, log: pino.Logger, signals: StopSignals, localRedis?: LocalRedis): Promise<FastifyInstance> {
  const app = await buildApp({ config, loggerInstance: log })
  let reason = 'a normal exit'
  let startedAt = 0
  let atStart: WorkSnapshot | undefined
  const begin = (why: string) => {
    if (atStart !== undefined) return
    reason = why
    startedAt = Date.now()
    atStart = snapshot(app.work)
    const inHand = Object.fromEntries(WORK_KINDS.map((kind) => [kind, atStart![kind].inProgress])) as Record<WorkKind, number>
    log.info({ reason, inHand }, `shutting down (${reason}): finishing ${counted(inHand)} in hand`)
  }
  const grace = closeWithGrace({
    delay: config.SHUTDOWN_TIMEOUT_MS,
    logger: log,
    // SIGINT and SIGTERM: stopSignals (a Ctrl-C arrives twice).
    skip: ['SIGINT', 'SIGTERM'],
    onTimeout: (delay) => {
      const unfinished = Object.fromEntries(WORK_KINDS.map((kind) => [kind, app.work[kind].inProgress])) as Record<WorkKind, number>
      log.error({ reason, unfinished, ms: delay }, `shutdown took longer than SHUTDOWN_TIMEOUT_MS (${delay} ms): exiting with ${counted(unfinished)} unfinished (jobs go back to the queue once their lock expires; clients retry requests)`)
    }
  }, async ({ err, signal }) => {
    if (err) app.log.error({ err }, 'shutting down after an error')
    begin(err ? 'an error' : signal ?? 'a normal exit')
    await app.close()
    await localRedis?.stop()
    const finished = Object.fromEntries(WORK_KINDS.map((kind) => [kind, app.work[kind].finished - atStart![kind].finished])) as Record<WorkKind, number>
    const ms = Date.now() - startedAt
    log.info({ reason, ms, finished, localRedis: localRedis === undefined ? undefined : 'stopped' },
      `shut down in ${ms} ms (${reason}); finished meanwhile: ${counted(finished)}${localRedis === undefined ? '' : '; the local redis-server is stopped'}`)
  })
  signals.onStop((signal) => {
    begin(signal)
    grace.close()
  })
  await app.listen({ port: config.PORT, host: config.HOST })
  // Destinations on a Graph version Meta retires (or has retired): said once at start-up, by one
  // process of a cluster; not awaited, and a failure to read them never stops the service.
  if (!cluster.isWorker || cluster.worker?.id === 1) {
    logGraphVersionWarnings(app.destinations, app.now(), app.log)
      .catch((err) => app.log.warn({ err }, 'could not check the destinations\' Graph API versions'))
  }
  if (cluster.isWorker) log.info({ port: config.PORT }, 'service process listening')
  return app
}

/** The primary of PROCESSES > 1: each process gets the prepared Redis URL and secrets. */
function runProcesses (config: Config, log: pino.Logger, prepared: Prepared, signals: StopSignals): void {
  const env: Record<string, string> = { ADMIN_TOKEN: config.ADMIN_TOKEN!, SECRET_KEY: config.SECRET_KEY!, PROCESSES: '1' }
  // (A cluster's nodes come from the environment the processes inherit.)
  if (config.REDIS_URL !== undefined) env.REDIS_URL = config.REDIS_URL
  let stopping = false
  const fork = () => cluster.fork(env)
  for (let i = 0; i < config.PROCESSES; i++) fork()
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    log.error({ pid: worker.process.pid, code, signal }, 'a service process exited; starting another')
    // Not in a tight loop when it dies at boot (a bad configuration would stop every one).
    setTimeout(fork, 1000).unref()
  })
  signals.onStop((signal) => {
    stopping = true
    log.info({ reason: signal }, `shutting down (${signal}): each service process finishes what it has in hand`)
    // Each process shuts down gracefully on its own SIGTERM; Redis stops after the last.
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM')
    const done = () => {
      Promise.resolve(prepared.localRedis?.stop()).finally(() => {
        log.info(`every service process has stopped${prepared.localRedis === undefined ? '' : ', and the local redis-server'}`)
        process.exit(0)
      })
    }
    if (Object.keys(cluster.workers ?? {}).length === 0) done()
    else cluster.on('exit', () => { if (Object.keys(cluster.workers ?? {}).length === 0) done() })
  })
  const line = summary(config, prepared, config.PORT)
  log.info(line, summaryMessage(line))
}

main().catch((err) => {
  console.error('conversion-relay: failed to start:', err)
  process.exit(1)
})
