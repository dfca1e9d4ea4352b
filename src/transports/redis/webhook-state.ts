/*
 * Webhook state on Redis, next to the stream it follows. Keys, for a stream named S:
 *   S:webhooks                hash name → registration JSON (webhooks created over the HTTP API)
 *   S:webhook:<name>          hash c (cursor), s (status JSON), n (nudge counter)
 *   S:webhook:<name>:lease    `<owner>|<fence>`, with a TTL (SET NX PX): the process delivering it
 *   S:webhooks:fence          counter the fencing tokens are drawn from (INCR: they only grow)
 * Every lease check and the write it guards are one Lua script, so a renewal, a cursor write and
 * a takeover never interleave: a cursor write whose lease expired or changed hands is refused.
 */
import type { Cluster, Redis } from 'ioredis';
import type { WebhookRegistration, WebhookState, WebhookStore } from '../../core/webhook-store.js';

const ACQUIRE = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep and string.sub(cur, 1, sep - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(cur, sep + 1))
  end
  return false
end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. f, 'PX', ARGV[2])
return f`;

const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

// ARGV: lease value, then field/value pairs.
const COMMIT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1`;

const REGISTER = `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'c', ARGV[3], 'n', 0)
return 1`;

export class RedisWebhookStore implements WebhookStore {
  constructor(
    private readonly client: Redis | Cluster,
    private readonly prefix: string,
  ) {}

  private stateKey(name: string): string {
    return `${this.prefix}:webhook:${name}`;
  }

  private leaseKey(name: string): string {
    return `${this.prefix}:webhook:${name}:lease`;
  }

  async register(registration: WebhookRegistration, cursor: string): Promise<boolean> {
    const n = await this.client.eval(REGISTER, 3, `${this.prefix}:webhooks`, this.stateKey(registration.name), this.leaseKey(registration.name),
      registration.name, JSON.stringify(registration), cursor);
    return n === 1;
  }

  async unregister(name: string): Promise<boolean> {
    const [[, removed]] = (await this.client.multi().hdel(`${this.prefix}:webhooks`, name).del(this.stateKey(name), this.leaseKey(name)).exec()) as [[unknown, number]];
    return removed === 1;
  }

  async registrations(): Promise<WebhookRegistration[]> {
    const all = await this.client.hgetall(`${this.prefix}:webhooks`);
    const out: WebhookRegistration[] = [];
    for (const json of Object.values(all)) {
      try {
        out.push(JSON.parse(json) as WebhookRegistration);
      } catch {
        // A registration someone else wrote by hand: not ours to guess.
      }
    }
    return out;
  }

  async states(names: readonly string[]): Promise<Map<string, WebhookState>> {
    const out = new Map<string, WebhookState>();
    if (names.length === 0) return out;
    const pipe = this.client.pipeline();
    for (const n of names) pipe.hmget(this.stateKey(n), 'c', 's', 'n');
    const rows = (await pipe.exec()) ?? [];
    names.forEach((name, i) => {
      const [err, v] = rows[i] ?? [null, null];
      if (err) throw err;
      const [c, s, n] = v as [string | null, string | null, string | null];
      if (c === null && s === null && n === null) return;
      out.set(name, { cursor: c ?? undefined, status: s ?? undefined, nudge: Number(n ?? 0) });
    });
    return out;
  }

  async acquire(name: string, owner: string, ttl: number): Promise<number | null> {
    const f = await this.client.eval(ACQUIRE, 2, this.leaseKey(name), `${this.prefix}:webhooks:fence`, owner, Math.ceil(ttl));
    return typeof f === 'number' ? f : null;
  }

  async renew(name: string, owner: string, fence: number, ttl: number): Promise<boolean> {
    return (await this.client.eval(RENEW, 1, this.leaseKey(name), `${owner}|${fence}`, Math.ceil(ttl))) === 1;
  }

  async release(name: string, owner: string, fence: number): Promise<void> {
    await this.client.eval(RELEASE, 1, this.leaseKey(name), `${owner}|${fence}`);
  }

  async commit(name: string, owner: string, fence: number, change: { cursor?: string; status?: string }): Promise<boolean> {
    const fields: string[] = [];
    if (change.cursor !== undefined) fields.push('c', change.cursor);
    if (change.status !== undefined) fields.push('s', change.status);
    if (fields.length === 0) return this.renewCheck(name, owner, fence);
    return (await this.client.eval(COMMIT, 2, this.leaseKey(name), this.stateKey(name), `${owner}|${fence}`, ...fields)) === 1;
  }

  private async renewCheck(name: string, owner: string, fence: number): Promise<boolean> {
    return (await this.client.get(this.leaseKey(name))) === `${owner}|${fence}`;
  }

  async nudge(name: string): Promise<void> {
    await this.client.hincrby(this.stateKey(name), 'n', 1);
  }
}
