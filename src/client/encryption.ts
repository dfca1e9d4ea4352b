/**
 * End-to-end encryption of update data with JWE (RFC 7516) compact serialization, so the hub only
 * relays ciphertext: `ECDH-ES+A256KW` or `RSA-OAEP-256` key management with `A256GCM` content
 * encryption (the algorithms draft-08 recommends; `RSA1_5` is always refused). An optional
 * freshness timestamp inside the encrypted payload lets subscribers refuse replayed updates.
 * Uses jose (Web Crypto): Node and browsers.
 *
 * ```ts
 * const { publicJwk, privateJwk } = await generateEncryptionKeyPair();
 * await publisher.publish({ topics: topic, data: await encryptData(JSON.stringify(doc), publicJwk, { timestamp: true }), private: true });
 * // subscriber
 * const doc = JSON.parse(await decryptData(event.data, privateJwk, { maxAge: '5m' }));
 * ```
 */
import {
  CompactEncrypt,
  compactDecrypt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  importJWK,
  type CompactJWEHeaderParameters,
  type CryptoKey,
  type JWK,
  type KeyObject,
} from 'jose';

/** Key management algorithms this module accepts. */
export type KeyManagementAlgorithm = 'ECDH-ES+A256KW' | 'RSA-OAEP-256';
export const KEY_MANAGEMENT_ALGORITHMS: readonly KeyManagementAlgorithm[] = ['ECDH-ES+A256KW', 'RSA-OAEP-256'];
export const CONTENT_ENCRYPTION_ALGORITHM = 'A256GCM';

/** A public (encryption) or private (decryption) key: a JWK, a Web Crypto key or a Node KeyObject. */
export type EncryptionKey = JWK | CryptoKey | KeyObject;

/** The `cty` of payloads carrying a freshness timestamp: `{"iat": <seconds>, "data": "<plaintext>"}`. */
export const TIMESTAMPED_CONTENT_TYPE = 'mercure-timestamped+json';

export type EncryptionErrorCode =
  | 'algorithm_refused' // RSA1_5 or another algorithm outside the allowlist
  | 'invalid_key' // unusable key (symmetric, wrong type, wrong curve…)
  | 'malformed' // not a JWE compact serialization, or a bad timestamped payload
  | 'decryption_failed' // wrong key, or tampered ciphertext
  | 'missing_timestamp' // maxAge required a timestamp the payload lacks
  | 'stale' // older than maxAge
  | 'not_yet_valid'; // timestamp in the future beyond the clock tolerance

export class EncryptionError extends Error {
  override readonly name = 'EncryptionError';
  readonly code: EncryptionErrorCode;
  constructor(code: EncryptionErrorCode, message: string, cause?: unknown) {
    super(message, cause !== undefined ? { cause } : undefined);
    this.code = code;
  }
}

export interface EncryptDataOptions {
  /** Default: inferred from the key (EC/OKP → ECDH-ES+A256KW, RSA → RSA-OAEP-256). */
  alg?: KeyManagementAlgorithm | undefined;
  /** `kid` header, so subscribers holding several keys pick the right one. Default: the JWK's `kid`. */
  kid?: string | undefined;
  /** Wrap the plaintext with an issued-at timestamp (`true` = now), checked by `decryptData`'s `maxAge`. */
  timestamp?: boolean | Date | undefined;
}

export interface DecryptDataOptions {
  /**
   * Refuse payloads older than this: seconds, or a duration like `'30s'`, `'5m'`, `'1h'`. Payloads
   * without a timestamp are then refused too.
   */
  maxAge?: number | string | undefined;
  /** Allowed clock skew for the timestamp, in seconds or a duration. Default 30 s. */
  clockTolerance?: number | string | undefined;
  /** Restrict the accepted algorithms further (RSA1_5 can never be allowed). */
  algorithms?: readonly KeyManagementAlgorithm[] | undefined;
  /** Clock in epoch ms, for tests. */
  now?: (() => number) | undefined;
}

export interface DecryptedData {
  data: string;
  /** The freshness timestamp, when the publisher included one. */
  issuedAt: Date | undefined;
  header: CompactJWEHeaderParameters;
}

/** Seconds from a number of seconds or a duration string. */
function seconds(value: number | string, what: string): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new TypeError(`Invalid ${what} ${value}`);
    return value;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|m|min|mins|h|hr|hrs|d|days?)?\s*$/i.exec(value);
  if (!m) throw new TypeError(`Invalid ${what} ${JSON.stringify(value)}: seconds, or a duration like '30s', '5m', '1h'`);
  const n = Number(m[1]);
  const unit = (m[2] ?? 's').toLowerCase();
  if (unit === 'ms') return n / 1000;
  if (unit.startsWith('s')) return n;
  if (unit.startsWith('m')) return n * 60;
  if (unit.startsWith('h')) return n * 3600;
  return n * 86400;
}

function isJwk(key: unknown): key is JWK {
  return typeof key === 'object' && key !== null && typeof (key as { kty?: unknown }).kty === 'string';
}

function refuse(alg: unknown): never {
  if (alg === 'RSA1_5') {
    throw new EncryptionError('algorithm_refused', 'The JWE algorithm RSA1_5 is refused: it is vulnerable to padding oracle attacks (use RSA-OAEP-256 or ECDH-ES+A256KW)');
  }
  throw new EncryptionError('algorithm_refused', `The JWE algorithm ${JSON.stringify(alg)} is not allowed: use ${KEY_MANAGEMENT_ALGORITHMS.join(' or ')}`);
}

/** The key management algorithm that fits a key. */
function algorithmFor(key: EncryptionKey, wanted: string | undefined): KeyManagementAlgorithm {
  let inferred: KeyManagementAlgorithm | undefined;
  if (isJwk(key)) {
    if (key.alg !== undefined && !KEY_MANAGEMENT_ALGORITHMS.includes(key.alg as KeyManagementAlgorithm)) refuse(key.alg);
    if (key.kty === 'RSA') inferred = 'RSA-OAEP-256';
    else if (key.kty === 'EC' || key.kty === 'OKP') inferred = 'ECDH-ES+A256KW';
    else throw new EncryptionError('invalid_key', `A ${key.kty} JWK cannot be used: end-to-end encryption needs an EC, OKP (X25519) or RSA key pair`);
    if (key.alg !== undefined) inferred = key.alg as KeyManagementAlgorithm;
  } else if (typeof (key as CryptoKey).algorithm === 'object' && (key as CryptoKey).algorithm !== null) {
    const a = (key as CryptoKey).algorithm as { name: string; hash?: { name: string } };
    if (a.name === 'RSA-OAEP') {
      if (a.hash && a.hash.name !== 'SHA-256') throw new EncryptionError('invalid_key', `This RSA-OAEP CryptoKey uses ${a.hash.name}; RSA-OAEP-256 needs SHA-256`);
      inferred = 'RSA-OAEP-256';
    } else if (a.name === 'ECDH' || a.name === 'X25519') inferred = 'ECDH-ES+A256KW';
    else throw new EncryptionError('invalid_key', `A ${a.name} CryptoKey cannot be used for JWE: use an ECDH, X25519 or RSA-OAEP key`);
  } else if (typeof (key as KeyObject).type === 'string') {
    const t = (key as { asymmetricKeyType?: string }).asymmetricKeyType;
    if (t === 'rsa') inferred = 'RSA-OAEP-256';
    else if (t === 'ec' || t === 'x25519') inferred = 'ECDH-ES+A256KW';
    else throw new EncryptionError('invalid_key', `A ${t ?? (key as KeyObject).type} KeyObject cannot be used for JWE: use an EC, X25519 or RSA key`);
  } else {
    throw new EncryptionError('invalid_key', 'Unsupported key: pass a JWK, a CryptoKey or a KeyObject');
  }
  if (wanted !== undefined) {
    if (!KEY_MANAGEMENT_ALGORITHMS.includes(wanted as KeyManagementAlgorithm)) refuse(wanted);
    if (wanted !== inferred) throw new EncryptionError('invalid_key', `The key is for ${inferred}, not ${wanted}`);
  }
  return inferred;
}

/**
 * Encrypts `plaintext` for the holder of the private key matching `publicKey`; returns a JWE
 * compact serialization (base64url and dots: it travels through the hub byte for byte).
 */
export async function encryptData(plaintext: string, publicKey: EncryptionKey, options: EncryptDataOptions = {}): Promise<string> {
  if (typeof plaintext !== 'string') throw new TypeError('encryptData: the plaintext must be a string');
  const alg = algorithmFor(publicKey, options.alg);
  const header: CompactJWEHeaderParameters = { alg, enc: CONTENT_ENCRYPTION_ALGORITHM };
  const kid = options.kid ?? (isJwk(publicKey) ? publicKey.kid : undefined);
  if (kid !== undefined) header.kid = kid;
  let payload = plaintext;
  if (options.timestamp) {
    const at = options.timestamp instanceof Date ? options.timestamp.getTime() : Date.now();
    if (Number.isNaN(at)) throw new TypeError('encryptData: invalid timestamp date');
    header.cty = TIMESTAMPED_CONTENT_TYPE;
    payload = JSON.stringify({ iat: Math.floor(at / 1000), data: plaintext });
  }
  let key: CryptoKey | KeyObject | Uint8Array;
  if (isJwk(publicKey)) {
    if ('d' in publicKey && publicKey.d !== undefined) {
      throw new EncryptionError('invalid_key', 'encryptData takes the public key: this JWK holds a private key ("d"), which must stay with the subscriber');
    }
    try {
      key = await importJWK(publicKey, alg);
    } catch (err) {
      throw new EncryptionError('invalid_key', `Cannot import the public JWK: ${(err as Error).message}`, err);
    }
  } else key = publicKey as CryptoKey | KeyObject;
  try {
    return await new CompactEncrypt(new TextEncoder().encode(payload)).setProtectedHeader(header).encrypt(key);
  } catch (err) {
    throw new EncryptionError('invalid_key', `Encryption failed: ${(err as Error).message}`, err);
  }
}

/** Decrypts and returns the plaintext with its timestamp and header. See `decryptData`. */
export async function decryptUpdateData(
  jwe: string,
  privateKey: EncryptionKey | { keys: JWK[] },
  options: DecryptDataOptions = {},
): Promise<DecryptedData> {
  if (typeof jwe !== 'string' || jwe.split('.').length !== 5) {
    throw new EncryptionError('malformed', 'Not a JWE compact serialization (five base64url parts separated by dots); was the update encrypted?');
  }
  let header: CompactJWEHeaderParameters;
  try {
    header = decodeProtectedHeader(jwe) as CompactJWEHeaderParameters;
  } catch (err) {
    throw new EncryptionError('malformed', `Invalid JWE header: ${(err as Error).message}`, err);
  }
  const allowed = (options.algorithms ?? KEY_MANAGEMENT_ALGORITHMS).filter((a) => KEY_MANAGEMENT_ALGORITHMS.includes(a));
  if (!allowed.includes(header.alg as KeyManagementAlgorithm)) refuse(header.alg);
  if (header.enc !== CONTENT_ENCRYPTION_ALGORITHM) {
    throw new EncryptionError('algorithm_refused', `The content encryption ${JSON.stringify(header.enc)} is not allowed: use ${CONTENT_ENCRYPTION_ALGORITHM}`);
  }
  const alg = header.alg as KeyManagementAlgorithm;

  let candidate: EncryptionKey;
  if ('keys' in privateKey && Array.isArray(privateKey.keys)) {
    const fits = privateKey.keys.filter((k) => (alg === 'RSA-OAEP-256' ? k.kty === 'RSA' : k.kty === 'EC' || k.kty === 'OKP') && (k.alg === undefined || k.alg === alg));
    const found = header.kid !== undefined ? fits.find((k) => k.kid === header.kid) : fits[0];
    if (!found) throw new EncryptionError('invalid_key', `No key in the set fits this update (alg ${alg}${header.kid !== undefined ? `, kid ${header.kid}` : ''})`);
    candidate = found;
  } else candidate = privateKey as EncryptionKey;

  let key: CryptoKey | KeyObject | Uint8Array;
  if (isJwk(candidate)) {
    if (candidate.d === undefined) throw new EncryptionError('invalid_key', 'decryptData needs the private key: this JWK has no "d"');
    if (candidate.alg !== undefined && candidate.alg !== alg) {
      throw new EncryptionError('invalid_key', `The key is for ${candidate.alg}, the update uses ${alg}`);
    }
    try {
      key = await importJWK(candidate, alg);
    } catch (err) {
      throw new EncryptionError('invalid_key', `Cannot import the private JWK: ${(err as Error).message}`, err);
    }
  } else key = candidate as CryptoKey | KeyObject;

  let plaintext: Uint8Array;
  try {
    ({ plaintext } = await compactDecrypt(jwe, key, {
      keyManagementAlgorithms: allowed,
      contentEncryptionAlgorithms: [CONTENT_ENCRYPTION_ALGORITHM],
    }));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_JOSE_ALG_NOT_ALLOWED') refuse(header.alg);
    if (code === 'ERR_JWE_INVALID') throw new EncryptionError('malformed', `Invalid JWE: ${(err as Error).message}`, err);
    throw new EncryptionError('decryption_failed', 'Decryption failed: wrong key, or the ciphertext was tampered with', err);
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(plaintext);

  if (header.cty !== TIMESTAMPED_CONTENT_TYPE) {
    if (options.maxAge !== undefined) {
      throw new EncryptionError('missing_timestamp', 'The update has no freshness timestamp but maxAge requires one (encrypt with { timestamp: true })');
    }
    return { data: text, issuedAt: undefined, header };
  }
  let parsed: { iat?: unknown; data?: unknown };
  try {
    parsed = JSON.parse(text) as { iat?: unknown; data?: unknown };
  } catch (err) {
    throw new EncryptionError('malformed', 'The timestamped payload is not JSON', err);
  }
  if (typeof parsed !== 'object' || parsed === null || typeof parsed.iat !== 'number' || !Number.isFinite(parsed.iat) || typeof parsed.data !== 'string') {
    throw new EncryptionError('malformed', 'The timestamped payload must be {"iat": <seconds>, "data": "<text>"}');
  }
  const iat = parsed.iat;
  const now = (options.now ?? Date.now)() / 1000;
  const tolerance = seconds(options.clockTolerance ?? 30, 'clockTolerance');
  if (iat > now + tolerance) {
    throw new EncryptionError('not_yet_valid', `The update's timestamp ${new Date(iat * 1000).toISOString()} is in the future (clock skew beyond ${tolerance} s?)`);
  }
  if (options.maxAge !== undefined) {
    const maxAge = seconds(options.maxAge, 'maxAge');
    const age = now - iat;
    if (age > maxAge + tolerance) {
      throw new EncryptionError('stale', `The update is ${Math.round(age)} s old, more than maxAge ${maxAge} s: refused as a possible replay`);
    }
  }
  return { data: parsed.data, issuedAt: new Date(iat * 1000), header };
}

/**
 * Decrypts update data encrypted with `encryptData`. Only `ECDH-ES+A256KW` / `RSA-OAEP-256` with
 * `A256GCM` are accepted. With `maxAge`, payloads without a recent timestamp are refused.
 * Throws `EncryptionError` (`code` says why).
 */
export async function decryptData(jwe: string, privateKey: EncryptionKey | { keys: JWK[] }, options: DecryptDataOptions = {}): Promise<string> {
  return (await decryptUpdateData(jwe, privateKey, options)).data;
}

export interface EncryptionKeyPair {
  /** Give this to publishers. */
  publicJwk: JWK;
  /** Keep this with subscribers. */
  privateJwk: JWK;
}

/**
 * A fresh key pair as JWKs (`alg` and a `kid` set): P-256 for `ECDH-ES+A256KW` (default), 2048-bit
 * (or `modulusLength`) RSA for `RSA-OAEP-256`.
 */
export async function generateEncryptionKeyPair(
  alg: KeyManagementAlgorithm = 'ECDH-ES+A256KW',
  options: { kid?: string; modulusLength?: number } = {},
): Promise<EncryptionKeyPair> {
  if (!KEY_MANAGEMENT_ALGORITHMS.includes(alg)) refuse(alg);
  const { publicKey, privateKey } = await generateKeyPair(alg, {
    extractable: true,
    ...(alg === 'ECDH-ES+A256KW' ? { crv: 'P-256' } : { modulusLength: options.modulusLength ?? 2048 }),
  });
  const publicJwk = await exportJWK(publicKey);
  const privateJwk = await exportJWK(privateKey);
  const kid = options.kid ?? (globalThis.crypto.randomUUID ? globalThis.crypto.randomUUID() : String(Date.now()));
  for (const j of [publicJwk, privateJwk]) {
    j.alg = alg;
    j.kid = kid;
    j.use = 'enc';
  }
  return { publicJwk, privateJwk };
}
