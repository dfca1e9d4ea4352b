/*
 * Redis (or Valkey) transport: history and fan-out on one Redis Stream, presence in a hash. This
 * file is the entry: the transport's lifecycle, the stream reader that feeds `deliver`, publishing
 * and replay. Around it: scripts.ts (the Lua steps), entry.ts (the entry format), presence.ts
 * (subscription records), connection.ts (a connection that fails fast) and options.ts (the URL).
 *
 * Keys, for a stream named S (all derived from S, so give each hub cluster its own S):
 *   S                   the stream; one entry per update, fields i (id), t (topics, JSON), d (data),
 *                       p (private, 1/0), y (type, optional), r (retry, optional).
 *   S:ids               sorted set indexing every entry by its update id, see scripts.ts.
 *   S:subscriptions     hash `nodeId|subscriber|kind|match` → record JSON (presence).
 *   S:node:<nodeId>     heartbeat of a live node, with a TTL.
 *
 * Ordering and `seq`: stream entry ids `ms-n` are two unsigned 64-bit integers that Redis keeps
 * strictly increasing, so `seq = (ms << 64) | n` preserves their order exactly (bigints have no width
 * limit, so no assumption on `n` is needed). A replay and the live stream read the same entries, so
 * their seqs agree and the hub can stitch them without gap or duplicate.
 *
 * Fan-out: each node runs one dedicated connection doing `XREAD BLOCK` from the last entry id it
 * delivered; it starts from the stream's last entry at `start()` time, so it delivers every update
 * dispatched after `start()`, on any node, once and in stream order. (When Redis is down at start,
 * from its last entry when the reader first connects; the node is not ready until then.) The
 * position lives in memory, so a reconnect resumes exactly where it stopped: nothing lost, nothing
 * twice. A node whose reader
 * falls more than `size` entries behind the head would miss entries trimmed before it read them:
 * keep `size` well above the largest burst a node may lag behind (the default is 100 000).
 *
 * Durability: `dispatch` resolves once Redis acknowledged the entry, i.e. it is in Redis memory.
 * For it to survive a Redis crash, run Redis with `appendonly yes` + `appendfsync always` (acked
 * writes are fsynced before the reply), and/or use replicas with `wait=N`: `WAIT N wait_timeout` runs
 * after each write, and the publish fails (503) when fewer than N replicas acknowledged it in time
 * (the update is still on the primary and may still be delivered). When the connection drops or a
 * command times out mid-publish, the publisher gets a 503 although the update may have been stored:
 * ioredis' resending of unanswered commands is disabled, so an update is never appended twice.
 *
 * Needs Redis ≥ 6.2 or Valkey (XTRIM MINID, exclusive XRANGE, SET … GET). Runs on a single Redis
 * (or a primary with replicas; it survives restarts and failovers behind the same address) or on
 * Redis Cluster (cluster.ts): there S carries a hash tag (`{mercure}`), so every key above, and any
 * key added later as long as it derives from S, is in one slot: every script and multi-key command
 * stays single-slot, on the master serving it. Both connections are then cluster clients, the
 * reader's XREAD on a socket of its own to that master; a failover of that master is followed
 * (slot map refresh, MOVED), and with async replication the writes it had not yet sent to the
 * promoted replica are lost unless `wait` is set (docs/operations.md).
 */
import { randomUUID } from 'node:crypto';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../../observability/logger.js';
import { DEFAULT_DEDUPE_WINDOW, TransportUnavailableError } from '../../core/transport.js';
import type { DispatchResult, SubscriptionRecord, Transport, TransportHealth } from '../../core/transport.js';
import type { StoredUpdate, Update } from '../../core/update.js';
import { clusterClient, hashTagged } from './cluster.js';
import { Connection, PAGE, sleep } from './connection.js';
import { entryFields, entryUpdateId, parseEntry } from './entry.js';
import { redisOptionsFromUrl, type RedisTransportOptions } from './options.js';
import { RedisPresence } from './presence.js';
import { defineScripts, DISPATCH_SCRIPT, type Entry, type Scripts } from './scripts.js';
import { RedisWebhookStore } from './webhook-state.js';

export type { RedisTransportOptions } from './options.js';

/** Time a blocked XREAD waits before looping (also bounds how long close() can take). */
const DEFAULT_BLOCK_MS = 5_000;

export class RedisTransport implements Transport {
  readonly name = 'redis';
  /** This node's identity in presence records. */
  readonly nodeId: string;
  readonly stream: string;
  /** On Redis Cluster (options.cluster). */
  private readonly clustered: boolean;
  private readonly indexKey: string;
  private readonly size: number;
  private readonly slack: number;
  private readonly waitReplicas: number;
  private readonly waitTimeout: number;
  private readonly heartbeatInterval: number;
  private readonly presenceTtl: number;
  private readonly blockTimeout: number;
  private readonly commandTimeout: number;
  private readonly connectTimeout: number;
  readonly dedupeWindow: number;
  private readonly logger: Logger | undefined;
  private readonly address: string;
  private readonly cmd: Connection;
  private readonly reader: Connection;
  private readonly scripts: Scripts;
  private readonly presence: RedisPresence;
  /** Webhook registrations, cursors and leases, next to the stream (webhook-state.ts). */
  readonly webhooks: RedisWebhookStore;

  private deliver: ((u: StoredUpdate) => void) | null = null;
  private started = false;
  private closed = false;
  /** Aborted by close(), to wake the reader loop wherever it waits. */
  private readonly stopping = new AbortController();
  /** Entry id the reader delivered last (its resume point); undefined until positioned. */
  private lastId: string | undefined;
  private loop: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private length = 0;

  constructor(options: RedisTransportOptions = {}) {
    const stream = options.stream ?? 'mercure';
    if (stream === '') throw new Error('Redis transport: the stream name must not be empty');
    this.clustered = (options.cluster?.length ?? 0) > 0;
    this.stream = this.clustered ? hashTagged(stream) : stream;
    this.indexKey = `${this.stream}:ids`;
    this.nodeId = options.nodeId ?? randomUUID();
    if (this.nodeId.includes('|')) throw new Error('Redis transport: the node id must not contain "|"');
    this.size = Math.floor(options.size ?? 100_000);
    if (!(this.size >= 1)) throw new Error('Redis transport: size must be at least 1 (the stream also carries the fan-out)');
    this.slack = Math.min(1000, Math.max(1, Math.ceil(this.size / 100)));
    this.waitReplicas = Math.max(0, Math.floor(options.waitReplicas ?? 0));
    this.waitTimeout = Math.max(1, options.waitTimeout ?? 1000);
    this.heartbeatInterval = Math.max(10, options.heartbeatInterval ?? 5000);
    this.presenceTtl = Math.max(10, options.presenceTtl ?? this.heartbeatInterval * 3);
    this.blockTimeout = Math.max(10, options.blockTimeout ?? DEFAULT_BLOCK_MS);
    // 0 disables the command timeout (not recommended: a frozen Redis then hangs publishes).
    const commandTimeout = options.commandTimeout ?? 5000;
    this.commandTimeout = commandTimeout > 0 ? Math.max(commandTimeout, this.waitReplicas > 0 ? this.waitTimeout + 1000 : 0) : 0;
    this.connectTimeout = options.connectTimeout ?? 5000;
    this.dedupeWindow = Math.max(0, Math.floor(options.dedupeWindow ?? DEFAULT_DEDUPE_WINDOW));
    this.logger = options.logger;

    const base: RedisOptions = { ...options.redis };
    this.address = this.clustered
      ? `cluster ${options.cluster!.map((n) => `${n.host}:${n.port}`).join(',')}`
      : (base.path ?? `${base.host ?? '127.0.0.1'}:${base.port ?? 6379}/${base.db ?? 0}`);
    const common: RedisOptions = {
      ...base,
      lazyConnect: true,
      connectTimeout: this.connectTimeout,
      // Never queue while disconnected (publishes fail fast with a 503) and never resend a command
      // whose answer was lost (a resent XADD could store the update twice).
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: null,
      retryStrategy: (times: number) => Math.min(times * 100, 1000),
      // A failover that turned our server into a replica: reconnect (to the new primary via DNS).
      reconnectOnError: (err: Error) => err.message.startsWith('READONLY'),
    };
    const client = (o: RedisOptions): Redis | ReturnType<typeof clusterClient> =>
      this.clustered
        ? clusterClient(options.cluster!, o, { connectTimeout: this.connectTimeout, commandTimeout: o.commandTimeout, tls: base.tls !== undefined })
        : new Redis(o);
    this.cmd = new Connection(
      client({ ...common, commandTimeout: this.commandTimeout || undefined, connectionName: base.connectionName ?? 'quicksilver' }),
      'commands',
      this.address,
      this.logger,
      this.stream,
    );
    this.reader = new Connection(
      client({ ...common, connectionName: base.connectionName ? `${base.connectionName}-reader` : 'quicksilver-reader' }),
      'reader',
      this.address,
      this.logger,
      this.stream,
    );
    this.scripts = defineScripts(this.cmd.client);
    this.presence = new RedisPresence(this.stream, this.nodeId, this.cmd, this.scripts, this.logger, () => this.closed);
    this.webhooks = new RedisWebhookStore(this.cmd.client, this.stream);
    this.cmd.client.on('ready', () => void this.tick());
  }

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    if (this.started) throw new Error('Redis transport already started');
    if (this.closed) throw new Error('Redis transport closed');
    this.started = true;
    this.deliver = deliver;
    // Redis being down at start is not fatal: the hub serves (not ready, publishes answer 503) and
    // the connections keep retrying in the background.
    const wait = (c: Connection): Promise<void> => c.waitReady((this.connectTimeout || 10_000) + 500, this.stopping.signal);
    // A connected cluster may still be setting up the socket to the slot's master: wait for it too.
    const connect = async (c: Connection): Promise<void> => {
      const ready = wait(c);
      // A cluster's first connect can fail and leave the client closed (Connection.revive): try
      // again until the wait ends.
      const retry = async (): Promise<void> => {
        await c.client.connect().catch(() => {});
        while (!c.ready && !this.stopping.signal.aborted && c.client instanceof Cluster) {
          const settled = await Promise.race([ready.then(() => true), sleep(200, this.stopping.signal).then(() => false)]);
          if (settled) return;
          c.revive();
        }
      };
      await Promise.race([retry().then(() => ready), ready]);
    };
    await Promise.all([connect(this.cmd), connect(this.reader)]);
    if (this.reader.ready) {
      try {
        // Position the reader now, so that every update dispatched after start() is delivered.
        this.lastId = await this.reader.run(this.lastEntryId(), this.commandTimeout);
      } catch {
        // Positioned when the reader loop gets a connection.
      }
    }
    if (!this.cmd.ready || !this.reader.ready) {
      this.logger?.error(
        { redis: this.address, reason: this.cmd.describe() },
        'Redis unreachable at start: not ready until it is (publishes answer 503)',
      );
    }
    await this.tick();
    this.timer = setInterval(() => void this.tick(), this.heartbeatInterval);
    this.timer.unref();
    this.loop = this.readLoop();
    // Sweep records left by nodes that died since the subscriptions were last listed.
    if (this.cmd.ready) this.listSubscriptions().catch(() => {});
  }

  private async lastEntryId(): Promise<string> {
    const last = await this.reader.client.xrevrange(this.stream, '+', '-', 'COUNT', 1);
    return last[0]?.[0] ?? '0-0';
  }

  private async readLoop(): Promise<void> {
    let backoff = 0;
    while (!this.closed) {
      if (!this.reader.ready) {
        await this.reader.waitReady(1000, this.stopping.signal);
        continue;
      }
      try {
        // Positioned at the first connection when Redis was down at start.
        this.lastId ??= await this.reader.run(this.lastEntryId(), this.commandTimeout);
        const res = await this.reader.run(
          this.reader.client.xread('COUNT', PAGE, 'BLOCK', this.blockTimeout, 'STREAMS', this.stream, this.lastId),
          // Watchdog: a blocked read that outlives its BLOCK by far sits on a dead connection.
          this.blockTimeout + Math.max(2000, this.commandTimeout),
        );
        backoff = 0;
        if (!res) continue;
        for (const [, entries] of res) {
          for (const [eid, fields] of entries) {
            if (this.closed) return;
            this.lastId = eid;
            const update = parseEntry(eid, fields, this.stream, this.logger);
            if (!update) continue;
            try {
              this.deliver?.(update);
            } catch (err) {
              this.logger?.error({ err, id: update.id }, 'delivering an update failed');
            }
          }
        }
      } catch (err) {
        if (this.closed) return;
        const message = err instanceof Error ? err.message : String(err);
        // A stalled read already reset its connection (Connection.run): it reconnects by itself.
        if (!message.startsWith('Redis did not answer')) {
          this.logger?.debug({ redis: this.address, reason: message }, 'Redis read failed, retrying');
        }
        backoff = Math.min(1000, backoff + 100);
        await sleep(backoff, this.stopping.signal);
      }
    }
  }

  // The Transport interface's presence calls, kept by the presence class.
  readonly addSubscriptions = (records: readonly SubscriptionRecord[]): Promise<void> => this.presence.addSubscriptions(records);
  readonly removeSubscriptions = (records: readonly SubscriptionRecord[]): Promise<void> => this.presence.removeSubscriptions(records);
  /** Every node's records; records of nodes whose heartbeat lapsed are skipped and deleted. */
  readonly listSubscriptions = (): Promise<SubscriptionRecord[]> => this.presence.listSubscriptions();

  async dispatch(update: Update): Promise<DispatchResult> {
    if (this.closed) throw new TransportUnavailableError('Redis transport closed', { stored: 'no' });
    if (this.lastId === undefined) {
      // Redis was down at start: until the reader knows where it starts, this node could not
      // deliver its own update.
      throw new TransportUnavailableError(`Redis ${this.address}: not connected yet (${this.reader.describe()})`, { stored: 'no' });
    }
    // Known down (or suspect) before anything is sent: certainly not stored.
    if (!this.cmd.ready) throw new TransportUnavailableError(`Redis ${this.address}: cannot store the update: ${this.cmd.describe()}`, { stored: 'no' });
    const args = [this.size, this.slack, update.id, this.dedupeWindow, ...entryFields(update)];
    // On a cluster WAIT has no key to be routed by: it goes in one pipeline with the write, on the
    // socket of the master that ran it (WAIT counts that connection's writes).
    const waitWithWrite = this.clustered && this.waitReplicas > 0;
    let res: [string, number];
    let waited: number | Error | undefined;
    try {
      if (waitWithWrite) [res, waited] = await this.cmd.run(this.writeAndWait(args));
      else res = await this.cmd.run(this.scripts.qsDispatch(this.stream, this.indexKey, ...args));
    } catch (err) {
      throw this.cmd.unavailable('cannot store the update', err);
    }
    this.length = Number(res[1]);
    if (res[0] === '') return 'duplicate';
    if (this.waitReplicas > 0) {
      let acked: number;
      try {
        if (waited instanceof Error) throw waited;
        acked = waited ?? Number(await this.cmd.run(this.cmd.client.call('WAIT', this.waitReplicas, this.waitTimeout)));
      } catch (err) {
        throw this.cmd.unavailable('update stored on the primary but replication not confirmed', err);
      }
      if (acked < this.waitReplicas) {
        throw new TransportUnavailableError(
          `Redis ${this.address}: update stored on the primary but acknowledged by ${acked}/${this.waitReplicas} replicas within ${this.waitTimeout} ms`,
        );
      }
    }
  }

  /**
   * The dispatch script then WAIT, pipelined (cluster only). EVAL with the source, not EVALSHA: a
   * NOSCRIPT answer would make ioredis resend the script outside the pipeline, after the WAIT.
   */
  private async writeAndWait(args: (string | number)[]): Promise<[[string, number], number | Error]> {
    const results = await this.cmd.client
      .pipeline()
      .eval(DISPATCH_SCRIPT, 2, this.stream, this.indexKey, ...args)
      .call('WAIT', this.waitReplicas, this.waitTimeout)
      .exec();
    const [write, wait] = results ?? [];
    // ioredis follows a pipeline's MOVED only when every command got it (WAIT, keyless, does not):
    // the publish fails, not run; the map is corrected for the next one.
    if (write?.[0]?.message.startsWith('MOVED ')) (this.cmd.client as Cluster).refreshSlotsCache();
    if (!write || write[0]) throw write?.[0] ?? new Error('no answer to the write');
    const waitError = wait ? wait[0] : new Error('no answer to WAIT');
    // A pipeline reports a timeout in its results, where Connection.run does not see it.
    if (waitError?.message === 'Command timed out') this.cmd.distrust(waitError.message);
    return [write[1] as [string, number], waitError ?? Number(wait![1])];
  }

  async history(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    if (this.closed) throw new TransportUnavailableError('Redis transport closed');
    try {
      let page: Entry[];
      if (after === 'earliest') {
        page = await this.cmd.run(this.cmd.client.xrange(this.stream, '-', '+', 'COUNT', PAGE));
      } else {
        const found = await this.cmd.run(this.scripts.qsFind(this.stream, this.indexKey, after, PAGE));
        if (!found) return { found: false };
        page = found[1];
      }
      for (;;) {
        for (const [eid, fields] of page) {
          const u = parseEntry(eid, fields, this.stream, this.logger);
          if (u) onUpdate(u);
        }
        if (page.length < PAGE) return { found: true };
        const last = page[page.length - 1]![0];
        page = await this.cmd.run(this.cmd.client.xrange(this.stream, `(${last}`, '+', 'COUNT', PAGE));
      }
    } catch (err) {
      throw err instanceof TransportUnavailableError ? err : this.cmd.unavailable('cannot read the history', err);
    }
  }

  async lastEventId(): Promise<string> {
    if (this.closed) throw new TransportUnavailableError('Redis transport closed');
    let last: Entry[];
    try {
      last = await this.cmd.run(this.cmd.client.xrevrange(this.stream, '+', '-', 'COUNT', 1));
    } catch (err) {
      throw this.cmd.unavailable('cannot read the last event id', err);
    }
    const fields = last[0]?.[1];
    if (!fields) return 'earliest';
    return entryUpdateId(fields) ?? 'earliest';
  }

  /** Stream length, refreshed after each dispatch and at each heartbeat (other nodes publish too). */
  historySize(): number {
    return this.length;
  }

  health(): TransportHealth {
    if (this.closed) return { ready: false, reason: 'transport closed' };
    if (!this.started) return { ready: false, reason: 'transport not started' };
    if (!this.cmd.ready) return { ready: false, reason: `Redis ${this.address} unavailable: ${this.cmd.describe()}` };
    if (!this.reader.ready) return { ready: false, reason: `Redis ${this.address} unavailable (reader): ${this.reader.describe()}` };
    if (this.lastId === undefined) return { ready: false, reason: `Redis ${this.address}: reader not positioned yet` };
    return { ready: true };
  }

  /**
   * Heartbeat: refreshes this node's presence key and the cached history size. When the key had
   * lapsed (Redis restarted without persistence, or this node was cut off long enough for another
   * node to drop its records), re-publishes this node's records.
   */
  private async tick(): Promise<void> {
    if (this.closed || !this.started) return;
    this.cmd.revive();
    this.reader.revive();
    if (this.ticking || !this.cmd.ready) return;
    this.ticking = true;
    try {
      const [previous, length] = await Promise.all([
        this.cmd.run(this.cmd.client.call('SET', this.presence.nodeKey, String(Date.now()), 'PX', this.presenceTtl, 'GET')),
        this.cmd.run(this.cmd.client.xlen(this.stream)),
      ]);
      this.length = length;
      if ((previous === null && this.presence.size > 0) || this.presence.dirty) await this.presence.resync();
    } catch {
      // A timeout made the connection suspect and reset it (Connection.run): not ready until
      // ioredis reconnected; other failures show in the connection's status.
    } finally {
      this.ticking = false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.deliver = null;
    this.stopping.abort();
    if (this.timer) clearInterval(this.timer);
    this.reader.client.disconnect();
    await this.loop?.catch(() => {});
    if (this.cmd.ready) {
      await this.presence.leave();
      await this.cmd.run(this.cmd.client.quit(), 1000).catch(() => {});
    }
    this.cmd.client.disconnect();
  }
}

/** Builds the transport for a `redis://` or `rediss://` URL; see redisOptionsFromUrl for the syntax. */
export function redisTransportFromUrl(url: URL, logger: Logger): RedisTransport {
  return new RedisTransport(redisOptionsFromUrl(url, logger));
}
