/**
 * Transport URLs with a list of seed hosts (`redis+cluster://h1:7000,h2:7001/…`) pass the
 * configuration's check, reach the transport in the same form, and never show their password.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import { parseMultiHostUrl, redactUrlPassword } from '../src/util/multi-host-url.js';

const dir = mkdtempSync(join(tmpdir(), 'qs-transport-url-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const KEY = 'k'.repeat(32);
const CLUSTER_URL = 'redis+cluster://user:s3cr%40t@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/?stream=s';

describe('multi-host transport URLs', () => {
  it('are accepted by the configuration as written', () => {
    const r = loadConfig({ env: { MERCURE_PUBLISHER_JWT_KEY: KEY }, argv: ['--transport-url', CLUSTER_URL, '--dedupe-window', '1m'], cwd: dir });
    if (!r.ok) throw new Error(r.errors.join('\n'));
    expect(r.config.transportUrl).toBe(`${CLUSTER_URL}&dedupe_window=60000ms`);
  });

  it('parse into one host and the rest as seed nodes', () => {
    const u = parseMultiHostUrl(CLUSTER_URL);
    expect(u.hostname).toBe('10.0.0.1');
    expect(u.port).toBe('7000');
    expect(u.password).toBe('s3cr%40t');
    expect(u.searchParams.get('nodes')).toBe('10.0.0.2:7001,[::1]:7002');
    expect(u.searchParams.get('stream')).toBe('s');
  });

  it('never show their password, whatever it is', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Za-z0-9%!$&'()*+;=._~-]{1,20}$/), fc.integer({ min: 1, max: 4 }), (password, n) => {
        const hosts = Array.from({ length: n }, (_, i) => `h${i}:${7000 + i}`).join(',');
        const url = `redis+cluster://user:${password}@${hosts}/?stream=x`;
        const shown = redactUrlPassword(url);
        expect(shown).toBe(`redis+cluster://user:***@${hosts}/?stream=x`);
      }),
    );
    expect(redactUrlPassword('memory://')).toBe('memory://');
  });

  it('are masked by check-config', () => {
    const out = execFileSync(process.execPath, [resolve('dist/cli.js'), 'check-config', '--transport-url', CLUSTER_URL], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '', MERCURE_PUBLISHER_JWT_KEY: KEY },
    }).toString();
    expect(out).toContain('transport redis+cluster://user:***@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/?stream=s');
    expect(out).not.toContain('s3cr');
  });
});
