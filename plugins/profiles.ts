import { createHash } from 'node:crypto'
import fp from 'fastify-plugin'
import type { Cluster, Result } from 'ioredis'
import { isCluster, type RedisClient } from '../src/redis-client.js'
import { mgetBySlot, slotGroups, SlotPipeline, slotOf, tagOfSlot } from '../src/slots.js'
import { hashedTraitKeys, type MatchKeys } from '../src/facebook/match-keys.js'
import { isMatchKeyTrait } from '../src/facebook/trait-spellings.js'
import type { RedisKeys } from '../src/keys.js'
import type { Consent } from '../src/segment/consent.js'

// Hashed match keys: one field each, named by one letter (a list's further values get a digit:
// `e`, `e1`, `e2`), the SHA-256 as 32 raw bytes (half the hex). Short names and values of at most
// 64 bytes keep the hash in Redis's compact listpack encoding.
const MATCH_KEY_FIELDS: Readonly<Record<string, string>> = {
  em: 'e', ph: 'p', ge: 'g', fn: 'f', ln: 'l', ct: 'c', st: 's', zp: 'z', country: 'n', db: 'b', doby: 'y', dobm: 'm', dobd: 'd'
}
const FIELD_KEYS: Readonly<Record<string, string>> = Object.fromEntries(Object.entries(MATCH_KEY_FIELDS).map(([key, field]) => [field, key]))
const LIST_KEYS: ReadonlySet<string> = new Set(['em', 'ph'])
// The legacy format's birthday parts: kept only for sources with a destination in that format.
const LEGACY_ONLY: ReadonlySet<string> = new Set(['doby', 'dobm', 'dobd'])
const MAX_LIST = 10

export interface Profile {
  matchKeys: MatchKeys
  /** Other traits, as sent (never a match-key trait: those are kept only hashed). */
  traits: Record<string, unknown>
  /** Audience and computed-trait memberships: audience key → member. */
  audiences: Record<string, boolean>
  /** The latest consent seen for the user (Segment Consent Management); absent when none was. */
  consent?: Consent
}

// The latest consent seen for the user (its categories as canonical JSON), and the time of the
// message that carried it: an older message never overwrites a newer consent.
const CONSENT_FIELD = 'k:consent'
const CONSENT_AT_FIELD = 'k:at'

export function matchKeyFields (keys: MatchKeys, legacyBirthday = true): Record<string, Buffer> {
  const fields: Record<string, Buffer> = {}
  for (const [name, field] of Object.entries(MATCH_KEY_FIELDS)) {
    // a year alone (doby without db) is not kept: HSET only adds fields, so it would sit beside
    // the month and day of a whole date sent earlier, and a legacy event would get a mixed date
    if (LEGACY_ONLY.has(name) && (!legacyBirthday || keys.db === undefined)) continue
    const value = keys[name as keyof MatchKeys]
    if (value === undefined) continue
    const list = Array.isArray(value) ? value.slice(0, MAX_LIST) : [value]
    list.forEach((hex, i) => { fields[i === 0 ? field : `${field}${i}`] = Buffer.from(hex, 'hex') })
  }
  return fields
}

/** An identify's profile fields: the match-key hashes, and `t:<trait>` JSON for the other traits. */
export function profileFields (traits: Record<string, unknown> | undefined, options: { legacyBirthday?: boolean } = {}): Record<string, string | Buffer> {
  const fields: Record<string, string | Buffer> = {}
  if (traits === undefined) return fields
  Object.assign(fields, matchKeyFields(hashedTraitKeys(traits), options.legacyBirthday ?? true))
  for (const [name, value] of Object.entries(traits)) {
    // No raw PII at rest: match-key traits, in any spelling (`mobile`, `zip`, `first_name`:
    // src/facebook/trait-spellings.ts), live only as the hashes above.
    if (value === undefined || isMatchKeyTrait(name)) continue
    fields[`t:${name}`] = JSON.stringify(value)
  }
  return fields
}

/** The profile part of a profile hash (history fields `h:`/`w:` are the engine's). */
export function readProfile (raw: Record<string, Buffer> | null | undefined): Profile {
  const profile: Profile = { matchKeys: {}, traits: {}, audiences: {} }
  if (raw === null || raw === undefined) return profile
  for (const [field, value] of Object.entries(raw)) addField(profile, field, value)
  return profile
}

const COLON = 0x3a
const TRAIT = 0x74 // t
const AUDIENCE = 0x61 // a
const CONSENT = 0x6b // k

/**
 * The profile of an HGETALL answer read as field/value pairs: the history fields (most of a
 * busy user's hash) are skipped without being decoded.
 */
export function readProfilePairs (pairs: Buffer[] | null | undefined): Profile {
  const profile: Profile = { matchKeys: {}, traits: {}, audiences: {} }
  if (pairs === null || pairs === undefined) return profile
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const field = pairs[i]
    const prefixed = field.length > 2 && field[1] === COLON
    if (prefixed ? field[0] === TRAIT || field[0] === AUDIENCE || field[0] === CONSENT : field.length <= 2) addField(profile, field.toString('utf8'), pairs[i + 1])
  }
  return profile
}

function addField (profile: Profile, field: string, value: Buffer): void {
  const matchKey = FIELD_KEYS[field[0]]
  if (matchKey !== undefined && (field.length === 1 || /^[0-9]$/.test(field.slice(1)))) {
    const hex = value.toString('hex')
    if (LIST_KEYS.has(matchKey)) ((profile.matchKeys as Record<string, string[]>)[matchKey] ??= []).push(hex)
    else (profile.matchKeys as Record<string, string>)[matchKey] = hex
    return
  }
  const kind = field.slice(0, 2)
  const name = field.slice(2)
  // Assigned, `__proto__` would set the object's prototype, not a trait (the API refuses it;
  // profiles of earlier builds may hold one). Other names are read with Object.hasOwn.
  if (name === '__proto__') return
  if (kind === 't:') {
    try { profile.traits[name] = JSON.parse(value.toString('utf8')) } catch { /* a corrupt trait is skipped */ }
  } else if (kind === 'a:') {
    profile.audiences[name] = value.toString() === '1'
  } else if (field === CONSENT_FIELD) {
    try { profile.consent = JSON.parse(value.toString('utf8')) } catch { /* a corrupt consent is none */ }
  }
}

/** A consent as stored: its categories sorted, so equal consents are equal texts. */
export function consentJson (consent: Consent): string {
  return JSON.stringify(Object.fromEntries(Object.entries(consent).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)))
}

// Records a user's latest consent (KEYS: the profile; ARGV: its JSON, the message's time in ms).
// Answers the consent it replaced ('' when there was none), or false when nothing changed: an
// equal consent, or one older than what is kept.
const CONSENT_SET = `
local at = tonumber(redis.call('HGET', KEYS[1], '${CONSENT_AT_FIELD}') or '-1')
if tonumber(ARGV[2]) < at then return false end
local old = redis.call('HGET', KEYS[1], '${CONSENT_FIELD}')
redis.call('HSET', KEYS[1], '${CONSENT_AT_FIELD}', ARGV[2])
if old == ARGV[1] then return false end
redis.call('HSET', KEYS[1], '${CONSENT_FIELD}', ARGV[1])
return old or ''`

// Many profiles in one command (KEYS: the profile hashes): each as its field/value pairs without
// the history fields (`h:`/`w:`, the engine's — most of a busy user's hash), which stay in Redis.
// One command for a job's users, not one each: ioredis spends several µs of CPU per command.
const PROFILES_READ = `
local out = {}
for k = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[k])
  local keep = {}
  local n = 0
  for i = 1, #flat, 2 do
    local field = flat[i]
    local kind = string.byte(field, 1)
    if not (string.byte(field, 2) == 58 and (kind == 104 or kind == 119)) then
      keep[n + 1] = field
      keep[n + 2] = flat[i + 1]
      n = n + 2
    end
  end
  out[k] = keep
end
return out`

// A profile lives HISTORY_RETENTION past the end of the UTC day of its user's last activity (an
// identify, a track), unless its user belongs to an audience. Each is counted in its source's
// `profile-counts` hash under that day (`_d` in the profile says which), or under `kept` (`_k`):
// the number of profiles kept is the sum of the days not yet past, and `kept`. A profile's expiry
// and its day's end coincide, so the count is exact. (Profiles of earlier builds are counted, and
// get their expiry, at their next activity.) The count moves in the same script as the profile's
// `_d`/`_k`, which is what keeps it exact: on Redis Cluster, where profiles spread by user, a
// source's counts are therefore one hash per slot (ProfileStore.countsKey), in the slot of the
// profiles it counts, and the source's count is their sum.
//   KEYS: the counts hash, then profile hashes (all in one slot on a cluster); ARGV: the day, the
//   time the day's profiles expire.
const PROFILES_TOUCH = `
local counts, day, expireAt = KEYS[1], ARGV[1], ARGV[2]
for k = 2, #KEYS do
  local key = KEYS[k]
  if redis.call('HEXISTS', key, '_k') == 0 then
    local old = redis.call('HGET', key, '_d')
    if old ~= day then
      if old then redis.call('HINCRBY', counts, old, -1) end
      redis.call('HINCRBY', counts, day, 1)
      redis.call('HSET', key, '_d', day)
    end
    redis.call('PEXPIREAT', key, expireAt)
  end
end
return 1`

// After a membership change: a profile with any audience property true is kept (no expiry,
// counted under `kept`); one without, counted under its day again and expiring.
//   KEYS: the counts hash, the profile; ARGV: the day, the time the day's profiles expire.
const PROFILE_RETAIN = `
local counts, key, day, expireAt = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local flat = redis.call('HGETALL', key)
if #flat == 0 then return 0 end
local member = false
for i = 1, #flat, 2 do
  if flat[i + 1] == '1' and string.sub(flat[i], 1, 2) == 'a:' then member = true break end
end
local kept = redis.call('HEXISTS', key, '_k') == 1
local old = redis.call('HGET', key, '_d')
if member and not kept then
  if old then redis.call('HINCRBY', counts, old, -1) end
  redis.call('HINCRBY', counts, 'kept', 1)
  redis.call('HSET', key, '_k', '1')
  redis.call('HDEL', key, '_d')
  redis.call('PERSIST', key)
elseif not member and (kept or not old) then
  if kept then redis.call('HINCRBY', counts, 'kept', -1) end
  redis.call('HDEL', key, '_k')
  redis.call('HSET', key, '_d', day)
  redis.call('HINCRBY', counts, day, 1)
  redis.call('PEXPIREAT', key, expireAt)
end
return 1`

// Joins (ProfileStore.merge). Claim (KEYS: the profile to join; ARGV: the user it joins): marks
// it as that user's and answers its fields — nothing when it is gone or already another's.
const MERGE_CLAIM = `
local owner = redis.call('HGET', KEYS[1], '_merged')
if owner and owner ~= ARGV[1] then return false end
if not owner then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  redis.call('HSET', KEYS[1], '_merged', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])`

// Into (KEYS: the user's profile; ARGV: the claim's field, then the joined profile's fields and
// values): history counts add up, other fields fill what the user lacks; audience properties
// and the joined profile's own bookkeeping (\`_…\`) stay behind. Once per claim.
const MERGE_INTO = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do
  local field = ARGV[i]
  local kind = string.sub(field, 1, 2)
  if kind == 'h:' or kind == 'w:' then
    redis.call('HINCRBY', KEYS[1], field, ARGV[i + 1])
  elseif kind ~= 'a:' and string.sub(field, 1, 1) ~= '_' then
    redis.call('HSETNX', KEYS[1], field, ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], '1')
return 1`

// Removes a profile and its count (KEYS: the counts hash, the profile).
const PROFILE_DROP = `
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[2], '_k') == 1 then
  redis.call('HINCRBY', KEYS[1], 'kept', -1)
else
  local day = redis.call('HGET', KEYS[2], '_d')
  if day then redis.call('HINCRBY', KEYS[1], day, -1) end
end
redis.call('DEL', KEYS[2])
return 1`

/** Profile keys per touch command. */
const TOUCH_CHUNK = 500

/** Profiles read per command: bounds the reply and the time Redis spends on one call. */
const READ_CHUNK = 500

/**
 * A source's per-slot profile counts on a cluster (ProfileStore.countsKey), and the set of the
 * slots that have one (what `count` reads). Not in src/keys.ts: only this store uses them.
 */
function profileCountKeys (keys: RedisKeys) {
  const prefix = keys.sources.slice(0, -':sources'.length)
  return {
    shard: (sourceId: string, slot: number) => `${prefix}:profile-counts:${sourceId}:{${tagOfSlot(slot)}}`,
    index: (sourceId: string) => `${prefix}:profile-count-slots:{${sourceId}}`
  }
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    profilesReadBuffer(numKeys: number, ...keys: string[]): Result<Buffer[][], Context>
    profilesTouch(numKeys: number, ...keysAndArgs: Array<string | number>): Result<number, Context>
    profileRetain(countsKey: string, profileKey: string, day: number, expireAt: number): Result<number, Context>
    profileConsentSet(profileKey: string, json: string, at: number): Result<string | null, Context>
    profileMergeClaimBuffer(profileKey: string, into: string): Result<Buffer[] | null, Context>
    profileMergeInto(profileKey: string, claim: string, ...pairs: Array<string | Buffer>): Result<number, Context>
    profileDrop(countsKey: string, profileKey: string): Result<number, Context>
  }
}

const DAY_MS = 86_400_000

/**
 * User profiles per source, keyed by userId (an anonymous user by `anon:<anonymousId>` until an
 * identify links the two). Keys spread by user (`{userId}` hash tag), never under one tag.
 */
export class ProfileStore {
  /** Profiles this process touched today (PROFILES_TOUCH is the same all day): key → day. Bounded. */
  private readonly touchedToday = new Map<string, number>()
  /** Joins and links this process made today: a web user's every event carries both ids. Bounded. */
  private readonly joinedToday = new Map<string, number>()
  private readonly linkedToday = new Map<string, number>()
  private readonly cluster: boolean
  private readonly countKeys: ReturnType<typeof profileCountKeys>
  /** On a cluster: the count slots this process knows the source's index names (source → slots). */
  private readonly indexedSlots = new Map<string, Set<number>>()

  constructor (private readonly redis: RedisClient, private readonly keys: RedisKeys, readonly retentionMs: number) {
    this.cluster = isCluster(redis)
    this.countKeys = profileCountKeys(keys)
    redis.defineCommand('profilesRead', { lua: PROFILES_READ })
    redis.defineCommand('profilesTouch', { lua: PROFILES_TOUCH })
    redis.defineCommand('profileRetain', { numberOfKeys: 2, lua: PROFILE_RETAIN })
    redis.defineCommand('profileConsentSet', { numberOfKeys: 1, lua: CONSENT_SET })
    redis.defineCommand('profileMergeClaim', { numberOfKeys: 1, lua: MERGE_CLAIM })
    redis.defineCommand('profileMergeInto', { numberOfKeys: 1, lua: MERGE_INTO })
    redis.defineCommand('profileDrop', { numberOfKeys: 2, lua: PROFILE_DROP })
  }

  /** When the profiles active on `day` expire: HISTORY_RETENTION after the day's end. */
  expiresAt (day: number): number {
    return (day + 1) * DAY_MS + this.retentionMs
  }

  /**
   * The counts hash of a profile (its key): the source's on one Redis; on a cluster the source's
   * one of the profile's slot, queued on `pipeline` to be named in the source's index first.
   */
  private countsKey (pipeline: SlotPipeline, sourceId: string, profileKey: string): string {
    if (!this.cluster) return this.keys.profileCounts(sourceId)
    const slot = slotOf(profileKey)
    let indexed = this.indexedSlots.get(sourceId)
    if (indexed === undefined) {
      if (this.indexedSlots.size >= 1000) this.indexedSlots.clear()
      this.indexedSlots.set(sourceId, (indexed = new Set()))
    }
    if (!indexed.has(slot)) {
      const index = this.countKeys.index(sourceId)
      const known = indexed
      // Before the counts hash is written (a count `count` does not see would be lost); known to
      // this process only once Redis has it.
      pipeline.first(index, (p) => p.sadd(index, slot), () => known.add(slot))
    }
    return this.countKeys.shard(sourceId, slot)
  }

  /**
   * Queues on `pipeline` what activity today does to these profiles (keys): each expires
   * HISTORY_RETENTION after today unless kept, and is counted. Once a day per profile and process.
   */
  touch (pipeline: SlotPipeline, sourceId: string, profileKeys: Iterable<string>, now: number): void {
    const day = Math.floor(now / DAY_MS)
    const due: string[] = []
    for (const key of profileKeys) {
      if (this.touchedToday.get(key) === day) continue
      if (this.touchedToday.size >= 100_000) this.touchedToday.clear()
      this.touchedToday.set(key, day)
      due.push(key)
    }
    // One script per slot on a cluster (the counts hash of the slot with its profiles).
    for (const keys of slotGroups(this.redis, due, (key) => key)) {
      const counts = this.countsKey(pipeline, sourceId, keys[0])
      for (let i = 0; i < keys.length; i += TOUCH_CHUNK) {
        const chunk = keys.slice(i, i + TOUCH_CHUNK)
        pipeline.add(chunk[0], (p) => p.profilesTouch(chunk.length + 1, counts, ...chunk, day, this.expiresAt(day)))
      }
    }
  }

  /** Queues, after a membership change of the profile, whether it is kept (a member) or expires. */
  retain (pipeline: SlotPipeline, sourceId: string, profileId: string, now: number): void {
    const day = Math.floor(now / DAY_MS)
    const key = this.keys.profile(sourceId, profileId)
    const counts = this.countsKey(pipeline, sourceId, key)
    pipeline.add(key, (p) => p.profileRetain(counts, key, day, this.expiresAt(day)))
  }

  /**
   * Records the latest consent of each user (profile id → consent and the time of its message).
   * Answers the users whose consent changed, with the consent each had before (undefined: none).
   */
  async recordConsent (sourceId: string, latest: Map<string, { consent: Consent, at: number }>): Promise<Map<string, Consent | undefined>> {
    const changed = new Map<string, Consent | undefined>()
    if (latest.size === 0) return changed
    const pipeline = new SlotPipeline(this.redis)
    const ids = [...latest.keys()]
    for (const id of ids) {
      const { consent, at } = latest.get(id)!
      const key = this.keys.profile(sourceId, id)
      pipeline.add(key, (p) => p.profileConsentSet(key, consentJson(consent), at))
    }
    const answers = await pipeline.exec()
    answers.forEach(([err, old], i) => {
      if (err !== null) throw err
      if (typeof old !== 'string') return
      let before: Consent | undefined
      try { before = old === '' ? undefined : JSON.parse(old) } catch { before = undefined }
      changed.set(ids[i], before)
    })
    return changed
  }

  /** Removes a profile (keys, traits, history, consent) and its count; 1 when there was one. */
  async drop (sourceId: string, profileId: string): Promise<number> {
    const key = this.keys.profile(sourceId, profileId)
    // A profile that exists was counted, so its slot's counts hash is in the index already.
    const counts = this.cluster ? this.countKeys.shard(sourceId, slotOf(key)) : this.keys.profileCounts(sourceId)
    return this.redis.profileDrop(counts, key)
  }

  /** How many profiles the source keeps: those of days not yet expired, and audience members. */
  async count (sourceId: string, now = Date.now()): Promise<number> {
    if (!this.cluster) return this.countOf(this.keys.profileCounts(sourceId), await this.redis.hgetall(this.keys.profileCounts(sourceId)), now)
    // On a cluster: the sum of the source's counts hashes, one per slot with profiles.
    const slots = await this.redis.smembers(this.countKeys.index(sourceId))
    const read = new SlotPipeline(this.redis)
    const shards = slots.map((slot) => this.countKeys.shard(sourceId, Number(slot)))
    for (const shard of shards) read.add(shard, (p) => p.hgetall(shard))
    const answers = await read.exec()
    let total = 0
    for (const [i, [err, counts]] of answers.entries()) {
      if (err !== null) throw err
      total += await this.countOf(shards[i], counts as Record<string, string>, now)
    }
    return Math.max(0, total)
  }

  /** The profiles a counts hash counts (read as `counts`); its days past are removed. */
  private async countOf (key: string, counts: Record<string, string>, now: number): Promise<number> {
    let total = 0
    const expired: string[] = []
    for (const [field, value] of Object.entries(counts)) {
      if (field === 'kept' || this.expiresAt(Number(field)) > now) total += Number(value)
      else expired.push(field)
    }
    if (expired.length > 0) await this.redis.hdel(key, ...expired)
    return Math.max(0, total)
  }

  /**
   * Removes the source's counts (its source is deleted): on a cluster the counts hash of each
   * slot and their index, one key at a time (they are in different slots).
   */
  async dropCounts (sourceId: string): Promise<void> {
    if (!this.cluster) {
      await this.redis.del(this.keys.profileCounts(sourceId))
      return
    }
    const index = this.countKeys.index(sourceId)
    const slots = await this.redis.smembers(index)
    const pipeline = new SlotPipeline(this.redis)
    for (const slot of slots) {
      const shard = this.countKeys.shard(sourceId, Number(slot))
      pipeline.add(shard, (p) => p.del(shard))
    }
    await pipeline.exec()
    await this.redis.del(index, this.keys.profileCounts(sourceId))
    this.indexedSlots.delete(sourceId)
  }

  /**
   * The profile id of each message's user: its userId (or the user an alias joined it to), else
   * the user its anonymousId is linked to, else `anon:<anonymousId>`.
   */
  async identities (sourceId: string, users: Array<{ type?: string, userId?: string, anonymousId?: string, previousId?: string }>): Promise<Array<string | undefined>> {
    const pending = users.map((u, i) => [u, i] as const).filter(([u]) => u.userId === undefined && u.anonymousId !== undefined)
    // One MGET on one Redis; the links are in their ids' slots, so a GET each on a cluster.
    const linked = await mgetBySlot(this.redis, pending.map(([u]) => this.keys.anonymousLink(sourceId, u.anonymousId!)))
    const result = users.map((u) => u.userId)
    pending.forEach(([u, i], n) => { result[i] = linked[n] ?? `anon:${u.anonymousId}` })
    // A message carrying both ids (an identify, a track) or an alias links its anonymous id for
    // the messages after it in the same job too: the link it stores is written only after this
    // lookup, and an anonymous track right behind the identify (one batch from one client) was
    // otherwise counted for `anon:<id>`, not the user.
    const links = new Map<string, string>()
    users.forEach((u, i) => {
      if (u.userId !== undefined) {
        if (u.anonymousId !== undefined) links.set(u.anonymousId, u.userId)
        if (u.type === 'alias' && u.previousId !== undefined) links.set(u.previousId, u.userId)
      } else if (u.anonymousId !== undefined && links.has(u.anonymousId)) {
        result[i] = links.get(u.anonymousId)
      }
    })
    return this.followUserLinks(sourceId, result)
  }

  /** User ids an alias joined to another resolve to it (a chain of at most three). */
  private async followUserLinks (sourceId: string, ids: Array<string | undefined>): Promise<Array<string | undefined>> {
    let result = ids
    for (let hop = 0; hop < 3; hop++) {
      const users = [...new Set(result.filter((id): id is string => id !== undefined && !id.startsWith('anon:')))]
      if (users.length === 0) return result
      const targets = await mgetBySlot(this.redis, users.map((id) => this.keys.userLink(sourceId, id)))
      const moved = new Map<string, string>()
      users.forEach((id, i) => { if (targets[i] !== null && targets[i] !== id) moved.set(id, targets[i]!) })
      if (moved.size === 0) return result
      result = result.map((id) => id === undefined ? id : moved.get(id) ?? id)
    }
    return result
  }

  /** Queues an identify's profile update on `pipeline`. */
  applyIdentify (pipeline: SlotPipeline, sourceId: string, profileId: string, anonymousId: string | undefined, fields: Record<string, string | Buffer>): void {
    if (Object.keys(fields).length > 0) {
      const key = this.keys.profile(sourceId, profileId)
      pipeline.add(key, (p) => p.hset(key, fields))
    }
    if (anonymousId !== undefined) this.link(pipeline, sourceId, anonymousId, profileId)
  }

  /** Queues the link of an anonymous id (or an aliased id) to its user, for HISTORY_RETENTION. */
  link (pipeline: SlotPipeline, sourceId: string, anonymousId: string, profileId: string, now = Date.now()): void {
    if (profileId.startsWith('anon:')) return
    // Renewed once a day per process: the link's life is HISTORY_RETENTION from the last one.
    const day = Math.floor(now / DAY_MS)
    const link = `${sourceId}\n${anonymousId}\n${profileId}`
    if (this.linkedToday.get(link) === day) return
    if (this.linkedToday.size >= 100_000) this.linkedToday.clear()
    this.linkedToday.set(link, day)
    const key = this.keys.anonymousLink(sourceId, anonymousId)
    pipeline.add(key, (p) => p.set(key, profileId, 'PX', this.retentionMs))
  }

  /** Queues the link of a former user id to the user an alias joined it to. */
  linkUser (pipeline: SlotPipeline, sourceId: string, formerUserId: string, profileId: string): void {
    if (formerUserId === profileId || profileId.startsWith('anon:')) return
    const key = this.keys.userLink(sourceId, formerUserId)
    pipeline.add(key, (p) => p.set(key, profileId, 'PX', this.retentionMs))
  }

  /**
   * Joins the profile `from` (an anonymous visitor's, or a former user id's) into `into`: its
   * event history adds up, its hashed keys, traits and consent fill what `into` lacks (`into`'s
   * own win), and `from` is gone. Answers whether anything was joined. Idempotent and safe when
   * two joins of one profile race, without a read-modify-write: `from` is first claimed for
   * `into` in its own slot (a profile claimed for another user is not joined again), then added
   * into `into` by a script that records the claim there (a replay adds nothing), then removed.
   * Each step touches one hash slot, as Redis Cluster needs (the drop's counts hash is the one of
   * `from`'s slot there), and each is idempotent, so a join cut short by a crash is finished by
   * the next one (the claim answers `from`'s fields again for the same `into`).
   */
  async merge (sourceId: string, from: string, into: string, now = Date.now()): Promise<boolean> {
    if (from === into) return false
    // Once a day per process: a joined profile is gone, and its id now resolves to `into`.
    const day = Math.floor(now / DAY_MS)
    const done = `${sourceId}\n${from}\n${into}`
    if (this.joinedToday.get(done) === day) return false
    if (this.joinedToday.size >= 100_000) this.joinedToday.clear()
    this.joinedToday.set(done, day)
    const fromKey = this.keys.profile(sourceId, from)
    const pairs = await this.redis.profileMergeClaimBuffer(fromKey, into)
    if (pairs === null || pairs.length === 0) return false
    const claim = `_m:${createHash('sha256').update(from).digest('base64url').slice(0, 12)}`
    await this.redis.profileMergeInto(this.keys.profile(sourceId, into), claim, ...pairs)
    await this.drop(sourceId, from)
    return true
  }

  async get (sourceId: string, profileId: string): Promise<Profile> {
    return (await this.getMany(sourceId, [profileId]))[0]
  }

  async getMany (sourceId: string, profileIds: string[]): Promise<Profile[]> {
    if (this.cluster) return this.getManyOnCluster(sourceId, profileIds)
    const reads: Array<Promise<Buffer[][]>> = []
    for (let i = 0; i < profileIds.length; i += READ_CHUNK) {
      const keys = profileIds.slice(i, i + READ_CHUNK).map((id) => this.keys.profile(sourceId, id))
      reads.push(this.redis.profilesReadBuffer(keys.length, ...keys))
    }
    return (await Promise.all(reads)).flat().map(readProfilePairs)
  }

  /** getMany on a cluster: one read per slot (a script keeps to one), pipelined per primary. */
  private async getManyOnCluster (sourceId: string, profileIds: string[]): Promise<Profile[]> {
    const places = profileIds.map((id, i) => ({ key: this.keys.profile(sourceId, id), i }))
    const read = new SlotPipeline(this.redis as Cluster)
    const groups: Array<Array<{ key: string, i: number }>> = []
    for (const group of slotGroups(this.redis, places, (place) => place.key)) {
      for (let i = 0; i < group.length; i += READ_CHUNK) {
        const chunk = group.slice(i, i + READ_CHUNK)
        groups.push(chunk)
        read.add(chunk[0].key, (p) => p.profilesReadBuffer(chunk.length, ...chunk.map((place) => place.key)))
      }
    }
    const profiles: Profile[] = new Array(profileIds.length)
    for (const [g, [err, answer]] of (await read.exec()).entries()) {
      if (err !== null) throw err
      groups[g].forEach((place, j) => { profiles[place.i] = readProfilePairs((answer as Buffer[][])[j]) })
    }
    return profiles
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    profiles: ProfileStore
  }
}

export default fp(async (app) => {
  app.decorate('profiles', new ProfileStore(app.redis, app.keys, app.config.historyRetentionMs))
}, { name: 'profiles', dependencies: ['redis'] })
