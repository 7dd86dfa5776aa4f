import type { Job } from 'bullmq'
import type { RedisClient } from '../src/redis-client.js'
import type { SegmentMessage } from '../src/segment/types.js'
import { errorWithoutContent, JobIsolation, runIsolated, type StageContext } from './isolation.js'
import { jobMessages, type IngestJobData } from './queues.js'

/**
 * A stage of the ingest pipeline: gets every message of a job, in order, grouped by source.
 * Later stages (profiles, audiences, destinations) plug in here. A stage must be idempotent:
 * a job that fails or stalls runs again from the start. A stage runs each message's own work
 * through `context.guard`, so that a message no code can process is set aside alone.
 */
export type IngestStage = (sourceId: string, messages: SegmentMessage[], context: StageContext) => Promise<void>

export interface IngestProcessorOptions {
  /** Adds the job's unprocessable messages to their sources' counts. */
  countUnprocessable?: (bySource: Map<string, number>, once: string) => Promise<void>
  log?: { error: (obj: object, msg: string) => void }
}

/**
 * The ingest job's processor. It fails only for the infrastructure (Redis, a crash: the job runs
 * again); a message that fails anywhere — its parse, a stage — is set aside alone, counted as
 * `unprocessable`, and every other message of the job goes on.
 */
export function createIngestProcessor (stages: IngestStage[], redis: RedisClient, options: IngestProcessorOptions = {}) {
  return async function processIngestJob (job: Job<IngestJobData>): Promise<{ messages: number, unprocessable: number }> {
    const isolation = new JobIsolation()
    // Unique across ingest partitions (each numbers its jobs from 1): the job's own markers
    // (counted once) must not meet another partition's job of the same number.
    const jobKey = job.queueName === 'ingest' || job.id === undefined ? job.id ?? '' : `${job.queueName}/${job.id}`
    const { messages, bodyKeys } = await readJobMessages(redis, job.data, (sourceId, error, messageId) => {
      isolation.add(sourceId, messageId === undefined ? undefined : { messageId } as SegmentMessage, 'prepare', error)
    })
    const bySource = new Map<string, SegmentMessage[]>()
    for (const [sourceId, message] of messages) {
      let list = bySource.get(sourceId)
      if (list === undefined) bySource.set(sourceId, (list = []))
      list.push(message)
    }
    for (const [sourceId, messages] of bySource) {
      const context = isolation.context(sourceId, jobKey)
      for (const stage of stages) {
        await runIsolated(
          (part) => stage(sourceId, isolation.remaining(part), context),
          isolation.remaining(messages),
          (message, error) => isolation.add(sourceId, message, 'stage', error))
      }
    }
    for (const record of isolation.records) {
      options.log?.error({ jobId: job.id, sourceId: record.sourceId, messageId: record.messageId, step: record.step, destinationId: record.destinationId, error: errorWithoutContent(record.error) }, 'a message could not be processed; it was set aside and the job went on')
    }
    if (isolation.records.length > 0) await options.countUnprocessable?.(isolation.unprocessable, `ingest:${jobKey}`)
    // Processed: the bodies go (a failed job keeps them for its retries).
    if (bodyKeys.length > 0) await redis.del(...bodyKeys)
    return { messages: messages.length, unprocessable: isolation.records.length }
  }
}

/**
 * An ingest job's messages, its stored bodies and duplicate-check answer read in one round trip
 * (they share one hash slot). `bodyKeys` are the keys to remove once the job is processed. A
 * message that cannot be read goes to `onUnprocessable` (without it, the read throws).
 */
export async function readJobMessages (
  redis: RedisClient,
  data: IngestJobData,
  onUnprocessable?: (sourceId: string, error: unknown, messageId?: string) => void
): Promise<{ messages: Array<[string, SegmentMessage]>, bodyKeys: string[] }> {
  const requests = data.requests ?? []
  if (requests.length === 0) return { messages: jobMessages(data), bodyKeys: [] }
  const read = redis.pipeline()
  const bodyKeys: string[] = []
  if (data.bodies !== undefined) {
    read.hmget(data.bodies, ...requests.map((request) => String(request.body)))
    bodyKeys.push(data.bodies)
  } else {
    // A job stored by an earlier build: a key per body.
    const keys = requests.map((request) => request.bodyKey!)
    read.mget(...keys)
    bodyKeys.push(...keys)
  }
  if (data.dedupAnswer !== undefined) {
    read.get(data.dedupAnswer)
    bodyKeys.push(data.dedupAnswer)
  }
  const answers = (await read.exec())!
  const failed = answers.find(([err]) => err !== null)
  if (failed !== undefined) throw failed[0]
  const bodies = answers[0][1] as Array<string | null>
  const dedupAnswer = data.dedupAnswer !== undefined ? answers[1][1] as string | null : undefined
  return { messages: jobMessages(data, bodies, dedupAnswer, onUnprocessable), bodyKeys }
}
