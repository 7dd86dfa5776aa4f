import { hash, randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { Job, type JobsOptions, type Queue } from 'bullmq'
import fp from 'fastify-plugin'
import type { Result } from 'ioredis'
import { isOutOfMemory, type RedisClient } from '../src/redis-client.js'
import { INGEST_BODY_TTL_MS, type IngestJobData, type StoredRequest } from '../jobs/queues.js'
import type { IngestPartitionKeys, RedisKeys } from '../src/keys.js'
import type { WorkCounter } from '../src/work-counter.js'

// BullMQ's own add script and the version its command names carry: the flush script runs it.
// Internal files: the ingest tests fail if they move.
const require = createRequire(import.meta.url)
const { addStandardJob } = require('bullmq/dist/cjs/scripts/addStandardJob-9.js') as { addStandardJob: { name: string, content: string, keys: number } }
const { version: bullmqVersion } = require('bullmq/dist/cjs/version.js') as { version: string }

export class UnavailableError extends Error {
  constructor (message: string, readonly retryAfterSeconds = 5) { super(message) }
}

export interface SubmitResult { accepted: number, duplicate: number, suppressed: number }

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
  /** The ingest partition its messages go to (src/ingest-partitions.ts); 0 when absent. */
  partition?: number
  /**
   * When the source has suppressed subjects: every valid message's index, userId and anonymousId
   * (undefined when absent), in order. The flush's script looks them up in the suppression set.
   */
  subjects?: Array<[number, string | undefined, string | undefined]>
}

interface Pending extends Submission {
  resolve: (result: SubmitResult) => void
  reject: (err: Error) => void
}

// The duplicate check, run by the flush script after the job is added. Message ids seen in
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
local seen = {}
local suppressed = 0
-- Where each checked id's answer goes (records with subjects); nil: its own place.
local places = nil
local ZERO = string.rep('\\0', 16)
if ARGV[9] == '1' then
  -- A source with suppressed subjects: a record a message, its id's fingerprint (16 zero bytes for
  -- an id the server gave) then its userId's and anonymousId's (zero when absent). A message of a
  -- suppressed subject is answered '2' (not processed), counted as suppressed, and its id neither
  -- checked nor remembered.
  local records = 0
  local subjects = {}
  local owner = {}
  local m = 0
  for i = 1, #blob, 48 do
    records = records + 1
    seen[records] = '0'
    for f = 16, 32, 16 do
      local subject = sub(blob, i + f, i + f + 15)
      if subject ~= ZERO then
        m = m + 1
        subjects[m] = subject
        owner[m] = records
      end
    end
  end
  for s = 1, m, 2000 do
    local e = math.min(s + 1999, m)
    local found = redis.call('SMISMEMBER', KEYS[6], unpack(subjects, s, e))
    for i = 1, e - s + 1 do
      if found[i] == 1 and seen[owner[s + i - 1]] == '0' then
        seen[owner[s + i - 1]] = '2'
        suppressed = suppressed + 1
      end
    end
  end
  local r = 0
  places = {}
  for i = 1, #blob, 48 do
    r = r + 1
    local id = sub(blob, i, i + 15)
    if seen[r] == '0' and id ~= ZERO then
      n = n + 1
      ids[n] = id
      places[n] = r
    end
  end
else
  for i = 1, #blob, 16 do
    n = n + 1
    ids[n] = sub(blob, i, i + 15)
  end
end
-- Lua's unpack() takes a few thousand values at most.
local hasPrevious = redis.call('EXISTS', KEYS[2]) == 1
local duplicates = 0
for s = 1, n, 2000 do
  local e = math.min(s + 1999, n)
  local current = redis.call('SMISMEMBER', KEYS[1], unpack(ids, s, e))
  local previous = hasPrevious and redis.call('SMISMEMBER', KEYS[2], unpack(ids, s, e)) or current
  for i = 1, e - s + 1 do
    local place = places and places[s + i - 1] or (s + i - 1)
    if current[i] == 1 or previous[i] == 1 then
      seen[place] = '1'
      duplicates = duplicates + 1
    else
      seen[place] = '0'
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
if n > 0 then redis.call('PEXPIRE', KEYS[1], window * 2) end
local answer = table.concat(seen)
redis.call('SETRANGE', KEYS[4], tonumber(ARGV[4]), answer)
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[5]))
local accepted = tonumber(ARGV[6]) - duplicates - suppressed
if accepted > 0 then redis.call('HINCRBY', KEYS[5], 'accepted', accepted) end
duplicates = duplicates + tonumber(ARGV[7])
if duplicates > 0 then redis.call('HINCRBY', KEYS[5], 'duplicate', duplicates) end
if suppressed > 0 then redis.call('HINCRBY', KEYS[5], 'suppressed', suppressed) end
return answer`

// A flush, in one round trip that Redis applies alone: this script — BullMQ's add with the
// arguments BullMQ built, the bodies as one hash, then per source the duplicate check with the
// counts (a source without ids: its counts). A flush of large bodies (batches) stores them with
// HSET before the script, in the same transaction (MULTI), and does not pass them: Lua hashes
// every byte of every string it is given (14 % of Redis's CPU under batches) and copies it twice
// more on its way to HSET. Small flushes (single messages) pass them: the transaction's three
// more commands cost the API's client more than Redis saves. Should the add fail, the script
// removes the bodies and nothing else is written; the client is answered 503 (it retries). Both
// scripts run as functions, their KEYS and ARGV given as arguments.
//   KEYS: the bodies hash, the duplicate answer, BullMQ's keys, then 5 a source: the current and
//         previous windows, the window's start, the source's counts, its suppression set.
//   ARGV: now, window ms, max ids, TTL ms, '1' when there is a job, BullMQ's 3 arguments, the
//         number of sources, the number of bodies passed (0: stored by HSET before); 6 a source:
//         its answers' offset, its valid messages less repeats, repeats, rejected, fingerprints,
//         '1' when they are records with subjects; then field-value pairs of the bodies passed.
const FLUSH = `
local function addStandardJob(KEYS, ARGV)
${addStandardJob.content}
end
local function dedup(KEYS, ARGV)
${DEDUP}
end
local sources = tonumber(ARGV[9])
local bodies = tonumber(ARGV[10])
if ARGV[5] == '1' then
  local jobKeys = {}
  for i = 1, ${addStandardJob.keys} do jobKeys[i] = KEYS[2 + i] end
  local added, jobId = pcall(addStandardJob, jobKeys, { ARGV[6], ARGV[7], ARGV[8] })
  if not added or (type(jobId) == 'number' and jobId < 0) then
    redis.call('DEL', KEYS[1])
    local why = type(jobId) == 'table' and jobId.err or tostring(jobId)
    return redis.error_reply('ERR the ingest job was not added (' .. why .. ')')
  end
  local first = 11 + sources * 6
  local last = first + bodies * 2 - 1
  for s = first, last, 2000 do
    redis.call('HSET', KEYS[1], unpack(ARGV, s, math.min(s + 1999, last)))
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local answers = {}
for i = 1, sources do
  local k = ${3 + addStandardJob.keys} + (i - 1) * 5
  local a = 11 + (i - 1) * 6
  local fingerprints = ARGV[a + 4]
  if #fingerprints > 0 then
    answers[i] = dedup({ KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[2], KEYS[k + 3], KEYS[k + 4] },
      { ARGV[1], ARGV[2], ARGV[3], ARGV[a], ARGV[4], ARGV[a + 1], ARGV[a + 2], fingerprints, ARGV[a + 5] })
  else
    answers[i] = ''
    if tonumber(ARGV[a + 1]) > 0 then redis.call('HINCRBY', KEYS[k + 3], 'accepted', ARGV[a + 1]) end
  end
  if tonumber(ARGV[a + 3]) > 0 then redis.call('HINCRBY', KEYS[k + 3], 'rejected', ARGV[a + 3]) end
end
return answers`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    ingestFlush(numberOfKeys: number, ...keysAndArguments: Array<string | number | Buffer>): Result<string[], Context>
  }
}

export interface IngestBufferOptions {
  maxJobMessages: number
  dedupWindowMs: number
  dedupMaxIds: number
  maxBacklogJobs: number
  maxInFlight?: number
  /** The jobs' options (attempts, backoff, how long one that failed for good is kept). */
  jobOptions: JobsOptions
  /** Counts the flushes (the shutdown says how many it waited for). */
  flushes?: WorkCounter
  /**
   * Told, once a flush is stored, what it did with each source's messages (the process's
   * relay_source_events_total): called per flush and source, never per request.
   */
  countOutcomes?: (sourceId: string, accepted: number, duplicate: number, rejected: number) => void
}

/**
 * Group commit: messages from concurrent requests are stored together — one dedup check, one
 * BullMQ job and one counter update per flush — and each request is answered only once its
 * messages are in Redis. Under load, requests queue behind the flushes in flight and the next
 * flush takes them all.
 */
export class IngestBuffer {
  /** A buffer per ingest partition: a flush writes one partition's keys only (one hash slot). */
  private readonly partitions: PartitionBuffer[]
  private backlogJobs = 0
  private readonly backlogTimer: NodeJS.Timeout
  private readonly maxInFlight: number
  /**
   * `redis`: a connection of the buffer's own, for its script: flushes do not queue behind the
   * other commands of the process. `queues`: ingest's partitions, in the order of `keys.ingestPartitions`.
   */
  constructor (
    private readonly redis: RedisClient,
    queues: Array<Queue<IngestJobData>>,
    keys: RedisKeys,
    private readonly options: IngestBufferOptions
  ) {
    // Up to 8 flushes in flight in all by default, at least 2 a partition (one in flight, the
    // next one filling).
    this.maxInFlight = options.maxInFlight ?? Math.max(2, Math.ceil(8 / queues.length))
    this.partitions = queues.map((queue, p) => ({ queue, keys: keys.ingestPartitions[p], pending: [], pendingMessages: 0, inFlight: 0, scheduled: false }))
    redis.defineCommand('ingestFlush', { lua: FLUSH })
    // The backlog is read once a second, not per request.
    this.backlogTimer = setInterval(() => { this.refreshBacklog() }, 1000)
    this.backlogTimer.unref()
    this.refreshBacklog()
  }

  /**
   * Stores a request's parts (one per partition its messages go to) and answers once all are
   * stored: their results summed. Should one part fail, the request fails (the client sends it
   * again; the parts already stored are then duplicates).
   */
  submitParts (parts: Submission[]): Promise<SubmitResult> {
    if (parts.length === 1) return this.submit(parts[0])
    return Promise.all(parts.map((part) => this.submit(part))).then((results) => {
      const sum: SubmitResult = { accepted: 0, duplicate: 0, suppressed: 0 }
      for (const result of results) {
        sum.accepted += result.accepted
        sum.duplicate += result.duplicate
        sum.suppressed += result.suppressed
      }
      return sum
    })
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
      const partition = this.partitions[submission.partition ?? 0]
      partition.pending.push(pending)
      partition.pendingMessages += submission.valid
      this.schedule(partition)
    })
  }

  close (): void {
    clearInterval(this.backlogTimer)
  }

  private refreshBacklog (): void {
    if (this.redis.status !== 'ready') return
    Promise.all(this.partitions.map((partition) => partition.queue.getWaitingCount()))
      .then((counts) => { this.backlogJobs = counts.reduce((total, count) => total + count, 0) }, () => {})
  }

  private schedule (partition: PartitionBuffer): void {
    if (partition.scheduled || partition.inFlight >= this.maxInFlight) return
    partition.scheduled = true
    // setImmediate lets every request parsed in this turn of the event loop join the flush.
    setImmediate(() => {
      partition.scheduled = false
      this.flush(partition)
    })
  }

  private flush (partition: PartitionBuffer): void {
    while (partition.pending.length > 0 && partition.inFlight < this.maxInFlight) {
      // While a flush is in flight, the next one waits to be full: small requests (single
      // messages) then share few, large flushes — each flush costs about as much as a request.
      if (partition.inFlight > 0 && partition.pendingMessages < this.options.maxJobMessages) return
      const group: Pending[] = []
      let size = 0
      while (partition.pending.length > 0 && (group.length === 0 || size + partition.pending[0].valid <= this.options.maxJobMessages)) {
        const next = partition.pending.shift()!
        size += next.valid
        group.push(next)
      }
      partition.pendingMessages -= size
      partition.inFlight++
      if (this.options.flushes !== undefined) this.options.flushes.started++
      this.commit(partition, group)
        .then(
          (results) => { group.forEach((p, i) => p.resolve(results[i])) },
          (err: Error) => {
            // Redis full (under noeviction it refuses writes) is said as such: the operator's fix differs.
            const why = isOutOfMemory(err) ? 'Redis is out of memory' : 'Redis unreachable'
            const unavailable = new UnavailableError(`could not store the messages (${why}); retry later`)
            unavailable.cause = err
            group.forEach((p) => p.reject(unavailable))
          })
        .finally(() => {
          partition.inFlight--
          if (this.options.flushes !== undefined) this.options.flushes.finished++
          if (partition.pending.length > 0) this.schedule(partition)
        })
    }
  }

  /**
   * Stores a flush in one round trip that Redis applies alone (FLUSH): the job, its bodies as one
   * hash, then per source the duplicate check with the counts — every key the partition's (one
   * hash slot when partitioned; on one Redis with one partition, the layout of earlier builds). The job does not wait for the check's answer: the worker reads it from the answer key.
   */
  private async commit (partition: PartitionBuffer, group: Pending[]): Promise<SubmitResult[]> {
    const keys = partition.keys
    // Per source: its fingerprints, in request order; a repeat inside this flush is a duplicate
    // without asking Redis. Fingerprints are kept as 'binary' (latin1) strings, one byte a
    // character, and become one Buffer per call: a Buffer per id cost as much as the hashing.
    const bySource = new Map<string, FlushSource>()
    const repeats = new Map<Pending, number[]>()
    const checked: Array<{ source: FlushSource, start: number, indexes: number[] } | undefined> = []
    // Sources with suppressed subjects (their requests carry every message's ids): each message
    // is a record of the duplicate check, which also looks its subjects up (DEDUP).
    const suppressing = new Set<string>()
    for (const p of group) if (p.subjects !== undefined) suppressing.add(p.request.sourceId)
    for (const p of group) {
      let source = bySource.get(p.request.sourceId)
      if (source === undefined) bySource.set(p.request.sourceId, (source = { fingerprints: [], seen: new Set(), valid: 0, repeats: 0, rejected: 0, at: 0, answer: '', subjects: suppressing.has(p.request.sourceId), seenBefore: 0, suppressed: 0 }))
      source.valid += p.valid
      source.rejected += p.rejected
      const start = source.fingerprints.length
      const indexes: number[] = []
      /** Whether a client-given id repeats one earlier in this flush: a duplicate, not checked. */
      const repeated = (id: string, index: number): boolean => {
        if (!source.seen.has(id)) {
          source.seen.add(id)
          return false
        }
        let list = repeats.get(p)
        if (list === undefined) repeats.set(p, (list = []))
        list.push(index)
        source.repeats++
        return true
      }
      if (p.subjects !== undefined) {
        const idAt = new Map<number, string>()
        for (let i = 0; i < p.ids.length; i++) idAt.set(p.indexes[i], p.ids[i])
        for (const [index, userId, anonymousId] of p.subjects) {
          const id = idAt.get(index)
          if (id !== undefined && repeated(id, index)) continue
          source.fingerprints.push((id === undefined ? ZERO_FINGERPRINT : hash('md5', id, 'binary')) + subjectFingerprint('u', userId) + subjectFingerprint('a', anonymousId))
          indexes.push(index)
        }
      } else {
        for (let i = 0; i < p.ids.length; i++) {
          if (repeated(p.ids[i], p.indexes[i])) continue
          const fingerprint = hash('md5', p.ids[i], 'binary')
          source.fingerprints.push(source.subjects ? fingerprint + ZERO_FINGERPRINT + ZERO_FINGERPRINT : fingerprint)
          indexes.push(p.indexes[i])
        }
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
    // The bodies' field-value pairs, for one HSET (a command per body cost more than the rest of
    // a flush of single messages).
    const bodies: Array<string | Buffer> = []
    let bodyBytes = 0
    group.forEach((p, g) => {
      if (p.valid === 0) return
      bodies.push(String(g), p.body)
      bodyBytes += p.body.length
      const repeated = repeats.get(p)
      const skip = repeated === undefined ? p.request.skip : [...(p.request.skip ?? []), ...repeated].sort((a, b) => a - b)
      const { sourceId, receivedAt, pathType, idPrefix, positions } = p.request
      const c = checked[g]
      requests.push({ sourceId, receivedAt, pathType, idPrefix, positions, body: g, skip, checked: c === undefined ? undefined : { at: c.source.at + c.start, indexes: c.indexes } })
    })
    const bodiesKey = keys.bodies(tag)
    const answerKey = keys.dedupAnswer(tag)

    // BullMQ builds its add's arguments (it is given a recorder for a connection); the flush
    // script runs the add.
    let add: BullAdd = ADD_NONE
    if (requests.length > 0) {
      const data: IngestJobData = { requests, bodies: bodiesKey }
      if (answerLength > 0) data.dedupAnswer = answerKey
      add = await addArguments(new Job(partition.queue, 'requests', data, this.options.jobOptions))
    }
    const inline = bodyBytes <= INLINE_BODY_BYTES
    const scriptKeys: string[] = [bodiesKey, answerKey, ...add.keys]
    const args: Array<string | number | Buffer> = [Date.now(), this.options.dedupWindowMs, this.options.dedupMaxIds, INGEST_BODY_TTL_MS, requests.length > 0 ? '1' : '0',
      ...add.args, bySource.size, inline ? bodies.length / 2 : 0]
    for (const [sourceId, source] of bySource) {
      const dedup = keys.dedup(sourceId)
      scriptKeys.push(dedup.current, dedup.previous, dedup.startedAt, keys.sourceStats(sourceId), keys.suppressed(sourceId))
      args.push(source.at, source.valid - source.repeats, source.repeats, source.rejected, Buffer.from(source.fingerprints.join(''), 'latin1'), source.subjects ? '1' : '0')
    }
    const answers = inline
      ? await this.redis.ingestFlush(scriptKeys.length, ...scriptKeys, ...args, ...bodies)
      : await this.flushInTransaction(bodiesKey, bodies, scriptKeys, args)
    let i = 0
    for (const source of bySource.values()) source.answer = answers[i++]

    const results = group.map((p, g) => {
      let duplicate = repeats.get(p)?.length ?? 0
      let suppressed = 0
      const c = checked[g]
      if (c !== undefined) {
        for (let k = 0; k < c.indexes.length; k++) {
          const answer = c.source.answer.charCodeAt(c.start + k)
          if (answer === ONE) {
            duplicate++
            c.source.seenBefore++
          } else if (answer === TWO) {
            suppressed++
            c.source.suppressed++
          }
        }
      }
      return { accepted: p.valid - duplicate - suppressed, duplicate, suppressed }
    })
    // The process's counts, as the script added them to the sources' stats in Redis.
    const count = this.options.countOutcomes
    if (count !== undefined) {
      for (const [sourceId, source] of bySource) {
        const duplicate = source.repeats + source.seenBefore
        count(sourceId, source.valid - duplicate - source.suppressed, duplicate, source.rejected)
      }
    }
    return results
  }

  /** A large flush: its bodies by HSET, then the script without them, in one transaction. */
  private async flushInTransaction (bodiesKey: string, bodies: Array<string | Buffer>, keys: string[], args: Array<string | number | Buffer>): Promise<string[]> {
    const transaction = this.redis.multi().hset(bodiesKey, ...bodies)
    transaction.ingestFlush(keys.length, ...keys, ...args)
    const results = await transaction.exec()
    if (results === null) throw new Error('the flush transaction was discarded')
    const [err, answers] = results[results.length - 1] as [Error | null, string[]]
    if (err !== null) throw err
    return answers
  }
}

/**
 * Up to this many bytes of bodies a flush passes them to its script; more, and it stores them with
 * HSET in the script's transaction (see FLUSH).
 */
const INLINE_BODY_BYTES = 32 * 1024

/** BullMQ's add: its keys and its 3 arguments (packed, the data's JSON, packed options). */
interface BullAdd { keys: string[], args: Array<string | Buffer> }
const ADD_COMMAND = `${addStandardJob.name}:${bullmqVersion}`
// A flush without a job passes empty ones.
const ADD_NONE: BullAdd = { keys: Array<string>(addStandardJob.keys).fill(''), args: ['', '', ''] }

/**
 * The keys and arguments of BullMQ's add for `job`, as BullMQ builds them: `addJob` is given a
 * recorder in place of a connection. A job BullMQ would add with another script (delayed,
 * prioritized, with a parent: not ours) is refused.
 */
async function addArguments (job: Job): Promise<BullAdd> {
  let recorded: { name: string, args: Array<string | Buffer> } | undefined
  const recorder = { runCommand (name: string, args: Array<string | Buffer>) { recorded = { name, args }; return 0 } }
  await job.addJob(recorder as never)
  if (recorded?.name !== ADD_COMMAND || recorded.args.length !== addStandardJob.keys + 3) throw new Error(`BullMQ added the ingest job with ${recorded?.name ?? 'no command'}, not ${ADD_COMMAND}`)
  return { keys: recorded.args.slice(0, addStandardJob.keys) as string[], args: recorded.args.slice(addStandardJob.keys) }
}

/** One partition's requests waiting for a flush, and its flushes in flight. */
interface PartitionBuffer {
  queue: Queue<IngestJobData>
  keys: IngestPartitionKeys
  pending: Pending[]
  /** Valid messages in `pending`. */
  pendingMessages: number
  inFlight: number
  scheduled: boolean
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
  /** Its duplicate check's answer. */
  answer: string
  /** It has suppressed subjects: its fingerprints are records of three (DEDUP). */
  subjects: boolean
  /** Ids the duplicate check found seen before (its answer's '1's). */
  seenBefore: number
  /** Messages of suppressed subjects (its answer's '2's). */
  suppressed: number
}

const ONE = 0x31
const TWO = 0x32
const ZERO_FINGERPRINT = '\0'.repeat(16)

/**
 * A subject's fingerprint as the suppression set keeps it (`u`: a userId, `a`: an anonymousId), as a
 * 'binary' string; 16 zero bytes for none. A digest, so no raw id is kept.
 */
export function subjectFingerprint (kind: 'u' | 'a', id: string | undefined): string {
  return id === undefined ? ZERO_FINGERPRINT : hash('md5', `${kind}\n${id}`, 'binary')
}

declare module 'fastify' {
  interface FastifyInstance {
    ingestBuffer: IngestBuffer
  }
}

export default fp(async (app) => {
  // A connection of its own, for the flushes (see IngestBuffer).
  const redis = app.redis.duplicate()
  redis.on('error', () => {}) // the shared connection logs Redis outages
  if (app.redis.status === 'ready') await new Promise((resolve) => redis.once('ready', resolve))
  const buffer = new IngestBuffer(redis, app.queues.ingestPartitions, app.keys, {
    maxJobMessages: app.config.INGEST_JOB_MAX_MESSAGES,
    dedupWindowMs: app.config.dedupWindowMs,
    dedupMaxIds: app.config.DEDUP_MAX_IDS,
    maxBacklogJobs: app.config.INGEST_MAX_BACKLOG_JOBS,
    // The queue's own: a flush adds its job with BullMQ's script, not through the queue.
    jobOptions: app.queues.ingest.defaultJobOptions,
    flushes: app.work.ingestFlushes,
    countOutcomes: app.metrics.countSourceEvents
  })
  app.decorate('ingestBuffer', buffer)
  app.addHook('onClose', async () => {
    buffer.close()
    await redis.quit().catch(() => redis.disconnect())
  })
}, { name: 'ingest-buffer', dependencies: ['queues', 'metrics'] })
