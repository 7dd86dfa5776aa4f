import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import type { RedisClient } from '../src/redis-client.js'
import { conditionEvents, conditionTraits, eventLeaves, type AudienceCondition, type EventCondition } from '../src/audiences/condition.js'
import type { RedisKeys } from '../src/keys.js'
import { SlotPipeline } from '../src/slots.js'
import { TtlCache } from '../src/ttl-cache.js'

export type SyncStatus = 'building' | 'syncing' | 'idle' | 'failed'

export interface StoredAudience {
  id: string
  sourceId: string
  name: string
  /** snake_case, unique per source, never changes: the user property's name */
  key: string
  condition: AudienceCondition
  /** Destinations its memberships are synced to. */
  destinations: string[]
  schedule: { every: string, everyMs: number }
  createdAt: string
  /** Being deleted: its members are sent `false`, then its data goes. */
  deleted?: boolean
}

export interface SyncState {
  status: SyncStatus
  /** Initial sync done (every member sent once). */
  initialSynced: boolean
  /** Build (history evaluation) done. */
  built: boolean
  /** Changes stream: entries up to this id are synced. */
  syncedChangeId: string
  /** Resumable cursors of the build scans and the initial sync. */
  buildCursor: string
  buildPhase: string
  initialCursor: string
  initialRun: string
  /** Members the initial sync has sent so far (kept with the cursor: a resumed sync counts them all). */
  initialSent: number
  lastSyncAt?: string
  lastSyncAdded: number
  lastSyncRemoved: number
  error?: string
}

/** What the engine needs of an audience, compiled once per definition. */
export interface CompiledAudience extends StoredAudience {
  events: Set<string>
  traits: Set<string>
  /** Event leaves with a `where`: counted by the engine from the audience's creation on. */
  filteredLeaves: Array<{ path: string, leaf: EventCondition }>
}

export function compile (audience: StoredAudience): CompiledAudience {
  return {
    ...audience,
    events: conditionEvents(audience.condition),
    traits: conditionTraits(audience.condition),
    filteredLeaves: eventLeaves(audience.condition).filter(({ leaf }) => leaf.where !== undefined)
  }
}

const INITIAL_STATE: SyncState = {
  status: 'building',
  initialSynced: false,
  built: false,
  syncedChangeId: '0-0',
  buildCursor: '0',
  buildPhase: 'history',
  initialCursor: '0',
  initialRun: '',
  initialSent: 0,
  lastSyncAdded: 0,
  lastSyncRemoved: 0
}

/** Audience definitions, their sync state, members (sorted set: userId → since) and change log. */
export class AudienceStore {
  private readonly cache: TtlCache<CompiledAudience[]>

  constructor (private readonly redis: RedisClient, private readonly keys: RedisKeys, cacheTtlMs = 2000) {
    this.cache = new TtlCache(cacheTtlMs)
  }

  /** Creates the audience; undefined when its key is taken on this source. */
  async create (input: Omit<StoredAudience, 'id' | 'createdAt'>): Promise<StoredAudience | undefined> {
    const audience: StoredAudience = { id: `aud_${randomBytes(8).toString('hex')}`, ...input, createdAt: new Date().toISOString() }
    const claimed = await this.redis.hsetnx(this.keys.audienceKeys(input.sourceId), input.key, audience.id)
    if (claimed === 0) return undefined
    // Three slots on a cluster: the list of audiences, the source's, the audience's own.
    const { audiences, sourceAudiences, audienceState } = this.keys
    await new SlotPipeline(this.redis)
      .add(audiences, (p) => p.hset(audiences, audience.id, JSON.stringify(audience)))
      .add(sourceAudiences(input.sourceId), (p) => p.sadd(sourceAudiences(input.sourceId), audience.id))
      .add(audienceState(audience.id), (p) => p.hset(audienceState(audience.id), serializeState({ ...INITIAL_STATE, syncedChangeId: '0-0' })))
      .exec()
    this.cache.delete(input.sourceId)
    return audience
  }

  async get (id: string): Promise<StoredAudience | undefined> {
    const json = await this.redis.hget(this.keys.audiences, id)
    return json === null ? undefined : JSON.parse(json)
  }

  async update (id: string, changes: Partial<Pick<StoredAudience, 'name' | 'destinations' | 'schedule'>>): Promise<StoredAudience | undefined> {
    const current = await this.get(id)
    if (current === undefined) return undefined
    const updated = { ...current, ...changes }
    await this.redis.hset(this.keys.audiences, id, JSON.stringify(updated))
    this.cache.delete(current.sourceId)
    return updated
  }

  /** Stops evaluating the audience and frees its key; the data stays until the members are sent `false`. */
  async markDeleted (audience: StoredAudience): Promise<void> {
    const { audiences, sourceAudiences, audienceKeys } = this.keys
    await new SlotPipeline(this.redis)
      .add(audiences, (p) => p.hset(audiences, audience.id, JSON.stringify({ ...audience, deleted: true })))
      .add(sourceAudiences(audience.sourceId), (p) => p.srem(sourceAudiences(audience.sourceId), audience.id))
      .add(audienceKeys(audience.sourceId), (p) => p.hdel(audienceKeys(audience.sourceId), audience.key))
      .exec()
    this.cache.delete(audience.sourceId)
  }

  async remove (audience: StoredAudience): Promise<void> {
    const { audiences, sourceAudiences, audienceKeys } = this.keys
    await new SlotPipeline(this.redis)
      .add(audiences, (p) => p.hdel(audiences, audience.id))
      .add(sourceAudiences(audience.sourceId), (p) => p.srem(sourceAudiences(audience.sourceId), audience.id))
      .add(audienceKeys(audience.sourceId), (p) => p.hdel(audienceKeys(audience.sourceId), audience.key))
      .exec()
    // All under the audience's tag: one slot.
    const state = this.keys.audienceState(audience.id)
    await this.redis.del(state, `${state}:pending`, this.keys.audienceMembers(audience.id), this.keys.audienceLapses(audience.id), this.keys.audienceChanges(audience.id))
    this.cache.delete(audience.sourceId)
  }

  async listForSource (sourceId: string): Promise<StoredAudience[]> {
    const ids = await this.redis.smembers(this.keys.sourceAudiences(sourceId))
    if (ids.length === 0) return []
    const values = await this.redis.hmget(this.keys.audiences, ...ids)
    return values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as StoredAudience)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  /** The source's audiences, compiled, from a short-lived cache (the ingest worker's hot path). */
  async forSource (sourceId: string, now = Date.now()): Promise<CompiledAudience[]> {
    return this.cache.get(sourceId, async () => (await this.listForSource(sourceId)).map(compile), now)
  }

  async state (id: string): Promise<SyncState> {
    const raw = await this.redis.hgetall(this.keys.audienceState(id))
    return parseState(raw)
  }

  async setState (id: string, changes: Partial<SyncState>): Promise<void> {
    await this.redis.hset(this.keys.audienceState(id), serializeState(changes))
  }

  async size (id: string): Promise<number> {
    return this.redis.zcard(this.keys.audienceMembers(id))
  }

  /** A page of members, oldest first; the cursor is an offset. */
  async members (id: string, cursor: number, limit: number): Promise<{ members: Array<{ userId: string, since: string }>, nextCursor: string | null }> {
    // One more than asked: a next page is announced only when there is one.
    const raw = await this.redis.zrange(this.keys.audienceMembers(id), cursor, cursor + limit, 'WITHSCORES')
    const members: Array<{ userId: string, since: string }> = []
    for (let i = 0; i < raw.length && members.length < limit; i += 2) members.push({ userId: raw[i], since: new Date(Number(raw[i + 1])).toISOString() })
    return { members, nextCursor: raw.length > limit * 2 ? String(cursor + limit) : null }
  }
}

function serializeState (state: Partial<SyncState>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(state)) if (value !== undefined) out[name] = String(value)
  return out
}

function parseState (raw: Record<string, string>): SyncState {
  return {
    status: (raw.status as SyncStatus | undefined) ?? 'building',
    initialSynced: raw.initialSynced === 'true',
    built: raw.built === 'true',
    syncedChangeId: raw.syncedChangeId ?? '0-0',
    buildCursor: raw.buildCursor ?? '0',
    buildPhase: raw.buildPhase ?? 'history',
    initialCursor: raw.initialCursor ?? '0',
    initialRun: raw.initialRun ?? '',
    initialSent: Number(raw.initialSent ?? 0),
    lastSyncAt: raw.lastSyncAt,
    lastSyncAdded: Number(raw.lastSyncAdded ?? 0),
    lastSyncRemoved: Number(raw.lastSyncRemoved ?? 0),
    error: raw.error
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    audiences: AudienceStore
  }
}

export default fp(async (app) => {
  app.decorate('audiences', new AudienceStore(app.redis, app.keys))
}, { name: 'audiences', dependencies: ['redis'] })
