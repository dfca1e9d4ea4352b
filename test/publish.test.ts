import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessToken, KEY, legacyToken, publish, SseClient, startHub, subscribeUrl, type TestHub } from './helpers.js';

let h: TestHub;
let token: string;
beforeAll(async () => {
  h = await startHub({ anonymous: true, maxBodySize: 64 * 1024, publishOrigins: ['https://app.example'] });
  token = await legacyToken({ publish: ['*'] });
});
afterAll(() => h.close());

describe('publish (draft-07 tokens)', () => {
  it('answers 200 with the generated urn:uuid v7 id as text/plain', async () => {
    const r = await publish(h.hubUrl, { topic: 'https://example.com/a', data: 'x' }, token);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(r.body).toMatch(/^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('keeps a publisher-supplied id', async () => {
    const r = await publish(h.hubUrl, { topic: 'https://example.com/a', id: 'my-id-1' }, token);
    expect(r).toMatchObject({ status: 200, body: 'my-id-1' });
  });

  it.each([
    ['missing topic', { data: 'x' }, 400, /Missing "topic"/],
    ['non-numeric retry', { topic: 'a', retry: '1s' }, 400, /retry/],
    ['negative retry', { topic: 'a', retry: '-1' }, 400, /retry/],
    ['LF in id', { topic: 'a', id: 'a\nid: forged' }, 400, /"id"/],
    ['CR in id', { topic: 'a', id: 'a\rb' }, 400, /"id"/],
    ['NUL in id', { topic: 'a', id: 'a\u0000b' }, 400, /"id"/],
    ['LF in type', { topic: 'a', type: 'x\ndata: forged' }, 400, /"type"/],
    ['reserved type mercure', { topic: 'a', type: 'mercure' }, 400, /reserved/],
    ['earliest as id', { topic: 'a', id: 'earliest' }, 400, /earliest/],
    ['reserved namespace topic', { topic: '/.well-known/mercure/subscriptions/x/y' }, 403, /reserved namespace/],
    ['reserved namespace (substring, as the reference)', { topic: 'https://example.com/.well-known/mercure/x' }, 403, /reserved/],
    ['reserved namespace via encoding', { topic: 'https://localhost/.well-known/%6Dercure/x' }, 403, /reserved/],
  ])('rejects %s', async (_name, fields, status, message) => {
    const r = await publish(h.hubUrl, fields as Record<string, string>, token);
    expect(r.status).toBe(status);
    expect(r.body).toMatch(message);
  });

  it('rejects more than 1000 topics', async () => {
    const topics = Array.from({ length: 1001 }, (_, i) => `https://example.com/${i}`);
    const r = await publish(h.hubUrl, { topic: topics }, token);
    expect(r.status).toBe(400);
    expect(r.body).toMatch(/Too many "topic"/);
  });

  it('rejects a body over the size limit with 413', async () => {
    const r = await publish(h.hubUrl, { topic: 'a', data: 'x'.repeat(70 * 1024) }, token);
    expect(r.status).toBe(413);
  });

  it('rejects a wrong content type and malformed forms', async () => {
    const res = await fetch(h.hubUrl, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: '{"topic":"a"}' });
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/Content-Type/);
    const bad = await fetch(h.hubUrl, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'topic=a&data=%E9%ZZ' });
    expect(bad.status).toBe(400);
    const notUtf8 = await fetch(h.hubUrl, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'topic=a&data=%FF%FE' });
    expect(notUtf8.status).toBe(400);
  });

  it('requires a token (401) and rejects invalid ones', async () => {
    expect((await publish(h.hubUrl, { topic: 'a' })).status).toBe(401);
    const r = await publish(h.hubUrl, { topic: 'a' }, 'not.a.token');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer /);
    const wrongKey = await legacyToken({ publish: ['*'] }, 'another-key-another-key-another-key!');
    expect((await publish(h.hubUrl, { topic: 'a' }, wrongKey)).status).toBe(401);
    const expired = await legacyToken({ publish: ['*'] }, KEY, { exp: Math.floor(Date.now() / 1000) - 10 });
    expect((await publish(h.hubUrl, { topic: 'a' }, expired)).status).toBe(401);
  });

  it('requires the mercure.publish claim and a grant for every topic', async () => {
    const none = await legacyToken({ subscribe: ['*'] });
    expect((await publish(h.hubUrl, { topic: 'a' }, none)).status).toBe(401);
    const some = await legacyToken({ publish: ['https://example.com/books/{id}'] });
    expect((await publish(h.hubUrl, { topic: 'https://example.com/books/1' }, some)).status).toBe(200);
    const r = await publish(h.hubUrl, { topic: ['https://example.com/books/1', 'https://example.com/users/1'] }, some);
    expect(r.status).toBe(401);
    expect(r.body).toMatch(/users\/1/);
  });

  it('accepts the namespaced https://mercure.rocks/ claim', async () => {
    const t = await legacyToken({ publish: ['*'] }, KEY, { namespaced: true });
    expect((await publish(h.hubUrl, { topic: 'a' }, t)).status).toBe(200);
  });

  it('accepts the token from the authorization query parameter and the cookie', async () => {
    const q = await fetch(`${h.hubUrl}?authorization=${token}`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'topic=a' });
    expect(q.status).toBe(200);
    const c = await fetch(h.hubUrl, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: `mercureAuthorization=${token}`, Origin: 'https://app.example' }, body: 'topic=a' });
    expect(c.status).toBe(200);
  });

  it('checks the origin of cookie-authenticated publishes (CSRF)', async () => {
    const send = (headers: Record<string, string>) =>
      fetch(h.hubUrl, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: `mercureAuthorization=${token}`, ...headers }, body: 'topic=a' });
    expect((await send({ Origin: 'https://evil.example' })).status).toBe(401);
    expect((await send({})).status).toBe(401);
    expect((await send({ Referer: 'https://app.example/page' })).status).toBe(200);
    // The Authorization header is not ambient: no origin check.
    expect((await publish(h.hubUrl, { topic: 'a' }, token, { Origin: 'https://evil.example' })).status).toBe(200);
  });

  it('marks an update private by the mere presence of the field', async () => {
    const sub = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/p']]));
    await publish(h.hubUrl, [['topic', 'https://example.com/p'], ['private', ''], ['data', 'secret']], token);
    await publish(h.hubUrl, { topic: 'https://example.com/p', data: 'public' }, token);
    await sub.waitForEvents(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(sub.events.map((e) => e.data)).toEqual(['public']);
    sub.close();
  });
});

describe('publish (draft-08 tokens)', () => {
  const aud = () => h.hubUrl;
  it('accepts an RFC 9068 token granting publish', async () => {
    const t = await accessToken([{ actions: ['publish'], topics: [{ match: 'https://example.com/books/:id', match_type: 'urlpattern' }] }], { aud: aud() });
    const r = await publish(h.hubUrl, { topic: 'https://example.com/books/1' }, t);
    expect(r.status).toBe(200);
  });

  it('answers 403 insufficient_scope when a topic is not granted', async () => {
    const t = await accessToken([{ actions: ['publish'], topics: [{ match: 'https://example.com/books/1' }] }], { aud: aud() });
    const r = await publish(h.hubUrl, { topic: ['https://example.com/books/1', 'https://example.com/books/2'] }, t);
    expect(r.status).toBe(403);
    expect(r.headers.get('www-authenticate')).toMatch(/error="insufficient_scope"/);
    expect(r.headers.get('www-authenticate')).toMatch(/resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/\.well-known\/mercure"/);
  });

  it('answers 401 invalid_token for a wrong audience', async () => {
    const t = await accessToken([{ actions: ['publish'], topics: [{ match: '*' }] }], { aud: 'https://other-hub.example/.well-known/mercure' });
    const r = await publish(h.hubUrl, { topic: 'a' }, t);
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
  });

  it('rejects reserved topics and * with 400', async () => {
    const t = await accessToken([{ actions: ['publish'], topics: [{ match: '*' }] }], { aud: aud() });
    expect((await publish(h.hubUrl, { topic: '*' }, t)).status).toBe(400);
    expect((await publish(h.hubUrl, { topic: `${h.hubUrl}/subscriptions/exact/a/b` }, t)).status).toBe(400);
    expect((await publish(h.hubUrl, { topic: '/.well-known/mercure/../mercure/x' }, t)).status).toBe(400);
    expect((await publish(h.hubUrl, { topic: 'ok\u200Btopic' }, t)).status).toBe(400);
    expect((await publish(h.hubUrl, { topic: 'https://example.com/fine' }, t)).status).toBe(200);
  });
});
