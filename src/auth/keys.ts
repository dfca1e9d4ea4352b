/**
 * The keys tokens are verified with: a static HMAC secret or PEM public key (imported once), or
 * a JWK Set read from a file or fetched and cached by jose. A key source that cannot answer
 * throws `KeyUnavailable`, so that an outage is not mistaken for a bad token.
 */
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  importSPKI,
  importX509,
  jwtVerify,
  type CryptoKey,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { errorMessage } from './messages.js';
import { JWT_ALGORITHMS, type JwksTuning, type JwtAlgorithm, type KeyOptions } from './options.js';

const ASYMMETRIC: readonly JwtAlgorithm[] = JWT_ALGORITHMS.filter((a) => !a.startsWith('HS'));

/** A key source failed for a reason unrelated to the token (unreachable JWK Set, bad PEM). */
export class KeyUnavailable extends Error {}

type StaticKey = CryptoKey;

/** One configured way to verify tokens: a pinned algorithm list and a key or a JWK Set. */
export class KeyVerifier {
  readonly algorithms: readonly JwtAlgorithm[];
  private readonly jwks: JWTVerifyGetKey | undefined;
  private imported: Promise<StaticKey> | undefined;

  constructor(
    readonly label: string,
    private readonly options: KeyOptions,
    jwksTuning: JwksTuning | undefined,
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

function loadJwks(label: string, jwksUrl: string, tuning: JwksTuning | undefined): JWTVerifyGetKey {
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

export function hasKey(options: KeyOptions | undefined): options is KeyOptions {
  return options !== undefined && Boolean(options.key || options.jwksUrl);
}
