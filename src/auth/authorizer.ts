/**
 * Token verification for one hub configuration: picks the keys for the token's version, issuer
 * and role, verifies the signature and registered claims with jose, and caches the outcome.
 * Every failure is reported as an `AuthFailure` value, never as a thrown exception.
 */
import { decodeJwt, decodeProtectedHeader, errors, type JWTPayload } from 'jose';
import { LruCache } from '../util/lru-cache.js';
import type { Logger } from '../observability/logger.js';
import { accessTokenGrants, legacyGrants, type Grants, type Role } from './grants.js';
import { hasKey, KeyUnavailable, KeyVerifier } from './keys.js';
import { errorMessage, show } from './messages.js';
import type { IssuerOptions, JwksTuning, KeyOptions } from './options.js';
import type { AuthFailure } from './token.js';

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
  jwks?: JwksTuning | undefined;
  logger?: Logger | undefined;
}

/** A verified token is re-verified at least this often (JWK Set rotation), even without `exp`. */
const SUCCESS_TTL_MS = 5 * 60_000;
/** Deterministic failures (bad signature, expired, bad claims) are remembered this long. */
const FAILURE_TTL_MS = 10_000;
const DEFAULT_CACHE_SIZE = 10_000;
const KEY_ERROR_LOG_INTERVAL_MS = 10_000;

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
        const now = Date.now();
        if (!this.closed && outcome.until > now) {
          // A token that is never presented again (its stream ended, it expired) would otherwise
          // sit in the cache until 10,000 newer ones push it out: ~1 KiB each, held for hours.
          this.cache.evictStale((o) => o.until <= now, 4);
          this.cache.set(key, outcome);
        }
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
        ? accessTokenGrants(
            payload,
            this.options.resourceIdentifier ?? audience,
            this.options.baseUrl ?? audience,
            expiresAt,
            subject,
            issuer,
          )
        : legacyGrants(payload, expiresAt, subject, issuer);
    if (typeof grantsOrError === 'string') return { result: invalidToken(grantsOrError), until: now + FAILURE_TTL_MS };
    return { result: grantsOrError, until: Math.min(expiresAt ?? Infinity, now + SUCCESS_TTL_MS) };
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
  jwks: JwksTuning | undefined,
): RoleKeys {
  const pub = hasKey(publisher) ? new KeyVerifier(`${prefix}publisher key`, publisher, jwks) : undefined;
  const sub = hasKey(subscriber) ? new KeyVerifier(`${prefix}subscriber key`, subscriber, jwks) : pub;
  return { publisher: pub, subscriber: sub };
}

/** A failure that is not cached. */
function fail(message: string): Outcome {
  return { result: invalidToken(message), until: 0 };
}

function invalidToken(message: string): AuthFailure {
  return Object.freeze({ error: 'invalid_token' as const, message });
}
