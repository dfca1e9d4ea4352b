/**
 * Issue 10, section 2: wire details a client of the reference hub can notice.
 * - draft-08 (the reference's 1.0 line): an Authorization header that is not Bearer is
 *   `400 invalid_request`, and so is a cookie-authenticated publish without Origin/Referer or
 *   from an origin not allowed (draft-07 keeps the reference 0.x's 401);
 * - a publish is authenticated before its form is validated: without a token, an empty or
 *   invalid body answers 401, so an unauthenticated caller learns nothing about validation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessToken, legacyToken, startHub, SUB_KEY, type TestHub } from './helpers.js';

const DRAFT8_COOKIE = '__Secure-mercure_access_token';

describe('wire details', () => {
  let h: TestHub;
  beforeAll(async () => {
    h = await startHub({ publishOrigins: ['https://app.example'], subscriptions: true });
  });
  afterAll(async () => {
    await h?.close();
  });

  const post = (headers: Record<string, string>, body = 'topic=https%3A%2F%2Fexample.com%2Fa') =>
    fetch(h.hubUrl, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers }, body });

  it('draft-08: Authorization: Basic is 400 invalid_request on subscribe and on the subscriptions API', async () => {
    const basic = { Authorization: 'Basic dXNlcjpwYXNzd29yZA==' };
    const sub = await fetch(`${h.hubUrl}?match=${encodeURIComponent('https://example.com/a')}`, { headers: basic });
    expect(sub.status).toBe(400);
    expect(sub.headers.get('www-authenticate')).toMatch(/^Bearer resource_metadata="[^"]+", error="invalid_request"/);
    expect(await sub.text()).toMatch(/Bearer/);
    const api = await fetch(`${h.url}/.well-known/mercure/subscriptions/exact/${encodeURIComponent('https://example.com/a')}`, { headers: basic });
    expect(api.status).toBe(400);
    expect(api.headers.get('www-authenticate')).toMatch(/error="invalid_request"/);
    // draft-07 keeps the reference 0.x answer.
    expect((await fetch(`${h.hubUrl}?topic=x`, { headers: basic })).status).toBe(401);
  });

  it('draft-08: a cookie publish without Origin/Referer, or from an origin not allowed, is 400 invalid_request', async () => {
    const t = await accessToken([{ actions: ['publish'], topics: [{ match: 'https://example.com/a' }] }], { aud: h.hubUrl });
    const cookie = { Cookie: `${DRAFT8_COOKIE}=${t}` };
    for (const headers of [cookie, { ...cookie, Origin: 'https://evil.example' }, { ...cookie, Referer: 'https://evil.example/page' }]) {
      const r = await post(headers);
      expect(r.status, JSON.stringify(headers)).toBe(400);
      expect(r.headers.get('www-authenticate')).toMatch(/error="invalid_request"/);
      expect(await r.text()).toMatch(/Origin|origin/);
    }
    expect((await post({ ...cookie, Origin: 'https://app.example' })).status).toBe(200);
    // draft-07 tokens keep the reference 0.x's 401.
    const legacy = await legacyToken({ publish: ['*'] });
    expect((await post({ Cookie: `mercureAuthorization=${legacy}` })).status).toBe(401);
    expect((await post({ Cookie: `mercureAuthorization=${legacy}`, Origin: 'https://evil.example' })).status).toBe(401);
  });

  it('authenticates a publish before validating its form: no token and a bad body is 401', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{}, ''],
      [{}, 'topic=%zz'],
      [{}, '%ff%fe'],
      [{ 'Content-Type': 'text/plain' }, 'hello'],
      [{}, 'data=no-topic'],
      [{}, 'topic=a&id=%23reserved&retry=x'],
    ];
    for (const [headers, body] of cases) {
      const r = await post(headers, body);
      expect(r.status, `${JSON.stringify(headers)} ${body}`).toBe(401);
      expect(await r.text()).toMatch(/^Unauthorized/);
    }
    // An invalid token too: 401 before any word about the form.
    expect((await post({ Authorization: 'Bearer not.a.token' }, '')).status).toBe(401);
    // With a valid token, validation speaks.
    const legacy = await legacyToken({ publish: ['*'] });
    const r = await post({ Authorization: `Bearer ${legacy}` }, 'data=no-topic');
    expect(r.status).toBe(400);
    expect(await r.text()).toMatch(/topic/);
  });

  it('a subscriber token cannot learn anything about the publish form either', async () => {
    const subOnly = await legacyToken({ subscribe: ['*'] }, SUB_KEY);
    expect((await post({ Authorization: `Bearer ${subOnly}` }, '')).status).toBe(401);
  });
});
