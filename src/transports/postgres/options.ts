/*
 * Configuration of the PostgreSQL transport: its options and how a `postgres://` URL maps onto them.
 * Quicksilver's own parameters are taken out of the URL; the rest (sslmode, application_name…) is
 * handed to node-postgres unchanged, so libpq-style connection strings keep working.
 */
import { parseDuration as parseDurationMs } from '../../util/duration.js';
import type { Logger } from '../../observability/logger.js';

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
  /** A dispatch whose id was inserted this recently (ms) is a duplicate. Default 2 minutes; 0 = off. */
  dedupeWindow?: number | undefined;
  logger?: Logger | undefined;
}

/** A duration: a bare number is in `bareUnit` ms; otherwise Go style (`7d`, `1h30m`, `500ms`). */
export function parseDuration(value: string, bareUnit = 1): number {
  const ms = parseDurationMs(value, bareUnit);
  if (ms === null) throw new Error(`invalid duration "${value}" (examples: 500ms, 30s, 15m, 2h, 7d)`);
  return ms;
}

/** Query parameters consumed by Quicksilver; the others go to node-postgres (sslmode, options…). */
const OWN_PARAMS = ['table', 'size', 'max_age', 'cleanup_interval', 'pool_size', 'connect_timeout', 'query_timeout', 'dedupe_window'];

/**
 * Reads the transport options from `postgres://user:pass@host:5432/db?table=mercure_updates&size=100000&max_age=7d`
 * (or `postgresql://`). Options: `table`, `size` (updates kept), `max_age` (duration: `7d`, `12h`,
 * `30m`; bare number = ms), `cleanup_interval` (duration), `pool_size`, `connect_timeout` (duration;
 * bare number = seconds, as in libpq), `query_timeout` (duration), `dedupe_window` (duration,
 * default 2m; 0 = reused ids are stored again); `application_name`, `sslmode` and
 * the other libpq parameters node-postgres understands are passed through.
 */
export function postgresOptionsFromUrl(url: URL, logger: Logger): PostgresTransportOptions {
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
    dedupeWindow: duration('dedupe_window'),
    applicationName: get('application_name'),
    logger,
  };
  const pass = new URL(url.href);
  for (const name of OWN_PARAMS) pass.searchParams.delete(name);
  options.connectionString = pass.href;
  return options;
}
