import { hash } from 'node:crypto'
import type { Queue } from 'bullmq'
import fp from 'fastify-plugin'
import type { Redis, Result } from 'ioredis'
import type { IngestJobData } from '../jobs/queues.js'
import type { RedisKeys } from '../src/keys.js'
import type { SegmentMessage } from '../src/segment/types.js'

export class UnavailableError extends Error {
  constructor (message: string, readonly retryAfterSeconds = 5) { super(message) }
}

export interface SubmitResult { accepted: number, duplicate: number }

interface Pending {
  sourceId: string
  messages: SegmentMessage[]
  rejected: number
  resolve: (result: SubmitResult) => void
  reject: (err: Error) => void
}

// Message ids seen in the current window, or the one before it (so each is remembered at least
// one window). Fingerprints are 16-byte MD5 digests of the id: collisions between distinct ids are
// out of reach (2^-64 at billions of ids), so a new message is never taken for a duplicate.
const DEDUP_CHECK = `
local current = redis.call('SMISMEMBER', KEYS[1], unpack(ARGV))
local previous = redis.call('SMISMEMBER', KEYS[2], unpack(ARGV))
for i = 1, #current do
  if previous[i] == 1 then current[i] = 1 end
end
return current`

// Remembers ids in the current window. The window rotates when it is older than the dedup window
// or holds the configured maximum (the memory budget): the previous window is then dropped early,
// which may let a duplicate through but never drops a new message.
const DEDUP_REMEMBER = `
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
redis.call('SADD', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], window * 2)
return 1`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    dedupCheck(current: string, previous: string, ...fingerprints: Buffer[]): Result<number[], Context>
    dedupRemember(current: string, previous: string, startedAt: string, now: number, windowMs: number, maxIds: number, ...fingerprints: Buffer[]): Result<number, Context>
  }
}

// Lua's unpack() takes a few thousand arguments at most.
const LUA_CHUNK = 2000

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

  /** Stores the valid messages of one request and counts its rejected ones. */
  submit (sourceId: string, messages: SegmentMessage[], rejected: number): Promise<SubmitResult> {
    if (this.redis.status !== 'ready') return Promise.reject(new UnavailableError('storage (Redis) is unreachable; retry later'))
    if (this.backlogJobs > this.options.maxBacklogJobs) {
      return Promise.reject(new UnavailableError(`the ingest backlog is over ${this.options.maxBacklogJobs} jobs; retry later`, 2))
    }
    return new Promise((resolve, reject) => {
      this.pending.push({ sourceId, messages, rejected, resolve, reject })
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
      const group: Pending[] = []
      let size = 0
      while (this.pending.length > 0 && (group.length === 0 || size + this.pending[0].messages.length <= this.options.maxJobMessages)) {
        const next = this.pending.shift()!
        size += next.messages.length
        group.push(next)
      }
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
    // Fingerprints per source; a repeat inside this flush is a duplicate without asking Redis.
    const bySource = new Map<string, { fingerprints: Buffer[], positions: Array<[number, number]>, seen: Set<string> }>()
    const fresh: boolean[][] = group.map((p) => new Array(p.messages.length).fill(false))
    group.forEach((p, g) => {
      let entry = bySource.get(p.sourceId)
      if (entry === undefined) {
        entry = { fingerprints: [], positions: [], seen: new Set() }
        bySource.set(p.sourceId, entry)
      }
      p.messages.forEach((message, m) => {
        if (entry.seen.has(message.messageId)) return
        entry.seen.add(message.messageId)
        entry.fingerprints.push(hash('md5', message.messageId, 'buffer'))
        entry.positions.push([g, m])
      })
    })

    const sources = [...bySource.entries()].filter(([, e]) => e.fingerprints.length > 0)
    if (sources.length > 0) {
      const check = this.redis.pipeline()
      for (const [sourceId, entry] of sources) {
        const keys = this.keys.dedup(sourceId)
        for (let i = 0; i < entry.fingerprints.length; i += LUA_CHUNK) {
          check.dedupCheck(keys.current, keys.previous, ...entry.fingerprints.slice(i, i + LUA_CHUNK))
        }
      }
      const answers = await check.exec()
      let a = 0
      for (const [, entry] of sources) {
        const flags: number[] = []
        for (let i = 0; i < entry.fingerprints.length; i += LUA_CHUNK) {
          const [err, result] = answers![a++]
          if (err) throw err
          flags.push(...(result as number[]))
        }
        entry.positions.forEach(([g, m], i) => { fresh[g][m] = flags[i] === 0 })
      }
    }

    const jobMessages: Array<[string, SegmentMessage]> = []
    group.forEach((p, g) => p.messages.forEach((message, m) => {
      if (fresh[g][m]) jobMessages.push([p.sourceId, message])
    }))
    if (jobMessages.length > 0) await this.queue.add('messages', { messages: jobMessages })

    // Stored: now remember the ids and count. Were this to fail, a retried request could be
    // stored twice (a duplicate may pass) — never the other way round.
    const results = group.map((p, g) => {
      const accepted = fresh[g].filter(Boolean).length
      return { accepted, duplicate: p.messages.length - accepted }
    })
    const after = this.redis.pipeline()
    const now = Date.now()
    for (const [sourceId, entry] of sources) {
      const keys = this.keys.dedup(sourceId)
      const remembered = entry.fingerprints.filter((_, i) => { const [g, m] = entry.positions[i]; return fresh[g][m] })
      for (let i = 0; i < remembered.length; i += LUA_CHUNK) {
        after.dedupRemember(keys.current, keys.previous, keys.startedAt, now, this.options.dedupWindowMs, this.options.dedupMaxIds, ...remembered.slice(i, i + LUA_CHUNK))
      }
    }
    group.forEach((p, g) => {
      const key = this.keys.sourceStats(p.sourceId)
      const { accepted, duplicate } = results[g]
      if (accepted > 0) after.hincrby(key, 'accepted', accepted)
      if (duplicate > 0) after.hincrby(key, 'duplicate', duplicate)
      if (p.rejected > 0) after.hincrby(key, 'rejected', p.rejected)
    })
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
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    ingestBuffer: IngestBuffer
  }
}

export default fp(async (app) => {
  const buffer = new IngestBuffer(app.redis, app.queues.ingest, app.keys, {
    maxJobMessages: app.config.INGEST_JOB_MAX_MESSAGES,
    dedupWindowMs: app.config.dedupWindowMs,
    dedupMaxIds: app.config.DEDUP_MAX_IDS,
    maxBacklogJobs: app.config.INGEST_MAX_BACKLOG_JOBS,
    onError: (err, results) => app.log.error({ err, results }, 'messages stored, but their ids and counts were not recorded')
  })
  app.decorate('ingestBuffer', buffer)
  app.addHook('onClose', async () => { buffer.close() })
}, { name: 'ingest-buffer', dependencies: ['queues'] })
