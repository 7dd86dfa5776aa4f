import type { Job } from 'bullmq'
import type { SegmentMessage } from '../src/segment/types.js'
import { jobMessages, type IngestJobData } from './queues.js'

/**
 * A stage of the ingest pipeline: gets every message of a job, in order, grouped by source.
 * Later stages (profiles, audiences, destinations) plug in here. A stage must be idempotent:
 * a job that fails or stalls runs again from the start.
 */
export type IngestStage = (sourceId: string, messages: SegmentMessage[]) => Promise<void>

export function createIngestProcessor (stages: IngestStage[]) {
  return async function processIngestJob (job: Job<IngestJobData>): Promise<{ messages: number }> {
    const messages = jobMessages(job.data)
    const bySource = new Map<string, SegmentMessage[]>()
    for (const [sourceId, message] of messages) {
      let list = bySource.get(sourceId)
      if (list === undefined) bySource.set(sourceId, (list = []))
      list.push(message)
    }
    for (const [sourceId, messages] of bySource) {
      for (const stage of stages) await stage(sourceId, messages)
    }
    return { messages: messages.length }
  }
}
