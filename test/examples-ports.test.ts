/**
 * What every example app does at the edges, as its own process: a default port that is taken
 * (`npm start`'s hub on 3000, another example) means another free port and one line saying so; a
 * port asked for with PORT that is taken is one clear line and exit code 1, never an EADDRINUSE
 * stack. And no page of an example asks for a file the app does not have (the favicon).
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeBrowser, launchBrowser } from './browser.js';
import { freePort, startExample, type RunningExample } from './example-process.js';

const ROOT = new URL('..', import.meta.url).pathname;
const EXAMPLES = [
  { name: 'product-reviews', defaultPort: 3030, pages: ['/', '/products/quicksilver-barometer', '/products/nope'] },
  { name: 'books-api', defaultPort: 3010, pages: ['/'] },
  { name: 'private-notifications', defaultPort: 3020, pages: ['/', '/login?user=alice'] },
] as const;

/** Holds 127.0.0.1:port for the test (or finds it already taken, which is as good). */
async function occupy(port: number): Promise<() => Promise<void>> {
  const server = net.createServer();
  const held = await new Promise<boolean>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(false) : reject(err)));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve(true));
  });
  return () => (held ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve());
}

/** Runs an example to its exit; its output. */
function runToExit(name: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [`examples/${name}/server.mjs`], { cwd: ROOT, env: { ...process.env, HOST: '127.0.0.1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  return new Promise((resolve) => child.once('exit', (code) => {
    clearTimeout(timer);
    resolve({ code, stdout, stderr });
  }));
}

describeBrowser('examples: ports and page requests', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  for (const example of EXAMPLES) {
    it(`${example.name}: a PORT that is taken is one clear line and exit 1`, async () => {
      const port = await freePort();
      const release = await occupy(port);
      try {
        const env: Record<string, string> = { PORT: String(port) };
        if (example.name === 'private-notifications') env.HUB_PORT = String(await freePort());
        const r = await runToExit(example.name, env);
        expect(r.code).toBe(1);
        expect(r.stdout).toBe('');
        expect(r.stderr.trim().split('\n')).toEqual([`${example.name}: port ${port} on 127.0.0.1 is already in use (PORT=${port}): stop what uses it, or choose another port with PORT=<port>`]);
        expect(r.stderr).not.toMatch(/EADDRINUSE|\bat \S+:\d+:\d+/);
      } finally {
        await release();
      }
    });

    it(`${example.name}: its default port taken, it starts on a free one, says so, and no page asks for a missing file`, async () => {
      const release = await occupy(example.defaultPort);
      let app: RunningExample | undefined;
      try {
        const env: Record<string, string> = { PORT: '' };
        if (example.name === 'private-notifications') env.HUB_PORT = '';
        app = await startExample(example.name, env);
        const out = app.output();
        expect(out).toContain(`${example.name}: port ${example.defaultPort} is already in use (a hub started with npm start?): using port `);
        const port = Number(/using port (\d+) instead/.exec(out)![1]);
        expect(port).not.toBe(example.defaultPort);
        expect(out).toContain(`http://localhost:${port}/`);

        // Every page, every request it makes: none answered 404 (a missing favicon was, on each).
        const context = await browser.newContext();
        try {
          const page = await context.newPage();
          const failed: string[] = [];
          const requested: string[] = [];
          page.on('request', (r) => requested.push(new URL(r.url()).pathname));
          page.on('response', (r) => {
            if (r.status() === 404 && !r.url().endsWith('/products/nope')) failed.push(r.url());
          });
          for (const path of example.pages) {
            await page.goto(`http://127.0.0.1:${port}${path}`);
            // Pages with a live stream never go network-idle: a moment for icons and scripts instead.
            await page.waitForLoadState('load');
            await page.waitForTimeout(500);
            // The icon the page declares is one the app serves.
            const icon = await page.evaluate(async () => {
              const link = document.querySelector('link[rel~="icon"]') as HTMLLinkElement | null;
              if (!link) return 'no icon declared';
              if (link.href.startsWith('data:')) return 'ok';
              return (await fetch(link.href)).ok ? 'ok' : `${link.href} is missing`;
            });
            expect(icon, path).toBe('ok');
          }
          expect(failed).toEqual([]);
          expect(requested).not.toContain('/favicon.ico');
        } finally {
          await context.close();
        }
      } finally {
        await app?.stop();
        await release();
      }
    });
  }
});
