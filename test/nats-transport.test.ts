import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, nanos } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/observability/logger.js';
import { TransportUnavailableError, type SubscriptionRecord } from '../src/core/transport.js';
import { NatsTransport, natsTransportFromUrl, type NatsTransportOptions } from '../src/transports/nats/index.js';
import { createUpdate, type StoredUpdate } from '../src/core/update.js';
import { transportConformance } from './transport-conformance.js';

const HOST = '127.0.0.1';
const PORT = 4222;
const SERVER = `${HOST}:${PORT}`;
const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';

function reachable(host: string, port: number, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(ms, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const available = await reachable(HOST, PORT);
if (!available) {
  if (process.env.CI) throw new Error(`NATS not reachable on ${SERVER}: the NATS transport tests must run in CI`);
  console.warn(`NATS not reachable on ${SERVER}: skipping NATS transport tests`);
}

const logger = createLogger(process.env.TEST_LOG ? 'debug' : 'silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (cond: () => boolean, ms = 5000, what = 'condition') => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await sleep(10);
  }
};
const upd = (id: string, topic = 'https://example.com/t') => createUpdate({ topics: [topic], id, data: `data ${id}` });

// Every stream (and presence bucket) made on the shared server, deleted at the end.
const streams = new Set<string>();
const uniqueStream = (prefix: string) => {
  const name = `QS_${prefix}_${Math.random().toString(36).slice(2, 10)}`;
  streams.add(name);
  return name;
};
const onShared = (stream: string, extra: NatsTransportOptions = {}) =>
  new NatsTransport({ servers: SERVER, stream, subject: `qs.${stream.toLowerCase()}`, logger, ...extra });

afterAll(async () => {
  if (!available || streams.size === 0) return;
  const nc = await connect({ servers: SERVER });
  const jsm = await nc.jetstreamManager();
  for (const s of streams) {
    for (const name of [s, `KV_${s}_presence_nodes`, `KV_${s}_presence_subs`]) {
      await jsm.streams.delete(name).catch(() => {});
    }
  }
  await nc.close();
});

let lastStream = '';
transportConformance(
  'nats',
  async (o) => {
    lastStream = uniqueStream('conf');
    return onShared(lastStream, { size: o?.size ?? 1000 });
  },
  { reopen: async () => onShared(lastStream, { size: 1000 }), skip: !available },
);

describe.skipIf(!available)('nats transport', () => {
  const open: NatsTransport[] = [];
  afterAll(async () => {
    for (const t of open.splice(0)) await t.close().catch(() => {});
  });
  const started = async (t: NatsTransport): Promise<StoredUpdate[]> => {
    open.push(t);
    const got: StoredUpdate[] = [];
    await t.start((u) => got.push(u));
    return got;
  };
  const ids = (us: readonly StoredUpdate[]) => us.map((u) => u.id);
  const increasing = (us: readonly StoredUpdate[]) => us.every((u, i) => i === 0 || u.seq > us[i - 1]!.seq);

  it('builds the stream from a nats:// URL', async () => {
    const stream = uniqueStream('url');
    const t = natsTransportFromUrl(
      new URL(`nats://${SERVER}?stream=${stream}&subject=qs.url.${stream.toLowerCase()}&size=123&max_age=1h&replicas=1`),
      logger,
    );
    await started(t);
    expect(t.health()).toEqual({ ready: true });
    const nc = await connect({ servers: SERVER });
    const info = await (await nc.jetstreamManager()).streams.info(stream);
    await nc.close();
    expect(info.config).toMatchObject({
      subjects: [`qs.url.${stream.toLowerCase()}.>`],
      max_msgs: 123,
      max_age: nanos(3_600_000),
      discard: 'old',
      storage: 'file',
      num_replicas: 1,
    });
    expect(() => natsTransportFromUrl(new URL('nats://h?max_age=soon'), logger)).toThrow(/max_age/);
    expect(() => natsTransportFromUrl(new URL('nats://h?size=-1'), logger)).toThrow(/size/);
    expect(() => natsTransportFromUrl(new URL('nats://h?stream=a.b'), logger)).toThrow(/stream/);
  });

  it('fans out every update of either node to both, once and in the same order', async () => {
    const stream = uniqueStream('two');
    const a = onShared(stream);
    const b = onShared(stream);
    const gotA = await started(a);
    const gotB = await started(b);

    const sequential = Array.from({ length: 40 }, (_, i) => `s-${i}`);
    for (const [i, id] of sequential.entries()) await (i % 2 ? b : a).dispatch(upd(id));
    await waitFor(() => gotA.length >= 40 && gotB.length >= 40, 5000, 'sequential deliveries');
    expect(ids(gotA)).toEqual(sequential);
    expect(ids(gotB)).toEqual(sequential);

    const concurrent = Array.from({ length: 500 }, (_, i) => `c-${i}`);
    await Promise.all(concurrent.map((id, i) => (i % 2 ? b : a).dispatch(upd(id))));
    await waitFor(() => gotA.length >= 540 && gotB.length >= 540, 10_000, 'concurrent deliveries');
    await sleep(100);
    expect(gotA).toHaveLength(540);
    expect(gotB).toHaveLength(540);
    expect(ids(gotB)).toEqual(ids(gotA));
    expect(gotB.map((u) => u.seq)).toEqual(gotA.map((u) => u.seq));
    expect(increasing(gotA)).toBe(true);
    expect(new Set(ids(gotA)).size).toBe(540);
    expect(new Set(ids(gotA.slice(40)))).toEqual(new Set(concurrent));

    // History from either node, from an id or the start, matches the live order.
    for (const t of [a, b]) {
      const after: StoredUpdate[] = [];
      expect(await t.history(gotA[99]!.id, (u) => after.push(u))).toEqual({ found: true });
      expect(ids(after)).toEqual(ids(gotA.slice(100)));
      expect(after.map((u) => u.seq)).toEqual(gotA.slice(100).map((u) => u.seq));
      const near: string[] = [];
      await t.history(gotA[530]!.id, (u) => near.push(u.id));
      expect(near).toEqual(ids(gotA.slice(531)));
      const all: string[] = [];
      await t.history('earliest', (u) => all.push(u.id));
      expect(all).toEqual(ids(gotA));
      expect(await t.lastEventId()).toBe(gotA[539]!.id);
    }
    // A node started later delivers only what is dispatched after its start.
    const c = onShared(stream);
    const gotC = await started(c);
    await a.dispatch(upd('late'));
    await waitFor(() => gotC.length >= 1 && gotB.length >= 541);
    expect(ids(gotC)).toEqual(['late']);
    expect(gotC[0]!.seq).toBe(gotB[540]!.seq);
  });

  it('shares presence across nodes and forgets a dead node after the TTL', async () => {
    const stream = uniqueStream('presence');
    const proxy = await tcpProxy(PORT);
    const ttl = 1500;
    const a = onShared(stream, { presenceTtl: ttl });
    const b = onShared(stream, { presenceTtl: ttl });
    const c = new NatsTransport({
      servers: `${HOST}:${proxy.port}`,
      stream,
      subject: `qs.${stream.toLowerCase()}`,
      presenceTtl: ttl,
      logger,
    });
    await started(a);
    await started(b);
    await started(c);
    const rec = (subscriber: string, match: string, payload?: unknown): SubscriptionRecord =>
      payload === undefined ? { subscriber, kind: 'exact', match } : { subscriber, kind: 'exact', match, payload };
    const r1 = rec('urn:uuid:1', 'https://example.com/a', { user: 'one' });
    const r2 = rec('urn:uuid:2', 'https://example.com/b');
    const r3 = { subscriber: 'urn:uuid:2', kind: 'selector', match: '{+any}' } as const;
    const r4 = rec('urn:uuid:4', 'https://example.com/d');
    const sorted = (rs: SubscriptionRecord[]) =>
      [...rs].sort((x, y) => `${x.subscriber} ${x.match}`.localeCompare(`${y.subscriber} ${y.match}`));

    await a.addSubscriptions([r1]);
    await b.addSubscriptions([r2, r3]);
    await c.addSubscriptions([r4]);
    for (const t of [a, b, c]) expect(sorted(await t.listSubscriptions())).toEqual(sorted([r1, r2, r3, r4]));

    await b.removeSubscriptions([r3]);
    expect(sorted(await a.listSubscriptions())).toEqual(sorted([r1, r2, r4]));

    // c loses NATS for good (as if killed): its records vanish once its heartbeat expires,
    // while the live nodes keep theirs well past the TTL.
    proxy.kill();
    await waitFor(() => !c.health().ready, 3000, 'c not ready');
    const t0 = Date.now();
    for (;;) {
      const list = await a.listSubscriptions();
      if (!list.some((r) => r.subscriber === r4.subscriber)) break;
      if (Date.now() - t0 > ttl + 3000) throw new Error('dead node records still listed');
      await sleep(100);
    }
    await sleep(ttl);
    expect(sorted(await b.listSubscriptions())).toEqual(sorted([r1, r2]));

    // A clean close removes a node's records at once.
    await b.close();
    expect(await a.listSubscriptions()).toEqual([r1]);
    const t1 = Date.now();
    await c.close();
    expect(Date.now() - t1).toBeLessThan(3000);
  });

  it('catches up after a partition: missed updates delivered once, in order', async () => {
    const stream = uniqueStream('partition');
    const proxy = await tcpProxy(PORT);
    const a = onShared(stream);
    const c = new NatsTransport({ servers: `${HOST}:${proxy.port}`, stream, subject: `qs.${stream.toLowerCase()}`, logger });
    const gotA = await started(a);
    const gotC = await started(c);
    for (let i = 0; i < 10; i++) await a.dispatch(upd(`p-${i}`));
    await waitFor(() => gotC.length >= 10, 5000, 'deliveries before the cut');

    proxy.kill();
    await waitFor(() => !c.health().ready, 3000, 'c not ready');
    const t0 = Date.now();
    await expect(c.dispatch(upd('refused'))).rejects.toBeInstanceOf(TransportUnavailableError);
    expect(Date.now() - t0).toBeLessThan(100);
    await Promise.all(Array.from({ length: 50 }, (_, i) => a.dispatch(upd(`q-${i}`))));

    await proxy.restore();
    await waitFor(() => c.health().ready, 10_000, 'c ready again');
    for (let i = 0; i < 10; i++) await c.dispatch(upd(`r-${i}`));
    await waitFor(() => gotA.length >= 70 && gotC.length >= 70, 10_000, 'catch-up');
    await sleep(100);
    expect(gotC).toHaveLength(70);
    expect(ids(gotC)).toEqual(ids(gotA));
    expect(gotC.map((u) => u.seq)).toEqual(gotA.map((u) => u.seq));
    expect(ids(gotC).slice(-10)).toEqual(Array.from({ length: 10 }, (_, i) => `r-${i}`));
    await c.close();
    proxy.kill();
  });

  it('recreates a stream deleted under it and keeps seq increasing on every node', async () => {
    const stream = uniqueStream('deleted');
    const a = onShared(stream);
    const b = onShared(stream);
    const gotA = await started(a);
    const gotB = await started(b);
    for (let i = 0; i < 5; i++) await a.dispatch(upd(`x-${i}`));
    await waitFor(() => gotB.length >= 5);
    const nc = await connect({ servers: SERVER });
    await (await nc.jetstreamManager()).streams.delete(stream);
    await nc.close();
    // The first publish finds no stream, answers unavailable and has it set up again.
    const sent: string[] = [];
    for (let i = 0; sent.length < 5; i++) {
      if (i > 200) throw new Error('publishing never recovered');
      try {
        await a.dispatch(upd(`y-${i}`));
        sent.push(`y-${i}`);
      } catch (err) {
        expect(err).toBeInstanceOf(TransportUnavailableError);
        await sleep(20);
      }
    }
    await waitFor(() => gotA.length >= 10 && gotB.length >= 10, 10_000, 'deliveries on the new stream');
    for (const got of [gotA, gotB]) {
      expect(ids(got)).toEqual([...Array.from({ length: 5 }, (_, i) => `x-${i}`), ...sent]);
      expect(increasing(got)).toBe(true);
    }
  });

  it('refuses to start when another stream captures its subjects', async () => {
    const first = uniqueStream('overlap');
    await started(onShared(first));
    const other = uniqueStream('overlap');
    const t = new NatsTransport({ servers: SERVER, stream: other, subject: `qs.${first.toLowerCase()}`, logger });
    open.push(t);
    await expect(t.start(() => {})).rejects.toThrow(/overlap/i);
    expect(t.health().ready).toBe(false);
  });

  it('answers unavailable fast when NATS cannot be reached', async () => {
    const t = new NatsTransport({ servers: '127.0.0.1:1', stream: 'QS_UNREACHABLE', logger });
    open.push(t);
    const t0 = Date.now();
    await t.start(() => {});
    expect(Date.now() - t0).toBeLessThan(3000);
    const h = t.health();
    expect(h.ready).toBe(false);
    expect(h.reason).toMatch(/127\.0\.0\.1:1/);
    const t1 = Date.now();
    const err = await t.dispatch(upd('x')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportUnavailableError);
    expect((err as Error).message).toMatch(/NATS/);
    expect(Date.now() - t1).toBeLessThan(2500);
    await expect(t.history('earliest', () => {})).rejects.toBeInstanceOf(TransportUnavailableError);
    await expect(t.lastEventId()).rejects.toBeInstanceOf(TransportUnavailableError);
    await t.close();
    expect(t.health()).toEqual({ ready: false, reason: 'transport closed' });
  });

  // Needs its own nats-server to kill: skipped without the binary, except in CI.
  it.skipIf(!existsSync(NATS_SERVER_BIN) && !process.env.CI)(
    'survives a NATS restart: acknowledged updates kept, delivery resumes exactly once',
    async () => {
      if (!existsSync(NATS_SERVER_BIN)) throw new Error(`nats-server not found at ${NATS_SERVER_BIN} (set NATS_SERVER_BIN)`);
      const port = await freePort();
      const dir = mkdtempSync(join(tmpdir(), 'qs-nats-'));
      const run = () =>
        spawn(NATS_SERVER_BIN, ['-a', HOST, '-p', String(port), '-js', '-sd', dir], { stdio: 'ignore' });
      let server: ChildProcess = run();
      try {
        await waitForPort(port);
        const t = new NatsTransport({ servers: `${HOST}:${port}`, stream: 'RESTART', subject: 'restart.updates', logger });
        const got = await started(t);
        const acked: string[] = [];
        const failures: number[] = [];
        for (let i = 0; i < 20; i++) {
          await t.dispatch(upd(`a-${i}`));
          acked.push(`a-${i}`);
        }
        // Keep publishing while the server is killed and restarted.
        let stop = false;
        let n = 0;
        const pump = (async () => {
          while (!stop) {
            const id = `b-${n++}`;
            const t0 = Date.now();
            try {
              await t.dispatch(upd(id));
              acked.push(id);
            } catch (err) {
              expect(err).toBeInstanceOf(TransportUnavailableError);
              failures.push(Date.now() - t0);
              await sleep(20);
            }
          }
        })();
        await waitFor(() => acked.length >= 60, 5000, 'publishes before the kill');
        server.kill('SIGKILL');
        await once(server, 'exit');
        await waitFor(() => !t.health().ready, 3000, 'not ready after the kill');
        expect(t.health().reason).toMatch(/NATS/);
        await sleep(500);
        server = run();
        await waitForPort(port);
        await waitFor(() => t.health().ready, 15_000, 'ready after the restart');
        await sleep(200);
        stop = true;
        await pump;
        expect(failures.length).toBeGreaterThan(0);
        for (const ms of failures) expect(ms).toBeLessThan(2500);
        for (let i = 0; i < 20; i++) {
          await t.dispatch(upd(`c-${i}`));
          acked.push(`c-${i}`);
        }
        await waitFor(() => got.some((u) => u.id === 'c-19'), 10_000, 'deliveries after the restart');
        await sleep(100);

        // Every acknowledged update survived, in order.
        const history: string[] = [];
        await t.history('earliest', (u) => history.push(u.id));
        const ackedSet = new Set(acked);
        expect(history.filter((id) => ackedSet.has(id))).toEqual(acked);
        // Delivered exactly once, in increasing seq, nothing acknowledged missing.
        expect(increasing(got)).toBe(true);
        expect(new Set(ids(got)).size).toBe(got.length);
        expect(ids(got).filter((id) => ackedSet.has(id))).toEqual(acked);
        expect(ids(got)).toEqual(history);
        expect(t.health()).toEqual({ ready: true });

        // A restart with an empty store (no volume): the stream is recreated, delivery goes on
        // and seq keeps increasing.
        const before = got.length;
        const maxSeq = got[before - 1]!.seq;
        server.kill('SIGKILL');
        await once(server, 'exit');
        rmSync(dir, { recursive: true, force: true });
        server = run();
        await waitForPort(port);
        await waitFor(() => t.health().ready, 15_000, 'ready after the empty restart');
        for (let i = 0; i < 5; i++) await t.dispatch(upd(`d-${i}`));
        await waitFor(() => got.length >= before + 5, 5000, 'deliveries on the new stream');
        const fresh = got.slice(before);
        expect(ids(fresh)).toEqual(['d-0', 'd-1', 'd-2', 'd-3', 'd-4']);
        expect(fresh[0]!.seq > maxSeq).toBe(true);
        expect(increasing(got)).toBe(true);
        const replay: StoredUpdate[] = [];
        await t.history('d-1', (u) => replay.push(u));
        expect(replay.map((u) => [u.id, u.seq])).toEqual(fresh.slice(2).map((u) => [u.id, u.seq]));
        await t.close();
      } finally {
        server.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    },
    40_000,
  );
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, HOST, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await reachable(HOST, port, 200))) {
    if (Date.now() > end) throw new Error(`nats-server did not listen on ${port}`);
    await sleep(50);
  }
}

/**
 * A TCP relay to the NATS server: `kill()` cuts every connection and refuses new ones (a dead or
 * partitioned node), `restore()` accepts them again on the same port.
 */
async function tcpProxy(target: number): Promise<{ port: number; kill(): void; restore(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let server = relay();
  await new Promise<void>((r) => server.listen(0, HOST, r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    kill() {
      server.close();
      for (const s of sockets) s.destroy();
    },
    async restore() {
      server = relay();
      await new Promise<void>((r) => server.listen(port, HOST, r));
    },
  };

  function relay(): net.Server {
    return net.createServer((client) => {
    const upstream = net.connect(target, HOST);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
    });
  }
}
