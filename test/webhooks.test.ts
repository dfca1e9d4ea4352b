/**
 * Webhook subscribers in one hub process, against real callback servers on loopback: order and
 * signature, retries with exponential backoff (attempt timestamps), giving up and recovering,
 * private updates and the webhook's own token, the SSRF allow-list (at registration and at
 * connect time), the HTTP API and who may use it, updates trimmed before delivery, and a slow
 * callback that must not delay SSE subscribers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryTransport } from '../src/transports/memory.js';
import { verifySignature, type WebhookOptions } from '../src/webhooks/index.js';
import { KEY, legacyToken, SseClient, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';
import { waitUntil } from './process-helpers.js';
import { CallbackServer, duplicates } from './webhook-helpers.js';

const SECRET = 'a-webhook-secret-of-some-length';
const TOPIC = 'https://example.com/books/{id}';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()!().catch(() => {});
});

async function callback(): Promise<CallbackServer> {
  const cb = await new CallbackServer().start();
  cleanup.push(() => cb.stop());
  return cb;
}

/** Settings that keep tests fast; loopback allowed explicitly. */
function fast(extra: Partial<WebhookOptions> = {}): WebhookOptions {
  return { allow: ['127.0.0.1'], minBackoff: 20, maxBackoff: 200, giveUp: 60_000, leaseTtl: 1000, refreshInterval: 50, timeout: 2000, ...extra };
}

async function hubWith(webhooks: WebhookOptions, extra: Parameters<typeof startHub>[0] = {}): Promise<TestHub> {
  // Anonymous: a webhook without a token gets public updates, as an anonymous subscriber would.
  const hub = await startHub({ transport: new MemoryTransport(), webhooks, anonymous: true, ...extra });
  await hub.hub.ready;
  cleanup.push(() => hub.close());
  return hub;
}

async function api(hub: TestHub, method: string, path: string, token: string | null, body?: unknown): Promise<{ status: number; json: any; text: string }> {
  const res = await fetch(`${hub.hubUrl}/webhooks${path}`, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

const admin = (): Promise<string> => legacyToken({ publish: ['*'] });

describe('webhook delivery', () => {
  it('POSTs every selected update once, in order, signed over the raw body', async () => {
    const cb = await callback();
    const hub = await hubWith(fast({ definitions: [{ name: 'books', url: cb.url, selectors: [{ type: 'topic', value: TOPIC }], secret: SECRET }] }));
    await waitUntil(() => cb.received.length === 0 && true, 100, 'nothing');
    await new Promise((r) => setTimeout(r, 150)); // the runner took the lease and set the cursor
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) {
      const u = await hub.hub.publish({ topics: [`https://example.com/books/${i}`], data: JSON.stringify({ i }), type: i % 2 ? 'odd' : undefined });
      ids.push(u.id);
      if (i % 10 === 0) await hub.hub.publish({ topics: ['https://example.com/authors/1'], data: 'not selected' });
    }
    await waitUntil(() => cb.ackIds().length >= 50, 5000, '50 deliveries');
    await new Promise((r) => setTimeout(r, 100));
    expect(cb.ackIds()).toEqual(ids);
    const first = cb.received[0]!;
    expect(first.headers['content-type']).toBe('application/json');
    expect(first.headers['webhook-name']).toBe('books');
    expect(first.headers['webhook-id']).toBe(ids[0]);
    expect(JSON.parse(first.body)).toEqual({ id: ids[0], topics: ['https://example.com/books/0'], type: null, data: '{"i":0}', private: false });
    expect(JSON.parse(cb.received[1]!.body).type).toBe('odd');
    for (const r of cb.received) expect(verifySignature(SECRET, r.body, r.headers['webhook-signature'] as string)).toBe(true);
    // The check can fail: another secret, a changed body, a replayed (old) timestamp.
    expect(verifySignature('another-secret-entirely', first.body, first.headers['webhook-signature'] as string)).toBe(false);
    expect(verifySignature(SECRET, first.body + ' ', first.headers['webhook-signature'] as string)).toBe(false);
    expect(verifySignature(SECRET, first.body, first.headers['webhook-signature'] as string, { now: Math.floor(Date.now() / 1000) + 3600 })).toBe(false);
    const metrics = await (await fetch(`${hub.url}/metrics`)).text();
    expect(metrics).toContain('quicksilver_webhook_deliveries_total{webhook="books"} 50');
    expect(metrics).toContain('quicksilver_webhook_owned{webhook="books"} 1');
  });

  it('sends batches as JSON arrays when batch > 1', async () => {
    const cb = await callback();
    let hold: () => void = () => {};
    const held = new Promise<void>((r) => (hold = r));
    let first = true;
    cb.respond = async () => {
      if (first) {
        first = false;
        await held;
      }
      return 200;
    };
    const hub = await hubWith(fast({ definitions: [{ name: 'b', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET, batch: 10 }] }));
    await new Promise((r) => setTimeout(r, 150));
    await hub.hub.publish({ topics: ['a'], data: '0' });
    await waitUntil(() => cb.received.length === 1, 2000, 'first request');
    for (let i = 1; i <= 25; i++) await hub.hub.publish({ topics: ['a'], data: String(i) });
    hold();
    await waitUntil(() => cb.ackIds().length === 26, 3000, '26 updates');
    const sizes = cb.received.map((r) => (JSON.parse(r.body) as unknown[]).length);
    expect(sizes).toEqual([1, 10, 10, 5]);
    expect(cb.acknowledged().map((u) => u.data)).toEqual(Array.from({ length: 26 }, (_, i) => String(i)));
  });

  it('retries a failing callback with exponential backoff, in order, then delivers', async () => {
    const cb = await callback();
    let failures = 5;
    cb.respond = () => (failures-- > 0 ? 503 : 200);
    // random() = 1: every delay is its ceiling, so the schedule is exact: 40, 80, 160, 320, 640 ms.
    const hub = await hubWith(fast({ minBackoff: 40, maxBackoff: 5000, random: () => 0.9999, definitions: [{ name: 'r', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }));
    await new Promise((r) => setTimeout(r, 150));
    const a = await hub.hub.publish({ topics: ['x'], data: 'a' });
    const b = await hub.hub.publish({ topics: ['x'], data: 'b' });
    await waitUntil(() => cb.ackIds().length === 2, 5000, 'both delivered');
    const firstUpdate = cb.received.filter((r) => JSON.parse(r.body).id === a.id);
    expect(firstUpdate.map((r) => r.status)).toEqual([503, 503, 503, 503, 503, 200]);
    expect(firstUpdate.map((r) => r.headers['webhook-attempt'])).toEqual(['1', '2', '3', '4', '5', '6']);
    const gaps = firstUpdate.slice(1).map((r, i) => r.at - firstUpdate[i]!.at);
    const ceilings = [40, 80, 160, 320, 640];
    gaps.forEach((g, i) => {
      expect(g).toBeGreaterThanOrEqual(ceilings[i]! * 0.99 - 2);
      expect(g).toBeLessThan(ceilings[i]! + 150);
    });
    // Strictly in order: nothing of b before a was acknowledged.
    expect(cb.received.findIndex((r) => JSON.parse(r.body).id === b.id)).toBe(firstUpdate.length);
  });

  it('draws each delay with full jitter below its ceiling', async () => {
    const cb = await callback();
    let failures = 6;
    cb.respond = () => (failures-- > 0 ? 500 : 200);
    const draws: number[] = [];
    const hub = await hubWith(fast({ minBackoff: 30, maxBackoff: 5000, random: () => {
      const r = Math.random();
      draws.push(r);
      return r;
    }, definitions: [{ name: 'j', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }));
    await new Promise((r) => setTimeout(r, 150));
    await hub.hub.publish({ topics: ['x'], data: 'a' });
    await waitUntil(() => cb.ackIds().length === 1, 5000, 'delivered');
    const at = cb.received.map((r) => r.at);
    for (let i = 1; i < at.length; i++) {
      const expected = draws[i - 1]! * 30 * 2 ** (i - 1);
      expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(expected - 3);
      expect(at[i]! - at[i - 1]!).toBeLessThan(expected + 150);
    }
  });

  it('marks a webhook failing after the give-up time (API status, metric, log) and resumes when the callback recovers', async () => {
    const cb = await callback();
    cb.respond = () => 503;
    const lines: string[] = [];
    const logger = { error: (o: object, m?: string) => lines.push(`${m} ${JSON.stringify(o)}`), warn: (o: object, m?: string) => lines.push(`${m} ${JSON.stringify(o)}`), info: (o: object, m?: string) => lines.push(`${m} ${JSON.stringify(o)}`), debug() {} };
    const hub = await hubWith(fast({ giveUp: 300, maxBackoff: 100, definitions: [{ name: 'down', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }), { logger });
    await new Promise((r) => setTimeout(r, 150));
    const u = await hub.hub.publish({ topics: ['x'], data: 'a' });
    const token = await admin();
    await waitUntil(() => lines.some((l) => l.startsWith('webhook failing')), 3000, 'failing log line');
    const view = (await api(hub, 'GET', '/down', token)).json;
    expect(view.status.state).toBe('failing');
    expect(view.status.reason).toContain('HTTP 503');
    expect(view.secret).toBeUndefined();
    expect(view.token).toBe(false);
    expect(await (await fetch(`${hub.url}/metrics`)).text()).toContain('quicksilver_webhook_failing{webhook="down"} 1');
    // Still probed at the longest backoff, and resumed from the cursor once it answers.
    const before = cb.received.length;
    await new Promise((r) => setTimeout(r, 250));
    expect(cb.received.length).toBeGreaterThan(before);
    cb.respond = () => 200;
    await waitUntil(() => cb.ackIds().length === 1, 2000, 'recovered');
    expect(cb.ackIds()).toEqual([u.id]);
    await waitUntil(() => lines.some((l) => l.startsWith('webhook recovered')), 1000, 'recovery log');
    expect((await api(hub, 'GET', '/down', token)).json.status.state).toBe('active');
    expect(await (await fetch(`${hub.url}/metrics`)).text()).toContain('quicksilver_webhook_failing{webhook="down"} 0');
  });

  it('retries at once when a failing webhook is re-enabled', async () => {
    const cb = await callback();
    cb.respond = () => 503;
    const hub = await hubWith(fast({ giveUp: 0, maxBackoff: 60_000, minBackoff: 60_000, definitions: [{ name: 'slow', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }));
    await new Promise((r) => setTimeout(r, 150));
    await hub.hub.publish({ topics: ['x'], data: 'a' });
    await waitUntil(() => cb.received.length === 1, 2000, 'first attempt');
    cb.respond = () => 200;
    await new Promise((r) => setTimeout(r, 200));
    expect(cb.received.length).toBe(1); // the next probe is a minute away
    const t0 = Date.now();
    expect((await api(hub, 'POST', '/slow/enable', await admin())).status).toBe(202);
    await waitUntil(() => cb.ackIds().length === 1, 2000, 're-enabled delivery');
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it("decides private updates with the webhook's own token, as for an SSE subscriber", async () => {
    const withGrant = await callback();
    const withoutGrant = await callback();
    const noToken = await callback();
    const granted = await legacyToken({ subscribe: ['https://example.com/orders/{id}'] }, SUB_KEY);
    const other = await legacyToken({ subscribe: ['https://example.com/invoices/{id}'] }, SUB_KEY);
    const hub = await hubWith(fast({ definitions: [
      { name: 'granted', url: withGrant.url, selectors: [{ type: 'topic', value: '*' }], token: granted, secret: SECRET },
      { name: 'other', url: withoutGrant.url, selectors: [{ type: 'topic', value: '*' }], token: other, secret: SECRET },
      { name: 'anon', url: noToken.url, selectors: [{ type: 'exact', value: 'https://example.com/orders/1' }], secret: SECRET },
    ] }), { anonymous: true });
    await new Promise((r) => setTimeout(r, 200));
    const priv = await hub.hub.publish({ topics: ['https://example.com/orders/1'], data: 'secret', private: true });
    const pub = await hub.hub.publish({ topics: ['https://example.com/orders/1'], data: 'public' });
    await waitUntil(() => withGrant.ackIds().length === 2 && withoutGrant.ackIds().length === 1 && noToken.ackIds().length === 1, 3000, 'deliveries');
    await new Promise((r) => setTimeout(r, 150));
    expect(withGrant.acknowledged().map((u) => [u.id, u.private])).toEqual([[priv.id, true], [pub.id, false]]);
    expect(withoutGrant.ackIds()).toEqual([pub.id]);
    expect(noToken.ackIds()).toEqual([pub.id]);
  });

  it('fails a webhook whose token is expired or invalid, with the reason in its status', async () => {
    const cb = await callback();
    const expired = await legacyToken({ subscribe: ['*'] }, SUB_KEY, { exp: Math.floor(Date.now() / 1000) - 10 });
    const forged = await legacyToken({ subscribe: ['*'] }, 'not-the-subscriber-key-at-all!!');
    const hub = await hubWith(fast({ definitions: [
      { name: 'expired', url: cb.url, selectors: [{ type: 'topic', value: '*' }], token: expired, secret: SECRET },
      { name: 'forged', url: cb.url, selectors: [{ type: 'topic', value: '*' }], token: forged, secret: SECRET },
      { name: 'none', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET },
    ] }), { anonymous: false });
    await hub.hub.publish({ topics: ['x'], data: 'a' });
    const token = await admin();
    await waitUntil(() => false, 300, '').catch(() => {});
    const list = (await api(hub, 'GET', '', token)).json.webhooks as Array<{ name: string; status: { state: string; reason?: string } }>;
    const by = Object.fromEntries(list.map((w) => [w.name, w.status]));
    expect(by.expired).toMatchObject({ state: 'failing', reason: 'token refused: token expired' });
    expect(by.forged).toMatchObject({ state: 'failing', reason: 'token refused: signature verification failed' });
    expect(by.none).toMatchObject({ state: 'failing', reason: 'the webhook has no token and the hub does not allow anonymous subscribers' });
    expect(cb.received).toEqual([]);
  });

  it('reports updates trimmed from history before delivery instead of skipping them silently', async () => {
    const cb = await callback();
    cb.respond = () => 503;
    const hub = await startHub({ transport: new MemoryTransport({ size: 5 }), anonymous: true, webhooks: fast({ minBackoff: 50, maxBackoff: 50, definitions: [{ name: 'g', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }) });
    cleanup.push(() => hub.close());
    await hub.hub.ready;
    await new Promise((r) => setTimeout(r, 150));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await hub.hub.publish({ topics: ['x'], data: String(i) })).id);
    await waitUntil(() => cb.received.length >= 1, 2000, 'first attempt');
    for (let i = 3; i < 20; i++) ids.push((await hub.hub.publish({ topics: ['x'], data: String(i) })).id);
    cb.respond = () => 200;
    await waitUntil(() => cb.ackIds().length >= 6, 3000, 'deliveries after the gap');
    await new Promise((r) => setTimeout(r, 200));
    // What the first history read took (before the outage) is delivered; what was trimmed after
    // it was never read, and is reported as a gap; the five updates still in history follow.
    const acked = cb.ackIds();
    const k = acked.length - 5;
    expect(k).toBeGreaterThanOrEqual(1);
    expect(k).toBeLessThanOrEqual(3);
    expect(acked).toEqual([...ids.slice(0, k), ...ids.slice(15)]);
    const view = (await api(hub, 'GET', '/g', await admin())).json;
    expect(view.status.gaps).toBe(1);
    expect(view.status.lastGap.after).toBe(ids[k - 1]);
    expect(await (await fetch(`${hub.url}/metrics`)).text()).toContain('quicksilver_webhook_gaps_total{webhook="g"} 1');
  });

  it('never delays SSE subscribers behind a slow callback', async () => {
    const cb = await callback();
    cb.respond = () => new Promise((r) => setTimeout(() => r(200), 1500));
    const hub = await hubWith(fast({ timeout: 5000, definitions: [{ name: 'slow', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }), { anonymous: true });
    await new Promise((r) => setTimeout(r, 150));
    const sse = await SseClient.connect(subscribeUrl(hub.hubUrl, [['topic', '*']]));
    cleanup.push(async () => sse.close());
    const t0 = Date.now();
    for (let i = 0; i < 5; i++) await hub.hub.publish({ topics: ['x'], data: String(i) });
    await sse.waitForEvents(5, 1000);
    expect(Date.now() - t0).toBeLessThan(500);
    expect(cb.ackIds().length).toBe(0);
  });
});

describe('webhook requests are bounded', () => {
  it('gives up on an answer after the timeout, and reads at most 4 KiB of a body', async () => {
    const http = await import('node:http');
    const events: string[] = [];
    let n = 0;
    const server = http.createServer((req, res) => {
      req.resume();
      const attempt = ++n;
      if (attempt === 1) return void setTimeout(() => res.destroyed || res.end(), 2000); // too slow: timed out
      // A 2xx with a 10 MiB body: acknowledged from the status; the hub stops reading early.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      let sent = 0;
      const chunk = Buffer.alloc(64 * 1024, 120);
      const pump = (): void => {
        while (sent < 10 * 1024 * 1024 && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        if (!res.destroyed) res.end();
      };
      res.on('close', () => events.push(`attempt ${attempt}: closed after ${sent} bytes${res.writableFinished ? ', finished' : ''}`));
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanup.push(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
    const port = (server.address() as { port: number }).port;
    const hub = await hubWith(fast({ timeout: 200, definitions: [{ name: 'big', url: `http://127.0.0.1:${port}/`, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }));
    await new Promise((r) => setTimeout(r, 150));
    const t0 = Date.now();
    await hub.hub.publish({ topics: ['x'], data: 'a' });
    await waitUntil(() => events.some((e) => e.startsWith('attempt 2')), 5000, 'the second attempt');
    expect(n).toBe(2);
    expect(Date.now() - t0).toBeLessThan(1500); // the first attempt did not wait its 2 s
    const [second] = events.filter((e) => e.startsWith('attempt 2'));
    expect(second).not.toContain('finished');
    expect(Number(/after (\d+) bytes/.exec(second!)![1])).toBeLessThan(10 * 1024 * 1024);
    await waitUntil(() => false, 200, '').catch(() => {});
    const view = (await api(hub, 'GET', '/big', await admin())).json;
    expect(view.status.state).toBe('active');
    expect(await (await fetch(`${hub.url}/metrics`)).text()).toContain('quicksilver_webhook_failures_total{webhook="big"} 1');
  });
});

describe('webhook callback safety (SSRF)', () => {
  it('refuses loopback callbacks unless allowed, when configured and when registered', async () => {
    const cb = await callback();
    const refused = await startHub({ transport: new MemoryTransport(), webhooks: { definitions: [{ name: 'x', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] } });
    cleanup.push(() => refused.close());
    await expect(refused.hub.ready).rejects.toThrow(/webhook x: address 127\.0\.0\.1 is loopback, private/);

    const hub = await hubWith({ minBackoff: 20 });
    const token = await admin();
    for (const url of [cb.url, 'http://10.1.2.3/hook', 'http://[::1]/hook', 'http://[::ffff:127.0.0.1]/hook', 'http://169.254.169.254/latest/meta-data', 'http://localhost/hook', 'file:///etc/passwd']) {
      const r = await api(hub, 'POST', '', token, { name: 'x', url, topic: '*', secret: SECRET });
      expect(r.status, url).toBe(400);
    }
    const allowed = await hubWith(fast());
    expect((await api(allowed, 'POST', '', token, { name: 'x', url: cb.url, topic: '*', secret: SECRET })).status).toBe(201);
  });

  it('checks the addresses a host name resolves to when connecting', async () => {
    const cb = await callback();
    // The host name is allowed, its address is not: refused at connect time, with the reason.
    const hub = await hubWith({ allow: ['localhost'], minBackoff: 20, maxBackoff: 50, refreshInterval: 50, leaseTtl: 1000 });
    const token = await admin();
    const r = await api(hub, 'POST', '', token, { name: 'rebind', url: `http://localhost:${cb.port}/hook`, topic: '*', secret: SECRET });
    expect(r.status).toBe(400);
    expect(r.text).toMatch(/localhost: address (127\.0\.0\.1|::1) is loopback/);
    // A configured webhook is checked again at every connection (as after a DNS change).
    const configured = await hubWith({ allow: ['localhost'], minBackoff: 20, maxBackoff: 50, refreshInterval: 50, leaseTtl: 1000, definitions: [{ name: 'cfg', url: `http://localhost:${cb.port}/hook`, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] });
    await new Promise((r) => setTimeout(r, 150));
    await configured.hub.publish({ topics: ['x'], data: 'a' });
    await new Promise((r) => setTimeout(r, 300));
    const view = (await api(configured, 'GET', '/cfg', token)).json;
    expect(view.status.state).toBe('retrying');
    expect(view.status.reason).toMatch(/localhost: address .* is loopback/);
    expect(cb.received).toEqual([]);
  });
});

describe('webhooks API', () => {
  it('creates, lists, gets, deletes; only for publishers covering every selector', async () => {
    const cb = await callback();
    const hub = await hubWith(fast());
    const books = await legacyToken({ publish: ['https://example.com/books/{id}'] });
    const subscriberOnly = await legacyToken({ subscribe: ['*'] });
    const body = { name: 'mine', url: cb.url, topic: ['https://example.com/books/{id}'], secret: SECRET, token: await legacyToken({ subscribe: ['*'] }, SUB_KEY) };

    expect((await api(hub, 'POST', '', null, body)).status).toBe(401);
    expect((await api(hub, 'POST', '', subscriberOnly, body)).status).toBe(403);
    expect((await api(hub, 'POST', '', books, { ...body, topic: '*' })).status).toBe(403);
    expect((await api(hub, 'POST', '', books, { ...body, secret: 'short' })).status).toBe(400);
    expect((await api(hub, 'POST', '', books, { ...body, nope: 1 })).status).toBe(400);
    const created = await api(hub, 'POST', '', books, body);
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ name: 'mine', url: cb.url, source: 'api', token: true, selectors: [{ type: 'topic', value: 'https://example.com/books/{id}' }] });
    expect(created.text).not.toContain(SECRET);
    expect((await api(hub, 'POST', '', books, body)).status).toBe(409);

    const u = await hub.hub.publish({ topics: ['https://example.com/books/7'], data: 'x' });
    await waitUntil(() => cb.ackIds().length === 1, 3000, 'delivery to the registered webhook');
    expect(cb.ackIds()).toEqual([u.id]);

    const list = await api(hub, 'GET', '', books);
    expect(list.json.webhooks.map((w: { name: string }) => w.name)).toEqual(['mine']);
    expect((await api(hub, 'GET', '', await legacyToken({ publish: ['https://example.com/authors/{id}'] }))).json.webhooks).toEqual([]);
    const one = await api(hub, 'GET', '/mine', books);
    expect(one.json.cursor).toBe(u.id);
    expect(one.json.status.state).toBe('active');
    expect((await api(hub, 'DELETE', '/mine', await legacyToken({ publish: ['https://example.com/authors/{id}'] }))).status).toBe(403);
    expect((await api(hub, 'DELETE', '/mine', books)).status).toBe(204);
    expect((await api(hub, 'GET', '/mine', books)).status).toBe(404);
    await hub.hub.publish({ topics: ['https://example.com/books/8'], data: 'y' });
    await new Promise((r) => setTimeout(r, 200));
    expect(cb.ackIds()).toEqual([u.id]);
  });

  it('accepts draft-08 match selectors and refuses to delete configured webhooks', async () => {
    const cb = await callback();
    const hub = await hubWith(fast({ definitions: [{ name: 'cfg', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] }));
    const token = await admin();
    const r = await api(hub, 'POST', '', token, { name: 'patterns', url: cb.url, match_urlpattern: 'https://example.com/books/:id', match: 'https://example.com/exact', secret: SECRET });
    expect(r.status).toBe(201);
    expect((await api(hub, 'DELETE', '/cfg', token)).status).toBe(409);
    expect((await api(hub, 'GET', '', token)).json.webhooks.map((w: { name: string; source: string }) => `${w.name}:${w.source}`)).toEqual(['cfg:config', 'patterns:api']);
    const dup = duplicates(['a', 'b']);
    expect(dup.size).toBe(0);
  });

  it('refuses to start on a transport that keeps no webhook state', async () => {
    const transport = new MemoryTransport();
    Object.defineProperty(transport, 'webhooks', { value: undefined });
    const hub = await startHub({ transport, webhooks: {} });
    cleanup.push(() => hub.close());
    await expect(hub.hub.ready).rejects.toThrow('webhooks: the memory transport does not keep webhook state; use memory, lmdb, redis, postgres or nats');
  });

  it('is absent when webhooks are not enabled', async () => {
    const hub = await startHub({ transport: new MemoryTransport() });
    cleanup.push(() => hub.close());
    expect((await api(hub, 'GET', '', await admin())).status).toBe(404);
  });
});

void KEY;

describe('webhook throughput (measured, printed)', () => {
  for (const batch of [1, 20]) {
    it(`delivers 2000 updates to a local callback, batch ${batch}`, async () => {
      const cb = await callback();
      const hub = await startHub({ transport: new MemoryTransport({ size: 100_000 }), anonymous: true, webhooks: fast({ definitions: [{ name: 't', url: cb.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET, batch }] }) });
      cleanup.push(() => hub.close());
      await hub.hub.ready;
      await new Promise((r) => setTimeout(r, 150));
      const n = 2000;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: n }, (_, i) => hub.hub.publish({ topics: ['https://example.com/t'], data: String(i) })));
      await waitUntil(() => cb.ackIds().length >= n, 30_000, `${n} deliveries`);
      const rate = Math.round(n / ((performance.now() - t0) / 1000));
      console.log(`[webhooks] ${rate} updates/s to a local callback (memory transport, batch ${batch}, ${cb.received.length} requests)`);
      expect(cb.acknowledged().map((u) => Number(u.data))).toEqual(Array.from({ length: n }, (_, i) => i));
      // A floor far below what a laptop does: catches a delivery loop that waits between requests.
      expect(rate).toBeGreaterThan(batch === 1 ? 200 : 1000);
    }, 60_000);
  }
});
