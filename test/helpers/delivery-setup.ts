// Helpers for the delivery end-to-end tests: the whole service against its own Redis and a fake
// Graph API, destinations created through the admin API, events sent over HTTP, and waiting for
// the destination's counters to settle (no fixed sleeps).
import { randomUUID } from 'node:crypto'
import { Analytics } from '@segment/analytics-node'
import type { Test } from 'tap'
import { DEFAULT_TOKEN, startFakeGraph, type FakeGraph, type FakeGraphOptions } from '../fixtures/fake-graph.js'
import { basicAuth, buildTestApp, type TestContext } from './app.js'
import { freshPrefix } from './ingest-queue.js'
import type { TestRedis } from './redis.js'

export const DESTINATION_TYPE = 'facebook-offline-conversions'

/** Fast retries and holds, so every error path plays out in well under a second. */
export const FAST_DELIVERY_ENV: Record<string, string> = {
  DELIVER_BACKOFF_MS: '20',
  DELIVER_MAX_BACKOFF_MS: '200',
  DELIVER_ATTEMPTS: '4',
  HOLD_RECHECK_MS: '200',
  GRAPH_TIMEOUT_MS: '500'
}

interface Teardown { teardown: (fn: () => unknown) => void }

// The stats as the admin API serves them: the store's own type.
import type { DestinationStats } from '../../plugins/destinations.js'
export type { DestinationStats }

type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>

/**
 * Polls `check` until it returns something truthy, and returns that. Throws after `timeoutMs`
 * with `what` (a string, or a function that describes the last state seen).
 */
export async function waitFor<T> (check: () => T | Promise<T>, timeoutMs = 20_000, what: string | (() => string) = 'a condition'): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as Truthy<T>
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

export interface DeliverySetup {
  ctx: TestContext
  graph: FakeGraph
}

/**
 * A fake Graph API and the service (listening, fast delivery settings) pointed at it. With
 * `redis`, the app shares that server under a fresh key prefix (several apps in one file).
 */
export async function startDelivery (t: Teardown, options: { env?: Record<string, string>, graph?: FakeGraphOptions, redis?: TestRedis } = {}): Promise<DeliverySetup> {
  const graph = await startFakeGraph(options.graph)
  t.teardown(() => graph.close())
  const ctx = await buildTestApp(t, {
    listen: true,
    ...(options.redis === undefined ? {} : { redis: freshPrefix(options.redis) }),
    env: { FACEBOOK_GRAPH_URL: graph.url, ...FAST_DELIVERY_ENV, ...options.env }
  })
  return { ctx, graph }
}

/**
 * Creates a destination on the source through the admin API and stores `token` (the fake's
 * valid token unless told otherwise; `null` stores none). Returns the destination as GET shows it.
 */
export async function createDestination (ctx: TestContext, sourceId: string, settings: Record<string, unknown>, options: { token?: string | null, name?: string, enabled?: boolean } = {}): Promise<any> {
  const body: Record<string, unknown> = { type: DESTINATION_TYPE, settings }
  if (options.name !== undefined) body.name = options.name
  if (options.enabled !== undefined) body.enabled = options.enabled
  const created = await ctx.admin('POST', `/v1/sources/${sourceId}/destinations`, body)
  if (created.statusCode !== 201) throw new Error(`could not create a destination: ${created.statusCode} ${JSON.stringify(created.json)}`)
  const token = options.token === undefined ? DEFAULT_TOKEN : options.token
  if (token !== null) {
    const put = await ctx.admin('PUT', `/v1/destinations/${created.json.id}/access-token`, { accessToken: token })
    if (put.statusCode !== 204) throw new Error(`could not store a token: ${put.statusCode} ${JSON.stringify(put.json)}`)
  }
  return getDestination(ctx, created.json.id)
}

export async function destinationStats (ctx: TestContext, destinationId: string): Promise<DestinationStats> {
  const { statusCode, json } = await ctx.admin('GET', `/v1/destinations/${destinationId}/stats`)
  if (statusCode !== 200) throw new Error(`stats of ${destinationId}: ${statusCode} ${JSON.stringify(json)}`)
  return json
}

export async function getDestination (ctx: TestContext, destinationId: string): Promise<any> {
  const { statusCode, json } = await ctx.admin('GET', `/v1/destinations/${destinationId}`)
  if (statusCode !== 200) throw new Error(`destination ${destinationId}: ${statusCode} ${JSON.stringify(json)}`)
  return json
}

/**
 * Waits until the destination has received `received` conversions and none is still retrying
 * (everything delivered, filtered, invalid or dead-lettered); returns the stats then.
 */
export async function settledStats (ctx: TestContext, destinationId: string, received: number, timeoutMs = 20_000): Promise<DestinationStats> {
  let last: DestinationStats | undefined
  await waitFor(async () => {
    last = await destinationStats(ctx, destinationId)
    return last.received >= received && last.retrying === 0
  }, timeoutMs, () => `${destinationId} to settle ${received} conversions (last stats ${JSON.stringify(last)})`)
  return last!
}

/** The outcome counts add up and nothing is left in between: every conversion ended somewhere. */
export function assertAccounted (t: Pick<Test, 'equal'>, stats: DestinationStats, received: number): void {
  t.equal(stats.received, received, `received ${received}`)
  t.equal(stats.retrying, 0, 'nothing left retrying')
  t.equal(stats.filtered + stats.invalid.total + stats.delivered + stats.deadLettered + stats.retrying, stats.received,
    'received = filtered + invalid.total + delivered + deadLettered + retrying')
  const byReason = Object.values(stats.invalid.byReason).reduce((sum, n) => sum + n, 0)
  t.equal(byReason, stats.invalid.total, 'invalid.byReason adds up to invalid.total')
}

let sequence = 0

/** A track message with its own messageId (the conversion's event_id) and a current timestamp. */
export function track (event: string, properties: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, any> {
  return {
    type: 'track',
    messageId: `msg-${++sequence}-${randomUUID()}`,
    userId: 'user-1',
    event,
    properties,
    timestamp: new Date().toISOString(),
    ...extra
  }
}

/** POSTs a batch to /v1/batch over HTTP; every message must be accepted. */
export async function sendBatch (ctx: TestContext, writeKey: string, messages: Array<Record<string, unknown>>): Promise<void> {
  const response = await fetch(`${ctx.url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: basicAuth(writeKey), 'content-type': 'application/json' },
    body: JSON.stringify({ batch: messages, sentAt: new Date().toISOString() })
  })
  const body = await response.json() as { success: boolean, rejected?: unknown[] }
  if (response.status !== 200 || body.success !== true || body.rejected !== undefined) {
    throw new Error(`batch not accepted: ${response.status} ${JSON.stringify(body)}`)
  }
}

/** Sends calls (`{type, ...params}`) through the official Node library, as a customer would. */
export async function sendWithAnalytics (ctx: TestContext, writeKey: string, calls: Array<Record<string, any>>): Promise<void> {
  const analytics = new Analytics({ writeKey, host: ctx.url, path: '/v1/batch', flushAt: 20, flushInterval: 20, maxRetries: 0 })
  const errors: unknown[] = []
  analytics.on('error', (err) => { errors.push(err) })
  for (const { type, ...params } of calls) (analytics as any)[type](params)
  await analytics.closeAndFlush({ timeout: 10_000 })
  if (errors.length > 0) throw new Error(`analytics-node reported ${JSON.stringify(errors)}`)
}

/** event_id of every event the fake Graph API accepted (per dataset when given). */
export function deliveredEventIds (graph: FakeGraph, datasetId?: string): string[] {
  return graph.events(datasetId).map((event) => event.event_id)
}
