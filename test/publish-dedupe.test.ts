/**
 * The dedupe window (issue 14), on every transport: a publish whose id was stored within the
 * window is answered 200 with that id and stored (and delivered) once, also when both arrive at
 * once; window 0 stores it again (the reference hub's behaviour); past the window it is stored
 * again. Plus the 503 wording, and the Publisher naming its updates so its retries are safe.
 * Redis, PostgreSQL and NATS run when reachable on their default ports (always under CI).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Publisher } from '../src/client/publisher.js';
import { TransportUnavailableError, type Transport } from '../src/core/transport.js';
import { createUpdate, type StoredUpdate } from '../src/core/update.js';
import { createLogger } from '../src/observability/logger.js';
import { ClusterPrimaryRelay, ClusterWorkerTransport } from '../src/transports/cluster/index.js';
import { portPair } from './fake-ipc.js';
import { createTransport } from '../src/transports/index.js';
import { MemoryTransport } from '../src/transports/memory.js';
import { legacyToken, publish, sleep, SseClient, startHub, type TestHub } from './helpers.js';
import { portOpen } from './process-helpers.js';

const HOST = '127.0.0.1';
const silent = createLogger('silent');
const RUN = randomBytes(4).toString('hex');
let serial = 0;
const dir = mkdtempSync(path.join(os.tmpdir(), 'qs-dedupe-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));



type Factory = (window: number) => Promise<{ transport: Transport; reopen?: () => Promise<Transport> }>;

const windowParam = (w: number) => `dedupe_window=${w}ms`;
const FACTORIES: Array<{ name: string; port?: number; make: Factory }> = [
  { name: 'memory', make: async (w) => ({ transport: await createTransport(`memory://?${windowParam(w)}`, silent) }) },
  {
    name: 'lmdb',
    make: async (w) => {
      const url = `lmdb://${path.join(dir, `s${++serial}.lmdb`)}?${windowParam(w)}`;
      return { transport: await createTransport(url, silent), reopen: () => createTransport(url, silent) };
    },
  },
  {
    name: 'cluster',
    make: async (w) => {
      const relay = new ClusterPrimaryRelay(new MemoryTransport({ dedupeWindow: w }), { statusInterval: 20 });
      const [a, b] = portPair();
      relay.attach(a);
      await relay.start();
      const worker = new ClusterWorkerTransport({ port: b, timeout: 2000 });
      const close = worker.close.bind(worker);
      worker.close = async () => {
        await close();
        await relay.close();
      };
      return { transport: worker };
    },
  },
  { name: 'redis', port: 6379, make: async (w) => ({ transport: await createTransport(`redis://${HOST}:6379?stream=qs-dedupe-${RUN}-${++serial}&${windowParam(w)}`, silent) }) },
  {
    name: 'postgres',
    port: 5432,
    make: async (w) => ({ transport: await createTransport(`postgres://postgres@${HOST}:5432/test?table=qs_dedupe_${RUN}_${++serial}&${windowParam(w)}`, silent) }),
  },
  {
    name: 'nats',
    port: 4222,
    make: async (w) => ({ transport: await createTransport(`nats://${HOST}:4222?stream=QS_DEDUPE_${RUN}_${++serial}&subject=qs.dedupe.${RUN}.${serial}&${windowParam(w)}`, silent) }),
  },
];

const TOPIC = 'https://example.com/dedupe';
const u = (id: string) => createUpdate({ topics: [TOPIC], id, data: `data ${id}` });

async function started(t: Transport): Promise<StoredUpdate[]> {
  const got: StoredUpdate[] = [];
  await t.start((x) => got.push(x));
  return got;
}

async function stored(t: Transport, id: string): Promise<number> {
  const ids: string[] = [];
  await t.history('earliest', (x) => ids.push(x.id));
  return ids.filter((x) => x === id).length;
}

for (const f of FACTORIES) {
  const up = f.port === undefined || (await portOpen(f.port));
  if (!up && !process.env.CI) console.warn(`${f.name} not reachable on ${HOST}:${f.port}: skipping its dedupe tests`);
  describe.runIf(!up && !!process.env.CI)(`dedupe window, ${f.name}, in CI`, () => {
    it(`requires ${f.name} on ${HOST}:${f.port}`, () => {
      throw new Error(`${f.name} not reachable and CI is set`);
    });
  });
  describe.skipIf(!up)(`dedupe window, ${f.name}`, () => {
    const open: Array<Transport | TestHub> = [];
    afterAll(async () => {
      for (const x of open) await x.close().catch(() => {});
    });

    it('answers 200 with the same id twice and stores and delivers the update once', async () => {
      const { transport } = await f.make(120_000);
      const hub = await startHub({ anonymous: true, transport });
      open.push(hub);
      const sub = await SseClient.connect(`${hub.hubUrl}?topic=${encodeURIComponent(TOPIC)}`);
      try {
        const token = await legacyToken({ publish: ['*'] });
        const first = await publish(hub.hubUrl, { topic: TOPIC, id: 'same', data: 'one' }, token);
        const again = await publish(hub.hubUrl, { topic: TOPIC, id: 'same', data: 'one, retried' }, token);
        const next = await publish(hub.hubUrl, { topic: TOPIC, id: 'next' }, token);
        expect([first.status, first.body, again.status, again.body, next.status]).toEqual([200, 'same', 200, 'same', 200]);
        // The window the 503 wording quotes (a cluster worker learns its primary's when it starts).
        expect(transport.dedupeWindow).toBe(120_000);
        await sub.until(() => sub.events.some((e) => e.id === 'next'), 5000, 'the next update');
        await sleep(100);
        expect(sub.events.map((e) => [e.id, e.data])).toEqual([['same', 'one'], ['next', '']]);
        expect(await stored(transport, 'same')).toBe(1);
      } finally {
        sub.close();
      }
    });

    it('stores an update once when the same id is dispatched concurrently', async () => {
      const { transport } = await f.make(120_000);
      open.push(transport);
      const got = await started(transport);
      const results = await Promise.all([transport.dispatch(u('race')), transport.dispatch(u('race')), transport.dispatch(u('race'))]);
      await transport.dispatch(u('after-race'));
      await sleep(300);
      expect(results.filter((r) => r === 'duplicate')).toHaveLength(2);
      expect(got.filter((x) => x.id === 'race')).toHaveLength(1);
      expect(await stored(transport, 'race')).toBe(1);
    });

    it('stores a reused id again with window 0 (the reference hub) and after the window', async () => {
      const off = (await f.make(0)).transport;
      open.push(off);
      await started(off);
      expect(await off.dispatch(u('twice'))).toBeUndefined();
      expect(await off.dispatch(u('twice'))).toBeUndefined();
      expect(await stored(off, 'twice')).toBe(2);

      const short = (await f.make(400)).transport;
      open.push(short);
      await started(short);
      await short.dispatch(u('expires'));
      expect(await short.dispatch(u('expires'))).toBe('duplicate');
      await sleep(600);
      expect(await short.dispatch(u('expires'))).toBeUndefined();
      expect(await stored(short, 'expires')).toBe(2);
    });

    if (f.name === 'lmdb') {
      it('remembers stored ids across a restart', async () => {
        const { transport, reopen } = await f.make(120_000);
        await started(transport);
        await transport.dispatch(u('before-restart'));
        await transport.close();
        const again = await reopen!();
        open.push(again);
        await started(again);
        expect(await again.dispatch(u('before-restart'))).toBe('duplicate');
        expect(await stored(again, 'before-restart')).toBe(1);
      });
    }
  });
}

describe('503 wording', () => {
  /** A transport whose dispatch fails the way a backend would. */
  const failing = (stored: 'no' | 'unknown'): Transport => {
    const t = new MemoryTransport();
    t.dispatch = async () => {
      throw new TransportUnavailableError('the backend is away', { stored });
    };
    return t;
  };

  it('says "not stored" when it is certain, and names the id (also the hub\'s own) when the outcome is unknown', async () => {
    const token = await legacyToken({ publish: ['*'] });
    const no = await startHub({ transport: failing('no') });
    const unknown = await startHub({ transport: failing('unknown') });
    try {
      const a = await publish(no.hubUrl, { topic: TOPIC, id: 'x' }, token);
      expect(a.status).toBe(503);
      expect(a.headers.get('retry-after')).toBe('1');
      expect(a.body).toMatch(/the update was not stored: retry later/);
      const b = await publish(unknown.hubUrl, { topic: TOPIC }, token);
      expect(b.status).toBe(503);
      expect(b.body).toMatch(/outcome unknown, it may have been stored: retry with the same id is safe \(id: "urn:uuid:[0-9a-f-]{36}"\)/);
      expect(b.body).not.toMatch(/the update was not stored/);
    } finally {
      await no.close();
      await unknown.close();
    }
  });
});

describe('Publisher', () => {
  it('names an update it may retry, so a retry after a lost answer is stored once', async () => {
    const hub = await startHub({ anonymous: true, transport: new MemoryTransport() });
    const sub = await SseClient.connect(`${hub.hubUrl}?topic=${encodeURIComponent(TOPIC)}`);
    try {
      const bodies: string[] = [];
      let attempts = 0;
      // The hub gets the first attempt and answers, but the answer is lost on the way back.
      const lossy: typeof fetch = async (input, init) => {
        bodies.push(String(init?.body));
        const res = await fetch(input, init);
        if (++attempts === 1) {
          await res.text();
          throw new TypeError('fetch failed', { cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }) });
        }
        return res;
      };
      const publisher = new Publisher({ hubUrl: hub.hubUrl, token: await legacyToken({ publish: ['*'] }), fetch: lossy, retryDelay: 1 });
      const id = await publisher.publish({ topics: TOPIC, data: 'once' });
      expect(id).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
      expect(attempts).toBe(2);
      expect(new Set(bodies).size).toBe(1);
      await sleep(200);
      expect(sub.events.map((e) => e.id)).toEqual([id]);

      const noRetry = new Publisher({ hubUrl: hub.hubUrl, token: await legacyToken({ publish: ['*'] }), retries: 0, fetch: async (i, init) => {
        bodies.push(String(init?.body));
        return fetch(i, init);
      } });
      await noRetry.publish({ topics: TOPIC, data: 'hub names it' });
      expect(new URLSearchParams(bodies.at(-1)).has('id')).toBe(false);
    } finally {
      sub.close();
      await hub.close();
    }
  });
});
