/**
 * The debugging UI never shows stale state, in headless Chromium against a real hub: changing a
 * setting while connected reconnects with the new credentials (checked by what the hub delivers,
 * not only by what the page says), the status, URL line and client follow the live connection,
 * topic edits are announced until applied, a 401 clears once fixed, results obtained with older
 * settings say so, and the subscriptions list reloads with the new token.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHub, serve, type QuicksilverHub } from '../src/index.js';
import { createLogger } from '../src/observability/logger.js';
import { describeBrowser, launchBrowser } from './browser.js';
import { KEY, legacyToken } from './helpers.js';

const UI = '/.well-known/mercure/ui';
const TOPIC = 'https://example.com/books/1';

describeBrowser('debugging UI: the display follows the live connection', () => {
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let hub: QuicksilverHub;
  let url: string;
  let close: () => Promise<void>;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    hub = createHub({
      publisher: { key: KEY },
      anonymous: true,
      subscriptions: true,
      demo: true,
      publishOrigins: ['*'],
      devKey: KEY,
      logger: createLogger('silent'),
    });
    const server = await serve(hub, { addr: '127.0.0.1:0', shutdownTimeout: 300 });
    url = server.url;
    close = () => server.close();
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(`${url}${UI}/`);
    await page.waitForSelector('body[data-ready="true"]');
  });
  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await close?.();
  });

  const text = (sel: string) => page.textContent(sel);
  const connected = () => expect.poll(() => text('#sub-status'), { timeout: 5000 }).toBe('Connected');
  // After a settings change the old stream stays up (and Connected) until the new one replaces it:
  // the URL line, drawn from the live connection, is what says the switch happened, so it is
  // awaited before the status (checking it right after "Connected" raced with the switch).
  /** Publishes from the page's form; returns the update id. */
  async function publishPrivate(data: string): Promise<string> {
    await page.fill('#pub-topics', TOPIC);
    await page.fill('#pub-data', data);
    await page.check('#pub-private');
    await page.click('#pub-submit');
    await expect.poll(() => text('#pub-result .title'), { timeout: 5000 }).toBe('Published (200)');
    return (await text('#pub-result .pub-id'))!.trim();
  }
  const received = () => page.locator('#events .event-data').allTextContents();
  /** Changes a textarea/input and commits it, as leaving the field does. */
  async function commit(selector: string, value: string): Promise<void> {
    await page.fill(selector, value);
    await page.dispatchEvent(selector, 'change');
  }

  it('None → header → cookie while connected: each switch reconnects with the new credentials', async () => {
    await page.click('label[for="auth-none"]');
    await page.fill('#sub-topics', TOPIC);
    await page.click('#sub-connect');
    await expect.poll(() => text('#sub-url'), { timeout: 5000 }).toMatch(/via EventSource · anonymous$/);
    await connected();
    expect(hub.hub.connected).toBe(1);

    // The case: with the old anonymous stream, this private update was "Received 0".
    await page.click('label[for="auth-header"]');
    await expect.poll(() => text('#sub-url'), { timeout: 5000 }).toMatch(/via fetch\(\) · Authorization header, development token$/);
    await connected();
    expect(await page.inputValue('#sub-client')).toBe('fetch');
    await publishPrivate('private, header');
    await expect.poll(received).toEqual(['private, header']);
    // The anonymous stream is gone, not left running next to the new one.
    expect(hub.hub.connected).toBe(1);

    await page.click('label[for="auth-cookie"]');
    await expect.poll(() => text('#sub-url'), { timeout: 5000 }).toMatch(/via EventSource · cookie mercureAuthorization, development token$/);
    await connected();
    expect(await page.inputValue('#sub-client')).toBe('auto');
    await publishPrivate('private, cookie');
    await expect.poll(received).toEqual(['private, cookie', 'private, header']);
    expect(hub.hub.connected).toBe(1);
  });

  it('a new token reconnects too: one that does not grant the topic stops the private updates', async () => {
    const devToken = await page.inputValue('#jwt');
    const other = await legacyToken({ publish: ['*'], subscribe: ['https://example.com/other'] });
    await commit('#jwt', other);
    await expect.poll(() => text('#sub-url'), { timeout: 5000 }).toContain(`cookie mercureAuthorization, token …${other.slice(-8)}`);
    await connected();
    const before = (await received()).length;
    const id = await publishPrivate('not for this token');
    // A public update published after it arrives, so the private one had its chance.
    await page.uncheck('#pub-private');
    await page.fill('#pub-data', 'public marker');
    await page.click('#pub-submit');
    await expect.poll(async () => (await received())[0]).toBe('public marker');
    expect((await received()).slice(0, 2)).toEqual(['public marker', 'private, cookie']);
    expect(await page.locator('#events .event-id', { hasText: id }).count()).toBe(0);
    expect((await received()).length).toBe(before + 1);

    // The token edited and Publish pressed at once: the press blurs the field (its change event),
    // yet the click is not lost, and the publish waits for the reconnection it causes.
    await page.fill('#pub-data', 'granted again');
    await page.check('#pub-private');
    await page.fill('#jwt', devToken);
    await page.click('#pub-submit');
    await expect.poll(() => text('#pub-result .title'), { timeout: 5000 }).toBe('Published (200)');
    await expect.poll(async () => (await received())[0]).toBe('granted again');
    expect(await text('#sub-status')).toBe('Connected');
  });

  it('a hub URL change reconnects (and shows the failure), then recovers', async () => {
    await commit('#hub-url', `${url}/not-the-hub`);
    await expect.poll(() => text('#sub-status'), { timeout: 5000 }).toBe('Error 404');
    expect(await text('#sub-url')).toContain(`GET ${url}/not-the-hub?topic=`);
    expect(await page.isVisible('#sub-error')).toBe(true);
    await commit('#hub-url', `${url}/.well-known/mercure`);
    await connected();
    expect(await page.isVisible('#sub-error')).toBe(false);
  });

  it('after a 401, fixing the token reconnects and clears the error', async () => {
    const devToken = await page.inputValue('#jwt');
    await page.click('label[for="auth-header"]');
    await connected();
    await commit('#jwt', 'not.a.token');
    await expect.poll(() => text('#sub-status'), { timeout: 5000 }).toBe('Error 401');
    expect(await text('#sub-error')).toContain('The token was refused');
    expect(await page.isEnabled('#sub-disconnect')).toBe(true);
    await commit('#jwt', devToken);
    await expect.poll(() => text('#sub-url'), { timeout: 5000 }).toContain('development token');
    await connected();
    expect(await page.isVisible('#sub-error')).toBe(false);
  });

  it('topic edits are announced until Reconnect applies them; Disconnect resets the buttons', async () => {
    expect(await text('#sub-connect')).toBe('Reconnect');
    await page.fill('#sub-topics', 'https://example.com/books/2');
    await expect.poll(() => page.isVisible('#sub-pending')).toBe(true);
    expect(await text('#sub-pending')).toContain('press Reconnect');
    // Still the live subscription's URL, not the form's.
    expect(await text('#sub-url')).toContain(encodeURIComponent(TOPIC));
    await page.click('#sub-connect');
    await connected();
    expect(await page.isVisible('#sub-pending')).toBe(false);
    expect(await text('#sub-url')).toContain(encodeURIComponent('https://example.com/books/2'));

    await page.click('#sub-disconnect');
    expect(await text('#sub-status')).toBe('Disconnected');
    expect(await page.isEnabled('#sub-disconnect')).toBe(false);
    expect(await text('#sub-connect')).toBe('Connect');
    expect(await page.isVisible('#sub-url')).toBe(false);
    await expect.poll(() => hub.hub.connected).toBe(0);
    // Settings changes do not reconnect what the user disconnected.
    await page.click('label[for="auth-cookie"]');
    await page.waitForTimeout(300);
    expect(await text('#sub-status')).toBe('Disconnected');
    expect(hub.hub.connected).toBe(0);
  });

  it('a publish result obtained with older settings says so', async () => {
    await page.click('label[for="auth-none"]');
    await page.click('#pub-submit');
    await expect.poll(() => text('#pub-result .title')).toContain('Error 401');
    await page.click('label[for="auth-header"]');
    await expect.poll(() => text('#pub-result .title')).toContain('with the previous settings');
    await page.click('#pub-submit');
    await expect.poll(() => text('#pub-result .title')).toBe('Published (200)');
  });

  it('the subscriptions list loads again with the new settings', async () => {
    await page.click('label[for="auth-none"]');
    await page.click('#subs-load');
    await expect.poll(() => text('#subs-message')).toContain('401');
    await page.click('label[for="auth-header"]');
    await expect.poll(() => text('#subs-status'), { timeout: 5000 }).toBe('Live');
    expect(await page.isVisible('#subs-message')).toBe(false);
    expect(pageErrors).toEqual([]);
  });
});
