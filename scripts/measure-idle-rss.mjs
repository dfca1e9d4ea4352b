#!/usr/bin/env node
/**
 * Memory per idle subscriber: starts the built hub (dist/cli.js, in-memory transport, anonymous
 * subscribers, default heartbeat), reads its resident memory (VmRSS, Linux), opens N event
 * streams from this process on loopback, each on its own topic, lets the hub settle, and reads
 * the memory again.
 *
 *   npm run build && node scripts/measure-idle-rss.mjs [connections=5000]
 *
 * Prints one JSON line: rss before/after, bytes per connection, connections per GiB. Needs
 * 2 × N file descriptors (this process and the hub each hold one per connection): raise
 * `ulimit -n` first for large N. Sizing advice built on it: docs/operations.md, "Sizing".
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const N = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 5000);
const KEY = 'measure-idle-rss-key-not-a-secret-0123456789';

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const port = await freePort();
// One process (the CLI otherwise runs one worker per core): the memory read is that process's.
const hub = spawn(process.execPath, [join(ROOT, 'dist', 'cli.js'), '--workers', '1', '--addr', `127.0.0.1:${port}`, '--anonymous',
  '--transport-url', 'memory://', '--log-level', 'warn'], {
  env: { PATH: process.env.PATH ?? '', JWT_KEY: KEY },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const base = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${base}/healthz`)).ok) break;
  } catch {
    if (i > 200) throw new Error('hub did not start');
  }
  await sleep(50);
}
// One warm-up stream, so that code paths are compiled before the baseline.
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const open = (i) => new Promise((resolve, reject) => {
  const req = http.get(`${base}/.well-known/mercure?topic=${encodeURIComponent(`https://example.com/idle/${i}`)}`,
    { agent, headers: { Accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      res.once('data', () => resolve(req));
      res.on('error', () => {});
    });
  req.on('error', reject);
});
const warm = await Promise.all(Array.from({ length: 50 }, (_, i) => open(`warm-${i}`)));
await sleep(1000);
const before = rssOf(hub.pid);
const reqs = [];
for (let i = 0; i < N; i += 200) {
  reqs.push(...await Promise.all(Array.from({ length: Math.min(200, N - i) }, (_, j) => open(i + j))));
}
await sleep(3000);
const after = rssOf(hub.pid);
const metrics = await (await fetch(`${base}/metrics`)).text();
const connected = Number(/^mercure_subscribers_connected (\d+)/m.exec(metrics)?.[1]);
for (const r of [...reqs, ...warm]) r.destroy();
hub.kill('SIGTERM');
await new Promise((r) => hub.once('exit', r));
const perConnection = Math.round((after - before) / N);
process.stdout.write(JSON.stringify({
  connections: N,
  connected,
  node: process.version,
  rssBeforeMiB: +(before / 2 ** 20).toFixed(1),
  rssAfterMiB: +(after / 2 ** 20).toFixed(1),
  bytesPerConnection: perConnection,
  connectionsPerGiB: Math.floor(2 ** 30 / perConnection),
}) + '\n');
