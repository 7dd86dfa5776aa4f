// Deletion and suppression requests (Segment's Regulations API semantics), carried out by a BullMQ
// job: suppression marks subjects whose later messages are dropped at ingestion; deletion removes
// what the service keeps of them — profile, links, audience memberships, undelivered conversions —
// and their messages still waiting to be processed.
import { createHash } from 'node:crypto'
import type { Job, Queue } from 'bullmq'
import { scanKeys, type RedisClient } from '../src/redis-client.js'
import type { AudienceStore } from '../plugins/audiences.js'
import type { DeadLetter, DestinationStore } from '../plugins/destinations.js'
import type { ProfileStore } from '../plugins/profiles.js'
import { subjectFingerprint } from '../plugins/ingest-buffer.js'
import type { RedisKeys } from '../src/keys.js'
import { isPlainObject } from '../src/segment/message.js'
import { execBySlot, mgetBySlot, orThrow } from '../src/slots.js'
import { payloadObject, type DeliverJobData, type IngestJobData, type QueuedConversion } from './queues.js'

export const REGULATION_QUEUE = 'regulations'
export const REGULATION_TYPES = ['SUPPRESS_ONLY', 'UNSUPPRESS', 'SUPPRESS_WITH_DELETE', 'DELETE_ONLY'] as const
export type RegulationType = typeof REGULATION_TYPES[number]
export const SUBJECT_TYPES = ['userId', 'anonymousId'] as const
export type SubjectType = typeof SUBJECT_TYPES[number]
/** Segment's limit: at most 5,000 subjects a request. */
export const MAX_SUBJECTS = 5000

export interface RegulationCounts {
  subjects: number
  suppressed: number
  unsuppressed: number
  profilesDeleted: number
  linksDeleted: number
  membershipsRemoved: number
  messagesDropped: number
  conversionsDeleted: number
}

export interface Regulation {
  id: string
  sourceId: string
  regulationType: RegulationType
  subjectType: SubjectType
  status: 'running' | 'finished' | 'failed'
  counts: RegulationCounts
  createdAt: string
  finishedAt?: string
  error?: string
}

/** The job: the subjects themselves live only here, until it is done. */
export interface RegulationJobData {
  regulationId: string
  sourceId: string
  regulationType: RegulationType
  subjectType: SubjectType
  subjectIds: string[]
}

/** Where a job resumes after a crash: each phase is idempotent, so a resumed one is run again whole. */
interface Progress { phase: number }

const EMPTY_COUNTS: RegulationCounts = { subjects: 0, suppressed: 0, unsuppressed: 0, profilesDeleted: 0, linksDeleted: 0, membershipsRemoved: 0, messagesDropped: 0, conversionsDeleted: 0 }

/** A regulation's subjects' suppression-set members. */
export function subjectFingerprints (subjectType: SubjectType, ids: string[]): Buffer[] {
  return ids.map((id) => Buffer.from(subjectFingerprint(subjectType === 'userId' ? 'u' : 'a', id), 'latin1'))
}

/**
 * The ingest partitions' copies of a source's suppression set (each partition's flush reads its
 * own): none when ingest is not partitioned (the one partition reads the set itself).
 */
export function suppressionCopies (keys: RedisKeys, sourceId: string): string[] {
  const canonical = keys.suppressed(sourceId)
  return [...new Set(keys.ingestPartitions.map((partition) => partition.suppressed(sourceId)))].filter((key) => key !== canonical)
}

/** Regulations, their states and counts, per source. */
export class RegulationStore {
  constructor (private readonly redis: RedisClient, private readonly keys: RedisKeys) {}

  async create (regulation: Regulation): Promise<void> {
    // Two slots on a cluster: a command each there, one pipeline on one Redis.
    orThrow(await execBySlot(this.redis, [
      [this.keys.regulations, (p) => p.hset(this.keys.regulations, regulation.id, JSON.stringify(regulation))],
      [this.keys.sourceRegulations(regulation.sourceId), (p) => p.zadd(this.keys.sourceRegulations(regulation.sourceId), Date.parse(regulation.createdAt), regulation.id)]
    ]))
  }

  async get (id: string): Promise<Regulation | undefined> {
    const json = await this.redis.hget(this.keys.regulations, id)
    return json === null ? undefined : JSON.parse(json)
  }

  async update (id: string, changes: Partial<Regulation>): Promise<void> {
    const current = await this.get(id)
    if (current === undefined) return
    await this.redis.hset(this.keys.regulations, id, JSON.stringify({ ...current, ...changes, counts: { ...current.counts, ...changes.counts } }))
  }

  async listForSource (sourceId: string): Promise<Regulation[]> {
    const ids = await this.redis.zrevrange(this.keys.sourceRegulations(sourceId), 0, 999)
    if (ids.length === 0) return []
    const values = await this.redis.hmget(this.keys.regulations, ...ids)
    return values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as Regulation)
  }
}

export interface RegulationEngineDependencies {
  redis: RedisClient
  keys: RedisKeys
  regulations: RegulationStore
  audiences: AudienceStore
  profiles: ProfileStore
  destinations: DestinationStore
  /** Every ingest partition's queue (INGEST_PARTITIONS): waiting messages may be in any. */
  ingestQueues: Array<Queue<IngestJobData>>
  deliverQueue: Queue<DeliverJobData>
  /** How long an API process may go on seeing a source without (or with) suppressions: its cache. */
  suppressionCacheMs: number
  log: { warn: (obj: object, msg: string) => void }
}

const SCAN_COUNT = 1000

/**
 * Carries regulations out. Phases, each idempotent (a job that crashed resumes at its phase):
 * 1. suppression (SUPPRESS_ONLY, SUPPRESS_WITH_DELETE) or its end (UNSUPPRESS): the set the
 *    flush's duplicate check reads, then a wait of the API processes' cache, so that "finished"
 *    means every process applies it;
 * 2. deletion (SUPPRESS_WITH_DELETE, DELETE_ONLY): the subjects' messages still waiting in ingest
 *    jobs are dropped, the jobs in progress finish (what they write is deleted next), then
 *    profiles, links, memberships (no `false` sent: the person is gone, not leaving), and
 *    conversions not yet delivered — queued, held or dead-lettered.
 */
export class RegulationEngine {
  constructor (private readonly deps: RegulationEngineDependencies) {}

  createProcessor () {
    return async (job: Job<RegulationJobData>): Promise<RegulationCounts> => {
      const data = job.data
      const { regulations } = this.deps
      const stored = await regulations.get(data.regulationId)
      const counts: RegulationCounts = { ...EMPTY_COUNTS, ...stored?.counts, subjects: data.subjectIds.length }
      let phase = (job.progress as Progress | undefined)?.phase ?? 0
      try {
        if (phase === 0) {
          if (data.regulationType === 'UNSUPPRESS') counts.unsuppressed = await this.unsuppress(data)
          else if (data.regulationType !== 'DELETE_ONLY') counts.suppressed = await this.suppress(data)
          if (data.regulationType !== 'DELETE_ONLY') await new Promise((resolve) => setTimeout(resolve, this.deps.suppressionCacheMs + 100))
          await this.advance(job, counts, ++phase)
        }
        if (phase === 1 && (data.regulationType === 'SUPPRESS_WITH_DELETE' || data.regulationType === 'DELETE_ONLY')) {
          const active = await Promise.all(this.deps.ingestQueues.map(async (queue) => ({ queue, ids: (await queue.getActive()).map((j) => j.id!) })))
          counts.messagesDropped += await this.dropWaitingMessages(data)
          await this.waitFor(active)
          await this.advance(job, counts, ++phase)
        } else if (phase === 1) {
          phase = 3
        }
        if (phase === 2) {
          await this.deleteData(data, counts)
          await this.advance(job, counts, ++phase)
        }
        await regulations.update(data.regulationId, { status: 'finished', counts, finishedAt: new Date().toISOString() })
        return counts
      } catch (err) {
        if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
          await regulations.update(data.regulationId, { status: 'failed', counts, error: (err as Error).message })
        }
        throw err
      }
    }
  }

  private async advance (job: Job<RegulationJobData>, counts: RegulationCounts, phase: number): Promise<void> {
    await job.updateProgress({ phase })
    await this.deps.regulations.update(job.data.regulationId, { counts })
  }

  /**
   * Adds the subjects to the source's suppression set and to each ingest partition's copy of it
   * (where that partition's flushes read it). The copies first, the set last: SADD is idempotent,
   * so a phase run again after a crash adds what is missing, and counts (from the set, which
   * decides whether API processes send subject ids at all) what the set did not hold.
   */
  private async suppress (data: RegulationJobData): Promise<number> {
    const fingerprints = subjectFingerprints(data.subjectType, data.subjectIds)
    const { redis } = this.deps
    await Promise.all(suppressionCopies(this.deps.keys, data.sourceId).map(async (copy) => {
      for (let i = 0; i < fingerprints.length; i += 1000) await redis.sadd(copy, ...fingerprints.slice(i, i + 1000))
    }))
    let added = 0
    for (let i = 0; i < fingerprints.length; i += 1000) added += await redis.sadd(this.deps.keys.suppressed(data.sourceId), ...fingerprints.slice(i, i + 1000))
    return added
  }

  /** As suppress, the other way: the copies first, the set last (counted from it). */
  private async unsuppress (data: RegulationJobData): Promise<number> {
    const fingerprints = subjectFingerprints(data.subjectType, data.subjectIds)
    const { redis } = this.deps
    await Promise.all(suppressionCopies(this.deps.keys, data.sourceId).map(async (copy) => {
      for (let i = 0; i < fingerprints.length; i += 1000) await redis.srem(copy, ...fingerprints.slice(i, i + 1000))
    }))
    let removed = 0
    for (let i = 0; i < fingerprints.length; i += 1000) removed += await redis.srem(this.deps.keys.suppressed(data.sourceId), ...fingerprints.slice(i, i + 1000))
    return removed
  }

  /** Marks the subjects' messages in waiting ingest jobs to be skipped (they would recreate what is deleted). */
  private async dropWaitingMessages (data: RegulationJobData): Promise<number> {
    const subjects = new Set(data.subjectIds)
    const field = data.subjectType
    const isSubject = (message: unknown) => isPlainObject(message) && (typeof message[field] === 'string' || typeof message[field] === 'number') && subjects.has(String(message[field]))
    let dropped = 0
    const jobs = (await Promise.all(this.deps.ingestQueues.map((queue) => queue.getJobs(['waiting', 'delayed', 'prioritized', 'failed'])))).flat()
    for (const job of jobs) {
      if (job === undefined) continue
      const changed: IngestJobData = { ...job.data }
      let changes = 0
      if (job.data.messages !== undefined) {
        const kept = job.data.messages.filter(([sourceId, message]) => sourceId !== data.sourceId || !isSubject(message))
        changes += job.data.messages.length - kept.length
        changed.messages = kept
      }
      const requests = job.data.requests ?? []
      if (requests.some((request) => request.sourceId === data.sourceId) && job.data.bodies !== undefined) {
        const bodies = await this.deps.redis.hmget(job.data.bodies, ...requests.map((r) => String(r.body)))
        changed.requests = requests.map((request, r) => {
          const text = bodies[r]
          if (request.sourceId !== data.sourceId || text === null) return request
          let body: unknown
          try { body = JSON.parse(text) } catch { return request }
          const items = request.pathType === undefined ? (isPlainObject(body) && Array.isArray(body.batch) ? body.batch : []) : [body]
          const skip = new Set(request.skip)
          items.forEach((item, index) => {
            if (!skip.has(index) && isSubject(item)) {
              skip.add(index)
              changes++
            }
          })
          return skip.size === (request.skip?.length ?? 0) ? request : { ...request, skip: [...skip].sort((a, b) => a - b) }
        })
      }
      if (changes === 0) continue
      await job.updateData(changed)
      dropped += changes
    }
    return dropped
  }

  /** Waits until the ingest jobs that were in progress are done (at most a few minutes). */
  private async waitFor (active: Array<{ queue: Queue<IngestJobData>, ids: string[] }>): Promise<void> {
    const deadline = Date.now() + 5 * 60_000
    for (const { queue, ids } of active) {
      for (const id of ids) {
        while (Date.now() < deadline) {
          const job = await queue.getJob(id)
          if (job === undefined || !(await job.isActive())) break
          await new Promise((resolve) => setTimeout(resolve, 200))
        }
      }
    }
  }

  private async deleteData (data: RegulationJobData, counts: RegulationCounts): Promise<void> {
    const { redis, keys } = this.deps
    const { sourceId } = data
    const subjects = new Set(data.subjectIds)
    // The subjects' profiles: a user's, or an anonymous visitor's not (yet) joined to a user.
    const profileIds = data.subjectIds.map((id) => data.subjectType === 'userId' ? id : `anon:${id}`)
    const profileSet = new Set(profileIds)

    // Links both ways: the subjects' own, and every anonymous or former id linked to a subject user.
    const links: string[] = []
    for (const id of data.subjectIds) links.push(data.subjectType === 'userId' ? keys.userLink(sourceId, id) : keys.anonymousLink(sourceId, id))
    if (data.subjectType === 'userId') {
      for (const pattern of [`${keys.anonymousLink(sourceId, '')}`.replace(/\{\}$/, '*'), `${keys.userLink(sourceId, '')}`.replace(/\{\}$/, '*')]) {
        // Every primary of a cluster; each link is in its own id's slot (an MGET per slot there).
        for await (const found of scanKeys(redis, pattern, SCAN_COUNT)) {
          const targets = await mgetBySlot(redis, found)
          found.forEach((key, i) => { if (targets[i] !== null && subjects.has(targets[i]!)) links.push(key) })
        }
      }
    }
    for (const key of new Set(links)) counts.linksDeleted += await redis.del(key)

    // Memberships, lapse times and pending changes: removed, never sent (the person is gone).
    for (const audience of await this.deps.audiences.listForSource(sourceId)) {
      const writes = redis.pipeline()
      for (const id of profileIds) {
        writes.zrem(keys.audienceMembers(audience.id), id)
        writes.zrem(keys.audienceLapses(audience.id), id)
      }
      const answers = orThrow((await writes.exec())!)
      answers.forEach(([, removed], i) => { if (i % 2 === 0) counts.membershipsRemoved += removed as number })
      const changes = await redis.xrange(keys.audienceChanges(audience.id), '-', '+')
      const theirs = changes.filter(([, fields]) => profileSet.has(fields[1])).map(([entryId]) => entryId)
      if (theirs.length > 0) await redis.xdel(keys.audienceChanges(audience.id), ...theirs)
      await redis.srem(`${keys.audienceState(audience.id)}:pending`, ...profileIds)
    }

    // Profiles (keys, traits, history, consent), with their count.
    for (const id of profileIds) counts.profilesDeleted += await this.deps.profiles.drop(sourceId, id)

    // Conversions not yet delivered: a user's carry their id (hashed in the Conversions API).
    if (data.subjectType === 'userId') counts.conversionsDeleted += await this.deleteConversions(sourceId, subjects)
  }

  private async deleteConversions (sourceId: string, userIds: Set<string>): Promise<number> {
    const { redis, keys, destinations } = this.deps
    const hashed = new Set([...userIds].map((id) => createHash('sha256').update(id).digest('hex')))
    const ofSubject = (payload: Record<string, unknown>): boolean => {
      const userData = payload.user_data as { external_id?: unknown } | undefined
      const externalIds = Array.isArray(userData?.external_id) ? userData.external_id : []
      if (externalIds.some((id) => typeof id === 'string' && hashed.has(id))) return true
      const matchKeys = payload.match_keys as { extern_id?: unknown } | undefined
      return typeof matchKeys?.extern_id === 'string' && userIds.has(matchKeys.extern_id)
    }
    let deleted = 0
    const ofSource = new Set((await destinations.listForSource(sourceId)).map((d) => d.id))
    for (const destinationId of ofSource) {
      // Dead letters: removed, and counted as filtered (deleted) so the identity holds.
      const key = keys.deadLetters(destinationId)
      const letters = await redis.lrange(key, 0, -1)
      const theirs = letters.filter((letter) => ofSubject((JSON.parse(letter) as DeadLetter).payload))
      let removed = 0
      for (const letter of theirs) removed += await redis.lrem(key, 1, letter)
      if (removed > 0) {
        await redis.hincrby(keys.destinationStats(destinationId), 'deadLettered', -removed)
        await destinations.count(new Map([[destinationId, { filtered: { deleted: removed } }]]))
        deleted += removed
      }
    }
    // Queued deliver jobs (waiting, delayed, held): the subjects' conversions taken out.
    for (const job of await this.deps.deliverQueue.getJobs(['waiting', 'delayed', 'prioritized'])) {
      if (job === undefined || !ofSource.has(job.data.destinationId)) continue
      const kept: QueuedConversion[] = job.data.conversions.filter((conversion) => !ofSubject(payloadObject(conversion)))
      const removed = job.data.conversions.length - kept.length
      if (removed === 0) continue
      const { destinationId } = job.data
      const held = await redis.hexists(keys.heldConversions(destinationId), job.id!)
      if (kept.length === 0) {
        await job.remove()
        if (held === 1) await destinations.release(destinationId, job.id!)
      } else {
        await job.updateData({ ...job.data, conversions: kept })
        if (held === 1) await destinations.hold(destinationId, job.id!, kept.length)
      }
      await destinations.count(new Map([[destinationId, { filtered: { deleted: removed } }]]))
      deleted += removed
    }
    return deleted
  }
}
