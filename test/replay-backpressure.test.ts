/**
 * Issue 10, 0.2: a reconnection that must replay more than the subscriber buffer (~1,200 events)
 * was reset before its first byte, cut as a slow subscriber, so a client that fell that far
 * behind failed on every retry. A replay streams under backpressure; the slow-subscriber cut
 * is for live updates a subscriber does not read. 100,000 missed updates, memory and LMDB, a
 * client that reads nothing at first and then reads slowly, and a live update published
 * meanwhile that must come after the whole replay.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LmdbTransport } from '../src/transports/lmdb.js';
import { MemoryTransport } from '../src/transports/memory.js';
import type { Transport } from '../src/core/transport.js';
import { legacyToken, sleep, startHub, SUB_KEY } from './helpers.js';

const MISSED = 100_000;
const TOPIC = 'https://example.com/backlog';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Reads a stream through a socket that reads nothing for `pauseMs`, then slowly, then freely. */
function slowReader(port: number, request: string, pauseMs: number): { done: (marker: string, timeout: number) => Promise<string>; socket: net.Socket } {
  const socket = net.connect(port, '127.0.0.1');
  const parts: Buffer[] = [];
  let reads = 0;
  socket.on('error', () => {});
  socket.write(request);
  socket.pause();
  setTimeout(() => {
    socket.on('data', (d: Buffer) => {
      parts.push(d);
      // The first reads come with pauses: the hub must wait, not give up.
      if (++reads <= 10) {
        socket.pause();
        setTimeout(() => socket.resume(), 50);
      }
    });
    socket.resume();
  }, pauseMs);
  return {
    socket,
    done: async (marker, timeout) => {
      const deadline = Date.now() + timeout;
      let tail = '';
      let seen = 0;
      while (Date.now() < deadline && !socket.destroyed) {
        while (seen < parts.length) tail = (tail + parts[seen++]!.toString('latin1')).slice(-200);
        if (tail.includes(marker)) break;
        await sleep(20);
      }
      socket.destroy();
      return Buffer.concat(parts).toString('utf8');
    },
  };
}

describe.each<[string, () => Transport]>([
  ['memory', () => new MemoryTransport({ size: MISSED + 10 })],
  [
    'lmdb',
    () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'qs-replay-bp-'));
      dirs.push(dir);
      return new LmdbTransport({ path: path.join(dir, 'hub.lmdb'), size: MISSED + 10 });
    },
  ],
])('a replay of %s history larger than the subscriber buffer', (_name, transport) => {
  it(`streams ${MISSED} missed updates to a client that reads slowly at first, then the live ones`, async () => {
    const hub = await startHub({ transport: transport(), subscriberBufferSize: 1000, dispatchTimeout: 5000 });
    try {
      const port = Number(new URL(hub.url).port);
      const token = await legacyToken({ subscribe: ['*'] }, SUB_KEY);
      await hub.hub.publish({ topics: [TOPIC], id: 'start', data: 'before' });
      const data = 'x'.repeat(40);
      for (let i = 0; i < MISSED; i += 2000) {
        const batch: Array<Promise<unknown>> = [];
        for (let j = i; j < Math.min(MISSED, i + 2000); j++) batch.push(hub.hub.publish({ topics: [TOPIC], id: `u${j}`, data }));
        await Promise.all(batch);
      }

      const paths = [
        // Raw-socket path, then node:http (a GET with a body goes there).
        `GET /.well-known/mercure?topic=${encodeURIComponent(TOPIC)}&lastEventID=start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`,
        `GET /.well-known/mercure?topic=${encodeURIComponent(TOPIC)}&lastEventID=start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: 1\r\n\r\nx`,
      ];
      for (const [n, request] of paths.entries()) {
        const reader = slowReader(port, request, 1500);
        // Published while the replay is held up by the client: it must follow the replay.
        await sleep(300);
        await hub.hub.publish({ topics: [TOPIC], id: `live-${n}`, data: 'live' });
        const text = await reader.done(`id: live-${n}\n`, 30_000);
        expect(text.slice(0, 200)).toMatch(/^HTTP\/1\.1 200 /);
        const ids = [...text.matchAll(/^id: (.*)$/gm)].map((m) => m[1]);
        // The earlier runs' live updates are history now.
        const live = Array.from({ length: n + 1 }, (_, k) => `live-${k}`);
        expect(ids.length, text.slice(-300)).toBe(MISSED + live.length);
        expect(ids[0]).toBe('u0');
        expect(ids[MISSED - 1]).toBe(`u${MISSED - 1}`);
        expect(ids.slice(MISSED)).toEqual(live);
        // In order, none missing, none twice.
        for (let i = 0; i < MISSED; i += 9973) expect(ids[i]).toBe(`u${i}`);
      }
    } finally {
      await hub.close();
    }
  }, 120_000);
});
