/**
 * quicksilver/turbo: `<turbo-stream>` rendering and escaping, the `<turbo-stream-source>`
 * element, publishing; then in Chromium with the real Turbo 8: streams published on a real hub
 * change the page, and `defineTurboStreamSource` makes `with-credentials` carry the cookie to a
 * hub on another origin for private streams.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setAuthorizationCookie } from '../src/client/discovery.js';
import { Publisher } from '../src/client/publisher.js';
import { RecordingPublisher } from '../src/client/testing.js';
import { createPublisherToken, createSubscriberToken } from '../src/client/token.js';
import {
  escapeHtml,
  publishTurboStream,
  TURBO_STREAM_ACTIONS,
  turboStream,
  turboStreamSource,
  turboStreamSourceUrl,
} from '../src/integrations/turbo.js';
import { describeBrowser, launchBrowser } from './browser.js';
import { KEY, startHub, SUB_KEY, type TestHub } from './helpers.js';

describe('turboStream()', () => {
  it('renders every Turbo 8 action', () => {
    expect(TURBO_STREAM_ACTIONS).toEqual(['append', 'prepend', 'replace', 'update', 'remove', 'before', 'after', 'refresh']);
    for (const action of ['append', 'prepend', 'replace', 'update', 'before', 'after'] as const) {
      expect(turboStream(action, 'reviews', '<li>hi</li>')).toBe(`<turbo-stream action="${action}" target="reviews"><template><li>hi</li></template></turbo-stream>`);
    }
    expect(turboStream('remove', 'review_1')).toBe('<turbo-stream action="remove" target="review_1"></turbo-stream>');
    expect(turboStream('refresh', null)).toBe('<turbo-stream action="refresh"></turbo-stream>');
    expect(turboStream('refresh', undefined, undefined, { attributes: { 'request-id': 'abc', method: 'morph', scroll: 'preserve' } })).toBe(
      '<turbo-stream action="refresh" request-id="abc" method="morph" scroll="preserve"></turbo-stream>',
    );
    expect(turboStream('update', 'stats', '')).toBe('<turbo-stream action="update" target="stats"><template></template></turbo-stream>');
    expect(turboStream('replace', null, '<p>x</p>', { targets: '.card > p' })).toBe(
      '<turbo-stream action="replace" targets=".card &gt; p"><template><p>x</p></template></turbo-stream>',
    );
    expect(turboStream('custom_log', 'x', 'y')).toBe('<turbo-stream action="custom_log" target="x"><template>y</template></turbo-stream>');
  });

  it('escapes attributes (never the content, which is markup)', () => {
    expect(turboStream('append', '"><script>alert(1)</script>', '<b>ok</b>', { attributes: { 'data-who': `O'Brien & "co"`, hidden: true, skipped: false, none: undefined, n: 3 } })).toBe(
      '<turbo-stream action="append" target="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" data-who="O&#39;Brien &amp; &quot;co&quot;" hidden n="3"><template><b>ok</b></template></turbo-stream>',
    );
    expect(escapeHtml(`<img src=x onerror="alert('x')"> & co`)).toBe('&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt; &amp; co');
    expect(escapeHtml(null)).toBe('');
    expect(escapeHtml(42)).toBe('42');
  });

  it('refuses what Turbo could not apply', () => {
    expect(() => turboStream('append', null, 'x')).toThrow(/needs a target/);
    expect(() => turboStream('append', 'a', 'x', { targets: '.b' })).toThrow(/not both/);
    expect(() => turboStream('remove', 'a', '<p>x</p>')).toThrow(/takes no content/);
    expect(() => turboStream('ap pend', 'a', 'x')).toThrow(/Invalid Turbo Stream action/);
    expect(() => turboStream('append', 'a', 'x', { attributes: { 'on"x': 'y' } })).toThrow(/Invalid attribute name/);
    expect(() => turboStream('append', 'a', 'x', { attributes: { target: 'b' } })).toThrow(/set by the function/);
  });
});

describe('turboStreamSource()', () => {
  it('renders the element with the subscription URL, escaped', () => {
    expect(turboStreamSource('https://hub.example.com/.well-known/mercure', ['https://example.com/products/1', 'https://example.com/books/{id}'])).toBe(
      '<turbo-stream-source src="https://hub.example.com/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fproducts%2F1&amp;topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D"></turbo-stream-source>',
    );
    expect(turboStreamSource('/.well-known/mercure', 'urn:x', { withCredentials: true, lastEventId: 'urn:uuid:1', attributes: { id: 'live' } })).toBe(
      '<turbo-stream-source src="/.well-known/mercure?topic=urn%3Ax&amp;lastEventID=urn%3Auuid%3A1" with-credentials id="live"></turbo-stream-source>',
    );
    expect(turboStreamSourceUrl('https://hub.example.com/.well-known/mercure?jwt=a#frag', 'x')).toBe('https://hub.example.com/.well-known/mercure?jwt=a&topic=x');
    expect(() => turboStreamSource('/hub', [])).toThrow(/at least one/);
    expect(() => turboStreamSource('', 'x')).toThrow(/empty/);
    expect(() => turboStreamSource('/hub', 'x', { attributes: { src: 'y' } })).toThrow(/set by the function/);
  });
});

describe('publishTurboStream()', () => {
  it('publishes the streams, joined, on the topics', async () => {
    const p = new RecordingPublisher();
    const streams = [turboStream('append', 'reviews', '<li>a</li>'), turboStream('remove', 'empty')];
    await publishTurboStream(p, 'https://example.com/products/1', streams);
    expect(p.last!.topics).toEqual(['https://example.com/products/1']);
    expect(p.last!.data).toBe(streams.join('\n'));
    expect(p.last!.private).toBe(false);
    await publishTurboStream(p, ['https://example.com/users/1', 'https://example.com/alt'], streams[0]!, { private: true, id: 'urn:uuid:t' });
    expect(p.last).toMatchObject({ topics: ['https://example.com/users/1', 'https://example.com/alt'], private: true, id: 'urn:uuid:t' });
    await expect(publishTurboStream(p, 'x', '<p>not a stream</p>')).rejects.toThrow(/no <turbo-stream>/);
    expect(p.updates).toHaveLength(2);
  });
});

const turboJs = readFileSync(join(dirname(createRequire(import.meta.url).resolve('@hotwired/turbo')), 'turbo.es2017-esm.js'));
const ourTurboJs = join(import.meta.dirname, '../dist/integrations/turbo.js');

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function close(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

describeBrowser('Turbo Streams over a real hub, in Chromium', () => {
  let browser: Browser;
  let h: TestHub;
  let app: http.Server;
  let appUrl: string;
  let publisher: Publisher;
  const topic = 'https://example.com/products/1';
  const secret = 'https://example.com/users/alice/feed';

  beforeAll(async () => {
    browser = await launchBrowser();
    // The hub on its own origin; the app's origin may open credentialed streams.
    h = await startHub({ anonymous: true, corsOrigins: ['*'] });
    publisher = new Publisher({ hubUrl: h.hubUrl, token: await createPublisherToken({ key: KEY, publish: ['*'] }) });
    app = http.createServer(async (req, res) => {
      if (req.url === '/turbo.js' || req.url === '/qs/turbo.js') {
        res.setHeader('Content-Type', 'text/javascript');
        res.end(req.url === '/turbo.js' ? turboJs : readFileSync(ourTurboJs));
        return;
      }
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      if (req.url === '/public') {
        res.end(`<!doctype html><meta charset="utf-8"><script type="module" src="/turbo.js"></script>
          ${turboStreamSource(h.hubUrl, [topic])}
          <ul id="list"><li id="item_1">one</li></ul><div id="stats">1 item</div><p id="placeholder">empty</p>`);
        return;
      }
      if (req.url === '/private') {
        setAuthorizationCookie(res, await createSubscriberToken({ key: SUB_KEY, subscribe: [secret] }), { hubUrl: h.hubUrl });
        res.end(`<!doctype html><meta charset="utf-8">
          <script type="module">
            import { defineTurboStreamSource } from '/qs/turbo.js';
            window.__defined = defineTurboStreamSource();
            await import('/turbo.js');
          </script>
          ${turboStreamSource(h.hubUrl, [secret], { withCredentials: true })}
          <div id="secret">nothing yet</div>`);
        return;
      }
      if (req.url === '/private-stock') {
        // Turbo's own element: with-credentials is ignored, the cookie stays home.
        setAuthorizationCookie(res, await createSubscriberToken({ key: SUB_KEY, subscribe: [secret] }), { hubUrl: h.hubUrl });
        res.end(`<!doctype html><meta charset="utf-8"><script type="module" src="/turbo.js"></script>
          ${turboStreamSource(h.hubUrl, [secret], { withCredentials: true })}
          <div id="secret">nothing yet</div>`);
        return;
      }
      res.statusCode = 404;
      res.end();
    });
    appUrl = await listen(app);
  });
  afterAll(async () => {
    await browser?.close();
    if (app) await close(app);
    await h?.close();
  });

  /** Waits until the page's <turbo-stream-source> has its EventSource open. */
  async function streamOpen(page: import('playwright-core').Page): Promise<void> {
    await page.waitForFunction(() => {
      const el = document.querySelector('turbo-stream-source') as (HTMLElement & { streamSource?: EventSource }) | null;
      return el?.streamSource?.readyState === 1;
    }, undefined, { timeout: 10_000 });
  }

  it('streams published on the topic append, update and remove elements of the page', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${appUrl}/public`);
      await streamOpen(page);
      await publishTurboStream(publisher, topic, [
        turboStream('append', 'list', `<li id="item_2">${escapeHtml('<two>')}</li>`),
        turboStream('update', 'stats', '2 items'),
        turboStream('remove', 'placeholder'),
      ]);
      await page.waitForFunction(() => document.querySelectorAll('#list li').length === 2, undefined, { timeout: 5000 });
      expect(await page.locator('#list li').allTextContents()).toEqual(['one', '<two>']);
      expect(await page.locator('#stats').textContent()).toBe('2 items');
      expect(await page.locator('#placeholder').count()).toBe(0);
      // Appending an element whose id is already there replaces it (streams are idempotent).
      await publishTurboStream(publisher, topic, turboStream('append', 'list', '<li id="item_2">two, edited</li>'));
      await page.waitForFunction(() => document.getElementById('item_2')?.textContent === 'two, edited', undefined, { timeout: 5000 });
      expect(await page.locator('#list li').count()).toBe(2);
    } finally {
      await page.close();
    }
  });

  it('with-credentials sends the HttpOnly cookie to the hub on another origin: private streams arrive', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${appUrl}/private`);
      await streamOpen(page);
      expect(await page.evaluate(() => (window as unknown as { __defined: boolean }).__defined)).toBe(true);
      expect(await page.evaluate(() => (document.querySelector('turbo-stream-source') as HTMLElement & { streamSource: EventSource }).streamSource.withCredentials)).toBe(true);
      expect(await page.evaluate(() => document.cookie)).toBe('');
      await publishTurboStream(publisher, secret, turboStream('update', 'secret', '<b>for alice only</b>'), { private: true });
      await page.waitForFunction(() => document.getElementById('secret')?.textContent === 'for alice only', undefined, { timeout: 5000 });
    } finally {
      await context.close();
    }
  });

  it('without defineTurboStreamSource, Turbo\'s own element sends no cookie cross-origin: only public streams arrive', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${appUrl}/private-stock`);
      await streamOpen(page);
      expect(await page.evaluate(() => (document.querySelector('turbo-stream-source') as HTMLElement & { streamSource: EventSource }).streamSource.withCredentials)).toBe(false);
      await publishTurboStream(publisher, secret, turboStream('append', 'secret', '<i>private</i>'), { private: true });
      await publishTurboStream(publisher, secret, turboStream('append', 'secret', '<i>public</i>'));
      // In order: once the public one is there, the private one would have been too.
      await page.waitForFunction(() => document.querySelectorAll('#secret i').length > 0, undefined, { timeout: 5000 });
      expect(await page.locator('#secret i').allTextContents()).toEqual(['public']);
    } finally {
      await context.close();
    }
  });
});
