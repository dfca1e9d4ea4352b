import { describe, expect, it } from 'vitest';
import { ConnectionLimiter, RateLimiter } from '../src/http/limits.js';
import { legacyToken, publish, SseClient, startHub, subscribeUrl } from './helpers.js';
import { loadConfig } from '../src/config/index.js';

describe('protective limits', () => {
  it('refuses subscribers beyond the per-address limit with 429, and frees slots on disconnect', async () => {
    const h = await startHub({ anonymous: true, maxConnectionsPerIp: 2 });
    const a = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'x']]));
    const b = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'x']]));
    const refused = await fetch(subscribeUrl(h.hubUrl, [['topic', 'x']]));
    expect(refused.status).toBe(429);
    expect(await refused.text()).toMatch(/too many connections from this address/);
    expect(refused.headers.get('retry-after')).toBe('5');
    a.close();
    await new Promise((r) => setTimeout(r, 100));
    const c = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'x']]));
    expect(c.status).toBe(200);
    expect(h.hub.metrics()).toMatch(/quicksilver_requests_limited_total\{limit="connections_per_ip"\} 1/);
    b.close();
    c.close();
    await h.close();
  });

  it('counts the connections and publishes of the other workers of a cluster', () => {
    const changes: Array<[string, number]> = [];
    const c = new ConnectionLimiter(2, 4);
    c.onChange = (ip, d) => changes.push([ip, d]);
    c.applyPeers([['10.0.0.1', 1], ['10.0.0.2', 1]]);
    expect(c.acquire('10.0.0.1')).toBe('ok');
    expect(c.acquire('10.0.0.1')).toBe('per_ip');
    expect(c.acquire('10.0.0.3')).toBe('ok');
    expect(c.acquire('10.0.0.4')).toBe('total');
    // A peer's release frees a slot here; a release the books never saw changes nothing.
    c.applyPeers([['10.0.0.2', -1], ['10.0.0.9', -5]]);
    expect(c.acquire('10.0.0.4')).toBe('ok');
    c.release('10.0.0.4');
    expect(changes).toEqual([['10.0.0.1', 1], ['10.0.0.3', 1], ['10.0.0.4', 1], ['10.0.0.4', -1]]);

    const taken: string[] = [];
    const r = new RateLimiter(1, 3);
    r.onTake = (k) => taken.push(k);
    const t0 = 1_000_000;
    r.applyPeers([['ip:a', 2]], t0);
    expect(r.take('ip:a', t0)).toBe(0);
    expect(r.take('ip:a', t0)).toBeGreaterThan(0);
    expect(r.take('ip:b', t0)).toBe(0);
    expect(taken).toEqual(['ip:a', 'ip:b']);
  });

  it('refuses subscribers beyond the total limit', async () => {
    const h = await startHub({ anonymous: true, maxConnections: 1 });
    const a = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'x']]));
    const refused = await fetch(subscribeUrl(h.hubUrl, [['topic', 'x']]));
    expect(refused.status).toBe(429);
    expect(await refused.text()).toMatch(/connection limit/);
    a.close();
    await h.close();
  });

  it('rate-limits publishes per token subject with 429 and Retry-After', async () => {
    const h = await startHub({ anonymous: true, publishRateLimit: 5, publishBurst: 5 });
    const token = await legacyToken({ publish: ['*'] });
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await publish(h.hubUrl, { topic: 't' }, token)).status);
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
    expect(statuses.slice(5)).toContain(429);
    const r = await publish(h.hubUrl, { topic: 't' }, token);
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(h.hub.metrics()).toMatch(/quicksilver_requests_limited_total\{limit="publish_rate"\} \d+/);
    await new Promise((r2) => setTimeout(r2, 1100));
    expect((await publish(h.hubUrl, { topic: 't' }, token)).status).toBe(200);
    await h.close();
  });

  it('refills token buckets at the configured rate', () => {
    const rl = new RateLimiter(10, 2);
    expect(rl.take('k', 0)).toBe(0);
    expect(rl.take('k', 0)).toBe(0);
    expect(rl.take('k', 0)).toBe(1);
    expect(rl.take('k', 100)).toBe(0);
    expect(rl.take('other', 100)).toBe(0);
  });

  it('is configured by flags and directives, off by default', () => {
    const base = { JWT_KEY: 'a-secret-that-is-long-enough-for-hs256!!' };
    const off = loadConfig({ env: base, argv: [] });
    expect(off.ok && off.config.hub.maxConnectionsPerIp).toBeFalsy();
    const on = loadConfig({ env: { ...base, MERCURE_EXTRA_DIRECTIVES: 'max_connections_per_ip 10\npublish_rate_limit 50' }, argv: ['--max-connections', '1000'] });
    expect(on.ok).toBe(true);
    if (on.ok) expect(on.config.hub).toMatchObject({ maxConnectionsPerIp: 10, publishRateLimit: 50, maxConnections: 1000 });
  });
});
