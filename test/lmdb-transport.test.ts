import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { TransportUnavailableError } from '../src/core/transport.js';
import {
  LmdbTransport,
  LMDB_DEFAULT_MAX_AGE,
  LMDB_DEFAULT_SIZE,
  lmdbOptionsFromUrl,
  lmdbTransportFromUrl,
  parseDuration,
  type LmdbTransportOptions,
} from '../src/transports/lmdb.js';
import { createUpdate, type StoredUpdate } from '../src/core/update.js';
import { transportConformance } from './transport-conformance.js';

const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), 'quicksilver-lmdb-'));
let counter = 0;
const freshPath = () => path.join(ROOT, `s${++counter}`, 'hub.lmdb');

afterAll(() => fs.rmSync(ROOT, { recursive: true, force: true }));

let lastPath = '';
transportConformance(
  'lmdb',
  async (o) => {
    lastPath = freshPath();
    return new LmdbTransport({ path: lastPath, size: o?.size ?? 1000 });
  },
  { reopen: async () => new LmdbTransport({ path: lastPath, size: 1000 }) },
);

const u = (id: string, topic = 'https://example.com/t') => createUpdate({ topics: [topic], id, data: `data ${id}` });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timeout');
    await sleep(10);
  }
};
const ids = async (t: LmdbTransport, after = 'earliest') => {
  const got: StoredUpdate[] = [];
  const res = await t.history(after, (x) => got.push(x));
  return { found: res.found, ids: got.map((g) => g.id), updates: got };
};

describe('lmdb transport', () => {
  const open: LmdbTransport[] = [];
  const make = async (options: Partial<LmdbTransportOptions> = {}, deliver: (u: StoredUpdate) => void = () => {}) => {
    const t = new LmdbTransport({ path: freshPath(), ...options });
    open.push(t);
    await t.start(deliver);
    return t;
  };
  const reopen = async (t: LmdbTransport, options: Partial<LmdbTransportOptions> = {}, deliver: (u: StoredUpdate) => void = () => {}) => {
    await t.close();
    const t2 = new LmdbTransport({ path: t.path, ...options });
    open.push(t2);
    await t2.start(deliver);
    return t2;
  };
  afterEach(async () => {
    for (const t of open.splice(0)) await t.close().catch(() => {});
  });

  it('delivers concurrent dispatches exactly once, in seq order, after they resolve', async () => {
    const got: StoredUpdate[] = [];
    const t = await make({}, (x) => got.push(x));
    const acked: string[] = [];
    await Promise.all(
      Array.from({ length: 2000 }, (_, i) =>
        t.dispatch(u(`c-${i}`)).then(() => {
          // Delivered before (or as) its dispatch resolves.
          expect(got.some((g) => g.id === `c-${i}`)).toBe(true);
          acked.push(`c-${i}`);
        }),
      ),
    );
    expect(acked).toHaveLength(2000);
    expect(got.map((g) => g.id)).toEqual(Array.from({ length: 2000 }, (_, i) => `c-${i}`));
    for (let i = 1; i < got.length; i++) expect(got[i]!.seq).toBe(got[i - 1]!.seq + 1n);
    expect(t.historySize()).toBe(2000);
    expect((await ids(t)).ids).toHaveLength(2000);
  });

  it('keeps seq increasing and lastEventId across a reopen', async () => {
    const t = await make();
    for (let i = 0; i < 5; i++) await t.dispatch(u(`r-${i}`));
    const before = (await ids(t)).updates.map((x) => x.seq);
    expect(before).toEqual([1n, 2n, 3n, 4n, 5n]);
    const got: StoredUpdate[] = [];
    const t2 = await reopen(t, {}, (x) => got.push(x));
    expect(await t2.lastEventId()).toBe('r-4');
    expect(t2.historySize()).toBe(5);
    await t2.dispatch(u('r-5'));
    expect(got.map((g) => [g.id, g.seq])).toEqual([['r-5', 6n]]);
    expect((await ids(t2, 'r-3')).ids).toEqual(['r-4', 'r-5']);
  });

  it('bounds history by count under 10k updates, deleting index entries too', async () => {
    // size 500 → trims back to 500 once history exceeds 505 (1% slack).
    const t = await make({ size: 500 });
    for (let batch = 0; batch < 100; batch++) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => t.dispatch(u(`n-${batch * 100 + i}`))));
      // Never far above the bound while publishing (cleanup commits lag a batch or two behind).
      expect(t.historySize()).toBeLessThanOrEqual(1000);
    }
    await sleep(50);
    const size = t.historySize();
    expect(size).toBeGreaterThanOrEqual(500);
    expect(size).toBeLessThanOrEqual(505);
    const h = await ids(t);
    expect(h.ids).toEqual(Array.from({ length: size }, (_, i) => `n-${10_000 - size + i}`));
    expect((await ids(t, 'n-0')).found).toBe(false);
    expect((await ids(t, `n-${9999 - size}`)).found).toBe(false);
    expect((await ids(t, `n-${10_000 - size}`)).ids).toHaveLength(size - 1);
    // Trimmed entries are gone from disk, not just hidden.
    const t2 = await reopen(t, { size: 500 });
    expect(t2.historySize()).toBe(size);
    expect(await t2.lastEventId()).toBe('n-9999');
  });

  it('shrinks an existing store to a smaller size on start', async () => {
    const t = await make({ size: 100 });
    await Promise.all(Array.from({ length: 100 }, (_, i) => t.dispatch(u(`s-${i}`))));
    const t2 = await reopen(t, { size: 10 });
    await waitFor(() => t2.historySize() === 10);
    expect((await ids(t2)).ids).toEqual(Array.from({ length: 10 }, (_, i) => `s-${90 + i}`));
  });

  it('expires updates by age, hides them before cleanup, and keeps seq after all expired', async () => {
    const t = await make({ maxAge: 300, cleanupInterval: 50 });
    for (let i = 0; i < 10; i++) await t.dispatch(u(`a-${i}`));
    expect((await ids(t)).ids).toHaveLength(10);
    expect((await ids(t, 'a-4')).ids).toEqual(['a-5', 'a-6', 'a-7', 'a-8', 'a-9']);
    await sleep(350);
    expect((await ids(t)).ids).toEqual([]);
    expect((await ids(t, 'a-4')).found).toBe(false);
    await waitFor(() => t.historySize() === 0);
    await t.dispatch(u('a-10'));
    expect((await ids(t)).ids).toEqual(['a-10']);
    await sleep(350);
    await waitFor(() => t.historySize() === 0);
    const got: StoredUpdate[] = [];
    const t2 = await reopen(t, { maxAge: 300 }, (x) => got.push(x));
    expect(t2.historySize()).toBe(0);
    expect(await t2.lastEventId()).toBe('a-10');
    await t2.dispatch(u('a-11'));
    expect(got[0]!.seq).toBe(12n);
  });

  it('resolves a reused id to its earliest occurrence still in history', async () => {
    // Reused ids are stored again only without deduplication (test/publish-dedupe.test.ts).
    const t = await make({ size: 4, dedupeWindow: 0 });
    await t.dispatch(u('dup'));
    await t.dispatch(u('x1'));
    await t.dispatch(u('dup'));
    await t.dispatch(u('x2'));
    expect((await ids(t, 'dup')).ids).toEqual(['x1', 'dup', 'x2']);
    await t.dispatch(u('dup'));
    await t.dispatch(u('x3'));
    // 6 > size 4 + slack 1: trimmed back to 4, the first `dup` and `x1` are gone.
    await waitFor(() => t.historySize() === 4);
    // The cursor is now the second `dup`.
    expect((await ids(t, 'dup')).ids).toEqual(['x2', 'dup', 'x3']);
  });

  it('indexes long, empty and unusual ids', async () => {
    const t = await make();
    const long = 'L'.repeat(5000);
    const longOther = 'L'.repeat(4999) + 'M';
    for (const id of [long, '', 'é😀\u0000\n', longOther, 'end']) await t.dispatch(u(id));
    expect((await ids(t, long)).ids).toEqual(['', 'é😀\u0000\n', longOther, 'end']);
    expect((await ids(t, '')).ids).toEqual(['é😀\u0000\n', longOther, 'end']);
    expect((await ids(t, 'é😀\u0000\n')).ids).toEqual([longOther, 'end']);
    expect((await ids(t, longOther)).ids).toEqual(['end']);
    expect((await ids(t, 'L'.repeat(4999) + 'N')).found).toBe(false);
  });

  it('rejects failed writes as unavailable, keeps delivering the others in order, and recovers', async () => {
    const got: StoredUpdate[] = [];
    const t = await make({}, (x) => got.push(x));
    await t.dispatch(u('ok-1'));
    const root = (t as unknown as { stores: { root: { batch(fn: () => void): Promise<boolean> } } }).stores.root;
    const spy = vi.spyOn(root, 'batch');
    spy.mockImplementationOnce(() => {
      throw new Error('synchronous failure');
    });
    // Dispatches of one turn share one transaction (group commit): a failed commit fails them all,
    // as not stored, and the next one commits.
    const results = await Promise.allSettled([t.dispatch(u('sync-fail')), t.dispatch(u('sync-fail-2'))]);
    expect(results[0]).toMatchObject({ status: 'rejected', reason: expect.any(TransportUnavailableError) });
    expect(results[1]).toMatchObject({ status: 'rejected', reason: expect.any(TransportUnavailableError) });
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ stored: 'no' });
    await t.dispatch(u('ok-2'));
    expect(got.map((g) => g.id)).toEqual(['ok-1', 'ok-2']);

    // The disk fills up: every commit fails until space is freed.
    spy.mockImplementation(() => Promise.reject(new Error('No space left on device (ENOSPC)')));
    const err: unknown = await t.dispatch(u('fail')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportUnavailableError);
    expect((err as Error).message).toMatch(/LMDB write failed: No space left/);
    expect(t.health()).toEqual({ ready: false, reason: 'LMDB write failed: No space left on device (ENOSPC)' });
    spy.mockRestore();
    await waitFor(() => t.health().ready, 6000);
    await t.dispatch(u('ok-3'));
    expect(got.map((g) => g.id)).toEqual(['ok-1', 'ok-2', 'ok-3']);
    expect(got[2]!.seq > got[1]!.seq).toBe(true);
    expect((await ids(t)).ids).toEqual(['ok-1', 'ok-2', 'ok-3']);
  });

  it('reports an unopenable store as not ready and rejects dispatches', async () => {
    const file = path.join(ROOT, `blocker-${++counter}`);
    fs.writeFileSync(file, 'not a directory');
    const t = new LmdbTransport({ path: path.join(file, 'sub', 'hub.lmdb') });
    open.push(t);
    await t.start(() => {});
    expect(t.health().ready).toBe(false);
    expect(t.health().reason).toMatch(/cannot open LMDB store/);
    await expect(t.dispatch(u('x'))).rejects.toBeInstanceOf(TransportUnavailableError);
    await expect(t.history('earliest', () => {})).rejects.toBeInstanceOf(TransportUnavailableError);
  });

  it('refuses a second instance on the same path in one process, and dispatch after close', async () => {
    const t = await make();
    const t2 = new LmdbTransport({ path: t.path });
    open.push(t2);
    expect(t2.health()).toMatchObject({ ready: false, reason: expect.stringMatching(/already open/) });
    await t.close();
    await expect(t.dispatch(u('late'))).rejects.toBeInstanceOf(TransportUnavailableError);
    expect(t.health()).toEqual({ ready: false, reason: 'transport closed' });
  });

  it('uses a directory when the path has no extension', async () => {
    const dir = path.join(ROOT, `dir-${++counter}`);
    const t = new LmdbTransport({ path: dir });
    open.push(t);
    await t.start(() => {});
    await t.dispatch(u('d'));
    expect(fs.statSync(dir).isDirectory()).toBe(true);
    expect(fs.existsSync(path.join(dir, 'data.mdb'))).toBe(true);
  });

  describe('crash safety', () => {
    const outDir = path.join(fileURLToPath(new URL('..', import.meta.url)), 'node_modules', '.cache', `quicksilver-lmdb-test-${process.pid}`);
    const modulePath = path.join(outDir, 'transports', 'lmdb.js');
    beforeAll(() => {
      // A private build (other test files may be building dist/ concurrently). Type errors in
      // unrelated files do not stop tsc from emitting, so only the output is checked.
      const cwd = fileURLToPath(new URL('..', import.meta.url));
      try {
        execFileSync(
          process.execPath,
          ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--outDir', outDir, '--sourceMap', 'false', '--declaration', 'false'],
          { cwd, stdio: 'pipe' },
        );
      } catch {
        // see above
      }
      expect(fs.existsSync(modulePath)).toBe(true);
    });
    afterAll(() => fs.rmSync(outDir, { recursive: true, force: true }));

    it('keeps every acknowledged update after kill -9, and continues the seq', async () => {
      const store = freshPath();
      const fixture = fileURLToPath(new URL('./fixtures/lmdb-publisher.mjs', import.meta.url));
      const acked: string[] = [];
      for (const round of ['k1', 'k2']) {
        const child = spawn(process.execPath, [fixture, pathToFileURL(modulePath).href, store, round], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let buf = '';
        let stderr = '';
        let ready = false;
        child.stderr.on('data', (d: Buffer) => (stderr += d));
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          const lines = buf.split('\n');
          buf = lines.pop()!;
          for (const line of lines) {
            if (line === 'ready') ready = true;
            else if (line) acked.push(line);
          }
        });
        const exited = new Promise<NodeJS.Signals | number | null>((r) => child.on('close', (code, signal) => r(signal ?? code)));
        await waitFor(() => ready || child.exitCode !== null, 10_000).catch(() => {});
        expect(ready, stderr).toBe(true);
        await sleep(1000);
        child.kill('SIGKILL');
        expect(await exited).toBe('SIGKILL');
      }
      expect(acked.length).toBeGreaterThan(100);

      const t = new LmdbTransport({ path: store, size: 1_000_000 });
      open.push(t);
      const got: StoredUpdate[] = [];
      await t.start((x) => got.push(x));
      const h = await ids(t);
      const stored = new Set(h.ids);
      const missing = acked.filter((id) => !stored.has(id));
      expect(missing).toEqual([]);
      // Strictly increasing seq over both runs, and the next dispatch continues after the max.
      for (let i = 1; i < h.updates.length; i++) expect(h.updates[i]!.seq > h.updates[i - 1]!.seq).toBe(true);
      const max = h.updates[h.updates.length - 1]!.seq;
      await t.dispatch(u('after-crash'));
      expect(got[0]!.seq).toBe(max + 1n);
      // The second run resumed after the first one's updates.
      const firstK2 = h.updates.findIndex((x) => x.id.startsWith('k2-'));
      expect(h.updates.slice(firstK2).every((x) => x.id.startsWith('k2-'))).toBe(true);
      console.log(`lmdb crash test: ${acked.length} acknowledged updates over 2 runs, ${h.ids.length} stored`);
    }, 20_000);

    // kill -9 keeps what reached the page cache anyway; what a power loss keeps is decided by the
    // order of syscalls. lmdb-js writes the pages through its memory map (invisible to strace), then
    // fdatasync()s the file and writes the meta page through an O_DSYNC descriptor. Under strace,
    // each acknowledgement must come after an fdatasync that began after its dispatch, followed by
    // a meta page write. That catches acknowledging without syncing (noSync, mapAsync, a commit
    // that does not wait); it cannot tell one transaction's sync from the next one's, so the
    // overlappingSync stays off in lmdb.ts's `open()` options, with a comment saying why.
    const strace = spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;
    it.skipIf(!strace && !process.env.CI)('acknowledges a dispatch only after an fdatasync begun after it and a meta write (strace, group commit)', async () => {
      const store = freshPath();
      const fixture = fileURLToPath(new URL('./fixtures/lmdb-sync-order.mjs', import.meta.url));
      const traceFile = path.join(ROOT, `strace-${++counter}.txt`);
      const count = 400;
      const r = spawnSync(
        'strace',
        ['-f', '-ttt', '-e', 'trace=write,pwrite64,pwritev,fdatasync,fsync,msync', '-e', 'signal=none', '-s', '64', '-o', traceFile, process.execPath, fixture, pathToFileURL(modulePath).href, store, String(count)],
        { encoding: 'utf8', timeout: 60_000 },
      );
      expect(r.status, r.stderr).toBe(0);
      // "<pid> <time> call(args) = ret", or split in "<unfinished ...>" / "<... call resumed>".
      type Call = { name: string; fd: number; start: number; end: number; arg: string; line: string };
      const calls: Call[] = [];
      const open = new Map<string, Call>();
      for (const line of fs.readFileSync(traceFile, 'utf8').split('\n')) {
        const m = /^(\d+) +([\d.]+) (.*)$/.exec(line);
        if (!m) continue;
        const [, pid, t, rest] = m;
        const time = Number(t);
        const resumed = /^<\.\.\. (\w+) resumed>/.exec(rest!);
        if (resumed) {
          const c = open.get(`${pid}:${resumed[1]}`);
          if (c) {
            c.end = time;
            open.delete(`${pid}:${resumed[1]}`);
          }
          continue;
        }
        const call = /^(\w+)\((\d+)(?:, "((?:[^"\\]|\\.)*)")?/.exec(rest!);
        if (!call) continue;
        const c: Call = { name: call[1]!, fd: Number(call[2]), start: time, end: time, arg: call[3] ?? '', line: rest! };
        calls.push(c);
        if (rest!.endsWith('<unfinished ...>')) {
          c.end = Infinity;
          open.set(`${pid}:${c.name}`, c);
        }
      }
      const dispatched = new Map<string, number>();
      const syncs = calls.filter((c) => c.name === 'fdatasync' || c.name === 'fsync');
      const dataFds = new Set(syncs.map((c) => c.fd));
      const metaWrites = calls.filter((c) => c.name === 'pwrite64' && !dataFds.has(c.fd));
      let acked = 0;
      const unsafe: string[] = [];
      for (const c of calls) {
        if (c.name !== 'write' || (c.fd !== 1 && c.fd !== 2)) continue;
        const m = /^([DA]) (s-\d+)\\n$/.exec(c.arg);
        if (!m) continue;
        if (m[1] === 'D') {
          dispatched.set(m[2]!, c.start);
          continue;
        }
        acked++;
        const since = dispatched.get(m[2]!);
        const sync = since === undefined ? undefined : syncs.find((x) => x.start > since && x.end < c.start);
        const meta = sync && metaWrites.find((x) => x.start >= sync.end && x.end < c.start);
        if (!sync || !meta) unsafe.push(`${m[2]!}: ${!sync ? 'no fdatasync begun after its dispatch' : 'no meta write after the sync'} before the ack`);
      }
      expect(acked).toBe(count);
      expect(unsafe.slice(0, 5), `${unsafe.length} acknowledged too early`).toEqual([]);
      // Group commit: far fewer syncs than updates (16 in flight share them).
      expect(syncs.length).toBeLessThan(count / 2);
      console.log(`lmdb sync order: ${count} acknowledgements, each after an fdatasync begun after its dispatch and a meta write; ${syncs.length} fdatasync calls`);
    }, 90_000);
  });
});

describe('lmdb transport URL', () => {
  it('reads absolute, relative and home paths', () => {
    expect(lmdbOptionsFromUrl(new URL('lmdb:///var/lib/quicksilver/hub.lmdb'))).toEqual({ path: '/var/lib/quicksilver/hub.lmdb' });
    expect(lmdbOptionsFromUrl(new URL('lmdb://./data/hub.lmdb')).path).toBe('./data/hub.lmdb');
    expect(lmdbOptionsFromUrl(new URL('lmdb://../data/hub.lmdb')).path).toBe('../data/hub.lmdb');
    expect(lmdbOptionsFromUrl(new URL('lmdb://hub.lmdb')).path).toBe('hub.lmdb');
    expect(lmdbOptionsFromUrl(new URL('lmdb://data/hub.lmdb')).path).toBe('data/hub.lmdb');
    expect(lmdbOptionsFromUrl(new URL('lmdb:data/hub.lmdb')).path).toBe('data/hub.lmdb');
    expect(lmdbOptionsFromUrl(new URL('lmdb://./my%20dir/hub.lmdb')).path).toBe('./my dir/hub.lmdb');
    expect(lmdbOptionsFromUrl(new URL('lmdb://~/hub.lmdb')).path).toBe('~/hub.lmdb');
    expect(() => lmdbOptionsFromUrl(new URL('lmdb://'))).toThrow(/needs a store path/);
    expect(() => lmdbOptionsFromUrl(new URL('lmdb:///'))).toThrow(/needs a store path/);
  });

  it('reads size, max_age and cleanup_interval', () => {
    expect(lmdbOptionsFromUrl(new URL('lmdb:///x/hub.lmdb?size=100000&max_age=7d&cleanup_interval=30s'))).toEqual({
      path: '/x/hub.lmdb',
      size: 100_000,
      maxAge: 7 * 86_400_000,
      cleanupInterval: 30_000,
    });
    expect(lmdbOptionsFromUrl(new URL('lmdb:///x?max_age=0&size=0'))).toMatchObject({ maxAge: 0, size: 0 });
    expect(lmdbOptionsFromUrl(new URL('lmdb:///x?max_age=1500'))).toMatchObject({ maxAge: 1500 });
    expect(() => lmdbOptionsFromUrl(new URL('lmdb:///x?size=-1'))).toThrow(/size/);
    expect(() => lmdbOptionsFromUrl(new URL('lmdb:///x?size=abc'))).toThrow(/size/);
    expect(() => lmdbOptionsFromUrl(new URL('lmdb:///x?max_age=7days'))).toThrow(/max_age.*invalid duration/);
    expect(() => lmdbOptionsFromUrl(new URL('lmdb:///x?sise=1'))).toThrow(/unknown parameter "sise"/);
    expect(() => lmdbOptionsFromUrl(new URL('redis://x'))).toThrow();
  });

  it('maps legacy bolt:// URLs to an lmdb store next to the Bolt file', () => {
    expect(lmdbOptionsFromUrl(new URL('bolt://updates.db?size=1000'))).toEqual({ path: 'updates.db.lmdb', size: 1000 });
    expect(lmdbOptionsFromUrl(new URL('bolt:///var/lib/mercure/mercure.db?size=10&cleanup_frequency=0.3&bucket_name=u'))).toEqual({
      path: '/var/lib/mercure/mercure.db.lmdb',
      size: 10,
    });
    expect(lmdbOptionsFromUrl(new URL('bolt://./bolt.db')).path).toBe('./bolt.db.lmdb');
  });

  it('parses durations', () => {
    expect(parseDuration('7d')).toBe(604_800_000);
    expect(parseDuration('24h')).toBe(86_400_000);
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('60000')).toBe(60_000);
    expect(parseDuration('0')).toBe(0);
    for (const bad of ['', 'd', '7 d', '-1s', '7x', '1h 30m']) expect(() => parseDuration(bad)).toThrow(/invalid duration/);
  });

  it('builds a working transport with bounded defaults', async () => {
    const p = path.join(ROOT, `url-${++counter}`, 'hub.lmdb');
    const t = lmdbTransportFromUrl(new URL(`lmdb://${p}`), { error() {}, warn() {}, info() {}, debug() {} });
    try {
      await t.start(() => {});
      expect(t.name).toBe('lmdb');
      expect(t.path).toBe(p);
      expect(t.health().ready).toBe(true);
      await t.dispatch(u('via-url'));
      expect(await t.lastEventId()).toBe('via-url');
      expect([LMDB_DEFAULT_SIZE, LMDB_DEFAULT_MAX_AGE]).toEqual([100_000, 7 * 86_400_000]);
    } finally {
      await t.close();
    }
  });
});
