import { hash, randomUUID } from 'node:crypto'
import type { Queue } from 'bullmq'
import fp from 'fastify-plugin'
import type { Redis, Result } from 'ioredis'
import { INGEST_BODY_TTL_MS, type IngestJobData, type StoredRequest } from '../jobs/queues.js'
import type { RedisKeys } from '../src/keys.js'

export class UnavailableError extends Error {
  constructor (message: string, readonly retryAfterSeconds = 5) { super(message) }
}

export interface SubmitResult { accepted: number, duplicate: number }

/** One request's part in a flush. */
export interface Submission {
  /** The request as it will be stored, but for its body's key (given when it is stored). */
  request: Omit<StoredRequest, 'bodyKey'>
  /** The body as received (after decompression). */
  body: string
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

// Message ids seen in the current window, or the one before it (so each is remembered at least
// one window). Fingerprints are 16-byte MD5 digests of the id: collisions between distinct ids are
// out of reach (2^-64 at billions of ids), so a new message is never taken for a duplicate. They
// travel as one string (ARGV[1]) — thousands of separate arguments cost the client more than the
// check — and the answer is one string of '0' (new) and '1' (seen).
const SPLIT_FINGERPRINTS = `
local blob = ARGV[#ARGV]
local ids = {}
for i = 1, #blob, 16 do ids[#ids + 1] = string.sub(blob, i, i + 15) end
`
// Lua's unpack() takes a few thousand values at most.
const DEDUP_CHECK = SPLIT_FINGERPRINTS + `
local seen = {}
for s = 1, #ids, 2000 do
  local e = math.min(s + 1999, #ids)
  local current = redis.call('SMISMEMBER', KEYS[1], unpack(ids, s, e))
  local previous = redis.call('SMISMEMBER', KEYS[2], unpack(ids, s, e))
  for i = 1, #current do
    seen[#seen + 1] = (current[i] == 1 or previous[i] == 1) and '1' or '0'
  end
end
return table.concat(seen)`

// Remembers ids in the current window. The window rotates when it is older than the dedup window
// or holds the configured maximum (the memory budget): the previous window is then dropped early,
// which may let a duplicate through but never drops a new message.
const DEDUP_REMEMBER = SPLIT_FINGERPRINTS + `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local maxIds = tonumber(ARGV[3])
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
for s = 1, #ids, 2000 do
  redis.call('SADD', KEYS[1], unpack(ids, s, math.min(s + 1999, #ids)))
end
redis.call('PEXPIRE', KEYS[1], window * 2)
return 1`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    dedupCheck(current: string, previous: string, fingerprints: Buffer): Result<string, Context>
    dedupRemember(current: string, previous: string, startedAt: string, now: number, windowMs: number, maxIds: number, fingerprints: Buffer): Result<number, Context>
  }
}

export interface IngestBufferOptions {
  maxJobMessages: number
  dedupWindowMs: number
  dedupMaxIds: number
  maxBacklogJobs: number
  maxInFlight?: number
  onError?: (err: Error, results: SubmitResult[]) => void
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

  constructor (
    private readonly redis: Redis,
    private readonly queue: Queue<IngestJobData>,
    private readonly keys: RedisKeys,
    private readonly options: IngestBufferOptions
  ) {
    this.maxInFlight = options.maxInFlight ?? 8
    redis.defineCommand('dedupCheck', { numberOfKeys: 2, lua: DEDUP_CHECK })
    redis.defineCommand('dedupRemember', { numberOfKeys: 3, lua: DEDUP_REMEMBER })
    // The backlog is read once a second, not per request.
    this.backlogTimer = setInterval(() => { this.refreshBacklog() }, 1000)
    this.backlogTimer.unref()
    this.refreshBacklog()
  }

  /** Stores one request's valid messages (none is stored when all are duplicates) and counts its rejected ones. */
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

  private async commit (group: Pending[]): Promise<SubmitResult[]> {
    const duplicates = new Map<Pending, number[]>()
    // Fingerprints per source; a repeat inside this flush is a duplicate without asking Redis.
    // Fingerprints are kept as 'binary' (latin1) strings, one byte a character, and become one
    // Buffer per call: a Buffer per id cost as much again as the hashing.
    const bySource = new Map<string, { fingerprints: string[], owners: Array<Pending>, indexes: number[], seen: Set<string> }>()
    for (const p of group) {
      let entry = bySource.get(p.request.sourceId)
      if (entry === undefined) bySource.set(p.request.sourceId, (entry = { fingerprints: [], owners: [], indexes: [], seen: new Set() }))
      for (let i = 0; i < p.ids.length; i++) {
        if (entry.seen.has(p.ids[i])) {
          duplicateOf(p).push(p.indexes[i])
          continue
        }
        entry.seen.add(p.ids[i])
        entry.fingerprints.push(hash('md5', p.ids[i], 'binary'))
        entry.owners.push(p)
        entry.indexes.push(p.indexes[i])
      }
    }

    // One round trip before the job: the duplicate check, and each body under a key of its own
    // (one tag for the job: one hash slot), written as it is. A body whose messages all turn out
    // to be duplicates is removed again below.
    const tag = randomUUID()
    const bodyKeys = group.map((p, g) => p.valid > 0 ? this.keys.ingestBody(tag, g) : undefined)
    const sources = [...bySource.entries()].filter(([, e]) => e.fingerprints.length > 0)
    const fresh = new Map<string, string[]>()
    const first = this.redis.pipeline()
    for (const [sourceId, entry] of sources) {
      const keys = this.keys.dedup(sourceId)
      first.dedupCheck(keys.current, keys.previous, Buffer.from(entry.fingerprints.join(''), 'latin1'))
    }
    group.forEach((p, g) => { if (bodyKeys[g] !== undefined) first.set(bodyKeys[g], p.body, 'PX', INGEST_BODY_TTL_MS) })
    const answers = first.length > 0 ? (await first.exec())! : []
    const failed = answers.find(([err]) => err !== null)
    if (failed) throw failed[0]
    sources.forEach(([sourceId, entry], s) => {
      const seen = answers[s][1] as string
      const remembered: string[] = []
      for (let i = 0; i < entry.fingerprints.length; i++) {
        if (seen.charCodeAt(i) === ONE) duplicateOf(entry.owners[i]).push(entry.indexes[i])
        else remembered.push(entry.fingerprints[i])
      }
      fresh.set(sourceId, remembered)
    })

    const results = group.map((p) => {
      const duplicate = duplicates.get(p)?.length ?? 0
      return { accepted: p.valid - duplicate, duplicate }
    })
    const requests: StoredRequest[] = []
    const unused: string[] = []
    group.forEach((p, g) => {
      const bodyKey = bodyKeys[g]
      if (bodyKey === undefined) return
      if (results[g].accepted === 0) {
        unused.push(bodyKey)
        return
      }
      const dropped = duplicates.get(p)
      const skip = dropped === undefined ? p.request.skip : [...(p.request.skip ?? []), ...dropped].sort((a, b) => a - b)
      const { sourceId, receivedAt, pathType, idPrefix } = p.request
      requests.push({ sourceId, receivedAt, pathType, idPrefix, bodyKey, skip })
    })
    if (requests.length > 0) await this.queue.add('requests', { requests })

    // Stored: now remember the ids and count. Were this to fail, a retried request could be
    // stored twice (a duplicate may pass) — never the other way round.
    const after = this.redis.pipeline()
    if (unused.length > 0) after.del(...unused)
    const now = Date.now()
    for (const [sourceId, remembered] of fresh) {
      if (remembered.length === 0) continue
      const keys = this.keys.dedup(sourceId)
      after.dedupRemember(keys.current, keys.previous, keys.startedAt, now, this.options.dedupWindowMs, this.options.dedupMaxIds, Buffer.from(remembered.join(''), 'latin1'))
    }
    // The counts, added up per source: one increment per counter and flush.
    const counts = new Map<string, { accepted: number, duplicate: number, rejected: number }>()
    group.forEach((p, g) => {
      let count = counts.get(p.request.sourceId)
      if (count === undefined) counts.set(p.request.sourceId, (count = { accepted: 0, duplicate: 0, rejected: 0 }))
      count.accepted += results[g].accepted
      count.duplicate += results[g].duplicate
      count.rejected += p.rejected
    })
    for (const [sourceId, count] of counts) {
      const key = this.keys.sourceStats(sourceId)
      for (const field of ['accepted', 'duplicate', 'rejected'] as const) {
        if (count[field] > 0) after.hincrby(key, field, count[field])
      }
    }
    // The messages are stored: answer 200 even if this step fails (the client would otherwise
    // retry and store them twice); the counts of this flush are then missing, and logged.
    try {
      const answers = await after.exec()
      const failed = answers?.find(([err]) => err !== null)
      if (failed) throw failed[0]
    } catch (err) {
      this.options.onError?.(err as Error, results)
    }
    return results

    function duplicateOf (p: Pending): number[] {
      let list = duplicates.get(p)
      if (list === undefined) duplicates.set(p, (list = []))
      return list
    }
  }
}

const ONE = 0x31

declare module 'fastify' {
  interface FastifyInstance {
    ingestBuffer: IngestBuffer
  }
}

export default fp(async (app) => {
  // A connection of its own: ioredis copies every script defined on a connection into each
  // pipeline it makes, and the shared one has many; this one has two (a pipeline per flush).
  const redis = app.redis.duplicate()
  redis.on('error', () => {}) // the shared connection logs Redis outages
  if (app.redis.status === 'ready') await new Promise((resolve) => redis.once('ready', resolve))
  const buffer = new IngestBuffer(redis, app.queues.ingest, app.keys, {
    maxJobMessages: app.config.INGEST_JOB_MAX_MESSAGES,
    dedupWindowMs: app.config.dedupWindowMs,
    dedupMaxIds: app.config.DEDUP_MAX_IDS,
    maxBacklogJobs: app.config.INGEST_MAX_BACKLOG_JOBS,
    onError: (err, results) => app.log.error({ err, results }, 'messages stored, but their ids and counts were not recorded')
  })
  app.decorate('ingestBuffer', buffer)
  app.addHook('onClose', async () => {
    buffer.close()
    await redis.quit().catch(() => redis.disconnect())
  })
}, { name: 'ingest-buffer', dependencies: ['queues'] })
