import { ReplyError } from 'ioredis'
import type { SegmentMessage } from '../src/segment/types.js'

/**
 * Where in the ingest worker a message's own work happens: its parse and server fields
 * (`prepare`), its profile update (`profiles`), its history and audiences (`audiences`), its
 * routing to a destination (`route`) and its conversion (`transform`). `stage` is a whole stage
 * that failed for this message alone (found by halving the stage's list, see runIsolated).
 */
export type IngestStep = 'prepare' | 'profiles' | 'audiences' | 'route' | 'transform' | 'stage'

/**
 * Test builds make a chosen message throw at a chosen step, to show that every step sets a
 * failing message aside alone (test/jobs/isolation.test.ts). Unset in the service.
 */
export const faultInjection: { at?: (step: IngestStep, message: { messageId?: unknown }) => void } = {}

/** What a guarded step answers for a message that threw: it is set aside. */
export const SET_ASIDE: unique symbol = Symbol('set aside')

export interface StageContext {
  /**
   * Runs one message's part of a step. When it throws, the message is set aside — counted as
   * `unprocessable`, its error logged without its content — and SET_ASIDE is answered: the caller
   * goes on with the other messages. `destinationId`: the step was that destination's (which
   * counts the message as invalid, `unprocessable`, itself).
   */
  guard: <T>(step: IngestStep, message: SegmentMessage, fn: () => T, destinationId?: string) => T | typeof SET_ASIDE
  /** Whether a message was set aside by an earlier step (or for another destination). */
  isSetAside: (message: SegmentMessage) => boolean
  /** What a stage tells the later stages of the same job (and source), in memory. */
  carry: Map<string, unknown>
  /** The ingest job's id: what its counts are kept once under. */
  jobId: string
}

export interface SetAsideRecord {
  sourceId: string
  messageId?: string
  step: IngestStep
  destinationId?: string
  error: unknown
}

/**
 * One job's record of the messages it set aside. Each message counts once for its source,
 * however many steps or destinations it failed in.
 */
export class JobIsolation {
  private readonly setAside = new Set<SegmentMessage>()
  /** Per source, messages set aside (including those of `prepare`, which have no message yet). */
  readonly unprocessable = new Map<string, number>()
  readonly records: SetAsideRecord[] = []

  /** The context of one source's stages. */
  context (sourceId: string, jobId = ''): StageContext {
    return {
      carry: new Map(),
      jobId,
      guard: (step, message, fn, destinationId) => {
        try {
          faultInjection.at?.(step, message)
          return fn()
        } catch (error) {
          this.add(sourceId, message, step, error, destinationId)
          return SET_ASIDE
        }
      },
      isSetAside: (message) => this.setAside.has(message)
    }
  }

  add (sourceId: string, message: SegmentMessage | undefined, step: IngestStep, error: unknown, destinationId?: string): void {
    if (message !== undefined) {
      if (this.setAside.has(message)) return
      this.setAside.add(message)
    }
    this.unprocessable.set(sourceId, (this.unprocessable.get(sourceId) ?? 0) + 1)
    const messageId = typeof message?.messageId === 'string' ? message.messageId.slice(0, 100) : undefined
    this.records.push({ sourceId, messageId, step, destinationId, error })
  }

  /** The messages not set aside, in order. */
  remaining (messages: SegmentMessage[]): SegmentMessage[] {
    return this.setAside.size === 0 ? messages : messages.filter((message) => !this.setAside.has(message))
  }
}

// Redis answers that say nothing about the data: the server is loading, out of memory, failing
// over, or the cluster is moving. Anything else Redis refuses was caused by what it was given.
const REDIS_UNAVAILABLE = /^(?:OOM|LOADING|BUSY|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|MOVED|ASK|NOREPLICAS|MISCONF|NOSCRIPT|NOAUTH|WRONGPASS|EXECABORT)\b/

/**
 * Whether an error is the infrastructure's (Redis unreachable or unavailable, the network), so
 * the job must fail and run again, rather than the content's (a message no code could process),
 * which must never fail a job: its message is set aside and the rest go on.
 */
export function isInfrastructureError (error: unknown): boolean {
  if (!(error instanceof Error)) return false
  if (error instanceof ReplyError) return REDIS_UNAVAILABLE.test(error.message)
  if (error.name === 'MaxRetriesPerRequestError' || error.name === 'AbortError' || error.name === 'ClusterAllFailedError') return true
  const code = (error as NodeJS.ErrnoException).code
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return true // ECONNREFUSED, ECONNRESET, ETIMEDOUT, EPIPE, …
  // ioredis Cluster's own: a node away (its commands redirected until the client gives up), the
  // slot map being refreshed, the cluster not yet (or no longer) ready.
  return /^(?:Connection is closed|Stream isn't writeable|Command timed out|None of startup nodes is available|Too many Cluster redirections|Cluster isn't ready|Failed to refresh slots cache)/.test(error.message) ||
    // A failed pipeline or transaction reports its first command's error as its cause.
    (error.cause !== undefined && isInfrastructureError(error.cause))
}

/**
 * Runs a stage over a source's messages so that a message its per-message guards did not catch
 * still costs no other message its place: when the stage throws for a reason other than the
 * infrastructure, the list is halved and each half run again, until the messages that fail it
 * stand alone and are set aside. Stages are idempotent (a job runs again from the start after a
 * crash), so running part of a list twice is safe.
 */
export async function runIsolated (
  stage: (messages: SegmentMessage[]) => Promise<void>,
  messages: SegmentMessage[],
  onAlone: (message: SegmentMessage, error: unknown) => void
): Promise<void> {
  if (messages.length === 0) return
  try {
    await stage(messages)
  } catch (error) {
    if (isInfrastructureError(error)) throw error
    if (messages.length === 1) {
      onAlone(messages[0], error)
      return
    }
    const half = messages.length >> 1
    await runIsolated(stage, messages.slice(0, half), onAlone)
    await runIsolated(stage, messages.slice(half), onAlone)
  }
}

/** An error as the log may show it: its kind and where it was thrown, never its message (it may quote the content). */
export function errorWithoutContent (error: unknown): { type: string, code?: string, frames?: string } {
  if (!(error instanceof Error)) return { type: typeof error }
  const code = (error as NodeJS.ErrnoException).code
  const frames = error.stack?.split('\n').slice(1, 6).map((line) => line.trim()).join(' | ')
  return { type: error.name, ...(typeof code === 'string' ? { code } : {}), ...(frames === undefined ? {} : { frames }) }
}
