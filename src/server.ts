import cluster from 'node:cluster'
import closeWithGrace from 'close-with-grace'
import { logGraphVersionWarnings } from '../plugins/destinations.js'
import { buildApp, LOG_REDACT } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import { findOnPath, redisAnswers, startRedisServer, type LocalRedis } from './local-redis.js'
import { keptSecret } from './secrets.js'
import pino from 'pino'

/**
 * Entry point (`npm start`). Loads the configuration, finds or launches Redis, fills in the
 * generated secrets, and runs the role's app until a signal, then shuts down gracefully:
 * stop accepting, finish in-flight requests and jobs, close the queues and Redis.
 * With PROCESSES > 1 this process does the preparing, then runs that many processes of the role
 * (node:cluster: they share the HTTP port) and restarts any that dies.
 */
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
  const log = pino({ level: config.LOG_LEVEL, redact: LOG_REDACT })

  let localRedis: LocalRedis | undefined
  if (config.REDIS_URL === undefined) {
    if (await redisAnswers('127.0.0.1', 6379)) {
      config.REDIS_URL = 'redis://127.0.0.1:6379'
    } else {
      const binary = findOnPath('redis-server')
      if (binary === undefined) {
        console.error('conversion-relay: no Redis answers on 127.0.0.1:6379 and there is no redis-server on PATH.\n' +
          'Install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL=redis://host:port.')
        process.exit(1)
      }
      localRedis = await startRedisServer({ binary, dir: `${config.DATA_DIR}/redis` })
      config.REDIS_URL = localRedis.url
      log.info({ url: localRedis.url, dir: `${config.DATA_DIR}/redis` }, 'started a local redis-server (AOF everysec, noeviction); it stops with the service')
    }
  }
  if (config.ADMIN_TOKEN === undefined) {
    const secret = keptSecret(config.DATA_DIR, 'admin-token')
    config.ADMIN_TOKEN = secret.value
    log.info({ path: secret.path }, secret.created ? 'generated an admin token; it is kept in this file (set ADMIN_TOKEN to choose one)' : 'admin token read from this file (set ADMIN_TOKEN to choose one)')
  }
  if (config.SECRET_KEY === undefined) {
    const secret = keptSecret(config.DATA_DIR, 'secret-key')
    config.SECRET_KEY = secret.value
    log.warn({ path: secret.path }, 'SECRET_KEY is unset: using the key kept in this file. Several replicas must share one SECRET_KEY, or they cannot read each other\'s stored tokens')
  }

  if (config.PROCESSES > 1) {
    runProcesses(config, log, localRedis)
    return
  }
  const app = await buildApp({ config })
  closeWithGrace({ delay: config.SHUTDOWN_TIMEOUT_MS, logger: app.log }, async ({ err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error')
    await app.close()
    await localRedis?.stop()
  })
  await app.listen({ port: config.PORT, host: config.HOST })
  app.log.info({ role: config.ROLE, docs: `http://${config.HOST}:${config.PORT}/docs` }, 'conversion relay is running')
  // Destinations on a Graph version Meta retires (or has retired): said once at start-up, by one
  // process of a cluster; not awaited, and a failure to read them never stops the service.
  if (!cluster.isWorker || cluster.worker?.id === 1) {
    logGraphVersionWarnings(app.destinations, app.now(), app.log)
      .catch((err) => app.log.warn({ err }, 'could not check the destinations\' Graph API versions'))
  }
}

/** The primary of PROCESSES > 1: each process gets the prepared Redis URL and secrets. */
function runProcesses (config: Config, log: pino.Logger, localRedis: LocalRedis | undefined): void {
  const env = { REDIS_URL: config.REDIS_URL, ADMIN_TOKEN: config.ADMIN_TOKEN, SECRET_KEY: config.SECRET_KEY, PROCESSES: '1' }
  let stopping = false
  const fork = () => cluster.fork(env)
  for (let i = 0; i < config.PROCESSES; i++) fork()
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    log.error({ pid: worker.process.pid, code, signal }, 'a service process exited; starting another')
    // Not in a tight loop when it dies at boot (a bad configuration would stop every one).
    setTimeout(fork, 1000).unref()
  })
  const stop = () => {
    if (stopping) return
    stopping = true
    // Each process shuts down gracefully on its own SIGTERM; Redis stops after the last.
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM')
    const done = () => { Promise.resolve(localRedis?.stop()).finally(() => process.exit(0)) }
    if (Object.keys(cluster.workers ?? {}).length === 0) done()
    else cluster.on('exit', () => { if (Object.keys(cluster.workers ?? {}).length === 0) done() })
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  log.info({ processes: config.PROCESSES, role: config.ROLE, docs: `http://${config.HOST}:${config.PORT}/docs` }, 'conversion relay is running')
}

main().catch((err) => {
  console.error('conversion-relay: failed to start:', err)
  process.exit(1)
})
