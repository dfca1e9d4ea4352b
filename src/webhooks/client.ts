/**
 * One webhook POST: resolves the callback's host and checks every address against the allow-list
 * at connect time (a name that re-resolves to a private address is refused then, not only at
 * registration), never follows redirects (a 3xx is a failed attempt), gives up after a timeout
 * that covers connecting, the answer and its body, and reads at most a few KiB of the answer.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type { AllowList } from './allow-list.js';

export interface PostOptions {
  timeout: number;
  maxResponseBytes: number;
  allow: AllowList;
  agent?: http.Agent | undefined;
  signal?: AbortSignal | undefined;
}

export interface PostResult {
  /** 2xx. */
  readonly ok: boolean;
  readonly status?: number | undefined;
  /** Why it failed, for the status and the log (no response body beyond the first line of it). */
  readonly error?: string | undefined;
  /** The allow-list refused the destination: retrying only helps if the DNS answer changes. */
  readonly refused?: boolean | undefined;
}

export class RefusedAddressError extends Error {}

/** A lookup that fails unless every address of the name is allowed. */
export function checkedLookup(allow: AllowList): LookupFunction {
  return ((hostname: string, options: { all?: boolean; family?: number | string }, callback: (...args: unknown[]) => void) => {
    dnsLookup(hostname, { all: true, family: typeof options.family === 'number' ? options.family : 0 }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err);
      if (addresses.length === 0) return callback(new Error(`${hostname} has no address`));
      for (const a of addresses) {
        const problem = allow.addressProblem(a.address);
        if (problem) return callback(new RefusedAddressError(`${hostname}: ${problem}`));
      }
      if (options.all) callback(null, addresses);
      else callback(null, (addresses[0] as LookupAddress).address, (addresses[0] as LookupAddress).family);
    });
  }) as unknown as LookupFunction;
}

/** Why a callback URL cannot be used (scheme, credentials, allow-list on its host), or null. */
export function urlProblem(url: URL, allow: AllowList): string | null {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `the callback URL must be http:// or https://, got ${url.protocol}//`;
  if (url.username || url.password) return 'the callback URL must not carry credentials (use the signature to authenticate the hub)';
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const hostProblem = allow.hostProblem(host);
  if (hostProblem) return hostProblem;
  // Literal addresses are never looked up: they are checked here, and again before each request.
  if (/^[\d.]+$/.test(host) || host.includes(':')) return allow.addressProblem(host);
  return null;
}

export function postJson(url: URL, body: Buffer, headers: Record<string, string>, options: PostOptions): Promise<PostResult> {
  const problem = urlProblem(url, options.allow);
  if (problem) return Promise.resolve({ ok: false, error: problem, refused: true });
  return new Promise<PostResult>((resolve) => {
    let settled = false;
    const done = (r: PostResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const lib = url.protocol === 'https:' ? https : http;
    const req = lib.request(url, {
      method: 'POST',
      headers: { ...headers, 'Content-Length': String(body.length) },
      agent: options.agent,
      lookup: checkedLookup(options.allow),
      signal: options.signal,
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`no complete answer within ${options.timeout} ms`));
    }, options.timeout);
    req.on('error', (err: Error) => {
      const refused = err instanceof RefusedAddressError;
      done({ ok: false, error: err.name === 'AbortError' ? 'aborted' : err.message, refused });
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      let read = 0;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read <= options.maxResponseBytes) chunks.push(chunk);
        else {
          // Nothing in the answer is needed beyond its status: stop reading a large one.
          res.destroy();
          finish();
        }
      });
      const finish = (): void => {
        const ok = status >= 200 && status < 300;
        const text = Buffer.concat(chunks).toString('utf8', 0, Math.min(read, 200)).split('\n')[0]?.trim();
        done({ ok, status, error: ok ? undefined : `HTTP ${status}${text ? `: ${text}` : ''}` });
      };
      res.on('end', finish);
      res.on('error', () => finish());
      res.on('close', finish);
    });
    req.end(body);
  });
}
