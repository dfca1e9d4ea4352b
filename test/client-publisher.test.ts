/**
 * The publisher client against a real hub over real sockets: ids, every error kind as the hub
 * answers it, what is retried and what never is, token minting and providers, the test doubles.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportPKCS8, exportSPKI, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidUpdateError, PublishError, Publisher, Update } from '../src/client/publisher.js';
import { MockPublisher, RecordingPublisher } from '../src/client/testing.js';
import {
  createAccessToken,
  createPublisherToken,
  createSubscriberToken,
  createTokenProvider,
  TokenError,
  tokenExpiry,
} from '../src/client/token.js';
import { KEY, SseClient, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';

let h: TestHub;
let pubToken: string;

beforeAll(async () => {
  h = await startHub({ maxBodySize: 4096 });
  pubToken = await createPublisherToken({ key: KEY, publish: ['*'] });
});
afterAll(() => h.close());

/** A fetch that counts the requests it makes. */
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

/** A tiny HTTP server on a real socket; `handler` decides each answer. */
async function tinyServer(handler: http.RequestListener): Promise<{ url: string; requests: () => number; close(): Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    n++;
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/mercure`;
  return {
    url,
    requests: () => n,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (s += c));
    req.on('end', () => resolve(s));
  });
}

async function expectPublishError(p: Promise<unknown>): Promise<PublishError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(PublishError);
    return err as PublishError;
  }
  throw new Error('expected the publish to fail');
}

describe('Publisher against a real hub', () => {
  it('publishes form-encoded updates and returns the hub-generated id', async () => {
    const subToken = await createSubscriberToken({ key: SUB_KEY, subscribe: ['https://example.com/books/{id}'] });
    const sse = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/books/{id}']]), {
      headers: { Authorization: `Bearer ${subToken}` },
    });
    try {
      const publisher = new Publisher({ hubUrl: h.hubUrl, token: pubToken });
      const id = await publisher.publish(
        new Update(['https://example.com/books/1', 'https://example.com/alt/1'], 'line 1\nline 2', {
          private: true,
          type: 'book',
          retry: 2500,
        }),
      );
      expect(id).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
      const own = await publisher.publish({ topics: 'https://example.com/books/2', data: '{"a":1}', id: 'urn:test:book-2' });
      expect(own).toBe('urn:test:book-2');
      await sse.waitForEvents(2);
      expect(sse.events[0]).toEqual({ id, event: 'book', retry: 2500, data: 'line 1\nline 2' });
      expect(sse.events[1]).toEqual({ id: 'urn:test:book-2', data: '{"a":1}' });
    } finally {
      sse.close();
    }
  });

  it('maps a 401 (no token, wrong key, expired) to kind "unauthorized" with the hub message', async () => {
    const noToken = await expectPublishError(new Publisher({ hubUrl: h.hubUrl }).publish({ topics: 'https://example.com/a' }));
    expect(noToken).toMatchObject({ kind: 'unauthorized', status: 401, attempts: 1 });
    expect(noToken.hubMessage).toMatch(/no access token/);

    const wrongKey = await createPublisherToken({ key: 'not-the-hub-key-not-the-hub-key!!', publish: ['*'] });
    const err = await expectPublishError(new Publisher({ hubUrl: h.hubUrl, token: wrongKey }).publish({ topics: 'https://example.com/a' }));
    expect(err).toMatchObject({ kind: 'unauthorized', status: 401, authError: 'invalid_token' });
    expect(err.message).toContain(`Publishing to ${h.hubUrl} failed (401)`);
    expect(err.message).toMatch(/publisher token/);

    const expired = await createPublisherToken({ key: KEY, publish: ['*'], exp: Math.floor(Date.now() / 1000) - 60 });
    expect(await expectPublishError(new Publisher({ hubUrl: h.hubUrl, token: expired }).publish({ topics: 'https://example.com/a' })))
      .toMatchObject({ kind: 'unauthorized', status: 401 });
  });

  it('maps a 403 for a draft-08 token without the grant to kind "forbidden"', async () => {
    const token = await createAccessToken({
      issuer: 'https://app.example',
      audience: h.hubUrl,
      key: KEY,
      alg: 'HS256',
      publish: ['https://example.com/books/:id'],
      matchType: 'urlpattern',
      exp: '5m',
    });
    const publisher = new Publisher({ hubUrl: h.hubUrl, token });
    // Allowed topic first: the token itself is accepted.
    expect(await publisher.publish({ topics: 'https://example.com/books/7' })).toMatch(/^urn:uuid:/);
    const err = await expectPublishError(publisher.publish({ topics: 'https://example.com/users/1' }));
    expect(err).toMatchObject({ kind: 'forbidden', status: 403, authError: 'insufficient_scope', attempts: 1 });
    expect(err.hubMessage).toMatch(/does not grant publishing to https:\/\/example\.com\/users\/1/);
  });

  it('maps a 400 to "bad_request" and never retries it', async () => {
    const token = await createAccessToken({ issuer: 'https://app.example', audience: h.hubUrl, key: KEY, alg: 'HS256', publish: ['*'], exp: '5m' });
    const counter = countingFetch();
    const publisher = new Publisher({ hubUrl: h.hubUrl, token, fetch: counter.fetch, retries: 5 });
    const err = await expectPublishError(
      publisher.publish({ topics: `${h.url}/.well-known/mercure/subscriptions/forged`, id: 'urn:test:idempotent' }),
    );
    expect(err).toMatchObject({ kind: 'bad_request', status: 400, attempts: 1 });
    expect(err.hubMessage).toMatch(/reserved namespace/);
    expect(counter.calls()).toBe(1);
  });

  it('maps a 413 to "too_large"', async () => {
    const err = await expectPublishError(
      new Publisher({ hubUrl: h.hubUrl, token: pubToken }).publish({ topics: 'https://example.com/a', data: 'x'.repeat(8192) }),
    );
    expect(err).toMatchObject({ kind: 'too_large', status: 413, attempts: 1 });
    expect(err.hubMessage).toMatch(/too large/i);
  });

  it('rejects invalid updates before any request', async () => {
    const counter = countingFetch();
    const publisher = new Publisher({ hubUrl: h.hubUrl, token: pubToken, fetch: counter.fetch });
    await expect(publisher.publish({ topics: [] })).rejects.toThrow(InvalidUpdateError);
    await expect(publisher.publish({ topics: 'a', id: '#1' })).rejects.toThrow(/reserved for the hub/);
    await expect(publisher.publish({ topics: 'a', id: 'x\ny' })).rejects.toThrow(/control/);
    await expect(publisher.publish({ topics: 'a', type: 'mercure' })).rejects.toThrow(/reserved/);
    await expect(publisher.publish({ topics: 'a', retry: -1 })).rejects.toThrow(/retry/);
    expect(counter.calls()).toBe(0);
    expect(() => new Publisher({ hubUrl: 'not a url' })).toThrow(/Invalid hub URL/);
  });
});

describe('retries', () => {
  it('retries a 503 (honouring Retry-After) and then publishes through to the hub', async () => {
    let seen = 0;
    const times: number[] = [];
    const proxy = await tinyServer(async (req, res) => {
      const body = await readBody(req);
      times.push(Date.now());
      if (++seen <= 2) {
        res.writeHead(503, { 'Retry-After': seen === 1 ? '1' : '0', 'Content-Type': 'text/plain' });
        res.end('Service Unavailable: the store is down; retry later\n');
        return;
      }
      const upstream = await fetch(h.hubUrl, {
        method: 'POST',
        headers: { 'Content-Type': req.headers['content-type']!, Authorization: req.headers.authorization! },
        body,
      });
      res.writeHead(upstream.status, { 'Content-Type': 'text/plain' });
      res.end(await upstream.text());
    });
    try {
      const publisher = new Publisher({ hubUrl: proxy.url, token: pubToken, retryDelay: 10 });
      const id = await publisher.publish({ topics: 'https://example.com/retried', data: 'x' });
      expect(id).toMatch(/^urn:uuid:/);
      expect(proxy.requests()).toBe(3);
      // Retry-After: 1 was waited for.
      expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(900);
    } finally {
      await proxy.close();
    }
  });

  it('gives up after `retries` with kind "unavailable" and the hub message', async () => {
    const server = await tinyServer((_req, res) => {
      res.writeHead(503, { 'Retry-After': '0' });
      res.end('Service Unavailable: draining\n');
    });
    try {
      const err = await expectPublishError(new Publisher({ hubUrl: server.url, token: pubToken, retries: 2, retryDelay: 1 }).publish({ topics: 'a' }));
      expect(err).toMatchObject({ kind: 'unavailable', status: 503, attempts: 3, hubMessage: 'Service Unavailable: draining', retryAfter: 0 });
      expect(server.requests()).toBe(3);
    } finally {
      await server.close();
    }
  });

  it('does not wait for a Retry-After beyond maxRetryDelay', async () => {
    const server = await tinyServer((_req, res) => {
      res.writeHead(503, { 'Retry-After': '3600' });
      res.end('down for maintenance');
    });
    try {
      const err = await expectPublishError(new Publisher({ hubUrl: server.url, token: pubToken, maxRetryDelay: 5000 }).publish({ topics: 'a' }));
      expect(err).toMatchObject({ kind: 'unavailable', attempts: 1, retryAfter: 3_600_000 });
      expect(server.requests()).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('maps other 5xx to "server_error" without retrying', async () => {
    const server = await tinyServer((_req, res) => {
      res.writeHead(500);
      res.end('Internal Server Error: the update could not be dispatched\n');
    });
    try {
      const err = await expectPublishError(new Publisher({ hubUrl: server.url, token: pubToken, retryDelay: 1 }).publish({ topics: 'a', id: 'x' }));
      expect(err).toMatchObject({ kind: 'server_error', status: 500, attempts: 1 });
      expect(server.requests()).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('retries a refused connection (the request was never sent)', async () => {
    const server = await tinyServer(() => undefined);
    const url = server.url;
    await server.close();
    const counter = countingFetch();
    const err = await expectPublishError(new Publisher({ hubUrl: url, token: pubToken, fetch: counter.fetch, retries: 2, retryDelay: 1 }).publish({ topics: 'a' }));
    expect(err).toMatchObject({ kind: 'network', status: undefined, attempts: 3, timedOut: false });
    expect(err.hubMessage).toMatch(/ECONNREFUSED/);
    expect(counter.calls()).toBe(3);
  });

  it('retries a timeout with the same id, generating one when the update has none (issue 14)', async () => {
    const server = await tinyServer(() => {
      // Never answers.
    });
    try {
      const publisher = new Publisher({ hubUrl: server.url, token: pubToken, timeout: 200, retries: 2, retryDelay: 1 });
      const anonymous = await expectPublishError(publisher.publish({ topics: 'a' }));
      expect(anonymous).toMatchObject({ kind: 'network', timedOut: true, attempts: 3 });
      expect(anonymous.message).toMatch(/timeout/);
      expect(server.requests()).toBe(3);

      const withId = await expectPublishError(publisher.publish({ topics: 'a', id: 'urn:test:t1' }));
      expect(withId).toMatchObject({ kind: 'network', timedOut: true, attempts: 3 });
      expect(server.requests()).toBe(6);

      // Without retries nothing needs naming: the hub assigns the id, and a timeout is final.
      const once = new Publisher({ hubUrl: server.url, token: pubToken, timeout: 200, retries: 0 });
      expect(await expectPublishError(once.publish({ topics: 'a' }))).toMatchObject({ kind: 'network', timedOut: true, attempts: 1 });
      expect(server.requests()).toBe(7);
    } finally {
      await server.close();
    }
  });

  it('treats a connection lost after the request was sent like a timeout', async () => {
    const server = await tinyServer((req) => {
      req.resume();
      req.on('end', () => req.socket.destroy());
    });
    try {
      const publisher = new Publisher({ hubUrl: server.url, token: pubToken, retries: 1, retryDelay: 1 });
      expect(await expectPublishError(publisher.publish({ topics: 'a' }))).toMatchObject({ kind: 'network', attempts: 2 });
      expect(server.requests()).toBe(2);
      expect(await expectPublishError(publisher.publish({ topics: 'a', id: 'urn:test:t2' }))).toMatchObject({ kind: 'network', attempts: 2 });
      expect(server.requests()).toBe(4);
      const once = new Publisher({ hubUrl: server.url, token: pubToken, retries: 0 });
      expect(await expectPublishError(once.publish({ topics: 'a' }))).toMatchObject({ kind: 'network', attempts: 1 });
      expect(server.requests()).toBe(5);
    } finally {
      await server.close();
    }
  });

  it('stops retrying when the caller aborts', async () => {
    const server = await tinyServer((_req, res) => {
      res.writeHead(503, { 'Retry-After': '2' });
      res.end();
    });
    try {
      const controller = new AbortController();
      const p = new Publisher({ hubUrl: server.url, token: pubToken }).publish({ topics: 'a' }, { signal: controller.signal });
      setTimeout(() => controller.abort(new Error('user gave up')), 200);
      await expect(p).rejects.toThrow('user gave up');
      expect(server.requests()).toBe(1);
    } finally {
      await server.close();
    }
  });
});

describe('tokens', () => {
  it('accepts function and factory token sources, resolved per publish', async () => {
    let calls = 0;
    const fn = new Publisher({ hubUrl: h.hubUrl, token: async () => (calls++, pubToken) });
    await fn.publish({ topics: 'a' });
    await fn.publish({ topics: 'a' });
    expect(calls).toBe(2);
    const factory = new Publisher({ hubUrl: h.hubUrl, token: { getToken: () => pubToken } });
    expect(await factory.publish({ topics: 'a' })).toMatch(/^urn:uuid:/);
  });

  it('caches a minted token until shortly before it expires', async () => {
    let now = Date.now();
    let mints = 0;
    const provider = createTokenProvider(
      () => {
        mints++;
        return createPublisherToken({ key: KEY, publish: ['*'], exp: '2m' });
      },
      { refreshBefore: 30_000, now: () => now },
    );
    const publisher = new Publisher({ hubUrl: h.hubUrl, token: provider });
    await Promise.all([publisher.publish({ topics: 'a' }), publisher.publish({ topics: 'b' })]);
    await publisher.publish({ topics: 'c' });
    expect(mints).toBe(1);
    now += 89_000; // 31 s before exp: still cached
    await publisher.publish({ topics: 'd' });
    expect(mints).toBe(1);
    now += 2_000; // within the refresh window
    await publisher.publish({ topics: 'e' });
    expect(mints).toBe(2);
  });

  it('drops a cached token the hub refused, so the next publish mints a new one', async () => {
    let mints = 0;
    const provider = createTokenProvider(() =>
      createPublisherToken({ key: ++mints === 1 ? 'stale-rotated-key-stale-rotated-key' : KEY, publish: ['*'], exp: '1h' }),
    );
    const publisher = new Publisher({ hubUrl: h.hubUrl, token: provider });
    expect(await expectPublishError(publisher.publish({ topics: 'a' }))).toMatchObject({ kind: 'unauthorized', attempts: 1 });
    expect(await publisher.publish({ topics: 'a' })).toMatch(/^urn:uuid:/);
    expect(mints).toBe(2);
  });

  it('mints draft-07 tokens with the mercure claim and draft-08 RFC 9068 access tokens', async () => {
    const t7 = await createPublisherToken({ key: KEY, publish: ['https://example.com/{id}'], subscribe: ['x'], payload: { user: 1 }, exp: '10m' });
    const [h7, c7] = t7.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()));
    expect(h7).toEqual({ alg: 'HS256', typ: 'JWT' });
    expect(c7.mercure).toEqual({ publish: ['https://example.com/{id}'], subscribe: ['x'], payload: { user: 1 } });
    expect(c7.exp - c7.iat).toBe(600);
    expect(tokenExpiry(t7)).toBe(c7.exp * 1000);

    const noExp = await createSubscriberToken({ key: KEY, subscribe: ['*'], exp: null });
    expect(tokenExpiry(noExp)).toBeUndefined();

    const t8 = await createAccessToken({
      issuer: 'https://app.example',
      audience: h.hubUrl,
      key: KEY,
      alg: 'HS256',
      publish: ['https://example.com/books/:id', { match: 'https://example.com/feed', matchType: 'exact' }, '*'],
      subscribe: ['https://example.com/users/42/*'],
      matchType: 'urlpattern',
      payload: { tenant: 't1' },
      exp: '5m',
    });
    const [h8, c8] = t8.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()));
    expect(h8).toEqual({ alg: 'HS256', typ: 'at+jwt' });
    expect(c8).toMatchObject({ iss: 'https://app.example', aud: h.hubUrl, sub: 'https://app.example', client_id: 'https://app.example' });
    expect(c8.jti).toMatch(/^urn:uuid:/);
    expect(c8.exp - c8.iat).toBe(300);
    expect(c8.authorization_details).toEqual([
      {
        type: 'https://mercure.rocks/authorization-detail',
        actions: ['publish'],
        topics: [{ match: 'https://example.com/books/:id', match_type: 'urlpattern' }, { match: 'https://example.com/feed' }, { match: '*' }],
      },
      {
        type: 'https://mercure.rocks/authorization-detail',
        actions: ['subscribe'],
        topics: [{ match: 'https://example.com/users/42/*', match_type: 'urlpattern' }],
        payload: { tenant: 't1' },
      },
    ]);
    expect(await new Publisher({ hubUrl: h.hubUrl, token: t8 }).publish({ topics: 'https://example.com/books/3' })).toMatch(/^urn:uuid:/);
  });

  it('signs with asymmetric keys (ES256 PEM) the hub verifies', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const hub = await startHub({ publisher: { key: await exportSPKI(publicKey), algorithm: 'ES256' } });
    try {
      const pem = await exportPKCS8(privateKey);
      const t7 = await createPublisherToken({ key: pem, alg: 'ES256', publish: ['*'] });
      expect(await new Publisher({ hubUrl: hub.hubUrl, token: t7 }).publish({ topics: 'a' })).toMatch(/^urn:uuid:/);
      const t8 = await createAccessToken({ issuer: 'https://app.example', audience: hub.hubUrl, key: privateKey, alg: 'ES256', publish: ['*'], exp: '1m' });
      expect(await new Publisher({ hubUrl: hub.hubUrl, token: t8 }).publish({ topics: 'a' })).toMatch(/^urn:uuid:/);
      // A token signed with another algorithm than the pinned one is refused.
      const hs = await createPublisherToken({ key: KEY, publish: ['*'] });
      expect(await expectPublishError(new Publisher({ hubUrl: hub.hubUrl, token: hs }).publish({ topics: 'a' }))).toMatchObject({ kind: 'unauthorized' });
    } finally {
      await hub.close();
    }
  });

  it('explains option mistakes with TokenError', async () => {
    await expect(createPublisherToken({ key: KEY, publish: ['*'], exp: 3600 })).rejects.toThrow(/absolute Unix time.*'1h'/);
    await expect(createPublisherToken({ key: 'secret', alg: 'RS256', publish: ['*'] })).rejects.toThrow(/PKCS#8 PEM/);
    await expect(createPublisherToken({ key: '', publish: ['*'] })).rejects.toThrow(TokenError);
    await expect(createAccessToken({ issuer: 'i', audience: 'a', key: KEY, alg: 'HS256', exp: undefined as unknown as string })).rejects.toThrow(/exp.*required/);
    await expect(createAccessToken({ issuer: '', audience: 'a', key: KEY, alg: 'HS256', exp: '1m' })).rejects.toThrow(/issuer/);
    await expect(createPublisherToken({ key: KEY, alg: 'none' as 'HS256', publish: ['*'] })).rejects.toThrow(/Unsupported algorithm/);
  });
});

describe('test doubles', () => {
  it('RecordingPublisher records updates, returns ids and fails on demand', async () => {
    const publisher = new RecordingPublisher();
    const id1 = await publisher.publish({ topics: ['https://example.com/a', 'https://example.com/alt'], data: 'x', private: true });
    const id2 = await publisher.publish(new Update('https://example.com/b', 'y', { id: 'mine' }));
    expect(id1).toMatch(/^urn:uuid:/);
    expect(id2).toBe('mine');
    expect(publisher.updates.map((u) => u.topics[0])).toEqual(['https://example.com/a', 'https://example.com/b']);
    expect(publisher.last?.data).toBe('y');
    expect(publisher.updatesFor('https://example.com/alt')).toHaveLength(1);
    expect(publisher.updates[0]!.private).toBe(true);

    publisher.failNext('forbidden').failNext({ kind: 'unavailable', message: 'store down' });
    const e1 = await expectPublishError(publisher.publish({ topics: 'c' }));
    expect(e1).toMatchObject({ kind: 'forbidden', status: 403 });
    const e2 = await expectPublishError(publisher.publish({ topics: 'd' }));
    expect(e2).toMatchObject({ kind: 'unavailable', status: 503, hubMessage: 'store down' });
    expect(publisher.failures.map((f) => f.update.topics[0])).toEqual(['c', 'd']);
    expect(await publisher.publish({ topics: 'e' })).toMatch(/^urn:uuid:/);

    publisher.failAlways('network');
    await expect(publisher.publish({ topics: 'f' })).rejects.toMatchObject({ kind: 'network', status: undefined });
    await expect(publisher.publish({ topics: 'g' })).rejects.toBeInstanceOf(PublishError);
    publisher.reset();
    expect(publisher.updates).toHaveLength(0);
    expect(await publisher.publish({ topics: 'h' })).toMatch(/^urn:uuid:/);

    // The same validation as the real publisher.
    await expect(publisher.publish({ topics: 'x', id: 'earliest' })).rejects.toThrow(InvalidUpdateError);
  });

  it('MockPublisher hands every update to a callback, like MockHub', async () => {
    const seen: Update[] = [];
    const hub = new MockPublisher((update) => {
      seen.push(update);
      return `id-${seen.length}`;
    });
    expect(await hub.publish({ topics: 'https://example.com/1', private: true })).toBe('id-1');
    expect(seen[0]).toBeInstanceOf(Update);
    expect(seen[0]!.private).toBe(true);
    expect(hub.updates).toHaveLength(1);
  });
});
