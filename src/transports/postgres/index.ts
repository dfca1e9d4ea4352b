import { randomUUID } from 'node:crypto';
import { parseDuration as parseDurationMs } from '../../util/duration.js';
import { Client, Pool, escapeIdentifier, escapeLiteral, type ClientConfig, type PoolClient } from 'pg';
import type { Logger } from '../../observability/logger.js';
import {
  TransportUnavailableError,
  type SubscriptionRecord,
  type Transport,
  type TransportHealth,
} from '../../core/transport.js';
import type { StoredUpdate, Update } from '../../core/update.js';

/*
 * PostgreSQL transport.
 *
 * Storage: one table (default `mercure_updates`) holding every update with a `bigserial` seq, the
 * hub-wide order. Publishing runs, in one transaction: a transaction-level advisory lock, the
 * INSERT and a `pg_notify(<table>, <max seq>)`. The lock serialises writers cluster-wide, so seq
 * order is commit order: whoever sees the row with seq N committed sees every row below N. Without
 * it, seq 11 could commit before seq 10 and a reader that moved its cursor to 11 would skip 10.
 * Concurrent dispatches of one process are grouped into one transaction (up to 500 rows), which
 * amortises the commit (fsync) and the lock across them.
 *
 * Fan-out: each process LISTENs on a dedicated connection. NOTIFY payloads carry only the highest
 * seq of the committed batch (payloads are capped at 8000 bytes and updates are not); a
 * notification, a reconnection or a 1 s safety poll makes the listener read `seq > last
 * delivered` in seq order and hand each row to `deliver`. The cursor lives in memory, so a
 * listener that lost its connection catches up from it on reconnection: no gap, no duplicate.
 *
 * Retention: a periodic sweep (one process at a time, via a try-lock) deletes, in bounded chunks,
 * rows more than `size` seqs behind the newest one and rows older than `maxAge`. It never deletes a
 * row this process has not delivered yet, nor one younger than a grace period (5 s) that lets
 * every other process fetch it: history is thus bounded approximately, as the contract allows.
 *
 * Presence: `<table>_nodes` (one row per process, heartbeat every 5 s) and `<table>_subscriptions`
 * (rows cascade-deleted with their node). Listing drops nodes silent for 15 s. A process keeps its
 * own subscriptions in memory and rewrites them when its rows were lost (outage, declared dead).
 */

export interface PostgresTransportOptions {
  /** `postgres://user:pass@host:5432/db?sslmode=…`, passed to node-postgres. Default: PG* env vars. */
  connectionString?: string | undefined;
  /** Table name (a plain SQL identifier, at most 48 characters). Default `mercure_updates`. */
  table?: string | undefined;
  /** Updates kept for replay (approximately, see above). Default 100 000. */
  size?: number | undefined;
  /** Drop updates older than this many ms. Default: no age limit. */
  maxAge?: number | undefined;
  /** `application_name` of the connections (shown in pg_stat_activity). Default `quicksilver`. */
  applicationName?: string | undefined;
  /** Connection timeout in ms: how fast publishing fails when the server is unreachable. Default 2000. */
  connectTimeout?: number | undefined;
  /** Client-side timeout of each query in ms. Default 15 000. */
  queryTimeout?: number | undefined;
  /** Connections of the pool used for writes and reads (the listener has its own). Default 4. */
  poolSize?: number | undefined;
  /** Period of the maintenance tick (retention, safety poll, recovery probe), ms. Default 1000. */
  cleanupInterval?: number | undefined;
  /** Retention never deletes rows younger than this (ms), so slow nodes can still fetch them. Default 5000. */
  retentionGrace?: number | undefined;
  /** Presence heartbeat period, ms. Default 5000. */
  heartbeatInterval?: number | undefined;
  /** A node silent for this long (ms) is considered dead and its subscriptions dropped. Default 15 000. */
  nodeTimeout?: number | undefined;
  logger?: Logger | undefined;
}

interface Pending {
  readonly update: Update;
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

interface UpdateRow {
  // int8 comes back as a string (node-postgres default), or whatever a global type parser makes of it.
  seq: string | number | bigint;
  id: string;
  topics: string[];
  data: Buffer;
  private: boolean;
  type: string | null;
  retry: string | number | bigint | null;
}

const LOCK_CLASS = 0x51534c56 & 0x7fffffff; // 'QSLV'
const LOCK_WRITE = LOCK_CLASS;
const LOCK_RETENTION = LOCK_CLASS + 1;
const LOCK_SCHEMA = LOCK_CLASS + 2;
const BATCH_ROWS = 500;
const BATCH_BYTES = 8 * 1024 * 1024;
const PAGE = 200;
const DELETE_CHUNK = 5000;

const noopLogger: Logger = { error() {}, warn() {}, info() {}, debug() {} };

const NET_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH',
  'ENETDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ENOENT', 'EACCES', 'ERR_SOCKET_CLOSED', 'ESHUTDOWN',
]);

/**
 * Whether an error means "the database cannot serve us right now" (as opposed to a bad query or
 * value): network errors, connection loss, server shutting down or out of resources, login
 * failures, read-only server (a standby after failover).
 */
export function isUnavailableError(err: unknown): boolean {
  if (err instanceof TransportUnavailableError) return true;
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (NET_CODES.has(code)) return true;
    if (/^(08|53|28)/.test(code) || ['57P01', '57P02', '57P03', '57P05', '3D000', '25006', '55000'].includes(code)) {
      return true;
    }
  }
  const message = (err as { message?: unknown }).message;
  return (
    typeof message === 'string' &&
    /connection terminated|timeout exceeded when trying to connect|connection timeout|not queryable|query read timeout|timeout expired|cannot use a pool after calling end|connect ECONNREFUSED|socket/i.test(
      message,
    )
  );
}

function errorText(err: unknown): string {
  if (typeof err !== 'object' || err === null) return String(err);
  const e = err as { message?: unknown; code?: unknown; errors?: unknown };
  let message = typeof e.message === 'string' ? e.message : '';
  if (!message && Array.isArray(e.errors) && e.errors.length > 0) message = errorText(e.errors[0]);
  if (!message && typeof e.code === 'string') message = e.code;
  return message || String(err);
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/** A table name usable for the updates table and its derived tables, indexes and channel. */
function checkTable(table: string): string {
  if (!IDENT.test(table)) {
    throw new Error(
      `PostgreSQL transport: invalid table name "${table}" (letters, digits and _, not starting with a digit, at most 48 characters)`,
    );
  }
  return table;
}

/** A duration: a bare number is in `bareUnit` ms; otherwise Go style (`7d`, `1h30m`, `500ms`). */
export function parseDuration(value: string, bareUnit = 1): number {
  const ms = parseDurationMs(value, bareUnit);
  if (ms === null) throw new Error(`invalid duration "${value}" (examples: 500ms, 30s, 15m, 2h, 7d)`);
  return ms;
}

function toStored(row: UpdateRow): StoredUpdate {
  const retry = row.retry === null ? undefined : Number(row.retry);
  return Object.freeze({
    topics: Object.freeze([...row.topics]),
    data: row.data.toString('utf8'),
    private: row.private,
    id: row.id,
    type: row.type ?? undefined,
    retry: retry || undefined,
    seq: BigInt(row.seq),
  });
}

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return h | 0;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * Durable, clustered transport on PostgreSQL: every process pointing at the same table shares
 * one history and one order, and each receives every update exactly once.
 */
export class PostgresTransport implements Transport {
  readonly name = 'postgres';
  /** Identifies this process in the presence tables. */
  readonly nodeId: string = randomUUID();

  private readonly log: Logger;
  private readonly pool: Pool;
  private readonly clientConfig: ClientConfig;
  private readonly where: string;
  private readonly table: string;
  private readonly channel: string;
  private readonly q: { updates: string; nodes: string; subs: string };
  private readonly lockKey: number;
  private readonly size: number;
  private readonly maxAge: number;
  private readonly cleanupInterval: number;
  private readonly retentionGrace: number;
  private readonly heartbeatInterval: number;
  private readonly nodeTimeout: number;

  private deliver: ((update: StoredUpdate) => void) | null = null;
  private started = false;
  private closed = false;

  // Fan-out: the seq of the last update handed to `deliver` (null until the listener first connected).
  private lastSeq: bigint | null = null;
  private listener: Client | null = null;
  private listenerError: string | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAttempts = 0;
  private fetching = false;
  private fetchAgain = false;

  // Writes: dispatches waiting for the next batch, and the batch loop while it runs.
  private readonly queue: Pending[] = [];
  private writer: Promise<void> | null = null;
  private poolError: string | null = null;

  // Maintenance.
  private tickTimer: NodeJS.Timeout | null = null;
  private ticking = false;
  private lastHeartbeat = 0;
  private lastCount = 0;
  private cachedCount = 0;

  // Presence: this node's subscriptions, by key; `presenceDirty` when the table may disagree.
  private readonly local = new Map<string, SubscriptionRecord>();
  private presenceDirty = false;

  constructor(options: PostgresTransportOptions = {}) {
    this.log = options.logger ?? noopLogger;
    this.table = checkTable(options.table ?? 'mercure_updates');
    this.channel = this.table;
    this.q = {
      updates: escapeIdentifier(this.table),
      nodes: escapeIdentifier(`${this.table}_nodes`),
      subs: escapeIdentifier(`${this.table}_subscriptions`),
    };
    this.lockKey = fnv1a(this.table);
    this.size = Math.max(0, Math.floor(options.size ?? 100_000));
    this.maxAge = Math.max(0, options.maxAge ?? 0);
    this.cleanupInterval = Math.max(10, options.cleanupInterval ?? 1000);
    this.retentionGrace = Math.max(0, options.retentionGrace ?? 5000);
    this.heartbeatInterval = Math.max(10, options.heartbeatInterval ?? 5000);
    this.nodeTimeout = Math.max(this.heartbeatInterval * 2, options.nodeTimeout ?? 15_000);

    const connectTimeout = options.connectTimeout ?? 2000;
    this.clientConfig = {
      ...(options.connectionString ? { connectionString: options.connectionString } : {}),
      application_name: options.applicationName ?? 'quicksilver',
      connectionTimeoutMillis: connectTimeout,
      query_timeout: options.queryTimeout ?? 15_000,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    };
    this.where = describeTarget(options.connectionString);
    this.pool = new Pool({ ...this.clientConfig, max: Math.max(2, options.poolSize ?? 4), idleTimeoutMillis: 30_000 });
    // An idle pooled connection that dies (server restart, terminated backend) is discarded by
    // the pool; without this handler the 'error' event would crash the process.
    this.pool.on('error', (err) => this.log.debug({ err, transport: 'postgres' }, 'idle PostgreSQL connection lost'));
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    if (this.started) throw new Error('PostgreSQL transport already started');
    if (this.closed) throw new TransportUnavailableError('PostgreSQL transport closed');
    this.started = true;
    this.deliver = deliver;
    try {
      await this.ensureSchema();
      await this.heartbeat();
      await this.connectListener();
    } catch (err) {
      throw this.unavailable(err, 'cannot start');
    }
    await this.refreshCount().catch(() => {});
    this.tickTimer = setInterval(() => void this.tick(), this.cleanupInterval);
    this.tickTimer.unref();
    this.log.info({ transport: 'postgres', table: this.table, node: this.nodeId, target: this.where }, 'PostgreSQL transport started');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.tickTimer = this.reconnectTimer = null;
    // Accepted dispatches still get their answer.
    if (this.writer) await this.writer.catch(() => {});
    this.deliver = null;
    const listener = this.listener;
    this.listener = null;
    if (listener) await listener.end().catch(() => {});
    if (this.started && !this.poolError) {
      // Leave the cluster cleanly: our subscriptions go with the node row.
      await Promise.race([
        this.pool.query(`DELETE FROM ${this.q.nodes} WHERE node_id = $1`, [this.nodeId]).catch(() => {}),
        sleep(1000),
      ]);
    }
    await this.pool.end().catch(() => {});
  }

  health(): TransportHealth {
    if (this.closed) return { ready: false, reason: 'transport closed' };
    if (this.poolError) return { ready: false, reason: `PostgreSQL unavailable at ${this.where}: ${this.poolError}` };
    if (this.started && !this.listener) {
      return {
        ready: false,
        reason: `PostgreSQL listener disconnected from ${this.where}${this.listenerError ? `: ${this.listenerError}` : ''}; reconnecting`,
      };
    }
    return { ready: true };
  }

  /** Maps a driver error to TransportUnavailableError when the server is the problem. */
  private unavailable(err: unknown, what: string): unknown {
    if (err instanceof TransportUnavailableError) return err;
    if (!isUnavailableError(err)) return err;
    if (this.closed) return new TransportUnavailableError('PostgreSQL transport closed', { cause: err });
    const reason = errorText(err);
    this.poolError = reason;
    return new TransportUnavailableError(`PostgreSQL unavailable at ${this.where} (${what}): ${reason}`, { cause: err });
  }

  private poolOk(): void {
    if (this.poolError) {
      this.poolError = null;
      this.log.info({ transport: 'postgres' }, 'PostgreSQL reachable again');
    }
  }

  /**
   * Runs `fn` in a transaction opened by `prelude`. A pooled connection may have died while idle
   * (server restart, terminated backend) before the pool noticed: when opening the transaction
   * fails that way, nothing was written yet, so it is retried once on a fresh connection.
   */
  private async transaction<T>(fn: (c: PoolClient) => Promise<T>, prelude = 'BEGIN'): Promise<T> {
    let client: PoolClient;
    // The pool stops listening to a client's 'error' events while it is checked out: a connection
    // lost between two queries would otherwise crash the process. The next query fails anyway.
    const onError = (err: Error) => this.log.debug({ err, transport: 'postgres' }, 'PostgreSQL connection lost');
    const release = (c: PoolClient, err?: unknown) => {
      c.removeListener('error', onError);
      // A broken or mid-transaction connection is not given back to the pool.
      c.release(err === undefined ? undefined : err instanceof Error ? err : true);
    };
    for (let attempt = 0; ; attempt++) {
      client = await this.pool.connect();
      client.on('error', onError);
      try {
        await client.query(prelude);
        break;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        release(client, err);
        if (attempt > 0 || this.closed || !isUnavailableError(err)) throw err;
      }
    }
    try {
      const result = await fn(client);
      await client.query('COMMIT');
      release(client);
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      release(client, err);
      throw err;
    }
  }

  private async ensureSchema(): Promise<void> {
    const { updates, nodes, subs } = this.q;
    const idx = escapeIdentifier(`${this.table}_id_seq_idx`);
    // Serialised: concurrent CREATE … IF NOT EXISTS can still collide in the catalogs.
    await this.transaction(async (c) => {
      await c.query(`
        CREATE TABLE IF NOT EXISTS ${updates} (
          seq bigserial PRIMARY KEY,
          id text NOT NULL,
          topics text[] NOT NULL,
          data bytea NOT NULL,
          private boolean NOT NULL DEFAULT false,
          type text,
          retry bigint,
          created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS ${idx} ON ${updates} (id, seq);
        CREATE TABLE IF NOT EXISTS ${nodes} (
          node_id text PRIMARY KEY,
          heartbeat_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS ${subs} (
          node_id text NOT NULL REFERENCES ${nodes} (node_id) ON DELETE CASCADE,
          subscriber text NOT NULL,
          kind text NOT NULL,
          match text NOT NULL,
          payload jsonb,
          PRIMARY KEY (node_id, subscriber, kind, match)
        );`);
    }, `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_SCHEMA}, ${this.lockKey})`);
    this.poolOk();
  }

  // ---------------------------------------------------------------------------------------------
  // Publishing

  dispatch(update: Update): Promise<void> {
    if (this.closed) return Promise.reject(new TransportUnavailableError('PostgreSQL transport closed'));
    return new Promise<void>((resolve, reject) => {
      let bytes = Buffer.byteLength(update.data) + update.id.length + 64;
      for (const t of update.topics) bytes += t.length;
      this.queue.push({ update, bytes, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.writer || this.queue.length === 0) return;
    this.writer = this.drain().finally(() => {
      this.writer = null;
      this.kick();
    });
  }

  /** Writes queued dispatches, as many per transaction as are waiting (group commit). */
  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      let n = 0;
      let bytes = 0;
      while (n < this.queue.length && n < BATCH_ROWS && (n === 0 || bytes + this.queue[n]!.bytes <= BATCH_BYTES)) {
        bytes += this.queue[n]!.bytes;
        n++;
      }
      const batch = this.queue.splice(0, n);
      try {
        await this.insert(batch.map((p) => p.update));
        this.poolOk();
        for (const p of batch) p.resolve();
      } catch (err) {
        const e = this.unavailable(err, 'cannot store the update');
        if (e instanceof TransportUnavailableError) this.log.warn({ err, transport: 'postgres' }, 'publish failed: PostgreSQL unavailable');
        for (const p of batch) p.reject(e);
      }
    }
  }

  private async insert(updates: readonly Update[]): Promise<void> {
    const values: unknown[] = [];
    const rows: string[] = [];
    for (const u of updates) {
      const i = values.length;
      rows.push(`($${i + 1}, $${i + 2}, $${i + 3}, $${i + 4}, $${i + 5}, $${i + 6})`);
      values.push(u.id, u.topics, Buffer.from(u.data, 'utf8'), u.private, u.type ?? null, u.retry || null);
    }
    const text =
      `WITH ins AS (INSERT INTO ${this.q.updates} (id, topics, data, private, type, retry) VALUES ${rows.join(', ')} RETURNING seq) ` +
      `SELECT pg_notify(${escapeLiteral(this.channel)}, max(seq)::text) FROM ins`;
    // The lock makes seq order = commit order cluster-wide (see the top of the file); the NOTIFY
    // goes out when the transaction commits.
    await this.transaction(
      async (c) => {
        await c.query({ text, values });
      },
      `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}, ${this.lockKey})`,
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Fan-out

  private async connectListener(): Promise<void> {
    const client = new Client(this.clientConfig);
    client.on('error', (err) => this.listenerLost(client, err));
    client.on('end', () => this.listenerLost(client, new Error('connection closed')));
    client.on('notification', (msg) => {
      if (client !== this.listener || msg.channel !== this.channel) return;
      let seq: bigint;
      try {
        seq = BigInt(msg.payload ?? '');
      } catch {
        seq = -1n;
      }
      if (this.lastSeq === null || seq < 0n || seq > this.lastSeq) this.scheduleFetch();
    });
    try {
      await client.connect();
      // LISTEN before reading the cursor: what commits after is notified, what committed before is read.
      await client.query(`LISTEN ${escapeIdentifier(this.channel)}`);
      const r = await client.query<{ seq: string }>(`SELECT coalesce(max(seq), 0)::text AS seq FROM ${this.q.updates}`);
      const max = BigInt(r.rows[0]!.seq);
      if (this.lastSeq === null) {
        this.lastSeq = max; // deliver what is dispatched from now on
      } else if (max < this.lastSeq) {
        // The database went back in time (restored backup, table recreated): without this, every
        // new update would sit below the cursor and never be delivered.
        this.log.warn({ transport: 'postgres', cursor: String(this.lastSeq), max: String(max) }, 'PostgreSQL sequence went backwards; resetting the delivery cursor');
        this.lastSeq = max;
      }
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    if (this.closed) {
      await client.end().catch(() => {});
      return;
    }
    const wasDown = this.listenerError !== null;
    this.listener = client;
    this.listenerError = null;
    this.reconnectAttempts = 0;
    if (wasDown) this.log.info({ transport: 'postgres', after: String(this.lastSeq) }, 'PostgreSQL listener reconnected, catching up');
    this.scheduleFetch(); // catch up on what committed while we were away
  }

  private listenerLost(client: Client, err: unknown): void {
    if (client !== this.listener) return;
    this.listener = null;
    this.listenerError = errorText(err);
    client.end().catch(() => {});
    if (this.closed) return;
    this.log.warn({ err, transport: 'postgres' }, 'PostgreSQL listener connection lost; reconnecting');
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const base = Math.min(5000, 100 * 2 ** this.reconnectAttempts);
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.reconnectAttempts++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.closed) return;
      this.connectListener().catch((err: unknown) => {
        this.listenerError = errorText(err);
        this.log.debug({ err, transport: 'postgres' }, 'PostgreSQL listener reconnection failed');
        this.scheduleReconnect();
      });
    }, delay);
    this.reconnectTimer.unref();
  }

  /** Runs `fetch` now, or once more after the running one: never two at a time. */
  private scheduleFetch(): void {
    this.fetchAgain = true;
    if (this.fetching) return;
    this.fetching = true;
    void (async () => {
      try {
        while (this.fetchAgain && !this.closed) {
          this.fetchAgain = false;
          await this.fetch();
        }
      } finally {
        this.fetching = false;
      }
    })();
  }

  /** Delivers every committed update after the cursor, in seq order, on the listener connection. */
  private async fetch(): Promise<void> {
    const client = this.listener;
    if (!client || this.lastSeq === null) return;
    const text = `SELECT seq, id, topics, data, private, type, retry FROM ${this.q.updates} WHERE seq > $1 ORDER BY seq LIMIT ${PAGE}`;
    try {
      for (;;) {
        const r = await client.query<UpdateRow>({ text, values: [this.lastSeq.toString()] });
        if (client !== this.listener) return; // lost meanwhile: the reconnection catches up
        for (const row of r.rows) {
          const u = toStored(row);
          if (u.seq <= this.lastSeq) continue;
          this.lastSeq = u.seq;
          try {
            this.deliver?.(u);
          } catch (err) {
            this.log.error({ err, transport: 'postgres' }, 'deliver callback threw');
          }
        }
        if (r.rows.length < PAGE) return;
      }
    } catch (err) {
      // Whatever went wrong, a fresh connection and a catch-up from the cursor sets it right.
      this.listenerLost(client, err);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // History

  async history(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    const { updates } = this.q;
    const age = (param: string) =>
      this.maxAge > 0 ? `AND created_at >= now() - ${param}::double precision * interval '1 millisecond'` : '';
    const ageArg = this.maxAge > 0 ? [this.maxAge] : [];
    try {
      let cursor = '0';
      if (after !== 'earliest') {
        const r = await this.pool.query<{ seq: string | null }>(
          `SELECT min(seq)::text AS seq FROM ${updates} WHERE id = $1 ${age('$2')}`,
          [after, ...ageArg],
        );
        const seq = r.rows[0]?.seq;
        if (seq === null || seq === undefined) {
          this.poolOk();
          return { found: false };
        }
        cursor = seq;
      }
      // Stop at what exists now, so a replay ends even under a steady stream of publishes.
      const top = await this.pool.query<{ seq: string | null }>(`SELECT max(seq)::text AS seq FROM ${updates}`);
      const upper = top.rows[0]?.seq ?? '0';
      let count = 0;
      const text = `SELECT seq, id, topics, data, private, type, retry FROM ${updates}
        WHERE seq > $1 AND seq <= $3 ${age('$4')} ORDER BY seq LIMIT $2`;
      for (;;) {
        const r = await this.pool.query<UpdateRow>(text, [cursor, PAGE, upper, ...ageArg]);
        for (const row of r.rows) {
          count++;
          onUpdate(toStored(row));
        }
        if (r.rows.length < PAGE) break;
        cursor = String(r.rows[r.rows.length - 1]!.seq);
      }
      this.poolOk();
      if (after === 'earliest') this.cachedCount = count;
      return { found: true };
    } catch (err) {
      throw this.unavailable(err, 'cannot read history');
    }
  }

  async lastEventId(): Promise<string> {
    try {
      const r = await this.pool.query<{ id: string }>(`SELECT id FROM ${this.q.updates} ORDER BY seq DESC LIMIT 1`);
      this.poolOk();
      return r.rows[0]?.id ?? 'earliest';
    } catch (err) {
      throw this.unavailable(err, 'cannot read the last event id');
    }
  }

  historySize(): number {
    return this.cachedCount;
  }

  // ---------------------------------------------------------------------------------------------
  // Maintenance: retention, count, heartbeat, safety poll, recovery probe

  private async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      // Safety net: should a notification ever be missed, the update still arrives within a tick.
      if (this.listener) this.scheduleFetch();
      const now = Date.now();
      if (now - this.lastHeartbeat >= this.heartbeatInterval || this.presenceDirty) await this.heartbeat();
      let deleted = 0;
      for (let i = 0; i < 10; i++) {
        const n = await this.retention();
        deleted += n;
        if (n < DELETE_CHUNK) break;
      }
      if (deleted > 0 || now - this.lastCount >= 5000) await this.refreshCount();
      this.poolOk();
    } catch (err) {
      const e = this.unavailable(err, 'maintenance');
      if (!(e instanceof TransportUnavailableError)) this.log.warn({ err, transport: 'postgres' }, 'PostgreSQL maintenance failed');
    } finally {
      this.ticking = false;
    }
  }

  /** Deletes one chunk of expired rows (by size and by age). Returns how many. */
  private async retention(): Promise<number> {
    if (this.lastSeq === null) return 0;
    const { updates } = this.q;
    const delivered = this.lastSeq.toString();
    return this.transaction(async (c) => {
      const lock = await c.query<{ ok: boolean }>(`SELECT pg_try_advisory_xact_lock(${LOCK_RETENTION}, ${this.lockKey}) AS ok`);
      if (!lock.rows[0]?.ok) return 0; // another node is on it
      const bySize = await c.query(
        `DELETE FROM ${updates} WHERE seq IN (
           SELECT seq FROM ${updates}
           WHERE seq <= least((SELECT max(seq) FROM ${updates}) - $1::bigint, $2::bigint)
             AND created_at < now() - $3::double precision * interval '1 millisecond'
           ORDER BY seq LIMIT ${DELETE_CHUNK})`,
        [this.size, delivered, this.retentionGrace],
      );
      let n = bySize.rowCount ?? 0;
      if (this.maxAge > 0 && n < DELETE_CHUNK) {
        // Rows come in (roughly) creation order: look only at the oldest ones, never scan the table.
        const byAge = await c.query(
          `DELETE FROM ${updates} WHERE seq IN (
             SELECT seq FROM (SELECT seq, created_at FROM ${updates} WHERE seq <= $1::bigint ORDER BY seq LIMIT ${DELETE_CHUNK}) o
             WHERE created_at < now() - $2::double precision * interval '1 millisecond')`,
          [delivered, Math.max(this.maxAge, this.retentionGrace)],
        );
        n += byAge.rowCount ?? 0;
      }
      return n;
    });
  }

  private async refreshCount(): Promise<void> {
    const r = await this.pool.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${this.q.updates}`);
    this.cachedCount = Number(r.rows[0]?.n ?? 0);
    this.lastCount = Date.now();
  }

  // ---------------------------------------------------------------------------------------------
  // Presence

  private static key(r: SubscriptionRecord): string {
    return JSON.stringify([r.subscriber, r.kind, r.match]);
  }

  /** Refreshes this node's heartbeat, drops dead nodes, rewrites our rows when they were lost. */
  private async heartbeat(): Promise<void> {
    await this.transaction(async (c) => {
      const inserted = await this.touchNode(c);
      if (inserted || this.presenceDirty) {
        await c.query(`DELETE FROM ${this.q.subs} WHERE node_id = $1`, [this.nodeId]);
        await this.insertSubscriptions(c, [...this.local.values()]);
      }
      await c.query(
        `DELETE FROM ${this.q.nodes} WHERE node_id <> $1 AND heartbeat_at < now() - $2::double precision * interval '1 millisecond'`,
        [this.nodeId, this.nodeTimeout],
      );
    });
    this.presenceDirty = false;
    this.lastHeartbeat = Date.now();
  }

  /** Upserts our node row; true when it had to be created (first time, or declared dead). */
  private async touchNode(c: PoolClient): Promise<boolean> {
    const r = await c.query<{ inserted: boolean }>(
      `INSERT INTO ${this.q.nodes} (node_id, heartbeat_at) VALUES ($1, now())
       ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now() RETURNING (xmax = 0) AS inserted`,
      [this.nodeId],
    );
    return r.rows[0]?.inserted ?? false;
  }

  private async insertSubscriptions(c: PoolClient, records: readonly SubscriptionRecord[]): Promise<void> {
    if (records.length === 0) return;
    await c.query(
      `INSERT INTO ${this.q.subs} (node_id, subscriber, kind, match, payload)
       SELECT $1, s, k, m, p::jsonb FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS x(s, k, m, p)
       ON CONFLICT (node_id, subscriber, kind, match) DO UPDATE SET payload = EXCLUDED.payload`,
      [
        this.nodeId,
        records.map((r) => r.subscriber),
        records.map((r) => r.kind),
        records.map((r) => r.match),
        records.map((r) => (r.payload === undefined ? null : JSON.stringify(r.payload))),
      ],
    );
  }

  async addSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    for (const r of records) this.local.set(PostgresTransport.key(r), r);
    if (records.length === 0) return;
    try {
      await this.transaction(async (c) => {
        const inserted = await this.touchNode(c);
        // Our node row was gone (declared dead during an outage): write back all we have.
        await this.insertSubscriptions(c, inserted || this.presenceDirty ? [...this.local.values()] : records);
      });
      this.presenceDirty = false;
      this.poolOk();
    } catch (err) {
      this.presenceDirty = true; // the next heartbeat rewrites our rows
      throw this.unavailable(err, 'cannot record subscriptions');
    }
  }

  async removeSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    for (const r of records) this.local.delete(PostgresTransport.key(r));
    if (records.length === 0) return;
    try {
      await this.pool.query(
        `DELETE FROM ${this.q.subs} WHERE node_id = $1 AND (subscriber, kind, match) IN
           (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))`,
        [this.nodeId, records.map((r) => r.subscriber), records.map((r) => r.kind), records.map((r) => r.match)],
      );
      this.poolOk();
    } catch (err) {
      this.presenceDirty = true;
      throw this.unavailable(err, 'cannot remove subscriptions');
    }
  }

  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    try {
      const r = await this.transaction(async (c) => {
        // Dead nodes go, and their subscriptions with them (ON DELETE CASCADE).
        await c.query(
          `DELETE FROM ${this.q.nodes} WHERE node_id <> $1 AND heartbeat_at < now() - $2::double precision * interval '1 millisecond'`,
          [this.nodeId, this.nodeTimeout],
        );
        return c.query<{ subscriber: string; kind: SubscriptionRecord['kind']; match: string; payload: unknown }>(
          `SELECT s.subscriber, s.kind, s.match, s.payload FROM ${this.q.subs} s
           JOIN ${this.q.nodes} n ON n.node_id = s.node_id
           WHERE n.node_id = $1 OR n.heartbeat_at >= now() - $2::double precision * interval '1 millisecond'
           ORDER BY s.subscriber, s.kind, s.match`,
          [this.nodeId, this.nodeTimeout],
        );
      });
      this.poolOk();
      return r.rows.map((row) =>
        row.payload === null || row.payload === undefined
          ? { subscriber: row.subscriber, kind: row.kind, match: row.match }
          : { subscriber: row.subscriber, kind: row.kind, match: row.match, payload: row.payload },
      );
    } catch (err) {
      throw this.unavailable(err, 'cannot list subscriptions');
    }
  }
}

/** `host:port/database` of a connection string, for messages (never the password). */
function describeTarget(connectionString: string | undefined): string {
  if (!connectionString) return `${process.env.PGHOST ?? 'localhost'}:${process.env.PGPORT ?? '5432'}`;
  try {
    const u = new URL(connectionString);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname && u.pathname !== '/' ? u.pathname : ''}`;
  } catch {
    return 'PostgreSQL';
  }
}

/** Query parameters consumed by Quicksilver; the others go to node-postgres (sslmode, options…). */
const OWN_PARAMS = ['table', 'size', 'max_age', 'cleanup_interval', 'pool_size', 'connect_timeout', 'query_timeout'];

/**
 * Builds the transport from `postgres://user:pass@host:5432/db?table=mercure_updates&size=100000&max_age=7d`
 * (or `postgresql://`). Options: `table`, `size` (updates kept), `max_age` (duration: `7d`, `12h`,
 * `30m`; bare number = ms), `cleanup_interval` (duration), `pool_size`, `connect_timeout` (duration;
 * bare number = seconds, as in libpq), `query_timeout` (duration); `application_name`, `sslmode` and
 * the other libpq parameters node-postgres understands are passed through.
 */
export function postgresTransportFromUrl(url: URL, logger: Logger): PostgresTransport {
  const scheme = url.protocol.replace(/:$/, '');
  if (scheme !== 'postgres' && scheme !== 'postgresql') {
    throw new Error(`PostgreSQL transport: unsupported scheme "${scheme}://" (use postgres:// or postgresql://)`);
  }
  const p = url.searchParams;
  const get = (name: string): string | undefined => {
    const v = p.get(name);
    return v === null || v === '' ? undefined : v;
  };
  const count = (name: string): number | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new Error(`transport URL: "${name}" must be a non-negative integer, got "${v}"`);
    return Number(v);
  };
  const duration = (name: string, bareUnit = 1): number | undefined => {
    const v = get(name);
    if (v === undefined) return undefined;
    try {
      return parseDuration(v, bareUnit);
    } catch (err) {
      throw new Error(`transport URL: "${name}": ${(err as Error).message}`);
    }
  };
  const options: PostgresTransportOptions = {
    table: get('table'),
    size: count('size'),
    maxAge: duration('max_age'),
    cleanupInterval: duration('cleanup_interval'),
    poolSize: count('pool_size'),
    connectTimeout: duration('connect_timeout', 1000),
    queryTimeout: duration('query_timeout'),
    applicationName: get('application_name'),
    logger,
  };
  const pass = new URL(url.href);
  for (const name of OWN_PARAMS) pass.searchParams.delete(name);
  options.connectionString = pass.href;
  return new PostgresTransport(options);
}
