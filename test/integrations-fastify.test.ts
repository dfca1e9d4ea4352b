/**
 * quicksilver/fastify: the `mercure` plugin and hook (Link header, subscriber cookie,
 * `request.mercure`, scoping), and `mercureHub` mounting a real hub in a Fastify app: publish and
 * subscribe through Fastify, the app's own body parsers untouched, streams ended on close.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { createHub } from '../src/index.js';
import { createLogger } from '../src/observability/logger.js';
import { Publisher } from '../src/client/publisher.js';
import { createPublisherToken, createSubscriberToken } from '../src/client/token.js';
import { mercure, mercureHook, mercureHub } from '../src/integrations/fastify.js';
import { KEY, SseClient, sleep, SUB_KEY, subscribeUrl } from './helpers.js';

const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

async function start(app: FastifyInstance): Promise<string> {
  apps.push(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address() as { port: number };
  return `http://127.0.0.1:${address.port}`;
}

describe('mercure plugin', () => {
  it('adds the Link header and the cookie to the routes of its scope only, and sets request.mercure', async () => {
    const app = Fastify();
    app.get('/outside', async () => ({ ok: true }));
    await app.register(async (scope) => {
      await scope.register(mercure, {
        hubUrl: '/.well-known/mercure',
        key: SUB_KEY,
        self: (req) => `https://example.com${req.url}`,
        authorize: (req) => (req.headers['x-user'] ? { subscribe: [`https://example.com/users/${String(req.headers['x-user'])}`] } : null),
      });
      scope.get('/books/:id', async (req, reply) => {
        reply.header('set-cookie', 'session=abc; Path=/');
        return { mercure: req.mercure };
      });
    });
    const url = await start(app);

    const res = await fetch(`${url}/books/1`, { headers: { 'X-User': 'alice' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('link')).toBe('</.well-known/mercure>; rel="mercure", <https://example.com/books/1>; rel="self"');
    const cookies = res.headers.getSetCookie();
    expect(cookies).toHaveLength(2);
    const mercureCookie = cookies.find((c) => c.startsWith('mercureAuthorization='))!;
    expect(mercureCookie).toMatch(/; Path=\/\.well-known\/mercure; Max-Age=\d+; HttpOnly; SameSite=Strict$/);
    const token = mercureCookie.slice('mercureAuthorization='.length).split(';')[0]!;
    const { payload } = await jwtVerify(token, new TextEncoder().encode(SUB_KEY));
    expect(payload.mercure).toEqual({ subscribe: ['https://example.com/users/alice'] });
    const body = (await res.json()) as { mercure: { absoluteHubUrl: string; token: string } };
    expect(body.mercure).toMatchObject({ absoluteHubUrl: `${url}/.well-known/mercure`, token });

    const anonymous = await fetch(`${url}/books/1`);
    expect(anonymous.headers.getSetCookie()).toEqual(['session=abc; Path=/']);

    const outside = await fetch(`${url}/outside`);
    expect(outside.headers.get('link')).toBeNull();
  });

  it('mercureHook on a single route, appending to a Link header already set', async () => {
    const app = Fastify();
    app.get('/a', {
      onRequest: [
        async (_req, reply) => {
          reply.header('link', '</a.css>; rel="preload"; as="style"');
        },
        mercureHook({ hubUrl: 'https://hub.example.com/.well-known/mercure', lastEventId: () => 'urn:uuid:x' }),
      ],
    }, async () => 'a');
    app.get('/b', async () => 'b');
    const url = await start(app);
    expect((await fetch(`${url}/a`)).headers.get('link')).toBe(
      '</a.css>; rel="preload"; as="style", <https://hub.example.com/.well-known/mercure>; rel="mercure"; last-event-id="urn:uuid:x"',
    );
    expect((await fetch(`${url}/b`)).headers.get('link')).toBeNull();
    expect(() => mercureHook({ hubUrl: '/h', authorize: () => null })).toThrow(/key/);
  });
});

describe('mercureHub plugin', () => {
  it('mounts a hub: publish and subscribe through Fastify, the app\'s own parsers untouched', async () => {
    const app = Fastify();
    // The app's own form parser: the hub's scope must not be affected, nor affect it.
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    const hub = createHub({ publisher: { key: KEY }, subscriber: { key: SUB_KEY }, anonymous: true, logger: createLogger('silent') });
    await app.register(mercureHub, { hub });
    app.post('/echo', async (req) => ({ body: req.body }));
    expect(app.quicksilver).toBe(hub);
    const url = await start(app);
    const hubUrl = `${url}/.well-known/mercure`;

    const sse = await SseClient.connect(subscribeUrl(hubUrl, [['topic', 'https://example.com/books/{id}']]));
    try {
      expect(sse.status).toBe(200);
      expect(sse.headers['content-type']).toMatch(/^text\/event-stream/);
      const publisher = new Publisher({ hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
      const id = await publisher.publish({ topics: 'https://example.com/books/1', data: '{"title":"Dune"}' });
      await sse.waitForEvents(1);
      expect(sse.events[0]).toMatchObject({ id, data: '{"title":"Dune"}' });
      // The hub's own errors come through as is.
      const refused = await fetch(hubUrl, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'topic=x&data=y' });
      expect(refused.status).toBe(401);
    } finally {
      sse.close();
    }
    // Private updates: a subscriber token in the header.
    const token = await createSubscriberToken({ key: SUB_KEY, subscribe: ['https://example.com/secret'] });
    const priv = await SseClient.connect(subscribeUrl(hubUrl, [['topic', 'https://example.com/secret']]), { headers: { Authorization: `Bearer ${token}` } });
    try {
      await app.quicksilver.publish({ topics: ['https://example.com/secret'], data: 'psst', private: true });
      await priv.waitForEvents(1);
      expect(priv.events[0]!.data).toBe('psst');
    } finally {
      priv.close();
    }

    const echo = await fetch(`${url}/echo`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=two' });
    expect(await echo.json()).toEqual({ body: { a: '1', b: 'two' } });
    const json = await fetch(`${url}/echo`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"x":[1]}' });
    expect(await json.json()).toEqual({ body: { x: [1] } });
    // CORS preflight and the protected-resource metadata are the hub's too.
    const meta = await fetch(`${url}/.well-known/oauth-protected-resource/.well-known/mercure`);
    expect(meta.status).toBe(200);
    expect(((await meta.json()) as { resource: string }).resource).toBe(hubUrl);
    // Health and metrics only when asked for.
    expect((await fetch(`${url}/healthz`)).status).toBe(404);
    expect((await fetch(`${url}/metrics`)).status).toBe(404);
  });

  it('creates the hub from options, serves health and metrics on demand, and ends the streams on close', async () => {
    const app = Fastify();
    await app.register(mercureHub, { hub: { publisher: { key: KEY }, anonymous: true, logger: createLogger('silent') }, health: true, metrics: true });
    const url = await start(app);
    expect(await (await fetch(`${url}/healthz`)).text()).toBe('ok\n');
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/mercure_subscribers_connected/);
    const head = await fetch(`${url}/.well-known/mercure?topic=x`, { method: 'HEAD' });
    expect(head.status).toBe(200);

    const sse = await SseClient.connect(subscribeUrl(`${url}/.well-known/mercure`, [['topic', 'x']]));
    expect(sse.status).toBe(200);
    const t0 = Date.now();
    apps.splice(apps.indexOf(app), 1);
    await app.close();
    expect(Date.now() - t0).toBeLessThan(5000);
    await sse.until(() => sse.closed, 3000, 'the stream to end');
    expect(sse.raw).toMatch(/retry: \d+/);
  });

  it('closeHub: false leaves a hub the app does not own open', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: createLogger('silent') });
    const app = Fastify();
    await app.register(mercureHub, { hub, closeHub: false });
    await app.ready();
    await app.close();
    await sleep(50);
    expect(hub.hub.lastEventId).toBeTypeOf('function');
    const update = await hub.publish({ topics: ['x'], data: 'still open' });
    expect(update.data).toBe('still open');
    await hub.close();
    await expect(Fastify().register(mercureHub, {} as never).ready()).rejects.toThrow(/hub/);
  });
});
