/**
 * Token buckets, one per source: `rate` messages a second, bursts of twice that.
 * Kept in memory per API process — no Redis round trip on the hot path; with N API processes
 * a source may send N times the rate.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()

  constructor (private readonly rate: number, private readonly now: () => number = Date.now) {}

  /** Takes `count` tokens; returns 0 when allowed, else the seconds to wait before retrying. */
  take (key: string, count: number): number {
    if (this.rate <= 0) return 0
    const capacity = this.rate * 2
    const now = this.now()
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size > 100_000) this.buckets.clear()
      bucket = { tokens: capacity, at: now }
      this.buckets.set(key, bucket)
    }
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * this.rate)
    bucket.at = now
    // A request larger than the bucket passes when the bucket is full and leaves it in debt.
    const needed = Math.min(count, capacity)
    if (bucket.tokens >= needed) {
      bucket.tokens -= count
      return 0
    }
    return Math.max(1, Math.ceil((needed - bucket.tokens) / this.rate))
  }
}
