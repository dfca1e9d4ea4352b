/*
 * Redis Cluster support: the ioredis `Cluster` client configured so that a command is sent again
 * only when Redis said it did not run it, and the hash tag that keeps one hub's keys in one slot.
 *
 * Redirections ioredis follows, and why each is safe:
 * - MOVED / ASK: the node refused the command without running it (the slot is served elsewhere);
 *   ioredis sends it on at once, while the caller still waits for it, so it runs at most once.
 * Redirections turned off, each answered as an error (a publish answers 503):
 * - a dropped connection (`retryDelayOnFailover: 0`): the command may have run before the drop, and
 *   a resent publish could be stored twice or after newer ones;
 * - CLUSTERDOWN (`retryDelayOnClusterDown: 0`) and TRYAGAIN (handleError below, ioredis has no
 *   switch for it): not run, but ioredis would send them again after a delay, possibly after the
 *   caller's timeout already answered 503: a publish answered with an error would be applied later.
 * The offline queue is off as for a single node (a command is refused while the cluster is not
 * ready). The per-node connections never reconnect by themselves (ioredis drops a failed node and
 * builds a new connection from the slot map), so nothing of theirs is resent either.
 */
import { Cluster, type ClusterNode, type ClusterOptions, type Redis, type RedisOptions } from 'ioredis';

/** A cluster client that never delays and resends a command (see the file comment). */
class StrictCluster extends Cluster {
  override handleError(error: Error, ttl: { value?: number }, handlers: { defaults(): void }): void {
    if (error.message.startsWith('TRYAGAIN')) {
      handlers.defaults();
      return;
    }
    super.handleError(error, ttl, handlers);
  }
}

/** One Redis Cluster client (the command connection or the reader each have their own). */
export function clusterClient(
  seeds: readonly ClusterNode[],
  node: RedisOptions,
  options: { connectTimeout: number; commandTimeout: number | undefined; tls: boolean },
): Cluster {
  const { host: _host, port: _port, path: _path, db: _db, retryStrategy: _rs, enableOfflineQueue: _eoq, readOnly: _ro, ...rest } = node;
  const redisOptions: NonNullable<ClusterOptions['redisOptions']> = {
    ...rest,
    connectTimeout: options.connectTimeout,
    commandTimeout: options.commandTimeout,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: null,
  };
  const cluster = new StrictCluster([...seeds], {
    lazyConnect: true,
    enableOfflineQueue: false,
    // ioredis' ready check (CLUSTER INFO) goes to whichever node comes first, usually one whose
    // socket is still connecting, and with no offline queue it fails: the client then closes and
    // reconnects in a loop. Readiness is Connection.ready instead (the socket to the master of the
    // hub's slot is up); a cluster that is down answers CLUSTERDOWN, which is a 503 "not stored".
    enableReadyCheck: false,
    scaleReads: 'master',
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 0,
    retryDelayOnTryAgain: 0,
    retryDelayOnMoved: 0,
    // Refreshing slots must not hang on a frozen node: try the next one soon.
    slotsRefreshTimeout: Math.min(options.connectTimeout || 1000, 1000),
    // After a failover, MOVED replies also correct the map, but nothing is sent to a slot whose
    // master is gone (the transport is not ready then): this bounds how long that lasts.
    slotsRefreshInterval: 1000,
    clusterRetryStrategy: (times: number) => Math.min(times * 100, 1000),
    redisOptions,
    // With TLS, connect to the names the cluster announces so that certificates match them.
    ...(options.tls ? { dnsLookup: (address: string, callback: (err: null, address: string) => void) => callback(null, address) } : {}),
  });
  // ioredis connects to a node at its first command, and refuses commands while that connection
  // is being set up (no offline queue): connect to masters as soon as they are known instead.
  cluster.on('+node', (n: Redis) => {
    if (!n.options.readOnly) n.connect().catch(() => {});
  });
  // A lost node leaves its slots without a connection, so nothing is sent there and no MOVED
  // corrects the map: ask for the map soon rather than at the next interval (a failover is seen
  // within ~200 ms of the promotion). Debounced: a dead master is re-added and lost at each refresh.
  let soon: NodeJS.Timeout | undefined;
  cluster.on('-node', () => {
    if (soon) return;
    soon = setTimeout(() => {
      soon = undefined;
      if (cluster.status === 'ready') cluster.refreshSlotsCache();
    }, 200);
    soon.unref();
  });
  return cluster;
}

/** CRC16/XMODEM, the hash of Redis Cluster key slots. */
function crc16(data: Buffer): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The slot of a key, hash tag rules included. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  const close = open >= 0 ? key.indexOf('}', open + 1) : -1;
  return crc16(Buffer.from(close > open + 1 ? key.slice(open + 1, close) : key)) % 16384;
}

/** The connection to the master currently serving `slot`, if ioredis has one. */
export function slotMaster(cluster: Cluster, slot: number): Redis | undefined {
  const key = cluster.slots[slot]?.[0];
  if (!key) return undefined;
  return cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === key);
}

/**
 * The key every other key of the hub derives from, holding a hash tag so that all of them (and so
 * every script's and every multi-key command's keys) fall in one slot. A name that already has a
 * tag (`{…}` with something inside) keeps it, so an operator can group several names; otherwise
 * the whole name becomes the tag: `mercure` → `{mercure}`.
 */
export function hashTagged(stream: string): string {
  const open = stream.indexOf('{');
  if (open >= 0) {
    const close = stream.indexOf('}', open + 1);
    if (close > open + 1) return stream;
  }
  return `{${stream}}`;
}
