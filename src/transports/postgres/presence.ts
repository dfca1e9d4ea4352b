/*
 * Presence: `<table>_nodes` holds one row per process, refreshed by its heartbeat, and
 * `<table>_subscriptions` its subscription records, cascade-deleted with the node row. Each process
 * keeps its own records in memory and rewrites them whenever its rows may have been lost (outage,
 * declared dead by another node); listing drops the nodes silent for longer than `nodeTimeout`.
 */
import type { PoolClient } from 'pg';
import type { SubscriptionRecord } from '../../core/transport.js';
import type { PostgresPool } from './pool.js';
import type { Tables } from './schema.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class PostgresPresence {
  /** When this node's heartbeat last reached the database (ms since the epoch). */
  lastHeartbeat = 0;
  /** The table may disagree with `local`: the next heartbeat rewrites this node's rows. */
  dirty = false;
  /** This node's subscriptions, by key. */
  private readonly local = new Map<string, SubscriptionRecord>();

  constructor(
    private readonly db: PostgresPool,
    private readonly q: Tables,
    private readonly nodeId: string,
    /** A node silent for this long (ms) is dead. */
    private readonly nodeTimeout: number,
  ) {}

  private static key(r: SubscriptionRecord): string {
    return JSON.stringify([r.subscriber, r.kind, r.match]);
  }

  /** Refreshes this node's heartbeat, drops dead nodes, rewrites our rows when they were lost. */
  async heartbeat(): Promise<void> {
    await this.db.transaction(async (c) => {
      const inserted = await this.touchNode(c);
      if (inserted || this.dirty) {
        await c.query(`DELETE FROM ${this.q.subs} WHERE node_id = $1`, [this.nodeId]);
        await this.insertSubscriptions(c, [...this.local.values()]);
      }
      await c.query(
        `DELETE FROM ${this.q.nodes} WHERE node_id <> $1 AND heartbeat_at < now() - $2::double precision * interval '1 millisecond'`,
        [this.nodeId, this.nodeTimeout],
      );
    });
    this.dirty = false;
    this.lastHeartbeat = Date.now();
  }

  /** Upserts our node row; true when it had to be created (first time, or declared dead). */
  private async touchNode(c: PoolClient): Promise<boolean> {
    const r = await c.query<{ inserted: boolean }>(
      `INSERT INTO ${this.q.nodes} (node_id, heartbeat_at) VALUES ($1, now())
       ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now() RETURNING (xmax = 0) AS inserted`,
      [this.nodeId],
    );
    return r.rows[0]?.inserted ?? false;
  }

  private async insertSubscriptions(c: PoolClient, records: readonly SubscriptionRecord[]): Promise<void> {
    if (records.length === 0) return;
    await c.query(
      `INSERT INTO ${this.q.subs} (node_id, subscriber, kind, match, payload)
       SELECT $1, s, k, m, p::jsonb FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS x(s, k, m, p)
       ON CONFLICT (node_id, subscriber, kind, match) DO UPDATE SET payload = EXCLUDED.payload`,
      [
        this.nodeId,
        records.map((r) => r.subscriber),
        records.map((r) => r.kind),
        records.map((r) => r.match),
        records.map((r) => (r.payload === undefined ? null : JSON.stringify(r.payload))),
      ],
    );
  }

  async addSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    for (const r of records) this.local.set(PostgresPresence.key(r), r);
    if (records.length === 0) return;
    try {
      await this.db.transaction(async (c) => {
        const inserted = await this.touchNode(c);
        // Our node row was gone (declared dead during an outage): write back all we have.
        await this.insertSubscriptions(c, inserted || this.dirty ? [...this.local.values()] : records);
      });
      this.dirty = false;
      this.db.ok();
    } catch (err) {
      this.dirty = true; // the next heartbeat rewrites our rows
      throw this.db.unavailable(err, 'cannot record subscriptions');
    }
  }

  async removeSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    for (const r of records) this.local.delete(PostgresPresence.key(r));
    if (records.length === 0) return;
    try {
      await this.db.pool.query(
        `DELETE FROM ${this.q.subs} WHERE node_id = $1 AND (subscriber, kind, match) IN
           (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))`,
        [this.nodeId, records.map((r) => r.subscriber), records.map((r) => r.kind), records.map((r) => r.match)],
      );
      this.db.ok();
    } catch (err) {
      this.dirty = true;
      throw this.db.unavailable(err, 'cannot remove subscriptions');
    }
  }

  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    try {
      const r = await this.db.transaction(async (c) => {
        // Dead nodes go, and their subscriptions with them (ON DELETE CASCADE).
        await c.query(
          `DELETE FROM ${this.q.nodes} WHERE node_id <> $1 AND heartbeat_at < now() - $2::double precision * interval '1 millisecond'`,
          [this.nodeId, this.nodeTimeout],
        );
        return c.query<{ subscriber: string; kind: SubscriptionRecord['kind']; match: string; payload: unknown }>(
          `SELECT s.subscriber, s.kind, s.match, s.payload FROM ${this.q.subs} s
           JOIN ${this.q.nodes} n ON n.node_id = s.node_id
           WHERE n.node_id = $1 OR n.heartbeat_at >= now() - $2::double precision * interval '1 millisecond'
           ORDER BY s.subscriber, s.kind, s.match`,
          [this.nodeId, this.nodeTimeout],
        );
      });
      this.db.ok();
      return r.rows.map((row) =>
        row.payload === null || row.payload === undefined
          ? { subscriber: row.subscriber, kind: row.kind, match: row.match }
          : { subscriber: row.subscriber, kind: row.kind, match: row.match, payload: row.payload },
      );
    } catch (err) {
      throw this.db.unavailable(err, 'cannot list subscriptions');
    }
  }

  /** Leaves the cluster cleanly: our subscriptions go with the node row. Waits 1 s at most. */
  async leave(): Promise<void> {
    await Promise.race([
      this.db.pool.query(`DELETE FROM ${this.q.nodes} WHERE node_id = $1`, [this.nodeId]).catch(() => {}),
      sleep(1000),
    ]);
  }
}
