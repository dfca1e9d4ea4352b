/*
 * The connection pool every read and write goes through, with the transport's view of its health:
 * the last "unavailable" reason (cleared by the next success), the mapping of driver errors to 503s,
 * and transactions that survive a pooled connection which died while idle.
 *
 * A transaction that times out makes the database suspect: on a silently dropped link every
 * query behind it would wait its own timeout. Its socket is reset (RST, not a graceful close,
 * which would still deliver the kernel's unsent bytes, a COMMIT among them, once the link heals),
 * writes are refused at once, and a probe on a fresh connection runs every 250 ms until one
 * answers.
 */
import { Client, Pool, type PoolClient, type PoolConfig } from 'pg';
import type { Socket } from 'node:net';
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError, type StoredOutcome } from '../../core/transport.js';
import { errorText, isUnavailableError } from './errors.js';

/** How often a suspect database is probed. */
const PROBE_INTERVAL = 250;

/** How far a transaction got: a failure after the COMMIT was sent leaves the outcome unknown. */
export interface TransactionProgress {
  commitSent: boolean;
}

/** The driver gave up waiting for an answer (query_timeout): the connection may be dead. */
export function isTimeout(err: unknown): boolean {
  return err instanceof Error && /query read timeout/i.test(err.message);
}

/** Resets a client's socket: nothing it still holds reaches the server. */
export function resetConnection(client: Client | PoolClient): void {
  const socket = (client as unknown as { connection?: { stream?: Socket } }).connection?.stream;
  try {
    socket?.resetAndDestroy();
  } catch {
    // TLS: no TCP handle of its own to reset; destroying it is the best left.
    socket?.destroy();
  }
}

export class PostgresPool {
  readonly pool: Pool;
  /** Why the database is unavailable, from the last failure; null once a query succeeded again. */
  error: string | null = null;
  /** Set when a write timed out: writes are refused until a probe answers. */
  suspect = false;
  private probeTimer: NodeJS.Timeout | null = null;
  private probing = false;

  constructor(
    private readonly config: PoolConfig,
    /** `host:port/database`, for messages. */
    readonly where: string,
    private readonly log: Logger,
    private readonly isClosed: () => boolean,
  ) {
    this.pool = new Pool(config);
    // An idle pooled connection that dies (server restart, terminated backend) is discarded by
    // the pool; without this handler the 'error' event would crash the process.
    this.pool.on('error', (err) => this.log.debug({ err, transport: 'postgres' }, 'idle PostgreSQL connection lost'));
  }

  /** Maps a driver error to TransportUnavailableError when the server is the problem. */
  unavailable(err: unknown, what: string, stored?: StoredOutcome): unknown {
    if (err instanceof TransportUnavailableError) return err;
    if (!isUnavailableError(err)) return err;
    if (this.isClosed()) return new TransportUnavailableError('PostgreSQL transport closed', { cause: err, stored });
    const reason = errorText(err);
    if (!this.suspect) this.error = reason;
    return new TransportUnavailableError(`PostgreSQL unavailable at ${this.where} (${what}): ${reason}`, { cause: err, stored });
  }

  /** Records a successful round trip: the database is reachable (again). */
  ok(): void {
    // A suspect database is cleared by its probe only: a query that raced the timeout proves little.
    if (this.error && !this.suspect) {
      this.error = null;
      this.log.info({ transport: 'postgres' }, 'PostgreSQL reachable again');
    }
  }

  /** Marks the database suspect and probes it until it answers (see the file comment). */
  distrust(reason: string): void {
    this.error = `not responding (${reason})`;
    if (this.suspect || this.isClosed()) return;
    this.suspect = true;
    this.log.warn({ transport: 'postgres', reason }, 'PostgreSQL not responding: refusing writes until it answers');
    this.probeTimer = setInterval(() => void this.probe(), PROBE_INTERVAL);
    this.probeTimer.unref();
  }

  private async probe(): Promise<void> {
    const config = this.config;
    if (this.probing) return;
    if (this.isClosed()) return this.stopProbing();
    this.probing = true;
    // A fresh connection: pooled ones may all be stuck on the dead link.
    const client = new Client({ ...config, query_timeout: Math.min(1000, config.query_timeout ?? 1000) });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      this.stopProbing();
      this.suspect = false;
      this.ok();
    } catch (err) {
      this.log.debug({ err, transport: 'postgres' }, 'PostgreSQL probe failed');
      resetConnection(client);
    } finally {
      this.probing = false;
      void client.end().catch(() => {});
    }
  }

  stopProbing(): void {
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = null;
  }

  /**
   * Runs `fn` in a transaction opened by `prelude`. A pooled connection may have died while idle
   * (server restart, terminated backend) before the pool noticed: when opening the transaction
   * fails that way, nothing was written yet, so it is retried once on a fresh connection.
   */
  async transaction<T>(fn: (c: PoolClient) => Promise<T>, prelude = 'BEGIN', progress?: TransactionProgress): Promise<T> {
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
        await this.abort(client, err);
        release(client, err);
        // A timeout is no idle connection that died: the link itself is suspect, do not wait twice.
        if (attempt > 0 || this.isClosed() || !isUnavailableError(err) || isTimeout(err)) throw err;
      }
    }
    try {
      const result = await fn(client);
      if (progress) progress.commitSent = true;
      await client.query('COMMIT');
      release(client);
      return result;
    } catch (err) {
      await this.abort(client, err);
      release(client, err);
      throw err;
    }
  }

  /**
   * Ends a failed transaction: ROLLBACK when the server answers, a reset when it timed out (a
   * ROLLBACK would wait a whole timeout again on a dead link, and the reset rolls back anyway).
   */
  private async abort(client: PoolClient, err: unknown): Promise<void> {
    if (isTimeout(err)) resetConnection(client);
    else await client.query('ROLLBACK').catch(() => {});
  }

}

/** `host:port/database` of a connection string, for messages (never the password). */
export function describeTarget(connectionString: string | undefined): string {
  if (!connectionString) return `${process.env.PGHOST ?? 'localhost'}:${process.env.PGPORT ?? '5432'}`;
  try {
    const u = new URL(connectionString);
    return `${u.hostname || 'localhost'}:${u.port || '5432'}${u.pathname && u.pathname !== '/' ? u.pathname : ''}`;
  } catch {
    return 'PostgreSQL';
  }
}
