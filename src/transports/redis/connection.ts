/*
 * One Redis connection as the transport uses it: commands that fail as soon as the link drops
 * instead of hanging (ioredis' resending is off, so it would never answer them), a readiness wait,
 * outage logging once per outage, and the 503 error naming the cause. Both the command connection
 * and the stream reader are one of these.
 *
 * A command that times out makes the connection suspect: on a silently dropped link every command
 * behind it would wait its own timeout. The socket is then reset (RST, not FIN: a graceful close
 * would still hand the kernel's unsent bytes to Redis once the link heals, and a publish already
 * answered 503 would be stored after newer ones), the commands in flight fail at once, and the
 * connection is not ready until ioredis reconnected and its ready check (the probe) passed.
 *
 * On Redis Cluster (cluster.ts) the client holds one socket per node: all of them are reset, so the
 * cluster reconnects from scratch (slot map and ready check included) before it is trusted again.
 * There the connection is ready only when the socket to the master of the hub's slot is too:
 * ioredis refuses (without sending) a command for a node whose connection is being set up.
 */
import type { Socket } from 'node:net';
import { Cluster, type Redis } from 'ioredis';
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError, type StoredOutcome } from '../../core/transport.js';
import { keySlot, slotMaster } from './cluster.js';

/** Most items one command reads or writes (XRANGE/XREAD/HSCAN counts, HSET/HDEL batches). */
export const PAGE = 1000;

/** One ioredis connection (a single node, or a Redis Cluster) plus what the transport needs around it. */
export class Connection {
  lastError: string | undefined;
  /** Why the connection is distrusted since a command timed out; cleared when it is ready again. */
  suspect: string | undefined;
  private readonly inflight = new Set<(err: Error) => void>();
  private wasReady = false;
  private down = false;
  /** Slot of the hub's keys, on a cluster. */
  private readonly slot: number | undefined;

  constructor(
    readonly client: Redis | Cluster,
    private readonly role: string,
    private readonly address: string,
    private readonly logger: Logger | undefined,
    /** On a cluster, a key of the hub (all its keys share its slot). */
    key?: string,
  ) {
    this.slot = client instanceof Cluster && key !== undefined ? keySlot(key) : undefined;
    this.client.on('error', (err: Error) => {
      this.lastError = err.message || String(err);
    });
    // A cluster reports a failing node apart from its own errors; that is usually the cause.
    this.client.on('node error', (err: Error, node: string) => {
      this.lastError = `${node}: ${err.message || String(err)}`;
    });
    this.client.on('ready', () => {
      this.lastError = undefined;
      this.suspect = undefined;
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
    if (this.client.status !== 'ready' || this.suspect !== undefined) return false;
    if (this.slot === undefined || !(this.client instanceof Cluster)) return true;
    return slotMaster(this.client, this.slot)?.status === 'ready';
  }

  /**
   * Settles with the command, or rejects as soon as the connection is lost (or after `ms`). A
   * timeout (this one or ioredis' `commandTimeout`) makes the connection suspect (see above).
   */
  run<T>(command: Promise<T>, ms = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const fail = (err: Error): void => {
        // ioredis keeps the commands of a closed connection pending (it neither resends nor
        // rejects them), so their own timeout fires later, on the next connection: ignore it.
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        this.inflight.delete(fail);
        reject(err);
        if (err.message === 'Command timed out' || err.message.startsWith('Redis did not answer')) this.distrust(err.message);
      };
      this.inflight.add(fail);
      if (ms > 0) timer = setTimeout(() => fail(new Error(`Redis did not answer within ${ms} ms`)), ms);
      command.then(
        (value) => {
          if (settled) return;
          settled = true;
          if (timer) clearTimeout(timer);
          this.inflight.delete(fail);
          resolve(value);
        },
        (err: unknown) => fail(err instanceof Error ? err : new Error(String(err))),
      );
    });
  }

  /** Resets the socket and fails what is in flight; ioredis reconnects (see the file comment). */
  distrust(why: string): void {
    if (this.suspect !== undefined || this.client.status !== 'ready') return;
    this.suspect = `not responding (${why})`;
    this.logger?.warn({ redis: this.address, connection: this.role, reason: why }, 'Redis not responding: resetting the connection');
    const lost = new Error(`Redis not responding (${why}): connection reset`);
    for (const fail of [...this.inflight]) fail(lost);
    this.inflight.clear();
    const cluster = this.client instanceof Cluster ? this.client : undefined;
    for (const c of cluster ? cluster.nodes('all') : [this.client]) {
      const socket = (c as unknown as { stream?: Socket }).stream;
      try {
        socket?.resetAndDestroy();
      } catch {
        // TLS: no TCP handle of its own to reset; destroying it is the best left.
        socket?.destroy();
      }
    }
    // A cluster whose node sockets are gone reconnects only once every node is dropped: drop them
    // all now (nodes still connecting included), so that it rebuilds its slot map and ready check.
    cluster?.disconnect(true);
  }

  /**
   * Connects a Redis Cluster client again when it gave up. ioredis retries (clusterRetryStrategy)
   * only a cluster that was connected once: when the very first connect fails, for example because
   * the slot map was asked of a node whose socket was still being set up (the offline queue is
   * off), the client stays closed for good. A single-node client reconnects by itself.
   */
  revive(): void {
    if (!(this.client instanceof Cluster)) return;
    if (this.client.status !== 'close' && this.client.status !== 'end') return;
    this.client.connect().catch((err: unknown) => {
      this.lastError = err instanceof Error ? err.message : String(err);
    });
  }

  /** Resolves when the connection is ready, after `ms`, or on abort, whichever comes first. */
  waitReady(ms: number, signal: AbortSignal): Promise<void> {
    if (this.ready || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        clearInterval(poll);
        this.client.off('ready', onReady);
        this.client.off('end', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const onReady = (): void => {
        if (this.ready) done();
      };
      // On a cluster readiness also depends on a node's connection: looked at, not listened to.
      const poll = this.slot !== undefined ? setInterval(onReady, 20) : undefined;
      const timer = setTimeout(done, ms);
      this.client.on('ready', onReady);
      this.client.once('end', done);
      signal.addEventListener('abort', done);
    });
  }

  describe(): string {
    if (this.suspect) return this.suspect;
    if (this.client.status === 'ready' && this.slot !== undefined && !this.ready) {
      const node = slotMaster(this.client as Cluster, this.slot);
      return node ? `connection to ${node.options.host}:${node.options.port} ${node.status}` : `no master known for slot ${this.slot}`;
    }
    return this.lastError ?? (this.client.status === 'ready' ? 'ready' : `connection ${this.client.status}`);
  }

  /** The error a publisher or reader gets when this connection cannot serve `what`. */
  unavailable(what: string, err: unknown, stored?: StoredOutcome): TransportUnavailableError {
    let reason = err instanceof Error ? err.message : String(err);
    // ioredis refuses a command it cannot write at once (no offline queue): it never left.
    if (reason.includes('enableOfflineQueue')) stored = 'no';
    // A cluster node refused it without running it (a redirection ioredis did not follow, or the
    // cluster cannot serve the slot); cluster.ts says which redirections are followed.
    if (/^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /.test(reason)) stored = 'no';
    // ioredis' own message for a disconnected client says nothing about why.
    if (reason.includes('enableOfflineQueue') || reason.startsWith('Connection is closed')) {
      reason = `not connected (${this.lastError ?? this.client.status})`;
    }
    return new TransportUnavailableError(`Redis ${this.address}: ${what}: ${reason}`, { cause: err, stored });
  }
}

/** Resolves after `ms`, or on abort. */
export const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
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
