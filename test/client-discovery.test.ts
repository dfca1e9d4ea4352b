/**
 * Discovery and the authorization cookie: Link headers built and parsed (RFC 8288), discovery of
 * a real Express app, the cookie helper on node:http, Express, Fastify and Web Headers, and the
 * cookie authorizing private subscriptions on a real hub (over sockets, and in Chromium).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addLinkHeader,
  authorizationCookie,
  clearAuthorizationCookie,
  CookieError,
  discover,
  DiscoveryError,
  linkHeader,
  parseDiscovery,
  parseLinkHeader,
  setAuthorizationCookie,
} from '../src/client/discovery.js';
import { Publisher } from '../src/client/publisher.js';
import { createAccessToken, createPublisherToken, createSubscriberToken } from '../src/client/token.js';
import { describeBrowser, launchBrowser } from './browser.js';
import { KEY, SseClient, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function close(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

/** Cookie attributes as a map (names lower-cased); the first pair is name=value. */
function parseSetCookie(value: string): { name: string; value: string; attrs: Map<string, string> } {
  const [pair, ...rest] = value.split(';').map((s) => s.trim());
  const eq = pair!.indexOf('=');
  const attrs = new Map<string, string>();
  for (const a of rest) {
    const i = a.indexOf('=');
    attrs.set((i < 0 ? a : a.slice(0, i)).toLowerCase(), i < 0 ? '' : a.slice(i + 1));
  }
  return { name: pair!.slice(0, eq), value: pair!.slice(eq + 1), attrs };
}

describe('Link header', () => {
  it('builds the hub link with its attributes and the self link', () => {
    expect(linkHeader('https://hub.example.com/.well-known/mercure')).toBe('<https://hub.example.com/.well-known/mercure>; rel="mercure"');
    expect(
      linkHeader(['https://a.example/.well-known/mercure', new URL('https://b.example/.well-known/mercure')], {
        lastEventId: 'urn:uuid:1',
        contentType: 'application/merge-patch+json',
        type: 'book',
        keySet: 'https://example.com/keys.json',
        self: 'https://example.com/books/1',
      }),
    ).toBe(
      '<https://a.example/.well-known/mercure>; rel="mercure"; last-event-id="urn:uuid:1"; content-type="application/merge-patch+json"; type="book"; key-set="https://example.com/keys.json", ' +
        '<https://b.example/.well-known/mercure>; rel="mercure"; last-event-id="urn:uuid:1"; content-type="application/merge-patch+json"; type="book"; key-set="https://example.com/keys.json", ' +
        '<https://example.com/books/1>; rel="self"',
    );
  });

  it('escapes what a header cannot carry and refuses what it must not', () => {
    const v = linkHeader('https://hub.example/.well-known/mercure', { lastEventId: 'say "hi", \\ ok; x', self: '/books/a b>c' });
    expect(v).toBe('<https://hub.example/.well-known/mercure>; rel="mercure"; last-event-id="say \\"hi\\", \\\\ ok; x", </books/a%20b%3Ec>; rel="self"');
    expect(linkHeader('https://hub.example/', { lastEventId: 'été' })).toBe(`<https://hub.example/>; rel="mercure"; last-event-id*=UTF-8''%C3%A9t%C3%A9`);
    expect(() => linkHeader('https://hub.example/', { lastEventId: 'a\r\nSet-Cookie: x=1' })).toThrow(/control characters/);
    expect(() => linkHeader('https://hub.example/', { type: 'mercure' })).toThrow(/reserved/);
  });

  it('round-trips through parseLinkHeader', () => {
    for (const lastEventId of ['urn:uuid:0190-abc', 'with "quotes", commas; and \\ slashes', 'naïve ✓', '']) {
      const value = linkHeader('https://hub.example/.well-known/mercure', { lastEventId, contentType: 'application/ld+json', type: 'x', self: '/books/1' });
      const d = parseDiscovery(value, 'https://example.com/books/1?x=1');
      expect(d).toMatchObject({
        hubUrls: ['https://hub.example/.well-known/mercure'],
        selfUrl: 'https://example.com/books/1',
        lastEventId,
        contentType: 'application/ld+json',
        type: 'x',
      });
    }
  });

  it('parses RFC 8288 syntax: several links and headers, quoting, tokens, case, relative targets', () => {
    const links = parseLinkHeader(
      [
        '</style.css>; rel=preload; as=style, <https://hub.example/.well-known/mercure>;REL = "mercure" ; title="a, b; c", <//cdn.example/x>; rel="alternate self"',
        '<../up>; rel=up; title*=UTF-8\'de\'n%c3%a4chstes%20Kapitel; title="ignored"',
        'garbage without brackets; rel=x, <https://ok.example/>; rel="ok"',
      ],
      'https://example.com/books/1',
    );
    expect(links.map((l) => [l.href, l.rel])).toEqual([
      ['https://example.com/style.css', ['preload']],
      ['https://hub.example/.well-known/mercure', ['mercure']],
      ['https://cdn.example/x', ['alternate', 'self']],
      ['https://example.com/up', ['up']],
      ['https://ok.example/', ['ok']],
    ]);
    expect(links[1]!.params.title).toBe('a, b; c');
    expect(links[0]!.params.as).toBe('style');
    expect(links[2]!.uri).toBe('//cdn.example/x');
    expect(links[3]!.params.title).toBe('nächstes Kapitel');
    expect(parseLinkHeader(null)).toEqual([]);
    expect(parseLinkHeader('<a>; rel="mercure"; rel="self"')[0]!.rel).toEqual(['mercure']);
  });

  it('defaults the topic to the resource URL and ignores links anchored elsewhere', () => {
    const d = parseDiscovery('<https://hub.example/.well-known/mercure>; rel="mercure", </other>; rel="self"; anchor="/elsewhere"', 'https://example.com/books/1');
    expect(d.selfUrl).toBe('https://example.com/books/1');
    expect(d.lastEventId).toBeUndefined();
    expect(parseDiscovery('<x>; rel=self', 'https://example.com/').hubUrls).toEqual([]);
  });
});

describe('discover() against an Express app', () => {
  let h: TestHub;
  let server: http.Server;
  let origin: string;
  let lastId: string;

  beforeAll(async () => {
    h = await startHub();
    const publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
    lastId = await publisher.publish({ topics: 'https://example.com/books/1', data: 'v1' });
    const app = express();
    app.get('/books/1', async (_req, res) => {
      res.setHeader('Link', '</style.css>; rel=preload');
      addLinkHeader(res, h.hubUrl, { lastEventId: await h.hub.hub.lastEventId(), contentType: 'application/ld+json', self: '/books/1.jsonld' });
      res.json({ '@id': '/books/1' });
    });
    app.get('/plain', (_req, res) => {
      res.send('no links here');
    });
    app.get('/redirect', (_req, res) => {
      res.redirect('/books/1');
    });
    server = http.createServer(app);
    origin = await listen(server);
  });
  afterAll(async () => {
    await close(server);
    await h.close();
  });

  it('finds the hub, the canonical topic and the last event id, keeping other Link values', async () => {
    const res = await fetch(`${origin}/books/1`);
    expect(res.headers.get('link')).toMatch(/^<\/style\.css>; rel=preload, <http/);
    const d = await discover(`${origin}/books/1`);
    expect(d).toMatchObject({
      hubUrls: [h.hubUrl],
      selfUrl: `${origin}/books/1.jsonld`,
      lastEventId: lastId,
      contentType: 'application/ld+json',
      type: undefined,
    });
    expect(d.links).toHaveLength(3);
    // Relative targets resolve against the final URL after redirects; a Response works too.
    expect((await discover(`${origin}/redirect`)).selfUrl).toBe(`${origin}/books/1.jsonld`);
    expect((await discover(await fetch(`${origin}/books/1`))).hubUrls).toEqual([h.hubUrl]);
  });

  it('fails with DiscoveryError when there is no hub or the resource is missing', async () => {
    await expect(discover(`${origin}/plain`)).rejects.toMatchObject({ name: 'DiscoveryError', code: 'no_hub', status: 200 });
    await expect(discover(`${origin}/missing`)).rejects.toMatchObject({ code: 'http_error', status: 404 });
    await expect(discover('http://127.0.0.1:1/x')).rejects.toBeInstanceOf(DiscoveryError);
  });
});

describe('authorization cookie', () => {
  const hubUrl = 'https://hub.example.com/.well-known/mercure';

  it('has the right attributes by default', async () => {
    const token = await createSubscriberToken({ key: SUB_KEY, subscribe: ['*'], exp: '1h' });
    const c = parseSetCookie(authorizationCookie(token, { hubUrl }));
    expect(c.name).toBe('mercureAuthorization');
    expect(c.value).toBe(token);
    expect(c.attrs.get('path')).toBe('/.well-known/mercure');
    expect(c.attrs.has('httponly')).toBe(true);
    expect(c.attrs.has('secure')).toBe(true);
    expect(c.attrs.get('samesite')).toBe('Strict');
    expect(Number(c.attrs.get('max-age'))).toBeGreaterThan(3590);
    expect(Number(c.attrs.get('max-age'))).toBeLessThanOrEqual(3600);
    expect(c.attrs.has('domain')).toBe(false);

    const plain = parseSetCookie(authorizationCookie(token, { hubUrl: 'http://localhost:3000/hub/.well-known/mercure', sameSite: 'Lax', domain: 'example.com', maxAge: 60 }));
    expect(plain.attrs.has('secure')).toBe(false);
    expect(plain.attrs.get('path')).toBe('/hub/.well-known/mercure');
    expect(plain.attrs.get('samesite')).toBe('Lax');
    expect(plain.attrs.get('domain')).toBe('example.com');
    expect(plain.attrs.get('max-age')).toBe('60');

    const d8 = parseSetCookie(authorizationCookie(token, { hubUrl: 'http://localhost:3000/.well-known/mercure', draft: 8 }));
    expect(d8.name).toBe('__Secure-mercure_access_token');
    expect(d8.attrs.has('secure')).toBe(true);

    const session = parseSetCookie(authorizationCookie(await createSubscriberToken({ key: SUB_KEY, subscribe: ['*'], exp: null }), { hubUrl }));
    expect(session.attrs.has('max-age')).toBe(false);
  });

  it('refuses cookies a browser would drop or that would be unsafe', async () => {
    const token = await createSubscriberToken({ key: SUB_KEY, subscribe: ['*'] });
    expect(() => authorizationCookie(token, { hubUrl, draft: 8, secure: false })).toThrow(CookieError);
    expect(() => authorizationCookie(token, { hubUrl: 'http://h/.well-known/mercure', sameSite: 'None' })).toThrow(/SameSite=None requires Secure/);
    expect(() => authorizationCookie(token, { hubUrl, name: '__Host-x' })).toThrow(/Path=\//);
    expect(() => authorizationCookie('a;b', { hubUrl })).toThrow(/cannot carry/);
    expect(() => authorizationCookie(token, { hubUrl, path: '/x; Domain=evil' })).toThrow(/path/);
    const expired = await createSubscriberToken({ key: SUB_KEY, subscribe: ['*'], exp: Math.floor(Date.now() / 1000) - 5 });
    expect(() => authorizationCookie(expired, { hubUrl })).toThrow(/expired/);
  });

  it('is appended on node:http, Express, Fastify and Web Headers, keeping existing cookies', async () => {
    const token = await createSubscriberToken({ key: SUB_KEY, subscribe: ['*'] });
    const options = { hubUrl };

    const nodeServer = http.createServer((_req, res) => {
      res.setHeader('Set-Cookie', 'session=abc; Path=/; HttpOnly');
      setAuthorizationCookie(res, token, options);
      res.end('ok');
    });
    const app = express();
    app.get('/', (_req, res) => {
      res.cookie('session', 'abc', { httpOnly: true });
      setAuthorizationCookie(res, token, options);
      addLinkHeader(res, hubUrl);
      res.send('ok');
    });
    const expressServer = http.createServer(app);
    const fastify = Fastify();
    fastify.get('/', (_req, reply) => {
      reply.header('set-cookie', 'session=abc; Path=/; HttpOnly');
      setAuthorizationCookie(reply, token, options);
      addLinkHeader(reply, hubUrl);
      return 'ok';
    });
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    const fastifyUrl = `http://127.0.0.1:${(fastify.server.address() as AddressInfo).port}/`;
    try {
      const targets: Array<[string, boolean]> = [
        [(await listen(nodeServer)) + '/', false],
        [(await listen(expressServer)) + '/', true],
        [fastifyUrl, true],
      ];
      for (const [url, withLink] of targets) {
        const res = await fetch(url);
        const cookies = res.headers.getSetCookie();
        expect(cookies, url).toHaveLength(2);
        expect(cookies[0]).toMatch(/^session=abc;/);
        const c = parseSetCookie(cookies[1]!);
        expect(c).toMatchObject({ name: 'mercureAuthorization', value: token });
        expect([...c.attrs.keys()].sort()).toEqual(['httponly', 'max-age', 'path', 'samesite', 'secure']);
        expect(c.attrs.get('path')).toBe('/.well-known/mercure');
        if (withLink) expect(res.headers.get('link'), url).toBe(`<${hubUrl}>; rel="mercure"`);
      }
    } finally {
      await close(nodeServer);
      await close(expressServer);
      await fastify.close();
    }

    const headers = new Headers({ 'Set-Cookie': 'session=abc' });
    setAuthorizationCookie(headers, token, options);
    clearAuthorizationCookie(headers, { hubUrl, draft: 8 });
    expect(headers.getSetCookie()).toEqual([
      'session=abc',
      expect.stringMatching(/^mercureAuthorization=ey/),
      '__Secure-mercure_access_token=; Path=/.well-known/mercure; Max-Age=0; HttpOnly; Secure; SameSite=Strict',
    ]);
    const response = new Response('x');
    setAuthorizationCookie(response, token, options);
    expect(response.headers.getSetCookie()).toHaveLength(1);
    expect(() => setAuthorizationCookie({} as Headers, token, options)).toThrow(/Unsupported response object/);
  });

  it('refuses to add a cookie once the headers are sent', async () => {
    const token = await createSubscriberToken({ key: SUB_KEY, subscribe: ['*'] });
    let error: unknown;
    const server = http.createServer((_req, res) => {
      res.writeHead(200);
      try {
        setAuthorizationCookie(res, token, { hubUrl });
      } catch (err) {
        error = err;
      }
      res.end();
    });
    try {
      await fetch((await listen(server)) + '/');
      expect((error as Error).message).toMatch(/already sent/);
    } finally {
      await close(server);
    }
  });
});

describe('the cookie authorizes private subscriptions on a real hub', () => {
  let h: TestHub;
  let app: http.Server;
  let appOrigin: string;
  let publisher: Publisher;
  const topic = 'https://example.com/secret/1';

  beforeAll(async () => {
    h = await startHub({ corsOrigins: ['*'] });
    publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
    const ex = express();
    ex.get('/draft7', async (_req, res) => {
      setAuthorizationCookie(res, await createSubscriberToken({ key: SUB_KEY, subscribe: [topic] }), { hubUrl: h.hubUrl });
      addLinkHeader(res, h.hubUrl, { self: topic });
      res.json({ ok: true });
    });
    ex.get('/draft8', async (_req, res) => {
      const token = await createAccessToken({ issuer: 'https://app.example', audience: h.hubUrl, key: SUB_KEY, alg: 'HS256', subscribe: [topic], exp: '5m' });
      setAuthorizationCookie(res, token, { hubUrl: h.hubUrl, draft: 8 });
      res.json({ ok: true });
    });
    ex.get('/page', async (req, res) => {
      setAuthorizationCookie(res, await createSubscriberToken({ key: SUB_KEY, subscribe: [topic] }), { hubUrl: h.hubUrl });
      res.type('html').send(`<!doctype html><meta charset="utf-8"><script>
        window.__events = []; window.__log = [];
        const es = new EventSource(${JSON.stringify(subscribeUrl(h.hubUrl, [['topic', topic]]))}, { withCredentials: true });
        es.onmessage = (e) => window.__events.push({ id: e.lastEventId, data: e.data });
        es.onopen = () => window.__log.push('open');
        es.onerror = () => window.__log.push('error');
      </script>`);
      void req;
    });
    app = http.createServer(ex);
    appOrigin = await listen(app);
  });
  afterAll(async () => {
    await close(app);
    await h.close();
  });

  /** What a cookie jar would send to `url` for this Set-Cookie (path match only; same host). */
  function cookieFor(setCookie: string, url: string): string {
    const c = parseSetCookie(setCookie);
    const path = c.attrs.get('path') ?? '/';
    expect(new URL(url).pathname.startsWith(path)).toBe(true);
    return `${c.name}=${c.value}`;
  }

  it('draft-07: mercureAuthorization', async () => {
    const res = await fetch(`${appOrigin}/draft7`);
    const cookie = cookieFor(res.headers.getSetCookie()[0]!, h.hubUrl);
    const anonymous = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', topic]]));
    expect(anonymous.status).toBe(401);
    anonymous.close();
    const sse = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', topic]]), { headers: { Cookie: cookie } });
    try {
      expect(sse.status).toBe(200);
      const id = await publisher.publish({ topics: topic, data: 'for cookie holders', private: true });
      await sse.waitForEvents(1);
      expect(sse.events[0]).toMatchObject({ id, data: 'for cookie holders' });
    } finally {
      sse.close();
    }
  });

  it('draft-08: __Secure-mercure_access_token', async () => {
    const res = await fetch(`${appOrigin}/draft8`);
    const cookie = cookieFor(res.headers.getSetCookie()[0]!, h.hubUrl);
    expect(cookie).toMatch(/^__Secure-mercure_access_token=/);
    const sse = await SseClient.connect(subscribeUrl(h.hubUrl, [['match', topic]]), { headers: { Cookie: cookie } });
    try {
      expect(sse.status).toBe(200);
      const id = await publisher.publish({ topics: topic, data: 'draft-08 secret', private: true });
      await sse.waitForEvents(1);
      expect(sse.events[0]).toMatchObject({ id, data: 'draft-08 secret' });
    } finally {
      sse.close();
    }
  });

  describeBrowser('in Chromium', () => {
    let browser: Browser;
    beforeAll(async () => {
      browser = await launchBrowser();
    });
    afterAll(async () => {
      await browser?.close();
    });

    it('a page on the app origin gets the cookie and its EventSource (withCredentials) reads private updates', async () => {
      const context = await browser.newContext();
      try {
        const page = await context.newPage();
        await page.goto(`${appOrigin}/page`);
        const cookies = await context.cookies(h.hubUrl);
        expect(cookies).toEqual([
          expect.objectContaining({ name: 'mercureAuthorization', path: '/.well-known/mercure', httpOnly: true, secure: false, sameSite: 'Strict' }),
        ]);
        // HttpOnly: page scripts cannot read it.
        expect(await page.evaluate(() => document.cookie)).toBe('');
        await page.waitForFunction(() => (window as unknown as { __log: string[] }).__log.includes('open'), undefined, { timeout: 5000 });
        const id = await publisher.publish({ topics: topic, data: 'browser secret', private: true });
        await page.waitForFunction(() => (window as unknown as { __events: unknown[] }).__events.length > 0, undefined, { timeout: 5000 });
        expect(await page.evaluate(() => (window as unknown as { __events: unknown[] }).__events)).toEqual([{ id, data: 'browser secret' }]);
      } finally {
        await context.close();
      }
    });
  });
});
