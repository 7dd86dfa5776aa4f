import { createHmac, hash, randomBytes } from 'node:crypto'
import { DelayedError, type Job, type Queue } from 'bullmq'
import { Duration } from 'luxon'
import { UnreadableTokenError, type DeadLetter, type DestinationStore, type StoredDestination } from '../plugins/destinations.js'
import { expiredGraphVersion } from '../src/facebook/destination-checks.js'
import { classifyGraphResponse, networkFailure, type GraphError, type GraphOutcome } from '../src/facebook/graph-response.js'
import { graphVersion, type FacebookSettings } from '../src/facebook/settings.js'
import { checkEventTime, type InvalidReason } from '../src/facebook/transform.js'
import { payloadJson, payloadObject, type DeliverJobData, type FirstAttempt, type QueuedConversion } from './queues.js'

export interface DeliverDependencies {
  destinations: DestinationStore
  deliverQueue: Queue<DeliverJobData>
  graphUrl: string
  appSecret?: string
  timeoutMs: number
  /** How often a held job looks again (it is also released when a token is set or the version changed). */
  holdRecheckMs: number
  /** How long conversions may be held (for a token, or an expired version) before they are dead-lettered (7 days). */
  holdMaxMs: number
  /**
   * The app's clock (tests move it): event ages, Graph version expiry, pauses and holds are read
   * against it. BullMQ's delays stay in real time.
   */
  now?: () => number
  log: { warn: (obj: object, msg: string) => void, info: (obj: object, msg: string) => void }
  /** Told of every request to Meta, its outcome and duration (relay_graph_request_duration_seconds). */
  observeGraphRequest?: (outcome: GraphOutcome, seconds: number) => void
}

interface Logger { warn: (obj: object, msg: string) => void, info: (obj: object, msg: string) => void }

export type DeliverResult =
  | { delivered: number, expired?: number }
  | { split: number }
  | { deadLettered: number }
  | { dropped: string }
  | { filtered: number }

/**
 * POSTs one request, timed: every request to Meta, a first attempt's (deliverNow) and the deliver
 * worker's, goes through here.
 */
async function postConversions (deps: DeliverNowDependencies, destination: StoredDestination, version: string, datasetId: string, token: string, conversions: QueuedConversion[]): Promise<GraphOutcome> {
  const started = performance.now()
  const outcome = await sendConversions(deps, destination, version, datasetId, token, conversions)
  deps.observeGraphRequest?.(outcome, (performance.now() - started) / 1000)
  return outcome
}

/** One request: `data`, `upload_tag`, `access_token` in the body (never the URL). */
async function sendConversions (deps: DeliverNowDependencies, destination: StoredDestination, version: string, datasetId: string, token: string, conversions: QueuedConversion[]): Promise<GraphOutcome> {
  const body: Record<string, unknown> = {
    upload_tag: destination.settings.uploadTag,
    access_token: token
  }
  if (destination.settings.testEventCode !== undefined) body.test_event_code = destination.settings.testEventCode
  // With an app secret, Graph calls carry appsecret_proof (apps can make it mandatory).
  if (deps.appSecret !== undefined) body.appsecret_proof = createHmac('sha256', deps.appSecret).update(token).digest('hex')
  const url = `${deps.graphUrl.replace(/\/$/, '')}/${version}/${datasetId}/events`
  let response: Response
  let payload: unknown
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      // The payloads are JSON already (QueuedConversion): written in as they are.
      body: `{"data":[${conversions.map(payloadJson).join(',')}],${JSON.stringify(body).slice(1)}`,
      signal: AbortSignal.timeout(deps.timeoutMs)
    })
    payload = await response.json().catch(() => undefined)
  } catch (err) {
    return networkFailure(err as Error)
  }
  return classifyGraphResponse(response.status, payload, response.headers)
}

/** What a first attempt needs: the deliver worker's dependencies but its queue and hold settings. */
export type DeliverNowDependencies = Pick<DeliverDependencies, 'destinations' | 'graphUrl' | 'appSecret' | 'timeoutMs' | 'now' | 'log' | 'observeGraphRequest'>

/** Counts a delivered request (once for `once`: a job run again after a crash counts it once). */
async function countDelivered (deps: DeliverNowDependencies, destinationId: string, delivered: number, once: string): Promise<void> {
  const at = new Date((deps.now ?? Date.now)()).toISOString()
  await deps.destinations.count(new Map([[destinationId, { delivered }]]), { destinationId, lastSuccessAt: at }, once)
}

/** Pauses a rate-limited destination (only it) until Meta lets it send again; answers until when. */
async function pauseForRateLimit (deps: DeliverNowDependencies, destinationId: string, outcome: Extract<GraphOutcome, { kind: 'rate_limited' }>): Promise<number> {
  const until = (deps.now ?? Date.now)() + outcome.retryAfterMs
  deps.log.warn({ destinationId, error: outcome.error, pausedUntil: new Date(until).toISOString() }, 'rate limited by Meta: pausing this destination')
  await deps.destinations.pause(destinationId, until)
  return until
}

/** Which token a request carried, without keeping the token: a digest of it. */
function tokenTag (token: string): string {
  return hash('sha256', token, 'base64url').slice(0, 16)
}

/**
 * The first attempt at a request, made where its conversions are routed (in the ingest job)
 * instead of through the deliver queue: most requests succeed at once, and a queued job of a
 * thousand conversions cost Redis and the worker more than the request itself. It is made only
 * when nothing stands in the way (the destination, read afresh, enabled and authorised; not
 * paused; a token). Answers 'delivered' (counted); or what the queued job should carry — Meta's
 * answer, which the deliver worker then acts on as if it had made the request itself (so
 * nothing about errors changes, and Meta is not asked twice); or `undefined` when no attempt was
 * made (nor when the destination's Graph version has expired: the queued job is held). A rate
 * limit pauses the destination at once and is not carried: the queued job waits out the pause
 * and asks again.
 */
export async function deliverNow (deps: DeliverNowDependencies, destinationId: string, data: DeliverJobData): Promise<'delivered' | FirstAttempt | undefined> {
  const now = deps.now ?? Date.now
  const store = deps.destinations
  const [destination, pausedUntil, token] = await Promise.all([
    store.get(destinationId),
    store.pausedUntil(destinationId),
    store.accessToken(destinationId).catch(() => undefined)
  ])
  if (destination === undefined || !destination.enabled || destination.authStatus !== 'ok') return undefined
  if ((pausedUntil !== undefined && pausedUntil > now()) || token === undefined) return undefined
  const apiFormat = data.apiFormat ?? destination.settings.apiFormat
  if (expiredGraphVersion(destination.settings, now(), apiFormat) !== undefined) return undefined
  const outcome = await postConversions(deps, destination, graphVersion({ ...destination.settings, apiFormat }), data.datasetId, token, data.conversions)
  // Delivered: the routing stage counts it, with the rest of what it routed (once a job).
  if (outcome.kind === 'delivered') return 'delivered'
  if (outcome.kind === 'rate_limited') {
    await pauseForRateLimit(deps, destinationId, outcome)
    return undefined
  }
  return { outcome, token: tokenTag(token) }
}

/** A digest of conversions' event ids: which part of a job a count is. */
function eventsDigest (conversions: QueuedConversion[]): string {
  return hash('sha256', conversions.map((c) => c.eventId).join('\n'), 'base64url').slice(0, 16)
}

function deadLetters (datasetId: string, apiFormat: FacebookSettings['apiFormat'], conversions: QueuedConversion[], error: GraphError): DeadLetter[] {
  const failedAt = new Date().toISOString()
  return conversions.map((c) => ({
    id: `dl_${randomBytes(8).toString('hex')}`,
    failedAt,
    datasetId,
    apiFormat,
    eventName: c.eventName,
    eventId: c.eventId,
    error,
    payload: payloadObject(c)
  }))
}

/**
 * The deliver worker: one job is one request to Meta for one destination and dataset.
 * Errors follow spec/facebook.md's table. A pause (rate limit) or a hold (no valid token, an
 * expired Graph version) moves the job back to delayed without using an attempt, for this
 * destination only — BullMQ's `worker.rateLimit()` would stop the whole queue and so every other
 * destination.
 */
export function createDeliverProcessor (deps: DeliverDependencies) {
  const now = deps.now ?? Date.now
  const log: Logger = deps.log

  /** Runs the job again after `delayMs` (BullMQ's real time, whatever the app's clock says). */
  async function postpone (job: Job<DeliverJobData>, token: string | undefined, delayMs: number): Promise<never> {
    await job.moveToDelayed(Date.now() + Math.max(0, delayMs), token)
    throw new DelayedError()
  }

  return async function deliver (job: Job<DeliverJobData>, lockToken?: string): Promise<DeliverResult> {
    const { destinationId, datasetId } = job.data
    const destination = await deps.destinations.get(destinationId)
    // A deleted destination takes its counters with it: nothing is left to count against.
    if (destination === undefined) return { dropped: 'destination deleted' }
    const store = deps.destinations
    // The job's outcome (delivered, dead-lettered, filtered) is counted once, under its id: run
    // again after a crash between the count and the job's end, it has nothing left to do.
    const settled = `deliver:${job.id}`
    if (await store.counted(destinationId, settled)) return { dropped: 'settled before a crash' }
    // A job that was held leaves `held` before its conversions are counted anywhere else, so
    // held stays a part of retrying. (A release may have taken it out already: then a no-op.)
    let held = job.data.heldSince !== undefined
    const unhold = async () => {
      if (!held) return
      held = false
      await store.release(destinationId, job.id!)
    }
    // Disabled after these were queued (or while they waited for a token or a pause): they are
    // not sent, and count as filtered — as what is routed while it is disabled would.
    if (!destination.enabled) {
      await unhold()
      await store.count(new Map([[destinationId, { filtered: { disabled: job.data.conversions.length } }]]), undefined, settled)
      return { filtered: job.data.conversions.length }
    }
    const at = now()
    // The payloads' own format decides the version (apiFormat may have changed since they were made).
    const apiFormat = job.data.apiFormat ?? destination.settings.apiFormat

    // Events can age out while held back: Meta refuses them after 62 days (checked at every send).
    const expired = new Map<InvalidReason, number>()
    const conversions = job.data.conversions.filter((c) => {
      const reason = checkEventTime(c.eventTime, at)
      if (reason === undefined) return true
      expired.set(reason, (expired.get(reason) ?? 0) + 1)
      return false
    })
    if (expired.size > 0) {
      // (held again below with what is left, if it still waits)
      await unhold()
      // Once for these events: a run again after a crash finds the same ones expired.
      await store.count(new Map([[destinationId, { invalid: Object.fromEntries(expired) }]]), undefined, `deliver:${job.id}:expired:${eventsDigest(job.data.conversions.filter((c) => checkEventTime(c.eventTime, at) !== undefined))}`)
      if (conversions.length === 0) return { delivered: 0, expired: job.data.conversions.length }
      await job.updateData({ ...job.data, conversions, firstAttempt: undefined })
    }

    const pausedUntil = await store.pausedUntil(destinationId)
    if (pausedUntil !== undefined && pausedUntil > at) {
      // Spread the wake-ups a little so a pause does not end in a burst.
      return postpone(job, lockToken, pausedUntil - at + Math.floor(Math.random() * 1000))
    }

    /**
     * Holds the job (counted in `held`) until it is released or HOLD_MAX has passed since it was
     * first held — on the app's clock — and then dead-letters it with `reason`.
     */
    async function hold (reason: string): Promise<DeliverResult> {
      const heldSince = job.data.heldSince ?? at
      if (at - heldSince >= deps.holdMaxMs) {
        await unhold()
        // Say how long they really waited: HOLD_MAX is configurable (7 days by default).
        const error: GraphError = { message: `held for ${Duration.fromMillis(deps.holdMaxMs).rescale().toHuman()} (HOLD_MAX): ${reason}` }
        await store.addDeadLetters(destinationId, deadLetters(datasetId, apiFormat, conversions, error), error, settled)
        return { deadLettered: conversions.length }
      }
      if (job.data.heldSince === undefined) await job.updateData({ ...job.data, heldSince })
      await store.hold(destinationId, job.id!, conversions.length)
      return postpone(job, lockToken, deps.holdRecheckMs)
    }

    // Meta refuses a retired version: hold rather than send them to be dead-lettered, until
    // apiVersion is changed (which releases them).
    const version = graphVersion({ ...destination.settings, apiFormat })
    const expiredVersion = expiredGraphVersion(destination.settings, at, apiFormat)
    if (expiredVersion !== undefined) {
      return hold(`Graph API ${version} expired on ${expiredVersion.expiry!.expiresAt.toISODate()}: change settings.apiVersion`)
    }

    let token: string | undefined
    let tokenProblem: string | undefined
    if (destination.authStatus === 'ok') {
      try {
        token = await store.accessToken(destinationId)
      } catch (err) {
        // A token stored by a replica with another SECRET_KEY: hold the conversions as for a
        // missing token (fixing the key or setting the token again releases them) and say why,
        // rather than failing the job, which would leave them stuck, neither sent nor dead-lettered.
        if (!(err instanceof UnreadableTokenError)) throw err
        tokenProblem = err.message
        log.warn({ destinationId }, tokenProblem)
        await store.count(new Map(), { destinationId, lastError: { message: tokenProblem, at: new Date(at).toISOString() } })
      }
    }
    if (token === undefined) {
      return hold(tokenProblem ?? (destination.authStatus === 'ok' ? 'no access token was set' : destination.authMessage ?? destination.authStatus))
    }
    if (job.data.heldSince !== undefined) {
      // Released: no longer held, and a later hold starts its own HOLD_MAX.
      await unhold()
      await job.updateData({ ...job.data, heldSince: undefined })
    }

    // The answer to the first attempt, made when the conversions were routed, stands for this
    // run's request if it was made with the same token (and nothing was dropped since) — once:
    // a run after a hold or a retry asks Meta again.
    const first = job.data.firstAttempt
    let outcome: GraphOutcome
    if (first !== undefined && expired.size === 0 && first.token === tokenTag(token)) {
      outcome = first.outcome
      await job.updateData({ ...job.data, firstAttempt: undefined })
    } else {
      outcome = await postConversions(deps, destination, version, datasetId, token, conversions)
    }
    switch (outcome.kind) {
      case 'delivered':
        await countDelivered(deps, destinationId, conversions.length, settled)
        return { delivered: conversions.length, ...(expired.size > 0 ? { expired: job.data.conversions.length - conversions.length } : {}) }
      case 'rate_limited': {
        const until = await pauseForRateLimit(deps, destinationId, outcome)
        await store.count(new Map(), { destinationId, lastError: { ...outcome.error, at: new Date(now()).toISOString() } })
        return postpone(job, lockToken, until - now() + Math.floor(Math.random() * 1000))
      }
      case 'reauthorize':
      case 'permission': {
        // Meta's answer is about the token this request carried. If a new one was set while the
        // request was in flight, marking the destination now would hold everything behind a
        // good token: try again with the new one instead.
        if (await store.accessToken(destinationId).catch(() => undefined) !== token) return postpone(job, lockToken, 0)
        const authStatus = outcome.kind === 'reauthorize' ? 'needs_reauthorization' : 'permission_denied'
        log.warn({ destinationId, error: outcome.error }, `Meta refused the token: destination ${authStatus}, conversions held until a token is set`)
        await store.update(destinationId, { authStatus, authMessage: outcome.error.message })
        await store.count(new Map(), { destinationId, lastError: { ...outcome.error, at: new Date(now()).toISOString() } })
        return hold(outcome.error.message)
      }
      case 'invalid_event': {
        // Meta: one invalid event fails the whole request — split until the bad ones stand alone.
        if (conversions.length === 1) {
          await store.addDeadLetters(destinationId, deadLetters(datasetId, apiFormat, conversions, outcome.error), outcome.error, settled)
          return { deadLettered: 1 }
        }
        const half = Math.ceil(conversions.length / 2)
        // Ids of their own, from this job's: run again after a crash, the split adds no second pair.
        await deps.deliverQueue.addBulk([conversions.slice(0, half), conversions.slice(half)].map((part, i) => ({
          name: 'conversions',
          data: { destinationId, datasetId, apiFormat, conversions: part },
          opts: { jobId: `${job.id}-${i === 0 ? 'a' : 'b'}` }
        })))
        return { split: 2 }
      }
      case 'permanent':
        await store.addDeadLetters(destinationId, deadLetters(datasetId, apiFormat, conversions, outcome.error), outcome.error, settled)
        return { deadLettered: conversions.length }
      case 'transient': {
        const attempts = job.opts.attempts ?? 1
        if (job.attemptsMade + 1 >= attempts) {
          // Out of attempts (hours of backoff): dead-letter, from where they can be replayed.
          await store.addDeadLetters(destinationId, deadLetters(datasetId, apiFormat, conversions, outcome.error), outcome.error, settled)
          return { deadLettered: conversions.length }
        }
        await store.count(new Map(), { destinationId, lastError: { ...outcome.error, at: new Date(now()).toISOString() } })
        throw new Error(outcome.error.message)
      }
    }
  }
}
