/*
 * Webhook state on NATS: one KV bucket, `<stream>_webhooks`, with one key per webhook, `w.<name>`,
 * whose JSON value holds everything about it: the registration (webhooks created over the HTTP
 * API), cursor, status, nudge counter and the lease (owner, fence, lease length). One key, so
 * that every check and the write it guards are one compare-and-set (KV `create`, or `update` with
 * the revision read): a cursor write from a process whose lease changed hands fails on the
 * revision, re-reads, sees another owner and is refused. Nothing needs a multi-key transaction.
 *
 * Fences: a takeover writes the revision it replaced as the fence. Revisions are stream
 * sequences, which only grow (across delete and re-create of a key too), and a revision can be
 * replaced by a compare-and-set once, so every takeover gets a token larger than any before.
 *
 * Expiry without comparing clocks: NATS 2.9 has no per-key TTL, and neither the KV nor the
 * JetStream API tells a client the server's time. So expiry is judged by durations on each
 * process's own monotonic clock, never by timestamps from another machine:
 * - the holder counts its lease from just before the acquire or renew request was sent, and the
 *   store refuses its renewals and writes once that ran out (as Redis refuses them once its key
 *   expired);
 * - a would-be owner takes over only after it has seen the same revision of the key, unchanged,
 *   for a whole lease length. Every write by the holder makes a new revision, and that write was
 *   stored after the holder's lease started, so by then the holder's own count has run out too.
 * Only clock rates matter, not offsets, so hubs with skewed clocks stay safe. The price: a
 * takeover waits for the first read of the dead owner's last revision (up to one refresh of the
 * runner) plus the lease, and a re-enable request (a nudge is a write) postpones it by one lease.
 */
import { performance } from 'node:perf_hooks';
import type { JetStreamClient, KV, KvEntry, NatsError } from 'nats';
import { TransportUnavailableError } from '../../core/transport.js';
import type { WebhookRegistration, WebhookState, WebhookStore } from '../../core/webhook-store.js';
import { dec, enc } from './codec.js';
import { apiErrorCode, errorMessage, kvSnapshot } from './support.js';

/** What the key of one webhook holds. */
interface Doc {
  /** Registration, for webhooks created over the API (configured ones have state only). */
  r?: WebhookRegistration;
  c?: string;
  s?: string;
  n: number;
  /** Lease holder, absent when free. */
  o?: string;
  f?: number;
  /** The holder's lease length, ms: how long a would-be owner waits on an unchanged revision. */
  t?: number;
}

/** A lease this process granted: until when, on this process's monotonic clock. */
interface Held {
  owner: string;
  fence: number;
  until: number;
  /** Last revision and value seen or written: writes go straight to a compare-and-set from it. */
  revision: number;
  doc: Doc;
}

export interface NatsWebhookStoreOptions {
  readonly stream: string;
  readonly replicas: number;
  readonly timeout: number;
  /** The live connection's JetStream client; throws a TransportUnavailableError when there is none. */
  js(): JetStreamClient;
}

const MAX_RACES = 20;

function isConflict(err: unknown): boolean {
  // 10071: wrong last sequence (the key changed since it was read, or exists on create).
  return apiErrorCode(err) === 10071 || /wrong last sequence/i.test(errorMessage(err));
}

export class NatsWebhookStore implements WebhookStore {
  private bucket: Promise<KV> | null = null;
  private readonly held = new Map<string, Held>();
  /** Per webhook held by someone else: the revision seen and since when (monotonic ms). */
  private readonly seen = new Map<string, { revision: number; since: number }>();
  private readonly now: () => number;

  constructor(
    private readonly o: NatsWebhookStoreOptions,
    now?: () => number,
  ) {
    this.now = now ?? (() => performance.now());
  }

  /** The connection changed: bind the bucket again on next use. */
  unbind(): void {
    this.bucket = null;
  }

  private kv(): Promise<KV> {
    if (!this.bucket) {
      const p = this.o.js().views.kv(`${this.o.stream}_webhooks`, { history: 1, replicas: this.o.replicas, timeout: this.o.timeout });
      this.bucket = p;
      p.catch(() => {
        if (this.bucket === p) this.bucket = null;
      });
    }
    return this.bucket;
  }

  /** Runs a store call, reporting NATS trouble as the transport being unavailable. */
  private async call<T>(what: string, fn: (kv: KV) => Promise<T>): Promise<T> {
    try {
      return await fn(await this.kv());
    } catch (err) {
      if (err instanceof TransportUnavailableError) throw err;
      if ((err as NatsError | undefined)?.code === '503' || apiErrorCode(err) === 10059) this.bucket = null;
      throw new TransportUnavailableError(`cannot ${what} webhook state in NATS: ${errorMessage(err)}`);
    }
  }

  private static key(name: string): string {
    return `w.${name}`;
  }

  private static parse(e: KvEntry | null): Doc | null {
    if (!e || e.operation !== 'PUT') return null;
    try {
      return JSON.parse(dec.decode(e.value)) as Doc;
    } catch {
      // Not ours (written by hand): treated as absent, and overwritten by the next write.
      return null;
    }
  }

  /**
   * Compare-and-set loop on one webhook's key: `change` sees the current value (null when
   * absent) and returns the new one, or undefined to write nothing. Resolves the new revision,
   * or null when nothing was written.
   */
  private async cas(kv: KV, name: string, change: (doc: Doc | null) => Doc | undefined, start?: { revision: number; doc: Doc }): Promise<{ revision: number; doc: Doc } | null> {
    const key = NatsWebhookStore.key(name);
    let current = start;
    for (let i = 0; i < MAX_RACES; i++) {
      let revision = current?.revision ?? 0;
      let doc = current?.doc ?? null;
      let exists = current !== undefined;
      if (!current) {
        const e = await kv.get(key);
        doc = NatsWebhookStore.parse(e);
        revision = e?.revision ?? 0;
        exists = e !== null && e.operation === 'PUT';
      }
      current = undefined;
      const next = change(doc);
      if (next === undefined) return null;
      try {
        const bytes = enc.encode(JSON.stringify(next));
        // A key never written, deleted or purged: `create` (it handles the delete marker).
        const r = exists ? await kv.update(key, bytes, revision) : await kv.create(key, bytes);
        return { revision: r, doc: next };
      } catch (err) {
        if (!isConflict(err)) throw err;
        // Someone wrote in between: read again and decide again.
      }
    }
    throw new Error(`webhook ${name}: the state key kept changing under ${MAX_RACES} writes in a row`);
  }

  async register(registration: WebhookRegistration, cursor: string): Promise<boolean> {
    return this.call('store', async (kv) => {
      let taken = false;
      // A state left by a configured webhook of the same name would carry a foreign cursor and lease.
      const r = await this.cas(kv, registration.name, (doc) => {
        taken = doc?.r !== undefined;
        return taken ? undefined : { r: registration, c: cursor, n: 0 };
      });
      if (r) this.held.delete(registration.name);
      return !taken && r !== null;
    });
  }

  async unregister(name: string): Promise<boolean> {
    return this.call('remove', async (kv) => {
      const key = NatsWebhookStore.key(name);
      this.held.delete(name);
      this.seen.delete(name);
      for (let i = 0; i < MAX_RACES; i++) {
        const e = await kv.get(key);
        if (!e || e.operation !== 'PUT') return false;
        const had = NatsWebhookStore.parse(e)?.r !== undefined;
        try {
          await kv.delete(key, { previousSeq: e.revision });
          return had;
        } catch (err) {
          if (!isConflict(err)) throw err;
        }
      }
      throw new Error(`webhook ${name}: the state key kept changing under ${MAX_RACES} deletes in a row`);
    });
  }

  async registrations(): Promise<WebhookRegistration[]> {
    return this.call('read', async (kv) => {
      const out: WebhookRegistration[] = [];
      for (const e of await kvSnapshot(kv, 'w.>')) {
        const r = NatsWebhookStore.parse(e)?.r;
        if (r) out.push(r);
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  async states(names: readonly string[]): Promise<Map<string, WebhookState>> {
    return this.call('read', async (kv) => {
      const out = new Map<string, WebhookState>();
      const entries = await Promise.all(names.map((n) => kv.get(NatsWebhookStore.key(n))));
      names.forEach((name, i) => {
        const doc = NatsWebhookStore.parse(entries[i] ?? null);
        if (doc) out.set(name, { cursor: doc.c, status: doc.s, nudge: doc.n ?? 0 });
      });
      return out;
    });
  }

  private live(name: string, owner: string, fence: number): Held | undefined {
    const h = this.held.get(name);
    return h && h.owner === owner && h.fence === fence && h.until > this.now() ? h : undefined;
  }

  async acquire(name: string, owner: string, ttl: number): Promise<number | null> {
    return this.call('lease', async (kv) => {
      const key = NatsWebhookStore.key(name);
      for (let i = 0; i < MAX_RACES; i++) {
        const t0 = this.now();
        const e = await kv.get(key);
        if (!e || e.operation !== 'PUT') {
          // Nothing stored yet (a configured webhook's first run): an empty state first, so that
          // the takeover below has a revision to use as its fence.
          try {
            await kv.create(key, enc.encode(JSON.stringify({ n: 0 } satisfies Doc)));
          } catch (err) {
            if (!isConflict(err)) throw err;
          }
          continue;
        }
        const doc = NatsWebhookStore.parse(e) ?? { n: 0 };
        const mine = this.held.get(name);
        if (doc.o !== undefined && doc.o !== owner && !this.expired(name, e.revision, doc.t ?? ttl)) {
          if (mine?.owner === owner) this.held.delete(name);
          return null;
        }
        // Our own lease, still running by our count: extended with the same fence (as Redis does).
        const renewal = doc.o === owner && mine !== undefined && mine.owner === owner && mine.fence === doc.f && mine.until > t0;
        const next: Doc = { ...doc, o: owner, f: renewal ? doc.f! : e.revision, t: ttl };
        try {
          const revision = await kv.update(key, enc.encode(JSON.stringify(next)), e.revision);
          this.held.set(name, { owner, fence: next.f!, until: t0 + ttl, revision, doc: next });
          this.seen.delete(name);
          return next.f!;
        } catch (err) {
          if (!isConflict(err)) throw err;
        }
      }
      throw new Error(`webhook ${name}: the state key kept changing under ${MAX_RACES} lease attempts`);
    });
  }

  /**
   * Whether a lease held elsewhere, at this revision, has gone unrenewed for its length here.
   * Times are taken after the read answered: the revision was written before that, so after
   * the holder's lease started, and the wait can only be longer than the holder's count.
   */
  private expired(name: string, revision: number, ttl: number): boolean {
    const now = this.now();
    const s = this.seen.get(name);
    if (!s || s.revision !== revision) {
      this.seen.set(name, { revision, since: now });
      return false;
    }
    return now - s.since >= ttl;
  }

  /**
   * A compare-and-set from the holder's last known revision (one round trip when nobody else
   * wrote), re-reading on conflict; refused unless the key still names this owner and fence.
   */
  private async write(kv: KV, name: string, owner: string, fence: number, apply: (doc: Doc) => Doc): Promise<Held | null> {
    const h = this.live(name, owner, fence);
    if (!h) return null;
    const r = await this.cas(
      kv,
      name,
      (doc) => (doc && doc.o === owner && doc.f === fence ? apply(doc) : undefined),
      { revision: h.revision, doc: h.doc },
    );
    if (!r) {
      if (this.held.get(name) === h) this.held.delete(name);
      return null;
    }
    // Two writes of one holder may finish out of order: keep the newer revision.
    if (r.revision > h.revision) {
      h.revision = r.revision;
      h.doc = r.doc;
    }
    return h;
  }

  async renew(name: string, owner: string, fence: number, ttl: number): Promise<boolean> {
    return this.call('lease', async (kv) => {
      const t0 = this.now();
      const h = await this.write(kv, name, owner, fence, (doc) => ({ ...doc, t: ttl }));
      if (!h) return false;
      h.until = t0 + ttl;
      return true;
    });
  }

  async release(name: string, owner: string, fence: number): Promise<void> {
    await this.call('lease', async (kv) => {
      const h = this.held.get(name);
      if (!h || h.owner !== owner || h.fence !== fence) return;
      this.held.delete(name);
      await this.cas(kv, name, (doc) => {
        if (!doc || doc.o !== owner || doc.f !== fence) return undefined;
        const { o: _o, f: _f, t: _t, ...rest } = doc;
        return rest;
      }, { revision: h.revision, doc: h.doc });
    });
  }

  async commit(name: string, owner: string, fence: number, change: { cursor?: string; status?: string }): Promise<boolean> {
    return this.call('store', async (kv) => {
      if (change.cursor === undefined && change.status === undefined) {
        const doc = NatsWebhookStore.parse(await kv.get(NatsWebhookStore.key(name)));
        return doc?.o === owner && doc.f === fence && this.live(name, owner, fence) !== undefined;
      }
      const h = await this.write(kv, name, owner, fence, (doc) => ({
        ...doc,
        ...(change.cursor !== undefined ? { c: change.cursor } : {}),
        ...(change.status !== undefined ? { s: change.status } : {}),
      }));
      // The lease may have run out while the write was in flight: the caller must not count on it.
      return h !== null && this.live(name, owner, fence) !== undefined;
    });
  }

  async nudge(name: string): Promise<void> {
    await this.call('store', async (kv) => {
      await this.cas(kv, name, (doc) => ({ ...(doc ?? {}), n: (doc?.n ?? 0) + 1 }));
    });
  }
}

