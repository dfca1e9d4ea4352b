/*
 * The tables and what every part of the transport agrees on about them: their names (all derived
 * from the updates table, so one name isolates one hub cluster), the advisory locks, the row format
 * of an update, and the DDL that creates them.
 */
import { escapeIdentifier } from 'pg';
import type { StoredUpdate } from '../../core/update.js';
import type { PostgresPool } from './pool.js';

export interface UpdateRow {
  // int8 comes back as a string (node-postgres default), or whatever a global type parser makes of it.
  seq: string | number | bigint;
  id: string;
  topics: string[];
  data: Buffer;
  private: boolean;
  type: string | null;
  retry: string | number | bigint | null;
}

/** Advisory lock keys (class, table hash): one per kind of work that must not run concurrently. */
const LOCK_CLASS = 0x51534c56 & 0x7fffffff; // 'QSLV'
export const LOCK_WRITE = LOCK_CLASS;
export const LOCK_RETENTION = LOCK_CLASS + 1;
export const LOCK_SCHEMA = LOCK_CLASS + 2;
/** Rows read per query when replaying or catching up. */
export const PAGE = 200;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/** A table name usable for the updates table and its derived tables, indexes and channel. */
export function checkTable(table: string): string {
  if (!IDENT.test(table)) {
    throw new Error(
      `PostgreSQL transport: invalid table name "${table}" (letters, digits and _, not starting with a digit, at most 48 characters)`,
    );
  }
  return table;
}

/** The quoted names of the updates table and of the presence tables derived from it. */
export interface Tables {
  readonly updates: string;
  readonly nodes: string;
  readonly subs: string;
}

export function tableNames(table: string): Tables {
  return {
    updates: escapeIdentifier(table),
    nodes: escapeIdentifier(`${table}_nodes`),
    subs: escapeIdentifier(`${table}_subscriptions`),
  };
}

/** The second key of the advisory locks: a hash of the table name, so clusters do not contend. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return h | 0;
}

export function toStored(row: UpdateRow): StoredUpdate {
  const retry = row.retry === null ? undefined : Number(row.retry);
  return Object.freeze({
    topics: Object.freeze([...row.topics]),
    data: row.data.toString('utf8'),
    private: row.private,
    id: row.id,
    type: row.type ?? undefined,
    retry: retry || undefined,
    seq: BigInt(row.seq),
  });
}

/** Creates the tables when missing; safe to run from many processes at once. */
export async function ensureSchema(db: PostgresPool, table: string, q: Tables, lockKey: number): Promise<void> {
  const { updates, nodes, subs } = q;
  const idx = escapeIdentifier(`${table}_id_seq_idx`);
  // Serialised: concurrent CREATE … IF NOT EXISTS can still collide in the catalogs.
  await db.transaction(async (c) => {
    await c.query(`
      CREATE TABLE IF NOT EXISTS ${updates} (
        seq bigserial PRIMARY KEY,
        id text NOT NULL,
        topics text[] NOT NULL,
        data bytea NOT NULL,
        private boolean NOT NULL DEFAULT false,
        type text,
        retry bigint,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX IF NOT EXISTS ${idx} ON ${updates} (id, seq);
      CREATE TABLE IF NOT EXISTS ${nodes} (
        node_id text PRIMARY KEY,
        heartbeat_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE IF NOT EXISTS ${subs} (
        node_id text NOT NULL REFERENCES ${nodes} (node_id) ON DELETE CASCADE,
        subscriber text NOT NULL,
        kind text NOT NULL,
        match text NOT NULL,
        payload jsonb,
        PRIMARY KEY (node_id, subscriber, kind, match)
      );`);
  }, `BEGIN; SELECT pg_advisory_xact_lock(${LOCK_SCHEMA}, ${lockKey})`);
  db.ok();
}
