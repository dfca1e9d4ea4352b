/**
 * docs/reverse-proxy.md, tested with real proxies in front of a real hub (dist/cli.js):
 *
 * - nginx (Debian's nginx-light) with deploy/nginx/quicksilver.conf and quicksilver-locations.conf
 *   as shipped, only the ports, certificate paths and server name changed, in an http block that
 *   gzips text (event streams included), as many sites do; TLS with a throwaway certificate;
 * - Caddy (Debian's caddy) with deploy/caddy/Caddyfile, its site address replaced by a plain
 *   HTTP one on a free port.
 *
 * Through each, an event published reaches a subscriber within 1 s (and publishing through the
 * proxy works too), not
 * compressed even though the client accepts gzip; through nginx both over HTTP/1.1 and over
 * HTTP/2, with more streams on one HTTP/2 connection than a browser allows HTTP/1.1 connections
 * per origin. The hub (--trust-proxy) sees the scheme and host the client used, and per-address
 * limits hold: a client cannot escape them by sending its own X-Forwarded-For.
 *
 * Tools come from scripts/install-deploy-tools.sh; a proxy that cannot be installed is skipped
 * with a message, unless CI is set (then it fails).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY, legacyToken } from './helpers.js';
import { freePort, startHubProcess, waitUntil, type HubProcess } from './process-helpers.js';

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEPLOY = join(ROOT, 'deploy');
const IS_ROOT = process.getuid?.() === 0;
const HOST = 'hub.example.test';
/** An event must get through the proxy at least this fast. */
const UNBUFFERED_MS = 1000;

async function installed(tools: string[]): Promise<string | null> {
  try {
    await run('bash', [join(ROOT, 'scripts', 'install-deploy-tools.sh'), ...tools], { timeout: 600_000 });
    return null;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const why = `${tools.join(', ')} not installable: ${(e.stderr || e.message).trim()}`;
    if (process.env.CI) throw new Error(why);
    console.warn(`deploy-proxy: skipped: ${why}`);
    return why;
  }
}
const noNginx = await installed(['nginx', 'openssl']);
const noCaddy = await installed(['caddy']);

/** Replaces `from` (which must be there) by `to`. */
function swap(text: string, from: string | RegExp, to: string): string {
  const out = text.replace(from, to);
  if (out === text) throw new Error(`deploy file changed: '${String(from)}' not found`);
  return out;
}

interface Stream {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  events: Array<{ data: string; at: number }>;
  close(): void;
}

/** Reads SSE events from a body, stamping each with its arrival time. */
function collect(body: NodeJS.ReadableStream, events: Stream['events']): void {
  let buffer = '';
  body.setEncoding('utf8');
  body.on('data', (chunk: string) => {
    buffer += chunk;
    let i: number;
    while ((i = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, i);
      buffer = buffer.slice(i + 2);
      const data = [...block.matchAll(/^data: (.*)$/gm)].map((m) => m[1]).join('\n');
      if (data !== '') events.push({ data, at: Date.now() });
    }
  });
  body.on('error', () => {});
}

/** An HTTP/1.1 (or HTTPS) event stream, as a browser asks for it. */
function subscribe1(url: string, headers: Record<string, string> = {}, ca?: Buffer): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, {
      headers: { Accept: 'text/event-stream', 'Accept-Encoding': 'gzip, deflate, br', Host: HOST, ...headers },
      ...(ca ? { ca, servername: HOST } : {}),
      agent: false,
    }, (res) => {
      const events: Stream['events'] = [];
      collect(res, events);
      resolve({ status: res.statusCode!, headers: res.headers, events, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

async function publish(url: string, data: string, topic: string, ca?: Buffer, host = HOST): Promise<number> {
  const token = await legacyToken({ publish: ['*'] });
  const body = new URLSearchParams({ topic, data }).toString();
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.request(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded', Host: host },
      ...(ca ? { ca, servername: HOST } : {}),
      agent: false,
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function getJson(url: string, ca?: Buffer, host = HOST): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    mod.get(url, { headers: { Host: host }, ...(ca ? { ca, servername: HOST } : {}), agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text) as Record<string, unknown>);
        } catch {
          reject(new Error(`not JSON (${res.statusCode}): ${text}`));
        }
      });
    }).on('error', reject);
  });
}

async function connected(hub: HubProcess): Promise<number> {
  const text = await (await fetch(`${hub.url}/metrics`)).text();
  return Number(/^mercure_subscribers_connected (\d+)/m.exec(text)![1]);
}

async function until(cond: () => Promise<boolean>, timeout: number, what: string): Promise<void> {
  const end = Date.now() + timeout;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Publishes one small event straight to the hub (so that only the proxy's forwarding is timed,
 * not a TLS handshake for the publish) and checks every stream gets it within UNBUFFERED_MS. A
 * buffering proxy holds such an event until its buffer fills or the stream ends. Returns the
 * slowest delay.
 */
async function publishAndTime(hub: HubProcess, streams: Stream[], topic: string): Promise<number> {
  await until(async () => (await connected(hub)) >= streams.length, 5000, 'the subscribers to reach the hub');
  const data = `tick-${Math.random().toString(36).slice(2)}`;
  const t0 = Date.now();
  expect(await publish(hub.hubUrl, data, topic)).toBe(200);
  await waitUntil(() => streams.every((s) => s.events.some((e) => e.data === data)), UNBUFFERED_MS * 3, 'the event through the proxy');
  const delays = streams.map((s) => s.events.find((e) => e.data === data)!.at - t0);
  const slowest = Math.max(...delays);
  expect(slowest).toBeLessThan(UNBUFFERED_MS);
  return slowest;
}

/** Publishes through the proxy and waits for the event on `stream`. */
async function publishThrough(url: string, stream: Stream, topic: string, ca?: Buffer, host?: string): Promise<void> {
  const data = `via-proxy-${Math.random().toString(36).slice(2)}`;
  expect(await publish(url, data, topic, ca, host)).toBe(200);
  await waitUntil(() => stream.events.some((e) => e.data === data), 5000, 'the event published through the proxy');
}

let dir: string;
let hubPort: number;
let hub: HubProcess;
const hubArgs = (...extra: string[]): string[] =>
  ['--jwt-key', KEY, '--anonymous', '--trust-proxy', '--addr', `127.0.0.1:${hubPort}`, '--transport-url', 'memory://', ...extra];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'qs-proxy-'));
  chmodSync(dir, 0o755);
  hubPort = await freePort();
  hub = await startHubProcess(hubArgs());
});
afterAll(async () => {
  await hub?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `fn` against a hub restarted with --max-connections-per-ip 1 (same port), then restores it. */
async function withLimit(fn: () => Promise<void>, ...extra: string[]): Promise<void> {
  await hub.stop();
  // One process: these tests are about which address the proxy makes the hub see. Across
  // workers the per-address count is shared asynchronously, and two connections landing on two
  // workers within a millisecond can both pass (a known gap, in the closing note).
  hub = await startHubProcess(hubArgs('--max-connections-per-ip', '1', '--workers', '1', ...extra));
  try {
    await fn();
  } finally {
    await hub.stop();
    hub = await startHubProcess(hubArgs());
  }
}

/**
 * Two subscribers through `url`, each claiming another address in X-Forwarded-For: their
 * statuses, and how long the hub took to see them leave once they closed.
 */
async function pairThrough(url: string, ca?: Buffer, host?: string): Promise<{ statuses: number[]; releasedMs: number }> {
  const hdr = (ip: string) => ({ 'X-Forwarded-For': ip, ...(host ? { Host: host } : {}) });
  const a = await subscribe1(url, hdr('203.0.113.1'), ca);
  const b = await subscribe1(url, hdr('203.0.113.2'), ca);
  const t0 = Date.now();
  a.close();
  b.close();
  await until(async () => (await connected(hub)) === 0, 15_000, 'the hub to see the subscribers leave');
  return { statuses: [a.status, b.status], releasedMs: Date.now() - t0 };
}

function spawnLogged(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { child: ChildProcess; log: () => string } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  return { child, log: () => log };
}

async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

describe.skipIf(noNginx !== null)('nginx (deploy/nginx)', () => {
  let nginx: ReturnType<typeof spawnLogged> | undefined;
  let port: number;
  let ca: Buffer;
  let base: string;

  beforeAll(async () => {
    port = await freePort();
    base = `https://127.0.0.1:${port}`;
    const ndir = join(dir, 'nginx');
    await run('mkdir', ['-p', ndir]);
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${HOST}`,
      '-addext', `subjectAltName=DNS:${HOST},IP:127.0.0.1`, '-keyout', join(ndir, 'hub.key'), '-out', join(ndir, 'hub.pem')]);
    ca = readFileSync(join(ndir, 'hub.pem'));
    let site = readFileSync(join(DEPLOY, 'nginx', 'quicksilver.conf'), 'utf8');
    site = swap(site, 'server 127.0.0.1:3000;', `server 127.0.0.1:${hubPort};`);
    site = swap(site, /^\s*listen 443 ssl http2;$/m, `    listen 127.0.0.1:${port} ssl http2;`);
    site = swap(site, /^\s*listen \[::\]:443 ssl http2;\n/m, '');
    site = swap(site, 'server_name hub.example.com;', `server_name ${HOST};`);
    site = swap(site, '/etc/ssl/certs/hub.example.com.pem', join(ndir, 'hub.pem'));
    site = swap(site, '/etc/ssl/private/hub.example.com.key', join(ndir, 'hub.key'));
    site = swap(site, '/etc/nginx/snippets/quicksilver-locations.conf', join(DEPLOY, 'nginx', 'quicksilver-locations.conf'));
    writeFileSync(join(ndir, 'site.conf'), site);
    writeFileSync(join(ndir, 'nginx.conf'), `
daemon off;
worker_processes 1;
pid ${ndir}/nginx.pid;
error_log ${ndir}/error.log warn;
${IS_ROOT ? 'user nobody nogroup;' : ''}
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path ${ndir}/client_body;
  proxy_temp_path ${ndir}/proxy;
  fastcgi_temp_path ${ndir}/fastcgi;
  uwsgi_temp_path ${ndir}/uwsgi;
  scgi_temp_path ${ndir}/scgi;
  # Site-wide compression, event streams included, as many configurations have it.
  gzip on;
  gzip_min_length 0;
  gzip_types text/event-stream text/plain application/json;
  include ${ndir}/site.conf;
}
`);
    const args = ['-e', join(ndir, 'error.log'), '-p', ndir, '-c', join(ndir, 'nginx.conf')];
    const check = await run('nginx', ['-t', ...args]).catch((e: { stderr: string }) => ({ stderr: e.stderr, failed: true }));
    if ('failed' in check) throw new Error(`nginx -t: ${check.stderr}`);
    nginx = spawnLogged('nginx', args);
    await until(async () => {
      try {
        return (await getJson(`${base}/.well-known/oauth-protected-resource/.well-known/mercure`, ca)).resource !== undefined;
      } catch {
        if (nginx!.child.exitCode !== null) throw new Error(`nginx exited: ${nginx!.log()} ${readFileSync(join(ndir, 'error.log'), 'utf8')}`);
        return false;
      }
    }, 10_000, 'nginx to proxy the hub');
  }, 60_000);
  afterAll(() => stopChild(nginx?.child, 'SIGQUIT'));

  it('HTTP/1.1 over TLS: an event arrives within 1 s, uncompressed', async () => {
    const topic = 'https://example.com/nginx/h1';
    const s = await subscribe1(`${base}/.well-known/mercure?topic=${encodeURIComponent(topic)}`, {}, ca);
    try {
      expect(s.status).toBe(200);
      expect(s.headers['content-type']).toMatch(/^text\/event-stream/);
      expect(s.headers['content-encoding']).toBeUndefined();
      const delay = await publishAndTime(hub, [s], topic);
      console.log(`deploy-proxy: nginx HTTP/1.1: event after ${delay} ms`);
      await publishThrough(`${base}/.well-known/mercure`, s, topic, ca);
    } finally {
      s.close();
    }
  });

  it('HTTP/2 over TLS: 10 streams on one connection (a browser allows 6 on HTTP/1.1) all get the event within 1 s', async () => {
    const session = http2.connect(base, { ca, servername: HOST });
    try {
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve());
        session.once('error', reject);
      });
      expect(session.alpnProtocol).toBe('h2');
      const topic = 'https://example.com/nginx/h2';
      const streams = await Promise.all(Array.from({ length: 10 }, () => new Promise<Stream>((resolve, reject) => {
        const req = session.request({
          ':path': `/.well-known/mercure?topic=${encodeURIComponent(topic)}`,
          ':authority': HOST,
          accept: 'text/event-stream',
          'accept-encoding': 'gzip, deflate, br',
        });
        req.on('response', (headers) => {
          const events: Stream['events'] = [];
          collect(req, events);
          resolve({ status: Number(headers[':status']), headers, events, close: () => req.close() });
        });
        req.on('error', reject);
      })));
      for (const s of streams) {
        expect(s.status).toBe(200);
        expect(s.headers['content-encoding']).toBeUndefined();
      }
      const delay = await publishAndTime(hub, streams, topic);
      console.log(`deploy-proxy: nginx HTTP/2, 10 streams on one connection: slowest event after ${delay} ms`);
      for (const s of streams) s.close();
    } finally {
      session.destroy();
    }
  });

  it('the hub sees the scheme and host the browser used (X-Forwarded-Proto/Host, --trust-proxy)', async () => {
    const meta = await getJson(`${base}/.well-known/oauth-protected-resource/.well-known/mercure`, ca);
    expect(meta.resource).toBe(`https://${HOST}/.well-known/mercure`);
  });

  it('per-address limits hold: a client cannot pick its own address with X-Forwarded-For; a client that leaves is released at once', async () => {
    await withLimit(async () => {
      const { statuses, releasedMs } = await pairThrough(`${base}/.well-known/mercure?topic=x`, ca);
      expect(statuses).toEqual([200, 429]);
      // nginx closes the upstream stream as soon as the client goes.
      expect(releasedMs).toBeLessThan(1000);
    });
  });
});

describe.skipIf(noCaddy !== null)('Caddy (deploy/caddy/Caddyfile)', () => {
  let caddy: ReturnType<typeof spawnLogged> | undefined;
  let port: number;
  let base: string;

  beforeAll(async () => {
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    const cdir = join(dir, 'caddy');
    await run('mkdir', ['-p', cdir]);
    const shipped = join(DEPLOY, 'caddy', 'Caddyfile');
    // The file as shipped adapts without an error.
    await run('caddy', ['adapt', '--config', shipped, '--adapter', 'caddyfile'], { env: { ...process.env, HOME: cdir } });
    let file = readFileSync(shipped, 'utf8');
    file = swap(file, /^hub\.example\.com \{$/m, `http://127.0.0.1:${port} {`);
    file = swap(file, 'reverse_proxy @hub 127.0.0.1:3000 {', `reverse_proxy @hub 127.0.0.1:${hubPort} {`);
    file = `{\n\tadmin off\n\tauto_https off\n\tstorage file_system ${cdir}/data\n}\n\n${file}`;
    writeFileSync(join(cdir, 'Caddyfile'), file);
    caddy = spawnLogged('caddy', ['run', '--config', join(cdir, 'Caddyfile'), '--adapter', 'caddyfile'],
      { ...process.env, HOME: cdir, XDG_DATA_HOME: join(cdir, 'data'), XDG_CONFIG_HOME: join(cdir, 'config') });
    await until(async () => {
      try {
        return (await getJson(`${base}/.well-known/oauth-protected-resource/.well-known/mercure`, undefined, `127.0.0.1:${port}`)).resource !== undefined;
      } catch {
        if (caddy!.child.exitCode !== null) throw new Error(`caddy exited: ${caddy!.log()}`);
        return false;
      }
    }, 10_000, 'Caddy to proxy the hub');
  }, 60_000);
  afterAll(() => stopChild(caddy?.child));

  it('HTTP/1.1: an event arrives within 1 s, uncompressed', async () => {
    const topic = 'https://example.com/caddy/h1';
    const s = await subscribe1(`${base}/.well-known/mercure?topic=${encodeURIComponent(topic)}`, { Host: `127.0.0.1:${port}` });
    try {
      expect(s.status).toBe(200);
      expect(s.headers['content-type']).toMatch(/^text\/event-stream/);
      expect(s.headers['content-encoding']).toBeUndefined();
      const delay = await publishAndTime(hub, [s], topic);
      console.log(`deploy-proxy: Caddy HTTP/1.1: event after ${delay} ms`);
      await publishThrough(`${base}/.well-known/mercure`, s, topic, undefined, `127.0.0.1:${port}`);
    } finally {
      s.close();
    }
  });

  it('the hub sees the scheme and host the browser used', async () => {
    const meta = await getJson(`${base}/.well-known/oauth-protected-resource/.well-known/mercure`, undefined, `127.0.0.1:${port}`);
    expect(meta.resource).toBe(`http://127.0.0.1:${port}/.well-known/mercure`);
  });

  it('per-address limits hold: a client cannot pick its own address with X-Forwarded-For; a client that leaves is released at the next heartbeat', async () => {
    await withLimit(async () => {
      const { statuses, releasedMs } = await pairThrough(`${base}/.well-known/mercure?topic=x`, undefined, `127.0.0.1:${port}`);
      expect(statuses).toEqual([200, 429]);
      // Caddy (2.6) keeps the upstream stream open after the client left, until a write to the
      // client fails: the hub sees the departure only after a heartbeat or two (here 1 s apart).
      console.log(`deploy-proxy: Caddy: a departed subscriber released after ${releasedMs} ms (heartbeat 1 s)`);
      expect(releasedMs).toBeLessThan(10_000);
    }, '--heartbeat', '1s');
  });
});

describe('the hub without a proxy', () => {
  it('believes any X-Forwarded-For with --trust-proxy: only the proxy may reach it', async () => {
    await withLimit(async () => {
      expect((await pairThrough(`${hub.url}/.well-known/mercure?topic=x`)).statuses).toEqual([200, 200]);
    });
  });
});
