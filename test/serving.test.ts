import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import express from 'express';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHub, serve } from '../src/index.js';
import { createLogger } from '../src/observability/logger.js';
import { KEY, legacyToken, publish, SseClient, sleep, startHub, subscribeUrl } from './helpers.js';
import { startHubProcess, waitUntil } from './process-helpers.js';

const silent = createLogger('silent');
let certDir: string;
beforeAll(() => {
  certDir = mkdtempSync(join(tmpdir(), 'qs-cert-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-keyout', join(certDir, 'key.pem'), '-out', join(certDir, 'cert.pem')], { stdio: 'ignore' });
});

/** Opens an HTTP/2 stream and resolves with status and the first chunk(s) of body once `until` holds. */
function h2Request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: string,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; stream: http2.ClientHttp2Stream; text: () => string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers);
    let text = '';
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (text += c));
    stream.on('response', (h) => resolve({ status: Number(h[':status']), headers: h, stream, text: () => text }));
    stream.on('error', reject);
    if (body) stream.end(body);
    else if (headers[':method'] === 'POST') stream.end();
  });
}

async function untilText(get: () => string, needle: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!get().includes(needle)) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${needle}: ${get()}`);
    await sleep(10);
  }
}

describe('serving', () => {
  it('speaks HTTP/2 over TLS (and HTTP/1.1 on the same port)', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const server = await serve(hub, { addr: '127.0.0.1:0', certFile: join(certDir, 'cert.pem'), keyFile: join(certDir, 'key.pem') });
    const session = http2.connect(server.url, { ca: readFileSync(join(certDir, 'cert.pem')), checkServerIdentity: () => undefined });
    const sub = await h2Request(session, { ':path': '/.well-known/mercure?topic=h2', ':method': 'GET' });
    expect(sub.status).toBe(200);
    expect(sub.headers['content-type']).toBe('text/event-stream');
    expect(sub.headers['connection']).toBeUndefined();
    const token = await legacyToken({ publish: ['*'] });
    const pub = await h2Request(session, { ':path': '/.well-known/mercure', ':method': 'POST', authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' }, 'topic=h2&data=over-h2&id=x1');
    expect(pub.status).toBe(200);
    await untilText(sub.text, 'data: over-h2');
    expect(sub.text()).toBe(':\nid: x1\ndata: over-h2\n\n');
    session.close();
    await server.close();
  });

  it('speaks cleartext HTTP/2 (h2c, prior knowledge) beside HTTP/1.1', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const server = await serve(hub, { addr: '127.0.0.1:0', h2c: true });
    const session = http2.connect(server.url);
    const sub = await h2Request(session, { ':path': '/.well-known/mercure?topic=h2c', ':method': 'GET' });
    expect(sub.status).toBe(200);
    const token = await legacyToken({ publish: ['*'] });
    // Publish over HTTP/1.1 on the same port.
    expect((await publish(`${server.url}/.well-known/mercure`, { topic: 'h2c', data: 'mixed' }, token)).status).toBe(200);
    await untilText(sub.text, 'data: mixed');
    session.close();
    await server.close();
  });

  it('mounts in a plain node:http server next to other routes', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const server = http.createServer((req, res) => {
      if (req.url === '/app') {
        res.end('app');
        return;
      }
      hub.handler(req, res, () => {
        res.statusCode = 404;
        res.end('app 404');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    expect(await (await fetch(`${base}/app`)).text()).toBe('app');
    expect(await (await fetch(`${base}/other`)).text()).toBe('app 404');
    const s = await SseClient.connect(`${base}/.well-known/mercure?topic=n`);
    await hub.publish({ topics: ['n'], data: 'embedded' });
    await s.waitForEvents(1);
    s.close();
    await hub.close();
    server.closeAllConnections();
    server.close();
  });

  it('mounts in Express and Fastify', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const app = express();
    app.get('/hello', (_req, res) => {
      res.send('express');
    });
    app.use(hub.handler);
    const ex = app.listen(0, '127.0.0.1');
    await new Promise((r) => ex.once('listening', r));
    const exBase = `http://127.0.0.1:${(ex.address() as { port: number }).port}`;

    const fastify = Fastify();
    fastify.all('/.well-known/mercure', (req, reply) => {
      reply.hijack();
      hub.handler(req.raw, reply.raw);
    });
    fastify.all('/.well-known/mercure/*', (req, reply) => {
      reply.hijack();
      hub.handler(req.raw, reply.raw);
    });
    // Fastify parses bodies itself: leave form bodies to the hub.
    fastify.addContentTypeParser('application/x-www-form-urlencoded', (_req, _payload, done) => done(null));
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    const fBase = `http://127.0.0.1:${(fastify.server.address() as { port: number }).port}`;

    expect(await (await fetch(`${exBase}/hello`)).text()).toBe('express');
    const a = await SseClient.connect(`${exBase}/.well-known/mercure?topic=fw`);
    const b = await SseClient.connect(`${fBase}/.well-known/mercure?topic=fw`);
    const token = await legacyToken({ publish: ['*'] });
    expect((await publish(`${fBase}/.well-known/mercure`, { topic: 'fw', data: 'via-fastify' }, token)).status).toBe(200);
    expect((await publish(`${exBase}/.well-known/mercure`, { topic: 'fw', data: 'via-express' }, token)).status).toBe(200);
    await a.waitForEvents(2);
    await b.waitForEvents(2);
    a.close();
    b.close();
    await hub.close();
    ex.closeAllConnections();
    ex.close();
    await fastify.close();
  });

  it('answers CORS preflights and credentialed requests for allowed origins only', async () => {
    const h = await startHub({ anonymous: true, corsOrigins: ['https://app.example'] });
    const pre = await fetch(h.hubUrl, { method: 'OPTIONS', headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'last-event-id, authorization' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(pre.headers.get('access-control-allow-credentials')).toBe('true');
    expect(pre.headers.get('access-control-allow-headers')).toMatch(/last-event-id/);
    const bad = await fetch(h.hubUrl, { method: 'OPTIONS', headers: { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'GET' } });
    expect(bad.headers.get('access-control-allow-origin')).toBeNull();
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'c']]), { headers: { Origin: 'https://app.example' } });
    expect(s.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(s.headers['access-control-expose-headers']).toMatch(/Last-Event-ID/);
    s.close();
    await h.close();
  });

  it('uses X-Forwarded-* only when told to trust the proxy', async () => {
    const trusting = await startHub({ trustProxy: true });
    const plain = await startHub({});
    const probe = async (url: string) => {
      const res = await fetch(subscribeUrl(url, [['match', 'x']]), { headers: { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'hub.example.com' } });
      return res.headers.get('www-authenticate') ?? '';
    };
    expect(await probe(trusting.hubUrl)).toContain('resource_metadata="https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure"');
    expect(await probe(plain.hubUrl)).toContain('resource_metadata="http://127.0.0.1:');
    await trusting.close();
    await plain.close();
  });

  it('serves health, readiness, metrics and the protected-resource metadata', async () => {
    const h = await startHub({ anonymous: true, subscriptions: true });
    expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${h.url}/healthz/live`)).status).toBe(200);
    expect(await (await fetch(`${h.url}/readyz`)).json()).toEqual({ ready: true, transport: 'memory' });
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'm']]));
    await s.until(() => s.raw.length > 0);
    await h.hub.publish({ topics: ['m'], data: 'x' });
    await s.waitForEvents(1);
    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    expect(metrics).toMatch(/^mercure_subscribers_connected 1$/m);
    expect(metrics).toMatch(/^mercure_subscribers_total 1$/m);
    expect(metrics).toMatch(/^mercure_updates_total 2$/m); // the subscription event and the update
    expect(metrics).toMatch(/^quicksilver_history_size 2$/m);
    expect(metrics).toMatch(/^quicksilver_dispatch_duration_seconds_count 2$/m);
    const meta = await (await fetch(`${h.url}/.well-known/oauth-protected-resource/.well-known/mercure`)).json();
    expect(meta).toMatchObject({
      resource: h.hubUrl,
      bearer_methods_supported: ['header'],
      authorization_details_types_supported: ['https://mercure.rocks/authorization-detail'],
      mercure_cookie: '__Secure-mercure_access_token',
      mercure_subscriptions: true,
    });
    s.close();
    await h.close();
  });

  it('drains on shutdown: readiness fails, subscribers get a retry hint and the stream ends', async () => {
    const h = await startHub({ anonymous: true });
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'bye']]));
    await s.until(() => s.raw.length > 0);
    const closing = h.close();
    await s.until(() => s.closed, 5000, 'stream end');
    expect(s.raw).toMatch(/retry: \d+\n\n$/);
    await closing;
  });

  it('answers subscribers arriving while it drains with a retry hint, not an error (EventSource would give up)', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const server = http.createServer((req, res) => hub.handler(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    await hub.close();
    const s = await SseClient.connect(`${base}/.well-known/mercure?topic=late`);
    expect(s.status).toBe(200);
    await s.until(() => s.closed);
    expect(s.raw).toMatch(/^retry: \d+\n\n$/);
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    server.closeAllConnections();
    server.close();
  });
});

describe('the quicksilver CLI', () => {
  it('refuses to start in production without a publisher key, with one clear line', () => {
    const out = spawnSyncCli([], {});
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(/no publisher key/);
  });

  it('--dev (what npm start runs) prints working publisher and subscriber tokens and curl lines', async () => {
    const hub = await startHubProcess(['--dev', '--addr', '127.0.0.1:0', '--transport-url', 'memory://']);
    await waitUntil(() => /Subscribe: {2}curl/.test(hub.output()), 5000, 'the banner');
    const out = hub.output();
    const pub = /Publisher token: {2}(\S+)/.exec(out)![1]!;
    const subToken = /Subscriber token: (\S+)/.exec(out)![1]!;
    expect(out).toContain(`curl -N '${hub.hubUrl}?topic=https://example.com/books/1'`);
    expect(out).toContain(`curl -X POST '${hub.hubUrl}' -H 'Authorization: Bearer ${pub}'`);
    expect(out).toContain(`${hub.hubUrl}/ui/`);
    // Anonymous subscribers are allowed; the subscriber token reads private updates.
    const anon = await SseClient.connect(`${hub.hubUrl}?topic=https://example.com/books/1`);
    const priv = await SseClient.connect(`${hub.hubUrl}?topic=https://example.com/books/1`, { headers: { Authorization: `Bearer ${subToken}` } });
    expect((await publish(hub.hubUrl, { topic: 'https://example.com/books/1', data: 'secret', private: 'on' }, pub)).status).toBe(200);
    expect((await publish(hub.hubUrl, { topic: 'https://example.com/books/1', data: 'public' }, pub)).status).toBe(200);
    await priv.waitForEvents(2);
    await anon.waitForEvents(1);
    expect(anon.events.map((e) => e.data)).toEqual(['public']);
    // Subscription events and the API are on.
    expect((await fetch(`${hub.hubUrl}/subscriptions`, { headers: { Authorization: `Bearer ${pub}` } })).status).toBe(200);
    anon.close();
    priv.close();
    // Printed once by the hub, not once by each of its worker processes (one per core by default).
    expect(hub.output().match(/Publisher token:/g)).toHaveLength(1);
    expect(hub.output().match(/Quicksilver development hub on/g)).toHaveLength(1);
    expect(await hub.stop()).toBe(0);
  });

  it('starts from legacy environment variables and exits cleanly on SIGTERM', async () => {
    // Its own directory: the default store (./.quicksilver/hub.lmdb) has one owning hub, and the
    // checkout's may belong to a developer's running hub.
    const cwd = mkdtempSync(join(tmpdir(), 'qs-legacy-env-'));
    const child = spawn(process.execPath, [resolve('dist/cli.js')], {
      cwd,
      env: { PATH: process.env.PATH, JWT_KEY: KEY, ADDR: '127.0.0.1:0', ALLOW_ANONYMOUS: '1', LOG_FORMAT: 'json' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await untilText(() => out, 'Quicksilver hub ready', 15_000);
      const url = /"url":"([^"]+)"/.exec(out)![1]!;
      const s = await SseClient.connect(`${url}/.well-known/mercure?topic=cli`);
      const token = await legacyToken({ publish: ['*'] });
      expect((await publish(`${url}/.well-known/mercure`, { topic: 'cli', data: 'hi' }, token)).status).toBe(200);
      await s.waitForEvents(1);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      await s.until(() => s.closed);
      expect(s.raw).toMatch(/retry: \d+/);
    } finally {
      // A failed assertion must not leave the hub running (it would hold its store and port).
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      rmSync(cwd, { recursive: true, force: true });
    }
  }, 30_000);
});

function spawnSyncCli(args: string[], env: Record<string, string>): { status: number | null; stderr: string } {
  try {
    execFileSync(process.execPath, ['dist/cli.js', ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    return { status: 0, stderr: '' };
  } catch (err) {
    const e = err as { status: number | null; stderr: Buffer };
    return { status: e.status, stderr: e.stderr.toString() };
  }
}

describe('subscriptions served from the raw socket', () => {
  const rawRequest = (port: number, text: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write(text));
      let out = '';
      socket.setEncoding('latin1');
      socket.on('data', (d: string) => {
        out += d;
        if (out.includes('data: raw')) {
          socket.destroy();
          resolve(out);
        }
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(out));
    });

  it('frames the stream with chunked coding for HTTP/1.1, close-delimited for HTTP/1.0, and still serves everything else', async () => {
    const h = await startHub({ anonymous: true });
    const port = Number(new URL(h.url).port);
    const token = await legacyToken({ publish: ['*'] });
    const p11 = rawRequest(port, 'GET /.well-known/mercure?topic=raw HTTP/1.1\r\nHost: x\r\n\r\n');
    const p10 = rawRequest(port, 'GET /.well-known/mercure?topic=raw HTTP/1.0\r\n\r\n');
    await sleep(100);
    expect((await publish(h.hubUrl, { topic: 'raw', id: 'r', data: 'raw' }, token)).status).toBe(200);
    const [a, b] = await Promise.all([p11, p10]);
    expect(a).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(a).toMatch(/\r\nTransfer-Encoding: chunked\r\n/);
    expect(a).toMatch(/\r\n\r\n2\r\n:\n\r\n[0-9a-f]+\r\nid: r\ndata: raw\n\n\r\n$/);
    expect(b).toMatch(/\r\nConnection: close\r\n/);
    expect(b).not.toMatch(/chunked/);
    expect(b).toMatch(/\r\n\r\n:\nid: r\ndata: raw\n\n$/);
    // Errors, bodies and other paths still work on the same port.
    expect((await fetch(`${h.hubUrl}?nope=1`)).status).toBe(400);
    expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
    await h.close();
  });

  it('drops a connection that never finishes its request head', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const server = await serve(hub, { addr: '127.0.0.1:0', headersTimeout: 300 });
    const socket = net.connect(Number(new URL(server.url).port), '127.0.0.1', () => socket.write('GET /.well-known/mercure?topic=x HTTP/1.1\r\n'));
    const closed = await new Promise<boolean>((r) => {
      socket.on('close', () => r(true));
      setTimeout(() => r(false), 3000);
    });
    expect(closed).toBe(true);
    await server.close();
  });
});
