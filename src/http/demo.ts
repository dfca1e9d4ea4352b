/**
 * The demo echo endpoint, `/.well-known/mercure/ui/demo/<anything>`, as the reference hub serves
 * it: INSECURE by design (it echoes any body and sets any token as the hub's cookie), for trying
 * discovery and cookie authorization from a browser. Never enable it in production.
 *
 * - `?body=` is the response body;
 * - `?jwt=` is stored in the authorization cookie (Path `/.well-known/mercure`, SameSite=Strict,
 *   HttpOnly only over TLS); without it the cookie is removed;
 * - the Content-Type comes from the path's extension (`.jsonld` → `application/ld+json`);
 * - `Link: </.well-known/mercure>; rel="mercure"` (with `cookie-name` when not the default) and
 *   `Link: <request URL>; rel="self"` advertise the hub, as a publisher's resource would.
 */
import type { ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { header, type Request, type Response } from './http-util.js';
import { HUB_PATH } from '../core/subscription.js';
import { uriReference } from './header-value.js';

export const DEMO_PATH = `${HUB_PATH}/ui/demo`;
export const DEFAULT_COOKIE_NAME = 'mercureAuthorization';

/** Content types by extension: Go's built-in table (which the reference relies on) plus JSON-LD. */
const TYPES: Record<string, string> = {
  '.jsonld': 'application/ld+json',
  '.json': 'application/json',
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.xml': 'text/xml; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.csv': 'text/csv; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.gif': 'image/gif',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.avif': 'image/avif',
  '.pdf': 'application/pdf',
  '.wasm': 'application/wasm',
};

/** Extension of the last path segment, lower-cased (`''` when none), like Go's filepath.Ext. */
function extension(path: string): string {
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    // keep the raw path
  }
  const last = decoded.slice(decoded.lastIndexOf('/') + 1);
  const dot = last.lastIndexOf('.');
  return dot < 0 ? '' : last.slice(dot).toLowerCase();
}

/**
 * Go's net/http cookie value sanitising: bytes outside 0x20–0x7E and `"`, `;`, `\` are dropped;
 * a value with a space or a comma is quoted. Keeps a hostile `jwt` from injecting attributes.
 */
function cookieValue(v: string): string {
  let out = '';
  for (const ch of v) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c >= 0x20 && c < 0x7f && ch !== '"' && ch !== ';' && ch !== '\\') out += ch;
  }
  return /[ ,]/.test(out) ? `"${out}"` : out;
}

function isTls(req: Request, trustProxy: boolean): boolean {
  if ((req.socket as TLSSocket | undefined)?.encrypted) return true;
  if (trustProxy) return header(req, 'x-forwarded-proto')?.split(',')[0]?.trim() === 'https';
  return false;
}

export interface DemoOptions {
  cookieName: string;
  trustProxy: boolean;
}

/** Answers a GET/HEAD on the demo endpoint; `path` is the raw (still encoded) path. */
export function handleDemo(req: Request, res: Response, path: string, query: string, options: DemoOptions): void {
  const params = new URLSearchParams(query);
  const body = params.get('body') ?? '';
  const jwt = params.get('jwt') ?? '';
  const tls = isTls(req, options.trustProxy);

  let hubLink = `<${HUB_PATH}>; rel="mercure"`;
  if (options.cookieName !== DEFAULT_COOKIE_NAME) hubLink += `; cookie-name="${options.cookieName}"`;
  const self = uriReference(query ? `${path}?${query}` : path);

  const cookie = [`${options.cookieName}=${cookieValue(jwt)}`, `Path=${HUB_PATH}`];
  if (!jwt) cookie.push('Max-Age=0');
  if (tls) cookie.push('HttpOnly');
  cookie.push('SameSite=Strict');

  const buf = Buffer.from(body, 'utf8');
  const r = res as ServerResponse;
  r.setHeader('Link', [hubLink, `<${self}>; rel="self"`]);
  r.setHeader('Set-Cookie', cookie.join('; '));
  r.setHeader('Content-Type', TYPES[extension(path)] ?? 'text/plain; charset=utf-8');
  r.setHeader('Content-Length', buf.length);
  r.setHeader('Cache-Control', 'no-store');
  r.writeHead(200);
  r.end(req.method === 'HEAD' ? undefined : buf);
}
