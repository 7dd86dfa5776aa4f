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
 * An ingest job's messages, its stored bodies and duplicate-check answer read in one round trip
 * (they share one hash slot). `bodyKeys` are the keys to remove once the job is processed.
 */
export async function readJobMessages (redis: Redis, data: IngestJobData): Promise<{ messages: Array<[string, SegmentMessage]>, bodyKeys: string[] }> {
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
  return { messages: jobMessages(data, bodies, dedupAnswer), bodyKeys }
}
