/**
 * What the Express and Fastify integrations share: per request, the discovery `Link` header and
 * the subscriber authorization cookie (minted from a user-supplied grant). Framework-neutral.
 */
import {
  authorizationCookie,
  clearAuthorizationCookie,
  DRAFT7_COOKIE_NAME,
  DRAFT8_COOKIE_NAME,
  linkHeader,
  type AuthorizationCookieOptions,
} from '../client/discovery.js';
import { createAccessToken, createSubscriberToken, type Expiration, type SigningAlgorithm, type SigningKey } from '../client/token.js';

/** What a request may read: the topics of the private updates it may receive, and an optional payload. */
export interface MercureGrant {
  /** Topic selectors (exact topics, URI templates, `*`) whose private updates the subscriber may read. */
  subscribe: readonly string[];
  /** `mercure.payload` (draft-07) / the subscribe grant's payload (draft-08, an object): visible in subscription events. */
  payload?: unknown;
  /** Overrides the token lifetime for this request. */
  exp?: Expiration | undefined;
}

type MaybePromise<T> = T | Promise<T>;

/** Options of the `mercure` middleware (Express) and plugin (Fastify). `Req` is the framework's request. */
export interface MercureOptions<Req> {
  /**
   * The hub's public URL as browsers reach it, e.g. `https://hub.example.com/.well-known/mercure`,
   * or a path on the app's own origin (`/.well-known/mercure`), or a function of the request.
   */
  hubUrl: string | URL | ((req: Req) => string | URL);
  /** Add the discovery `Link: <hub>; rel="mercure"` header. Default true. */
  discovery?: boolean | undefined;
  /** The `last-event-id` attribute of the Link header, e.g. `() => hub.hub.lastEventId()`. */
  lastEventId?: ((req: Req) => MaybePromise<string | undefined>) | undefined;
  /** The canonical topic of the resource served, added as `<…>; rel="self"`. */
  self?: ((req: Req) => string | URL | undefined) | undefined;
  /**
   * Who may read what: returns the grant of the request's user (its private topics), or `null` for
   * no cookie. When it returns `null` and the request carries an authorization cookie, the cookie
   * is cleared (a logged-out user keeps no access).
   */
  authorize?: ((req: Req) => MaybePromise<MercureGrant | null | undefined>) | undefined;
  /** The hub's subscriber key (HMAC secret or private key): required with `authorize`. */
  key?: SigningKey | undefined;
  /** Default HS256. */
  alg?: SigningAlgorithm | undefined;
  /** Token (and cookie) lifetime. Default `'1h'`: long enough for the hub's reconnections of an open page. */
  exp?: Expiration | undefined;
  /** Draft-07 `mercure` claim and `mercureAuthorization` cookie (default), or a draft-08 access token and cookie. */
  draft?: 7 | 8 | undefined;
  /** Draft-08: the token's `iss` (an issuer the hub trusts). Default: the request's origin. */
  issuer?: string | undefined;
  /** Draft-08: the token's `aud`. Default: the absolute hub URL. */
  audience?: string | undefined;
  /** Cookie attributes (name, secure, sameSite, path, domain); `hubUrl`, `draft` and `maxAge` come from the options above. */
  cookie?: Omit<AuthorizationCookieOptions, 'hubUrl' | 'draft' | 'maxAge'> | undefined;
}

/** What the integrations expose on the request (`res.locals.mercure`, `request.mercure`): for templates. */
export interface MercureRequestState {
  /** The hub URL, as given (possibly relative). */
  hubUrl: string;
  /** The hub URL resolved against the request's origin. */
  absoluteHubUrl: string;
  /** The subscriber token set in the cookie, if any. */
  token: string | undefined;
  /** The topics the token grants. */
  subscribe: readonly string[];
}

/** What to add to one response. */
export interface MercureHeaders {
  link: string | undefined;
  setCookie: string | undefined;
  state: MercureRequestState;
}

/** The headers and origin of a request, as the adapters read them. */
export interface RequestInfo {
  headers: Record<string, string | string[] | undefined>;
  /** `http://host:port`. */
  origin: string;
}

/** Validates options once, at setup: a missing key or hub URL fails at startup, not per request. */
export function checkMercureOptions<Req>(options: MercureOptions<Req>): void {
  if (!options || (typeof options.hubUrl !== 'string' && !(options.hubUrl instanceof URL) && typeof options.hubUrl !== 'function')) {
    throw new TypeError('mercure: `hubUrl` is required (the hub URL browsers use, e.g. "https://hub.example.com/.well-known/mercure")');
  }
  if (options.hubUrl === '') throw new TypeError('mercure: `hubUrl` is empty');
  if (options.authorize !== undefined && (options.key === undefined || options.key === '')) {
    throw new TypeError('mercure: `authorize` needs `key`, the hub\'s subscriber key, to sign the tokens');
  }
  if (options.draft !== undefined && options.draft !== 7 && options.draft !== 8) throw new TypeError(`mercure: draft ${String(options.draft)}: 7 or 8`);
}

function cookieValue(headers: RequestInfo['headers'], name: string): string | undefined {
  const raw = headers.cookie;
  const list = Array.isArray(raw) ? raw.join('; ') : raw;
  if (!list) return undefined;
  for (const part of list.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Computes the `Link` and `Set-Cookie` values for one request. */
export async function mercureHeaders<Req>(req: Req, info: RequestInfo, options: MercureOptions<Req>): Promise<MercureHeaders> {
  const given = typeof options.hubUrl === 'function' ? options.hubUrl(req) : options.hubUrl;
  const hubUrl = String(given);
  const absoluteHubUrl = new URL(hubUrl, info.origin + '/').href;
  let link: string | undefined;
  if (options.discovery !== false) {
    const self = options.self?.(req);
    link = linkHeader(hubUrl, {
      lastEventId: options.lastEventId ? await options.lastEventId(req) : undefined,
      self: self === undefined ? undefined : String(self),
    });
  }
  let setCookie: string | undefined;
  let token: string | undefined;
  let subscribe: readonly string[] = [];
  if (options.authorize) {
    const grant = await options.authorize(req);
    const cookieOptions: AuthorizationCookieOptions = { ...options.cookie, hubUrl: absoluteHubUrl, draft: options.draft };
    if (grant) {
      if (!Array.isArray(grant.subscribe)) throw new TypeError('mercure: authorize() must return { subscribe: string[] } or null');
      subscribe = [...grant.subscribe];
      const exp = grant.exp ?? options.exp ?? '1h';
      if (options.draft === 8) {
        if (grant.payload !== undefined && (typeof grant.payload !== 'object' || grant.payload === null || Array.isArray(grant.payload))) {
          throw new TypeError('mercure: a draft-08 payload must be an object');
        }
        token = await createAccessToken({
          issuer: options.issuer ?? info.origin,
          audience: options.audience ?? absoluteHubUrl,
          key: options.key!,
          alg: options.alg ?? 'HS256',
          subscribe,
          payload: grant.payload as Record<string, unknown> | undefined,
          exp,
        });
      } else {
        token = await createSubscriberToken({ key: options.key!, alg: options.alg, subscribe, payload: grant.payload, exp });
      }
      setCookie = authorizationCookie(token, cookieOptions);
    } else {
      const name = options.cookie?.name ?? (options.draft === 8 ? DRAFT8_COOKIE_NAME : DRAFT7_COOKIE_NAME);
      if (cookieValue(info.headers, name) !== undefined) {
        const headers = new Headers();
        clearAuthorizationCookie(headers, cookieOptions);
        setCookie = headers.getSetCookie()[0];
      }
    }
  }
  return { link, setCookie, state: { hubUrl, absoluteHubUrl, token, subscribe } };
}

/** `http(s)://host` of a node:http request (Express's `req.protocol` is used when present: it honours `trust proxy`). */
export function requestOrigin(req: { headers: Record<string, string | string[] | undefined>; socket?: unknown; protocol?: unknown }): string {
  const proto = typeof req.protocol === 'string' && req.protocol
    ? req.protocol.replace(/:$/, '')
    : (req.socket as { encrypted?: boolean } | undefined)?.encrypted ? 'https' : 'http';
  const rawHost = req.headers[':authority'] ?? req.headers.host;
  const host = (Array.isArray(rawHost) ? rawHost[0] : rawHost) || 'localhost';
  return `${proto}://${host}`;
}
