import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroupCpuQuota, defaultWorkerCount } from '../src/config/cpus.js';
import { Metrics, type MetricsSnapshot } from '../src/observability/metrics.js';
import type { SubscriptionRecord, Transport } from '../src/core/transport.js';
import { TransportUnavailableError } from '../src/core/transport.js';
import { ClusterPrimaryRelay, ClusterWorkerTransport } from '../src/transports/cluster/index.js';
import { FakePort, portPair } from './fake-ipc.js';
import { MemoryTransport } from '../src/transports/memory.js';
import { createUpdate, type StoredUpdate } from '../src/core/update.js';
import { legacyToken, sleep, SseClient } from './helpers.js';
import { freePort, startHubProcess, waitUntil, type HubProcess } from './process-helpers.js';
import { transportConformance } from './transport-conformance.js';

// ---------------------------------------------------------------------------------------------
// The relay protocol, in process: a worker transport and the primary relay joined by a fake IPC
// channel that JSON-round-trips every message, like node's.
// ---------------------------------------------------------------------------------------------


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

  it('merges every worker\'s metrics, leaving out a worker that does not answer in time', async () => {
    const mem = new MemoryTransport();
    const relay = new ClusterPrimaryRelay(mem, { statusInterval: 20, metricsTimeout: 300, clusterMetrics: () => ({ workers: 3, restarts: 1 }) });
    const gauges = { historySize: () => 0, transportReady: () => true, subscriptions: () => 2 };
    const numbers = [new Metrics(gauges), new Metrics(gauges), new Metrics(gauges)];
    numbers.forEach((m, i) => {
      m.connected7 = i + 1;
      m.deliveries = 10 * (i + 1);
      m.countDisconnect(i === 0 ? 'slow' : 'error');
      m.dispatchSeconds.observe(0.0004);
      m.dispatchSeconds.observe(0.02 * i);
    });
    const ports: FakePort[][] = [];
    const workers = numbers.map((m) => {
      const [primarySide, workerSide] = portPair();
      relay.attach(primarySide);
      ports.push([primarySide, workerSide]);
      return new ClusterWorkerTransport({ port: workerSide, timeout: 2000, metrics: () => m.snapshot() });
    });
    await relay.start();
    await Promise.all(workers.map((w) => w.start(() => {})));
    await workers[0]!.dispatch(u('one'));
    await workers[1]!.dispatch(u('two'));

    const value = sample;
    const text = await workers[0]!.metrics(numbers[0]!.snapshot());
    expect(value(text, 'mercure_subscribers_connected')).toBe(1 + 2 + 3);
    expect(value(text, 'quicksilver_deliveries_total')).toBe(10 + 20 + 30);
    expect(value(text, 'quicksilver_subscriptions_active')).toBe(6);
    expect(value(text, 'quicksilver_subscriber_disconnects_total{reason="slow"}')).toBe(1);
    expect(value(text, 'quicksilver_subscriber_disconnects_total{reason="error"}')).toBe(2);
    expect(value(text, 'quicksilver_dispatch_duration_seconds_count')).toBe(6);
    expect(value(text, 'quicksilver_dispatch_duration_seconds_bucket{le="0.0005"}')).toBe(3 + 1);
    expect(value(text, 'quicksilver_dispatch_duration_seconds_bucket{le="0.025"}')).toBe(5);
    expect(value(text, 'quicksilver_dispatch_duration_seconds_bucket{le="+Inf"}')).toBe(6);
    // Taken once from the primary's transport and relay, not summed per worker.
    expect(value(text, 'quicksilver_history_size')).toBe(2);
    expect(value(text, 'mercure_updates_total')).toBe(2);
    expect(value(text, 'quicksilver_workers')).toBe(3);
    expect(value(text, 'quicksilver_metrics_workers_answered')).toBe(3);
    expect(value(text, 'quicksilver_worker_restarts_total')).toBe(1);

    // A worker that does not read its channel is left out after the timeout; the scrape still answers.
    ports[2]![0]!.stalled = true;
    const t0 = Date.now();
    const partial = await relay.metrics();
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(value(partial, 'mercure_subscribers_connected')).toBe(1 + 2);
    expect(value(partial, 'quicksilver_metrics_workers_answered')).toBe(2);
    await Promise.all(workers.map((w) => w.close()));
    await relay.close();
  });

  it('shares limit changes with the other workers, and forgets those of a departed worker', async () => {
    const { relay, ports } = relayed(new MemoryTransport(), 0);
    await relay.start();
    const seen: Array<Array<[string, number]>> = [[], [], []];
    const workers = [0, 1, 2].map((i) => {
      const [primarySide, workerSide] = portPair();
      relay.attach(primarySide);
      ports.push([primarySide, workerSide]);
      return new ClusterWorkerTransport({ port: workerSide, timeout: 2000, onPeerLimits: (c) => seen[i]!.push(...c.map(([k, n]) => [k, n] as [string, number])) });
    });
    await Promise.all(workers.slice(0, 2).map((w) => w.start(() => {})));
    const held = (i: number): Record<string, number> => {
      const m: Record<string, number> = {};
      for (const [k, n] of seen[i]!) m[k] = (m[k] ?? 0) + n;
      return Object.fromEntries(Object.entries(m).filter(([, n]) => n !== 0));
    };
    workers[0]!.shareConnection('10.0.0.1', 1);
    workers[0]!.shareConnection('10.0.0.1', 1);
    workers[0]!.shareConnection('10.0.0.2', 1);
    workers[0]!.shareConnection('10.0.0.2', -1);
    await sleep(20);
    expect(held(1)).toEqual({ '10.0.0.1': 2 });
    expect(held(0)).toEqual({});
    // A worker that starts later learns what the others hold.
    await workers[2]!.start(() => {});
    await sleep(20);
    expect(held(2)).toEqual({ '10.0.0.1': 2 });
    // Worker 0 goes away: the others forget its connections.
    ports[0]![0]!.disconnect();
    await sleep(20);
    expect(held(1)).toEqual({});
    expect(held(2)).toEqual({});
    await Promise.all(workers.slice(1).map((w) => w.close()));
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
    // --worker-header: these tests tell the workers apart by the pid it carries.
    [fixture, '--workers', '2', '--worker-header', '--jwt-key', KEY, '--anonymous', '--subscriptions', '--addr', '127.0.0.1:0', '--transport-url', transportUrl, '--shutdown-timeout', '3s'],
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
async function publishOne(hubUrl: string, id: string, data = `data ${id}`, token = publisherToken): Promise<{ status: number; worker: string }> {
  const res = await request(hubUrl, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' },
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
  expect(fs.existsSync(path.join(outDir, 'server', 'cluster.js'))).toBe(true);
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

// ---------------------------------------------------------------------------------------------
// The CLI as an operator runs it (dist/cli.js, built by `npm test`): clusters by default.
// ---------------------------------------------------------------------------------------------

const CLI_KEY = '!ChangeThisMercureHubJWTSecretKey!';
let cliToken = '';
beforeAll(async () => {
  cliToken = await legacyToken({ publish: ['*'], subscribe: ['*'] }, CLI_KEY);
});

/** A Prometheus sample's value (`name` includes its labels), or NaN when absent. */
function sample(text: string, name: string): number {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return Number(new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text)?.[1]);
}

/** Cumulative buckets never decrease and the `+Inf` bucket equals the count. */
function expectConsistentHistogram(text: string, name: string): number {
  const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\d+)$`, 'gm'))].map((m) => Number(m[2]));
  expect(buckets.length).toBeGreaterThan(1);
  for (let i = 1; i < buckets.length; i++) expect(buckets[i]!).toBeGreaterThanOrEqual(buckets[i - 1]!);
  const count = sample(text, `${name}_count`);
  expect(buckets.at(-1)).toBe(count);
  return count;
}

/** True while `pid` runs (a zombie waiting to be reaped counts as gone). */
function running(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\S+ \(.*\) [ZX]/.test(stat);
  } catch {
    try {
      process.kill(pid, 0);
      return process.platform !== 'linux';
    } catch {
      return false;
    }
  }
}

/** Opens subscribers until every worker holds at least `each` of them; returns them all. */
async function spreadSubscribers(hubUrl: string, workers: number, each: number, topic = TOPIC): Promise<SseClient[]> {
  const subs: SseClient[] = [];
  const count = (): Map<string, number> => {
    const m = new Map<string, number>();
    for (const s of subs) m.set(workerOf(s), (m.get(workerOf(s)) ?? 0) + 1);
    return m;
  };
  while (count().size < workers || [...count().values()].some((n) => n < each)) {
    if (subs.length >= 20 * workers * each) throw new Error(`connections do not spread over ${workers} workers: ${JSON.stringify([...count()])}`);
    const u = new URL(hubUrl);
    u.searchParams.set('topic', topic);
    const s = await SseClient.connect(u.toString());
    expect(s.status).toBe(200);
    subs.push(s);
  }
  return subs;
}

describe('quicksilver CLI: workers by default', () => {
  it('runs one worker per core when --workers is not given (a single process on one core)', async () => {
    const expected = defaultWorkerCount();
    // The default is availableParallelism(), capped by a cgroup CPU quota where there is one.
    if (cgroupCpuQuota() === undefined) expect(expected).toBe(os.availableParallelism());
    const hub = await startHubProcess(['--jwt-key', CLI_KEY, '--anonymous', '--addr', '127.0.0.1:0', '--transport-url', 'memory://'], {
      QUICKSILVER_WORKER_HEADER: '1',
    });
    try {
      const ready = JSON.parse(hub.output().split('\n').find((l) => l.includes('Quicksilver hub ready'))!) as { workers?: number; pid: number };
      const res = await request(`${hub.url}/healthz`);
      if (expected === 1) {
        // No primary: the process that logged "ready" serves the requests itself.
        expect(ready.workers).toBeUndefined();
        expect(res.worker).toBe('undefined');
      } else {
        expect(ready.workers).toBe(expected);
        expect(ready.pid).toBe(hub.child.pid);
        const subs = await spreadSubscribers(hub.hubUrl, expected, 1);
        expect(new Set(subs.map(workerOf)).size).toBe(expected);
        expect(subs.map(workerOf)).not.toContain(String(hub.child.pid));
        for (const s of subs) s.close();
      }
    } finally {
      expect(await hub.stop()).toBe(0);
    }
  });

  it('exits 69 (unavailable: retry later) when the port is taken, with one process or several', async () => {
    const taken = http.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    try {
      for (const workers of ['1', '2']) {
        const child = spawn(process.execPath, ['dist/cli.js', '--workers', workers, '--jwt-key', CLI_KEY, '--addr', `127.0.0.1:${port}`, '--transport-url', 'memory://'], {
          cwd: root,
          env: { PATH: process.env.PATH },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let err = '';
        child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
        const code = await new Promise<number | null>((r) => child.on('exit', r));
        expect(err).toMatch(/^quicksilver: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/m);
        expect(code, `--workers ${workers}`).toBe(69);
      }
    } finally {
      taken.close();
    }
  });

  it('names no worker pid in responses unless asked to (--worker-header; issue 10, 0.7)', async () => {
    const hub = await startHubProcess(['--workers', '2', '--jwt-key', CLI_KEY, '--anonymous', '--addr', '127.0.0.1:0', '--transport-url', 'memory://']);
    try {
      for (const path of ['/healthz', '/metrics', '/.well-known/mercure', '/nowhere']) {
        for (let i = 0; i < 4; i++) expect((await request(`${hub.url}${path}`)).worker, path).toBe('undefined');
      }
      const s = await subscribe(hub.hubUrl);
      expect(s.status).toBe(200);
      expect(workerOf(s)).toBe('undefined');
      s.close();
    } finally {
      expect(await hub.stop()).toBe(0);
    }
  });

  it('--workers 1 (or QUICKSILVER_WORKERS=1) runs a single process', async () => {
    for (const [args, env] of [[['--workers', '1'], {}], [[], { QUICKSILVER_WORKERS: '1' }]] as const) {
      const hub = await startHubProcess(['--jwt-key', CLI_KEY, '--addr', '127.0.0.1:0', '--transport-url', 'memory://', ...args], env);
      const res = await request(`${hub.url}/healthz`);
      expect(res.worker).toBe('undefined');
      expect(hub.output()).not.toMatch(/"workers":/);
      expect(await hub.stop()).toBe(0);
    }
  });

  describe('/metrics on a 2-worker hub', () => {
    let hub: HubProcess;
    let subs: SseClient[] = [];
    beforeAll(async () => {
      hub = await startHubProcess(['--workers', '2', '--worker-header', '--jwt-key', CLI_KEY, '--anonymous', '--addr', '127.0.0.1:0', '--transport-url', 'memory://']);
    });
    afterAll(async () => {
      for (const s of subs) s.close();
      await hub?.stop('SIGKILL');
    });

    /** Scrapes (fresh connections, so both workers answer some) until `cond` holds on a scrape from each worker. */
    async function scrapeBoth(cond: (text: string) => boolean, path = '/metrics'): Promise<Map<string, string>> {
      const byWorker = new Map<string, string>();
      const deadline = Date.now() + 10_000;
      while (byWorker.size < 2) {
        const res = await request(`${hub.url}${path}`);
        expect(res.status).toBe(200);
        if (cond(res.body)) byWorker.set(res.worker, res.body);
        if (Date.now() > deadline) throw new Error(`no scrape of each worker satisfied the condition; last:\n${res.body}`);
      }
      return byWorker;
    }

    it('counts the subscribers of every worker, whichever worker answers', async () => {
      subs = await spreadSubscribers(hub.hubUrl, 2, 3);
      const perWorker = new Map<string, number>();
      for (const s of subs) perWorker.set(workerOf(s), (perWorker.get(workerOf(s)) ?? 0) + 1);
      const scrapes = await scrapeBoth((t) => sample(t, 'mercure_subscribers_connected') === subs.length);
      for (const text of scrapes.values()) {
        expect(sample(text, 'mercure_subscribers_total')).toBe(subs.length);
        expect(sample(text, 'quicksilver_subscribers_connected_by_protocol{version="7"}')).toBe(subs.length);
        expect(sample(text, 'quicksilver_subscriptions_active')).toBe(subs.length);
        expect(sample(text, 'quicksilver_workers')).toBe(2);
        expect(sample(text, 'quicksilver_metrics_workers_answered')).toBe(2);
        expect(sample(text, 'quicksilver_transport_ready')).toBe(1);
        expect(sample(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
      }
      // ?worker=self: only the answering worker's own subscribers.
      const own = await scrapeBoth(() => true, '/metrics?worker=self');
      for (const [worker, text] of own) {
        expect(sample(text, 'mercure_subscribers_connected')).toBe(perWorker.get(worker));
        expect(sample(text, 'quicksilver_workers')).toBeNaN();
      }
    });

    it('merges deliveries, updates and histograms after publishes on both workers', async () => {
      const publishedOn = new Set<string>();
      const n = 6;
      for (let i = 0; i < n; i++) publishedOn.add((await publishOne(hub.hubUrl, `metrics-${i}`, undefined, cliToken)).worker);
      await Promise.all(subs.map((s) => s.waitForEvents(n)));
      const scrapes = await scrapeBoth((t) => sample(t, 'quicksilver_deliveries_total') === subs.length * n);
      for (const text of scrapes.values()) {
        // Each update accepted by one worker, relayed once by the primary, written to every subscriber.
        expect(sample(text, 'quicksilver_updates_published_total')).toBe(n);
        expect(sample(text, 'mercure_updates_total')).toBe(n);
        expect(sample(text, 'quicksilver_history_size')).toBe(n);
        expect(expectConsistentHistogram(text, 'quicksilver_publish_duration_seconds')).toBe(n);
        expect(expectConsistentHistogram(text, 'quicksilver_transport_lag_seconds')).toBe(n);
        // Every worker routes every update to its own subscribers.
        expect(expectConsistentHistogram(text, 'quicksilver_dispatch_duration_seconds')).toBe(2 * n);
        expect(sample(text, 'quicksilver_publish_duration_seconds_sum')).toBeGreaterThan(0);
      }
      // The per-worker numbers add up to the hub's.
      const own = [...(await scrapeBoth(() => true, '/metrics?worker=self')).values()];
      expect(own.reduce((sum, t) => sum + sample(t, 'quicksilver_deliveries_total'), 0)).toBe(subs.length * n);
      expect(own.reduce((sum, t) => sum + sample(t, 'quicksilver_updates_published_total'), 0)).toBe(n);
      expect(publishedOn.size).toBeGreaterThanOrEqual(1);
    });

    it('counts disconnects of every worker once they are gone', async () => {
      const gone = subs.splice(0, 2);
      for (const s of gone) s.close();
      await scrapeBoth((t) => sample(t, 'mercure_subscribers_connected') === subs.length);
    });
  });

  it('enforces connection and publish-rate limits for the whole hub, not per worker', async () => {
    const hub = await startHubProcess([
      '--workers', '2', '--worker-header', '--jwt-key', CLI_KEY, '--anonymous', '--addr', '127.0.0.1:0', '--transport-url', 'memory://',
      '--max-connections-per-ip', '3', '--publish-rate-limit', '1', '--publish-burst', '3',
    ]);
    const subs: SseClient[] = [];
    try {
      const u = `${hub.hubUrl}?topic=${encodeURIComponent(TOPIC)}`;
      const statuses: Array<[number, string]> = [];
      for (let i = 0; i < 8; i++) {
        const s = await SseClient.connect(u);
        subs.push(s);
        statuses.push([s.status, workerOf(s)]);
        // Sequential clients: each one's connection reaches the other worker's books first.
        await sleep(20);
      }
      expect(statuses.map(([status]) => status)).toEqual([200, 200, 200, 429, 429, 429, 429, 429]);
      expect(new Set(statuses.map(([, w]) => w)).size).toBe(2);
      // A connection that leaves frees a slot on every worker.
      subs.find((x) => x.status === 200)!.close();
      let again: SseClient | undefined;
      const deadline = Date.now() + 5000;
      while (!again) {
        const s = await SseClient.connect(u);
        subs.push(s);
        if (s.status === 200) again = s;
        else if (Date.now() > deadline) throw new Error('the slot was never released');
        else await sleep(50);
      }

      // 1 publish per second with a burst of 3: five publishes in quick succession, spread over
      // both workers, get three (or, if a second passes, four) 200s, not 3 per worker.
      const results: Array<{ status: number; worker: string }> = [];
      for (let i = 0; i < 5; i++) {
        results.push(await request(hub.hubUrl, {
          method: 'POST',
          headers: { Authorization: `Bearer ${cliToken}`, 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ topic: TOPIC, id: `rate-${i}`, data: 'x' }).toString(),
        }));
        await sleep(20);
      }
      expect(new Set(results.map((r) => r.worker)).size).toBe(2);
      const ok = results.filter((r) => r.status === 200).length;
      expect(results.every((r) => r.status === 200 || r.status === 429)).toBe(true);
      expect(ok).toBeGreaterThanOrEqual(3);
      expect(ok).toBeLessThanOrEqual(4);
      const metrics = (await request(`${hub.url}/metrics`)).body;
      expect(sample(metrics, 'quicksilver_requests_limited_total{limit="connections_per_ip"}')).toBeGreaterThanOrEqual(5);
      expect(sample(metrics, 'quicksilver_requests_limited_total{limit="publish_rate"}')).toBe(5 - ok);
    } finally {
      for (const s of subs) s.close();
      expect(await hub.stop()).toBe(0);
    }
  });

  it('kill -9 of the primary ends the workers at once, and the port is free again', async () => {
    const port = await freePort();
    const args = ['--workers', '2', '--worker-header', '--jwt-key', CLI_KEY, '--anonymous', '--addr', `127.0.0.1:${port}`, '--transport-url', 'memory://'];
    const hub = await startHubProcess(args);
    const subs = await spreadSubscribers(hub.hubUrl, 2, 1);
    const workerPids = [...new Set(subs.map(workerOf))].map(Number);
    expect(workerPids).toHaveLength(2);
    expect(workerPids.every(running)).toBe(true);
    await hub.stop('SIGKILL');
    await waitUntil(() => !workerPids.some(running), 3000, `the workers (${workerPids.join(', ')}) to exit`);
    await Promise.all(subs.map((s) => s.until(() => s.closed, 3000, 'the stream to end')));
    const again = await startHubProcess(args);
    expect((await request(`${again.url}/healthz`)).status).toBe(200);
    expect(await again.stop()).toBe(0);
  });
});
