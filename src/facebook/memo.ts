/**
 * All match-key memos of a process together are counted at most this many bytes (32 MiB). The
 * memos split it (src/facebook/match-keys.ts, src/facebook/trait-spellings.ts); each counts its
 * entries as 2 bytes per key character (V8 stores a string in 1 or 2 bytes a character) plus a
 * fixed estimate for the value and the Map's entry. Issue 14: bounded by entries only, 4,000
 * identifies with 30 KB emails took a worker from 164 to 410 MB, and it stayed there.
 */
export const MEMO_BUDGET_BYTES = 32 * 1024 * 1024

/** Keys longer than this are not remembered: no match-key value is that long (they are dropped). */
export const MEMO_MAX_KEY_LENGTH = 512

export interface MemoOptions {
  /** the bytes this memo may count, both generations together (default: the whole budget) */
  maxBytes?: number
  /** the estimated bytes of one value and its Map entry (default 128: a 64-hex string) */
  valueBytes?: number
}

/**
 * A bounded memo for normalise-and-hash results: the same users come back again and again,
 * and SHA-256 plus phone parsing is most of a conversion's cost. Two generations of `Map`: when
 * the young one is full (by entries, or by half the memo's bytes) the old one is dropped, so at
 * most `2 × capacity` entries and `maxBytes` counted bytes are kept, and recently used entries
 * survive a turnover (an entry found in the old generation moves to the young one) — LRU-like
 * without bookkeeping on every hit. Keys longer than MEMO_MAX_KEY_LENGTH are never stored.
 */
export class Memo<V> {
  private young = new Map<string, V>()
  private old = new Map<string, V>()
  private youngBytes = 0
  private oldBytes = 0
  readonly capacity: number
  readonly maxBytes: number
  private readonly valueBytes: number
  // a generation turns over at half the bytes, so both together stay within maxBytes
  private readonly generationBytes: number

  constructor (capacity: number, options: MemoOptions = {}) {
    this.capacity = capacity
    this.maxBytes = options.maxBytes ?? MEMO_BUDGET_BYTES
    this.valueBytes = options.valueBytes ?? 128
    this.generationBytes = Math.floor(this.maxBytes / 2)
  }

  get (key: string): V | undefined {
    // never stored (below), and not even hashed for a lookup
    if (key.length > MEMO_MAX_KEY_LENGTH) return undefined
    const value = this.young.get(key)
    if (value !== undefined) return value
    const kept = this.old.get(key)
    if (kept !== undefined) this.set(key, kept)
    return kept
  }

  set (key: string, value: V): void {
    if (key.length > MEMO_MAX_KEY_LENGTH) return
    if (this.young.has(key)) {
      this.young.set(key, value)
      return
    }
    const bytes = 2 * key.length + this.valueBytes
    if (bytes > this.generationBytes) return
    if (this.young.size >= this.capacity || this.youngBytes + bytes > this.generationBytes) {
      this.old = this.young
      this.oldBytes = this.youngBytes
      this.young = new Map()
      this.youngBytes = 0
    }
    this.young.set(key, value)
    this.youngBytes += bytes
  }

  get size (): number {
    return this.young.size + this.old.size
  }

  /** The bytes counted for the entries kept (an estimate of their heap, never above maxBytes). */
  get bytes (): number {
    return this.youngBytes + this.oldBytes
  }

  clear (): void {
    this.young.clear()
    this.old.clear()
    this.youngBytes = 0
    this.oldBytes = 0
  }
}
