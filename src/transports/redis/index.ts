import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError, type SubscriptionRecord, type Transport, type TransportHealth } from '../../core/transport.js';
import type { StoredUpdate, Update } from '../../core/update.js';

/*
 * Redis (or Valkey) transport: history and fan-out on one Redis Stream, presence in a hash.
 *
 * Keys, for a stream named S (all derived from S, so give each hub cluster its own S):
 *   S                   the stream; one entry per update, fields i (id), t (topics, JSON), d (data),
 *                       p (private, 1/0), y (type, optional), r (retry, optional).
 *   S:ids               sorted set indexing every entry by its update id, see DISPATCH_SCRIPT.
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
 * Needs Redis ≥ 6.2 or Valkey (XTRIM MINID, exclusive XRANGE, SET … GET). Single Redis (or a
 * primary with replicas) only: the scripts derive key names, which Redis Cluster forbids. The
 * transport survives Redis restarts and failovers behind the same address.
 */

/** Time a blocked XREAD waits before looping (also bounds how long close() can take). */
const DEFAULT_BLOCK_MS = 5_000;
const PAGE = 1000;

/**
 * Appends the update and indexes it; trims the stream when it outgrew `size + slack`.
 *
 * The id index is a sorted set whose members all have score 0, so it is ordered by member bytes:
 * `<byte length of id, 10 digits><id><entry ms, 20 digits><entry n, 20 digits>`. The length prefix
 * makes `<length><id>` a prefix shared by exactly the occurrences of that id, and the zero-padded
 * entry id sorts them in stream order: the first member of the range is the earliest occurrence
 * still in the stream. Trimming is done here rather than with `XADD MAXLEN ~` because this script
 * has to know which entries go in order to drop exactly their index members: the index never points
 * at a trimmed entry and never forgets a later occurrence of a reused id. The trim is batched (every
 * `slack` entries, 1 % of `size`), which keeps it approximate and cheap like `MAXLEN ~`.
 *
 * KEYS: stream, index. ARGV: size, slack, update id, field/value pairs. Returns { entry id, length }.
 */
const DISPATCH_SCRIPT = `
local function member(id, eid)
  local dash = string.find(eid, '-', 1, true)
  local ms = string.sub(eid, 1, dash - 1)
  local n = string.sub(eid, dash + 1)
  return string.format('%010d', #id) .. id .. string.rep('0', 20 - #ms) .. ms .. string.rep('0', 20 - #n) .. n
end
local eid = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], 0, member(ARGV[3], eid))
local size = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
if len > size + tonumber(ARGV[2]) then
  local k = len - size
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', k + 1)
  for i = 1, k do
    local f = old[i][2]
    for j = 1, #f, 2 do
      if f[j] == 'i' then
        redis.call('ZREM', KEYS[2], member(f[j + 1], old[i][1]))
        break
      end
    end
  end
  redis.call('XTRIM', KEYS[1], 'MINID', old[k + 1][1])
  len = redis.call('XLEN', KEYS[1])
end
return { eid, len }
`;

/**
 * Finds the earliest entry of an update id and returns it with the first page after it, or nil.
 * KEYS: stream, index. ARGV: update id, page size.
 */
const FIND_SCRIPT = `
local p = string.format('%010d', #ARGV[1]) .. ARGV[1]
local m = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. p, '[' .. p .. ':', 'LIMIT', 0, 1)
if #m == 0 then return false end
local s = string.sub(m[1], #p + 1)
local ms = (string.gsub(string.sub(s, 1, 20), '^0+(%d)', '%1'))
local n = (string.gsub(string.sub(s, 21), '^0+(%d)', '%1'))
local eid = ms .. '-' .. n
return { eid, redis.call('XRANGE', KEYS[1], '(' .. eid, '+', 'COUNT', tonumber(ARGV[2])) }
`;

/**
 * Drops presence records of nodes whose heartbeat key is gone. Checks and deletes atomically, so a
 * node that comes back (and re-adds its records) at the same moment cannot lose them.
 * KEYS: presence hash. ARGV: node key prefix, fields.
 */
const CLEANUP_SCRIPT = `
local alive = {}
local removed = 0
for i = 2, #ARGV do
  local node = string.match(ARGV[i], '^([^|]*)|')
  if node then
    local a = alive[node]
    if a == nil then
      a = redis.call('EXISTS', ARGV[1] .. node) == 1
      alive[node] = a
    end
    if not a then removed = removed + redis.call('HDEL', KEYS[1], ARGV[i]) end
  end
end
return removed
`;

type Entry = [id: string, fields: string[]];

interface Scripts {
  qsDispatch(stream: string, index: string, ...args: (string | number)[]): Promise<[string, number]>;
  qsFind(stream: string, index: string, id: string, count: number): Promise<[string, Entry[]] | null>;
  qsCleanup(hash: string, prefix: string, ...fields: string[]): Promise<number>;
}

export interface RedisTransportOptions {
  /** ioredis connection options (host, port, username, password, db, tls…). */
  redis?: RedisOptions | undefined;
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
  /** Identifies this node in presence records. Default: a random UUID (never reuse across processes). */
  nodeId?: string | undefined;
  logger?: Logger | undefined;
}

/** One ioredis connection plus what the transport needs around it. */
class Connection {
  readonly client: Redis;
  lastError: string | undefined;
  private readonly inflight = new Set<(err: Error) => void>();
  private wasReady = false;
  private down = false;

  constructor(
    options: RedisOptions,
    private readonly role: string,
    private readonly address: string,
    private readonly logger: Logger | undefined,
  ) {
    this.client = new Redis(options);
    this.client.on('error', (err: Error) => {
      this.lastError = err.message || String(err);
    });
    this.client.on('ready', () => {
      this.lastError = undefined;
      if (this.down) this.logger?.info({ redis: this.address, connection: this.role }, 'Redis connection restored');
      this.down = false;
      this.wasReady = true;
    });
    this.client.on('close', () => {
      // Commands in flight when the connection drops are never answered (resending is disabled):
      // fail them now instead of letting their callers hang.
      const lost = new Error(`connection to Redis lost${this.lastError ? ` (${this.lastError})` : ''}`);
      for (const fail of this.inflight) fail(lost);
      this.inflight.clear();
    });
    this.client.on('reconnecting', () => {
      // Once per outage, not at every attempt.
      if (this.wasReady && !this.down) {
        this.down = true;
        this.logger?.warn({ redis: this.address, connection: this.role, reason: this.lastError }, 'Redis connection lost, reconnecting');
      }
    });
  }

  get ready(): boolean {
    return this.client.status === 'ready';
  }

  /** Settles with the command, or rejects as soon as the connection is lost (or after `ms`). */
  run<T>(command: Promise<T>, ms = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const fail = (err: Error): void => {
        if (timer) clearTimeout(timer);
        this.inflight.delete(fail);
        reject(err);
      };
      this.inflight.add(fail);
      if (ms > 0) timer = setTimeout(() => fail(new Error(`Redis did not answer within ${ms} ms`)), ms);
      command.then(
        (value) => {
          if (timer) clearTimeout(timer);
          this.inflight.delete(fail);
          resolve(value);
        },
        (err: unknown) => fail(err instanceof Error ? err : new Error(String(err))),
      );
    });
  }

  /** Resolves when the connection is ready, after `ms`, or on abort, whichever comes first. */
  waitReady(ms: number, signal: AbortSignal): Promise<void> {
    if (this.ready || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.client.off('ready', done);
        this.client.off('end', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.client.once('ready', done);
      this.client.once('end', done);
      signal.addEventListener('abort', done);
    });
  }

  describe(): string {
    return this.lastError ?? (this.client.status === 'ready' ? 'ready' : `connection ${this.client.status}`);
  }
}

/** Resolves after `ms`, or on abort. */
const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });

function entrySeq(eid: string): bigint {
  const dash = eid.indexOf('-');
  return (BigInt(eid.slice(0, dash)) << 64n) | BigInt(eid.slice(dash + 1));
}

export class RedisTransport implements Transport {
  readonly name = 'redis';
  /** This node's identity in presence records. */
  readonly nodeId: string;
  readonly stream: string;
  private readonly indexKey: string;
  private readonly presenceKey: string;
  private readonly nodePrefix: string;
  private readonly nodeKey: string;
  private readonly size: number;
  private readonly slack: number;
  private readonly waitReplicas: number;
  private readonly waitTimeout: number;
  private readonly heartbeatInterval: number;
  private readonly presenceTtl: number;
  private readonly blockTimeout: number;
  private readonly commandTimeout: number;
  private readonly connectTimeout: number;
  private readonly logger: Logger | undefined;
  private readonly address: string;
  private readonly cmd: Connection;
  private readonly reader: Connection;
  private readonly scripts: Scripts;

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
  private stalled: string | undefined;
  private length = 0;
  /** This node's presence records (field → JSON), re-published if its heartbeat lapsed. */
  private readonly presence = new Map<string, string>();
  /** A presence write failed: Redis may disagree with `presence` until the next resync. */
  private presenceDirty = false;

  constructor(options: RedisTransportOptions = {}) {
    this.stream = options.stream ?? 'mercure';
    if (this.stream === '') throw new Error('Redis transport: the stream name must not be empty');
    this.indexKey = `${this.stream}:ids`;
    this.presenceKey = `${this.stream}:subscriptions`;
    this.nodePrefix = `${this.stream}:node:`;
    this.nodeId = options.nodeId ?? randomUUID();
    if (this.nodeId.includes('|')) throw new Error('Redis transport: the node id must not contain "|"');
    this.nodeKey = this.nodePrefix + this.nodeId;
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
    this.logger = options.logger;

    const base: RedisOptions = { ...options.redis };
    this.address = base.path ?? `${base.host ?? '127.0.0.1'}:${base.port ?? 6379}/${base.db ?? 0}`;
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
    this.cmd = new Connection(
      { ...common, commandTimeout: this.commandTimeout || undefined, connectionName: base.connectionName ?? 'quicksilver' },
      'commands',
      this.address,
      this.logger,
    );
    this.reader = new Connection(
      { ...common, connectionName: base.connectionName ? `${base.connectionName}-reader` : 'quicksilver-reader' },
      'reader',
      this.address,
      this.logger,
    );
    this.cmd.client.defineCommand('qsDispatch', { numberOfKeys: 2, lua: DISPATCH_SCRIPT });
    this.cmd.client.defineCommand('qsFind', { numberOfKeys: 2, lua: FIND_SCRIPT });
    this.cmd.client.defineCommand('qsCleanup', { numberOfKeys: 1, lua: CLEANUP_SCRIPT });
    this.scripts = this.cmd.client as unknown as Scripts;
    this.cmd.client.on('ready', () => void this.tick());
  }

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    if (this.started) throw new Error('Redis transport already started');
    if (this.closed) throw new Error('Redis transport closed');
    this.started = true;
    this.deliver = deliver;
    // Redis being down at start is not fatal: the hub serves (not ready, publishes answer 503) and
    // the connections keep retrying in the background.
    const connect = (c: Connection): Promise<void> =>
      Promise.race([c.client.connect().catch(() => {}), c.waitReady((this.connectTimeout || 10_000) + 500, this.stopping.signal)]);
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
            const update = this.parse(eid, fields);
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
        if (message.startsWith('Redis did not answer') && this.reader.ready) {
          this.logger?.warn({ redis: this.address }, 'Redis reader stalled: reconnecting');
          this.reader.client.disconnect(true);
        } else {
          this.logger?.debug({ redis: this.address, reason: message }, 'Redis read failed, retrying');
        }
        backoff = Math.min(1000, backoff + 100);
        await sleep(backoff, this.stopping.signal);
      }
    }
  }

  private parse(eid: string, fields: string[]): StoredUpdate | null {
    let id: string | undefined;
    let topics: string[] | undefined;
    let data = '';
    let priv = false;
    let type: string | undefined;
    let retry: number | undefined;
    try {
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const v = fields[i + 1]!;
        switch (fields[i]) {
          case 'i': id = v; break;
          case 't': topics = JSON.parse(v) as string[]; break;
          case 'd': data = v; break;
          case 'p': priv = v === '1'; break;
          case 'y': type = v || undefined; break;
          case 'r': retry = Number(v) || undefined; break;
        }
      }
    } catch {
      topics = undefined;
    }
    if (id === undefined || !Array.isArray(topics) || topics.length === 0) {
      this.logger?.warn({ stream: this.stream, entry: eid }, 'skipping a stream entry that is not a Quicksilver update');
      return null;
    }
    return Object.freeze({
      topics: Object.freeze(topics.map(String)),
      data,
      private: priv,
      id,
      type,
      retry,
      seq: entrySeq(eid),
    });
  }

  private unavailable(what: string, err: unknown): TransportUnavailableError {
    let reason = err instanceof Error ? err.message : String(err);
    // ioredis' own message for a disconnected client says nothing about why.
    if (reason.includes("enableOfflineQueue") || reason.startsWith('Connection is closed')) {
      reason = `not connected (${this.cmd.lastError ?? this.cmd.client.status})`;
    }
    const e = new TransportUnavailableError(`Redis ${this.address}: ${what}: ${reason}`);
    (e as { cause?: unknown }).cause = err;
    return e;
  }

  async dispatch(update: Update): Promise<void> {
    if (this.closed) throw new TransportUnavailableError('Redis transport closed');
    if (this.lastId === undefined) {
      // Redis was down at start: until the reader knows where it starts, this node could not
      // deliver its own update.
      throw new TransportUnavailableError(`Redis ${this.address}: not connected yet (${this.reader.describe()})`);
    }
    const fields: string[] = ['i', update.id, 't', JSON.stringify(update.topics), 'd', update.data, 'p', update.private ? '1' : '0'];
    if (update.type) fields.push('y', update.type);
    if (update.retry) fields.push('r', String(update.retry));
    let res: [string, number];
    try {
      res = await this.cmd.run(this.scripts.qsDispatch(this.stream, this.indexKey, this.size, this.slack, update.id, ...fields));
    } catch (err) {
      throw this.unavailable('cannot store the update', err);
    }
    this.length = Number(res[1]);
    if (this.waitReplicas > 0) {
      let acked: number;
      try {
        acked = Number(await this.cmd.run(this.cmd.client.call('WAIT', this.waitReplicas, this.waitTimeout)));
      } catch (err) {
        throw this.unavailable('update stored on the primary but replication not confirmed', err);
      }
      if (acked < this.waitReplicas) {
        throw new TransportUnavailableError(
          `Redis ${this.address}: update stored on the primary but acknowledged by ${acked}/${this.waitReplicas} replicas within ${this.waitTimeout} ms`,
        );
      }
    }
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
          const u = this.parse(eid, fields);
          if (u) onUpdate(u);
        }
        if (page.length < PAGE) return { found: true };
        const last = page[page.length - 1]![0];
        page = await this.cmd.run(this.cmd.client.xrange(this.stream, `(${last}`, '+', 'COUNT', PAGE));
      }
    } catch (err) {
      throw err instanceof TransportUnavailableError ? err : this.unavailable('cannot read the history', err);
    }
  }

  async lastEventId(): Promise<string> {
    if (this.closed) throw new TransportUnavailableError('Redis transport closed');
    let last: Entry[];
    try {
      last = await this.cmd.run(this.cmd.client.xrevrange(this.stream, '+', '-', 'COUNT', 1));
    } catch (err) {
      throw this.unavailable('cannot read the last event id', err);
    }
    const fields = last[0]?.[1];
    if (!fields) return 'earliest';
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'i') return fields[i + 1]!;
    return 'earliest';
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
    if (this.stalled) return { ready: false, reason: `Redis ${this.address}: ${this.stalled}` };
    if (this.lastId === undefined) return { ready: false, reason: `Redis ${this.address}: reader not positioned yet` };
    return { ready: true };
  }

  /**
   * Heartbeat: refreshes this node's presence key and the cached history size. When the key had
   * lapsed (Redis restarted without persistence, or this node was cut off long enough for another
   * node to drop its records), re-publishes this node's records.
   */
  private async tick(): Promise<void> {
    if (this.closed || !this.started || this.ticking || !this.cmd.ready) return;
    this.ticking = true;
    try {
      const [previous, length] = await Promise.all([
        this.cmd.run(this.cmd.client.call('SET', this.nodeKey, String(Date.now()), 'PX', this.presenceTtl, 'GET')),
        this.cmd.run(this.cmd.client.xlen(this.stream)),
      ]);
      this.length = length;
      this.stalled = undefined;
      if ((previous === null && this.presence.size > 0) || this.presenceDirty) await this.resyncPresence();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (message === 'Command timed out' && this.cmd.ready) {
        // Connected but unanswered: a dead connection (or a frozen server). Not ready; reconnect.
        this.stalled = 'not responding';
        this.logger?.warn({ redis: this.address }, 'Redis not responding: reconnecting');
        this.cmd.client.disconnect(true);
      }
    } finally {
      this.ticking = false;
    }
  }

  /** Makes Redis hold exactly this node's records: after a lapsed heartbeat or a failed write. */
  private async resyncPresence(): Promise<void> {
    this.presenceDirty = false;
    try {
      const pattern = `${this.nodeId.replace(/[*?[\]\\]/g, '\\$&')}|*`;
      const stale: string[] = [];
      let cursor = '0';
      do {
        const [next, flat] = await this.cmd.run(this.cmd.client.hscan(this.presenceKey, cursor, 'MATCH', pattern, 'COUNT', PAGE));
        for (let i = 0; i < flat.length; i += 2) if (!this.presence.has(flat[i]!)) stale.push(flat[i]!);
        cursor = next;
      } while (cursor !== '0');
      for (let i = 0; i < stale.length; i += PAGE) {
        await this.cmd.run(this.cmd.client.hdel(this.presenceKey, ...stale.slice(i, i + PAGE)));
      }
      await this.publishPresence([...this.presence]);
      this.logger?.info({ records: this.presence.size, removed: stale.length }, 'presence records re-synchronised with Redis');
    } catch (err) {
      this.presenceDirty = true;
      throw err;
    }
  }

  private async publishPresence(entries: [string, string][]): Promise<void> {
    for (let i = 0; i < entries.length; i += PAGE) {
      const args = entries.slice(i, i + PAGE).flat();
      await this.cmd.run(this.cmd.client.hset(this.presenceKey, ...args));
    }
  }

  private field(r: SubscriptionRecord): string {
    return `${this.nodeId}|${r.subscriber}|${r.kind}|${r.match}`;
  }

  async addSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    const entries: [string, string][] = [];
    for (const r of records) {
      const value = JSON.stringify({ subscriber: r.subscriber, kind: r.kind, match: r.match, payload: r.payload });
      const f = this.field(r);
      this.presence.set(f, value);
      entries.push([f, value]);
    }
    if (entries.length === 0 || this.closed) return;
    try {
      await this.publishPresence(entries);
    } catch (err) {
      // Kept locally: the next heartbeat that reaches Redis re-synchronises.
      this.presenceDirty = true;
      throw this.unavailable('cannot record the subscriptions', err);
    }
  }

  async removeSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    const fields: string[] = [];
    for (const r of records) {
      const f = this.field(r);
      this.presence.delete(f);
      fields.push(f);
    }
    if (fields.length === 0 || this.closed) return;
    try {
      for (let i = 0; i < fields.length; i += PAGE) {
        await this.cmd.run(this.cmd.client.hdel(this.presenceKey, ...fields.slice(i, i + PAGE)));
      }
    } catch (err) {
      this.presenceDirty = true;
      throw this.unavailable('cannot remove the subscriptions', err);
    }
  }

  /** Every node's records; records of nodes whose heartbeat lapsed are skipped and deleted. */
  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    if (this.closed) throw new TransportUnavailableError('Redis transport closed');
    try {
      const all = new Map<string, string>();
      let cursor = '0';
      do {
        const [next, flat] = await this.cmd.run(this.cmd.client.hscan(this.presenceKey, cursor, 'COUNT', PAGE));
        for (let i = 0; i + 1 < flat.length; i += 2) all.set(flat[i]!, flat[i + 1]!);
        cursor = next;
      } while (cursor !== '0');
      const nodes = new Set<string>();
      for (const f of all.keys()) nodes.add(f.slice(0, f.indexOf('|')));
      nodes.delete(this.nodeId);
      const others = [...nodes];
      const alive = new Set<string>([this.nodeId]);
      if (others.length > 0) {
        const beats = await this.cmd.run(this.cmd.client.mget(others.map((n) => this.nodePrefix + n)));
        others.forEach((n, i) => {
          if (beats[i] !== null) alive.add(n);
        });
      }
      const records: SubscriptionRecord[] = [];
      const dead: string[] = [];
      for (const [f, value] of all) {
        if (!alive.has(f.slice(0, f.indexOf('|')))) {
          dead.push(f);
          continue;
        }
        try {
          records.push(JSON.parse(value) as SubscriptionRecord);
        } catch {
          dead.push(f);
        }
      }
      for (let i = 0; i < dead.length; i += PAGE) {
        await this.cmd.run(this.scripts.qsCleanup(this.presenceKey, this.nodePrefix, ...dead.slice(i, i + PAGE)));
      }
      return records;
    } catch (err) {
      throw this.unavailable('cannot list the subscriptions', err);
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
      // Leave cleanly: other nodes need not wait for the heartbeat to lapse.
      const fields = [...this.presence.keys()];
      this.presence.clear();
      try {
        for (let i = 0; i < fields.length; i += PAGE) {
          await this.cmd.run(this.cmd.client.hdel(this.presenceKey, ...fields.slice(i, i + PAGE)), 1000);
        }
        await this.cmd.run(this.cmd.client.del(this.nodeKey), 1000);
      } catch {
        // Best effort: the heartbeat lapses anyway.
      }
      await this.cmd.run(this.cmd.client.quit(), 1000).catch(() => {});
    }
    this.cmd.client.disconnect();
  }
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
]);

/**
 * `redis://[user:pass@]host[:port][/db]?stream=mercure&size=100000` (`rediss://` for TLS). Options:
 * `stream` (key, default `mercure`), `size` or `max_length` (history length, default 100 000),
 * `wait` (replicas that must acknowledge each publish, default 0), `wait_timeout` (ms, 1000),
 * `command_timeout` (ms, 5000), `connect_timeout` (ms, 5000), `heartbeat` (presence heartbeat ms,
 * 5000), `tls=1` (TLS on `redis://`), `tls_ca_file` (PEM CA bundle), `tls_insecure=1` (skip
 * certificate verification; testing only), `name` (client name shown by CLIENT LIST).
 */
export function redisTransportFromUrl(url: URL, logger: Logger): RedisTransport {
  const scheme = url.protocol.replace(/:$/, '');
  if (scheme !== 'redis' && scheme !== 'rediss') throw new Error(`Redis transport: unsupported scheme "${scheme}://"`);
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
  if (scheme === 'rediss' || flag('tls')) {
    const tls: NonNullable<RedisOptions['tls']> = {};
    if (!isIP(host)) tls.servername = host;
    const ca = q.get('tls_ca_file');
    if (ca) tls.ca = readFileSync(ca);
    if (flag('tls_insecure')) tls.rejectUnauthorized = false;
    redis.tls = tls;
  }
  const size = num('size') ?? num('max_length');
  const heartbeat = num('heartbeat');
  return new RedisTransport({
    redis,
    stream: q.get('stream') || undefined,
    size,
    waitReplicas: num('wait'),
    waitTimeout: num('wait_timeout'),
    commandTimeout: num('command_timeout'),
    connectTimeout: num('connect_timeout'),
    heartbeatInterval: heartbeat,
    logger,
  });
}
