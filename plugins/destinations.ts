import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import type { Result } from 'ioredis'
import type { RedisClient } from '../src/redis-client.js'
import { decryptSecret, encryptSecret } from '../src/crypto.js'
import { destinationVersionWarning, expiredGraphVersion, settingsWarnings } from '../src/facebook/destination-checks.js'
import type { GraphError } from '../src/facebook/graph-response.js'
import { graphVersionStatus } from '../src/facebook/graph-versions.js'
import { graphVersion, type FacebookSettings } from '../src/facebook/settings.js'
import type { InvalidReason } from '../src/facebook/transform.js'
import type { RedisKeys } from '../src/keys.js'
import { delCommands, execBySlot, execInSteps, orThrow, type SlotCommand } from '../src/slots.js'
import { TtlCache } from '../src/ttl-cache.js'

// Sets a hash field only while it still holds what was read (1), else leaves it (0).
const COMPARE_AND_SET = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`

// Holds a deliver job's conversions: KEYS held-conversions, stats; ARGV job id, conversions. Held
// again (each recheck), the job's entry is replaced, so `held` counts each conversion once.
const HOLD = `
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local delta = tonumber(ARGV[2]) - before
if delta ~= 0 then redis.call('HINCRBY', KEYS[2], 'held', delta) end`

// A job no longer held (sent, filtered, dead-lettered): KEYS held-conversions, stats; ARGV job id.
const RELEASE = `
local before = redis.call('HGET', KEYS[1], ARGV[1])
if not before then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'held', -tonumber(before))
return 1`

// Every held job, taken out to run again: KEYS held-conversions, stats, the older builds' set.
const TAKE_HELD = `
local entries = redis.call('HGETALL', KEYS[1])
local ids = {}
local total = 0
for i = 1, #entries, 2 do
  ids[#ids + 1] = entries[i]
  total = total + tonumber(entries[i + 1])
end
redis.call('DEL', KEYS[1])
if total ~= 0 then redis.call('HINCRBY', KEYS[2], 'held', -total) end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do ids[#ids + 1] = id end
redis.call('DEL', KEYS[3])
return ids`

// Counts once (KEYS: a stats hash, its marker set; ARGV: the part being counted — '' for "always"
// — now, how many increments, then field/increment pairs, then field/value pairs to set). A part
// counted before (a job run again after a crash) adds nothing; markers are kept a day.
export const COUNT_ONCE = `
if ARGV[1] ~= '' then
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - 86400000)
end
local n = tonumber(ARGV[3])
for i = 4, 3 + 2 * n, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 4 + 2 * n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1`

// Dead-letters once (KEYS: the letters, the stats, the marker set; ARGV: the part, now, the last
// error, how many letters are kept, then the letters).
const DEAD_LETTER_ONCE = `
if ARGV[1] ~= '' then
  if redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[2]) - 86400000)
end
for i = 5, #ARGV, 1000 do redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[4]) - 1)
redis.call('HINCRBY', KEYS[2], 'deadLettered', #ARGV - 4)
redis.call('HSET', KEYS[2], 'lastError', ARGV[3])
return 1`

export type AuthStatus = 'ok' | 'needs_reauthorization' | 'permission_denied'
/** One status at a time, by precedence (DESIGN.md). */
export const DESTINATION_STATUSES = ['disabled', 'version_expired', 'needs_reauthorization', 'permission_denied', 'needs_token', 'active'] as const
export type DestinationStatus = typeof DESTINATION_STATUSES[number]

export interface StoredDestination {
  id: string
  sourceId: string
  type: string
  name: string
  enabled: boolean
  settings: FacebookSettings
  authStatus: AuthStatus
  authMessage?: string
  createdAt: string
  updatedAt: string
}

export interface Destination extends Omit<StoredDestination, 'authStatus' | 'authMessage'> {
  status: DestinationStatus
  statusMessage?: string
  /** An access token is stored (it is never returned). */
  connected: boolean
  pausedUntil?: string
  /** Sentences about what will not work as its owner may expect (an expiring Graph version, no event mapped…). */
  warnings: string[]
}

export interface DestinationStats {
  received: number
  filtered: number
  /** The parts of `filtered`, by FilterReason (`other`: counted by earlier builds). */
  filteredByReason: Record<string, number>
  invalid: { total: number, byReason: Record<string, number> }
  delivered: number
  retrying: number
  /** The part of `retrying` held back: waiting for a token, or for an expired Graph version to be changed. */
  held: number
  /** Properties kept out of custom_data: spellings of match keys (PII). */
  droppedPii: number
  deadLettered: number
  lastError: (GraphError & { at: string }) | null
  lastSuccessAt: string | null
}

/** A conversion that could not be delivered, kept for inspection and replay. */
export interface DeadLetter {
  id: string
  failedAt: string
  datasetId: string
  eventName: string
  eventId: string
  /** The payload's format (absent on letters written by older builds: the destination's setting). */
  apiFormat?: FacebookSettings['apiFormat']
  error: GraphError
  payload: Record<string, unknown>
}

/**
 * Why a routed message was filtered (the parts of `filtered`): no map sends it (`unmapped`), its
 * `integrations` turned this destination off or it was an audience sync for another one
 * (`integrations`), its user's consent does not allow this destination (`consent`), the
 * destination was disabled while it waited (`disabled`), or its user's data was deleted before it
 * was delivered (`deleted`: a regulation).
 */
export type FilterReason = 'unmapped' | 'integrations' | 'consent' | 'disabled' | 'deleted'

/** Counter increments of one destination, added up before one round trip. */
export interface StatsDelta {
  received?: number
  filtered?: Partial<Record<FilterReason, number>>
  delivered?: number
  deadLettered?: number
  invalid?: Partial<Record<InvalidReason, number>>
  /** Properties kept out of custom_data as PII (not a term of the identity). */
  droppedPii?: number
  lastSuccessAt?: string
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    countOnce(statsKey: string, markersKey: string, once: string, now: number, increments: number, ...fieldsAndValues: Array<string | number>): Result<number, Context>
    deadLetterOnce(lettersKey: string, statsKey: string, markersKey: string, once: string, now: number, lastError: string, keep: number, ...letters: string[]): Result<number, Context>
  }
}

// Dead letters kept per destination (newest first); older ones are trimmed, still counted.
export const MAX_DEAD_LETTERS = 100_000

export type DestinationChanges = Partial<Pick<StoredDestination, 'name' | 'enabled' | 'settings' | 'authStatus' | 'authMessage'>>

/** A stored token that this process cannot decrypt: a replica with another SECRET_KEY stored it. */
export class UnreadableTokenError extends Error {}

/** The destination's status at `now` (the app's clock), `connected` when it has a token. */
export function destinationStatus (stored: StoredDestination, connected: boolean, now: number): DestinationStatus {
  if (!stored.enabled) return 'disabled'
  if (expiredGraphVersion(stored.settings, now) !== undefined) return 'version_expired'
  if (stored.authStatus !== 'ok') return stored.authStatus
  return connected ? 'active' : 'needs_token'
}

/**
 * Destinations, their encrypted access tokens, counters, pauses and dead letters. Lookups by
 * source are cached in memory for a moment: the ingest worker routes every message through them.
 */
export class DestinationStore {
  private readonly bySourceCache: TtlCache<StoredDestination[]>

  constructor (
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
    private readonly secret: string,
    cacheTtlMs = 2000,
    /** The app's clock (tests move it): statuses, warnings and pauses are read against it. */
    private readonly now: () => number = Date.now
  ) {
    this.bySourceCache = new TtlCache(cacheTtlMs)
    redis.defineCommand('countOnce', { numberOfKeys: 2, lua: COUNT_ONCE })
    redis.defineCommand('deadLetterOnce', { numberOfKeys: 3, lua: DEAD_LETTER_ONCE })
  }

  async create (input: { sourceId: string, type: string, name: string, enabled: boolean, settings: FacebookSettings }): Promise<StoredDestination> {
    const now = new Date().toISOString()
    const destination: StoredDestination = { id: `dst_${randomBytes(8).toString('hex')}`, ...input, authStatus: 'ok', createdAt: now, updatedAt: now }
    // Not MULTI: the keys live in different hash slots on Redis Cluster (a command per slot there).
    orThrow(await execBySlot(this.redis, [
      [this.keys.destinations, (p) => p.hset(this.keys.destinations, destination.id, JSON.stringify(destination))],
      [this.keys.sourceDestinations(input.sourceId), (p) => p.sadd(this.keys.sourceDestinations(input.sourceId), destination.id)]
    ]))
    this.bySourceCache.delete(input.sourceId)
    return destination
  }

  async get (id: string): Promise<StoredDestination | undefined> {
    const json = await this.redis.hget(this.keys.destinations, id)
    return json === null ? undefined : JSON.parse(json)
  }

  /**
   * Applies `changes` to the stored destination. A compare-and-set: an admin PATCH and a worker
   * marking the token refused may update the same destination at once, and neither change may
   * be lost — the one that finds the destination changed since it read it reads it again.
   */
  async update (id: string, changes: DestinationChanges | ((current: StoredDestination) => DestinationChanges | null)): Promise<StoredDestination | undefined> {
    for (;;) {
      const json = await this.redis.hget(this.keys.destinations, id)
      if (json === null) return undefined
      const current = JSON.parse(json) as StoredDestination
      // Changes worked out from `current` (a merge of settings) are worked out again from the one
      // read at each try: two merges racing both land, neither is lost. null: nothing to write.
      const change = typeof changes === 'function' ? changes(current) : changes
      if (change === null) return current
      const updated: StoredDestination = { ...current, ...change, updatedAt: new Date().toISOString() }
      if (updated.authStatus === 'ok') delete updated.authMessage
      const set = await this.redis.eval(COMPARE_AND_SET, 1, this.keys.destinations, id, json, JSON.stringify(updated)) as number
      if (set === 0) continue
      this.bySourceCache.delete(current.sourceId)
      return updated
    }
  }

  async remove (id: string): Promise<boolean> {
    const current = await this.get(id)
    if (current === undefined) return false
    // What hangs off the destination first (its own tag's keys in one DEL; token and pause each in
    // its slot), the destination itself last: a delete cut short leaves it in place, and a repeat
    // finishes it (every step is idempotent). One round trip on one Redis, as one pipeline.
    orThrow(await execInSteps(this.redis, [
      [
        ...delCommands([this.keys.destinationStats(id), this.keys.deadLetters(id), this.keys.heldJobs(id), this.keys.heldConversions(id), this.keys.destinationCounted(id),
          this.keys.accessToken(id), this.keys.pausedUntil(id)]),
        [this.keys.sourceDestinations(current.sourceId), (p) => p.srem(this.keys.sourceDestinations(current.sourceId), id)]
      ],
      [[this.keys.destinations, (p) => p.hdel(this.keys.destinations, id)]]
    ]))
    this.bySourceCache.delete(current.sourceId)
    return true
  }

  async listForSource (sourceId: string): Promise<StoredDestination[]> {
    const ids = await this.redis.smembers(this.keys.sourceDestinations(sourceId))
    if (ids.length === 0) return []
    const values = await this.redis.hmget(this.keys.destinations, ...ids)
    return values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as StoredDestination)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  /** Every destination of every source, in one round trip. */
  async listAll (): Promise<StoredDestination[]> {
    return (await this.redis.hvals(this.keys.destinations)).map((v) => JSON.parse(v) as StoredDestination)
  }

  /** The source's destinations, from a short-lived cache (the ingest worker's hot path). */
  async forSource (sourceId: string, now = Date.now()): Promise<StoredDestination[]> {
    return this.bySourceCache.get(sourceId, () => this.listForSource(sourceId), now)
  }

  async removeAllForSource (sourceId: string): Promise<void> {
    for (const destination of await this.listForSource(sourceId)) await this.remove(destination.id)
    await this.redis.del(this.keys.sourceDestinations(sourceId))
  }

  async setAccessToken (id: string, token: string): Promise<void> {
    await this.redis.set(this.keys.accessToken(id), encryptSecret(token, this.secret))
  }

  async removeAccessToken (id: string): Promise<void> {
    await this.redis.del(this.keys.accessToken(id))
  }

  /** Throws UnreadableTokenError when the token was stored under another SECRET_KEY. */
  async accessToken (id: string): Promise<string | undefined> {
    const stored = await this.redis.get(this.keys.accessToken(id))
    if (stored === null) return undefined
    try {
      return decryptSecret(stored, this.secret)
    } catch (err) {
      throw new UnreadableTokenError('the stored access token cannot be decrypted with this process\'s SECRET_KEY: every replica must share one (or set the token again)', { cause: err })
    }
  }

  async hasAccessToken (id: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.accessToken(id))) === 1
  }

  /** Rate limited: nothing goes to this destination before `until` (ms). */
  async pause (id: string, until: number): Promise<void> {
    await this.redis.set(this.keys.pausedUntil(id), String(until), 'PX', Math.max(1, until - this.now()))
  }

  async pausedUntil (id: string): Promise<number | undefined> {
    const value = await this.redis.get(this.keys.pausedUntil(id))
    return value === null ? undefined : Number(value)
  }

  /**
   * A deliver job held back — for a token (190, permission errors, none set) or for an expired
   * Graph version — with its `conversions`, counted in `held` until it is released (a token set,
   * the version changed) or leaves the hold by itself (release).
   */
  async hold (id: string, jobId: string, conversions: number): Promise<void> {
    await this.redis.eval(HOLD, 2, this.keys.heldConversions(id), this.keys.destinationStats(id), jobId, conversions)
  }

  /** The job's conversions are held no longer (sent, filtered, dead-lettered, or dropped as too old). */
  async release (id: string, jobId: string): Promise<void> {
    await this.redis.eval(RELEASE, 2, this.keys.heldConversions(id), this.keys.destinationStats(id), jobId)
  }

  /** Takes every held job out (they no longer count as held), to run them again at once. */
  async takeHeld (id: string): Promise<string[]> {
    return await this.redis.eval(TAKE_HELD, 3, this.keys.heldConversions(id), this.keys.destinationStats(id), this.keys.heldJobs(id)) as string[]
  }

  /**
   * Adds up counters of several destinations in one round trip. `once`: the part of a job these
   * counts are (e.g. `ingest:<job>:<source>:<messages>`): a part counted before adds nothing.
   */
  async count (deltas: Map<string, StatsDelta>, extra?: { lastSuccessAt?: string, lastError?: GraphError & { at: string }, destinationId?: string }, once = ''): Promise<void> {
    const now = Date.now()
    const counts = new Map<string, { increments: Array<string | number>, sets: string[] }>()
    const of = (id: string) => {
      let entry = counts.get(id)
      if (entry === undefined) counts.set(id, (entry = { increments: [], sets: [] }))
      return entry
    }
    for (const [id, delta] of deltas) {
      const { increments, sets } = of(id)
      for (const field of ['received', 'delivered', 'deadLettered', 'droppedPii'] as const) {
        const n = delta[field]
        if (n !== undefined && n !== 0) increments.push(field, n)
      }
      for (const [kind, reasons] of [['filtered', delta.filtered], ['invalid', delta.invalid]] as const) {
        for (const [reason, n] of Object.entries(reasons ?? {})) {
          if (n === undefined || n === 0) continue
          increments.push(kind, n, `${kind}:${reason}`, n)
        }
      }
      if (delta.lastSuccessAt !== undefined) sets.push('lastSuccessAt', delta.lastSuccessAt)
    }
    if (extra?.destinationId !== undefined) {
      const { sets } = of(extra.destinationId)
      if (extra.lastSuccessAt !== undefined) sets.push('lastSuccessAt', extra.lastSuccessAt)
      if (extra.lastError !== undefined) sets.push('lastError', JSON.stringify(extra.lastError))
    }
    // One script per destination, in its slot (stats and markers share its tag): one pipeline on
    // one Redis, a pipeline per slot on a cluster.
    const commands: SlotCommand[] = []
    for (const [id, { increments, sets }] of counts) {
      if (increments.length === 0 && sets.length === 0) continue
      const stats = this.keys.destinationStats(id)
      commands.push([stats, (p) => p.countOnce(stats, this.keys.destinationCounted(id), once, now, increments.length / 2, ...increments, ...sets)])
    }
    orThrow(await execBySlot(this.redis, commands))
  }

  /** Whether the destination has counted this part of a job already (it was run before a crash). */
  async counted (id: string, once: string): Promise<boolean> {
    return (await this.redis.zscore(this.keys.destinationCounted(id), once)) !== null
  }

  async stats (id: string): Promise<DestinationStats> {
    const raw = await this.redis.hgetall(this.keys.destinationStats(id))
    const n = (field: string) => Number(raw[field] ?? 0)
    const byReason: Record<string, number> = {}
    const filteredByReason: Record<string, number> = {}
    for (const [field, value] of Object.entries(raw)) {
      if (field.startsWith('invalid:')) byReason[field.slice('invalid:'.length)] = Number(value)
      else if (field.startsWith('filtered:')) filteredByReason[field.slice('filtered:'.length)] = Number(value)
    }
    // Counted by earlier builds without a reason: `other`, so the parts still add up.
    const unexplained = n('filtered') - Object.values(filteredByReason).reduce((sum, count) => sum + count, 0)
    if (unexplained > 0) filteredByReason.other = unexplained
    const received = n('received')
    const settled = n('filtered') + n('invalid') + n('delivered') + n('deadLettered')
    return {
      received,
      filtered: n('filtered'),
      filteredByReason,
      invalid: { total: n('invalid'), byReason },
      delivered: n('delivered'),
      // Everything received and not yet settled: queued, in flight, backing off, or held for a
      // rate limit or a token. Derived, so received = filtered + invalid + delivered +
      // deadLettered + retrying always holds.
      retrying: Math.max(0, received - settled),
      // Exact once settled; bounded by retrying for the moment between a route stage queueing a
      // job (which a worker may hold at once) and counting what it received.
      held: Math.max(0, Math.min(n('held'), received - settled)),
      deadLettered: n('deadLettered'),
      droppedPii: n('droppedPii'),
      lastError: raw.lastError === undefined ? null : JSON.parse(raw.lastError),
      lastSuccessAt: raw.lastSuccessAt ?? null
    }
  }

  /** Dead-letters conversions (once for `once`: a job run again after a crash adds none twice). */
  async addDeadLetters (id: string, letters: DeadLetter[], lastError: GraphError, once = ''): Promise<void> {
    if (letters.length === 0) return
    await this.redis.deadLetterOnce(this.keys.deadLetters(id), this.keys.destinationStats(id), this.keys.destinationCounted(id),
      once, Date.now(), JSON.stringify({ ...lastError, at: new Date().toISOString() }), MAX_DEAD_LETTERS, ...letters.map((l) => JSON.stringify(l)))
  }

  async deadLetters (id: string, offset: number, limit: number): Promise<{ letters: DeadLetter[], total: number }> {
    const key = this.keys.deadLetters(id)
    const [[, items], [, total]] = orThrow((await this.redis.multi().lrange(key, offset, offset + limit - 1).llen(key).exec())!) as [[null, string[]], [null, number]]
    return { letters: items.map((item) => JSON.parse(item)), total }
  }

  /** Takes dead letters out for a replay (all, or those with the given ids); they count as retrying again. */
  async takeDeadLetters (id: string, ids?: string[]): Promise<DeadLetter[]> {
    const key = this.keys.deadLetters(id)
    let taken: string[]
    if (ids === undefined) {
      // Read and delete in one transaction: a letter the worker adds in between would otherwise
      // be deleted unread — gone from the list, never replayed.
      const [[, items]] = orThrow((await this.redis.multi().lrange(key, 0, -1).del(key).exec())!) as [[null, string[]], unknown]
      taken = items
    } else {
      const wanted = new Set(ids)
      const candidates = (await this.redis.lrange(key, 0, -1)).filter((item) => wanted.has((JSON.parse(item) as DeadLetter).id))
      if (candidates.length === 0) return []
      // Only the letters this call removed are replayed: two concurrent retries send each once.
      const multi = this.redis.multi()
      for (const item of candidates) multi.lrem(key, 1, item)
      const results = orThrow((await multi.exec())!)
      taken = candidates.filter((_, i) => results[i][1] === 1)
    }
    if (taken.length > 0) await this.redis.hincrby(this.keys.destinationStats(id), 'deadLettered', -taken.length)
    return taken.map((item) => JSON.parse(item) as DeadLetter)
  }

  /** Puts taken letters back (their replay could not be queued): a retry never loses a letter. */
  async restoreDeadLetters (id: string, letters: DeadLetter[]): Promise<void> {
    if (letters.length === 0) return
    orThrow((await this.redis.pipeline()
      .rpush(this.keys.deadLetters(id), ...letters.map((l) => JSON.stringify(l)))
      .hincrby(this.keys.destinationStats(id), 'deadLettered', letters.length)
      .exec())!)
  }

  async toPublic (stored: StoredDestination): Promise<Destination> {
    const [connected, paused] = await Promise.all([this.hasAccessToken(stored.id), this.pausedUntil(stored.id)])
    const { authStatus, authMessage, ...rest } = stored
    const now = this.now()
    return {
      ...rest,
      status: destinationStatus(stored, connected, now),
      ...(authMessage === undefined ? {} : { statusMessage: authMessage }),
      connected,
      ...(paused !== undefined && paused > now ? { pausedUntil: new Date(paused).toISOString() } : {}),
      warnings: settingsWarnings(stored.settings, now)
    }
  }
}

/**
 * Logs one warning per destination whose Graph version has expired or expires soon, or that uses
 * the closed legacy format (at start-up: one read of the destinations). Answers how many.
 */
export async function logGraphVersionWarnings (store: DestinationStore, now: number, log: { warn: (obj: object, msg: string) => void }): Promise<number> {
  let logged = 0
  for (const destination of await store.listAll()) {
    const warning = destinationVersionWarning(destination.settings, now)
    if (warning === undefined) continue
    const { version, expiry } = graphVersionStatus(graphVersion(destination.settings), now)
    log.warn({ destinationId: destination.id, sourceId: destination.sourceId, enabled: destination.enabled, graphVersion: version, expiresOn: expiry?.expiresAt.toISODate() }, warning)
    logged++
  }
  return logged
}

declare module 'fastify' {
  interface FastifyInstance {
    destinations: DestinationStore
  }
}

export default fp(async (app) => {
  if (app.config.SECRET_KEY === undefined) throw new Error('SECRET_KEY is required to store access tokens')
  app.decorate('destinations', new DestinationStore(app.redis, app.keys, app.config.SECRET_KEY, undefined, app.now))
}, { name: 'destinations', dependencies: ['redis'] })
