/**
 * A bounded memo for normalise-and-hash results: the same users come back again and again,
 * and SHA-256 plus phone parsing is most of a conversion's cost. Two generations of `Map`: when
 * the young one is full the old one is dropped, so at most `2 × capacity` entries are kept and
 * recently used entries survive a turnover (an entry found in the old generation moves to the
 * young one) — LRU-like without bookkeeping on every hit.
 */
export class Memo<V> {
  private young = new Map<string, V>()
  private old = new Map<string, V>()
  readonly capacity: number

  constructor (capacity: number) {
    this.capacity = capacity
  }

  get (key: string): V | undefined {
    const value = this.young.get(key)
    if (value !== undefined) return value
    const kept = this.old.get(key)
    if (kept !== undefined) this.set(key, kept)
    return kept
  }

  set (key: string, value: V): void {
    if (this.young.size >= this.capacity) {
      this.old = this.young
      this.young = new Map()
    }
    this.young.set(key, value)
  }

  get size (): number {
    return this.young.size + this.old.size
  }

  clear (): void {
    this.young.clear()
    this.old.clear()
  }
}
