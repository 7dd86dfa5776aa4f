import type { Job } from 'bullmq'
import type { Redis } from 'ioredis'
import type { SegmentMessage } from '../src/segment/types.js'
import { jobMessages, type IngestJobData } from './queues.js'

/**
 * A stage of the ingest pipeline: gets every message of a job, in order, grouped by source.
 * Later stages (profiles, audiences, destinations) plug in here. A stage must be idempotent:
 * a job that fails or stalls runs again from the start.
 */
export type IngestStage = (sourceId: string, messages: SegmentMessage[]) => Promise<void>

export function createIngestProcessor (stages: IngestStage[], redis: Redis) {
  return async function processIngestJob (job: Job<IngestJobData>): Promise<{ messages: number }> {
    const { messages, bodyKeys } = await readJobMessages(redis, job.data)
    const bySource = new Map<string, SegmentMessage[]>()
    for (const [sourceId, message] of messages) {
      let list = bySource.get(sourceId)
      if (list === undefined) bySource.set(sourceId, (list = []))
      list.push(message)
    }
    for (const [sourceId, messages] of bySource) {
      for (const stage of stages) await stage(sourceId, messages)
    }
    // Processed: the bodies go (a failed job keeps them for its retries).
    if (bodyKeys.length > 0) await redis.del(...bodyKeys)
    return { messages: messages.length }
  }
}

/**
 * An ingest job's messages, its stored bodies and duplicate-check answer read (they share one
 * hash slot). `bodyKeys` are the keys to remove once the job is processed.
 */
export async function readJobMessages (redis: Redis, data: IngestJobData): Promise<{ messages: Array<[string, SegmentMessage]>, bodyKeys: string[] }> {
  const bodyKeys = (data.requests ?? []).map((request) => request.bodyKey)
  if (data.dedupAnswer !== undefined) bodyKeys.push(data.dedupAnswer)
  const values = bodyKeys.length === 0 ? [] : await redis.mget(...bodyKeys)
  const dedupAnswer = data.dedupAnswer !== undefined ? values.pop() : undefined
  return { messages: jobMessages(data, values, dedupAnswer), bodyKeys }
}
