import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';

/** A hub started through the real CLI (`dist/cli.js`), as an operator would run it. */
export interface HubProcess {
  child: ChildProcess;
  url: string;
  hubUrl: string;
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function startHubProcess(args: string[], env: Record<string, string> = {}, timeout = 15_000): Promise<HubProcess> {
  const child = spawn(process.execPath, ['dist/cli.js', '--log-format', 'json', ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + timeout;
  let url: string | undefined;
  while (!url) {
    const m = /"url":"([^"]+)"[^\n]*Quicksilver hub ready|Quicksilver hub ready[^\n]*"url":"([^"]+)"/.exec(out);
    if (m) url = m[1] ?? m[2];
    else {
      if (child.exitCode !== null) throw new Error(`hub exited with ${child.exitCode}: ${out}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`hub did not start: ${out}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return {
    child,
    url: url!,
    hubUrl: `${url!}/.well-known/mercure`,
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export interface ReceivedEvent {
  id: string;
  data: string;
}

/**
 * An EventSource-like client: reconnects after the stream ends or fails, sending the last id it
 * received in Last-Event-ID, and honours the server's `retry:` hint — what browsers do.
 */
export class ReconnectingSubscriber {
  events: ReceivedEvent[] = [];
  connections = 0;
  private lastId: string | undefined;
  private retry = 200;
  private stopped = false;
  private req: http.ClientRequest | null = null;

  constructor(private readonly url: () => string, private readonly headers: Record<string, string> = {}) {
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    const headers: Record<string, string> = { Accept: 'text/event-stream', ...this.headers };
    if (this.lastId !== undefined) headers['Last-Event-ID'] = this.lastId;
    let buffer = '';
    // One reconnection per attempt, whichever of request error, response end or close comes first:
    // two would open two streams from the same Last-Event-ID and duplicate events.
    let retried = false;
    const again = () => {
      if (this.stopped || retried) return;
      retried = true;
      setTimeout(() => this.connect(), Math.min(this.retry, 500));
    };
    const req = http.get(this.url(), { headers }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        res.on('end', again);
        res.on('close', again);
        return;
      }
      this.connections++;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let i: number;
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, i);
          buffer = buffer.slice(i + 2);
          let id: string | undefined;
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('id: ')) id = line.slice(4);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
            else if (line.startsWith('retry: ')) this.retry = Number(line.slice(7));
          }
          if (id !== undefined) this.lastId = id;
          if (data.length > 0) this.events.push({ id: id ?? '', data: data.join('\n') });
        }
      });
      // An abrupt end (the hub killed) emits close without end.
      res.on('end', again);
      res.on('close', again);
      res.on('error', () => {});
    });
    req.on('error', again);
    this.req = req;
  }

  close(): void {
    this.stopped = true;
    this.req?.destroy();
  }
}

export async function waitUntil(cond: () => boolean, timeout: number, what: string): Promise<void> {
  const end = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:`port` (a backend the tests need). */
export function portOpen(port: number, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
