import { createHash } from 'node:crypto'
import type { Queue } from 'bullmq'
import type { DestinationStore, FilterReason, StatsDelta, StoredDestination } from '../plugins/destinations.js'
import { DESTINATION_NAME, DESTINATION_TYPE } from '../src/facebook/settings.js'
import { audienceEntryConversion, transformTrack, type InvalidReason, type TransformOptions, type TransformResult } from '../src/facebook/transform.js'
import { consentAllows, messageConsent, type Consent, type ConsentRule } from '../src/segment/consent.js'
import { audienceChange } from '../src/segment/engage.js'
import { isDestinationEnabled } from '../src/segment/integrations.js'
import type { SegmentMessage } from '../src/segment/types.js'
import type { IngestStage } from './ingest.js'
import { CONSENT_IN_EFFECT } from './audiences.js'
import { SET_ASIDE } from './isolation.js'
import type { DeliverJobData, FirstAttempt, QueuedConversion } from './queues.js'

/** Meta's limits on events per request: Conversions API 1,000; the legacy API 2,000. */
export const MAX_EVENTS = { 'conversions-api': 1000, 'offline-conversions': 2000 } as const

export interface RouteDependencies {
  destinations: DestinationStore
  deliverQueue: Queue<DeliverJobData>
  now?: () => number
  /**
   * The profile's part in each message's conversions — match keys the message lacks, the user's
   * audience properties — read for all of a job's messages at once.
   */
  enrich?: (sourceId: string, messages: SegmentMessage[]) => Promise<Map<SegmentMessage, Enrichment>>
  /**
   * Makes a request's first attempt at once (jobs/deliver.ts deliverNow); unless it was
   * delivered, and without it, the request is queued for the deliver worker.
   */
  deliverNow?: (destinationId: string, data: DeliverJobData) => Promise<'delivered' | FirstAttempt | undefined>
}

/** After a first attempt fails, the destination's requests are queued without one for this long. */
const QUEUE_ONLY_MS = 30_000

/** The profile's part: match keys and audience properties for the transform, and the user's last consent. */
export type Enrichment = Pick<TransformOptions, 'profileKeys' | 'audienceProperties'> & { consent?: Consent }

/** Our audience syncs name the destinations they are for (`context.relay.destinationIds`). */
function addressedTo (message: SegmentMessage, destinationId: string): boolean {
  const ids = (message.context as { relay?: { destinationIds?: unknown } } | undefined)?.relay?.destinationIds
  return !Array.isArray(ids) || ids.includes(destinationId)
}

/**
 * Whether a message goes on to this destination's transform, or why it is filtered: its
 * `integrations` turn the destination off (or it is an audience sync for another), or its user's
 * consent (its own, else the last seen) does not allow the destination. An audience exit is never
 * held back for consent: a user who withdrew consent leaves the destination's audiences.
 */
function routing (message: SegmentMessage, destinationId: string, rule: ConsentRule, consentOf: (message: SegmentMessage) => Consent | undefined): 'routed' | FilterReason {
  if (!isDestinationEnabled(message.integrations, DESTINATION_NAME) || !addressedTo(message, destinationId)) return 'integrations'
  if (rule.categories.length > 0 && audienceChange(message)?.member !== false && !consentAllows(rule, consentOf(message))) return 'consent'
  return 'routed'
}

/** A routed result: a conversion ready for a request (its payload serialised once), or why not. */
type Routed =
  | { kind: 'conversion', datasetId: string, queued: QueuedConversion, droppedPii: number }
  | Extract<TransformResult, { kind: 'invalid' }>

/**
 * The conversions one message makes for one destination: a track's, one per map it is in; an
 * identify's, one when its user enters an audience the destination maps (audienceEntryEvents).
 * Every lookup of a key the message gives is of the setting's own entries.
 */
function conversionsOf (message: SegmentMessage, destination: StoredDestination, at: number, enrichment: Enrichment | undefined): Routed[] {
  let results: TransformResult[] = []
  if (message.type === 'track') {
    results = transformTrack(message, destination.settings, { now: at, ...enrichment })
  } else {
    // An identify never makes a request to Meta by itself; an audience entry (false → true)
    // sends one conversion where the destination maps that audience (audienceEntryEvents).
    const change = audienceChange(message)
    const entries = destination.settings.audienceEntryEvents
    const datasetId = change?.member === true && Object.hasOwn(entries, change.key) ? entries[change.key] : undefined
    if (datasetId !== undefined) {
      results = [audienceEntryConversion({
        audienceKey: change!.key,
        datasetId,
        messageId: message.messageId,
        timestamp: message.timestamp,
        userId: message.userId,
        profileKeys: enrichment?.profileKeys
      }, destination.settings, at)]
    }
  }
  return results.map((result) => {
    if (result.kind === 'invalid') return result
    const { datasetId, eventId, eventName, eventTime, payload } = result.conversion
    return { kind: 'conversion', datasetId, droppedPii: result.droppedPii, queued: { eventId, eventName, eventTime, payload: JSON.stringify(payload) } }
  })
}

/**
 * The ingest stage that routes messages to the source's enabled destinations: each track becomes
 * conversions (one per matching map), grouped per destination and dataset into deliver jobs of at
 * most one request each. Everything routed is counted: received, and then filtered (unmapped,
 * not a track, or turned off by `integrations`), invalid (with the reason) or queued.
 */
export function createRouteStage (deps: RouteDependencies): IngestStage {
  const now = deps.now ?? Date.now
  // Destinations whose last first attempt failed, and until when they go straight to the queue:
  // while Meta is slow or failing, ingest jobs do not wait on it.
  const queueOnlyUntil = new Map<string, number>()
  return async function route (sourceId, messages, context) {
    const enabled = (await deps.destinations.forSource(sourceId)).filter((d) => d.enabled && d.type === DESTINATION_TYPE)
    if (enabled.length === 0) return
    // This run's part of the job's books: the job, the source and these very messages (a stage
    // halved around a failing message runs on parts). A destination that counted it already (the
    // job ran before, and died after counting) had every conversion of it sent or queued before
    // that count: it is skipped, so nothing is counted, sent or queued twice.
    const part = `ingest:${context.jobId}:${sourceId}:${createHash('sha256').update(messages.map((m) => m.messageId).join('\n')).digest('base64url').slice(0, 16)}`
    const done = context.jobId === '' ? enabled.map(() => false) : await Promise.all(enabled.map((d) => deps.destinations.counted(d.id, part)))
    const destinations = enabled.filter((_, i) => !done[i])
    if (destinations.length === 0) return
    const deltas = new Map<string, StatsDelta>()
    const jobs: Array<{ name: string, data: DeliverJobData }> = []
    const at = now()
    // A destination that names consent categories judges a message without consent of its own by
    // the consent last seen for its user (the profile's).
    const consentMatters = destinations.some((d) => d.settings.consentCategories.length > 0)
    const needsProfile = messages.filter((m) => m.type === 'track' || audienceChange(m)?.member === true || (consentMatters && messageConsent(m) === undefined))
    const enrichment = deps.enrich === undefined || needsProfile.length === 0 ? new Map<SegmentMessage, Enrichment>() : await deps.enrich(sourceId, needsProfile)
    // The consent in effect for messages whose user's consent this very job changed (the profile
    // already holds the job's last): from the audience stage, in order.
    const inEffect = context.carry.get(CONSENT_IN_EFFECT) as Map<SegmentMessage, Consent | undefined> | undefined
    const consentOf = (message: SegmentMessage): Consent | undefined => {
      const own = messageConsent(message)
      if (own !== undefined) return own
      return inEffect?.has(message) === true ? inEffect.get(message) : enrichment.get(message)?.consent
    }

    for (const destination of destinations) {
      const delta = { received: 0, filtered: {} as Partial<Record<FilterReason, number>>, droppedPii: 0, invalid: {} as Partial<Record<InvalidReason, number>> }
      const filter = (reason: FilterReason) => { delta.received++; delta.filtered[reason] = (delta.filtered[reason] ?? 0) + 1 }
      deltas.set(destination.id, delta)
      const consentRule: ConsentRule = { categories: destination.settings.consentCategories, requireConsent: destination.settings.requireConsent }
      const byDataset = new Map<string, QueuedConversion[]>()
      for (const message of messages) {
        const routed = context.guard('route', message, () => routing(message, destination.id, consentRule, consentOf), destination.id)
        const results = routed === 'routed'
          ? context.guard('transform', message, () => conversionsOf(message, destination, at, enrichment.get(message)), destination.id)
          : routed
        if (results === SET_ASIDE) {
          // Routed here and not processable: invalid for this destination, and the job goes on.
          delta.received++
          delta.invalid.unprocessable = (delta.invalid.unprocessable ?? 0) + 1
          continue
        }
        if (typeof results === 'string') {
          filter(results)
          continue
        }
        if (results.length === 0) {
          filter('unmapped')
          continue
        }
        for (const result of results) {
          delta.received++
          if (result.kind === 'invalid') {
            delta.invalid[result.reason] = (delta.invalid[result.reason] ?? 0) + 1
            continue
          }
          delta.droppedPii += result.droppedPii
          let list = byDataset.get(result.datasetId)
          if (list === undefined) byDataset.set(result.datasetId, (list = []))
          list.push(result.queued)
        }
      }
      const apiFormat = destination.settings.apiFormat
      const max = MAX_EVENTS[apiFormat]
      for (const [datasetId, conversions] of byDataset) {
        for (let i = 0; i < conversions.length; i += max) {
          jobs.push({ name: 'conversions', data: { destinationId: destination.id, datasetId, apiFormat, conversions: conversions.slice(i, i + max) } })
        }
      }
    }
    // Deliver or queue first, count second: a crash in between re-runs the ingest job, which may
    // send a conversion twice (Meta de-duplicates by event_id) but never loses one.
    const attempts = await Promise.all(jobs.map((job) => firstAttempt(job.data.destinationId, job.data)))
    const deliveredAt = new Date(now()).toISOString()
    const toQueue = jobs.flatMap(({ name, data }, j) => {
      const attempt = attempts[j]
      if (attempt === 'delivered') {
        const delta = deltas.get(data.destinationId)!
        delta.delivered = (delta.delivered ?? 0) + data.conversions.length
        delta.lastSuccessAt = deliveredAt
        return []
      }
      // An id from this run's part: the same request queued again by a run after a crash is one
      // job, and a job that ran already finds itself settled (jobs/deliver.ts).
      const jobId = context.jobId === '' ? undefined : `r-${createHash('sha256').update(`${part}\n${data.destinationId}\n${data.datasetId}\n${j}`).digest('base64url').slice(0, 22)}`
      return [{ name, data: attempt === undefined ? data : { ...data, firstAttempt: attempt }, ...(jobId === undefined ? {} : { opts: { jobId } }) }]
    })
    if (toQueue.length > 0) await deps.deliverQueue.addBulk(toQueue)
    await deps.destinations.count(deltas, undefined, context.jobId === '' ? '' : part)
  }

  async function firstAttempt (destinationId: string, data: DeliverJobData): Promise<'delivered' | FirstAttempt | undefined> {
    if (deps.deliverNow === undefined || (queueOnlyUntil.get(destinationId) ?? 0) > now()) return undefined
    let attempt: 'delivered' | FirstAttempt | undefined
    try {
      attempt = await deps.deliverNow(destinationId, data)
    } catch {
      // Redis trouble reading the destination, its pause or its token: the queue decides.
    }
    if (attempt === 'delivered') queueOnlyUntil.delete(destinationId)
    else queueOnlyUntil.set(destinationId, now() + QUEUE_ONLY_MS)
    return attempt
  }
}
