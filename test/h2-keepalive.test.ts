/**
 * HTTP/2 PINGs on silent sessions (server/h2-keepalive.ts), in process and without privileges:
 * a peer that never acknowledges (a raw socket speaking just enough HTTP/2 to hold a session) is
 * cut after interval + timeout, while a real node:http2 client, which acknowledges by itself, stays
 * connected. The silent drop itself, with vanished links, is presence-h2-drop.test.ts. Also the
 * settings that configure it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import { createHub, serve } from '../src/index.js';
import { createLogger } from '../src/observability/logger.js';
import { KEY, sleep } from './helpers.js';

const silent = createLogger('silent');
const INTERVAL = 200;
const TIMEOUT = 150;

function frame(type: number, flags: number, stream: number, payload = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

let certDir: string;
beforeAll(() => {
  certDir = mkdtempSync(join(tmpdir(), 'qs-h2ka-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-keyout', join(certDir, 'key.pem'), '-out', join(certDir, 'cert.pem')], { stdio: 'ignore' });
});
afterAll(() => rmSync(certDir, { recursive: true, force: true }));

/**
 * A raw peer that opens an HTTP/2 session (preface, SETTINGS, SETTINGS ack; over TLS with ALPN h2
 * when `secure`) and then says nothing.
 */
function mutePeer(port: number, secure: boolean): Promise<{ pings: number[]; closedAt: Promise<number>; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = secure
      ? tls.connect({ port, host: '127.0.0.1', ALPNProtocols: ['h2'], rejectUnauthorized: false })
      : net.connect(port, '127.0.0.1');
    const pings: number[] = [];
    let buf = Buffer.alloc(0);
    let settingsAcked = false;
    const closedAt = new Promise<number>((r) => socket.once('close', () => r(performance.now())));
    socket.on('error', () => {});
    socket.once('error', reject);
    socket.on(secure ? 'secureConnect' : 'connect', () => {
      socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(0x4, 0, 0)]));
      resolve({ pings, closedAt, socket });
    });
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3];
        const flags = buf[4]!;
        buf = buf.subarray(9 + len);
        // The server's SETTINGS are acknowledged (else it would close for a settings timeout), its PINGs never.
        if (type === 0x4 && !(flags & 0x1) && !settingsAcked) {
          settingsAcked = true;
          socket.write(frame(0x4, 0x1, 0));
        }
        if (type === 0x6 && !(flags & 0x1)) pings.push(performance.now());
      }
    });
  });
}

describe('HTTP/2 PINGs on silent sessions', () => {
  it.each([['h2c', false], ['TLS', true]])('closes a session whose PING is not acknowledged, within interval + timeout (%s)', async (_, secure) => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const listen = secure ? { certFile: join(certDir, 'cert.pem'), keyFile: join(certDir, 'key.pem') } : { h2c: true };
    const server = await serve(hub, { addr: '127.0.0.1:0', ...listen, h2PingInterval: INTERVAL, h2PingTimeout: TIMEOUT, shutdownTimeout: 500 });
    try {
      const t0 = performance.now();
      const peer = await mutePeer(server.address.port, secure);
      const closed = await Promise.race([peer.closedAt, sleep(5000).then(() => null)]);
      expect(closed, 'the hub never closed the mute session').not.toBeNull();
      expect(peer.pings.length).toBe(1);
      // Silent from its handshake on: pinged at the first or second tick, cut TIMEOUT later.
      expect(peer.pings[0]! - t0).toBeGreaterThanOrEqual(INTERVAL - 20);
      expect(peer.pings[0]! - t0).toBeLessThanOrEqual(2 * INTERVAL + 100);
      expect(closed! - peer.pings[0]!).toBeGreaterThanOrEqual(TIMEOUT - 20);
      expect(closed! - peer.pings[0]!).toBeLessThanOrEqual(TIMEOUT + 150);
    } finally {
      await server.close();
    }
  });

  it('keeps an idle session whose PINGs are answered, with its event stream (h2c)', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent, heartbeat: 0 });
    const server = await serve(hub, { addr: '127.0.0.1:0', h2c: true, h2PingInterval: INTERVAL, h2PingTimeout: TIMEOUT, shutdownTimeout: 500 });
    const session = http2.connect(server.url);
    try {
      let pings = 0;
      session.on('ping', () => pings++);
      const stream = session.request({ ':path': '/.well-known/mercure?topic=idle' });
      const status = await new Promise<number>((r) => stream.once('response', (h) => r(Number(h[':status']))));
      expect(status).toBe(200);
      let ended = false;
      stream.on('close', () => (ended = true));
      await sleep(8 * INTERVAL);
      expect(pings).toBeGreaterThanOrEqual(6);
      expect(ended).toBe(false);
      expect(session.closed || session.destroyed).toBe(false);
    } finally {
      session.destroy();
      await server.close();
    }
  });

  it('sends no PING with the interval at 0', async () => {
    const hub = createHub({ publisher: { key: KEY }, anonymous: true, logger: silent });
    const server = await serve(hub, { addr: '127.0.0.1:0', h2c: true, h2PingInterval: 0, shutdownTimeout: 500 });
    try {
      const peer = await mutePeer(server.address.port, false);
      await sleep(600);
      expect(peer.pings).toEqual([]);
      expect(peer.socket.destroyed).toBe(false);
      peer.socket.destroy();
    } finally {
      await server.close();
    }
  });
});

describe('h2_ping_interval / h2_ping_timeout settings', () => {
  const base = { JWT_KEY: 'k'.repeat(32) };
  it('reads the flags and the directives as durations; unset means the server default', () => {
    const flags = loadConfig({ env: base, argv: ['--h2-ping-interval', '45s', '--h2-ping-timeout', '5s'] });
    expect(flags.ok && flags.config.server).toMatchObject({ h2PingInterval: 45_000, h2PingTimeout: 5_000 });
    const directives = loadConfig({ env: { ...base, MERCURE_EXTRA_DIRECTIVES: 'h2_ping_interval 0\nh2_ping_timeout 2s' }, argv: [] });
    expect(directives.ok && directives.config.server).toMatchObject({ h2PingInterval: 0, h2PingTimeout: 2_000 });
    const none = loadConfig({ env: base, argv: [] });
    expect(none.ok && 'h2PingInterval' in none.config.server).toBe(false);
  });

  it('refuses an ack timeout of 0', () => {
    const r = loadConfig({ env: base, argv: ['--h2-ping-timeout', '0s'] });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.errors.join('\n')).toMatch(/--h2-ping-timeout: must be longer than 0/);
  });
});
