/**
 * The NATS webhook store (src/transports/nats/webhook-state.ts) against a real NATS server, two
 * connections standing for two hub processes: registrations, exclusive leases with growing
 * fences, takeover only after an unrenewed lease length, a stale owner's writes refused (by its
 * own count, and by the compare-and-set when its count has not run out), release, nudges, and
 * the same semantics as the Redis and PostgreSQL stores. Two hub processes on NATS are in
 * webhooks-cluster.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebhookRegistration } from '../src/core/webhook-store.js';
import { NatsWebhookStore } from '../src/transports/nats/webhook-state.js';
import { portOpen } from './process-helpers.js';

const SERVER = '127.0.0.1:4222';


const up = await portOpen(4222);
if (!up && !process.env.CI) console.warn(`NATS not reachable on ${SERVER}: skipping the NATS webhook store tests`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function registration(name: string): WebhookRegistration {
  return { name, url: 'http://127.0.0.1:9/hook', selectors: [{ type: 'topic', value: '*' }], token: '', secret: 's', batch: 1, createdAt: Date.now() };
}

describe.skipIf(!up && !process.env.CI)('webhook store on NATS', () => {
  it.runIf(!up)('needs NATS in CI', () => {
    throw new Error(`NATS is not reachable on ${SERVER} and CI is set`);
  });

  const stream = `QS_WHS_${randomBytes(4).toString('hex')}`;
  const conns: NatsConnection[] = [];
  const store = async (now?: () => number): Promise<NatsWebhookStore> => {
    const nc = await connect({ servers: SERVER });
    conns.push(nc);
    const js = nc.jetstream();
    return new NatsWebhookStore({ stream, replicas: 1, timeout: 2000, js: () => js }, now);
  };
  let a: NatsWebhookStore;
  let b: NatsWebhookStore;

  beforeAll(async () => {
    if (!up) return;
    a = await store();
    b = await store();
  });

  afterAll(async () => {
    if (!up) return;
    const jsm = await conns[0]!.jetstreamManager();
    await jsm.streams.delete(`KV_${stream}_webhooks`).catch(() => {});
    for (const nc of conns) await nc.close();
  });

  it.runIf(up)('registers once per name, lists, reads state and unregisters', async () => {
    expect(await a.registrations()).toEqual([]);
    expect(await a.register(registration('r1'), 'urn:c0')).toBe(true);
    expect(await b.register(registration('r1'), 'urn:other')).toBe(false);
    expect(await b.register(registration('r2'), 'urn:c1')).toBe(true);
    expect((await a.registrations()).map((r) => r.name)).toEqual(['r1', 'r2']);
    const states = await b.states(['r1', 'r2', 'absent']);
    expect(states.get('r1')).toEqual({ cursor: 'urn:c0', status: undefined, nudge: 0 });
    expect(states.get('r2')?.cursor).toBe('urn:c1');
    expect(states.has('absent')).toBe(false);
    expect(await a.unregister('r1')).toBe(true);
    expect(await a.unregister('r1')).toBe(false);
    expect((await b.registrations()).map((r) => r.name)).toEqual(['r2']);
    expect(await b.register(registration('r1'), 'urn:again')).toBe(true);
    expect((await a.states(['r1'])).get('r1')?.cursor).toBe('urn:again');
  });

  it.runIf(up)('gives a lease to one owner at a time; its own acquire extends it with the same fence', async () => {
    const results = await Promise.all([a.acquire('l1', 'A', 5000), b.acquire('l1', 'B', 5000), a.acquire('l1', 'A2', 5000)]);
    expect(results.filter((f) => f !== null)).toHaveLength(1);
    const winner = results.findIndex((f) => f !== null);
    const [s, owner] = winner === 0 ? [a, 'A'] : winner === 1 ? [b, 'B'] : [a, 'A2'];
    const fence = results[winner]!;
    expect(await s.acquire('l1', owner, 5000)).toBe(fence);
    expect(await s.renew('l1', owner, fence, 5000)).toBe(true);
    expect(await s.commit('l1', owner, fence, { cursor: 'urn:1', status: '{"state":"active"}' })).toBe(true);
    expect(await s.commit('l1', owner, fence + 1, { cursor: 'urn:wrong-fence' })).toBe(false);
    expect(await (s === a ? b : a).commit('l1', owner, fence, { cursor: 'urn:not-granted-here' })).toBe(false);
    expect((await b.states(['l1'])).get('l1')).toEqual({ cursor: 'urn:1', status: '{"state":"active"}', nudge: 0 });
    await s.release('l1', owner, fence);
  });

  it.runIf(up)('hands an unrenewed lease over after its length, with a larger fence; the stale owner is refused', async () => {
    const ttl = 400;
    const f1 = (await a.acquire('h1', 'A', ttl))!;
    expect(f1).not.toBeNull();
    expect(await a.commit('h1', 'A', f1, { cursor: 'urn:a1' })).toBe(true);
    const t0 = Date.now();
    let f2: number | null = null;
    while (f2 === null) {
      f2 = await b.acquire('h1', 'B', ttl);
      if (f2 === null) await sleep(50);
    }
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(ttl);
    expect(waited).toBeLessThan(ttl + 500);
    expect(f2).toBeGreaterThan(f1);
    // A paused and resumed: its lease ran out by its own count too.
    expect(await a.commit('h1', 'A', f1, { cursor: 'urn:stale' })).toBe(false);
    expect(await a.renew('h1', 'A', f1, ttl)).toBe(false);
    expect(await b.commit('h1', 'B', f2, { cursor: 'urn:b1' })).toBe(true);
    expect((await a.states(['h1'])).get('h1')?.cursor).toBe('urn:b1');
    console.log(`[webhooks] NATS store: takeover ${waited} ms after the last write (lease ${ttl} ms, polled every 50 ms)`);
    await b.release('h1', 'B', f2);
  });

  it.runIf(up)('refuses a stale owner whose clock says its lease still runs: the compare-and-set fences it', async () => {
    // A clock stopped at 0 never runs the lease out: only the fence in the key can refuse A.
    const frozen = await store(() => 0);
    const f1 = (await frozen.acquire('s1', 'A', 300))!;
    expect(await frozen.commit('s1', 'A', f1, { cursor: 'urn:a1' })).toBe(true);
    let f2: number | null = null;
    while (f2 === null) {
      f2 = await b.acquire('s1', 'B', 300);
      if (f2 === null) await sleep(50);
    }
    expect(await frozen.commit('s1', 'A', f1, { cursor: 'urn:stale' })).toBe(false);
    expect(await frozen.commit('s1', 'A', f1, { status: '{"state":"stale"}' })).toBe(false);
    expect(await frozen.renew('s1', 'A', f1, 300)).toBe(false);
    await frozen.release('s1', 'A', f1);
    expect(await b.commit('s1', 'B', f2, { cursor: 'urn:b1' })).toBe(true);
    expect((await b.states(['s1'])).get('s1')).toMatchObject({ cursor: 'urn:b1', status: undefined });
    expect(await frozen.acquire('s1', 'A', 300)).toBeNull();
  });

  it.runIf(up)('refuses renewals and writes once the holder’s own lease ran out, and a later acquire gets a new fence', async () => {
    const f1 = (await a.acquire('e1', 'A', 150))!;
    await sleep(250);
    expect(await a.renew('e1', 'A', f1, 150)).toBe(false);
    expect(await a.commit('e1', 'A', f1, { cursor: 'urn:late' })).toBe(false);
    const f2 = (await a.acquire('e1', 'A', 150))!;
    expect(f2).toBeGreaterThan(f1);
    expect((await a.states(['e1'])).get('e1')?.cursor).toBeUndefined();
    await a.release('e1', 'A', f2);
  });

  it.runIf(up)('frees a released lease at once', async () => {
    const f1 = (await a.acquire('x1', 'A', 10_000))!;
    expect(await b.acquire('x1', 'B', 10_000)).toBeNull();
    await a.release('x1', 'A', f1);
    expect(await a.commit('x1', 'A', f1, { cursor: 'urn:after-release' })).toBe(false);
    const f2 = await b.acquire('x1', 'B', 10_000);
    expect(f2).toBeGreaterThan(f1);
    await b.release('x1', 'B', f2!);
  });

  it.runIf(up)('counts nudges without disturbing the owner’s writes', async () => {
    const f = (await a.acquire('n1', 'A', 5000))!;
    await b.nudge('n1');
    await b.nudge('n1');
    expect(await a.commit('n1', 'A', f, { cursor: 'urn:n' })).toBe(true);
    expect((await b.states(['n1'])).get('n1')).toMatchObject({ cursor: 'urn:n', nudge: 2 });
    await b.nudge('never-seen');
    expect((await b.states(['never-seen'])).get('never-seen')?.nudge).toBe(1);
    await a.release('n1', 'A', f);
  });

  it.runIf(up)('registering over a configured webhook’s state replaces its cursor and drops its lease; fences keep growing across delete and re-create', async () => {
    const f1 = (await a.acquire('c1', 'A', 5000))!;
    expect(await a.commit('c1', 'A', f1, { cursor: 'urn:configured' })).toBe(true);
    expect(await b.register(registration('c1'), 'urn:registered')).toBe(true);
    expect(await a.commit('c1', 'A', f1, { cursor: 'urn:stale' })).toBe(false);
    expect((await a.states(['c1'])).get('c1')?.cursor).toBe('urn:registered');
    const f2 = (await b.acquire('c1', 'B', 5000))!;
    expect(f2).toBeGreaterThan(f1);
    expect(await a.unregister('c1')).toBe(true);
    expect(await b.commit('c1', 'B', f2, { cursor: 'urn:gone' })).toBe(false);
    expect(await b.register(registration('c1'), 'urn:new')).toBe(true);
    const f3 = (await a.acquire('c1', 'A', 5000))!;
    expect(f3).toBeGreaterThan(f2);
  });
});
