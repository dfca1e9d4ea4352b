/*
 * PostgreSQL transport: history, fan-out and presence in a few tables of one database, shared by
 * every process that points at the same table name. This file is the entry: lifecycle, health and
 * the maintenance tick. Around it: publish.ts (group-committed writes), fanout.ts (LISTEN and
 * catch-up), history.ts (replay and retention), presence.ts (subscription records), schema.ts
 * (tables, locks, row format), pool.ts (the pool and its health), errors.ts and options.ts (the URL).
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
import { randomUUID } from 'node:crypto';
import type { ClientConfig } from 'pg';
import type { Logger } from '../../observability/logger.js';
import { DEFAULT_DEDUPE_WINDOW, TransportUnavailableError } from '../../core/transport.js';
import type { DispatchResult, SubscriptionRecord, Transport, TransportHealth } from '../../core/transport.js';
import type { StoredUpdate, Update } from '../../core/update.js';
import { PostgresFanout } from './fanout.js';
import { PostgresHistory } from './history.js';
import { postgresOptionsFromUrl, type PostgresTransportOptions } from './options.js';
import { describeTarget, PostgresPool } from './pool.js';
import { PostgresPresence } from './presence.js';
import { PostgresWriter } from './publish.js';
import { checkTable, ensureSchema, fnv1a, tableNames, type Tables } from './schema.js';
import { PostgresWebhookStore } from './webhook-state.js';

export { isUnavailableError } from './errors.js';
export { parseDuration, type PostgresTransportOptions } from './options.js';

const noopLogger: Logger = { error() {}, warn() {}, info() {}, debug() {} };

/**
 * Durable, clustered transport on PostgreSQL: every process pointing at the same table shares
 * one history and one order, and each receives every update exactly once.
 */
export class PostgresTransport implements Transport {
  readonly name = 'postgres';
  /** Identifies this process in the presence tables. */
  readonly nodeId: string = randomUUID();
  readonly dedupeWindow: number;

  private readonly log: Logger;
  private readonly clientConfig: ClientConfig;
  private readonly table: string;
  private readonly q: Tables;
  private readonly lockKey: number;
  private readonly cleanupInterval: number;
  private readonly heartbeatInterval: number;

  private readonly db: PostgresPool;
  private readonly writer: PostgresWriter;
  private readonly fanout: PostgresFanout;
  private readonly store: PostgresHistory;
  private readonly presence: PostgresPresence;
  /** Webhook registrations, cursors and leases, in tables next to the updates (webhook-state.ts). */
  readonly webhooks: PostgresWebhookStore;

  private started = false;
  private closed = false;

  // Maintenance.
  private tickTimer: NodeJS.Timeout | null = null;
  private ticking = false;

  constructor(options: PostgresTransportOptions = {}) {
    this.log = options.logger ?? noopLogger;
    this.table = checkTable(options.table ?? 'mercure_updates');
    const channel = this.table;
    this.q = tableNames(this.table);
    this.lockKey = fnv1a(this.table);
    const size = Math.max(0, Math.floor(options.size ?? 100_000));
    const maxAge = Math.max(0, options.maxAge ?? 0);
    this.cleanupInterval = Math.max(10, options.cleanupInterval ?? 1000);
    const retentionGrace = Math.max(0, options.retentionGrace ?? 5000);
    this.heartbeatInterval = Math.max(10, options.heartbeatInterval ?? 5000);
    const nodeTimeout = Math.max(this.heartbeatInterval * 2, options.nodeTimeout ?? 15_000);

    const connectTimeout = options.connectTimeout ?? 2000;
    // As Redis' command_timeout: the first publish after a silent cut waits this long for its 503.
    const queryTimeout = options.queryTimeout ?? 5000;
    this.clientConfig = {
      ...(options.connectionString ? { connectionString: options.connectionString } : {}),
      application_name: options.applicationName ?? 'quicksilver',
      connectionTimeoutMillis: connectTimeout,
      query_timeout: queryTimeout,
      // A hub cut off mid-transaction must not hold the cluster-wide write lock until the server
      // notices the dead socket: the server ends such a session itself, after twice the longest a
      // healthy hub waits for an answer.
      ...(options.connectionString?.includes('options=') ? {} : { options: `-c idle_in_transaction_session_timeout=${Math.max(1000, 2 * queryTimeout)}` }),
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    };
    const isClosed = (): boolean => this.closed;
    this.db = new PostgresPool(
      { ...this.clientConfig, max: Math.max(2, options.poolSize ?? 4), idleTimeoutMillis: 30_000 },
      describeTarget(options.connectionString),
      this.log,
      isClosed,
    );
    this.dedupeWindow = Math.max(0, options.dedupeWindow ?? DEFAULT_DEDUPE_WINDOW);
    this.writer = new PostgresWriter(this.db, this.q.updates, channel, this.lockKey, this.log, this.dedupeWindow);
    this.fanout = new PostgresFanout(this.clientConfig, channel, this.q.updates, this.log, isClosed);
    this.store = new PostgresHistory(this.db, this.q.updates, this.lockKey, { size, maxAge, retentionGrace });
    this.presence = new PostgresPresence(this.db, this.q, this.nodeId, nodeTimeout);
    this.webhooks = new PostgresWebhookStore(this.db.pool, this.table);
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    if (this.started) throw new Error('PostgreSQL transport already started');
    if (this.closed) throw new TransportUnavailableError('PostgreSQL transport closed');
    this.started = true;
    this.fanout.deliver = deliver;
    try {
      await ensureSchema(this.db, this.table, this.q, this.lockKey);
      await this.presence.heartbeat();
      await this.fanout.connect();
    } catch (err) {
      throw this.db.unavailable(err, 'cannot start');
    }
    await this.store.refreshCount().catch(() => {});
    this.tickTimer = setInterval(() => void this.tick(), this.cleanupInterval);
    this.tickTimer.unref();
    this.log.info({ transport: 'postgres', table: this.table, node: this.nodeId, target: this.db.where }, 'PostgreSQL transport started');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    this.tickTimer = null;
    this.db.stopProbing();
    this.fanout.stopReconnecting();
    // Accepted dispatches still get their answer.
    await this.writer.idle();
    await this.fanout.close();
    if (this.started && !this.db.error) await this.presence.leave();
    await this.db.pool.end().catch(() => {});
  }

  health(): TransportHealth {
    if (this.closed) return { ready: false, reason: 'transport closed' };
    if (this.db.error) return { ready: false, reason: `PostgreSQL unavailable at ${this.db.where}: ${this.db.error}` };
    if (this.started && !this.fanout.connected) {
      return {
        ready: false,
        reason: `PostgreSQL listener disconnected from ${this.db.where}${this.fanout.error ? `: ${this.fanout.error}` : ''}; reconnecting`,
      };
    }
    return { ready: true };
  }

  // ---------------------------------------------------------------------------------------------
  // Publishing, history (see publish.ts and history.ts)

  dispatch(update: Update): Promise<DispatchResult> {
    if (this.closed) return Promise.reject(new TransportUnavailableError('PostgreSQL transport closed', { stored: 'no' }));
    return this.writer.dispatch(update);
  }

  history(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    return this.store.replay(after, onUpdate);
  }

  lastEventId(): Promise<string> {
    return this.store.lastEventId();
  }

  historySize(): number {
    return this.store.cachedCount;
  }

  // ---------------------------------------------------------------------------------------------
  // Maintenance: retention, count, heartbeat, safety poll, recovery probe

  private async tick(): Promise<void> {
    // A suspect database is left to its probe: maintenance queries would hang on the dead link.
    if (this.ticking || this.closed || this.db.suspect) return;
    this.ticking = true;
    try {
      // Safety net: should a notification ever be missed, the update still arrives within a tick.
      if (this.fanout.connected) this.fanout.scheduleFetch();
      const now = Date.now();
      if (now - this.presence.lastHeartbeat >= this.heartbeatInterval || this.presence.dirty) await this.presence.heartbeat();
      const deleted = await this.store.trim(() => this.fanout.lastSeq);
      if (deleted > 0 || now - this.store.lastCount >= 5000) await this.store.refreshCount();
      this.db.ok();
    } catch (err) {
      const e = this.db.unavailable(err, 'maintenance');
      if (!(e instanceof TransportUnavailableError)) this.log.warn({ err, transport: 'postgres' }, 'PostgreSQL maintenance failed');
    } finally {
      this.ticking = false;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Presence (see presence.ts)

  // The Transport interface's presence calls, kept by the presence class.
  readonly addSubscriptions = (records: readonly SubscriptionRecord[]): Promise<void> => this.presence.addSubscriptions(records);
  readonly removeSubscriptions = (records: readonly SubscriptionRecord[]): Promise<void> => this.presence.removeSubscriptions(records);
  readonly listSubscriptions = (): Promise<SubscriptionRecord[]> => this.presence.listSubscriptions();
}

/**
 * Builds the transport from a `postgres://` or `postgresql://` URL; see postgresOptionsFromUrl for
 * the parameters.
 */
export function postgresTransportFromUrl(url: URL, logger: Logger): PostgresTransport {
  return new PostgresTransport(postgresOptionsFromUrl(url, logger));
}
