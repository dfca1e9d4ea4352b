/*
 * Webhook state for the single-process transports (memory, LMDB): one process owns the store, so
 * leases live in this process's memory and only registrations, cursors and statuses are kept by
 * the backing (nothing for memory, an LMDB database for lmdb). Leases still expire and are
 * fenced: in cluster mode every worker runs a webhook runner whose calls reach this object in the
 * primary over IPC, and a worker that dies must hand its webhooks over when its lease runs out.
 */
import type { WebhookRegistration, WebhookState, WebhookStore } from '../core/webhook-store.js';

/** Where an in-process store keeps what must survive a restart. */
export interface WebhookBacking {
  /** Everything stored, read once when the store is first used. */
  load(): { registrations: WebhookRegistration[]; states: Array<[string, WebhookState]> };
  putRegistration(r: WebhookRegistration): Promise<void>;
  putState(name: string, s: WebhookState): Promise<void>;
  remove(name: string): Promise<void>;
}

interface Lease {
  owner: string;
  fence: number;
  until: number;
}

export class InProcessWebhookStore implements WebhookStore {
  private loaded = false;
  private readonly regs = new Map<string, WebhookRegistration>();
  private readonly stateOf = new Map<string, WebhookState>();
  private readonly leases = new Map<string, Lease>();
  // Fences only need to grow within one process's life: leases do not outlive it.
  private fences = 0;

  constructor(
    private readonly backing: WebhookBacking | null = null,
    private readonly now: () => number = Date.now,
  ) {}

  private load(): void {
    if (this.loaded || !this.backing) return;
    const { registrations, states } = this.backing.load();
    for (const r of registrations) this.regs.set(r.name, r);
    for (const [name, s] of states) this.stateOf.set(name, s);
    this.loaded = true;
  }

  async register(registration: WebhookRegistration, cursor: string): Promise<boolean> {
    this.load();
    if (this.regs.has(registration.name)) return false;
    this.regs.set(registration.name, registration);
    const state: WebhookState = { cursor, status: undefined, nudge: 0 };
    this.stateOf.set(registration.name, state);
    await this.backing?.putRegistration(registration);
    await this.backing?.putState(registration.name, state);
    return true;
  }

  async unregister(name: string): Promise<boolean> {
    this.load();
    const had = this.regs.delete(name);
    this.stateOf.delete(name);
    this.leases.delete(name);
    if (had) await this.backing?.remove(name);
    return had;
  }

  async registrations(): Promise<WebhookRegistration[]> {
    this.load();
    return [...this.regs.values()];
  }

  async states(names: readonly string[]): Promise<Map<string, WebhookState>> {
    this.load();
    const out = new Map<string, WebhookState>();
    for (const n of names) {
      const s = this.stateOf.get(n);
      if (s) out.set(n, s);
    }
    return out;
  }

  private held(name: string, owner: string, fence: number): Lease | undefined {
    const l = this.leases.get(name);
    return l && l.owner === owner && l.fence === fence && l.until > this.now() ? l : undefined;
  }

  async acquire(name: string, owner: string, ttl: number): Promise<number | null> {
    const l = this.leases.get(name);
    const now = this.now();
    if (l && l.until > now && l.owner !== owner) return null;
    if (l && l.until > now && l.owner === owner) {
      l.until = now + ttl;
      return l.fence;
    }
    const fence = ++this.fences;
    this.leases.set(name, { owner, fence, until: now + ttl });
    return fence;
  }

  async renew(name: string, owner: string, fence: number, ttl: number): Promise<boolean> {
    const l = this.held(name, owner, fence);
    if (!l) return false;
    l.until = this.now() + ttl;
    return true;
  }

  async release(name: string, owner: string, fence: number): Promise<void> {
    if (this.held(name, owner, fence)) this.leases.delete(name);
  }

  async commit(name: string, owner: string, fence: number, change: { cursor?: string; status?: string }): Promise<boolean> {
    this.load();
    if (!this.held(name, owner, fence)) return false;
    const before = this.stateOf.get(name) ?? { cursor: undefined, status: undefined, nudge: 0 };
    const state: WebhookState = {
      cursor: change.cursor ?? before.cursor,
      status: change.status ?? before.status,
      nudge: before.nudge,
    };
    this.stateOf.set(name, state);
    await this.backing?.putState(name, state);
    // The lease may have been lost while the write was in flight: the caller must not count on it.
    return this.held(name, owner, fence) !== undefined;
  }

  async nudge(name: string): Promise<void> {
    this.load();
    const before = this.stateOf.get(name) ?? { cursor: undefined, status: undefined, nudge: 0 };
    const state = { ...before, nudge: before.nudge + 1 };
    this.stateOf.set(name, state);
    await this.backing?.putState(name, state);
  }
}
