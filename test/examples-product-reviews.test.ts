/**
 * examples/product-reviews, as its own process: two browsers on the same product page; a review
 * posted in one appears at once in the other, with the quick stats updated (Turbo Streams over
 * the embedded hub), while the submitter gets its 303 redirect back to the page.
 *
 * Set EXAMPLES_SCREENSHOTS=1 to (re)write docs/images/reviews.png (both browsers side by side).
 */
import { readFileSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeBrowser, launchBrowser } from './browser.js';
import { freePort, startExample } from './example-process.js';

const ROOT = new URL('..', import.meta.url).pathname;
const NAME = 'product-reviews';

describeBrowser('examples/product-reviews', () => {
  let browser: Browser;
  let example: Awaited<ReturnType<typeof startExample>>;
  let base: string;

  beforeAll(async () => {
    const port = await freePort();
    [browser, example] = await Promise.all([launchBrowser(), startExample(NAME, { PORT: String(port) })]);
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await browser?.close();
    await example?.stop();
  });

  it('is what `npm run example:product-reviews` starts, and says where', () => {
    const scripts = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts[`example:${NAME}`]).toMatch(new RegExp(`^npm run build.* && node examples/${NAME}/server\\.mjs$`));
    expect(example.output()).toMatch(/Product reviews: http:\/\/localhost:\d+\//);
  });

  /** Waits until the page's <turbo-stream-source> is connected to the hub. */
  async function live(page: Page): Promise<void> {
    await page.waitForFunction(() => {
      const el = document.querySelector('turbo-stream-source') as (HTMLElement & { streamSource?: EventSource }) | null;
      return el?.streamSource?.readyState === 1;
    }, undefined, { timeout: 10_000 });
  }

  it('a review posted in browser A appears in browser B with the stats updated; A is redirected (303)', async () => {
    const productUrl = `${base}/products/quicksilver-barometer`;
    // Two browsers: separate contexts (cookies, caches, connections).
    const [ctxA, ctxB] = await Promise.all([browser.newContext({ viewport: { width: 900, height: 700 } }), browser.newContext({ viewport: { width: 900, height: 700 } })]);
    try {
      const [a, b, other] = await Promise.all([ctxA.newPage(), ctxB.newPage(), ctxB.newPage()]);
      await Promise.all([a.goto(productUrl), b.goto(productUrl), other.goto(`${base}/products/winged-sandals`)]);
      await Promise.all([live(a), live(b), live(other)]);
      expect(await b.getByTestId('count').textContent()).toBe('2 reviews');
      expect(await b.getByTestId('average').textContent()).toBe('4.5');
      // Proves B is never reloaded: a reload would drop this.
      await b.evaluate(() => ((window as unknown as { __noReload: boolean }).__noReload = true));

      await a.fill('input[name="author"]', 'Grace <Hopper>');
      await a.selectOption('select[name="rating"]', '3');
      await a.fill('textarea[name="text"]', 'Solid brass, honest needle. Would forecast again.');
      const [post] = await Promise.all([
        a.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/reviews')),
        a.click('button[type="submit"]'),
      ]);
      expect(post.status()).toBe(303);
      expect(await post.headerValue('location')).toBe('/products/quicksilver-barometer');

      // B: the review and the new stats, pushed.
      await b.waitForSelector('#reviews li:has-text("Would forecast again")', { timeout: 5000 });
      await b.waitForFunction(() => document.querySelector('[data-testid="count"]')?.textContent === '3 reviews', undefined, { timeout: 5000 });
      // While the arrival is still highlighted.
      const shotB = process.env.EXAMPLES_SCREENSHOTS ? await b.screenshot({ type: 'png' }) : undefined;
      expect(await b.getByTestId('average').textContent()).toBe('4.0');
      expect(await b.locator('#reviews li').count()).toBe(3);
      expect(await b.locator('#reviews li').first().locator('strong').textContent()).toBe('Grace <Hopper>'); // escaped, newest first
      expect(await b.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);

      // A: back on the page after the redirect, the review shown once.
      await a.waitForFunction(() => document.querySelector('[data-testid="count"]')?.textContent === '3 reviews', undefined, { timeout: 5000 });
      expect(new URL(a.url()).pathname).toBe('/products/quicksilver-barometer');
      expect(await a.locator('#reviews li:has-text("Would forecast again")').count()).toBe(1);
      expect(await a.locator('textarea[name="text"]').inputValue()).toBe('');

      // Another product's page heard nothing.
      expect(await other.getByTestId('count').textContent()).toBe('0 reviews');
      expect(await other.locator('#no-reviews').count()).toBe(1);

      if (shotB) await sideBySide(await a.screenshot({ type: 'png' }), shotB);
    } finally {
      await Promise.all([ctxA.close(), ctxB.close()]);
    }
  });

  it('an invalid review is answered 422 with the form, and publishes nothing', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(`${base}/products/winged-sandals`);
      await live(page);
      const res = await fetch(`${base}/products/winged-sandals/reviews`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: 'author=x&rating=9&text=',
        redirect: 'manual',
      });
      expect(res.status).toBe(422);
      expect(await res.text()).toContain('Give a rating from 1 to 5');
      const ok = await fetch(`${base}/products/winged-sandals/reviews`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: 'rating=5&text=Fast!',
        redirect: 'manual',
      });
      expect(ok.status).toBe(303);
      await page.waitForSelector('#reviews li:has-text("Fast!")', { timeout: 5000 });
      expect(await page.locator('#reviews li').count()).toBe(1);
      expect(await page.locator('#no-reviews').count()).toBe(0);
      expect(await page.getByTestId('count').textContent()).toBe('1 review');
    } finally {
      await page.close();
    }
  });

  it('the home page draws each product with its own gradient (SVG ids are unique in the document)', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(base);
      const arts = await page.evaluate(() => {
        const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
        return {
          duplicates: ids.filter((id, i) => ids.indexOf(id) !== i),
          // For each picture: whether the gradient its disc is filled with is its own, and its colour.
          pictures: [...document.querySelectorAll('svg.art')].map((svg) => {
            const ref = /url\(#([^)]+)\)/.exec(svg.querySelector('circle')?.getAttribute('fill') ?? '')?.[1] ?? '';
            const gradient = document.getElementById(ref);
            return { own: gradient !== null && gradient.closest('svg') === svg, stop: gradient?.querySelector('stop:last-child')?.getAttribute('stop-color') };
          }),
        };
      });
      expect(arts.duplicates).toEqual([]);
      expect(arts.pictures).toEqual([
        { own: true, stop: 'hsl(205 55% 45%)' },
        { own: true, stop: 'hsl(32 55% 45%)' },
      ]);
    } finally {
      await page.close();
    }
  });

  /** docs/images/reviews.png: browser A (after its redirect) and browser B (live update) side by side. */
  async function sideBySide(shotA: Buffer, shotB: Buffer): Promise<void> {
    const page = await browser.newPage({ viewport: { width: 1848, height: 700 } });
    try {
      const img = (buf: Buffer) => `data:image/png;base64,${buf.toString('base64')}`;
      await page.setContent(`<!doctype html><style>
        body { margin: 0; padding: 16px; background: #d9dde7; font: 600 15px system-ui, "DejaVu Sans", sans-serif; color: #1d2433; display: flex; gap: 16px; }
        figure { margin: 0; background: #fff; border-radius: 10px; overflow: hidden; box-shadow: 0 6px 24px rgb(20 30 60 / .18); }
        figcaption { padding: 8px 12px; background: #eef0f6; border-bottom: 1px solid #d5d9e3; }
        figcaption span { font-weight: 400; color: #6b7385; }
        img { display: block; width: 900px; }
      </style>
      <figure><figcaption>Browser A <span>· posted the review, redirected (303) back to the page</span></figcaption><img src="${img(shotA)}"></figure>
      <figure><figcaption>Browser B <span>· review and stats pushed by Quicksilver, no reload</span></figcaption><img src="${img(shotB)}"></figure>`);
      await page.screenshot({ path: `${ROOT}docs/images/reviews.png`, fullPage: true });
    } finally {
      await page.close();
    }
  }
});
