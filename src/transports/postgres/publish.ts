/*
 * Publishing: dispatches wait in a queue and are written as many per transaction as are waiting
 * (group commit), which amortises the commit fsync and the cluster-wide write lock. Each
 * transaction takes the lock, inserts its rows and notifies the listeners with the highest seq.
 */
import { escapeLiteral } from 'pg';
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError } from '../../core/transport.js';
import type { Update } from '../../core/update.js';
import type { PostgresPool } from './pool.js';
import { LOCK_WRITE } from './schema.js';

interface Pending {
  readonly update: Update;
  readonly bytes: number;
  readonly resolve: () => void;
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
  ) {}

  /** Resolves once the update is committed (and its NOTIFY sent), with the rest of its batch. */
  dispatch(update: Update): Promise<void> {
    return new Promise<void>((resolve, reject) => {
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
      const batch = this.queue.splice(0, n);
      try {
        await this.insert(batch.map((p) => p.update));
        this.db.ok();
        for (const p of batch) p.resolve();
      } catch (err) {
        const e = this.db.unavailable(err, 'cannot store the update');
        if (e instanceof TransportUnavailableError) this.log.warn({ err, transport: 'postgres' }, 'publish failed: PostgreSQL unavailable');
        for (const p of batch) p.reject(e);
      }
    }
  }

  private async insert(updates: readonly Update[]): Promise<void> {
    const values: unknown[] = [];
    const rows: string[] = [];
    for (const u of updates) {
      const i = values.length;
      rows.push(`($${i + 1}, $${i + 2}, $${i + 3}, $${i + 4}, $${i + 5}, $${i + 6})`);
      values.push(u.id, u.topics, Buffer.from(u.data, 'utf8'), u.private, u.type ?? null, u.retry || null);
    }
    const text =
      `WITH ins AS (INSERT INTO ${this.updates} (id, topics, data, private, type, retry) VALUES ${rows.join(', ')} RETURNING seq) ` +
      `SELECT pg_notify(${escapeLiteral(this.channel)}, max(seq)::text) FROM ins`;
    // The lock makes seq order = commit order cluster-wide (see index.ts); the NOTIFY
    // goes out when the transaction commits.
    await this.db.transaction(
      async (c) => {
        await c.query({ text, values });
      },
      `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_WRITE}, ${this.lockKey})`,
    );
  }
}
