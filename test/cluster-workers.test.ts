import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SubscriptionRecord, Transport } from '../src/transport.js';
import { TransportUnavailableError } from '../src/transport.js';
import { ClusterPrimaryRelay, ClusterWorkerTransport, type IpcPort } from '../src/transports/cluster.js';
import { MemoryTransport } from '../src/transports/memory.js';
import { createUpdate, type StoredUpdate } from '../src/update.js';
import { legacyToken, sleep, SseClient } from './helpers.js';
import { transportConformance } from './transport-conformance.js';

// ---------------------------------------------------------------------------------------------
// The relay protocol, in process: a worker transport and the primary relay joined by a fake IPC
// channel that JSON-round-trips every message, like node's.
// ---------------------------------------------------------------------------------------------

/** One end of an in-memory IPC channel: messages are JSON-copied and arrive on a later turn, in order. */
class FakePort implements IpcPort {
  sent = 0;
  open = true;
  /** While true, messages are queued and never written (a peer that does not read). */
  stalled = false;
  peer!: FakePort;
  private readonly listeners = new Set<(m: unknown) => void>();
  private readonly gone = new Set<() => void>();

  get connected(): boolean {
    return this.open;
  }

  send(message: unknown, done?: (err: Error | null) => void): void {
    if (!this.open) return done?.(new Error('closed'));
    this.sent++;
    if (this.stalled) return;
    const copy = JSON.parse(JSON.stringify(message)) as unknown;
    setImmediate(() => {
      for (const l of this.peer.listeners) l(copy);
      done?.(null);
    });
  }

  onMessage(l: (m: unknown) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  onDisconnect(l: () => void): () => void {
    this.gone.add(l);
    return () => this.gone.delete(l);
  }

  /** Closes the channel: both ends see the disconnect. */
  disconnect(): void {
    for (const q of [this, this.peer]) {
      if (!q.open) continue;
      q.open = false;
      for (const l of q.gone) l();
    }
  }
}

function portPair(): [FakePort, FakePort] {
  const a = new FakePort();
  const b = new FakePort();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

function relayed(
  real: Transport,
  n = 1,
  options: ConstructorParameters<typeof ClusterPrimaryRelay>[1] = {},
): { relay: ClusterPrimaryRelay; workers: ClusterWorkerTransport[]; ports: FakePort[][] } {
  const relay = new ClusterPrimaryRelay(real, { statusInterval: 20, ...options });
  const workers: ClusterWorkerTransport[] = [];
  const ports: FakePort[][] = [];
  for (let i = 0; i < n; i++) {
    const [primarySide, workerSide] = portPair();
    relay.attach(primarySide);
    workers.push(new ClusterWorkerTransport({ port: workerSide, timeout: 2000 }));
    ports.push([primarySide, workerSide]);
  }
  return { relay, workers, ports };
}

transportConformance('cluster (relayed memory)', async (opts) => {
  const { relay, workers } = relayed(new MemoryTransport({ size: opts?.size }));
  await relay.start();
  const t = workers[0]!;
  const close = t.close.bind(t);
  t.close = async () => {
    await close();
    await relay.close();
  };
  return t;
});

describe('cluster relay', () => {
  const u = (id: string, topic = 'https://example.com/t') => createUpdate({ topics: [topic], id, data: `data ${id}` });

  it('delivers every update to every worker once, in seq order, batching IPC messages', async () => {
    const { relay, workers, ports } = relayed(new MemoryTransport({ size: 5000 }), 3);
    await relay.start();
    const got: StoredUpdate[][] = workers.map(() => []);
    await Promise.all(workers.map((w, i) => w.start((x) => got[i]!.push(x))));
    const sentBefore = ports.map(([p]) => p!.sent);
    // Every worker publishes 1000, all in flight at once.
    await Promise.all(workers.flatMap((w, i) => Array.from({ length: 1000 }, (_, j) => w.dispatch(u(`w${i}-${j}`)))));
    await sleep(50);
    for (const g of got) {
      expect(g).toHaveLength(3000);
      for (let k = 1; k < g.length; k++) expect(g[k]!.seq > g[k - 1]!.seq).toBe(true);
      expect(g.map((x) => x.id)).toEqual(got[0]!.map((x) => x.id));
    }
    // 3000 deliveries + 1000 acks per worker in far fewer messages than updates.
    for (const [i, [p]] of ports.entries()) expect(p!.sent - sentBefore[i]!).toBeLessThan(100);
    await Promise.all(workers.map((w) => w.close()));
    await relay.close();
  });

  it('streams a long history in chunks', async () => {
    const { relay, workers, ports } = relayed(new MemoryTransport({ size: 5000 }));
    await relay.start();
    const w = workers[0]!;
    await w.start(() => {});
    for (let i = 0; i < 1234; i++) await w.dispatch(u(`h-${i}`));
    const before = ports[0]![0]!.sent;
    const ids: string[] = [];
    expect(await w.history('earliest', (x) => ids.push(x.id))).toEqual({ found: true });
    expect(ids).toHaveLength(1234);
    expect(ids[1233]).toBe('h-1233');
    expect(ports[0]![0]!.sent - before).toBeGreaterThanOrEqual(3);
    expect(await w.lastEventId()).toBe('h-1233');
    await sleep(60);
    expect(w.historySize()).toBe(1234);
    await w.close();
    await relay.close();
  });

  it('aggregates presence across workers and drops the records of a departed worker', async () => {
    const mem = new MemoryTransport();
    const { relay, workers, ports } = relayed(mem, 2);
    await relay.start();
    const seen: StoredUpdate[] = [];
    await workers[0]!.start((x) => seen.push(x));
    await workers[1]!.start(() => {});
    const rec = (s: string): SubscriptionRecord => ({ subscriber: `urn:uuid:${s}`, kind: 'selector', match: 'https://example.com/t' });
    await workers[0]!.addSubscriptions([rec('a'), rec('b')]);
    await workers[1]!.addSubscriptions([rec('c')]);
    await workers[0]!.removeSubscriptions([rec('b')]);
    const list = async (w: ClusterWorkerTransport) => (await w.listSubscriptions()).map((r) => r.subscriber).sort();
    expect(await list(workers[0]!)).toEqual(['urn:uuid:a', 'urn:uuid:c']);
    expect(await list(workers[1]!)).toEqual(['urn:uuid:a', 'urn:uuid:c']);
    // Worker 1 dies: its subscription is dropped and its end announced.
    ports[1]![0]!.disconnect();
    await sleep(20);
    expect(await list(workers[0]!)).toEqual(['urn:uuid:a']);
    expect(seen.map((x) => x.topics[0])).toEqual(['/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Ft/urn%3Auuid%3Ac']);
    expect(JSON.parse(seen[0]!.data)).toMatchObject({ active: false, subscriber: 'urn:uuid:c' });
    // The dead worker's transport is unavailable, not hanging.
    expect(workers[1]!.health().ready).toBe(false);
    await expect(workers[1]!.dispatch(u('x'))).rejects.toBeInstanceOf(TransportUnavailableError);
    await workers[0]!.close();
    await relay.close();
  });

  it('reports a worker that stops reading its channel', async () => {
    const stuck: number[] = [];
    const { relay, workers, ports } = relayed(new MemoryTransport(), 2, { maxBacklog: 5, onStuck: (k) => stuck.push(k) });
    await relay.start();
    await Promise.all(workers.map((w) => w.start(() => {})));
    ports[1]![0]!.stalled = true;
    for (let i = 0; i < 10; i++) await workers[0]!.dispatch(u(`s-${i}`));
    expect(stuck).toEqual([2]);
    await workers[0]!.close();
    await relay.close();
  });

  it('maps failures to TransportUnavailableError and times out when the primary is silent', async () => {
    const mem = new MemoryTransport();
    const { relay, workers } = relayed(mem);
    await relay.start();
    const w = workers[0]!;
    await w.start(() => {});
    await mem.close();
    const err = await w.dispatch(u('x')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportUnavailableError);
    expect((err as Error).message).toBe('transport closed');
    await sleep(60);
    expect(w.health()).toEqual({ ready: false, reason: 'transport closed' });

    const [, mute] = portPair();
    const lonely = new ClusterWorkerTransport({ port: mute, timeout: 300 });
    await expect(lonely.start(() => {})).rejects.toThrow(/did not answer/);
    await lonely.close();
    await w.close();
    await relay.close();
  });
});

// ---------------------------------------------------------------------------------------------
// Real processes: the compiled hub run as a cluster of 2 workers.
// ---------------------------------------------------------------------------------------------

const root = fileURLToPath(new URL('..', import.meta.url));
const fixture = fileURLToPath(new URL('./fixtures/cluster-hub.mjs', import.meta.url));
// A private build: other test files may be building dist/ concurrently.
const outDir = path.join(root, 'node_modules', '.cache', `quicksilver-cluster-test-${process.pid}`);
const KEY = 'cluster-test-key-cluster-test-key!';
const TOPIC = 'https://example.com/cluster';

interface Cluster {
  child: ChildProcess;
  url: string;
  hubUrl: string;
  output(): string;
  exited: Promise<number | null>;
}

async function startCluster(transportUrl: string): Promise<Cluster> {
  const child = spawn(
    process.execPath,
    [fixture, '--workers', '2', '--jwt-key', KEY, '--anonymous', '--subscriptions', '--addr', '127.0.0.1:0', '--transport-url', transportUrl, '--shutdown-timeout', '3s'],
    { cwd: root, env: { PATH: process.env.PATH, QUICKSILVER_TEST_DIST: outDir }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const deadline = Date.now() + 15_000;
  while (!out.includes('Quicksilver hub ready')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`cluster did not start:\n${out}`);
    await sleep(20);
  }
  const ready = JSON.parse(out.split('\n').find((l) => l.includes('Quicksilver hub ready'))!) as { url: string; workers: number };
  expect(ready.workers).toBe(2);
  return { child, url: ready.url, hubUrl: `${ready.url}/.well-known/mercure`, output: () => out, exited };
}

/** One request on a fresh connection (so connections spread over the workers). */
function request(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string; worker: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, worker: String(res.headers['x-quicksilver-worker']) }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error(`no answer from ${url}`)));
    req.end(options.body);
  });
}

let publisherToken = '';
async function publishOne(hubUrl: string, id: string, data = `data ${id}`): Promise<{ status: number; worker: string }> {
  const res = await request(hubUrl, {
    method: 'POST',
    headers: { Authorization: `Bearer ${publisherToken}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ topic: TOPIC, id, data }).toString(),
  });
  expect(res.status, res.body).toBe(200);
  return res;
}

function subscribe(hubUrl: string, lastEventId?: string): Promise<SseClient> {
  const u = new URL(hubUrl);
  u.searchParams.set('topic', TOPIC);
  return SseClient.connect(u.toString(), lastEventId ? { headers: { 'Last-Event-ID': lastEventId } } : {});
}

const workerOf = (s: SseClient): string => String(s.headers['x-quicksilver-worker']);
const ids = (s: SseClient): string[] => s.events.map((e) => e.id!);

beforeAll(async () => {
  try {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--outDir', outDir, '--sourceMap', 'false', '--declaration', 'false'], {
      cwd: root,
      stdio: 'pipe',
    });
  } catch {
    // Type errors elsewhere do not stop tsc from emitting; the output is what matters.
  }
  expect(fs.existsSync(path.join(outDir, 'cluster.js'))).toBe(true);
  // Resolve the compiled modules as ESM wherever the cache directory is.
  fs.writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
  publisherToken = await legacyToken({ publish: ['*'], subscribe: ['*'] }, KEY);
});
afterAll(() => fs.rmSync(outDir, { recursive: true, force: true }));

describe('hub cluster (--workers 2, memory transport)', () => {
  let c: Cluster;
  let subs: SseClient[] = [];
  const published: string[] = [];

  beforeAll(async () => {
    c = await startCluster('memory://');
  });
  afterAll(async () => {
    if (process.env.TEST_LOG) console.log(c.output());
    for (const s of subs) s.close();
    if (c.child.exitCode === null) c.child.kill('SIGKILL');
  });

  it('spreads subscribers over both workers', async () => {
    subs = await Promise.all(Array.from({ length: 40 }, () => subscribe(c.hubUrl)));
    const perWorker = new Map<string, number>();
    for (const s of subs) {
      expect(s.status).toBe(200);
      expect(workerOf(s)).toMatch(/^\d+$/);
      perWorker.set(workerOf(s), (perWorker.get(workerOf(s)) ?? 0) + 1);
    }
    // Round-robin hands connections to whichever worker is free: roughly even, not exactly.
    expect(perWorker.size).toBe(2);
  });

  it('delivers 200 updates published on either worker to every subscriber once, in the same order', async () => {
    const publishedOn = new Set<string>();
    for (let i = 0; i < 200; i += 4) {
      const batch = [0, 1, 2, 3].map((k) => `u-${i + k}`);
      published.push(...batch);
      for (const r of await Promise.all(batch.map((id) => publishOne(c.hubUrl, id)))) publishedOn.add(r.worker);
    }
    expect(publishedOn.size).toBe(2);
    await Promise.all(subs.map((s) => s.waitForEvents(200, 10_000)));
    await sleep(100);
    const order = ids(subs[0]!);
    expect([...order].sort()).toEqual([...published].sort());
    for (const s of subs) expect(ids(s)).toEqual(order);
  });

  it('replays what a subscriber missed when it reconnects to the other worker', async () => {
    const gone = subs.shift()!;
    gone.close();
    const lastSeen = ids(gone).at(-1)!;
    const missed = Array.from({ length: 20 }, (_, i) => `m-${i}`);
    for (const id of missed) await publishOne(c.hubUrl, id);
    let back: SseClient | undefined;
    const strays: SseClient[] = [];
    while (!back) {
      const s = await subscribe(c.hubUrl, lastSeen);
      if (workerOf(s) !== workerOf(gone)) back = s;
      else strays.push(s);
    }
    for (const s of strays) s.close();
    await back.waitForEvents(20);
    await publishOne(c.hubUrl, 'after-replay');
    await back.waitForEvents(21);
    await sleep(100);
    expect(ids(back)).toEqual([...missed, 'after-replay']);
    subs.push(back);
    await Promise.all(subs.map((s) => s.waitForEvents(s === back ? 21 : 221)));
  });

  it('lists the subscriptions of both workers from either worker', async () => {
    const token = await legacyToken({ subscribe: ['*'] }, KEY);
    const answeredBy = new Set<string>();
    for (let i = 0; i < 10 && answeredBy.size < 2; i++) {
      const res = await request(`${c.hubUrl}/subscriptions`, { headers: { Authorization: `Bearer ${token}` } });
      expect(res.status, res.body).toBe(200);
      answeredBy.add(res.worker);
      const doc = JSON.parse(res.body) as { subscriptions: Array<{ topic: string; subscriber: string }>; lastEventID: string };
      expect(doc.subscriptions.filter((s) => s.topic === TOPIC)).toHaveLength(subs.length);
      // The last update hub-wide (a subscription event, as subscribers come and go).
      expect(doc.lastEventID).toMatch(/^urn:uuid:|^after-replay$/);
    }
    expect(answeredBy.size).toBe(2);
  });

  it('restarts a killed worker; the other worker keeps serving its subscribers', async () => {
    const victim = workerOf(subs[0]!);
    const doomed = subs.filter((s) => workerOf(s) === victim);
    const survivors = subs.filter((s) => workerOf(s) !== victim);
    process.kill(Number(victim), 'SIGKILL');
    await Promise.all(doomed.map((s) => s.until(() => s.closed, 5000, 'stream end')));
    // Once the primary has seen the exit, it hands no more connections to the dead worker (one
    // handed over at the very moment it died would hang: node:cluster does not take it back).
    const deadline = Date.now() + 10_000;
    while (!/worker exited unexpectedly/.test(c.output())) {
      if (Date.now() > deadline) throw new Error(`the primary did not see the exit:\n${c.output()}`);
      await sleep(20);
    }
    const before = survivors.map((s) => s.events.length);
    for (let i = 0; i < 5; i++) await publishOne(c.hubUrl, `k-${i}`);
    await Promise.all(survivors.map((s, i) => s.waitForEvents(before[i]! + 5)));
    for (const s of survivors) expect(ids(s).slice(-5)).toEqual(['k-0', 'k-1', 'k-2', 'k-3', 'k-4']);

    // The primary forks a replacement, which serves subscribers and gets the new updates.
    while (!/worker restarted/.test(c.output())) {
      if (Date.now() > deadline) throw new Error(`no restart:\n${c.output()}`);
      await sleep(50);
    }
    const line = c.output().split('\n').find((l) => l.includes('worker restarted'))!;
    const newPid = String((JSON.parse(line) as { workerPid: number }).workerPid);
    expect(newPid).not.toBe(victim);
    let fresh: SseClient | undefined;
    const strays: SseClient[] = [];
    while (!fresh) {
      const s = await subscribe(c.hubUrl, 'k-4');
      if (workerOf(s) === newPid) fresh = s;
      else strays.push(s);
      if (Date.now() > deadline) throw new Error('the restarted worker takes no connections');
    }
    for (const s of strays) s.close();
    await publishOne(c.hubUrl, 'k-5');
    await fresh.waitForEvents(1);
    await Promise.all(survivors.map((s, i) => s.waitForEvents(before[i]! + 6)));
    expect(ids(fresh)).toEqual(['k-5']);
    subs = [...survivors, fresh];

    // The dead worker's subscriptions are gone from the API.
    const token = await legacyToken({ subscribe: ['*'] }, KEY);
    const res = await request(`${c.hubUrl}/subscriptions`, { headers: { Authorization: `Bearer ${token}` } });
    const doc = JSON.parse(res.body) as { subscriptions: Array<{ topic: string }> };
    expect(doc.subscriptions.filter((s) => s.topic === TOPIC)).toHaveLength(subs.length);
  });

  it('drains every stream with a retry hint and exits 0 on SIGTERM', async () => {
    c.child.kill('SIGTERM');
    await Promise.all(subs.map((s) => s.until(() => s.closed, 10_000, 'stream end')));
    for (const s of subs) expect(s.raw).toMatch(/retry: \d+\n\n$/);
    expect(await c.exited).toBe(0);
    expect(c.output()).toMatch(/"msg":"bye"/);
  });
});

describe('hub cluster startup', () => {
  it('fails fast, with one line and exit code 2, when the workers cannot listen', async () => {
    const taken = http.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    try {
      const child = spawn(process.execPath, [fixture, '--workers', '2', '--jwt-key', KEY, '--addr', `127.0.0.1:${port}`, '--transport-url', 'memory://'], {
        cwd: root,
        env: { PATH: process.env.PATH, QUICKSILVER_TEST_DIST: outDir },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      expect(code).toBe(2);
      expect(err).toMatch(/^quicksilver: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/m);
    } finally {
      taken.close();
    }
  });
});

describe('hub cluster (--workers 2, LMDB transport)', () => {
  let dir: string;
  let c: Cluster;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qs-cluster-'));
    c = await startCluster(`lmdb://${path.join(dir, 'hub.lmdb')}`);
  });
  afterAll(() => {
    if (process.env.TEST_LOG) console.log(c.output());
    if (c?.child.exitCode === null) c.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('delivers every update once, in order, on both workers, with a shared history', async () => {
    const subs = await Promise.all(Array.from({ length: 20 }, () => subscribe(c.hubUrl)));
    expect(new Set(subs.map(workerOf)).size).toBe(2);
    const published: string[] = [];
    for (let i = 0; i < 100; i += 5) {
      const batch = [0, 1, 2, 3, 4].map((k) => `l-${i + k}`);
      published.push(...batch);
      await Promise.all(batch.map((id) => publishOne(c.hubUrl, id)));
    }
    await Promise.all(subs.map((s) => s.waitForEvents(100)));
    await sleep(100);
    const order = ids(subs[0]!);
    expect([...order].sort()).toEqual([...published].sort());
    for (const s of subs) expect(ids(s)).toEqual(order);

    // The whole history, from whichever worker answers.
    const replays: SseClient[] = [];
    while (new Set(replays.map(workerOf)).size < 2) {
      replays.push(await subscribe(c.hubUrl, 'earliest'));
      expect(replays.length).toBeLessThan(10);
    }
    for (const r of replays) {
      await r.waitForEvents(100);
      expect(ids(r)).toEqual(order);
    }
    for (const s of [...subs, ...replays]) s.close();
    c.child.kill('SIGTERM');
    expect(await c.exited).toBe(0);
  });
});
