import type { Worker } from 'node:cluster';
import type { LimitChanges } from '../../http/limits.js';
import type { Logger } from '../../observability/logger.js';
import { mergeSnapshots, renderSnapshot, type MetricsSnapshot } from '../../observability/metrics.js';
import { subscriptionEventData, subscriptionTopic } from '../../core/subscription.js';
import {
  TransportUnavailableError,
  type SubscriptionRecord,
  type Transport,
  type TransportHealth,
} from '../../core/transport.js';
import { createUpdate, type StoredUpdate, type Update } from '../../core/update.js';
import { uuidv7 } from '../../util/uuid.js';

/*
 * The worker cluster (`--workers N`): the primary process owns the real transport (LMDB, memory,
 * Redis…) and relays it to the workers over the cluster IPC channels, which carry JSON.
 *
 * Every IPC message is an envelope `{ qs: Op[] }`: the operations posted during one event-loop
 * turn travel together (one JSON round per turn instead of one per update, which is what the
 * channel spends its time on). Ops:
 *
 *   worker → primary                        primary → worker
 *   hello                                   welcome {name, size, health}
 *   pub  {i, u}        dispatch             ok {i, v?} | err {i, m}   (answers, by request id)
 *   hist {i, a}        history after a      hc {i, u[]}…  then ok {i, v: found}
 *   last {i}           lastEventId          d {u[]}       deliveries, in seq order
 *   add/rm {i, r[]}    presence             st {size, health}   pushed when they change
 *   list {i}           presence listing
 *   bye                closing: stop delivering
 *   mx {i, s}          the hub's metrics          ok {i, v: Prometheus text}
 *                      (s: the asking worker's snapshot; the primary asks the others:)
 *   msr {i, s}         this worker's snapshot  ←  ms {i}
 *   lim {c?, r?}       limits changed here     →  lim {c?, r?} to every other worker
 *
 * Updates travel as tuples (`Wire`) with the seq as a decimal string (JSON has no bigint).
 * `lim` carries connection deltas by client address (`c`) and publish-rate tokens taken by key
 * (`r`), so that protective limits hold for the whole hub (see limits.ts).
 */

/** `[seq, id, topics, data, private, type, retry]`; seq is '' in dispatch requests. */
type Wire = [seq: string, id: string, topics: readonly string[], data: string, priv: 0 | 1, type: string | null, retry: number];

type WorkerOp =
  | { t: 'hello' }
  | { t: 'pub'; i: number; u: Wire }
  | { t: 'hist'; i: number; a: string }
  | { t: 'last'; i: number }
  | { t: 'add' | 'rm'; i: number; r: SubscriptionRecord[] }
  | { t: 'list'; i: number }
  | { t: 'bye' }
  | { t: 'mx'; i: number; s: MetricsSnapshot }
  | { t: 'msr'; i: number; s: MetricsSnapshot | null }
  | { t: 'lim'; c?: Array<[string, number]>; r?: Array<[string, number]> };

type PrimaryOp =
  | { t: 'welcome'; name: string; size: number; health: TransportHealth }
  | { t: 'd'; u: Wire[] }
  | { t: 'st'; size: number; health: TransportHealth }
  | { t: 'ok'; i: number; v?: unknown }
  | { t: 'err'; i: number; m: string }
  | { t: 'hc'; i: number; u: Wire[] }
  | { t: 'ms'; i: number }
  | { t: 'lim'; c?: Array<[string, number]>; r?: Array<[string, number]> };

/** Most updates per IPC message (deliveries and history chunks), so no message gets huge. */
export const CLUSTER_CHUNK = 500;
/** How long a worker waits for an answer from the primary (reset by each history chunk). */
export const CLUSTER_REQUEST_TIMEOUT = 10_000;
/**
 * How long the primary waits for each worker's metrics during a scrape: a worker whose event loop
 * is stuck must not hang the scrape (its numbers are left out; the answered-workers gauge says so).
 */
export const CLUSTER_METRICS_TIMEOUT = 1_000;

/** Ops carried by an IPC message, or null when the message is not ours. */
export function clusterOps(message: unknown): Array<{ t: string }> | null {
  if (typeof message !== 'object' || message === null) return null;
  const ops = (message as { qs?: unknown }).qs;
  return Array.isArray(ops) ? (ops as Array<{ t: string }>) : null;
}

/** One end of an IPC channel carrying JSON-serialisable messages. */
export interface IpcPort {
  readonly connected: boolean;
  /** Sends a message; `done` is called once it is written (or failed: errors are never thrown). */
  send(message: unknown, done?: (err: Error | null) => void): void;
  /** Subscribes to incoming messages; returns the unsubscribe function. */
  onMessage(listener: (message: unknown) => void): () => void;
  /** Called once when the channel closes. */
  onDisconnect(listener: () => void): () => void;
}

/** The port of a cluster worker, seen from the primary. */
export function workerPort(worker: Worker): IpcPort {
  return {
    get connected() {
      return worker.isConnected();
    },
    send(message, done) {
      if (!worker.isConnected()) {
        done?.(new Error('worker disconnected'));
        return;
      }
      try {
        worker.send(message as never, undefined as never, (err: Error | null) => done?.(err ?? null));
      } catch (err) {
        done?.(err as Error);
      }
    },
    onMessage(listener) {
      worker.on('message', listener);
      return () => worker.off('message', listener);
    },
    onDisconnect(listener) {
      worker.once('disconnect', listener);
      return () => worker.off('disconnect', listener);
    },
  };
}

/** The port of this process to its parent (the cluster primary). Throws without an IPC channel. */
export function processPort(): IpcPort {
  if (typeof process.send !== 'function') throw new Error('the cluster transport needs an IPC channel to the primary process');
  return {
    get connected() {
      return process.connected;
    },
    send(message, done) {
      if (!process.connected || !process.send) {
        done?.(new Error('primary disconnected'));
        return;
      }
      try {
        process.send(message, undefined, {}, (err: Error | null) => done?.(err ?? null));
      } catch (err) {
        done?.(err as Error);
      }
    },
    onMessage(listener) {
      process.on('message', listener);
      return () => process.off('message', listener);
    },
    onDisconnect(listener) {
      process.once('disconnect', listener);
      return () => process.off('disconnect', listener);
    },
  };
}

const ignore = (): void => {};

/**
 * Ops waiting to be sent on one port: everything posted in the same event-loop turn leaves as
 * one message (flushed on `setImmediate`), deliveries merged into one `d` op.
 */
class Outbox {
  /** Messages handed to the channel and not written yet (the peer is not reading). */
  backlog = 0;
  private ops: Array<WorkerOp | PrimaryOp> = [];
  private deliveries: Wire[] | null = null;
  private scheduled = false;
  private readonly flushNow = (): void => {
    this.scheduled = false;
    this.flush();
  };

  constructor(private readonly port: IpcPort, private readonly batch: boolean) {}

  post(op: WorkerOp | PrimaryOp): void {
    this.ops.push(op);
    if (op.t === 'd') this.deliveries = op.u;
    else this.deliveries = null;
    this.schedule();
  }

  deliver(w: Wire): void {
    if (this.deliveries && this.deliveries.length < CLUSTER_CHUNK) this.deliveries.push(w);
    else {
      if (this.deliveries) this.flush();
      this.post({ t: 'd', u: [w] });
    }
  }

  /** Sends whatever is queued, then `op` on its own (large ops: history chunks). */
  sendNow(op: WorkerOp | PrimaryOp): void {
    this.flush();
    this.send({ qs: [op] }, ignore);
  }

  private send(message: { qs: Array<WorkerOp | PrimaryOp> }, done: (err: Error | null) => void): void {
    this.backlog++;
    this.port.send(message, (err) => {
      this.backlog--;
      done(err);
    });
  }

  private schedule(): void {
    if (!this.batch) return this.flush();
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushNow);
  }

  flush(done: (err: Error | null) => void = ignore): void {
    if (this.ops.length === 0) {
      done(null);
      return;
    }
    const ops = this.ops;
    this.ops = [];
    this.deliveries = null;
    this.send({ qs: ops }, done);
  }

  /** Drops what is queued (the port is gone). */
  clear(): void {
    this.ops = [];
    this.deliveries = null;
  }
}

function toWire(u: Update, seq: string): Wire {
  return [seq, u.id, u.topics, u.data, u.private ? 1 : 0, u.type || null, u.retry || 0];
}

function updateFromWire(w: Wire): Update {
  return createUpdate({ topics: w[2], data: w[3], private: w[4] === 1, id: w[1], type: w[5] ?? undefined, retry: w[6] });
}

function storedFromWire(w: Wire): StoredUpdate {
  return Object.freeze({
    topics: Object.freeze(w[2]),
    data: w[3],
    private: w[4] === 1,
    id: w[1],
    type: w[5] || undefined,
    retry: w[6] || undefined,
    seq: BigInt(w[0]),
  });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const silent: Logger = { error() {}, warn() {}, info() {}, debug() {} };

// ---------------------------------------------------------------------------------------------
// Primary side
// ---------------------------------------------------------------------------------------------

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
  private dispatch(update: Update): Promise<void> {
    this.inFlight++;
    const settle = (): void => {
      this.inFlight--;
      if (this.deliveryWaiters.length > 0) this.checkWaiters();
    };
    let p: Promise<void>;
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
        if (this.peers.has(peer.key)) peer.out.post({ t: 'err', i, m: errorMessage(err) });
      },
    );
  }

  private handle(peer: Peer, op: WorkerOp): void {
    const t = this.transport;
    switch (op.t) {
      case 'pub':
        if (this.closed) return peer.out.post({ t: 'err', i: op.i, m: 'transport closed' });
        this.answer(peer, op.i, this.dispatch(updateFromWire(op.u)));
        return;
      case 'hello': {
        peer.live = true;
        peer.out.post({ t: 'welcome', name: t.name, size: t.historySize(), health: t.health() });
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
    const mem = process.memoryUsage();
    merged.residentMemoryBytes += mem.rss;
    merged.heapUsedBytes += mem.heapUsed;
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

// ---------------------------------------------------------------------------------------------
// Worker side
// ---------------------------------------------------------------------------------------------

export interface ClusterWorkerTransportOptions {
  /** Channel to the primary. Default: this process's IPC channel ({@link processPort}). */
  port?: IpcPort | undefined;
  logger?: Logger | undefined;
  /** Request timeout in ms. Default {@link CLUSTER_REQUEST_TIMEOUT}. */
  timeout?: number | undefined;
  /** Batch the ops of one event-loop turn into one IPC message. Default true. */
  batch?: boolean | undefined;
  /** Called once if the channel to the primary closes while the transport is open. */
  onPrimaryLost?: (() => void) | undefined;
  /** This worker's metrics, which the primary asks for when another worker is scraped. */
  metrics?: (() => MetricsSnapshot | null) | undefined;
  /**
   * Changes to the protective limits made by the other workers: connections opened (+) and
   * closed (−) by client address, publish-rate tokens taken by key.
   */
  onPeerLimits?: ((connections: LimitChanges, takes: LimitChanges) => void) | undefined;
}

interface Request {
  resolve(v: unknown): void;
  reject(err: Error): void;
  deadline: number;
  chunk?: (u: Wire[]) => void;
}

/**
 * Runs in a cluster worker: the hub's transport, relayed to the real one in the primary (see
 * {@link ClusterPrimaryRelay}). Every update dispatched anywhere in the cluster reaches `deliver`
 * once, in seq order; history, lastEventId and the subscriptions API see all workers.
 */
export class ClusterWorkerTransport implements Transport {
  private port: IpcPort | null;
  private readonly log: Logger;
  private readonly timeout: number;
  private readonly batch: boolean;
  private readonly onPrimaryLost: (() => void) | undefined;
  private readonly metricsSource: (() => MetricsSnapshot | null) | undefined;
  private readonly onPeerLimits: ((connections: LimitChanges, takes: LimitChanges) => void) | undefined;
  /** Limit changes made here during this event-loop turn, sent as one `lim` op. */
  private pendingConns = new Map<string, number>();
  private pendingTakes = new Map<string, number>();
  private limitsScheduled = false;
  private out: Outbox | null = null;
  private realName = 'cluster';
  private deliverFn: ((u: StoredUpdate) => void) | null = null;
  private readonly requests = new Map<number, Request>();
  private nextId = 1;
  private size = 0;
  private primaryHealth: TransportHealth = { ready: false, reason: 'not started' };
  private lost = false;
  private closed = false;
  private started = false;
  /** Seq of the last update delivered. */
  private deliveredSeq = -1n;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly unsubscribe: Array<() => void> = [];

  constructor(options: ClusterWorkerTransportOptions = {}) {
    this.port = options.port ?? null;
    this.log = options.logger ?? silent;
    this.timeout = options.timeout ?? CLUSTER_REQUEST_TIMEOUT;
    this.batch = options.batch ?? true;
    this.onPrimaryLost = options.onPrimaryLost;
    this.metricsSource = options.metrics;
    this.onPeerLimits = options.onPeerLimits;
  }

  /** The primary's transport name (`memory`, `lmdb`…), once started. */
  get name(): string {
    return this.realName;
  }

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    if (this.started) throw new Error('cluster transport already started');
    this.started = true;
    const port = (this.port ??= processPort());
    this.out = new Outbox(port, this.batch);
    this.deliverFn = deliver;
    this.unsubscribe.push(
      port.onMessage((m) => {
        const ops = clusterOps(m);
        if (ops) for (const op of ops) this.handle(op as PrimaryOp);
      }),
      port.onDisconnect(() => this.primaryGone()),
    );
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(1000, Math.max(50, this.timeout / 4)));
    this.sweepTimer.unref();
    if (!port.connected) {
      this.primaryGone();
      throw new TransportUnavailableError('cluster primary unreachable');
    }
    await this.request({ t: 'hello' } as WorkerOp, 0);
  }

  private primaryGone(): void {
    if (this.lost) return;
    this.lost = true;
    this.primaryHealth = { ready: false, reason: 'cluster primary unreachable' };
    this.out?.clear();
    this.failAll('cluster primary unreachable');
    if (!this.closed) {
      this.log.error({}, 'lost the IPC channel to the cluster primary');
      this.onPrimaryLost?.();
    }
  }

  private failAll(reason: string): void {
    const pending = [...this.requests.values()];
    this.requests.clear();
    for (const r of pending) r.reject(new TransportUnavailableError(reason));
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, r] of this.requests) {
      if (now >= r.deadline) {
        this.requests.delete(id);
        r.reject(new TransportUnavailableError(`the cluster primary did not answer within ${this.timeout} ms`));
      }
    }
  }

  /** Posts a request with id `i` (0 = the hello, answered by `welcome`). */
  private request(op: WorkerOp, i: number, chunk?: (u: Wire[]) => void): Promise<unknown> {
    if (this.lost) return Promise.reject(new TransportUnavailableError('cluster primary unreachable'));
    if (this.closed) return Promise.reject(new TransportUnavailableError('transport closed'));
    if (!this.out) return Promise.reject(new Error('cluster transport not started'));
    const out = this.out;
    return new Promise((resolve, reject) => {
      const r: Request = { resolve, reject, deadline: Date.now() + this.timeout };
      if (chunk) r.chunk = chunk;
      this.requests.set(i, r);
      out.post(op);
    });
  }

  private handle(op: PrimaryOp): void {
    switch (op.t) {
      case 'd': {
        const deliver = this.deliverFn;
        for (const w of op.u) {
          const u = storedFromWire(w);
          if (u.seq <= this.deliveredSeq) {
            this.log.debug({ seq: w[0], id: w[1] }, 'cluster transport: dropped an out-of-order delivery');
            continue;
          }
          this.deliveredSeq = u.seq;
          if (deliver) {
            try {
              deliver(u);
            } catch (err) {
              this.log.error({ err }, 'cluster transport: deliver callback threw');
            }
          }
        }
        return;
      }
      case 'hc': {
        const r = this.requests.get(op.i);
        if (!r) return;
        r.deadline = Date.now() + this.timeout;
        r.chunk?.(op.u);
        return;
      }
      case 'ok':
      case 'err': {
        const r = this.requests.get(op.i);
        if (!r) return;
        this.requests.delete(op.i);
        if (op.t === 'ok') r.resolve(op.v);
        else r.reject(new TransportUnavailableError(op.m));
        return;
      }
      case 'welcome': {
        this.realName = op.name;
        this.size = op.size;
        this.primaryHealth = op.health;
        const r = this.requests.get(0);
        if (r) {
          this.requests.delete(0);
          r.resolve(undefined);
        }
        return;
      }
      case 'st':
        this.size = op.size;
        this.primaryHealth = op.health;
        return;
      case 'ms': {
        if (this.closed || this.lost || !this.out) return;
        let snapshot: MetricsSnapshot | null = null;
        try {
          snapshot = this.metricsSource?.() ?? null;
        } catch (err) {
          this.log.warn({ err }, 'cluster transport: could not take a metrics snapshot');
        }
        this.out.post({ t: 'msr', i: op.i, s: snapshot });
        return;
      }
      case 'lim':
        try {
          this.onPeerLimits?.(op.c ?? [], op.r ?? []);
        } catch (err) {
          this.log.error({ err }, 'cluster transport: limits callback threw');
        }
        return;
      default:
        return;
    }
  }

  dispatch(update: Update): Promise<void> {
    const i = this.nextId++;
    return this.request({ t: 'pub', i, u: toWire(update, '') }, i) as Promise<void>;
  }

  async history(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    // The primary answers once every update of the replay has been delivered here (see
    // ClusterPrimaryRelay.waitDelivered), so the hub can stitch replay and live stream by seq.
    const i = this.nextId++;
    const found = (await this.request({ t: 'hist', i, a: after }, i, (chunk) => {
      for (const w of chunk) onUpdate(storedFromWire(w));
    })) as boolean;
    return { found };
  }

  async lastEventId(): Promise<string> {
    const i = this.nextId++;
    return (await this.request({ t: 'last', i }, i)) as string;
  }

  historySize(): number {
    return this.size;
  }

  health(): TransportHealth {
    if (this.closed) return { ready: false, reason: 'transport closed' };
    if (this.lost) return { ready: false, reason: 'cluster primary unreachable' };
    return this.primaryHealth;
  }

  async addSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    const i = this.nextId++;
    await this.request({ t: 'add', i, r: [...records] }, i);
  }

  async removeSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    const i = this.nextId++;
    await this.request({ t: 'rm', i, r: [...records] }, i);
  }

  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    const i = this.nextId++;
    return (await this.request({ t: 'list', i }, i)) as SubscriptionRecord[];
  }

  /**
   * The whole hub's metrics (Prometheus text), merged by the primary from every worker's
   * snapshot; `own` is this worker's, sent along so that the primary need not ask for it.
   */
  async metrics(own: MetricsSnapshot): Promise<string> {
    const i = this.nextId++;
    return (await this.request({ t: 'mx', i, s: own }, i)) as string;
  }

  /** A subscriber connection from `ip` opened (+1) or closed (−1) here: the other workers count it. */
  shareConnection(ip: string, delta: number): void {
    this.pendingConns.set(ip, (this.pendingConns.get(ip) ?? 0) + delta);
    this.scheduleLimits();
  }

  /** A publish-rate token for `key` was taken here: the other workers take it too. */
  shareTake(key: string): void {
    this.pendingTakes.set(key, (this.pendingTakes.get(key) ?? 0) + 1);
    this.scheduleLimits();
  }

  private scheduleLimits(): void {
    if (this.limitsScheduled) return;
    this.limitsScheduled = true;
    // Several connections or publishes in one turn travel as one op, with opposite deltas netted.
    setImmediate(() => {
      this.limitsScheduled = false;
      const c = [...this.pendingConns].filter(([, d]) => d !== 0);
      const r = [...this.pendingTakes];
      this.pendingConns = new Map();
      this.pendingTakes = new Map();
      if (this.closed || this.lost || !this.out || (c.length === 0 && r.length === 0)) return;
      this.out.post({ t: 'lim', ...(c.length > 0 ? { c } : {}), ...(r.length > 0 ? { r } : {}) });
      // Now, not a turn later: the other workers decide on their own books meanwhile.
      this.out.flush();
    });
  }

  /**
   * Stops deliveries and detaches from the primary (whose transport stays open). Requests in
   * flight, such as the subscription-end events of a draining hub, get up to 2 s to complete.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    const deadline = Date.now() + 2000;
    while (this.requests.size > 0 && !this.lost && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    this.closed = true;
    this.deliverFn = null;
    const out = this.out;
    if (out && !this.lost) {
      out.post({ t: 'bye' });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        out.flush(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.failAll('transport closed');
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    for (const u of this.unsubscribe.splice(0)) u();
  }
}
