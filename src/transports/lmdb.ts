import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import nodePath from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import type { Logger } from '../observability/logger.js';
import { DEFAULT_DEDUPE_WINDOW, TransportUnavailableError, type DispatchResult, type Transport, type TransportHealth } from '../core/transport.js';
import type { StoredUpdate, Update } from '../core/update.js';
import { claimStore, StoreInUseError, type StoreClaim } from './store-lock.js';
import { lmdbWebhookStore } from './lmdb-webhook-state.js';

import { lmdbOptionsFromUrl, type LmdbTransportOptions } from './lmdb-options.js';

export { StoreInUseError } from './store-lock.js';
export { lmdbOptionsFromUrl, parseDuration, type LmdbTransportOptions } from './lmdb-options.js';


export const LMDB_DEFAULT_SIZE = 100_000;
export const LMDB_DEFAULT_MAX_AGE = 7 * 24 * 3600 * 1000;
/** Most entries deleted per cleanup transaction, so retention never stalls writers for long. */
const TRIM_BATCH = 1000;
/** After a failed write, how often a probe write checks whether the store took writes again. */
const PROBE_INTERVAL = 2000;
/** Bump when the on-disk layout changes; a store written with another format is refused. */
const FORMAT = 1;

/**
 * On-disk layout, all in one LMDB environment:
 *
 * - `updates`: key = seq (a JS number, ordered-binary so keys sort numerically), value = a
 *   msgpack tuple `Row`. Seq strictly increases, so key order is dispatch order, and time order
 *   for age retention: the oldest entries are always at the front of the key range.
 * - `ids` (dupSort): key = `idKey(id)`, values = every seq stored under that id, sorted. The
 *   first value whose update still exists is the earliest occurrence, found in O(log n).
 *   An (id, seq) pair is removed together with its update, in the same transaction.
 * - `meta`: `format` (layout version) and `floor` = [seq, id] of the newest update ever
 *   deleted by retention, so seq and lastEventId survive a history that expired entirely.
 */
type Row = [ts: number, id: string, topics: string[], data: string, priv: boolean, type: string | null, retry: number];

interface Stores {
  root: RootDatabase;
  updates: Database<Row, number>;
  ids: Database<number, string>;
  meta: Database<unknown, string>;
}

interface Pending {
  readonly stored: StoredUpdate;
  /** What is written: the row under `key`, and the id index entry. */
  readonly key: number;
  readonly row: Row;
  /** 0 = writing, 1 = committed, 2 = failed. */
  state: 0 | 1 | 2;
  error?: unknown;
  done: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Store paths claimed in this process: a second transport on the same path would fork the seq.
 * Other processes are kept out by the store claim (store-lock.ts).
 */
const openPaths = new Set<string>();

const silent: Logger = { error() {}, warn() {}, info() {}, debug() {} };

/**
 * The default transport: an embedded, persistent LMDB store (the analogue of the reference
 * hub's Bolt database), with history bounded by count and age by default.
 *
 * Durability: writes go through lmdb-js's asynchronous, batched write thread. All dispatches
 * issued in the same event turn share one transaction and one fdatasync. `overlappingSync` is
 * turned off (and `noSync`/`noMetaSync` are never used), so a transaction's promise resolves only
 * once LMDB has synced it to disk: `dispatch` resolving means the update survives a crash or
 * power loss. Deliveries happen after commit, in seq order, whatever order commits complete in.
 *
 * One owning process per store path, enforced: `claim()` (run by `start()`, and by
 * createTransport before it returns) refuses a store that another process owns with a
 * StoreInUseError naming its pid; a claim dies with its process, so a store left by a crashed
 * hub opens at once. A cluster's primary owns the store and its workers reach it over IPC.
 * LMDB itself supports several processes on one environment;
 * sharing a store between hub workers would need (1) the seq assigned inside the write
 * transaction (an async `transaction()` reading the last key) instead of from this process's
 * counter, (2) every process tailing `updates` after each commit anywhere (a notification
 * channel between workers, then a range read from the last delivered seq, after
 * `resetReadTxn()`), and (3) retention run by one elected process only.
 */
export class LmdbTransport implements Transport {
  readonly name = 'lmdb';
  /** Webhook registrations and cursors, in this store's `webhooks` database. */
  readonly webhooks = lmdbWebhookStore(() => this.stores?.root ?? null);
  readonly path: string;
  private readonly size: number;
  /** Count retention lets history exceed `size` by this much (1%, ≤ TRIM_BATCH), then trims back to `size`. */
  private readonly slack: number;
  private readonly maxAge: number;
  private readonly cleanupInterval: number;
  readonly dedupeWindow: number;
  /** Dispatches not committed yet, by id: a retry arriving meanwhile waits for the first. */
  private readonly writing = new Map<string, Pending>();
  private readonly log: Logger;
  private stores: Stores | null = null;
  private openError: string | null = null;
  private writeError: string | null = null;
  private closed = false;
  private deliver: ((u: StoredUpdate) => void) | null = null;
  /** Last seq handed out (not necessarily committed yet). */
  private seq = 0;
  private lastId = 'earliest';
  /** Committed entries in `updates`. */
  private count = 0;
  /** Dispatches in seq order, waiting to be delivered: `pending[pendingHead…]`. */
  private pending: Pending[] = [];
  private pendingHead = 0;
  /** Dispatches not yet handed to LMDB: they go in the next commit. */
  private unwritten: Pending[] = [];
  /** A commit of ours is in flight (at most one at a time: the group commit). */
  private committing = false;
  private commitScheduled = false;
  private trimming: Promise<void> | null = null;
  private trimAgain = false;
  private timer: NodeJS.Timeout | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private claiming: Promise<void> | null = null;
  private ownership: StoreClaim | null = null;
  /** This instance holds the path in `openPaths`. */
  private reserved = false;

  constructor(options: LmdbTransportOptions, logger?: Logger) {
    this.log = logger ?? silent;
    if (!options.path) throw new Error('lmdb transport: a path is required');
    this.path = nodePath.resolve(expandHome(options.path));
    this.size = nonNegative('size', options.size ?? LMDB_DEFAULT_SIZE);
    this.slack = Math.min(TRIM_BATCH, Math.ceil(this.size / 100));
    this.maxAge = nonNegative('maxAge', options.maxAge ?? LMDB_DEFAULT_MAX_AGE);
    this.dedupeWindow = nonNegative('dedupeWindow', options.dedupeWindow ?? DEFAULT_DEDUPE_WINDOW);
    this.cleanupInterval =
      options.cleanupInterval !== undefined && options.cleanupInterval > 0
        ? options.cleanupInterval
        : Math.min(60_000, Math.max(1000, Math.floor(this.maxAge / 10)));
    if (this.size === 0 && this.maxAge === 0) {
      this.log.warn({ path: this.path }, 'lmdb transport: history is unbounded (size=0 and max_age=0), the store will grow forever');
    }
    if (openPaths.has(this.path)) {
      this.openError = `cannot open LMDB store at ${this.path}: the store is already open in this process`;
      this.log.error({ path: this.path }, 'lmdb transport: cannot open the store');
    } else {
      openPaths.add(this.path);
      this.reserved = true;
    }
  }

  /**
   * Makes this process the store's owner, then opens it (nothing is read or written before).
   * Rejects with StoreInUseError when another process owns it; other failures to open are
   * reported by `health()`. Idempotent.
   */
  claim(): Promise<void> {
    this.claiming ??= this.claimAndOpen();
    return this.claiming;
  }

  private async claimAndOpen(): Promise<void> {
    if (this.openError || this.closed) return;
    try {
      this.ownership = await claimStore(this.path);
    } catch (err) {
      this.unreserve();
      // Refused: the caller says so, in one line (the CLI exits 2 with it).
      if (err instanceof StoreInUseError) {
        this.openError = err.message;
        throw err;
      }
      this.openError = `cannot open LMDB store at ${this.path}: ${errorMessage(err)}`;
      this.log.error({ err, path: this.path }, 'lmdb transport: cannot claim the store');
      return;
    }
    if (this.closed) return void (await this.releaseOwnership());
    try {
      this.stores = this.openStores();
    } catch (err) {
      this.openError = `cannot open LMDB store at ${this.path}: ${errorMessage(err)}`;
      this.log.error({ err, path: this.path }, 'lmdb transport: cannot open the store');
      this.unreserve();
      await this.releaseOwnership();
    }
  }

  private unreserve(): void {
    if (this.reserved) openPaths.delete(this.path);
    this.reserved = false;
  }

  private async releaseOwnership(): Promise<void> {
    const o = this.ownership;
    this.ownership = null;
    await o?.release();
  }

  private openStores(): Stores {
    // An existing directory or file keeps its mode; a new path is a file when it has an extension.
    const stat = fs.statSync(this.path, { throwIfNoEntry: false });
    const root = open({
      path: this.path,
      noSubdir: stat ? !stat.isDirectory() : nodePath.extname(this.path) !== '',
      // Classic LMDB durability: the commit (and the promise of every write in it) completes
      // after fdatasync. Never noSync / noMetaSync / mapAsync.
      overlappingSync: false,
      maxDbs: 4,
    });
    try {
      const updates = root.openDB<Row, number>({ name: 'updates', encoding: 'msgpack' });
      const ids = root.openDB<number, string>({ name: 'ids', dupSort: true, encoding: 'ordered-binary' });
      const meta = root.openDB<unknown, string>({ name: 'meta', encoding: 'msgpack' });
      const format = meta.get('format');
      if (format === undefined) meta.putSync('format', FORMAT);
      else if (format !== FORMAT) throw new Error(`unsupported store format ${String(format)} (expected ${FORMAT})`);

      this.count = (updates.getStats() as { entryCount?: number }).entryCount ?? 0;
      const floor = meta.get('floor') as [number, string] | undefined;
      if (floor) [this.seq, this.lastId] = floor;
      for (const { key, value } of updates.getRange({ reverse: true, limit: 1 })) {
        if (key > this.seq) [this.seq, this.lastId] = [key, value[1]];
      }
      return { root, updates, ids, meta };
    } catch (err) {
      void root.close();
      throw err;
    }
  }

  async start(deliver: (update: StoredUpdate) => void): Promise<void> {
    this.deliver = deliver;
    await this.claim();
    if (!this.stores) return;
    if (this.maxAge > 0) {
      this.timer = setInterval(() => void this.trim(), this.cleanupInterval);
      this.timer.unref();
    }
    // A store reopened after a while, or with a smaller size, is brought within bounds now.
    void this.trim();
  }

  dispatch(update: Update): Promise<DispatchResult> {
    const s = this.stores;
    if (!s || this.closed) return Promise.reject(new TransportUnavailableError(this.unavailableReason(), { stored: 'no' }));
    const now = Date.now();
    if (this.dedupeWindow > 0) {
      const first = this.writing.get(update.id);
      if (first) return first.done.then(() => 'duplicate');
      if (this.storedSince(s, update.id, now - this.dedupeWindow)) return Promise.resolve('duplicate');
    }
    const seq = ++this.seq;
    const row: Row = [
      now,
      update.id,
      [...update.topics],
      update.data,
      update.private,
      update.type || null,
      update.retry || 0,
    ];
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const entry: Pending = { stored: toStored(seq, row), key: seq, row, state: 0, done, resolve, reject };
    this.pending.push(entry);
    if (this.dedupeWindow > 0) this.writing.set(update.id, entry);
    this.unwritten.push(entry);
    this.scheduleCommit();
    return done;
  }

  /**
   * Group commit. One transaction of ours is in flight at a time; dispatches that arrive while
   * it syncs wait and share the next one, so N concurrent publishers pay one fdatasync per
   * round instead of queueing N. The first commit after a quiet spell starts as soon as the
   * current callback is done (a microtask), not at the end of the event-loop turn: the turn may
   * hold a slice of a long fan-out (delivery-batch.ts), and the sync can run meanwhile on
   * lmdb-js's write thread. Each dispatch still resolves only after the transaction holding it
   * is synced.
   */
  private scheduleCommit(): void {
    if (this.committing || this.commitScheduled) return;
    this.commitScheduled = true;
    queueMicrotask(() => {
      this.commitScheduled = false;
      this.commit();
    });
  }

  private commit(): void {
    const s = this.stores;
    const batch = this.unwritten;
    if (batch.length === 0 || this.committing) return;
    this.unwritten = [];
    if (!s) {
      for (const e of batch) this.settle(e, new Error('the store is closed'));
      return;
    }
    this.committing = true;
    let write: Promise<unknown>;
    try {
      // One atomic unit: every update of the round and its index entry.
      write = s.root.batch(() => {
        for (const e of batch) {
          s.updates.put(e.key, e.row);
          s.ids.put(idKey(e.stored.id), e.key);
        }
      });
    } catch (err) {
      write = Promise.reject(err);
    }
    write.then(
      () => this.settleAll(batch, null),
      (err: unknown) => this.settleAll(batch, err ?? new Error('commit failed')),
    );
  }

  private settleAll(batch: Pending[], err: unknown): void {
    this.committing = false;
    for (const e of batch) {
      if (err == null) e.state = 1;
      else {
        e.state = 2;
        e.error = err;
      }
    }
    this.drain();
    // What arrived during this commit goes now, without waiting for another turn.
    if (this.unwritten.length > 0) this.commit();
  }

  private settle(entry: Pending, err: unknown): void {
    if (err == null) entry.state = 1;
    else {
      entry.state = 2;
      entry.error = err;
    }
    this.drain();
  }

  /** Delivers and acknowledges settled dispatches in seq order, stopping at the first unsettled. */
  private drain(): void {
    let committed = false;
    while (this.pendingHead < this.pending.length) {
      const entry = this.pending[this.pendingHead]!;
      if (entry.state === 0) break;
      this.pendingHead++;
      if (this.writing.get(entry.stored.id) === entry) this.writing.delete(entry.stored.id);
      if (entry.state === 1) {
        committed = true;
        this.count++;
        this.lastId = entry.stored.id;
        this.writeError = null;
        if (this.deliver) {
          try {
            this.deliver(entry.stored);
          } catch (err) {
            this.log.error({ err }, 'lmdb transport: deliver callback threw');
          }
        }
        entry.resolve();
      } else {
        const reason = `LMDB write failed: ${errorMessage(entry.error)}`;
        if (this.writeError !== reason) this.log.error({ err: entry.error, path: this.path }, 'lmdb transport: write failed');
        this.writeError = reason;
        this.startProbing();
        entry.reject(new TransportUnavailableError(reason, { cause: entry.error, stored: 'no' }));
      }
    }
    if (this.pendingHead === this.pending.length) {
      this.pending = [];
      this.pendingHead = 0;
    } else if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    if (committed && this.size > 0 && this.count > this.size + this.slack) void this.trim();
  }

  /**
   * While a write failure makes the transport not ready (disk full, I/O error…), nothing else
   * might publish to find out that it recovered: a small write is retried every few seconds and
   * the first one that commits makes the transport ready again.
   */
  private startProbing(): void {
    if (this.probeTimer) return;
    let inFlight = false;
    this.probeTimer = setInterval(() => {
      const s = this.stores;
      if (!s || this.closed || !this.writeError) return this.stopProbing();
      if (inFlight) return;
      inFlight = true;
      let write: Promise<unknown>;
      try {
        write = s.root.batch(() => s.meta.put('probe', Date.now()));
      } catch (err) {
        write = Promise.reject(err);
      }
      write.then(
        () => {
          inFlight = false;
          if (this.writeError) this.log.info({ path: this.path }, 'lmdb transport: the store takes writes again');
          this.writeError = null;
          this.stopProbing();
        },
        () => {
          inFlight = false;
        },
      );
    }, PROBE_INTERVAL);
    this.probeTimer.unref();
  }

  private stopProbing(): void {
    if (this.probeTimer) clearInterval(this.probeTimer);
    this.probeTimer = null;
  }

  /**
   * Retention: deletes the oldest entries beyond `size` or older than `maxAge`, at most
   * TRIM_BATCH per transaction, reading only the head of the key range. Single-flight. Count
   * retention waits for `slack` extra entries and then deletes them in one transaction, so a
   * steady stream of publishes costs one cleanup commit per `slack` publishes, not one each.
   */
  private trim(): Promise<void> {
    if (this.trimming) {
      this.trimAgain = true;
      return this.trimming;
    }
    const run = async (): Promise<void> => {
      try {
        do {
          this.trimAgain = false;
          while (await this.trimBatch());
        } while (this.trimAgain && !this.closed);
      } catch (err) {
        this.log.warn({ err, path: this.path }, 'lmdb transport: history cleanup failed');
      } finally {
        this.trimming = null;
      }
    };
    this.trimming = run();
    return this.trimming;
  }

  /** Deletes one batch; resolves whether there may be more to delete. */
  private async trimBatch(): Promise<boolean> {
    const s = this.stores;
    if (!s || this.closed) return false;
    const excess = this.size > 0 && this.count > this.size + this.slack ? this.count - this.size : 0;
    const cutoff = this.maxAge > 0 ? Date.now() - this.maxAge : -Infinity;
    if (excess <= 0 && cutoff === -Infinity) return false;
    const victims: [number, string][] = [];
    for (const { key, value } of s.updates.getRange({ limit: TRIM_BATCH })) {
      if (victims.length < excess || value[0] < cutoff) victims.push([key, value[1]]);
      else break;
    }
    if (victims.length === 0) return false;
    const newest = victims[victims.length - 1]!;
    await s.root.batch(() => {
      for (const [seq, id] of victims) {
        s.updates.remove(seq);
        s.ids.remove(idKey(id), seq);
      }
      s.meta.put('floor', newest);
    });
    this.count -= victims.length;
    return victims.length === TRIM_BATCH;
  }

  /** Whether `id` is in the store with a write time at or after `since` (survives restarts). */
  private storedSince(s: Stores, id: string, since: number): boolean {
    for (const seq of s.ids.getValues(idKey(id))) {
      const row = s.updates.get(seq);
      if (row && row[1] === id && row[0] >= since) return true;
    }
    return false;
  }

  async history(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    const s = this.stores;
    if (!s || this.closed) throw new TransportUnavailableError(this.unavailableReason());
    // Entries past maxAge that cleanup has not deleted yet are not history any more.
    const cutoff = this.maxAge > 0 ? Date.now() - this.maxAge : -Infinity;
    let start: number | undefined;
    if (after !== 'earliest') {
      for (const seq of s.ids.getValues(idKey(after))) {
        const row = s.updates.get(seq);
        // Checking the id guards against hashed-key collisions and stray index entries.
        if (row && row[1] === after && row[0] >= cutoff) {
          start = seq;
          break;
        }
      }
      if (start === undefined) return { found: false };
    }
    // One read snapshot for the whole replay.
    const range = start === undefined ? s.updates.getRange({}) : s.updates.getRange({ start, exclusiveStart: true });
    for (const { key, value } of range) {
      if (value[0] < cutoff) continue;
      onUpdate(toStored(key, value));
    }
    return { found: true };
  }

  async lastEventId(): Promise<string> {
    return this.lastId;
  }

  historySize(): number {
    return this.count;
  }

  health(): TransportHealth {
    if (this.closed) return { ready: false, reason: 'transport closed' };
    if (!this.stores) return { ready: false, reason: this.openError ?? 'store not open' };
    if (this.writeError) return { ready: false, reason: this.writeError };
    return { ready: true };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stopProbing();
    const s = this.stores;
    if (!s) {
      // A claim still in progress ends with the store released (claimAndOpen sees `closed`).
      await this.claiming?.catch(() => {});
      this.unreserve();
      await this.releaseOwnership();
      return;
    }
    // Let in-flight dispatches and cleanup finish, then close the environment.
    await Promise.allSettled(this.pending.slice(this.pendingHead).map((p) => p.done));
    await this.trimming;
    this.deliver = null;
    try {
      await s.root.flushed;
      await s.root.close();
    } finally {
      this.stores = null;
      this.unreserve();
      // Only once the environment is closed may another process own the store.
      await this.releaseOwnership();
    }
  }

  private unavailableReason(): string {
    if (this.closed) return 'transport closed';
    return this.openError ?? this.writeError ?? 'store not open';
  }
}

function toStored(seq: number, row: Row): StoredUpdate {
  const [, id, topics, data, priv, type, retry] = row;
  return Object.freeze({
    topics: Object.freeze(topics),
    data,
    private: priv,
    id,
    type: type || undefined,
    retry: retry || undefined,
    seq: BigInt(seq),
  });
}

/**
 * Index key for an id. Ids are arbitrary strings, but LMDB keys are limited (and cannot be
 * empty): long ids are indexed by their SHA-256, the two forms told apart by a prefix. Lookups
 * verify the id on the stored update, so a collision can never resolve the wrong cursor.
 */
function idKey(id: string): string {
  if (id.length <= 256) return `=${id}`;
  return `#${createHash('sha256').update(id).digest('base64url')}`;
}

function nonNegative(name: string, v: number): number {
  if (!Number.isFinite(v) || v < 0) throw new Error(`lmdb transport: "${name}" must be a non-negative number, got ${v}`);
  return Math.floor(v);
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? nodePath.join(os.homedir(), p.slice(1)) : p;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}


/** Builds the transport for an `lmdb://` (or legacy `bolt://`) URL; see lmdbOptionsFromUrl. */
export function lmdbTransportFromUrl(url: URL, logger: Logger): LmdbTransport {
  return new LmdbTransport(lmdbOptionsFromUrl(url), logger);
}
