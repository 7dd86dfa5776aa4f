import { createHash, hash, randomBytes, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { RedisClient } from '../src/redis-client.js'
import type { RedisKeys } from '../src/keys.js'
import { delCommands, execBySlot, execInSteps, orThrow, type SlotCommand } from '../src/slots.js'
import { TtlCache } from '../src/ttl-cache.js'
import { COUNT_ONCE } from './destinations.js'

export interface Source {
  id: string
  name: string
  createdAt: string
  /** The last four characters, to tell keys apart; the whole key is shown only once. */
  writeKeyHint: string
}

interface StoredSource extends Source {
  writeKeyHash: string
  /**
   * Keys replaced by a rotation and still in their grace period (`until`, epoch ms): a delete
   * must revoke them too, or a rotated source's old key would outlive the source.
   */
  previousWriteKeys?: Array<{ hash: string, until: number }>
}

export interface SourceStats {
  received: number
  accepted: number
  duplicate: number
  rejected: number
  /** A part of `accepted`: messages the worker set aside because no code could process them. */
  unprocessable: number
  /** Messages of suppressed subjects, answered 200 and dropped (regulations). */
  suppressed: number
}

// `received` is not stored: it is the sum, so the identity always holds.
const STAT_FIELDS = ['accepted', 'duplicate', 'rejected', 'suppressed'] as const

// One-shot: on every ingestion request, a Hash object cost three times as much.
function sha256 (value: string): string {
  return hash('sha256', value, 'hex')
}

/**
 * Sources and their write keys. Only a key's SHA-256 is stored, and keys are looked up by it:
 * the time a lookup takes says nothing about the key's characters; the final check compares
 * digests in constant time. Lookups are cached in memory for a short TTL (a deleted source's key
 * stays usable that long on other processes).
 */
export class SourceStore {
  private readonly cache: TtlCache<string | null>

  constructor (
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
    private readonly options: { cacheTtlMs: number, writeKeyGraceMs: number }
  ) {
    this.cache = new TtlCache(options.cacheTtlMs)
  }

  async create (name: string): Promise<Source & { writeKey: string }> {
    const id = `src_${randomBytes(8).toString('hex')}`
    const writeKey = randomBytes(24).toString('base64url')
    const source: StoredSource = { id, name, createdAt: new Date().toISOString(), writeKeyHint: writeKey.slice(-4), writeKeyHash: sha256(writeKey) }
    orThrow(await execBySlot(this.redis, [
      [this.keys.sources, (p) => p.hset(this.keys.sources, id, JSON.stringify(source))],
      [this.keys.writeKey(source.writeKeyHash), (p) => p.set(this.keys.writeKey(source.writeKeyHash), id)]
    ]))
    return { ...publicSource(source), writeKey }
  }

  async list (): Promise<Source[]> {
    const all = await this.redis.hvals(this.keys.sources)
    return all.map((json) => publicSource(JSON.parse(json))).sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  async get (id: string): Promise<Source | undefined> {
    const stored = await this.getStored(id)
    return stored && publicSource(stored)
  }

  async remove (id: string): Promise<boolean> {
    const stored = await this.getStored(id)
    if (stored === undefined) return false
    const dedup = this.keys.dedup(id)
    const previousKeys = (stored.previousWriteKeys ?? []).map((key) => this.keys.writeKey(key.hash))
    const keys = [this.keys.writeKey(stored.writeKeyHash), ...previousKeys,
      this.keys.sourceStats(id), this.keys.profileCounts(id), this.keys.sourceCounted(id), this.keys.suppressed(id), dedup.current, dedup.previous, dedup.startedAt]
    // Each ingest partition's part of the source: its counts, its copy of the suppression set,
    // its duplicate window (one slot per partition; on one Redis with one partition, the keys above).
    for (const partition of this.keys.ingestPartitions) {
      const window = partition.dedup(id)
      keys.push(partition.sourceStats(id), partition.suppressed(id), window.current, window.previous, window.startedAt)
    }
    // One DEL per hash slot (Redis Cluster refuses a multi-key DEL across slots): the write keys
    // first, the source's entry last — a delete cut short (a node unreachable) leaves the source
    // listed, and deleting it again finishes the job (every step is idempotent). One pipeline on
    // one Redis.
    orThrow(await execInSteps(this.redis, [delCommands(keys), [[this.keys.sources, (p) => p.hdel(this.keys.sources, id)]]]))
    this.cache.clear()
    return true
  }

  /** A new write key; the old one keeps working for the grace period, then expires. */
  async rotateWriteKey (id: string): Promise<(Source & { writeKey: string, previousKeyValidUntil: string }) | undefined> {
    const stored = await this.getStored(id)
    if (stored === undefined) return undefined
    const writeKey = randomBytes(24).toString('base64url')
    const previousHash = stored.writeKeyHash
    const now = Date.now()
    const until = now + this.options.writeKeyGraceMs
    const previousWriteKeys = [...(stored.previousWriteKeys ?? []).filter((key) => key.until > now), { hash: previousHash, until }]
    const updated: StoredSource = { ...stored, writeKeyHash: sha256(writeKey), writeKeyHint: writeKey.slice(-4), previousWriteKeys }
    orThrow(await execBySlot(this.redis, [
      [this.keys.sources, (p) => p.hset(this.keys.sources, id, JSON.stringify(updated))],
      [this.keys.writeKey(updated.writeKeyHash), (p) => p.set(this.keys.writeKey(updated.writeKeyHash), id)],
      [this.keys.writeKey(previousHash), (p) => p.pexpire(this.keys.writeKey(previousHash), this.options.writeKeyGraceMs)]
    ]))
    this.cache.clear()
    return { ...publicSource(updated), writeKey, previousKeyValidUntil: new Date(until).toISOString() }
  }

  /**
   * The source a write key belongs to (null: none). From the cache without a promise (see
   * TtlCache.get); a promise that rejects when Redis is unreachable otherwise.
   */
  resolveWriteKey (writeKey: string): string | null | Promise<string | null> {
    const hash = sha256(writeKey)
    return this.cache.get(hash, () => this.redis.get(this.keys.writeKey(hash)))
  }

  /**
   * The source's counts: its own hash (`unprocessable`, and every count of builds before
   * partitions) plus each ingest partition's hash, where that partition's flushes count
   * (partitioned ingest; on one Redis with one partition they are one key, read once). One
   * pipeline on one Redis; a read per slot, at once, on a cluster.
   */
  async stats (id: string): Promise<SourceStats> {
    const fields = [...STAT_FIELDS, 'unprocessable'] as const
    const statsKeys = this.statsKeys(id)
    const reads = statsKeys.length === 1
      ? [await this.redis.hmget(statsKeys[0], ...fields)]
      : orThrow(await execBySlot(this.redis, statsKeys.map((key): SlotCommand => [key, (p) => p.hmget(key, ...fields)]))).map(([, values]) => values as Array<string | null>)
    const stats = { received: 0, accepted: 0, duplicate: 0, rejected: 0, suppressed: 0, unprocessable: 0 }
    for (const values of reads) fields.forEach((field, i) => { stats[field] += Number(values[i] ?? 0) })
    stats.received = stats.accepted + stats.duplicate + stats.rejected + stats.suppressed
    return stats
  }

  /** The hashes a source's counts are in: its own, then each partition's that is another key. */
  statsKeys (id: string): string[] {
    return [...new Set([this.keys.sourceStats(id), ...this.keys.ingestPartitions.map((partition) => partition.sourceStats(id))])]
  }

  /** Counts messages the worker set aside (a part of `accepted`), once for `once` (the job). */
  async countUnprocessable (bySource: Map<string, number>, once = ''): Promise<void> {
    // A script per source, in its slot (its stats and markers share its tag).
    const now = Date.now()
    orThrow(await execBySlot(this.redis, [...bySource].map(([sourceId, n]): SlotCommand => {
      const stats = this.keys.sourceStats(sourceId)
      return [stats, (p) => p.eval(COUNT_ONCE, 2, stats, this.keys.sourceCounted(sourceId), once, now, 1, 'unprocessable', n)]
    })))
  }

  private async getStored (id: string): Promise<StoredSource | undefined> {
    const json = await this.redis.hget(this.keys.sources, id)
    return json === null ? undefined : JSON.parse(json)
  }
}

/** Constant-time equality of two strings' digests. */
export function safeEqual (a: string, b: string): boolean {
  const left = createHash('sha256').update(a).digest()
  const right = createHash('sha256').update(b).digest()
  return timingSafeEqual(left, right)
}

function publicSource (stored: StoredSource): Source {
  return { id: stored.id, name: stored.name, createdAt: stored.createdAt, writeKeyHint: stored.writeKeyHint }
}

declare module 'fastify' {
  interface FastifyInstance {
    sources: SourceStore
  }
}

export default fp(async (app) => {
  app.decorate('sources', new SourceStore(app.redis, app.keys, {
    cacheTtlMs: app.config.WRITE_KEY_CACHE_TTL_MS,
    writeKeyGraceMs: app.config.writeKeyGraceMs
  }))
}, { name: 'sources', dependencies: ['redis'] })
