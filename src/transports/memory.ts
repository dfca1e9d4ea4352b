import type { StoredUpdate, Update } from '../core/update.js';
import { DEFAULT_DEDUPE_WINDOW, type DispatchResult, type Transport, type TransportHealth } from '../core/transport.js';
import { RecentIds } from './recent-ids.js';
import { InProcessWebhookStore } from './webhook-state.js';

export interface MemoryTransportOptions {
  /** Most updates kept for replay; the oldest are dropped first. Default 10 000; 0 keeps none. */
  size?: number | undefined;
  /** Drop updates older than this many ms. Default: no age limit. */
  maxAge?: number | undefined;
  /** A dispatch whose id was stored this recently (ms) is a duplicate. Default 2 minutes; 0 = off. */
  dedupeWindow?: number | undefined;
}

/**
 * In-process transport with a bounded ring of history. Nothing survives a restart; meant for
 * tests, development and throwaway hubs.
 */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  /** Webhook registrations and cursors; gone with the process, like history. */
  readonly webhooks = new InProcessWebhookStore();
  private readonly size: number;
  private readonly maxAge: number;
  // Ring buffer: `ring[(head + i) % capacity]` for i < count, oldest first.
  private readonly ring: (StoredUpdate | undefined)[];
  private readonly times: number[];
  private head = 0;
  private count = 0;
  private seq = 0n;
  private lastId = 'earliest';
  private deliver: ((u: StoredUpdate) => void) | null = null;
  private closed = false;
  private readonly recent: RecentIds;

  constructor(options: MemoryTransportOptions = {}) {
    this.size = Math.max(0, options.size ?? 10_000);
    this.maxAge = options.maxAge ?? 0;
    // Independent of history (size 0 keeps none), bounded so a publish storm cannot exhaust memory.
    this.recent = new RecentIds(Math.max(0, options.dedupeWindow ?? DEFAULT_DEDUPE_WINDOW), Math.max(this.size, 100_000));
    this.ring = new Array(this.size);
    this.times = new Array(this.size).fill(0);
  }

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    this.deliver = deliver;
  }

  get dedupeWindow(): number {
    return this.recent.window;
  }

  async dispatch(update: Update): Promise<DispatchResult> {
    if (this.closed) throw new Error('transport closed');
    const now = Date.now();
    if (this.recent.has(update.id, now)) return 'duplicate';
    this.recent.add(update.id, now);
    const stored: StoredUpdate = Object.freeze({ ...update, seq: ++this.seq });
    this.lastId = update.id;
    if (this.size > 0) {
      if (this.count < this.size) {
        const i = (this.head + this.count) % this.size;
        this.ring[i] = stored;
        this.times[i] = now;
        this.count++;
      } else {
        this.ring[this.head] = stored;
        this.times[this.head] = now;
        this.head = (this.head + 1) % this.size;
      }
    }
    this.deliver?.(stored);
  }

  private expire(): void {
    if (this.maxAge <= 0) return;
    const limit = Date.now() - this.maxAge;
    while (this.count > 0 && this.times[this.head]! < limit) {
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.size;
      this.count--;
    }
  }

  async history(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    this.expire();
    let start = 0;
    if (after !== 'earliest') {
      start = -1;
      for (let i = 0; i < this.count; i++) {
        if (this.ring[(this.head + i) % this.size]!.id === after) {
          start = i + 1;
          break;
        }
      }
      if (start < 0) return { found: false };
    }
    for (let i = start; i < this.count; i++) onUpdate(this.ring[(this.head + i) % this.size]!);
    return { found: true };
  }

  async lastEventId(): Promise<string> {
    return this.lastId;
  }

  historySize(): number {
    this.expire();
    return this.count;
  }

  health(): TransportHealth {
    return this.closed ? { ready: false, reason: 'transport closed' } : { ready: true };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.deliver = null;
  }
}
