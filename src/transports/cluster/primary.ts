/*
 * The primary side of the worker cluster: the relay that owns the real transport and serves every
 * worker over its channel, including the hub-wide views only the primary can build (presence
 * across workers, merged metrics, connection limits relayed between workers). Separate from the
 * worker side because the two run in different processes and share only the protocol.
 */
import type { Logger } from '../../observability/logger.js';
import { addProcessFootprint, mergeSnapshots, renderSnapshot, type MetricsSnapshot } from '../../observability/metrics.js';
import { subscriptionEventData, subscriptionTopic } from '../../core/subscription.js';
import { TransportUnavailableError, type DispatchResult, type SubscriptionRecord, type Transport, type TransportHealth } from '../../core/transport.js';
import { createUpdate, type StoredUpdate, type Update } from '../../core/update.js';
import { uuidv7 } from '../../util/uuid.js';
import { Outbox, type IpcPort } from './ipc.js';
import { answerWebhookCall } from './webhook-relay.js';
import { CLUSTER_CHUNK, CLUSTER_METRICS_TIMEOUT, clusterOps, toWire, updateFromWire, type PrimaryOp, type Wire, type WorkerOp } from './protocol.js';

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const silent: Logger = { error() {}, warn() {}, info() {}, debug() {} };

export interface ClusterPrimaryRelayOptions {
  logger?: Logger | undefined;
  /** Batch the ops of one event-loop turn into one IPC message. Default true. */
  batch?: boolean | undefined;
  /** How often history size and health are checked and pushed to workers when changed (ms). Default 100. */
  statusInterval?: number | undefined;
  /**
   * Most IPC messages queued for a worker that does not read them (each carries up to
   * {@link CLUSTER_CHUNK} updates) before `onStuck` is called. Default 4000.
   */
  maxBacklog?: number | undefined;
  /**
   * Called once when a worker stops reading its channel (its event loop is blocked): the
   * primary's memory would grow without bound. The cluster kills and restarts the worker.
   */
  onStuck?: ((key: number) => void) | undefined;
  /** How long a scrape waits for each worker's metrics (ms). Default {@link CLUSTER_METRICS_TIMEOUT}. */
  metricsTimeout?: number | undefined;
  /**
   * The cluster's own gauges for scrapes: workers configured and restarted. Default: the workers
   * attached now, no restarts.
   */
  clusterMetrics?: (() => { workers: number; restarts: number }) | undefined;
}

interface Peer {
  readonly key: number;
  readonly port: IpcPort;
  readonly out: Outbox;
  /** Receives deliveries (after `hello`, until `bye` or exit). */
  live: boolean;
  /** Presence records of this worker's subscribers, by `subscriber\nkind\nmatch`. */
  readonly records: Map<string, SubscriptionRecord>;
  readonly unsubscribe: Array<() => void>;
  stuck: boolean;
  /** Subscriber connections this worker holds, by client address (for the connection limits). */
  readonly conns: Map<string, number>;
  /** Scrapes waiting for this worker's snapshot, by request id. */
  readonly snapshotWaiters: Map<number, (s: MetricsSnapshot | null) => void>;
}

function recordKey(r: SubscriptionRecord): string {
  return `${r.subscriber}\n${r.kind}\n${r.match}`;
}

/**
 * Runs in the cluster primary: owns the real transport and serves the workers. Each update the
 * real transport delivers is broadcast to every live worker in delivery order; requests
 * (dispatch, history, lastEventId, presence) are forwarded to it and answered. Presence is
 * aggregated here across workers (and forwarded when the real transport spans machines); the
 * records of a worker that goes away are dropped, and their subscription-end events published.
 */
export class ClusterPrimaryRelay {
  readonly transport: Transport;
  private readonly log: Logger;
  private readonly batch: boolean;
  private readonly statusInterval: number;
  private readonly maxBacklog: number;
  private readonly onStuck: ((key: number) => void) | undefined;
  private readonly metricsTimeout: number;
  private readonly clusterMetrics: (() => { workers: number; restarts: number }) | undefined;
  private readonly peers = new Map<number, Peer>();
  private nextSnapshotId = 1;
  /** Updates the real transport delivered and this relay broadcast: the hub's `mercure_updates_total`. */
  private relayed = 0;
  private nextKey = 1;
  private statusTimer: NodeJS.Timeout | null = null;
  private lastSize = -1;
  private lastHealth: TransportHealth = { ready: true };
  private readonly cleanups = new Set<Promise<void>>();
  private closed = false;
  /** Seq of the last update broadcast (-1: none since start) and dispatches not settled yet. */
  private lastSeq = -1n;
  private inFlight = 0;
  private deliveryWaiters: Array<{ seq: bigint; resolve: () => void }> = [];

  constructor(transport: Transport, options: ClusterPrimaryRelayOptions = {}) {
    this.transport = transport;
    this.log = options.logger ?? silent;
    this.batch = options.batch ?? true;
    // Workers answer readiness probes from the last status pushed: keep it fresh.
    this.statusInterval = options.statusInterval ?? 100;
    this.maxBacklog = options.maxBacklog ?? 4000;
    this.onStuck = options.onStuck;
    this.metricsTimeout = options.metricsTimeout ?? CLUSTER_METRICS_TIMEOUT;
    this.clusterMetrics = options.clusterMetrics;
  }

  /** Starts the real transport; its deliveries are broadcast to the workers from now on. */
  async start(): Promise<void> {
    await this.transport.start((u) => this.broadcast(u));
    this.lastSize = this.transport.historySize();
    this.lastHealth = this.transport.health();
    this.statusTimer = setInterval(() => this.pushStatus(), this.statusInterval);
    this.statusTimer.unref();
  }

  /** Workers currently attached. */
  get size(): number {
    return this.peers.size;
  }

  /**
   * Serves one worker over `port` (see {@link workerPort}). Call `detach` with the returned key
   * when the worker is gone (its `exit` event); a closing channel detaches it too.
   */
  attach(port: IpcPort): number {
    const key = this.nextKey++;
    const peer: Peer = {
      key,
      port,
      out: new Outbox(port, this.batch),
      live: false,
      records: new Map(),
      unsubscribe: [],
      stuck: false,
      conns: new Map(),
      snapshotWaiters: new Map(),
    };
    this.peers.set(key, peer);
    peer.unsubscribe.push(
      port.onMessage((m) => {
        const ops = clusterOps(m);
        if (ops) for (const op of ops) this.handle(peer, op as WorkerOp);
      }),
      port.onDisconnect(() => this.detach(key)),
    );
    return key;
  }

  /** Stops serving a worker and drops its presence records (announcing their end). */
  detach(key: number): void {
    const peer = this.peers.get(key);
    if (!peer) return;
    this.peers.delete(key);
    peer.live = false;
    peer.out.clear();
    for (const u of peer.unsubscribe) u();
    this.dropConnections(peer);
    for (const w of [...peer.snapshotWaiters.values()]) w(null);
    peer.snapshotWaiters.clear();
    const records = [...peer.records.values()];
    peer.records.clear();
    if (records.length > 0) {
      const p = this.dropRecords(records).finally(() => this.cleanups.delete(p));
      this.cleanups.add(p);
    }
  }

  private async dropRecords(records: SubscriptionRecord[]): Promise<void> {
    this.log.info({ subscriptions: records.length }, 'dropping the subscriptions of a departed worker');
    try {
      await this.transport.removeSubscriptions?.(records);
    } catch (err) {
      this.log.warn({ err }, 'could not remove the subscriptions of a departed worker');
    }
    // What the worker's hub would have published had it closed these subscriptions itself.
    for (const record of records) {
      try {
        await this.dispatch(
          createUpdate({
            topics: [subscriptionTopic(record)],
            data: subscriptionEventData(record, false),
            private: true,
            id: `urn:uuid:${uuidv7()}`,
            type: record.kind === 'selector' ? undefined : 'mercure',
          }),
        );
      } catch (err) {
        this.log.warn({ err, subscriber: record.subscriber }, 'could not publish subscription end');
        break;
      }
    }
  }

  /** Dispatches to the real transport, counting what is in flight (see waitDelivered). */
  private dispatch(update: Update): Promise<DispatchResult> {
    this.inFlight++;
    const settle = (): void => {
      this.inFlight--;
      if (this.deliveryWaiters.length > 0) this.checkWaiters();
    };
    let p: Promise<DispatchResult>;
    try {
      p = this.transport.dispatch(update);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(settle, settle);
    return p;
  }

  private delivered(seq: bigint): boolean {
    // Nothing broadcast since start and nothing in flight: what history holds is older than
    // this process and will never be delivered.
    return this.lastSeq >= seq || (this.lastSeq < 0n && this.inFlight === 0);
  }

  private checkWaiters(): void {
    this.deliveryWaiters = this.deliveryWaiters.filter((w) => {
      if (!this.delivered(w.seq)) return true;
      w.resolve();
      return false;
    });
  }

  /**
   * Resolves once the update at `seq` has been broadcast. A store may show an update to readers
   * (history) before the transport delivers it; the hub stitches a replay to the live stream by
   * seq and expects every update the replay covers to have reached `deliver` already, as it
   * does in one process. Answering a history request only after that (the deliveries precede the
   * answer on the channel) keeps a subscriber from getting such an update twice.
   */
  private waitDelivered(seq: bigint): Promise<void> {
    if (this.delivered(seq)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.deliveryWaiters = this.deliveryWaiters.filter((w) => w.resolve !== done);
        resolve();
      }, 2000);
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.deliveryWaiters.push({ seq, resolve: done });
    });
  }

  private broadcast(u: StoredUpdate): void {
    this.relayed++;
    if (u.seq > this.lastSeq) this.lastSeq = u.seq;
    if (this.deliveryWaiters.length > 0) this.checkWaiters();
    let w: Wire | null = null;
    for (const peer of this.peers.values()) {
      if (!peer.live) continue;
      w ??= toWire(u, u.seq.toString());
      peer.out.deliver(w);
      if (peer.out.backlog > this.maxBacklog && !peer.stuck) {
        peer.stuck = true;
        this.log.error({ backlog: peer.out.backlog }, 'a worker does not read its IPC channel');
        this.onStuck?.(peer.key);
      }
    }
  }

  private pushStatus(): void {
    const size = this.transport.historySize();
    const health = this.transport.health();
    if (size === this.lastSize && health.ready === this.lastHealth.ready && health.reason === this.lastHealth.reason) return;
    this.lastSize = size;
    this.lastHealth = health;
    for (const peer of this.peers.values()) if (peer.live) peer.out.post({ t: 'st', size, health });
  }

  private answer(peer: Peer, i: number, p: Promise<unknown>): void {
    p.then(
      (v) => {
        if (this.peers.has(peer.key)) peer.out.post(v === undefined ? { t: 'ok', i } : { t: 'ok', i, v });
      },
      (err: unknown) => {
        // A failure usually means the backend just went away: every worker's readiness probe
        // must say so now, not at the next status tick (the status goes out before the error).
        this.pushStatus();
        if (!this.peers.has(peer.key)) return;
        // Whether the update is certainly not stored travels with the error (the 503 says it).
        if (err instanceof TransportUnavailableError && err.stored === 'no') peer.out.post({ t: 'err', i, m: errorMessage(err), s: 'no' });
        else peer.out.post({ t: 'err', i, m: errorMessage(err) });
      },
    );
  }

  private handle(peer: Peer, op: WorkerOp): void {
    const t = this.transport;
    switch (op.t) {
      case 'pub':
        if (this.closed) return peer.out.post({ t: 'err', i: op.i, m: 'transport closed', s: 'no' });
        this.answer(peer, op.i, this.dispatch(updateFromWire(op.u)));
        return;
      case 'hello': {
        peer.live = true;
        peer.out.post({ t: 'welcome', name: t.name, size: t.historySize(), health: t.health(), dw: t.dedupeWindow ?? 0, wh: t.webhooks !== undefined });
        // A worker (re)started while others hold connections starts from their count.
        const held = new Map<string, number>();
        for (const other of this.peers.values()) {
          if (other === peer) continue;
          for (const [ip, n] of other.conns) held.set(ip, (held.get(ip) ?? 0) + n);
        }
        if (held.size > 0) peer.out.post({ t: 'lim', c: [...held] });
        return;
      }
      case 'hist': {
        // Deliveries queued so far go first, as they were delivered before the read.
        peer.out.flush();
        const i = op.i;
        let chunk: Wire[] = [];
        let maxSeq = -1n;
        const onUpdate = (u: StoredUpdate): void => {
          if (u.seq > maxSeq) maxSeq = u.seq;
          chunk.push(toWire(u, u.seq.toString()));
          if (chunk.length >= CLUSTER_CHUNK) {
            if (this.peers.has(peer.key)) peer.out.sendNow({ t: 'hc', i, u: chunk });
            chunk = [];
          }
        };
        let p: Promise<{ found: boolean }>;
        try {
          p = t.history(op.a, onUpdate);
        } catch (err) {
          p = Promise.reject(err);
        }
        this.answer(
          peer,
          i,
          p.then(async (r) => {
            if (chunk.length > 0 && this.peers.has(peer.key)) peer.out.post({ t: 'hc', i, u: chunk });
            await this.waitDelivered(maxSeq);
            return r.found;
          }),
        );
        return;
      }
      case 'last':
        this.answer(peer, op.i, t.lastEventId());
        return;
      case 'add':
        for (const r of op.r) peer.records.set(recordKey(r), r);
        this.answer(peer, op.i, Promise.resolve(t.addSubscriptions?.(op.r)));
        return;
      case 'rm':
        for (const r of op.r) peer.records.delete(recordKey(r));
        this.answer(peer, op.i, Promise.resolve(t.removeSubscriptions?.(op.r)));
        return;
      case 'list':
        this.answer(peer, op.i, this.listSubscriptions());
        return;
      case 'bye':
        peer.live = false;
        // Its subscribers are being sent away: they may reconnect to the other workers now.
        this.dropConnections(peer);
        return;
      case 'lim': {
        if (!peer.live) return;
        const c = op.c && op.c.length > 0 ? op.c : undefined;
        const r = op.r && op.r.length > 0 ? op.r : undefined;
        if (c) {
          for (const [ip, d] of c) {
            const n = (peer.conns.get(ip) ?? 0) + d;
            if (n > 0) peer.conns.set(ip, n);
            else peer.conns.delete(ip);
          }
        }
        if (c || r) this.toOthers(peer, { t: 'lim', ...(c ? { c } : {}), ...(r ? { r } : {}) });
        return;
      }
      case 'mx':
        this.answer(peer, op.i, this.metrics({ key: peer.key, snapshot: op.s }));
        return;
      case 'wh':
        this.answer(peer, op.i, answerWebhookCall(t.webhooks, op.m, op.a));
        return;
      case 'msr': {
        const waiter = peer.snapshotWaiters.get(op.i);
        if (!waiter) return;
        peer.snapshotWaiters.delete(op.i);
        waiter(op.s);
        return;
      }
      default:
        return;
    }
  }

  private toOthers(from: Peer, op: PrimaryOp): void {
    for (const other of this.peers.values()) if (other !== from && other.live) other.out.post(op);
  }

  /** Tells the other workers that the connections of `peer` are gone. */
  private dropConnections(peer: Peer): void {
    if (peer.conns.size === 0) return;
    const c: Array<[string, number]> = [...peer.conns].map(([ip, n]) => [ip, -n]);
    peer.conns.clear();
    this.toOthers(peer, { t: 'lim', c });
  }

  /** One worker's metrics snapshot, or null if it does not answer within the metrics timeout. */
  private askSnapshot(peer: Peer): Promise<MetricsSnapshot | null> {
    return new Promise((resolve) => {
      const i = this.nextSnapshotId++;
      const timer = setTimeout(() => {
        peer.snapshotWaiters.delete(i);
        resolve(null);
      }, this.metricsTimeout);
      peer.snapshotWaiters.set(i, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
      peer.out.post({ t: 'ms', i });
    });
  }

  /**
   * Prometheus text for the whole hub: every live worker's numbers merged (counters, gauges and
   * histograms summed; see mergeSnapshots), with what belongs to the one shared transport
   * (history size, readiness, updates relayed) taken once, from here. `from` is the worker that
   * asked, whose snapshot came with the request. Workers that do not answer within the metrics
   * timeout are left out, which `quicksilver_metrics_workers_answered` shows.
   */
  async metrics(from?: { key: number; snapshot: MetricsSnapshot }): Promise<string> {
    const others = [...this.peers.values()].filter((p) => p.live && p.key !== from?.key);
    const answers = await Promise.all(others.map((p) => this.askSnapshot(p)));
    const parts = answers.filter((s): s is MetricsSnapshot => s !== null);
    if (from) parts.unshift(from.snapshot);
    const merged = mergeSnapshots(parts, {
      historySize: this.transport.historySize(),
      transportReady: this.transport.health().ready,
      updatesTotal: this.relayed,
    });
    // The primary is part of the hub's footprint too.
    addProcessFootprint(merged);
    const cluster = this.clusterMetrics?.() ?? { workers: this.peers.size, restarts: 0 };
    return renderSnapshot(merged, { ...cluster, answered: parts.length });
  }

  /** Every worker's subscriptions; the real transport's (all machines) when it keeps presence. */
  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    if (this.transport.listSubscriptions) return this.transport.listSubscriptions();
    const all: SubscriptionRecord[] = [];
    for (const peer of this.peers.values()) for (const r of peer.records.values()) all.push(r);
    return all;
  }

  /** Detaches every worker, finishes presence cleanup and closes the real transport. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const key of [...this.peers.keys()]) this.detach(key);
    await Promise.allSettled([...this.cleanups]);
    this.closed = true;
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.statusTimer = null;
    await this.transport.close();
  }
}
