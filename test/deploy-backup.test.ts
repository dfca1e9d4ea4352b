/**
 * The backup and restore procedures of docs/operations.md ("Backups of the embedded store"), run
 * as documented against a hub started through the CLI:
 *
 * - hot backup with scripts/lmdb-backup.mjs (plain and --compact) while publishers keep
 *   publishing: each copy holds every update acknowledged before the backup started, and what
 *   it holds is a gap-free prefix of what was acknowledged (one consistent snapshot);
 * - offline copy (`cp --sparse=always` of the data file, hub stopped): everything acknowledged;
 * - restore: a hub started on each copy replays that history to a subscriber asking for
 *   `earliest`, and takes new publishes.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY, legacyToken } from './helpers.js';
import { freePort, startHubProcess, waitUntil } from './process-helpers.js';

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BACKUP = join(ROOT, 'scripts', 'lmdb-backup.mjs');
const TOPIC = 'https://example.com/backup';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qs-backup-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hubArgs = (port: number, store: string): string[] =>
  ['--jwt-key', KEY, '--anonymous', '--addr', `127.0.0.1:${port}`, '--transport-url', `lmdb://${store}`];

/** The whole history, as a subscriber asking for `earliest` gets it (ids in order). */
async function history(hubUrl: string, expected: number): Promise<string[]> {
  const ids: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const req = http.get(`${hubUrl}?topic=${encodeURIComponent(TOPIC)}`, { headers: { Accept: 'text/event-stream', 'Last-Event-ID': 'earliest' } }, (res) => {
      let buffer = '';
      let quiet: NodeJS.Timeout | undefined;
      const done = () => {
        req.destroy();
        resolve();
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        for (const m of buffer.matchAll(/^id: (.*)$/gm)) ids.push(m[1]!);
        buffer = buffer.slice(buffer.lastIndexOf('\n') + 1);
        clearTimeout(quiet);
        quiet = setTimeout(done, ids.length >= expected ? 200 : 1000);
      });
      res.on('error', () => {});
    });
    req.on('error', reject);
  });
  return ids;
}

describe('backups of the embedded store', () => {
  it('hot backups while publishing hold a consistent prefix; an offline copy holds everything; each restores', async () => {
    const port = await freePort();
    const store = join(dir, 'hub.lmdb');
    let hub = await startHubProcess(hubArgs(port, store));
    const token = await legacyToken({ publish: ['*'] });

    const acked: string[] = [];
    let stop = false;
    const publisher = (async () => {
      for (let i = 0; !stop; i++) {
        const res = await fetch(hub.hubUrl, {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}` },
          body: new URLSearchParams({ topic: TOPIC, id: `u-${i}`, data: String(i) }),
        });
        if (res.status !== 200) throw new Error(`publish ${i}: ${res.status}`);
        acked.push(`u-${i}`);
      }
    })();

    await waitUntil(() => acked.length >= 200, 15_000, 'updates before the backup');
    const beforeHot = acked.length;
    await run(process.execPath, [BACKUP, store, join(dir, 'hot.lmdb')]);
    const beforeCompact = acked.length;
    await run(process.execPath, [BACKUP, store, join(dir, 'compact.lmdb'), '--compact']);
    await waitUntil(() => acked.length >= beforeCompact + 50, 15_000, 'updates after the backups');
    // The script refuses to overwrite an existing backup.
    await expect(run(process.execPath, [BACKUP, store, join(dir, 'hot.lmdb')])).rejects.toThrow(/exists/);
    stop = true;
    await publisher;
    expect(await hub.stop('SIGTERM')).toBe(0);

    // Offline copy: the hub is stopped; the data file is all there is to copy.
    await run('cp', ['--sparse=always', store, join(dir, 'offline.lmdb')]);

    const restore = async (file: string, atLeast: number, exact: boolean): Promise<void> => {
      // Restore = put the copy where the hub's transport URL points, then start the hub.
      const target = join(dir, `restored-${file}`);
      await run('cp', ['--sparse=always', join(dir, file), target]);
      const p = await freePort();
      const restored = await startHubProcess(hubArgs(p, target));
      try {
        const ids = await history(restored.hubUrl, exact ? acked.length : atLeast);
        expect(ids.length, file).toBeGreaterThanOrEqual(atLeast);
        expect(ids, file).toEqual(acked.slice(0, ids.length));
        if (exact) expect(ids.length).toBe(acked.length);
        const res = await fetch(restored.hubUrl, {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}` },
          body: new URLSearchParams({ topic: TOPIC, data: 'after restore' }),
        });
        expect(res.status).toBe(200);
      } finally {
        expect(await restored.stop('SIGTERM')).toBe(0);
      }
    };
    await restore('hot.lmdb', beforeHot, false);
    await restore('compact.lmdb', beforeCompact, false);
    await restore('offline.lmdb', acked.length, true);
    console.log(`deploy-backup: ${acked.length} updates acknowledged; hot backups after ${beforeHot} and ${beforeCompact}`);
  }, 60_000);

  it('the backup script explains its usage and refuses a missing store', async () => {
    await expect(run(process.execPath, [BACKUP])).rejects.toMatchObject({ code: 2 });
    await expect(run(process.execPath, [BACKUP, join(dir, 'nope.lmdb'), join(dir, 'x.lmdb')])).rejects.toMatchObject({ code: 1 });
  });
});
