// What a Graph API answer means for the deliver worker (spec/facebook.md, "Graph errors → what the
// worker does"). Pure: status, body and headers in; an outcome out. Meta says to handle errors by
// code, never by message text.

export interface GraphError {
  status?: number
  code?: number
  subcode?: number
  message: string
  fbtraceId?: string
}

export type GraphOutcome =
  | { kind: 'delivered' }
  /** network error, timeout, 5xx, codes 1, 2, 341, 368, is_transient: back off and retry */
  | { kind: 'transient', error: GraphError }
  /** 429, codes 4, 17, 32, 613, 80000–80014: pause this destination only, attempts untouched */
  | { kind: 'rate_limited', error: GraphError, retryAfterMs: number }
  /** 190: the token is invalid, expired or revoked */
  | { kind: 'reauthorize', error: GraphError }
  /** 10, 200–299: a permission is missing */
  | { kind: 'permission', error: GraphError }
  /** 100: an event of the batch is invalid — split the batch to find it */
  | { kind: 'invalid_event', error: GraphError }
  /** any other 4xx: dead-letter */
  | { kind: 'permanent', error: GraphError }

const TRANSIENT_CODES = new Set([1, 2, 341, 368])
const RATE_LIMIT_CODES = new Set([4, 17, 32, 613])
const UNKNOWN_OBJECT_SUBCODE = 33
const DEFAULT_PAUSE_MS = 60_000
const MAX_PAUSE_MS = 60 * 60_000

function isRateLimitCode (code: number): boolean {
  return RATE_LIMIT_CODES.has(code) || (code >= 80000 && code <= 80014)
}

/**
 * How long to pause: `Retry-After` (seconds), else the largest `estimated_time_to_regain_access`
 * (minutes) in `X-Business-Use-Case-Usage`, else a minute.
 */
export function pauseFromHeaders (headers: Headers | Record<string, string | undefined>): number {
  const get = (name: string) => headers instanceof Headers ? headers.get(name) ?? undefined : headers[name]
  const retryAfter = Number(get('retry-after'))
  if (Number.isFinite(retryAfter) && retryAfter > 0) return Math.min(retryAfter * 1000, MAX_PAUSE_MS)
  const usage = get('x-business-use-case-usage')
  if (usage !== undefined) {
    try {
      let minutes = 0
      for (const entries of Object.values(JSON.parse(usage) as Record<string, Array<{ estimated_time_to_regain_access?: number }>>)) {
        for (const entry of entries) minutes = Math.max(minutes, Number(entry.estimated_time_to_regain_access ?? 0))
      }
      if (minutes > 0) return Math.min(minutes * 60_000, MAX_PAUSE_MS)
    } catch {
      // a malformed header is no reason to fail a delivery: use the default pause
    }
  }
  return DEFAULT_PAUSE_MS
}

export function classifyGraphResponse (status: number, body: unknown, headers: Headers | Record<string, string | undefined>): GraphOutcome {
  const raw = (body as { error?: Record<string, unknown> } | undefined)?.error
  if (status >= 200 && status < 300 && raw === undefined) return { kind: 'delivered' }
  const code = typeof raw?.code === 'number' ? raw.code : undefined
  const error: GraphError = {
    status,
    code,
    subcode: typeof raw?.error_subcode === 'number' ? raw.error_subcode : undefined,
    message: typeof raw?.message === 'string' ? raw.message : `HTTP ${status}`,
    fbtraceId: typeof raw?.fbtrace_id === 'string' ? raw.fbtrace_id : undefined
  }
  // Rate limits first: Meta marks them is_transient too, but they pause rather than retry.
  if (status === 429 || (code !== undefined && isRateLimitCode(code))) {
    return { kind: 'rate_limited', error, retryAfterMs: pauseFromHeaders(headers) }
  }
  if (code === 190) return { kind: 'reauthorize', error }
  if (code === 10 || (code !== undefined && code >= 200 && code <= 299)) return { kind: 'permission', error }
  if (status >= 500 || (code !== undefined && TRANSIENT_CODES.has(code)) || raw?.is_transient === true) return { kind: 'transient', error }
  // Meta's subcode 33: the dataset does not exist or this token may not use it. Every request to
  // it fails whatever its events, so splitting would only multiply the calls: dead-letter at once.
  if (code === 100 && error.subcode === UNKNOWN_OBJECT_SUBCODE) return { kind: 'permanent', error }
  if (code === 100) return { kind: 'invalid_event', error }
  return { kind: 'permanent', error }
}

/** A request that got no answer (connection refused, reset, timeout) is transient. */
export function networkFailure (err: Error): GraphOutcome {
  const timedOut = err.name === 'TimeoutError' || err.name === 'AbortError'
  return { kind: 'transient', error: { message: timedOut ? 'request to the Graph API timed out' : `request to the Graph API failed: ${err.message}` } }
}
