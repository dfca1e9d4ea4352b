/**
 * Linux network namespaces for the silent-drop tests (presence-silent-drop.test.ts over HTTP/1.1,
 * presence-h2-drop.test.ts over HTTP/2): the star of namespaces they build, a child started with
 * `ip netns exec` whose stdout is JSON lines kept with their arrival time, and requests made from
 * inside a namespace the test process cannot reach.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

export function ipPath(): string | null {
  for (const p of ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip']) if (existsSync(p)) return p;
  return null;
}

/** Root and a working `ip netns`: checked once, synchronously, to decide whether to run at all. */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (process.getuid?.() !== 0) return 'not running as root';
  const ip = ipPath();
  if (!ip) return '`ip` (iproute2) not found';
  try {
    execFileSync(ip, ['netns', 'list'], { stdio: 'pipe' });
  } catch (err) {
    return `\`ip netns list\` failed: ${(err as Error).message}`;
  }
  return null;
}


export const IP = ipPath() ?? 'ip';

export function ip(...args: string[]): string {
  return execFileSync(IP, args, { stdio: 'pipe', encoding: 'utf8' });
}

export type Line = Record<string, unknown> & { at: number };

/** A child process in a namespace whose stdout is JSON lines, kept with their arrival time. */
export class NsProcess {
  readonly lines: Line[] = [];
  readonly raw: string[] = [];
  stderr = '';
  private readonly child: ChildProcess;
  private waiters = new Set<() => void>();

  constructor(
    readonly name: string,
    ns: string,
    args: string[],
    env: Record<string, string> = {},
  ) {
    // `ip netns exec` execs the command in place: the child's pid is node's.
    this.child = spawn(IP, ['netns', 'exec', ns, process.execPath, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.raw.push(line);
      try {
        const parsed = JSON.parse(line) as unknown;
        if (parsed && typeof parsed === 'object') this.lines.push({ ...(parsed as object), at: performance.now() });
      } catch {
        // Not JSON: kept in `raw` only.
      }
      for (const w of [...this.waiters]) w();
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.child.on('exit', () => {
      for (const w of [...this.waiters]) w();
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  send(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  /** The first line (from index `from`) satisfying `pred`, waiting up to `timeout` ms for it. */
  waitFor(pred: (l: Line) => boolean, timeout: number, what: string, from = 0): Promise<Line> {
    return new Promise((resolve, reject) => {
      let i = from;
      const check = (): boolean => {
        for (; i < this.lines.length; i++) {
          const l = this.lines[i]!;
          if (pred(l)) {
            done();
            resolve(l);
            return true;
          }
        }
        if (!this.alive) {
          done();
          reject(new Error(`${this.name} exited (code ${this.child.exitCode}, signal ${this.child.signalCode}) while waiting for ${what}; stderr: ${this.stderr.slice(-2000)}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no ${what} within ${timeout} ms; last output: ${this.raw.slice(-10).join('\n')}; stderr: ${this.stderr.slice(-2000)}`));
      }, timeout);
      const waiter = (): void => void check();
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
      check();
    });
  }

  kill(): Promise<void> {
    if (!this.alive) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.child.kill('SIGKILL');
        resolve();
      }, 2000);
      this.child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      this.child.kill('SIGTERM');
    });
  }

  killNow(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }
}

/** Requests made from inside the hub's namespace (the test process cannot reach it). */
export class NsFetcher {
  private next = 1;
  constructor(private readonly proc: NsProcess, private readonly base: string) {}

  async get(path: string, auth = false): Promise<{ status: number; body: string }> {
    const id = this.next++;
    const from = this.proc.lines.length;
    this.proc.send(JSON.stringify({ id, url: this.base + path, auth }));
    const l = await this.proc.waitFor((x) => x.id === id, 5000, `answer to GET ${path}`, from);
    if (typeof l.error === 'string') throw new Error(`GET ${path}: ${l.error}`);
    return { status: l.status as number, body: l.body as string };
  }

  async subscriptions(): Promise<Array<{ subscriber: string; topic: string; active: boolean }>> {
    const r = await this.get('/.well-known/mercure/subscriptions', true);
    if (r.status !== 200) throw new Error(`subscriptions API answered ${r.status}: ${r.body}`);
    return (JSON.parse(r.body) as { subscriptions: Array<{ subscriber: string; topic: string; active: boolean }> }).subscriptions;
  }

  async connected(): Promise<number> {
    const r = await this.get('/metrics');
    const m = /^mercure_subscribers_connected (\d+)$/m.exec(r.body);
    if (r.status !== 200 || !m) throw new Error(`/metrics answered ${r.status} without mercure_subscribers_connected`);
    return Number(m[1]);
  }
}


/** One client's side of the star: its namespace, the veth pair's two ends and their /30 addresses. */
export interface Link {
  ns: string;
  hubDev: string;
  dev: string;
  hubAddr: string;
  addr: string;
}

/**
 * Creates the hub's namespace and one per client, each joined to the hub's by its own veth pair.
 * The hub listens on the first link's address; the other clients route to it through their own
 * link. Every namespace is recorded in `made` as soon as it exists, so that a setup failing half
 * way is still undone by {@link deleteNamespaces}.
 */
export function buildStar(hubNs: string, links: readonly Link[], made: string[]): void {
  const hubAddr = links[0]!.hubAddr;
  ip('netns', 'add', hubNs);
  made.push(hubNs);
  ip('-n', hubNs, 'link', 'set', 'lo', 'up');
  for (const c of links) {
    ip('netns', 'add', c.ns);
    made.push(c.ns);
    ip('-n', c.ns, 'link', 'set', 'lo', 'up');
    ip('link', 'add', c.hubDev, 'netns', hubNs, 'type', 'veth', 'peer', 'name', c.dev, 'netns', c.ns);
    ip('-n', hubNs, 'addr', 'add', `${c.hubAddr}/30`, 'dev', c.hubDev);
    ip('-n', c.ns, 'addr', 'add', `${c.addr}/30`, 'dev', c.dev);
    ip('-n', hubNs, 'link', 'set', c.hubDev, 'up');
    ip('-n', c.ns, 'link', 'set', c.dev, 'up');
    if (c.hubAddr !== hubAddr) ip('-n', c.ns, 'route', 'add', `${hubAddr}/32`, 'via', c.hubAddr);
  }
}

export function deleteNamespaces(made: string[]): void {
  for (const ns of made.splice(0)) {
    try {
      execFileSync(IP, ['netns', 'del', ns], { stdio: 'pipe' });
    } catch {
      // Already gone.
    }
  }
}

export interface SubscriptionEvent {
  subscriber: string;
  topic: string;
  active: boolean;
  /** When the line arrived (performance.now() of the test process). */
  at: number;
}

/** The subscription events a watcher process received, from its line `from` on. */
export function subscriptionEvents(watcher: NsProcess, from = 0): SubscriptionEvent[] {
  return watcher.lines
    .slice(from)
    .filter((l) => l.t === 'event' && typeof l.data === 'string')
    .map((l) => ({ ...(JSON.parse(l.data as string) as Omit<SubscriptionEvent, 'at'>), at: l.at }));
}
