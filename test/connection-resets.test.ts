/**
 * Peers that reset their connection (RST, ECONNRESET on the hub's side) at every stage of a
 * request must never take the hub down. Found in CI: a browser closing right after a refused
 * subscription made the raw-socket path emit an 'error' nobody listened for, which killed the
 * process. Each case below runs against a real hub process and then checks that it still serves.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyToken, sleep } from './helpers.js';
import { startHubProcess, type HubProcess } from './process-helpers.js';

const KEY = 'connection-resets-test-key-of-32-bytes!!';

describe('connection resets', () => {
  let hub: HubProcess;
  let port: number;

  beforeAll(async () => {
    hub = await startHubProcess(['--addr', '127.0.0.1:0', '--transport-url', 'memory://', '--heartbeat', '100ms'], {
      MERCURE_PUBLISHER_JWT_KEY: KEY,
      MERCURE_SUBSCRIBER_JWT_KEY: KEY,
    });
    port = Number(new URL(hub.url).port);
  });
  afterAll(async () => {
    await hub?.stop();
  });

  /**
   * Sends `request` and resets the connection the moment `until` holds for what came back (in the
   * same tick, while the hub may still be writing), or after a short while.
   */
  async function sendThenReset(request: string, until: (received: string) => boolean = () => true): Promise<string> {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.setEncoding('latin1');
    socket.on('error', () => {});
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        socket.resetAndDestroy();
        resolve();
      }, 2000);
      socket.on('data', (d: string) => {
        received += d;
        if (!socket.destroyed && until(received)) {
          clearTimeout(timer);
          socket.resetAndDestroy();
          resolve();
        }
      });
      socket.write(request);
      if (until(received)) {
        clearTimeout(timer);
        socket.resetAndDestroy();
        resolve();
      }
    });
    return received;
  }

  async function stillServing(): Promise<void> {
    // Give a crash the time to happen.
    await sleep(150);
    expect(hub.child.exitCode, hub.output()).toBeNull();
    const res = await fetch(`${hub.url}/healthz`);
    expect(res.status).toBe(200);
  }

  const topic = encodeURIComponent('https://example.com/books/1');

  it('survives a reset after a refused (401) subscription', async () => {
    for (let i = 0; i < 5; i++) {
      const got = await sendThenReset(`GET /.well-known/mercure?topic=${topic} HTTP/1.1\r\nHost: x\r\n\r\n`, (r) => r.includes('\r\n\r\n'));
      expect(got).toMatch(/^HTTP\/1\.1 401 /);
    }
    await stillServing();
  });

  it('survives a reset after a 400 subscription and in the middle of a request head', async () => {
    const got = await sendThenReset('GET /.well-known/mercure HTTP/1.1\r\nHost: x\r\n\r\n', (r) => r.includes('\r\n\r\n'));
    expect(got).toMatch(/^HTTP\/1\.1 400 /);
    await sendThenReset(`GET /.well-known/mercure?topic=${topic} HTTP/1.1\r\nHost: x\r\nAuthoriz`);
    await stillServing();
  });

  it('survives a reset of an open stream, and of a stream still waiting for its token check', async () => {
    const token = await legacyToken({ subscribe: ['*'] }, KEY);
    const got = await sendThenReset(
      `GET /.well-known/mercure?topic=${topic} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`,
      (r) => r.includes(':\n'),
    );
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    // Reset at once: the hub is still verifying the token when the RST arrives.
    await sendThenReset(`GET /.well-known/mercure?topic=${topic} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`, () => true);
    await stillServing();
  });

  it('survives a reset in the middle of a publish body and after a refused publish', async () => {
    const token = await legacyToken({ publish: ['*'] }, KEY);
    await sendThenReset(
      `POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntopic=a&data=`,
    );
    const got = await sendThenReset(
      'POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntopic=a',
      (r) => r.includes('\r\n\r\n'),
    );
    expect(got).toMatch(/^HTTP\/1\.1 401 /);
    await stillServing();
  });
});
