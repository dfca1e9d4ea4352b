/**
 * The publish dedupe window as a hub setting (issue 14): `dedupe_window` directive,
 * `--dedupe-window`, QUICKSILVER_DEDUPE_WINDOW and the JSON file all become the transport URL's
 * `dedupe_window` parameter, which a URL that sets it overrides; and a hub process started with the
 * setting answers a reused id as the window says.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import { KEY, legacyToken, publish, SseClient } from './helpers.js';
import { startHubProcess } from './process-helpers.js';

const SECRET = 'k'.repeat(32);
const dir = mkdtempSync(join(tmpdir(), 'qs-dedupe-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function urlOf(env: Record<string, string>, argv: string[]): { url: string; warnings: string[] } {
  const r = loadConfig({ env: { MERCURE_PUBLISHER_JWT_KEY: SECRET, ...env }, argv, cwd: dir });
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return { url: r.config.transportUrl, warnings: r.warnings };
}

describe('dedupe window setting', () => {
  it('reaches the transport URL from every source', () => {
    expect(urlOf({}, ['--transport-url', 'memory://', '--dedupe-window', '30s']).url).toBe('memory://?dedupe_window=30000ms');
    expect(urlOf({ QUICKSILVER_DEDUPE_WINDOW: '0s' }, ['--transport-url', 'redis://localhost:6379?size=10']).url).toBe(
      'redis://localhost:6379?size=10&dedupe_window=0ms',
    );
    expect(urlOf({ MERCURE_EXTRA_DIRECTIVES: 'dedupe_window 5m' }, ['--transport-url', 'memory://']).url).toBe('memory://?dedupe_window=300000ms');
    const file = join(dir, 'hub.json');
    writeFileSync(file, JSON.stringify({ transport_url: 'memory://', dedupe_window: '1m' }));
    expect(urlOf({}, ['--config', file]).url).toBe('memory://?dedupe_window=60000ms');
  });

  it('leaves the URL alone when absent, and lets a URL that sets it win with a warning', () => {
    expect(urlOf({}, ['--transport-url', 'memory://']).url).toBe('memory://');
    const r = urlOf({}, ['--transport-url', 'memory://?dedupe_window=10s', '--dedupe-window', '1m']);
    expect(r.url).toBe('memory://?dedupe_window=10s');
    expect(r.warnings.join('\n')).toMatch(/--dedupe-window.*ignored \(the transport URL already sets dedupe_window\)/);
  });

  it('refuses a malformed window', () => {
    const r = loadConfig({ env: { MERCURE_PUBLISHER_JWT_KEY: SECRET }, argv: ['--dedupe-window', 'soon'], cwd: dir });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.join('\n')).toMatch(/dedupe-window/);
  });

  it.each([
    ['2m', 1],
    ['0s', 2],
  ])('a hub started with --dedupe-window %s stores a reused id %i time(s)', async (window, stored) => {
    const hub = await startHubProcess(['--workers', '1', '--jwt-key', KEY, '--anonymous', '--addr', '127.0.0.1:0', '--transport-url', 'memory://', '--dedupe-window', window]);
    try {
      const sub = await SseClient.connect(`${hub.hubUrl}?topic=${encodeURIComponent('https://example.com/d')}`);
      const token = await legacyToken({ publish: ['*'] });
      for (const data of ['first', 'retry']) {
        const r = await publish(hub.hubUrl, { topic: 'https://example.com/d', id: 'urn:same', data }, token);
        expect(r.status, r.body).toBe(200);
        expect(r.body).toBe('urn:same');
      }
      // A marker published last: once it arrives, everything before it has been delivered.
      await publish(hub.hubUrl, { topic: 'https://example.com/d', id: 'urn:marker', data: 'end' }, token);
      await sub.until(() => sub.events.some((e) => e.id === 'urn:marker'));
      expect(sub.events.filter((e) => e.id === 'urn:same').length).toBe(stored);
      sub.close();
    } finally {
      await hub.stop();
    }
  });
});
