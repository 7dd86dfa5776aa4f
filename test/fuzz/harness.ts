// The fuzz tests' harness: the whole service (API and workers in one process, ROLE all) against a
// Redis of its own and the fake Graph API, its log captured; run counts that `npm test` keeps
// small and `npm run test:fuzz` (FUZZ_RUNS) makes large; fixed seeds, printed with the shrunk
// counterexample when a property fails; and the invariants checked once a file's runs are done.
import { randomUUID } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { relative } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import fc from 'fast-check'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { buildApp } from '../../src/app.js'
import { loadConfig, type Config } from '../../src/config.js'
import { startFakeGraph, DEFAULT_TOKEN, type FakeGraph } from '../fixtures/fake-graph.js'
import { ADMIN_TOKEN, basicAuth } from '../helpers/app.js'
import { FAST_DELIVERY_ENV, waitFor, type DestinationStats } from '../helpers/delivery-setup.js'
import { startTestRedis } from '../helpers/redis.js'
import { PII_MARKER, piiKind, type PiiKind } from './arbitraries.js'

// ─── Run counts and seeds ───────────────────────────────────────────────────────────────────────
/** Set by `npm run test:fuzz`: the number of cases of a property of weight 1. */
const FUZZ_RUNS = process.env.FUZZ_RUNS === undefined ? undefined : Number(process.env.FUZZ_RUNS)
/** Replays one property's failure: `FUZZ_PROPERTY=<name> FUZZ_SEED=<seed> FUZZ_PATH=<path>` as printed. */
const FUZZ_PROPERTY = process.env.FUZZ_PROPERTY
const FUZZ_SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED)
const FUZZ_PATH = process.env.FUZZ_PATH

/** A property's cases: `base` in `npm test`; FUZZ_RUNS × weight (at least 1) when FUZZ_RUNS is set (`npm run test:fuzz`). */
export function runs (base: number, weight = 1): number {
  return FUZZ_RUNS === undefined ? base : Math.max(1, Math.round(FUZZ_RUNS * weight))
}

export const fuzzing = FUZZ_RUNS !== undefined

/** What the runs did, printed at the end of each file. */
export const tally = {
  cases: new Map<string, number>(),
  requests: 0,
  messagesSent: 0,
  accepted: 0,
  rejected: 0,
  neighboursSent: 0,
  neighboursDelivered: 0,
  stored: 0,
  piiSent: 0
}

/** The text, or its start and end around a count of what was left out. */
function truncate (text: string, max = 1500): string {
  return text.length <= max ? text : `${text.slice(0, max * 0.7)}… (${text.length - max} characters left out) …${text.slice(-max * 0.3)}`
}

/**
 * Runs a property with a fixed seed; a failure fails the test with the seed, the path (both
 * replay it: FUZZ_SEED, FUZZ_PATH) and the shrunk counterexample.
 */
export async function checkProperty<Ts extends [unknown, ...unknown[]]> (
  t: Test,
  name: string,
  property: fc.IAsyncPropertyWithHooks<Ts>,
  options: { numRuns: number, seed: number }
): Promise<void> {
  if (FUZZ_PROPERTY !== undefined && FUZZ_PROPERTY !== name) {
    t.pass(`${name}: not run (FUZZ_PROPERTY=${FUZZ_PROPERTY})`)
    return
  }
  const seed = FUZZ_SEED ?? options.seed
  const started = Date.now()
  // The event loop's delay while this property runs (the file's invariant covers all of them).
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  const details = await fc.check(property, {
    numRuns: options.numRuns,
    seed,
    ...(FUZZ_PATH === undefined ? {} : { path: FUZZ_PATH }),
    // Shrinking replays the whole pipeline per step: bounded, the best counterexample so far is kept.
    interruptAfterTimeLimit: fuzzing ? 3_600_000 : 240_000,
    markInterruptAsFailure: false
  })
  delay.disable()
  tally.cases.set(name, (tally.cases.get(name) ?? 0) + details.numRuns)
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  if (!details.failed) {
    t.pass(`${name}: ${details.numRuns} cases in ${seconds} s (seed ${seed}; event loop delay max ${(delay.max / 1e6).toFixed(0)} ms)`)
    return
  }
  const error = details.errorInstance instanceof Error ? details.errorInstance.stack ?? details.errorInstance.message : String(details.errorInstance)
  t.fail([
    `${name}: failed after ${details.numRuns} cases and ${details.numShrinks} shrinks`,
    `replay: FUZZ_PROPERTY=${JSON.stringify(name)} FUZZ_SEED=${details.seed} FUZZ_PATH=${JSON.stringify(details.counterexamplePath ?? '')} npx tap ${relative(process.cwd(), process.argv[1] ?? '')}`,
    `error: ${truncate(error, 2000)}`,
    `counterexample: ${truncate(fc.stringify(details.counterexample))}`
  ].join('\n'))
}

/** Throws (fails the case) when `condition` is false; `what` is only built on failure. */
export function expect (condition: boolean, what: () => string): void {
  if (!condition) throw new Error(what())
}

// ─── The service ────────────────────────────────────────────────────────────────────────────────
export interface FuzzApp {
  app: FastifyInstance
  config: Config
  url: string
  graph: FakeGraph
  /** Everything the service logged (pino, level info). */
  logText: () => string
  /** The admin API; `body` as text is sent as is. */
  admin: (method: string, path: string, body?: unknown) => Promise<{ statusCode: number, json: any, body: string }>
  createSource: (name: string) => Promise<{ id: string, writeKey: string }>
  createDestination: (sourceId: string, settings: Record<string, unknown>) => Promise<{ id: string }>
  /** Resolves with the ids not delivered to Meta (the fake Graph API) within `timeoutMs`. */
  undelivered: (eventIds: string[], timeoutMs?: number) => Promise<string[]>
  /** Event loop delay over the runs (started after setup), in ns. */
  loopDelay: ReturnType<typeof monitorEventLoopDelay>
}

const ADMIN_HEADERS = { authorization: `Bearer ${ADMIN_TOKEN}` }

export async function startFuzzApp (t: Test, env: Record<string, string> = {}): Promise<FuzzApp> {
  const redis = await startTestRedis()
  const delivered = new Set<string>()
  const waiters = new Set<() => void>()
  const graph = await startFakeGraph({
    onBatch: (batch) => {
      // The legacy format has no event_id: a neighbour's order_id is its id too.
      for (const event of batch.body.data) {
        if (typeof event?.event_id === 'string') delivered.add(event.event_id)
        if (typeof event?.order_id === 'string') delivered.add(event.order_id)
      }
      for (const wake of waiters) wake()
    }
  })
  const log: string[] = []
  const stream = new Writable({ write (chunk, _encoding, done) { log.push(String(chunk)); done() } })
  const config = loadConfig({
    REDIS_URL: redis.url,
    REDIS_PREFIX: redis.prefix,
    ADMIN_TOKEN,
    SECRET_KEY: 'test-secret-key-0123456789abcdef0123456789',
    FACEBOOK_GRAPH_URL: graph.url,
    ...FAST_DELIVERY_ENV,
    // The fuzz sends far more than a client would in a second; the limiter is not under test.
    RATE_LIMIT_EVENTS_PER_SECOND: '1000000000',
    LOG_LEVEL: 'info',
    ...env
  })
  const app = await buildApp({ config, logger: { level: 'info', stream } })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  t.teardown(async () => {
    loopDelay.disable()
    await app.close()
    await graph.close()
    await redis.close()
  })

  const admin = async (method: string, path: string, body?: unknown) => {
    const payload = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body)
    const response = await app.inject({
      method: method as 'GET',
      url: path,
      headers: payload === undefined ? ADMIN_HEADERS : { ...ADMIN_HEADERS, 'content-type': 'application/json' },
      ...(payload === undefined ? {} : { payload })
    })
    let json: any
    try { json = response.body === '' ? undefined : JSON.parse(response.body) } catch { json = undefined }
    return { statusCode: response.statusCode, json, body: response.body }
  }
  const fuzzApp: FuzzApp = {
    app,
    config,
    url,
    graph,
    logText: () => log.join(''),
    admin,
    loopDelay,
    createSource: async (name) => {
      const { statusCode, json } = await admin('POST', '/v1/sources', { name })
      if (statusCode !== 201) throw new Error(`could not create a source: ${statusCode} ${JSON.stringify(json)}`)
      return json
    },
    createDestination: async (sourceId, settings) => {
      const created = await admin('POST', `/v1/sources/${sourceId}/destinations`, { type: 'facebook-offline-conversions', settings })
      if (created.statusCode !== 201) throw new Error(`could not create a destination: ${created.statusCode} ${created.body}`)
      const put = await admin('PUT', `/v1/destinations/${created.json.id}/access-token`, { accessToken: DEFAULT_TOKEN })
      if (put.statusCode !== 204) throw new Error(`could not store a token: ${put.statusCode} ${put.body}`)
      return created.json
    },
    undelivered: async (eventIds, timeoutMs = 20_000) => {
      const missing = () => eventIds.filter((id) => !delivered.has(id))
      if (missing().length === 0) return []
      await new Promise<void>((resolve) => {
        const wake = () => {
          if (missing().length > 0) return
          done()
        }
        const timer = setTimeout(() => done(), timeoutMs)
        const done = () => {
          clearTimeout(timer)
          waiters.delete(wake)
          resolve()
        }
        waiters.add(wake)
      })
      return missing()
    }
  }
  return fuzzApp
}

// ─── Requests ───────────────────────────────────────────────────────────────────────────────────
export interface HttpAnswer { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/**
 * A POST over real HTTP. The server may answer (413, 401) before it has read the whole body and
 * close the connection: the answer counts, whatever happens to the rest of the upload.
 */
export function post (url: string, path: string, body: Buffer, headers: Record<string, string>): Promise<HttpAnswer> {
  tally.requests++
  return new Promise((resolve, reject) => {
    let answered = false
    const req = httpRequest(`${url}${path}`, { method: 'POST', headers: { 'content-length': String(body.length), ...headers } }, (res) => {
      answered = true
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', (err) => { if (!answered) reject(err) })
    req.end(body)
  })
}

export function ingestionHeaders (writeKey: string, contentType = 'application/json'): Record<string, string> {
  return { authorization: basicAuth(writeKey), 'content-type': contentType }
}

/**
 * The documented answers of an ingestion path: 200 `{success: true, rejected?: […]}`, or a 4xx
 * `{success: false, error}` with the error named; never a 5xx (Redis is up throughout).
 */
export function checkIngestionAnswer (answer: HttpAnswer): { success: true, rejected?: Array<{ index: number, messageId?: string, error: string }> } | { success: false, error: string } {
  expect(answer.status < 500, () => `a ${answer.status}: ${truncate(answer.body, 300)}`)
  expect(answer.headers['access-control-allow-origin'] === '*', () => `no CORS header on a ${answer.status}`)
  let json: any
  try { json = JSON.parse(answer.body) } catch { throw new Error(`a ${answer.status} whose body is not JSON: ${truncate(answer.body, 300)}`) }
  if (answer.status === 200) {
    expect(json?.success === true, () => `200 without success: true: ${truncate(answer.body, 300)}`)
    if (json.rejected !== undefined) {
      expect(Array.isArray(json.rejected) && json.rejected.every((r: any) => Number.isInteger(r?.index) && typeof r.error === 'string' && r.error !== ''),
        () => `rejected is not a list of {index, error}: ${truncate(answer.body, 300)}`)
    }
    return json
  }
  expect(answer.status >= 400, () => `an answer ${answer.status}`)
  expect(json !== null && typeof json === 'object' && json.success === false && typeof json.error === 'string' && json.error !== '' &&
    Object.keys(json).length === 2, () => `a ${answer.status} whose body is not {success: false, error}: ${truncate(answer.body, 300)}`)
  return json
}

/** The admin API's error shape: `{statusCode, error, message}`, statusCode the answer's. */
export function checkAdminError (statusCode: number, json: any, body: string): void {
  expect(statusCode < 500, () => `a ${statusCode}: ${truncate(body, 300)}`)
  expect(json !== null && typeof json === 'object' && json.statusCode === statusCode && typeof json.error === 'string' && typeof json.message === 'string' && json.message !== '',
    () => `a ${statusCode} whose body is not {statusCode, error, message}: ${truncate(body, 300)}`)
}

/** A known-good track (mapped, recent, a userId, a value): it must reach Meta whatever surrounds it. */
export function neighbour (tag: string, pii: { email: string, phone: string }): { id: string, text: string } {
  const id = `nb-${tag}-${randomUUID()}`
  const now = new Date().toISOString()
  tally.neighboursSent++
  return {
    id,
    text: JSON.stringify({
      type: 'track',
      messageId: id,
      userId: `nb-user-${tag}`,
      event: 'Order Completed',
      properties: { revenue: 10, currency: 'USD', order_id: id },
      timestamp: now,
      // Its own sentAt (as the browser sends it): a batch's fuzzed sentAt does not skew its time.
      sentAt: now,
      // Its own context and integrations win over the batch's (merged key by key): no fuzzed
      // relay.destinationIds, traits or `All: false` of the batch can turn it away.
      context: { relay: {}, traits: { email: pii.email, phone: pii.phone } },
      integrations: { 'Facebook Offline Conversions': true }
    })
  }
}

// ─── Invariants at the end of a file ────────────────────────────────────────────────────────────
export interface SourceStatsJson { received: number, accepted: number, duplicate: number, rejected: number, unprocessable: number }

export async function sourceStats (fuzz: FuzzApp, sourceId: string): Promise<SourceStatsJson> {
  const { statusCode, json } = await fuzz.admin('GET', `/v1/sources/${sourceId}/stats`)
  if (statusCode !== 200) throw new Error(`stats of ${sourceId}: ${statusCode}`)
  return json
}

/** Waits until nothing is waiting, active or delayed in the ingest, deliver and audience-sync queues. */
export async function drained (fuzz: FuzzApp, timeoutMs = 60_000): Promise<void> {
  const { app } = fuzz
  const queues = [...app.queues.ingestPartitions, app.deliverQueue, app.audienceSyncQueue].filter((queue) => queue !== undefined)
  let last = ''
  await waitFor(async () => {
    const counts = await Promise.all(queues.map((queue) => queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children')))
    last = JSON.stringify(counts)
    // audience-sync keeps a delayed scheduler job per audience: only work in hand counts there
    return counts.every((c, i) => c.waiting === 0 && c.active === 0 && c.prioritized === 0 && (queues[i] === app.audienceSyncQueue || c.delayed === 0))
  }, timeoutMs, () => `the queues to drain (${last})`)
}

/**
 * Waits until the ingest queue has nothing waiting or active, then asserts that no job of it is
 * delayed (a retry: the job threw) or failed. A job fails only for the infrastructure, which is
 * up throughout: a job that throws here threw for its content.
 */
export async function ingestIdle (fuzz: FuzzApp, timeoutMs = 20_000): Promise<void> {
  const queues = fuzz.app.queues.ingestPartitions
  const deadline = Date.now() + timeoutMs
  let counts: Record<string, number>
  // Polled often: every case of a property waits here. Every ingest partition's counts, summed.
  for (;;) {
    counts = { waiting: 0, active: 0, prioritized: 0, delayed: 0, failed: 0 }
    for (const partition of await Promise.all(queues.map((queue) => queue.getJobCounts('waiting', 'active', 'prioritized', 'delayed', 'failed')))) {
      for (const state of Object.keys(counts)) counts[state] += partition[state] ?? 0
    }
    if (counts.waiting + counts.active + counts.prioritized === 0) break
    if (Date.now() > deadline) throw new Error(`the ingest queues were not idle after ${timeoutMs} ms (${JSON.stringify(counts)})`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  if (counts.delayed + counts.failed > 0) {
    const jobs = (await Promise.all(queues.map((queue) => queue.getJobs(['delayed', 'failed'], 0, 0)))).flat()
    throw new Error(`an ingest job threw for its content (${JSON.stringify(counts)}): ${jobs[0]?.failedReason ?? '?'} ${jobs[0]?.stacktrace?.[0]?.split('\n').slice(0, 4).join(' | ') ?? ''}`)
  }
}

/** Every value in Redis, key by key: strings, hashes, lists, sets, sorted sets, streams. */
export async function * redisContents (fuzz: FuzzApp): AsyncGenerator<{ key: string, text: string }> {
  const redis = fuzz.app.redis
  let cursor = '0'
  do {
    const [next, keys] = await redis.scanBuffer(cursor, 'COUNT', 1000)
    cursor = next.toString()
    for (const keyBuffer of keys) {
      const key = keyBuffer.toString('utf8')
      const type = await redis.type(keyBuffer)
      const parts: Buffer[] = [keyBuffer]
      if (type === 'string') {
        const value = await redis.getBuffer(keyBuffer)
        if (value !== null) parts.push(value)
      } else if (type === 'hash') {
        const all = await redis.hgetallBuffer(keyBuffer)
        for (const [field, value] of Object.entries(all)) parts.push(Buffer.from(field), value)
      } else if (type === 'list') {
        parts.push(...await redis.lrangeBuffer(keyBuffer, 0, -1))
      } else if (type === 'set') {
        parts.push(...await redis.smembersBuffer(keyBuffer))
      } else if (type === 'zset') {
        parts.push(...await redis.zrangeBuffer(keyBuffer, 0, -1, 'WITHSCORES'))
      } else if (type === 'stream') {
        const entries = await redis.xrangeBuffer(keyBuffer, '-', '+')
        for (const [id, fields] of entries) parts.push(id, ...fields)
      } else if (type !== 'none') {
        throw new Error(`a key of type ${type} the scan cannot read: ${key}`)
      }
      // Hash field names written as JS strings (hgetallBuffer decodes them) and values as bytes.
      yield { key, text: parts.map((part) => part.toString('utf8')).join('\n') }
    }
  } while (cursor !== '0')
}

/** Marked match-key values found in a text, by kind (see PII_MARKER). */
export function piiFound (text: string): Record<PiiKind, Set<string>> {
  const found: Record<PiiKind, Set<string>> = { strict: new Set(), spelling: new Set(), property: new Set() }
  for (const match of text.matchAll(PII_MARKER)) found[piiKind(match[0])].add(match[0])
  return found
}

export function countPii (text: string): number {
  return text.match(PII_MARKER)?.length ?? 0
}

export interface FinalChecks {
  /** Sources whose counts must add up, with the accepted/rejected the file expects, when it knows them exactly. */
  sources: Array<{ id: string, expected?: { acceptedOrDuplicate: number, rejected: number } }>
  destinations: string[]
}

/**
 * The invariants over a whole file's runs: the app answers, no ingest job failed, every count adds
 * up with nothing left retrying, no raw match-key value at rest or in the log, the event loop never
 * blocked for a second. Prints the file's counts.
 */
export async function finalChecks (t: Test, fuzz: FuzzApp, checks: FinalChecks): Promise<void> {
  const { app } = fuzz
  await drained(fuzz)
  const health = await app.inject({ url: '/health' })
  t.equal(health.statusCode, 200, 'the app still answers /health')
  const failed = await Promise.all(app.queues.ingestPartitions.map((queue) => queue.getFailedCount()))
  t.equal(failed.reduce((a, b) => a + b, 0), 0, 'no ingest job failed (content never fails a job)')

  let unprocessable = 0
  let accepted = 0
  for (const source of checks.sources) {
    let stats = await sourceStats(fuzz, source.id)
    if (source.expected !== undefined) {
      // Single messages' rejections are counted after their answer: wait for them.
      const expected = source.expected
      stats = await waitFor(async () => {
        const s = await sourceStats(fuzz, source.id)
        return s.accepted + s.duplicate === expected.acceptedOrDuplicate && s.rejected === expected.rejected && s
      }, 10_000, () => `source ${source.id} to count ${JSON.stringify(expected)} (has ${JSON.stringify(stats)})`).catch(() => stats)
      t.equal(stats.accepted + stats.duplicate, expected.acceptedOrDuplicate, `source ${source.id}: accepted + duplicate = the messages answered accepted`)
      t.equal(stats.rejected, expected.rejected, `source ${source.id}: rejected = the messages answered rejected`)
    }
    t.equal(stats.received, stats.accepted + stats.duplicate + stats.rejected, `source ${source.id}: received = accepted + duplicate + rejected`)
    t.ok(stats.unprocessable <= stats.accepted, `source ${source.id}: unprocessable (${stats.unprocessable}) ≤ accepted (${stats.accepted})`)
    unprocessable += stats.unprocessable
    accepted += stats.accepted
  }

  let delivered = 0
  for (const id of checks.destinations) {
    let stats: DestinationStats | undefined
    await waitFor(async () => {
      const { json } = await fuzz.admin('GET', `/v1/destinations/${id}/stats`)
      stats = json
      return stats !== undefined && stats.retrying === 0
    }, 30_000, () => `destination ${id} to settle (${JSON.stringify(stats)})`).catch(() => {})
    const s = stats!
    t.equal(s.retrying, 0, `destination ${id}: nothing left retrying once settled`)
    t.equal(s.filtered + s.invalid.total + s.delivered + s.deadLettered + s.retrying, s.received,
      `destination ${id}: received (${s.received}) = filtered + invalid.total + delivered + deadLettered + retrying`)
    t.equal(Object.values(s.invalid.byReason).reduce((sum, n) => sum + n, 0), s.invalid.total, `destination ${id}: invalid.byReason adds up`)
    delivered += s.delivered
  }

  // No raw PII at rest, once the queues have drained (queued bodies do carry raw traits).
  const atRest: Record<PiiKind, Map<string, string>> = { strict: new Map(), spelling: new Map(), property: new Map() }
  let keys = 0
  for await (const { key, text } of redisContents(fuzz)) {
    keys++
    const found = piiFound(text)
    for (const kind of Object.keys(found) as PiiKind[]) for (const marker of found[kind]) atRest[kind].set(marker, key)
  }
  const sample = (found: Map<string, string>) => [...found].slice(0, 5).map(([marker, key]) => `${marker} in ${truncate(key, 80)}`).join('; ')
  t.equal(atRest.strict.size, 0, `no raw email, phone or other match-key trait (as the service spells them) in Redis (${keys} keys read)${atRest.strict.size > 0 ? `: ${sample(atRest.strict)}` : ''}`)
  t.equal(atRest.spelling.size, 0, `no raw value of a trait spelt like a match key (phone_number, mobile, email_address, …) in Redis${atRest.spelling.size > 0 ? `: ${sample(atRest.spelling)}` : ''}`)
  t.equal(atRest.property.size, 0, `no raw match-key-like property (kept out of custom_data) in Redis${atRest.property.size > 0 ? `: ${sample(atRest.property)}` : ''}`)
  const inLog = piiFound(fuzz.logText())
  t.equal(inLog.strict.size, 0, `no raw match-key value in the log${inLog.strict.size > 0 ? `: ${[...inLog.strict].slice(0, 5).join(', ')}` : ''}`)
  t.equal(inLog.spelling.size + inLog.property.size, 0, `no raw value of a trait or property spelt like a match key in the log${inLog.spelling.size + inLog.property.size > 0 ? `: ${[...inLog.spelling, ...inLog.property].slice(0, 5).join(', ')}` : ''}`)

  const maxMs = fuzz.loopDelay.max / 1e6
  t.ok(maxMs < 1000, `the event loop was never blocked for a second (max delay ${maxMs.toFixed(1)} ms)`)

  const cases = [...tally.cases].map(([name, n]) => `${name}: ${n}`).join('; ')
  for (const line of [
    `cases per property: ${cases}`,
    `requests: ${tally.requests}; messages sent: ${tally.messagesSent} (answered accepted ${tally.accepted}, rejected ${tally.rejected}); stored past the API: ${tally.stored}`,
    `good neighbours: ${tally.neighboursSent} sent, ${tally.neighboursDelivered} delivered; marked PII values sent: ${tally.piiSent}`,
    `sources: accepted ${accepted}, unprocessable ${unprocessable}; destinations: delivered ${delivered}; Meta (fake) got ${fuzz.graph.events().length} events in ${fuzz.graph.received.length} requests`,
    `event loop delay: max ${maxMs.toFixed(1)} ms, p99 ${(fuzz.loopDelay.percentile(99) / 1e6).toFixed(1)} ms; Redis keys read: ${keys}; log: ${fuzz.logText().length} characters`
  ]) t.comment(`fuzz: ${line}`)
}
