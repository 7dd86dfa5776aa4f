import { hash, randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { Job, type Queue } from 'bullmq'
import fp from 'fastify-plugin'
import type { ChainableCommander, Redis, Result } from 'ioredis'
import { INGEST_BODY_TTL_MS, INGEST_JOB_OPTIONS, type IngestJobData, type StoredRequest } from '../jobs/queues.js'
import type { RedisKeys } from '../src/keys.js'

// BullMQ's own add script and the version its command names carry, to define on the buffer's
// connection alone (see IngestBuffer). Internal files: the ingest tests fail if they move.
const require = createRequire(import.meta.url)
const { addStandardJob } = require('bullmq/dist/cjs/scripts/addStandardJob-9.js') as { addStandardJob: { name: string, content: string, keys: number } }
const { version: bullmqVersion } = require('bullmq/dist/cjs/version.js') as { version: string }

export class UnavailableError extends Error {
  constructor (message: string, readonly retryAfterSeconds = 5) { super(message) }
}

export interface SubmitResult { accepted: number, duplicate: number }

/** One request's part in a flush. */
export interface Submission {
  /** The request as it will be stored, but for its body's place (given when it is stored). */
  request: Omit<StoredRequest, 'body' | 'bodyKey'>
  /**
   * The body's bytes as received (after decompression). Stored as bytes: as text, ioredis
   * encoded every body to UTF-8 again for the flush's write, more CPU than the rest of a flush of
   * batches.
   */
  body: Buffer
  /** How many of its messages are valid (the others are in `request.skip`). */
  valid: number
  /** The client-given ids of its valid messages, and their indexes (server-given ids are new). */
  ids: string[]
  indexes: number[]
  rejected: number
}

interface Pending extends Submission {
  resolve: (result: SubmitResult) => void
  reject: (err: Error) => void
}

// The duplicate check, run in the flush's transaction after the job is added. Message ids seen in
// the current window or the one before it are duplicates (so each is remembered at least one
// window). Fingerprints are 16-byte MD5 digests of the id: collisions between distinct ids are out
// of reach (2^-64 at billions of ids), so a new message is never taken for a duplicate. They travel
// as one string (the last ARGV) — thousands of separate arguments cost the client more than the
// check. The answer, one character per id ('0' new, '1' seen), goes to the caller and, at
// `offset`, into the job's answer key (KEYS[4]), where the worker reads it. The source's counts
// are added here, where the number of duplicates is known.
//
// The window rotates when it is older than the dedup window or holds the configured maximum (the
// memory budget): the previous window is then dropped early, which may let a duplicate through but
// never drops a new message. Every checked id is remembered in the current window.
const DEDUP = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local maxIds = tonumber(ARGV[3])
local blob = ARGV[8]
-- Counters, not #t: the length operator searches the table every time.
local ids = {}
local n = 0
local sub = string.sub
for i = 1, #blob, 16 do
  n = n + 1
  ids[n] = sub(blob, i, i + 15)
end
-- Lua's unpack() takes a few thousand values at most.
local hasPrevious = redis.call('EXISTS', KEYS[2]) == 1
local seen = {}
local duplicates = 0
for s = 1, n, 2000 do
  local e = math.min(s + 1999, n)
  local current = redis.call('SMISMEMBER', KEYS[1], unpack(ids, s, e))
  local previous = hasPrevious and redis.call('SMISMEMBER', KEYS[2], unpack(ids, s, e)) or current
  for i = 1, e - s + 1 do
    if current[i] == 1 or previous[i] == 1 then
      seen[s + i - 1] = '1'
      duplicates = duplicates + 1
    else
      seen[s + i - 1] = '0'
    end
  end
end
local started = tonumber(redis.call('GET', KEYS[3]) or '0')
if started == 0 then
  redis.call('SET', KEYS[3], now, 'PX', window * 2)
elseif now - started >= window or redis.call('SCARD', KEYS[1]) >= maxIds then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('RENAME', KEYS[1], KEYS[2])
  else
    redis.call('DEL', KEYS[2])
  end
  redis.call('SET', KEYS[3], now, 'PX', window * 2)
end
for s = 1, n, 2000 do
  redis.call('SADD', KEYS[1], unpack(ids, s, math.min(s + 1999, n)))
end
redis.call('PEXPIRE', KEYS[1], window * 2)
local answer = table.concat(seen)
redis.call('SETRANGE', KEYS[4], tonumber(ARGV[4]), answer)
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[5]))
local accepted = tonumber(ARGV[6]) - duplicates
if accepted > 0 then redis.call('HINCRBY', KEYS[5], 'accepted', accepted) end
duplicates = duplicates + tonumber(ARGV[7])
if duplicates > 0 then redis.call('HINCRBY', KEYS[5], 'duplicate', duplicates) end
return answer`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    ingestDedup(current: string, previous: string, startedAt: string, answerKey: string, statsKey: string,
      now: number, windowMs: number, maxIds: number, offset: number, ttlMs: number, valid: number, duplicates: number, fingerprints: Buffer): Result<string, Context>
  }
}

export interface IngestBufferOptions {
  maxJobMessages: number
  dedupWindowMs: number
  dedupMaxIds: number
  maxBacklogJobs: number
  maxInFlight?: number
}

/**
 * Group commit: messages from concurrent requests are stored together — one dedup check, one
 * BullMQ job and one counter update per flush — and each request is answered only once its
 * messages are in Redis. Under load, requests queue behind the flushes in flight and the next
 * flush takes them all.
 */
export class IngestBuffer {
  private pending: Pending[] = []
  /** Valid messages in `pending`. */
  private pendingMessages = 0
  private inFlight = 0
  private scheduled = false
  private backlogJobs = 0
  private readonly backlogTimer: NodeJS.Timeout
  private readonly maxInFlight: number
  /**
   * `redis`: a connection of the buffer's own. ioredis copies every script defined on a
   * connection into each transaction it makes: on a queue's connection that is BullMQ's fifty-odd
   * (more CPU than the rest of a flush of single messages), here it is two — the duplicate
   * check and BullMQ's add, under the name BullMQ calls it by.
   */
  constructor (
    private readonly redis: Redis,
    private readonly queue: Queue<IngestJobData>,
    private readonly keys: RedisKeys,
    private readonly options: IngestBufferOptions
  ) {
    this.maxInFlight = options.maxInFlight ?? 8
    redis.defineCommand('ingestDedup', { numberOfKeys: 5, lua: DEDUP })
    redis.defineCommand(`${addStandardJob.name}:${bullmqVersion}`, { numberOfKeys: addStandardJob.keys, lua: addStandardJob.content })
    // The backlog is read once a second, not per request.
    this.backlogTimer = setInterval(() => { this.refreshBacklog() }, 1000)
    this.backlogTimer.unref()
    this.refreshBacklog()
  }

  /** Stores one request's valid messages (the worker skips those the duplicate check finds) and counts its rejected ones. */
  submit (submission: Submission): Promise<SubmitResult> {
    if (this.redis.status !== 'ready') return Promise.reject(new UnavailableError('storage (Redis) is unreachable; retry later'))
    if (this.backlogJobs > this.options.maxBacklogJobs) {
      return Promise.reject(new UnavailableError(`the ingest backlog is over ${this.options.maxBacklogJobs} jobs; retry later`, 2))
    }
    return new Promise((resolve, reject) => {
      // The submission itself becomes the pending entry (a copy of it cost more than the rest).
      const pending = submission as Pending
      pending.resolve = resolve
      pending.reject = reject
      this.pending.push(pending)
      this.pendingMessages += submission.valid
      this.schedule()
    })
  }

  close (): void {
    clearInterval(this.backlogTimer)
  }

  private refreshBacklog (): void {
    if (this.redis.status !== 'ready') return
    this.queue.getWaitingCount().then((count) => { this.backlogJobs = count }, () => {})
  }

  private schedule (): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight) return
    this.scheduled = true
    // setImmediate lets every request parsed in this turn of the event loop join the flush.
    setImmediate(() => {
      this.scheduled = false
      this.flush()
    })
  }

  private flush (): void {
    while (this.pending.length > 0 && this.inFlight < this.maxInFlight) {
      // While a flush is in flight, the next one waits to be full: small requests (single
      // messages) then share few, large flushes — each flush costs about as much as a request.
      if (this.inFlight > 0 && this.pendingMessages < this.options.maxJobMessages) return
      const group: Pending[] = []
      let size = 0
      while (this.pending.length > 0 && (group.length === 0 || size + this.pending[0].valid <= this.options.maxJobMessages)) {
        const next = this.pending.shift()!
        size += next.valid
        group.push(next)
      }
      this.pendingMessages -= size
      this.inFlight++
      this.commit(group)
        .then(
          (results) => { group.forEach((p, i) => p.resolve(results[i])) },
          (err: Error) => {
            const unavailable = new UnavailableError('could not store the messages (Redis unreachable); retry later')
            unavailable.cause = err
            group.forEach((p) => p.reject(unavailable))
          })
        .finally(() => {
          this.inFlight--
          if (this.pending.length > 0) this.schedule()
        })
    }
  }

  /**
   * Undoes what a flush's duplicate checks did when its job could not be added: the new ids are
   * forgotten (the client's retry is no duplicate) and the counts taken back. Best effort.
   */
  private async forget (bySource: Map<string, FlushSource>, answers: Array<[Error | null, unknown]>, keys: string[]): Promise<void> {
    const pipeline = this.redis.pipeline().del(...keys)
    for (const [sourceId, source] of bySource) {
      const stats = this.keys.sourceStats(sourceId)
      if (source.command < 0) {
        if (source.valid > 0) pipeline.hincrby(stats, 'accepted', -source.valid)
        continue
      }
      if (answers[source.command][0] !== null) continue
      const answer = answers[source.command][1] as string
      const fresh = source.fingerprints.filter((_, i) => answer.charCodeAt(i) !== ONE)
      if (fresh.length > 0) pipeline.srem(this.keys.dedup(sourceId).current, ...fresh.map((f) => Buffer.from(f, 'latin1')))
      const duplicates = source.fingerprints.length - fresh.length + source.repeats
      if (source.valid > duplicates) pipeline.hincrby(stats, 'accepted', duplicates - source.valid)
      if (duplicates > 0) pipeline.hincrby(stats, 'duplicate', -duplicates)
    }
    await pipeline.exec()
  }

  /**
   * Stores a flush in one transaction, one round trip: each body under a key of its own (one tag
   * for the job: one hash slot), the job, then per source the duplicate check with the counts.
   * The job does not wait for the check's answer: the worker reads it from the answer key.
   */
  private async commit (group: Pending[]): Promise<SubmitResult[]> {
    // Per source: its fingerprints, in request order; a repeat inside this flush is a duplicate
    // without asking Redis. Fingerprints are kept as 'binary' (latin1) strings, one byte a
    // character, and become one Buffer per call: a Buffer per id cost as much as the hashing.
    const bySource = new Map<string, FlushSource>()
    const repeats = new Map<Pending, number[]>()
    const checked: Array<{ source: FlushSource, start: number, indexes: number[] } | undefined> = []
    for (const p of group) {
      let source = bySource.get(p.request.sourceId)
      if (source === undefined) bySource.set(p.request.sourceId, (source = { fingerprints: [], seen: new Set(), valid: 0, repeats: 0, rejected: 0, at: 0, command: -1, answer: '' }))
      source.valid += p.valid
      source.rejected += p.rejected
      const start = source.fingerprints.length
      const indexes: number[] = []
      for (let i = 0; i < p.ids.length; i++) {
        if (source.seen.has(p.ids[i])) {
          let list = repeats.get(p)
          if (list === undefined) repeats.set(p, (list = []))
          list.push(p.indexes[i])
          source.repeats++
          continue
        }
        source.seen.add(p.ids[i])
        source.fingerprints.push(hash('md5', p.ids[i], 'binary'))
        indexes.push(p.indexes[i])
      }
      checked.push(indexes.length > 0 ? { source, start, indexes } : undefined)
    }
    // Each source's answers take one run of the job's answer string.
    let answerLength = 0
    for (const source of bySource.values()) {
      source.at = answerLength
      answerLength += source.fingerprints.length
    }

    const tag = randomUUID()
    const requests: StoredRequest[] = []
    // One HSET for the flush (a command per body cost the client more than the rest of a flush
    // of single messages). As an object, which ioredis takes as field-value pairs.
    const bodies: Record<string, Buffer> = {}
    group.forEach((p, g) => {
      if (p.valid === 0) return
      bodies[g] = p.body
      const repeated = repeats.get(p)
      const skip = repeated === undefined ? p.request.skip : [...(p.request.skip ?? []), ...repeated].sort((a, b) => a - b)
      const { sourceId, receivedAt, pathType, idPrefix } = p.request
      const c = checked[g]
      requests.push({ sourceId, receivedAt, pathType, idPrefix, body: g, skip, checked: c === undefined ? undefined : { at: c.source.at + c.start, indexes: c.indexes } })
    })
    const bodiesKey = this.keys.ingestBodies(tag)
    const answerKey = this.keys.ingestDedupAnswer(tag)

    const multi = this.redis.multi()
    if (requests.length > 0) {
      multi.hset(bodiesKey, bodies)
      multi.pexpire(bodiesKey, INGEST_BODY_TTL_MS)
      const data: IngestJobData = { requests, bodies: bodiesKey }
      if (answerLength > 0) data.dedupAnswer = answerKey
      await new Job(this.queue, 'requests', data, INGEST_JOB_OPTIONS).addJob(asBullTransaction(multi) as never)
    }
    // After the job: should adding it fail, the ids are not remembered either (a retry must not
    // be taken for a duplicate). The counts of a flush are written with it.
    const now = Date.now()
    // The bodies (HSET, PEXPIRE) and the job come first.
    const jobCommand = 2
    let queued = requests.length > 0 ? 3 : 0
    for (const [sourceId, source] of bySource) {
      const stats = this.keys.sourceStats(sourceId)
      if (source.fingerprints.length > 0) {
        const dedup = this.keys.dedup(sourceId)
        multi.ingestDedup(dedup.current, dedup.previous, dedup.startedAt, answerKey, stats,
          now, this.options.dedupWindowMs, this.options.dedupMaxIds, source.at, INGEST_BODY_TTL_MS,
          source.valid - source.repeats, source.repeats, Buffer.from(source.fingerprints.join(''), 'latin1'))
        source.command = queued++
      } else if (source.valid > 0) {
        multi.hincrby(stats, 'accepted', source.valid)
        queued++
      }
      if (source.rejected > 0) {
        multi.hincrby(stats, 'rejected', source.rejected)
        queued++
      }
    }
    const answers = await multi.exec()
    if (answers === null) throw new Error('the transaction was discarded')
    const failed = answers.find(([err]) => err !== null)
    if (failed !== undefined) {
      // A transaction runs every command, even after one fails: should the job have failed, the
      // flush is undone (the client is answered 503 and retries).
      if (requests.length > 0 && answers[jobCommand][0] !== null) await this.forget(bySource, answers, [bodiesKey, answerKey]).catch(() => {})
      throw failed[0]
    }
    for (const source of bySource.values()) {
      if (source.command >= 0) source.answer = answers[source.command][1] as string
    }

    return group.map((p, g) => {
      let duplicate = repeats.get(p)?.length ?? 0
      const c = checked[g]
      if (c !== undefined) {
        for (let k = 0; k < c.indexes.length; k++) if (c.source.answer.charCodeAt(c.start + k) === ONE) duplicate++
      }
      return { accepted: p.valid - duplicate, duplicate }
    })
  }
}

/**
 * The transaction as BullMQ's `addJob` uses it: it queues its script through `runCommand`.
 * BullMQ's own wrapper (`createIORedisClient(…).multi()`) adapts many more commands, and cost a
 * flush more than adding the job did.
 */
function asBullTransaction (multi: ChainableCommander): ChainableCommander & { runCommand: (name: string, args: unknown[]) => ChainableCommander } {
  return Object.assign(multi, {
    runCommand (name: string, args: unknown[]) {
      (multi as unknown as Record<string, (args: unknown[]) => void>)[name](args)
      return multi
    }
  })
}

/** One source's part in a flush. */
interface FlushSource {
  fingerprints: string[]
  seen: Set<string>
  valid: number
  /** Ids repeated within the flush: duplicates, not checked. */
  repeats: number
  rejected: number
  /** Where its answers start in the job's answer string. */
  at: number
  /** Its duplicate check's place in the transaction (-1: none), and the answer. */
  command: number
  answer: string
}

const ONE = 0x31

declare module 'fastify' {
  interface FastifyInstance {
    ingestBuffer: IngestBuffer
  }
}

export default fp(async (app) => {
  // A connection of its own, with two scripts (see IngestBuffer).
  const redis = app.redis.duplicate()
  redis.on('error', () => {}) // the shared connection logs Redis outages
  if (app.redis.status === 'ready') await new Promise((resolve) => redis.once('ready', resolve))
  const buffer = new IngestBuffer(redis, app.queues.ingest, app.keys, {
    maxJobMessages: app.config.INGEST_JOB_MAX_MESSAGES,
    dedupWindowMs: app.config.dedupWindowMs,
    dedupMaxIds: app.config.DEDUP_MAX_IDS,
    maxBacklogJobs: app.config.INGEST_MAX_BACKLOG_JOBS
  })
  app.decorate('ingestBuffer', buffer)
  app.addHook('onClose', async () => {
    buffer.close()
    await redis.quit().catch(() => redis.disconnect())
  })
}, { name: 'ingest-buffer', dependencies: ['queues'] })
