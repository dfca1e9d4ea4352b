#!/usr/bin/env node
// Broadcast over HTTP/2 against the HTTP/1.1 raw-socket path, in one run (issue 13 §4).
//
//   node bench/h2.mjs [--subscribers 10000] [--updates K] [--streams-per-session 100]
//                     [--cases h1,h2c-multi,h2c-single,tls-multi,tls-single,h1] (also: tls-h1)
//                     [--generators 2] [--publishers 4] [--cpu-prof DIR] [--json FILE]
//
// Needs `npm run build` (the hub is dist/cli.js) and `openssl` (a self-signed certificate for the
// TLS cases). Each case starts a fresh hub, `node dist/cli.js --workers 1 --transport-url memory://`
// (plus `--h2c`, or `--cert-file/--key-file` for TLS HTTP/2 with ALPN), and:
//  1. connects N event streams from forked generator processes, all on one topic: over HTTP/1.1
//     (raw sockets, one stream per connection: the raw fast path; `tls-h1`: HTTP/1.1 on the TLS
//     port, served by node:http, to tell the cost of TLS from that of HTTP/2), or over HTTP/2
//     with node:http2, either `--streams-per-session` streams on each session ("multi", N / S
//     sessions: one browser with many tabs, or a proxy multiplexing clients) or one stream per
//     session ("single", N sessions: one tab per browser, the common case);
//  2. idle memory: the hub's RSS once every stream is open and idle, minus its RSS before the first
//     connection, divided by N (bytes per stream; the session's share included);
//  3. broadcast: K updates (default: about 2.5 M deliveries in all) POSTed by `--publishers`
//     sequential HTTP/1.1 keep-alive publishers as fast as the hub answers; deliveries/s = N × K /
//     (last event received − first publish), and the hub's CPU time per delivery (/proc), which
//     does not depend on whether the generators kept up. Every delivery is counted (an event is a
//     blank-line-terminated frame), none may be lost.
// The h2 clients advertise the flow-control windows Chrome does (6 MiB per stream, 15 MiB per
// session), so the hub's writes are not throttled by a 64 KiB default window no browser uses.
// The hub allows 1 000 concurrent streams per session (SETTINGS_MAX_CONCURRENT_STREAMS), so
// `--streams-per-session` must stay at or below that.
// The HTTP/1.1 case runs first and last: the gap between the two is the machine's noise.
// `--cpu-prof DIR` writes a V8 CPU profile of each hub to DIR (summarise it with
// bench/profile-summary.mjs).
import { execFileSync, fork, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const TOPIC = 'https://bench.example/h2';
const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------------
// Generator: holds a share of the subscribers, counts events, answers the parent over IPC.
// ------------------------------------------------------------------------------------------------

function generator() {
  /** @type {{ destroy(): void }[]} */
  let handles = [];
  let events = 0;
  let lastAt = 0;
  let cut = 0;
  let closing = false;

  // An event ends with a blank line; heartbeats (":\n") and the h1 chunk framing ("\r\n") never
  // make one. `st.nl` carries a frame's final newline split across reads.
  const count = (st, buf) => {
    let n = 0;
    let i = 0;
    if (st.nl && buf[0] === 10) {
      n++;
      i = 1;
    }
    for (let j = buf.indexOf('\n\n', i); j !== -1; j = buf.indexOf('\n\n', j + 2)) {
      n++;
      i = j + 2;
    }
    st.nl = buf.length > i && buf[buf.length - 1] === 10;
    if (n > 0) {
      events += n;
      lastAt = nowMs();
    }
  };

  const h1 = (url, pathname) =>
    new Promise((resolve) => {
      const secure = url.protocol === 'https:';
      const sock = secure
        ? tls.connect({ port: Number(url.port), host: url.hostname, ALPNProtocols: ['http/1.1'], rejectUnauthorized: false })
        : net.connect(Number(url.port), url.hostname);
      sock.setNoDelay(true);
      const st = { nl: false, head: true };
      let ok = false;
      sock.on(secure ? 'secureConnect' : 'connect', () => sock.write(`GET ${pathname} HTTP/1.1\r\nHost: ${url.host}\r\nAccept: text/event-stream\r\n\r\n`));
      sock.on('data', (buf) => {
        if (st.head) {
          st.head = false;
          ok = buf.subarray(0, 12).toString('latin1') === 'HTTP/1.1 200';
          const end = buf.indexOf('\r\n\r\n');
          resolve(ok ? null : `status line ${buf.subarray(0, 12).toString('latin1')}`);
          if (end === -1) return;
          buf = buf.subarray(end + 4);
        }
        count(st, buf);
      });
      sock.on('error', (e) => resolve(e.message));
      sock.on('close', () => ok && !closing && cut++);
      handles.push(sock);
    });

  const h2Session = (url, pathname, streams, ca) =>
    new Promise((resolve) => {
      const session = http2.connect(url.origin, {
        ...(ca ? { ca, checkServerIdentity: () => undefined } : {}),
        settings: { initialWindowSize: 6 * 1024 * 1024 },
      });
      handles.push(session);
      let pending = streams;
      let failed = null;
      session.on('error', (e) => resolve(e.message));
      session.on('connect', () => {
        session.setLocalWindowSize(15 * 1024 * 1024);
        for (let s = 0; s < streams; s++) {
          const req = session.request({ ':path': pathname, accept: 'text/event-stream' });
          const st = { nl: false };
          let ok = false;
          req.on('response', (h) => {
            ok = h[':status'] === 200;
            if (!ok) failed ??= `status ${h[':status']}`;
            if (--pending === 0) resolve(failed);
          });
          req.on('data', (buf) => count(st, buf));
          req.on('error', (e) => {
            failed ??= e.message;
            if (!ok && --pending === 0) resolve(failed);
          });
          req.on('close', () => ok && !closing && cut++);
        }
      });
    });

  process.on('message', async (m) => {
    if (m.cmd === 'connect') {
      events = 0;
      lastAt = 0;
      cut = 0;
      closing = false;
      const url = new URL(m.url);
      const ca = m.ca ? readFileSync(m.ca) : undefined;
      const units = m.proto === 'h1' ? m.count : Math.ceil(m.count / m.perSession);
      let left = m.count;
      let failed = 0;
      const errors = new Set();
      const start = performance.now();
      // A bounded number of handshakes in flight: a burst of 5 000 SYNs only measures the backlog.
      let next = 0;
      const worker = async () => {
        while (next < units) {
          next++;
          const n = m.proto === 'h1' ? 1 : Math.min(m.perSession, left);
          left -= n;
          const err = m.proto === 'h1' ? await h1(url, m.path) : await h2Session(url, m.path, n, ca);
          if (err) {
            failed += n;
            errors.add(err);
          }
        }
      };
      await Promise.all(Array.from({ length: 64 }, worker));
      process.send({ connected: m.count - failed, failed, errors: [...errors].slice(0, 3), seconds: (performance.now() - start) / 1000 });
    } else if (m.cmd === 'reset') {
      events = 0;
      lastAt = 0;
      process.send({ ok: true });
    } else if (m.cmd === 'stats') {
      const cpu = process.cpuUsage();
      process.send({ events, lastAt, cut, cpuMs: (cpu.user + cpu.system) / 1000, rss: process.memoryUsage().rss });
    } else if (m.cmd === 'close') {
      closing = true;
      for (const h of handles) h.destroy();
      handles = [];
      process.send({ ok: true });
    }
  });
  process.on('disconnect', () => process.exit(0));
}

// ------------------------------------------------------------------------------------------------
// Parent: hubs, publishers, measurements.
// ------------------------------------------------------------------------------------------------

function procStat(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1] ?? 0) * 1024;
  // utime and stime (fields 14 and 15) in clock ticks of 10 ms.
  return { cpuMs: (Number(f[11]) + Number(f[12])) * 10, rss };
}

function jwt(key, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

/** A child process answering one IPC request at a time. */
class Generator {
  constructor() {
    this.child = fork(fileURLToPath(import.meta.url), ['--generator'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.queue = Promise.resolve();
  }
  ask(msg) {
    const p = this.queue.then(() => new Promise((resolve) => {
      this.child.once('message', resolve);
      this.child.send(msg);
    }));
    this.queue = p.catch(() => {});
    return p;
  }
  kill() {
    this.child.kill();
  }
}

async function startHub(kind, key, cert, cpuProf) {
  const listen = kind === 'h1' ? [] : kind === 'h2c' ? ['--h2c'] : ['--cert-file', cert.cert, '--key-file', cert.key];
  const prof = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`, `--cpu-prof-name=hub-${kind}-${Date.now()}.cpuprofile`] : [];
  const child = spawn(process.execPath, [...prof, CLI, '--workers', '1', '--transport-url', 'memory://', '--jwt-key', key, '--anonymous',
    '--addr', '127.0.0.1:0', '--shutdown-timeout', '2s', '--log-format', 'json', '--log-level', 'info', ...listen], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    const t = setTimeout(() => reject(new Error('hub not ready in 15 s')), 15_000);
    rl.on('line', (line) => {
      try {
        const o = JSON.parse(line);
        if (o.msg === 'Quicksilver hub ready') {
          clearTimeout(t);
          resolve(o.url);
        }
      } catch {}
    });
    child.once('exit', (code) => reject(new Error(`hub exited (${code})`)));
  });
  return { child, url, pid: child.pid };
}

async function stopHub(hub) {
  if (hub.child.exitCode !== null) return;
  const exited = new Promise((r) => hub.child.once('exit', r));
  hub.child.kill('SIGTERM');
  const kill = setTimeout(() => hub.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(kill);
}

async function publishAll(url, token, count, publishers, payload) {
  const u = new URL('/.well-known/mercure', url);
  const tls = u.protocol === 'https:';
  const agent = tls ? httpsAgent(publishers) : new http.Agent({ keepAlive: true, maxSockets: publishers });
  let next = 0;
  let failed = 0;
  const one = (i) =>
    new Promise((resolve) => {
      const body = `topic=${encodeURIComponent(TOPIC)}&data=${i}-${payload}`;
      const req = (tls ? https.request : http.request)(u, {
        method: 'POST',
        agent,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
      }, (res) => {
        if (res.statusCode !== 200) failed++;
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', () => {
        failed++;
        resolve();
      });
      req.end(body);
    });
  const worker = async () => {
    while (next < count) await one(next++);
  };
  await Promise.all(Array.from({ length: publishers }, worker));
  agent.destroy();
  return failed;
}

function httpsAgent(n) {
  return new https.Agent({ keepAlive: true, maxSockets: n, rejectUnauthorized: false });
}

async function runCase(c, opts, gens, cert) {
  const key = 'bench-h2-' + 'k'.repeat(32);
  const token = jwt(key, { mercure: { publish: ['*'] } });
  const hub = await startHub(c.hub, key, cert, opts.cpuProf);
  try {
    await sleep(500);
    const before = procStat(hub.pid);
    const pathname = `/.well-known/mercure?topic=${encodeURIComponent(TOPIC)}`;
    const share = (i) => Math.floor(opts.subscribers / gens.length) + (i < opts.subscribers % gens.length ? 1 : 0);
    const conn = await Promise.all(gens.map((g, i) =>
      g.ask({ cmd: 'connect', proto: c.proto, url: hub.url, path: pathname, count: share(i), perSession: c.perSession, ca: c.hub === 'tls' ? cert.cert : undefined })));
    const connected = conn.reduce((n, r) => n + r.connected, 0);
    const failed = conn.reduce((n, r) => n + r.failed, 0);
    if (failed > 0) console.log(`  ${c.name}: ${failed} streams failed: ${conn.flatMap((r) => r.errors).join('; ')}`);
    await sleep(2_000);
    const idle = procStat(hub.pid);
    const bytesPerStream = Math.round((idle.rss - before.rss) / connected);

    const payload = 'x'.repeat(opts.payload);
    const waitFor = async (target, stallMs = 5_000) => {
      let last = -1;
      let lastChange = performance.now();
      for (;;) {
        const st = await Promise.all(gens.map((g) => g.ask({ cmd: 'stats' })));
        const events = st.reduce((n, s) => n + s.events, 0);
        if (events >= target) return st;
        if (events !== last) {
          last = events;
          lastChange = performance.now();
        } else if (performance.now() - lastChange > stallMs) return st;
        await sleep(50);
      }
    };
    // Warm-up: JIT, buffers, window updates.
    await publishAll(hub.url, token, 20, opts.publishers, payload);
    await waitFor(connected * 20);
    await Promise.all(gens.map((g) => g.ask({ cmd: 'reset' })));
    const genBefore = await Promise.all(gens.map((g) => g.ask({ cmd: 'stats' })));

    const cpu0 = procStat(hub.pid).cpuMs;
    const t0 = nowMs();
    const pubFailed = await publishAll(hub.url, token, opts.updates, opts.publishers, payload);
    const publishedAt = nowMs();
    const st = await waitFor(connected * opts.updates);
    const cpu1 = procStat(hub.pid).cpuMs;
    const delivered = st.reduce((n, s) => n + s.events, 0);
    const end = Math.max(...st.map((s) => s.lastAt));
    const seconds = (end - t0) / 1000;
    const result = {
      case: c.name,
      streams: connected,
      sessions: c.proto === 'h1' ? connected : Math.ceil(connected / c.perSession),
      idleBytesPerStream: bytesPerStream,
      updates: opts.updates,
      expected: connected * opts.updates,
      delivered,
      lost: connected * opts.updates - delivered,
      cut: st.reduce((n, s) => n + s.cut, 0),
      publishFailed: pubFailed,
      publishSeconds: +((publishedAt - t0) / 1000).toFixed(2),
      seconds: +seconds.toFixed(2),
      deliveriesPerSecond: Math.round(delivered / seconds),
      hubCpuUsPerDelivery: +(((cpu1 - cpu0) * 1000) / delivered).toFixed(3),
      hubCpuCores: +((cpu1 - cpu0) / (end - t0)).toFixed(2),
      generatorCpuCores: +(st.reduce((n, s, i) => n + s.cpuMs - genBefore[i].cpuMs, 0) / (end - t0)).toFixed(2),
    };
    await Promise.all(gens.map((g) => g.ask({ cmd: 'close' })));
    return result;
  } finally {
    await stopHub(hub);
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      subscribers: { type: 'string', default: '10000' },
      updates: { type: 'string' },
      'streams-per-session': { type: 'string', default: '100' },
      cases: { type: 'string', default: 'h1,h2c-multi,h2c-single,tls-multi,tls-single,h1' },
      generators: { type: 'string', default: '2' },
      publishers: { type: 'string', default: '4' },
      payload: { type: 'string', default: '100' },
      'cpu-prof': { type: 'string' },
      json: { type: 'string' },
    },
  });
  const subscribers = Number(values.subscribers);
  const perSession = Number(values['streams-per-session']);
  if (perSession > 1000) throw new Error('--streams-per-session: the hub allows 1000 concurrent streams per session');
  const opts = {
    subscribers,
    updates: Number(values.updates ?? Math.max(50, Math.round(2_500_000 / subscribers))),
    publishers: Number(values.publishers),
    payload: Number(values.payload),
    cpuProf: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined,
  };
  const CASES = {
    h1: { proto: 'h1', hub: 'h1', perSession: 1 },
    'h2c-multi': { proto: 'h2', hub: 'h2c', perSession },
    'h2c-single': { proto: 'h2', hub: 'h2c', perSession: 1 },
    'tls-multi': { proto: 'h2', hub: 'tls', perSession },
    'tls-single': { proto: 'h2', hub: 'tls', perSession: 1 },
    'tls-h1': { proto: 'h1', hub: 'tls', perSession: 1 },
  };
  const cases = values.cases.split(',').map((n) => {
    if (!CASES[n]) throw new Error(`unknown case ${n}; known: ${Object.keys(CASES).join(', ')}`);
    return { name: n === 'h1' ? 'h1 (raw)' : n, ...CASES[n] };
  });

  const dir = mkdtempSync(path.join(tmpdir(), 'qs-bench-h2-'));
  const cert = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-keyout', cert.key, '-out', cert.cert], { stdio: 'ignore' });
  const gens = Array.from({ length: Number(values.generators) }, () => new Generator());
  const results = [];
  console.log(`h2 bench: ${subscribers} subscribers, ${opts.updates} updates of ${opts.payload} B, ${opts.publishers} publishers, ` +
    `${gens.length} generators, ${perSession} streams per session (multi); node ${process.version}, commit ${gitCommit()}`);
  try {
    for (const c of cases) {
      const r = await runCase(c, opts, gens, cert);
      results.push(r);
      console.log(`  ${r.case.padEnd(11)} ${String(r.streams).padStart(6)} streams / ${String(r.sessions).padStart(6)} sessions: ` +
        `${r.deliveriesPerSecond.toLocaleString('en-US').padStart(10)} deliveries/s, hub ${r.hubCpuUsPerDelivery} µs CPU/delivery (${r.hubCpuCores} cores), ` +
        `generators ${r.generatorCpuCores} cores, idle ${r.idleBytesPerStream.toLocaleString('en-US')} B/stream` +
        `${r.lost || r.cut || r.publishFailed ? `, LOST ${r.lost}, cut ${r.cut}, publish failures ${r.publishFailed}` : ''}`);
    }
  } finally {
    for (const g of gens) g.kill();
    rmSync(dir, { recursive: true, force: true });
  }
  const h1 = results.filter((r) => r.case === 'h1 (raw)');
  if (h1.length > 0) {
    const ref = h1.reduce((n, r) => n + r.deliveriesPerSecond, 0) / h1.length;
    const refCpu = h1.reduce((n, r) => n + r.hubCpuUsPerDelivery, 0) / h1.length;
    const refMem = h1.reduce((n, r) => n + r.idleBytesPerStream, 0) / h1.length;
    console.log(`relative to HTTP/1.1 (mean of ${h1.length} run${h1.length > 1 ? 's' : ''}: ${Math.round(ref).toLocaleString('en-US')} deliveries/s` +
      `${h1.length > 1 ? `, runs ${h1.map((r) => r.deliveriesPerSecond.toLocaleString('en-US')).join(' and ')}` : ''}):`);
    for (const r of results.filter((x) => x.case !== 'h1 (raw)')) {
      r.ratioToH1 = +(r.deliveriesPerSecond / ref).toFixed(2);
      r.cpuRatioToH1 = +(r.hubCpuUsPerDelivery / refCpu).toFixed(2);
      r.memoryRatioToH1 = +(r.idleBytesPerStream / refMem).toFixed(2);
      console.log(`  ${r.case.padEnd(11)} deliveries/s ${Math.round(r.ratioToH1 * 100)} % (target ≥ 70 %), hub CPU per delivery ${r.cpuRatioToH1}×, idle memory per stream ${r.memoryRatioToH1}×`);
    }
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ date: new Date().toISOString(), commit: gitCommit(), opts, results }, null, 2) + '\n');
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

if (process.argv[2] === '--generator') generator();
else await main();
