/** What the queue orders: anything with a deadline and a slot the queue may write its position to. */
export interface Deadlined {
  readonly deadline: number;
  /** Position in the queue's heap, -1 when not queued. Owned by the queue. */
  deadlineSlot: number;
}

/** setTimeout holds at most 2^31-1 ms; a later deadline is reached in several waits. */
const MAX_WAIT = 2 ** 30;

/**
 * Ends streams at their deadline (token `exp`, write timeout) to the millisecond, with one timer
 * for the whole hub: a min-heap of deadlines and a timer armed for the earliest. A periodic
 * sweep would end them up to a period late, still delivering updates meanwhile; a timer per
 * stream costs memory on 100k streams. Removal is O(log n) through the slot, so a stream that
 * ends early is not kept alive until its deadline.
 */
export class DeadlineQueue<T extends Deadlined> {
  private readonly heap: T[] = [];
  private timer: NodeJS.Timeout | null = null;
  private armedFor = Infinity;
  private readonly fireBound = (): void => this.fire();

  constructor(private readonly onDeadline: (item: T, now: number) => void) {}

  get size(): number {
    return this.heap.length;
  }

  add(item: T): void {
    if (item.deadline <= 0 || item.deadlineSlot >= 0) return;
    item.deadlineSlot = this.heap.length;
    this.heap.push(item);
    this.up(item.deadlineSlot);
    this.arm();
  }

  remove(item: T): void {
    const i = item.deadlineSlot;
    if (i < 0 || this.heap[i] !== item) return;
    item.deadlineSlot = -1;
    const last = this.heap.pop()!;
    if (i < this.heap.length) {
      this.heap[i] = last;
      last.deadlineSlot = i;
      this.down(i);
      this.up(last.deadlineSlot);
    }
    // The timer may now be early (harmless: it re-arms) but never late.
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.armedFor = Infinity;
    for (const item of this.heap) item.deadlineSlot = -1;
    this.heap.length = 0;
  }

  private arm(): void {
    const next = this.heap[0];
    if (!next || next.deadline >= this.armedFor) return;
    if (this.timer) clearTimeout(this.timer);
    this.armedFor = next.deadline;
    this.timer = setTimeout(this.fireBound, Math.min(MAX_WAIT, Math.max(0, next.deadline - Date.now())));
    this.timer.unref();
  }

  private fire(): void {
    this.timer = null;
    this.armedFor = Infinity;
    const now = Date.now();
    let top = this.heap[0];
    while (top && top.deadline <= now) {
      this.remove(top);
      this.onDeadline(top, now);
      top = this.heap[0];
    }
    this.arm();
  }

  private up(i: number): void {
    const h = this.heap;
    const item = h[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.deadline <= item.deadline) break;
      h[i] = h[p]!;
      h[i]!.deadlineSlot = i;
      i = p;
    }
    h[i] = item;
    item.deadlineSlot = i;
  }

  private down(i: number): void {
    const h = this.heap;
    const item = h[i]!;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && h[r]!.deadline < h[l]!.deadline ? r : l;
      if (h[c]!.deadline >= item.deadline) break;
      h[i] = h[c]!;
      h[i]!.deadlineSlot = i;
      i = c;
    }
    h[i] = item;
    item.deadlineSlot = i;
  }
}
