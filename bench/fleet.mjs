// The parent's side of the generator processes: forks them, splits subscribers over them (and
// over loopback source addresses), and merges what they report.
import path from 'node:path';
import { BENCH_DIR, forkTracked, mergeHistograms, nowMs, sleep, stopChild } from './lib.mjs';

/** Most sockets one generator process holds: the per-process limit is 20 000 open files. */
export const PER_GENERATOR = 18_000;

class Worker {
  constructor(index, env) {
    this.index = index;
    this.child = forkTracked(path.join(BENCH_DIR, 'generator.mjs'), [], { env: { ...process.env, ...env } });
    this.seq = 0;
    /** @type {Map<number, { resolve: Function, reject: Function }>} */
    this.pending = new Map();
    this.child.on('message', (/** @type {any} */ m) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`generator ${index}: ${m.error}`));
    });
    this.child.on('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`generator ${index} exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  call(cmd, args = {}) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, cmd, args });
    });
  }
}

/** A publisher process (a generator used for its publish role only). */
export class Publisher {
  constructor() {
    this.w = new Worker(-1, {});
  }

  /** @returns {Promise<any>} */
  publish(args) {
    return this.w.call('publish', args);
  }

  stop() {
    return stopChild(this.w.child, 1000);
  }
}

const ADDRESSES_PER_GENERATOR = 4;
let fleetCounter = Math.floor(Math.random() * 250);

export class Fleet {
  /**
   * @param {number} size generator processes
   * @param {{ addressBase?: number }} [options]
   */
  constructor(size, options = {}) {
    this.workers = Array.from({ length: size }, (_, i) => new Worker(i, {}));
    // A fresh block of source addresses per fleet: sockets closed by an earlier fleet linger in
    // TIME_WAIT on their addresses and make bind() to an ephemeral port slow there.
    this.block = options.block ?? (fleetCounter++ % 250) + 1;
    /** subscribers held per generator, to pick where new ones go */
    this.held = new Array(size).fill(0);
  }

  static sizeFor(subscribers, min = 1) {
    return Math.max(min, Math.ceil(subscribers / PER_GENERATOR));
  }

  /** Loopback source addresses of generator g: one for first connections, one for reconnections. */
  addresses(g, reconnect = false) {
    // Several per generator: bind() to an ephemeral port slows down as an address's ~28k ports fill.
    return Array.from({ length: ADDRESSES_PER_GENERATOR }, (_, k) => `127.${this.block}.${reconnect ? 1 : 0}.${2 + g * ADDRESSES_PER_GENERATOR + k}`);
  }

  all(cmd, argsFor = () => ({})) {
    return Promise.all(this.workers.map((w, g) => w.call(cmd, argsFor(g))));
  }

  /**
   * Opens `count` more subscribers, numbered from `startIndex`, split evenly over the generators.
   * @param {object} a
   * @param {import('./targets.mjs').Target} a.target
   * @param {number} a.count
   * @param {number} [a.startIndex]
   * @param {string} a.path          request path; %I% is replaced by the subscriber's index
   * @param {{ key: string, template: string } | null} [a.token]
   * @param {boolean} [a.track]      count gaps and duplicates (every subscriber gets every update)
   * @param {(line: string) => void} [a.progress]
   */
  async connect({ target, count, startIndex = 0, path: p, token = null, track = true, progress, concurrency }) {
    const n = this.workers.length;
    const per = Math.floor(count / n);
    let next = startIndex;
    const t0 = nowMs();
    let done = false;
    let wake = () => undefined;
    const ticker = progress
      ? (async () => {
          while (!done) {
            await new Promise((r) => {
              wake = r;
              setTimeout(r, 2000);
            });
            if (done) break;
            const s = await this.stats().catch(() => null);
            if (s && !done) progress(`${s.live.toLocaleString('en-US')} subscribers connected`);
          }
        })()
      : null;
    const jobs = this.workers.map((w, g) => {
      const c = per + (g < count % n ? 1 : 0);
      const start = next;
      next += c;
      this.held[g] += c;
      if (this.held[g] > PER_GENERATOR) throw new Error(`generator ${g} would hold ${this.held[g]} sockets (max ${PER_GENERATOR})`);
      return c === 0
        ? Promise.resolve({ connected: 0, failed: 0, errors: [] })
        : w.call('connect', {
            endpoints: target.subEndpoints,
            localAddresses: this.addresses(g),
            count: c,
            startIndex: start,
            path: p,
            headers: {},
            token,
            track,
            keepIds: target.keepIds ?? false,
            concurrency: concurrency ?? target.connectConcurrency ?? Math.max(16, Math.floor(512 / n)),
            timeout: 60_000,
          });
    });
    const results = await Promise.all(jobs);
    done = true;
    wake();
    await ticker;
    return {
      connected: results.reduce((a, r) => a + r.connected, 0),
      failed: results.reduce((a, r) => a + r.failed, 0),
      seconds: (nowMs() - t0) / 1000,
      errors: results.flatMap((r) => r.errors).slice(0, 5),
    };
  }

  /** Sums the generators' counters; merges their latency histograms when `hist`. */
  async stats({ hist = false } = {}) {
    const parts = await this.all('stats', () => ({ hist }));
    const sum = (k) => parts.reduce((a, p) => a + p[k], 0);
    const merged = hist ? mergeHistograms(parts.map((p) => p.hist)) : null;
    return {
      events: sum('events'),
      comments: sum('comments'),
      bytes: sum('bytes'),
      gaps: sum('gaps'),
      dups: sum('dups'),
      peerClosed: sum('peerClosed'),
      errors: sum('errors'),
      live: sum('live'),
      total: sum('total'),
      generatorRss: sum('rss'),
      firstEventAt: Math.min(...parts.map((p) => p.firstEventAt || Infinity)),
      lastEventAt: Math.max(...parts.map((p) => p.lastEventAt)),
      minSeq: Math.min(...parts.map((p) => (p.total ? p.minSeq : Infinity))),
      caughtUpAt: parts.every((p) => p.catchUpPending === 0) ? Math.max(...parts.map((p) => p.caughtUpAt)) : 0,
      catchUpPending: sum('catchUpPending'),
      errorSamples: parts.flatMap((p) => p.errorSamples).slice(0, 5),
      hist: merged,
    };
  }

  reset() {
    return this.all('reset');
  }

  /** Pids of the generator processes (to measure their CPU). */
  pids() {
    return this.workers.map((w) => /** @type {number} */ (w.child.pid));
  }

  drop() {
    return this.all('drop');
  }

  async reconnect({ target, idPrefix, progress, concurrency }) {
    const n = this.workers.length;
    const results = await this.all('reconnect', (g) => ({
      localAddresses: this.addresses(g, true),
      idPrefix,
      target,
      concurrency: concurrency ?? Math.max(16, Math.floor(512 / n)),
      timeout: 60_000,
    }));
    void progress;
    return {
      connected: results.reduce((a, r) => a + r.connected, 0),
      failed: results.reduce((a, r) => a + r.failed, 0),
      errors: results.flatMap((r) => r.errors).slice(0, 5),
    };
  }

  closeAll() {
    this.held.fill(0);
    return this.all('closeAll');
  }

  async stop() {
    await Promise.all(this.workers.map((w) => stopChild(w.child, 1000)));
  }
}

/**
 * Polls until the generators counted `expected` events, the count stopped moving for `stallMs`,
 * or `maxMs` passed. @param {Fleet} fleet
 */
export async function waitEvents(fleet, expected, { stallMs = 2000, maxMs = 20000, hist = true } = {}) {
  const t0 = Date.now();
  let last = -1;
  let lastChange = Date.now();
  for (;;) {
    const s = await fleet.stats();
    if (s.events >= expected) break;
    if (s.events !== last) {
      last = s.events;
      lastChange = Date.now();
    }
    if (Date.now() - lastChange > stallMs || Date.now() - t0 > maxMs) break;
    await sleep(50);
  }
  return fleet.stats({ hist });
}
