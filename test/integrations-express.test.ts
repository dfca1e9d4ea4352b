/**
 * quicksilver/express: the `mercure` middleware adds the discovery Link header and sets the
 * subscriber authorization cookie per request; the cookie it sets authorizes private
 * subscriptions on a real hub, and only for the topics granted.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Request } from 'express';
import { jwtVerify, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Publisher } from '../src/client/publisher.js';
import { createPublisherToken } from '../src/client/token.js';
import { mercure, type MercureRequestState } from '../src/integrations/express.js';
import { KEY, SseClient, sleep, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';

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

/** An Express app with one route behind the middleware; the route answers with res.locals.mercure. */
async function appWith(middleware: express.RequestHandler, before?: express.RequestHandler): Promise<{ url: string; close(): Promise<void> }> {
  const app = express();
  if (before) app.use(before);
  app.get('/books/:id', middleware, (_req, res) => {
    res.json({ mercure: res.locals.mercure as MercureRequestState });
  });
  app.use((err: Error, _req: Request, res: express.Response, _next: express.NextFunction) => {
    res.status(500).json({ error: err.message });
  });
  const server = http.createServer(app);
  const url = await listen(server);
  return { url, close: () => close(server) };
}

describe('mercure() middleware', () => {
  it('adds Link: <hub>; rel="mercure" with last-event-id and rel="self", after Links already set', async () => {
    const app = await appWith(
      mercure<Request>({
        hubUrl: '/.well-known/mercure',
        lastEventId: async (req) => `urn:uuid:last-${req.params.id}`,
        self: (req) => `https://example.com/books/${req.params.id}`,
      }),
      (_req, res, next) => {
        res.setHeader('Link', '</style.css>; rel="preload"; as="style"');
        next();
      },
    );
    try {
      const res = await fetch(`${app.url}/books/7`);
      expect(res.status).toBe(200);
      expect(res.headers.get('link')).toBe(
        '</style.css>; rel="preload"; as="style", </.well-known/mercure>; rel="mercure"; last-event-id="urn:uuid:last-7", <https://example.com/books/7>; rel="self"',
      );
      expect(res.headers.getSetCookie()).toEqual([]);
      const body = (await res.json()) as { mercure: MercureRequestState };
      expect(body.mercure).toEqual({ hubUrl: '/.well-known/mercure', absoluteHubUrl: `${app.url}/.well-known/mercure`, subscribe: [] });
    } finally {
      await app.close();
    }
  });

  it('hubUrl may be a function of the request; discovery: false leaves the Link header out', async () => {
    const app = await appWith(mercure<Request>({ hubUrl: (req) => `https://hub.example.com/.well-known/mercure?tenant=${req.params.id}`, discovery: false }));
    try {
      const res = await fetch(`${app.url}/books/3`);
      expect(res.headers.get('link')).toBeNull();
      const body = (await res.json()) as { mercure: MercureRequestState };
      expect(body.mercure.absoluteHubUrl).toBe('https://hub.example.com/.well-known/mercure?tenant=3');
    } finally {
      await app.close();
    }
  });

  it('sets the mercureAuthorization cookie with a token granting exactly what authorize() returns, keeping other cookies', async () => {
    const app = await appWith(
      mercure<Request>({
        hubUrl: 'http://127.0.0.1:9/.well-known/mercure',
        key: SUB_KEY,
        exp: '10m',
        authorize: (req) => ({ subscribe: [`https://example.com/users/${req.params.id}/{+rest}`], payload: { user: req.params.id } }),
      }),
      (_req, res, next) => {
        res.cookie('session', 'abc', { httpOnly: true });
        next();
      },
    );
    try {
      const res = await fetch(`${app.url}/books/42`);
      const cookies = res.headers.getSetCookie();
      expect(cookies).toHaveLength(2);
      expect(cookies[0]).toMatch(/^session=abc;/);
      const c = parseSetCookie(cookies[1]!);
      expect(c.name).toBe('mercureAuthorization');
      expect(c.attrs.get('path')).toBe('/.well-known/mercure');
      expect(c.attrs.has('httponly')).toBe(true);
      expect(c.attrs.get('samesite')).toBe('Strict');
      expect(c.attrs.has('secure')).toBe(false);
      expect(Number(c.attrs.get('max-age'))).toBeGreaterThan(590);
      expect(Number(c.attrs.get('max-age'))).toBeLessThanOrEqual(600);
      const { payload } = await jwtVerify(c.value, new TextEncoder().encode(SUB_KEY));
      expect(payload.mercure).toEqual({ subscribe: ['https://example.com/users/42/{+rest}'], payload: { user: '42' } });
      const body = (await res.json()) as { mercure: MercureRequestState };
      expect(body.mercure.token).toBe(c.value);
      expect(body.mercure.subscribe).toEqual(['https://example.com/users/42/{+rest}']);
    } finally {
      await app.close();
    }
  });

  it('no grant: no cookie, and an authorization cookie the request still carries is cleared', async () => {
    const app = await appWith(mercure({ hubUrl: '/.well-known/mercure', key: SUB_KEY, authorize: () => null }));
    try {
      const anonymous = await fetch(`${app.url}/books/1`);
      expect(anonymous.headers.getSetCookie()).toEqual([]);
      const loggedOut = await fetch(`${app.url}/books/1`, { headers: { Cookie: 'session=x; mercureAuthorization=stale.token.value' } });
      const cookies = loggedOut.headers.getSetCookie();
      expect(cookies).toHaveLength(1);
      const c = parseSetCookie(cookies[0]!);
      expect(c).toMatchObject({ name: 'mercureAuthorization', value: '' });
      expect(c.attrs.get('max-age')).toBe('0');
      expect(c.attrs.get('path')).toBe('/.well-known/mercure');
    } finally {
      await app.close();
    }
  });

  it('draft 8: an RFC 9068 access token in __Secure-mercure_access_token, audience the hub URL', async () => {
    const hubUrl = 'https://hub.example.com/.well-known/mercure';
    const app = await appWith(
      mercure({ hubUrl, key: SUB_KEY, draft: 8, issuer: 'https://app.example.com', authorize: () => ({ subscribe: ['https://example.com/books/1'], payload: { role: 'reader' } }) }),
    );
    try {
      const res = await fetch(`${app.url}/books/1`);
      const c = parseSetCookie(res.headers.getSetCookie()[0]!);
      expect(c.name).toBe('__Secure-mercure_access_token');
      expect(c.attrs.has('secure')).toBe(true);
      expect(decodeProtectedHeader(c.value).typ).toBe('at+jwt');
      const { payload } = await jwtVerify(c.value, new TextEncoder().encode(SUB_KEY), { audience: hubUrl, issuer: 'https://app.example.com' });
      expect(payload.authorization_details).toEqual([
        expect.objectContaining({ actions: ['subscribe'], topics: [expect.objectContaining({ match: 'https://example.com/books/1' })], payload: { role: 'reader' } }),
      ]);
    } finally {
      await app.close();
    }
  });

  it('refuses bad options at setup, and passes errors of the callbacks to next()', async () => {
    expect(() => mercure({ hubUrl: '/.well-known/mercure', authorize: () => null })).toThrow(/needs `key`/);
    expect(() => mercure({} as never)).toThrow(/hubUrl/);
    const app = await appWith(mercure({ hubUrl: '/.well-known/mercure', key: SUB_KEY, authorize: () => { throw new Error('session store down'); } }));
    try {
      const res = await fetch(`${app.url}/books/1`);
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ error: 'session store down' });
    } finally {
      await app.close();
    }
  });

  it('works on a plain node:http server too (res.locals is created)', async () => {
    const mw = mercure({ hubUrl: '/.well-known/mercure', key: SUB_KEY, authorize: () => ({ subscribe: ['https://example.com/a'] }) });
    const server = http.createServer((req, res) => {
      mw(req, res, (err) => {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ err: err ? String(err) : null, subscribe: (res as { locals?: { mercure?: MercureRequestState } }).locals?.mercure?.subscribe }));
      });
    });
    const url = await listen(server);
    try {
      const res = await fetch(`${url}/anything`);
      expect(res.headers.get('link')).toBe('</.well-known/mercure>; rel="mercure"');
      expect(res.headers.getSetCookie()[0]).toMatch(/^mercureAuthorization=ey/);
      expect(await res.json()).toEqual({ err: null, subscribe: ['https://example.com/a'] });
    } finally {
      await close(server);
    }
  });
});

describe('the cookie set by the middleware on a real hub', () => {
  let h: TestHub;
  let server: http.Server;
  let appUrl: string;
  let publisher: Publisher;
  const topic = (user: string) => `https://example.com/users/${user}/notifications`;

  beforeAll(async () => {
    h = await startHub();
    publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
    const app = express();
    app.get('/me', mercure<Request>({
      hubUrl: h.hubUrl,
      key: SUB_KEY,
      lastEventId: () => h.hub.hub.lastEventId(),
      authorize: (req) => (typeof req.query.user === 'string' ? { subscribe: [topic(req.query.user)] } : null),
    }), (_req, res) => {
      res.json({ ok: true });
    });
    server = http.createServer(app);
    appUrl = await listen(server);
  });
  afterAll(async () => {
    await close(server);
    await h.close();
  });

  async function cookieOf(user: string): Promise<string> {
    const res = await fetch(`${appUrl}/me?user=${user}`);
    const c = parseSetCookie(res.headers.getSetCookie()[0]!);
    expect(new URL(h.hubUrl).pathname.startsWith(c.attrs.get('path')!)).toBe(true);
    return `${c.name}=${c.value}`;
  }

  it('alice receives her private updates and never bob\'s; the discovered last-event-id resumes', async () => {
    const [alice, bob] = [await cookieOf('alice'), await cookieOf('bob')];
    // Both subscribe to every user's topic: the token decides what arrives.
    const url = subscribeUrl(h.hubUrl, [['topic', 'https://example.com/users/{user}/notifications']]);
    const a = await SseClient.connect(url, { headers: { Cookie: alice } });
    const b = await SseClient.connect(url, { headers: { Cookie: bob } });
    try {
      expect([a.status, b.status]).toEqual([200, 200]);
      const forAlice = await publisher.publish({ topics: topic('alice'), data: 'for alice', private: true });
      const forBob = await publisher.publish({ topics: topic('bob'), data: 'for bob', private: true });
      await a.waitForEvents(1);
      await b.waitForEvents(1);
      await sleep(200);
      expect(a.events.map((e) => [e.id, e.data])).toEqual([[forAlice, 'for alice']]);
      expect(b.events.map((e) => [e.id, e.data])).toEqual([[forBob, 'for bob']]);
      // The Link header advertises the hub's last event: a subscriber resuming from it misses nothing.
      const res = await fetch(`${appUrl}/me?user=alice`);
      expect(res.headers.get('link')).toBe(`<${h.hubUrl}>; rel="mercure"; last-event-id="${forBob}"`);
    } finally {
      a.close();
      b.close();
    }
  });
});
