/**
 * Webhook settings through every configuration source: the `webhook <name> { … }` directive
 * (MERCURE_EXTRA_DIRECTIVES), the JSON file's `webhooks` list, the shared settings and flags, and
 * one clear line per problem.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';

const dir = mkdtempSync(join(tmpdir(), 'quicksilver-webhooks-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const base = { MERCURE_PUBLISHER_JWT_KEY: 'publisher-key-of-enough-length', MERCURE_SUBSCRIBER_JWT_KEY: 'subscriber-key-of-enough-length' };

function load(directives: string, argv: string[] = []) {
  return loadConfig({ env: { ...base, MERCURE_EXTRA_DIRECTIVES: directives }, argv, cwd: dir });
}

describe('webhook configuration', () => {
  it('reads webhook blocks and the shared settings from directives', () => {
    const r = load(`
      webhook orders {
        url https://hooks.example.com/orders
        topic https://example.com/orders/{id} https://example.com/carts/{id}
        match_urlpattern https://example.com/invoices/:id
        match https://example.com/exact
        token eyJhbGciOiJIUzI1NiJ9.e30.x
        secret "a long webhook secret"
        batch 10
      }
      webhook_allow 10.0.0.0/8 hooks.internal
      webhook_timeout 5s
      webhook_give_up 10m
      webhook_backoff_min 500ms
      webhook_backoff_max 1m
      webhook_lease 20s`);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.hub.webhooks).toEqual({
      definitions: [{
        name: 'orders',
        url: 'https://hooks.example.com/orders',
        selectors: [
          { type: 'topic', value: 'https://example.com/orders/{id}' },
          { type: 'topic', value: 'https://example.com/carts/{id}' },
          { type: 'urlpattern', value: 'https://example.com/invoices/:id' },
          { type: 'exact', value: 'https://example.com/exact' },
        ],
        token: 'eyJhbGciOiJIUzI1NiJ9.e30.x',
        secret: 'a long webhook secret',
        batch: 10,
      }],
      allow: ['10.0.0.0/8', 'hooks.internal'],
      timeout: 5000,
      giveUp: 600_000,
      minBackoff: 500,
      maxBackoff: 60_000,
      leaseTtl: 20_000,
    });
  });

  it('is off unless something turns it on; `webhooks` or --webhooks alone turns the API on', () => {
    const off = load('');
    expect(off.ok && off.config.hub.webhooks).toBe(undefined);
    const on = load('webhooks');
    expect(on.ok && on.config.hub.webhooks).toEqual({ definitions: [], allow: [] });
    const flag = load('', ['--webhooks', '--webhook-allow', '127.0.0.1', '--webhook-allow', '::1']);
    expect(flag.ok && flag.config.hub.webhooks).toEqual({ definitions: [], allow: ['127.0.0.1', '::1'] });
  });

  it('reads the JSON file form', () => {
    const file = join(dir, 'hub.json');
    writeFileSync(file, JSON.stringify({
      webhooks: [{ name: 'a', url: 'https://h.example/a', topic: ['*'], secret: 'sixteen-chars-at-least' }, { name: 'b', url: 'https://h.example/b', match: 'x', secret: 'sixteen-chars-at-least', batch: 5 }],
      webhook_allow: ['192.168.0.0/16'],
      webhook_give_up: '30m',
    }));
    const r = loadConfig({ env: base, argv: ['--config', file], cwd: dir });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config.hub.webhooks?.definitions?.map((d) => `${d.name}:${d.selectors.map((s) => s.type).join(',')}:${d.batch ?? 1}`)).toEqual(['a:topic:1', 'b:exact:5']);
    expect(r.config.hub.webhooks?.allow).toEqual(['192.168.0.0/16']);
    expect(r.config.hub.webhooks?.giveUp).toBe(1_800_000);
  });

  it('reports each problem in one line naming the directive', () => {
    const r = load(`
      webhook bad {
        url ftp://example.com
        topic x
        secret short
        colour blue
      }
      webhook nosecret {
        url https://example.com
        topic x
      }
      webhook_allow 10.0.0.0/33`);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors).toEqual([
      "MERCURE_EXTRA_DIRECTIVES line 2 (webhook): unknown option 'colour'; expected url, token, secret, batch, topic, match, match_exact, match_urlpattern",
      "MERCURE_EXTRA_DIRECTIVES line 12 (webhook_allow): webhook allow-list entry '10.0.0.0/33' is not a network (e.g. 10.0.0.0/8, fd00::/8)",
      'MERCURE_EXTRA_DIRECTIVES line 2 (webhook): url must be http:// or https://',
      "MERCURE_EXTRA_DIRECTIVES line 8 (webhook): missing 'secret' (the key of the Webhook-Signature HMAC)",
    ]);
  });
});
