/**
 * examples/private-notifications, as its own process (app + hub on its own port): alice and bob
 * log in in two browsers; both pages subscribe to every user's topic, yet a private notification
 * for alice reaches alice's page only, never bob's (waited for), and bob's reaches bob's only.
 * The cookie is HttpOnly and the stream cross-origin (withCredentials).
 */
import { readFileSync } from 'node:fs';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeBrowser, launchBrowser } from './browser.js';
import { freePort, startExample } from './example-process.js';
import { SseClient, sleep } from './helpers.js';

const ROOT = new URL('..', import.meta.url).pathname;
const NAME = 'private-notifications';

describeBrowser('examples/private-notifications', () => {
  let browser: Browser;
  let example: Awaited<ReturnType<typeof startExample>>;
  let base: string;
  let hubUrl: string;

  beforeAll(async () => {
    const [port, hubPort] = [await freePort(), await freePort()];
    [browser, example] = await Promise.all([launchBrowser(), startExample(NAME, { PORT: String(port), HUB_PORT: String(hubPort) })]);
    base = `http://127.0.0.1:${port}`;
    hubUrl = `http://127.0.0.1:${hubPort}/.well-known/mercure`;
  });
  afterAll(async () => {
    await browser?.close();
    await example?.stop();
  });

  it('is what `npm run example:private-notifications` starts, and says where', () => {
    const scripts = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts[`example:${NAME}`]).toMatch(new RegExp(`^npm run build.* && node examples/${NAME}/server\\.mjs$`));
    expect(example.output()).toMatch(/Private notifications: http:\/\/localhost:\d+\/login\?user=alice \(hub at http:\/\/localhost:\d+\/\.well-known\/mercure\)/);
  });

  async function login(user: string): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/login?user=${user}`);
    expect(new URL(page.url()).pathname).toBe('/');
    expect(await page.locator('#user').textContent()).toBe(user);
    await page.waitForSelector('#status[data-state="open"]', { timeout: 10_000 });
    return { context, page };
  }

  const notify = (to: string, text: string) =>
    fetch(`${base}/notify`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ to, text }) });
  const texts = (page: Page) => page.locator('#notifications li p').allTextContents();

  it('alice\'s notification reaches alice\'s page, never bob\'s; bob\'s reaches bob\'s only', async () => {
    const alice = await login('alice');
    const bob = await login('bob');
    try {
      // The cookie: HttpOnly (scripts cannot read it), scoped to the hub, granting alice's topic only.
      const cookies = (await alice.context.cookies(hubUrl)).filter((c) => c.name !== 'user'); // the app's session cookie (Path=/)
      expect(cookies).toEqual([expect.objectContaining({ name: 'mercureAuthorization', path: '/.well-known/mercure', httpOnly: true, sameSite: 'Strict' })]);
      const claims = JSON.parse(Buffer.from(cookies[0]!.value.split('.')[1]!, 'base64url').toString()) as { mercure: unknown };
      expect(claims.mercure).toEqual({ subscribe: ['https://example.com/users/alice/notifications'], payload: { user: 'alice' } });
      expect(await alice.page.evaluate(() => document.cookie)).toBe('');

      expect((await notify('alice', 'Your parcel for alice has shipped')).status).toBe(202);
      await alice.page.waitForSelector('#notifications li:has-text("parcel for alice")', { timeout: 5000 });
      // Give bob's page every chance to (wrongly) receive it.
      await sleep(1500);
      expect(await texts(bob.page)).toEqual([]);

      // Bob's stream works: his own notification arrives, and alice does not get it.
      expect((await notify('bob', 'Bob, your table is ready')).status).toBe(202);
      await bob.page.waitForSelector('#notifications li:has-text("table is ready")', { timeout: 5000 });
      await sleep(500);
      expect(await texts(bob.page)).toEqual(['Bob, your table is ready']);
      expect(await texts(alice.page)).toEqual(['Your parcel for alice has shipped']);

      // The page's own form: bob writes to alice.
      await bob.page.selectOption('select[name="to"]', 'alice');
      await bob.page.fill('input[name="text"]', 'Lunch?');
      await bob.page.click('#send button');
      await alice.page.waitForSelector('#notifications li:has-text("Lunch?")', { timeout: 5000 });
      // The sender, whose page shows nothing of a notification private to alice, is told it went.
      await bob.page.waitForSelector('#sent[data-state="ok"]', { timeout: 5000 });
      expect(await bob.page.textContent('#sent')).toMatch(/^Sent to alice at /);
      expect(await bob.page.inputValue('input[name="text"]')).toBe('');
      expect(await alice.page.locator('#notifications li').first().locator('.head').textContent()).toMatch(/^from bob · /);
      await sleep(500);
      expect(await texts(bob.page)).toEqual(['Bob, your table is ready']);
    } finally {
      await Promise.all([alice.context.close(), bob.context.close()]);
    }
  });

  it('without the cookie the hub refuses the stream; after logout the cookie is gone', async () => {
    const anonymous = await SseClient.connect(`${hubUrl}?topic=${encodeURIComponent('https://example.com/users/{user}/notifications')}`);
    expect(anonymous.status).toBe(401);
    anonymous.close();

    const carol = await login('carol');
    try {
      const names = async () => (await carol.context.cookies(hubUrl)).map((c) => c.name).sort();
      expect(await names()).toEqual(['mercureAuthorization', 'user']);
      await carol.page.goto(`${base}/logout`);
      expect(await names()).toEqual([]);
      expect(await carol.page.locator('a.button').allTextContents()).toEqual(['alice', 'bob', 'carol']);
    } finally {
      await carol.context.close();
    }
  });
});
