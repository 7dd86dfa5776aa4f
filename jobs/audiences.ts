import { createHash, randomBytes } from 'node:crypto'
import { DelayedError, type Job, type Queue } from 'bullmq'
import type { Result } from 'ioredis'
import { isCluster, type RedisClient } from '../src/redis-client.js'
import { orderedPrimaries, orThrow, SlotPipeline, slotGroups } from '../src/slots.js'
import { compile, type AudienceStore, type CompiledAudience, type StoredAudience, type SyncState } from '../plugins/audiences.js'
import { profileFields, readProfile, type ProfileStore } from '../plugins/profiles.js'
import { partitionKey, partitionOf } from '../src/ingest-partitions.js'
import { matchesWhere, MAX_EVENT_NAME_BYTES } from '../src/audiences/condition.js'
import { dayNumber, evaluate, type CountedLeaf } from '../src/audiences/evaluate.js'
import { DESTINATION_NAME } from '../src/facebook/settings.js'
import type { RedisKeys } from '../src/keys.js'
import { consentAllows, messageConsent, type Consent, type ConsentRule } from '../src/segment/consent.js'
import { audienceChange } from '../src/segment/engage.js'
import type { SegmentMessage } from '../src/segment/types.js'
import type { IngestStage } from './ingest.js'
import { errorWithoutContent, SET_ASIDE } from './isolation.js'
import type { IngestJobData } from './queues.js'

export const AUDIENCE_SYNC_QUEUE = 'audience-sync'
export interface AudienceSyncJobData {
  audienceId: string
  /** `link` / `unlink`: the destinations connected to or removed from the audience. */
  destinationIds?: string[]
}

// Users per round trip when scanning or syncing; messages per emitted ingest job.
const CHUNK = 1000
const EMIT_CHUNK = 2000
// Distinct event names remembered per source (history is kept for all of them, so audiences
// created later see the past); past this, new names are not recorded.
const MAX_EVENT_NAMES = 10_000

export interface AudienceEngineDependencies {
  redis: RedisClient
  keys: RedisKeys
  audiences: AudienceStore
  profiles: ProfileStore
  /** Every ingest partition's queue; a sync's messages go to their users' partitions. */
  ingestQueues: Array<Queue<IngestJobData>>
  syncQueue: Queue<AudienceSyncJobData>
  retentionMs: number
  /**
   * How long a sync's per-audience lock outlives a worker that died holding it (renewed while the
   * sync runs). Default 30 s, BullMQ's own lock duration.
   */
  lockMs?: number
  /** Whether a source has a destination in the legacy format (which needs birthday parts). */
  legacyFormat?: (sourceId: string) => Promise<boolean>
  /** The consent each destination of a source asks for (those naming categories only). */
  consentRules?: (sourceId: string) => Promise<Array<{ destinationId: string, rule: ConsentRule }>>
  now?: () => number
  log: { warn: (obj: object, msg: string) => void, info: (obj: object, msg: string) => void }
  /** Told of every completed initial and incremental sync: its duration and the users it sent. */
  observeSync?: (kind: 'initial' | 'incremental', seconds: number, users: number) => void
}

type Affected = Map<string, Set<CompiledAudience>>

/**
 * A user's history, from the profile hash: per series — `h:<event code>`, or `w:<audience>.<leaf>`
 * for a leaf with `where` — the counts per UTC day.
 */
function readHistory (raw: Record<string, Buffer> | null | undefined): Map<string, Map<number, number>> {
  const history = new Map<string, Map<number, number>>()
  if (raw === null || raw === undefined) return history
  for (const [field, value] of Object.entries(raw)) {
    if (!(field.startsWith('h:') || field.startsWith('w:'))) continue
    const dot = field.lastIndexOf('.')
    const series = field.slice(0, dot)
    let days = history.get(series)
    if (days === undefined) history.set(series, (days = new Map()))
    days.set(Number(field.slice(dot + 1)), Number(value.toString()))
  }
  return history
}

// Drops a user's day buckets older than the retention, once a day per user (`_p` says which day
// it last ran), so history stays bounded by the retention window. Counting itself is a plain
// HINCRBY; this runs at most once a day per user and worker process.
const HISTORY_PRUNE = `
local today = ARGV[1]
local oldest = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], '_p') ~= today then
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    local kind = string.sub(field, 1, 2)
    if kind == 'h:' or kind == 'w:' then
      local day = tonumber(string.match(field, '%.(%d+)$'))
      if day ~= nil and day < oldest then redis.call('HDEL', KEYS[1], field) end
    end
  end
  redis.call('HSET', KEYS[1], '_p', today)
end
return 1`

// Adds a job's history counts (KEYS: profile hashes; ARGV, per key: how many fields, then each
// field and its count), in one command instead of one HINCRBY per message. On a cluster, one
// command per slot (profiles spread by user): a script keeps to one slot.
const HISTORY_ADD = `
local a = 1
for k = 1, #KEYS do
  local n = tonumber(ARGV[a])
  for f = 1, n do
    redis.call('HINCRBY', KEYS[k], ARGV[a + 2 * f - 1], ARGV[a + 2 * f])
  end
  a = a + 2 * n + 1
end
return 1`
const HISTORY_CHUNK = 500

// The per-audience lock: renewed and released only by its holder.
const LOCK_RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`
const LOCK_RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    historyPrune(profileKey: string, today: number, oldestDay: number): Result<number, Context>
    historyAdd(numKeys: number, ...keysAndArgs: Array<string | number>): Result<number, Context>
    audienceLockRenew(lockKey: string, value: string, ms: number): Result<number, Context>
    audienceLockRelease(lockKey: string, value: string): Result<number, Context>
  }
}

/**
 * The audience engine: keeps profiles and per-(user, event) day counts as messages arrive,
 * re-evaluates the audiences a message can change, records each membership change in the
 * audience's change log, and syncs: an initial sync that sends every member once, then
 * incremental syncs of the net changes — as identify calls with `traits: {<key>: true|false}`
 * and `context.personas`, routed like any identify.
 */
export class AudienceEngine {
  private readonly eventCodes = new Map<string, Map<string, string>>()
  private readonly codesLoadedAt = new Map<string, number>()
  /** Profiles whose history this process pruned today (bounded: cleared when full). */
  private readonly prunedToday = new Map<string, number>()
  private readonly now: () => number

  constructor (private readonly deps: AudienceEngineDependencies) {
    this.now = deps.now ?? Date.now
    deps.redis.defineCommand('historyPrune', { numberOfKeys: 1, lua: HISTORY_PRUNE })
    deps.redis.defineCommand('historyAdd', { lua: HISTORY_ADD })
    deps.redis.defineCommand('audienceLockRenew', { numberOfKeys: 1, lua: LOCK_RENEW })
    deps.redis.defineCommand('audienceLockRelease', { numberOfKeys: 1, lua: LOCK_RELEASE })
  }

  /** An event name's code; without a promise when it is known, as it nearly always is (asked per message). */
  private eventCode (sourceId: string, event: string): string | Promise<string | undefined> {
    let codes = this.eventCodes.get(sourceId)
    if (codes === undefined) this.eventCodes.set(sourceId, (codes = new Map()))
    return codes.get(event) ?? this.loadEventCode(sourceId, event, codes)
  }

  private async loadEventCode (sourceId: string, event: string, codes: Map<string, string>): Promise<string | undefined> {
    // Names are bounded by size as well as by count: a client may send any text as an event.
    if (Buffer.byteLength(event) > MAX_EVENT_NAME_BYTES) return undefined
    const key = this.deps.keys.eventCodes(sourceId)
    let code = await this.deps.redis.hget(key, event)
    if (code === null) {
      const next = await this.deps.redis.hincrby(key, '#', 1)
      if (next > MAX_EVENT_NAMES) return undefined
      await this.deps.redis.hsetnx(key, event, String(next))
      code = await this.deps.redis.hget(key, event)
    }
    if (code !== null) codes.set(event, code)
    return code ?? undefined
  }

  /**
   * The ingest stage: profiles, history and real-time membership. Runs before routing. Each
   * message's own work is guarded: one that throws is set aside and the others go on.
   */
  readonly stage: IngestStage = async (sourceId, messages, context) => {
    const { redis, keys, profiles } = this.deps
    const audiences = await this.deps.audiences.forSource(sourceId)
    const identities = await profiles.identities(sourceId, messages)
    const now = this.now()
    const today = dayNumber(now)
    const oldestDay = dayNumber(now - this.deps.retentionMs)
    const ownAudienceIds = new Set(audiences.map((a) => a.id))
    // Profiles, links and counts of many users: one pipeline on one Redis, one per primary on a cluster.
    const writes = new SlotPipeline(redis)
    const affected: Affected = new Map()
    /** Profile key → history field → how many of this job's messages count there. */
    const history = new Map<string, Map<string, number>>()
    // Whether to keep the legacy format's birthday parts: asked once per job, when needed.
    let legacyBirthday: boolean | undefined
    /** Profiles this job's messages wrote (activity: they live on), and those whose properties say audiences. */
    const active = new Set<string>()
    const retained = new Set<string>()
    /** Profile id → the latest consent its messages in this job carried. */
    const consents = new Map<string, { consent: Consent, at: number }>()
    /** Profiles to join (an anonymous visitor's, a former user id's) → the user's. */
    const joins = new Map<string, string>()
    const touch = (profileId: string, audience: CompiledAudience) => {
      let set = affected.get(profileId)
      if (set === undefined) affected.set(profileId, (set = new Set()))
      set.add(audience)
    }

    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]
      const profileId = identities[i]
      if (profileId === undefined) continue
      // The latest consent a user's messages carried (any message: an identify, a track such as
      // "Segment Consent Preference Updated", a page).
      const consent = context.guard('profiles', message, () => messageConsent(message))
      if (consent !== undefined && consent !== SET_ASIDE) {
        const at = Date.parse(message.timestamp)
        const kept = consents.get(profileId)
        if (kept === undefined || !(at < kept.at)) consents.set(profileId, { consent, at: Number.isNaN(at) ? now : at })
        active.add(keys.profile(sourceId, profileId))
      }
      // Identity: a message carrying both ids (an identify, a track…) joins the anonymous
      // visitor's profile to the user's and links the ids; an alias joins its previousId's —
      // an anonymous id's or a former user id's.
      if (message.userId !== undefined && message.anonymousId !== undefined) {
        joins.set(`anon:${message.anonymousId}`, profileId)
        profiles.link(writes, sourceId, message.anonymousId, profileId, now)
      }
      if (message.type === 'alias' && message.previousId !== undefined && message.userId !== undefined) {
        joins.set(`anon:${message.previousId}`, profileId)
        if (message.previousId !== profileId) joins.set(message.previousId, profileId)
        profiles.link(writes, sourceId, message.previousId, profileId, now)
        profiles.linkUser(writes, sourceId, message.previousId, profileId)
      }
      if (message.type === 'identify') {
        legacyBirthday ??= await this.deps.legacyFormat?.(sourceId) ?? false
        const update = context.guard('profiles', message, () => identifyUpdate(message, legacyBirthday!, ownAudienceIds))
        if (update === SET_ASIDE) continue
        profiles.applyIdentify(writes, sourceId, profileId, message.anonymousId, update.fields)
        if (Object.keys(update.fields).length > 0) {
          const key = keys.profile(sourceId, profileId)
          active.add(key)
          // An Engage membership written as a property: whether the profile is kept changes.
          if (Object.keys(update.fields).some((field) => field.startsWith('a:'))) retained.add(profileId)
        }
        // Our own sync's identifies change nothing the engine does not know already.
        if (!update.ownEmission) {
          context.guard('audiences', message, () => {
            for (const audience of audiences) {
              for (const trait of audience.traits) if (Object.hasOwn(update.traits, trait)) { touch(profileId, audience); break }
            }
          })
        }
      } else if (message.type === 'track' && typeof message.event === 'string') {
        const day = Math.min(today, dayNumber(Date.parse(message.timestamp)))
        if (!(day >= oldestDay)) continue
        const known = this.eventCode(sourceId, message.event)
        const code = typeof known === 'string' ? known : await known
        const fields = context.guard('audiences', message, () => {
          const fields = code === undefined ? [] : [`h:${code}.${day}`]
          for (const audience of audiences) {
            if (!audience.events.has(message.event!)) continue
            touch(profileId, audience)
            for (const { path, leaf } of audience.filteredLeaves) {
              if (leaf.event === message.event && matchesWhere(leaf.where!, message.properties)) fields.push(`w:${audience.id}.${path}.${day}`)
            }
          }
          return fields
        })
        if (fields === SET_ASIDE) continue
        const profileKey = keys.profile(sourceId, profileId)
        if (fields.length > 0) {
          active.add(profileKey)
          let counts = history.get(profileKey)
          if (counts === undefined) history.set(profileKey, (counts = new Map()))
          for (const field of fields) counts.set(field, (counts.get(field) ?? 0) + 1)
        }
        if (fields.length > 0 && this.prunedToday.get(profileKey) !== today) {
          writes.add(profileKey, (p) => p.historyPrune(profileKey, today, oldestDay))
          if (this.prunedToday.size >= 100_000) this.prunedToday.clear()
          this.prunedToday.set(profileKey, today)
        }
      }
    }
    // The job's counts in one command per chunk of users, not one HINCRBY each.
    for (const profileKeys of slotGroups(redis, [...history.keys()], (key) => key)) {
      for (let i = 0; i < profileKeys.length; i += HISTORY_CHUNK) {
        const chunk = profileKeys.slice(i, i + HISTORY_CHUNK)
        const args: Array<string | number> = []
        for (const key of chunk) {
          const counts = history.get(key)!
          args.push(counts.size)
          for (const [field, n] of counts) args.push(field, n)
        }
        writes.add(chunk[0], (p) => p.historyAdd(chunk.length, ...chunk, ...args))
      }
    }
    profiles.touch(writes, sourceId, active, now)
    for (const profileId of retained) profiles.retain(writes, sourceId, profileId, now)
    if (writes.length > 0) await writes.exec()
    for (const [from, into] of joins) {
      if (!await profiles.merge(sourceId, from, into, now)) continue
      // The joined profile's memberships end; the user's are evaluated once, on the sum.
      await this.dropMemberships(from, audiences)
      for (const audience of audiences) touch(into, audience)
    }
    const consentChanges = await profiles.recordConsent(sourceId, consents)
    if (consents.size > 0) context.carry.set(CONSENT_IN_EFFECT, consentInEffect(messages, identities, consents, consentChanges))
    if (consentChanges.size > 0) await this.consentChanged(sourceId, audiences, consentChanges, consents)
    if (affected.size > 0) await this.reevaluate(sourceId, affected, 'realtime')
  }

  /**
   * A profile joined to another (ProfileStore.merge) is no one's any more: it leaves every
   * audience it was a member of (the change logs send `false` for it); its history now counts for
   * the user it joined.
   */
  private async dropMemberships (profileId: string, audiences: CompiledAudience[]): Promise<void> {
    const { redis, keys } = this.deps
    // Each audience's keys are in its own slot.
    const read = new SlotPipeline(redis)
    for (const audience of audiences) {
      const members = keys.audienceMembers(audience.id)
      read.add(members, (p) => p.zscore(members, profileId))
    }
    const scores = (await read.exec()).map(([, score]) => score as string | null)
    const writes = new SlotPipeline(redis)
    const left: string[] = []
    audiences.forEach((audience, i) => {
      if (scores[i] === null) return
      writes.add(keys.audienceMembers(audience.id), (p) => p
        .zrem(keys.audienceMembers(audience.id), profileId)
        .zrem(keys.audienceLapses(audience.id), profileId)
        .xadd(keys.audienceChanges(audience.id), '*', 'u', profileId, 'm', '0'))
      left.push(audience.id)
    })
    if (writes.length === 0) return
    await writes.exec()
    for (const audienceId of left) await this.scheduleSync(audienceId)
  }

  /**
   * A user whose consent no longer allows a destination (one naming consent categories) leaves
   * that destination's audiences — `false` is sent to it for each audience the user is a member
   * of, like any other exit — and one whose consent allows it again re-enters them (`true`).
   */
  private async consentChanged (sourceId: string, audiences: CompiledAudience[], changes: Map<string, Consent | undefined>, latest: Map<string, { consent: Consent, at: number }>): Promise<void> {
    const rules = await this.deps.consentRules?.(sourceId) ?? []
    if (rules.length === 0) return
    const moves: Array<{ profileId: string, destinationId: string, member: boolean, at: number }> = []
    for (const [profileId, before] of changes) {
      const { consent, at } = latest.get(profileId)!
      for (const { destinationId, rule } of rules) {
        const was = consentAllows(rule, before)
        const is = consentAllows(rule, consent)
        if (was !== is) moves.push({ profileId, destinationId, member: is, at })
      }
    }
    if (moves.length === 0) return
    const { redis, keys } = this.deps
    for (const audience of audiences) {
      const relevant = moves.filter((move) => audience.destinations.includes(move.destinationId))
      if (relevant.length === 0) continue
      const read = redis.pipeline()
      for (const move of relevant) read.zscore(keys.audienceMembers(audience.id), move.profileId)
      const since = orThrow((await read.exec())!).map(([, score]) => score as string | null)
      for (const [i, move] of relevant.entries()) {
        if (since[i] === null) continue
        const version = `consent-${move.at}`
        await this.emit(audience, [{ profileId: move.profileId, member: move.member, version, since: move.member ? since[i]! : undefined }],
          `${audience.id}-${createHash('sha256').update(`${move.profileId}|${move.destinationId}|${version}`).digest('base64url').slice(0, 16)}`, [move.destinationId])
      }
    }
  }

  /**
   * Evaluates users against audiences and applies what changed: members (since), lapse times,
   * the profile's audience property and — except while building — the change log.
   */
  async reevaluate (sourceId: string, affected: Affected, mode: 'realtime' | 'build'): Promise<number> {
    const { redis, keys } = this.deps
    const profileIds = [...affected.keys()]
    await this.ensureCodes(sourceId, affected)
    // Profiles (a slot per user) and audiences (a slot each): one pipeline per primary on a cluster.
    const read = new SlotPipeline(redis)
    for (const id of profileIds) {
      const profileKey = keys.profile(sourceId, id)
      read.add(profileKey, (p) => p.hgetallBuffer(profileKey))
      for (const audience of affected.get(id)!) {
        const members = keys.audienceMembers(audience.id)
        read.add(members, (p) => p.zscore(members, id))
      }
    }
    const answers = await read.exec()
    const now = this.now()
    const writes = new SlotPipeline(redis)
    const changedAudiences = new Set<string>()
    let changes = 0
    let a = 0
    for (const id of profileIds) {
      const changesBefore = changes
      const raw = answers[a++][1] as Record<string, Buffer>
      const history = readHistory(raw)
      const profile = readProfile(raw)
      for (const audience of affected.get(id)!) {
        const since = answers[a++][1] as string | null
        const codes = this.eventCodes.get(sourceId)
        let result: ReturnType<typeof evaluate>
        try {
          result = evaluate(audience.condition, {
            now,
            counts: (leaf: CountedLeaf) => history.get(leaf.filtered ? `w:${audience.id}.${leaf.path}` : `h:${codes?.get(leaf.event)}`) ?? EMPTY,
            trait: (name) => Object.hasOwn(profile.audiences, name) ? profile.audiences[name] : Object.hasOwn(profile.traits, name) ? profile.traits[name] : undefined
          })
        } catch (err) {
          // A profile no condition can be read on (a bug, or data of an earlier build): this user
          // keeps their membership as it is, and every other user is evaluated.
          this.deps.log.warn({ audienceId: audience.id, error: errorWithoutContent(err) }, 'a profile could not be evaluated for an audience; its membership is unchanged')
          continue
        }
        const wasMember = since !== null
        if (result.member) {
          const lapses = keys.audienceLapses(audience.id)
          if (result.lapsesAt !== undefined) writes.add(lapses, (p) => p.zadd(lapses, result.lapsesAt!, id))
          else if (wasMember) writes.add(lapses, (p) => p.zrem(lapses, id))
          if (!wasMember) {
            applyChange(writes, keys, sourceId, audience, id, true, now, mode)
            changedAudiences.add(audience.id)
            changes++
          }
        } else if (wasMember) {
          writes.add(keys.audienceLapses(audience.id), (p) => p.zrem(keys.audienceLapses(audience.id), id))
          applyChange(writes, keys, sourceId, audience, id, false, now, mode)
          changedAudiences.add(audience.id)
          changes++
        }
      }
      // A member's profile is kept; one that left its last audience expires again.
      if (changes > changesBefore) this.deps.profiles.retain(writes, sourceId, id, now)
    }
    if (writes.length > 0) await writes.exec()
    if (mode === 'realtime') for (const audienceId of changedAudiences) await this.scheduleSync(audienceId)
    return changes
  }

  /**
   * Real-time changes go out within about a second: one sync job per audience and `delay`-long
   * slot. One fixed id per audience was a no-op while that job was running, so a change recorded
   * after its last look at the change log waited for the next scheduled run (up to a day). A job
   * of slot n starts in slot n + 1 at the earliest: it is never running while its slot asks for it.
   */
  async scheduleSync (audienceId: string, delay = 1000): Promise<void> {
    const slot = Math.floor(Date.now() / delay)
    await this.deps.syncQueue.add('sync', { audienceId }, { jobId: `sync-${audienceId}-${slot}`, delay, removeOnComplete: true, removeOnFail: 100 })
  }

  /** The source's event codes, as Redis has them (another worker may have added some). */
  private async loadCodes (sourceId: string): Promise<void> {
    const all = await this.deps.redis.hgetall(this.deps.keys.eventCodes(sourceId))
    const codes = new Map<string, string>()
    for (const [event, code] of Object.entries(all)) if (event !== '#') codes.set(event, code)
    this.eventCodes.set(sourceId, codes)
    this.codesLoadedAt.set(sourceId, Date.now())
  }

  /** Every event the audiences read needs its code; an unknown one reloads them (at most every 5 s). */
  private async ensureCodes (sourceId: string, affected: Affected): Promise<void> {
    const codes = this.eventCodes.get(sourceId)
    const missing = codes === undefined || [...affected.values()].some((audiences) =>
      [...audiences].some((audience) => [...audience.events].some((event) => !codes.has(event))))
    if (missing && Date.now() - (this.codesLoadedAt.get(sourceId) ?? 0) > 5000) await this.loadCodes(sourceId)
  }

  /** Evaluates the history the service keeps, so a new audience is not empty just because it is new. */
  async build (audience: StoredAudience, state: SyncState): Promise<void> {
    const { redis, keys, audiences } = this.deps
    // Compiled from the definition the job loaded, not from forSource's cache: `forSource(id, 0)`
    // took any cached list as fresh, so a worker that had cached the source before the audience
    // existed (another process, or within the cache's 2 s) never built it.
    const compiled = compile(audience)
    await this.loadCodes(audience.sourceId)
    this.codesLoadedAt.set(audience.sourceId, Date.now())
    // Every user with history or traits has a profile hash: one scan finds them all — on a
    // cluster one scan per primary, in turn; the cursor is then `<primary's place>:<its cursor>`
    // (primaries ordered by address). Should the primaries change meanwhile, a resumed build may
    // evaluate some users twice, which changes nothing (a build adds members with NX and writes no
    // change log).
    const primaries = orderedPrimaries(redis)
    const cluster = isCluster(redis)
    let [node, cursor] = cluster && state.buildCursor.includes(':')
      ? [Number(state.buildCursor.split(':')[0]), state.buildCursor.split(':')[1]]
      : [0, state.buildCursor]
    while (node < primaries.length) {
      const [next, found] = await primaries[node].scan(cursor, 'MATCH', keys.profilePattern(audience.sourceId), 'COUNT', CHUNK)
      if (found.length > 0) {
        const affected: Affected = new Map()
        for (const key of found) affected.set(key.slice(key.lastIndexOf('{') + 1, -1), new Set([compiled]))
        await this.reevaluate(audience.sourceId, affected, 'build')
      }
      cursor = next
      if (cursor === '0') node++
      if (node >= primaries.length) break
      // Resumable: a crash continues from the last finished chunk.
      await audiences.setState(audience.id, { buildCursor: cluster ? `${node}:${cursor}` : cursor })
    }
    await audiences.setState(audience.id, { buildCursor: '0' })
    await audiences.setState(audience.id, { built: true, status: 'syncing' })
  }

  /** Members whose window has passed are evaluated again (a last order ages out with no new event). */
  async expire (audience: StoredAudience): Promise<number> {
    const { redis, keys } = this.deps
    // As in build: the definition the job loaded (the cached list may not have it yet).
    const compiled = compile(audience)
    let changes = 0
    for (let round = 0; round < 10_000; round++) {
      const due = await redis.zrangebyscore(keys.audienceLapses(audience.id), '-inf', this.now(), 'LIMIT', 0, CHUNK)
      if (due.length === 0) break
      const affected: Affected = new Map(due.map((id) => [id, new Set([compiled])]))
      changes += await this.reevaluate(audience.sourceId, affected, 'realtime')
      if (due.length < CHUNK) break
    }
    return changes
  }

  /** Runs a sync and reports it (observeSync) once it has completed. */
  private async timed<T> (kind: 'initial' | 'incremental', sync: () => Promise<T>, users: (result: T) => number): Promise<T> {
    const started = performance.now()
    const result = await sync()
    this.deps.observeSync?.(kind, (performance.now() - started) / 1000, users(result))
    return result
  }

  /** The initial sync: every member once, resumable by its cursor. Answers how many members this run sent. */
  async initialSync (audience: StoredAudience, state: SyncState): Promise<number> {
    const { redis, keys, audiences } = this.deps
    let run = state.initialRun
    let cursor = state.initialCursor
    if (run === '') {
      // Changes from here on go out in incremental syncs.
      const last = await redis.xrevrange(keys.audienceChanges(audience.id), '+', '-', 'COUNT', 1)
      run = randomBytes(4).toString('hex')
      cursor = '0'
      await audiences.setState(audience.id, { initialRun: run, initialCursor: '0', initialSent: 0, syncedChangeId: last[0]?.[0] ?? '0-0', status: 'syncing' })
    }
    // Counted with the cursor: a sync resumed after a crash reports every member it sent, not
    // only those after the crash.
    let sent = run === state.initialRun ? state.initialSent : 0
    let sentByThisRun = 0
    do {
      const [next, flat] = await redis.zscan(keys.audienceMembers(audience.id), cursor, 'COUNT', EMIT_CHUNK)
      const members: Array<{ profileId: string, member: true, version: string, since: string }> = []
      for (let i = 0; i < flat.length; i += 2) members.push({ profileId: flat[i], member: true, version: `init-${run}`, since: flat[i + 1] })
      if (members.length > 0) {
        await this.emit(audience, members, `${audience.id}-${run}-${cursor}`)
        sent += members.length
        sentByThisRun += members.length
      }
      cursor = next
      await audiences.setState(audience.id, { initialCursor: cursor, initialSent: sent })
    } while (cursor !== '0')
    await audiences.setState(audience.id, {
      initialSynced: true,
      lastSyncAt: new Date(this.now()).toISOString(),
      lastSyncAdded: sent,
      lastSyncRemoved: 0
    })
    return sentByThisRun
  }

  /** Incremental sync: the net change of each user since the last sync, with the state at send time. */
  async incrementalSync (audience: StoredAudience): Promise<{ added: number, removed: number }> {
    const { redis, keys, audiences } = this.deps
    // Users an attempt is sending to, written before it emits and cleared with the cursor.
    const pendingKey = `${keys.audienceState(audience.id)}:pending`
    let added = 0
    let removed = 0
    for (;;) {
      const state = await audiences.state(audience.id)
      const [entries, pending] = await Promise.all([
        redis.xrange(keys.audienceChanges(audience.id), `(${state.syncedChangeId}`, '+', 'COUNT', 5000),
        redis.smembers(pendingKey)
      ])
      if (entries.length === 0 && pending.length === 0) break
      // First and last recorded state of each user in this range: it changed on net only if the
      // last state differs from the one before the first entry (= not the first entry's state).
      const net = new Map<string, { first: boolean, last: boolean, id: string }>()
      for (const [id, fields] of entries) {
        const profileId = fields[1]
        const member = fields[3] === '1'
        const seen = net.get(profileId)
        if (seen === undefined) net.set(profileId, { first: member, last: member, id })
        else { seen.last = member; seen.id = id }
      }
      // A user an attempt that failed (or crashed) after emitting may have sent a state to gets
      // the current state, whatever the net change: the retry used to skip a user who entered and
      // left meanwhile, so the `true` already sent stayed the final state.
      const uncertain = new Set(pending)
      const lastId = entries.length > 0 ? entries[entries.length - 1][0] : state.syncedChangeId
      const changed: Array<[string, string]> = [...net.entries()].filter(([profileId, n]) => n.first === n.last || uncertain.has(profileId)).map(([profileId, n]) => [profileId, n.id])
      for (const profileId of uncertain) if (!net.has(profileId)) changed.push([profileId, `pending-${lastId}`])
      if (changed.length > 0) {
        const read = redis.pipeline()
        for (const [profileId] of changed) read.zscore(keys.audienceMembers(audience.id), profileId)
        const current = orThrow((await read.exec())!)
        const updates = changed.map(([profileId, version], i) => {
          const since = current[i][1] as string | null
          return { profileId, member: since !== null, version, since: since ?? undefined }
        })
        await redis.sadd(pendingKey, ...updates.map((u) => u.profileId))
        for (let i = 0; i < updates.length; i += EMIT_CHUNK) {
          await this.emit(audience, updates.slice(i, i + EMIT_CHUNK), `${audience.id}-${updates[i].version}`)
        }
        for (const u of updates) { if (u.member) added++; else removed++ }
      }
      // The cursor and the pending users move together (one slot: both under the audience's tag).
      await redis.multi().hset(keys.audienceState(audience.id), 'syncedChangeId', lastId).del(pendingKey).exec()
      if (entries.length > 0) await redis.xtrim(keys.audienceChanges(audience.id), 'MINID', lastId)
    }
    return { added, removed }
  }

  /** Emits identify messages into the ingest queue, routed like any identify. */
  private async emit (audience: StoredAudience, updates: Array<{ profileId: string, member: boolean, version: string, since?: string }>, jobId: string, destinationIds = audience.destinations): Promise<void> {
    const now = new Date(this.now()).toISOString()
    const messages: Array<[string, SegmentMessage]> = updates.map(({ profileId, member, version, since }) => {
      const anonymous = profileId.startsWith('anon:')
      // Deterministic: a resumed sync re-sends a change under the same id (Meta de-duplicates).
      // The state is part of it: a retry that corrects what a failed attempt sent for the same
      // change must not look like a duplicate of it. An entry names the membership it starts (the
      // member's since): a user who joins while the initial sync scans is sent by the scan and
      // again by the change log, and both sends must be one entry (audienceEntryEvents: one
      // event_id, which Meta de-duplicates), not two.
      const occasion = member && since !== undefined ? `since-${since}` : version
      const message: SegmentMessage = {
        type: 'identify',
        messageId: `personas_${createHash('sha256').update(`${audience.id}|${profileId}|${occasion}|${member ? 1 : 0}`).digest('base64url').slice(0, 27)}`,
        ...(anonymous ? { anonymousId: profileId.slice(5) } : { userId: profileId }),
        traits: { [audience.key]: member },
        context: {
          personas: {
            computation_class: 'audience',
            computation_id: audience.id,
            computation_key: audience.key,
            namespace: `spa_${audience.sourceId}`,
            space_id: `spa_${audience.sourceId}`
          },
          // Our extension: which destinations of the source this sync is for.
          relay: { destinationIds }
        },
        integrations: { All: false, [DESTINATION_NAME]: true },
        timestamp: now,
        originalTimestamp: now,
        receivedAt: now
      }
      return [audience.sourceId, message]
    })
    // The job id names the content too: a re-run with the same messages is one job, but a re-run
    // whose messages differ (states changed since) is not dropped as a duplicate of the first.
    const content = createHash('sha256').update(JSON.stringify([destinationIds, updates])).digest('base64url').slice(0, 16)
    const queues = this.deps.ingestQueues
    if (queues.length === 1) {
      await queues[0].add('audience-sync', { messages }, { jobId: `audience-${jobId}-${content}`.replace(/:/g, '_') })
      return
    }
    // Each user's message to the user's own partition, as the API sends its messages: after the
    // user's messages queued before it, and the sync's work spread over the cluster's primaries
    // instead of all on the first partition's.
    const byPartition = new Map<number, Array<[string, SegmentMessage]>>()
    for (const entry of messages) {
      const partition = partitionOf(partitionKey(entry[1])!, queues.length)
      const part = byPartition.get(partition)
      if (part === undefined) byPartition.set(partition, [entry])
      else part.push(entry)
    }
    await Promise.all([...byPartition].map(([partition, part]) =>
      queues[partition].add('audience-sync', { messages: part }, { jobId: `audience-${jobId}-${content}-${partition}`.replace(/:/g, '_') })))
  }

  /**
   * Every member with one state to some destinations: `true` when a destination is connected to
   * the audience (its initial sync), `false` when one is unlinked or the audience is deleted.
   */
  async sendAll (audience: StoredAudience, member: boolean, destinationIds: string[], tag: string, writeProfiles = false): Promise<number> {
    const { redis, keys } = this.deps
    let cursor = '0'
    let sent = 0
    do {
      const [next, flat] = await redis.zscan(keys.audienceMembers(audience.id), cursor, 'COUNT', EMIT_CHUNK)
      const members: string[] = []
      for (let i = 0; i < flat.length; i += 2) members.push(flat[i])
      if (members.length > 0) {
        if (writeProfiles) {
          // The engine keeps the profile's property (its own identifies do not write it).
          const writes = new SlotPipeline(redis)
          for (const id of members) {
            const profileKey = keys.profile(audience.sourceId, id)
            writes.add(profileKey, (p) => p.hset(profileKey, `a:${audience.key}`, member ? '1' : '0'))
            this.deps.profiles.retain(writes, audience.sourceId, id, this.now())
          }
          await writes.exec()
        }
        await this.emit(audience, members.map((id) => ({ profileId: id, member, version: tag })), `${audience.id}-${tag}-${cursor}`, destinationIds)
        sent += members.length
      }
      cursor = next
    } while (cursor !== '0')
    return sent
  }

  /** The audience-sync worker: build, expire, initial and incremental syncs, one audience at a time. */
  createProcessor () {
    return async (job: Job<AudienceSyncJobData>, token?: string): Promise<unknown> => {
      const { redis, keys, audiences } = this.deps
      const audience = await audiences.get(job.data.audienceId)
      if (audience === undefined) return { skipped: 'audience deleted' }
      const lockKey = `${keys.audienceState(audience.id)}:lock`
      const lockValue = randomBytes(8).toString('hex')
      // A short lock renewed while the sync runs: it held 10 minutes, so a worker killed mid-sync
      // kept every other worker off the audience that long after BullMQ had handed the job on.
      const lockMs = this.deps.lockMs ?? 30_000
      if (await redis.set(lockKey, lockValue, 'PX', lockMs, 'NX') === null) {
        // Another sync of this audience is running: come back shortly. BullMQ's delays are in
        // real time: with the engine's clock (moved forward in tests) the job slept for days.
        await job.moveToDelayed(Date.now() + 1000, token)
        throw new DelayedError()
      }
      const renew = setInterval(() => {
        redis.audienceLockRenew(lockKey, lockValue, lockMs).catch((err) => this.deps.log.warn({ err, audienceId: audience.id }, 'could not renew the audience sync lock'))
      }, Math.max(10, Math.floor(lockMs / 3)))
      try {
        if (job.name === 'remove') {
          // DESIGN: deleting an audience sends false for its members, then its data goes.
          const sent = await this.sendAll(audience, false, audience.destinations, `remove-${job.id}`, true)
          await this.deps.syncQueue.removeJobScheduler(`expire-${audience.id}`)
          await audiences.remove(audience)
          return { removed: sent }
        }
        if (job.name === 'link' || job.name === 'unlink') {
          const destinationIds = job.data.destinationIds ?? []
          return { sent: await this.sendAll(audience, job.name === 'link', destinationIds, `${job.name}-${job.id}`) }
        }
        let state = await audiences.state(audience.id)
        if (!state.built) {
          await audiences.setState(audience.id, { status: 'building' })
          await this.build(audience, state)
          state = await audiences.state(audience.id)
        }
        let expired = 0
        if (job.name === 'expire') expired = await this.expire(audience)
        await audiences.setState(audience.id, { status: 'syncing' })
        if (!state.initialSynced) {
          await this.timed('initial', () => this.initialSync(audience, state), (sent) => sent)
          // Changes recorded while the initial sync ran go out now.
          await this.timed('incremental', () => this.incrementalSync(audience), ({ added, removed }) => added + removed)
        } else {
          const { added, removed } = await this.timed('incremental', () => this.incrementalSync(audience), (sync) => sync.added + sync.removed)
          if (added + removed > 0 || job.name === 'expire') {
            await audiences.setState(audience.id, { lastSyncAt: new Date(this.now()).toISOString(), lastSyncAdded: added, lastSyncRemoved: removed })
          }
        }
        await audiences.setState(audience.id, { status: 'idle', error: '' })
        return { expired }
      } catch (err) {
        await audiences.setState(audience.id, { status: 'failed', error: (err as Error).message })
        throw err
      } finally {
        clearInterval(renew)
        await redis.audienceLockRelease(lockKey, lockValue)
      }
    }
  }
}

const EMPTY: ReadonlyMap<number, number> = new Map()

/**
 * Carried to the routing stage (StageContext.carry): for each message without consent of its own
 * whose user's consent this job changed, the consent in effect when it was sent — the last one
 * its user's messages carried before it in the job, else the one before the job. (The profile
 * already holds the job's last consent: a withdrawal later in a batch must not free the messages
 * sent before it, nor a consent given later in the batch let earlier ones through.)
 */
export const CONSENT_IN_EFFECT = 'consentInEffect'

function consentInEffect (
  messages: SegmentMessage[],
  identities: Array<string | undefined>,
  latest: ReadonlyMap<string, { consent: Consent, at: number }>,
  changed: ReadonlyMap<string, Consent | undefined>
): Map<SegmentMessage, Consent | undefined> {
  const inEffect = new Map<SegmentMessage, Consent | undefined>()
  // Before the job: what changed had the consent returned; what did not, the job's own (equal).
  const current = new Map<string, Consent | undefined>()
  for (const [profileId, { consent }] of latest) current.set(profileId, changed.has(profileId) ? changed.get(profileId) : consent)
  messages.forEach((message, i) => {
    const profileId = identities[i]
    if (profileId === undefined || !current.has(profileId)) return
    const own = messageConsent(message)
    if (own !== undefined) current.set(profileId, own)
    else inEffect.set(message, current.get(profileId))
  })
  return inEffect
}

/**
 * What an identify writes to its user's profile: the hashed match keys and other traits, and an
 * Engage membership as the user property it is. `ownEmission`: one of our own syncs' identifies.
 */
function identifyUpdate (message: SegmentMessage, legacyBirthday: boolean, ownAudienceIds: ReadonlySet<string>): { fields: Record<string, string | Buffer>, traits: Record<string, unknown>, ownEmission: boolean } {
  const traits = message.traits ?? {}
  const fields = profileFields(traits, { legacyBirthday })
  // Engage memberships — ours or a real Engage workspace's — are user properties.
  const change = audienceChange(message)
  const ownEmission = change?.computationId !== undefined && ownAudienceIds.has(change.computationId)
  if (change !== undefined) {
    delete fields[`t:${change.key}`]
    // Our own syncs' identifies leave the property alone: the engine wrote it when the
    // membership changed, and the state an identify carries can be out of date by the time
    // it is processed (a later change) or meant for one destination only (unlinking one
    // sends false while the user stays a member) — it used to overwrite the profile.
    if (!ownEmission) fields[`a:${change.key}`] = change.member ? '1' : '0'
  }
  return { fields, traits, ownEmission }
}

function applyChange (writes: SlotPipeline, keys: RedisKeys, sourceId: string, audience: StoredAudience, profileId: string, member: boolean, now: number, mode: 'realtime' | 'build'): void {
  const members = keys.audienceMembers(audience.id)
  if (member) writes.add(members, (p) => p.zadd(members, 'NX', now, profileId))
  else writes.add(members, (p) => p.zrem(members, profileId))
  const profileKey = keys.profile(sourceId, profileId)
  writes.add(profileKey, (p) => p.hset(profileKey, `a:${audience.key}`, member ? '1' : '0'))
  // While building, the initial sync sends every member: no change log needed.
  const changes = keys.audienceChanges(audience.id)
  if (mode === 'realtime') writes.add(changes, (p) => p.xadd(changes, '*', 'u', profileId, 'm', member ? '1' : '0'))
}
