/**
 * A short-lived in-memory cache of values loaded from Redis (write keys, a source's destinations
 * and audiences): the ingest paths read them per request or per job, and a change is seen
 * within `ttlMs`. Bounded: past `maxEntries` it starts over.
 */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V, expires: number }>()

  constructor (private readonly ttlMs: number, private readonly maxEntries = 10_000) {}

  /** The cached value of `key`, or what `load` gives (then cached). */
  async get (key: string, load: () => Promise<V>, now = Date.now()): Promise<V> {
    const cached = this.entries.get(key)
    if (cached !== undefined && cached.expires > now) return cached.value
    const value = await load()
    if (this.entries.size > this.maxEntries) this.entries.clear()
    this.entries.set(key, { value, expires: now + this.ttlMs })
    return value
  }

  delete (key: string): void {
    this.entries.delete(key)
  }

  clear (): void {
    this.entries.clear()
  }
}
