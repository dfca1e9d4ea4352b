/**
 * The Redis transport on a real Redis Cluster (issue 12 §3): three masters with one replica each,
 * started by the test (test/redis-cluster.ts). The transport contract; one hub's keys in one slot;
 * two hubs exactly-once; the cluster URL forms; and failovers of the master serving the hub's slot
 * while a sequential publisher runs, with the figures (publish error window, updates lost) printed.
 *
 * Publisher model, as in test/publish-faults.test.ts: the sequential publisher on hub A retries a
 * failed publish with the same id until it is acknowledged (the dedupe window makes that
 * exactly-once whether or not the failed attempt was stored). A probe on hub B publishes a fresh
 * id every 25 ms and never retries: an update whose error said "not stored" must never appear, on
 * either hub or in history.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TransportUnavailableError, type Transport } from '../src/core/transport.js';
import { createUpdate, type StoredUpdate } from '../src/core/update.js';
import { createLogger, type Logger } from '../src/observability/logger.js';
import { createTransport } from '../src/transports/index.js';
import { RedisTransport, type RedisTransportOptions } from '../src/transports/redis/index.js';
import { keySlot } from '../src/transports/redis/cluster.js';
import { parseTransportUrl, redisOptionsFromUrl } from '../src/transports/redis/options.js';
import { clusterSupported, RedisClusterFixture } from './redis-cluster.js';
import { transportConformance } from './transport-conformance.js';

const supported = clusterSupported();
if (!supported && !process.env.CI) console.warn('redis-server/redis-cli without cluster support: skipping the Redis Cluster tests');

describe.runIf(!supported && !!process.env.CI)('Redis Cluster in CI', () => {
  it('requires redis-server with cluster support', () => {
    throw new Error('redis-server or redis-cli --cluster missing and CI is set: the Redis Cluster tests must run in CI');
  });
});

const RUN = `qs-cl-${randomBytes(3).toString('hex')}`;
let streams = 0;
const newStream = (): string => `${RUN}-${++streams}`;
const silent: Logger = createLogger(process.env.TEST_LOG ? 'debug' : 'silent');
const trace = (...args: unknown[]): void => {
  if (process.env.TEST_LOG) console.log(new Date().toISOString(), ...args);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timeout after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
};
const u = (id: string) => createUpdate({ topics: ['https://example.com/t'], id, data: `data ${id}` });

let cluster: RedisClusterFixture | undefined;
const opened: Transport[] = [];
const seeds = () => cluster!.ports.slice(0, 2).map((port) => ({ host: '127.0.0.1', port }));
const make = (options: RedisTransportOptions = {}): RedisTransport => {
  const t = new RedisTransport({ cluster: seeds(), logger: silent, ...options });
  opened.push(t);
  return t;
};
const started = async (t: Transport): Promise<StoredUpdate[]> => {
  const got: StoredUpdate[] = [];
  await t.start((x) => got.push(x));
  return got;
};

beforeAll(async () => {
  if (supported) cluster = await RedisClusterFixture.start();
}, 40_000);

afterAll(async () => {
  for (const t of opened) await t.close().catch(() => {});
  await cluster?.stop();
});

let lastStream = '';
transportConformance(
  'redis cluster',
  async (o) => {
    lastStream = newStream();
    return new RedisTransport({ cluster: seeds(), stream: lastStream, size: o?.size ?? 1000, logger: silent });
  },
  { skip: !supported, reopen: async () => new RedisTransport({ cluster: seeds(), stream: lastStream, size: 1000, logger: silent }) },
);

describe('Redis Cluster URLs', () => {
  it('reads redis+cluster:// host lists, cluster=1 and nodes=', () => {
    const a = redisOptionsFromUrl(parseTransportUrl('redis+cluster://u:p%40ss@h1:7000,h2:7001,[::1]:7002/?stream=s'), silent);
    expect(a.cluster).toEqual([
      { host: 'h1', port: 7000 },
      { host: 'h2', port: 7001 },
      { host: '::1', port: 7002 },
    ]);
    expect(a.redis).toMatchObject({ username: 'u', password: 'p@ss' });
    expect(a.stream).toBe('s');
    const b = redisOptionsFromUrl(new URL('redis://h1:7000?cluster=1&nodes=h2,h3:7002'), silent);
    expect(b.cluster).toEqual([
      { host: 'h1', port: 7000 },
      { host: 'h2', port: 6379 },
      { host: 'h3', port: 7002 },
    ]);
    const tls = redisOptionsFromUrl(parseTransportUrl('rediss+cluster://cache.example:6379,cache2.example'), silent);
    expect(tls.cluster).toHaveLength(2);
    // Each node's certificate is checked against that node's own name.
    expect(tls.redis?.tls).toEqual({});
    expect(redisOptionsFromUrl(new URL('redis://h1:7000'), silent).cluster).toBeUndefined();
    expect(() => redisOptionsFromUrl(new URL('redis+cluster://h1:7000/2'), silent)).toThrow(/database 0/);
    expect(() => redisOptionsFromUrl(new URL('redis://h1:7000?nodes=h2'), silent)).toThrow(/Redis Cluster/);
  });
});

describe.skipIf(!supported)('Redis transport on Redis Cluster', () => {
  it('keeps every key of one hub in one slot, under the stream name as hash tag', async () => {
    const stream = newStream();
    const a = make({ stream, nodeId: `${RUN}-node-a` });
    await started(a);
    expect(a.stream).toBe(`{${stream}}`);
    expect(make({ stream: 'x{tag}y' }).stream).toBe('x{tag}y');
    await a.dispatch(u('k-1'));
    await a.addSubscriptions([{ subscriber: 's', kind: 'selector', match: 'm' }]);
    // A record left by a node whose heartbeat is gone is dropped by the cleanup script, whose
    // heartbeat keys are passed as KEYS (a cluster checks a script's keys against its slot).
    const master = await cluster!.masterOf(a.stream);
    await cluster!.command(master, 'HSET', `${a.stream}:subscriptions`, 'gone-node|s|selector|m', '{"subscriber":"s","kind":"selector","match":"m"}');
    const listed = await a.listSubscriptions();
    expect(listed.map((r) => r.subscriber)).toEqual(['s']);
    expect(await cluster!.command(master, 'HEXISTS', `${a.stream}:subscriptions`, 'gone-node|s|selector|m')).toBe(0);
    const keys = (await cluster!.command(master, 'KEYS', `{${stream}}*`)) as string[];
    expect(keys.sort()).toEqual([`{${stream}}`, `{${stream}}:ids`, `{${stream}}:node:${RUN}-node-a`, `{${stream}}:subscriptions`]);
    const slots = new Set(await Promise.all(keys.map((k) => cluster!.command(master, 'CLUSTER', 'KEYSLOT', k))));
    expect([...slots]).toEqual([keySlot(a.stream)]);
  });

  it('two hubs on one cluster: each acknowledged update reaches both once, in one order', async () => {
    const stream = newStream();
    const a = make({ stream });
    const b = make({ stream });
    const gotA = await started(a);
    const gotB = await started(b);
    const ids = Array.from({ length: 300 }, (_, i) => `n-${i}`);
    await Promise.all(ids.map((id, i) => (i % 2 ? a : b).dispatch(u(id))));
    await waitFor(() => gotA.length >= 300 && gotB.length >= 300);
    await sleep(100);
    expect(gotA).toHaveLength(300);
    expect(new Set(gotA.map((x) => x.id)).size).toBe(300);
    expect(gotA.map((x) => x.id)).toEqual(gotB.map((x) => x.id));
    expect(gotA.map((x) => x.seq)).toEqual(gotB.map((x) => x.seq));
    // A sequential publisher on one hub is seen in its order on the other.
    for (let i = 0; i < 20; i++) await a.dispatch(u(`s-${i}`));
    await waitFor(() => gotB.length >= 320);
    expect(gotB.slice(300).map((x) => x.id)).toEqual(Array.from({ length: 20 }, (_, i) => `s-${i}`));
    // A retried publish (same id) is stored once, from either hub.
    expect(await b.dispatch(u('s-19'))).toBe('duplicate');
    const replayed: string[] = [];
    await b.history(gotA[149]!.id, (x) => replayed.push(x.id));
    expect(replayed).toEqual(gotA.slice(150).map((x) => x.id));
  });

  it('builds the transport from redis+cluster:// and cluster=1 URLs', async () => {
    const [p1, p2, p3] = cluster!.ports;
    const stream = newStream();
    for (const url of [`redis+cluster://127.0.0.1:${p1},127.0.0.1:${p2}/?stream=${stream}`, `redis://127.0.0.1:${p3}?cluster=1&stream=${stream}`]) {
      const t = await createTransport(url, silent);
      opened.push(t);
      const got = await started(t);
      const id = `url-${opened.length}`;
      await t.dispatch(u(id));
      await waitFor(() => got.some((x) => x.id === id));
      expect(t.health()).toEqual({ ready: true });
    }
  });

  /**
   * Sequential publisher on hub A, subscribers on A and B, while the master serving the hub's slot
   * fails (`fault`) and its replica takes over. Returns what the report needs.
   */
  async function failover(options: { wait: number; fault: 'freeze' | 'kill' }) {
    const stream = newStream();
    const opts: RedisTransportOptions = {
      stream,
      waitReplicas: options.wait,
      waitTimeout: 500,
      commandTimeout: 1000,
      blockTimeout: 1000,
      heartbeatInterval: 500,
    };
    const a = make(opts);
    const b = make(opts);
    const gotA = await started(a);
    const gotB = await started(b);
    const acked: string[] = [];
    const refused: string[] = [];
    const errors: { at: number; stored: string; message: string }[] = [];
    let stop = false;
    let faultAt = 0;
    let failedSinceFault = false;
    let firstOkAfter = 0;
    const publisher = (async () => {
      for (let i = 0; !stop; i++) {
        const id = `f-${i}`;
        for (;;) {
          try {
            await a.dispatch(u(id));
            acked.push(id);
            if (failedSinceFault && !firstOkAfter) firstOkAfter = Date.now();
            break;
          } catch (err) {
            if (!(err instanceof TransportUnavailableError)) throw err;
            errors.push({ at: Date.now(), stored: err.stored, message: err.message });
            if (faultAt) failedSinceFault = true;
            await sleep(20);
          }
        }
      }
    })();
    const probe = (async () => {
      for (let i = 0; !stop; i++) {
        await b.dispatch(u(`p-${i}`)).catch((err: unknown) => {
          if (err instanceof TransportUnavailableError && err.stored === 'no') refused.push(`p-${i}`);
        });
        await sleep(25);
      }
    })();
    // Generous: on a loaded machine, and right after the previous test's failover, the first
    // acknowledgements can be slow; what is measured starts at the fault.
    await waitFor(() => acked.length >= 100, 30_000, '100 acknowledged publishes before the fault');
    const master = await cluster!.masterOf(a.stream);
    trace('fault', options.fault, master);
    faultAt = Date.now();
    if (options.fault === 'freeze') cluster!.freeze(master);
    else await cluster!.kill(master);
    const promoted = await cluster!.waitPromoted(a.stream, master, 15_000);
    const promotedAt = Date.now();
    trace('promoted', promoted);
    // The old master comes back as a replica of the promoted one (its own unreplicated writes, if
    // any, are discarded by the resync). With wait=1 publishes need it: the promoted master has no
    // other replica.
    if (options.fault === 'freeze') cluster!.thaw(master);
    else await cluster!.restart(master);
    await waitFor(() => firstOkAfter > 0, 20_000, 'the first acknowledged publish after the fault');
    trace('first ack after the fault', errors.slice(-3));
    const before = acked.length;
    await waitFor(() => acked.length >= before + 100, 20_000, '100 more acknowledged publishes');
    trace('100 more acked');
    stop = true;
    await Promise.all([publisher, probe]);
    // Both hubs are ready again and deliver what was acknowledged after the failover.
    await waitFor(() => a.health().ready && b.health().ready, 10_000);
    const lastAcked = acked[acked.length - 1]!;
    await waitFor(() => gotA.some((x) => x.id === lastAcked) && gotB.some((x) => x.id === lastAcked), 10_000);

    await cluster!.waitHealthy(20_000);

    const history: string[] = [];
    await b.history('earliest', (x) => history.push(x.id));
    const inHistory = new Set(history);
    const lost = acked.filter((id) => !inHistory.has(id));
    const errorWindow = errors.length ? errors[errors.length - 1]!.at - errors[0]!.at : 0;
    const figures = {
      fault: options.fault,
      wait: options.wait,
      acked: acked.length,
      errors: errors.length,
      probeRefused: refused.length,
      errorsStoredNo: errors.filter((e) => e.stored === 'no').length,
      promotedAfterMs: promotedAt - faultAt,
      firstAckAfterFaultMs: firstOkAfter - faultAt,
      errorWindowMs: errorWindow,
      lostAcknowledged: lost.length,
      promoted,
    };
    console.log(`Redis Cluster failover: ${JSON.stringify(figures)}`);
    if (process.env.TEST_LOG) {
      const kinds = new Map<string, { n: number; first: number; last: number }>();
      for (const e of errors) {
        const k = e.message.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, 'H').replace(/\d+/g, 'N');
        const v = kinds.get(k) ?? { n: 0, first: e.at - faultAt, last: 0 };
        v.n++;
        v.last = e.at - faultAt;
        kinds.set(k, v);
      }
      trace([...kinds]);
    }
    return { figures, acked, refused, lost, history, gotA, gotB, errors };
  }

  /** What holds whatever replication did: no update twice, acknowledged ones in publish order. */
  function checkOrder(r: Awaited<ReturnType<typeof failover>>): void {
    const acked = new Set(r.acked);
    const refused = new Set(r.refused);
    expect(refused.size).toBeGreaterThan(0);
    for (const seen of [r.history, r.gotA.map((x) => x.id), r.gotB.map((x) => x.id)]) {
      expect(new Set(seen).size).toBe(seen.length);
      // Every attempt of the publisher was retried until acknowledged: all its stored ids are
      // acknowledged ones, in publish order.
      const published = seen.filter((id) => id.startsWith('f-'));
      expect(published.filter((id) => !acked.has(id))).toEqual([]);
      const has = new Set(published);
      expect(published).toEqual(r.acked.filter((id) => has.has(id)));
      // A publish answered "not stored" was not, and was not applied later either.
      expect(seen.filter((id) => refused.has(id))).toEqual([]);
    }
  }

  it('master of the slot frozen, wait=1: nothing acknowledged lost, both hubs recover', async () => {
    const r = await failover({ wait: 1, fault: 'freeze' });
    expect(r.lost).toEqual([]);
    checkOrder(r);
    // Every acknowledged update delivered on both hubs, once, in publish order.
    for (const got of [r.gotA, r.gotB]) expect(got.map((x) => x.id).filter((id) => id.startsWith('f-'))).toEqual(r.acked);
    expect(r.errors.length).toBeGreaterThan(0);
  }, 90_000);

  it('master of the slot killed, wait=0: reconnects, and reports what async replication lost', async () => {
    const r = await failover({ wait: 0, fault: 'kill' });
    checkOrder(r);
    // Without WAIT an acknowledged write the master had not yet sent to its replica is lost with
    // it; the figure is printed above (none is the usual outcome on one machine, not a promise).
    expect(r.lost.length).toBeLessThan(r.acked.length);
  }, 90_000);
});
