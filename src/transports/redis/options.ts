/*
 * Configuration of the Redis transport: its options and how a `redis://` / `rediss://` URL maps
 * onto them (connection, TLS and transport parameters), `redis+cluster://` / `rediss+cluster://`
 * (or `cluster=1`) for Redis Cluster. Kept apart from the transport so that URL syntax and
 * validation can change without touching the runtime code.
 */
import { parseMultiHostUrl } from '../../util/multi-host-url.js';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../../observability/logger.js';
import { dedupeWindowParam } from '../recent-ids.js';

/** A Redis Cluster node to discover the cluster from. */
export interface ClusterSeed {
  host: string;
  port: number;
}

export interface RedisTransportOptions {
  /** ioredis connection options (host, port, username, password, db, tls…); with `cluster`, those of every node. */
  redis?: RedisOptions | undefined;
  /**
   * Redis Cluster: the nodes to discover it from (any few; the others are learnt from them). The
   * keys then carry a hash tag (see cluster.ts), `redis.host/port/db` are ignored.
   */
  cluster?: readonly ClusterSeed[] | undefined;
  /** Stream key; the other keys are derived from it. Default `mercure`. */
  stream?: string | undefined;
  /** Updates kept for replay (approximately: trimmed by batches of 1 %). Default 100 000; ≥ 1. */
  size?: number | undefined;
  /** Replicas that must acknowledge each publish (`WAIT`). Default 0 (none). */
  waitReplicas?: number | undefined;
  /** How long `WAIT` waits for the replicas, ms. Default 1000. */
  waitTimeout?: number | undefined;
  /** A command (a publish) fails after this many ms without an answer. Default 5000. */
  commandTimeout?: number | undefined;
  /** Gives up one connection attempt after this many ms (reconnection continues). Default 5000. */
  connectTimeout?: number | undefined;
  /** Presence heartbeat period, ms. Default 5000. */
  heartbeatInterval?: number | undefined;
  /** A node whose heartbeat is older than this is dead and its records are dropped. Default 3 × heartbeat. */
  presenceTtl?: number | undefined;
  /** XREAD BLOCK time, ms. Default 5000. */
  blockTimeout?: number | undefined;
  /** A dispatch whose id is in the stream from this recently (ms) is a duplicate. Default 2 minutes; 0 = off. */
  dedupeWindow?: number | undefined;
  /** Identifies this node in presence records. Default: a random UUID (never reuse across processes). */
  nodeId?: string | undefined;
  logger?: Logger | undefined;
}

const PARAMS = new Set([
  'stream',
  'size',
  'max_length',
  'wait',
  'wait_timeout',
  'command_timeout',
  'connect_timeout',
  'heartbeat',
  'tls',
  'tls_ca_file',
  'tls_insecure',
  'name',
  'dedupe_window',
  'cluster',
  'nodes',
]);

/** `host[:port]` or `[v6][:port]`, port defaulting to 6379. */
function seed(s: string): ClusterSeed {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(s.trim());
  if (!m) throw new Error(`Redis transport URL: "${s}" is not a host or host:port`);
  const port = m[3] ? Number(m[3]) : 6379;
  if (!(port >= 1 && port <= 65535)) throw new Error(`Redis transport URL: bad port in "${s}"`);
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * A WHATWG URL cannot hold a list of hosts, so `redis+cluster://[auth@]h1:p1,h2:p2[/…]` is
 * rewritten to the equivalent `redis+cluster://[auth@]h1:p1/…?nodes=h2:p2`. Other URLs are parsed
 * as they are.
 */
export function parseTransportUrl(raw: string): URL {
  return parseMultiHostUrl(raw);
}

/**
 * `redis://[user:pass@]host[:port][/db]?stream=mercure&size=100000` (`rediss://` for TLS). Options:
 * `stream` (key, default `mercure`), `size` or `max_length` (history length, default 100 000),
 * `wait` (replicas that must acknowledge each publish, default 0), `wait_timeout` (ms, 1000),
 * `command_timeout` (ms, 5000), `connect_timeout` (ms, 5000), `heartbeat` (presence heartbeat ms,
 * 5000), `tls=1` (TLS on `redis://`), `tls_ca_file` (PEM CA bundle), `tls_insecure=1` (skip
 * certificate verification; testing only), `name` (client name shown by CLIENT LIST),
 * `dedupe_window` (duration, default 2m; 0 = reused ids are stored again).
 *
 * Redis Cluster: `redis+cluster://h1:7000,h2:7001/?stream=mercure` (`rediss+cluster://` for TLS),
 * or `cluster=1` on a `redis://` URL; `nodes=h2:7001,h3:7002` adds seed nodes to the URL's host.
 * No database number (a cluster has only database 0).
 */
export function redisOptionsFromUrl(url: URL, logger: Logger): RedisTransportOptions {
  const scheme = url.protocol.replace(/:$/, '').toLowerCase();
  const base = scheme.replace(/\+cluster$/, '');
  if (base !== 'redis' && base !== 'rediss') throw new Error(`Redis transport: unsupported scheme "${scheme}://"`);
  const q = url.searchParams;
  for (const key of new Set(q.keys())) {
    if (!PARAMS.has(key)) logger.warn({ param: key }, 'Redis transport URL: unknown parameter ignored');
  }
  const num = (name: string): number | undefined => {
    const v = q.get(name);
    if (v === null || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`Redis transport URL: "${name}" must be a non-negative number, got "${v}"`);
    return n;
  };
  const flag = (name: string): boolean => {
    const v = q.get(name);
    return v !== null && v !== '0' && v.toLowerCase() !== 'false';
  };
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  const port = url.port ? Number(url.port) : 6379;
  const dbPath = decodeURIComponent(url.pathname.replace(/^\//, ''));
  let db = 0;
  if (dbPath !== '') {
    db = Number(dbPath);
    if (!Number.isInteger(db) || db < 0) throw new Error(`Redis transport URL: the path must be a database number, got "/${dbPath}"`);
  }
  const redis: RedisOptions = { host, port, db };
  if (url.username) redis.username = decodeURIComponent(url.username);
  if (url.password) redis.password = decodeURIComponent(url.password);
  const name = q.get('name');
  if (name) redis.connectionName = name;
  const clustered = scheme !== base || flag('cluster');
  let cluster: ClusterSeed[] | undefined;
  if (clustered) {
    if (db !== 0) throw new Error(`Redis transport URL: a Redis Cluster has only database 0, got "/${dbPath}"`);
    const more = (q.get('nodes') ?? '').split(',').filter((h) => h.trim() !== '');
    cluster = [{ host, port }, ...more.map(seed)];
  } else if (q.has('nodes')) {
    throw new Error('Redis transport URL: "nodes" is for Redis Cluster (redis+cluster:// or cluster=1)');
  }
  if (base === 'rediss' || flag('tls')) {
    const tls: NonNullable<RedisOptions['tls']> = {};
    // A cluster's nodes have names (or addresses) of their own: each is checked against its own.
    if (!isIP(host) && !clustered) tls.servername = host;
    const ca = q.get('tls_ca_file');
    if (ca) tls.ca = readFileSync(ca);
    if (flag('tls_insecure')) tls.rejectUnauthorized = false;
    redis.tls = tls;
  }
  const size = num('size') ?? num('max_length');
  const heartbeat = num('heartbeat');
  return {
    redis,
    cluster,
    stream: q.get('stream') || undefined,
    size,
    waitReplicas: num('wait'),
    waitTimeout: num('wait_timeout'),
    commandTimeout: num('command_timeout'),
    connectTimeout: num('connect_timeout'),
    heartbeatInterval: heartbeat,
    dedupeWindow: dedupeWindowParam(url),
    logger,
  };
}
