/**
 * Protective limits, off by default where the reference hub has none. Each refusal is counted
 * (metrics) and logged by the caller; these classes only keep the books.
 *
 * In a worker cluster (`--workers`) the limits are the hub's, not each process's: every worker
 * reports its own changes (`onChange`, `onTake`) and applies those of the others (`applyPeers`),
 * relayed by the primary. Decisions stay synchronous and local, so two requests reaching two
 * workers within the relay's latency (well under a millisecond to a few) may both be admitted.
 */

/** `[key, amount]` pairs: connection deltas by address, or rate-limit tokens taken by key. */
export type LimitChanges = ReadonlyArray<readonly [key: string, amount: number]>;

/** Counts open subscriber connections, per client address and in total. */
export class ConnectionLimiter {
  private readonly perIp = new Map<string, number>();
  private total = 0;
  /** Connections the other processes of a cluster hold. */
  private readonly peerPerIp = new Map<string, number>();
  private peerTotal = 0;
  /** Told of every slot taken (+1) or given back (−1) here, for the other processes of a cluster. */
  onChange: ((ip: string, delta: 1 | -1) => void) | null = null;
  constructor(
    private readonly maxPerIp: number,
    private readonly maxTotal: number,
  ) {}

  get enabled(): boolean {
    return this.maxPerIp > 0 || this.maxTotal > 0;
  }

  /** Takes a slot for `ip`, or says which limit refuses it. */
  acquire(ip: string): 'ok' | 'per_ip' | 'total' {
    if (this.maxTotal > 0 && this.total + this.peerTotal >= this.maxTotal) return 'total';
    const n = this.perIp.get(ip) ?? 0;
    if (this.maxPerIp > 0 && n + (this.peerPerIp.get(ip) ?? 0) >= this.maxPerIp) return 'per_ip';
    this.perIp.set(ip, n + 1);
    this.total++;
    this.onChange?.(ip, 1);
    return 'ok';
  }

  release(ip: string): void {
    const n = this.perIp.get(ip);
    if (n === undefined) return;
    if (n <= 1) this.perIp.delete(ip);
    else this.perIp.set(ip, n - 1);
    this.total--;
    this.onChange?.(ip, -1);
  }

  /** Counts connections opened (+) and closed (−) by the other processes of a cluster. */
  applyPeers(changes: LimitChanges): void {
    for (const [ip, delta] of changes) {
      const before = this.peerPerIp.get(ip) ?? 0;
      const after = Math.max(0, before + delta);
      if (after === 0) this.peerPerIp.delete(ip);
      else this.peerPerIp.set(ip, after);
      this.peerTotal += after - before;
    }
  }
}

/**
 * Token buckets per key (token subject or client address): `rate` publishes per second on
 * average, bursts up to `burst`. Idle buckets are forgotten so the map stays small.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private lastSweep = Date.now();
  /** Told of every token taken here, for the other processes of a cluster. */
  onTake: ((key: string) => void) | null = null;
  constructor(
    private readonly rate: number,
    private readonly burst: number = Math.max(1, rate),
  ) {}

  get enabled(): boolean {
    return this.rate > 0;
  }

  /** Takes one token for `key`; returns 0 when allowed, else the seconds to wait. */
  take(key: string, now: number = Date.now()): number {
    if (this.rate <= 0) return 0;
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.rate);
      b.at = now;
    }
    if (now - this.lastSweep > 60_000) this.sweep(now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      this.onTake?.(key);
      return 0;
    }
    return Math.ceil((1 - b.tokens) / this.rate);
  }

  /** Takes the tokens the other processes of a cluster took (never refused: they were granted there). */
  applyPeers(takes: LimitChanges, now: number = Date.now()): void {
    if (this.rate <= 0) return;
    for (const [key, n] of takes) {
      const b = this.buckets.get(key);
      if (!b) this.buckets.set(key, { tokens: Math.max(0, this.burst - n), at: now });
      else {
        b.tokens = Math.max(0, Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.rate) - n);
        b.at = now;
      }
    }
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    const full = (this.burst / this.rate) * 1000;
    for (const [k, b] of this.buckets) if (now - b.at > full) this.buckets.delete(k);
  }
}
