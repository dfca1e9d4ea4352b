/**
 * Publishes answered straight from the socket (src/http/raw-front.ts): keep-alive, pipelining,
 * bodies split across segments, and the hand-over to node:http of everything else, at a request
 * boundary, with nothing lost. A property test writes a run of publishes cut at random points.
 */
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawFrontCounts } from '../src/http/raw-front.js';
import { legacyToken, sleep, SseClient, startHub, subscribeUrl, type TestHub } from './helpers.js';

let hub: TestHub;
let token: string;
let port: number;

beforeAll(async () => {
  hub = await startHub({ anonymous: true });
  port = Number(new URL(hub.url).port);
  token = await legacyToken({ publish: ['*'] });
});
afterAll(() => hub.close());

function post(body: string, extra = ''): string {
  return `POST /.well-known/mercure HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A connection that reads a sequence of Content-Length responses. */
class Conn {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  readonly answers: Answer[] = [];
  closed = false;
  constructor() {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
    });
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('error', () => undefined);
  }
  private parse(): void {
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = this.buf.toString('latin1', 0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
      const len = Number(headers['content-length'] ?? 0);
      if (this.buf.length < end + 4 + len) return;
      this.answers.push({ status: Number(lines[0]!.split(' ')[1]), headers, body: this.buf.toString('utf8', end + 4, end + 4 + len) });
      this.buf = this.buf.subarray(end + 4 + len);
    }
  }
  async waitAnswers(n: number, ms = 5000): Promise<Answer[]> {
    const deadline = Date.now() + ms;
    while (this.answers.length < n && Date.now() < deadline) await sleep(5);
    return this.answers;
  }
  async waitClosed(ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) await sleep(10);
    return this.closed;
  }
}

describe('raw publish path', () => {
  it('answers keep-alive publishes on one connection, each stored and delivered', async () => {
    const topic = 'https://example.com/raw/keepalive';
    const sub = await SseClient.connect(subscribeUrl(hub.hubUrl, [['topic', topic]]));
    await sleep(50);
    const before = rawFrontCounts.publishes;
    const c = new Conn();
    for (let i = 0; i < 5; i++) {
      c.socket.write(post(`topic=${encodeURIComponent(topic)}&id=ka-${i}&data=${i}`));
      await c.waitAnswers(i + 1);
    }
    expect(c.answers.map((a) => [a.status, a.body, a.headers['connection']])).toEqual(
      [0, 1, 2, 3, 4].map((i) => [200, `ka-${i}`, 'keep-alive']),
    );
    expect(rawFrontCounts.publishes - before).toBe(5);
    await sub.waitForEvents(5);
    expect(sub.events.map((e) => e.id)).toEqual(['ka-0', 'ka-1', 'ka-2', 'ka-3', 'ka-4']);
    sub.close();
    c.socket.destroy();
  });

  it('answers pipelined publishes in order', async () => {
    const c = new Conn();
    c.socket.write([0, 1, 2].map((i) => post(`topic=https://example.com/raw/pipe&id=pipe-${i}`)).join(''));
    const answers = await c.waitAnswers(3);
    expect(answers.map((a) => a.body)).toEqual(['pipe-0', 'pipe-1', 'pipe-2']);
    c.socket.destroy();
  });

  it('closes after an answer when the client asked, and after an error that leaves the body unread', async () => {
    const c = new Conn();
    c.socket.write(post('topic=https://example.com/raw/close&id=close-1', 'Connection: close\r\n'));
    const [a] = await c.waitAnswers(1);
    expect(a).toMatchObject({ status: 200, body: 'close-1', headers: { connection: 'close' } });
    expect(await c.waitClosed()).toBe(true);

    const d = new Conn();
    d.socket.write(post('topic=https://example.com/raw/close').replace(`Bearer ${token}`, 'Bearer nope'));
    const [b] = await d.waitAnswers(1);
    expect(b!.status).toBe(401);
    expect(b!.headers['connection']).toBe('close');
    expect(await d.waitClosed()).toBe(true);
  });

  it('hands the connection to node:http at a request boundary, losing nothing', async () => {
    const c = new Conn();
    const handed = rawFrontCounts.handedOver;
    c.socket.write(post('topic=https://example.com/raw/mix&id=mix-1') + 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' + post('topic=https://example.com/raw/mix&id=mix-2'));
    const answers = await c.waitAnswers(3);
    expect(answers.map((a) => [a.status, a.body.trim()])).toEqual([[200, 'mix-1'], [200, 'ok'], [200, 'mix-2']]);
    expect(rawFrontCounts.handedOver - handed).toBe(1);
    c.socket.destroy();
  });

  it('leaves a chunked body, HTTP/1.0, Expect and a trickled body to node:http, answered alike', async () => {
    const chunked = new Conn();
    const body = 'topic=https://example.com/raw/te&id=te-1';
    chunked.socket.write(`POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
    expect((await chunked.waitAnswers(1))[0]).toMatchObject({ status: 200, body: 'te-1' });

    const old = new Conn();
    old.socket.write(post('topic=https://example.com/raw/10&id=h10-1').replace('HTTP/1.1', 'HTTP/1.0'));
    expect((await old.waitAnswers(1))[0]).toMatchObject({ status: 200, body: 'h10-1' });

    const slow = new Conn();
    const whole = post('topic=https://example.com/raw/slow&id=slow-1&data=' + 'x'.repeat(200));
    const head = whole.indexOf('\r\n\r\n') + 4;
    const before = rawFrontCounts.handedOver;
    slow.socket.write(whole.slice(0, head));
    for (let i = head; i < whole.length; i += 50) {
      await sleep(20);
      slow.socket.write(whole.slice(i, i + 50));
    }
    expect((await slow.waitAnswers(1))[0]).toMatchObject({ status: 200, body: 'slow-1' });
    expect(rawFrontCounts.handedOver - before).toBe(1);
    for (const c of [chunked, old, slow]) c.socket.destroy();
  });

  it('leaves an HTTP/1.1 request without Host to node:http, which refuses it', async () => {
    for (const request of [post('topic=https://example.com/raw/nohost&id=nohost-1'), 'GET /.well-known/mercure?topic=x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n']) {
      const c = new Conn();
      c.socket.write(request.replace(/Host: 127\.0\.0\.1\r\n/, ''));
      expect((await c.waitAnswers(1))[0]!.status).toBe(400);
      c.socket.destroy();
    }
  });

  it('takes a body sent in the segment after its head', async () => {
    const c = new Conn();
    const whole = post('topic=https://example.com/raw/split&id=split-1');
    const head = whole.indexOf('\r\n\r\n') + 4;
    const before = rawFrontCounts.publishes;
    c.socket.write(whole.slice(0, head));
    await sleep(30);
    c.socket.write(whole.slice(head));
    expect((await c.waitAnswers(1))[0]).toMatchObject({ status: 200, body: 'split-1' });
    expect(rawFrontCounts.publishes - before).toBe(1);
    c.socket.destroy();
  });

  it('answers every publish of a run cut into segments at random points, in order', async () => {
    const topic = 'https://example.com/raw/property';
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 6 }), fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 12 }), async (n, cuts) => {
        run++;
        const ids = Array.from({ length: n }, (_, i) => `prop-${run}-${i}`);
        const bytes = Buffer.from(ids.map((id) => post(`topic=${encodeURIComponent(topic)}&id=${id}&data=${'é'.repeat(id.length)}`)).join(''));
        const c = new Conn();
        let at = 0;
        for (const cut of cuts) {
          if (at >= bytes.length) break;
          c.socket.write(bytes.subarray(at, at + cut));
          at += cut;
          await sleep(1);
        }
        if (at < bytes.length) c.socket.write(bytes.subarray(at));
        const answers = await c.waitAnswers(n);
        c.socket.destroy();
        expect(answers.map((a) => [a.status, a.body])).toEqual(ids.map((id) => [200, id]));
      }),
      { numRuns: 40 },
    );
  });

  it('closes a keep-alive connection that starts a request head and stalls', async () => {
    const slowHub = await startHub({ anonymous: true });
    try {
      const s = net.connect(Number(new URL(slowHub.url).port), '127.0.0.1');
      let closed = false;
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('close', () => (closed = true));
      s.write(post('topic=https://example.com/raw/stall&id=stall-1'));
      const deadline = Date.now() + 3000;
      while (!got.includes('stall-1') && Date.now() < deadline) await sleep(10);
      expect(got).toContain('stall-1');
      s.write('POST /.well-known/mercure HTTP/1.1\r\nHost: x\r\n');
      // headersTimeout is 10 s by default; the idle keep-alive limit (5 s) must not apply to a
      // request that started, and the head limit must: closed within 10 s and a sweep.
      const t0 = Date.now();
      while (!closed && Date.now() - t0 < 12_000) await sleep(50);
      expect(closed).toBe(true);
      expect(Date.now() - t0).toBeGreaterThan(8_000);
    } finally {
      await slowHub.close();
    }
  }, 20_000);

  it('closes an idle keep-alive connection after the keep-alive timeout', async () => {
    const c = new Conn();
    c.socket.write(post('topic=https://example.com/raw/idle&id=idle-1'));
    await c.waitAnswers(1);
    const t0 = Date.now();
    expect(await c.waitClosed(8000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThan(4_000);
  }, 12_000);
});

describe('raw publish path, stalled body', () => {
  it('hands a body that stops arriving to node:http, whose request timeout answers it', async () => {
    const h = await startHub({ anonymous: true });
    try {
      const s = net.connect(Number(new URL(h.url).port), '127.0.0.1');
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('error', () => undefined);
      const before = rawFrontCounts.handedOver;
      const whole = post('topic=https://example.com/raw/stalled&id=stalled-1');
      s.write(whole.slice(0, whole.length - 5));
      await sleep(1000);
      expect(rawFrontCounts.handedOver - before).toBe(1);
      // node:http has the request now: the rest of the body completes it.
      s.write(whole.slice(whole.length - 5));
      const deadline = Date.now() + 3000;
      while (!got.includes('stalled-1') && Date.now() < deadline) await sleep(10);
      expect(got).toMatch(/^HTTP\/1\.1 200 OK/);
      expect(got).toContain('stalled-1');
      s.destroy();
    } finally {
      await h.close();
    }
  });
});
