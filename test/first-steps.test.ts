/**
 * What a new user pasting the README meets first: an unset `$PUBLISHER_TOKEN` sends
 * `Authorization: Bearer ` with nothing after it, and the hub must say that the token is empty,
 * not that the header "does not use the Bearer scheme". Over a real socket, as curl sends it.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyToken, startHub, type TestHub } from './helpers.js';

/** A raw request: fetch would trim the header value, curl does not. */
function post(url: string, authorization: string): Promise<{ status: number; body: string; challenge: string }> {
  return new Promise((ok, fail) => {
    const req = request(url, { method: 'POST', headers: { Authorization: authorization, 'Content-Type': 'application/x-www-form-urlencoded' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => ok({ status: res.statusCode!, body, challenge: String(res.headers['www-authenticate'] ?? '') }));
    });
    req.on('error', fail);
    req.end('topic=https://example.com/books/1&data=hello');
  });
}

describe('first steps: an empty bearer token', () => {
  let hub: TestHub;
  beforeAll(async () => { hub = await startHub(); });
  afterAll(() => hub.close());

  for (const header of ['Bearer ', 'Bearer', 'bearer   ']) {
    it(`'Authorization: ${header}' is answered "the bearer token is empty"`, async () => {
      const res = await post(hub.hubUrl, header);
      expect(res.status).toBe(401);
      expect(res.body).toContain('the bearer token is empty');
      expect(res.challenge).toContain('error_description="the bearer token is empty');
      expect(res.body).not.toContain('does not use the Bearer scheme');
    });
  }

  it('another scheme is still told apart', async () => {
    const res = await post(hub.hubUrl, 'Basic dXNlcjpwYXNz');
    expect(res.status).toBe(401);
    expect(res.body).toContain('does not use the Bearer scheme');
  });

  it('a real token still publishes', async () => {
    const res = await post(hub.hubUrl, `Bearer ${await legacyToken({ publish: ['*'] })}`);
    expect(res.status).toBe(200);
  });
});
