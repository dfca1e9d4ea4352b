/*
 * The connection pool every read and write goes through, with the transport's view of its health:
 * the last "unavailable" reason (cleared by the next success), the mapping of driver errors to 503s,
 * and transactions that survive a pooled connection which died while idle.
 */
import { Pool, type PoolClient, type PoolConfig } from 'pg';
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError } from '../../core/transport.js';
import { errorText, isUnavailableError } from './errors.js';

export class PostgresPool {
  readonly pool: Pool;
  /** Why the database is unavailable, from the last failure; null once a query succeeded again. */
  error: string | null = null;

  constructor(
    config: PoolConfig,
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
  unavailable(err: unknown, what: string): unknown {
    if (err instanceof TransportUnavailableError) return err;
    if (!isUnavailableError(err)) return err;
    if (this.isClosed()) return new TransportUnavailableError('PostgreSQL transport closed', { cause: err });
    const reason = errorText(err);
    this.error = reason;
    return new TransportUnavailableError(`PostgreSQL unavailable at ${this.where} (${what}): ${reason}`, { cause: err });
  }

  /** Records a successful round trip: the database is reachable (again). */
  ok(): void {
    if (this.error) {
      this.error = null;
      this.log.info({ transport: 'postgres' }, 'PostgreSQL reachable again');
    }
  }

  /**
   * Runs `fn` in a transaction opened by `prelude`. A pooled connection may have died while idle
   * (server restart, terminated backend) before the pool noticed: when opening the transaction
   * fails that way, nothing was written yet, so it is retried once on a fresh connection.
   */
  async transaction<T>(fn: (c: PoolClient) => Promise<T>, prelude = 'BEGIN'): Promise<T> {
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
        if (attempt > 0 || this.isClosed() || !isUnavailableError(err)) throw err;
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
