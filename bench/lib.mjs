// Shared helpers for the benchmark: clocks, histograms, /proc readers, JWTs, child processes.
// Plain ESM JavaScript (Node 20 cannot run TypeScript directly); types are given in JSDoc.
import { createHmac } from 'node:crypto';
import { fork, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import * as hdr from 'hdr-histogram-js';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(BENCH_DIR, '..');

/** Milliseconds on a clock shared by every process of the machine (epoch based, sub-ms precision). */
export function nowMs() {
  return performance.timeOrigin + performance.now();
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------------
// Histograms: latencies are recorded in microseconds, 1 µs .. 10 min, 3 significant digits.
// ------------------------------------------------------------------------------------------------

/** @returns {import('hdr-histogram-js').Histogram} */
export function newHistogram() {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

/** @param {import('hdr-histogram-js').Histogram} h */
export function encodeHistogram(h) {
  return h.totalCount > 0 ? hdr.encodeIntoCompressedBase64(h) : '';
}

/** Adds encoded histograms (from several processes) into one. @param {string[]} encoded */
export function mergeHistograms(encoded) {
  const total = newHistogram();
  for (const e of encoded) {
    if (!e) continue;
    const h = hdr.decodeFromCompressedBase64(e, 32, false);
    total.add(h);
    h.destroy();
  }
  return total;
}

/** Latency summary in milliseconds. @param {import('hdr-histogram-js').Histogram} h */
export function summarize(h) {
  if (h.totalCount === 0) return { count: 0, p50: null, p90: null, p99: null, p999: null, max: null, mean: null };
  const ms = (us) => Math.round(us) / 1000;
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

// ------------------------------------------------------------------------------------------------
// /proc: process trees, RSS, CPU time
// ------------------------------------------------------------------------------------------------

/** @returns {Map<number, number>} pid → ppid for every process */
function processTable() {
  const table = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      table.set(Number(name), Number(rest[1]));
    } catch {
      // the process went away
    }
  }
  return table;
}

/** The pid and all its descendants. @param {number} root */
export function processTree(root) {
  const table = processTable();
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [pid, ppid] of table) if (ppid === out[i]) out.push(pid);
  return out.filter((p) => table.has(p));
}

/** VmRSS in bytes (0 when the process is gone). @param {number} pid */
export function rssOf(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** User + system CPU time in ms. @param {number} pid */
export function cpuOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * TICK_MS;
  } catch {
    return 0;
  }
}

/** @param {number[]} pids */
export const totalRss = (pids) => pids.reduce((a, p) => a + rssOf(p), 0);
/** @param {number[]} pids */
export const totalCpu = (pids) => pids.reduce((a, p) => a + cpuOf(p), 0);

/** Open file descriptors of a process. @param {number} pid */
export function fdCount(pid) {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

// ------------------------------------------------------------------------------------------------
// JWT (HS256), signed by hand: 100k subscriber tokens must be cheap to make.
// ------------------------------------------------------------------------------------------------

const b64u = (s) => Buffer.from(s).toString('base64url');
const JWT_HEADER = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

/** @param {object} payload @param {string} key */
export function signJwt(payload, key) {
  const body = `${JWT_HEADER}.${b64u(JSON.stringify(payload))}`;
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

// ------------------------------------------------------------------------------------------------
// Ports and readiness
// ------------------------------------------------------------------------------------------------

/** A free TCP port on 127.0.0.1 (or `count` consecutive-ish free ports). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

/**
 * Sends a raw HTTP/1.1 request (`Connection: close`) and resolves with { status, body } once the
 * server closes, the body de-chunked. The request is not half-closed: a server may drop a request
 * whose client sent FIN before an asynchronous answer was ready (the cluster's /metrics is one).
 */
export function httpRequest({ host = '127.0.0.1', port, method = 'GET', path: p = '/', headers = {}, body = '' }, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`timeout: ${method} ${p} on ${port}`));
    }, timeout);
    sock.setEncoding('latin1');
    sock.on('connect', () => {
      let head = `${method} ${p} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n`;
      for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
      if (body || method === 'POST') head += `Content-Length: ${Buffer.byteLength(body)}\r\n`;
      sock.write(head + '\r\n' + body);
    });
    sock.on('data', (d) => (buf += d));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.[01] (\d+)/.exec(buf);
      const head = buf.slice(0, buf.indexOf('\r\n\r\n'));
      const rest = buf.slice(buf.indexOf('\r\n\r\n') + 4);
      resolve({ status: m ? Number(m[1]) : 0, body: /\r\ntransfer-encoding:\s*chunked/i.test(head) ? unchunk(rest) : rest });
    });
  });
}

/** The payload of a chunked body (as latin1 text). */
function unchunk(s) {
  let out = '';
  let i = 0;
  for (;;) {
    const nl = s.indexOf('\r\n', i);
    if (nl < 0) return out;
    const n = parseInt(s.slice(i, nl), 16);
    if (!(n > 0)) return out;
    out += s.slice(nl + 2, nl + 2 + n);
    i = nl + 2 + n + 2;
  }
}

/** Polls until `GET path` answers 200 (or the process dies / time runs out). */
export async function waitHttp(port, { path: p = '/healthz', timeout = 15000, alive = () => true, host = '127.0.0.1' } = {}) {
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`process exited before listening on ${port}`);
    try {
      const r = await httpRequest({ host, port, path: p }, 1000);
      if (r.status > 0 && r.status < 500) return r;
      last = `status ${r.status}`;
    } catch (e) {
      last = /** @type {Error} */ (e).message;
    }
    await sleep(100);
  }
  throw new Error(`nothing answered on port ${port} within ${timeout} ms (${last})`);
}

/** Resolves when a TCP port accepts connections. */
export async function waitTcp(port, timeout = 15000, alive = () => true) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`process exited before listening on ${port}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`port ${port} not open within ${timeout} ms`);
}

// ------------------------------------------------------------------------------------------------
// Child processes that are always cleaned up
// ------------------------------------------------------------------------------------------------

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();

/** Spawns a process, keeps its last stderr lines, kills it on exit. */
export function spawnTracked(cmd, args, options = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  children.add(child);
  /** @type {string[]} */
  const tail = [];
  const keep = (d) => {
    for (const line of String(d).split('\n')) {
      if (!line.trim()) continue;
      tail.push(line);
      if (tail.length > 30) tail.shift();
    }
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  child.on('exit', () => {
    exited = true;
    children.delete(child);
  });
  return { child, tail, alive: () => !exited && child.exitCode === null && child.signalCode === null };
}

/** Forks a module with IPC, kills it on exit. */
export function forkTracked(modulePath, args = [], options = {}) {
  const child = fork(modulePath, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...options });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Stops a child: SIGTERM, then SIGKILL after `grace` ms. Kills the whole tree it started too. */
export async function stopChild(child, grace = 3000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const tree = child.pid ? processTree(child.pid) : [];
  const done = new Promise((r) => child.once('exit', r));
  try {
    child.kill('SIGTERM');
  } catch {
    // already gone
  }
  const timer = setTimeout(() => {
    for (const pid of tree.reverse()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }, grace);
  await done;
  clearTimeout(timer);
  // Orphaned descendants (workers) of a child that exited: kill them by pid.
  for (const pid of tree.slice(1)) {
    try {
      process.kill(pid, 0);
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export function killAllChildren() {
  for (const c of children) {
    try {
      if (c.pid) for (const pid of processTree(c.pid).reverse()) process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    killAllChildren();
    process.exit(130);
  });
}
process.once('exit', killAllChildren);

// ------------------------------------------------------------------------------------------------
// Formatting
// ------------------------------------------------------------------------------------------------

export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  if (Math.abs(n) >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  if (Math.abs(n) >= 1024) return `${(n / 1024).toFixed(2)} KB`;
  return `${Math.round(n)} B`;
}

export function ratio(a, b) {
  if (a === null || a === undefined || b === null || b === undefined || b === 0) return null;
  return Math.round((a / b) * 1000) / 1000;
}

// ------------------------------------------------------------------------------------------------
// Machine load: CPU used by processes outside this benchmark skews every figure; it is measured.
// ------------------------------------------------------------------------------------------------

/** Busy CPU time of the whole machine, in ms. */
function machineBusyMs() {
  const f = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) * TICK_MS;
}

/** CPU time (ms) of this process and all its descendants, alive or reaped. */
function ownTreeMs() {
  let total = 0;
  for (const pid of processTree(process.pid)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * TICK_MS;
    } catch {
      // gone
    }
  }
  return total;
}

/** Starts a measurement of the CPU used by other processes; `stop()` returns cores (average). */
export function foreignLoad() {
  const t0 = Date.now();
  const m0 = machineBusyMs();
  const o0 = ownTreeMs();
  return {
    stop() {
      const wall = Date.now() - t0;
      const foreign = machineBusyMs() - m0 - (ownTreeMs() - o0);
      return wall > 0 ? Math.max(0, Math.round((foreign / wall) * 100) / 100) : 0;
    },
  };
}
