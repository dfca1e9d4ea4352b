import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subscriptionTopic } from '../src/core/subscription.js';
import { accessToken, legacyToken, SseClient, sleep, startHub, SUB_KEY, subscribeUrl, type TestHub } from './helpers.js';

let h: TestHub;
beforeAll(async () => {
  h = await startHub({ anonymous: true, subscriptions: true });
});
afterAll(() => h.close());

describe('subscriptions API and events', () => {
  it('publishes draft-07 subscription events (JSON-LD) to entitled subscribers', async () => {
    const t = await legacyToken({ subscribe: ['/.well-known/mercure/subscriptions{/topic}{/subscriber}'], payload: { user: 'admin' } }, SUB_KEY);
    const watcher = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', '/.well-known/mercure/subscriptions{/topic}{/subscriber}']]), { headers: { Authorization: `Bearer ${t}` } });
    const anonWatcher = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', '/.well-known/mercure/subscriptions{/topic}{/subscriber}']]));
    // the watchers' own subscription events come first
    await watcher.waitForEvents(2);
    const about = (topic: string) =>
      watcher.events.map((e) => ({ e, doc: JSON.parse(e.data) as Record<string, unknown> })).filter((x) => x.doc.topic === topic);
    const user = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/a?b=c']]));
    await watcher.until(() => about('https://example.com/a?b=c').length === 1);
    const { e, doc } = about('https://example.com/a?b=c')[0]!;
    expect(doc).toMatchObject({ '@context': 'https://mercure.rocks/', type: 'Subscription', topic: 'https://example.com/a?b=c', active: true });
    expect(doc.id).toMatch(/^\/\.well-known\/mercure\/subscriptions\/https%3A%2F%2Fexample\.com%2Fa%3Fb%3Dc\/urn%3Auuid%3A/);
    expect(e.event).toBeUndefined();
    user.close();
    await watcher.until(() => about('https://example.com/a?b=c').length === 2);
    expect(about('https://example.com/a?b=c')[1]!.doc).toMatchObject({ active: false });
    await sleep(50);
    expect(anonWatcher.events).toEqual([]);
    watcher.close();
    anonWatcher.close();
  });

  it('publishes draft-08 subscription events with event type mercure and the payload', async () => {
    const t = await accessToken([
      { actions: ['subscribe'], topics: [{ match: '/.well-known/mercure/subscriptions/*', match_type: 'urlpattern' }] },
      { actions: ['subscribe'], topics: [{ match: '*' }], payload: { tenant: 't1' } },
    ], { aud: h.hubUrl, key: SUB_KEY });
    const watcher = await SseClient.connect(subscribeUrl(h.hubUrl, [['match_urlpattern', '/.well-known/mercure/subscriptions/*']]), { headers: { Authorization: `Bearer ${t}` } });
    await watcher.waitForEvents(1);
    const other = await SseClient.connect(subscribeUrl(h.hubUrl, [['match_urlpattern', 'https://example.com/:x']]), { headers: { Authorization: `Bearer ${t}` } });
    await watcher.waitForEvents(2);
    const ev = watcher.events[1]!;
    expect(ev.event).toBe('mercure');
    const doc = JSON.parse(ev.data) as Record<string, unknown>;
    expect(doc).toMatchObject({ type: 'subscription', match_type: 'urlpattern', match: 'https://example.com/:x', active: true, payload: { tenant: 't1' } });
    expect(doc.id).toMatch(/^\/\.well-known\/mercure\/subscriptions\/urlpattern\/https%3A%2F%2Fexample\.com%2F%3Ax\/urn%3Auuid%3A/);
    other.close();
    watcher.close();
  });

  it('escapes draft-07 subscription topics like Go url.QueryEscape and draft-08 ones once', () => {
    const rec = { subscriber: 'urn:uuid:x', match: "https://example.com/a b!'()*~" };
    expect(subscriptionTopic({ ...rec, kind: 'selector' })).toBe("/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fa+b%21%27%28%29%2A~/urn%3Auuid%3Ax");
    expect(subscriptionTopic({ ...rec, kind: 'exact' })).toBe("/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fa%20b%21%27%28%29%2A~/urn%3Auuid%3Ax");
    expect(subscriptionTopic({ subscriber: 's', match: '%41', kind: 'urlpattern' })).toBe('/.well-known/mercure/subscriptions/urlpattern/%2541/s');
  });

  it('lists subscriptions (draft-07 shape) with ETag and 304', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['topic', 'https://example.com/listed']]));
    await s.until(() => s.raw.length > 0);
    const t = await legacyToken({ subscribe: ['/.well-known/mercure/subscriptions{/topic}{/subscriber}'] }, SUB_KEY);
    const res = await fetch(`${h.hubUrl}/subscriptions`, { headers: { Authorization: `Bearer ${t}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/ld+json');
    const body = (await res.json()) as { type: string; lastEventID: string; subscriptions: Array<{ topic: string }> };
    expect(body.type).toBe('Subscriptions');
    expect(body.subscriptions.some((x) => x.topic === 'https://example.com/listed')).toBe(true);
    const etag = res.headers.get('etag')!;
    expect(etag).toBe(body.lastEventID);
    const again = await fetch(`${h.hubUrl}/subscriptions`, { headers: { Authorization: `Bearer ${t}`, 'If-None-Match': etag } });
    expect(again.status).toBe(304);
    const byTopic = await fetch(`${h.hubUrl}/subscriptions/${encodeURIComponent('https://example.com/listed')}`, { headers: { Authorization: `Bearer ${t}` } });
    const one = (await byTopic.json()) as { subscriptions: Array<{ subscriber: string }> };
    expect(one.subscriptions).toHaveLength(1);
    const single = await fetch(`${h.hubUrl}/subscriptions/${encodeURIComponent('https://example.com/listed')}/${encodeURIComponent(one.subscriptions[0]!.subscriber)}`, { headers: { Authorization: `Bearer ${t}` } });
    expect(single.status).toBe(200);
    expect(await single.json()).toMatchObject({ type: 'Subscription', active: true });
    const missing = await fetch(`${h.hubUrl}/subscriptions/${encodeURIComponent('https://example.com/listed')}/urn%3Auuid%3Anope`, { headers: { Authorization: `Bearer ${t}` } });
    expect(missing.status).toBe(404);
    s.close();
  });

  it('lists subscriptions (draft-08 shape) with the cursor in a Link header', async () => {
    const s = await SseClient.connect(subscribeUrl(h.hubUrl, [['match', 'https://example.com/listed8']]));
    await s.until(() => s.raw.length > 0);
    const t = await accessToken([{ actions: ['subscribe'], topics: [{ match: '/.well-known/mercure/subscriptions/*', match_type: 'urlpattern' }, { match: '/.well-known/mercure/subscriptions' }] }], { aud: h.hubUrl, key: SUB_KEY });
    const res = await fetch(`${h.hubUrl}/subscriptions/exact/${encodeURIComponent('https://example.com/listed8')}`, { headers: { Authorization: `Bearer ${t}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('link')).toMatch(/rel="mercure"; last-event-id="[^"]+"; type="mercure"; content-type="application\/json"/);
    expect(res.headers.get('etag')).toMatch(/^".+"$/);
    const body = (await res.json()) as { type: string; subscriptions: Array<{ match: string; match_type: string }> };
    expect(body.type).toBe('subscriptions');
    expect(body.subscriptions).toEqual([expect.objectContaining({ match: 'https://example.com/listed8', match_type: 'exact' })]);
    const all = await fetch(`${h.hubUrl}/subscriptions`, { headers: { Authorization: `Bearer ${t}` } });
    expect(all.status).toBe(200);
    s.close();
  });

  it('authorizes the API by request URL: 401 for draft-07, 403 for draft-08 tokens', async () => {
    const none = await fetch(`${h.hubUrl}/subscriptions`);
    expect(none.status).toBe(401);
    const t7 = await legacyToken({ subscribe: ['https://example.com/{x}'] }, SUB_KEY);
    expect((await fetch(`${h.hubUrl}/subscriptions`, { headers: { Authorization: `Bearer ${t7}` } })).status).toBe(401);
    const t8 = await accessToken([{ actions: ['subscribe'], topics: [{ match: 'https://example.com/x' }] }], { aud: h.hubUrl, key: SUB_KEY });
    const r = await fetch(`${h.hubUrl}/subscriptions/exact/x`, { headers: { Authorization: `Bearer ${t8}` } });
    expect(r.status).toBe(403);
    expect(r.headers.get('www-authenticate')).toMatch(/insufficient_scope/);
  });
});
