import http from 'node:http';
import { SignJWT } from 'jose';
import { createHub, serve, type HubOptions, type QuicksilverHub, type RunningServer } from '../src/index.js';
import { createLogger } from '../src/observability/logger.js';

export const KEY = '!ChangeThisMercureHubJWTSecretKey!';
export const SUB_KEY = 'subscriber-secret-key-for-tests-only!!';

export interface TestHub {
  url: string;
  hubUrl: string;
  hub: QuicksilverHub;
  server: RunningServer;
  close(): Promise<void>;
}

export async function startHub(options: HubOptions = {}): Promise<TestHub> {
  const hub = createHub({
    publisher: { key: KEY },
    subscriber: { key: SUB_KEY },
    logger: createLogger(process.env.TEST_LOG ? 'debug' : 'silent'),
    ...options,
  });
  const server = await serve(hub, { addr: '127.0.0.1:0', shutdownTimeout: 2000 });
  return {
    url: server.url,
    hubUrl: `${server.url}/.well-known/mercure`,
    hub,
    server,
    close: () => server.close(),
  };
}

/** A draft-07 token with the `mercure` claim. */
export async function legacyToken(
  claim: { publish?: string[]; subscribe?: string[]; payload?: unknown },
  key: string = KEY,
  extra: { exp?: number; namespaced?: boolean } = {},
): Promise<string> {
  const payload = extra.namespaced ? { 'https://mercure.rocks/': claim } : { mercure: claim };
  const jwt = new SignJWT(payload).setProtectedHeader({ alg: 'HS256' });
  if (extra.exp !== undefined) jwt.setExpirationTime(extra.exp);
  return jwt.sign(new TextEncoder().encode(key));
}

export interface Detail {
  actions: string[];
  topics: Array<{ match: string; match_type?: string }>;
  payload?: unknown;
}

/** A draft-08 RFC 9068 access token with authorization_details. */
export async function accessToken(
  details: Detail[],
  options: { key?: string; aud: string; iss?: string; exp?: number; typ?: string },
): Promise<string> {
  return new SignJWT({
    authorization_details: details.map((d) => ({ type: 'https://mercure.rocks/authorization-detail', ...d })),
    client_id: 'test',
    jti: Math.random().toString(36).slice(2),
    sub: 'tester',
  })
    .setProtectedHeader({ alg: 'HS256', typ: options.typ ?? 'at+jwt' })
    .setIssuer(options.iss ?? 'https://issuer.example')
    .setAudience(options.aud)
    .setIssuedAt()
    .setExpirationTime(options.exp ?? Math.floor(Date.now() / 1000) + 3600)
    .sign(new TextEncoder().encode(options.key ?? KEY));
}

export interface PublishResult {
  status: number;
  body: string;
  headers: Headers;
}

export async function publish(
  hubUrl: string,
  fields: Array<[string, string]> | Record<string, string | string[]>,
  token?: string,
  headers: Record<string, string> = {},
): Promise<PublishResult> {
  const body = new URLSearchParams();
  const entries = Array.isArray(fields)
    ? fields
    : Object.entries(fields).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x] as [string, string]) : [[k, v] as [string, string]]));
  for (const [k, v] of entries) body.append(k, v);
  const res = await fetch(hubUrl, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body,
  });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

export interface SseEvent {
  id?: string;
  event?: string;
  data: string;
  retry?: number;
}

/** A raw SSE connection: keeps the exact bytes and parses events as they come. */
export class SseClient {
  raw = '';
  events: SseEvent[] = [];
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  closed = false;
  private req: http.ClientRequest | null = null;
  private waiters: Array<() => void> = [];
  private buffer = '';

  static async connect(
    url: string,
    options: { headers?: Record<string, string>; method?: string; body?: string } = {},
  ): Promise<SseClient> {
    const c = new SseClient();
    await c.open(url, options);
    return c;
  }

  private open(url: string, options: { headers?: Record<string, string>; method?: string; body?: string }): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method: options.method ?? 'GET', headers: { Accept: 'text/event-stream', ...options.headers } }, (res) => {
        this.status = res.statusCode ?? 0;
        this.headers = res.headers;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          this.raw += chunk;
          this.parse(chunk);
          this.notify();
        });
        res.on('end', () => {
          this.closed = true;
          this.notify();
        });
        res.on('close', () => {
          this.closed = true;
          this.notify();
        });
        resolve();
      });
      req.on('error', (err) => {
        this.closed = true;
        this.notify();
        reject(err);
      });
      if (options.body) req.end(options.body);
      else req.end();
      this.req = req;
    });
  }

  private parse(chunk: string): void {
    this.buffer += chunk;
    let idx: number;
    while ((idx = this.buffer.search(/\n\n/)) >= 0) {
      const block = this.buffer.slice(0, idx);
      this.buffer = this.buffer.slice(idx + 2);
      const ev: SseEvent = { data: '' };
      const data: string[] = [];
      let hasData = false;
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
        if (field === 'data') {
          data.push(value);
          hasData = true;
        } else if (field === 'id') ev.id = value;
        else if (field === 'event') ev.event = value;
        else if (field === 'retry') ev.retry = Number(value);
      }
      if (hasData) {
        ev.data = data.join('\n');
        this.events.push(ev);
      }
    }
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `predicate` holds, or fails after `timeout` ms. */
  async until(predicate: () => boolean, timeout = 5000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeout;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; received so far: ${JSON.stringify(this.raw.slice(-2000))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  waitForEvents(n: number, timeout = 5000): Promise<void> {
    return this.until(() => this.events.length >= n, timeout, `${n} events`);
  }

  close(): void {
    this.req?.destroy();
    this.closed = true;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function subscribeUrl(hubUrl: string, params: Array<[string, string]>): string {
  const u = new URL(hubUrl);
  for (const [k, v] of params) u.searchParams.append(k, v);
  return u.toString();
}
