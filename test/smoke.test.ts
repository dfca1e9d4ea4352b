import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyToken, publish, SseClient, startHub, subscribeUrl, type TestHub } from './helpers.js';

let h: TestHub;
beforeAll(async () => {
  h = await startHub({ anonymous: true });
});
afterAll(() => h.close());

describe('smoke', () => {
  it('delivers a published update to a subscriber', async () => {
    const sub = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/books/1']]));
    expect(sub.status).toBe(200);
    const token = await legacyToken({ publish: ['*'] });
    const res = await publish(h.hubUrl, { topic: 'https://example.com/books/1', data: 'hello\nworld', id: 'a', type: 'x', retry: '3' }, token);
    expect(res.status).toBe(200);
    expect(res.body).toBe('a');
    await sub.waitForEvents(1);
    expect(sub.raw).toBe(':\nevent: x\nretry: 3\nid: a\ndata: hello\ndata: world\n\n');
    sub.close();
  });
});
