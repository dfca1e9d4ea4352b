/**
 * Key resolution: `@file` keys are read, PEM and JWK keys are checked against their algorithm and
 * reduced to the public key, and weak or well-known HMAC secrets are warned about, so a key that
 * cannot verify any token fails at startup instead of at the first request.
 */
import { readFileSync } from 'node:fs';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import type { JwtAlgorithm, KeyOptions } from '../http/options.js';
import { type Ctx, errorMessage, type RawKey, type Val } from './settings.js';
import { WELL_KNOWN_KEYS } from './defaults.js';

const HMAC_MIN_BYTES: Partial<Record<JwtAlgorithm, number>> = { HS256: 32, HS384: 48, HS512: 64 };
const EC_CURVES: Partial<Record<JwtAlgorithm, string>> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' };
const CURVE_NAMES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

function looksLikePem(s: string): boolean {
  return /-----BEGIN [A-Z0-9 ]+-----/.test(s);
}

function describeKey(k: KeyObject): string {
  const type = k.asymmetricKeyType;
  if (type === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve ?? '';
    return `EC ${CURVE_NAMES[curve] ?? curve}`;
  }
  if (type === 'rsa' || type === 'rsa-pss') return 'RSA';
  if (type === 'ed25519') return 'Ed25519';
  if (type === 'ed448') return 'Ed448';
  return type ?? 'unknown';
}

function keyFits(k: KeyObject, alg: JwtAlgorithm): boolean {
  const type = k.asymmetricKeyType;
  if (alg.startsWith('RS')) return type === 'rsa';
  if (alg.startsWith('PS')) return type === 'rsa' || type === 'rsa-pss';
  if (alg.startsWith('ES')) return type === 'ec' && k.asymmetricKeyDetails?.namedCurve === EC_CURVES[alg];
  return type === 'ed25519';
}

/**
 * Turns a configured key into what the hub verifies with. `@path` reads a file (trailing newlines
 * dropped; `@@...` is a literal key starting with '@'); PEM with literal `\n` escapes is unescaped.
 * Asymmetric keys (PEM public key, certificate, private key, or a JWK as JSON) are checked against
 * the algorithm and returned as an SPKI PEM public key.
 */
function resolveKey(raw: Val<string>, alg: JwtAlgorithm, algSource: string | undefined, ctx: Ctx, production: boolean): string | undefined {
  const src = raw.source;
  let key = raw.value;
  if (key.startsWith('@@')) {
    key = key.slice(1);
  } else if (key.startsWith('@')) {
    const path = key.slice(1);
    try {
      key = readFileSync(resolvePath(raw.dir, path), 'utf8').replace(/(?:\r?\n)+$/, '');
    } catch (e) {
      ctx.errors.push(`${src}: cannot read key file '${path}': ${errorMessage(e)} (write '@@' for a literal key starting with '@')`);
      return undefined;
    }
    if (key.trim() === '') {
      ctx.errors.push(`${src}: key file '${path}' is empty`);
      return undefined;
    }
  }
  if (looksLikePem(key) && key.includes('\\n')) key = key.replace(/\\r\\n|\\n/g, '\n');
  const algNote = algSource && algSource !== src ? ` (${algSource})` : '';

  if (alg.startsWith('HS')) {
    if (looksLikePem(key)) {
      ctx.warnings.push(`${src}: looks like a PEM key but the algorithm is ${alg}${algNote}, so it is used as an HMAC secret; set the algorithm (e.g. RS256) if that is not intended`);
    } else if (/^eyJ[\w-]*\.[\w-]+\.[\w-]*$/.test(key)) {
      ctx.warnings.push(`${src}: looks like a JWT; the hub needs the secret the tokens are signed with, not a token`);
    }
    const min = HMAC_MIN_BYTES[alg] ?? 32;
    if (production && WELL_KNOWN_KEYS.includes(key)) {
      ctx.warnings.push(`${src}: is a well-known example key: anyone can sign tokens for this hub; use a long random secret in production`);
    } else if (Buffer.byteLength(key) < min) {
      ctx.warnings.push(`${src}: the ${alg} key is only ${Buffer.byteLength(key)} bytes long; use at least ${min} random bytes`);
    }
    return key;
  }

  const text = key.trim();
  let publicKey: KeyObject;
  let isPrivate = false;
  try {
    if (text.startsWith('{')) {
      const jwk = JSON.parse(text) as Record<string, unknown>;
      isPrivate = 'd' in jwk;
      publicKey = createPublicKey({ key: jwk as never, format: 'jwk' });
    } else if (looksLikePem(text)) {
      isPrivate = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
      publicKey = createPublicKey(text);
    } else {
      ctx.errors.push(`${src}: algorithm ${alg}${algNote} needs a PEM public key ('-----BEGIN PUBLIC KEY-----...' or a certificate), or @/path/to/key.pem`);
      return undefined;
    }
  } catch (e) {
    ctx.errors.push(`${src}: invalid ${alg} key: ${errorMessage(e)}`);
    return undefined;
  }
  if (!keyFits(publicKey, alg)) {
    ctx.errors.push(`${src}: an ${describeKey(publicKey)} key cannot verify ${alg}${algNote} tokens`);
    return undefined;
  }
  const bits = publicKey.asymmetricKeyDetails?.modulusLength;
  if (bits !== undefined && bits < 2048) {
    ctx.errors.push(`${src}: the RSA key is ${bits} bits; ${alg} needs at least 2048`);
    return undefined;
  }
  if (isPrivate) ctx.warnings.push(`${src}: is a private key; the hub only needs (and only keeps) the public key`);
  return publicKey.export({ type: 'spki', format: 'pem' }) as string;
}

export function resolveRawKey(raw: RawKey | undefined, ctx: Ctx, production: boolean): KeyOptions | undefined {
  if (!raw || (!raw.key && !raw.jwksUrl)) return undefined;
  const out: KeyOptions = {};
  const alg = raw.alg?.value ?? 'HS256';
  if (raw.key) {
    const key = resolveKey(raw.key, alg, raw.alg?.source, ctx, production);
    if (key !== undefined) out.key = key;
    out.algorithm = alg;
  } else if (raw.alg) {
    out.algorithm = alg;
  }
  if (raw.jwksUrl) out.jwksUrl = raw.jwksUrl.value;
  return out;
}
