import type { JobsOptions } from 'bullmq'
import type { FacebookSettings } from '../src/facebook/settings.js'
import type { SegmentMessage } from '../src/segment/types.js'

export const QUEUE_NAMES = {
  ingest: 'ingest'
} as const

/**
 * One ingest job carries many messages (group commit): per-message jobs cap near 7–12k/s.
 * Each entry is `[sourceId, message]`.
 */
export interface IngestJobData {
  messages: Array<[string, SegmentMessage]>
}

export const INGEST_JOB_OPTIONS: JobsOptions = {
  // Queued messages carry raw traits: a finished job keeps nothing.
  removeOnComplete: true,
  // A job that failed every attempt is kept a week for inspection and retry, then removed.
  removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
  attempts: 8,
  backoff: { type: 'exponential', delay: 1000 }
}

export const DELIVER_QUEUE = 'deliver'

/** One conversion of a deliver job: the event exactly as it goes into the request's `data`. */
export interface QueuedConversion {
  eventId: string
  eventName: string
  eventTime: number
  payload: Record<string, unknown>
}

/** One request's worth of conversions for one destination and dataset. */
export interface DeliverJobData {
  destinationId: string
  datasetId: string
  /**
   * The format the payloads were written in. It decides the Graph version, so conversions queued
   * before `apiFormat` changes still go where Meta takes them. Absent on jobs queued by older
   * builds: the destination's current setting.
   */
  apiFormat?: FacebookSettings['apiFormat']
  conversions: QueuedConversion[]
}
