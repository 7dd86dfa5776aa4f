import type { Job, Queue } from 'bullmq'
import fp from 'fastify-plugin'
import type { RedisClient } from '../src/redis-client.js'
import { orThrow } from '../src/slots.js'
import { bodyKeysOf, INGEST_BODY_TTL_MS, type IngestJobData } from '../jobs/queues.js'

export interface IngestFailure {
  id: string
  failedAt: string | null
  attempts: number
  /** Why the last attempt failed (an infrastructure error: a job never fails for its content). */
  reason: string
  /** The sources whose requests the job holds. */
  sources: string[]
  /** Requests stored by the API (each a message or a batch) and prepared messages (the audience engine's). */
  requests: number
  messages: number
  /** Whether its bodies are still kept (a replay needs them), and until when. */
  bodiesKept: boolean
  bodiesExpireAt: string | null
}

/**
 * Ingest jobs that failed every attempt — for the infrastructure's reasons (Redis, a crash), never
 * their content — kept with their bodies for FAILED_BODY_RETENTION from the failure: listed,
 * replayed, purged. The bodies are raw messages: they are not kept longer than that.
 */
export class IngestFailures {
  /**
   * `queues`: ingest's partitions. With more than one, a failure's id is `<partition>/<job id>`
   * (BullMQ numbers each queue's jobs on its own).
   */
  constructor (private readonly queues: Array<Queue<IngestJobData>>, private readonly redis: RedisClient, readonly retentionMs: number) {}

  /** After a job's last attempt failed: its bodies live FAILED_BODY_RETENTION from now. */
  async failedForGood (data: IngestJobData): Promise<void> {
    const keys = bodyKeysOf(data)
    if (keys.length === 0) return
    const pipeline = this.redis.pipeline()
    for (const key of keys) pipeline.pexpire(key, this.retentionMs)
    orThrow((await pipeline.exec())!)
  }

  async list (offset: number, limit: number): Promise<{ total: number, failures: IngestFailure[] }> {
    await this.removeExpired()
    if (this.queues.length === 1) {
      const [total, jobs] = await Promise.all([this.queues[0].getFailedCount(), this.queues[0].getFailed(offset, offset + limit - 1)])
      return { total, failures: await Promise.all(jobs.filter((job) => job !== undefined).map((job) => this.describe(job))) }
    }
    // Partitions: every partition's failures, the latest first, as one list.
    const jobs = (await Promise.all(this.queues.map((queue) => queue.getFailed(0, -1)))).flat().filter((job) => job !== undefined)
    jobs.sort((a, b) => (b.finishedOn ?? 0) - (a.finishedOn ?? 0))
    return { total: jobs.length, failures: await Promise.all(jobs.slice(offset, offset + limit).map((job) => this.describe(job))) }
  }

  /** Queues failed jobs again (all, or those named); a job whose bodies are gone cannot be, and is named. */
  async replay (ids?: string[]): Promise<{ replayed: number, notReplayed: Array<{ id: string, reason: string }> }> {
    const jobs = await this.failedJobs(ids)
    let replayed = 0
    const notReplayed: Array<{ id: string, reason: string }> = []
    for (const job of jobs) {
      const keys = bodyKeysOf(job.data)
      const kept = keys.length === 0 ? 0 : await this.redis.exists(...keys)
      if (kept < keys.length) {
        notReplayed.push({ id: this.idOf(job), reason: 'its bodies are gone (FAILED_BODY_RETENTION passed): nothing left to process' })
        continue
      }
      // Waiting again, its bodies get a waiting job's life back.
      const pipeline = this.redis.pipeline()
      for (const key of keys) pipeline.pexpire(key, INGEST_BODY_TTL_MS)
      orThrow((await pipeline.exec())!)
      await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true })
      replayed++
    }
    for (const id of ids ?? []) if (!jobs.some((job) => this.idOf(job) === id)) notReplayed.push({ id, reason: 'no failed ingest job has this id' })
    return { replayed, notReplayed }
  }

  /** Removes failed jobs (all, or those named) and their bodies. */
  async purge (ids?: string[]): Promise<number> {
    const jobs = await this.failedJobs(ids)
    for (const job of jobs) {
      const keys = bodyKeysOf(job.data)
      if (keys.length > 0) await this.redis.del(...keys)
      await job.remove()
    }
    return jobs.length
  }

  /** Failed jobs past FAILED_BODY_RETENTION go: BullMQ trims them only when another job fails. */
  async removeExpired (): Promise<void> {
    await Promise.all(this.queues.map((queue) => queue.clean(this.retentionMs, 1000, 'failed')))
  }

  /** A failure's id: its job's, prefixed with its partition's name when there are several. */
  private idOf (job: Job<IngestJobData>): string {
    return this.queues.length === 1 ? job.id! : `${job.queueName}/${job.id!}`
  }

  private async failedJobs (ids?: string[]): Promise<Array<Job<IngestJobData>>> {
    if (ids === undefined) return (await Promise.all(this.queues.map((queue) => queue.getFailed(0, -1)))).flat().filter((job) => job !== undefined)
    const jobs = await Promise.all(ids.map((id) => {
      if (this.queues.length === 1) return this.queues[0].getJob(id)
      const slash = id.indexOf('/')
      const queue = this.queues.find((candidate) => candidate.name === id.slice(0, slash))
      return slash < 0 || queue === undefined ? undefined : queue.getJob(id.slice(slash + 1))
    }))
    const failed: Array<Job<IngestJobData>> = []
    for (const job of jobs) if (job !== undefined && await job.isFailed()) failed.push(job)
    return failed
  }

  private async describe (job: Job<IngestJobData>): Promise<IngestFailure> {
    const keys = bodyKeysOf(job.data)
    const ttl = keys.length === 0 ? -2 : await this.redis.pttl(keys[0])
    const requests = job.data.requests ?? []
    const messages = job.data.messages ?? []
    return {
      id: this.idOf(job),
      failedAt: job.finishedOn === undefined ? null : new Date(job.finishedOn).toISOString(),
      attempts: job.attemptsMade,
      reason: (job.failedReason ?? '').slice(0, 500),
      sources: [...new Set([...requests.map((r) => r.sourceId), ...messages.map(([sourceId]) => sourceId)])],
      requests: requests.length,
      messages: messages.length,
      bodiesKept: keys.length > 0 && ttl !== -2,
      bodiesExpireAt: ttl > 0 ? new Date(Date.now() + ttl).toISOString() : null
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    ingestFailures: IngestFailures
  }
}

export default fp(async (app) => {
  const failures = new IngestFailures(app.queues.ingestPartitions, app.redis, app.config.failedBodyRetentionMs)
  app.decorate('ingestFailures', failures)
  // Failed jobs past their retention go within the hour, whether or not anyone lists them.
  const timer = setInterval(() => { failures.removeExpired().catch((err) => app.log.warn({ err }, 'could not remove expired failed ingest jobs')) }, 10 * 60_000)
  timer.unref()
  app.addHook('onClose', async () => { clearInterval(timer) })
}, { name: 'ingest-failures', dependencies: ['queues', 'redis'] })
