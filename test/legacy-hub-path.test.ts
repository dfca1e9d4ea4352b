/**
 * `/hub`, the hub's path before the reference hub's 0.8, which the 2019 tutorials and the talk in
 * the seeds use for publishing and subscribing. Off: a 404 that names `/.well-known/mercure`. On
 * (`legacy_hub_path`, `--legacy-hub-path`, `LEGACY_HUB_PATH=1`): the hub answers there too, for
 * the tutorial's plain-PHP form POST and for a browser's EventSource.
 */
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHub, serve } from '../src/index.js';
import { loadConfig } from '../src/config/index.js';
import { createLogger } from '../src/observability/logger.js';
import { describeBrowser, launchBrowser } from './browser.js';
import { legacyToken } from './helpers.js';
import { freePort, startHubProcess, type HubProcess } from './process-helpers.js';

const TUTORIAL_KEY = '!ChangeMe!';
const TOPIC = 'http://example.com/my-resource';

/** What the talk's plain-PHP publisher sends: file_get_contents() with a form-urlencoded POST. */
function phpStylePost(url: string, jwt: string, data = 'My payload'): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'Content-type': 'application/x-www-form-urlencoded', Authorization: `Bearer ${jwt}` },
    body: new URLSearchParams({ topic: TOPIC, data }).toString(),
  });
}

describe('/hub without legacy_hub_path', () => {
  it('answers 404 with a body that points to /.well-known/mercure, for publishing and subscribing', async () => {
    const hub = createHub({ publisher: { key: TUTORIAL_KEY }, anonymous: true, logger: createLogger('silent') });
    const server = await serve(hub, { addr: '127.0.0.1:0', shutdownTimeout: 200 });
    try {
      const jwt = await legacyToken({ publish: ['*'] }, TUTORIAL_KEY);
      const pub = await phpStylePost(`${server.url}/hub`, jwt);
      expect(pub.status).toBe(404);
      const body = await pub.text();
      expect(body).toContain('/.well-known/mercure');
      expect(body).toMatch(/legacy_hub_path/);
      const sub = await fetch(`${server.url}/hub?topic=${encodeURIComponent(TOPIC)}`);
      expect(sub.status).toBe(404);
      expect(await sub.text()).toBe(body);
      // Other unknown paths keep their bare 404.
      expect(await (await fetch(`${server.url}/hubs`)).text()).toBe('Not Found\n');
    } finally {
      await server.close();
    }
  });

  it('is opt-in through the directive, the flag and the environment', () => {
    const base = { JWT_KEY: TUTORIAL_KEY };
    const on = (env: Record<string, string>, argv: string[] = []) => {
      const r = loadConfig({ env: { ...base, ...env }, argv });
      if (!r.ok) throw new Error(r.errors.join('\n'));
      return r.config.hub.legacyHubPath ?? false;
    };
    expect(on({})).toBe(false);
    expect(on({ LEGACY_HUB_PATH: '1' })).toBe(true);
    expect(on({ LEGACY_HUB_PATH: '0' })).toBe(false);
    expect(on({}, ['--legacy-hub-path'])).toBe(true);
    expect(on({ LEGACY_HUB_PATH: '1' }, ['--no-legacy-hub-path'])).toBe(false);
    expect(on({ MERCURE_EXTRA_DIRECTIVES: 'legacy_hub_path' })).toBe(true);
  });
});

describeBrowser('/hub with LEGACY_HUB_PATH=1, as the 2019 tutorial runs the hub', () => {
  let hub: HubProcess;
  let browser: Browser;

  beforeAll(async () => {
    const port = await freePort();
    [hub, browser] = await Promise.all([
      // The talk's environment, plus the opt-in; two workers, as the CLI runs by default.
      startHubProcess([], {
        ADDR: `127.0.0.1:${port}`,
        JWT_KEY: TUTORIAL_KEY,
        ALLOW_ANONYMOUS: '1',
        CORS_ALLOWED_ORIGINS: 'http://localhost:8000',
        DEMO: '1',
        LEGACY_HUB_PATH: '1',
        TRANSPORT_URL: 'memory://',
        QUICKSILVER_WORKERS: '2',
      }),
      launchBrowser(),
    ]);
  }, 30_000);
  afterAll(async () => {
    await browser?.close();
    await hub?.stop();
  });

  it('a form POST on /hub publishes, and an EventSource on /hub receives it', async () => {
    const page = await browser.newPage();
    try {
      // Same origin as the hub, so that the tutorial's EventSource needs no CORS.
      await page.goto(`${hub.url}/healthz`);
      await page.evaluate((topic) => {
        const w = window as unknown as { received: string[]; opened: boolean };
        w.received = [];
        const url = new URL('/hub', location.href);
        url.searchParams.append('topic', topic);
        const es = new EventSource(url);
        es.onopen = () => (w.opened = true);
        es.onmessage = ({ data }) => w.received.push(data);
      }, TOPIC);
      await page.waitForFunction(() => (window as unknown as { opened?: boolean }).opened === true, undefined, { timeout: 10_000 });

      const jwt = await legacyToken({ publish: ['*'] }, TUTORIAL_KEY);
      const res = await phpStylePost(`${hub.url}/hub`, jwt);
      expect(res.status).toBe(200);
      const id = await res.text();
      expect(id).toMatch(/^urn:uuid:/);
      await page.waitForFunction(() => (window as unknown as { received: string[] }).received.length > 0, undefined, { timeout: 10_000 });
      expect(await page.evaluate(() => (window as unknown as { received: string[] }).received)).toEqual(['My payload']);

    } finally {
      await page.close();
    }
  });
});
