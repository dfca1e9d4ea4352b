/**
 * Mercure discovery (RFC 8288 `Link` headers) and the authorization cookie: the TypeScript
 * counterpart of symfony/mercure's `Discovery` and `Authorization`. Platform-neutral: the response
 * helpers work on node:http/http2 responses, Express `res`, Fastify `reply` and Web `Headers`.
 */
import { tokenExpiry } from './token-source.js';

/** One parsed link-value. */
export interface Link {
  /** The target, resolved against the base URL when one was given (else as written). */
  href: string;
  /** The target as written between `<` and `>`. */
  uri: string;
  /** Relation types, lower-cased (`rel="mercure self"` → `['mercure', 'self']`). */
  rel: string[];
  /** Target attributes by lower-cased name; first occurrence wins, RFC 8187 `name*` values decoded and preferred. */
  params: Record<string, string>;
}

export interface HubLink {
  url: string;
  lastEventId?: string | undefined;
  contentType?: string | undefined;
  type?: string | undefined;
  keySet?: string | undefined;
}

/** What a resource advertises. Top-level attributes are those of the first hub link. */
export interface Discovery {
  /** Hub URLs (absolute), in header order. */
  hubUrls: string[];
  /** Each hub link with its attributes. */
  hubs: HubLink[];
  /** The topic to subscribe to: the `rel="self"` link, else the resource URL. */
  selfUrl: string;
  /** `last-event-id`: pass it as `lastEventId` so no update is missed between fetch and subscribe. */
  lastEventId: string | undefined;
  /** `content-type` of the updates (e.g. a JSON Patch type). */
  contentType: string | undefined;
  /** `type`: the SSE event type the updates carry. */
  type: string | undefined;
  /** `key-set` (draft-07): URL of the JWK Set to decrypt updates. */
  keySet: string | undefined;
  /** Every link of the header. */
  links: Link[];
}

export type DiscoveryErrorCode = 'http_error' | 'no_hub' | 'network';

export class DiscoveryError extends Error {
  override readonly name = 'DiscoveryError';
  readonly code: DiscoveryErrorCode;
  readonly url: string;
  readonly status: number | undefined;
  constructor(code: DiscoveryErrorCode, url: string, message: string, status?: number, cause?: unknown) {
    super(message, cause !== undefined ? { cause } : undefined);
    this.code = code;
    this.url = url;
    this.status = status;
  }
}

// ---------------------------------------------------------------------------------------------
// Link header: building

export interface LinkHeaderOptions {
  /** `last-event-id` target attribute. */
  lastEventId?: string | undefined;
  /** `content-type` target attribute. */
  contentType?: string | undefined;
  /** `type` target attribute (SSE event type; not `mercure`). */
  type?: string | undefined;
  /** `key-set` target attribute (draft-07 encryption keys). */
  keySet?: string | undefined;
  /** Adds `<self>; rel="self"`: the canonical topic URL. */
  self?: string | undefined;
}

function checkHeaderText(what: string, value: string): void {
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new TypeError(`Invalid ${what} ${JSON.stringify(value)}: control characters cannot go in a Link header`);
}

/** A URI reference for `<…>`: whitespace, `<`, `>`, `"` and non-ASCII percent-encoded. */
function linkTarget(uri: string): string {
  checkHeaderText('link target', uri);
  let out = '';
  for (const ch of uri) {
    if (/[\s<>"^`{|}\\]/.test(ch) || ch.charCodeAt(0) > 0x7e) {
      out += encodeURIComponent(ch).replace(/!/g, '%21');
    } else out += ch;
  }
  return out;
}

/** `name="value"` (quoted-string), or `name*=UTF-8''…` (RFC 8187) for non-ASCII values. */
function linkParam(name: string, value: string): string {
  checkHeaderText(name, value);
  // eslint-disable-next-line no-control-regex
  if (/[^\u0020-\u007e]/.test(value)) {
    const enc = encodeURIComponent(value).replace(/['()*!]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
    return `${name}*=UTF-8''${enc}`;
  }
  return `${name}="${value.replace(/["\\]/g, '\\$&')}"`;
}

/**
 * The `Link` header value advertising one or more hubs (and the canonical topic):
 * `<https://hub.example.com/.well-known/mercure>; rel="mercure"; last-event-id="…", <https://example.com/books/1>; rel="self"`.
 */
export function linkHeader(hubUrl: string | URL | ReadonlyArray<string | URL>, options: LinkHeaderOptions = {}): string {
  const hubs = (Array.isArray(hubUrl) ? hubUrl : [hubUrl]).map(String);
  if (hubs.length === 0) throw new TypeError('linkHeader: at least one hub URL');
  if (options.type === 'mercure') throw new TypeError('linkHeader: the type "mercure" is reserved for the hub\'s own events');
  const parts: string[] = [];
  for (const hub of hubs) {
    let link = `<${linkTarget(hub)}>; rel="mercure"`;
    if (options.lastEventId !== undefined) link += '; ' + linkParam('last-event-id', options.lastEventId);
    if (options.contentType !== undefined) link += '; ' + linkParam('content-type', options.contentType);
    if (options.type !== undefined) link += '; ' + linkParam('type', options.type);
    if (options.keySet !== undefined) link += '; ' + linkParam('key-set', options.keySet);
    parts.push(link);
  }
  if (options.self !== undefined) parts.push(`<${linkTarget(options.self)}>; rel="self"`);
  return parts.join(', ');
}

// ---------------------------------------------------------------------------------------------
// Link header: parsing (RFC 8288 section 3)

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

function decodeExtValue(v: string): string | undefined {
  // RFC 8187: charset "'" [ language ] "'" value-chars
  const m = /^([!#$%&+\-^_`{}~0-9A-Za-z]+)'[^']*'(.*)$/.exec(v);
  if (!m) return undefined;
  const charset = m[1]!.toLowerCase();
  try {
    if (charset === 'utf-8') return decodeURIComponent(m[2]!);
    if (charset === 'iso-8859-1') return m[2]!.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  } catch {
    return undefined;
  }
  return undefined;
}

/**
 * Parses `Link` header values (one string, possibly comma-joined, or several). Lenient: a
 * malformed link-value is skipped, the others are kept. Relative targets are resolved against
 * `baseUrl` when given.
 */
export function parseLinkHeader(value: string | readonly string[] | null | undefined, baseUrl?: string | URL): Link[] {
  if (value === null || value === undefined) return [];
  const input = typeof value === 'string' ? value : value.join(', ');
  const links: Link[] = [];
  const n = input.length;
  let i = 0;
  const ws = () => {
    while (i < n && (input[i] === ' ' || input[i] === '\t')) i++;
  };
  /** Skips to just after the next top-level comma (quotes and <…> respected). */
  const skipValue = () => {
    while (i < n && input[i] !== ',') {
      if (input[i] === '"') {
        i++;
        while (i < n && input[i] !== '"') i += input[i] === '\\' ? 2 : 1;
        i++;
      } else if (input[i] === '<') {
        const end = input.indexOf('>', i);
        i = end < 0 ? n : end + 1;
      } else i++;
    }
    i++;
  };
  while (i < n) {
    while (i < n && (input[i] === ' ' || input[i] === '\t' || input[i] === ',')) i++;
    if (i >= n) break;
    if (input[i] !== '<') {
      skipValue();
      continue;
    }
    const end = input.indexOf('>', i + 1);
    if (end < 0) break;
    const uri = input.slice(i + 1, end).trim();
    i = end + 1;
    const params: Record<string, string> = {};
    const starred = new Set<string>();
    let ok = true;
    for (;;) {
      ws();
      if (i >= n || input[i] === ',') break;
      if (input[i] !== ';') {
        ok = false;
        break;
      }
      i++;
      ws();
      let name = '';
      while (i < n && TOKEN_CHAR.test(input[i]!)) name += input[i++];
      if (!name) {
        // `;` with no parameter (e.g. a trailing `;`): tolerated.
        continue;
      }
      name = name.toLowerCase();
      ws();
      let v = '';
      let quoted = false;
      if (input[i] === '=') {
        i++;
        ws();
        if (input[i] === '"') {
          quoted = true;
          i++;
          while (i < n && input[i] !== '"') {
            if (input[i] === '\\' && i + 1 < n) i++;
            v += input[i++];
          }
          i++;
        } else {
          while (i < n && input[i] !== ';' && input[i] !== ',' && input[i] !== ' ' && input[i] !== '\t') v += input[i++];
        }
      }
      if (name.endsWith('*') && !quoted) {
        const base = name.slice(0, -1);
        const decoded = decodeExtValue(v);
        if (decoded !== undefined && !starred.has(base)) {
          params[base] = decoded;
          starred.add(base);
        }
        if (!(name in params)) params[name] = v;
      } else if (!(name in params)) {
        params[name] = v;
      }
    }
    if (!ok) {
      skipValue();
      continue;
    }
    let href = uri;
    if (baseUrl !== undefined) {
      try {
        href = new URL(uri, baseUrl).href;
      } catch {
        // Keep it as written.
      }
    }
    const rel = (params.rel ?? '').split(/[ \t]+/).filter(Boolean).map((r) => r.toLowerCase());
    links.push({ href, uri, rel, params });
  }
  return links;
}

/** Reads the Mercure discovery out of a resource's `Link` header. `hubUrls` is empty when none is advertised. */
export function parseDiscovery(linkHeaderValue: string | readonly string[] | null | undefined, resourceUrl: string | URL): Discovery {
  const base = String(resourceUrl);
  const links = parseLinkHeader(linkHeaderValue, base).filter((l) => {
    // A link with an `anchor` elsewhere is about another resource.
    if (l.params.anchor === undefined) return true;
    try {
      return new URL(l.params.anchor, base).href === new URL(base).href;
    } catch {
      return false;
    }
  });
  const hubs: HubLink[] = links
    .filter((l) => l.rel.includes('mercure'))
    .map((l) => ({
      url: l.href,
      lastEventId: l.params['last-event-id'],
      contentType: l.params['content-type'],
      type: l.params.type,
      keySet: l.params['key-set'] !== undefined ? new URL(l.params['key-set'], base).href : undefined,
    }));
  const self = links.find((l) => l.rel.includes('self'));
  const first = hubs[0];
  return {
    hubUrls: hubs.map((h) => h.url),
    hubs,
    selfUrl: self ? self.href : base,
    lastEventId: first?.lastEventId,
    contentType: first?.contentType,
    type: first?.type,
    keySet: first?.keySet,
    links,
  };
}

export interface DiscoverOptions {
  fetch?: typeof fetch | undefined;
  /** Request headers (e.g. `Accept` for content negotiation, `Authorization`). */
  headers?: Record<string, string> | undefined;
  /** Default GET. */
  method?: 'GET' | 'HEAD' | undefined;
  /** Browsers: send cookies cross-origin. */
  credentials?: RequestCredentials | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * Discovers the hub(s) of a resource: fetches it (or reads a `Response` you already have) and
 * parses its `Link` headers. Rejects with `DiscoveryError` on an error status or when no hub is
 * advertised. In a browser, a cross-origin resource must expose `Link`
 * (`Access-Control-Expose-Headers: Link`).
 */
export async function discover(resource: string | URL | Response, options: DiscoverOptions = {}): Promise<Discovery> {
  let res: Response;
  let url: string;
  if (typeof resource === 'string' || resource instanceof URL) {
    url = new URL(String(resource), (globalThis as { location?: { href: string } }).location?.href).href;
    const f = options.fetch ?? globalThis.fetch;
    try {
      res = await f(url, {
        method: options.method ?? 'GET',
        headers: options.headers,
        credentials: options.credentials,
        signal: options.signal,
      });
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw new DiscoveryError('network', url, `Discovery failed: cannot fetch ${url}: ${(err as Error).message}`, undefined, err);
    }
    // Only the headers matter: let the connection go.
    res.body?.cancel().catch(() => undefined);
    url = res.url || url;
  } else {
    res = resource;
    url = res.url;
    if (!url) throw new TypeError('discover(response): the Response has no url; use parseDiscovery(response.headers.get("link"), resourceUrl)');
  }
  if (!res.ok) {
    throw new DiscoveryError('http_error', url, `Discovery failed: ${url} answered ${res.status}${res.statusText ? ' ' + res.statusText : ''}`, res.status);
  }
  const d = parseDiscovery(res.headers.get('link'), url);
  if (d.hubUrls.length === 0) {
    throw new DiscoveryError(
      'no_hub',
      url,
      `Discovery failed: ${url} advertises no Mercure hub (no Link header with rel="mercure"${res.headers.get('link') === null ? '; in a browser, a cross-origin resource must send Access-Control-Expose-Headers: Link' : ''})`,
      res.status,
    );
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// Responses: node:http / Express / Fastify / Web Headers

/** node:http and http2 `ServerResponse`, Express `res`. */
export interface NodeLikeResponse {
  getHeader(name: string): number | string | string[] | undefined;
  setHeader(name: string, value: number | string | readonly string[]): unknown;
  readonly headersSent?: boolean;
}

/** Fastify `reply`. */
export interface FastifyLikeReply {
  header(name: string, value: unknown): unknown;
  getHeader(name: string): unknown;
  readonly raw: { readonly headersSent?: boolean };
  readonly sent?: boolean;
}

/** Where the helpers can add headers. */
export type ResponseLike = NodeLikeResponse | FastifyLikeReply | Headers | { headers: Headers };

function asList(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.map(String);
  return [String(v)];
}

function isHeaders(v: unknown): v is Headers {
  return (typeof Headers !== 'undefined' && v instanceof Headers) ||
    (typeof v === 'object' && v !== null && typeof (v as Headers).append === 'function' && typeof (v as Headers).get === 'function' && typeof (v as Headers).has === 'function' && !('setHeader' in v));
}

/** Appends a header value, keeping the values already set. */
function appendHeader(res: ResponseLike, name: 'Set-Cookie' | 'Link', value: string): void {
  if (isHeaders(res)) {
    res.append(name, value);
    return;
  }
  if ('headers' in res && isHeaders((res as { headers: unknown }).headers)) {
    (res as { headers: Headers }).headers.append(name, value);
    return;
  }
  const r = res as Partial<FastifyLikeReply & NodeLikeResponse>;
  if (typeof r.header === 'function' && r.raw && typeof r.getHeader === 'function') {
    if (r.sent || r.raw.headersSent) throw new Error(`Cannot add ${name}: the response headers were already sent`);
    if (name === 'Set-Cookie') {
      // Fastify appends set-cookie values itself.
      r.header('set-cookie', value);
    } else {
      const existing = asList(r.getHeader(name));
      r.header(name, existing.length > 0 ? `${existing.join(', ')}, ${value}` : value);
    }
    return;
  }
  if (typeof r.setHeader === 'function' && typeof r.getHeader === 'function') {
    if (r.headersSent) throw new Error(`Cannot add ${name}: the response headers were already sent`);
    const existing = asList(r.getHeader(name));
    if (name === 'Set-Cookie') r.setHeader(name, [...existing, value]);
    else r.setHeader(name, existing.length > 0 ? `${existing.join(', ')}, ${value}` : value);
    return;
  }
  throw new TypeError('Unsupported response object: expected a node:http ServerResponse, an Express res, a Fastify reply or a Headers');
}

/**
 * Adds the discovery `Link` header to a response (after any `Link` already set): the counterpart
 * of symfony/mercure's `Discovery::addLink()`. Returns the value added.
 */
export function addLinkHeader(res: ResponseLike, hubUrl: string | URL | ReadonlyArray<string | URL>, options: LinkHeaderOptions = {}): string {
  const value = linkHeader(hubUrl, options);
  appendHeader(res, 'Link', value);
  return value;
}

/** Draft-07's (and the reference hub's) cookie name. */
export const DRAFT7_COOKIE_NAME = 'mercureAuthorization';
/** Draft-08's recommended cookie name. */
export const DRAFT8_COOKIE_NAME = '__Secure-mercure_access_token';

export interface AuthorizationCookieOptions {
  /** The hub URL: gives the default `Path` (its path) and `Secure` (when https). */
  hubUrl: string | URL;
  /** Cookie name. Default `mercureAuthorization`, or `__Secure-mercure_access_token` with `draft: 8`. */
  name?: string | undefined;
  /** Which protocol's default cookie name. Default 7. */
  draft?: 7 | 8 | undefined;
  /** Default: true when the hub is https (always true for `__Secure-`/`__Host-` names). */
  secure?: boolean | undefined;
  /** Default `Strict`. `None` requires `Secure`. */
  sameSite?: 'Strict' | 'Lax' | 'None' | undefined;
  /** Default: the hub URL's path (`/.well-known/mercure`). */
  path?: string | undefined;
  /** For a hub on a sibling subdomain, e.g. `example.com`. */
  domain?: string | undefined;
  /** Lifetime in seconds. Default: until the token's `exp`; session cookie if it has none. */
  maxAge?: number | undefined;
}

export class CookieError extends Error {
  override readonly name = 'CookieError';
}

// RFC 6265 cookie-octet: no CTLs, whitespace, DQUOTE, comma, semicolon, backslash.
const COOKIE_VALUE = /^[\u0021\u0023-\u002b\u002d-\u003a\u003c-\u005b\u005d-\u007e]*$/;
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function cookieBase(options: AuthorizationCookieOptions): { name: string; attrs: string[] } {
  let hub: URL;
  try {
    hub = new URL(String(options.hubUrl));
  } catch {
    throw new CookieError(`Invalid hubUrl ${JSON.stringify(String(options.hubUrl))}: the absolute URL of the hub`);
  }
  const name = options.name ?? (options.draft === 8 ? DRAFT8_COOKIE_NAME : DRAFT7_COOKIE_NAME);
  if (!COOKIE_NAME.test(name)) throw new CookieError(`Invalid cookie name ${JSON.stringify(name)}`);
  const prefixed = name.startsWith('__Secure-') || name.startsWith('__Host-');
  if (prefixed && options.secure === false) throw new CookieError(`A cookie named ${name} must be Secure: browsers reject ${name.split('-')[0]}- cookies without it`);
  const secure = options.secure ?? (prefixed || hub.protocol === 'https:');
  const sameSite = options.sameSite ?? 'Strict';
  if (sameSite !== 'Strict' && sameSite !== 'Lax' && sameSite !== 'None') throw new CookieError(`Invalid sameSite ${JSON.stringify(sameSite)}: Strict, Lax or None`);
  if (sameSite === 'None' && !secure) throw new CookieError('SameSite=None requires Secure (browsers reject it otherwise)');
  const path = options.path ?? hub.pathname;
  // eslint-disable-next-line no-control-regex
  if (!path.startsWith('/') || /[;\u0000-\u001f\u007f]/.test(path)) throw new CookieError(`Invalid cookie path ${JSON.stringify(path)}`);
  if (name.startsWith('__Host-') && (options.domain !== undefined || path !== '/')) {
    throw new CookieError('A __Host- cookie must have Path=/ and no Domain; use the __Secure- prefix for the hub path');
  }
  const attrs = [`Path=${path}`];
  if (options.domain !== undefined) {
    if (!/^\.?[A-Za-z0-9.-]+$/.test(options.domain)) throw new CookieError(`Invalid cookie domain ${JSON.stringify(options.domain)}`);
    attrs.push(`Domain=${options.domain}`);
  }
  return { name, attrs: [...attrs, 'HttpOnly', ...(secure ? ['Secure'] : []), `SameSite=${sameSite}`] };
}

/**
 * The `Set-Cookie` value carrying a token to the hub: `HttpOnly`, `SameSite=Strict`, `Path` the
 * hub's path, `Secure` on https, `Max-Age` until the token expires.
 */
export function authorizationCookie(token: string, options: AuthorizationCookieOptions): string {
  if (typeof token !== 'string' || token === '') throw new CookieError('authorizationCookie: the token is empty');
  if (!COOKIE_VALUE.test(token)) throw new CookieError('authorizationCookie: the token has characters a cookie cannot carry (a JWT is fine)');
  const { name, attrs } = cookieBase(options);
  let maxAge = options.maxAge;
  if (maxAge === undefined) {
    const exp = tokenExpiry(token);
    if (exp !== undefined) {
      maxAge = Math.floor((exp - Date.now()) / 1000);
      if (maxAge <= 0) throw new CookieError(`authorizationCookie: the token expired at ${new Date(exp).toISOString()}`);
    }
  } else if (!Number.isInteger(maxAge) || maxAge < 0) {
    throw new CookieError(`Invalid maxAge ${maxAge}: whole seconds`);
  }
  const parts = [`${name}=${token}`, attrs[0]!];
  if (maxAge !== undefined) parts.push(`Max-Age=${maxAge}`);
  parts.push(...attrs.slice(1));
  return parts.join('; ');
}

/**
 * Sets the authorization cookie on a response (appended: cookies already set are kept): the
 * counterpart of symfony/mercure's `Authorization::setCookie()`. Returns the `Set-Cookie` value.
 *
 * ```ts
 * app.get('/books/1', async (req, res) => {
 *   setAuthorizationCookie(res, await createSubscriberToken({ key, subscribe: ['https://example.com/books/1'] }), { hubUrl });
 *   addLinkHeader(res, hubUrl);
 *   res.json(book);
 * });
 * ```
 */
export function setAuthorizationCookie(res: ResponseLike, token: string, options: AuthorizationCookieOptions): string {
  const cookie = authorizationCookie(token, options);
  appendHeader(res, 'Set-Cookie', cookie);
  return cookie;
}

/** Deletes the authorization cookie (same name, path and domain, `Max-Age=0`). Returns the value set. */
export function clearAuthorizationCookie(res: ResponseLike, options: Omit<AuthorizationCookieOptions, 'maxAge'>): string {
  const { name, attrs } = cookieBase(options);
  const cookie = [`${name}=`, attrs[0]!, 'Max-Age=0', ...attrs.slice(1)].join('; ');
  appendHeader(res, 'Set-Cookie', cookie);
  return cookie;
}
