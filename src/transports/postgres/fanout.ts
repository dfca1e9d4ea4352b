/*
 * Fan-out: one dedicated connection LISTENs on the table's channel; a notification (which carries
 * only the highest committed seq), a reconnection or the transport's safety poll makes it read every
 * row after its in-memory cursor, in seq order, and hand each to `deliver`. Because the cursor
 * survives reconnections, a lost connection means a catch-up, never a gap or a duplicate.
 */
import { Client, escapeIdentifier, type ClientConfig } from 'pg';
import type { Logger } from '../../observability/logger.js';
import type { StoredUpdate } from '../../core/update.js';
import { errorText } from './errors.js';
import { PAGE, toStored, type UpdateRow } from './schema.js';

export class PostgresFanout {
  /** Receives each update once, in seq order; null once closed. */
  deliver: ((update: StoredUpdate) => void) | null = null;
  /** The seq of the last update handed to `deliver` (null until the listener first connected). */
  lastSeq: bigint | null = null;
  /** Why the listener is down, when it is. */
  error: string | null = null;
  private client: Client | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAttempts = 0;
  private fetching = false;
  private fetchAgain = false;

  constructor(
    private readonly clientConfig: ClientConfig,
    /** The LISTEN/NOTIFY channel (the table name). */
    private readonly channel: string,
    /** Quoted name of the updates table. */
    private readonly updates: string,
    private readonly log: Logger,
    private readonly isClosed: () => boolean,
  ) {}

  /** Whether the listener connection is up. */
  get connected(): boolean {
    return this.client !== null;
  }

  /** Connects and LISTENs; on the first connection, positions the cursor at the newest row. */
  async connect(): Promise<void> {
    const client = new Client(this.clientConfig);
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection closed')));
    client.on('notification', (msg) => {
      if (client !== this.client || msg.channel !== this.channel) return;
      let seq: bigint;
      try {
        seq = BigInt(msg.payload ?? '');
      } catch {
        seq = -1n;
      }
      if (this.lastSeq === null || seq < 0n || seq > this.lastSeq) this.scheduleFetch();
    });
    try {
      await client.connect();
      // LISTEN before reading the cursor: what commits after is notified, what committed before is read.
      await client.query(`LISTEN ${escapeIdentifier(this.channel)}`);
      const r = await client.query<{ seq: string }>(`SELECT coalesce(max(seq), 0)::text AS seq FROM ${this.updates}`);
      const max = BigInt(r.rows[0]!.seq);
      if (this.lastSeq === null) {
        this.lastSeq = max; // deliver what is dispatched from now on
      } else if (max < this.lastSeq) {
        // The database went back in time (restored backup, table recreated): without this, every
        // new update would sit below the cursor and never be delivered.
        this.log.warn({ transport: 'postgres', cursor: String(this.lastSeq), max: String(max) }, 'PostgreSQL sequence went backwards; resetting the delivery cursor');
        this.lastSeq = max;
      }
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    if (this.isClosed()) {
      await client.end().catch(() => {});
      return;
    }
    const wasDown = this.error !== null;
    this.client = client;
    this.error = null;
    this.reconnectAttempts = 0;
    if (wasDown) this.log.info({ transport: 'postgres', after: String(this.lastSeq) }, 'PostgreSQL listener reconnected, catching up');
    this.scheduleFetch(); // catch up on what committed while we were away
  }

  private lost(client: Client, err: unknown): void {
    if (client !== this.client) return;
    this.client = null;
    this.error = errorText(err);
    client.end().catch(() => {});
    if (this.isClosed()) return;
    this.log.warn({ err, transport: 'postgres' }, 'PostgreSQL listener connection lost; reconnecting');
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.isClosed() || this.reconnectTimer) return;
    const base = Math.min(5000, 100 * 2 ** this.reconnectAttempts);
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.reconnectAttempts++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.isClosed()) return;
      this.connect().catch((err: unknown) => {
        this.error = errorText(err);
        this.log.debug({ err, transport: 'postgres' }, 'PostgreSQL listener reconnection failed');
        this.scheduleReconnect();
      });
    }, delay);
    this.reconnectTimer.unref();
  }

  /** Runs `fetch` now, or once more after the running one: never two at a time. */
  scheduleFetch(): void {
    this.fetchAgain = true;
    if (this.fetching) return;
    this.fetching = true;
    void (async () => {
      try {
        while (this.fetchAgain && !this.isClosed()) {
          this.fetchAgain = false;
          await this.fetch();
        }
      } finally {
        this.fetching = false;
      }
    })();
  }

  /** Delivers every committed update after the cursor, in seq order, on the listener connection. */
  private async fetch(): Promise<void> {
    const client = this.client;
    if (!client || this.lastSeq === null) return;
    const text = `SELECT seq, id, topics, data, private, type, retry FROM ${this.updates} WHERE seq > $1 ORDER BY seq LIMIT ${PAGE}`;
    try {
      for (;;) {
        const r = await client.query<UpdateRow>({ text, values: [this.lastSeq.toString()] });
        if (client !== this.client) return; // lost meanwhile: the reconnection catches up
        for (const row of r.rows) {
          const u = toStored(row);
          if (u.seq <= this.lastSeq) continue;
          this.lastSeq = u.seq;
          try {
            this.deliver?.(u);
          } catch (err) {
            this.log.error({ err, transport: 'postgres' }, 'deliver callback threw');
          }
        }
        if (r.rows.length < PAGE) return;
      }
    } catch (err) {
      // Whatever went wrong, a fresh connection and a catch-up from the cursor sets it right.
      this.lost(client, err);
    }
  }

  /** Stops reconnecting (the transport is closing). */
  stopReconnecting(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** Stops delivering and drops the listener connection. */
  async close(): Promise<void> {
    this.deliver = null;
    const client = this.client;
    this.client = null;
    if (client) await client.end().catch(() => {});
  }
}
