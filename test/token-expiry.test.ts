import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY, legacyToken } from './helpers.js';
import { freePort, startHubProcess, type HubProcess } from './process-helpers.js';

// A stream whose token expires ends at `exp`, and nothing dispatched at or after `exp` reaches
// it: the check is made when an update is delivered, and one timer ends the stream on time.

let hub: HubProcess;
beforeAll(async () => {
  hub = await startHubProcess(['--jwt-key', KEY, '--workers', '1', '--transport-url', 'memory://', '--addr', `127.0.0.1:${await freePort()}`]);
});
afterAll(() => hub.stop());

const TOPIC = 'https://example.com/expiring';

interface Sent {
  n: number;
  sentAt: number;
  ackedAt: number;
}

describe('token exp', () => {
  it('stops delivering at exp exactly and closes the stream then', async () => {
    // JWT exp has a one-second resolution: aim 1.5 s ahead, rounded up to the next second.
    const exp = Math.ceil((Date.now() + 1500) / 1000);
    const expMs = exp * 1000;
    const subToken = await legacyToken({ subscribe: ['*'] }, KEY, { exp });
    const pubToken = await legacyToken({ publish: ['*'] });

    const received = new Set<number>();
    let closedAt = 0;
    const stream = new Promise<void>((resolve, reject) => {
      const req = http.get(`${hub.hubUrl}?topic=${encodeURIComponent(TOPIC)}`, { headers: { Authorization: `Bearer ${subToken}` } }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`subscribe answered ${res.statusCode}`));
        res.setEncoding('utf8');
        let buffer = '';
        res.on('data', (chunk: string) => {
          buffer += chunk;
          for (const m of buffer.matchAll(/^data: (\d+)$/gm)) received.add(Number(m[1]));
          buffer = buffer.slice(buffer.lastIndexOf('\n') + 1);
        });
        const done = (): void => {
          closedAt ||= Date.now();
          resolve();
        };
        res.on('end', done);
        res.on('close', done);
      });
      req.on('error', reject);
    });

    // A publisher posting every 50 ms from well before exp to 1 s after it.
    const sent: Sent[] = [];
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const post = (n: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const body = new URLSearchParams({ topic: TOPIC, data: String(n) }).toString();
        const sentAt = Date.now();
        const req = http.request(hub.hubUrl, {
          method: 'POST', agent,
          headers: { Authorization: `Bearer ${pubToken}`, 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': Buffer.byteLength(body) },
        }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode !== 200) return reject(new Error(`publish answered ${res.statusCode}`));
            sent.push({ n, sentAt, ackedAt: Date.now() });
            resolve();
          });
        });
        req.on('error', reject);
        req.end(body);
      });
    const posts: Promise<void>[] = [];
    for (let n = 0; Date.now() < expMs + 1000; n++) {
      posts.push(post(n));
      await new Promise((r) => setTimeout(r, 50));
    }
    await Promise.all(posts);
    await stream;
    agent.destroy();

    const before = sent.filter((s) => s.ackedAt < expMs);
    const after = sent.filter((s) => s.sentAt >= expMs);
    expect(before.length).toBeGreaterThan(10);
    expect(after.length).toBeGreaterThan(10);
    // Everything acknowledged before exp was dispatched before it, so delivered...
    expect(before.filter((s) => !received.has(s.n)).map((s) => s.n)).toEqual([]);
    // ...and nothing sent at or after exp (so dispatched after it) was.
    expect(after.filter((s) => received.has(s.n)).map((s) => `${s.n} sent ${s.sentAt - expMs} ms after exp`)).toEqual([]);
    // The stream ends at exp, not at the next periodic check.
    expect(closedAt - expMs, 'stream closed relative to exp (ms)').toBeGreaterThanOrEqual(0);
    expect(closedAt - expMs, 'stream closed relative to exp (ms)').toBeLessThan(100);
  });
});
