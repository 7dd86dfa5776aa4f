import fp from 'fastify-plugin'
import type { FastifyReply, onResponseHookHandler } from 'fastify'
import { collectDefaultMetrics, Counter, Histogram, Registry, type Metric } from 'prom-client'
import type { GraphOutcome } from '../src/facebook/graph-response.js'

/**
 * Every metric below is kept in this process: scrape every process (each role, each of
 * PROCESSES), and sum. The gauges plugins/monitoring.ts adds are read from Redis at scrape time
 * instead, the same in every process.
 */
const PER_PROCESS = '(this process only: sum over every process)'

// Seconds. Most answers are ingestion's, well under a millisecond.
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
// Meta answers in tens to hundreds of milliseconds; a first attempt gives up after 5 s, a queued one after GRAPH_TIMEOUT_MS (30 s).
const GRAPH_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
// An incremental sync of a few changes takes milliseconds; an initial one of a million members, tens of seconds.
const SYNC_BUCKETS = [0.005, 0.025, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]

/** The route label of requests no route matched (404, and 405 for a known path). */
export const UNMATCHED_ROUTE = 'unmatched'

/** One label set of a PreboundHistogram: observing it is a few additions, no lookup. */
export class HistogramSeries {
  /** Observations per bucket (not cumulative), the last for those above every bound (+Inf). */
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor (readonly labels: Readonly<Record<string, string>>, private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe (value: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > bounds[i]) i++
    this.counts[i]++
    this.sum += value
    this.count++
  }
}

/**
 * A Prometheus histogram whose label sets are bound once and then observed without a lookup,
 * served by prom-client's registry (its `get()` answers what prom-client's own histograms do).
 * For the one histogram observed on every request: prom-client's `labels(…).observe()` validates
 * and hashes its labels and finds its bucket by a string key on each call — about 380 ns here,
 * against some 10 ns for this (`npm run bench:metrics`).
 */
export class PreboundHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly all = new Map<string, HistogramSeries>()

  constructor (readonly name: string, readonly help: string, private readonly labelNames: readonly string[], private readonly bounds: readonly number[]) {}

  /** The series of these label values (in `labelNames` order), made on first use; keep it. */
  series (...values: string[]): HistogramSeries {
    const key = values.join('\u0000')
    let series = this.all.get(key)
    if (series === undefined) {
      const labels: Record<string, string> = {}
      this.labelNames.forEach((name, i) => { labels[name] = values[i] })
      this.all.set(key, (series = new HistogramSeries(labels, this.bounds)))
    }
    return series
  }

  async get () {
    const values: Array<{ metricName: string, labels: Record<string, string | number>, value: number }> = []
    for (const series of this.all.values()) {
      let cumulative = 0
      this.bounds.forEach((bound, i) => {
        cumulative += series.counts[i]
        values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: bound }, value: cumulative })
      })
      values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: '+Inf' }, value: series.count })
      values.push({ metricName: `${this.name}_sum`, labels: series.labels, value: series.sum })
      values.push({ metricName: `${this.name}_count`, labels: series.labels, value: series.count })
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  reset (): void {
    for (const series of this.all.values()) {
      series.counts.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}

export type AudienceSyncKind = 'initial' | 'incremental'

/** A source's outcome counters, bound once (ingestion counts them on every flush). */
interface SourceCounters { accepted: { inc: (n: number) => void }, duplicate: { inc: (n: number) => void }, rejected: { inc: (n: number) => void } }

export interface Metrics {
  /** The process's registry: what /metrics serves. Plugins add their gauges to it. */
  registry: Registry
  /** Times a request no route matched (404, 405): they run no route's hooks. Call from the not-found handler. */
  timeUnmatched: (reply: FastifyReply) => void
  /** One request to Meta's Graph API (conversions), its outcome and how long it took. */
  observeGraphRequest: (outcome: GraphOutcome, seconds: number) => void
  /** A completed audience sync, how long it took and how many users it sent. */
  observeAudienceSync: (kind: AudienceSyncKind, seconds: number, users: number) => void
  /** What ingestion did with a source's messages (one call per flush and source). */
  countSourceEvents: (sourceId: string, accepted: number, duplicate: number, rejected: number) => void
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

/** The `code` label of a Graph request: Meta's error code, else the HTTP status, else `network` (no answer). */
export function graphCodeLabel (outcome: GraphOutcome): string {
  if (outcome.kind === 'delivered') return 'none'
  if (outcome.error.code !== undefined) return String(outcome.error.code)
  if (outcome.error.status !== undefined) return `http_${outcome.error.status}`
  return 'network'
}

/**
 * The process's metrics (prom-client: a registry per app, so that tests can build several apps
 * in one process) and the timing of every HTTP request by route pattern. Registered before any
 * route: an onRoute hook sees only the routes added after it.
 */
export default fp(async (app) => {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })

  const http = new PreboundHistogram(
    'relay_http_request_duration_seconds',
    `HTTP requests by route pattern (the route's URL, not the request's; "${UNMATCHED_ROUTE}" when no route matched), method and status, from the request's arrival to the end of its answer ${PER_PROCESS}`,
    ['route', 'method', 'status'],
    HTTP_BUCKETS)
  registry.registerMetric(http as unknown as Metric)

  const graph = new Histogram({
    name: 'relay_graph_request_duration_seconds',
    help: `Requests to Meta's Graph API with conversions — first attempts made in the ingest job and the deliver worker's — by outcome (delivered, transient, rate_limited, reauthorize, permission, invalid_event, permanent) and code (Meta's error code; http_<status> without one; network when no answer came; none when delivered) ${PER_PROCESS}`,
    labelNames: ['outcome', 'code'],
    buckets: GRAPH_BUCKETS,
    registers: [registry]
  })
  const syncDuration = new Histogram({
    name: 'relay_audience_sync_duration_seconds',
    help: `Completed audience syncs by kind: initial (every member once) or incremental (the net changes since the last) ${PER_PROCESS}`,
    labelNames: ['kind'],
    buckets: SYNC_BUCKETS,
    registers: [registry]
  })
  const syncUsers = new Counter({
    name: 'relay_audience_sync_users_total',
    help: `Users whose membership an audience sync sent (one identify each), by kind: initial or incremental ${PER_PROCESS}`,
    labelNames: ['kind'],
    registers: [registry]
  })
  const sourceEvents = new Counter({
    name: 'relay_source_events_total',
    help: `Messages the ingestion API took per source, by outcome: accepted (stored), duplicate (answered 200, not stored again), rejected (invalid, reported to the client) ${PER_PROCESS}; the totals of every process are in relay_source_messages`,
    labelNames: ['source', 'outcome'],
    registers: [registry]
  })
  const sourceCounters = new Map<string, SourceCounters>()

  // Each route gets a hook of its own that knows its pattern and method: a request finds its
  // series by its status alone (a Map lookup), and nothing per request allocates a label set.
  app.addHook('onRoute', (route) => {
    const pattern = route.url
    const method = typeof route.method === 'string' ? route.method : undefined
    const byStatus = new Map<number | string, HistogramSeries>()
    const timeRoute: onResponseHookHandler = (request, reply, done) => {
      const status = reply.statusCode
      // A route of several methods (rare) keys its series by method too.
      const key = method === undefined ? `${request.method} ${status}` : status
      let series = byStatus.get(key)
      if (series === undefined) byStatus.set(key, (series = http.series(pattern, method ?? request.method, String(status))))
      series.observe(reply.elapsedTime / 1000)
      done()
    }
    // A new array: Fastify's HEAD twin of a GET route was cloned from these options and gets its own hook.
    route.onResponse = route.onResponse === undefined ? [timeRoute] : [...[route.onResponse].flat(), timeRoute]
  })

  // What the jobs and ingestion call never throws: a metric must not fail a stored flush or a
  // request already made to Meta.
  const safely = <A extends unknown[]>(what: string, count: (...args: A) => void) => (...args: A): void => {
    try {
      count(...args)
    } catch (err) {
      app.log.warn({ err }, `could not count ${what}`)
    }
  }

  const unmatched = new Map<string, HistogramSeries>()
  app.decorate<Metrics>('metrics', {
    registry,
    timeUnmatched: (reply) => {
      // Fastify's own listener (added first) has stopped the reply's clock by then.
      reply.raw.once('finish', () => {
        const key = `${reply.request.method} ${reply.statusCode}`
        let series = unmatched.get(key)
        if (series === undefined) unmatched.set(key, (series = http.series(UNMATCHED_ROUTE, reply.request.method, String(reply.statusCode))))
        series.observe(reply.elapsedTime / 1000)
      })
    },
    observeGraphRequest: safely('a Graph request', (outcome: GraphOutcome, seconds: number) => graph.observe({ outcome: outcome.kind, code: graphCodeLabel(outcome) }, seconds)),
    observeAudienceSync: safely('an audience sync', (kind: AudienceSyncKind, seconds: number, users: number) => {
      syncDuration.observe({ kind }, seconds)
      syncUsers.inc({ kind }, users)
    }),
    countSourceEvents: safely('a source\'s messages', (sourceId: string, accepted: number, duplicate: number, rejected: number) => {
      let counters = sourceCounters.get(sourceId)
      if (counters === undefined) {
        counters = {
          accepted: sourceEvents.labels(sourceId, 'accepted'),
          duplicate: sourceEvents.labels(sourceId, 'duplicate'),
          rejected: sourceEvents.labels(sourceId, 'rejected')
        }
        sourceCounters.set(sourceId, counters)
      }
      if (accepted > 0) counters.accepted.inc(accepted)
      if (duplicate > 0) counters.duplicate.inc(duplicate)
      if (rejected > 0) counters.rejected.inc(rejected)
    })
  })
}, { name: 'metrics' })
