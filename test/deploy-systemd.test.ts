/**
 * deploy/quicksilver.service and deploy/quicksilver.env.example, as far as a machine without a
 * running systemd allows:
 *
 * - the unit has the keys the operations guide promises (hardening, LimitNOFILE, a stop timeout
 *   above the hub's drain time, no MemoryDenyWriteExecute) and no stray ones;
 * - `systemd-analyze verify` accepts it without a single warning, and `systemd-analyze security
 *   --offline` rates its exposure at most 2.0 ("OK");
 * - its ExecStartPre and ExecStart command lines, expanded the way systemd would with the example
 *   environment file (paths moved to the repository and a temporary state directory), validate
 *   the configuration and start a hub that serves a publish/subscribe round trip and drains on
 *   SIGTERM with exit code 0, well within TimeoutStopSec. As root, the hub runs as an
 *   unprivileged user with no_new_privs and umask 0077, as DynamicUser= would run it, with the
 *   installation tree read-only to it.
 *
 * systemd-analyze comes with Debian's systemd package (in the machine image); when it is missing
 * those two checks are skipped with a message, unless CI is set (then they fail).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyToken } from './helpers.js';
import { freePort, ReconnectingSubscriber, waitUntil } from './process-helpers.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const UNIT = join(ROOT, 'deploy', 'quicksilver.service');
const ENV_EXAMPLE = join(ROOT, 'deploy', 'quicksilver.env.example');
const IS_ROOT = process.getuid?.() === 0;
const NOBODY = 65534;

type Unit = Map<string, Array<[string, string]>>;

/** systemd's unit syntax: sections, KEY=VALUE (repeatable), comments with # or ;, \ continuations. */
function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section = '';
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      if (!unit.has(section)) unit.set(section, []);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`not a KEY=VALUE line: ${line}`);
    unit.get(section)!.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return unit;
}

function values(unit: Unit, section: string, key: string): string[] {
  return (unit.get(section) ?? []).filter(([k]) => k === key).map(([, v]) => v);
}

function one(unit: Unit, section: string, key: string): string {
  const v = values(unit, section, key);
  expect(v, `${section}.${key}`).toHaveLength(1);
  return v[0]!;
}

/** systemd's EnvironmentFile= syntax: KEY=VALUE, comments, optional single or double quotes. */
function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`not a KEY=VALUE line: ${line}`);
    let v = m[2]!.trim();
    if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0])) v = v.slice(1, -1);
    env[m[1]!] = v;
  }
  return env;
}

/**
 * An Exec*= command line as systemd runs it: `$VAR` is split into words, `${VAR}` stays one word,
 * a leading `-`, `@`, `+`, `!` prefix is dropped.
 */
function expandExec(line: string, env: Record<string, string>): string[] {
  const words = line.replace(/^[-@+!:]+/, '').split(/\s+/).filter(Boolean);
  return words.flatMap((w) => {
    const whole = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(w);
    if (whole) return (env[whole[1]!] ?? '').split(/\s+/).filter(Boolean);
    return [w.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, n: string) => env[n] ?? '')];
  });
}

function durationMs(v: string): number {
  const m = /^(\d+)(ms|s|min|m)?$/.exec(v);
  if (!m) throw new Error(`unsupported duration ${v}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'min' || m[2] === 'm' ? n * 60_000 : n * 1000;
}

const unit = parseUnit(readFileSync(UNIT, 'utf8'));
const exampleEnv = parseEnvFile(readFileSync(ENV_EXAMPLE, 'utf8'));

function systemdAnalyze(): string | null {
  const r = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  if (r.status === 0) return null;
  const why = 'systemd-analyze not found (Debian package systemd)';
  if (process.env.CI) throw new Error(`${why}: it is part of the machine image and CI needs it`);
  console.warn(`deploy-systemd: skipping the systemd-analyze checks: ${why}`);
  return why;
}
const noAnalyze = systemdAnalyze();

describe('deploy/quicksilver.service', () => {
  it('runs the CLI with the environment file, checks the configuration first, and restarts on failure', () => {
    expect(one(unit, 'Service', 'Type')).toBe('simple');
    expect(one(unit, 'Service', 'EnvironmentFile')).toBe('/etc/quicksilver/quicksilver.env');
    expect(one(unit, 'Service', 'ExecStart')).toMatch(/^\/usr\/bin\/env node \/opt\/quicksilver\/dist\/cli\.js( |$)/);
    expect(one(unit, 'Service', 'ExecStartPre')).toMatch(/^\/usr\/bin\/env node \/opt\/quicksilver\/dist\/cli\.js check-config( |$)/);
    expect(one(unit, 'Service', 'Restart')).toBe('on-failure');
    expect(one(unit, 'Service', 'KillSignal')).toBe('SIGTERM');
    expect(one(unit, 'Service', 'LimitNOFILE')).toBe('1048576');
    expect(one(unit, 'Install', 'WantedBy')).toBe('multi-user.target');
  });

  it('waits longer than the hub drains before killing it', () => {
    const stop = durationMs(one(unit, 'Service', 'TimeoutStopSec'));
    const opts = exampleEnv.QUICKSILVER_OPTS ?? '';
    const drain = durationMs(/--shutdown-timeout[= ](\S+)/.exec(opts)?.[1] ?? '10s');
    expect(stop).toBeGreaterThanOrEqual(drain + 10_000);
  });

  it('is hardened, and leaves W^X to V8', () => {
    const expected: Record<string, string> = {
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      DynamicUser: 'yes',
      StateDirectory: 'quicksilver',
      ReadWritePaths: '/var/lib/quicksilver',
      CapabilityBoundingSet: '',
      AmbientCapabilities: '',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
      RestrictNamespaces: 'yes',
      RestrictSUIDSGID: 'yes',
      LockPersonality: 'yes',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectControlGroups: 'yes',
      SystemCallArchitectures: 'native',
      UMask: '0077',
    };
    for (const [k, v] of Object.entries(expected)) expect(one(unit, 'Service', k), k).toBe(v);
    expect(values(unit, 'Service', 'SystemCallFilter')).toContain('@system-service');
    // V8's JIT needs writable-then-executable pages: this option would crash Node.js.
    expect(values(unit, 'Service', 'MemoryDenyWriteExecute')).toEqual([]);
    expect(readFileSync(UNIT, 'utf8')).toMatch(/MemoryDenyWriteExecute=yes must NOT be set: V8/);
    // The MERCURE_TRANSPORT_URL of the example lives in the state directory.
    expect(exampleEnv.MERCURE_TRANSPORT_URL).toMatch(/^lmdb:\/\/\/var\/lib\/quicksilver\//);
  });

  describe.skipIf(noAnalyze !== null)('systemd-analyze', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'qs-unit-'));
      writeFileSync(join(dir, 'quicksilver.service'), readFileSync(UNIT));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('verify: no warning at all', () => {
      const r = spawnSync('systemd-analyze', ['verify', './quicksilver.service'], { cwd: dir, encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
      expect(r.status).toBe(0);
    });

    it('security --offline: overall exposure at most 2.0', () => {
      const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', './quicksilver.service'], { cwd: dir, encoding: 'utf8' });
      const m = /Overall exposure level for quicksilver\.service: ([\d.]+)/.exec(r.stdout);
      expect(m, r.stdout + r.stderr).not.toBeNull();
      expect(Number(m![1])).toBeLessThanOrEqual(2.0);
    });
  });

  describe('ExecStartPre and ExecStart, run by hand with the example environment file', () => {
    let state: string;
    let env: Record<string, string>;
    let port: number;
    let runAs: string[];

    beforeAll(async () => {
      state = mkdtempSync(join(tmpdir(), 'qs-state-'));
      port = await freePort();
      env = { ...exampleEnv };
      env.ADDR = `127.0.0.1:${port}`;
      env.MERCURE_TRANSPORT_URL = env.MERCURE_TRANSPORT_URL!.replace('/var/lib/quicksilver', state);
      for (const [k, v] of values(unit, 'Service', 'Environment').map((e) => e.split('=', 2) as [string, string])) env[k] = v;
      // As DynamicUser= would: an unprivileged user that owns only the state directory.
      if (IS_ROOT) {
        chownSync(state, NOBODY, NOBODY);
        runAs = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--no-new-privs', '--'];
      } else {
        runAs = [];
      }
    });
    afterAll(() => rmSync(state, { recursive: true, force: true }));

    const command = (key: 'ExecStartPre' | 'ExecStart'): string[] =>
      expandExec(one(unit, 'Service', key), env).map((w) => w.replace('/opt/quicksilver', ROOT));

    /** Runs an Exec line as systemd would: the unit's environment only, its UMask and WorkingDirectory. */
    const launch = (argv: string[]) => {
      const umask = one(unit, 'Service', 'UMask');
      return spawn('sh', ['-c', `umask ${umask} && exec "$@"`, 'sh', ...runAs, ...argv], {
        cwd: state,
        env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    };

    it('ExecStartPre accepts the example configuration, and refuses a broken one with exit code 2', async () => {
      const argv = command('ExecStartPre');
      expect(argv.slice(-5)).toEqual(['check-config', '--shutdown-timeout', '10s', '--log-level', 'info']);
      const run = (extra: Record<string, string> = {}) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const saved = { ...env };
          Object.assign(env, extra);
          const child = launch(argv);
          Object.assign(env, saved);
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.stderr.on('data', (d: Buffer) => (out += d.toString()));
          child.on('exit', (code) => resolve({ code, out }));
        });
      const ok = await run();
      expect(ok.out).toContain('configuration OK');
      expect(ok.code).toBe(0);
      const broken = await run({ MERCURE_PUBLISHER_JWT_KEY: '', MERCURE_TRANSPORT_URL: 'nosuch://x' });
      expect(broken.code).toBe(2);
      expect(broken.out).toMatch(/no publisher key/);
    });

    it('ExecStart serves a publish/subscribe round trip and drains on SIGTERM with exit code 0', async () => {
      const child = launch(command('ExecStart'));
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      try {
        await waitUntil(() => out.includes('Quicksilver hub ready'), 10_000, `the hub to start: ${out}`);
        const base = `http://127.0.0.1:${port}`;
        expect((await fetch(`${base}/healthz`)).status).toBe(200);
        expect((await fetch(`${base}/readyz`)).status).toBe(200);

        const topic = 'https://example.com/systemd/1';
        const subToken = await legacyToken({ subscribe: [topic] }, env.MERCURE_SUBSCRIBER_JWT_KEY);
        const sub = new ReconnectingSubscriber(() => `${base}/.well-known/mercure?topic=${encodeURIComponent(topic)}`,
          { Authorization: `Bearer ${subToken}` });
        await waitUntil(() => sub.connections === 1, 5000, 'the subscriber to connect');
        const pubToken = await legacyToken({ publish: ['*'] }, env.MERCURE_PUBLISHER_JWT_KEY);
        const res = await fetch(`${base}/.well-known/mercure`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${pubToken}` },
          body: new URLSearchParams({ topic, data: 'hello from systemd', private: 'on' }),
        });
        expect(res.status).toBe(200);
        await waitUntil(() => sub.events.length === 1, 5000, 'the update');
        expect(sub.events[0]!.data).toBe('hello from systemd');

        // The store is private to the service user (UMask=0077).
        const storeFile = env.MERCURE_TRANSPORT_URL!.replace(/^lmdb:\/\//, '').replace(/\?.*$/, '');
        const st = statSync(storeFile);
        expect(st.mode & 0o077).toBe(0);
        if (IS_ROOT) expect(st.uid).toBe(NOBODY);

        const t0 = Date.now();
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
        sub.close();
        expect(Date.now() - t0).toBeLessThan(durationMs(one(unit, 'Service', 'TimeoutStopSec')));
        expect(out).toMatch(/shutting down/);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    });
  });
});

// Fail early with a clear message if setpriv (util-linux) is missing where it is needed.
if (IS_ROOT) execFileSync('setpriv', ['--version']);
