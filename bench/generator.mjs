// Load generator process, forked by run.mjs and driven over IPC. It plays two roles:
//  - subscribers: raw HTTP/1.1 SSE connections opened with net.connect from a given loopback
//    source address, parsed minimally (events, comments, the publish timestamp and sequence
//    embedded in each event's data) for latency, gap and duplicate counts;
//  - publisher: HTTP POSTs at a fixed rate or as fast as a pool of keep-alive connections allows.
// Everything it does is bounded by counts and timeouts given by the parent; it exits with it.
import net from 'node:net';
import { encodeHistogram, newHistogram, nowMs, signJwt } from './lib.mjs';

/** @typedef {{ host: string, port: number }} Endpoint */

// ------------------------------------------------------------------------------------------------
// Subscribers
// ------------------------------------------------------------------------------------------------

/**
 * @typedef {object} Conn
 * @property {number} i            global subscriber index
 * @property {net.Socket|null} sock
 * @property {number} ep           endpoint index
 * @property {number} lastSeq      last sequence number received (-1: none yet)
 * @property {string} rem          unfinished line carried over to the next read
 * @property {boolean} head        response head received
 * @property {boolean} ok          got a 200
 * @property {string} [lastId]     last event id received (keepIds)
 * @property {string} [pendingId]  an id line seen at the end of a read, its data line not yet
 */

/** @type {Conn[]} */
let conns = [];
let track = true; // gap/dup tracking: every subscriber receives every update in order
let keepIds = false; // remember each connection's last event id as received (peers with their own ids)
let hist = newHistogram();
let stats = freshStats();
/** @type {{ target: number, at: number, pending: number } | null} */
let catchUp = null;
/** @type {{ key: string, template: string } | null} */
let tokenSpec = null;
/** @type {{ path: string, headers: Record<string,string>, endpoints: Endpoint[] } | null} */
let connectSpec = null;

function freshStats() {
  return {
    events: 0,
    comments: 0,
    bytes: 0,
    gaps: 0,
    dups: 0,
    peerClosed: 0,
    errors: 0,
    firstEventAt: 0,
    lastEventAt: 0,
  };
}

const DATA = 'data: ';

/** @param {Conn} c @param {Buffer} buf */
function onData(c, buf) {
  const now = nowMs();
  stats.bytes += buf.length;
  let s = buf.latin1Slice(0, buf.length);
  if (c.rem) {
    s = c.rem + s;
    c.rem = '';
  }
  if (!c.head) {
    const end = s.indexOf('\r\n\r\n');
    if (end < 0) {
      c.rem = s;
      return;
    }
    c.head = true;
    c.ok = s.startsWith('HTTP/1.1 200') || s.startsWith('HTTP/1.0 200');
    if (!c.ok) {
      stats.errors++;
      if (errorSamples.length < 5) errorSamples.push(s.slice(0, Math.min(s.length, 300)));
      c.sock?.destroy();
      return;
    }
    s = s.slice(end + 4);
    c.pendingConnect?.(true);
  }
  // Only whole lines are parsed; an unfinished last line waits for the next read.
  let end = s.length;
  if (s.charCodeAt(end - 1) !== 10) {
    const nl = s.lastIndexOf('\n');
    c.rem = s.slice(nl + 1);
    end = nl + 1;
  }
  // Comments are the lines that start with ':' (the opening one, heartbeats: ":\n" from the hub
  // and the bare broadcaster, ": hi" and ": <ping>" from Nchan). `s` starts at a line start: the
  // head was cut off whole and an unfinished last line is carried over in `c.rem`.
  if (s.charCodeAt(0) === 58 && end > 0) stats.comments++;
  let p = s.indexOf('\n:');
  while (p >= 0 && p < end - 1) {
    stats.comments++;
    p = s.indexOf('\n:', p + 2);
  }
  let d = s.indexOf(DATA);
  while (d >= 0 && d < end) {
    const eol = s.indexOf('\n', d);
    const bar = s.indexOf('|', d);
    const bar2 = bar < 0 ? -1 : s.indexOf('|', bar + 1);
    if (bar2 < 0 || bar2 > eol) {
      // Not one of ours ("data: <time>|<seq>|<pad>"): a peer's ping event, say.
      d = s.indexOf(DATA, eol);
      continue;
    }
    const t = Number(s.slice(d + 6, bar));
    const seq = Number(s.slice(bar + 1, bar2));
    if (keepIds) {
      // The event's own id line, right before its data line (Nchan's ids are its own,
      // "<time>:<tag>", so a reconnect must send back what was received, not a sequence).
      const idAt = s.lastIndexOf('id: ', d);
      if (idAt >= 0 && s.indexOf('\n', idAt) === d - 1 && (idAt === 0 || s.charCodeAt(idAt - 1) === 10)) c.lastId = s.slice(idAt + 4, d - 1);
      else if (c.pendingId !== undefined) c.lastId = c.pendingId;
      c.pendingId = undefined;
    }
    stats.events++;
    if (stats.firstEventAt === 0) stats.firstEventAt = now;
    stats.lastEventAt = now;
    const lat = Math.round((now - t) * 1000);
    hist.recordValue(lat < 1 ? 1 : lat);
    if (track && c.lastSeq >= 0) {
      // Updates published concurrently may arrive out of order: a sequence number skipped over
      // is "missing" until it arrives; one that is neither new nor missing is a duplicate.
      if (seq > c.lastSeq + 1) {
        c.missing ??= new Set();
        for (let m = c.lastSeq + 1; m < seq; m++) c.missing.add(m);
        missingTotal += seq - c.lastSeq - 1;
      } else if (seq <= c.lastSeq) {
        if (c.missing?.delete(seq)) missingTotal--;
        else stats.dups++;
      }
    }
    if (seq > c.lastSeq) c.lastSeq = seq;
    if (catchUp && c.lastSeq >= catchUp.target && !c.caught) {
      c.caught = true;
      if (--catchUp.pending === 0) catchUp.at = now;
    }
    d = s.indexOf(DATA, bar2);
  }
  if (keepIds) {
    // An id line whose data line is still to come (the read ended between the two).
    const idAt = s.lastIndexOf('id: ', end);
    const lastData = s.lastIndexOf(DATA, end);
    if (idAt > lastData && (idAt === 0 || s.charCodeAt(idAt - 1) === 10)) {
      const eol = s.indexOf('\n', idAt);
      if (eol >= 0 && eol < end) c.pendingId = s.slice(idAt + 4, eol);
    }
  }
}

/** @type {string[]} */
let errorSamples = [];
/** Sequence numbers skipped over and not received since, over all connections. */
let missingTotal = 0;

/**
 * Opens one subscriber connection; resolves true once the 200 head arrived, false on failure.
 * @param {Conn} c @param {string} localAddress @param {string | undefined} lastEventId
 */
function openConn(c, localAddress, lastEventId, timeout) {
  return new Promise((resolve) => {
    const spec = /** @type {NonNullable<typeof connectSpec>} */ (connectSpec);
    const ep = spec.endpoints[c.ep];
    const idx = String(c.i);
    let req = `GET ${spec.path.replaceAll('%I%', idx)} HTTP/1.1\r\nHost: ${ep.host}:${ep.port}\r\nAccept: text/event-stream\r\n`;
    for (const [k, v] of Object.entries(spec.headers)) req += `${k}: ${v.replaceAll('%I%', idx)}\r\n`;
    if (tokenSpec) {
      const token = signJwt({ mercure: { subscribe: [tokenSpec.template.replaceAll('%I%', idx)] } }, tokenSpec.key);
      req += `Authorization: Bearer ${token}\r\n`;
    }
    if (lastEventId !== undefined) req += `Last-Event-ID: ${lastEventId}\r\n`;
    req += '\r\n';
    let settled = false;
    const settle = (ok) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.pendingConnect = undefined;
      resolve(ok);
    };
    c.head = false;
    c.ok = false;
    c.rem = '';
    c.pendingConnect = settle;
    const sock = net.connect({ host: ep.host, port: ep.port, localAddress });
    c.sock = sock;
    const timer = setTimeout(() => {
      if (errorSamples.length < 5) errorSamples.push(`timeout connecting subscriber ${c.i}`);
      stats.errors++;
      sock.destroy();
      settle(false);
    }, timeout);
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write(req));
    sock.on('data', (b) => onData(c, b));
    sock.on('error', (e) => {
      if (!settled) {
        stats.errors++;
        if (errorSamples.length < 5) errorSamples.push(`${e.code ?? ''} ${e.message}`);
      }
      settle(false);
    });
    sock.on('close', () => {
      if (c.sock === sock) {
        c.sock = null;
        if (c.ok && !c.dropping) stats.peerClosed++;
      }
      settle(false);
    });
  });
}

/** Runs `fn` over items with at most `limit` in flight. */
async function pool(items, limit, fn) {
  let next = 0;
  const results = new Array(items.length);
  const worker = async () => {
    while (next < items.length) {
      const k = next++;
      results[k] = await fn(items[k], k);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function connect(a) {
  connectSpec = { path: a.path, headers: a.headers ?? {}, endpoints: a.endpoints };
  tokenSpec = a.token ?? null;
  track = a.track ?? true;
  keepIds = a.keepIds ?? false;
  errorSamples = [];
  const fresh = [];
  for (let k = 0; k < a.count; k++) {
    const i = a.startIndex + k;
    fresh.push({ i, sock: null, ep: i % a.endpoints.length, lastSeq: -1, rem: '', head: false, ok: false });
  }
  conns.push(...fresh);
  const t0 = nowMs();
  const ok = await pool(fresh, a.concurrency ?? 100, (c, k) => openConn(c, a.localAddresses[k % a.localAddresses.length], undefined, a.timeout ?? 30000));
  const connected = ok.filter(Boolean).length;
  return { connected, failed: a.count - connected, ms: nowMs() - t0, errors: errorSamples.slice() };
}

function liveCount() {
  let n = 0;
  for (const c of conns) if (c.sock && c.ok) n++;
  return n;
}

function getStats(a = {}) {
  let minSeq = Infinity;
  let maxSeq = -1;
  for (const c of conns) {
    if (c.lastSeq < minSeq) minSeq = c.lastSeq;
    if (c.lastSeq > maxSeq) maxSeq = c.lastSeq;
  }
  return {
    ...stats,
    gaps: missingTotal,
    live: liveCount(),
    total: conns.length,
    minSeq: conns.length ? minSeq : -1,
    maxSeq,
    caughtUpAt: catchUp?.at ?? 0,
    catchUpPending: catchUp?.pending ?? 0,
    hist: a.hist ? encodeHistogram(hist) : undefined,
    errors: stats.errors,
    errorSamples: errorSamples.slice(),
    rss: process.memoryUsage().rss,
  };
}

function reset() {
  stats = freshStats();
  // Gaps are judged per stage: what is still missing now is forgotten.
  for (const c of conns) c.missing = undefined;
  missingTotal = 0;
  hist.destroy();
  hist = newHistogram();
  errorSamples = [];
}

/** Drops every connection from this side, keeping what each one had received. */
async function drop() {
  const closing = [];
  for (const c of conns) {
    if (!c.sock) continue;
    c.dropping = true;
    const s = c.sock;
    closing.push(new Promise((r) => s.once('close', r)));
    s.destroy();
  }
  await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 10000))]);
  for (const c of conns) c.dropping = false;
  return { live: liveCount() };
}

/** Reconnects every dropped subscriber with Last-Event-ID = the last id it received. */
async function reconnect(a) {
  errorSamples = [];
  catchUp = a.target !== undefined ? { target: a.target, at: 0, pending: 0 } : null;
  for (const c of conns) {
    c.caught = false;
    if (catchUp) {
      if (c.lastSeq >= catchUp.target) c.caught = true;
      else catchUp.pending++;
    }
  }
  if (catchUp && catchUp.pending === 0) catchUp.at = nowMs();
  const todo = conns.filter((c) => !c.sock);
  const t0 = nowMs();
  const ok = await pool(todo, a.concurrency ?? 100, (c, k) =>
    openConn(c, a.localAddresses[k % a.localAddresses.length], keepIds ? c.lastId : c.lastSeq >= 0 ? `${a.idPrefix}${c.lastSeq}` : undefined, a.timeout ?? 30000),
  );
  const connected = ok.filter(Boolean).length;
  return { connected, failed: todo.length - connected, ms: nowMs() - t0, errors: errorSamples.slice() };
}

async function closeAll() {
  for (const c of conns) {
    if (c.sock) {
      c.dropping = true;
      c.sock.destroy();
    }
  }
  conns = [];
  catchUp = null;
  missingTotal = 0;
  reset();
  return {};
}

// ------------------------------------------------------------------------------------------------
// Publisher
// ------------------------------------------------------------------------------------------------

/**
 * An HTTP/1.1 client connection sending one request at a time; keep-alive when the server allows
 * it, else (Pushpin's publish API answers `Connection: close`) a new socket per request.
 * @param {Endpoint} ep
 */
function httpConn(ep) {
  /** @type {net.Socket | null} */
  let sock = null;
  /** @type {((r: { status: number }) => void) | null} */
  let waiting = null;
  let buf = '';
  const finish = (status) => {
    const w = waiting;
    waiting = null;
    w?.(status === undefined ? { status: -1 } : { status });
  };
  const open = () => {
    const s = net.connect({ host: ep.host, port: ep.port });
    s.setNoDelay(true);
    buf = '';
    s.on('error', () => undefined);
    s.on('close', () => {
      if (sock === s) sock = null;
      finish(-1);
    });
    s.on('data', (d) => {
      buf += d.latin1Slice(0, d.length);
      for (;;) {
        const he = buf.indexOf('\r\n\r\n');
        if (he < 0) return;
        const head = buf.slice(0, he);
        const status = Number(head.slice(9, 12));
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        let total;
        if (cl) total = he + 4 + Number(cl[1]);
        else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
          const z = buf.indexOf('\r\n0\r\n\r\n', he);
          const z0 = buf.startsWith('0\r\n\r\n', he + 4) ? he + 4 : -1;
          if (z0 >= 0) total = z0 + 5;
          else if (z >= 0) total = z + 7;
          else return;
        } else total = he + 4;
        if (buf.length < total) return;
        buf = buf.slice(total);
        if (/\r\nconnection:\s*close/i.test(head)) {
          // The server will close: forget this socket now so the next request opens another.
          if (sock === s) sock = null;
          s.removeAllListeners('close');
          s.on('close', () => undefined);
          s.destroy();
        }
        finish(status);
      }
    });
    return s;
  };
  const readyP = new Promise((resolve) => {
    sock = open();
    sock.once('connect', () => resolve(undefined));
    sock.once('error', () => resolve(undefined));
  });
  return {
    dead: false,
    readyP,
    /** @param {string} req */
    send(req) {
      return new Promise((resolve) => {
        waiting = resolve;
        if (!sock) sock = open();
        sock.write(req);
      });
    },
    close: () => sock?.destroy(),
  };
}

/**
 * Builds the request for one update in the target's publish format.
 * @param {any} a publish arguments @param {number} seq @param {number} t
 */
function buildRequest(a, ep, seq, t) {
  const k = a.keyspace > 0 ? Math.floor(Math.random() * a.keyspace) : 0;
  const data = `${t.toFixed(3)}|${seq}|${a.pad}`;
  const id = `${a.idPrefix}${seq}`;
  const host = `Host: ${ep.host}:${ep.port}\r\n`;
  if (a.format === 'mercure') {
    const topic = a.topic.replaceAll('%K%', String(a.keyBase + k));
    let body = `topic=${encodeURIComponent(topic)}&id=${encodeURIComponent(id)}&data=${encodeURIComponent(data)}`;
    if (a.private) body += '&private=on';
    return `POST /.well-known/mercure HTTP/1.1\r\n${host}Authorization: Bearer ${a.token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  }
  if (a.format === 'bare') {
    const body = `${id}\n${data}`;
    const topic = encodeURIComponent(a.topic.replaceAll('%K%', String(a.keyBase + k)));
    return `POST /publish?topic=${topic} HTTP/1.1\r\n${host}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  }
  if (a.format === 'pushpin') {
    const content = `id: ${id}\ndata: ${data}\n\n`;
    const body = JSON.stringify({ items: [{ channel: a.channel, id, formats: { 'http-stream': { content } } }] });
    return `POST /publish/ HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  }
  if (a.format === 'nchan') {
    // Nchan's HTTP publisher: the body is the message; Nchan assigns the id ("<time>:<tag>").
    return `POST ${a.pubPath}?id=${encodeURIComponent(a.channel)} HTTP/1.1\r\n${host}Content-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(data)}\r\n\r\n${data}`;
  }
  throw new Error(`unknown publish format ${a.format}`);
}

/**
 * The same update as a fetch() request (URL and init): what an application's publisher sends.
 * Mercure requests carry a token signed for this request alone (unique jti, so the hub cannot
 * answer from its verified-token cache) and no id (the hub assigns one, as it does for most
 * real publishers); the other formats carry the same Authorization header, which they ignore.
 * @param {any} a @param {Endpoint} ep @param {number} seq @param {number} t
 */
function fetchRequest(a, ep, seq, t) {
  const data = `${t.toFixed(3)}|${seq}|${a.pad}`;
  const id = `${a.idPrefix}${seq}`;
  const base = `http://${ep.host}:${ep.port}`;
  const sec = Math.floor(Date.now() / 1000);
  // oneToken (a diagnostic variant): the same token on every request, as the pool publisher does.
  const token = a.oneToken && a.token ? a.token : signJwt({ mercure: { publish: ['*'] }, iat: sec, exp: sec + 300, jti: `${process.pid}-${seq}-${Math.random().toString(36).slice(2, 10)}` }, a.jwtKey ?? 'unused');
  const auth = `Bearer ${token}`;
  if (a.format === 'mercure') {
    let body = `topic=${encodeURIComponent(a.topic)}&data=${encodeURIComponent(data)}`;
    if (!a.hubIds) body += `&id=${encodeURIComponent(id)}`;
    if (a.private) body += '&private=on';
    return [`${base}/.well-known/mercure`, { method: 'POST', headers: { Authorization: auth, 'Content-Type': 'application/x-www-form-urlencoded' }, body }];
  }
  if (a.format === 'bare') return [`${base}/publish?topic=${encodeURIComponent(a.topic)}`, { method: 'POST', headers: { Authorization: auth }, body: `${id}\n${data}` }];
  if (a.format === 'nchan') return [`${base}${a.pubPath}?id=${encodeURIComponent(a.channel)}`, { method: 'POST', headers: { Authorization: auth, 'Content-Type': 'text/plain' }, body: data }];
  if (a.format === 'pushpin') {
    const content = `id: ${id}\ndata: ${data}\n\n`;
    return [`${base}/publish/`, { method: 'POST', headers: { Authorization: auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ items: [{ channel: a.channel, id, formats: { 'http-stream': { content } } }] }) }];
  }
  throw new Error(`unknown publish format ${a.format}`);
}

/**
 * A sequential publisher with a real HTTP client: Node's fetch (undici, keep-alive), one request
 * in flight per endpoint, a freshly signed token per request, update n due at t0 + n / rate. The
 * publish time in the data is taken just before fetch() is called. When an answer takes longer
 * than the interval, the next update leaves late (counted in maxBehindMs), as it would from an
 * application that awaits each publish.
 */
async function publishSequential(a) {
  const rtt = newHistogram();
  const eps = /** @type {Endpoint[]} */ (a.endpoints);
  const statusCounts = /** @type {Record<string, number>} */ ({});
  let seq = a.startSeq ?? 0;
  let sent = 0;
  let ok = 0;
  let failed = 0;
  let maxBehind = 0;
  const interval = 1000 / a.rate;
  const total = a.count ?? Math.max(1, Math.floor(((a.duration ?? 0) / 1000) * a.rate));
  const t0 = nowMs();
  let lastAt = t0;
  for (let n = 0; n < total; n++) {
    const due = t0 + n * interval;
    let now = nowMs();
    if (due > now) {
      await new Promise((r) => setTimeout(r, due - now > 2 ? due - now - 1 : 0));
      while ((now = nowMs()) < due) await new Promise((r) => setImmediate(r));
    }
    if (now - due > maxBehind) maxBehind = now - due;
    const s = seq++;
    sent++;
    const t = nowMs();
    const statuses = await Promise.all(
      eps.map(async (ep) => {
        const [url, init] = fetchRequest(a, ep, s, t);
        try {
          const res = await fetch(url, init);
          await res.arrayBuffer();
          return res.status;
        } catch {
          return -1;
        }
      }),
    );
    const done = nowMs();
    lastAt = done;
    const us = Math.round((done - t) * 1000);
    rtt.recordValue(us < 1 ? 1 : us);
    for (const st of statuses) {
      statusCounts[st] = (statusCounts[st] ?? 0) + 1;
      if (st >= 200 && st < 300) ok++;
      else failed++;
    }
  }
  const elapsed = lastAt - t0;
  return { sent, ok, failed, statusCounts, firstAt: t0, lastAt, elapsedMs: elapsed, perSecond: elapsed > 0 ? (sent / elapsed) * 1000 : 0, maxBehindMs: maxBehind, nextSeq: seq, rtt: encodeHistogram(rtt) };
}

/**
 * Publishes updates. rate > 0: open loop, `rate` updates/s for `duration` ms (or `count` updates);
 * rate = 0: closed loop, each of `connections` connections sends its next request when the
 * previous one is answered, for `duration` ms. Every update goes to every endpoint.
 */
async function publish(args) {
  const a = { keyBase: 0, keyspace: 0, pad: '', private: false, idPrefix: '', topic: '', ...args };
  if (a.client === 'fetch') return publishSequential(a);
  const rtt = newHistogram();
  const eps = /** @type {Endpoint[]} */ (a.endpoints);
  const perEp = a.connections ?? 4;
  const poolByEp = eps.map((ep) => Array.from({ length: perEp }, () => httpConn(ep)));
  await Promise.all(poolByEp.flat().map((c) => c.readyP.catch(() => undefined)));
  const statusCounts = /** @type {Record<string, number>} */ ({});
  let seq = a.startSeq ?? 0;
  let sent = 0;
  let ok = 0;
  let failed = 0;
  let maxBehind = 0;
  const t0 = nowMs();
  const deadline = t0 + (a.duration ?? 1e12);
  const maxCount = a.count ?? Infinity;
  let lastAt = t0;

  /** Sends update `s` to every endpoint over connection `ci` of each; resolves when all answered. */
  const sendOne = async (ci, s) => {
    const t = nowMs();
    const results = await Promise.all(
      eps.map((ep, e) => {
        const c = poolByEp[e][ci];
        return c.dead ? Promise.resolve({ status: -1 }) : c.send(buildRequest(a, ep, s, t));
      }),
    );
    const done = nowMs();
    lastAt = done;
    const us = Math.round((done - t) * 1000);
    rtt.recordValue(us < 1 ? 1 : us);
    for (const r of results) {
      statusCounts[r.status] = (statusCounts[r.status] ?? 0) + 1;
      if (r.status >= 200 && r.status < 300) ok++;
      else failed++;
    }
  };

  if (!a.rate) {
    // Closed loop: as fast as the connections allow.
    await Promise.all(
      Array.from({ length: perEp }, async (_, ci) => {
        while (nowMs() < deadline && sent < maxCount) {
          if (poolByEp.some((p) => p[ci].dead)) return;
          const s = seq++;
          sent++;
          await sendOne(ci, s);
        }
      }),
    );
  } else {
    // Open loop: update n is due at t0 + n / rate; a free connection takes it, else it waits.
    const interval = 1000 / a.rate;
    const total = Math.min(maxCount, Math.floor(((a.duration ?? 0) / 1000) * a.rate) || maxCount);
    const free = Array.from({ length: perEp }, (_, i) => i);
    /** @type {Array<() => void>} */
    const waiters = [];
    const acquire = () => (free.length ? Promise.resolve(/** @type {number} */ (free.pop())) : new Promise((r) => waiters.push(() => r(/** @type {number} */ (free.pop())))));
    const release = (ci) => {
      free.push(ci);
      waiters.shift()?.();
    };
    const inflight = [];
    for (let n = 0; n < total; n++) {
      const due = t0 + n * interval;
      let now = nowMs();
      if (due > now) {
        await new Promise((r) => setTimeout(r, due - now > 2 ? due - now - 1 : 0));
        while ((now = nowMs()) < due) await new Promise((r) => setImmediate(r));
      }
      if (now - due > maxBehind) maxBehind = now - due;
      const ci = await acquire();
      const s = seq++;
      sent++;
      inflight.push(sendOne(ci, s).finally(() => release(ci)));
      if (inflight.length > 1000) await Promise.all(inflight.splice(0, inflight.length - 100));
    }
    await Promise.all(inflight);
  }
  for (const c of poolByEp.flat()) c.close();
  const elapsed = lastAt - t0;
  return {
    sent,
    ok,
    failed,
    statusCounts,
    firstAt: t0,
    lastAt,
    elapsedMs: elapsed,
    perSecond: elapsed > 0 ? (sent / elapsed) * 1000 : 0,
    maxBehindMs: maxBehind,
    nextSeq: seq,
    rtt: encodeHistogram(rtt),
  };
}

// ------------------------------------------------------------------------------------------------
// IPC
// ------------------------------------------------------------------------------------------------

const handlers = { connect, stats: getStats, reset, drop, reconnect, closeAll, publish, ping: () => ({ pid: process.pid }) };

process.on('message', async (/** @type {any} */ msg) => {
  const h = handlers[/** @type {keyof typeof handlers} */ (msg.cmd)];
  try {
    if (!h) throw new Error(`unknown command ${msg.cmd}`);
    const result = await h(msg.args ?? {});
    process.send?.({ id: msg.id, ok: true, result });
  } catch (err) {
    process.send?.({ id: msg.id, ok: false, error: /** @type {Error} */ (err).stack ?? String(err) });
  }
});
process.on('disconnect', () => process.exit(0));
// Bounded no matter what: a generator never outlives the longest run.
setTimeout(() => process.exit(3), Number(process.env.BENCH_MAX_LIFETIME_MS ?? 30 * 60_000)).unref();
