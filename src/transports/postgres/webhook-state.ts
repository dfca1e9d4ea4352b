/*
 * Webhook state on PostgreSQL, in two tables derived from the updates table T:
 *   T_webhooks       name → registration (webhooks created over the HTTP API)
 *   T_webhook_state  name → cursor, status, nudge, and the lease: owner, fence, lease_until
 * Leases are rows rather than advisory locks: a session lock would tie ownership to one pooled
 * connection and vanish with it silently, while a row lease expires at a time every node reads
 * from the same clock (the database's `now()`). Fences come from one sequence, so a token is
 * never handed out twice, even across a delete and re-create of the same name. Every write that
 * needs the lease checks owner, fence and expiry in its WHERE clause: one statement, atomic.
 */
import { escapeIdentifier, type Pool } from 'pg';
import type { WebhookRegistration, WebhookState, WebhookStore } from '../../core/webhook-store.js';
import { fnv1a } from './schema.js';

/** Advisory lock class of the webhook DDL (the transport's own classes are 'QSLV' + 0..2). */
const LOCK_WEBHOOK_SCHEMA = (0x51534c56 & 0x7fffffff) + 16;

interface StateRow {
  name: string;
  cursor: string | null;
  status: string | null;
  nudge: number;
}

export class PostgresWebhookStore implements WebhookStore {
  private readonly regs: string;
  private readonly state: string;
  private readonly seq: string;
  private readonly lockKey: number;
  private schema: Promise<void> | null = null;

  constructor(
    private readonly pool: Pool,
    table: string,
  ) {
    this.regs = escapeIdentifier(`${table}_webhooks`);
    this.state = escapeIdentifier(`${table}_webhook_state`);
    this.seq = escapeIdentifier(`${table}_webhook_fence`);
    this.lockKey = fnv1a(table);
  }

  /** Creates the tables on first use (serialised: concurrent CREATE … IF NOT EXISTS can collide). */
  private ready(): Promise<void> {
    this.schema ??= (async () => {
      const c = await this.pool.connect();
      try {
        await c.query('BEGIN');
        await c.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_WEBHOOK_SCHEMA, this.lockKey]);
        await c.query(`
          CREATE TABLE IF NOT EXISTS ${this.regs} (name text PRIMARY KEY, registration jsonb NOT NULL);
          CREATE TABLE IF NOT EXISTS ${this.state} (
            name text PRIMARY KEY,
            cursor text,
            status text,
            nudge integer NOT NULL DEFAULT 0,
            owner text,
            fence bigint NOT NULL DEFAULT 0,
            lease_until timestamptz
          );
          CREATE SEQUENCE IF NOT EXISTS ${this.seq};`);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        c.release();
      }
    })().catch((err: unknown) => {
      this.schema = null;
      throw err;
    });
    return this.schema;
  }

  async register(registration: WebhookRegistration, cursor: string): Promise<boolean> {
    await this.ready();
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const r = await c.query(`INSERT INTO ${this.regs} (name, registration) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [registration.name, JSON.stringify(registration)]);
      if (r.rowCount !== 1) {
        await c.query('ROLLBACK');
        return false;
      }
      // A state row left by a configured webhook of the same name would carry a foreign cursor.
      await c.query(`DELETE FROM ${this.state} WHERE name = $1`, [registration.name]);
      await c.query(`INSERT INTO ${this.state} (name, cursor) VALUES ($1, $2)`, [registration.name, cursor]);
      await c.query('COMMIT');
      return true;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }

  async unregister(name: string): Promise<boolean> {
    await this.ready();
    const r = await this.pool.query(`WITH s AS (DELETE FROM ${this.state} WHERE name = $1) DELETE FROM ${this.regs} WHERE name = $1`, [name]);
    return r.rowCount === 1;
  }

  async registrations(): Promise<WebhookRegistration[]> {
    await this.ready();
    const r = await this.pool.query<{ registration: WebhookRegistration }>(`SELECT registration FROM ${this.regs} ORDER BY name`);
    return r.rows.map((row) => row.registration);
  }

  async states(names: readonly string[]): Promise<Map<string, WebhookState>> {
    await this.ready();
    const out = new Map<string, WebhookState>();
    if (names.length === 0) return out;
    const r = await this.pool.query<StateRow>(`SELECT name, cursor, status, nudge FROM ${this.state} WHERE name = ANY($1)`, [names]);
    for (const row of r.rows) out.set(row.name, { cursor: row.cursor ?? undefined, status: row.status ?? undefined, nudge: row.nudge });
    return out;
  }

  async acquire(name: string, owner: string, ttl: number): Promise<number | null> {
    await this.ready();
    await this.pool.query(`INSERT INTO ${this.state} (name) VALUES ($1) ON CONFLICT DO NOTHING`, [name]);
    const r = await this.pool.query<{ fence: string }>(
      `UPDATE ${this.state} SET
         fence = CASE WHEN owner = $2 AND lease_until > now() THEN fence ELSE nextval('${this.seq.replace(/'/g, "''")}') END,
         owner = $2,
         lease_until = now() + $3 * interval '1 millisecond'
       WHERE name = $1 AND (owner IS NULL OR owner = $2 OR lease_until IS NULL OR lease_until <= now())
       RETURNING fence`,
      [name, owner, Math.ceil(ttl)],
    );
    const row = r.rows[0];
    return row ? Number(row.fence) : null;
  }

  async renew(name: string, owner: string, fence: number, ttl: number): Promise<boolean> {
    await this.ready();
    const r = await this.pool.query(
      `UPDATE ${this.state} SET lease_until = now() + $4 * interval '1 millisecond'
       WHERE name = $1 AND owner = $2 AND fence = $3 AND lease_until > now()`,
      [name, owner, fence, Math.ceil(ttl)],
    );
    return r.rowCount === 1;
  }

  async release(name: string, owner: string, fence: number): Promise<void> {
    await this.ready();
    await this.pool.query(`UPDATE ${this.state} SET owner = NULL, lease_until = NULL WHERE name = $1 AND owner = $2 AND fence = $3`, [name, owner, fence]);
  }

  async commit(name: string, owner: string, fence: number, change: { cursor?: string; status?: string }): Promise<boolean> {
    await this.ready();
    const r = await this.pool.query(
      `UPDATE ${this.state} SET cursor = COALESCE($4, cursor), status = COALESCE($5, status)
       WHERE name = $1 AND owner = $2 AND fence = $3 AND lease_until > now()`,
      [name, owner, fence, change.cursor ?? null, change.status ?? null],
    );
    return r.rowCount === 1;
  }

  async nudge(name: string): Promise<void> {
    await this.ready();
    await this.pool.query(`INSERT INTO ${this.state} (name, nudge) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET nudge = ${this.state}.nudge + 1`, [name]);
  }
}
