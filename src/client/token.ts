/**
 * Minting Mercure tokens: draft-07 JWS with the `mercure` claim, draft-08 RFC 9068 access tokens
 * with `authorization_details`, and a provider that caches a minted token until shortly before it
 * expires. Uses jose (Web Crypto), so it runs in Node and browsers.
 */
import { importJWK, importPKCS8, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { TokenError, tokenExpiry, type TokenFactory } from './token-source.js';

export { resolveToken, TokenError, tokenExpiry } from './token-source.js';
export type { TokenFactory, TokenSource } from './token-source.js';

/** JWS algorithms Mercure hubs accept. */
export type SigningAlgorithm =
  | 'HS256' | 'HS384' | 'HS512'
  | 'RS256' | 'RS384' | 'RS512'
  | 'PS256' | 'PS384' | 'PS512'
  | 'ES256' | 'ES384' | 'ES512'
  | 'EdDSA';

const ALGORITHMS: readonly string[] = [
  'HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA',
];

/**
 * A signing key: for HS* the shared secret (a string, UTF-8 encoded, or bytes); for asymmetric
 * algorithms a PKCS#8 PEM private key string, a private JWK, a CryptoKey or a Node KeyObject.
 */
export type SigningKey = string | Uint8Array | CryptoKey | KeyObject | JWK;

/**
 * When the token expires: a `Date`, an absolute Unix time in seconds, or a lifetime such as
 * `'30s'`, `'15m'`, `'1h'`, `'7d'` (jose's syntax). `null` = no `exp` (draft-07 only).
 */
export type Expiration = Date | number | string;

/** A topic in a draft-08 grant: a string (with the token's default `matchType`) or an explicit matcher. */
export type TopicGrant = string | { match: string; matchType?: 'exact' | 'urlpattern' | undefined };

export interface Draft7TokenOptions {
  /** Signing key (the hub's publisher or subscriber key). */
  key: SigningKey;
  /** Default HS256. */
  alg?: SigningAlgorithm | undefined;
  /** Topic selectors the token may publish to (`*`, exact topics, URI templates). */
  publish?: readonly string[] | undefined;
  /** Topic selectors whose private updates the token may read. */
  subscribe?: readonly string[] | undefined;
  /** `mercure.payload`: attached to the subscription, visible in subscription events. */
  payload?: unknown;
  /** Default `'1h'`; `null` for a token without `exp`. */
  exp?: Expiration | null | undefined;
  /** Optional `sub` claim. */
  subject?: string | undefined;
  /** Optional `kid` header, to select among the hub's keys (JWKS). */
  kid?: string | undefined;
}

export interface AccessTokenOptions {
  /** `iss`: the issuer identifier the hub trusts (an authorization server, or your app's URL). */
  issuer: string;
  /** `aud`: the hub's resource identifier, by default its URL, e.g. `https://hub.example.com/.well-known/mercure`. */
  audience: string | readonly string[];
  key: SigningKey;
  alg: SigningAlgorithm;
  /** Topics the token may publish to. */
  publish?: readonly TopicGrant[] | undefined;
  /** Topics whose private updates the token may read. */
  subscribe?: readonly TopicGrant[] | undefined;
  /** Matcher type of the string topics; default `exact`. `*` is always the wildcard. */
  matchType?: 'exact' | 'urlpattern' | undefined;
  /** Payload of the subscribe grant (visible in subscription events). */
  payload?: Record<string, unknown> | undefined;
  /** Required by RFC 9068. A lifetime like `'5m'` is recommended: access tokens should be short-lived. */
  exp: Expiration;
  /** `sub`; default the issuer. */
  subject?: string | undefined;
  /** `client_id`; default the issuer. */
  clientId?: string | undefined;
  /** `jti`; default a random `urn:uuid:`. */
  jti?: string | undefined;
  kid?: string | undefined;
}

export const AUTHORIZATION_DETAIL_TYPE = 'https://mercure.rocks/authorization-detail';

async function signingKey(key: SigningKey, alg: SigningAlgorithm): Promise<Uint8Array | CryptoKey | KeyObject> {
  if (!ALGORITHMS.includes(alg)) throw new TokenError(`Unsupported algorithm ${JSON.stringify(alg)}: use one of ${ALGORITHMS.join(', ')}`);
  const hmac = alg.startsWith('HS');
  if (typeof key === 'string') {
    if (key === '') throw new TokenError('The signing key is empty');
    if (hmac) return new TextEncoder().encode(key);
    if (!key.includes('-----BEGIN')) throw new TokenError(`${alg} needs a PKCS#8 PEM private key ("-----BEGIN PRIVATE KEY-----"), a JWK or a CryptoKey; a plain string is only a key for HS256/384/512`);
    try {
      return await importPKCS8(key.replace(/\\n/g, '\n'), alg);
    } catch (err) {
      throw new TokenError(`Cannot import the ${alg} private key: ${(err as Error).message}`);
    }
  }
  if (key instanceof Uint8Array) {
    if (!hmac) throw new TokenError(`${alg} is asymmetric: raw bytes are only a key for HS256/384/512`);
    if (key.length === 0) throw new TokenError('The signing key is empty');
    return key;
  }
  if (isJwk(key)) {
    try {
      const imported = await importJWK(key, alg);
      return imported;
    } catch (err) {
      throw new TokenError(`Cannot import the JWK for ${alg}: ${(err as Error).message}`);
    }
  }
  return key;
}

function isJwk(key: object): key is JWK {
  return typeof (key as { kty?: unknown }).kty === 'string';
}

function checkExp(exp: Expiration): Expiration {
  if (typeof exp === 'number') {
    if (!Number.isFinite(exp)) throw new TokenError(`Invalid exp ${exp}`);
    if (exp < 1_000_000_000) {
      throw new TokenError(`exp ${exp} is an absolute Unix time in seconds (${new Date(exp * 1000).toISOString()} is in the past); for a lifetime pass a string such as '1h' or '${exp}s'`);
    }
  } else if (exp instanceof Date) {
    if (Number.isNaN(exp.getTime())) throw new TokenError('Invalid exp: the Date is invalid');
  } else if (typeof exp !== 'string' || exp === '') {
    throw new TokenError(`Invalid exp ${JSON.stringify(exp)}: a Date, a Unix time in seconds or a lifetime like '1h'`);
  }
  return exp;
}

async function signDraft7(options: Draft7TokenOptions): Promise<string> {
  const alg = options.alg ?? 'HS256';
  const mercure: Record<string, unknown> = {};
  if (options.publish !== undefined) mercure.publish = [...options.publish];
  if (options.subscribe !== undefined) mercure.subscribe = [...options.subscribe];
  if (options.payload !== undefined) mercure.payload = options.payload;
  const jwt = new SignJWT({ mercure }).setProtectedHeader(options.kid ? { alg, typ: 'JWT', kid: options.kid } : { alg, typ: 'JWT' }).setIssuedAt();
  if (options.subject !== undefined) jwt.setSubject(options.subject);
  const exp = options.exp === undefined ? '1h' : options.exp;
  if (exp !== null) {
    try {
      jwt.setExpirationTime(checkExp(exp));
    } catch (err) {
      throw err instanceof TokenError ? err : new TokenError(`Invalid exp ${JSON.stringify(exp)}: ${(err as Error).message}`);
    }
  }
  return jwt.sign(await signingKey(options.key, alg));
}

/**
 * A draft-07 publisher token: `{"mercure": {"publish": [...]}}` (plus `subscribe` if given).
 * The hub checks every topic of an update against `publish` (`*` allows all).
 */
export function createPublisherToken(options: Draft7TokenOptions & { publish: readonly string[] }): Promise<string> {
  if (!Array.isArray(options.publish)) throw new TokenError('createPublisherToken: `publish` must be an array of topic selectors, e.g. ["*"]');
  return signDraft7(options);
}

/** A draft-07 subscriber token: `{"mercure": {"subscribe": [...], "payload": ...}}`. */
export function createSubscriberToken(options: Draft7TokenOptions & { subscribe: readonly string[] }): Promise<string> {
  if (!Array.isArray(options.subscribe)) throw new TokenError('createSubscriberToken: `subscribe` must be an array of topic selectors');
  return signDraft7(options);
}

function randomUuid(): string {
  const c = globalThis.crypto as { randomUUID?: () => string } | undefined;
  if (c?.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * A draft-08 RFC 9068 access token: header `typ: at+jwt`; claims `iss`, `aud`, `exp`, `sub`,
 * `client_id`, `iat`, `jti` and `authorization_details` (one Mercure detail per action).
 */
export async function createAccessToken(options: AccessTokenOptions): Promise<string> {
  if (!options.issuer) throw new TokenError('createAccessToken: `issuer` is required (RFC 9068 iss)');
  const audience = typeof options.audience === 'string' ? options.audience : [...(options.audience ?? [])];
  if (audience.length === 0) throw new TokenError("createAccessToken: `audience` is required: the hub's resource identifier, by default its URL");
  if (options.exp === undefined || options.exp === null) throw new TokenError('createAccessToken: `exp` is required (RFC 9068); use a short lifetime such as "5m"');
  const matchType = options.matchType ?? 'exact';
  if (matchType !== 'exact' && matchType !== 'urlpattern') throw new TokenError(`Unknown matchType ${JSON.stringify(matchType)}: exact or urlpattern`);
  const topics = (list: readonly TopicGrant[]): Array<{ match: string; match_type?: string }> =>
    list.map((t) => {
      const match = typeof t === 'string' ? t : t.match;
      const type = typeof t === 'string' ? matchType : (t.matchType ?? matchType);
      if (typeof match !== 'string' || match === '') throw new TokenError(`Invalid topic grant ${JSON.stringify(t)}`);
      return match === '*' || type === 'exact' ? { match } : { match, match_type: type };
    });
  const details: Array<Record<string, unknown>> = [];
  if (options.publish && options.publish.length > 0) {
    details.push({ type: AUTHORIZATION_DETAIL_TYPE, actions: ['publish'], topics: topics(options.publish) });
  }
  if (options.subscribe && options.subscribe.length > 0) {
    const d: Record<string, unknown> = { type: AUTHORIZATION_DETAIL_TYPE, actions: ['subscribe'], topics: topics(options.subscribe) };
    if (options.payload !== undefined) d.payload = options.payload;
    details.push(d);
  }
  const jwt = new SignJWT({
    authorization_details: details,
    client_id: options.clientId ?? options.issuer,
  })
    .setProtectedHeader(options.kid ? { alg: options.alg, typ: 'at+jwt', kid: options.kid } : { alg: options.alg, typ: 'at+jwt' })
    .setIssuer(options.issuer)
    .setAudience(audience)
    .setSubject(options.subject ?? options.issuer)
    .setJti(options.jti ?? `urn:uuid:${randomUuid()}`)
    .setIssuedAt();
  try {
    jwt.setExpirationTime(checkExp(options.exp));
  } catch (err) {
    throw err instanceof TokenError ? err : new TokenError(`Invalid exp ${JSON.stringify(options.exp)}: ${(err as Error).message}`);
  }
  return jwt.sign(await signingKey(options.key, options.alg));
}

export interface TokenProviderOptions {
  /** Mint a new token this long before the cached one expires, in ms. Default 30 000. */
  refreshBefore?: number | undefined;
  /** Upper bound on how long a token is reused, in ms (for tokens without exp). Default: no bound. */
  maxAge?: number | undefined;
  /** Clock, for tests. */
  now?: (() => number) | undefined;
}

/** A caching `TokenFactory`. */
export interface CachingTokenProvider extends TokenFactory {
  getToken(): Promise<string>;
  /** Forgets the cached token: the next call mints a new one. */
  invalidate(): void;
}

/**
 * Wraps a minting function: the first call mints, later calls reuse the token until `refreshBefore`
 * ms before its `exp`; concurrent calls share one mint; a failed mint is not cached.
 *
 * ```ts
 * const token = createTokenProvider(() => createPublisherToken({ key, publish: ['*'], exp: '10m' }));
 * ```
 */
export function createTokenProvider(mint: () => string | Promise<string>, options: TokenProviderOptions = {}): CachingTokenProvider {
  const refreshBefore = options.refreshBefore ?? 30_000;
  const now = options.now ?? Date.now;
  let cached: { token: string; until: number } | null = null;
  let inflight: Promise<string> | null = null;
  let generation = 0;
  return {
    async getToken(): Promise<string> {
      if (cached && now() < cached.until) return cached.token;
      if (inflight) return inflight;
      const gen = generation;
      const p = (async () => {
        const token = await mint();
        if (typeof token !== 'string' || token === '') throw new TokenError('The token provider returned an empty token');
        const minted = now();
        const exp = tokenExpiry(token);
        let until = exp === undefined ? Number.POSITIVE_INFINITY : exp - refreshBefore;
        if (options.maxAge !== undefined) until = Math.min(until, minted + options.maxAge);
        // A token that is already within its refresh window is used once, never cached.
        if (gen === generation) cached = until > minted ? { token, until } : null;
        return token;
      })();
      inflight = p;
      try {
        return await p;
      } finally {
        if (inflight === p) inflight = null;
      }
    },
    invalidate(): void {
      generation++;
      cached = null;
      inflight = null;
    },
  };
}

