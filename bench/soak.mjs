// Soak: one hub in its default configuration (a worker per core, LMDB) under steady mixed load for
// a long time, checking that its footprint stays flat and that no update is lost or doubled.
//
//   npm run bench -- --soak 60m        (durations: 90s, 5m, 1h, 1h30m)
//
// For the whole duration:
//  - keepers: a stable set of subscribers that read everything; every update published must reach
//    each of them exactly once, in order;
//  - readers: churners that connect, read for a random while and disconnect;
//  - reconnectors: churners that disconnect and come back with Last-Event-ID = the last id they
//    read; while that id is still in history they must get exactly what they missed (no gap, no
//    duplicate); some stay away longer than history lasts, to exercise the other path;
//  - expiring: churners whose token expires a few seconds after they connect: the hub must end
//    the stream at the expiry, and never deliver an update published after it;
//  - stallers: subscribers that never read, so that the hub has to cut them as slow;
//  - a publisher at a steady rate, each update carrying a sequence number (its id is
//    soak-<seq>), over a few lanes that each send one request at a time, so that each lane's
//    updates must arrive in publish order; history is kept small (the LMDB transport's size
//    parameter) so that it is trimmed several times a second.
// Every sample interval, right after a full collection in every hub process, it records summed
// over the hub's processes RSS and open descriptors (/proc) and V8 heap used (each process's own
// report), and from /metrics active handles and event-loop delay. The verdict is in verdict().
//
// The subscribers are raw HTTP/1.1 clients over loopback, in two client processes (this file
// forked with QS_SOAK_ROLE=client). Stallers are a small Python program: a socket that must fill up
// quickly needs a small receive buffer and MSS set before connect(), which node:net cannot do (a
// Node socket that never reads absorbs ~4 MiB of kernel buffers before the hub sees any
// backpressure: ten minutes at this load). Without python3 they run in Node and are rarely cut.
//
// Diagnostics: QS_SOAK_PLAN='{"expiring":0}' overrides fields of the plan (soakPlan);
// QS_SOAK_CLIENT_ARGS="--cpu-prof --cpu-prof-dir=prof" gives node flags to the client processes.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeHistogram, fdCount, httpRequest, foreignLoad, forkTracked, freePort, mergeHistograms, newHistogram, nowMs, processTree, rssOf, signJwt, sleep, spawnTracked, stopChild, summarize, totalCpu } from './lib.mjs';
import { HUB_PATH, JWT_KEY, PUBLISHER_TOKEN, startHubProcess, transportUrl } from './targets.mjs';

const SELF = fileURLToPath(import.meta.url);
const TOPIC = 'https://soak.example/feed';
const ID_PREFIX = 'soak-';
/** RSS and heap: the median of the last third of the samples after warm-up against the first third's. */
const FLAT_LIMIT = 0.05;
/**
 * Loaded into every hub process (node --import; cluster workers inherit the flags): on SIGUSR2,
 * which the hub does not use, a full collection, then the process's memory and active resources
 * as one JSON line on stderr. Each sample is taken right after one, so that heap and RSS are what
 * the hub retains, not where its collector happens to be in its cycle (the three processes' heaps
 * grow and fall together by ~40 % over ~100 s at this load), and so that the primary's numbers,
 * which /metrics does not have, are known too.
 */
const GC_PRELOAD = `data:text/javascript,${encodeURIComponent(
  "process.on('SIGUSR2', () => { globalThis.gc?.(); const m = process.memoryUsage(); process.stderr.write(JSON.stringify({ soakMemory: { pid: process.pid, rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, resources: process.getActiveResourcesInfo().length } }) + '\\n'); });",
)}`;

// ------------------------------------------------------------------------------------------------
// Plan
// ------------------------------------------------------------------------------------------------

/** "90s", "5m", "1h", "1h30m", "500ms"; a plain number is seconds. Returns ms, or null. */
export function parseSoakDuration(text) {
  const s = String(text ?? '').trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) return null;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let ms = 0;
  for (const [, n, , u] of s.matchAll(/(\d+(\.\d+)?)(ms|s|m|h)/g)) ms += Number(n) * unit[/** @type {keyof typeof unit} */ (u)];
  return Math.round(ms);
}

/**
 * What a soak of `durationMs` does. Samples every minute (a tenth of the run when shorter, at
 * least 5 s); the warm-up is 2 min, or a third of a shorter run (at least two intervals): V8
 * sizes its heaps in the first minutes (the primary's young generation grew once, at ~2 min).
 * QS_SOAK_PLAN='{"expiring":0}' overrides fields (a diagnostic).
 */
export function soakPlan(durationMs, { keepers = 1000, rate = 50 } = {}) {
  const intervalMs = Math.min(60_000, Math.max(5_000, Math.round(durationMs / 10_000) * 1000));
  const warmupMs = Math.ceil(Math.min(120_000, Math.max(2 * intervalMs, durationMs / 3)) / intervalMs) * intervalMs;
  // History holds ~20 s of updates: trimmed every size/100 updates, i.e. several times a second.
  const historySize = Math.max(200, Math.round(rate * 20));
  const windowMs = (historySize / rate) * 1000;
  // A staller is cut ~10 s after its ~45 KB of kernel buffers fill up (dispatch timeout 5 s):
  // it stays stalled for twice the expected time before it looks.
  const frameBytes = 110;
  const expectedCutMs = (45_000 / (rate * frameBytes)) * 1000 + 6000;
  const stallMs = Math.min(120_000, Math.max(30_000, Math.round(2 * expectedCutMs)));
  return {
    durationMs,
    intervalMs,
    warmupMs,
    rate,
    // Publishing lanes: each sends its next update once the previous one is acknowledged (a
    // publish waits for the store's fsync), so four keep the rate when an answer takes longer
    // than 1/rate, as it does on a loaded machine.
    lanes: 4,
    pad: 64,
    historySize,
    keepers,
    clients: keepers >= 400 ? 2 : 1,
    readers: 150,
    readerLifeMs: [2000, 30_000],
    reconnectors: 100,
    onlineMs: [2000, 15_000],
    // Most come back well within history, some after it is gone.
    offlineMs: [200, Math.round(0.5 * windowMs)],
    staleShare: 0.15,
    staleOfflineMs: [Math.round(1.3 * windowMs), Math.round(1.6 * windowMs)],
    expiring: 20,
    expiryMs: [3000, 12_000],
    stallers: 8,
    // python3 when it is there (see the top of the file); false: Node sockets that never read.
    pythonStallers: true,
    stallMs,
    // Churners and stallers start spread over this, so that the population is steady by the end
    // of the warm-up.
    rampMs: Math.min(30_000, warmupMs / 2),
    // Connections are never ended for their age during the run (write_timeout, randomised to
    // 80-100 %, is set past it); a stuck write is cut after the default dispatch timeout.
    writeTimeoutS: Math.ceil((durationMs + 10 * 60_000) / 0.8 / 1000),
    dispatchTimeoutS: 5,
    ...(process.env.QS_SOAK_PLAN ? JSON.parse(process.env.QS_SOAK_PLAN) : {}),
  };
}

// ------------------------------------------------------------------------------------------------
// HTTP and SSE over raw sockets
// ------------------------------------------------------------------------------------------------

/** GET over a fresh connection, read until the server closes it. */
const httpGet = (port, p, timeout = 10_000) => httpRequest({ port, path: p }, timeout);

/** Prometheus text → Map of "name{labels}" → value. */
function parseMetrics(text) {
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}

/**
 * A keep-alive HTTP/1.1 client connection sending one request at a time (the publisher).
 * @param {number} port
 */
function keepAlive(port) {
  /** @type {net.Socket | null} */
  let sock = null;
  /** @type {((r: { status: number, body: string }) => void) | null} */
  let waiting = null;
  let buf = '';
  const finish = (status, body = '') => {
    const w = waiting;
    waiting = null;
    w?.({ status, body });
  };
  const open = () => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    buf = '';
    s.on('error', () => undefined);
    s.on('close', () => {
      if (sock === s) sock = null;
      finish(-1);
    });
    s.on('data', (d) => {
      buf += d.latin1Slice(0, d.length);
      const he = buf.indexOf('\r\n\r\n');
      if (he < 0) return;
      const head = buf.slice(0, he);
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      let end;
      if (cl) end = he + 4 + Number(cl[1]);
      else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
        const z = buf.indexOf('0\r\n\r\n', he + 4);
        if (z < 0) return;
        end = z + 5;
      } else end = he + 4;
      if (buf.length < end) return;
      const body = buf.slice(he + 4, end);
      buf = buf.slice(end);
      if (/\r\nconnection:\s*close/i.test(head)) {
        if (sock === s) sock = null;
        s.removeAllListeners('close');
        s.on('close', () => undefined);
        s.destroy();
      }
      finish(Number(head.slice(9, 12)), body);
    });
    return s;
  };
  return {
    /** @param {string} req @returns {Promise<{ status: number, body: string }>} */
    send(req, timeout = 15_000) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          sock?.destroy();
          finish(-2);
        }, timeout);
        waiting = (r) => {
          clearTimeout(timer);
          resolve(r);
        };
        if (!sock) sock = open();
        sock.write(req);
      });
    },
    close: () => sock?.destroy(),
  };
}

/**
 * One SSE subscription over a raw socket: HTTP/1.1 head, chunked framing, event parsing (id and
 * data lines, dispatched at the blank line). `how` the stream ended: local (we closed it), ended
 * (the hub ended the stream cleanly: its last chunk came), eof (FIN without it), reset, error,
 * connect-error.
 * @param {{ host: string, port: number, path: string, lastEventId?: string, token?: string, localAddress?: string }} o
 * @param {{ onHead: (status: number, cursor: string | undefined) => void, onEvent: (id: string | null, seq: number, t: number) => void, onClose: (how: string) => void }} h
 */
function openStream(o, h) {
  const sock = net.connect({ host: o.host, port: o.port, ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
  let local = false;
  let inHead = true;
  let headBuf = '';
  let chunked = false;
  let ended = false;
  let errCode = '';
  let connected = false;
  // chunked decoder: 0 = size line, 1 = data, 2 = CRLF after data, 3 = after the last chunk
  let cstate = 0;
  let sizeLine = '';
  let remaining = 0;
  let crlf = 0;
  // SSE
  let line = '';
  /** @type {string | null} */
  let evId = null;
  /** @type {string | null} */
  let evData = null;

  const dispatch = (d) => {
    const b1 = d.indexOf('|');
    const b2 = d.indexOf('|', b1 + 1);
    const seq = b2 > 0 ? Number(d.slice(b1 + 1, b2)) : NaN;
    if (Number.isNaN(seq)) return;
    h.onEvent(evId, seq, Number(d.slice(0, b1)));
  };
  const processLine = (l) => {
    if (l.length > 0 && l.charCodeAt(l.length - 1) === 13) l = l.slice(0, -1);
    if (l.length === 0) {
      if (evData !== null) dispatch(evData);
      evId = null;
      evData = null;
      return;
    }
    const c = l.charCodeAt(0);
    if (c === 58) return; // a comment: the opening one, heartbeats
    if (c === 100 && l.startsWith('data:')) {
      const v = l.charCodeAt(5) === 32 ? l.slice(6) : l.slice(5);
      evData = evData === null ? v : `${evData}\n${v}`;
    } else if (c === 105 && l.startsWith('id:')) evId = l.charCodeAt(3) === 32 ? l.slice(4) : l.slice(3);
  };
  /** @param {string} s @param {number} from @param {number} to */
  const sse = (s, from, to) => {
    let start = from;
    while (start < to) {
      const nl = s.indexOf('\n', start);
      if (nl < 0 || nl >= to) {
        line += s.slice(start, to);
        return;
      }
      const l = line ? line + s.slice(start, nl) : s.slice(start, nl);
      line = '';
      start = nl + 1;
      processLine(l);
    }
  };
  /** @param {string} s */
  const dechunk = (s) => {
    let i = 0;
    while (i < s.length) {
      if (cstate === 0) {
        const nl = s.indexOf('\n', i);
        if (nl < 0) {
          sizeLine += s.slice(i);
          return;
        }
        const text = sizeLine + s.slice(i, nl);
        sizeLine = '';
        i = nl + 1;
        const n = parseInt(text, 16);
        if (Number.isNaN(n)) {
          errCode = 'bad-chunk';
          sock.destroy();
          return;
        }
        if (n === 0) {
          ended = true;
          cstate = 3;
          return;
        }
        remaining = n;
        cstate = 1;
      } else if (cstate === 1) {
        const take = Math.min(remaining, s.length - i);
        sse(s, i, i + take);
        i += take;
        remaining -= take;
        if (remaining === 0) {
          cstate = 2;
          crlf = 2;
        }
      } else if (cstate === 2) {
        const take = Math.min(crlf, s.length - i);
        i += take;
        crlf -= take;
        if (crlf === 0) cstate = 0;
      } else return;
    }
  };

  sock.on('connect', () => {
    connected = true;
    sock.setNoDelay(true);
    let req = `GET ${o.path} HTTP/1.1\r\nHost: ${o.host}:${o.port}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n`;
    if (o.lastEventId !== undefined) req += `Last-Event-ID: ${o.lastEventId}\r\n`;
    if (o.token) req += `Authorization: Bearer ${o.token}\r\n`;
    sock.write(`${req}\r\n`);
  });
  sock.on('data', (buf) => {
    let s = buf.latin1Slice(0, buf.length);
    if (inHead) {
      headBuf += s;
      const end = headBuf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = headBuf.slice(0, end);
      s = headBuf.slice(end + 4);
      headBuf = '';
      inHead = false;
      const status = Number(head.slice(9, 12));
      let cursor;
      for (const hl of head.split('\r\n').slice(1)) {
        const colon = hl.indexOf(':');
        const name = hl.slice(0, colon).toLowerCase();
        const value = hl.slice(colon + 1).trim();
        if (name === 'transfer-encoding') chunked = /chunked/i.test(value);
        else if (name === 'last-event-id' || name === 'mercure-last-event-id') cursor = value;
      }
      h.onHead(status, cursor);
      if (status !== 200) {
        local = true;
        sock.destroy();
        return;
      }
    }
    if (s.length === 0) return;
    if (chunked) dechunk(s);
    else sse(s, 0, s.length);
  });
  sock.on('error', (e) => {
    errCode = /** @type {NodeJS.ErrnoException} */ (e).code ?? 'error';
  });
  sock.on('close', () => {
    let how;
    if (local) how = 'local';
    else if (!connected) how = 'connect-error';
    else if (ended) how = 'ended';
    else if (errCode === 'ECONNRESET') how = 'reset';
    else if (errCode) how = `error:${errCode}`;
    else how = 'eof';
    if (inHead && how !== 'local') h.onHead(0, undefined);
    h.onClose(how);
  });
  return {
    close() {
      local = true;
      sock.destroy();
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Client process: keepers and churners
// ------------------------------------------------------------------------------------------------

const rand = (a, b) => a + Math.random() * (b - a);

/**
 * Per-lane order: lane l carries the updates whose sequence number is l modulo `lanes`, each
 * published after the previous one was acknowledged, so each lane must arrive in order (lanes
 * interleave as the hub stored them). `last[l]` is the last one read from lane l (NaN: none yet,
 * the first is taken as it comes). Returns how many of the lane were skipped (> 0), -1 for a
 * duplicate or one out of order, 0 for the lane's next one.
 */
function laneStep(last, seq, lanes) {
  const l = seq % lanes;
  const prev = last[l];
  if (Number.isNaN(prev)) {
    last[l] = seq;
    return 0;
  }
  const expected = prev + lanes;
  if (seq < expected) return -1;
  last[l] = seq;
  return (seq - expected) / lanes;
}

function clientMain() {
  /** @type {any} */
  let cfg = null;
  let churnStopping = false;
  let finishing = false;
  /** @type {Set<{ close(): void }>} */
  const active = new Set();
  /** @type {Promise<void>[]} */
  const slots = [];
  const lat = newHistogram();
  let addr = 0;
  const nextAddress = () => (cfg.churnAddresses.length ? cfg.churnAddresses[addr++ % cfg.churnAddresses.length] : undefined);
  /** @type {any[]} */
  const reports = [];
  /** @type {any[]} */
  const incidents = [];
  const incident = (x) => {
    if (incidents.length < 50) incidents.push({ at: Date.now(), ...x });
  };
  const c = {
    connects: 0,
    connectFailures: 0,
    keeperDrops: 0,
    keeperReconnects: 0,
    readers: { sessions: 0, events: 0, gaps: 0, dups: 0, unexpected: 0 },
    reconnectors: { sessions: 0, events: 0, reconnects: 0, found: 0, stale: 0, gaps: 0, dups: 0, unexpected: 0 },
    expiring: { sessions: 0, events: 0, gaps: 0, dups: 0, onTime: 0, early: 0, late: 0, notEnded: 0, afterExpiry: 0, maxDelayMs: 0, unexpected: 0 },
  };
  /** @type {{ last: number[], arrived: number, events: number, lost: number, dups: number, idMismatch: number, live: boolean, stream: { close(): void } | null }[]} */
  const keepers = [];
  const streamPath = `${HUB_PATH}?topic=${encodeURIComponent(TOPIC)}`;

  /** Opens (or reopens, from the last event it read) keeper k; resolves with the response status. */
  function openKeeper(k) {
    return new Promise((resolve) => {
      c.connects++;
      const lastEventId = k.arrived >= 0 ? `${ID_PREFIX}${k.arrived}` : undefined;
      let settled = false;
      const settle = (v) => {
        if (!settled) {
          settled = true;
          resolve(v);
        }
      };
      k.stream = openStream({ host: '127.0.0.1', port: cfg.port, path: streamPath, lastEventId }, {
        onHead(status) {
          if (status === 200) k.live = true;
          else {
            c.connectFailures++;
            incident({ kind: 'keeper', what: 'connect failed', status });
          }
          settle(status);
        },
        onEvent(id, seq, t) {
          k.events++;
          k.arrived = seq;
          const r = laneStep(k.last, seq, cfg.lanes);
          if (r > 0) {
            k.lost += r;
            incident({ kind: 'keeper', what: 'gap', got: seq, missed: r });
          } else if (r < 0) {
            k.dups++;
            incident({ kind: 'keeper', what: 'duplicate or out of order', got: seq, lastInLane: k.last[seq % cfg.lanes] });
          }
          if (id !== `${ID_PREFIX}${seq}`) k.idMismatch++;
          const us = Math.round((nowMs() - t) * 1000);
          lat.recordValue(us < 1 ? 1 : us > 600_000_000 ? 600_000_000 : us);
        },
        onClose(how) {
          const wasLive = k.live;
          k.live = false;
          k.stream = null;
          settle(0);
          if (how === 'local' || finishing) return;
          // Keepers are never to be ended: count it, and come back where it left off so that the
          // rest of the run is still checked.
          c.keeperDrops++;
          incident({ kind: 'keeper', what: `closed by the hub (${how})`, arrived: k.arrived, wasLive });
          setTimeout(() => {
            if (finishing) return;
            c.keeperReconnects++;
            void openKeeper(k);
          }, 200);
        },
      });
    });
  }

  const noLanes = () => new Array(cfg.lanes).fill(NaN);

  /**
   * A churner's stream: open, keep for `lifeMs` (from the response), close. Each lane's order is
   * checked from `from` (what was read before, for a reconnect that history can serve) or from
   * its first event. Resolves with what happened.
   * @param {{ kind: string, lifeMs: number, from?: { last: number[], arrived: number } | null, lastEventId?: string, token?: string }} a
   */
  function churnStream({ kind, lifeMs, from = null, lastEventId, token }) {
    return new Promise((resolve) => {
      c.connects++;
      const st = {
        kind,
        last: from ? [...from.last] : noLanes(),
        /** @type {number[] | null} what was read before a reconnect history could not serve */
        before: /** @type {number[] | null} */ (null),
        arrived: from ? from.arrived : -1,
        events: 0,
        gaps: 0,
        dups: 0,
        status: 0,
        cursor: /** @type {string | undefined} */ (undefined),
        sentAt: Date.now(),
        headAt: 0,
        closedAt: 0,
        how: '',
        maxT: 0,
      };
      /** @type {NodeJS.Timeout | null} */
      let timer = null;
      const s = openStream({ host: '127.0.0.1', port: cfg.port, path: streamPath, lastEventId, token, localAddress: nextAddress() }, {
        onHead(status, cursor) {
          st.status = status;
          st.cursor = cursor;
          st.headAt = Date.now();
          if (status !== 200) {
            c.connectFailures++;
            incident({ kind, what: 'connect failed', status });
            return;
          }
          // Not found in history: no replay, the stream starts with the live updates (none of
          // which may be one already read).
          if (lastEventId !== undefined && cursor !== lastEventId) {
            st.before = st.last;
            st.last = noLanes();
          }
          timer = setTimeout(() => s.close(), lifeMs);
        },
        onEvent(_id, seq, t) {
          st.events++;
          st.arrived = seq;
          if (t > st.maxT) st.maxT = t;
          const l = seq % cfg.lanes;
          if (st.before && Number.isNaN(st.last[l]) && seq <= st.before[l]) {
            st.dups++;
            incident({ kind, what: 'update read before the reconnect sent again', got: seq, lastEventId });
          }
          const r = laneStep(st.last, seq, cfg.lanes);
          if (r > 0) {
            st.gaps += r;
            incident({ kind, what: 'gap', got: seq, missed: r, lastEventId });
          } else if (r < 0) {
            st.dups++;
            incident({ kind, what: 'duplicate or out of order', got: seq, lastInLane: st.last[l], lastEventId });
          }
        },
        onClose(how) {
          if (timer) clearTimeout(timer);
          active.delete(s);
          st.how = how;
          st.closedAt = Date.now();
          resolve(st);
        },
      });
      active.add(s);
    });
  }

  const tally = (bucket, st) => {
    bucket.sessions++;
    bucket.events += st.events;
    bucket.gaps += st.gaps;
    bucket.dups += st.dups;
  };

  async function readerSlot() {
    await sleep(rand(0, cfg.rampMs));
    while (!churnStopping) {
      const st = await churnStream({ kind: 'reader', lifeMs: rand(cfg.readerLifeMs[0], cfg.readerLifeMs[1]) });
      if (st.status !== 200) {
        await sleep(500);
        continue;
      }
      tally(c.readers, st);
      if (st.how !== 'local') {
        c.readers.unexpected++;
        incident({ kind: 'reader', what: `closed by the hub (${st.how})`, after: st.closedAt - st.headAt });
      }
    }
  }

  async function reconnectorSlot() {
    await sleep(rand(0, cfg.rampMs));
    /** @type {{ last: number[], arrived: number } | null} */
    let read = null;
    while (!churnStopping) {
      const lastEventId = read && read.arrived >= 0 ? `${ID_PREFIX}${read.arrived}` : undefined;
      const st = await churnStream({ kind: 'reconnector', lifeMs: rand(cfg.onlineMs[0], cfg.onlineMs[1]), from: lastEventId ? read : null, lastEventId });
      if (st.status !== 200) {
        await sleep(500);
        continue;
      }
      tally(c.reconnectors, st);
      if (lastEventId !== undefined && read) {
        const found = st.cursor === lastEventId;
        c.reconnectors.reconnects++;
        if (found) c.reconnectors.found++;
        else c.reconnectors.stale++;
        reports.push({ seq: read.arrived, sentAt: st.sentAt, headAt: st.headAt, found, gaps: st.gaps, dups: st.dups });
      }
      if (st.how !== 'local') {
        c.reconnectors.unexpected++;
        incident({ kind: 'reconnector', what: `closed by the hub (${st.how})`, after: st.closedAt - st.headAt });
      }
      if (st.arrived >= 0) read = { last: st.last, arrived: st.arrived };
      if (churnStopping) break;
      const stale = Math.random() < cfg.staleShare;
      await sleep(stale ? rand(cfg.staleOfflineMs[0], cfg.staleOfflineMs[1]) : rand(cfg.offlineMs[0], cfg.offlineMs[1]));
    }
  }

  async function expiringSlot() {
    await sleep(rand(0, cfg.rampMs));
    while (!churnStopping) {
      const expS = Math.ceil((Date.now() + rand(cfg.expiryMs[0], cfg.expiryMs[1])) / 1000);
      const token = signJwt({ mercure: { subscribe: ['*'] }, exp: expS }, cfg.jwtKey);
      // Closed here 10 s after the expiry if the hub has not ended it by then.
      const st = await churnStream({ kind: 'expiring', lifeMs: expS * 1000 - Date.now() + 10_000, token });
      if (st.status !== 200) {
        await sleep(500);
        continue;
      }
      tally(c.expiring, st);
      const e = c.expiring;
      // An update published at or after the expiry must never reach the stream (50 ms: the
      // publisher's clock is performance.now(), the hub's Date.now()).
      if (st.maxT >= expS * 1000 + 50) {
        e.afterExpiry++;
        incident({ kind: 'expiring', what: 'update delivered after the token expired', exp: expS * 1000, publishedAt: st.maxT });
      }
      const delay = st.closedAt - expS * 1000;
      if (st.how === 'local') {
        if (churnStopping) continue;
        e.notEnded++;
        incident({ kind: 'expiring', what: 'not ended 10 s after its token expired' });
      } else if (st.how !== 'ended' || delay < -1000) {
        e.early++;
        e.unexpected++;
        incident({ kind: 'expiring', what: `closed by the hub (${st.how}) ${Math.round(-delay)} ms before its token expired` });
      } else if (delay > 3000) {
        e.late++;
        incident({ kind: 'expiring', what: `ended ${delay} ms after its token expired` });
      } else e.onTime++;
      if (delay > e.maxDelayMs && st.how === 'ended') e.maxDelayMs = delay;
    }
  }

  const handlers = {
    init(a) {
      cfg = a;
      return { pid: process.pid };
    },
    async connectKeepers({ count }) {
      // Lane l's first update is l: the keepers are connected before the first publish.
      for (let i = 0; i < count; i++) keepers.push({ last: Array.from({ length: cfg.lanes }, (_, l) => l - cfg.lanes), arrived: -1, events: 0, lost: 0, dups: 0, idMismatch: 0, live: false, stream: null });
      let next = 0;
      let ok = 0;
      let failed = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < keepers.length) {
            const k = keepers[next++];
            if ((await openKeeper(k)) === 200) ok++;
            else failed++;
          }
        }),
      );
      return { ok, failed };
    },
    startChurn() {
      for (let i = 0; i < cfg.readers; i++) slots.push(readerSlot());
      for (let i = 0; i < cfg.reconnectors; i++) slots.push(reconnectorSlot());
      for (let i = 0; i < cfg.expiring; i++) slots.push(expiringSlot());
      return {};
    },
    async stopChurn() {
      churnStopping = true;
      for (const s of [...active]) s.close();
      await Promise.race([Promise.all(slots), sleep(15_000)]);
      return {};
    },
    /** `laneLast`: the last update of each lane, to count the keepers that have not read it yet. */
    stats({ laneLast } = {}) {
      const k = { n: keepers.length, live: 0, events: 0, lost: 0, dups: 0, idMismatch: 0, behind: 0 };
      for (const x of keepers) {
        if (x.live) k.live++;
        k.events += x.events;
        k.lost += x.lost;
        k.dups += x.dups;
        k.idMismatch += x.idMismatch;
        if (laneLast && x.last.some((v, l) => v < laneLast[l])) k.behind++;
      }
      const hist = encodeHistogram(lat);
      lat.reset();
      return {
        keepers: k,
        counters: c,
        reports: reports.splice(0),
        incidents: incidents.splice(0),
        churnLive: active.size,
        hist,
        rss: process.memoryUsage().rss,
      };
    },
    /** Keepers' lost updates at the end: those of each lane after the last one each read. */
    finish({ laneLast }) {
      finishing = true;
      let tail = 0;
      for (const k of keepers) {
        for (let l = 0; l < cfg.lanes; l++) tail += Math.max(0, (laneLast[l] - k.last[l]) / cfg.lanes);
        k.stream?.close();
      }
      return { tail };
    },
  };

  process.on('message', async (/** @type {any} */ msg) => {
    try {
      const result = await handlers[/** @type {keyof typeof handlers} */ (msg.cmd)](msg.args ?? {});
      process.send?.({ id: msg.id, ok: true, result });
    } catch (err) {
      process.send?.({ id: msg.id, ok: false, error: /** @type {Error} */ (err).stack ?? String(err) });
    }
  });
  process.on('disconnect', () => process.exit(0));
  setTimeout(() => process.exit(3), Number(process.env.QS_SOAK_LIFETIME_MS ?? 3 * 3_600_000)).unref();
}

/** The parent's handle on a client process. */
function clientProcess(index, lifetimeMs) {
  const child = forkTracked(SELF, [], { env: { ...process.env, QS_SOAK_ROLE: 'client', QS_SOAK_LIFETIME_MS: String(lifetimeMs) }, ...(process.env.QS_SOAK_CLIENT_ARGS ? { execArgv: process.env.QS_SOAK_CLIENT_ARGS.split(' ') } : {}) });
  let seq = 0;
  /** @type {Map<number, { resolve: Function, reject: Function }>} */
  const pending = new Map();
  child.on('message', (/** @type {any} */ m) => {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(`soak client ${index}: ${m.error}`));
  });
  child.on('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`soak client ${index} exited (${code ?? signal})`));
    pending.clear();
  });
  return {
    child,
    /** @returns {Promise<any>} */
    call(cmd, args = {}) {
      const id = ++seq;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ id, cmd, args });
      });
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Stallers: connect, never read
// ------------------------------------------------------------------------------------------------

// One thread per staller: connect with a small receive buffer and MSS (so that the kernel holds
// only a few tens of KB for it), send the request, read nothing for stall_s; then read what the
// kernel holds and see whether the stream ends (the hub cut it: FIN or reset once drained) or
// keeps flowing (it did not). One JSON line per staller on stdout; stops when stdin closes.
const STALLER_PY = String.raw`
import json, socket, sys, threading, time
cfg = json.loads(sys.argv[1])
stop = threading.Event()
lock = threading.Lock()
def emit(o):
    with lock:
        sys.stdout.write(json.dumps(o) + "\n")
        sys.stdout.flush()
def one(i):
    if stop.wait(cfg["stagger_s"] * i):
        return
    while not stop.is_set():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg["rcvbuf"])
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, cfg["mss"])
            s.settimeout(10)
            s.connect((cfg["host"], cfg["port"]))
            s.sendall(cfg["request"].encode("latin-1"))
        except OSError as e:
            emit({"how": "connect-error", "error": str(e)})
            s.close()
            stop.wait(1)
            continue
        t0 = time.time()
        emit({"event": "open"})
        if stop.wait(cfg["stall_s"]):
            s.close()
            emit({"how": "open", "stopped": True})
            return
        how, n, tail = "open", 0, b""
        s.settimeout(0.25)
        deadline = time.time() + cfg["drain_s"]
        while time.time() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                how = "reset"
                break
            except OSError as e:
                how = "error"
                break
            if not d:
                how = "eof"
                break
            n += len(d)
            tail = (tail + d)[-16:]
        s.close()
        emit({"how": how, "clean": tail.endswith(b"0\r\n\r\n"), "bytes": n, "stalled_ms": int((time.time() - t0) * 1000), "stopped": False})
threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(cfg["count"])]
for t in threads:
    t.start()
sys.stdin.read()
stop.set()
for t in threads:
    t.join(timeout=cfg["drain_s"] + 2)
`;

function pythonAvailable() {
  try {
    return spawnSync('python3', ['-c', 'import socket; socket.TCP_MAXSEG'], { stdio: 'ignore', timeout: 5000 }).status === 0;
  } catch {
    return false;
  }
}

/** Starts the stallers; `stats` counts their outcomes. */
function startStallers({ port, count, stallMs, rampMs, usePython }) {
  const st = { connected: 0, opened: 0, cut: 0, cutHow: /** @type {Record<string, number>} */ ({}), cleanEnded: 0, notCut: 0, connectErrors: 0, runner: usePython ? 'python3' : 'node' };
  const request = `GET ${HUB_PATH}?topic=${encodeURIComponent(TOPIC)} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`;
  const onResult = (r) => {
    if (r.event === 'open') {
      st.connected++;
      return;
    }
    if (r.how === 'connect-error') {
      st.connectErrors++;
      return;
    }
    st.opened++;
    if (r.stopped && r.how === 'open') {
      st.opened--; // stopped at the end of the run before it looked: not counted
      return;
    }
    if (r.how === 'open') st.notCut++;
    else if (r.clean) st.cleanEnded++;
    else {
      st.cut++;
      st.cutHow[r.how] = (st.cutHow[r.how] ?? 0) + 1;
    }
  };
  const drainS = 5;
  if (usePython) {
    const cfg = { host: '127.0.0.1', port, count, stall_s: stallMs / 1000, drain_s: drainS, stagger_s: Math.min(stallMs, rampMs) / 1000 / count, rcvbuf: 1024, mss: 200, request };
    const proc = spawnTracked('python3', ['-c', STALLER_PY, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let buf = '';
    proc.child.stdout?.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          onResult(JSON.parse(line));
        } catch {
          // not ours
        }
      }
    });
    let stopped = false;
    return {
      stats: st,
      pid: proc.child.pid,
      async stop() {
        if (stopped) return;
        stopped = true;
        proc.child.stdin?.end();
        const done = new Promise((r) => proc.child.once('exit', r));
        await Promise.race([done, sleep((drainS + 4) * 1000)]);
        await stopChild(proc.child, 1000);
      },
    };
  }
  // Node: the socket is paused (it reads at most its stream buffer) and resumed after the stall.
  let stopping = false;
  const loops = Array.from({ length: count }, async (_, i) => {
    await sleep((Math.min(stallMs, rampMs) / count) * i);
    while (!stopping) {
      const r = await new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.once('connect', () => st.connected++);
        let how = 'open';
        let n = 0;
        let tail = '';
        s.on('error', (e) => (how = /** @type {NodeJS.ErrnoException} */ (e).code === 'ECONNRESET' ? 'reset' : 'error'));
        s.on('connect', () => s.write(request));
        s.pause();
        const t0 = Date.now();
        const stall = setInterval(() => {
          if (!stopping && Date.now() - t0 < stallMs) return;
          clearInterval(stall);
          const wasStopping = stopping;
          s.on('data', (d) => {
            n += d.length;
            tail = (tail + d.latin1Slice(0, d.length)).slice(-16);
          });
          s.on('end', () => (how = 'eof'));
          s.resume();
          setTimeout(() => {
            s.destroy();
            resolve({ how, clean: tail.endsWith('0\r\n\r\n'), bytes: n, stopped: wasStopping && how === 'open' });
          }, drainS * 1000);
          s.on('close', () => resolve({ how, clean: tail.endsWith('0\r\n\r\n'), bytes: n, stopped: false }));
        }, 250);
      });
      onResult(r);
    }
  });
  return {
    stats: st,
    pid: undefined,
    async stop() {
      stopping = true;
      await Promise.race([Promise.all(loops), sleep((drainS + 2) * 1000)]);
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Publisher: one request at a time, update n due at t0 + n / rate
// ------------------------------------------------------------------------------------------------

function startPublisher({ port, rate, pad, lanes }) {
  const padding = 'x'.repeat(pad);
  const p = {
    stopping: false,
    /** ack time (Date.now) of each sequence number */
    ackAt: /** @type {number[]} */ ([]),
    /** every ack time, in order: how many were acknowledged by a given time */
    ackTimes: /** @type {number[]} */ ([]),
    /** the last sequence number acknowledged in each lane (lane l starts at l - lanes: none) */
    laneLast: Array.from({ length: lanes }, (_, l) => l - lanes),
    acked: 0,
    attempts: 0,
    failures: 0,
    statuses: /** @type {Record<string, number>} */ ({}),
    maxBehindMs: 0,
    fatal: /** @type {string | null} */ (null),
    rtt: newHistogram(),
    /** @type {Promise<unknown> | null} */
    done: null,
  };
  const interval = 1000 / rate;
  const t0 = nowMs();
  // Lane l publishes l, l + lanes, l + 2 lanes…: each when it is due and the lane's previous one
  // has been acknowledged. A lane that waits on a slow answer falls behind; the others go on.
  p.done = Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      const conn = keepAlive(port);
      for (let seq = lane; !p.stopping; seq += lanes) {
        const due = t0 + seq * interval;
        let now = nowMs();
        if (due > now) {
          await sleep(due - now);
          now = nowMs();
        }
        if (p.stopping) break;
        if (now - due > p.maxBehindMs) p.maxBehindMs = now - due;
        const t = nowMs();
        const body = `topic=${encodeURIComponent(TOPIC)}&id=${ID_PREFIX}${seq}&data=${encodeURIComponent(`${t.toFixed(3)}|${seq}|${padding}`)}`;
        const req = `POST ${HUB_PATH} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${PUBLISHER_TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
        // A failed publish is sent again with the same id: the hub's dedupe window answers 200
        // without storing it twice if the first attempt was stored after all.
        let ok = false;
        for (let attempt = 0; attempt <= 100 && !p.fatal; attempt++) {
          p.attempts++;
          const r = await conn.send(req);
          if (r.status === 200) {
            ok = true;
            break;
          }
          p.failures++;
          p.statuses[r.status] = (p.statuses[r.status] ?? 0) + 1;
          await sleep(100);
        }
        if (!ok) {
          p.fatal ??= `update ${seq} could not be published`;
          p.stopping = true;
          break;
        }
        const at = Date.now();
        p.ackAt[seq] = at;
        p.ackTimes.push(at);
        p.acked++;
        p.laneLast[lane] = seq;
        const us = Math.round((nowMs() - t) * 1000);
        p.rtt.recordValue(us < 1 ? 1 : us);
      }
      conn.close();
    }),
  );
  return p;
}

/** How many of the sorted times are at or before `time`. */
function countBy(times, time) {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] <= time) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ------------------------------------------------------------------------------------------------
// Samples, verdict, report
// ------------------------------------------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const mib = (b) => (b / 2 ** 20).toFixed(1);
const pct = (x) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`;
const ms = (s) => (s === null || s === undefined ? '–' : (s * 1000).toFixed(1));

const COLUMNS = [
  ['t', 6],
  ['phase', 7],
  ['RSS MiB', 8],
  ['heap MiB', 9],
  ['handles', 8],
  ['(+subs)', 8],
  ['fds', 6],
  ['(+subs)', 8],
  ['loop p99', 9],
  ['loop max', 9],
  ['subs', 6],
  ['hist', 6],
  ['pub/s', 6],
  ['lat p99', 8],
  ['lost', 5],
  ['dup', 4],
  ['reconn', 7],
  ['gaps', 5],
  ['slow', 5],
  ['churned', 8],
  ['hub cpu', 8],
  ['load cpu', 9],
  ['others', 7],
];

function tableHeader() {
  const head = COLUMNS.map(([n, w]) => String(n).padStart(Number(w))).join(' ');
  const units = COLUMNS.map(([n, w]) => (n === 't' ? 's' : n === 'loop p99' || n === 'loop max' || n === 'lat p99' ? 'ms' : n === 'hub cpu' || n === 'load cpu' || n === 'others' ? 'cores' : '').padStart(Number(w))).join(' ');
  return [head, units];
}

function tableRow(s) {
  const cells = [
    s.t.toFixed(0),
    s.phase,
    mib(s.rss),
    mib(s.heapUsed),
    String(s.handles),
    String(s.handlesExcess),
    String(s.fds),
    String(s.fdsExcess),
    ms(s.loopP99),
    ms(s.loopMax),
    String(s.subscribers),
    String(s.historySize),
    s.pubRate.toFixed(0),
    s.latP99 === null ? '–' : s.latP99.toFixed(1),
    String(s.lost),
    String(s.dups),
    String(s.reconnects),
    String(s.reconnectGaps),
    String(s.slow),
    String(s.churned),
    s.hubCores.toFixed(2),
    s.loadCores.toFixed(2),
    s.otherCores.toFixed(2),
  ];
  return cells.map((c, i) => c.padStart(Number(COLUMNS[i][1]))).join(' ');
}

/**
 * The verdict. Flat: the median of the last third of the samples taken after warm-up, against
 * the first third's, within ±5 %, for RSS and heap used, both read right after a full collection;
 * the largest deviation from the first sample after warm-up is shown too. Handles and descriptors: the count beyond one per connected subscriber (which churn
 * moves up and down) must not grow by more than the slack: the connections in flight at a
 * scrape (accepting, closing, the scrape itself) and the hub's timers.
 */
function verdict({ samples, plan, totals, stallers, usePython }) {
  const soaked = samples.filter((s) => s.phase === 'soak');
  const failures = [];
  if (soaked.length < 3) failures.push(`only ${soaked.length} samples after warm-up (need 3)`);
  const post = soaked.length ? soaked : samples;
  const k = Math.max(1, Math.floor(post.length / 3));
  const drift = (f) => {
    const a = median(post.slice(0, k).map(f));
    const b = median(post.slice(-k).map(f));
    const dev = Math.max(...post.map((s) => Math.abs(f(s) - f(post[0])) / f(post[0])));
    return { first: a, last: b, drift: a > 0 ? (b - a) / a : 0, maxDev: dev };
  };
  const rss = drift((s) => s.rss);
  const heap = drift((s) => s.heapUsed);
  if (Math.abs(rss.drift) > FLAT_LIMIT) failures.push(`RSS ${pct(rss.drift)} (limit ±${FLAT_LIMIT * 100} %)`);
  if (Math.abs(heap.drift) > FLAT_LIMIT) failures.push(`heap ${pct(heap.drift)} (limit ±${FLAT_LIMIT * 100} %)`);
  const first = post[0];
  const last = post[post.length - 1];
  const slack = 20 + Math.ceil(0.01 * first.subscribers);
  if (last.handlesExcess > first.handlesExcess + slack) failures.push(`handles beyond subscribers grew ${first.handlesExcess}→${last.handlesExcess} (slack ${slack})`);
  if (last.fdsExcess > first.fdsExcess + slack) failures.push(`fds beyond subscribers grew ${first.fdsExcess}→${last.fdsExcess} (slack ${slack})`);
  const t = totals;
  if (t.keeperLost > 0) failures.push(`keepers lost ${t.keeperLost} updates`);
  if (t.keeperDups > 0) failures.push(`keepers got ${t.keeperDups} duplicated or out-of-order updates`);
  if (t.keeperEvents !== t.expectedKeeperEvents) failures.push(`keepers read ${t.keeperEvents} updates, expected ${t.expectedKeeperEvents}`);
  if (t.keeperDrops > 0) failures.push(`${t.keeperDrops} keeper streams were closed by the hub`);
  if (t.idMismatch > 0) failures.push(`${t.idMismatch} events with an id other than the one published`);
  if (t.keepersConnected !== plan.keepers) failures.push(`${t.keepersConnected}/${plan.keepers} keepers connected`);
  if (t.reconnectGaps > 0 || t.reconnectDups > 0) failures.push(`reconnects from history: ${t.reconnectGaps} updates missed, ${t.reconnectDups} duplicated`);
  if (t.historyMisses > 0) failures.push(`${t.historyMisses} reconnects not found in history although their id was among the last ${plan.historySize} updates`);
  if (t.churnGaps > 0 || t.churnDups > 0) failures.push(`churners: ${t.churnGaps} updates missed, ${t.churnDups} duplicated while connected`);
  if (t.unexpectedCloses > 0) failures.push(`${t.unexpectedCloses} churner streams closed by the hub before their time`);
  if (t.connectFailures > 0) failures.push(`${t.connectFailures} subscriptions refused or failed to connect`);
  if (t.afterExpiry > 0) failures.push(`${t.afterExpiry} streams got an update published after their token expired`);
  if (t.expiryLate > 0 || t.expiryNotEnded > 0) failures.push(`expired tokens: ${t.expiryLate} streams ended more than 3 s late, ${t.expiryNotEnded} not ended`);
  if (t.publishFatal) failures.push(`publisher: ${t.publishFatal}`);
  // Node stallers (no python3) leave ~4 MiB of kernel buffers to fill first: not judged.
  if (usePython && stallers.notCut > 0) failures.push(`${stallers.notCut} stallers were not cut after ${Math.round(plan.stallMs / 1000)} s without reading`);
  if (stallers.cleanEnded > 0) failures.push(`${stallers.cleanEnded} stallers were ended cleanly instead of cut`);
  // Python stallers are cut ~15 s after they stop reading: a run twice the stall long must see cuts.
  if (usePython && stallers.connected > 0 && t.slowCuts === 0 && plan.durationMs >= 2 * plan.stallMs) failures.push('no staller was cut as slow');
  if (t.slowCuts > stallers.connected) failures.push(`${t.slowCuts} subscribers cut as slow, but only ${stallers.connected} stallers connected: readers were cut`);
  if (t.hubExited) failures.push(`the hub exited: ${t.hubExited}`);
  const loopP99 = Math.max(0, ...post.map((s) => s.loopP99 ?? 0));
  const loopMax = Math.max(0, ...post.map((s) => s.loopMax ?? 0));
  const pass = failures.length === 0;
  const line = `${pass ? 'SOAK PASS' : 'SOAK FAIL'}: RSS after warm-up ${pct(rss.drift)} (median of last third vs first third, limit ±${FLAT_LIMIT * 100} %; max deviation from first ${(rss.maxDev * 100).toFixed(1)} %), heap ${pct(heap.drift)} (max deviation ${(heap.maxDev * 100).toFixed(1)} %), handles ${first.handles}→${last.handles} (beyond subscribers ${first.handlesExcess}→${last.handlesExcess}, slack ${slack}), fds ${first.fds}→${last.fds} (beyond subscribers ${first.fdsExcess}→${last.fdsExcess}), event-loop p99 max ${ms(loopP99)} ms (max ${ms(loopMax)} ms), keepers: ${t.published} updates × ${plan.keepers} keepers, ${t.keeperLost} lost, ${t.keeperDups} duplicated; reconnects: ${t.reconnects} (${t.reconnectsFound} from history, ${t.reconnectsStale} past it), ${t.reconnectGaps} gaps, ${t.historyMisses} history misses; slow cut: ${t.slowCuts} (${stallers.connected} stallers connected, ${stallers.cut} seen cut, ${stallers.notCut} not cut); expired: ${t.expiredOnTime}; churned: ${t.churned}`;
  return { pass, line, failures, rss, heap, handleSlack: slack, loopP99, loopMax };
}

/** Each hub process's memory after a full collection: the first sample after warm-up → the last. */
function perProcessLines(samples) {
  const post = samples.filter((s) => s.phase === 'soak');
  const a = post[0];
  const b = post[post.length - 1];
  if (!a || !b || !a.perProcess || !b.perProcess) return [];
  const out = [`per process after a full collection, t=${a.t.toFixed(0)} s → t=${b.t.toFixed(0)} s (MiB; resources: process.getActiveResourcesInfo()):`];
  for (const pb of b.perProcess) {
    const pa = a.perProcess.find((x) => x.pid === pb.pid);
    if (!pa || pa.rss === undefined || pb.rss === undefined) {
      out.push(`  ${pb.role} ${pb.pid}: no report`);
      continue;
    }
    const f = (k) => `${mib(pa[k])}→${mib(pb[k])}`;
    out.push(`  ${pb.role.padEnd(7)} ${pb.pid}: rss ${f('rss')}, heap total ${f('heapTotal')}, heap used ${f('heapUsed')}, external ${f('external')} (array buffers ${f('arrayBuffers')}), rss beyond the heap ${mib(pa.rss - pa.heapTotal)}→${mib(pb.rss - pb.heapTotal)}, resources ${pa.resources}→${pb.resources}`);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------------

/**
 * @param {object} a
 * @param {number} a.durationMs
 * @param {number} [a.keepers]
 * @param {number} [a.rate]
 * @param {string} a.outDir
 * @param {(line: string) => void} a.log
 * @param {string} a.tag
 * @param {string} a.dir     scratch directory (the LMDB store goes there)
 * @param {any} a.meta       date, machine, revision… (kept in the JSON)
 * @param {string[]} [a.hubNodeArgs]
 * @returns {Promise<number>} exit code: 0 PASS, 1 FAIL
 */
export async function runSoak({ durationMs, keepers, rate, outDir, log, tag, dir, meta, hubNodeArgs = [] }) {
  const plan = soakPlan(durationMs, { keepers, rate });
  const usePython = plan.stallers > 0 && plan.pythonStallers && pythonAvailable();
  const port = await freePort();
  const url = `${transportUrl('lmdb', `soak-${tag}`, dir)}?size=${plan.historySize}`;
  log(`soak: ${(durationMs / 60_000).toFixed(1)} min, a sample every ${plan.intervalMs / 1000} s, warm-up ${plan.warmupMs / 1000} s; ${plan.keepers} keepers, ${plan.readers} readers, ${plan.reconnectors} reconnectors, ${plan.expiring} expiring tokens, ${plan.stallers} stallers (${usePython ? 'python3' : 'node sockets: cuts are unlikely and not judged'}); ${plan.rate} updates/s, history ${plan.historySize} (${url})`);
  const proc = await startHubProcess({
    port,
    transport: url,
    heartbeat: 0,
    anonymous: true,
    defaults: true,
    nodeArgs: ['--expose-gc', '--import', GC_PRELOAD, ...hubNodeArgs],
    env: { WRITE_TIMEOUT: `${plan.writeTimeoutS}s`, DISPATCH_TIMEOUT: `${plan.dispatchTimeoutS}s` },
  });
  const root = /** @type {number} */ (proc.child.pid);
  /** @type {Record<string, number>} */
  const hubLog = {};
  /** @type {Map<number, any>} the last memory report of each hub process (GC_PRELOAD) */
  const memReports = new Map();
  let logBuf = '';
  const onLog = (d) => {
    logBuf += d;
    let nl;
    while ((nl = logBuf.indexOf('\n')) >= 0) {
      const l = logBuf.slice(0, nl);
      logBuf = logBuf.slice(nl + 1);
      if (!l.trim()) continue;
      let key = l.slice(0, 120);
      try {
        const j = JSON.parse(l);
        if (j.soakMemory) {
          memReports.set(j.soakMemory.pid, { ...j.soakMemory, at: Date.now() });
          continue;
        }
        key = `${j.level ?? ''} ${j.msg ?? ''}`.trim();
      } catch {
        // not JSON
      }
      hubLog[key] = (hubLog[key] ?? 0) + 1;
    }
  };
  proc.child.stdout?.on('data', onLog);
  proc.child.stderr?.on('data', onLog);
  let hubExited = /** @type {string | null} */ (null);
  proc.child.once('exit', (code, signal) => (hubExited = `code ${code ?? signal}`));
  const cores = os.availableParallelism();
  for (let i = 0; i < 30 && processTree(root).length < cores + 1; i++) await sleep(100);
  await sleep(500);
  const pids = () => processTree(root);
  log(`hub: pid ${root}, ${pids().length - 1} workers, port ${port}`);

  const clients = Array.from({ length: plan.clients }, (_, i) => clientProcess(i, durationMs + 20 * 60_000));
  const churnAddresses = ['127.0.0.1', ...Array.from({ length: 3 }, (_, i) => `127.0.${(Number(tag.replace(/\D/g, '').slice(-2)) % 200) + 10}.${i + 2}`)];
  const share = (n, i) => Math.floor(n / plan.clients) + (i < n % plan.clients ? 1 : 0);
  await Promise.all(
    clients.map((cl, i) =>
      cl.call('init', {
        port,
        jwtKey: JWT_KEY,
        churnAddresses,
        readers: share(plan.readers, i),
        reconnectors: share(plan.reconnectors, i),
        expiring: share(plan.expiring, i),
        readerLifeMs: plan.readerLifeMs,
        onlineMs: plan.onlineMs,
        offlineMs: plan.offlineMs,
        staleShare: plan.staleShare,
        staleOfflineMs: plan.staleOfflineMs,
        expiryMs: plan.expiryMs,
        rampMs: plan.rampMs,
        lanes: plan.lanes,
      }),
    ),
  );
  const tc = Date.now();
  const conn = await Promise.all(clients.map((cl, i) => cl.call('connectKeepers', { count: share(plan.keepers, i) })));
  const keepersConnected = conn.reduce((a, r) => a + r.ok, 0);
  log(`keepers: ${keepersConnected}/${plan.keepers} connected in ${((Date.now() - tc) / 1000).toFixed(1)} s`);
  // Every worker has registered its keepers before the first update.
  await sleep(1000);

  /** @type {any[]} */
  const samples = [];
  /** @type {any[]} */
  const incidents = [];
  const judged = { historyMisses: 0, foundTrimmed: 0, unjudged: 0, reconnectGaps: 0, reconnectDups: 0 };
  /** @type {ReturnType<typeof startStallers> | null} */
  let stallers = null;
  /** @type {ReturnType<typeof startPublisher> | null} */
  let pub = null;
  const loadPids = () => [process.pid, ...clients.map((cl) => /** @type {number} */ (cl.child.pid)), ...(stallers?.pid ? [stallers.pid] : [])];
  let prev = { at: Date.now(), cpu: totalCpu(pids()), loadCpu: totalCpu(loadPids()), acked: 0, load: foreignLoad() };
  const t0 = Date.now();
  const [head, units] = tableHeader();

  /**
   * Judges the reconnects reported since the last call against the publisher's timeline. An id is
   * surely still in history when fewer than `size` updates were stored after it: counted from
   * the acknowledgements, with a margin for those in flight (one per lane, either side).
   */
  const judge = (reports) => {
    for (const r of reports) {
      const at = pub?.ackAt[r.seq];
      if (!pub || at === undefined) {
        judged.unjudged++;
        continue;
      }
      const through = countBy(pub.ackTimes, at);
      const storedAfter = countBy(pub.ackTimes, r.headAt) - through;
      const margin = 2 * plan.lanes + 1;
      if (!r.found && storedAfter + margin <= plan.historySize) {
        judged.historyMisses++;
        if (incidents.length < 50) incidents.push({ kind: 'reconnector', what: 'id not found in history although recent', seq: r.seq, storedAfter, at: r.headAt });
      }
      if (r.found && countBy(pub.ackTimes, r.sentAt) - through > plan.historySize * 1.02 + 10 + margin) judged.foundTrimmed++;
      if (r.found) {
        judged.reconnectGaps += r.gaps;
        judged.reconnectDups += r.dups;
      }
    }
  };

  const clientStats = async (laneLast) => {
    const parts = await Promise.all(clients.map((cl) => cl.call('stats', { laneLast })));
    for (const p of parts) {
      judge(p.reports);
      for (const x of p.incidents) if (incidents.length < 50) incidents.push(x);
    }
    const sumK = (f) => parts.reduce((a, p) => a + f(p), 0);
    const cs = parts.map((p) => p.counters);
    const sumC = (f) => cs.reduce((a, c) => a + f(c), 0);
    return {
      keeperEvents: sumK((p) => p.keepers.events),
      keeperLost: sumK((p) => p.keepers.lost),
      keeperDups: sumK((p) => p.keepers.dups),
      idMismatch: sumK((p) => p.keepers.idMismatch),
      keepersLive: sumK((p) => p.keepers.live),
      keepersBehind: sumK((p) => p.keepers.behind),
      keeperDrops: sumC((c) => c.keeperDrops),
      connectFailures: sumC((c) => c.connectFailures),
      reconnects: sumC((c) => c.reconnectors.reconnects),
      reconnectsFound: sumC((c) => c.reconnectors.found),
      reconnectsStale: sumC((c) => c.reconnectors.stale),
      churnGaps: sumC((c) => c.readers.gaps + c.expiring.gaps + c.reconnectors.gaps) - judged.reconnectGaps,
      churnDups: sumC((c) => c.readers.dups + c.expiring.dups + c.reconnectors.dups) - judged.reconnectDups,
      unexpectedCloses: sumC((c) => c.readers.unexpected + c.reconnectors.unexpected + c.expiring.unexpected),
      sessions: sumC((c) => c.readers.sessions + c.reconnectors.sessions + c.expiring.sessions),
      expiredOnTime: sumC((c) => c.expiring.onTime),
      expiryLate: sumC((c) => c.expiring.late),
      expiryNotEnded: sumC((c) => c.expiring.notEnded),
      expiryMaxDelayMs: Math.max(...cs.map((c) => c.expiring.maxDelayMs)),
      afterExpiry: sumC((c) => c.expiring.afterExpiry),
      hist: parts.map((p) => p.hist),
      clientRss: sumK((p) => p.rss),
    };
  };

  /**
   * Probes between samples: /proc and /metrics every few seconds (kept in the JSON with the
   * heap's range between collections). Each scrape resets the event-loop histograms: the
   * interval's delay is the largest of its scrapes' p99 and max.
   */
  /** @type {any[]} */
  let probes = [];
  /** Every probe of the run, for the JSON: time, RSS per process, heap, handles, subscribers. */
  /** @type {any[]} */
  const probeLog = [];
  const probe = async () => {
    const ps = pids();
    const rss = ps.reduce((a, p) => a + rssOf(p), 0);
    const fds = ps.reduce((a, p) => a + fdCount(p), 0);
    let m = new Map();
    try {
      const r = await httpGet(port, '/metrics');
      if (r.status === 200) m = parseMetrics(r.body);
      else log(`metrics: status ${r.status}`);
    } catch (err) {
      log(`metrics scrape failed: ${/** @type {Error} */ (err).message}`);
    }
    const x = { at: Date.now(), processes: ps.length, rss, fds, m, heap: m.get('nodejs_heap_used_bytes') ?? NaN, loopP99: m.get('nodejs_eventloop_delay_p99_seconds') ?? NaN, loopMax: m.get('nodejs_eventloop_delay_max_seconds') ?? NaN };
    probes.push(x);
    probeLog.push({ t: (x.at - t0) / 1000, rss: ps.map((p) => rssOf(p)), heap: x.heap, handles: m.get('nodejs_active_handles') ?? null, subscribers: m.get('mercure_subscribers_connected') ?? null, loopP99: x.loopP99, loopMax: x.loopMax });
    return x;
  };
  const finite = (xs) => xs.filter((v) => Number.isFinite(v));

  const sample = async (phase) => {
    // The interval's last event-loop reading, then a full collection in every hub process and
    // the sample's own reading (whose event-loop delay, the collection's pause, is not counted).
    await probe();
    const beforeGc = probes;
    const kicked = Date.now();
    const hubPids = pids();
    for (const pid of hubPids) {
      try {
        process.kill(pid, 'SIGUSR2');
      } catch {
        // gone
      }
    }
    await sleep(700);
    for (let i = 0; i < 13 && hubPids.some((p) => !(memReports.get(p)?.at >= kicked)); i++) await sleep(100);
    const perProcess = hubPids.map((p, i) => {
      const r = memReports.get(p);
      return r && r.at >= kicked ? { pid: p, role: i === 0 ? 'primary' : 'worker', rss: r.rss, heapTotal: r.heapTotal, heapUsed: r.heapUsed, external: r.external, arrayBuffers: r.arrayBuffers, resources: r.resources } : { pid: p, role: i === 0 ? 'primary' : 'worker' };
    });
    probes = [];
    const last = await probe();
    probeLog[probeLog.length - 1].afterGc = true;
    probes = beforeGc;
    const now = Date.now();
    const cpu = totalCpu(pids());
    const loadCpu = totalCpu(loadPids());
    const otherCores = prev.load.stop();
    const m = last.m;
    const cs = await clientStats();
    const lat = mergeHistograms(cs.hist);
    const latSum = summarize(lat);
    lat.destroy();
    const acked = pub ? pub.acked : 0;
    const subscribers = m.get('mercure_subscribers_connected') ?? 0;
    const handles = m.get('nodejs_active_handles') ?? 0;
    const heaps = finite(probes.map((p) => p.heap));
    const loopP99s = finite(probes.map((p) => p.loopP99));
    const loopMaxes = finite(probes.map((p) => p.loopMax));
    const s = {
      t: (now - t0) / 1000,
      at: new Date(now).toISOString(),
      phase,
      probes: probes.length,
      processes: last.processes,
      rss: last.rss,
      rssMedian: median(probes.map((p) => p.rss)),
      fds: last.fds,
      fdsExcess: last.fds - subscribers,
      // The processes' own reports, right after their collection, when all came; else /metrics
      // (read 0.7 s later: the allocations of that time are in it).
      heapUsed: perProcess.every((p) => p.heapUsed !== undefined) ? perProcess.reduce((a, p) => a + p.heapUsed, 0) : last.heap,
      heapMetrics: last.heap,
      heapMin: heaps.length ? Math.min(...heaps) : 0,
      heapMax: heaps.length ? Math.max(...heaps) : 0,
      rssMetrics: m.get('process_resident_memory_bytes') ?? 0,
      handles,
      handlesExcess: handles - subscribers,
      loopP99: Math.max(0, ...loopP99s),
      loopMax: Math.max(0, ...loopMaxes),
      subscribers,
      perProcess,
      // Every process's active resources, the primary's included (GC_PRELOAD's report).
      resourcesAll: perProcess.every((p) => p.resources !== undefined) ? perProcess.reduce((a, p) => a + p.resources, 0) : null,
      historySize: m.get('quicksilver_history_size') ?? 0,
      workersAnswered: m.get('quicksilver_metrics_workers_answered') ?? null,
      disconnects: Object.fromEntries([...m].filter(([k]) => k.startsWith('quicksilver_subscriber_disconnects_total')).map(([k, v]) => [/reason="([^"]*)"/.exec(k)?.[1] ?? k, v])),
      slow: m.get('quicksilver_subscriber_disconnects_total{reason="slow"}') ?? 0,
      published: acked,
      pubRate: ((acked - prev.acked) / Math.max(1, now - prev.at)) * 1000,
      pubFailures: pub?.failures ?? 0,
      latP99: latSum.p99,
      latMax: latSum.max,
      lost: cs.keeperLost,
      dups: cs.keeperDups,
      keepersLive: cs.keepersLive,
      reconnects: cs.reconnects,
      reconnectGaps: judged.reconnectGaps,
      historyMisses: judged.historyMisses,
      churned: cs.sessions + (stallers?.stats.connected ?? 0),
      hubCores: (cpu - prev.cpu) / Math.max(1, now - prev.at),
      loadCores: (loadCpu - prev.loadCpu) / Math.max(1, now - prev.at),
      otherCores,
      clientRss: cs.clientRss,
    };
    prev = { at: now, cpu, loadCpu, acked, load: foreignLoad() };
    probes = [];
    samples.push(s);
    log(tableRow(s));
  };

  let exitCode = 1;
  let result = /** @type {any} */ (null);
  try {
    log(head);
    log(units);
    await sample('start');
    // The load: publisher, churn, stallers.
    pub = startPublisher({ port, rate: plan.rate, pad: plan.pad, lanes: plan.lanes });
    await Promise.all(clients.map((cl) => cl.call('startChurn')));
    stallers = startStallers({ port, count: plan.stallers, stallMs: plan.stallMs, rampMs: plan.rampMs, usePython });
    const loadStart = Date.now();
    const probeMs = Math.min(10_000, Math.max(2000, plan.intervalMs / 6));
    for (let n = 1; ; n++) {
      const due = loadStart + n * plan.intervalMs;
      let nextProbe = Date.now() + probeMs;
      while (Date.now() < due - 500 && !hubExited && !pub.fatal) {
        await sleep(Math.max(0, Math.min(nextProbe, due - 500) - Date.now()));
        if (Date.now() >= nextProbe && Date.now() < due - 500) {
          await probe();
          nextProbe += probeMs;
        }
      }
      while (Date.now() < due) await sleep(due - Date.now());
      if (hubExited || pub.fatal) break;
      const elapsed = n * plan.intervalMs;
      await sample(elapsed < plan.warmupMs ? 'warm-up' : 'soak');
      if (elapsed >= durationMs) break;
    }

    // Wind down: churn and stallers first, then the publisher; the keepers read to the end.
    log('stopping the load; keepers read to the last update');
    await Promise.all(clients.map((cl) => cl.call('stopChurn')));
    await stallers.stop();
    pub.stopping = true;
    await pub.done;
    const laneLast = pub.laneLast;
    const deadline = Date.now() + 30_000;
    let cs = await clientStats(laneLast);
    while (cs.keepersBehind > 0 && Date.now() < deadline) {
      await sleep(250);
      cs = await clientStats(laneLast);
    }
    let slowCuts = 0;
    try {
      const r = await httpGet(port, '/metrics');
      slowCuts = parseMetrics(r.body).get('quicksilver_subscriber_disconnects_total{reason="slow"}') ?? 0;
    } catch {
      slowCuts = samples.at(-1)?.slow ?? 0;
    }
    const fin = await Promise.all(clients.map((cl) => cl.call('finish', { laneLast })));
    const tail = fin.reduce((a, f) => a + f.tail, 0);
    const published = pub.acked;
    const totals = {
      published,
      expectedKeeperEvents: published * plan.keepers,
      keeperEvents: cs.keeperEvents,
      keeperLost: cs.keeperLost + tail,
      keeperDups: cs.keeperDups,
      keeperDrops: cs.keeperDrops,
      keepersConnected,
      idMismatch: cs.idMismatch,
      reconnects: cs.reconnects,
      reconnectsFound: cs.reconnectsFound,
      reconnectsStale: cs.reconnectsStale,
      reconnectGaps: judged.reconnectGaps,
      reconnectDups: judged.reconnectDups,
      historyMisses: judged.historyMisses,
      foundAlthoughTrimmed: judged.foundTrimmed,
      reconnectsUnjudged: judged.unjudged,
      churnGaps: cs.churnGaps,
      churnDups: cs.churnDups,
      unexpectedCloses: cs.unexpectedCloses,
      connectFailures: cs.connectFailures,
      afterExpiry: cs.afterExpiry,
      expiredOnTime: cs.expiredOnTime,
      expiryLate: cs.expiryLate,
      expiryNotEnded: cs.expiryNotEnded,
      expiryMaxDelayMs: cs.expiryMaxDelayMs,
      slowCuts,
      churned: cs.sessions + stallers.stats.connected,
      publishAttempts: pub.attempts,
      publishFailures: pub.failures,
      publishStatuses: pub.statuses,
      publishMaxBehindMs: Math.round(pub.maxBehindMs),
      publishRtt: summarize(pub.rtt),
      publishFatal: pub.fatal,
      hubExited,
    };
    const v = verdict({ samples, plan, totals, stallers: stallers.stats, usePython });
    result = { meta, plan, usePython, url, totals, stallers: stallers.stats, samples, verdict: v, incidents, hubLog, probes: probeLog };
    exitCode = v.pass ? 0 : 1;
  } finally {
    await Promise.all(clients.map((cl) => stopChild(cl.child, 2000)));
    await stallers?.stop();
    if (pub) pub.stopping = true;
    await stopChild(proc.child, 8000);
  }

  // Report.
  const v = result.verdict;
  const t = result.totals;
  const lines = [
    `Quicksilver soak, ${result.meta.date}: ${(durationMs / 60_000).toFixed(1)} min, ${result.meta.machine?.cores} cores, Node ${result.meta.machine?.node}, commit ${result.meta.revision?.commit ?? '?'}${result.meta.revision?.srcFilesChanged ? ` (+${result.meta.revision.srcFilesChanged} changed src files)` : ''}`,
    `hub: default configuration (one worker per core + LMDB), ${url.replace(/^lmdb:\/\/.*\?/, 'lmdb://…?')}, write timeout ${plan.writeTimeoutS} s (past the run), dispatch timeout ${plan.dispatchTimeoutS} s`,
    `load: ${plan.rate} updates/s (${plan.pad} B padding), ${plan.keepers} keepers, ${plan.readers} readers (${plan.readerLifeMs.map((x) => x / 1000).join('–')} s), ${plan.reconnectors} reconnectors (online ${plan.onlineMs.map((x) => x / 1000).join('–')} s, offline ${plan.offlineMs.map((x) => x / 1000).join('–')} s or ${plan.staleOfflineMs.map((x) => x / 1000).join('–')} s for ${plan.staleShare * 100} %), ${plan.expiring} expiring tokens (${plan.expiryMs.map((x) => x / 1000).join('–')} s), ${plan.stallers} stallers (${usePython ? 'python3' : 'node'}, ${plan.stallMs / 1000} s without reading)`,
    `samples every ${plan.intervalMs / 1000} s (probes every ${Math.round(Math.min(10_000, Math.max(2000, plan.intervalMs / 6)) / 1000)} s in between), warm-up ${plan.warmupMs / 1000} s. RSS (/proc, summed over the hub's ${samples.at(-1)?.processes} processes), heap (V8 heap used, primary + workers, as each process reports it right after the collection; /metrics' nodejs_heap_used_bytes, read 0.7 s later, is in the JSON), handles, fds, subs: read after a full collection in every hub process (node --expose-gc and a SIGUSR2 handler loaded with --import); "(+subs)": the count beyond one per connected subscriber; handles and event-loop delay from /metrics cover the workers (the primary does not add its own); loop p99/max: the largest of the interval's scrapes (each covers the time since the previous one); lat: keepers' delivery latency; hub cpu, load cpu (the soak's own processes), others (the rest of the machine)`,
    '',
    head,
    units,
    ...samples.map(tableRow),
    '',
    ...perProcessLines(samples),
    `publisher: ${t.published} updates over ${plan.lanes} lanes, ${t.publishFailures} failed attempts (sent again) ${JSON.stringify(t.publishStatuses)}, rtt p99 ${t.publishRtt.p99} ms (max ${t.publishRtt.max} ms), at most ${t.publishMaxBehindMs} ms behind schedule`,
    `keepers: ${t.keepersConnected} connected, ${t.keeperEvents} events read (expected ${t.expectedKeeperEvents}), ${t.keeperLost} lost, ${t.keeperDups} duplicated or out of order, ${t.keeperDrops} closed by the hub`,
    `reconnects: ${t.reconnects} with Last-Event-ID, ${t.reconnectsFound} found in history (${t.reconnectGaps} missed, ${t.reconnectDups} duplicated), ${t.reconnectsStale} not found (${t.historyMisses} of them should have been), ${t.foundAlthoughTrimmed} found although past history size, ${t.reconnectsUnjudged} not judged`,
    `churn: ${t.churned} sessions, ${t.churnGaps} missed and ${t.churnDups} duplicated while connected, ${t.unexpectedCloses} closed early by the hub, ${t.connectFailures} failed connections; expiring tokens: ${t.expiredOnTime} ended on time (latest ${t.expiryMaxDelayMs} ms after exp), ${t.expiryLate} late, ${t.expiryNotEnded} not ended, ${t.afterExpiry} got updates published after exp`,
    `stallers: ${result.stallers.connected} connected, ${result.stallers.opened} looked after the stall: ${result.stallers.cut} cut ${JSON.stringify(result.stallers.cutHow)}, ${result.stallers.notCut} not cut, ${result.stallers.cleanEnded} ended cleanly; hub slow cuts ${t.slowCuts}`,
    `hub log lines: ${Object.keys(result.hubLog).length ? Object.entries(result.hubLog).map(([k, n]) => `${n}× ${k}`).join('; ') : 'none'}`,
    ...(result.incidents.length ? ['incidents (first ones):', ...result.incidents.slice(0, 10).map((x) => `  ${JSON.stringify(x)}`)] : []),
    '',
    v.line,
    ...(v.failures.length ? ['failed:', ...v.failures.map((f) => `  - ${f}`)] : []),
  ];
  const text = lines.join('\n');
  mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, `soak-${result.meta.date.replace(/[:.]/g, '-')}`);
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  writeFileSync(`${base}.txt`, text + '\n');
  process.stdout.write(`\n${text}\n\n`);
  log(`results: ${base}.json, ${base}.txt`);
  return exitCode;
}

if (process.env.QS_SOAK_ROLE === 'client') clientMain();
