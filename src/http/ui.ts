/**
 * The debugging UI at `/.well-known/mercure/ui/`: a fixed set of static files from the package's
 * `ui/` directory, `config.json` for the page, and (with `demo`) the demo echo endpoint.
 *
 * Only the files listed in {@link FILES} are ever read, by their exact (still encoded) request
 * path, so no request can reach another file (`..`, `%2e%2e`, `%2f`, … simply do not match).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { DEMO_PATH, handleDemo } from './demo.js';
import { hubUrl, send, type Request, type Response } from './http-util.js';
import { HUB_PATH } from '../core/subscription.js';
import { uriReference } from './header-value.js';

export const UI_PATH = `${HUB_PATH}/ui`;

/** Lifetime of the demo page's development token, in seconds. */
export const DEV_TOKEN_TTL = 3600;
/** What the demo page says when the hub cannot mint a token itself (asymmetric or separate keys). */
const TOKEN_HELP = "quicksilver token --key <signing key> --publish '*' --subscribe '*'";

/** Request path below `/ui/` → file in `ui/` and its content type. */
const FILES = new Map<string, { file: string; type: string }>([
  ['/', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['/index.html', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['/app.js', { file: 'app.js', type: 'text/javascript; charset=utf-8' }],
  ...['dom', 'links', 'settings', 'sse', 'subscribe', 'subscriptions'].map(
    (m) => [`/${m}.js`, { file: `${m}.js`, type: 'text/javascript; charset=utf-8' }] as const,
  ),
  ['/style.css', { file: 'style.css', type: 'text/css; charset=utf-8' }],
  ['/favicon.svg', { file: 'favicon.svg', type: 'image/svg+xml' }],
]);

/** The same policy as the hub's other responses; set here too so the UI is safe wherever it is mounted. */
const PAGE_HEADERS: Record<string, string> = {
  'Content-Security-Policy': "default-src 'self'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
};

export interface UiOptions {
  /** Serve the static UI and config.json. */
  ui: boolean;
  /** Serve the demo echo endpoint (implies `ui`) and put a dev token in config.json. */
  demo: boolean;
  /** The draft-07 authorization cookie name (reported to the page; set by the demo endpoint). */
  cookieName: string;
  /**
   * HMAC key used to mint the short-lived, all-access `devToken` of config.json. Used only when
   * `demo` is on (an insecure mode by design: whoever reaches the page gets the token).
   */
  devKey?: string | undefined;
  /** HS256 (default), HS384 or HS512. */
  devKeyAlg?: string | undefined;
  trustProxy: boolean;
  /** Where the static files are; default the package's `ui/` directory. */
  directory?: string | undefined;
}

/** Handles a request below `/.well-known/mercure/ui`; returns false when it is not one it serves. */
export type UiHandler = (req: Request, res: Response, path: string, query: string) => boolean;

interface Asset {
  body: Buffer;
  etag: string;
  type: string;
}

export function createUiHandler(options: UiOptions): UiHandler {
  const enabled = options.ui || options.demo;
  const dir = options.directory ?? fileURLToPath(new URL('../../ui/', import.meta.url));
  const assets = new Map<string, Asset | null>();
  let devToken: { token: Promise<string | undefined>; renewAt: number } | undefined;

  const asset = (file: string, type: string): Asset | null => {
    let a = assets.get(file);
    if (a === undefined) {
      try {
        const body = readFileSync(`${dir}/${file}`);
        const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
        a = { body, etag, type };
      } catch {
        a = null;
      }
      assets.set(file, a);
    }
    return a;
  };

  // Short-lived, so that a token copied out of a demo page stops working soon; renewed at half
  // its life, so that a page loaded at any time gets at least half an hour.
  const mintDevToken = (): Promise<string | undefined> => {
    if (!options.demo || !options.devKey) return Promise.resolve(undefined);
    const now = Math.floor(Date.now() / 1000);
    if (!devToken || now >= devToken.renewAt) {
      devToken = {
        renewAt: now + DEV_TOKEN_TTL / 2,
        token: new SignJWT({ mercure: { publish: ['*'], subscribe: ['*'] } })
          .setProtectedHeader({ alg: options.devKeyAlg ?? 'HS256' })
          .setIssuedAt(now)
          .setExpirationTime(now + DEV_TOKEN_TTL)
          .sign(new TextEncoder().encode(options.devKey))
          .catch(() => undefined),
      };
    }
    return devToken.token;
  };

  const serveConfig = (req: Request, res: Response): void => {
    void mintDevToken().then((token) => {
      const doc: Record<string, unknown> = {
        hubUrl: hubUrl(req, options.trustProxy),
        cookieName: options.cookieName,
        demo: options.demo,
      };
      if (token) doc.devToken = token;
      else if (options.demo) doc.tokenHelp = TOKEN_HELP;
      const body = Buffer.from(JSON.stringify(doc));
      // It may carry a token: never cached.
      const r = res as ServerResponse;
      r.writeHead(200, {
        'Content-Type': 'application/json',
        'Content-Length': body.length,
        'Cache-Control': 'no-store',
        ...PAGE_HEADERS,
      });
      r.end(req.method === 'HEAD' ? undefined : body);
    });
  };

  return (req, res, path, query) => {
    if (!enabled || (path !== UI_PATH && !path.startsWith(UI_PATH + '/'))) return false;
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      send(res, 405, `Method Not Allowed: ${method}\n`, { Allow: 'GET, HEAD' });
      return true;
    }
    if (path === DEMO_PATH || path.startsWith(DEMO_PATH + '/')) {
      if (!options.demo) send(res, 404, 'Not Found: the demo endpoint is disabled (enable "demo")\n');
      else handleDemo(req, res, path, query, options);
      return true;
    }
    if (path === UI_PATH) {
      // Relative, so it also works behind a proxy that mounts the hub under a prefix.
      send(res, 301, '', { Location: query ? `ui/?${uriReference(query)}` : 'ui/' });
      return true;
    }
    const rest = path.slice(UI_PATH.length);
    if (rest === '/config.json') {
      serveConfig(req, res);
      return true;
    }
    const entry = FILES.get(rest);
    const a = entry ? asset(entry.file, entry.type) : null;
    if (!entry || !a) {
      send(res, 404, entry ? 'Not Found: the UI files are missing from this installation\n' : 'Not Found\n');
      return true;
    }
    const headers: Record<string, string | number> = {
      'Content-Type': a.type,
      'Cache-Control': 'no-cache',
      ETag: a.etag,
      ...PAGE_HEADERS,
    };
    const r = res as ServerResponse;
    const inm = req.headers['if-none-match'];
    if (typeof inm === 'string' && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === a.etag)) {
      r.writeHead(304, headers);
      r.end();
      return true;
    }
    headers['Content-Length'] = a.body.length;
    r.writeHead(200, headers);
    r.end(method === 'HEAD' ? undefined : a.body);
    return true;
  };
}
