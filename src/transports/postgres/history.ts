/*
 * History: replay from an update id, the last event id, the cached row count, and retention. The
 * retention sweep runs on one node at a time (a try-lock) in bounded chunks, and never deletes a
 * row this node has not delivered yet nor one younger than the grace period, so that slower nodes
 * can still fetch it: history is bounded approximately, as the transport contract allows.
 */
import type { StoredUpdate } from '../../core/update.js';
import type { PostgresPool } from './pool.js';
import { LOCK_RETENTION, PAGE, toStored, type UpdateRow } from './schema.js';

/** Most rows one retention statement deletes, so a sweep never holds locks for long. */
const DELETE_CHUNK = 5000;

export interface RetentionLimits {
  /** Updates kept (approximately). */
  readonly size: number;
  /** Updates older than this many ms go; 0 = no age limit. */
  readonly maxAge: number;
  /** Rows younger than this (ms) are never deleted. */
  readonly retentionGrace: number;
}

export class PostgresHistory {
  /** Row count as last seen: refreshed by maintenance and by full replays. */
  cachedCount = 0;
  /** When the count was last refreshed (ms since the epoch). */
  lastCount = 0;
  private readonly size: number;
  private readonly maxAge: number;
  private readonly retentionGrace: number;

  constructor(
    private readonly db: PostgresPool,
    /** Quoted name of the updates table. */
    private readonly updates: string,
    private readonly lockKey: number,
    limits: RetentionLimits,
  ) {
    this.size = limits.size;
    this.maxAge = limits.maxAge;
    this.retentionGrace = limits.retentionGrace;
  }

  /** Replays the updates after `after` (or all), in seq order, up to the newest one at call time. */
  async replay(after: string, onUpdate: (update: StoredUpdate) => void): Promise<{ found: boolean }> {
    const updates = this.updates;
    const age = (param: string) =>
      this.maxAge > 0 ? `AND created_at >= now() - ${param}::double precision * interval '1 millisecond'` : '';
    const ageArg = this.maxAge > 0 ? [this.maxAge] : [];
    try {
      let cursor = '0';
      if (after !== 'earliest') {
        const r = await this.db.pool.query<{ seq: string | null }>(
          `SELECT min(seq)::text AS seq FROM ${updates} WHERE id = $1 ${age('$2')}`,
          [after, ...ageArg],
        );
        const seq = r.rows[0]?.seq;
        if (seq === null || seq === undefined) {
          this.db.ok();
          return { found: false };
        }
        cursor = seq;
      }
      // Stop at what exists now, so a replay ends even under a steady stream of publishes.
      const top = await this.db.pool.query<{ seq: string | null }>(`SELECT max(seq)::text AS seq FROM ${updates}`);
      const upper = top.rows[0]?.seq ?? '0';
      let count = 0;
      const text = `SELECT seq, id, topics, data, private, type, retry FROM ${updates}
        WHERE seq > $1 AND seq <= $3 ${age('$4')} ORDER BY seq LIMIT $2`;
      for (;;) {
        const r = await this.db.pool.query<UpdateRow>(text, [cursor, PAGE, upper, ...ageArg]);
        for (const row of r.rows) {
          count++;
          onUpdate(toStored(row));
        }
        if (r.rows.length < PAGE) break;
        cursor = String(r.rows[r.rows.length - 1]!.seq);
      }
      this.db.ok();
      if (after === 'earliest') this.cachedCount = count;
      return { found: true };
    } catch (err) {
      throw this.db.unavailable(err, 'cannot read history');
    }
  }

  async lastEventId(): Promise<string> {
    try {
      const r = await this.db.pool.query<{ id: string }>(`SELECT id FROM ${this.updates} ORDER BY seq DESC LIMIT 1`);
      this.db.ok();
      return r.rows[0]?.id ?? 'earliest';
    } catch (err) {
      throw this.db.unavailable(err, 'cannot read the last event id');
    }
  }

  /**
   * Deletes expired rows, up to ten chunks per call. `delivered` tells the newest update this node
   * delivered, read again before each chunk (null: not positioned yet, nothing is deleted). Returns
   * how many rows went.
   */
  async trim(delivered: () => bigint | null): Promise<number> {
    let deleted = 0;
    for (let i = 0; i < 10; i++) {
      const n = await this.retention(delivered());
      deleted += n;
      if (n < DELETE_CHUNK) break;
    }
    return deleted;
  }

  /** Deletes one chunk of expired rows (by size and by age). Returns how many. */
  private async retention(lastSeq: bigint | null): Promise<number> {
    if (lastSeq === null) return 0;
    const updates = this.updates;
    const delivered = lastSeq.toString();
    return this.db.transaction(async (c) => {
      const lock = await c.query<{ ok: boolean }>(`SELECT pg_try_advisory_xact_lock(${LOCK_RETENTION}, ${this.lockKey}) AS ok`);
      if (!lock.rows[0]?.ok) return 0; // another node is on it
      const bySize = await c.query(
        `DELETE FROM ${updates} WHERE seq IN (
           SELECT seq FROM ${updates}
           WHERE seq <= least((SELECT max(seq) FROM ${updates}) - $1::bigint, $2::bigint)
             AND created_at < now() - $3::double precision * interval '1 millisecond'
           ORDER BY seq LIMIT ${DELETE_CHUNK})`,
        [this.size, delivered, this.retentionGrace],
      );
      let n = bySize.rowCount ?? 0;
      if (this.maxAge > 0 && n < DELETE_CHUNK) {
        // Rows come in (roughly) creation order: look only at the oldest ones, never scan the table.
        const byAge = await c.query(
          `DELETE FROM ${updates} WHERE seq IN (
             SELECT seq FROM (SELECT seq, created_at FROM ${updates} WHERE seq <= $1::bigint ORDER BY seq LIMIT ${DELETE_CHUNK}) o
             WHERE created_at < now() - $2::double precision * interval '1 millisecond')`,
          [delivered, Math.max(this.maxAge, this.retentionGrace)],
        );
        n += byAge.rowCount ?? 0;
      }
      return n;
    });
  }

  /** Re-counts the rows (other nodes publish and trim too). */
  async refreshCount(): Promise<void> {
    const r = await this.db.pool.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${this.updates}`);
    this.cachedCount = Number(r.rows[0]?.n ?? 0);
    this.lastCount = Date.now();
  }
}
