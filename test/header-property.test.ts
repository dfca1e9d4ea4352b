/**
 * Issue 10: a property test over random ids, types, topics and request header values drawn from
 * every code point class (ASCII controls, DEL, printable ASCII, latin1, the rest of the BMP,
 * astral, lone surrogates). Each response head the hub writes (raw-socket path and node:http
 * path; 200 streams, 400/401 errors, the subscriptions API, publish answers) is read back by
 * Node's own HTTP parser and must hold exactly the headers the hub meant: no extra header line,
 * no value cut or changed.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyToken, sleep, startHub, SUB_KEY, type TestHub } from './helpers.js';
import { headerOf, parseHead, rawExchange, utf8Value, type ParsedHead } from './raw-client.js';

const CLASSES: Array<[number, number, number]> = [
  // [from, to, weight]: hostile classes are rarer, so that many values get through validation
  // and reach the headers they are judged in.
  [0x00, 0x1f, 1], // ASCII controls
  [0x7f, 0x7f, 1], // DEL
  [0x20, 0x7e, 8], // printable ASCII
  [0x80, 0xff, 3], // latin1 (C1 controls included)
  [0x100, 0xd7ff, 3], // BMP
  [0x10000, 0x10ffff, 3], // astral
  [0xd800, 0xdfff, 1], // lone surrogates
];
const unit = fc
  .oneof(...CLASSES.map(([lo, hi, weight]) => ({ weight, arbitrary: fc.integer({ min: lo, max: hi }) })))
  .map((c) => (c >= 0xd800 && c <= 0xdfff ? String.fromCharCode(c) : String.fromCodePoint(c)));
const text = fc.string({ unit, maxLength: 8 });
// Mostly plausible values with a hostile tail, sometimes nothing but noise.
const value = fc.oneof(text, fc.tuple(fc.constantFrom('urn:x:', 'https://example.com/', 'a'), text).map(([a, b]) => a + b));
/** Mostly absent: a header given a random value. */
const sometimes = fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: value });

/** UTF-8 bytes, lone surrogates as their WTF-8 bytes: what reaches the hub is invalid UTF-8 then. */
function wtf8(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.codePointAt(i)!;
    if (c > 0xffff) i++;
    if (c >= 0xd800 && c <= 0xdfff) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else out.push(...Buffer.from(String.fromCodePoint(c)));
  }
  return Buffer.from(out);
}
const pct = (s: string): string => [...wtf8(s)].map((b) => '%' + b.toString(16).padStart(2, '0')).join('');
const wellFormed = (s: string): boolean => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

const SECURITY = ['x-frame-options', 'x-content-type-options', 'x-xss-protection', 'content-security-policy'];
const PLAIN = [...SECURITY, 'content-type', 'content-length', 'date', 'connection'];
const STREAM = [...SECURITY, 'content-type', 'cache-control', 'pragma', 'expire', 'expires', 'x-accel-buffering', 'date', 'connection', 'transfer-encoding'];
const CORS = ['access-control-allow-origin', 'access-control-allow-credentials', 'vary', 'access-control-expose-headers'];
// node:http adds Keep-Alive to a keep-alive response, and may or may not chunk a stream.
const NODE_EXTRA = ['keep-alive', 'transfer-encoding'];

/** The head's header names are exactly `required`, plus any of `optional`, each once. */
function expectNames(head: ParsedHead, required: string[], optional: string[] = [], what = ''): void {
  const names = head.headers.map(([n]) => n);
  expect(new Set(names).size, `${what}: duplicate header in ${JSON.stringify(head.headers)}`).toBe(names.length);
  for (const r of required) expect(names, `${what}: ${r} missing`).toContain(r);
  for (const n of names) expect([...required, ...optional], `${what}: unexpected header ${n}`).toContain(n);
}

describe('every response head parses back to the headers the hub meant', () => {
  let hub: TestHub;
  let port: number;
  let pub: string;
  let sub: string;
  beforeAll(async () => {
    hub = await startHub({ subscriptions: true, trustProxy: true, corsOrigins: ['*'] });
    port = Number(new URL(hub.url).port);
    pub = await legacyToken({ publish: ['*'] });
    sub = await legacyToken({ subscribe: ['*'] }, SUB_KEY);
  });
  afterAll(async () => {
    await hub?.close();
  });

  const host = (): string => `Host: 127.0.0.1:${port}\r\n`;

  async function exchange(request: Buffer, what: string): Promise<{ head: ParsedHead; rest: Buffer }> {
    // A short answer is read whole; a stream's head is enough.
    const ex = await rawExchange(port, request, {
      until: (rest, head) => {
        const m = /\r\ncontent-length: *(\d+)/i.exec(head);
        return m ? rest.length >= Number(m[1]) : true;
      },
    });
    const head = await parseHead(ex.head);
    expect(head, `${what}: Node cannot parse ${JSON.stringify(ex.head.toString('latin1'))}`).not.toBeNull();
    return { head: head!, rest: ex.rest };
  }

  const checked = { published: 0, streams: 0, api: 0, hubErrors: 0 };

  it('publish answers, replay cursors (query and header, both paths, both drafts) and the subscriptions API', async () => {
    await fc.assert(
      fc.asyncProperty(value, fc.oneof(fc.constant(''), value), value, async (id, type, topicTail) => {
        const topic = `https://example.com/${topicTail}`;
        const body = `topic=${pct(topic)}&id=${pct(id)}&type=${pct(type)}&data=x`;
        const request = Buffer.concat([
          Buffer.from(`POST /.well-known/mercure HTTP/1.1\r\n${host()}Authorization: Bearer ${pub}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`),
          Buffer.from(body),
        ]);
        const published = await exchange(request, 'publish');
        expect([200, 400], published.rest.toString()).toContain(published.head.status);
        expectNames(published.head, PLAIN, NODE_EXTRA, 'publish');
        if (published.head.status !== 200) {
          expect(published.rest.toString()).toMatch(/^Invalid /);
          return;
        }
        checked.published++;
        // The answer's body is the update's id (subscription events may come after it).
        const stored = published.rest.toString('utf8');
        if (id) expect(stored).toBe(id);
        expect(wellFormed(stored)).toBe(true);

        // The subscriptions API's cursor is the newest id: that one, if nothing came after it.
        for (const [path, quoted] of [
          ['/.well-known/mercure/subscriptions', false],
          [`/.well-known/mercure/subscriptions/exact/${encodeURIComponent(topic)}`, true],
        ] as const) {
          const before = await hub.hub.hub.lastEventId();
          const api = await exchange(Buffer.from(`GET ${path} HTTP/1.1\r\n${host()}Authorization: Bearer ${sub}\r\n\r\n`), 'subscriptions API');
          if ((await hub.hub.hub.lastEventId()) !== before) continue;
          expect(api.head.status).toBe(200);
          expectNames(api.head, [...PLAIN.filter((n) => n !== 'connection'), 'etag', 'cache-control', 'link'], ['connection', ...NODE_EXTRA], 'subscriptions API');
          const escaped = before.replace(/["\\]/g, '\\$&');
          expect(headerOf(api.head, 'etag').map(utf8Value)).toEqual([quoted ? `"${escaped}"` : before]);
          const link = headerOf(api.head, 'link').map(utf8Value);
          expect(link).toHaveLength(1);
          checked.api++;
          const param = /^[\x20-\x7e]*$/.test(before)
            ? `last-event-id="${escaped}"`
            : `last-event-id*=UTF-8''${encodeURIComponent(before).replace(/['()*!]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())}`;
          if (quoted) expect(link[0]!.endsWith(`; ${param}; type="mercure"; content-type="application/json"`), link[0]).toBe(true);
          else expect(link[0]).toMatch(/^<http:\/\/127\.0\.0\.1:\d+\/\.well-known\/mercure>; rel="mercure"$/);
        }

        const selectors: Array<[string, string]> = [
          [`topic=${pct(topic)}`, 'last-event-id'],
          [`match=${pct(topic)}`, 'mercure-last-event-id'],
        ];
        for (const [selector, cursorName] of selectors) {
          const byQuery = `GET /.well-known/mercure?${selector}&lastEventID=${pct(stored)}&last_event_id=${pct(stored)} HTTP/1.1\r\n${host()}Authorization: Bearer ${sub}\r\n`;
          const byHeader = Buffer.concat([
            Buffer.from(`GET /.well-known/mercure?${selector} HTTP/1.1\r\n${host()}Authorization: Bearer ${sub}\r\nLast-Event-ID: `),
            Buffer.from(stored, 'utf8'),
            Buffer.from('\r\n'),
          ]);
          for (const [head, kind] of [
            [Buffer.from(byQuery), 'query'],
            [byHeader, 'header'],
          ] as const) {
            // Leading and trailing spaces are not part of a header value: ids with them are refused.
            for (const nodeHttp of [false, true]) {
              const req = Buffer.concat([head, Buffer.from(nodeHttp ? 'Content-Length: 1\r\n\r\nx' : '\r\n')]);
              const what = `subscribe ${selector.slice(0, 5)} by ${kind} on ${nodeHttp ? 'node:http' : 'raw'}`;
              const s = await exchange(req, what);
              // A topic that is no valid draft-08 matcher is refused; the head is judged all the same.
              if (s.head.status === 400) {
                expectNames(s.head, PLAIN, NODE_EXTRA, what);
                continue;
              }
              expect(s.head.status, what).toBe(200);
              expectNames(s.head, [...STREAM.filter((n) => nodeHttp ? n !== 'transfer-encoding' : true), cursorName], nodeHttp ? NODE_EXTRA : [], what);
              expect(headerOf(s.head, cursorName).map(utf8Value), what).toEqual([stored]);
              checked.streams++;
            }
          }
        }
      }),
      { numRuns: 60 },
    );
    // The property must have reached what it judges, not only refusals.
    expect(checked.published).toBeGreaterThan(10);
    expect(checked.streams).toBeGreaterThan(40);
    expect(checked.api).toBeGreaterThan(5);
  }, 120_000);

  it('error answers (400, 401) and CORS with random Host, X-Forwarded-Host, Origin, Last-Event-ID and token values', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ host: sometimes, forwarded: sometimes, origin: sometimes, lastEventId: sometimes, token: sometimes }),
        fc.boolean(),
        async (h, nodeHttp) => {
          const lines: Buffer[] = [Buffer.from('GET /.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fx HTTP/1.1\r\n')];
          const add = (name: string, v: string | null): void => {
            if (v !== null) lines.push(Buffer.concat([Buffer.from(`${name}: `), Buffer.from(v, 'utf8'), Buffer.from('\r\n')]));
          };
          add('Host', h.host ?? `127.0.0.1:${port}`);
          add('X-Forwarded-Host', h.forwarded);
          add('Origin', h.origin);
          add('Last-Event-ID', h.lastEventId);
          add('Authorization', h.token === null ? null : `Bearer ${h.token}`);
          lines.push(Buffer.from(nodeHttp ? 'Content-Length: 1\r\n\r\nx' : '\r\n'));
          const request = Buffer.concat(lines);
          const what = JSON.stringify({ ...h, nodeHttp });
          const res = await exchange(request, what);
          const { status } = res.head;
          expect([400, 401], what).toContain(status);
          if (status === 400 && res.head.headers.length <= 2) {
            // node:http's own refusal of a malformed request: `Connection: close` and nothing else.
            expectNames(res.head, ['connection'], ['content-length', 'date'], what);
            return;
          }
          // The hub's answer: a header value it echoes is exactly what was sent.
          checked.hubErrors++;
          const cors = headerOf(res.head, 'access-control-allow-origin');
          // A malformed host is refused before anything else, security headers included.
          const plain = status === 401 ? PLAIN : PLAIN.filter((n) => !SECURITY.includes(n));
          expectNames(res.head, status === 401 ? [...plain, 'www-authenticate'] : plain, [...(cors.length ? CORS : []), ...(status === 400 ? SECURITY : []), ...NODE_EXTRA], what);
          if (cors.length) expect(utf8Value(cors[0]!), what).toBe(h.origin);
          if (status === 401) {
            const challenge = headerOf(res.head, 'www-authenticate')[0]!;
            expect(challenge, what).toMatch(/^[\x20-\x7e]*$/);
            const m = /^Bearer resource_metadata="http:\/\/([^"]*)\/\.well-known\/oauth-protected-resource\/\.well-known\/mercure"/.exec(challenge);
            expect(m, `${what}: ${challenge}`).not.toBeNull();
            const forwarded = h.forwarded?.split(',')[0]?.trim();
            expect(m![1], what).toBe(forwarded || (h.host ?? `127.0.0.1:${port}`).trim());
          } else {
            expect(res.rest.toString(), what).toMatch(/^Bad Request: malformed (Host|X-Forwarded-Host) header/);
          }
          await sleep(0);
        },
      ),
      {
        numRuns: 300,
        // Found by CI: a `%` in the host came back as `%25` in the challenge's URL.
        examples: [
          [{ host: 'a%', forwarded: null, origin: null, lastEventId: null, token: null }, false],
          [{ host: 'a%41', forwarded: null, origin: null, lastEventId: null, token: 'x' }, true],
        ],
      },
    );
    expect(checked.hubErrors).toBeGreaterThan(100);
  }, 120_000);
});
