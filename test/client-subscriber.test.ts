/**
 * The fetch-based subscriber: the SSE parser against the spec's corner cases, then a real hub over
 * real sockets (iteration, reconnection with Last-Event-ID without gap or duplicate, tokens,
 * aborting, fatal and transient errors, draft-08 matchers, discovery), then the built module in
 * headless Chromium on another origin with a bearer token.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express from 'express';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addLinkHeader } from '../src/client/discovery.js';
import { Publisher } from '../src/client/publisher.js';
import {
  discoverAndSubscribe,
  SseParser,
  subscribe,
  SubscribeError,
  subscribeUrl,
  type MercureEvent,
  type OpenEvent,
  type Subscription,
} from '../src/client/subscriber.js';
import { createAccessToken, createPublisherToken, createSubscriberToken } from '../src/client/token.js';
import { describeBrowser, launchBrowser } from './browser.js';
import { KEY, sleep, startHub, SUB_KEY, type TestHub } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseAll(chunks: string[]): { events: MercureEvent[]; retries: number[]; parser: SseParser } {
  const events: MercureEvent[] = [];
  const retries: number[] = [];
  const parser = new SseParser((e) => events.push(e), (ms) => retries.push(ms));
  for (const c of chunks) parser.feed(c);
  return { events, retries, parser };
}

/** Every way of cutting `text` into two or three chunks gives the same events. */
function expectChunkingInvariant(text: string): MercureEvent[] {
  const whole = parseAll([text]).events;
  for (let i = 0; i <= text.length; i++) {
    expect(parseAll([text.slice(0, i), text.slice(i)]).events).toEqual(whole);
  }
  expect(parseAll([...text]).events).toEqual(whole);
  return whole;
}

describe('SseParser', () => {
  it('handles LF, CR and CRLF line endings, also split across chunks', () => {
    const events = expectChunkingInvariant('data: a\n\ndata: b\r\rdata: c\r\n\r\ndata: d\r\ndata: e\rdata: f\n\n');
    expect(events.map((e) => e.data)).toEqual(['a', 'b', 'c', 'd\ne\nf']);
  });

  it('joins multi-line data with LF, strips one leading space, keeps the rest', () => {
    const events = expectChunkingInvariant('data:no space\ndata:  two spaces\ndata\ndata: \n\n');
    expect(events).toEqual([{ id: '', type: 'message', data: 'no space\n two spaces\n\n', retry: undefined }]);
  });

  it('ignores one leading BOM only, comments and unknown fields', () => {
    const events = expectChunkingInvariant('\uFEFF: hello\n:\nfoo: bar\nevent: book\ndata: x\n\n');
    expect(events).toEqual([{ id: '', type: 'book', data: 'x', retry: undefined }]);
    expect(parseAll(['\uFEFF\uFEFFdata: y\n\n']).events).toEqual([]); // the second BOM makes a field name
  });

  it('keeps the last event id across events, ignores ids with NUL, and resets on empty id', () => {
    const events = expectChunkingInvariant('id: 1\ndata: a\n\ndata: b\n\nid: x\u0000y\ndata: c\n\nid\ndata: d\n\n');
    expect(events.map((e) => [e.id, e.data])).toEqual([['1', 'a'], ['1', 'b'], ['1', 'c'], ['', 'd']]);
  });

  it('accepts retry only when all ASCII digits', () => {
    const { events, retries } = parseAll(['retry: 1500\nretry: 2s\nretry: -1\nretry: 1.5\nretry:  7\ndata: x\n\nretry: 300\n\n']);
    expect(retries).toEqual([1500, 300]);
    expect(events).toEqual([{ id: '', type: 'message', data: 'x', retry: 1500 }]);
  });

  it('does not dispatch blocks without data, and drops an incomplete event on reset', () => {
    const { events, parser } = parseAll(['event: x\nid: 7\n\n', 'id: 8\ndata: partial']);
    expect(events).toEqual([]);
    expect(parser.lastEventId).toBe('7'); // an id-only block still sets the last event ID
    parser.reset();
    parser.feed('data: next\n\n');
    expect(events).toEqual([{ id: '7', type: 'message', data: 'next', retry: undefined }]);
  });
});

describe('subscribeUrl', () => {
  it('builds draft-07 and draft-08 URLs with the right last event id parameter', () => {
    const hub = 'https://hub.example/.well-known/mercure?foo=1';
    expect(subscribeUrl(hub, { topics: ['https://example.com/books/{id}', 'x'], lastEventId: 'urn:1' })).toBe(
      'https://hub.example/.well-known/mercure?foo=1&topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D&topic=x&lastEventID=urn%3A1',
    );
    expect(subscribeUrl(hub, { matches: 'https://example.com/a', matchUrlPatterns: ['https://example.com/b/:id'], lastEventId: 'earliest' })).toBe(
      'https://hub.example/.well-known/mercure?foo=1&match=https%3A%2F%2Fexample.com%2Fa&match_urlpattern=https%3A%2F%2Fexample.com%2Fb%2F%3Aid&last_event_id=earliest',
    );
    expect(() => subscribeUrl(hub, {})).toThrow(/Nothing to subscribe to/);
    expect(() => subscribeUrl(hub, { topics: 'a', matches: 'b' })).toThrow(/cannot mix/);
  });
});

/** Collects a subscription's events, errors and opens. */
function record(sub: Subscription): { events: MercureEvent[]; errors: SubscribeError[]; opens: OpenEvent[] } {
  const r = { events: [] as MercureEvent[], errors: [] as SubscribeError[], opens: [] as OpenEvent[] };
  sub.on('message', (e) => r.events.push(e));
  sub.on('error', (e) => r.errors.push(e));
  sub.on('open', (e) => r.opens.push(e));
  return r;
}

async function until(predicate: () => boolean, what: string, timeout = 5000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Takes `n` events from the async iterator. */
async function take(sub: AsyncIterable<MercureEvent>, n: number, timeout = 5000): Promise<MercureEvent[]> {
  const out: MercureEvent[] = [];
  const iterator = sub[Symbol.asyncIterator]();
  const timer = sleep(timeout).then(() => {
    throw new Error(`timed out after ${out.length} of ${n} events`);
  });
  while (out.length < n) {
    const r = await Promise.race([iterator.next(), timer]);
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

function countingFetch(): { fetch: typeof fetch; calls: () => number } {
  let n = 0;
  return {
    fetch: (input, init) => {
      n++;
      return fetch(input, init);
    },
    calls: () => n,
  };
}

describe('subscribe() against a real hub', () => {
  let h: TestHub;
  let publisher: Publisher;
  let subToken: string;

  beforeAll(async () => {
    h = await startHub({ anonymous: true });
    publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
    subToken = await createSubscriberToken({ key: SUB_KEY, subscribe: ['https://example.com/private/{id}'] });
  });
  afterAll(() => h.close());

  it('yields events through the async iterator, multi-line data joined by LF, with type and retry', async () => {
    const sub = subscribe(h.hubUrl, { topics: 'https://example.com/books/{id}' });
    const opened = new Promise<OpenEvent>((resolve) => sub.on('open', resolve));
    expect(sub.state).toBe('connecting');
    await opened;
    expect(sub.state).toBe('open');
    const ids = [
      await publisher.publish({ topics: 'https://example.com/books/1', data: 'plain' }),
      await publisher.publish({ topics: 'https://example.com/books/2', data: 'first\nsecond\r\nthird\rfourth', type: 'book', retry: 1234 }),
      await publisher.publish({ topics: 'https://example.com/other', data: 'not selected' }),
      await publisher.publish({ topics: 'https://example.com/books/3', data: '' }),
    ];
    const events: MercureEvent[] = [];
    for await (const e of sub) {
      events.push(e);
      if (events.length === 3) break; // closes the subscription
    }
    expect(events).toEqual([
      { id: ids[0], type: 'message', data: 'plain', retry: undefined },
      { id: ids[1], type: 'book', data: 'first\nsecond\nthird\nfourth', retry: 1234 },
      { id: ids[3], type: 'message', data: '', retry: undefined },
    ]);
    expect(sub.state).toBe('closed');
    expect(sub.retryDelay).toBe(1234);
    expect(sub.lastEventId).toBe(ids[3]);
    await until(() => h.hub.hub.connected === 0, 'the hub to see the subscriber leave');
  });

  it('reconnects with Last-Event-ID when the hub ends the stream: no gap, no duplicate', async () => {
    const hub = await startHub({ anonymous: true, writeTimeout: 400 });
    const pub = new Publisher({ hubUrl: hub.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
    const sub = subscribe(hub.hubUrl, { topics: 'https://example.com/feed', retry: 20 });
    const r = record(sub);
    try {
      await until(() => r.opens.length === 1, 'the first connection');
      const published: string[] = [];
      const started = Date.now();
      while (Date.now() - started < 3500) {
        published.push(await pub.publish({ topics: 'https://example.com/feed', data: String(published.length) }));
        await sleep(15);
      }
      await until(() => r.events.length >= published.length, `${published.length} events`, 10_000);
      await sleep(100);
      expect(r.events.map((e) => e.id)).toEqual(published);
      expect(r.events.map((e) => e.data)).toEqual(published.map((_, i) => String(i)));
      // The hub closed the stream several times; each reconnection resumed from the last event seen.
      const reconnections = r.opens.filter((o) => o.reconnected);
      expect(reconnections.length).toBeGreaterThanOrEqual(2);
      for (const o of reconnections) {
        expect(o.lastEventId).toBeDefined();
        expect(published).toContain(o.lastEventId);
        expect(o.cursor).toBe(o.lastEventId); // the hub had it: no loss
      }
      expect(r.errors).toEqual([]); // clean stream ends are not errors
    } finally {
      sub.close();
      await hub.close();
    }
  });

  it('sends the bearer token in the Authorization header: private updates arrive', async () => {
    const withToken = subscribe({ hubUrl: h.hubUrl, topics: 'https://example.com/private/{id}', token: subToken });
    const anonymous = subscribe({ hubUrl: h.hubUrl, topics: 'https://example.com/private/{id}' });
    const a = record(anonymous);
    let calls = 0;
    const viaFactory = subscribe(h.hubUrl, { topics: 'https://example.com/private/{id}', token: { getToken: () => (calls++, subToken) } });
    try {
      await until(() => withToken.state === 'open' && anonymous.state === 'open' && viaFactory.state === 'open', 'three connections');
      const id = await publisher.publish({ topics: 'https://example.com/private/1', data: 'secret', private: true });
      const pubId = await publisher.publish({ topics: 'https://example.com/private/2', data: 'public' });
      expect((await take(withToken, 2)).map((e) => e.id)).toEqual([id, pubId]);
      expect((await take(viaFactory, 2)).map((e) => e.data)).toEqual(['secret', 'public']);
      expect(calls).toBe(1);
      await until(() => a.events.length === 1, 'the public update');
      expect(a.events.map((e) => e.data)).toEqual(['public']);
    } finally {
      withToken.close();
      anonymous.close();
      viaFactory.close();
    }
  });

  it('stops on AbortSignal: the iterator ends, nothing reconnects', async () => {
    const controller = new AbortController();
    const counter = countingFetch();
    const sub = subscribe(h.hubUrl, { topics: 'https://example.com/abort', signal: controller.signal, fetch: counter.fetch, retry: 10 });
    await until(() => sub.state === 'open', 'open');
    const before = h.hub.hub.connected;
    const iteration = (async () => {
      const got: MercureEvent[] = [];
      for await (const e of sub) got.push(e);
      return got;
    })();
    await publisher.publish({ topics: 'https://example.com/abort', data: 'one' });
    await until(() => sub.lastEventId !== undefined, 'the event');
    controller.abort();
    expect(await iteration).toHaveLength(1);
    expect(sub.state).toBe('closed');
    expect(await sub.finished).toBeNull();
    await until(() => h.hub.hub.connected === before - 1, 'the hub to drop the stream');
    await sleep(100);
    expect(counter.calls()).toBe(1);

    const pre = new AbortController();
    pre.abort();
    const never = subscribe(h.hubUrl, { topics: 'x', signal: pre.signal, fetch: counter.fetch });
    expect(never.state).toBe('closed');
    expect(await take(never, 1)).toEqual([]);
    expect(counter.calls()).toBe(1);
  });

  it('surfaces a 401 as a fatal error, once, without a reconnection loop', async () => {
    const closed = await startHub(); // anonymous off
    try {
      const counter = countingFetch();
      const sub = subscribe(closed.hubUrl, { topics: 'https://example.com/x', fetch: counter.fetch, retry: 10 });
      const r = record(sub);
      let thrown: unknown;
      try {
        for await (const _ of sub) void _;
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(SubscribeError);
      expect(thrown).toMatchObject({ kind: 'unauthorized', status: 401, fatal: true });
      expect((thrown as Error).message).toMatch(/\(401\): Unauthorized: no access token was presented.*subscriber token/);
      expect(await sub.finished).toBe(thrown);
      await sleep(200);
      expect(counter.calls()).toBe(1);
      expect(r.errors).toHaveLength(1);

      const bad = subscribe(closed.hubUrl, { topics: 'x', token: 'not.a.jwt', fetch: counter.fetch });
      const err = await bad.finished;
      expect(err).toMatchObject({ kind: 'unauthorized', authError: 'invalid_token' });
      expect(counter.calls()).toBe(2);

      // A 400 from the hub is final too.
      const wrong = subscribe(closed.hubUrl, { matches: 'https://example.com/\u200b', token: subToken, fetch: counter.fetch, retry: 10 });
      expect(await wrong.finished).toMatchObject({ kind: 'bad_request', status: 400, fatal: true });
      expect((await wrong.finished)!.hubMessage).toMatch(/control or format character/);
      await sleep(50);
      expect(counter.calls()).toBe(3);
    } finally {
      await closed.close();
    }
  });

  it('draft-08: match and match_urlpattern with an access token, cursor from Mercure-Last-Event-ID', async () => {
    const token = await createAccessToken({
      issuer: 'https://app.example',
      audience: h.hubUrl,
      key: SUB_KEY,
      alg: 'HS256',
      subscribe: ['https://example.com/users/42/*'],
      matchType: 'urlpattern',
      exp: '5m',
    });
    const before = await publisher.publish({ topics: 'https://example.com/orders/0', data: 'before' });
    const missed = await publisher.publish({ topics: 'https://example.com/orders/1', data: 'replayed' });
    const sub = subscribe(h.hubUrl, { matchUrlPatterns: 'https://example.com/orders/:id', matches: 'https://example.com/exact', token, lastEventId: before });
    const r = record(sub);
    try {
      const mine = await publisher.publish({ topics: ['https://example.com/orders/2', 'https://example.com/users/42/orders/2'], data: 'mine', private: true });
      await publisher.publish({ topics: 'https://example.com/orders/3', data: 'not mine', private: true });
      const exact = await publisher.publish({ topics: 'https://example.com/exact', data: 'exact' });
      await until(() => r.events.length >= 3, 'three events');
      await sleep(50);
      expect(r.events.map((e) => [e.id, e.data])).toEqual([[missed, 'replayed'], [mine, 'mine'], [exact, 'exact']]);
      expect(r.opens[0]).toMatchObject({ cursor: before, reconnected: false });
      expect(sub.cursor).toBe(before);
    } finally {
      sub.close();
    }
  });

  it('discoverAndSubscribe: the hub, the topic and the last-event-id come from the resource', async () => {
    const app = express();
    app.get('/books/9', async (_req, res) => {
      addLinkHeader(res, h.hubUrl, { lastEventId: await h.hub.hub.lastEventId(), self: 'https://example.com/books/9' });
      res.json({ title: 'v1' });
    });
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/books/9`;
    try {
      const resource = await fetch(url);
      // Updated after the resource was generated, before subscribing: must not be missed.
      const v2 = await publisher.publish({ topics: 'https://example.com/books/9', data: 'v2' });
      const sub = await discoverAndSubscribe(resource);
      expect(sub.discovery?.selfUrl).toBe('https://example.com/books/9');
      const v3 = publisher.publish({ topics: 'https://example.com/books/9', data: 'v3' });
      const events = await take(sub, 2);
      expect(events.map((e) => [e.id, e.data])).toEqual([[v2, 'v2'], [await v3, 'v3']]);
      sub.close();
      await expect(discoverAndSubscribe(url, { allowHub: (u) => u.hostname === 'hub.example' })).rejects.toThrow(/No acceptable hub/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('transient failures', () => {
  /** A server answering with `plan[i]` for the i-th request (the last one repeats). */
  async function scripted(plan: Array<(res: http.ServerResponse, req: http.IncomingMessage) => void>) {
    const requests: http.IncomingMessage[] = [];
    const server = http.createServer((req, res) => {
      requests.push(req);
      plan[Math.min(requests.length, plan.length) - 1]!(res, req);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/mercure`,
      requests,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }
  const stream = (body: string, end = true) => (res: http.ServerResponse) => {
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    if (end) res.end(body);
    else res.write(body);
  };

  it('reconnects after 5xx and network errors with backoff, reporting non-fatal errors', async () => {
    const s = await scripted([
      (res) => {
        res.writeHead(500);
        res.end('boom');
      },
      (res) => {
        res.writeHead(503, { 'Retry-After': '0' });
        res.end('draining');
      },
      (res) => res.socket?.destroy(),
      stream('id: a\ndata: 1\n\nid: b\ndata: 2\n\nid: c\ndata: incomplete'),
      stream(':\n\nid: c\ndata: 3\n\n', false),
    ]);
    const sub = subscribe(s.url, { topics: 'x', retry: 5 });
    const r = record(sub);
    try {
      await until(() => r.events.length === 3, 'three events');
      expect(r.events.map((e) => [e.id, e.data])).toEqual([['a', '1'], ['b', '2'], ['c', '3']]);
      expect(r.errors.map((e) => [e.kind, e.status, e.fatal])).toEqual([
        ['server_error', 500, false],
        ['unavailable', 503, false],
        ['network', undefined, false],
      ]);
      // Exponential backoff (jittered) from the 5 ms reconnection time.
      expect(r.errors[0]!.retryIn).toBe(5);
      expect(r.errors[1]!.retryIn).toBeGreaterThanOrEqual(7);
      expect(r.errors[1]!.retryIn).toBeLessThanOrEqual(10);
      // After the stream with the incomplete event ended, the reconnection resumed from b.
      expect(s.requests[4]!.headers['last-event-id']).toBe('b');
      expect(s.requests[0]!.headers['last-event-id']).toBeUndefined();
      expect(s.requests[0]!.headers.accept).toBe('text/event-stream');
    } finally {
      sub.close();
      await s.close();
    }
  });

  it('gives up after maxRetries consecutive failures', async () => {
    const s = await scripted([(res) => {
      res.writeHead(502);
      res.end('bad gateway');
    }]);
    try {
      const sub = subscribe(s.url, { topics: 'x', retry: 1, maxRetries: 2 });
      const err = await sub.finished;
      expect(err).toMatchObject({ kind: 'retries_exhausted', fatal: true, status: 502 });
      expect(err!.message).toMatch(/after 3 failed attempts.*bad gateway/);
      expect(s.requests).toHaveLength(3);
    } finally {
      await s.close();
    }
  });

  it('treats non-stream answers and 204 as final, and reconnects after inactivityTimeout', async () => {
    const html = await scripted([(res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end('<html>');
    }]);
    const noContent = await scripted([(res) => {
      res.writeHead(204);
      res.end();
    }]);
    const silent = await scripted([stream(':\n\n', false)]);
    try {
      expect(await subscribe(html.url, { topics: 'x' }).finished).toMatchObject({ kind: 'bad_response', fatal: true });
      expect((await subscribe(noContent.url, { topics: 'x' }).finished)?.message).toMatch(/asked not to reconnect/);
      const sub = subscribe(silent.url, { topics: 'x', inactivityTimeout: 100, retry: 1 });
      const r = record(sub);
      await until(() => silent.requests.length >= 3, 'reconnections');
      sub.close();
      expect(r.errors[0]).toMatchObject({ kind: 'timeout', fatal: false });
      expect(html.requests).toHaveLength(1);
      expect(noContent.requests).toHaveLength(1);
    } finally {
      await Promise.all([html.close(), noContent.close(), silent.close()]);
    }
  });

  it('applies backpressure: reading pauses while the iterator lags, nothing is lost', async () => {
    const body = Array.from({ length: 50 }, (_, i) => `id: ${i}\ndata: ${i}\n\n`).join('');
    const s = await scripted([stream(body, false)]);
    const sub = subscribe(s.url, { topics: 'x', highWaterMark: 5 });
    try {
      const got: string[] = [];
      for await (const e of sub) {
        got.push(e.data);
        if (got.length % 10 === 0) await sleep(20);
        if (got.length === 50) break;
      }
      expect(got).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    } finally {
      sub.close();
      await s.close();
    }
  });
});

describeBrowser('subscriber module in Chromium (no bundler, cross-origin, bearer token)', () => {
  let browser: Browser;
  let h: TestHub;
  let pageServer: http.Server;
  let pageOrigin: string;
  let publisher: Publisher;
  const DIST = path.join(ROOT, 'dist', 'client');

  beforeAll(async () => {
    // `npm test` builds dist/ before running the tests; building here would race other files using it.
    if (!existsSync(path.join(DIST, 'subscriber.js'))) throw new Error('dist/client/subscriber.js is missing: run `npm run build` first');
    browser = await launchBrowser();
    h = await startHub({ corsOrigins: ['*'] });
    publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
    pageServer = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        // The module straight from dist/, no bundler: the page only exposes it to the test.
        res.end(
          '<!doctype html><meta charset="utf-8"><title>subscriber</title>' +
            '<script type="module">import * as m from "/client/subscriber.js"; window.__mercure = m;</script>',
        );
        return;
      }
      const m = /^\/client\/([a-z-]+\.js)$/.exec(url.pathname);
      if (m && existsSync(path.join(DIST, m[1]!))) {
        res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
        res.end(readFileSync(path.join(DIST, m[1]!)));
        return;
      }
      res.writeHead(404);
      res.end();
    });
    await new Promise<void>((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
    pageOrigin = `http://127.0.0.1:${(pageServer.address() as AddressInfo).port}`;
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await h?.close();
    await new Promise<void>((resolve) => (pageServer ? pageServer.close(() => resolve()) : resolve()));
  });

  it('imports dist/client/subscriber.js as an ES module and receives a private update with a bearer token', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pageOrigin + '/');
      await page.waitForFunction(() => '__mercure' in window);
      expect(new URL(page.url()).origin).not.toBe(new URL(h.hubUrl).origin);
      const topic = 'https://example.com/browser/1';
      const before = await publisher.publish({ topics: 'https://example.com/browser/0', data: 'older' });
      const token = await createSubscriberToken({ key: SUB_KEY, subscribe: [topic] });
      await page.evaluate(
        async ({ hubUrl, topic, token, before }) => {
          const w = window as unknown as Record<string, unknown>;
          const mod = w.__mercure as typeof import('../src/client/subscriber.js');
          w.__events = [];
          w.__opens = [];
          w.__errors = [];
          const sub = mod.subscribe(hubUrl, { topics: [topic], token, lastEventId: before });
          w.__sub = sub;
          sub.on('open', (o) => (w.__opens as unknown[]).push(o));
          sub.on('error', (e) => (w.__errors as unknown[]).push(e.message));
          (async () => {
            for await (const e of sub) (w.__events as unknown[]).push(e);
          })();
        },
        { hubUrl: h.hubUrl, topic, token, before },
      );
      await page.waitForFunction(() => ((window as unknown as { __opens: unknown[] }).__opens.length > 0), undefined, { timeout: 5000 });
      const id = await publisher.publish({ topics: topic, data: 'private\nfor the browser', private: true });
      await page.waitForFunction(() => ((window as unknown as { __events: unknown[] }).__events.length > 0), undefined, { timeout: 5000 });
      const got = await page.evaluate(() => {
        const w = window as unknown as { __events: unknown[]; __opens: unknown[]; __errors: unknown[]; __sub: { close(): void; state: string } };
        w.__sub.close();
        return { events: w.__events, opens: w.__opens, errors: w.__errors, state: w.__sub.state };
      });
      expect(got.events).toEqual([{ id, type: 'message', data: 'private\nfor the browser' }]);
      // The cursor header crossed CORS (Access-Control-Expose-Headers).
      expect(got.opens).toEqual([expect.objectContaining({ cursor: before, reconnected: false })]);
      expect(got.errors).toEqual([]);
      expect(got.state).toBe('closed');
      expect(errors).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it('reports a 401 in the browser without retrying', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(pageOrigin + '/');
      await page.waitForFunction(() => '__mercure' in window);
      const result = await page.evaluate(async (hubUrl) => {
        const mod = (window as unknown as { __mercure: typeof import('../src/client/subscriber.js') }).__mercure;
        const sub = mod.subscribe(hubUrl, { topics: ['x'], token: 'not.a.token' });
        const err = await sub.finished;
        return { kind: err?.kind, status: err?.status, fatal: err?.fatal, name: err?.name };
      }, h.hubUrl);
      expect(result).toEqual({ kind: 'unauthorized', status: 401, fatal: true, name: 'SubscribeError' });
    } finally {
      await context.close();
    }
  });
});
