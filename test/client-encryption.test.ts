/**
 * End-to-end encryption of update data: the hub only ever relays ciphertext, the subscriber
 * decrypts; wrong keys, RSA1_5, tampering and stale timestamps are refused.
 */
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { base64url, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decryptData,
  decryptUpdateData,
  encryptData,
  EncryptionError,
  generateEncryptionKeyPair,
  type EncryptionKeyPair,
} from '../src/client/encryption.js';
import { Publisher } from '../src/client/publisher.js';
import { subscribe } from '../src/client/subscriber.js';
import { createPublisherToken } from '../src/client/token.js';
import { KEY, SseClient, startHub, subscribeUrl, type TestHub } from './helpers.js';

let h: TestHub;
let publisher: Publisher;
let ec: EncryptionKeyPair;
let rsa: EncryptionKeyPair;

beforeAll(async () => {
  h = await startHub({ anonymous: true });
  publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
  ec = await generateEncryptionKeyPair();
  rsa = await generateEncryptionKeyPair('RSA-OAEP-256');
});
afterAll(() => h.close());

async function expectEncryptionError(p: Promise<unknown>, code: EncryptionError['code']): Promise<EncryptionError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(EncryptionError);
    expect((err as EncryptionError).code).toBe(code);
    return err as EncryptionError;
  }
  throw new Error(`expected an EncryptionError ${code}`);
}

describe('through a real hub', () => {
  it.each([
    ['ECDH-ES+A256KW', () => ec],
    ['RSA-OAEP-256', () => rsa],
  ] as const)('%s: the publisher encrypts, the hub relays ciphertext, the subscriber decrypts', async (alg, keys) => {
    const topic = `https://example.com/vault/${alg}`;
    const secret = JSON.stringify({ balance: 1234.5, note: 'multi\nline, ünïcödé ✓' });
    const sub = subscribe(h.hubUrl, { topics: topic });
    const opened = new Promise<void>((resolve) => sub.on('open', () => resolve()));
    const raw = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', topic]]));
    try {
      await opened;
      const data = await encryptData(secret, keys().publicJwk, { timestamp: true });
      expect(data.split('.')).toHaveLength(5);
      const header = decodeProtectedHeader(data);
      expect(header).toMatchObject({ alg, enc: 'A256GCM', kid: keys().publicJwk.kid, cty: 'mercure-timestamped+json' });
      const id = await publisher.publish({ topics: topic, data });

      // What the hub (and anyone on its side) sees: ciphertext only.
      await raw.waitForEvents(1);
      expect(raw.raw).not.toContain('balance');
      expect(raw.events[0]!.data).toBe(data);

      for await (const event of sub) {
        expect(event.id).toBe(id);
        const decrypted = await decryptUpdateData(event.data, keys().privateJwk, { maxAge: '1m' });
        expect(decrypted.data).toBe(secret);
        expect(Math.abs(decrypted.issuedAt!.getTime() - Date.now())).toBeLessThan(5000);
        break;
      }
    } finally {
      sub.close();
      raw.close();
    }
  });
});

describe('keys and algorithms', () => {
  it('works with Web Crypto keys, Node KeyObjects (X25519) and JWK Sets', async () => {
    const pair = (await webcrypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-384' }, true, ['deriveBits'])) as CryptoKeyPair;
    expect(await decryptData(await encryptData('web crypto', pair.publicKey), pair.privateKey)).toBe('web crypto');

    const x = generateKeyPairSync('x25519');
    const jwe = await encryptData('x25519', x.publicKey);
    expect(decodeProtectedHeader(jwe)).toMatchObject({ alg: 'ECDH-ES+A256KW', epk: { crv: 'X25519' } });
    expect(await decryptData(jwe, x.privateKey)).toBe('x25519');

    const set = { keys: [rsa.privateJwk, ec.privateJwk] };
    expect(await decryptData(await encryptData('from a set', ec.publicJwk), set)).toBe('from a set');
    expect(await decryptData(await encryptData('rsa from a set', rsa.publicJwk), set)).toBe('rsa from a set');
  });

  it('fails with the wrong key, and on tampering', async () => {
    const other = await generateEncryptionKeyPair();
    const jwe = await encryptData('for ec only', ec.publicJwk);
    const wrong = await expectEncryptionError(decryptData(jwe, other.privateJwk), 'decryption_failed');
    expect(wrong.message).toMatch(/wrong key/);
    await expectEncryptionError(decryptData(jwe, { keys: [other.privateJwk] }), 'invalid_key'); // kid mismatch
    await expectEncryptionError(decryptData(jwe, rsa.privateJwk), 'invalid_key'); // the key is for another algorithm

    const parts = jwe.split('.');
    const ct = base64url.decode(parts[3]!);
    ct[0] = ct[0]! ^ 1;
    parts[3] = base64url.encode(ct);
    await expectEncryptionError(decryptData(parts.join('.'), ec.privateJwk), 'decryption_failed');
    await expectEncryptionError(decryptData('plain text', ec.privateJwk), 'malformed');
  });

  it('refuses RSA1_5 and other algorithms, on both sides', async () => {
    const e1 = await expectEncryptionError(encryptData('x', rsa.publicJwk, { alg: 'RSA1_5' as 'RSA-OAEP-256' }), 'algorithm_refused');
    expect(e1.message).toMatch(/RSA1_5 is refused.*padding oracle/);
    await expectEncryptionError(encryptData('x', { ...rsa.publicJwk, alg: 'RSA1_5' }), 'algorithm_refused');
    await expectEncryptionError(generateEncryptionKeyPair('RSA1_5' as 'RSA-OAEP-256'), 'algorithm_refused');

    // A JWE that claims RSA1_5 is refused before any decryption is attempted.
    const legit = (await encryptData('x', rsa.publicJwk)).split('.');
    legit[0] = base64url.encode(JSON.stringify({ alg: 'RSA1_5', enc: 'A256GCM' }));
    const e2 = await expectEncryptionError(decryptData(legit.join('.'), rsa.privateJwk), 'algorithm_refused');
    expect(e2.message).toMatch(/RSA1_5/);
    legit[0] = base64url.encode(JSON.stringify({ alg: 'dir', enc: 'A256GCM' }));
    await expectEncryptionError(decryptData(legit.join('.'), rsa.privateJwk), 'algorithm_refused');
    legit[0] = base64url.encode(JSON.stringify({ alg: 'RSA-OAEP-256', enc: 'A128CBC-HS256' }));
    await expectEncryptionError(decryptData(legit.join('.'), rsa.privateJwk), 'algorithm_refused');
    // The allowlist can be narrowed, never widened.
    await expectEncryptionError(decryptData(await encryptData('x', rsa.publicJwk), rsa.privateJwk, { algorithms: ['ECDH-ES+A256KW'] }), 'algorithm_refused');

    await expectEncryptionError(encryptData('x', { kty: 'oct', k: 'AAAA' }), 'invalid_key');
    await expectEncryptionError(encryptData('x', ec.privateJwk), 'invalid_key'); // a private key must not be handed to publishers
    await expectEncryptionError(decryptData(await encryptData('x', ec.publicJwk), ec.publicJwk), 'invalid_key');
  });
});

describe('freshness', () => {
  it('refuses stale, future and untimestamped payloads when maxAge is set', async () => {
    const old = await encryptData('old news', ec.publicJwk, { timestamp: new Date(Date.now() - 10 * 60_000) });
    // Without maxAge it decrypts (and says when it was made).
    const d = await decryptUpdateData(old, ec.privateJwk);
    expect(d.data).toBe('old news');
    expect(Date.now() - d.issuedAt!.getTime()).toBeGreaterThan(9 * 60_000);
    const stale = await expectEncryptionError(decryptData(old, ec.privateJwk, { maxAge: '5m' }), 'stale');
    expect(stale.message).toMatch(/more than maxAge 300 s.*replay/);
    expect(await decryptData(old, ec.privateJwk, { maxAge: 3600 })).toBe('old news');

    const future = await encryptData('from the future', ec.publicJwk, { timestamp: new Date(Date.now() + 10 * 60_000) });
    await expectEncryptionError(decryptData(future, ec.privateJwk), 'not_yet_valid');
    expect(await decryptData(future, ec.privateJwk, { clockTolerance: '1h' })).toBe('from the future');

    const untimestamped = await encryptData('no timestamp', ec.publicJwk);
    expect(await decryptData(untimestamped, ec.privateJwk)).toBe('no timestamp');
    await expectEncryptionError(decryptData(untimestamped, ec.privateJwk, { maxAge: 60 }), 'missing_timestamp');

    // The clock is injectable.
    const now = await encryptData('now', ec.publicJwk, { timestamp: true });
    await expectEncryptionError(decryptData(now, ec.privateJwk, { maxAge: 60, now: () => Date.now() + 5 * 60_000 }), 'stale');
  });
});
