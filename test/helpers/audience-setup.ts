// Helpers for the audience end-to-end tests: messages sent through the ingestion API, the
// identifies the audience engine emits observed by an ingest stage of the test's own (a real
// stage of the pipeline, after routing), and waiting on the audience's state through the admin API.
import type { FastifyInstance } from 'fastify'
import type { SegmentMessage } from '../../src/segment/types.js'
import type { TestContext } from './app.js'
import { waitFor } from './delivery-setup.js'
import { send } from './ingest-send.js'

export { waitFor }

/** An identify the audience engine emitted, as the ingest pipeline got it. */
export interface Emitted {
  sourceId: string
  message: SegmentMessage & { traits: Record<string, unknown>, context: Record<string, any>, integrations: Record<string, unknown> }
}

/**
 * Observes every message carrying `context.personas` that goes through the ingest pipeline
 * (the engine's syncs, or a real Engage workspace's calls sent by the test).
 */
export function captureEmitted (app: FastifyInstance): Emitted[] {
  const emitted: Emitted[] = []
  app.workers.ingestStages.push(async (sourceId, messages) => {
    for (const message of messages) {
      if ((message.context as { personas?: unknown } | undefined)?.personas !== undefined) emitted.push({ sourceId, message: message as Emitted['message'] })
    }
  })
  return emitted
}

/** The emissions of one audience (by `context.personas.computation_id`). */
export function emittedFor (emitted: Emitted[], audienceId: string): Emitted[] {
  return emitted.filter((e) => e.message.context.personas.computation_id === audienceId)
}

/** userId (or anonymousId) → the values emitted for the audience's key, in order. */
export function valuesByUser (emitted: Emitted[], audienceId: string, key: string): Map<string, unknown[]> {
  const byUser = new Map<string, unknown[]>()
  for (const { message } of emittedFor(emitted, audienceId)) {
    const user = message.userId ?? `anon:${message.anonymousId}`
    let list = byUser.get(user)
    if (list === undefined) byUser.set(user, (list = []))
    list.push(message.traits[key])
  }
  return byUser
}

/** POSTs a batch through the ingestion API; every message must be accepted. */
export async function ingest (ctx: TestContext, writeKey: string, batch: Array<Record<string, unknown>>): Promise<void> {
  const response = await send(ctx.app, '/v1/batch', { batch, sentAt: new Date().toISOString() }, { writeKey })
  const body = response.json()
  if (response.statusCode !== 200 || body.rejected !== undefined) throw new Error(`batch not accepted: ${response.statusCode} ${response.body}`)
}

/** Waits until the ingest queue has nothing waiting, delayed or in progress. */
export async function ingestDrained (ctx: TestContext, timeoutMs = 20_000): Promise<void> {
  let counts: Record<string, number> = {}
  await waitFor(async () => {
    // Every ingest partition (a cluster has 16 by default), summed.
    const all = await Promise.all(ctx.app.queues.ingestPartitions.map((queue) => queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized')))
    counts = {}
    for (const one of all) for (const [state, n] of Object.entries(one)) counts[state] = (counts[state] ?? 0) + n
    return Object.values(counts).every((n) => n === 0)
  }, timeoutMs, () => `the ingest queue to drain (${JSON.stringify(counts)})`)
}

export async function getAudience (ctx: TestContext, audienceId: string): Promise<any> {
  const { statusCode, json } = await ctx.admin('GET', `/v1/audiences/${audienceId}`)
  if (statusCode !== 200) throw new Error(`audience ${audienceId}: ${statusCode} ${JSON.stringify(json)}`)
  return json
}

/** Creates an audience through the admin API (201 expected). */
export async function createAudience (ctx: TestContext, sourceId: string, body: Record<string, unknown>): Promise<any> {
  const { statusCode, json } = await ctx.admin('POST', `/v1/sources/${sourceId}/audiences`, body)
  if (statusCode !== 201) throw new Error(`could not create an audience: ${statusCode} ${JSON.stringify(json)}`)
  return json
}

/** Waits until the audience's GET satisfies `check`; returns it then. */
export async function waitForAudience (ctx: TestContext, audienceId: string, check: (audience: any) => boolean, what: string, timeoutMs = 20_000): Promise<any> {
  let last: any
  await waitFor(async () => {
    last = await getAudience(ctx, audienceId)
    return check(last)
  }, timeoutMs, () => `${what} (last state ${JSON.stringify(last)})`)
  return last
}

/** Waits until the initial sync is done and nothing is in progress. */
export function waitForIdle (ctx: TestContext, audienceId: string, timeoutMs?: number): Promise<any> {
  return waitForAudience(ctx, audienceId, (a) => a.status === 'idle' && a.lastSync !== null, 'the audience to be idle after its initial sync', timeoutMs)
}

/** Every member's userId, read page by page. */
export async function allMembers (ctx: TestContext, audienceId: string, limit = 1000): Promise<string[]> {
  const members: string[] = []
  let cursor: string | null = '0'
  while (cursor !== null) {
    const { statusCode, json }: { statusCode: number, json: any } = await ctx.admin('GET', `/v1/audiences/${audienceId}/members?cursor=${cursor}&limit=${limit}`)
    if (statusCode !== 200) throw new Error(`members of ${audienceId}: ${statusCode} ${JSON.stringify(json)}`)
    members.push(...json.members.map((m: { userId: string }) => m.userId))
    cursor = json.nextCursor
  }
  return members.sort()
}

/** A track of `event` by a user, at `at` (ms since the epoch; now when absent). */
export function trackBy (userId: string, event: string, at = Date.now(), extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'track', userId, event, properties: {}, timestamp: new Date(at).toISOString(), ...extra }
}

export function identifyBy (userId: string, traits: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'identify', userId, traits, ...extra }
}

export const ORDERED_30_DAYS = { type: 'event', event: 'Order Completed', atLeast: 1, withinDays: 30 }
export const DAY_MS = 86_400_000
