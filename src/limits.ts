/**
 * Protective limits, off by default where the reference hub has none. Each refusal is counted
 * (metrics) and logged by the caller; these classes only keep the books.
 */

/** Counts open subscriber connections, per client address and in total. */
export class ConnectionLimiter {
  private readonly perIp = new Map<string, number>();
  private total = 0;
  constructor(
    private readonly maxPerIp: number,
    private readonly maxTotal: number,
  ) {}

  get enabled(): boolean {
    return this.maxPerIp > 0 || this.maxTotal > 0;
  }

  /** Takes a slot for `ip`, or says which limit refuses it. */
  acquire(ip: string): 'ok' | 'per_ip' | 'total' {
    if (this.maxTotal > 0 && this.total >= this.maxTotal) return 'total';
    const n = this.perIp.get(ip) ?? 0;
    if (this.maxPerIp > 0 && n >= this.maxPerIp) return 'per_ip';
    this.perIp.set(ip, n + 1);
    this.total++;
    return 'ok';
  }

  release(ip: string): void {
    const n = this.perIp.get(ip);
    if (n === undefined) return;
    if (n <= 1) this.perIp.delete(ip);
    else this.perIp.set(ip, n - 1);
    this.total--;
  }
}

/**
 * Token buckets per key (token subject or client address): `rate` publishes per second on
 * average, bursts up to `burst`. Idle buckets are forgotten so the map stays small.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private lastSweep = Date.now();
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
      return 0;
    }
    return Math.ceil((1 - b.tokens) / this.rate);
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    const full = (this.burst / this.rate) * 1000;
    for (const [k, b] of this.buckets) if (now - b.at > full) this.buckets.delete(k);
  }
}
