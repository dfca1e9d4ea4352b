/**
 * The debugging UI as the seed tutorial starts the hub (`DEMO=1 JWT_KEY=...`, through the real
 * CLI): the start log says where the UI is, `/` redirects to it (as the reference's dev Caddyfile
 * does), and the demo banner is true: the page is handed a short-lived all-access token signed
 * with the configured key, which subscribes and publishes. A demo hub whose keys cannot mint one
 * says how to get one instead.
 */
import { decodeJwt, jwtVerify } from 'jose';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeBrowser, launchBrowser } from './browser.js';
import { freePort, startHubProcess, type HubProcess } from './process-helpers.js';

const UI = '/.well-known/mercure/ui';
const TUTORIAL_KEY = '!ChangeMe!';

describeBrowser('a demo hub started as the tutorial does', () => {
  let browser: Browser;
  let tutorial: HubProcess; // DEMO=1 JWT_KEY=!ChangeMe!, two workers (the default cluster)
  let split: HubProcess; // demo with separate publisher and subscriber keys, one process
  let plain: HubProcess; // no UI

  beforeAll(async () => {
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    [browser, tutorial, split, plain] = await Promise.all([
      launchBrowser(),
      startHubProcess([], { ADDR: `127.0.0.1:${p1}`, JWT_KEY: TUTORIAL_KEY, DEMO: '1', ALLOW_ANONYMOUS: '1', TRANSPORT_URL: 'memory://', QUICKSILVER_WORKERS: '2' }),
      startHubProcess(['--workers', '1'], { ADDR: `127.0.0.1:${p2}`, PUBLISHER_JWT_KEY: 'publisher-key-for-this-test', SUBSCRIBER_JWT_KEY: 'subscriber-key-for-this-test', DEMO: '1', TRANSPORT_URL: 'memory://' }),
      startHubProcess(['--workers', '1'], { ADDR: `127.0.0.1:${p3}`, JWT_KEY: TUTORIAL_KEY, TRANSPORT_URL: 'memory://' }),
    ]);
  }, 30_000);
  afterAll(async () => {
    await browser?.close();
    await Promise.all([tutorial, split, plain].map((h) => h?.stop()));
  });

  it('logs the UI URL at start whenever the UI is on, and only then', async () => {
    // The cluster primary logs after the ready line; give it a moment.
    await expect.poll(() => tutorial.output()).toContain(`"ui":"${tutorial.url}${UI}/"`);
    expect(tutorial.output()).toContain(`debugging UI at ${tutorial.url}${UI}/ (demo mode`);
    expect(tutorial.output().match(/debugging UI at/g)).toHaveLength(1); // the primary, not each worker
    await expect.poll(() => split.output()).toContain(`debugging UI at ${split.url}${UI}/`);
    expect(plain.output()).toContain('Quicksilver hub ready');
    expect(plain.output()).not.toContain('debugging UI');
  });

  it('/ redirects to the UI (302, as the dev Caddyfile\'s redir), only when the UI is on', async () => {
    const r = await fetch(`${tutorial.url}/`, { redirect: 'manual' });
    expect(r.status).toBe(302);
    expect(r.headers.get('location')).toBe(`${UI}/`);
    const head = await fetch(`${tutorial.url}/`, { method: 'HEAD', redirect: 'manual' });
    expect(head.status).toBe(302);
    // Not a redirect for what is not a page view, nor for other paths.
    expect((await fetch(`${tutorial.url}/`, { method: 'POST', redirect: 'manual' })).status).toBe(404);
    expect((await fetch(`${tutorial.url}/index.html`, { redirect: 'manual' })).status).toBe(404);
    expect((await fetch(`${plain.url}/`, { redirect: 'manual' })).status).toBe(404);
  });

  it('config.json hands out a token signed with the configured key, all-access, expiring within the hour', async () => {
    const doc = (await (await fetch(`${tutorial.url}${UI}/config.json`)).json()) as { devToken?: string; tokenHelp?: string };
    expect(doc.devToken).toBeTypeOf('string');
    expect(doc.tokenHelp).toBeUndefined();
    const { payload } = await jwtVerify(doc.devToken!, new TextEncoder().encode(TUTORIAL_KEY));
    expect(payload.mercure).toEqual({ publish: ['*'], subscribe: ['*'] });
    expect(payload.exp! - payload.iat!).toBe(3600);
    expect(payload.exp! * 1000).toBeGreaterThan(Date.now() + 30 * 60_000);

    // Keys that one HMAC token cannot satisfy: no token, and the command that mints one.
    const other = (await (await fetch(`${split.url}${UI}/config.json`)).json()) as { devToken?: string; tokenHelp?: string };
    expect(other.devToken).toBeUndefined();
    expect(other.tokenHelp).toMatch(/^quicksilver token --key /);
  });

  it('in the browser: / lands on the UI, the banner is true, and the handed-out token subscribes and publishes', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${tutorial.url}/`);
      expect(page.url()).toBe(`${tutorial.url}${UI}/`);
      await page.waitForSelector('body[data-ready="true"]');
      const banner = (await page.textContent('#demo-warning'))!;
      expect(banner).toContain('handed this page an all-access development token');
      const token = await page.inputValue('#jwt');
      expect(token.split('.')).toHaveLength(3);
      expect(banner).toContain(`valid until ${await page.evaluate((exp) => new Date(exp * 1000).toLocaleTimeString(), decodeJwt(token).exp!)}`);
      expect(await page.textContent('#jwt-note')).toContain('development token handed out by this demo hub');
      expect(await page.isChecked('#auth-header')).toBe(true);

      await page.fill('#sub-topics', 'https://example.com/books/1');
      await page.click('#sub-connect');
      await expect.poll(() => page.textContent('#sub-status'), { timeout: 5000 }).toBe('Connected');
      await page.fill('#pub-topics', 'https://example.com/books/1');
      await page.fill('#pub-data', 'private, with the handed-out token');
      await page.check('#pub-private');
      await page.click('#pub-submit');
      await expect.poll(() => page.textContent('#pub-result .title'), { timeout: 5000 }).toBe('Published (200)');
      await expect.poll(() => page.locator('#events .event-data').allTextContents(), { timeout: 5000 }).toEqual(['private, with the handed-out token']);
    } finally {
      await page.close();
    }
  });

  it('in the browser, a demo hub without a token to hand out says how to mint one', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${split.url}${UI}/`);
      await page.waitForSelector('body[data-ready="true"]');
      const banner = (await page.textContent('#demo-warning'))!;
      expect(banner).not.toContain('handed this page');
      expect(banner).toContain('hands out no token');
      expect(await page.textContent('#token-help')).toMatch(/^quicksilver token --key /);
      expect(await page.inputValue('#jwt')).toBe('');
      expect(await page.isChecked('#auth-none')).toBe(true);
    } finally {
      await page.close();
    }
  });
});
