/*
 * The worker side of the worker cluster: the Transport a worker's hub uses, which forwards every
 * call to the primary and hands back its deliveries in seq order. Separate from the relay because
 * it runs in the worker processes and only speaks the protocol to the primary.
 */
import type { Logger } from '../../observability/logger.js';
import type { MetricsSnapshot } from '../../observability/metrics.js';
import {
  TransportUnavailableError,
  type SubscriptionRecord,
  type DispatchResult,
  type Transport,
  type TransportHealth,
} from '../../core/transport.js';
import type { StoredUpdate, Update } from '../../core/update.js';
import { Outbox, processPort, type IpcPort } from './ipc.js';
import type { WebhookStore } from '../../core/webhook-store.js';
import { remoteWebhookStore } from './webhook-relay.js';
import { CLUSTER_REQUEST_TIMEOUT, clusterOps, storedFromWire, toWire, type PeerLimitChanges, type PrimaryOp, type Wire, type WorkerOp } from './protocol.js';

const silent: Logger = { error() {}, warn() {}, info() {}, debug() {} };

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
  onPeerLimits?: ((connections: PeerLimitChanges, takes: PeerLimitChanges) => void) | undefined;
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
  private readonly remoteWebhooks: WebhookStore = remoteWebhookStore((m, a) => {
    const i = this.nextId++;
    return this.request({ t: 'wh', i, m, a }, i);
  });
  private primaryKeepsWebhooks = false;

  /** The primary transport's webhook state, over IPC (webhook-relay.ts), once started, if it keeps any. */
  get webhooks(): WebhookStore | undefined {
    return this.primaryKeepsWebhooks ? this.remoteWebhooks : undefined;
  }
  private port: IpcPort | null;
  private readonly log: Logger;
  private readonly timeout: number;
  private readonly batch: boolean;
  private readonly onPrimaryLost: (() => void) | undefined;
  private readonly metricsSource: (() => MetricsSnapshot | null) | undefined;
  private readonly onPeerLimits: ((connections: PeerLimitChanges, takes: PeerLimitChanges) => void) | undefined;
  /** Limit changes made here during this event-loop turn, sent as one `lim` op. */
  private pendingConns = new Map<string, number>();
  private pendingTakes = new Map<string, number>();
  private limitsScheduled = false;
  private out: Outbox | null = null;
  private realName = 'cluster';
  private window = 0;
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

  /** The primary's transport's window: it is the one that deduplicates. */
  get dedupeWindow(): number {
    return this.window;
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
    // Refused before anything is posted: nothing can be stored.
    if (this.lost) return Promise.reject(new TransportUnavailableError('cluster primary unreachable', { stored: 'no' }));
    if (this.closed) return Promise.reject(new TransportUnavailableError('transport closed', { stored: 'no' }));
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
        else r.reject(new TransportUnavailableError(op.m, { stored: op.s }));
        return;
      }
      case 'welcome': {
        this.realName = op.name;
        this.primaryKeepsWebhooks = op.wh === true;
        this.window = op.dw ?? 0;
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

  dispatch(update: Update): Promise<DispatchResult> {
    const i = this.nextId++;
    return this.request({ t: 'pub', i, u: toWire(update, '') }, i) as Promise<DispatchResult>;
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
