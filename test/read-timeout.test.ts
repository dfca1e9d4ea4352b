import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY, legacyToken, publish } from './helpers.js';
import { freePort, startHubProcess, type HubProcess } from './process-helpers.js';

// `--read-timeout` bounds reading a whole request, headers and body, on every path the hub
// serves (raw-socket subscriptions, node:http, h2c, TLS with HTTP/2 and HTTP/1.1), and never
// cuts an event stream, which is a response.

const LIMIT = 2000;
let certDir: string;
const hubs: HubProcess[] = [];
let plain: HubProcess;
let h2c: HubProcess;
let secure: HubProcess;
let token: string;

beforeAll(async () => {
  certDir = mkdtempSync(join(tmpdir(), 'qs-read-timeout-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-keyout', join(certDir, 'key.pem'), '-out', join(certDir, 'cert.pem')], { stdio: 'ignore' });
  const base = ['--jwt-key', KEY, '--anonymous', '--workers', '1', '--transport-url', 'memory://', '--read-timeout', `${LIMIT / 1000}s`];
  [plain, h2c, secure] = await Promise.all([
    startHubProcess([...base, '--addr', `127.0.0.1:${await freePort()}`]),
    startHubProcess([...base, '--h2c', '--addr', `127.0.0.1:${await freePort()}`]),
    startHubProcess([...base, '--addr', `127.0.0.1:${await freePort()}`, '--cert-file', join(certDir, 'cert.pem'), '--key-file', join(certDir, 'key.pem')]),
  ]);
  hubs.push(plain, h2c, secure);
  token = await legacyToken({ publish: ['*'] });
}, 30_000);

afterAll(async () => {
  await Promise.all(hubs.map((h) => h.stop()));
  rmSync(certDir, { recursive: true, force: true });
});

const portOf = (h: HubProcess): number => Number(new URL(h.url).port);

/**
 * Sends `head`, then `trickle` one byte a second, and resolves how long the hub took to end the
 * connection and what it answered (gives up after 6 s: "held open").
 */
function trickle(connect: () => net.Socket, head: string, trickle: string): Promise<{ ms: number; answer: string }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const socket = connect();
    let answer = '';
    let i = 0;
    const timer = setInterval(() => {
      if (i < trickle.length) socket.write(trickle[i++]!);
    }, 1000);
    const done = (): void => {
      clearInterval(timer);
      clearTimeout(giveUp);
      socket.destroy();
      resolve({ ms: Date.now() - t0, answer });
    };
    const giveUp = setTimeout(done, 6000);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (answer += d));
    socket.on('close', done);
    socket.on('error', done);
    socket.write(head);
  });
}

const tcp = (h: HubProcess) => () => net.connect(portOf(h), '127.0.0.1');
const tlsH1 = (h: HubProcess) => () => tls.connect({ port: portOf(h), host: '127.0.0.1', ALPNProtocols: ['http/1.1'], rejectUnauthorized: false });
const body = 'topic=https%3A%2F%2Fexample.com%2Fslow&data=x';
const postHead = (h: HubProcess) =>
  `POST /.well-known/mercure HTTP/1.1\r\nHost: 127.0.0.1:${portOf(h)}\r\nAuthorization: Bearer ${token}\r\n` +
  `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n`;

function expectCutInTime(r: { ms: number; answer: string }): void {
  expect(r.ms, `held for ${r.ms} ms`).toBeGreaterThanOrEqual(LIMIT - 100);
  expect(r.ms, `held for ${r.ms} ms`).toBeLessThan(LIMIT + 1500);
  expect(r.answer).not.toMatch(/^HTTP\/1\.1 200/);
}

describe('read timeout', () => {
  it('cuts a publish body trickled at 1 byte/s (HTTP/1.1)', async () => {
    const r = await trickle(tcp(plain), postHead(plain), body);
    expectCutInTime(r);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408/);
  });

  it('cuts request headers trickled at 1 byte/s, on the raw subscribe path and on node:http', async () => {
    const [raw, other] = await Promise.all([
      trickle(tcp(plain), 'GET /.well-known/mercure?topic=x HTTP/1.1\r\n', 'Host: example\r\n\r\n'),
      trickle(tcp(plain), 'POST /.well-known/mercure HTTP/1.1\r\n', 'Host: example\r\n\r\n'),
    ]);
    expectCutInTime(raw);
    expectCutInTime(other);
  });

  it('cuts a trickled body over TLS with HTTP/1.1', async () => {
    const r = await trickle(tlsH1(secure), postHead(secure), body);
    expectCutInTime(r);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408/);
  });

  it('answers 408 to an HTTP/2 request whose body trickles (h2c and TLS)', async () => {
    const one = async (h: HubProcess): Promise<{ ms: number; status: number | undefined }> => {
      const session = http2.connect(h.url, { ca: readFileSync(join(certDir, 'cert.pem')), checkServerIdentity: () => undefined });
      session.on('error', () => {});
      const t0 = Date.now();
      const req = session.request({
        ':method': 'POST', ':path': '/.well-known/mercure', authorization: `Bearer ${token}`,
        'content-type': 'application/x-www-form-urlencoded', 'content-length': String(body.length),
      });
      let i = 0;
      const timer = setInterval(() => i < body.length && req.write(body[i++]!), 1000);
      const status = await new Promise<number | undefined>((resolve) => {
        let s: number | undefined;
        req.on('response', (headers) => (s = Number(headers[':status'])));
        req.on('close', () => resolve(s));
        req.on('error', () => {});
        req.resume();
        setTimeout(() => resolve(undefined), 6000);
      });
      clearInterval(timer);
      session.destroy();
      return { ms: Date.now() - t0, status };
    };
    for (const r of await Promise.all([one(h2c), one(secure)])) {
      expect(r.status).toBe(408);
      expect(r.ms).toBeGreaterThanOrEqual(LIMIT - 100);
      expect(r.ms).toBeLessThan(LIMIT + 1500);
    }
  });

  it('never cuts an event stream: streams older than the limit still get updates (raw, node:http, h2c, TLS h2)', async () => {
    const topic = 'https://example.com/long';
    const received: Record<string, string> = { raw: '', nodeHttp: '', h2c: '', h2: '' };
    const sockets: net.Socket[] = [];
    const open = (name: string, extra: string): void => {
      const s = net.connect(portOf(plain), '127.0.0.1');
      s.setEncoding('latin1');
      s.on('data', (d: string) => (received[name] += d));
      s.on('error', () => {});
      s.write(`GET /.well-known/mercure?topic=${encodeURIComponent(topic)} HTTP/1.1\r\nHost: x\r\n${extra}`);
      sockets.push(s);
    };
    open('raw', '\r\n');
    // A chunked (empty) body sends the subscription through node:http instead of the raw path.
    open('nodeHttp', 'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    const sessions = [h2c, secure].map((h, k) => {
      const session = http2.connect(h.url, { ca: readFileSync(join(certDir, 'cert.pem')), checkServerIdentity: () => undefined });
      session.on('error', () => {});
      const req = session.request({ ':path': `/.well-known/mercure?topic=${encodeURIComponent(topic)}` });
      req.setEncoding('utf8');
      req.on('data', (d: string) => (received[k === 0 ? 'h2c' : 'h2'] += d));
      req.on('error', () => {});
      return session;
    });
    await new Promise((r) => setTimeout(r, LIMIT + 1500));
    for (const h of [plain, h2c]) {
      const res = await publish(h.hubUrl, { topic, data: 'still-here' }, token);
      expect(res.status).toBe(200);
    }
    // The TLS hub's certificate is self-signed: publish over the session that trusts it.
    const form = new URLSearchParams({ topic, data: 'still-here' }).toString();
    const post = sessions[1]!.request({
      ':method': 'POST', ':path': '/.well-known/mercure', authorization: `Bearer ${token}`,
      'content-type': 'application/x-www-form-urlencoded',
    });
    const status = new Promise((r) => post.on('response', (h) => r(h[':status'])));
    post.end(form);
    post.resume();
    expect(await status).toBe(200);
    const deadline = Date.now() + 3000;
    while (Object.values(received).some((v) => !v.includes('data: still-here')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const [name, text] of Object.entries(received)) expect(text, name).toContain('data: still-here');
    for (const s of sockets) s.destroy();
    for (const s of sessions) s.destroy();
  });
});
