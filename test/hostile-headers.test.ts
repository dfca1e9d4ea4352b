/**
 * Issue 10, 0.1, 0.3 and 0.4: every header the hub writes from request or update data is
 * encoded or refused, never truncated. Ids travel in headers as their UTF-8 bytes (what the
 * reference hub writes, and what browsers send back in Last-Event-ID), on the raw-socket path,
 * the node:http path and HTTP/2 alike. Responses are read by Node's own parser.
 */
import http2 from 'node:http2';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDiscovery } from '../src/client/discovery.js';
import { createHub, serve } from '../src/index.js';
import { createLogger } from '../src/observability/logger.js';
import { KEY, legacyToken, publish, startHub, SUB_KEY, type TestHub } from './helpers.js';
import { headerOf, parseHead, percent, rawExchange, utf8Value } from './raw-client.js';

const TOPIC = 'https://example.com/a';
const INJECTING_ID = 'x\u010d\u010aSet-Cookie: pwned=1';

describe('hostile ids and headers', () => {
  let hub: TestHub;
  let port: number;
  let pub: string;
  let sub: string;

  beforeAll(async () => {
    hub = await startHub({ subscriptions: true, trustProxy: true });
    port = Number(new URL(hub.url).port);
    pub = await legacyToken({ publish: ['*'] });
    sub = await legacyToken({ subscribe: ['*'] }, SUB_KEY);
  });
  afterAll(async () => {
    await hub?.close();
  });

  async function published(id: string, data = 'x'): Promise<void> {
    const res = await publish(hub.hubUrl, { topic: TOPIC, data, id }, pub);
    expect(res.status, res.body).toBe(200);
    expect(res.body).toBe(id);
  }

  /** A subscribe request, as bytes; `extra` header lines are raw bytes too. */
  function subscribeRequest(query: string, extra: Buffer[] = [], body?: string): Buffer {
    const lines = [
      Buffer.from(`GET /.well-known/mercure?${query} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${sub}\r\n`),
      ...extra.map((e) => Buffer.concat([e, Buffer.from('\r\n')])),
    ];
    if (body !== undefined) lines.push(Buffer.from(`Content-Length: ${Buffer.byteLength(body)}\r\n`));
    lines.push(Buffer.from('\r\n'));
    if (body !== undefined) lines.push(Buffer.from(body));
    return Buffer.concat(lines);
  }

  it('0.1: an id with U+010D U+010A does not split the raw path Last-Event-ID header (query and header)', async () => {
    await published(INJECTING_ID);
    await published('after-injecting', 'second');
    for (const request of [
      subscribeRequest(`topic=${encodeURIComponent(TOPIC)}&lastEventID=${percent(INJECTING_ID)}`),
      // EventSource sends the id it was given as UTF-8 bytes.
      subscribeRequest(`topic=${encodeURIComponent(TOPIC)}`, [Buffer.concat([Buffer.from('Last-Event-ID: '), Buffer.from(INJECTING_ID)])]),
    ]) {
      const ex = await rawExchange(port, request, { until: (rest) => rest.includes('second') });
      const head = await parseHead(ex.head);
      expect(head?.status).toBe(200);
      expect(headerOf(head!, 'set-cookie')).toEqual([]);
      expect(headerOf(head!, 'last-event-id').map(utf8Value)).toEqual([INJECTING_ID]);
      // The id was found: the replay resumes right after it.
      expect(ex.rest.toString()).toContain('id: after-injecting');
      expect(ex.rest.toString()).not.toContain('data: x\n');
    }
  });

  it('0.3: ids above U+00FF round-trip on the raw path, the node:http path and HTTP/2', async () => {
    const id = 'https://example.com/日本/😀/\u00e9';
    await published(id);
    await published('after-japanese', 'second');
    const query = `topic=${encodeURIComponent(TOPIC)}&lastEventID=${percent(id)}`;
    // Raw path; then a GET with a body, which node:http serves.
    for (const request of [subscribeRequest(query), subscribeRequest(query, [], 'x')]) {
      const ex = await rawExchange(port, request, { until: (rest) => rest.includes('second') });
      const head = await parseHead(ex.head);
      expect(head?.status, ex.head.toString('latin1')).toBe(200);
      expect(headerOf(head!, 'last-event-id').map(utf8Value)).toEqual([id]);
      expect(ex.rest.toString()).toContain('id: after-japanese');
    }
    // The cursor a browser gets back, sent as Last-Event-ID the way a browser sends it.
    const ex = await rawExchange(port, subscribeRequest(`topic=${encodeURIComponent(TOPIC)}`, [Buffer.concat([Buffer.from('Last-Event-ID: '), Buffer.from(id)])]), {
      until: (rest) => rest.includes('second'),
    });
    expect(ex.rest.toString()).toContain('id: after-japanese');

    // HTTP/2 (h2c here): the same hub behind a second server that speaks it.
    const h2hub = createHub({ publisher: { key: KEY }, subscriber: { key: SUB_KEY }, logger: createLogger('silent') });
    const h2server = await serve(h2hub, { addr: '127.0.0.1:0', h2c: true });
    await h2hub.publish({ topics: [TOPIC], id });
    const client = http2.connect(h2server.url);
    try {
      const h = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = client.request({ ':path': `/.well-known/mercure?${query}`, authorization: `Bearer ${sub}` });
        req.on('response', (headers) => {
          resolve(headers);
          req.close();
        });
        req.on('error', reject);
        req.end();
      });
      expect(h[':status']).toBe(200);
      expect(utf8Value(String(h['last-event-id']))).toBe(id);
    } finally {
      client.close();
      await h2server.close();
    }
  });

  it('0.3: the subscriptions API answers (ETag, Link last-event-id) when the newest id is above U+00FF', async () => {
    const id = 'urn:日本:\u010d\u010a:😀"\\';
    // A hub of its own: the subscriptions of other tests end with events of their own.
    const own = await startHub({ subscriptions: true });
    const port = Number(new URL(own.url).port);
    const res = await publish(own.hubUrl, { topic: TOPIC, id }, pub);
    expect(res.status, res.body).toBe(200);
    for (const path of ['/.well-known/mercure/subscriptions', `/.well-known/mercure/subscriptions/exact/${encodeURIComponent(TOPIC)}`]) {
      const ex = await rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${sub}\r\n\r\n`);
      const head = await parseHead(ex.head);
      expect(head?.status, ex.head.toString('latin1')).toBe(200);
      const etag = headerOf(head!, 'etag').map(utf8Value);
      const link = headerOf(head!, 'link').map(utf8Value);
      expect(link).toHaveLength(1);
      const escaped = id.replace(/["\\]/g, '\\$&');
      expect([[id], [`"${escaped}"`]]).toContainEqual(etag);
      // RFC 8288 §3: a non-ASCII parameter value is an RFC 8187 ext-value.
      if (etag[0]!.startsWith('"')) expect(link[0]).toContain(`last-event-id*=UTF-8''${encodeURIComponent(id).replace(/['()*!]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())};`);
      // The project's own discovery parser reads the cursor back.
      if (etag[0]!.startsWith('"')) expect(parseDiscovery(link, `http://127.0.0.1:${port}/`).hubs[0]?.lastEventId).toBe(id);
      // A client revalidating with the ETag it was given gets 304.
      const again = await rawExchange(
        port,
        Buffer.concat([Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${sub}\r\nIf-None-Match: `), Buffer.from(etag[0]!), Buffer.from('\r\n\r\n')]),
      );
      expect((await parseHead(again.head))?.status).toBe(304);
    }
    await own.close();
  });

  it('0.4: a bare CR in Host is refused with 400 on the raw path, never copied into WWW-Authenticate', async () => {
    for (const host of ['a\rSet-Cookie: pwned=1', 'a\nSet-Cookie: pwned=1', 'a\x01b', 'a\x7fb']) {
      const ex = await rawExchange(port, `GET /.well-known/mercure?topic=x HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      const head = await parseHead(ex.head);
      expect(head?.status, JSON.stringify(ex.head.toString('latin1'))).toBe(400);
      expect(headerOf(head!, 'set-cookie')).toEqual([]);
      expect(headerOf(head!, 'www-authenticate')).toEqual([]);
    }
  });

  it('0.4: a Host or trusted X-Forwarded-Host that is no host name is refused with 400 saying so', async () => {
    const cases: Array<[string, string]> = [
      ['Host', 'caf\u00c3\u00a9.example'],
      ['Host', 'a"b'],
      ['Host', 'a b'],
      ['X-Forwarded-Host', 'evil"; error="x'],
      ['X-Forwarded-Host', 'caf\u00c3\u00a9'],
    ];
    for (const [name, value] of cases) {
      const hostLine = name === 'Host' ? '' : `Host: 127.0.0.1:${port}\r\n`;
      for (const extra of ['', 'Content-Length: 1\r\n']) {
        const ex = await rawExchange(
          port,
          `GET /.well-known/mercure?topic=x HTTP/1.1\r\n${hostLine}${name}: ${value}\r\n${extra}\r\n${extra ? 'x' : ''}`,
        );
        const head = await parseHead(ex.head);
        expect(head?.status, `${name}: ${value} ${extra}`).toBe(400);
        expect(ex.rest.toString()).toContain(name);
        expect(headerOf(head!, 'www-authenticate')).toEqual([]);
      }
    }
  });

  it('an unverified token claim never reaches WWW-Authenticate unencoded', async () => {
    // The issuer is read before the signature is checked: anyone can put anything there.
    const issuerHub = await startHub({ issuers: [{ issuer: 'https://issuer.example', subscriber: { key: 'k'.repeat(32) } }], trustedIssuers: ['https://issuer.example'] });
    try {
      const forged = await new SignJWT({ authorization_details: [] })
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' })
        .setIssuer('https://x\u010d\u010aSet-Cookie: pwned=1 日本')
        .setAudience('x')
        .setExpirationTime('1h')
        .sign(new TextEncoder().encode('z'.repeat(32)));
      const p = Number(new URL(issuerHub.url).port);
      for (const body of [undefined, 'x']) {
        const ex = await rawExchange(
          p,
          `GET /.well-known/mercure?match=${encodeURIComponent(TOPIC)} HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nAuthorization: Bearer ${forged}\r\n${body ? 'Content-Length: 1\r\n' : ''}\r\n${body ?? ''}`,
        );
        const head = await parseHead(ex.head);
        expect(head?.status, ex.head.toString('latin1')).toBe(401);
        expect(headerOf(head!, 'set-cookie')).toEqual([]);
        const challenge = headerOf(head!, 'www-authenticate');
        expect(challenge).toHaveLength(1);
        // RFC 6750: error_description is printable ASCII.
        expect(challenge[0]).toMatch(/^[\x20-\x7e]*$/);
        expect(challenge[0]).toContain('invalid_token');
      }
    } finally {
      await issuerHub.close();
    }
  });

  it('refuses ids that would not come back intact: edge whitespace (headers drop it), controls', async () => {
    for (const id of [' lead', 'trail\t', 'a\rb', 'a\u0085b', 'a\u200eb']) {
      const res = await publish(hub.hubUrl, { topic: TOPIC, id }, pub);
      expect(res.status, JSON.stringify(id)).toBe(400);
      expect(res.body).toMatch(/^Invalid "id" parameter: /);
    }
    // The programmatic API is held to the same rules: a line break would inject SSE fields.
    await expect(hub.hub.publish({ topics: [TOPIC], id: 'a\ndata: forged' })).rejects.toThrow(/invalid update id/);
    await expect(hub.hub.publish({ topics: [TOPIC], type: 'a\r\ndata: forged' })).rejects.toThrow(/invalid update type/);
    await expect(hub.hub.publish({ topics: [TOPIC], id: '\ud800' })).rejects.toThrow(/lone surrogate/);
  });

  it('an Origin echoed by CORS is an origin, never arbitrary bytes', async () => {
    const corsHub = await startHub({ corsOrigins: ['*'], anonymous: true });
    try {
      const p = Number(new URL(corsHub.url).port);
      for (const [o, echoed] of [
        ['https://ok.example', true],
        ['https://a.example\u00c3\u00a9', false],
        ['https://a.example"x', false],
      ] as const) {
        const ex = await rawExchange(p, `GET /.well-known/mercure?topic=x HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\nOrigin: ${o}\r\n\r\n`);
        const head = await parseHead(ex.head);
        expect(head?.status).toBe(200);
        expect(headerOf(head!, 'access-control-allow-origin'), o).toEqual(echoed ? [o] : []);
      }
    } finally {
      await corsHub.close();
    }
  });
});
