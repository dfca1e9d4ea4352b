import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { KEY as DEV_KEY, legacyToken, publish } from './helpers.js';
import { freePort } from './process-helpers.js';

// One store, one owning hub: a second hub (or cluster) on a store in use is refused with exit 2
// and one line naming the store and the owner's pid; a crashed owner's store opens at once.

const CLI = resolve('dist/cli.js');
// Not a well-known key: the hub would warn about that one, and the refusal must be the only line.
const KEY = 'store-ownership-test-key-0123456789abcdef';
const root = mkdtempSync(join(tmpdir(), 'qs-ownership-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const freshDir = (): string => join(root, `d${++n}`);

interface Proc {
  child: ChildProcess;
  out: () => string;
  exit: Promise<number | null>;
}
const running: Proc[] = [];
afterEach(() => {
  for (const p of running.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
});

function run(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Proc {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd ?? process.cwd(),
    env: { PATH: process.env.PATH ?? '', LOG_FORMAT: 'json', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const p = { child, out: () => out, exit };
  running.push(p);
  return p;
}

/** Starts a hub and resolves its URL once it says it is ready (throws with its output if it exits). */
async function startHub(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<Proc & { url: string }> {
  const p = run(args, options);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const m = /Quicksilver hub ready[^\n]*"url":"([^"]+)"|"url":"([^"]+)"[^\n]*Quicksilver hub ready/.exec(p.out());
    if (m) return { ...p, url: `${m[1] ?? m[2]}/.well-known/mercure` };
    if (p.child.exitCode !== null) throw new Error(`hub exited with ${p.child.exitCode}: ${p.out()}`);
    if (Date.now() > deadline) throw new Error(`hub did not start: ${p.out()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Ids replayed from the start of history, read until `count` arrived (or 5 s passed). */
function replayIds(hubUrl: string, count: number): Promise<string[]> {
  return new Promise((resolveIds, reject) => {
    const ids: string[] = [];
    let buffer = '';
    const req = http.get(`${hubUrl}?topic=*&lastEventID=earliest`, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`replay answered ${res.statusCode}`));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        for (const m of buffer.matchAll(/^id: (.*)$/gm)) ids.push(m[1]!);
        buffer = buffer.slice(buffer.lastIndexOf('\n') + 1);
        if (ids.length >= count) finish();
      });
    });
    const finish = (): void => {
      clearTimeout(timer);
      req.destroy();
      resolveIds(ids);
    };
    const timer = setTimeout(finish, 5000);
    req.on('error', () => {});
  });
}

/** The exit code, or 'running' if the process is still up after `ms`. */
const exitWithin = (p: Proc, ms = 10_000): Promise<number | null | 'running'> =>
  Promise.race([p.exit, new Promise<'running'>((r) => setTimeout(() => r('running'), ms))]);

const args = async (store: string, workers = 1): Promise<string[]> => [
  '--jwt-key', KEY, '--anonymous', '--workers', String(workers),
  '--addr', `127.0.0.1:${await freePort()}`, '--transport-url', `lmdb://${store}`,
];

async function publishIds(hubUrl: string, ids: string[], key = KEY): Promise<void> {
  const t = await legacyToken({ publish: ['*'] }, key);
  for (const id of ids) {
    const res = await publish(hubUrl, { topic: 'https://example.com/o', id, data: id }, t);
    expect(res.status, res.body).toBe(200);
  }
}

function expectRefusal(out: string, store: string, pid: number): void {
  const lines = out.trim().split('\n');
  expect(lines, out).toHaveLength(1);
  expect(lines[0]).toContain(`quicksilver: transport: the store ${store} is in use by another hub (pid ${pid})`);
}

describe('one owning hub per embedded store', () => {
  it('refuses a second hub on a store in use (exit 2, one line with the owner pid); the first loses nothing', async () => {
    const store = join(freshDir(), 'hub.lmdb');
    const first = await startHub(await args(store));
    await publishIds(first.url, ['a1', 'a2', 'a3']);

    const second = run(await args(store));
    expect(await exitWithin(second)).toBe(2);
    expectRefusal(second.out(), store, first.child.pid!);

    await publishIds(first.url, ['a4', 'a5']);
    expect(await replayIds(first.url, 5)).toEqual(['a1', 'a2', 'a3', 'a4', 'a5']);
  });

  it('opens a store left by a kill -9ed hub at once, with its history', async () => {
    const store = join(freshDir(), 'hub.lmdb');
    const first = await startHub(await args(store));
    await publishIds(first.url, ['k1', 'k2']);
    first.child.kill('SIGKILL');
    await first.exit;

    const t0 = Date.now();
    const second = await startHub(await args(store));
    // No stale claim to wait out: the start costs what a start costs.
    expect(Date.now() - t0).toBeLessThan(5000);
    await publishIds(second.url, ['k3']);
    expect(await replayIds(second.url, 3)).toEqual(['k1', 'k2', 'k3']);
  });

  it('refuses a second cluster on a store in use, naming the first primary', async () => {
    const store = join(freshDir(), 'hub.lmdb');
    const first = await startHub(await args(store, 2));
    await publishIds(first.url, ['c1', 'c2']);

    const second = run(await args(store, 2));
    expect(await exitWithin(second)).toBe(2);
    expectRefusal(second.out(), store, first.child.pid!);

    await publishIds(first.url, ['c3']);
    expect(await replayIds(first.url, 3)).toEqual(['c1', 'c2', 'c3']);
  });

  it('gives the dev profile its own store: npm start and a production hub in one directory do not collide', async () => {
    const cwd = freshDir();
    mkdirSync(cwd, { recursive: true });
    const dev = await startHub(['--dev', '--workers', '1', '--addr', `127.0.0.1:${await freePort()}`], { cwd });
    // The tutorial's second hub: legacy variables, default store.
    const prod = await startHub([], {
      cwd,
      env: { JWT_KEY: KEY, ALLOW_ANONYMOUS: '1', ADDR: `127.0.0.1:${await freePort()}`, QUICKSILVER_WORKERS: '1' },
    });
    await publishIds(dev.url, ['dev-1'], DEV_KEY);
    await publishIds(prod.url, ['prod-1']);
    expect(await replayIds(dev.url, 1)).toEqual(['dev-1']);
    expect(await replayIds(prod.url, 1)).toEqual(['prod-1']);
    expect(existsSync(join(cwd, '.quicksilver', 'dev.lmdb'))).toBe(true);
    expect(existsSync(join(cwd, '.quicksilver', 'hub.lmdb'))).toBe(true);
  });

  it('check-config warns about the default relative store outside --dev, and about a store in use', async () => {
    const cwd = freshDir();
    mkdirSync(cwd, { recursive: true });
    const check = run(['check-config'], { cwd, env: { JWT_KEY: KEY } });
    expect(await exitWithin(check)).toBe(0);
    expect(check.out()).toMatch(/warning: transport: the default store lmdb:\/\/\.\/\.quicksilver\/hub\.lmdb is relative/);

    const devCheck = run(['check-config', '--dev'], { cwd });
    expect(await exitWithin(devCheck)).toBe(0);
    expect(devCheck.out()).not.toMatch(/relative/);

    const store = join(cwd, 'hub.lmdb');
    const hub = await startHub(await args(store));
    const inUse = run(['check-config', '--jwt-key', KEY, '--transport-url', `lmdb://${store}`]);
    expect(await exitWithin(inUse)).toBe(0);
    expect(inUse.out()).toContain(`warning: transport: the store ${store} is in use by another hub (pid ${hub.child.pid})`);
  });
});
