import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY, legacyToken } from './helpers.js';
import { freePort, ReconnectingSubscriber, startHubProcess, waitUntil, type HubProcess } from './process-helpers.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qs-restart-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('zero-loss restart', () => {
  it('subscribers connected through a restart get every update published before, during and after it, once', async () => {
    const port = await freePort();
    const args = ['--jwt-key', KEY, '--anonymous', '--addr', `127.0.0.1:${port}`, '--transport-url', `lmdb://${dir}/hub.lmdb`];
    let hub: HubProcess = await startHubProcess(args);
    const hubUrl = hub.hubUrl;
    const token = await legacyToken({ publish: ['*'] });
    const subs = Array.from({ length: 5 }, () => new ReconnectingSubscriber(() => `${hubUrl}?topic=https://example.com/r`));
    await waitUntil(() => subs.every((s) => s.connections === 1), 5000, 'subscribers to connect');

    // A publisher that retries until the hub acknowledges, as a careful app would.
    const acked: string[] = [];
    let stop = false;
    const publisher = (async () => {
      for (let i = 0; !stop; i++) {
        const id = `u-${i}`;
        for (;;) {
          try {
            const res = await fetch(hubUrl, {
              method: 'POST',
              headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' },
              body: new URLSearchParams({ topic: 'https://example.com/r', id, data: String(i) }),
            });
            if (res.status === 200) {
              acked.push(id);
              break;
            }
          } catch {
            // hub restarting
          }
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();

    await waitUntil(() => acked.length >= 50, 10_000, 'updates before the restart');
    expect(await hub.stop('SIGTERM')).toBe(0);
    hub = await startHubProcess(args);
    await waitUntil(() => acked.length >= 150, 15_000, 'updates after the restart');
    stop = true;
    await publisher;
    for (const s of subs) {
      await waitUntil(() => s.events.length >= acked.length, 10_000, `subscriber to catch up (${s.events.length}/${acked.length})`);
      expect(s.connections).toBeGreaterThanOrEqual(2);
      expect(s.events.map((e) => e.id)).toEqual(acked);
      s.close();
    }
    expect(await hub.stop('SIGTERM')).toBe(0);
  });
});
