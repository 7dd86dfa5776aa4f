import { Queue, Worker } from 'bullmq'
import fp from 'fastify-plugin'
import { createDeliverProcessor, deliverNow } from '../jobs/deliver.js'
import { countProcessed } from '../jobs/queue-stats.js'
import { superviseWorker, type SupervisedWorker } from '../jobs/worker-supervisor.js'
import { DELIVER_QUEUE, type DeliverJobData } from '../jobs/queues.js'
import { createRouteStage, type Enrichment } from '../jobs/route.js'
import type { SegmentMessage } from '../src/segment/types.js'

/** The longest a first attempt, made in the ingest job, waits for Meta. */
const FIRST_ATTEMPT_TIMEOUT_MS = 5000

declare module 'fastify' {
  interface FastifyInstance {
    deliverQueue: Queue<DeliverJobData>
    /** Stores a token, marks the destination authorised again and releases its held conversions. */
    connectDestinationToken: (destinationId: string, token: string) => Promise<void>
    /**
     * Runs the destination's held deliver jobs again at once (what held them may be gone: a token
     * set, the Graph version changed); those still blocked are held again.
     */
    releaseHeldConversions: (destinationId: string) => Promise<void>
  }
}

/**
 * The deliver queue (every role: the admin API re-queues dead letters and releases held jobs) and,
 * in worker roles, the deliver worker and the ingest stage that routes messages to destinations.
 */
export default fp(async (app) => {
  const config = app.config
  const deliverQueue = new Queue<DeliverJobData>(DELIVER_QUEUE, {
    connection: app.redis,
    prefix: app.keys.queuePrefixOf('deliver'),
    defaultJobOptions: {
      attempts: config.DELIVER_ATTEMPTS,
      backoff: { type: 'jitter' },
      removeOnComplete: true,
      // Failures are dead-lettered by the processor itself; a job that still fails (a bug, Redis
      // trouble) is kept a week for inspection.
      removeOnFail: { age: 7 * 24 * 3600, count: 10_000 }
    }
  })
  deliverQueue.on('error', (err) => app.log.warn({ err }, 'deliver queue error'))
  app.decorate('deliverQueue', deliverQueue)
  async function releaseHeldConversions (destinationId: string): Promise<void> {
    for (const jobId of await app.destinations.takeHeld(destinationId)) {
      const job = await deliverQueue.getJob(jobId)
      // Promote may race the job's own wake-up; either way it runs once more.
      if (job !== undefined && await job.isDelayed()) await job.promote().catch(() => {})
    }
  }
  app.decorate('releaseHeldConversions', releaseHeldConversions)
  app.decorate('connectDestinationToken', async (destinationId: string, token: string) => {
    await app.destinations.setAccessToken(destinationId, token)
    await app.destinations.update(destinationId, { authStatus: 'ok' })
    await releaseHeldConversions(destinationId)
  })

  let supervised: SupervisedWorker<DeliverJobData> | undefined
  if (config.ROLE !== 'api') {
    app.workers.ingestStages.push(createRouteStage({
      destinations: app.destinations,
      deliverQueue,
      now: app.now,
      // "The more user information you send, the better the attribution": a conversion gets the
      // match keys its message lacks, and the user's audience properties, from the profile.
      enrich: async (sourceId, messages) => {
        const profileIds = await app.profiles.identities(sourceId, messages)
        const wanted = [...new Set(profileIds.filter((id): id is string => id !== undefined))]
        const profiles = new Map((await app.profiles.getMany(sourceId, wanted)).map((profile, i) => [wanted[i], profile]))
        const enrichment = new Map<SegmentMessage, Enrichment>()
        messages.forEach((message, i) => {
          const profileId = profileIds[i]
          const profile = profileId === undefined ? undefined : profiles.get(profileId)
          if (profile === undefined) return
          // An anonymous message of a known user carries the user's id too (anonymousId linked).
          const profileKeys = profileId!.startsWith('anon:') ? profile.matchKeys : { ...profile.matchKeys, external_id: profileId }
          enrichment.set(message, { profileKeys, audienceProperties: profile.audiences, consent: profile.consent })
        })
        return enrichment
      },
      // The first attempt is made in the ingest job; a short timeout keeps a slow Meta from
      // holding ingestion up (the queued attempt then has the full one).
      deliverNow: (destinationId, data) => deliverNow({
        destinations: app.destinations,
        graphUrl: config.FACEBOOK_GRAPH_URL,
        appSecret: config.FACEBOOK_APP_SECRET,
        timeoutMs: Math.min(config.GRAPH_TIMEOUT_MS, FIRST_ATTEMPT_TIMEOUT_MS),
        now: app.now,
        log: app.log,
        observeGraphRequest: app.metrics.observeGraphRequest
      }, destinationId, data)
    }))
    supervised = superviseWorker(deliverQueue, () => {
      const worker = new Worker<DeliverJobData>(DELIVER_QUEUE, app.work.deliverJobs.wrap(createDeliverProcessor({
        destinations: app.destinations,
        deliverQueue,
        graphUrl: config.FACEBOOK_GRAPH_URL,
        appSecret: config.FACEBOOK_APP_SECRET,
        timeoutMs: config.GRAPH_TIMEOUT_MS,
        holdRecheckMs: config.HOLD_RECHECK_MS,
        holdMaxMs: config.holdMaxMs,
        now: app.now,
        log: app.log,
        observeGraphRequest: app.metrics.observeGraphRequest
      })), {
        connection: app.workerConnection,
        prefix: app.keys.queuePrefixOf('deliver'),
        concurrency: config.DELIVER_CONCURRENCY,
        lockDuration: config.STALLED_INTERVAL_MS,
        stalledInterval: config.STALLED_INTERVAL_MS,
        // BullMQ fails a job whose worker died more than once (maxStalledCount 1), and the
        // processor never sees it again: its conversions would stay "retrying", neither sent nor
        // dead-lettered. Running a deliver job again is safe (Meta de-duplicates by event_id), so a
        // worker dying mid-request counts like a transient error: as many times as the attempts.
        maxStalledCount: config.DELIVER_ATTEMPTS,
        autorun: false,
        settings: {
        // Exponential backoff with full jitter, capped: retries spread out instead of arriving together.
          backoffStrategy: (attemptsMade: number) => {
            const ceiling = Math.min(config.DELIVER_MAX_BACKOFF_MS, config.DELIVER_BACKOFF_MS * 2 ** Math.max(0, attemptsMade - 1))
            return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
          }
        }
      })
      countProcessed(worker, app.workerConnection, app.keys.queueProcessed)
      worker.on('error', (err) => app.log.warn({ err }, 'deliver worker error'))
      worker.on('failed', (job, err) => {
        if (job !== undefined && job.attemptsMade < (job.opts.attempts ?? 1)) app.log.info({ jobId: job.id, attempt: job.attemptsMade, err: err.message }, 'delivery will be retried')
        else app.log.error({ err, jobId: job?.id }, 'deliver job failed')
      })
      return worker
    }, { redis: app.redis, intervalMs: config.STALLED_INTERVAL_MS, log: app.log })
    app.addHook('onReady', async () => { supervised!.start() })
  }

  app.addHook('onClose', async () => {
    await supervised?.close(config.SHUTDOWN_TIMEOUT_MS)
    await deliverQueue.close()
  })
}, { name: 'delivery', dependencies: ['destinations', 'redis', 'profiles', 'metrics'] })
