/**
 * A real browser's native EventSource against a real hub: the page is served from another origin
 * (another port), so every subscription is a cross-origin request that needs the hub's CORS
 * headers, and every event goes through Chromium's own SSE parser.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { describeBrowser, launchBrowser } from './browser.js';
import { legacyToken, publish, startHub, subscribeUrl, type TestHub } from './helpers.js';

interface RecordedEvent {
  type: string;
  data: string;
  lastEventId: string;
  origin: string;
}

declare global {
  interface Window {
    __events: RecordedEvent[];
    __log: string[];
  }
}

/**
 * The page under test: opens `new EventSource(src, { withCredentials })` from its query string and
 * records every `message` (and each extra event type named in `types`) into `window.__events`,
 * and `open` / `error` into `window.__log`.
 */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>quicksilver EventSource test</title></head>
<body>
<script>
  window.__events = [];
  window.__log = [];
  const q = new URLSearchParams(location.search);
  const es = new EventSource(q.get('src'), { withCredentials: q.get('cred') === '1' });
  window.__es = es;
  const record = (e) => window.__events.push({ type: e.type, data: e.data, lastEventId: e.lastEventId, origin: e.origin });
  es.addEventListener('message', record);
  for (const t of (q.get('types') || '').split(',').filter(Boolean)) es.addEventListener(t, record);
  es.onopen = () => window.__log.push('open');
  es.onerror = () => window.__log.push('error:' + es.readyState);
</script>
</body></html>`;

/** What the SSE spec says a browser hands to the page: lines split on CRLF, CR or LF, joined by LF. */
function sseData(data: string): string {
  return data.split(/\r\n|\r|\n/).join('\n');
}

let browser: Browser;
let pageServer: http.Server;
let pageOrigin: string;
let h: TestHub;
let hubOrigin: string;
let token: string;
const contexts: BrowserContext[] = [];

describeBrowser('native EventSource in Chromium (cross-origin)', () => {
  beforeAll(async () => {
    // One Chromium for the whole file.
    browser = await launchBrowser();
    pageServer = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(PAGE);
    });
    await new Promise<void>((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
    pageOrigin = `http://127.0.0.1:${(pageServer.address() as AddressInfo).port}`;
    h = await startHub({ anonymous: true, corsOrigins: ['*'] });
    hubOrigin = new URL(h.hubUrl).origin;
    token = await legacyToken({ publish: ['*'] });
  });

  afterEach(async () => {
    // Closing the contexts closes their EventSources, so the hubs are not left with open streams.
    await Promise.all(contexts.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await new Promise<void>((resolve) => (pageServer ? pageServer.close(() => resolve()) : resolve()));
  });

  /** Opens the page (on its own origin) subscribed to `src`, and waits until the stream is open. */
  async function openPage(src: string, options: { withCredentials?: boolean; types?: string[] } = {}): Promise<Page> {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    const url = new URL(pageOrigin + '/');
    url.searchParams.set('src', src);
    if (options.withCredentials) url.searchParams.set('cred', '1');
    if (options.types) url.searchParams.set('types', options.types.join(','));
    await page.goto(url.toString());
    expect(new URL(page.url()).origin).not.toBe(hubOrigin);
    await page.waitForFunction(() => window.__log.includes('open'), undefined, { timeout: 5000 });
    return page;
  }

  async function waitForEvents(page: Page, n: number, timeout = 5000): Promise<RecordedEvent[]> {
    try {
      await page.waitForFunction((count) => window.__events.length >= count, n, { timeout, polling: 20 });
    } catch (err) {
      const got = await page.evaluate(() => ({ events: window.__events, log: window.__log }));
      throw new Error(`waiting for ${n} events in the browser: ${(err as Error).message}\nso far: ${JSON.stringify(got)}`);
    }
    return page.evaluate(() => window.__events);
  }

  it('receives single-line and multi-line updates, data joined by LF as the SSE spec says', async () => {
    const topic = 'https://example.com/books/1';
    const page = await openPage(subscribeUrl(h.hubUrl, [['topic', topic]]), { types: ['book'] });

    const updates: Array<{ data: string; id?: string; type?: string }> = [
      { data: 'hello world', id: 'urn:test:single' },
      // Every line break the spec knows: LF, CRLF and a lone CR.
      { data: 'first\nsecond\r\nthird\rfourth' },
      { data: 'line\r\n\r\n\n\rafter blank lines' },
      { data: 'trailing\n' },
      { data: '\nleading break' },
      { data: ' leading space kept' },
      { data: 'id: injected\nevent: evil\nretry: 1\n\ndata: still data' },
      { data: 'h\u00e9llo \u{1F30D} \u2028 \u00a0', id: 'urn:test:unicode' },
      { data: '{"title":"typed"}', type: 'book' },
      { data: '' },
    ];
    const ids: string[] = [];
    for (const u of updates) {
      const fields: Record<string, string> = { topic, data: u.data };
      if (u.id) fields.id = u.id;
      if (u.type) fields.type = u.type;
      const res = await publish(h.hubUrl, fields, token);
      expect(res.status, res.body).toBe(200);
      if (u.id) expect(res.body).toBe(u.id);
      ids.push(res.body);
    }

    const events = await waitForEvents(page, updates.length);
    expect(events).toEqual(
      updates.map((u, i) => ({
        type: u.type ?? 'message',
        data: sseData(u.data),
        lastEventId: ids[i],
        origin: hubOrigin,
      })),
    );
    // The examples the brief is about, spelt out.
    expect(events[0]!.data).toBe('hello world');
    expect(events[0]!.lastEventId).toBe('urn:test:single');
    expect(events[1]!.data).toBe('first\nsecond\nthird\nfourth');
    expect(events[1]!.lastEventId).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
    // No reconnection or error happened along the way.
    expect(await page.evaluate(() => window.__log)).toEqual(['open']);
  });

  it('a draft-08 match= / match_urlpattern= subscription with credentials receives public updates', async () => {
    const page = await openPage(
      subscribeUrl(h.hubUrl, [
        ['match', 'https://example.com/books/1'],
        ['match_urlpattern', 'https://example.com/authors/:id'],
      ]),
      { withCredentials: true },
    );

    const r1 = await publish(h.hubUrl, { topic: 'https://example.com/books/1', data: 'book 1', id: 'b1' }, token);
    const r2 = await publish(h.hubUrl, { topic: 'https://example.com/books/2', data: 'book 2', id: 'b2' }, token);
    const r3 = await publish(h.hubUrl, { topic: 'https://example.com/authors/7', data: 'multi\r\nline', id: 'a7' }, token);
    expect([r1.status, r2.status, r3.status]).toEqual([200, 200, 200]);

    const events = await waitForEvents(page, 2);
    // books/2 was published between the two and matches neither matcher.
    expect(events).toEqual([
      { type: 'message', data: 'book 1', lastEventId: 'b1', origin: hubOrigin },
      { type: 'message', data: 'multi\nline', lastEventId: 'a7', origin: hubOrigin },
    ]);
    expect(await page.evaluate(() => window.__log)).toEqual(['open']);
  });

  it('reconnects after the hub ends the stream and resumes from Last-Event-ID without loss or duplicates', async () => {
    // A short connection lifetime makes the hub end the stream by itself (80–100 % of 1.5 s,
    // checked every second), as it does in production after writeTimeout.
    const h2 = await startHub({ anonymous: true, corsOrigins: ['*'], writeTimeout: 1500 });
    // The browser's reconnections are made inside its network stack, out of Playwright's sight:
    // a second listener in front of the same hub handler records what the hub is sent.
    const requests: Array<{ method: string; lastEventId: string | undefined }> = [];
    const front = http.createServer((req, res) => {
      const id = req.headers['last-event-id'];
      requests.push({ method: req.method ?? '', lastEventId: Array.isArray(id) ? id[0] : id });
      h2.hub.handler(req, res);
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    const frontHubUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}/.well-known/mercure`;
    const frontOrigin = new URL(frontHubUrl).origin;
    try {
      const topic = 'https://example.com/reconnect';
      const page = await openPage(subscribeUrl(frontHubUrl, [['topic', topic]]));
      expect(requests).toEqual([{ method: 'GET', lastEventId: undefined }]);

      // retry: 1000 sets the browser's reconnection delay, leaving time to publish while it waits.
      const p1 = await publish(h2.hubUrl, { topic, data: 'before the cut', id: 'r1', retry: '1000' }, token);
      expect(p1.status).toBe(200);
      await waitForEvents(page, 1);

      // The hub ends the stream: the browser reports an error and stays CONNECTING (0) to retry.
      await page.waitForFunction(() => window.__log.some((l) => l.startsWith('error')), undefined, { timeout: 5000 });
      expect(await page.evaluate(() => window.__log)).toEqual(['open', 'error:0']);

      // Published while the browser is disconnected: only the history replay can deliver it.
      const p2 = await publish(h2.hubUrl, { topic, data: 'while\ndisconnected', id: 'r2' }, token);
      expect(p2.status).toBe(200);

      const events = await waitForEvents(page, 2);
      expect(events).toEqual([
        { type: 'message', data: 'before the cut', lastEventId: 'r1', origin: frontOrigin },
        { type: 'message', data: 'while\ndisconnected', lastEventId: 'r2', origin: frontOrigin },
      ]);
      await page.waitForFunction(() => window.__log.filter((l) => l === 'open').length >= 2, undefined, { timeout: 5000 });
      // The reconnection carried the last id the browser saw (a CORS preflight may precede it).
      expect(requests.filter((r) => r.method === 'GET')).toEqual([
        { method: 'GET', lastEventId: undefined },
        { method: 'GET', lastEventId: 'r1' },
      ]);

      // One more cut and reconnection (now from r2): nothing is replayed twice.
      await page.waitForFunction(() => window.__log.filter((l) => l === 'open').length >= 3, undefined, { timeout: 6000 });
      expect(await page.evaluate(() => window.__events.map((e) => e.lastEventId))).toEqual(['r1', 'r2']);
      expect(requests.filter((r) => r.method === 'GET').at(-1)).toEqual({ method: 'GET', lastEventId: 'r2' });
    } finally {
      await Promise.all(contexts.splice(0).map((c) => c.close()));
      await h2.close();
      front.closeAllConnections();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    }
  });
});
