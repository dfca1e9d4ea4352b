/*
 * The NATS transport itself: the connection lifecycle (connect, reconnect, stream setup, the live
 * fan-out consumer, readiness) and the Transport calls, which hand history reads to history.ts
 * and presence to presence.ts. What is left here is the state every part shares: the connection
 * and the stream's sequence bookkeeping.
 */
import { randomBytes } from 'node:crypto';
import { connect, Events, type ConnectionOptions, type JetStreamClient, type JetStreamManager, type Msg, type NatsConnection, type NatsError, type PubAck, type StreamInfo } from 'nats';
import type { Logger } from '../../observability/logger.js';
import {
  DEFAULT_DEDUPE_WINDOW,
  TransportUnavailableError,
  type DispatchResult,
  type StoredOutcome,
  type SubscriptionRecord,
  type Transport,
  type TransportHealth,
} from '../../core/transport.js';
import type { StoredUpdate, Update } from '../../core/update.js';
import { decodeUpdate, digest, encodeUpdate } from './codec.js';
import { findSeq, readLastEventId, replayRange } from './history.js';
import { HEARTBEAT, OrderedPush } from './ordered-push.js';
import { NatsPresence } from './presence.js';
import { ensureStream } from './stream.js';
import { NatsWebhookStore } from './webhook-state.js';
import { apiErrorCode, errorMessage, isStreamNotFound, sleep, withTimeout } from './support.js';

export interface NatsTransportOptions {
  /** NATS server(s): `host:port` or `nats://host:port`. Default `127.0.0.1:4222`. */
  servers?: string | readonly string[] | undefined;
  user?: string | undefined;
  pass?: string | undefined;
  token?: string | undefined;
  /** Require TLS (system CAs). */
  tls?: boolean | undefined;
  /** JetStream stream holding the updates. Default `MERCURE`. */
  stream?: string | undefined;
  /**
   * Subject prefix: each update is published to `<subject>.<token of its id>` and the stream
   * captures `<subject>.>`. Default `mercure.updates`.
   */
  subject?: string | undefined;
  /** Most updates kept (stream `max_msgs`), the oldest are dropped first. Default 100 000; 0 = no limit. */
  size?: number | undefined;
  /** Drop updates older than this many ms (stream `max_age`). Default 7 days; 0 = no limit. */
  maxAge?: number | undefined;
  /** Stream (and presence buckets) replicas in a clustered NATS. Default 1. */
  replicas?: number | undefined;
  /** Longest wait for a publish acknowledgement before answering unavailable (ms). Default 2000. */
  publishTimeout?: number | undefined;
  /** A node whose presence heartbeat is older than this (ms) is dead: its subscriptions are no longer listed. Default 15 000. */
  presenceTtl?: number | undefined;
  /**
   * A publish whose id JetStream stored this recently (ms) is a duplicate (the stream's
   * `duplicate_window`, at most `maxAge`). Default 2 minutes; 0 = off.
   */
  dedupeWindow?: number | undefined;
  /** Longest start() waits for NATS before resolving not ready and retrying in the background (ms). Default 5000. */
  startTimeout?: number | undefined;
  logger?: Logger | undefined;
}

const DAY = 86_400_000;

/**
 * Transport on NATS JetStream, for hubs spread over several processes or machines.
 *
 * - Every update is one message in a JetStream stream (limits retention: `max_msgs` = size,
 *   `max_age`, discard old, file storage), on the subject `<subject>.<digest of its id>`.
 *   `dispatch` resolves once JetStream acknowledged the message (stored).
 * - `seq` is the stream sequence. Each node fans out with its own ordered, ephemeral push
 *   consumer started at the stream's last sequence + 1; it survives reconnections and server
 *   restarts by recreating itself after the last sequence delivered.
 * - `history(after)` finds the earliest message carrying the id with one indexed lookup (the
 *   first message on the id's subject, `next_by_subj`), then reads on to the stream's last
 *   sequence at query time. No side index: it works from any node, after restarts, and
 *   forgets ids exactly when the stream trims their messages.
 * - Presence: two KV buckets, `<stream>_presence_nodes` (one heartbeat key per node, TTL
 *   `presenceTtl`) and `<stream>_presence_subs` (one key per subscription, prefixed by its
 *   node). Listings keep the records of nodes whose heartbeat is alive, so a dead node's
 *   subscriptions vanish after `presenceTtl` whatever their number (see presence.ts).
 */
export class NatsTransport implements Transport {
  readonly name = 'nats';
  private readonly servers: string[];
  private readonly stream: string;
  private readonly subject: string;
  private readonly size: number;
  private readonly maxAge: number;
  private readonly replicas: number;
  private readonly publishTimeout: number;
  readonly dedupeWindow: number;
  private readonly presenceTtl: number;
  private readonly startTimeout: number;
  private readonly connectOptions: ConnectionOptions;
  private readonly log: Logger;
  private readonly nodeId = randomBytes(8).toString('hex');

  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  private jsm: JetStreamManager | null = null;
  private connected = false;
  private ready = false;
  private reason: string | undefined = 'not started';
  private started = false;
  private closed = false;
  private deliver: ((u: StoredUpdate) => void) | null = null;
  private fan: OrderedPush | null = null;
  /** Connection the fan-out consumer was built on. */
  private fanConnection: NatsConnection | null = null;
  /** Stream sequence the fan-out starts from, known once the stream was first seen. */
  private nextSeq = 0;
  /** Creation time of the stream as first seen: a change means it was recreated (store lost). */
  private streamCreated: string | null = null;
  /** Added to stream sequences so that `seq` keeps increasing if the stream is ever recreated. */
  private seqBase = 0n;
  private count = 0;
  private setupRunning = false;
  private setupAgain = false;
  private readonly inflight = new Set<(err: Error) => void>();
  private readonly timers: NodeJS.Timeout[] = [];
  private startWaiter: { resolve: () => void; reject: (err: Error) => void } | null = null;

  private readonly presence: NatsPresence;
  /** Webhook registrations, cursors and leases in the KV bucket `<stream>_webhooks` (webhook-state.ts). */
  readonly webhooks: NatsWebhookStore;

  constructor(options: NatsTransportOptions = {}) {
    const servers = options.servers ?? '127.0.0.1:4222';
    this.servers = typeof servers === 'string' ? [servers] : [...servers];
    this.stream = options.stream ?? 'MERCURE';
    this.subject = options.subject ?? 'mercure.updates';
    if (!/^[A-Za-z0-9_-]+$/.test(this.stream)) {
      throw new Error(`NATS transport: invalid stream name "${this.stream}" (letters, digits, "_" and "-" only)`);
    }
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(this.subject)) {
      throw new Error(`NATS transport: invalid subject "${this.subject}" (dot-separated tokens, no wildcards)`);
    }
    this.size = Math.max(0, Math.floor(options.size ?? 100_000));
    this.maxAge = Math.max(0, Math.floor(options.maxAge ?? 7 * DAY));
    this.replicas = Math.max(1, Math.floor(options.replicas ?? 1));
    this.publishTimeout = Math.max(1, options.publishTimeout ?? 2000);
    const window = Math.max(0, Math.floor(options.dedupeWindow ?? DEFAULT_DEDUPE_WINDOW));
    this.dedupeWindow = this.maxAge > 0 ? Math.min(window, this.maxAge) : window;
    this.presenceTtl = Math.max(300, options.presenceTtl ?? 15_000);
    this.startTimeout = options.startTimeout ?? 5000;
    this.log = options.logger ?? { error() {}, warn() {}, info() {}, debug() {} };
    this.connectOptions = {
      servers: this.servers,
      name: `quicksilver-${this.nodeId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      reconnectJitter: 100,
      timeout: 2000,
      pingInterval: 10_000,
      maxPingOut: 2,
      ...(options.token ? { token: options.token } : {}),
      ...(options.user ? { user: options.user, pass: options.pass ?? '' } : {}),
      ...(options.tls ? { tls: {} } : {}),
    };
    this.presence = new NatsPresence({
      nodeId: this.nodeId,
      stream: this.stream,
      replicas: this.replicas,
      publishTimeout: this.publishTimeout,
      presenceTtl: this.presenceTtl,
      log: this.log,
      js: () => this.connection().js,
      live: () => !this.closed && this.connected,
    });
    this.webhooks = new NatsWebhookStore({ stream: this.stream, replicas: this.replicas, timeout: this.publishTimeout, js: () => this.connection().js });
  }

  private get filter(): string {
    return `${this.subject}.>`;
  }

  private subjectOf(id: string): string {
    return `${this.subject}.${digest(id)}`;
  }

  private toSeq(streamSeq: number): bigint {
    return this.seqBase + BigInt(streamSeq);
  }

  private get where(): string {
    return this.servers.join(',');
  }

  // ---------------------------------------------------------------- connection & setup

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    if (this.started) throw new Error('NATS transport already started');
    this.started = true;
    this.deliver = deliver;
    this.reason = `connecting to NATS at ${this.where}`;
    const waiting = new Promise<void>((resolve, reject) => (this.startWaiter = { resolve, reject }));
    const watchdog = setInterval(() => this.watchdog(), 1000);
    const sizer = setInterval(() => void this.refreshSize(), 2000);
    watchdog.unref();
    sizer.unref();
    this.timers.push(watchdog, sizer);
    void this.connectLoop();
    const timer = setTimeout(() => this.settleStart(), this.startTimeout);
    try {
      await waiting;
    } finally {
      clearTimeout(timer);
    }
    if (!this.ready) {
      this.log.warn({ transport: 'nats', reason: this.reason }, 'NATS transport not ready yet: retrying in the background');
    }
  }

  private settleStart(err?: Error): void {
    const w = this.startWaiter;
    this.startWaiter = null;
    if (!w) return;
    if (err) w.reject(err);
    else w.resolve();
  }

  private async connectLoop(): Promise<void> {
    let delay = 250;
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        const nc = await connect(this.connectOptions);
        if (this.closed) {
          await nc.close().catch(() => {});
          return;
        }
        this.attach(nc);
        return;
      } catch (err) {
        this.reason = `cannot connect to NATS at ${this.where}: ${errorMessage(err)} (retrying)`;
        // Warn on the first failure and then about once a minute, not on every retry.
        const level = attempt % 12 === 0 ? 'warn' : 'debug';
        this.log[level]({ transport: 'nats', servers: this.where, err: errorMessage(err) }, 'cannot connect to NATS');
        this.settleStart();
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
  }

  private attach(nc: NatsConnection): void {
    this.nc = nc;
    this.js = nc.jetstream({ timeout: this.publishTimeout });
    this.jsm = null;
    this.presence.unbind();
    this.webhooks.unbind();
    this.connected = true;
    this.reason = 'setting up the JetStream stream';
    this.log.info({ transport: 'nats', server: nc.getServer() }, 'connected to NATS');
    void (async () => {
      for await (const s of nc.status()) {
        if (this.nc !== nc) break;
        if (s.type === Events.Disconnect) {
          this.connected = false;
          this.ready = false;
          this.reason = `lost the connection to NATS at ${String(s.data)} (reconnecting)`;
          this.log.warn({ transport: 'nats', server: s.data }, 'disconnected from NATS');
          this.failInflight('the connection to NATS was lost before the update was acknowledged (it may or may not be stored)');
        } else if (s.type === Events.Reconnect) {
          this.connected = true;
          this.reason = 'reconnected to NATS, restoring the stream consumer';
          this.log.info({ transport: 'nats', server: s.data }, 'reconnected to NATS');
          this.requestSetup(nc);
        } else if (s.type === Events.LDM) {
          this.log.warn({ transport: 'nats', server: s.data }, 'NATS server entering lame duck mode');
        } else if (s.type === Events.Error) {
          this.log.warn({ transport: 'nats', err: String(s.data) }, 'NATS async error');
        }
      }
    })().catch(() => {});
    void nc.closed().then((err) => {
      if (this.nc !== nc || this.closed) return;
      this.nc = null;
      this.js = null;
      this.jsm = null;
      this.presence.unbind();
      this.connected = false;
      this.ready = false;
      this.reason = `NATS connection closed${err ? `: ${errorMessage(err)}` : ''} (reconnecting)`;
      this.log.error({ transport: 'nats', err: err ? errorMessage(err) : undefined }, 'NATS connection closed');
      this.failInflight('the NATS connection closed before the update was acknowledged');
      if (this.fan) this.nextSeq = this.fan.next;
      void this.fan?.stop();
      this.fan = null;
      void sleep(1000).then(() => this.connectLoop());
    });
    this.requestSetup(nc);
  }

  /** Runs setup() until it succeeds for this connection (once more if asked again meanwhile). */
  private requestSetup(nc: NatsConnection): void {
    if (this.setupRunning) {
      this.setupAgain = true;
      return;
    }
    this.setupRunning = true;
    void (async () => {
      let delay = 250;
      while (!this.closed && this.nc === nc && this.connected) {
        this.setupAgain = false;
        try {
          await this.setup(nc);
          if (!this.setupAgain) break;
        } catch (err) {
          const code = apiErrorCode(err);
          const definitive = code !== undefined && (err as NatsError).api_error?.code === 400;
          this.reason = `cannot set up the JetStream stream "${this.stream}": ${errorMessage(err)}`;
          this.log.error({ transport: 'nats', err: errorMessage(err), code }, 'NATS stream setup failed');
          if (definitive && this.startWaiter) {
            this.settleStart(new Error(`NATS transport: ${this.reason}`));
          }
          await sleep(delay);
          delay = Math.min(delay * 2, 5000);
        }
      }
      this.setupRunning = false;
    })();
  }

  private async setup(nc: NatsConnection): Promise<void> {
    this.jsm ??= await nc.jetstreamManager({ timeout: this.publishTimeout, checkAPI: false });
    const jsm = this.jsm;
    const info = await ensureStream(
      jsm,
      { stream: this.stream, filter: this.filter, size: this.size, maxAge: this.maxAge, replicas: this.replicas, dedupeWindow: this.dedupeWindow },
      this.log,
    );
    if (this.nc !== nc) return;
    this.count = info.state.messages;
    if (this.streamCreated === null) {
      this.streamCreated = info.created;
      this.nextSeq = info.state.last_seq + 1;
    } else if (info.created !== this.streamCreated) {
      // The server lost its store (or the stream was deleted): deliver what the new stream
      // holds, and keep seq increasing for the hub.
      const resumeFrom = this.fan?.next ?? this.nextSeq;
      this.log.error(
        { transport: 'nats', stream: this.stream, lastDelivered: resumeFrom - 1 },
        'the JetStream stream was recreated: updates stored before are lost',
      );
      this.seqBase += BigInt(Math.max(0, resumeFrom - 1));
      this.streamCreated = info.created;
      this.nextSeq = Math.max(1, info.state.first_seq);
      void this.fan?.stop();
      this.fan = null;
    }
    if (this.deliver) {
      if (this.fan && this.fanConnection !== nc) {
        this.nextSeq = this.fan.next;
        void this.fan.stop();
        this.fan = null;
      }
      if (!this.fan) {
        this.fan = new OrderedPush(nc, jsm, this.stream, this.filter, this.nextSeq, {
          message: (sseq, msg) => this.onLive(sseq, msg),
          failed: (err) => {
            this.log.warn({ transport: 'nats', err: errorMessage(err) }, 'cannot create the fan-out consumer (retrying)');
            if (isStreamNotFound(err) && this.nc === nc && this.connected) this.requestSetup(nc);
          },
        });
        this.fanConnection = nc;
      }
      await this.fan.reset();
    }
    if (this.nc !== nc || !this.connected) return;
    this.ready = true;
    this.reason = undefined;
    this.settleStart();
    if (this.presence.wanted) void this.presence.refresh(true);
  }

  private watchdog(): void {
    if (this.closed || !this.connected || !this.ready || !this.fan) return;
    if (Date.now() - this.fan.lastActivity > HEARTBEAT * 3.5 && this.nc) {
      // Through setup(): the stream may have been deleted or recreated meanwhile.
      this.log.debug({ transport: 'nats' }, 'fan-out consumer silent: recreating it');
      this.fan.lastActivity = Date.now();
      this.requestSetup(this.nc);
    }
  }

  private async refreshSize(): Promise<void> {
    if (!this.jsm || !this.connected) return;
    try {
      const info = await this.jsm.streams.info(this.stream);
      this.count = info.state.messages;
    } catch {
      // keep the last known value
    }
  }

  private failInflight(message: string): void {
    for (const reject of [...this.inflight]) reject(new TransportUnavailableError(message));
    this.inflight.clear();
  }

  /**
   * A publish went unanswered: the link is presumably dead (silently: NATS's own pings take
   * 20 s to notice). Not ready, every publish in flight fails now and new ones are refused until
   * the reconnection and stream setup (the probe) succeed. The socket is reset, not closed: a
   * graceful close would still deliver what the kernel holds for it once the link heals, and a
   * publish already answered 503 would be stored after newer ones.
   */
  private suspect(nc: NatsConnection, why: string): void {
    if (this.nc !== nc || !this.connected) return;
    this.connected = false;
    this.ready = false;
    this.reason = `${why}: connection suspect, reconnecting`;
    this.log.warn({ transport: 'nats', server: nc.getServer() }, `${why}: resetting the connection`);
    this.failInflight(`${why} (connection reset; the update may or may not be stored)`);
    const socket = (nc as unknown as { protocol?: { transport?: { socket?: { resetAndDestroy?: () => void; destroy(): void } } } })
      .protocol?.transport?.socket;
    try {
      if (socket?.resetAndDestroy) socket.resetAndDestroy();
      else void nc.reconnect();
    } catch {
      // A TLS socket has no TCP handle of its own to reset: close it (best effort).
      socket?.destroy();
    }
  }

  private onLive(sseq: number, msg: Msg): void {
    let u: StoredUpdate;
    try {
      u = decodeUpdate(msg.data, this.toSeq(sseq));
    } catch (err) {
      this.log.warn({ transport: 'nats', seq: sseq, subject: msg.subject, err: errorMessage(err) }, 'skipping a message that is not an update');
      return;
    }
    if (this.size === 0 || this.count < this.size) this.count++;
    try {
      this.deliver?.(u);
    } catch (err) {
      this.log.error({ transport: 'nats', err }, 'update delivery failed');
    }
  }

  private unavailable(stored?: StoredOutcome): TransportUnavailableError {
    if (this.closed) return new TransportUnavailableError('the NATS transport is closed', { stored });
    if (!this.started) return new TransportUnavailableError('the NATS transport is not started', { stored });
    return new TransportUnavailableError(this.reason ?? `not connected to NATS at ${this.where}`, { stored });
  }

  private connection(): { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager } {
    if (this.closed || !this.nc || !this.js || !this.jsm || !this.connected) throw this.unavailable();
    return { nc: this.nc, js: this.js, jsm: this.jsm };
  }

  // ---------------------------------------------------------------- Transport

  async dispatch(update: Update): Promise<DispatchResult> {
    if (this.closed || !this.nc || !this.js || !this.connected) throw this.unavailable('no');
    const nc = this.nc;
    const payload = encodeUpdate(update);
    const max = nc.info?.max_payload ?? 1024 * 1024;
    if (payload.length > max) {
      throw new Error(`update of ${payload.length} bytes exceeds the NATS max_payload (${max} bytes)`);
    }
    let lost!: (err: Error) => void;
    const dropped = new Promise<never>((_, reject) => (lost = reject));
    this.inflight.add(lost);
    let ack: PubAck;
    try {
      ack = await Promise.race([
        // The id as Nats-Msg-Id: JetStream stores it once within the duplicate window.
        this.js.publish(this.subjectOf(update.id), payload, {
          timeout: this.publishTimeout,
          ...(this.dedupeWindow > 0 ? { msgID: update.id } : {}),
        }),
        dropped,
      ]);
    } catch (err) {
      if (err instanceof TransportUnavailableError) throw err;
      const code = (err as NatsError | undefined)?.code;
      // No stream answers: it may have been deleted or lost; set it up again.
      if (code === '503' && this.nc === nc && this.connected) this.requestSetup(nc);
      if (code === 'TIMEOUT') this.suspect(nc, `NATS did not acknowledge an update within ${this.publishTimeout} ms`);
      // Only a timeout or a lost connection leaves the outcome open; an answer (no responders,
      // an API error) means JetStream did not store it.
      const stored: StoredOutcome = code === 'TIMEOUT' || code === 'DISCONNECT' || code === 'CONNECTION_CLOSED' ? 'unknown' : 'no';
      throw new TransportUnavailableError(this.describePublishError(err), { stored });
    } finally {
      this.inflight.delete(lost);
    }
    if (ack.stream !== this.stream) {
      throw new Error(`the update was stored in stream "${ack.stream}" instead of "${this.stream}": another stream captures ${this.filter}`);
    }
    return ack.duplicate ? 'duplicate' : undefined;
  }

  private describePublishError(err: unknown): string {
    const code = (err as NatsError | undefined)?.code;
    if (code === 'TIMEOUT') return `NATS did not acknowledge the update within ${this.publishTimeout} ms`;
    if (code === '503') return `no JetStream stream answers on ${this.filter} (no responders): stream "${this.stream}" unavailable`;
    if (code === 'CONNECTION_CLOSED' || code === 'CONNECTION_DRAINING' || code === 'DISCONNECT') {
      return `the connection to NATS at ${this.where} is down`;
    }
    return `NATS did not store the update: ${errorMessage(err)}`;
  }

  async history(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    const { jsm } = this.connection();
    let state: StreamInfo['state'];
    try {
      state = (await jsm.streams.info(this.stream)).state;
    } catch (err) {
      throw new TransportUnavailableError(`cannot read the history from NATS: ${errorMessage(err)}`);
    }
    this.count = state.messages;
    if (state.messages === 0) return { found: after === 'earliest' };
    let start = state.first_seq;
    if (after !== 'earliest') {
      const seq = await findSeq(jsm, this.stream, this.subjectOf(after), after, state.first_seq);
      if (seq === null) return { found: false };
      start = seq + 1;
    }
    if (start <= state.last_seq) await this.replay(start, state.last_seq, onUpdate);
    return { found: true };
  }

  /** Hands over the stored messages from `start` to `stop` (stream sequences), in order. */
  private async replay(start: number, stop: number, onUpdate: (u: StoredUpdate) => void): Promise<void> {
    const { nc, jsm } = this.connection();
    return replayRange(
      { nc, jsm, stream: this.stream, filter: this.filter, toSeq: (s) => this.toSeq(s), linked: () => this.connected && this.nc === nc },
      start,
      stop,
      onUpdate,
    );
  }

  async lastEventId(): Promise<string> {
    const { jsm } = this.connection();
    return readLastEventId(jsm, this.stream);
  }

  historySize(): number {
    return this.count;
  }

  health(): TransportHealth {
    if (this.closed) return { ready: false, reason: 'transport closed' };
    if (this.ready && this.connected) return { ready: true };
    return { ready: false, reason: this.reason ?? `not connected to NATS at ${this.where}` };
  }

  // ---------------------------------------------------------------- presence

  // The Transport interface's presence calls, kept by the presence class.
  readonly addSubscriptions = (records: readonly SubscriptionRecord[]): Promise<void> => this.presence.add(records);
  readonly removeSubscriptions = (records: readonly SubscriptionRecord[]): Promise<void> => this.presence.remove(records);
  readonly listSubscriptions = (): Promise<SubscriptionRecord[]> => this.presence.list();

  // ---------------------------------------------------------------- close

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.reason = 'transport closed';
    this.deliver = null;
    for (const t of this.timers) clearInterval(t);
    this.presence.stop();
    this.failInflight('the NATS transport closed before the update was acknowledged');
    this.settleStart();
    const nc = this.nc;
    const fan = this.fan;
    this.fan = null;
    if (!nc || nc.isClosed()) return;
    const cleanup: Promise<unknown>[] = [];
    if (fan) cleanup.push(fan.stop());
    if (this.connected) {
      const withdrawn = this.presence.withdraw();
      if (withdrawn) cleanup.push(withdrawn);
    }
    if (this.connected) await withTimeout(1000, Promise.all(cleanup));
    await withTimeout(2000, nc.close().catch(() => {}));
  }
}
