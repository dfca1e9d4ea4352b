// Diagnostic preload for a hub or bare broadcaster process: where the time between a publish
// request and the end of its fan-out goes. Not for benchmark figures (it wraps socket writes).
//
//   BENCH_PRELOAD=$PWD/bench/hub-timeline.mjs HUB_TIMELINE_DIR=/tmp/tl \
//     node bench/run.mjs --scenario latency --targets quicksilver,bare-uncoalesced ...
//
// BENCH_PRELOAD makes bench/targets.mjs start the hub and the bare broadcaster with
// `--import <file>`; each process writes hub-timeline-<pid>.json into HUB_TIMELINE_DIR (default:
// the OS temp dir) when it exits. It records:
//   - fan-outs: runs of socket writes with less than 3 ms between two writes (start, duration,
//     number of writes), and the event-loop utilisation over the whole run;
//   - for a POST handled by node:http (the hub): when the 'request' event came, when the handler
//     called res.end() (the 200: token verified, update dispatched) and when the next fan-out
//     started, all relative to the 'request' event.
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

const GAP_MS = 3;
/** @type {{ at: number, end: number | null, fanoutAt: number | null }[]} */
const requests = [];
/** @type {{ start: number, last: number, writes: number }[]} */
const bursts = [];
/** @type {{ start: number, last: number, writes: number } | null} */
let burst = null;
const postSockets = new WeakSet();
const elu0 = performance.eventLoopUtilization();

const origEmit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, ...args) {
  if (event === 'request' && args[0]?.method === 'POST') {
    const rec = { at: performance.now(), end: null, fanoutAt: null };
    requests.push(rec);
    postSockets.add(args[0].socket);
    const res = args[1];
    const origEnd = res.end;
    res.end = function (...a) {
      rec.end = performance.now() - rec.at;
      return origEnd.apply(this, a);
    };
  }
  return origEmit.call(this, event, ...args);
};

const origWrite = net.Socket.prototype.write;
net.Socket.prototype.write = function (...a) {
  if (!postSockets.has(this)) {
    const t = performance.now();
    if (burst && t - burst.last < GAP_MS) {
      burst.last = t;
      burst.writes++;
    } else {
      burst = { start: t, last: t, writes: 1 };
      bursts.push(burst);
      const r = requests[requests.length - 1];
      if (r && r.fanoutAt === null) r.fanoutAt = t - r.at;
    }
  }
  return origWrite.apply(this, a);
};

function pct(values, p) {
  const v = values.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  return Math.round(v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))] * 1000) / 1000;
}
const stat = (values) => ({ n: values.filter((x) => x !== null).length, p50: pct(values, 50), p90: pct(values, 90), p99: pct(values, 99), max: pct(values, 100) });

process.on('exit', () => {
  // Fan-outs of at least 100 writes: the broadcasts, not a heartbeat to a few streams.
  const big = bursts.filter((b) => b.writes >= 100);
  const summary = {
    pid: process.pid,
    argv: process.argv.slice(1, 3),
    eventLoopUtilization: Math.round(performance.eventLoopUtilization(elu0).utilization * 1000) / 1000,
    fanouts: { count: big.length, durationMs: stat(big.map((b) => b.last - b.start)), writes: stat(big.map((b) => b.writes)) },
    requests: { count: requests.length, endMs: stat(requests.map((r) => r.end)), fanoutStartMs: stat(requests.map((r) => r.fanoutAt)) },
    lastFanouts: big.slice(-20).map((b) => ({ ms: Math.round((b.last - b.start) * 1000) / 1000, writes: b.writes })),
  };
  const dir = process.env.HUB_TIMELINE_DIR ?? os.tmpdir();
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, `hub-timeline-${process.pid}.json`), JSON.stringify(summary, null, 1));
  } catch {
    // nowhere to write
  }
});
