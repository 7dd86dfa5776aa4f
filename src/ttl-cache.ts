/**
 * A short-lived in-memory cache of values loaded from Redis (write keys, a source's destinations
 * and audiences): the ingest paths read them per request or per job, and a change is seen
 * within `ttlMs`. Bounded: past `maxEntries` it starts over.
 */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V, expires: number }>()

  constructor (private readonly ttlMs: number, private readonly maxEntries = 10_000) {}

  /**
   * The cached value of `key` — itself, not a promise: on the ingestion routes the awaits of a
   * cached lookup cost a request more than the lookup — or a promise of what `load` gives (then
   * cached).
   */
  get (key: string, load: () => Promise<V>, now = Date.now()): V | Promise<V> {
    const cached = this.entries.get(key)
    if (cached !== undefined && cached.expires > now) return cached.value
    return this.load(key, load, now)
  }

  private async load (key: string, load: () => Promise<V>, now: number): Promise<V> {
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
