/**
 * The signature as a PHP receiver checks it: the hub POSTs to PHP's own web server (php-cli's
 * `php -S`) running test/fixtures/webhook-receiver.php, the snippet of docs/webhooks.md, which
 * answers 204 only for a valid signature. Skipped when php is missing, unless CI is set.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryTransport } from '../src/transports/memory.js';
import { signatureHeader } from '../src/webhooks/index.js';
import { startHub } from './helpers.js';
import { freePort, waitUntil } from './process-helpers.js';

const php = spawnSync('php', ['--version']).status === 0;
if (!php && !process.env.CI) console.warn('php not found (apt-get install php-cli): skipping the PHP signature test');
const SECRET = 'a-webhook-secret-shared-with-php';
const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function phpReceiver(): Promise<{ url: string; log: () => Array<{ id: string; data: string; valid: boolean }> }> {
  const dir = mkdtempSync(join(tmpdir(), 'qs-php-'));
  const logFile = join(dir, 'received.log');
  const port = await freePort();
  const child: ChildProcess = spawn('php', ['-S', `127.0.0.1:${port}`, join(import.meta.dirname, 'fixtures/webhook-receiver.php')], {
    env: { PATH: process.env.PATH ?? '', WEBHOOK_SECRET: SECRET, WEBHOOK_LOG: logFile },
    stdio: 'ignore',
  });
  cleanups.push(() => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}/hook`;
  const end = Date.now() + 10_000;
  for (;;) {
    try {
      await fetch(url, { method: 'POST', body: '{}' });
      break;
    } catch {
      if (Date.now() > end) throw new Error('php -S did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const log = (): Array<{ id: string; data: string; valid: boolean }> => {
    try {
      return readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: string; data: string; valid: boolean }).filter((e) => e.id !== null);
    } catch {
      return [];
    }
  };
  return { url, log };
}

describe.skipIf(!php && !process.env.CI)('webhook signature verified by PHP', () => {
  it.runIf(!php)('needs php-cli in CI', () => {
    throw new Error('php is not installed and CI is set (.ci/run installs php-cli)');
  });

  it.runIf(php)('accepts the hub’s requests and refuses forged, altered and replayed ones', async () => {
    const receiver = await phpReceiver();
    const hub = await startHub({ transport: new MemoryTransport(), anonymous: true, webhooks: { allow: ['127.0.0.1'], minBackoff: 20, maxBackoff: 100, refreshInterval: 50, definitions: [{ name: 'php', url: receiver.url, selectors: [{ type: 'topic', value: '*' }], secret: SECRET }] } });
    cleanups.push(() => hub.close());
    await hub.hub.ready;
    await new Promise((r) => setTimeout(r, 150));
    const sent = [];
    for (const data of ['{"plain":"ascii"}', 'ünïcødé ✓ 🚀', 'line\nbreaks\r\nand "quotes"']) sent.push(await hub.hub.publish({ topics: ['https://example.com/a'], data }));
    await waitUntil(() => receiver.log().length >= 3, 10_000, 'PHP received three updates');
    expect(receiver.log()).toEqual(sent.map((u) => ({ id: u.id, data: u.data, valid: true })));

    // The check can fail: a wrong secret, an altered body, a replayed (old) timestamp.
    const body = JSON.stringify({ id: 'forged', topics: ['x'], type: null, data: 'x', private: false });
    const post = (sig: string, b = body) => fetch(receiver.url, { method: 'POST', headers: { 'Webhook-Signature': sig, 'Content-Type': 'application/json' }, body: b });
    expect((await post(signatureHeader('not-the-shared-secret', body))).status).toBe(401);
    expect((await post(signatureHeader(SECRET, body), body.replace('"x"', '"y"'))).status).toBe(401);
    expect((await post(signatureHeader(SECRET, body, Math.floor(Date.now() / 1000) - 3600))).status).toBe(401);
    expect((await post(signatureHeader(SECRET, body))).status).toBe(204);
  }, 30_000);
});
