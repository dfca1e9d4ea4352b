/*
 * Publishing: dispatches wait in a queue and are written as many per transaction as are waiting
 * (group commit), which amortises the commit fsync and the cluster-wide write lock. Each
 * transaction takes the lock, inserts its rows and notifies the listeners with the highest seq.
 *
 * Deduplication happens in the same statement, under the same lock: a row whose id was inserted
 * less than the dedupe window ago (created_at, through the (id, seq) index) is skipped, so a
 * retry after a lost COMMIT answer is stored once, whichever node it reaches.
 *
 * A failed write says whether the update may have been stored: only when the COMMIT was sent
 * and no answer came back. Anything before (BEGIN, the lock, the INSERT) is rolled back by the
 * server once the connection is reset, which a timeout does (see pool.ts).
 */
import { escapeLiteral } from 'pg';
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError, type DispatchResult, type StoredOutcome } from '../../core/transport.js';
import type { Update } from '../../core/update.js';
import { isTimeout, type PostgresPool, type TransactionProgress } from './pool.js';
import { LOCK_WRITE } from './schema.js';

interface Pending {
  readonly update: Update;
  readonly bytes: number;
  readonly resolve: (result: DispatchResult) => void;
  readonly reject: (err: unknown) => void;
}

/** Most rows and bytes of data in one transaction, so one commit never grows without bound. */
const BATCH_ROWS = 500;
const BATCH_BYTES = 8 * 1024 * 1024;

export class PostgresWriter {
  private readonly queue: Pending[] = [];
  /** The batch loop while it runs. */
  private running: Promise<void> | null = null;

  constructor(
    private readonly db: PostgresPool,
    /** Quoted name of the updates table. */
    private readonly updates: string,
    /** NOTIFY channel of the listeners. */
    private readonly channel: string,
    private readonly lockKey: number,
    private readonly log: Logger,
    /** ms; 0 = reused ids are stored again. */
    private readonly dedupeWindow: number,
  ) {}

  /** Resolves once the update is committed (and its NOTIFY sent), with the rest of its batch. */
  dispatch(update: Update): Promise<DispatchResult> {
    if (this.db.suspect) return Promise.reject(this.refused());
    return new Promise<DispatchResult>((resolve, reject) => {
      let bytes = Buffer.byteLength(update.data) + update.id.length + 64;
      for (const t of update.topics) bytes += t.length;
      this.queue.push({ update, bytes, resolve, reject });
      this.kick();
    });
  }

  /** Settles when the batch being written, if any, has been answered. */
  async idle(): Promise<void> {
    if (this.running) await this.running.catch(() => {});
  }

  private kick(): void {
    if (this.running || this.queue.length === 0) return;
    this.running = this.drain().finally(() => {
      this.running = null;
      this.kick();
    });
  }

  /** Writes queued dispatches, as many per transaction as are waiting (group commit). */
  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      let n = 0;
      let bytes = 0;
      while (n < this.queue.length && n < BATCH_ROWS && (n === 0 || bytes + this.queue[n]!.bytes <= BATCH_BYTES)) {
        bytes += this.queue[n]!.bytes;
        n++;
      }
      // Queued behind a write that timed out: refused at once rather than each waiting its own.
      if (this.db.suspect) {
        for (const p of this.queue.splice(0)) p.reject(this.refused());
        return;
      }
      const batch = this.queue.splice(0, n);
      const progress: TransactionProgress = { commitSent: false };
      try {
        const stored = await this.insert(batch.map((p) => p.update), progress);
        this.db.ok();
        // The first of an id in the batch is the one inserted (or found stored); the rest repeat it.
        const seen = new Set<string>();
        for (const p of batch) {
          const first = !seen.has(p.update.id);
          seen.add(p.update.id);
          p.resolve(stored === null || (first && stored.has(p.update.id)) ? undefined : 'duplicate');
        }
      } catch (err) {
        if (isTimeout(err)) this.db.distrust(`no answer to a write: ${(err as Error).message}`);
        // A COMMIT answered with an error (it has a severity) did not commit either.
        const answered = typeof (err as { severity?: unknown } | null)?.severity === 'string';
        const outcome: StoredOutcome = progress.commitSent && !answered ? 'unknown' : 'no';
        const e = this.db.unavailable(err, 'cannot store the update', outcome);
        if (e instanceof TransportUnavailableError) this.log.warn({ err, transport: 'postgres', stored: outcome }, 'publish failed: PostgreSQL unavailable');
        for (const p of batch) p.reject(e);
      }
    }
  }

  private refused(): TransportUnavailableError {
    return new TransportUnavailableError(`PostgreSQL unavailable at ${this.db.where}: ${this.db.error ?? 'not responding'}`, { stored: 'no' });
  }

  /**
   * Inserts the batch in one transaction; returns the ids inserted, or null when deduplication
   * is off (then every row is).
   */
  private async insert(updates: readonly Update[], progress: TransactionProgress): Promise<Set<string> | null> {
    const values: unknown[] = [];
    const rows: string[] = [];
    const dedupe = this.dedupeWindow > 0;
    const ids = new Set<string>();
    for (const u of updates) {
      if (dedupe && ids.has(u.id)) continue;
      ids.add(u.id);
      const i = values.length;
      rows.push(`($${i + 1}::text, $${i + 2}::text[], $${i + 3}::bytea, $${i + 4}::boolean, $${i + 5}::text, $${i + 6}::bigint, ${rows.length})`);
      values.push(u.id, u.topics, Buffer.from(u.data, 'utf8'), u.private, u.type ?? null, u.retry || null);
    }
    const notify = `SELECT pg_notify(${escapeLiteral(this.channel)}, m::text) FROM (SELECT max(seq) AS m FROM ins) top WHERE m IS NOT NULL`;
    let text: string;
    if (dedupe) {
      values.push(this.dedupeWindow);
      text =
        `WITH v (id, topics, data, private, type, retry, ord) AS (VALUES ${rows.join(', ')}), ` +
        `ins AS (INSERT INTO ${this.updates} (id, topics, data, private, type, retry) ` +
        `SELECT id, topics, data, private, type, retry FROM v WHERE NOT EXISTS (SELECT 1 FROM ${this.updates} u ` +
        `WHERE u.id = v.id AND u.created_at > now() - $${values.length}::double precision * interval '1 millisecond') ` +
        `ORDER BY ord RETURNING seq, id) ` +
        `SELECT (SELECT array_agg(id) FROM ins) AS ids, (${notify}) AS n`;
    } else {
      text =
        `WITH v (id, topics, data, private, type, retry, ord) AS (VALUES ${rows.join(', ')}), ` +
        `ins AS (INSERT INTO ${this.updates} (id, topics, data, private, type, retry) ` +
        `SELECT id, topics, data, private, type, retry FROM v ORDER BY ord RETURNING seq) ${notify}`;
    }
    // The lock makes seq order = commit order cluster-wide (see index.ts) and the dedupe check
    // race-free; the NOTIFY goes out when the transaction commits.
    return this.db.transaction(
      async (c) => {
        const r = await c.query<{ ids: string[] | null }>({ text, values });
        return dedupe ? new Set(r.rows[0]?.ids ?? []) : null;
      },
      `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}, ${this.lockKey})`,
      progress,
    );
  }
}
