/**
 * Access-token logic of the hub: finding the token in a request, verifying it, and turning its
 * claims into grants. Knows nothing of HTTP frameworks (it takes plain header strings) and
 * reports every failure as a value, never as a thrown exception.
 *
 * Two token shapes are understood:
 * - draft-08 (RFC 9068 JWT access token, `typ: at+jwt`): `iss`, `exp`, `aud` required,
 *   rights in RFC 9396 `authorization_details`;
 * - draft-07 (legacy): any JWS with a `mercure` claim `{publish, subscribe, payload}`.
 * The caller decides which versions it accepts, from `Grants.version`.
 */
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  importSPKI,
  importX509,
  jwtVerify,
  type CryptoKey,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { isMatcherType, MatcherError, selectorMatcher, typedMatcher, type Matcher } from '../core/topic-matcher.js';
import { LruCache } from '../util/lru-cache.js';
import type { Logger } from '../observability/logger.js';
import { JWT_ALGORITHMS, type IssuerOptions, type JwtAlgorithm, type KeyOptions } from '../http/options.js';

export type Role = 'publisher' | 'subscriber';

/** What a verified token permits. Immutable; the same object may be shared by many requests. */
export interface Grants {
  /** 8 = RFC 9068 access token (`typ: at+jwt`); 7 = legacy token with the `mercure` claim. */
  readonly version: 7 | 8;
  /** Draft-07: `mercure.publish` is an array (possibly empty). Draft-08: some detail grants `publish`. */
  readonly canPublish: boolean;
  readonly publish: readonly Matcher[];
  readonly subscribe: readonly Matcher[];
  /** From `exp`, in ms since the epoch. */
  readonly expiresAt: number | undefined;
  readonly subject: string | undefined;
  readonly issuer: string | undefined;
  /**
   * The payload attached to a subscription whose matcher string is `match`. Draft-08: the
   * payload of the first `subscribe` detail carrying a payload one of whose topic matchers
   * matches `match` taken as a topic (`*` matches everything). Draft-07: `mercure.payload`.
   */
  payloadFor(match: string): unknown;
}

export type TokenSource = 'header' | 'cookie' | 'query';

export interface PresentedToken {
  readonly token: string;
  readonly source: TokenSource;
}

/**
 * A token that cannot be used. `invalid_request`: the presentation is malformed (400);
 * `invalid_token`: the token is not acceptable (401). `message` is for logs only: it never
 * contains the token, and should not be sent to clients (RFC 6750 advises not to say why).
 */
export interface AuthFailure {
  readonly error: 'invalid_request' | 'invalid_token';
  readonly message: string;
}

export interface TokenInput {
  /** The `Authorization` header value(s) (several values = several headers, refused). */
  authorization?: string | readonly string[] | undefined;
  /** The `Cookie` header. */
  cookie?: string | undefined;
  /** The `authorization` query parameter value(s); pass it only where draft-07 is accepted. */
  queryToken?: string | readonly string[] | undefined;
}

export interface AuthorizerOptions {
  /** Verifies publishers' tokens (and draft-08 tokens from issuers not in `issuers`). */
  publisher?: KeyOptions | undefined;
  /** Verifies subscribers' tokens. Defaults to `publisher` when it has neither key nor jwksUrl. */
  subscriber?: KeyOptions | undefined;
  /** Draft-08 issuers with their own keys: a token whose `iss` names one is verified with those only. */
  issuers?: readonly IssuerOptions[] | undefined;
  /** `iss` values accepted for draft-08 tokens verified with the role keys. Empty/undefined = any. */
  trustedIssuers?: readonly string[] | undefined;
  /** Required `aud` of draft-08 tokens. Default: the `audience` given to `verify()`. */
  resourceIdentifier?: string | undefined;
  /** Base for relative URL patterns in tokens. Default: the `audience` given to `verify()`. */
  baseUrl?: string | undefined;
  /** Verified-token cache entries. Default 10 000; 0 disables. */
  cacheSize?: number | undefined;
  /** Tuning of remote JWK Sets (ms). Defaults: jose's (timeout 5 s, cooldown 30 s, max age 10 min). */
  jwks?: { timeoutDuration?: number; cooldownDuration?: number; cacheMaxAge?: number } | undefined;
  logger?: Logger | undefined;
}

export const MERCURE_DETAIL_TYPE = 'https://mercure.rocks/authorization-detail';
/** Draft-07 namespaced fallback claim (for identity providers that require namespaced claims). */
export const NAMESPACED_CLAIM = 'https://mercure.rocks/';
/** Most selectors in `mercure.publish` / `mercure.subscribe` (reference hub constant). */
export const MAX_LEGACY_SELECTORS = 1000;
/** Most authorization details per token, and topic matchers per detail. */
export const MAX_DETAILS = 100;
export const MAX_DETAIL_TOPICS = 100;

/** A verified token is re-verified at least this often (JWK Set rotation), even without `exp`. */
const SUCCESS_TTL_MS = 5 * 60_000;
/** Deterministic failures (bad signature, expired, bad claims) are remembered this long. */
const FAILURE_TTL_MS = 10_000;
const DEFAULT_CACHE_SIZE = 10_000;
const KEY_ERROR_LOG_INTERVAL_MS = 10_000;
const ASYMMETRIC: readonly JwtAlgorithm[] = JWT_ALGORITHMS.filter((a) => !a.startsWith('HS'));

export function isAuthFailure(value: Grants | AuthFailure | PresentedToken | null): value is AuthFailure {
  return value !== null && 'error' in value;
}

// ---------------------------------------------------------------------------------------------
// Token presentation
// ---------------------------------------------------------------------------------------------

// RFC 7235 token68: the charset of a Bearer credential (covers every JWS compact serialization).
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Finds the presented token. Precedence: the `Authorization` header (the cookie and query are
 * then ignored), then the `authorization` query parameter (draft-07: it wins over the cookie),
 * then the first of `cookieNames` present in the `Cookie` header. `null` = anonymous.
 */
export function extractToken(input: TokenInput, cookieNames: readonly string[]): PresentedToken | AuthFailure | null {
  const header = input.authorization;
  if (header !== undefined) {
    const values = typeof header === 'string' ? [header] : header;
    if (values.length > 1) return invalidRequest('more than one Authorization header');
    if (values.length === 1) {
      const value = values[0]!.trim();
      const space = value.indexOf(' ');
      if (space < 0 || value.slice(0, space).toLowerCase() !== 'bearer') {
        return invalidRequest('Authorization header does not use the Bearer scheme');
      }
      const token = value.slice(space + 1).trim();
      if (!TOKEN68.test(token)) return invalidRequest('malformed Bearer credentials in the Authorization header');
      return { token, source: 'header' };
    }
  }

  const query = input.queryToken;
  if (query !== undefined) {
    const values = typeof query === 'string' ? [query] : query;
    if (values.length > 1) return invalidRequest('more than one authorization query parameter');
    if (values.length === 1) {
      const token = values[0]!;
      if (!TOKEN68.test(token)) return invalidRequest('malformed authorization query parameter');
      return { token, source: 'query' };
    }
  }

  if (input.cookie && cookieNames.length > 0) {
    const cookies = parseCookies(input.cookie);
    for (const name of cookieNames) {
      const value = cookies.get(name);
      // An emptied cookie (a logout that could not delete it) is no token.
      if (value) return { token: value, source: 'cookie' };
    }
  }
  return null;
}

/** First value of each cookie name (browsers send the most specific path first). */
function parseCookies(header: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (name && !out.has(name)) out.set(name, value);
  }
  return out;
}

function invalidRequest(message: string): AuthFailure {
  return Object.freeze({ error: 'invalid_request' as const, message });
}

function invalidToken(message: string): AuthFailure {
  return Object.freeze({ error: 'invalid_token' as const, message });
}

// ---------------------------------------------------------------------------------------------
// Grants
// ---------------------------------------------------------------------------------------------

interface PayloadRule {
  readonly matchers: readonly Matcher[];
  readonly payload: unknown;
}

class TokenGrants implements Grants {
  readonly #legacyPayload: unknown;
  readonly #rules: readonly PayloadRule[];

  constructor(
    readonly version: 7 | 8,
    readonly canPublish: boolean,
    readonly publish: readonly Matcher[],
    readonly subscribe: readonly Matcher[],
    readonly expiresAt: number | undefined,
    readonly subject: string | undefined,
    readonly issuer: string | undefined,
    payload: { legacy: unknown } | { rules: readonly PayloadRule[] },
  ) {
    Object.freeze(publish);
    Object.freeze(subscribe);
    // Grants are cached and shared between requests: nothing in them may be mutated.
    this.#legacyPayload = 'legacy' in payload ? deepFreeze(payload.legacy) : undefined;
    this.#rules = 'rules' in payload ? payload.rules.map((r) => Object.freeze({ ...r, payload: deepFreeze(r.payload) })) : [];
    Object.freeze(this);
  }

  payloadFor(match: string): unknown {
    if (this.version === 7) return this.#legacyPayload;
    for (const rule of this.#rules) {
      if (rule.matchers.some((m) => m.matches(match))) return rule.payload;
    }
    return undefined;
  }
}

/** Every topic is matched by some publish matcher. False for an empty topic list. */
export function canPublish(grants: Grants, topics: readonly string[]): boolean {
  if (!grants.canPublish || topics.length === 0) return false;
  const matchers = grants.publish;
  return topics.every((t) => matchers.some((m) => m.matches(t)));
}

/** Some topic is matched by some subscribe matcher. Anonymous (`null`) never is. */
export function canSubscribe(grants: Grants | null, topics: readonly string[]): boolean {
  if (grants === null) return false;
  const matchers = grants.subscribe;
  if (matchers.length === 0) return false;
  return topics.some((t) => matchers.some((m) => m.matches(t)));
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/** A key source failed for a reason unrelated to the token (unreachable JWK Set, bad PEM). */
class KeyUnavailable extends Error {}

type StaticKey = CryptoKey;

/** One configured way to verify tokens: a pinned algorithm list and a key or a JWK Set. */
class KeyVerifier {
  readonly algorithms: readonly JwtAlgorithm[];
  private readonly jwks: JWTVerifyGetKey | undefined;
  private imported: Promise<StaticKey> | undefined;

  constructor(
    readonly label: string,
    private readonly options: KeyOptions,
    jwksTuning: AuthorizerOptions['jwks'],
  ) {
    const alg = options.algorithm;
    if (alg !== undefined && !JWT_ALGORITHMS.includes(alg)) {
      throw new Error(`${label}: unsupported algorithm ${String(alg)}`);
    }
    if (options.jwksUrl) {
      // A JWK Set names its key types; without a pinned algorithm every asymmetric one is allowed
      // (jose binds each to a matching key type). HMAC keys are never taken from a JWK Set.
      if (alg?.startsWith('HS')) throw new Error(`${label}: HMAC algorithms cannot be used with a JWK Set`);
      this.algorithms = alg ? [alg] : ASYMMETRIC;
      this.jwks = loadJwks(label, options.jwksUrl, jwksTuning);
    } else {
      this.algorithms = [alg ?? 'HS256'];
      const key = options.key;
      if (!key) throw new Error(`${label}: no key configured`);
      if (!this.algorithms[0]!.startsWith('HS') && !key.includes('-----BEGIN')) {
        throw new Error(`${label}: ${this.algorithms[0]} needs a PEM public key or certificate`);
      }
    }
  }

  get usesJwks(): boolean {
    return this.jwks !== undefined;
  }

  describeAlgorithms(): string {
    return this.algorithms.length === 1 ? `pins ${this.algorithms[0]}` : `accepts ${this.algorithms.join(', ')}`;
  }

  /** Imports a static key once; a failure is remembered (configuration errors do not heal). */
  staticKey(): Promise<StaticKey> {
    this.imported ??= importStaticKey(this.options.key!, this.algorithms[0]!).catch((err: unknown) => {
      throw new KeyUnavailable(`${this.label} cannot be imported: ${errorMessage(err)}`);
    });
    return this.imported;
  }

  async verify(token: string): Promise<JWTPayload> {
    const options = { algorithms: [...this.algorithms] };
    if (this.jwks) {
      try {
        return (await jwtVerify(token, this.jwks, options)).payload;
      } catch (err) {
        // Several keys fit (no `kid`, e.g. during a rotation): the token must verify with one.
        if (err instanceof errors.JWKSMultipleMatchingKeys) return verifyWithAny(token, err, options);
        throw err;
      }
    }
    return (await jwtVerify(token, await this.staticKey(), options)).payload;
  }
}

async function verifyWithAny(
  token: string,
  candidates: errors.JWKSMultipleMatchingKeys,
  options: { algorithms: string[] },
): Promise<JWTPayload> {
  let last: unknown = new errors.JWSSignatureVerificationFailed();
  for await (const key of candidates) {
    try {
      return (await jwtVerify(token, key, options)).payload;
    } catch (err) {
      last = err;
      if (!(err instanceof errors.JWSSignatureVerificationFailed)) break;
    }
  }
  throw last;
}

async function importStaticKey(key: string, alg: JwtAlgorithm): Promise<StaticKey> {
  if (alg.startsWith('HS')) {
    // Imported once as a non-extractable CryptoKey: jose would re-import raw bytes per token.
    const hash = `SHA-${alg.slice(2)}`;
    return globalThis.crypto.subtle.importKey('raw', new TextEncoder().encode(key), { name: 'HMAC', hash }, false, [
      'verify',
    ]);
  }
  const pem = key.trim();
  if (pem.startsWith('-----BEGIN CERTIFICATE-----')) return importX509(pem, alg);
  if (pem.startsWith('-----BEGIN PUBLIC KEY-----')) return importSPKI(pem, alg);
  if (pem.startsWith('-----BEGIN RSA PUBLIC KEY-----')) {
    // PKCS#1, accepted by the reference hub: re-encoded as SPKI (a format change, no crypto).
    const spki = createPublicKey(pem).export({ type: 'spki', format: 'pem' }).toString();
    return importSPKI(spki, alg);
  }
  throw new Error('expected a PEM public key (SPKI or PKCS#1) or X.509 certificate');
}

function loadJwks(label: string, jwksUrl: string, tuning: AuthorizerOptions['jwks']): JWTVerifyGetKey {
  let url: URL;
  try {
    url = new URL(jwksUrl);
  } catch {
    throw new Error(`${label}: invalid JWK Set URL`);
  }
  let resolve: JWTVerifyGetKey;
  if (url.protocol === 'file:') {
    try {
      resolve = createLocalJWKSet(JSON.parse(readFileSync(fileURLToPath(url), 'utf8')));
    } catch (err) {
      throw new Error(`${label}: cannot load JWK Set ${url.href}: ${errorMessage(err)}`);
    }
  } else if (url.protocol === 'https:' || url.protocol === 'http:') {
    const opts: Record<string, number> = {};
    if (tuning?.timeoutDuration !== undefined) opts.timeoutDuration = tuning.timeoutDuration;
    if (tuning?.cooldownDuration !== undefined) opts.cooldownDuration = tuning.cooldownDuration;
    if (tuning?.cacheMaxAge !== undefined) opts.cacheMaxAge = tuning.cacheMaxAge;
    resolve = createRemoteJWKSet(url, opts);
  } else {
    throw new Error(`${label}: JWK Set URL must be https:, http: or file:`);
  }
  // Separate "no key fits this token" (the token's fault) from "the key set is unavailable".
  return async (header, token) => {
    try {
      return await resolve(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      throw new KeyUnavailable(`${label} JWK Set unavailable: ${errorMessage(err)}`);
    }
  };
}

function hasKey(options: KeyOptions | undefined): options is KeyOptions {
  return options !== undefined && Boolean(options.key || options.jwksUrl);
}

// ---------------------------------------------------------------------------------------------
// Authorizer
// ---------------------------------------------------------------------------------------------

/** An outcome, and how long it may be served from the cache (0 = not cached). */
interface Outcome {
  readonly result: Grants | AuthFailure;
  readonly until: number;
}

interface RoleKeys {
  readonly publisher: KeyVerifier | undefined;
  readonly subscriber: KeyVerifier | undefined;
}

/**
 * Verifies tokens for one hub configuration. Configuration errors (unknown algorithm, missing
 * key, unreadable `file://` JWK Set) throw from the constructor; PEM import errors surface from
 * `ready()` or as `invalid_token` failures (and an error log).
 *
 * Cache: verified tokens are kept in a bounded LRU keyed by role, audience and token, until
 * `exp` (at most 5 minutes, so JWK Set rotations take effect). Failures that depend only on the
 * token (bad signature, expired, bad claims) are kept 10 s to absorb reconnect storms of stale
 * cookies; cheap pre-verification failures, `nbf` failures and key-source outages are not.
 * Concurrent verifications of one token share one jose call.
 */
export class Authorizer {
  private readonly roleKeys: RoleKeys;
  private readonly issuerKeys = new Map<string, RoleKeys>();
  private readonly trustedIssuers: ReadonlySet<string>;
  private readonly cache: LruCache<string, Outcome>;
  private readonly inflight = new Map<string, Promise<Grants | AuthFailure>>();
  private readonly logger: Logger | undefined;
  private readonly keyErrorLoggedAt = new Map<string, number>();
  private closed = false;

  constructor(private readonly options: AuthorizerOptions) {
    this.roleKeys = buildRoleKeys('', options.publisher, options.subscriber, options.jwks);
    for (const issuer of options.issuers ?? []) {
      if (typeof issuer.issuer !== 'string' || issuer.issuer === '') throw new Error('issuer without an identifier');
      if (this.issuerKeys.has(issuer.issuer)) throw new Error(`issuer ${issuer.issuer} configured twice`);
      const keys = buildRoleKeys(`issuer ${issuer.issuer} `, issuer.publisher, issuer.subscriber, options.jwks);
      if (!keys.publisher && !keys.subscriber) throw new Error(`issuer ${issuer.issuer} has no key`);
      this.issuerKeys.set(issuer.issuer, keys);
    }
    this.trustedIssuers = new Set(options.trustedIssuers ?? []);
    this.cache = new LruCache(options.cacheSize ?? DEFAULT_CACHE_SIZE);
    this.logger = options.logger;
  }

  /** Imports every static key now; rejects with the first configuration error. */
  async ready(): Promise<void> {
    const all = [this.roleKeys, ...this.issuerKeys.values()].flatMap((k) => [k.publisher, k.subscriber]);
    for (const v of new Set(all)) if (v && !v.usesJwks) await v.staticKey();
  }

  /**
   * Verifies `token` for `role`. `audience` is the hub URL as requested
   * (`<scheme>://<host>/.well-known/mercure`): the required draft-08 `aud` unless
   * `resourceIdentifier` is configured, and the base of relative URL patterns unless `baseUrl` is.
   */
  verify(token: string, role: Role, audience: string): Promise<Grants | AuthFailure> {
    if (this.closed) return Promise.resolve(invalidToken('authorizer is closed'));
    const key = `${role}\u0000${audience}\u0000${token}`;
    const hit = this.cache.get(key);
    if (hit) {
      if (Date.now() < hit.until) return Promise.resolve(hit.result);
      this.cache.delete(key);
    }
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const promise = this.check(token, role, audience)
      .catch((err: unknown): Outcome => {
        this.logger?.error({ err: errorMessage(err), role }, 'unexpected token verification error');
        return { result: invalidToken('unexpected verification error'), until: 0 };
      })
      .then((outcome) => {
        this.inflight.delete(key);
        if (!this.closed && outcome.until > Date.now()) this.cache.set(key, outcome);
        return outcome.result;
      });
    this.inflight.set(key, promise);
    return promise;
  }

  close(): void {
    this.closed = true;
    this.cache.clear();
    this.inflight.clear();
  }

  /** Key-source errors repeat for every request during an outage: logged once per 10 s each. */
  private logKeyError(role: Role, message: string): void {
    const now = Date.now();
    const last = this.keyErrorLoggedAt.get(message);
    if (last !== undefined && now - last < KEY_ERROR_LOG_INTERVAL_MS) return;
    if (this.keyErrorLoggedAt.size > 100) this.keyErrorLoggedAt.clear();
    this.keyErrorLoggedAt.set(message, now);
    this.logger?.error({ role, err: message }, 'token verification key unavailable');
  }

  private async check(token: string, role: Role, audience: string): Promise<Outcome> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch {
      return fail('malformed token: not a JWT in JWS compact serialization');
    }
    const alg = header.alg;
    if (typeof alg !== 'string' || alg === '') return fail('alg header missing');
    if (alg.toLowerCase() === 'none') return fail('alg none not allowed');

    const typ = header.typ;
    const accessToken = typeof typ === 'string' && /^(application\/)?at\+jwt$/i.test(typ);
    const version: 7 | 8 = accessToken || unverified.authorization_details !== undefined ? 8 : 7;
    if (version === 8 && !accessToken) {
      return fail(`token with authorization_details must have typ at+jwt, got ${show(typ)}`);
    }

    let verifier: KeyVerifier | undefined;
    if (version === 8) {
      const iss = unverified.iss;
      if (iss === undefined) return fail('iss claim missing');
      if (typeof iss !== 'string') return fail('iss claim must be a string');
      const issuerKeys = this.issuerKeys.get(iss);
      if (issuerKeys) {
        // Only this issuer's keys: a token from another trusted issuer cannot borrow its identity.
        verifier = issuerKeys[role];
        if (!verifier) return fail(`issuer ${show(iss)} has no ${role} key`);
      } else {
        if (this.trustedIssuers.size > 0 && !this.trustedIssuers.has(iss)) {
          return fail(`issuer ${show(iss)} is not trusted`);
        }
        verifier = this.roleKeys[role];
      }
    } else {
      verifier = this.roleKeys[role];
    }
    if (!verifier) return fail(`no key configured for ${role} tokens`);
    if (!(verifier.algorithms as readonly string[]).includes(alg)) {
      return fail(`alg ${show(alg, false)} not allowed, hub ${verifier.describeAlgorithms()}`);
    }

    let payload: JWTPayload;
    try {
      payload = await verifier.verify(token);
    } catch (err) {
      return this.joseFailure(err, role);
    }

    const now = Date.now();
    const expiresAt = typeof payload.exp === 'number' ? payload.exp * 1000 : undefined;
    const subject = typeof payload.sub === 'string' ? payload.sub : undefined;
    const issuer = typeof payload.iss === 'string' ? payload.iss : undefined;
    const grantsOrError =
      version === 8
        ? this.accessTokenGrants(payload, audience, expiresAt, subject, issuer)
        : legacyGrants(payload, expiresAt, subject, issuer);
    if (typeof grantsOrError === 'string') return { result: invalidToken(grantsOrError), until: now + FAILURE_TTL_MS };
    return { result: grantsOrError, until: Math.min(expiresAt ?? Infinity, now + SUCCESS_TTL_MS) };
  }

  private accessTokenGrants(
    payload: JWTPayload,
    audience: string,
    expiresAt: number | undefined,
    subject: string | undefined,
    issuer: string | undefined,
  ): Grants | string {
    if (expiresAt === undefined) return 'exp claim missing';
    const resource = this.options.resourceIdentifier ?? audience;
    const aud = payload.aud;
    if (aud === undefined) return 'aud claim missing';
    const auds = typeof aud === 'string' ? [aud] : aud;
    if (!Array.isArray(auds) || !auds.every((a) => typeof a === 'string')) {
      return 'aud claim must be a string or an array of strings';
    }
    if (!auds.includes(resource)) return `aud does not include ${resource}`;

    const baseUrl = this.options.baseUrl ?? audience;
    const details = payload.authorization_details;
    const publish: Matcher[] = [];
    const subscribe: Matcher[] = [];
    const rules: PayloadRule[] = [];
    let publishes = false;
    if (details !== undefined) {
      if (!Array.isArray(details)) return 'authorization_details must be an array';
      if (details.length > MAX_DETAILS) return `more than ${MAX_DETAILS} authorization details`;
      for (let i = 0; i < details.length; i++) {
        const parsed = parseDetail(details[i], `authorization_details[${i}]`, baseUrl);
        if (typeof parsed === 'string') return parsed;
        if (parsed === null) continue;
        if (parsed.publish) {
          publishes = true;
          publish.push(...parsed.matchers);
        }
        if (parsed.subscribe) {
          subscribe.push(...parsed.matchers);
          if (parsed.payload !== undefined) rules.push({ matchers: parsed.matchers, payload: parsed.payload });
        }
      }
    }
    return new TokenGrants(8, publishes, unique(publish), unique(subscribe), expiresAt, subject, issuer, { rules });
  }

  private joseFailure(err: unknown, role: Role): Outcome {
    const now = Date.now();
    const deterministic = (message: string): Outcome => ({ result: invalidToken(message), until: now + FAILURE_TTL_MS });
    if (err instanceof KeyUnavailable) {
      this.logKeyError(role, err.message);
      return fail(err.message);
    }
    if (err instanceof errors.JWTExpired) return deterministic('token expired');
    if (err instanceof errors.JWTClaimValidationFailed) {
      // Not cached: the token becomes valid at `nbf`.
      if (err.claim === 'nbf' && err.reason === 'check_failed') return fail('token not yet valid (nbf)');
      return deterministic(`${err.claim} claim invalid: ${err.message}`);
    }
    if (err instanceof errors.JWSSignatureVerificationFailed) return deterministic('signature verification failed');
    // Not cached: the key may appear at the next JWK Set refresh.
    if (err instanceof errors.JWKSNoMatchingKey) return fail('no key of the JWK Set matches the token (kid/alg)');
    if (err instanceof errors.JOSEAlgNotAllowed) return deterministic('alg not allowed');
    if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) {
      return deterministic(`malformed token: ${err.message}`);
    }
    if (err instanceof errors.JOSENotSupported) return deterministic(`unsupported token: ${err.message}`);
    if (err instanceof TypeError) {
      // jose reports a key unusable for the algorithm (wrong curve, RSA key too short) this way.
      this.logger?.warn({ role, err: err.message }, 'token cannot be verified with the configured key');
      return deterministic(`key unusable for this token: ${err.message}`);
    }
    this.logger?.error({ role, err: errorMessage(err) }, 'unexpected token verification error');
    return fail(`verification failed: ${errorMessage(err)}`);
  }
}

function buildRoleKeys(
  prefix: string,
  publisher: KeyOptions | undefined,
  subscriber: KeyOptions | undefined,
  jwks: AuthorizerOptions['jwks'],
): RoleKeys {
  const pub = hasKey(publisher) ? new KeyVerifier(`${prefix}publisher key`, publisher, jwks) : undefined;
  const sub = hasKey(subscriber) ? new KeyVerifier(`${prefix}subscriber key`, subscriber, jwks) : pub;
  return { publisher: pub, subscriber: sub };
}

/** A failure that is not cached. */
function fail(message: string): Outcome {
  return { result: invalidToken(message), until: 0 };
}

// ---------------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------------

function legacyGrants(
  payload: JWTPayload,
  expiresAt: number | undefined,
  subject: string | undefined,
  issuer: string | undefined,
): Grants | string {
  let claim = payload.mercure;
  let name = 'mercure';
  if (claim === undefined || claim === null) {
    claim = payload[NAMESPACED_CLAIM];
    name = NAMESPACED_CLAIM;
  }
  if (claim === undefined || claim === null) {
    return new TokenGrants(7, false, [], [], expiresAt, subject, issuer, { legacy: undefined });
  }
  if (!isObject(claim)) return `${name} claim must be an object`;
  const publish = selectors(claim.publish, `${name}.publish`);
  if (typeof publish === 'string') return publish;
  const subscribe = selectors(claim.subscribe, `${name}.subscribe`);
  if (typeof subscribe === 'string') return subscribe;
  return new TokenGrants(7, publish !== null, publish ?? [], subscribe ?? [], expiresAt, subject, issuer, {
    legacy: claim.payload,
  });
}

function selectors(value: unknown, name: string): Matcher[] | null | string {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value)) return `${name} must be an array`;
  if (value.length > MAX_LEGACY_SELECTORS) return `${name} has more than ${MAX_LEGACY_SELECTORS} entries`;
  const out: Matcher[] = [];
  for (const s of value) {
    if (typeof s !== 'string') return `${name} entries must be strings`;
    out.push(selectorMatcher(s));
  }
  return unique(out);
}

interface ParsedDetail {
  readonly publish: boolean;
  readonly subscribe: boolean;
  readonly matchers: readonly Matcher[];
  readonly payload: unknown;
}

/** A Mercure detail, `null` for a detail of another type, or an error message. */
function parseDetail(detail: unknown, where: string, baseUrl: string): ParsedDetail | null | string {
  if (!isObject(detail)) return `${where} is not an object`;
  if (typeof detail.type !== 'string') return `${where}.type must be a string`;
  if (detail.type !== MERCURE_DETAIL_TYPE) return null;

  const actions = detail.actions;
  if (!Array.isArray(actions) || actions.length === 0) return `${where}.actions must be a non-empty array`;
  let publish = false;
  let subscribe = false;
  for (const action of actions) {
    if (typeof action !== 'string') return `${where}.actions entries must be strings`;
    // Unknown actions grant nothing and do not invalidate the token.
    if (action === 'publish') publish = true;
    else if (action === 'subscribe') subscribe = true;
  }

  const topics = detail.topics;
  if (!Array.isArray(topics) || topics.length === 0) return `${where}.topics must be a non-empty array`;
  if (topics.length > MAX_DETAIL_TOPICS) return `${where}.topics has more than ${MAX_DETAIL_TOPICS} entries`;
  const matchers: Matcher[] = [];
  for (let j = 0; j < topics.length; j++) {
    const topic: unknown = topics[j];
    const at = `${where}.topics[${j}]`;
    if (!isObject(topic)) return `${at} is not an object`;
    if (typeof topic.match !== 'string') return `${at}.match must be a string`;
    const type = topic.match_type === undefined ? 'exact' : topic.match_type;
    if (typeof type !== 'string' || !isMatcherType(type)) return `${at}.match_type ${show(type)} is not supported`;
    try {
      matchers.push(typedMatcher(type, topic.match, baseUrl));
    } catch (err) {
      if (err instanceof MatcherError) return `${at}.match is invalid: ${err.message}`;
      throw err;
    }
  }

  const payload = detail.payload;
  if (payload !== undefined && !isObject(payload)) return `${where}.payload must be an object`;
  return { publish, subscribe, matchers, payload };
}

function unique(matchers: Matcher[]): Matcher[] {
  if (matchers.length < 2) return matchers;
  const seen = new Set<string>();
  return matchers.filter((m) => {
    const k = `${m.kind}\u0000${m.source}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A token-supplied value, quoted and truncated for a log message. */
function show(value: unknown, quote = true): string {
  const s = String(value).slice(0, 100);
  return quote ? JSON.stringify(s) : s.replace(/[^\x20-\x7e]/g, '?');
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
