#!/usr/bin/env node
/**
 * Hot backup of Quicksilver's embedded LMDB store, while the hub runs:
 *
 *   node scripts/lmdb-backup.mjs /var/lib/quicksilver/hub.lmdb /backup/hub-$(date +%F).lmdb [--compact]
 *
 * Opens the store read-only beside the running hub (LMDB readers never block the writer) and
 * copies one consistent snapshot: every update the hub had acknowledged (200) when the copy
 * started, nothing half-written. `--compact` leaves out free pages (smaller, a little slower).
 * Same result as `mdb_copy -n` from Debian's lmdb-utils. Run it as a user that may read the
 * store and write its lock file (root, or the hub's user). Restoring is an offline operation:
 * see docs/operations.md, "Backups".
 *
 * Exit codes: 0 done, 1 failed, 2 bad usage.
 */
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { createRequire } from 'node:module';

const args = process.argv.slice(2);
const compact = args.includes('--compact');
const paths = args.filter((a) => a !== '--compact');
if (paths.length !== 2 || paths.some((p) => p.startsWith('-'))) {
  process.stderr.write('usage: lmdb-backup.mjs <store path> <backup path> [--compact]\n');
  process.exit(2);
}
const [source, target] = paths.map((p) => resolve(p));
const stat = statSync(source, { throwIfNoEntry: false });
if (!stat) {
  process.stderr.write(`lmdb-backup: no store at ${source}\n`);
  process.exit(1);
}
if (existsSync(target)) {
  process.stderr.write(`lmdb-backup: ${target} exists; refusing to overwrite it\n`);
  process.exit(1);
}

// `lmdb` is resolved from the Quicksilver installation this script belongs to (or the current
// directory), so it runs from a checkout, /opt/quicksilver or the container image alike.
const require = createRequire(new URL('../package.json', import.meta.url));
let lmdb;
try {
  lmdb = await import(require.resolve('lmdb'));
} catch {
  lmdb = await import(createRequire(resolve('package.json')).resolve('lmdb'));
}

try {
  const db = lmdb.open({ path: source, noSubdir: !stat.isDirectory(), readOnly: true, maxDbs: 4 });
  await db.backup(target, compact);
  await db.close();
  process.stdout.write(`lmdb-backup: ${source} -> ${target}${compact ? ' (compacted)' : ''}\n`);
} catch (err) {
  process.stderr.write(`lmdb-backup: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
