import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/observability/logger.js';
import { KEY, legacyToken, publish, SseClient, sleep, startHub, subscribeUrl } from './helpers.js';

describe('structured logs', () => {
  it('never print tokens, whatever their source or validity', async () => {
    let out = '';
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        out += chunk.toString();
        cb();
      },
    });
    const h = await startHub({ anonymous: true, logger: createLogger('trace', sink) });
    const good = await legacyToken({ publish: ['*'], subscribe: ['*'] });
    const bad = await legacyToken({ publish: ['*'] }, 'wrong-key-wrong-key-wrong-key-wrong!');
    await publish(h.hubUrl, { topic: 'log', data: 'x' }, good);
    await publish(h.hubUrl, { topic: 'log', data: 'x' }, bad);
    await fetch(`${h.hubUrl}?authorization=${bad}`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'topic=a' });
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'log'], ['authorization', good]]));
    await s.until(() => s.raw.length > 0);
    s.close();
    await fetch(subscribeUrl(h.hubUrl, [['topic', 'log']]), { headers: { Cookie: `mercureAuthorization=${bad}` } });
    await sleep(100);
    await h.close();
    expect(out.length).toBeGreaterThan(0);
    expect(out).toMatch(/token rejected/);
    for (const t of [good, bad]) {
      expect(out).not.toContain(t);
      // not even the signature part alone
      expect(out).not.toContain(t.split('.')[2]!);
    }
    expect(out).not.toContain(KEY);
  });
});
