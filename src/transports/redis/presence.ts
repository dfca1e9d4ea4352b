/*
 * Presence on Redis: this node's subscription records in the shared hash `S:subscriptions`, kept
 * alive by the heartbeat key `S:node:<nodeId>` that the transport refreshes. The node keeps its own
 * records in memory, the source of truth it re-publishes when Redis lost them (restart without
 * persistence, or the node declared dead during an outage); listing drops other nodes' records once
 * their heartbeat key expired.
 */
import type { Logger } from '../../observability/logger.js';
import { TransportUnavailableError, type SubscriptionRecord } from '../../core/transport.js';
import { PAGE, type Connection } from './connection.js';
import type { Scripts } from './scripts.js';

export class RedisPresence {
  /** The hash holding every node's records. */
  readonly presenceKey: string;
  /** Prefix of the nodes' heartbeat keys. */
  readonly nodePrefix: string;
  readonly nodeId: string;
  /** This node's heartbeat key. */
  readonly nodeKey: string;
  /** This node's presence records (field → JSON), re-published if its heartbeat lapsed. */
  private readonly records = new Map<string, string>();
  /** A presence write failed: Redis may disagree with `records` until the next resync. */
  dirty = false;

  constructor(
    stream: string,
    nodeId: string,
    private readonly cmd: Connection,
    private readonly scripts: Scripts,
    private readonly logger: Logger | undefined,
    private readonly isClosed: () => boolean,
  ) {
    this.presenceKey = `${stream}:subscriptions`;
    this.nodePrefix = `${stream}:node:`;
    this.nodeId = nodeId;
    this.nodeKey = this.nodePrefix + this.nodeId;
  }

  /** How many records this node holds. */
  get size(): number {
    return this.records.size;
  }

  /** Makes Redis hold exactly this node's records: after a lapsed heartbeat or a failed write. */
  async resync(): Promise<void> {
    this.dirty = false;
    try {
      const pattern = `${this.nodeId.replace(/[*?[\]\\]/g, '\\$&')}|*`;
      const stale: string[] = [];
      let cursor = '0';
      do {
        const [next, flat] = await this.cmd.run(this.cmd.client.hscan(this.presenceKey, cursor, 'MATCH', pattern, 'COUNT', PAGE));
        for (let i = 0; i < flat.length; i += 2) if (!this.records.has(flat[i]!)) stale.push(flat[i]!);
        cursor = next;
      } while (cursor !== '0');
      for (let i = 0; i < stale.length; i += PAGE) {
        await this.cmd.run(this.cmd.client.hdel(this.presenceKey, ...stale.slice(i, i + PAGE)));
      }
      await this.publish([...this.records]);
      this.logger?.info({ records: this.records.size, removed: stale.length }, 'presence records re-synchronised with Redis');
    } catch (err) {
      this.dirty = true;
      throw err;
    }
  }

  private async publish(entries: [string, string][]): Promise<void> {
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
      this.records.set(f, value);
      entries.push([f, value]);
    }
    if (entries.length === 0 || this.isClosed()) return;
    try {
      await this.publish(entries);
    } catch (err) {
      // Kept locally: the next heartbeat that reaches Redis re-synchronises.
      this.dirty = true;
      throw this.cmd.unavailable('cannot record the subscriptions', err);
    }
  }

  async removeSubscriptions(records: readonly SubscriptionRecord[]): Promise<void> {
    const fields: string[] = [];
    for (const r of records) {
      const f = this.field(r);
      this.records.delete(f);
      fields.push(f);
    }
    if (fields.length === 0 || this.isClosed()) return;
    try {
      for (let i = 0; i < fields.length; i += PAGE) {
        await this.cmd.run(this.cmd.client.hdel(this.presenceKey, ...fields.slice(i, i + PAGE)));
      }
    } catch (err) {
      this.dirty = true;
      throw this.cmd.unavailable('cannot remove the subscriptions', err);
    }
  }

  /** Every node's records; records of nodes whose heartbeat lapsed are skipped and deleted. */
  async listSubscriptions(): Promise<SubscriptionRecord[]> {
    if (this.isClosed()) throw new TransportUnavailableError('Redis transport closed');
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
        const batch = dead.slice(i, i + PAGE);
        const nodeKeys = [...new Set(batch.map((f) => this.nodePrefix + f.slice(0, f.indexOf('|'))))];
        await this.cmd.run(this.scripts.qsCleanup(1 + nodeKeys.length, this.presenceKey, ...nodeKeys, this.nodePrefix, ...batch));
      }
      return records;
    } catch (err) {
      throw this.cmd.unavailable('cannot list the subscriptions', err);
    }
  }

  /** Leaves cleanly, so other nodes need not wait for the heartbeat to lapse. Best effort. */
  async leave(): Promise<void> {
    const fields = [...this.records.keys()];
    this.records.clear();
    try {
      for (let i = 0; i < fields.length; i += PAGE) {
        await this.cmd.run(this.cmd.client.hdel(this.presenceKey, ...fields.slice(i, i + PAGE)), 1000);
      }
      await this.cmd.run(this.cmd.client.del(this.nodeKey), 1000);
    } catch {
      // Best effort: the heartbeat lapses anyway.
    }
  }
}
