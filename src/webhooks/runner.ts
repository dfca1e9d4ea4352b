/**
 * The webhooks of one hub process: the configured ones and those registered over the HTTP API
 * (kept in the transport, so every process sees them). Every process runs a runner; for each
 * webhook, the one holding its lease delivers it (delivery.ts) and the others keep trying to take
 * the lease, so a process that dies hands its webhooks over when its leases run out.
 */
import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Authorizer, Grants } from '../auth/index.js';
import type { Transport } from '../core/transport.js';
import type { WebhookRegistration, WebhookStore } from '../core/webhook-store.js';
import type { Logger } from '../observability/logger.js';
import type { ExtraSeries } from '../observability/metrics.js';
import { AllowList } from './allow-list.js';
import { urlProblem } from './client.js';
import { compileSelectors, definitionProblem, type WebhookDefinition } from './definition.js';
import { WebhookDelivery, type DeliveryCounters, type DeliverySettings } from './delivery.js';
import { parseStatus, type WebhookStatus } from './status.js';

export interface WebhookOptions {
  /** Webhooks of the configuration (`webhook <name> { … }`). */
  definitions?: readonly WebhookDefinition[] | undefined;
  /** Hosts (`api.example.com`, `*.example.com`), addresses or networks callbacks may reach (see allow-list.ts). */
  allow?: readonly string[] | undefined;
  /** Per request, ms. Default 10 s. */
  timeout?: number | undefined;
  /** Failing for this long (ms) marks a webhook failing. Default 1 h. */
  giveUp?: number | undefined;
  /** First retry delay ceiling, ms. Default 1 s. */
  minBackoff?: number | undefined;
  /** Longest retry delay, and the probe interval of a failing webhook, ms. Default 5 min. */
  maxBackoff?: number | undefined;
  /** Lease length, ms: how long a dead process keeps its webhooks. Default 15 s. */
  leaseTtl?: number | undefined;
  /** How often registrations and free leases are checked, ms. Default 1 s. */
  refreshInterval?: number | undefined;
  /** Most bytes of a callback's answer read. Default 4 KiB. */
  maxResponseBytes?: number | undefined;
  /** Source of the backoff jitter, in [0, 1). Default Math.random. */
  random?: (() => number) | undefined;
}

export interface RunnerDeps {
  transport: Transport;
  authorizer: Authorizer;
  /** What a webhook's draft-08 token must name in `aud` (the hub's resource identifier or URL). */
  audience: string;
  /** Base of relative URL patterns. */
  baseUrl: string;
  anonymous: boolean;
  log: Logger;
  /** A number that changes whenever this process receives an update (the hub's update counter). */
  updatesSeen: () => number;
}

/** A webhook as the API shows it: never its token or secret. */
export interface WebhookView {
  name: string;
  url: string;
  selectors: WebhookRegistration['selectors'];
  batch: number;
  source: 'config' | 'api';
  token: boolean;
  cursor: string | null;
  status: WebhookStatus | { state: 'pending' };
  createdAt?: number | undefined;
}

const WAKE_INTERVAL = 20;

export class WebhookRunner {
  readonly owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private readonly store: WebhookStore;
  private readonly settings: DeliverySettings;
  private readonly refreshInterval: number;
  private readonly configured: ReadonlyMap<string, WebhookDefinition>;
  private readonly deliveries = new Map<string, { delivery: WebhookDelivery; source: 'config' | 'api' }>();
  private readonly counts = new Map<string, { delivered: number; failed: number; gaps: number }>();
  private readonly waiters = new Set<() => void>();
  private lastSeen = 0;
  private tickTimer: NodeJS.Timeout | null = null;
  private wakeTimer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private closed = false;
  private readonly counters: DeliveryCounters;

  /** Throws when the transport keeps no webhook state or a configured webhook is unusable. */
  constructor(options: WebhookOptions, private readonly deps: RunnerDeps) {
    if (!deps.transport.webhooks) throw new Error(`the ${deps.transport.name} transport does not keep webhook state; use memory, lmdb, redis, postgres or nats`);
    this.store = deps.transport.webhooks;
    const allow = new AllowList(options.allow ?? []);
    const minBackoff = Math.max(1, options.minBackoff ?? 1000);
    this.settings = {
      timeout: Math.max(1, options.timeout ?? 10_000),
      giveUp: Math.max(0, options.giveUp ?? 3_600_000),
      minBackoff,
      maxBackoff: Math.max(minBackoff, options.maxBackoff ?? 300_000),
      leaseTtl: Math.max(100, options.leaseTtl ?? 15_000),
      maxResponseBytes: Math.max(0, options.maxResponseBytes ?? 4096),
      random: options.random ?? Math.random,
      allow,
      anonymous: deps.anonymous,
    };
    this.refreshInterval = Math.max(10, options.refreshInterval ?? 1000);
    const configured = new Map<string, WebhookDefinition>();
    for (const d of options.definitions ?? []) {
      const problem = definitionProblem(d, deps.baseUrl) ?? urlProblem(new URL(d.url), allow);
      if (problem) throw new Error(`webhook ${d.name}: ${problem}`);
      if (configured.has(d.name)) throw new Error(`webhook ${d.name} is configured twice`);
      configured.set(d.name, d);
    }
    this.configured = configured;
    this.counters = {
      delivered: (name, n) => (this.count(name).delivered += n),
      failed: (name) => this.count(name).failed++,
      gap: (name) => this.count(name).gaps++,
    };
  }

  private count(name: string): { delivered: number; failed: number; gaps: number } {
    let c = this.counts.get(name);
    if (!c) this.counts.set(name, (c = { delivered: 0, failed: 0, gaps: 0 }));
    return c;
  }

  /** Call once the transport is started. */
  start(): void {
    if (this.tickTimer || this.closed) return;
    for (const d of this.configured.values()) this.add(d, 'config');
    this.lastSeen = this.deps.updatesSeen();
    this.wakeTimer = setInterval(() => {
      const seen = this.deps.updatesSeen();
      if (seen === this.lastSeen || this.waiters.size === 0) return;
      this.lastSeen = seen;
      for (const w of [...this.waiters]) w();
    }, WAKE_INTERVAL);
    this.wakeTimer.unref();
    this.tickTimer = setInterval(() => void this.tick(), this.refreshInterval);
    this.tickTimer.unref();
    void this.tick();
  }

  private add(def: WebhookDefinition, source: 'config' | 'api'): void {
    const delivery = new WebhookDelivery(def, compileSelectors(def.selectors, this.deps.baseUrl), {
      store: this.store,
      transport: this.deps.transport,
      owner: this.owner,
      log: this.deps.log,
      settings: this.settings,
      verify: (token) => this.verify(token),
      nextUpdate: (ms) => this.nextUpdate(ms),
      counters: this.counters,
    });
    this.deliveries.set(def.name, { delivery, source });
  }

  private async verify(token: string): Promise<Grants | string> {
    const r = await this.deps.authorizer.verify(token, 'subscriber', this.deps.audience);
    return 'error' in r ? r.message : r;
  }

  private nextUpdate(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private tick(): Promise<void> {
    // One at a time: a slow store must not pile ticks up.
    this.ticking ??= this.refresh()
      .catch((err: unknown) => this.deps.log.warn({ err }, 'webhooks: could not refresh registrations and leases'))
      .finally(() => (this.ticking = null));
    return this.ticking;
  }

  private async refresh(): Promise<void> {
    if (this.closed) return;
    const registered = await this.store.registrations();
    const names = new Set<string>();
    for (const r of registered) {
      if (this.configured.has(r.name)) continue;
      names.add(r.name);
      if (!this.deliveries.has(r.name)) this.add(r, 'api');
    }
    for (const [name, entry] of this.deliveries) {
      if (entry.source === 'api' && !names.has(name)) {
        this.deliveries.delete(name);
        void entry.delivery.stop();
      }
    }
    const owned: string[] = [];
    for (const [name, { delivery }] of this.deliveries) {
      if (this.closed) return;
      if (delivery.owned) owned.push(name);
      else await delivery.tryAcquire();
    }
    if (owned.length > 0) {
      const states = await this.store.states(owned);
      for (const [name, s] of states) this.deliveries.get(name)?.delivery.nudged(s.nudge);
    }
  }

  /** The webhooks, as the API lists them, with their stored cursor and status. */
  async list(): Promise<WebhookView[]> {
    const registered = await this.store.registrations();
    const all: Array<{ def: WebhookDefinition; source: 'config' | 'api'; createdAt?: number }> = [
      ...[...this.configured.values()].map((def) => ({ def, source: 'config' as const })),
      ...registered.filter((r) => !this.configured.has(r.name)).map((r) => ({ def: r, source: 'api' as const, createdAt: r.createdAt })),
    ];
    const states = await this.store.states(all.map((w) => w.def.name));
    return all.map(({ def, source, createdAt }) => {
      const s = states.get(def.name);
      return {
        name: def.name,
        url: def.url,
        selectors: def.selectors,
        batch: def.batch ?? 1,
        source,
        token: Boolean(def.token),
        cursor: s?.cursor ?? null,
        status: parseStatus(s?.status) ?? { state: 'pending' },
        createdAt,
      };
    });
  }

  /** Why a callback URL cannot be registered now (allow-list, including its current DNS answer), or null. */
  async callbackProblem(url: string): Promise<string | null> {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return `url '${url}' is not an absolute URL`;
    }
    const problem = urlProblem(u, this.settings.allow);
    if (problem) return problem;
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (/^[\d.]+$/.test(host) || host.includes(':')) return null;
    let addresses: Array<{ address: string }>;
    try {
      addresses = await lookup(host, { all: true });
    } catch (err) {
      return `cannot resolve ${host}: ${(err as Error).message}`;
    }
    for (const a of addresses) {
      const p = this.settings.allow.addressProblem(a.address);
      if (p) return `${host}: ${p}`;
    }
    return null;
  }

  /** Registers a webhook; a message when it is refused. */
  async create(def: WebhookDefinition): Promise<{ created: true } | { created: false; conflict: boolean; problem: string }> {
    const problem = definitionProblem(def, this.deps.baseUrl) ?? (await this.callbackProblem(def.url));
    if (problem) return { created: false, conflict: false, problem };
    if (this.configured.has(def.name)) return { created: false, conflict: true, problem: `webhook ${def.name} is defined by the configuration` };
    const registration: WebhookRegistration = {
      name: def.name,
      url: def.url,
      selectors: def.selectors.map((s) => ({ type: s.type, value: s.value })),
      token: def.token ?? '',
      secret: def.secret,
      batch: def.batch ?? 1,
      createdAt: Date.now(),
    };
    // From now on: the webhook gets what is published after it was created.
    const cursor = await this.deps.transport.lastEventId();
    if (!(await this.store.register(registration, cursor))) return { created: false, conflict: true, problem: `webhook ${def.name} already exists` };
    this.deps.log.info({ webhook: def.name, url: def.url }, 'webhook registered');
    void this.tick();
    return { created: true };
  }

  /** Removes an API webhook: 'configured' for one of the configuration, which only a restart removes. */
  async remove(name: string): Promise<boolean | 'configured'> {
    if (this.configured.has(name)) return 'configured';
    const removed = await this.store.unregister(name);
    const entry = this.deliveries.get(name);
    if (entry) {
      this.deliveries.delete(name);
      await entry.delivery.stop();
    }
    if (removed) this.deps.log.info({ webhook: name }, 'webhook deleted');
    return removed;
  }

  /** Re-enables a webhook: its owner, wherever it runs, retries at once. */
  async enable(name: string): Promise<boolean> {
    const known = this.configured.has(name) || (await this.store.registrations()).some((r) => r.name === name);
    if (!known) return false;
    await this.store.nudge(name);
    return true;
  }

  /** Definition of a webhook (configured or registered), for the API's access checks. */
  async definition(name: string): Promise<WebhookDefinition | undefined> {
    return this.configured.get(name) ?? (await this.store.registrations()).find((r) => r.name === name);
  }

  /** This process's webhook metrics (summed over processes by the cluster's metrics). */
  metrics(): ExtraSeries[] {
    const names = [...new Set([...this.deliveries.keys(), ...this.counts.keys()])].sort();
    const label = (n: string): string => `webhook="${n}"`;
    const c = (n: string) => this.counts.get(n) ?? { delivered: 0, failed: 0, gaps: 0 };
    const owned = names.filter((n) => this.deliveries.get(n)?.delivery.owned);
    return [
      { name: 'quicksilver_webhook_deliveries_total', type: 'counter', help: 'Updates acknowledged by webhook callbacks.', samples: names.map((n) => [label(n), c(n).delivered]) },
      { name: 'quicksilver_webhook_failures_total', type: 'counter', help: 'Webhook requests that failed (non-2xx, timeout, refused address).', samples: names.map((n) => [label(n), c(n).failed]) },
      { name: 'quicksilver_webhook_gaps_total', type: 'counter', help: 'Times updates were trimmed from history before a webhook received them.', samples: names.map((n) => [label(n), c(n).gaps]) },
      { name: 'quicksilver_webhook_failing', type: 'gauge', help: '1 while a webhook is failing (gave up retrying quickly, or its token is unusable).', samples: owned.map((n) => [label(n), this.deliveries.get(n)?.delivery.failing ? 1 : 0]) },
      { name: 'quicksilver_webhook_owned', type: 'gauge', help: 'Webhooks this process delivers (holds the lease of); summed over processes, 1 per webhook.', samples: owned.map((n) => [label(n), 1]) },
    ];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.wakeTimer) clearInterval(this.wakeTimer);
    for (const w of [...this.waiters]) w();
    await this.ticking;
    await Promise.all([...this.deliveries.values()].map((e) => e.delivery.stop()));
  }
}
