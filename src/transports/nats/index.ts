import { createHash, randomBytes } from 'node:crypto';
import { urlDuration } from '../../util/duration.js';
import {
  AckPolicy,
  connect,
  createInbox,
  DeliverPolicy,
  DiscardPolicy,
  Events,
  nanos,
  RetentionPolicy,
  StorageType,
  type ConnectionOptions,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type KvEntry,
  type Msg,
  type NatsConnection,
  type NatsError,
  type PubAck,
  type StreamConfig,
  type StreamInfo,
  type Subscription,
} from 'nats';
import type { Logger } from '../../observability/logger.js';
import {
  TransportUnavailableError,
  type SubscriptionRecord,
  type Transport,
  type TransportHealth,
} from '../../core/transport.js';
import type { StoredUpdate, Update } from '../../core/update.js';

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
  /** Longest start() waits for NATS before resolving not ready and retrying in the background (ms). Default 5000. */
  startTimeout?: number | undefined;
  logger?: Logger | undefined;
}

const DAY = 86_400_000;
/** Subscription records outlive their node by at most this long; live nodes re-put them every third of it. */
const RECORD_TTL = 3_600_000;
/** Idle heartbeat asked of the fan-out consumer; silence for 3.5× this recreates it. */
const HEARTBEAT = 1000;
/** Replays of at most this many sequences read the messages directly instead of creating a consumer. */
const DIRECT_REPLAY = 32;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The wire form of an update: compact JSON, absent fields omitted. */
interface Wire {
  t: string[];
  d?: string;
  p?: 1;
  i: string;
  y?: string;
  r?: number;
}

function encodeUpdate(u: Update): Uint8Array {
  const w: Wire = { t: [...u.topics], i: u.id };
  if (u.data !== '') w.d = u.data;
  if (u.private) w.p = 1;
  if (u.type) w.y = u.type;
  if (u.retry) w.r = u.retry;
  return enc.encode(JSON.stringify(w));
}

function decodeUpdate(data: Uint8Array, seq: bigint): StoredUpdate {
  const w = JSON.parse(dec.decode(data)) as Partial<Wire>;
  if (!Array.isArray(w.t) || typeof w.i !== 'string') throw new Error('not a Quicksilver update');
  return Object.freeze({
    topics: Object.freeze(w.t.map(String)),
    data: typeof w.d === 'string' ? w.d : '',
    private: w.p === 1,
    id: w.i,
    type: typeof w.y === 'string' && w.y !== '' ? w.y : undefined,
    retry: typeof w.r === 'number' && w.r > 0 ? w.r : undefined,
    seq,
  });
}

/** 128-bit, subject-safe digest (base64url). */
function digest(s: string): string {
  return createHash('sha256').update(s).digest('base64url').slice(0, 22);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function apiErrorCode(err: unknown): number | undefined {
  return (err as NatsError | undefined)?.api_error?.err_code;
}

function isNoMessage(err: unknown): boolean {
  return apiErrorCode(err) === 10037 || (err as NatsError | undefined)?.code === '404';
}

function isStreamNotFound(err: unknown): boolean {
  return apiErrorCode(err) === 10059 || errorMessage(err) === 'stream not found';
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

async function withTimeout<T>(ms: number, p: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Stream and delivery sequences of a message pushed by a consumer, from its ack subject:
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`, or the newer form with
 * domain and account hash after `ACK` and a random token at the end.
 */
function parseAck(reply: string | undefined): { sseq: number; dseq: number; pending: number } | null {
  if (!reply || !reply.startsWith('$JS.ACK.')) return null;
  const t = reply.split('.');
  const i = t.length === 9 ? 4 : t.length >= 12 ? 6 : -1;
  if (i < 0) return null;
  const sseq = Number(t[i + 1]);
  const dseq = Number(t[i + 2]);
  const pending = Number(t[i + 4]);
  if (!Number.isSafeInteger(sseq) || !Number.isSafeInteger(dseq)) return null;
  return { sseq, dseq, pending: Number.isFinite(pending) ? pending : 1 };
}

interface PushHandlers {
  /** A message at stream sequence `sseq`, delivered once and in order. */
  message(sseq: number, msg: Msg, pending: number): void;
  /** The server has nothing left to push right now (idle heartbeat with no gap and no stall). */
  idle?(): void;
  /** The consumer could not be created (the owner decides whether to retry). */
  failed(err: unknown): void;
}

/**
 * An ordered, ephemeral push consumer: delivers the stream's messages from `next` on, each once
 * and in sequence order. Any sign of a gap (a delivery sequence out of step, a heartbeat that
 * reports more deliveries than seen) or a `reset()` by the owner (reconnection, silence)
 * recreates the server-side consumer from the sequence after the last one handed over, so
 * nothing is lost or repeated. The consumer lives in memory on the server, acks nothing, and
 * is deleted when replaced or stopped.
 */
class OrderedPush {
  private serial = 0;
  private sub: Subscription | null = null;
  private consumer: string | null = null;
  private dseq = 0;
  private stopped = false;
  lastActivity = Date.now();

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    private readonly filter: string,
    /** Stream sequence of the next message to hand over. */
    public next: number,
    private readonly handlers: PushHandlers,
  ) {}

  async reset(): Promise<void> {
    if (this.stopped) return;
    const serial = ++this.serial;
    this.teardown();
    this.dseq = 0;
    this.lastActivity = Date.now();
    const inbox = createInbox();
    this.sub = this.nc.subscribe(inbox, { callback: (err, msg) => this.onMessage(serial, err, msg) });
    try {
      const ci = await this.jsm.consumers.add(this.stream, {
        deliver_subject: inbox,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: Math.max(1, this.next),
        ack_policy: AckPolicy.None,
        max_deliver: 1,
        flow_control: true,
        idle_heartbeat: nanos(HEARTBEAT),
        mem_storage: true,
        num_replicas: 1,
        filter_subject: this.filter,
      });
      if (serial !== this.serial) {
        this.jsm.consumers.delete(this.stream, ci.name).catch(() => {});
        return;
      }
      this.consumer = ci.name;
    } catch (err) {
      if (serial === this.serial && !this.stopped) this.handlers.failed(err);
    }
  }

  /** Stops delivering and deletes the server-side consumer. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.serial++;
    await this.teardown();
  }

  private teardown(): Promise<void> {
    const sub = this.sub;
    const name = this.consumer;
    this.sub = null;
    this.consumer = null;
    if (sub && !sub.isClosed()) sub.unsubscribe();
    if (name === null || this.nc.isClosed()) return Promise.resolve();
    return this.jsm.consumers.delete(this.stream, name).then(
      () => {},
      () => {},
    );
  }

  private onMessage(serial: number, err: Error | null, msg: Msg): void {
    if (serial !== this.serial || this.stopped) return;
    if (err) {
      void this.reset();
      return;
    }
    this.lastActivity = Date.now();
    const h = msg.headers;
    if (msg.data.length === 0 && h && h.code >= 100 && h.code < 200) {
      if (h.description === 'Idle Heartbeat') {
        const stalled = h.get('Nats-Consumer-Stalled');
        if (stalled) this.nc.publish(stalled);
        const last = Number(h.get('Nats-Last-Consumer') || '0');
        if (last > this.dseq) {
          void this.reset();
          return;
        }
        if (!stalled) this.handlers.idle?.();
      } else if (msg.reply) {
        msg.respond(); // flow control
      }
      return;
    }
    const a = parseAck(msg.reply);
    if (!a) return;
    if (a.dseq !== this.dseq + 1) {
      void this.reset();
      return;
    }
    this.dseq = a.dseq;
    if (a.sseq < this.next) return;
    this.next = a.sseq + 1;
    this.handlers.message(a.sseq, msg, a.pending);
  }
}

interface Presence {
  nodes: KV;
  subs: KV;
}

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
 *   subscriptions vanish after `presenceTtl` whatever their number.
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

  private presence: Promise<Presence> | null = null;
  private presenceTimer: NodeJS.Timeout | null = null;
  private presenceTick = 0;
  private readonly local = new Map<string, SubscriptionRecord>();

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
    this.presence = null;
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
      this.presence = null;
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
    const info = await this.ensureStream(jsm);
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
    if (this.presence || this.local.size > 0) void this.refreshPresence(true);
  }

  private streamConfig(): Partial<StreamConfig> {
    return {
      subjects: [this.filter],
      retention: RetentionPolicy.Limits,
      max_msgs: this.size > 0 ? this.size : -1,
      max_age: nanos(this.maxAge),
      discard: DiscardPolicy.Old,
      num_replicas: this.replicas,
      // Only retried publishes carrying a Nats-Msg-Id use it; it may not exceed max_age.
      duplicate_window: nanos(this.maxAge > 0 ? Math.min(this.maxAge, 120_000) : 120_000),
    };
  }

  private async ensureStream(jsm: JetStreamManager): Promise<StreamInfo> {
    const want = this.streamConfig();
    let info: StreamInfo;
    try {
      info = await jsm.streams.info(this.stream);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      info = await jsm.streams.add({ ...want, name: this.stream, storage: StorageType.File });
      this.log.info({ transport: 'nats', stream: this.stream, subjects: want.subjects }, 'created the JetStream stream');
      return info;
    }
    const c = info.config;
    const drift =
      c.subjects?.length !== 1 ||
      c.subjects[0] !== this.filter ||
      c.max_msgs !== want.max_msgs ||
      c.max_age !== want.max_age ||
      c.discard !== DiscardPolicy.Old ||
      c.num_replicas !== this.replicas ||
      c.retention !== RetentionPolicy.Limits;
    if (drift) {
      info = await jsm.streams.update(this.stream, { ...c, ...want });
      this.log.info({ transport: 'nats', stream: this.stream }, 'updated the JetStream stream limits');
    }
    if (c.storage !== StorageType.File) {
      this.log.warn({ transport: 'nats', stream: this.stream }, 'the JetStream stream uses memory storage: history does not survive a NATS restart');
    }
    return info;
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

  private unavailable(): TransportUnavailableError {
    if (this.closed) return new TransportUnavailableError('the NATS transport is closed');
    if (!this.started) return new TransportUnavailableError('the NATS transport is not started');
    return new TransportUnavailableError(this.reason ?? `not connected to NATS at ${this.where}`);
  }

  private connection(): { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager } {
    if (this.closed || !this.nc || !this.js || !this.jsm || !this.connected) throw this.unavailable();
    return { nc: this.nc, js: this.js, jsm: this.jsm };
  }

  // ---------------------------------------------------------------- Transport

  async dispatch(update: Update): Promise<void> {
    if (this.closed || !this.nc || !this.js || !this.connected) throw this.unavailable();
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
        this.js.publish(this.subjectOf(update.id), payload, { timeout: this.publishTimeout }),
        dropped,
      ]);
    } catch (err) {
      if (err instanceof TransportUnavailableError) throw err;
      // No stream answers: it may have been deleted or lost; set it up again.
      if ((err as NatsError | undefined)?.code === '503' && this.nc === nc && this.connected) this.requestSetup(nc);
      throw new TransportUnavailableError(this.describePublishError(err));
    } finally {
      this.inflight.delete(lost);
    }
    if (ack.stream !== this.stream) {
      throw new Error(`the update was stored in stream "${ack.stream}" instead of "${this.stream}": another stream captures ${this.filter}`);
    }
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
      const seq = await this.findSeq(jsm, after, state.first_seq);
      if (seq === null) return { found: false };
      start = seq + 1;
    }
    if (start <= state.last_seq) await this.replay(start, state.last_seq, onUpdate);
    return { found: true };
  }

  /** Sequence of the earliest stored message carrying `id`, or null. */
  private async findSeq(jsm: JetStreamManager, id: string, from: number): Promise<number | null> {
    const subject = this.subjectOf(id);
    for (;;) {
      let m;
      try {
        m = await jsm.streams.getMessage(this.stream, { seq: from, next_by_subj: subject } as never);
      } catch (err) {
        if (isNoMessage(err)) return null;
        throw new TransportUnavailableError(`cannot look up an id in NATS: ${errorMessage(err)}`);
      }
      try {
        if (decodeUpdate(m.data, 0n).id === id) return m.seq;
      } catch {
        // not an update: keep looking
      }
      from = m.seq + 1; // digest collision (or foreign message)
    }
  }

  /** Hands over the stored messages from `start` to `stop` (stream sequences), in order. */
  private async replay(start: number, stop: number, onUpdate: (u: StoredUpdate) => void): Promise<void> {
    const { nc, jsm } = this.connection();
    const emit = (sseq: number, data: Uint8Array) => {
      let u: StoredUpdate;
      try {
        u = decodeUpdate(data, this.toSeq(sseq));
      } catch {
        return;
      }
      onUpdate(u);
    };
    if (stop - start < DIRECT_REPLAY) {
      const seqs = Array.from({ length: stop - start + 1 }, (_, i) => start + i);
      const msgs = await Promise.all(
        seqs.map((seq) =>
          jsm.streams.getMessage(this.stream, { seq }).catch((err: unknown) => {
            if (isNoMessage(err)) return null;
            throw new TransportUnavailableError(`cannot read the history from NATS: ${errorMessage(err)}`);
          }),
        ),
      );
      for (const m of msgs) if (m) emit(m.seq, m.data);
      return;
    }
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        void consumer.stop();
        if (err) reject(err);
        else resolve();
      };
      const consumer = new OrderedPush(nc, jsm, this.stream, this.filter, start, {
        message: (sseq, msg, pending) => {
          if (sseq > stop) return finish();
          try {
            emit(sseq, msg.data);
          } catch (err) {
            return finish(err instanceof Error ? err : new Error(String(err)));
          }
          if (sseq >= stop || pending === 0) finish();
        },
        idle: () => finish(),
        failed: (err) => finish(new TransportUnavailableError(`cannot read the history from NATS: ${errorMessage(err)}`)),
      });
      const timer = setInterval(() => {
        if (!this.connected || this.nc !== nc) finish(new TransportUnavailableError('the connection to NATS was lost during a history replay'));
        else if (Date.now() - consumer.lastActivity > HEARTBEAT * 5) {
          finish(new TransportUnavailableError('history replay from NATS stalled'));
        }
      }, 250);
      void consumer.reset();
    });
  }

  async lastEventId(): Promise<string> {
    const { jsm } = this.connection();
    for (let attempt = 0; ; attempt++) {
      try {
        const { state } = await jsm.streams.info(this.stream);
        if (state.messages === 0) return 'earliest';
        const m = await jsm.streams.getMessage(this.stream, { seq: state.last_seq });
        return decodeUpdate(m.data, 0n).id;
      } catch (err) {
        if (isNoMessage(err) && attempt < 3) continue; // trimmed meanwhile
        throw new TransportUnavailableError(`cannot read the last event id from NATS: ${errorMessage(err)}`);
      }
    }
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

  private get nodesBucket(): string {
    return `${this.stream}_presence_nodes`;
  }

  private get subsBucket(): string {
    return `${this.stream}_presence_subs`;
  }

  private recordKey(r: SubscriptionRecord): string {
    return `${this.nodeId}.${digest(r.subscriber)}.${digest(`${r.kind}\u0000${r.match}`)}`;
  }

  private openPresence(): Promise<Presence> {
    if (!this.presence) {
      const { js } = this.connection();
      const p = (async (): Promise<Presence> => {
        const common = { history: 1, replicas: this.replicas, timeout: this.publishTimeout };
        const nodes = await js.views.kv(this.nodesBucket, { ...common, ttl: this.presenceTtl });
        const subs = await js.views.kv(this.subsBucket, { ...common, ttl: RECORD_TTL });
        await nodes.put(this.nodeId, enc.encode(String(Date.now())));
        // (Re)opened after a failure or a new connection: the buckets may have lost our records.
        await Promise.all([...this.local].map(([key, r]) => subs.put(key, enc.encode(JSON.stringify(r)))));
        return { nodes, subs };
      })();
      this.presence = p;
      p.catch(() => {
        if (this.presence === p) this.presence = null;
      });
      if (!this.presenceTimer) {
        const every = Math.max(100, Math.floor(this.presenceTtl / 3));
        this.presenceTimer = setInterval(() => {
          // Re-put the records a few times per RECORD_TTL, the heartbeat every tick.
          const all = ++this.presenceTick % Math.max(1, Math.floor(RECORD_TTL / 3 / every)) === 0;
          void this.refreshPresence(all);
        }, every);
        this.presenceTimer.unref();
      }
    }
    return this.presence;
  }

  /** Heartbeat, and with `all` every local record again (after a reconnection or periodically). */
  private async refreshPresence(all: boolean): Promise<void> {
    if (this.closed || !this.connected) return;
    try {
      const { nodes, subs } = await this.openPresence();
      await nodes.put(this.nodeId, enc.encode(String(Date.now())));
      if (all) {
        await Promise.all([...this.local].map(([key, r]) => subs.put(key, enc.encode(JSON.stringify(r)))));
      }
    } catch (err) {
      // Rebind (and recreate missing buckets) next time.
      this.presence = null;
      this.log.warn({ transport: 'nats', err: errorMessage(err) }, 'cannot refresh presence in NATS');
    }
  }

  async addSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    // Kept even if NATS is down: the next (re)connection writes them.
    for (const r of records) this.local.set(this.recordKey(r), r);
    try {
      const { subs } = await this.openPresence();
      await Promise.all(records.map((r) => subs.put(this.recordKey(r), enc.encode(JSON.stringify(r)))));
    } catch (err) {
      throw err instanceof TransportUnavailableError
        ? err
        : new TransportUnavailableError(`cannot store subscriptions in NATS: ${errorMessage(err)}`);
    }
  }

  async removeSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    const keys = records.map((r) => this.recordKey(r));
    for (const k of keys) this.local.delete(k);
    try {
      const { subs } = await this.openPresence();
      await Promise.all(keys.map((k) => subs.delete(k)));
    } catch (err) {
      throw err instanceof TransportUnavailableError
        ? err
        : new TransportUnavailableError(`cannot remove subscriptions from NATS: ${errorMessage(err)}`);
    }
  }

  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    let presence: Presence;
    try {
      presence = await this.openPresence();
    } catch (err) {
      throw err instanceof TransportUnavailableError
        ? err
        : new TransportUnavailableError(`cannot read subscriptions from NATS: ${errorMessage(err)}`);
    }
    const alive = new Set<string>();
    for await (const k of await presence.nodes.keys()) alive.add(k);
    const out: SubscriptionRecord[] = [...this.local.values()];
    const snapshot = await withTimeout(this.publishTimeout * 2, this.snapshot(presence.subs));
    if (snapshot === undefined) throw new TransportUnavailableError('listing subscriptions from NATS timed out');
    for (const e of snapshot) {
      const node = e.key.slice(0, e.key.indexOf('.'));
      if (node === this.nodeId || !alive.has(node)) continue;
      try {
        out.push(JSON.parse(dec.decode(e.value)) as SubscriptionRecord);
      } catch {
        // not a record
      }
    }
    return out;
  }

  /** Current value of every key in a bucket. */
  private async snapshot(kv: KV): Promise<KvEntry[]> {
    const out: KvEntry[] = [];
    let initialized = false;
    let iter: Awaited<ReturnType<KV['watch']>> | undefined;
    // Deletes are filtered here: with `ignoreDeletes` the watcher never reports initialization
    // when the last entry is a delete marker.
    iter = await kv.watch({
      initializedFn: () => {
        initialized = true;
        iter?.stop();
      },
    });
    if (initialized) iter.stop();
    for await (const e of iter) {
      if (e.operation === 'PUT') out.push(e);
    }
    return out;
  }

  // ---------------------------------------------------------------- close

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.reason = 'transport closed';
    this.deliver = null;
    for (const t of this.timers) clearInterval(t);
    if (this.presenceTimer) clearInterval(this.presenceTimer);
    this.failInflight('the NATS transport closed before the update was acknowledged');
    this.settleStart();
    const nc = this.nc;
    const fan = this.fan;
    this.fan = null;
    if (!nc || nc.isClosed()) return;
    const cleanup: Promise<unknown>[] = [];
    if (fan) cleanup.push(fan.stop());
    if (this.presence && this.connected) {
      const keys = [...this.local.keys()];
      cleanup.push(
        this.presence
          .then(({ nodes, subs }) => Promise.all([nodes.delete(this.nodeId), ...keys.map((k) => subs.delete(k))]))
          .catch(() => {}),
      );
    }
    if (this.connected) await withTimeout(1000, Promise.all(cleanup));
    await withTimeout(2000, nc.close().catch(() => {}));
  }
}


/**
 * `nats://[user:pass@|token@]host:4222?stream=MERCURE&subject=mercure.updates&size=100000&max_age=7d&replicas=1`
 * plus `servers=host2:4222,host3:4222` (more seed servers), `tls=1`, `publish_timeout=2s`
 * and `presence_ttl=15s`.
 */
export function natsTransportFromUrl(url: URL, logger: Logger): NatsTransport {
  const q = url.searchParams;
  const str = (name: string) => {
    const v = q.get(name);
    return v === null || v === '' ? undefined : v;
  };
  const int = (name: string) => {
    const v = str(name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`transport URL: "${name}" must be a non-negative integer, got "${v}"`);
    return n;
  };
  const duration = (name: string) => {
    const v = str(name);
    return v === undefined ? undefined : urlDuration(name, v);
  };
  const servers = [`${url.hostname || '127.0.0.1'}:${url.port || '4222'}`];
  for (const s of (str('servers') ?? '').split(',')) if (s.trim()) servers.push(s.trim());
  const user = url.username ? decodeURIComponent(url.username) : undefined;
  const pass = url.password ? decodeURIComponent(url.password) : undefined;
  const tls = str('tls');
  return new NatsTransport({
    servers,
    ...(user !== undefined && pass === undefined ? { token: user } : { user, pass }),
    tls: tls !== undefined && tls !== '0' && tls !== 'false',
    stream: str('stream'),
    subject: str('subject'),
    size: int('size'),
    maxAge: duration('max_age'),
    replicas: int('replicas'),
    publishTimeout: duration('publish_timeout'),
    presenceTtl: duration('presence_ttl'),
    logger,
  });
}
