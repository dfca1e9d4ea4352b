/**
 * The debugging UI (`/.well-known/mercure/ui/`), its config.json and the demo echo endpoint: over
 * HTTP (content types, caching, allowlist, demo semantics), then in headless Chromium against a
 * real hub (subscribe, publish, private updates, active subscriptions, no CSP violations).
 *
 * Set UI_SCREENSHOTS=1 to (re)write the screenshots in docs/images/.
 */
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import { jwtVerify } from 'jose';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHub, serve, type HubOptions, type QuicksilverHub } from '../src/index.js';
import type { Request, Response } from '../src/http/http-util.js';
import { createLogger } from '../src/observability/logger.js';
import { createUiHandler } from '../src/http/ui.js';
import { describeBrowser, launchBrowser } from './browser.js';
import { KEY, legacyToken, SseClient } from './helpers.js';

/**
 * false: this test routes /.well-known/mercure/ui/* to createUiHandler itself, in front of
 * hub.handler. true: hub.handler serves them alone (once src/handler.ts wires the UI).
 */
const WIRED = true;

const UI = '/.well-known/mercure/ui';

interface UiHub {
  url: string;
  hub: QuicksilverHub;
  close(): Promise<void>;
}

/** Hub options plus the dev key the lead passes through to the UI handler. */
type UiHubOptions = HubOptions & { devKey?: string };

async function startUiHub(options: UiHubOptions): Promise<UiHub> {
  const hub = createHub({
    publisher: { key: KEY },
    logger: createLogger(process.env.TEST_LOG ? 'debug' : 'silent'),
    ...options,
  } as HubOptions);
  let served: QuicksilverHub = hub;
  if (!WIRED) {
    const ui = createUiHandler({
      ui: options.ui ?? false,
      demo: options.demo ?? false,
      cookieName: options.cookieName ?? 'mercureAuthorization',
      devKey: options.devKey,
      trustProxy: options.trustProxy ?? false,
    });
    const handler = (req: Request, res: Response): void => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      if (ui(req, res, q < 0 ? url : url.slice(0, q), q < 0 ? '' : url.slice(q + 1))) return;
      hub.handler(req, res);
    };
    served = { ...hub, handler, hub: hub.hub, ready: hub.ready };
  }
  const server = await serve(served, { addr: '127.0.0.1:0', shutdownTimeout: 500 });
  return { url: server.url, hub, close: () => server.close() };
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Header name (lower case) → every value, in order (Link and Set-Cookie may repeat). */
  all: Record<string, string[]>;
  body: string;
}

/** A request with the path sent byte for byte (fetch() would resolve `..` before sending). */
function raw(base: string, path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path, method: options.method ?? 'GET', headers: options.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        const all: Record<string, string[]> = {};
        for (let i = 0; i < res.rawHeaders.length; i += 2) (all[res.rawHeaders[i]!.toLowerCase()] ??= []).push(res.rawHeaders[i + 1]!);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, all, body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('debugging UI over HTTP', () => {
  let demo: UiHub; // ui + demo, dev key
  let uiOnly: UiHub; // ui without demo, custom cookie name, behind a trusted proxy
  let off: UiHub; // neither

  beforeAll(async () => {
    [demo, uiOnly, off] = await Promise.all([
      startUiHub({ anonymous: true, demo: true, devKey: KEY }),
      startUiHub({ anonymous: true, ui: true, cookieName: 'custom_auth', trustProxy: true, devKey: KEY }),
      startUiHub({ anonymous: true }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([demo, uiOnly, off].map((h) => h?.close()));
  });

  it('serves the page and its assets with their content types, no-cache and an ETag', async () => {
    const cases: Array<[string, string]> = [
      ['/', 'text/html; charset=utf-8'],
      ['/index.html', 'text/html; charset=utf-8'],
      ['/app.js', 'text/javascript; charset=utf-8'],
      ...['dom', 'links', 'settings', 'sse', 'subscribe', 'subscriptions'].map((m): [string, string] => [`/${m}.js`, 'text/javascript; charset=utf-8']),
      ['/style.css', 'text/css; charset=utf-8'],
      ['/favicon.svg', 'image/svg+xml'],
    ];
    for (const [file, type] of cases) {
      const r = await raw(demo.url, UI + file);
      expect(r.status, file).toBe(200);
      expect(r.headers['content-type'], file).toBe(type);
      expect(r.headers['cache-control'], file).toBe('no-cache');
      expect(r.headers.etag, file).toMatch(/^"[\w-]+"$/);
      expect(r.headers['content-security-policy'], file).toBe("default-src 'self'");
      expect(r.headers['x-content-type-options'], file).toBe('nosniff');
      expect(Number(r.headers['content-length']), file).toBe(Buffer.byteLength(r.body));
      // Revalidation.
      const again = await raw(demo.url, UI + file, { headers: { 'If-None-Match': r.headers.etag! } });
      expect(again.status, file).toBe(304);
      expect(again.body).toBe('');
      const head = await raw(demo.url, UI + file, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers['content-type']).toBe(type);
      expect(head.body).toBe('');
    }
    const page = (await raw(demo.url, `${UI}/`)).body;
    expect(page).toContain('<script type="module" src="app.js"></script>');
    expect(page).toContain('<link rel="stylesheet" href="style.css">');
    // Nothing inline: the CSP would block it.
    expect(page).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(page).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);
  });

  it('redirects /ui to /ui/ and refuses other methods', async () => {
    const r = await raw(demo.url, UI);
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe('ui/');
    expect((await raw(demo.url, `${UI}?x=1`)).headers.location).toBe('ui/?x=1');
    const post = await raw(demo.url, `${UI}/`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('serves only its allowlist: other names and traversal attempts, raw or encoded, are 404', async () => {
    const attempts = [
      '/package.json',
      '/../package.json',
      '/../../../../package.json',
      '/%2e%2e/package.json',
      '/%2E%2E/%2E%2E/%2E%2E/package.json',
      '/..%2fpackage.json',
      '/..%2F..%2F..%2Fpackage.json',
      '/%2e%2e%2f%2e%2e%2f%2e%2e%2fpackage.json',
      '/.%2e/.%2e/.%2e/src/ui.ts',
      '/..\\..\\package.json',
      '/..%5c..%5cpackage.json',
      '/%252e%252e/package.json',
      '//etc/passwd',
      '/app.js/',
      '/app.js%00',
      '/APP.JS',
      '/./app.js',
      '/ui.ts',
      '/index.html/..',
      '/.git/config',
      '/dist/ui.js',
    ];
    for (const a of attempts) {
      const r = await raw(demo.url, UI + a);
      expect(r.status, a).toBe(404);
      expect(r.body, a).not.toContain('"dependencies"');
      expect(r.body, a).not.toContain('createUiHandler');
    }
    // Traversal in the segment before /ui/ never reaches the UI either.
    const r = await raw(demo.url, '/.well-known/mercure/x/../ui/app.js');
    expect(r.status).toBe(404);
  });

  it('is off unless ui or demo is enabled', async () => {
    for (const p of ['/', '/app.js', '/config.json', '/demo/x.jsonld']) {
      expect((await raw(off.url, UI + p)).status, p).toBe(404);
    }
    // With ui but without demo: no demo endpoint.
    const r = await raw(uiOnly.url, `${UI}/demo/books/1.jsonld?body=x`);
    expect(r.status).toBe(404);
    expect(r.body).toMatch(/demo/);
    expect(r.all['set-cookie']).toBeUndefined();
  });

  it('config.json: hub URL and cookie name; the dev token only with demo', async () => {
    const r = await raw(demo.url, `${UI}/config.json`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['cache-control']).toBe('no-store');
    const doc = JSON.parse(r.body) as { hubUrl: string; cookieName: string; demo: boolean; devToken?: string };
    expect(doc.hubUrl).toBe(`${demo.url}/.well-known/mercure`);
    expect(doc.cookieName).toBe('mercureAuthorization');
    expect(doc.demo).toBe(true);
    expect(doc.devToken).toBeTypeOf('string');
    const { payload, protectedHeader } = await jwtVerify(doc.devToken!, new TextEncoder().encode(KEY));
    expect(protectedHeader.alg).toBe('HS256');
    expect(payload.mercure).toEqual({ publish: ['*'], subscribe: ['*'] });
    // The token works for publishing.
    const pub = await fetch(`${demo.url}/.well-known/mercure`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${doc.devToken}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'topic=https://example.com/x&data=1',
    });
    expect(pub.status).toBe(200);

    const plain = await raw(uiOnly.url, `${UI}/config.json`, { headers: { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'hub.example.com' } });
    expect(JSON.parse(plain.body)).toEqual({ hubUrl: 'https://hub.example.com/.well-known/mercure', cookieName: 'custom_auth', demo: false });
  });

  it('demo endpoint: body, content type from the extension, Link headers, cookie set from ?jwt=', async () => {
    const path = `${UI}/demo/books/1.jsonld?body=${encodeURIComponent('{"@id":"/books/1"}')}&jwt=abc.def.ghi`;
    const r = await raw(demo.url, path);
    expect(r.status).toBe(200);
    expect(r.body).toBe('{"@id":"/books/1"}');
    expect(r.headers['content-type']).toBe('application/ld+json');
    expect(r.all.link).toEqual(['</.well-known/mercure>; rel="mercure"', `<${path}>; rel="self"`]);
    expect(r.all['set-cookie']).toEqual(['mercureAuthorization=abc.def.ghi; Path=/.well-known/mercure; SameSite=Strict']);

    const types: Array<[string, string]> = [
      ['/demo/a.json', 'application/json'],
      ['/demo/a.html', 'text/html; charset=utf-8'],
      ['/demo/a.xml', 'text/xml; charset=utf-8'],
      ['/demo/a', 'text/plain; charset=utf-8'],
      ['/demo/', 'text/plain; charset=utf-8'],
      ['/demo', 'text/plain; charset=utf-8'],
      ['/demo/dir.v2/a', 'text/plain; charset=utf-8'],
      ['/demo/b%2Ejsonld', 'application/ld+json'],
    ];
    for (const [p, type] of types) {
      const t = await raw(demo.url, UI + p);
      expect(t.status, p).toBe(200);
      expect(t.headers['content-type'], p).toBe(type);
      expect(t.body, p).toBe('');
    }
    const head = await raw(demo.url, `${UI}/demo/a.jsonld?body=hello`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('5');
    expect(head.body).toBe('');
  });

  it('demo endpoint: removes the cookie without ?jwt=, sanitises it, HttpOnly over TLS, names a custom cookie', async () => {
    const r = await raw(demo.url, `${UI}/demo/x.jsonld`);
    expect(r.all['set-cookie']).toEqual(['mercureAuthorization=; Path=/.well-known/mercure; Max-Age=0; SameSite=Strict']);
    const empty = await raw(demo.url, `${UI}/demo/x.jsonld?jwt=`);
    expect(empty.all['set-cookie']).toEqual(['mercureAuthorization=; Path=/.well-known/mercure; Max-Age=0; SameSite=Strict']);
    // No attribute (or header) injection through the value.
    const hostile = await raw(demo.url, `${UI}/demo/x?jwt=${encodeURIComponent('a;b"c\\d\r\nX-Evil: 1; Domain=evil.example')}`);
    expect(hostile.status).toBe(200);
    expect(hostile.headers['x-evil']).toBeUndefined();
    expect(hostile.all['set-cookie']).toEqual(['mercureAuthorization="abcdX-Evil: 1 Domain=evil.example"; Path=/.well-known/mercure; SameSite=Strict']);

    const custom = await raw(uiOnly.url, `${UI}/config.json`);
    expect(custom.status).toBe(200);
    const viaTls = await startUiHub({ anonymous: true, demo: true, cookieName: 'custom_auth', trustProxy: true });
    try {
      const t = await raw(viaTls.url, `${UI}/demo/y.jsonld?jwt=tok`, { headers: { 'X-Forwarded-Proto': 'https' } });
      expect(t.all.link).toEqual([
        '</.well-known/mercure>; rel="mercure"; cookie-name="custom_auth"',
        `<${UI}/demo/y.jsonld?jwt=tok>; rel="self"`,
      ]);
      expect(t.all['set-cookie']).toEqual(['custom_auth=tok; Path=/.well-known/mercure; HttpOnly; SameSite=Strict']);
      // The config of a demo hub without a dev key has no token.
      const cfg = JSON.parse((await raw(viaTls.url, `${UI}/config.json`)).body) as Record<string, unknown>;
      expect(cfg.devToken).toBeUndefined();
      expect(cfg.cookieName).toBe('custom_auth');
    } finally {
      await viaTls.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// In Chromium
// ---------------------------------------------------------------------------------------------

const SCREENSHOTS = process.env.UI_SCREENSHOTS === '1';
const IMAGES = new URL('../docs/images/', import.meta.url);

describeBrowser('debugging UI in Chromium', () => {
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let h: UiHub;
  const consoleErrors: string[] = [];
  const pageErrors: string[] = [];

  const status = (id: string) => page.locator(`#${id}`);
  const firstEvent = () => page.locator('#events > li').first();

  beforeAll(async () => {
    [browser, h] = await Promise.all([
      launchBrowser(),
      // What --dev enables, with the dev key passed to the UI.
      startUiHub({ anonymous: true, subscriptions: true, demo: true, publishOrigins: ['*'], devKey: KEY }),
    ]);
    context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    await context.addInitScript(() => {
      const w = window as unknown as { __csp: string[] };
      w.__csp = [];
      document.addEventListener('securitypolicyviolation', (e) => w.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(`${h.url}${UI}/`);
    await page.waitForSelector('body[data-ready="true"]');
  });

  afterAll(async () => {
    await context?.close();
    await browser?.close();
    await h?.close();
  });

  it('starts in header mode with the dev token and the page hub', async () => {
    expect(await page.locator('#auth-header').isChecked()).toBe(true);
    expect(await page.inputValue('#hub-url')).toBe(`${h.url}/.well-known/mercure`);
    expect((await page.inputValue('#jwt')).split('.')).toHaveLength(3);
    await expect.poll(() => page.textContent('#jwt-note')).toContain('development token');
    expect(await page.isVisible('#demo-warning')).toBe(true);
  });

  it('subscribes, publishes from the form and shows the event; private updates with the dev token', async () => {
    await page.fill('#sub-topics', 'https://example.com/books/1');
    await page.click('#sub-connect');
    await expect.poll(() => status('sub-status').textContent()).toBe('Connected');
    expect(await page.textContent('#sub-url')).toContain('via fetch()');

    await page.fill('#pub-topics', 'https://example.com/books/1');
    await page.fill('#pub-data', '{"@id": "https://example.com/books/1", "title": "Mercure in practice", "status": "InStock"}');
    await page.click('#pub-submit');
    await expect.poll(() => page.textContent('#pub-result .title')).toBe('Published (200)');
    const id = (await page.textContent('#pub-result .pub-id'))!;
    expect(id).toMatch(/^urn:uuid:/);
    await expect.poll(() => firstEvent().locator('.event-id').textContent()).toBe(id);
    expect(await firstEvent().locator('.event-data').textContent()).toContain('"status": "InStock"');
    expect(await firstEvent().locator('.event-type').textContent()).toBe('message');

    // Private, with a type and an id: the dev token may read it.
    await page.check('#pub-private');
    await page.fill('#pub-data', '{"@id": "https://example.com/books/1", "status": "OutOfStock"}');
    await page.fill('#pub-type', 'stock');
    await page.fill('#pub-id', 'urn:example:private-1');
    await page.click('#pub-submit');
    await expect.poll(() => firstEvent().locator('.event-id').textContent()).toBe('urn:example:private-1');
    expect(await firstEvent().locator('.event-type').textContent()).toBe('stock');
    expect(await page.textContent('#sub-count')).toBe('2');
    await page.uncheck('#pub-private');
    await page.fill('#pub-type', '');
    await page.fill('#pub-id', '');
  });

  it('lists the active subscriptions, including its own, and follows them live', async () => {
    await page.click('#subs-load');
    await expect.poll(() => status('subs-status').textContent()).toBe('Live');
    const own = page.locator('#subs-list tr', { hasText: 'https://example.com/books/1' });
    await expect.poll(() => own.count()).toBe(1);
    expect(await own.locator('.you').textContent()).toBe('Subscribe panel');

    // Another subscriber comes and goes.
    const other = await SseClient.connect(`${h.url}/.well-known/mercure?topic=${encodeURIComponent('https://example.com/users/{id}')}`, {
      headers: { Authorization: `Bearer ${await legacyToken({ subscribe: ['https://example.com/users/alice'], payload: { user: 'alice' } })}` },
    });
    const row = page.locator('#subs-list tr', { hasText: 'https://example.com/users/{id}' });
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.textContent()).toContain('{"user":"alice"}');
    if (SCREENSHOTS) {
      // A few more events for the picture.
      await page.fill('#pub-data', '{"@id": "https://example.com/books/1", "status": "Reserved", "by": "alice"}');
      await page.fill('#pub-type', 'reservation');
      await page.click('#pub-submit');
      await expect.poll(() => page.textContent('#sub-count')).toBe('3');
      await page.fill('#pub-type', '');
      mkdirSync(IMAGES, { recursive: true });
      await page.screenshot({ path: new URL('ui.png', IMAGES).pathname, fullPage: true });
      await page.locator('section.subscriptions').screenshot({ path: new URL('ui-subscriptions.png', IMAGES).pathname });
      await page.emulateMedia({ colorScheme: 'dark' });
      await page.waitForTimeout(500); // colour transitions
      await page.screenshot({ path: new URL('ui-dark.png', IMAGES).pathname, fullPage: true });
      await page.emulateMedia({ colorScheme: 'light' });
    }
    other.close();
    await expect.poll(() => row.count()).toBe(0);
  });

  it('cookie mode: EventSource with the cookie set by the demo endpoint, publishing with it', async () => {
    await page.click('#sub-disconnect');
    await page.click('label[for="auth-cookie"]');
    await page.fill('#sub-topics', 'https://example.com/books/{id}');
    await page.click('#sub-connect');
    await expect.poll(() => status('sub-status').textContent()).toBe('Connected');
    expect(await page.textContent('#sub-url')).toContain('via EventSource');
    const cookies = await context.cookies(`${h.url}/.well-known/mercure`);
    expect(cookies.find((c) => c.name === 'mercureAuthorization')?.path).toBe('/.well-known/mercure');

    await page.fill('#pub-topics', 'https://example.com/books/2');
    await page.fill('#pub-data', 'via the cookie');
    await page.check('#pub-private');
    await page.click('#pub-submit');
    await expect.poll(() => page.textContent('#pub-result .title')).toBe('Published (200)');
    await expect.poll(() => firstEvent().locator('.event-data').textContent()).toBe('via the cookie');
    await page.uncheck('#pub-private');
  });

  it('no token: publishing shows the hub\'s error with its status; the cookie is removed', async () => {
    await page.click('#sub-disconnect');
    await page.click('label[for="auth-none"]');
    await expect.poll(async () => (await context.cookies(`${h.url}/.well-known/mercure`)).some((c) => c.name === 'mercureAuthorization')).toBe(false);
    await page.click('#pub-submit');
    await expect.poll(() => page.textContent('#pub-result .title')).toContain('Error 401');
    expect(await page.textContent('#pub-result')).toContain('Publishing needs a token');
    // The subscriptions API needs a token on a hub with keys.
    await page.click('#subs-load');
    await expect.poll(() => page.textContent('#subs-message')).toContain('401');
    expect(await page.textContent('#subs-message')).toContain('/.well-known/mercure/subscriptions{/topic}{/subscriber}');
  });

  it('shows why the hub refuses a subscription, for fetch() and for EventSource', async () => {
    await page.fill('#sub-topics', 'https://example.com/books/1');
    await page.fill('#jwt', 'not.a.valid-token');
    await page.click('label[for="auth-header"]');
    await page.click('#sub-connect');
    await expect.poll(() => status('sub-status').textContent()).toBe('Error 401');
    expect(await page.textContent('#sub-error')).toContain('The token was refused');
    // EventSource hides the status: the page asks again with fetch() to show it.
    await page.click('label[for="auth-cookie"]');
    await page.click('#sub-connect');
    await expect.poll(() => status('sub-status').textContent()).toBe('Error 401');
    expect(await page.textContent('#sub-url')).toContain('via EventSource');
    await page.fill('#jwt', '');
    await page.click('label[for="auth-none"]');
  });

  it('discovers the hub and the topic from the demo endpoint\'s Link headers', async () => {
    await page.fill('#hub-url', 'http://wrong.invalid/.well-known/mercure');
    await page.click('#disc-submit');
    await expect.poll(() => page.textContent('#disc-result .title')).toBe('Hub discovered; settings filled in');
    expect(await page.inputValue('#hub-url')).toBe(`${h.url}/.well-known/mercure`);
    expect(await page.inputValue('#sub-topics')).toBe(`${h.url}${UI}/demo/books/1.jsonld`);
    expect(await page.textContent('#disc-result')).toContain('rel="mercure"');
    expect(await page.textContent('#disc-result')).toContain('application/ld+json');
  });

  it('had no CSP violations and no script errors', async () => {
    const csp = await page.evaluate(() => (window as unknown as { __csp: string[] }).__csp);
    // The discovery test typed another hub's URL: the page may have tried to reconnect to it
    // (and CSP refused that) before discovery filled in the real one, depending on timing; that
    // one refusal is the only violation allowed. (CI on Node 24 once saw none at all.)
    expect(csp.filter((c) => !c.includes('http://wrong.invalid/'))).toEqual([]);
    expect(pageErrors).toEqual([]);
    // The only console errors are the refusals the tests asked for (Chromium logs failed fetches).
    const unexpected = consoleErrors.filter(
      (e) => !/Failed to load resource: the server responded with a status of 401|EventSource's response has a status 401|http:\/\/wrong\.invalid\//.test(e),
    );
    expect(unexpected).toEqual([]);
  });
});
