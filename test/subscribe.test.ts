import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessToken, legacyToken, publish, SseClient, sleep, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';

let h: TestHub;
let pub: string;
beforeAll(async () => {
  h = await startHub({ anonymous: true, heartbeat: 300 });
  pub = await legacyToken({ publish: ['*'] });
});
afterAll(() => h.close());

describe('subscribe: headers and framing', () => {
  it('sends the reference headers and an opening comment', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'x']]));
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toBe('text/event-stream');
    expect(s.headers['cache-control']).toMatch(/^private, no-cache, no-store, must-revalidate, max-age=0/);
    expect(s.headers['x-accel-buffering']).toBe('no');
    expect(s.headers['pragma']).toBe('no-cache');
    expect(s.headers['expire']).toBe('0');
    expect(s.headers['content-encoding']).toBeUndefined();
    expect(s.headers['x-content-type-options']).toBe('nosniff');
    expect(s.headers['x-frame-options']).toBe('DENY');
    await s.until(() => s.raw.startsWith(':\n'));
    s.close();
  });

  it('writes one data line per line, splitting on CR, LF and CRLF', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'lines']]));
    await publish(h.hubUrl, { topic: 'lines', id: 'l1', data: 'a\nb\r\nc\rd' }, pub);
    await s.waitForEvents(1);
    expect(s.raw).toBe(':\nid: l1\ndata: a\ndata: b\ndata: c\ndata: d\n\n');
    s.close();
  });

  it('sends heartbeat comments on idle streams', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'idle']]));
    await s.until(() => (s.raw.match(/:\n/g) ?? []).length >= 2, 3000, 'a heartbeat');
    s.close();
  });

  it('answers HEAD with the stream headers and no body', async () => {
    const res = await fetch(subscribeUrl(h.hubUrl, [['topic', 'x']]), { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
  });

  it('accepts the QUERY method with matchers in a form body, merged with the query', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['match', 'q1']]), {
      method: 'QUERY',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'match=q2',
    });
    expect(s.status).toBe(200);
    await publish(h.hubUrl, { topic: 'q1', data: '1' }, pub);
    await publish(h.hubUrl, { topic: 'q2', data: '2' }, pub);
    await s.waitForEvents(2);
    expect(s.events.map((e) => e.data)).toEqual(['1', '2']);
    s.close();
  });
});

describe('subscribe: request validation', () => {
  const status = async (params: Array<[string, string]>): Promise<[number, string]> => {
    const res = await fetch(subscribeUrl(h.hubUrl, params));
    return [res.status, await res.text()];
  };
  it('rejects a request with no selector', async () => {
    const [s, body] = await status([]);
    expect(s).toBe(400);
    expect(body).toMatch(/Missing "topic"/);
  });
  it('rejects unknown match-prefixed parameters, case-insensitively', async () => {
    expect((await status([['match_regex', 'x']]))[0]).toBe(400);
    expect((await status([['MATCH', 'x']]))[0]).toBe(400);
    expect((await status([['matches', 'x']]))[0]).toBe(400);
  });
  it('rejects invalid URL patterns and control characters', async () => {
    const [s, body] = await status([['match_urlpattern', 'https://example.com/(']]);
    expect(s).toBe(400);
    expect(body).toMatch(/Invalid urlpattern matcher/);
    expect((await status([['match', 'a\u0007b']]))[0]).toBe(400);
    expect((await status([['match_urlpattern', 'https://example.com/:id((a+)+)']]))[0]).toBe(400);
  });
  it('limits the number of selectors', async () => {
    expect((await status(Array.from({ length: 101 }, (_, i) => ['match', `t${i}`] as [string, string])))[0]).toBe(400);
    expect((await status(Array.from({ length: 1001 }, (_, i) => ['topic', `t${i}`] as [string, string])))[0]).toBe(400);
  });
  it('refuses to mix topic= and match=', async () => {
    expect((await status([['topic', 'a'], ['match', 'b']]))[0]).toBe(400);
  });
  it('rejects an invalid token with 401 even on an anonymous hub', async () => {
    const res = await fetch(subscribeUrl(h.hubUrl, [['topic', 'a']]), { headers: { Cookie: 'mercureAuthorization=garbage' } });
    expect(res.status).toBe(401);
    const res8 = await fetch(subscribeUrl(h.hubUrl, [['match', 'a']]), { headers: { Authorization: 'Bearer garbage.garbage.garbage' } });
    expect(res8.status).toBe(401);
    expect(res8.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
  });
});

describe('subscribe: matching and authorization', () => {
  it('matches exact strings, URI templates and * (draft-07)', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/books/{id}'], ['topic', 'plain']]));
    const all = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', '*']]));
    await publish(h.hubUrl, { topic: 'https://example.com/books/1', data: 'book' }, pub);
    await publish(h.hubUrl, { topic: 'https://example.com/books/1/reviews', data: 'review' }, pub);
    await publish(h.hubUrl, { topic: 'plain', data: 'plain' }, pub);
    await s.waitForEvents(2);
    await all.waitForEvents(3);
    await sleep(50);
    expect(s.events.map((e) => e.data)).toEqual(['book', 'plain']);
    s.close();
    all.close();
  });

  it('matches exact and URL pattern matchers (draft-08)', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['match_urlpattern', 'https://example.com/shelves/:id'], ['match_exact', 'ex']]));
    await publish(h.hubUrl, { topic: 'https://example.com/shelves/1', data: 'shelf' }, pub);
    await publish(h.hubUrl, { topic: 'https://example.com/shelves/1/x', data: 'no' }, pub);
    await publish(h.hubUrl, { topic: 'ex', data: 'ex' }, pub);
    await publish(h.hubUrl, { topic: 'EX', data: 'no' }, pub);
    await s.waitForEvents(2);
    await sleep(50);
    expect(s.events.map((e) => e.data)).toEqual(['shelf', 'ex']);
    s.close();
  });

  it('serves draft-07 and draft-08 subscribers side by side on one hub', async () => {
    const old = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/both/{x}']]));
    const neu = await SseClient.connect(subscribeUrl(h.hubUrl, [['match_urlpattern', 'https://example.com/both/:x']]));
    const p8 = await accessToken([{ actions: ['publish'], topics: [{ match: '*' }] }], { aud: h.hubUrl });
    await publish(h.hubUrl, { topic: 'https://example.com/both/1', data: 'from07' }, pub);
    await publish(h.hubUrl, { topic: 'https://example.com/both/2', data: 'from08' }, p8);
    await old.waitForEvents(2);
    await neu.waitForEvents(2);
    expect(old.events.map((e) => e.data)).toEqual(['from07', 'from08']);
    expect(neu.events.map((e) => e.data)).toEqual(['from07', 'from08']);
    old.close();
    neu.close();
  });

  it('delivers private updates only to entitled tokens, including via alternate topics', async () => {
    const topic = 'https://example.com/books/1';
    const alt = 'https://example.com/users/foo/?topic=' + encodeURIComponent(topic);
    const anon = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', topic]]));
    const viaAlt = await legacyToken({ subscribe: ['https://example.com/users/foo/{?topic}'] }, SUB_KEY);
    const wrong = await legacyToken({ subscribe: ['https://example.com/users/bar/{?topic}'] }, SUB_KEY);
    const a = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', topic]]), { headers: { Authorization: `Bearer ${viaAlt}` } });
    const b = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', topic]]), { headers: { Authorization: `Bearer ${wrong}` } });
    const at8 = await accessToken([{ actions: ['subscribe'], topics: [{ match: 'https://example.com/users/foo/*', match_type: 'urlpattern' }] }], { aud: h.hubUrl, key: SUB_KEY });
    const c = await SseClient.connect(subscribeUrl(h.hubUrl, [['match', topic]]), { headers: { Authorization: `Bearer ${at8}` } });
    expect([a.status, b.status, c.status]).toEqual([200, 200, 200]);
    await publish(h.hubUrl, [['topic', topic], ['topic', alt], ['private', 'on'], ['data', 'secret']], pub);
    await publish(h.hubUrl, [['topic', topic], ['data', 'public']], pub);
    await a.waitForEvents(2);
    await c.waitForEvents(2);
    await anon.waitForEvents(1);
    await b.waitForEvents(1);
    await sleep(100);
    expect(a.events.map((e) => e.data)).toEqual(['secret', 'public']);
    expect(c.events.map((e) => e.data)).toEqual(['secret', 'public']);
    expect(anon.events.map((e) => e.data)).toEqual(['public']);
    expect(b.events.map((e) => e.data)).toEqual(['public']);
    for (const s of [a, b, c, anon]) s.close();
  });

  it('takes the subscriber token from the cookie (both names) and the query parameter', async () => {
    const t = await legacyToken({ subscribe: ['*'] }, SUB_KEY);
    const t8 = await accessToken([{ actions: ['subscribe'], topics: [{ match: '*' }] }], { aud: h.hubUrl, key: SUB_KEY });
    const a = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'ck']]), { headers: { Cookie: `mercureAuthorization=${t}` } });
    const b = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'ck'], ['authorization', t]]));
    const c = await SseClient.connect(subscribeUrl(h.hubUrl, [['match', 'ck']]), { headers: { Cookie: `__Secure-mercure_access_token=${t8}` } });
    await publish(h.hubUrl, [['topic', 'ck'], ['private', 'on'], ['data', 's']], pub);
    await a.waitForEvents(1);
    await b.waitForEvents(1);
    await c.waitForEvents(1);
    for (const s of [a, b, c]) s.close();
  });
});

describe('subscribe: connection lifetime', () => {
  it('closes the stream when the token expires', async () => {
    const t = await legacyToken({ subscribe: ['*'] }, SUB_KEY, { exp: Math.floor(Date.now() / 1000) + 2 });
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'exp']]), { headers: { Authorization: `Bearer ${t}` } });
    expect(s.status).toBe(200);
    await s.until(() => s.closed, 5000, 'the stream to close at exp');
  });

  it('closes streams after write_timeout (randomised 80-100 %)', async () => {
    const short = await startHub({ anonymous: true, writeTimeout: 1500 });
    const start = Date.now();
    const s = await SseClient.connect(subscribeUrl(short.hubUrl, [['topic', 'x']]));
    await s.until(() => s.closed, 5000, 'write_timeout');
    const elapsed = Date.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual(1100);
    await short.close();
  });

  it('cuts a subscriber that does not read, without slowing others', async () => {
    const small = await startHub({ anonymous: true, subscriberBufferSize: 10, dispatchTimeout: 1000 });
    // A raw socket that never reads: its kernel buffers fill, then the hub's queue.
    const stalled = await new Promise<http.IncomingMessage>((resolve) => {
      const req = http.get(subscribeUrl(small.hubUrl, [['topic', 'flood']]), (res) => {
        res.pause();
        resolve(res);
      });
      req.on('error', () => {});
    });
    const healthy = await SseClient.connect(subscribeUrl(small.hubUrl, [['topic', 'flood']]));
    const big = 'x'.repeat(64 * 1024);
    for (let i = 0; i < 200; i++) await publish(small.hubUrl, { topic: 'flood', data: big }, pub);
    await healthy.waitForEvents(200, 10_000);
    await sleep(1500);
    expect(small.hub.hub.connected).toBe(1);
    expect(small.hub.metrics()).toMatch(/quicksilver_subscriber_disconnects_total\{reason="slow"\} 1/);
    stalled.destroy();
    healthy.close();
    await small.close();
  });

  it('forgets a subscriber whose connection drops (presence clears)', async () => {
    const before = h.hub.hub.connected;
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'drop']]));
    await s.until(() => s.raw.length > 0);
    expect(h.hub.hub.connected).toBe(before + 1);
    s.close();
    const end = Date.now() + 2000;
    while (h.hub.hub.connected !== before && Date.now() < end) await sleep(20);
    expect(h.hub.hub.connected).toBe(before);
  });
});
