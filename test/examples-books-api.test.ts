/**
 * examples/books-api, as its own process: the REST resource auto-published on change. Two
 * browsers on the list page (which discovers the hub from the Link header of /books); creates,
 * updates and deletes made with fetch, in one page or from outside, update the other page live.
 */
import { readFileSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeBrowser, launchBrowser } from './browser.js';
import { freePort, startExample } from './example-process.js';

const ROOT = new URL('..', import.meta.url).pathname;
const NAME = 'books-api';

describeBrowser('examples/books-api', () => {
  let browser: Browser;
  let example: Awaited<ReturnType<typeof startExample>>;
  let base: string;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    [browser, example] = await Promise.all([launchBrowser(), startExample(NAME, { PORT: String(port) })]);
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await browser?.close();
    await example?.stop();
  });

  it('is what `npm run example:books-api` starts; /books advertises the hub, its last event and its IRI', async () => {
    const scripts = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts[`example:${NAME}`]).toMatch(new RegExp(`^npm run build.* && node examples/${NAME}/server\\.mjs$`));
    expect(example.output()).toMatch(/Books API: http:\/\/localhost:\d+\//);
    const res = await fetch(`${base}/books`);
    expect(res.headers.get('link')).toMatch(new RegExp(`^</\\.well-known/mercure>; rel="mercure"; last-event-id="[^"]+", <http://localhost:${port}/books>; rel="self"$`));
    const body = (await res.json()) as { member: Array<{ '@id': string }> };
    expect(body.member.map((b) => b['@id'])).toEqual(['/books/1', '/books/2']);
  });

  /** Titles in the page's table, in order. */
  const titles = (page: Page) => page.locator('#books tr td:first-child').allTextContents();
  const live = (page: Page) => page.waitForSelector('#status[data-state="open"]', { timeout: 10_000 });
  /** fetch() run in the page, as its own buttons do. */
  const call = (page: Page, method: string, url: string, body?: unknown) =>
    page.evaluate(async ([m, u, b]) => {
      const res = await fetch(u as string, { method: m as string, headers: { 'Content-Type': 'application/json' }, body: b === undefined ? undefined : JSON.stringify(b) });
      return { status: res.status, location: res.headers.get('location') };
    }, [method, url, body] as const);

  it('create, update and delete made in page A (or from outside) appear in page B without a reload', async () => {
    const [ctxA, ctxB] = await Promise.all([browser.newContext(), browser.newContext()]);
    try {
      const [a, b] = await Promise.all([ctxA.newPage(), ctxB.newPage()]);
      await Promise.all([a.goto(base), b.goto(base)]);
      await Promise.all([live(a), live(b)]);
      expect(await titles(b)).toEqual(['The Left Hand of Darkness', 'Dune']);
      await b.evaluate(() => ((window as unknown as { __noReload: boolean }).__noReload = true));

      // Create.
      const created = await call(a, 'POST', '/books', { title: 'Neuromancer', author: 'William Gibson', year: 1984 });
      expect(created).toEqual({ status: 201, location: '/books/3' });
      await b.waitForSelector('#books tr[data-id="/books/3"]', { timeout: 5000 });
      expect(await titles(b)).toEqual(['The Left Hand of Darkness', 'Dune', 'Neuromancer']);
      expect(await b.locator('#books tr[data-id="/books/3"] td').nth(2).textContent()).toBe('1984');

      // Update (PATCH, then PUT).
      expect((await call(a, 'PATCH', '/books/3', { status: 'on loan' })).status).toBe(200);
      await b.waitForFunction(() => (document.querySelector('#books tr[data-id="/books/3"] select') as HTMLSelectElement | null)?.value === 'on loan', undefined, { timeout: 5000 });
      expect((await call(a, 'PUT', '/books/1', { title: 'The Dispossessed', author: 'Ursula K. Le Guin', year: 1974 })).status).toBe(200);
      await b.waitForFunction(() => document.querySelector('#books tr[data-id="/books/1"] td')?.textContent === 'The Dispossessed', undefined, { timeout: 5000 });

      // Delete, from outside the browsers.
      expect((await fetch(`${base}/books/2`, { method: 'DELETE' })).status).toBe(204);
      await b.waitForFunction(() => !document.querySelector('#books tr[data-id="/books/2"]'), undefined, { timeout: 5000 });
      expect(await titles(b)).toEqual(['The Dispossessed', 'Neuromancer']);

      // A failed write publishes nothing: the next update to arrive is the next success.
      expect((await call(a, 'POST', '/books', { title: '' })).status).toBe(422);
      expect((await call(a, 'PATCH', '/books/99', { status: 'lost' })).status).toBe(404);
      expect((await call(a, 'PATCH', '/books/3', { status: 'lost' })).status).toBe(200);
      await b.waitForFunction(() => (document.querySelector('#books tr[data-id="/books/3"] select') as HTMLSelectElement | null)?.value === 'lost', undefined, { timeout: 5000 });
      const received = await b.locator('#log li').allTextContents();
      expect(received.map((d) => JSON.parse(d) as Record<string, unknown>).map((d) => [d['@id'], d.status ?? (Object.keys(d).length === 1 ? 'deleted' : d.title)])).toEqual([
        ['/books/3', 'lost'],
        ['/books/2', 'deleted'],
        ['/books/1', 'available'],
        ['/books/3', 'on loan'],
        ['/books/3', 'available'],
      ]);

      // Page A, which made the changes, got them through the hub too.
      expect(await titles(a)).toEqual(['The Dispossessed', 'Neuromancer']);
      expect(await b.evaluate(() => (window as unknown as { __noReload?: boolean }).__noReload)).toBe(true);

      // A page opened now starts from the current state and resumes from the advertised last-event-id: no replayed duplicates.
      const c = await ctxA.newPage();
      await c.goto(base);
      await live(c);
      expect(await titles(c)).toEqual(['The Dispossessed', 'Neuromancer']);
      await c.click('#books tr[data-id="/books/3"] button.delete');
      await Promise.all([
        c.waitForFunction(() => !document.querySelector('#books tr[data-id="/books/3"]'), undefined, { timeout: 5000 }),
        b.waitForFunction(() => !document.querySelector('#books tr[data-id="/books/3"]'), undefined, { timeout: 5000 }),
      ]);
      expect(await c.locator('#log li').allTextContents()).toEqual(['{"@id":"/books/3"}']);
    } finally {
      await Promise.all([ctxA.close(), ctxB.close()]);
    }
  });

  it('the page\'s form creates through the API; both pages update', async () => {
    const [a, b] = await Promise.all([browser.newPage(), browser.newPage()]);
    try {
      await Promise.all([a.goto(base), b.goto(base)]);
      await Promise.all([live(a), live(b)]);
      await a.fill('input[name="title"]', 'Kindred');
      await a.fill('input[name="author"]', 'Octavia E. Butler');
      await a.fill('input[name="year"]', '1979');
      await a.click('.new-book button');
      await Promise.all([
        a.waitForSelector('#books tr:has-text("Kindred")', { timeout: 5000 }),
        b.waitForSelector('#books tr:has-text("Kindred")', { timeout: 5000 }),
      ]);
      const book = (await (await fetch(`${base}/books/4`)).json()) as Record<string, unknown>;
      expect(book).toEqual({ '@id': '/books/4', '@type': 'Book', id: 4, title: 'Kindred', author: 'Octavia E. Butler', year: 1979, status: 'available' });
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('the form shows the API\'s 422 for a year typed as "abcd", saves nothing, and keeps what was typed', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(base);
      await live(page);
      const before = ((await (await fetch(`${base}/books`)).json()) as { totalItems: number }).totalItems;
      await page.fill('input[name="title"]', 'Year Zero');
      await page.fill('input[name="author"]', 'Someone');
      await page.fill('input[name="year"]', 'abcd');
      const [res] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/books'),
        page.click('.new-book button'),
      ]);
      expect(res.status()).toBe(422);
      await page.waitForSelector('#error:not([hidden])', { timeout: 5000 });
      expect(await page.textContent('#error')).toBe('POST /books: 422 "year" must be an integer or null');
      expect(((await (await fetch(`${base}/books`)).json()) as { totalItems: number }).totalItems).toBe(before);
      expect(await page.inputValue('input[name="year"]')).toBe('abcd');
      // Corrected, it is saved, and the error goes away.
      await page.fill('input[name="year"]', '2001');
      await page.click('.new-book button');
      await page.waitForSelector('#books tr:has-text("Year Zero")', { timeout: 5000 });
      expect(await page.isHidden('#error')).toBe(true);
      expect(await page.locator('#books tr:has-text("Year Zero") td').nth(2).textContent()).toBe('2001');
    } finally {
      await page.close();
    }
  });
});
