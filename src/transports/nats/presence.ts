/*
 * Presence on NATS: this node's subscription records in a KV bucket, kept visible by a heartbeat
 * key in a second bucket, and the listing of every live node's records. Separate from the update
 * stream because it is its own state (buckets, timer, local records) that survives reconnections
 * and only borrows the transport's connection.
 */
import type { JetStreamClient, KV } from 'nats';
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError, type SubscriptionRecord } from '../../core/transport.js';
import { dec, digest, enc } from './codec.js';
import { errorMessage, kvSnapshot, withTimeout } from './support.js';

/** Subscription records outlive their node by at most this long; live nodes re-put them every third of it. */
const RECORD_TTL = 3_600_000;

interface Presence {
  nodes: KV;
  subs: KV;
}

export interface NatsPresenceOptions {
  /** This node's id: its heartbeat key and the prefix of its records' keys. */
  readonly nodeId: string;
  /** The stream the buckets are named after. */
  readonly stream: string;
  readonly replicas: number;
  readonly publishTimeout: number;
  readonly presenceTtl: number;
  readonly log: Logger;
  /** The live connection's JetStream client; throws a TransportUnavailableError when there is none. */
  js(): JetStreamClient;
  /** Open and connected: worth a heartbeat. */
  live(): boolean;
}

/**
 * Two KV buckets, `<stream>_presence_nodes` (one heartbeat key per node, TTL `presenceTtl`) and
 * `<stream>_presence_subs` (one key per subscription, prefixed by its node). Listings keep the
 * records of nodes whose heartbeat is alive, so a dead node's subscriptions vanish after
 * `presenceTtl` whatever their number.
 */
export class NatsPresence {
  private presence: Promise<Presence> | null = null;
  private presenceTimer: NodeJS.Timeout | null = null;
  private presenceTick = 0;
  private readonly local = new Map<string, SubscriptionRecord>();

  constructor(private readonly o: NatsPresenceOptions) {}

  /** Buckets were opened or records are held: a (re)connection must write them again. */
  get wanted(): boolean {
    return this.presence !== null || this.local.size > 0;
  }

  /** The connection changed or closed: the buckets are bound again on next use. */
  unbind(): void {
    this.presence = null;
  }

  private get nodesBucket(): string {
    return `${this.o.stream}_presence_nodes`;
  }

  private get subsBucket(): string {
    return `${this.o.stream}_presence_subs`;
  }

  private recordKey(r: SubscriptionRecord): string {
    return `${this.o.nodeId}.${digest(r.subscriber)}.${digest(`${r.kind}\u0000${r.match}`)}`;
  }

  private open(): Promise<Presence> {
    if (!this.presence) {
      const js = this.o.js();
      const p = (async (): Promise<Presence> => {
        const common = { history: 1, replicas: this.o.replicas, timeout: this.o.publishTimeout };
        const nodes = await js.views.kv(this.nodesBucket, { ...common, ttl: this.o.presenceTtl });
        const subs = await js.views.kv(this.subsBucket, { ...common, ttl: RECORD_TTL });
        await nodes.put(this.o.nodeId, enc.encode(String(Date.now())));
        // (Re)opened after a failure or a new connection: the buckets may have lost our records.
        await Promise.all([...this.local].map(([key, r]) => subs.put(key, enc.encode(JSON.stringify(r)))));
        return { nodes, subs };
      })();
      this.presence = p;
      p.catch(() => {
        if (this.presence === p) this.presence = null;
      });
      if (!this.presenceTimer) {
        const every = Math.max(100, Math.floor(this.o.presenceTtl / 3));
        this.presenceTimer = setInterval(() => {
          // Re-put the records a few times per RECORD_TTL, the heartbeat every tick.
          const all = ++this.presenceTick % Math.max(1, Math.floor(RECORD_TTL / 3 / every)) === 0;
          void this.refresh(all);
        }, every);
        this.presenceTimer.unref();
      }
    }
    return this.presence;
  }

  /** Heartbeat, and with `all` every local record again (after a reconnection or periodically). */
  async refresh(all: boolean): Promise<void> {
    if (!this.o.live()) return;
    try {
      const { nodes, subs } = await this.open();
      await nodes.put(this.o.nodeId, enc.encode(String(Date.now())));
      if (all) {
        await Promise.all([...this.local].map(([key, r]) => subs.put(key, enc.encode(JSON.stringify(r)))));
      }
    } catch (err) {
      // Rebind (and recreate missing buckets) next time.
      this.presence = null;
      this.o.log.warn({ transport: 'nats', err: errorMessage(err) }, 'cannot refresh presence in NATS');
    }
  }

  async add(records: readonly SubscriptionRecord[]): Promise<void> {
    // Kept even if NATS is down: the next (re)connection writes them.
    for (const r of records) this.local.set(this.recordKey(r), r);
    try {
      const { subs } = await this.open();
      await Promise.all(records.map((r) => subs.put(this.recordKey(r), enc.encode(JSON.stringify(r)))));
    } catch (err) {
      throw err instanceof TransportUnavailableError
        ? err
        : new TransportUnavailableError(`cannot store subscriptions in NATS: ${errorMessage(err)}`);
    }
  }

  async remove(records: readonly SubscriptionRecord[]): Promise<void> {
    const keys = records.map((r) => this.recordKey(r));
    for (const k of keys) this.local.delete(k);
    try {
      const { subs } = await this.open();
      await Promise.all(keys.map((k) => subs.delete(k)));
    } catch (err) {
      throw err instanceof TransportUnavailableError
        ? err
        : new TransportUnavailableError(`cannot remove subscriptions from NATS: ${errorMessage(err)}`);
    }
  }

  async list(): Promise<SubscriptionRecord[]> {
    let presence: Presence;
    try {
      presence = await this.open();
    } catch (err) {
      throw err instanceof TransportUnavailableError
        ? err
        : new TransportUnavailableError(`cannot read subscriptions from NATS: ${errorMessage(err)}`);
    }
    const alive = new Set<string>();
    for await (const k of await presence.nodes.keys()) alive.add(k);
    const out: SubscriptionRecord[] = [...this.local.values()];
    const snapshot = await withTimeout(this.o.publishTimeout * 2, kvSnapshot(presence.subs));
    if (snapshot === undefined) throw new TransportUnavailableError('listing subscriptions from NATS timed out');
    for (const e of snapshot) {
      const node = e.key.slice(0, e.key.indexOf('.'));
      if (node === this.o.nodeId || !alive.has(node)) continue;
      try {
        out.push(JSON.parse(dec.decode(e.value)) as SubscriptionRecord);
      } catch {
        // not a record
      }
    }
    return out;
  }

  /** Current value of every key in a bucket. */


  /** Stops the heartbeat (the transport is closing). */
  stop(): void {
    if (this.presenceTimer) clearInterval(this.presenceTimer);
  }

  /** Deletes this node's heartbeat and records when the buckets are bound; null when they are not. */
  withdraw(): Promise<unknown> | null {
    if (!this.presence) return null;
    const keys = [...this.local.keys()];
    return this.presence
      .then(({ nodes, subs }) => Promise.all([nodes.delete(this.o.nodeId), ...keys.map((k) => subs.delete(k))]))
      .catch(() => {});
  }
}
