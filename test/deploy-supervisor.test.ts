/**
 * deploy/supervisor/quicksilver.conf under a real supervisord (Debian's supervisor package,
 * installed by scripts/install-deploy-tools.sh). The program file is used as shipped, with only
 * its paths moved: /opt/quicksilver to this repository, /var/lib and /var/log/quicksilver to a
 * temporary directory, ADDR to a free port, the user to `nobody` (root only) and minfds to what
 * this machine allows. Then:
 *
 * - the hub answers /healthz and a publish/subscribe round trip, with the legacy variables of the
 *   classic supervisor guides (JWT_KEY, ALLOW_ANONYMOUS, ...), as the program's user, with the
 *   file-descriptor limit raised by minfds;
 * - a hub killed with SIGKILL is restarted by supervisor, and the subscriber, reconnecting with
 *   Last-Event-ID, misses nothing;
 * - `supervisorctl stop` drains it: exit status 0, well within stopwaitsecs.
 *
 * Skipped with a message when supervisor cannot be installed, unless CI is set (then it fails).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyToken } from './helpers.js';
import { freePort, waitUntil } from './process-helpers.js';

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const PROGRAM = join(ROOT, 'deploy', 'supervisor', 'quicksilver.conf');
const IS_ROOT = process.getuid?.() === 0;
/**
 * supervisord starts with a soft file limit of 1024 and must raise it to minfds. (It would raise
 * the hard limit too where it may: here root lacks CAP_SYS_RESOURCE, so minfds stays below the
 * hard limit this test inherits.)
 */
const MINFDS = 10_000;

async function installed(tools: string[]): Promise<string | null> {
  try {
    await run('bash', [join(ROOT, 'scripts', 'install-deploy-tools.sh'), ...tools], { timeout: 600_000 });
    return null;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const why = `${tools.join(', ')} not installable: ${(e.stderr || e.message).trim()}`;
    if (process.env.CI) throw new Error(why);
    console.warn(`deploy-supervisor: skipped: ${why}`);
    return why;
  }
}
const unavailable = await installed(['supervisor']);

/**
 * What a browser's EventSource does: reconnects whenever the stream ends, cleanly or not (a hub
 * killed with SIGKILL resets the connection), sending the last id it got as Last-Event-ID.
 * (process-helpers' ReconnectingSubscriber reconnects only after a clean end.)
 */
class EventSourceLike {
  events: Array<{ id: string; data: string }> = [];
  connections = 0;
  private lastId: string | undefined;
  private stopped = false;
  private req: http.ClientRequest | null = null;

  constructor(private readonly url: string) {
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    let again = false;
    const retry = (): void => {
      if (again || this.stopped) return;
      again = true;
      setTimeout(() => this.connect(), 200);
    };
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    if (this.lastId !== undefined) headers['Last-Event-ID'] = this.lastId;
    this.req = http.get(this.url, { headers }, (res) => {
      res.on('error', () => {});
      res.on('close', retry);
      if (res.statusCode !== 200) {
        res.resume();
        return;
      }
      this.connections++;
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let i: number;
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          const id = /^id: (.*)$/m.exec(block)?.[1];
          const data = [...block.matchAll(/^data: (.*)$/gm)].map((m) => m[1]).join('\n');
          if (id !== undefined) this.lastId = id;
          if (data !== '') this.events.push({ id: id ?? '', data });
        }
      });
    });
    this.req.on('error', retry);
  }

  close(): void {
    this.stopped = true;
    this.req?.destroy();
  }
}

/** supervisor's environment= syntax: KEY="value",KEY2="value2". */
function parseEnvironment(line: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of line.matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) env[m[1]!] = m[2]!;
  return env;
}

describe.skipIf(unavailable !== null)('deploy/supervisor/quicksilver.conf under supervisord', () => {
  const shipped = readFileSync(PROGRAM, 'utf8');
  let dir: string;
  let port: number;
  let conf: string;
  let supervisord: ChildProcess;
  let supervisordLog = '';
  let sub: EventSourceLike | undefined;
  let env: Record<string, string>;
  let minfds: number;

  const ctl = async (...args: string[]): Promise<string> => {
    // Bounded: a supervisorctl stuck on its socket must fail the step, not hang the suite.
    const r = await run('supervisorctl', ['-c', conf, ...args], { timeout: 10_000 }).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }));
    return r.stdout.trim();
  };
  const hubPid = async (): Promise<number> => Number(await ctl('pid', 'quicksilver'));
  const base = () => `http://127.0.0.1:${port}`;
  const healthy = async (): Promise<boolean> => {
    try {
      return (await fetch(`${base()}/healthz`)).status === 200;
    } catch {
      return false;
    }
  };
  const waitFor = async (cond: () => Promise<boolean>, timeout: number, what: string): Promise<void> => {
    const end = Date.now() + timeout;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}\nsupervisord:\n${supervisordLog}\nhub:\n${hubLog()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const hubLog = (): string => {
    try {
      return readFileSync(join(dir, 'log', 'hub.log'), 'utf8');
    } catch {
      return '';
    }
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'qs-supervisor-'));
    chmodSync(dir, 0o755);
    port = await freePort();
    minfds = Math.min(MINFDS, Number((await run('bash', ['-c', 'ulimit -Hn'])).stdout.trim()));
    for (const d of ['state', 'log']) {
      mkdirSync(join(dir, d));
      if (IS_ROOT) chownSync(join(dir, d), 65534, 65534);
    }
    const program = shipped
      .replaceAll('/opt/quicksilver', ROOT)
      .replaceAll('/var/lib/quicksilver', join(dir, 'state'))
      .replaceAll('/var/log/quicksilver', join(dir, 'log'))
      .replace('ADDR="127.0.0.1:3000"', `ADDR="127.0.0.1:${port}"`)
      .replace(/^user=.*$/m, IS_ROOT ? 'user=nobody' : '')
      .replace(/^minfds=.*$/m, `minfds=${minfds}`);
    expect(program).toContain(`ADDR="127.0.0.1:${port}"`);
    writeFileSync(join(dir, 'program.conf'), program);
    env = parseEnvironment(/^environment=(.*)$/m.exec(program)![1]!);
    conf = join(dir, 'supervisord.conf');
    // What /etc/supervisor/supervisord.conf has, with a private socket, log and pid file.
    writeFileSync(conf, [
      '[unix_http_server]', `file=${dir}/supervisor.sock`, 'chmod=0700',
      '[supervisord]', `logfile=${dir}/supervisord.log`, `pidfile=${dir}/supervisord.pid`, `childlogdir=${dir}/log`, 'minfds=1024',
      ...(IS_ROOT ? ['user=root'] : []),
      '[rpcinterface:supervisor]', 'supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface',
      '[supervisorctl]', `serverurl=unix://${dir}/supervisor.sock`,
      '[include]', `files=${dir}/program.conf`, '',
    ].join('\n'));
    // A low soft limit first, so that minfds has to raise it.
    supervisord = spawn('bash', ['-c', 'ulimit -Sn 1024 && exec supervisord -n -c "$1"', 'bash', conf], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    supervisord.stdout!.on('data', (d: Buffer) => (supervisordLog += d.toString()));
    supervisord.stderr!.on('data', (d: Buffer) => (supervisordLog += d.toString()));
  }, 30_000);

  afterAll(async () => {
    sub?.close();
    if (supervisord && supervisord.exitCode === null) {
      const exited = new Promise((r) => supervisord.once('exit', r));
      const t = setTimeout(() => supervisord.kill('SIGKILL'), 15_000);
      await ctl('shutdown');
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  }, 40_000);

  it('keeps the legacy variables of the classic guides, and a stop timeout above the drain time', () => {
    for (const k of ['JWT_KEY', 'ADDR', 'ALLOW_ANONYMOUS', 'CORS_ALLOWED_ORIGINS', 'PUBLISH_ALLOWED_ORIGINS', 'USE_FORWARDED_HEADERS', 'TRANSPORT_URL']) {
      expect(env, k).toHaveProperty(k);
    }
    expect(shipped).toMatch(/^\[program:quicksilver\]$/m);
    expect(shipped).toMatch(/^autorestart=true$/m);
    expect(shipped).toMatch(/^stopsignal=TERM$/m);
    expect(shipped).toMatch(/^redirect_stderr=true$/m);
    expect(shipped).toMatch(/^minfds=1048576$/m);
    const stopwait = Number(/^stopwaitsecs=(\d+)$/m.exec(shipped)![1]);
    const drain = Number(/--shutdown-timeout (\d+)s/.exec(shipped)![1]);
    expect(stopwait).toBeGreaterThanOrEqual(drain + 10);
  });

  it('starts the hub: /healthz, a publish/subscribe round trip, the right user and file limit', async () => {
    await waitFor(healthy, 15_000, 'the hub to answer /healthz');
    const topic = 'https://example.com/supervisor/1';
    // ALLOW_ANONYMOUS=1: no subscriber token, as in the guide's EventSource example.
    sub = new EventSourceLike(`${base()}/.well-known/mercure?topic=${encodeURIComponent(topic)}`);
    await waitUntil(() => sub!.connections === 1, 5000, 'the subscriber to connect');
    const token = await legacyToken({ publish: ['*'] }, env.JWT_KEY);
    const publish = async (data: string): Promise<number> => (await fetch(`${base()}/.well-known/mercure`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      body: new URLSearchParams({ topic, data }),
    })).status;
    expect(await publish('one')).toBe(200);
    await waitUntil(() => sub!.events.length === 1, 5000, 'the update');
    expect(sub.events[0]!.data).toBe('one');

    const pid = await hubPid();
    expect(pid).toBeGreaterThan(0);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    if (IS_ROOT) expect(/^Uid:\s+(\d+)/m.exec(status)![1]).toBe('65534');
    const nofile = (p: number | string): number[] =>
      /Max open files\s+(\d+)\s+(\d+)/.exec(readFileSync(`/proc/${p}/limits`, 'utf8'))!.slice(1).map(Number);
    // supervisord raised its limit to minfds (from the program file's [supervisord] section)...
    expect(nofile(supervisord.pid!)[0]).toBe(minfds);
    expect(supervisordLog).toContain(`Increased RLIMIT_NOFILE limit to ${minfds}`);
    // ...and Node.js raises its own soft limit to the hard one it inherits.
    const [soft, hard] = nofile(pid);
    expect(soft).toBe(hard);
    expect(soft).toBeGreaterThanOrEqual(minfds);
  });

  it('restarts a hub killed with SIGKILL; the subscriber reconnects and misses nothing', async () => {
    await waitFor(async () => (await ctl('status', 'quicksilver')).includes('RUNNING'), 15_000, 'RUNNING (startsecs)');
    const before = await hubPid();
    process.kill(before, 'SIGKILL');
    await waitFor(async () => {
      const pid = await hubPid();
      return pid > 0 && pid !== before && (await healthy());
    }, 15_000, 'supervisor to restart the hub');
    const token = await legacyToken({ publish: ['*'] }, env.JWT_KEY);
    const res = await fetch(`${base()}/.well-known/mercure`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}` },
      body: new URLSearchParams({ topic: 'https://example.com/supervisor/1', data: 'two' }),
    });
    expect(res.status).toBe(200);
    await waitUntil(() => sub!.events.length === 2, 10_000, 'the update after the restart');
    expect(sub!.events.map((e) => e.data)).toEqual(['one', 'two']);
    expect(sub!.connections).toBe(2);
  });

  it('supervisorctl stop drains the hub: exit status 0', async () => {
    const t0 = Date.now();
    expect(await ctl('stop', 'quicksilver')).toMatch(/quicksilver: stopped/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    await waitFor(async () => readFileSync(join(dir, 'supervisord.log'), 'utf8').includes('stopped: quicksilver (exit status 0)'),
      5000, 'the exit status in the supervisord log');
    expect(hubLog()).toMatch(/"msg":"bye"/);
    expect(await healthy()).toBe(false);
  });
});
