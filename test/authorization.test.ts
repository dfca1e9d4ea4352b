import { createServer, type Server } from 'node:http';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  SignJWT,
  UnsecuredJWT,
  base64url,
  exportJWK,
  exportPKCS8,
  exportSPKI,
  generateKeyPair,
  importPKCS8,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import {
  Authorizer,
  MERCURE_DETAIL_TYPE,
  canPublish,
  canSubscribe,
  extractToken,
  isAuthFailure,
  type AuthFailure,
  type AuthorizerOptions,
  type Grants,
} from '../src/auth/index.js';
import type { JwtAlgorithm } from '../src/http/options.js';
import type { Logger } from '../src/observability/logger.js';

const HUB = 'https://hub.example.com/.well-known/mercure';
const SECRET = '!ChangeThisMercureHubJWTSecretKey!';
const ISS = 'https://issuer.example.com';
const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');

type SigningKey = CryptoKey | Uint8Array;
const enc = (s: string) => new TextEncoder().encode(s);
const nowSec = () => Math.floor(Date.now() / 1000);

async function sign(claims: JWTPayload, key: SigningKey = enc(SECRET), alg = 'HS256', header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg, ...header }).sign(key);
}

/** A draft-08 access token with the RFC 9068 claims. */
async function accessToken(
  details: unknown,
  opts: { key?: SigningKey; alg?: string; claims?: JWTPayload; header?: Record<string, unknown>; omit?: string[] } = {},
): Promise<string> {
  const claims: JWTPayload = {
    iss: ISS,
    aud: HUB,
    sub: 'urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6',
    client_id: ISS,
    iat: nowSec(),
    exp: nowSec() + 3600,
    jti: 'urn:uuid:e70ff8d7-59d5-4a92-b0b7-505e8f6d09fa',
    ...(details === undefined ? {} : { authorization_details: details }),
    ...opts.claims,
  };
  for (const k of opts.omit ?? []) delete claims[k];
  return sign(claims, opts.key ?? enc(SECRET), opts.alg ?? 'HS256', { typ: 'at+jwt', ...opts.header });
}

const detail = (actions: unknown[], topics: unknown[], extra: Record<string, unknown> = {}) => ({
  type: MERCURE_DETAIL_TYPE,
  actions,
  topics,
  ...extra,
});

function grantsOf(result: Grants | AuthFailure): Grants {
  if (isAuthFailure(result)) throw new Error(`expected grants, got failure: ${result.message}`);
  return result;
}

function failureOf(result: Grants | AuthFailure, token: string, message?: string | RegExp): AuthFailure {
  if (!isAuthFailure(result)) throw new Error('expected a failure, got grants');
  expect(result.error).toBe('invalid_token');
  if (message !== undefined) expect(result.message).toMatch(message);
  // The token never reaches a message, nor does its signature.
  expect(result.message).not.toContain(token);
  const signature = token.split('.')[2];
  if (signature) expect(result.message).not.toContain(signature);
  return result;
}

function captureLogger(): Logger & { entries: { level: string; obj: object; msg?: string | undefined }[] } {
  const entries: { level: string; obj: object; msg?: string | undefined }[] = [];
  const log = (level: string) => (obj: object, msg?: string) => entries.push({ level, obj, msg });
  return { entries, error: log('error'), warn: log('warn'), info: log('info'), debug: log('debug') };
}

const authorizers: Authorizer[] = [];
function authorizer(options: AuthorizerOptions): Authorizer {
  const a = new Authorizer(options);
  authorizers.push(a);
  return a;
}
afterEach(() => {
  vi.useRealTimers();
  for (const a of authorizers.splice(0)) a.close();
});

// -------------------------------------------------------------------------------------------

describe('algorithms', () => {
  let rsaPkcs8: string;
  let rsaSpki: string;
  const ec: Record<string, { priv: CryptoKey; spki: string }> = {};
  let ed: { priv: CryptoKey; spki: string };

  beforeAll(async () => {
    const rsa = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
    rsaPkcs8 = await exportPKCS8(rsa.privateKey);
    rsaSpki = await exportSPKI(rsa.publicKey);
    for (const alg of ['ES256', 'ES384', 'ES512']) {
      const kp = await generateKeyPair(alg, { extractable: true });
      ec[alg] = { priv: kp.privateKey, spki: await exportSPKI(kp.publicKey) };
    }
    const kp = await generateKeyPair('EdDSA', { extractable: true });
    ed = { priv: kp.privateKey, spki: await exportSPKI(kp.publicKey) };
  });

  const legacy = { mercure: { publish: ['*'] } };

  it.each(['HS256', 'HS384', 'HS512'] as const)('%s: accepted when pinned, rejected under another pin', async (alg) => {
    const token = await sign(legacy, enc(SECRET), alg);
    const ok = authorizer({ publisher: { key: SECRET, algorithm: alg } });
    expect(grantsOf(await ok.verify(token, 'publisher', HUB)).canPublish).toBe(true);
    const other: JwtAlgorithm = alg === 'HS256' ? 'HS512' : 'HS256';
    const pinned = authorizer({ publisher: { key: SECRET, algorithm: other } });
    failureOf(await pinned.verify(token, 'publisher', HUB), token, `alg ${alg} not allowed, hub pins ${other}`);
  });

  it('HS256 is the default pin', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    grantsOf(await a.verify(await sign(legacy, enc(SECRET), 'HS256'), 'publisher', HUB));
    const t = await sign(legacy, enc(SECRET), 'HS384');
    failureOf(await a.verify(t, 'publisher', HUB), t, 'hub pins HS256');
  });

  it.each(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const)(
    '%s: accepted when pinned, rejected under another pin',
    async (alg) => {
      const token = await sign(legacy, await importPKCS8(rsaPkcs8, alg), alg);
      const ok = authorizer({ publisher: { key: rsaSpki, algorithm: alg } });
      expect(grantsOf(await ok.verify(token, 'publisher', HUB)).canPublish).toBe(true);
      // Same RSA key, other RSA algorithm: still refused, the alg is pinned by configuration.
      const other: JwtAlgorithm = alg === 'RS256' ? 'PS256' : 'RS256';
      const pinned = authorizer({ publisher: { key: rsaSpki, algorithm: other } });
      failureOf(await pinned.verify(token, 'publisher', HUB), token, `alg ${alg} not allowed, hub pins ${other}`);
    },
  );

  it.each(['ES256', 'ES384', 'ES512'] as const)('%s: accepted when pinned, rejected under another pin', async (alg) => {
    const token = await sign(legacy, ec[alg]!.priv, alg);
    const ok = authorizer({ publisher: { key: ec[alg]!.spki, algorithm: alg } });
    expect(grantsOf(await ok.verify(token, 'publisher', HUB)).canPublish).toBe(true);
    const pinned = authorizer({ publisher: { key: ed.spki, algorithm: 'EdDSA' } });
    failureOf(await pinned.verify(token, 'publisher', HUB), token, `alg ${alg} not allowed, hub pins EdDSA`);
  });

  it('EdDSA: accepted when pinned, rejected under another pin', async () => {
    const token = await sign(legacy, ed.priv, 'EdDSA');
    const ok = authorizer({ publisher: { key: ed.spki, algorithm: 'EdDSA' } });
    expect(grantsOf(await ok.verify(token, 'publisher', HUB)).canPublish).toBe(true);
    const pinned = authorizer({ publisher: { key: ec.ES256!.spki, algorithm: 'ES256' } });
    failureOf(await pinned.verify(token, 'publisher', HUB), token, 'alg EdDSA not allowed, hub pins ES256');
  });

  it('a signature by another key of the right type is refused', async () => {
    const other = await generateKeyPair('ES256');
    const token = await sign(legacy, other.privateKey, 'ES256');
    const a = authorizer({ publisher: { key: ec.ES256!.spki, algorithm: 'ES256' } });
    failureOf(await a.verify(token, 'publisher', HUB), token, 'signature verification failed');
  });

  it('refuses the HMAC-with-public-key algorithm confusion', async () => {
    const token = await sign(legacy, enc(rsaSpki), 'HS256');
    const a = authorizer({ publisher: { key: rsaSpki, algorithm: 'RS256' } });
    failureOf(await a.verify(token, 'publisher', HUB), token, 'alg HS256 not allowed, hub pins RS256');
  });

  it('accepts an X.509 certificate as the public key', async () => {
    const priv = await importPKCS8(fixture('auth-es256-key.pem'), 'ES256');
    const token = await sign(legacy, priv, 'ES256');
    const a = authorizer({ publisher: { key: fixture('auth-es256-cert.pem'), algorithm: 'ES256' } });
    grantsOf(await a.verify(token, 'publisher', HUB));
    await expect(a.ready()).resolves.toBeUndefined();
  });

  it('accepts a PKCS#1 RSA public key, as the reference hub does', async () => {
    const pkcs1 = createPublicKey(rsaSpki).export({ type: 'pkcs1', format: 'pem' }).toString();
    expect(pkcs1).toContain('BEGIN RSA PUBLIC KEY');
    const token = await sign(legacy, await importPKCS8(rsaPkcs8, 'RS256'), 'RS256');
    const a = authorizer({ publisher: { key: `\n${pkcs1}`, algorithm: 'RS256' } });
    grantsOf(await a.verify(token, 'publisher', HUB));
  });

  it('rejects alg none in every spelling', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const unsecured = new UnsecuredJWT(legacy).encode();
    failureOf(await a.verify(unsecured, 'publisher', HUB), unsecured, 'alg none not allowed');
    const b64 = (o: object) => base64url.encode(JSON.stringify(o));
    for (const alg of ['none', 'None', 'NONE']) {
      const t = `${b64({ alg, typ: 'JWT' })}.${b64(legacy)}.`;
      failureOf(await a.verify(t, 'publisher', HUB), t, 'alg none not allowed');
    }
    // No alg at all.
    const t = `${b64({ typ: 'JWT' })}.${b64(legacy)}.`;
    failureOf(await a.verify(t, 'publisher', HUB), t, 'alg header missing');
  });

  it('rejects a token signed with the wrong secret', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const t = await sign(legacy, enc('another secret entirely'));
    failureOf(await a.verify(t, 'publisher', HUB), t, 'signature verification failed');
  });

  it('rejects garbage', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    for (const t of ['', 'abc', 'a.b.c', 'eyJhbGciOiJIUzI1NiJ9.e30', `${(await sign(legacy, enc(SECRET))).slice(0, -3)}xyz`]) {
      const r = await a.verify(t, 'publisher', HUB);
      expect(isAuthFailure(r)).toBe(true);
      expect((r as AuthFailure).error).toBe('invalid_token');
    }
  });
});

// -------------------------------------------------------------------------------------------

describe('time claims', () => {
  it('rejects an expired token and a token before nbf, accepts tokens without exp (draft-07)', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const expired = await sign({ mercure: { publish: [] }, exp: nowSec() - 10 });
    failureOf(await a.verify(expired, 'publisher', HUB), expired, 'token expired');
    const early = await sign({ mercure: { publish: [] }, nbf: nowSec() + 60 });
    failureOf(await a.verify(early, 'publisher', HUB), early, 'token not yet valid (nbf)');
    const forever = await sign({ mercure: { publish: [] } });
    const g = grantsOf(await a.verify(forever, 'publisher', HUB));
    expect(g.expiresAt).toBeUndefined();
    const exp = nowSec() + 100;
    const withExp = grantsOf(await a.verify(await sign({ mercure: {}, exp }), 'publisher', HUB));
    expect(withExp.expiresAt).toBe(exp * 1000);
  });

  it('rejects a non-numeric exp', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const t = await sign({ mercure: {}, exp: 'tomorrow' } as unknown as JWTPayload);
    failureOf(await a.verify(t, 'publisher', HUB), t, /exp/);
  });
});

// -------------------------------------------------------------------------------------------

describe('draft-07 tokens', () => {
  const a = () => authorizer({ publisher: { key: SECRET } });

  it('turns mercure.publish / subscribe into selectors and keeps the payload', async () => {
    // URI-template matching itself belongs to topic-matcher's tests; exact selectors here.
    const payload = { user: 'https://example.com/users/dunglas', groups: ['a'] };
    const token = await sign({
      sub: 'dunglas',
      mercure: {
        publish: ['https://example.com/books/{id}', 'https://example.com/raw', 'https://example.com/raw'],
        subscribe: ['https://example.com/users/foo/{?topic}', 'https://example.com/raw'],
        payload,
      },
    });
    const g = grantsOf(await a().verify(token, 'publisher', HUB));
    expect(g.version).toBe(7);
    expect(g.canPublish).toBe(true);
    expect(g.subject).toBe('dunglas');
    expect(g.issuer).toBeUndefined();
    expect(g.publish.map((m) => m.source)).toEqual(['https://example.com/books/{id}', 'https://example.com/raw']);
    expect(g.publish.every((m) => m.kind === 'selector')).toBe(true);
    expect(g.subscribe.map((m) => m.source)).toEqual(['https://example.com/users/foo/{?topic}', 'https://example.com/raw']);
    expect(canPublish(g, ['https://example.com/raw'])).toBe(true);
    expect(canPublish(g, ['https://example.com/raw', 'https://example.com/other'])).toBe(false);
    expect(canSubscribe(g, ['https://example.com/books/1', 'https://example.com/raw'])).toBe(true);
    expect(canSubscribe(g, ['https://example.com/books/1'])).toBe(false);
    expect(g.payloadFor('https://example.com/books/{id}')).toEqual(payload);
    expect(g.payloadFor('*')).toEqual(payload);
    // Cached grants are shared: they cannot be altered by one request for the others.
    expect(Object.isFrozen(g)).toBe(true);
    expect(Object.isFrozen(g.publish)).toBe(true);
    expect(Object.isFrozen((g.payloadFor('x') as { groups: string[] }).groups)).toBe(true);
  });

  it('falls back to the namespaced claim', async () => {
    const token = await sign({ 'https://mercure.rocks/': { publish: ['*'], subscribe: ['*'], payload: 'p' } });
    const g = grantsOf(await a().verify(token, 'publisher', HUB));
    expect(g.canPublish).toBe(true);
    expect(canPublish(g, ['anything'])).toBe(true);
    expect(canSubscribe(g, ['anything'])).toBe(true);
    expect(g.payloadFor('x')).toBe('p');
    // `mercure` wins when both are present.
    const both = await sign({ mercure: { subscribe: ['a'] }, 'https://mercure.rocks/': { publish: ['*'] } });
    const g2 = grantsOf(await a().verify(both, 'publisher', HUB));
    expect(g2.canPublish).toBe(false);
    expect(g2.subscribe.map((m) => m.source)).toEqual(['a']);
  });

  it('without publish claim cannot publish; an empty array publishes nothing', async () => {
    const none = grantsOf(await a().verify(await sign({ sub: 'x' }), 'publisher', HUB));
    expect(none.canPublish).toBe(false);
    expect(none.subscribe).toEqual([]);
    expect(none.payloadFor('x')).toBeUndefined();
    expect(canPublish(none, ['a'])).toBe(false);
    const nul = grantsOf(await a().verify(await sign({ mercure: { publish: null } }), 'publisher', HUB));
    expect(nul.canPublish).toBe(false);
    const empty = grantsOf(await a().verify(await sign({ mercure: { publish: [] } }), 'publisher', HUB));
    expect(empty.canPublish).toBe(true);
    expect(canPublish(empty, ['a'])).toBe(false);
  });

  it.each([
    ['a non-object mercure claim', { mercure: 'publish' }, 'mercure claim must be an object'],
    ['an array mercure claim', { mercure: [] }, 'mercure claim must be an object'],
    ['a non-array publish', { mercure: { publish: '*' } }, 'mercure.publish must be an array'],
    ['a non-array subscribe', { mercure: { subscribe: { a: 1 } } }, 'mercure.subscribe must be an array'],
    ['non-string selectors', { mercure: { subscribe: ['a', 1] } }, 'mercure.subscribe entries must be strings'],
    ['too many selectors', { mercure: { publish: Array.from({ length: 1001 }, (_, i) => `t${i}`) } }, 'more than 1000'],
    ['a bad namespaced claim', { 'https://mercure.rocks/': { publish: 1 } }, 'https://mercure.rocks/.publish must be an array'],
  ])('rejects %s', async (_name, claims, message) => {
    const t = await sign(claims as JWTPayload);
    failureOf(await a().verify(t, 'publisher', HUB), t, message);
  });

  it('accepts 1000 selectors', async () => {
    const t = await sign({ mercure: { subscribe: Array.from({ length: 1000 }, (_, i) => `t${i}`) } });
    expect(grantsOf(await a().verify(t, 'subscriber', HUB)).subscribe).toHaveLength(1000);
  });

  it('uses the publisher key for subscribers unless a subscriber key is configured', async () => {
    const t = await sign({ mercure: { subscribe: ['*'] } });
    grantsOf(await a().verify(t, 'subscriber', HUB));
    const split = authorizer({ publisher: { key: SECRET }, subscriber: { key: 'subscriber secret' } });
    failureOf(await split.verify(t, 'subscriber', HUB), t, 'signature verification failed');
    grantsOf(await split.verify(await sign({ mercure: {} }, enc('subscriber secret')), 'subscriber', HUB));
    const subToken = await sign({}, enc('subscriber secret'));
    failureOf(await split.verify(subToken, 'publisher', HUB), subToken, 'signature');
  });

  it('fails without any key for the role', async () => {
    const sub = authorizer({ subscriber: { key: SECRET } });
    const t = await sign({ mercure: { publish: ['*'] } });
    failureOf(await sub.verify(t, 'publisher', HUB), t, 'no key configured for publisher tokens');
    grantsOf(await sub.verify(t, 'subscriber', HUB));
  });
});

// -------------------------------------------------------------------------------------------

describe('draft-08 access tokens', () => {
  const a = (extra: Partial<AuthorizerOptions> = {}) => authorizer({ publisher: { key: SECRET }, ...extra });

  it('accepts a valid access token and maps its authorization details', async () => {
    const token = await accessToken([
      detail(['publish'], [{ match: 'https://example.com/books/:id', match_type: 'urlpattern' }]),
      detail(['subscribe'], [{ match: 'https://example.com/books/1' }, { match: 'https://example.com/books/7', match_type: 'exact' }]),
      { type: 'https://other.example/detail', actions: 42 },
    ]);
    const g = grantsOf(await a().verify(token, 'publisher', HUB));
    expect(g.version).toBe(8);
    expect(g.canPublish).toBe(true);
    expect(g.issuer).toBe(ISS);
    expect(g.subject).toBe('urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6');
    expect(g.expiresAt).toBeGreaterThan(Date.now());
    expect(g.publish.map((m) => m.kind)).toEqual(['urlpattern']);
    expect(g.subscribe.map((m) => [m.kind, m.source])).toEqual([
      ['exact', 'https://example.com/books/1'],
      ['exact', 'https://example.com/books/7'],
    ]);
    expect(canPublish(g, ['https://example.com/books/1', 'https://example.com/books/2'])).toBe(true);
    expect(canPublish(g, ['https://example.com/books/1', 'https://example.com/users/2'])).toBe(false);
    expect(canSubscribe(g, ['https://example.com/books/2', 'https://example.com/books/7'])).toBe(true);
    expect(canSubscribe(g, ['https://example.com/books/2'])).toBe(false);
  });

  it('accepts typ application/at+jwt case-insensitively', async () => {
    for (const typ of ['application/at+jwt', 'AT+JWT', 'Application/At+Jwt']) {
      const t = await accessToken([detail(['subscribe'], [{ match: '*' }])], { header: { typ } });
      expect(grantsOf(await a().verify(t, 'subscriber', HUB)).version).toBe(8);
    }
  });

  it('grants nothing without Mercure details, and ignores a legacy mercure claim', async () => {
    const t = await accessToken(undefined, { claims: { mercure: { publish: ['*'], subscribe: ['*'] } } });
    const g = grantsOf(await a().verify(t, 'publisher', HUB));
    expect(g.version).toBe(8);
    expect(g.canPublish).toBe(false);
    expect(g.publish).toEqual([]);
    expect(g.subscribe).toEqual([]);
    expect(canSubscribe(g, ['x'])).toBe(false);
  });

  it.each([
    ['iss', 'iss claim missing'],
    ['aud', 'aud claim missing'],
    ['exp', 'exp claim missing'],
  ])('rejects a token without %s', async (claim, message) => {
    const t = await accessToken([detail(['subscribe'], [{ match: '*' }])], { omit: [claim] });
    failureOf(await a().verify(t, 'subscriber', HUB), t, message);
  });

  it('checks aud against the request audience or the configured resource identifier', async () => {
    const details = [detail(['subscribe'], [{ match: '*' }])];
    const wrong = await accessToken(details, { claims: { aud: 'https://other-hub.example.com/.well-known/mercure' } });
    failureOf(await a().verify(wrong, 'subscriber', HUB), wrong, `aud does not include ${HUB}`);
    const list = await accessToken(details, { claims: { aud: ['https://api.example.com', HUB] } });
    grantsOf(await a().verify(list, 'subscriber', HUB));
    const bad = await accessToken(details, { claims: { aud: [HUB, 3] as unknown as string[] } });
    failureOf(await a().verify(bad, 'subscriber', HUB), bad, /aud/);
    // A configured resource identifier replaces the request-derived audience.
    const configured = a({ resourceIdentifier: 'urn:example:hub' });
    failureOf(await configured.verify(list, 'subscriber', HUB), list, 'aud does not include urn:example:hub');
    const urn = await accessToken(details, { claims: { aud: 'urn:example:hub' } });
    grantsOf(await configured.verify(urn, 'subscriber', 'https://whatever.example/.well-known/mercure'));
  });

  it('only accepts trusted issuers when trustedIssuers is set', async () => {
    const t = await accessToken([detail(['subscribe'], [{ match: '*' }])], { claims: { iss: 'https://evil.example' } });
    grantsOf(await a().verify(t, 'subscriber', HUB));
    failureOf(await a({ trustedIssuers: [ISS] }).verify(t, 'subscriber', HUB), t, 'issuer "https://evil.example" is not trusted');
    const good = await accessToken([detail(['subscribe'], [{ match: '*' }])]);
    grantsOf(await a({ trustedIssuers: [ISS] }).verify(good, 'subscriber', HUB));
    const numeric = await accessToken([], { claims: { iss: 7 as unknown as string } });
    failureOf(await a().verify(numeric, 'subscriber', HUB), numeric, 'iss claim must be a string');
  });

  it('rejects authorization_details without typ at+jwt', async () => {
    const claims = {
      iss: ISS,
      aud: HUB,
      exp: nowSec() + 60,
      authorization_details: [detail(['subscribe'], [{ match: '*' }])],
    };
    for (const typ of [undefined, 'JWT', 'jwt', 'application/jwt', 'at+jwt+x']) {
      const t = await sign(claims, enc(SECRET), 'HS256', typ ? { typ } : {});
      failureOf(await a().verify(t, 'subscriber', HUB), t, 'must have typ at+jwt');
    }
  });

  it.each([
    ['non-array details', { a: 1 }, 'authorization_details must be an array'],
    ['null details', null, 'authorization_details must be an array'],
    ['a non-object detail', ['x'], 'authorization_details[1] is not an object'],
    ['a detail without type', [{ actions: ['subscribe'], topics: [{ match: '*' }] }], 'authorization_details[1].type must be a string'],
    ['missing actions', [{ type: MERCURE_DETAIL_TYPE, topics: [{ match: '*' }] }], '.actions must be a non-empty array'],
    ['empty actions', [detail([], [{ match: '*' }])], '.actions must be a non-empty array'],
    ['a non-string action', [detail(['subscribe', 1], [{ match: '*' }])], '.actions entries must be strings'],
    ['missing topics', [{ type: MERCURE_DETAIL_TYPE, actions: ['subscribe'] }], '.topics must be a non-empty array'],
    ['empty topics', [detail(['subscribe'], [])], '.topics must be a non-empty array'],
    ['a non-object topic', [detail(['subscribe'], ['https://example.com/a'])], 'topics[0] is not an object'],
    ['a non-string match', [detail(['subscribe'], [{ match: 1 }])], 'topics[0].match must be a string'],
    ['an unknown match_type', [detail(['subscribe'], [{ match: '/a', match_type: 'regexp' }])], 'match_type "regexp" is not supported'],
    ['a null match_type', [detail(['subscribe'], [{ match: '/a', match_type: null }])], 'is not supported'],
    ['a wrong-case match_type', [detail(['subscribe'], [{ match: '/a', match_type: 'Exact' }])], 'is not supported'],
    ['an invalid URL pattern', [detail(['subscribe'], [{ match: 'https://example.com/(a+)+', match_type: 'urlpattern' }])], 'match is invalid'],
    ['a malformed URL pattern', [detail(['subscribe'], [{ match: 'https://example.com/(', match_type: 'urlpattern' }])], 'match is invalid'],
    ['a control character', [detail(['subscribe'], [{ match: 'a\u0000b' }])], 'match is invalid'],
    ['a non-object payload', [detail(['subscribe'], [{ match: '*' }], { payload: 'x' })], '.payload must be an object'],
    ['an array payload', [detail(['subscribe'], [{ match: '*' }], { payload: [1] })], '.payload must be an object'],
    ['too many details', Array.from({ length: 101 }, () => detail(['subscribe'], [{ match: '*' }])), 'more than 100 authorization details'],
    ['too many topics', [detail(['subscribe'], Array.from({ length: 101 }, (_, i) => ({ match: `t${i}` })))], 'more than 100 entries'],
  ])('rejects the whole token for %s', async (_name, details, message) => {
    const t = await accessToken([detail(['publish'], [{ match: '*' }]), ...(Array.isArray(details) ? details : [])]);
    const token = Array.isArray(details) ? t : await accessToken(details);
    failureOf(await a().verify(token, 'publisher', HUB), token, message);
  });

  it('accepts exactly 100 details of 100 topics', async () => {
    const topics = Array.from({ length: 100 }, (_, i) => ({ match: `https://example.com/${i}` }));
    const t = await accessToken(Array.from({ length: 100 }, () => detail(['subscribe'], topics)));
    expect(grantsOf(await a().verify(t, 'subscriber', HUB)).subscribe).toHaveLength(100);
  });

  it('ignores unknown actions', async () => {
    const t = await accessToken([
      detail(['read', 'subscribe', 'x-future'], [{ match: 'https://example.com/a' }]),
      detail(['read'], [{ match: '*' }]),
    ]);
    const g = grantsOf(await a().verify(t, 'publisher', HUB));
    expect(g.canPublish).toBe(false);
    expect(g.subscribe.map((m) => m.source)).toEqual(['https://example.com/a']);
    expect(canSubscribe(g, ['https://example.com/b'])).toBe(false);
  });

  it('resolves relative URL patterns against baseUrl, else the audience', async () => {
    const t = await accessToken([detail(['subscribe'], [{ match: '/books/:id', match_type: 'urlpattern' }])]);
    const g = grantsOf(await a().verify(t, 'subscriber', HUB));
    expect(canSubscribe(g, ['https://hub.example.com/books/1'])).toBe(true);
    expect(canSubscribe(g, ['/books/1'])).toBe(true);
    expect(canSubscribe(g, ['https://example.com/books/1'])).toBe(false);
    const based = grantsOf(await a({ baseUrl: 'https://example.com/' }).verify(t, 'subscriber', HUB));
    expect(canSubscribe(based, ['https://example.com/books/1'])).toBe(true);
  });

  it('selects the payload of the first matching subscribe detail that has one', async () => {
    // The spec's example, preceded by entries that must not capture the payload.
    const t = await accessToken([
      detail(['publish'], [{ match: '*' }], { payload: { publishOnly: true } }),
      detail(['subscribe'], [{ match: 'https://example.com/foo' }]),
      detail(['subscribe'], [{ match: 'https://example.com/foo' }], { payload: { custom1: 'foo' } }),
      detail(['subscribe'], [{ match: 'https://example.com/bar/:id', match_type: 'urlpattern' }], { payload: { custom2: 'bar' } }),
      detail(['subscribe'], [{ match: '*' }], { payload: { custom3: 'default' } }),
      detail(['subscribe'], [{ match: 'https://example.com/late' }], { payload: { masked: true } }),
    ]);
    const g = grantsOf(await a().verify(t, 'subscriber', HUB));
    expect(g.payloadFor('https://example.com/foo')).toEqual({ custom1: 'foo' });
    expect(g.payloadFor('https://example.com/bar/:id')).toEqual({ custom2: 'bar' });
    expect(g.payloadFor('https://example.com/bar/42')).toEqual({ custom2: 'bar' });
    expect(g.payloadFor('https://example.com/late')).toEqual({ custom3: 'default' });
    expect(g.payloadFor('*')).toEqual({ custom3: 'default' });

    const noDefault = await accessToken([detail(['subscribe'], [{ match: 'a' }], { payload: { a: 1 } })]);
    const g2 = grantsOf(await a().verify(noDefault, 'subscriber', HUB));
    expect(g2.payloadFor('a')).toEqual({ a: 1 });
    expect(g2.payloadFor('b')).toBeUndefined();
  });
});

// -------------------------------------------------------------------------------------------

describe('issuers', () => {
  const SECRET_A = 'secret of issuer A, long enough';
  const SECRET_B = 'secret of issuer B, long enough';
  const A = 'https://a.example';
  const B = 'https://b.example';
  const opts = (): AuthorizerOptions => ({
    publisher: { key: SECRET },
    issuers: [
      { issuer: A, publisher: { key: SECRET_A } },
      { issuer: B, subscriber: { key: SECRET_B } },
    ],
  });
  const details = [detail(['publish', 'subscribe'], [{ match: '*' }])];

  it('verifies a token with its issuer keys only', async () => {
    const a = authorizer(opts());
    const ok = await accessToken(details, { key: enc(SECRET_A), claims: { iss: A } });
    expect(grantsOf(await a.verify(ok, 'publisher', HUB)).issuer).toBe(A);
    // Issuer A's subscriber key defaults to its publisher key.
    grantsOf(await a.verify(ok, 'subscriber', HUB));
    // B's key cannot vouch for A, nor can the role key.
    for (const key of [SECRET_B, SECRET]) {
      const t = await accessToken(details, { key: enc(key), claims: { iss: A } });
      failureOf(await a.verify(t, 'publisher', HUB), t, 'signature verification failed');
    }
    // A's key cannot be used to claim B's identity.
    const forged = await accessToken(details, { key: enc(SECRET_A), claims: { iss: B } });
    failureOf(await a.verify(forged, 'subscriber', HUB), forged, 'signature verification failed');
    // B has no publisher key.
    const bPub = await accessToken(details, { key: enc(SECRET_B), claims: { iss: B } });
    failureOf(await a.verify(bPub, 'publisher', HUB), bPub, 'issuer "https://b.example" has no publisher key');
    grantsOf(await a.verify(bPub, 'subscriber', HUB));
  });

  it('verifies other issuers with the role keys', async () => {
    const a = authorizer(opts());
    const other = await accessToken(details, { key: enc(SECRET), claims: { iss: 'https://self.example' } });
    grantsOf(await a.verify(other, 'publisher', HUB));
    const strict = authorizer({ ...opts(), trustedIssuers: ['https://self.example'] });
    grantsOf(await strict.verify(other, 'publisher', HUB));
    const stranger = await accessToken(details, { key: enc(SECRET), claims: { iss: 'https://stranger.example' } });
    failureOf(await strict.verify(stranger, 'publisher', HUB), stranger, 'not trusted');
    // Configured issuers need not be listed in trustedIssuers.
    const ok = await accessToken(details, { key: enc(SECRET_A), claims: { iss: A } });
    grantsOf(await strict.verify(ok, 'publisher', HUB));
  });

  it('verifies draft-07 tokens with the role keys only', async () => {
    const a = authorizer(opts());
    const t = await sign({ iss: A, mercure: { publish: ['*'] } }, enc(SECRET_A));
    failureOf(await a.verify(t, 'publisher', HUB), t, 'signature verification failed');
    grantsOf(await a.verify(await sign({ iss: A, mercure: { publish: ['*'] } }, enc(SECRET)), 'publisher', HUB));
  });
});

// -------------------------------------------------------------------------------------------

describe('JWK Sets', () => {
  let server: Server;
  let url: string;
  let jwks: { keys: JWK[] } = { keys: [] };
  let status = 200;
  let requests = 0;
  let dir: string;

  beforeAll(async () => {
    server = createServer((_req, res) => {
      requests++;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(jwks));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    dir = mkdtempSync(join(tmpdir(), 'quicksilver-auth-'));
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  async function keyPair(alg: string, kid?: string) {
    const kp = await generateKeyPair(alg, { extractable: true });
    const jwk = { ...(await exportJWK(kp.publicKey)), alg, use: 'sig', ...(kid ? { kid } : {}) };
    return { priv: kp.privateKey, jwk };
  }

  it('verifies with a remote JWK Set and picks up a rotated key after refresh', async () => {
    const k1 = await keyPair('ES256', 'k1');
    const k2 = await keyPair('RS256', 'k2');
    jwks = { keys: [k1.jwk] };
    status = 200;
    requests = 0;
    const a = authorizer({ publisher: { jwksUrl: url, key: 'ignored: the JWK Set wins' }, jwks: { cooldownDuration: 0 } });
    const t1 = await accessToken([detail(['publish'], [{ match: '*' }])], { key: k1.priv, alg: 'ES256', header: { kid: 'k1' } });
    expect(grantsOf(await a.verify(t1, 'publisher', HUB)).canPublish).toBe(true);
    expect(requests).toBe(1);

    // Rotation: the set now only holds k2.
    jwks = { keys: [k2.jwk] };
    const t2 = await accessToken([detail(['publish'], [{ match: '*' }])], { key: k2.priv, alg: 'RS256', header: { kid: 'k2' } });
    grantsOf(await a.verify(t2, 'publisher', HUB));
    expect(requests).toBe(2);
    const t1b = await accessToken([detail(['subscribe'], [{ match: '*' }])], { key: k1.priv, alg: 'ES256', header: { kid: 'k1' } });
    failureOf(await a.verify(t1b, 'publisher', HUB), t1b, 'no key of the JWK Set matches');
    // A JWK Set never supplies HMAC keys.
    const hs = await accessToken([], { header: { kid: 'k1' } });
    failureOf(await a.verify(hs, 'publisher', HUB), hs, 'alg HS256 not allowed, hub accepts RS256');
  });

  it('pins the configured algorithm with a JWK Set', async () => {
    const k = await keyPair('ES256', 'k');
    jwks = { keys: [k.jwk] };
    status = 200;
    const a = authorizer({ publisher: { jwksUrl: url, algorithm: 'RS256' } });
    const t = await sign({ mercure: { publish: ['*'] } }, k.priv, 'ES256', { kid: 'k' });
    failureOf(await a.verify(t, 'publisher', HUB), t, 'alg ES256 not allowed, hub pins RS256');
  });

  it('tries every candidate key when the token has no kid', async () => {
    const k1 = await keyPair('ES256');
    const k2 = await keyPair('ES256');
    jwks = { keys: [k1.jwk, k2.jwk] };
    status = 200;
    const a = authorizer({ subscriber: { jwksUrl: url } });
    const t = await sign({ mercure: { subscribe: ['*'] } }, k2.priv, 'ES256');
    grantsOf(await a.verify(t, 'subscriber', HUB));
    const stranger = await keyPair('ES256');
    const bad = await sign({ mercure: { subscribe: ['*'] } }, stranger.priv, 'ES256');
    failureOf(await a.verify(bad, 'subscriber', HUB), bad, 'signature verification failed');
  });

  it('reports an unavailable JWK Set without caching the failure', async () => {
    const k = await keyPair('ES256', 'k');
    jwks = { keys: [k.jwk] };
    status = 500;
    const logger = captureLogger();
    const a = authorizer({ publisher: { jwksUrl: url }, logger });
    const t = await sign({ mercure: { publish: ['*'] } }, k.priv, 'ES256', { kid: 'k' });
    failureOf(await a.verify(t, 'publisher', HUB), t, 'publisher key JWK Set unavailable');
    failureOf(await a.verify(t, 'publisher', HUB), t, 'publisher key JWK Set unavailable');
    // Logged, but once per outage window rather than once per request.
    expect(logger.entries.filter((e) => e.level === 'error')).toHaveLength(1);
    status = 200;
    grantsOf(await a.verify(t, 'publisher', HUB));
  });

  it('reads a file:// JWK Set once, at construction', async () => {
    const k = await keyPair('EdDSA', 'ed');
    const file = join(dir, 'jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [k.jwk] }));
    const a = authorizer({ publisher: { jwksUrl: pathToFileURL(file).href } });
    writeFileSync(file, 'not json any more');
    const t = await accessToken([detail(['publish'], [{ match: '*' }])], { key: k.priv, alg: 'EdDSA', header: { kid: 'ed' } });
    grantsOf(await a.verify(t, 'publisher', HUB));
    expect(() => new Authorizer({ publisher: { jwksUrl: pathToFileURL(file).href } })).toThrow(/cannot load JWK Set/);
    expect(() => new Authorizer({ publisher: { jwksUrl: pathToFileURL(join(dir, 'missing.json')).href } })).toThrow(
      /cannot load JWK Set/,
    );
  });
});

// -------------------------------------------------------------------------------------------

describe('configuration', () => {
  it('throws on invalid configuration', () => {
    expect(() => new Authorizer({ publisher: { key: SECRET, algorithm: 'HS1' as JwtAlgorithm } })).toThrow(/unsupported algorithm/);
    expect(() => new Authorizer({ publisher: { key: SECRET, algorithm: 'RS256' } })).toThrow(/PEM/);
    expect(() => new Authorizer({ publisher: { jwksUrl: 'https://example.com/jwks', algorithm: 'HS256' } })).toThrow(/HMAC/);
    expect(() => new Authorizer({ publisher: { jwksUrl: 'ftp://example.com/jwks' } })).toThrow(/https:, http: or file:/);
    expect(() => new Authorizer({ publisher: { jwksUrl: 'not a url' } })).toThrow(/invalid JWK Set URL/);
    expect(
      () => new Authorizer({ issuers: [{ issuer: ISS, publisher: { key: SECRET } }, { issuer: ISS, publisher: { key: SECRET } }] }),
    ).toThrow(/twice/);
    expect(() => new Authorizer({ issuers: [{ issuer: ISS }] })).toThrow(/no key/);
    expect(() => new Authorizer({})).not.toThrow();
  });

  it('reports a bad PEM key from ready() and as invalid_token', async () => {
    const pem = '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n';
    const logger = captureLogger();
    const a = authorizer({ publisher: { key: pem, algorithm: 'ES256' }, logger });
    await expect(a.ready()).rejects.toThrow(/publisher key cannot be imported/);
    const kp = await generateKeyPair('ES256');
    const t = await sign({ mercure: {} }, kp.privateKey, 'ES256');
    failureOf(await a.verify(t, 'publisher', HUB), t, 'publisher key cannot be imported');
    expect(logger.entries.map((e) => e.level)).toContain('error');
  });

  it('fails every token once closed', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const t = await sign({ mercure: {} });
    grantsOf(await a.verify(t, 'publisher', HUB));
    a.close();
    failureOf(await a.verify(t, 'publisher', HUB), t, 'closed');
  });
});

// -------------------------------------------------------------------------------------------

describe('cache', () => {
  it('returns the same grants for the same token, role and audience', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const t = await sign({ mercure: { publish: ['*'] }, exp: nowSec() + 60 });
    const first = await a.verify(t, 'publisher', HUB);
    expect(await a.verify(t, 'publisher', HUB)).toBe(first);
    // Concurrent verifications share one.
    const [x, y] = await Promise.all([a.verify(t, 'subscriber', HUB), a.verify(t, 'subscriber', HUB)]);
    expect(x).toBe(y);
    expect(x).not.toBe(first);
    expect(await a.verify(t, 'publisher', 'https://other.example/.well-known/mercure')).not.toBe(first);
  });

  it('is disabled with cacheSize 0', async () => {
    const a = authorizer({ publisher: { key: SECRET }, cacheSize: 0 });
    const t = await sign({ mercure: { publish: ['*'] } });
    const first = grantsOf(await a.verify(t, 'publisher', HUB));
    const second = grantsOf(await a.verify(t, 'publisher', HUB));
    expect(second).not.toBe(first);
    expect(second.publish).toEqual(first.publish);
  });

  it('stops serving a token once it expires', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-01-01T00:00:00Z'));
    const a = authorizer({ publisher: { key: SECRET } });
    const exp = nowSec() + 10;
    const t = await accessToken([detail(['subscribe'], [{ match: '*' }])], { claims: { exp } });
    const g = grantsOf(await a.verify(t, 'subscriber', HUB));
    expect(g.expiresAt).toBe(exp * 1000);
    vi.setSystemTime(exp * 1000 - 1);
    expect(await a.verify(t, 'subscriber', HUB)).toBe(g);
    vi.setSystemTime(exp * 1000);
    failureOf(await a.verify(t, 'subscriber', HUB), t, 'token expired');
  });

  it('drops expired entries as new tokens come in, so tokens never presented again do not fill it', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-01-01T00:00:00Z'));
    const a = authorizer({ publisher: { key: SECRET } });
    const size = (): number => (a as unknown as { cache: { size: number } }).cache.size;
    // 50 tokens that expire in 10 s, each verified once and never again.
    for (let i = 0; i < 50; i++) grantsOf(await a.verify(await sign({ mercure: { publish: ['*'] }, exp: nowSec() + 10, jti: `dead-${i}` }), 'publisher', HUB));
    expect(size()).toBe(50);
    vi.setSystemTime(Date.now() + 11_000);
    // Each new entry takes up to 4 expired ones out with it.
    for (let i = 0; i < 20; i++) grantsOf(await a.verify(await sign({ mercure: { publish: ['*'] }, exp: nowSec() + 60, jti: `live-${i}` }), 'publisher', HUB));
    expect(size()).toBe(20);
  });

  it('remembers deterministic failures briefly, but not nbf failures', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-01-01T00:00:00Z'));
    const a = authorizer({ publisher: { key: SECRET } });
    const bad = await sign({ mercure: {} }, enc('wrong secret'));
    const f1 = await a.verify(bad, 'publisher', HUB);
    expect(await a.verify(bad, 'publisher', HUB)).toBe(f1);
    vi.setSystemTime(Date.now() + 11_000);
    const f2 = await a.verify(bad, 'publisher', HUB);
    expect(f2).not.toBe(f1);
    expect(f2).toEqual(f1);

    const early = await sign({ mercure: {}, nbf: nowSec() + 5 });
    failureOf(await a.verify(early, 'publisher', HUB), early, 'nbf');
    vi.setSystemTime(Date.now() + 5_000);
    grantsOf(await a.verify(early, 'publisher', HUB));
  });
});

// -------------------------------------------------------------------------------------------

describe('extractToken', () => {
  const names = ['mercureAuthorization', '__Secure-mercure_access_token'];
  const JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7fX0.c2lnbmF0dXJl';

  it('prefers the Authorization header, then the query parameter, then the cookie', () => {
    const cookie = `mercureAuthorization=cookie.token.x`;
    expect(extractToken({ authorization: `Bearer ${JWT}`, cookie, queryToken: 'query.token.x' }, names)).toEqual({
      token: JWT,
      source: 'header',
    });
    expect(extractToken({ cookie, queryToken: 'query.token.x' }, names)).toEqual({ token: 'query.token.x', source: 'query' });
    expect(extractToken({ cookie }, names)).toEqual({ token: 'cookie.token.x', source: 'cookie' });
    expect(extractToken({}, names)).toBeNull();
    expect(extractToken({ cookie: 'other=1' }, names)).toBeNull();
  });

  it('matches the Bearer scheme case-insensitively', () => {
    for (const header of [`bearer ${JWT}`, `BEARER ${JWT}`, `Bearer   ${JWT}`, ` Bearer ${JWT} `]) {
      expect(extractToken({ authorization: header }, names)).toEqual({ token: JWT, source: 'header' });
    }
    expect(extractToken({ authorization: [`Bearer ${JWT}`] }, names)).toEqual({ token: JWT, source: 'header' });
  });

  it.each([
    ['another scheme', `Basic ${JWT}`],
    ['no credentials', 'Bearer'],
    ['empty credentials', 'Bearer    '],
    ['an empty header', ''],
    ['two credentials', `Bearer ${JWT} ${JWT}`],
    ['a comma', `Bearer ${JWT},x`],
    ['two headers', [`Bearer ${JWT}`, `Bearer ${JWT}`]],
  ])('refuses a malformed header (%s) as invalid_request, without falling back', (_name, authorization) => {
    const r = extractToken({ authorization, cookie: `mercureAuthorization=${JWT}` }, names);
    expect(r).toMatchObject({ error: 'invalid_request' });
    expect((r as AuthFailure).message).not.toContain(JWT);
  });

  it('refuses malformed or repeated query tokens', () => {
    expect(extractToken({ queryToken: '' }, names)).toMatchObject({ error: 'invalid_request' });
    expect(extractToken({ queryToken: 'a b' }, names)).toMatchObject({ error: 'invalid_request' });
    expect(extractToken({ queryToken: [JWT, JWT] }, names)).toMatchObject({ error: 'invalid_request' });
    expect(extractToken({ queryToken: [] }, names)).toBeNull();
  });

  it('takes cookies in the order of cookieNames', () => {
    const cookie = `__Secure-mercure_access_token=new.tok.en; theme=dark; mercureAuthorization=old.tok.en`;
    expect(extractToken({ cookie }, names)).toEqual({ token: 'old.tok.en', source: 'cookie' });
    expect(extractToken({ cookie }, [...names].reverse())).toEqual({ token: 'new.tok.en', source: 'cookie' });
    expect(extractToken({ cookie: 'mercureAuthorization="quo.ted.tok"' }, names)).toEqual({
      token: 'quo.ted.tok',
      source: 'cookie',
    });
    // An emptied cookie is no token: the next name is tried.
    expect(extractToken({ cookie: 'mercureAuthorization=; __Secure-mercure_access_token=b.c.d' }, names)).toEqual({
      token: 'b.c.d',
      source: 'cookie',
    });
    expect(extractToken({ cookie: 'mercureAuthorization=' }, names)).toBeNull();
    expect(extractToken({ cookie: 'mercureAuthorization=first.a.b; mercureAuthorization=second.a.b' }, names)).toEqual({
      token: 'first.a.b',
      source: 'cookie',
    });
    expect(extractToken({ cookie: 'mercureAuthorization=a.b.c' }, [])).toBeNull();
  });
});

// -------------------------------------------------------------------------------------------

describe('canPublish / canSubscribe', () => {
  it('requires every topic for publishing and some topic for subscribing', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const g = grantsOf(
      await a.verify(
        await sign({ mercure: { publish: ['https://example.com/a', 'https://example.com/b'], subscribe: ['https://example.com/a'] } }),
        'publisher',
        HUB,
      ),
    );
    expect(canPublish(g, ['https://example.com/a'])).toBe(true);
    expect(canPublish(g, ['https://example.com/a', 'https://example.com/b'])).toBe(true);
    expect(canPublish(g, ['https://example.com/a', 'https://example.com/c'])).toBe(false);
    expect(canPublish(g, [])).toBe(false);
    expect(canSubscribe(g, ['https://example.com/c', 'https://example.com/a'])).toBe(true);
    expect(canSubscribe(g, ['https://example.com/b'])).toBe(false);
    expect(canSubscribe(g, [])).toBe(false);
    expect(canSubscribe(null, ['https://example.com/a'])).toBe(false);
  });

  it('honours the wildcard', async () => {
    const a = authorizer({ publisher: { key: SECRET } });
    const g = grantsOf(await a.verify(await accessToken([detail(['publish', 'subscribe'], [{ match: '*', match_type: 'urlpattern' }])]), 'publisher', HUB));
    expect(canPublish(g, ['https://example.com/x', 'urn:anything'])).toBe(true);
    expect(canSubscribe(g, ['urn:anything'])).toBe(true);
  });
});
