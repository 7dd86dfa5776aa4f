import { createBullBoard } from '@bull-board/api'
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter'
import { FastifyAdapter } from '@bull-board/fastify'
import type { Queue } from 'bullmq'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Counter, Gauge } from 'prom-client'
import { combinePartitions, readQueueStats, type QueueStats } from '../jobs/queue-stats.js'
import { graphVersionStatus } from '../src/facebook/graph-versions.js'
import { graphVersion } from '../src/facebook/settings.js'
import { isAdminToken, presentedAdminToken } from './auth.js'
import { htmlPageHeaders } from './http-hardening.js'

const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children'] as const

declare module 'fastify' {
  interface FastifyInstance {
    /** The ingest, deliver and audience-sync queues' figures, read from Redis (GET /v1/queues). */
    queueStats: () => Promise<QueueStats[]>
  }
}

/**
 * Monitoring: Prometheus metrics at /metrics and, in the roles that serve the API, the BullMQ
 * dashboard at /admin/queues, both over the ingest, deliver and audience-sync queues. /metrics
 * serves the process's own metrics (plugins/metrics.ts) and gauges read from Redis at scrape
 * time — queue depths, per-source and per-destination counts — which every process reports
 * alike. Both need the admin token — as a Bearer header, or as the password of HTTP Basic so a
 * browser can open the dashboard — unless METRICS_PUBLIC opens /metrics.
 */
export default fp(async (app) => {
  const token = app.config.ADMIN_TOKEN
  // Ingest's partitions: GET /v1/queues and /metrics give their sum as `ingest`, and each as well.
  const ingestQueues: Queue[] = app.queues.ingestPartitions
  const partitioned = ingestQueues.length > 1
  const queues: Queue[] = [...ingestQueues, app.deliverQueue, app.audienceSyncQueue]

  async function guard (request: FastifyRequest, reply: FastifyReply) {
    if (isAdminToken(presentedAdminToken(request.headers.authorization, { basic: true }), token)) return
    reply.header('www-authenticate', 'Basic realm="conversion-relay admin", charset="UTF-8"')
    return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'the admin token is required (Bearer, or as the HTTP Basic password)' })
  }

  async function queueStats (): Promise<QueueStats[]> {
    const read = (queue: Queue) => readQueueStats(queue, app.redis, app.keys.queueProcessed)
    const [ingest, deliver, audienceSync] = await Promise.all([Promise.all(ingestQueues.map(read)), read(app.deliverQueue), read(app.audienceSyncQueue)])
    return [combinePartitions('ingest', ingest), deliver, audienceSync]
  }
  app.decorate('queueStats', queueStats)
  // The gauges of one scrape share one reading.
  let reading: Promise<QueueStats[]> | undefined
  const scrapedQueueStats = () => (reading ??= queueStats().finally(() => { reading = undefined }))

  const registry = app.metrics.registry
  registry.registerMetric(new Gauge({
    name: 'relay_queue_jobs',
    help: 'BullMQ jobs by queue and state',
    labelNames: ['queue', 'state'],
    registers: [],
    async collect () {
      const ingest = await Promise.all(ingestQueues.map((queue) => queue.getJobCounts(...QUEUE_STATES)))
      for (const state of QUEUE_STATES) this.set({ queue: 'ingest', state }, ingest.reduce((total, counts) => total + (counts[state] ?? 0), 0))
      for (const queue of [app.deliverQueue, app.audienceSyncQueue]) {
        const counts = await queue.getJobCounts(...QUEUE_STATES)
        for (const state of QUEUE_STATES) this.set({ queue: queue.name, state }, counts[state] ?? 0)
      }
    }
  }))
  if (partitioned) {
    // Each partition's jobs, oldest wait and processed jobs (the ingest entries above are their sums).
    registry.registerMetric(new Gauge({
      name: 'relay_ingest_partition_jobs',
      help: 'BullMQ jobs by ingest partition and state (their sum is relay_queue_jobs{queue="ingest"})',
      labelNames: ['partition', 'state'],
      registers: [],
      async collect () {
        const counts = await Promise.all(ingestQueues.map((queue) => queue.getJobCounts(...QUEUE_STATES)))
        counts.forEach((partition, p) => { for (const state of QUEUE_STATES) this.set({ partition: ingestQueues[p].name, state }, partition[state] ?? 0) })
      }
    }))
    registry.registerMetric(new Gauge({
      name: 'relay_ingest_partition_oldest_waiting_age_seconds',
      help: 'Age of the oldest job waiting for a worker, by ingest partition (0 when none waits)',
      labelNames: ['partition'],
      registers: [],
      async collect () {
        const ingest = (await scrapedQueueStats())[0]
        for (const part of ingest.partitions ?? []) this.set({ partition: part.name }, (part.oldestWaitingAgeMs ?? 0) / 1000)
      }
    }))
    registry.registerMetric(new Counter({
      name: 'relay_ingest_partition_processed_jobs_total',
      help: 'Ingest jobs completed by every worker, by partition (their sum is relay_queue_processed_jobs_total{queue="ingest"})',
      labelNames: ['partition'],
      registers: [],
      async collect () {
        this.reset()
        const ingest = (await scrapedQueueStats())[0]
        for (const part of ingest.partitions ?? []) this.inc({ partition: part.name }, part.processedTotal)
      }
    }))
  }
  registry.registerMetric(new Gauge({
    name: 'relay_queue_oldest_waiting_age_seconds',
    help: 'Age of the oldest job waiting for a worker, by queue (since it was added; 0 when none waits); read from Redis',
    labelNames: ['queue'],
    registers: [],
    async collect () {
      for (const stats of await scrapedQueueStats()) {
        this.set({ queue: stats.name }, (stats.oldestWaitingAgeMs ?? 0) / 1000)
      }
    }
  }))
  registry.registerMetric(new Counter({
    name: 'relay_queue_processed_jobs_total',
    help: 'Jobs completed by every worker of the deployment, by queue (a counter in Redis, read at scrape time)',
    labelNames: ['queue'],
    registers: [],
    async collect () {
      this.reset()
      for (const stats of await scrapedQueueStats()) this.inc({ queue: stats.name }, stats.processedTotal)
    }
  }))
  registry.registerMetric(new Gauge({
    name: 'relay_destination_conversions',
    help: 'Conversions per destination by outcome (received = filtered + invalid + delivered + dead_lettered + retrying; held is a part of retrying)',
    labelNames: ['destination', 'outcome'],
    registers: [],
    async collect () {
      this.reset()
      for (const source of await app.sources.list()) {
        for (const destination of await app.destinations.listForSource(source.id)) {
          const stats = await app.destinations.stats(destination.id)
          const outcomes: Record<string, number> = {
            received: stats.received,
            filtered: stats.filtered,
            invalid: stats.invalid.total,
            delivered: stats.delivered,
            dead_lettered: stats.deadLettered,
            retrying: stats.retrying,
            held: stats.held
          }
          for (const [outcome, value] of Object.entries(outcomes)) this.set({ destination: destination.id, outcome }, value)
        }
      }
    }
  }))
  registry.registerMetric(new Gauge({
    name: 'relay_destination_graph_version_days_left',
    help: 'Whole days before Meta retires the Graph API version each destination sends to, negative once expired (status version_expired; the legacy format always sends to v16.0); destinations on a version without an expiry date are left out',
    labelNames: ['destination', 'version'],
    registers: [],
    async collect () {
      this.reset()
      const now = app.now()
      for (const destination of await app.destinations.listAll()) {
        const version = graphVersion(destination.settings)
        const { daysLeft } = graphVersionStatus(version, now)
        if (daysLeft !== undefined) this.set({ destination: destination.id, version }, daysLeft)
      }
    }
  }))
  registry.registerMetric(new Gauge({
    name: 'relay_source_messages',
    help: 'Messages per source by what the ingestion API did (received = accepted + duplicate + rejected)',
    labelNames: ['source', 'outcome'],
    registers: [],
    async collect () {
      this.reset()
      for (const source of await app.sources.list()) {
        const stats = await app.sources.stats(source.id)
        for (const [outcome, value] of Object.entries(stats)) this.set({ source: source.id, outcome }, value)
      }
    }
  }))

  app.get('/metrics', {
    preHandler: app.config.METRICS_PUBLIC ? [] : [guard],
    schema: {
      tags: ['monitoring'],
      summary: 'Prometheus metrics (admin token unless METRICS_PUBLIC)',
      response: { 200: { type: 'string' }, 401: { $ref: 'AdminError#' } }
    }
  }, async (request, reply) => {
    reply.type(registry.contentType)
    return registry.metrics()
  })

  // The dashboard is the API roles' (a worker serves /health, /ready and /metrics only).
  if (app.config.ROLE === 'worker') return
  const board = new FastifyAdapter()
  board.setBasePath('/admin/queues')
  // Read-only unless ADMIN_DASHBOARD_WRITE: bull-board then answers 405 to every call that changes
  // a queue or a job (retry, clean, promote, pause, empty, add, …) and hides those buttons.
  const readOnlyMode = !app.config.ADMIN_DASHBOARD_WRITE
  createBullBoard({ queues: queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode })), serverAdapter: board as unknown as Parameters<typeof createBullBoard>[0]['serverAdapter'] })
  await app.register(async (scope) => {
    await htmlPageHeaders(scope)
    scope.addHook('onRequest', guard)
    await scope.register(board.registerPlugin(), { prefix: '/admin/queues' })
  })
}, { name: 'monitoring', dependencies: ['metrics', 'queues', 'delivery', 'audience-engine', 'sources', 'destinations'] })
