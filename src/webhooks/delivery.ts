/**
 * One webhook, delivered by this process while it holds the webhook's lease: it tails history
 * from the webhook's cursor (never the hub's dispatch path, so a slow callback delays nobody),
 * keeps the updates the webhook selects and may read, POSTs them in order, one request (or one
 * batch) at a time, retries failures with exponential backoff and full jitter, and moves the
 * cursor, fenced by the lease, after each acknowledgement.
 *
 * At-least-once at the edge: a crash (or a lost lease) between a callback's 2xx and the cursor
 * write makes the next owner send that request again, with the same update ids.
 */
import http from 'node:http';
import https from 'node:https';
import { canSubscribe, type Grants } from '../auth/index.js';
import type { Matcher } from '../core/topic-matcher.js';
import type { Transport } from '../core/transport.js';
import type { StoredUpdate } from '../core/update.js';
import type { WebhookStore } from '../core/webhook-store.js';
import type { Logger } from '../observability/logger.js';
import type { AllowList } from './allow-list.js';
import { postJson } from './client.js';
import { selects, type WebhookDefinition } from './definition.js';
import { signatureHeader, SIGNATURE_HEADER } from './signature.js';
import type { WebhookStateName, WebhookStatus } from './status.js';

/** Settings every webhook of a runner shares, after defaults. */
export interface DeliverySettings {
  readonly timeout: number;
  readonly giveUp: number;
  readonly minBackoff: number;
  readonly maxBackoff: number;
  readonly leaseTtl: number;
  readonly maxResponseBytes: number;
  readonly random: () => number;
  readonly allow: AllowList;
  /** Whether a webhook without a token may have public updates (as an anonymous subscriber). */
  readonly anonymous: boolean;
}

/** What a delivery needs from the runner that owns it. */
export interface DeliveryContext {
  readonly store: WebhookStore;
  readonly transport: Transport;
  readonly owner: string;
  readonly log: Logger;
  readonly settings: DeliverySettings;
  /** Verifies the webhook's token as a subscriber's: grants, or why it cannot be used. */
  verify(token: string): Promise<Grants | string>;
  /** Resolves at the next update delivered to this process, or after `ms`. */
  nextUpdate(ms: number): Promise<void>;
  readonly counters: DeliveryCounters;
}

export interface DeliveryCounters {
  delivered(name: string, n: number): void;
  failed(name: string): void;
  gap(name: string): void;
}

/** Updates kept from one history read; the rest is read again from the new cursor. */
const READ_CAP = 5000;
/** Longest wait for new updates before history is read anyway (another node's, a missed wake). */
const IDLE_POLL = 1000;

export class WebhookDelivery {
  status: WebhookStatus;
  private fence: number | null = null;
  private leaseUntil = 0;
  private renewTimer: NodeJS.Timeout | null = null;
  private loop: Promise<void> | null = null;
  private abort: AbortController | null = null;
  private stopped = false;
  private nudgeSeen: number | undefined;
  /** Re-enable requests seen: one arriving during a backoff restarts it from the shortest. */
  private nudges = 0;
  private tokenFailure = false;
  private wakeRetry: (() => void) | null = null;
  /** Cursor writes go one at a time, the latest wins: a POST never waits for the previous fsync. */
  private nextCursor: string | undefined;
  private cursorWrites: Promise<void> | null = null;
  private readonly agent: http.Agent;
  private readonly url: URL;

  constructor(
    readonly def: WebhookDefinition,
    private readonly matchers: readonly Matcher[],
    private readonly ctx: DeliveryContext,
  ) {
    this.url = new URL(def.url);
    // One connection, kept alive: requests of one webhook are sequential anyway.
    const agentOptions = { keepAlive: true, maxSockets: 1 };
    this.agent = this.url.protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.status = { state: 'pending', since: Date.now(), attempts: 0, gaps: 0, owner: ctx.owner };
  }

  get owned(): boolean {
    return this.fence !== null;
  }

  get failing(): boolean {
    return this.owned && this.status.state === 'failing';
  }

  /** Tries to take the lease; starts delivering when it got it. */
  async tryAcquire(): Promise<void> {
    if (this.stopped || this.fence !== null) return;
    const t0 = Date.now();
    const fence = await this.ctx.store.acquire(this.def.name, this.ctx.owner, this.ctx.settings.leaseTtl);
    if (fence === null || this.stopped) {
      if (fence !== null) await this.ctx.store.release(this.def.name, this.ctx.owner, fence).catch(() => {});
      return;
    }
    this.fence = fence;
    // Counted from before the request: the store's clock started the lease no earlier.
    this.leaseUntil = t0 + this.ctx.settings.leaseTtl;
    this.abort = new AbortController();
    this.ctx.log.info({ webhook: this.def.name, fence }, 'webhook: delivering from this process');
    const every = Math.max(50, Math.floor(this.ctx.settings.leaseTtl / 3));
    this.renewTimer = setInterval(() => void this.renew(), every);
    this.renewTimer.unref();
    this.loop = this.run().catch((err: unknown) => {
      this.ctx.log.error({ err, webhook: this.def.name }, 'webhook: delivery loop failed');
    }).finally(() => this.lose('loop ended'));
  }

  private async renew(): Promise<void> {
    const fence = this.fence;
    if (fence === null) return;
    const t0 = Date.now();
    try {
      if (await this.ctx.store.renew(this.def.name, this.ctx.owner, fence, this.ctx.settings.leaseTtl)) {
        if (this.fence === fence) this.leaseUntil = t0 + this.ctx.settings.leaseTtl;
        return;
      }
      this.lose('lease taken over or expired');
    } catch (err) {
      // The store did not answer: the lease may still be ours until it runs out, not after.
      if (Date.now() >= this.leaseUntil - 50) this.lose(`lease could not be renewed: ${(err as Error).message}`);
    }
  }

  private lose(why: string): void {
    if (this.fence === null) return;
    if (why !== 'loop ended' && !this.stopped) this.ctx.log.warn({ webhook: this.def.name, reason: why }, 'webhook: lease lost, stopping delivery here');
    this.fence = null;
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = null;
    this.abort?.abort();
    this.wakeRetry?.();
  }

  /** A re-enable request (the store's nudge counter changed): retry now, with a fresh backoff. */
  nudged(nudge: number): void {
    if (this.nudgeSeen !== undefined && nudge !== this.nudgeSeen) {
      this.nudges++;
      this.wakeRetry?.();
    }
    this.nudgeSeen = nudge;
  }

  /** Stops delivering here and gives the lease up. */
  async stop(): Promise<void> {
    this.stopped = true;
    const fence = this.fence;
    this.lose('stopped');
    await this.loop?.catch(() => {});
    await this.cursorWrites;
    if (fence !== null) await this.ctx.store.release(this.def.name, this.ctx.owner, fence).catch(() => {});
    this.agent.destroy();
  }

  private holding(fence: number): boolean {
    return this.fence === fence && !this.stopped && Date.now() < this.leaseUntil;
  }

  private async commit(fence: number, change: { cursor?: string; status?: WebhookStatus }): Promise<boolean> {
    if (!this.holding(fence)) return false;
    const ok = await this.ctx.store.commit(this.def.name, this.ctx.owner, fence, {
      ...(change.cursor !== undefined ? { cursor: change.cursor } : {}),
      ...(change.status !== undefined ? { status: JSON.stringify(change.status) } : {}),
    });
    if (!ok) this.lose('the store refused a write: lease no longer held');
    return ok;
  }

  /**
   * Moves the cursor without waiting for the write: while one write is in flight, later cursors
   * wait and only the newest is written. The store fences each write, so a lost lease refuses
   * it; a crash loses at most the cursor moves not written yet (redelivered, same ids).
   */
  private advance(fence: number, cursor: string): void {
    this.nextCursor = cursor;
    this.cursorWrites ??= (async () => {
      while (this.nextCursor !== undefined) {
        const c = this.nextCursor;
        this.nextCursor = undefined;
        let ok = false;
        try {
          ok = await this.ctx.store.commit(this.def.name, this.ctx.owner, fence, { cursor: c });
        } catch (err) {
          this.ctx.log.warn({ err, webhook: this.def.name }, 'webhook: cursor write failed');
        }
        if (!ok) {
          this.nextCursor = undefined;
          if (this.fence === fence) this.lose('the store refused a cursor write: lease no longer held');
        }
      }
    })().finally(() => (this.cursorWrites = null));
  }

  private setStatus(state: WebhookStateName, reason?: string, extra: Partial<WebhookStatus> = {}): WebhookStatus {
    const prev = this.status;
    this.status = {
      ...prev,
      ...extra,
      state,
      reason,
      since: prev.state === state ? prev.since : Date.now(),
      owner: this.ctx.owner,
    };
    return this.status;
  }

  private async run(): Promise<void> {
    const fence = this.fence;
    if (fence === null) return;
    const name = this.def.name;
    const states = await this.ctx.store.states([name]);
    const stored = states.get(name);
    this.nudgeSeen = stored?.nudge ?? 0;
    const previous = stored?.status;
    if (previous) {
      try {
        const p = JSON.parse(previous) as WebhookStatus;
        this.status = { ...this.status, gaps: p.gaps ?? 0, lastGap: p.lastGap };
      } catch {
        // Unreadable status: start afresh.
      }
    }
    let cursor = stored?.cursor;
    if (cursor === undefined) {
      // A configured webhook's first owner: it gets what is published from now on.
      cursor = await this.ctx.transport.lastEventId();
      if (!(await this.commit(fence, { cursor, status: this.setStatus('active') }))) return;
    } else if (!(await this.commit(fence, { status: this.setStatus(this.status.state === 'pending' ? 'active' : this.status.state, this.status.reason) }))) {
      return;
    }

    while (this.holding(fence)) {
      const grants = await this.grants();
      if (typeof grants === 'string') {
        this.tokenFailure = true;
        if (this.status.state !== 'failing' || this.status.reason !== grants) {
          this.ctx.log.warn({ webhook: name, reason: grants }, 'webhook failing: its token cannot be used');
          if (!(await this.commit(fence, { status: this.setStatus('failing', grants) }))) return;
        }
        await this.pause(this.ctx.settings.maxBackoff);
        continue;
      }
      if (this.status.state === 'failing' && this.tokenFailure) {
        this.ctx.log.info({ webhook: name }, 'webhook recovered: its token is usable again');
        if (!(await this.commit(fence, { status: this.setStatus('active') }))) return;
      }
      this.tokenFailure = false;

      const batch: StoredUpdate[] = [];
      let lastSeen: string | undefined;
      let capped = false;
      const read = await this.ctx.transport.history(cursor, (u) => {
        if (capped) return;
        lastSeen = u.id;
        if (this.entitled(u, grants)) batch.push(u);
        if (batch.length >= READ_CAP) capped = true;
      });
      if (!read.found && cursor !== 'earliest') {
        // Trimmed before it was delivered: say so (log, metric, status) and go on with what is left.
        this.ctx.counters.gap(name);
        const gap = { at: Date.now(), after: cursor };
        this.ctx.log.error({ webhook: name, cursor }, 'webhook: its cursor is no longer in history; updates published after it and trimmed since were never delivered');
        this.setStatus(this.status.state, this.status.reason, { gaps: this.status.gaps + 1, lastGap: gap });
        await this.cursorWrites;
        if (!(await this.commit(fence, { cursor: 'earliest', status: this.status }))) return;
        cursor = 'earliest';
        continue;
      }

      const size = this.def.batch ?? 1;
      for (let i = 0; i < batch.length && this.holding(fence); i += size) {
        const part = batch.slice(i, i + size);
        if (!(await this.send(fence, part, grants))) return;
        cursor = (part[part.length - 1] as StoredUpdate).id;
        this.advance(fence, cursor);
      }
      if (!this.holding(fence)) return;
      if (lastSeen !== undefined && lastSeen !== cursor) {
        // Updates the webhook does not select still move its cursor, or it would fall out of history.
        cursor = lastSeen;
        this.advance(fence, cursor);
      }
      if (!capped) {
        await this.cursorWrites;
        await this.ctx.nextUpdate(IDLE_POLL);
      }
    }
  }

  private entitled(u: StoredUpdate, grants: Grants | null): boolean {
    return selects(this.matchers, u.topics) && (!u.private || canSubscribe(grants, u.topics));
  }

  private async grants(): Promise<Grants | null | string> {
    const token = this.def.token;
    if (!token) return this.ctx.settings.anonymous ? null : 'the webhook has no token and the hub does not allow anonymous subscribers';
    const g = await this.ctx.verify(token);
    if (typeof g === 'string') return `token refused: ${g}`;
    if (g.expiresAt !== undefined && g.expiresAt <= Date.now()) return 'token refused: token expired';
    return g;
  }

  /** Waits `ms`, or less when the lease is lost or a re-enable arrives. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeRetry = null;
        resolve();
      }, ms);
      this.wakeRetry = () => {
        clearTimeout(timer);
        this.wakeRetry = null;
        resolve();
      };
    });
  }

  private body(part: readonly StoredUpdate[]): Buffer {
    const doc = (u: StoredUpdate): object => ({ id: u.id, topics: u.topics, type: u.type ?? null, data: u.data, private: u.private });
    return Buffer.from(JSON.stringify((this.def.batch ?? 1) > 1 ? part.map(doc) : doc(part[0] as StoredUpdate)));
  }

  /** Sends one request until acknowledged; false when the lease was lost or delivery stopped. */
  private async send(fence: number, part: readonly StoredUpdate[], grants: Grants | null): Promise<boolean> {
    const s = this.ctx.settings;
    const name = this.def.name;
    const body = this.body(part);
    let attempt = 0;
    let firstFailure = 0;
    while (this.holding(fence)) {
      attempt++;
      if (attempt > 1 && grants && grants.expiresAt !== undefined && grants.expiresAt <= Date.now()) {
        // The token ran out while retrying: the next read fails the webhook with that reason.
        return this.holding(fence);
      }
      const headers = {
        'Content-Type': 'application/json',
        'User-Agent': 'Quicksilver-Webhook/1',
        'Webhook-Id': (part[part.length - 1] as StoredUpdate).id,
        'Webhook-Name': name,
        'Webhook-Attempt': String(attempt),
        [SIGNATURE_HEADER]: signatureHeader(this.def.secret, body),
      };
      const result = await postJson(this.url, body, headers, {
        timeout: s.timeout,
        maxResponseBytes: s.maxResponseBytes,
        allow: s.allow,
        agent: this.agent,
        signal: this.abort?.signal,
      });
      if (!this.holding(fence)) return false;
      const now = Date.now();
      if (result.ok) {
        this.ctx.counters.delivered(name, part.length);
        if (this.status.state !== 'active') {
          if (this.status.state === 'failing') this.ctx.log.info({ webhook: name }, 'webhook recovered: delivering again');
          this.setStatus('active', undefined, { attempts: 0, lastAttemptAt: now });
          if (!(await this.commit(fence, { status: this.status }))) return false;
        }
        return true;
      }
      this.ctx.counters.failed(name);
      firstFailure ||= now;
      const reason = result.error ?? 'request failed';
      const failing = this.status.state === 'failing' || now - firstFailure >= s.giveUp;
      if (failing && this.status.state !== 'failing') {
        this.ctx.log.warn({ webhook: name, reason, since: new Date(firstFailure).toISOString() }, 'webhook failing: gave up retrying quickly; probing at the longest backoff');
      } else if (attempt === 1) {
        this.ctx.log.debug({ webhook: name, reason }, 'webhook: request failed, retrying');
      }
      this.setStatus(failing ? 'failing' : 'retrying', reason, { attempts: attempt, lastAttemptAt: now });
      if (!(await this.commit(fence, { status: this.status }))) return false;
      const ceiling = Math.min(s.maxBackoff, s.minBackoff * 2 ** Math.min(attempt - 1, 40));
      // Full jitter while retrying; once failing, a probe every half to whole longest backoff.
      const delay = failing ? s.maxBackoff * (0.5 + s.random() / 2) : s.random() * ceiling;
      const before = this.nudges;
      await this.pause(delay);
      if (this.nudges !== before) {
        attempt = 0;
        firstFailure = 0;
      }
    }
    return false;
  }
}
