/**
 * A bounded map that evicts the least recently used entry. Map keeps insertion order, so
 * re-inserting on read is enough to track recency.
 */
export class LruCache<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}

  get size(): number {
    return this.map.size;
  }

  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  set(key: K, value: V): void {
    if (this.max <= 0) return;
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
  }

  /**
   * Removes least recently used entries while `stale` says so, at most `max` of them: entries
   * that expire are dropped as new ones come in, instead of waiting for capacity to push them out.
   */
  evictStale(stale: (value: V) => boolean, max: number): void {
    for (let i = 0; i < max; i++) {
      const oldest = this.map.entries().next();
      if (oldest.done || !stale(oldest.value[1])) return;
      this.map.delete(oldest.value[0]);
    }
  }

  delete(key: K): void {
    this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
  }
}
