/*
 * The dedupe index of the in-process transports (memory, and LMDB's dispatches still being
 * written): which ids were stored within the dedupe window. Transports whose backend is shared
 * (Redis, PostgreSQL, NATS) check in the backend itself, atomically with the write.
 */
import { urlDuration } from '../util/duration.js';

/** Ids stored recently, oldest first, forgotten after `window` ms or beyond `cap` entries. */
export class RecentIds {
  // Insertion order is store order, hence time order: expiry only ever looks at the front.
  private readonly times = new Map<string, number>();

  constructor(
    /** ms; 0 keeps nothing (every dispatch is stored). */
    readonly window: number,
    /** Most ids remembered: bounds memory under a high publish rate. */
    private readonly cap: number,
  ) {}

  /** Whether `id` was recorded within the window before `now`. */
  has(id: string, now: number): boolean {
    if (this.window <= 0) return false;
    const t = this.times.get(id);
    return t !== undefined && now - t < this.window;
  }

  /** Records that `id` was stored at `now`. */
  add(id: string, now: number): void {
    if (this.window <= 0) return;
    // Re-inserted at the end, so the order stays the order of the latest store.
    this.times.delete(id);
    this.times.set(id, now);
    for (const [old, t] of this.times) {
      if (now - t < this.window && this.times.size <= this.cap) break;
      this.times.delete(old);
    }
  }
}

/**
 * The `dedupe_window` parameter every transport URL takes (a duration: `2m`, `30s`, bare numbers
 * in ms; `0` turns deduplication off), or undefined when absent.
 */
export function dedupeWindowParam(url: URL): number | undefined {
  const v = url.searchParams.get('dedupe_window');
  return v === null || v === '' ? undefined : urlDuration('dedupe_window', v);
}
