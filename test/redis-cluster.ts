/**
 * A real Redis Cluster for tests: six `redis-server --cluster-enabled yes` processes on free local
 * ports (three masters, one replica each, AOF on) in a temporary directory, joined with
 * `redis-cli --cluster create`. Nodes can be frozen (SIGSTOP), killed and restarted, which is how
 * the tests make the master of a slot fail over to its replica.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True when this redis-server can run a cluster node (Debian's can; some builds cannot). */
export function clusterSupported(): boolean {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.status !== 0) return false;
  const cli = spawnSync('redis-cli', ['--cluster', 'help'], { encoding: 'utf8' });
  return cli.status === 0 || /create/.test(`${cli.stdout}${cli.stderr}`);
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A port P with P and its cluster bus port P + 10000 both free. */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const p = 20_000 + Math.floor(Math.random() * 20_000);
    if (taken.has(p)) continue;
    if ((await portFree(p)) && (await portFree(p + 10_000))) {
      taken.add(p);
      return p;
    }
  }
}

export interface ClusterNodeInfo {
  id: string;
  port: number;
  master: boolean;
  /** Node id of its master, for a replica. */
  masterId: string | undefined;
  failed: boolean;
}

export class RedisClusterFixture {
  readonly ports: number[] = [];
  private readonly procs = new Map<number, ChildProcess>();
  private readonly stopped = new Set<number>();
  private dir = '';

  static async start(nodes = 6): Promise<RedisClusterFixture> {
    const c = new RedisClusterFixture();
    c.dir = mkdtempSync(path.join(os.tmpdir(), 'qs-redis-cluster-'));
    const taken = new Set<number>();
    for (let i = 0; i < nodes; i++) c.ports.push(await clusterPort(taken));
    try {
      await Promise.all(c.ports.map((p) => c.spawnNode(p)));
      await run('redis-cli', ['--cluster', 'create', ...c.ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'], {
        timeout: 20_000,
      });
      await c.waitHealthy(20_000);
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  private async spawnNode(port: number): Promise<void> {
    const proc = spawn(
      'redis-server',
      [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
        '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000',
        '--appendonly', 'yes', '--appendfilename', `aof-${port}.aof`, '--appenddirname', `aof-${port}`,
        '--dbfilename', `dump-${port}.rdb`, '--dir', this.dir, '--save', '', '--logfile', `redis-${port}.log`,
      ],
      { stdio: 'ignore' },
    );
    this.procs.set(port, proc);
    const end = Date.now() + 10_000;
    while (!(await this.ping(port))) {
      if (proc.exitCode !== null) throw new Error(`redis-server on ${port} exited with ${proc.exitCode}`);
      if (Date.now() > end) throw new Error(`redis-server on ${port} did not start`);
      await sleep(50);
    }
  }

  private async ping(port: number): Promise<boolean> {
    const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500, commandTimeout: 500 });
    r.on('error', () => {});
    try {
      await r.connect();
      return (await r.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      r.disconnect();
    }
  }

  /** Runs one command on one node (a fresh connection, so a frozen node only fails this call). */
  async command(port: number, ...args: (string | number)[]): Promise<unknown> {
    const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000, commandTimeout: 2000 });
    r.on('error', () => {});
    try {
      await r.connect();
      return await r.call(String(args[0]), ...args.slice(1));
    } finally {
      r.disconnect();
    }
  }

  /** CLUSTER NODES as seen from a live node. */
  async nodes(from?: number): Promise<ClusterNodeInfo[]> {
    const port = from ?? this.ports.find((p) => !this.stopped.has(p) && this.procs.has(p))!;
    const text = String(await this.command(port, 'CLUSTER', 'NODES'));
    return text
      .trim()
      .split('\n')
      .map((line) => {
        const [id, addr, flags, master] = line.split(' ');
        const f = flags!.split(',');
        return {
          id: id!,
          port: Number(addr!.split('@')[0]!.split(':')[1]),
          master: f.includes('master'),
          masterId: master === '-' ? undefined : master,
          failed: f.includes('fail') || f.includes('fail?'),
        };
      });
  }

  /** Port of the master serving the slot of `key`. */
  async masterOf(key: string): Promise<number> {
    const port = this.ports.find((p) => !this.stopped.has(p) && this.procs.has(p))!;
    const slot = Number(await this.command(port, 'CLUSTER', 'KEYSLOT', key));
    const slots = (await this.command(port, 'CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
    const range = slots.find(([a, b]) => slot >= a && slot <= b);
    if (!range) throw new Error(`slot ${slot} is not served`);
    return Number(range[2][1]);
  }

  /** Resolves when every running node says cluster_state:ok, sees no failed node, and replicas are in sync. */
  async waitHealthy(ms: number): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      try {
        const live = this.ports.filter((p) => this.procs.has(p) && !this.stopped.has(p));
        let ok = true;
        for (const p of live) {
          const info = String(await this.command(p, 'CLUSTER', 'INFO'));
          if (!info.includes('cluster_state:ok')) ok = false;
          const repl = String(await this.command(p, 'INFO', 'replication'));
          if (repl.includes('role:slave') && !repl.includes('master_link_status:up')) ok = false;
          if ((await this.nodes(p)).some((n) => n.failed && live.includes(n.port))) ok = false;
        }
        if (ok) return;
      } catch {
        // A node still starting or just failed over: ask again.
      }
      if (Date.now() > end) throw new Error('the Redis cluster did not become healthy');
      await sleep(100);
    }
  }

  /** Freezes a node (the process stops; its sockets stay open and silent). */
  freeze(port: number): void {
    this.procs.get(port)?.kill('SIGSTOP');
    this.stopped.add(port);
  }

  thaw(port: number): void {
    this.procs.get(port)?.kill('SIGCONT');
    this.stopped.delete(port);
  }

  async kill(port: number): Promise<void> {
    const proc = this.procs.get(port);
    if (!proc) return;
    this.procs.delete(port);
    if (proc.exitCode === null) {
      proc.kill('SIGKILL');
      await once(proc, 'exit');
    }
  }

  /** Restarts a killed node from its files: it rejoins the cluster (as a replica if it was failed over). */
  async restart(port: number): Promise<void> {
    await this.spawnNode(port);
  }

  /** Resolves when a replica of the master that was on `oldPort` serves the slot of `key`. */
  async waitPromoted(key: string, oldPort: number, ms: number): Promise<number> {
    const end = Date.now() + ms;
    for (;;) {
      try {
        const p = await this.masterOf(key);
        if (p !== oldPort) return p;
      } catch {
        // The asked node is the frozen one, or the slot is between owners.
      }
      if (Date.now() > end) throw new Error(`the slot of ${key} was not failed over from ${oldPort}`);
      await sleep(50);
    }
  }

  async stop(): Promise<void> {
    for (const [port, proc] of [...this.procs]) {
      if (this.stopped.has(port)) proc.kill('SIGCONT');
      proc.kill('SIGKILL');
      if (proc.exitCode === null) await once(proc, 'exit').catch(() => {});
    }
    this.procs.clear();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
