import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { legacyToken, publish, SseClient, sleep, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';
import { MemoryTransport } from '../src/transports/memory.js';

let h: TestHub;
let pub: string;
beforeAll(async () => {
  h = await startHub({ anonymous: true, transport: new MemoryTransport({ size: 10_000 }) });
  pub = await legacyToken({ publish: ['*'] });
});
afterAll(() => h.close());

describe('history and reconnection', () => {
  it('replays after Last-Event-ID and echoes the cursor (draft-07 header)', async () => {
    for (const id of ['r1', 'r2', 'r3']) await publish(h.hubUrl, { topic: 'replay', id, data: id }, pub);
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'replay']]), { headers: { 'Last-Event-ID': 'r1' } });
    expect(s.headers['last-event-id']).toBe('r1');
    await s.waitForEvents(2);
    expect(s.events.map((e) => e.id)).toEqual(['r2', 'r3']);
    s.close();
  });

  it('accepts lastEventID (draft-07) and last_event_id (draft-08) query parameters, header first', async () => {
    const a = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'replay'], ['lastEventID', 'r2']]));
    expect(a.headers['last-event-id']).toBe('r2');
    await a.waitForEvents(1);
    expect(a.events.map((e) => e.id)).toEqual(['r3']);
    const b = await SseClient.connect(subscribeUrl(h.hubUrl, [['match', 'replay'], ['last_event_id', 'r1']]));
    expect(b.headers['mercure-last-event-id']).toBe('r1');
    await b.waitForEvents(2);
    const c = await SseClient.connect(subscribeUrl(h.hubUrl, [['match', 'replay'], ['last_event_id', 'r1']]), { headers: { 'Last-Event-ID': 'r2' } });
    expect(c.headers['mercure-last-event-id']).toBe('r2');
    for (const s of [a, b, c]) s.close();
  });

  it('replays everything with earliest and answers earliest for unknown ids', async () => {
    const e = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'replay']]), { headers: { 'Last-Event-ID': 'earliest' } });
    expect(e.headers['last-event-id']).toBe('earliest');
    await e.waitForEvents(3);
    expect(e.events.map((x) => x.id)).toEqual(['r1', 'r2', 'r3']);
    const u = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'replay']]), { headers: { 'Last-Event-ID': 'no-such-id' } });
    expect(u.headers['last-event-id']).toBe('earliest');
    await sleep(100);
    expect(u.events).toEqual([]);
    e.close();
    u.close();
  });

  it('finds non-ASCII ids sent by browsers as UTF-8 header bytes', async () => {
    await publish(h.hubUrl, { topic: 'utf', id: 'urn:ïd:é1', data: '1' }, pub);
    await publish(h.hubUrl, { topic: 'utf', id: 'utf-2', data: '2' }, pub);
    // What a browser puts on the wire: the id's UTF-8 bytes, which Node reads as latin1.
    const raw = Buffer.from('urn:ïd:é1', 'utf8').toString('latin1');
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'utf']]), { headers: { 'Last-Event-ID': raw } });
    await s.waitForEvents(1);
    expect(s.events.map((e) => e.id)).toEqual(['utf-2']);
    s.close();
  });

  it('never replays private updates to a token that cannot read them, nor reveals their ids', async () => {
    await publish(h.hubUrl, [['topic', 'priv'], ['id', 'p-public-1'], ['data', 'a']], pub);
    await publish(h.hubUrl, [['topic', 'priv'], ['id', 'p-secret'], ['private', 'on'], ['data', 'b']], pub);
    await publish(h.hubUrl, [['topic', 'priv'], ['id', 'p-public-2'], ['data', 'c']], pub);
    const anon = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'priv']]), { headers: { 'Last-Event-ID': 'p-public-1' } });
    await anon.waitForEvents(1);
    await sleep(100);
    expect(anon.events.map((e) => e.id)).toEqual(['p-public-2']);
    const unknown = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'priv']]), { headers: { 'Last-Event-ID': 'gone' } });
    expect(unknown.headers['last-event-id']).toBe('earliest');
    const t = await legacyToken({ subscribe: ['priv'] }, SUB_KEY);
    const entitled = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'priv']]), { headers: { 'Last-Event-ID': 'p-public-1', Authorization: `Bearer ${t}` } });
    await entitled.waitForEvents(2);
    expect(entitled.events.map((e) => e.id)).toEqual(['p-secret', 'p-public-2']);
    for (const s of [anon, unknown, entitled]) s.close();
  });

  it('loses and duplicates nothing when updates are published during the replay', async () => {
    const topic = 'storm';
    const total = 400;
    for (let i = 0; i < 200; i++) await publish(h.hubUrl, { topic, id: `s-${i}`, data: String(i) }, pub);
    // Keep publishing while subscribers reconnect from the middle of the history.
    const publishing = (async () => {
      for (let i = 200; i < total; i++) await publish(h.hubUrl, { topic, id: `s-${i}`, data: String(i) }, pub);
    })();
    const clients: SseClient[] = [];
    for (let k = 0; k < 20; k++) {
      clients.push(await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', topic]]), { headers: { 'Last-Event-ID': `s-${k * 5}` } }));
      await sleep(2);
    }
    await publishing;
    for (let k = 0; k < clients.length; k++) {
      const c = clients[k]!;
      const expected = Array.from({ length: total - (k * 5 + 1) }, (_, i) => `s-${k * 5 + 1 + i}`);
      await c.waitForEvents(expected.length, 10_000);
      await sleep(20);
      expect(c.events.map((e) => e.id)).toEqual(expected);
      c.close();
    }
  });
});

describe('replay against a store that shows updates before delivering them', () => {
  it('does not send an update twice when the replay already read it', async () => {
    // LMDB, for one, makes a commit visible to readers before the transport delivers it.
    class LaggingTransport extends MemoryTransport {
      override async start(deliver: Parameters<MemoryTransport['start']>[0]): Promise<void> {
        await super.start((u) => setTimeout(() => deliver(u), 150));
      }
    }
    const lag = await startHub({ anonymous: true, transport: new LaggingTransport({ size: 100 }) });
    const token = await legacyToken({ publish: ['*'] });
    await publish(lag.hubUrl, { topic: 'lag', id: 'a' }, token);
    await sleep(200);
    await publish(lag.hubUrl, { topic: 'lag', id: 'b' }, token);
    // `b` is stored but not yet delivered: the replay reads it.
    const s = await SseClient.connect(subscribeUrl(lag.hubUrl, [['topic', 'lag']]), { headers: { 'Last-Event-ID': 'a' } });
    await s.waitForEvents(1);
    await publish(lag.hubUrl, { topic: 'lag', id: 'c' }, token);
    await s.waitForEvents(2);
    await sleep(300);
    expect(s.events.map((e) => e.id)).toEqual(['b', 'c']);
    s.close();
    await lag.close();
  });
});
