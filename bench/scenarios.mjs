// The five scenarios. Each starts its targets, drives them with the same generators, and returns
// plain data (no histograms) for the report.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Fleet, Publisher, waitEvents } from './fleet.mjs';
import { mergeHistograms, nowMs, sleep, summarize, totalCpu, totalRss } from './lib.mjs';
import { JWT_KEY, cleanupTransport, nchanInstalled, pushpinInstalled, startBare, startNchan, startPushpin, startQuicksilver } from './targets.mjs';

/**
 * @typedef {object} Ctx
 * @property {boolean} quick
 * @property {any} opts          parsed command line
 * @property {(line: string) => void} log
 * @property {string} tag        unique per run (names streams, tables, ids)
 * @property {string} dir        scratch directory
 */

const TOPIC = 'https://bench.example/broadcast';
const USERS = 'https://bench.example/users/';

/** Starts a target, runs `fn`, always stops it (and the fleet/publisher `fn` registered). */
async function withTarget(ctx, label, start, fn) {
  const name = label.slice(label.indexOf(' ') + 1).replace(/^quicksilver (memory|lmdb|redis|postgres|nats)$/, 'quicksilver');
  let target;
  try {
    target = await start();
  } catch (err) {
    const msg = String(/** @type {Error} */ (err).message).split('\n').filter(Boolean).slice(0, 4).join(' | ');
    ctx.log(`${label}: skipped: ${msg}`);
    return { name, skipped: msg };
  }
  const cleanup = [];
  try {
    return { name, label: target.label, topology: target.topology, procs: target.procs, notes: target.notes, ...(await fn(target, cleanup)) };
  } catch (err) {
    ctx.log(`${label}: failed: ${/** @type {Error} */ (err).stack}`);
    return { name, label: target.label, failed: String(/** @type {Error} */ (err).message) };
  } finally {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
    await target.stop();
  }
}

const latencyOf = (h) => {
  const s = summarize(h);
  h.destroy();
  return s;
};

/** A peer that is not installed is reported as skipped (with how to install it), never hidden. */
function missingPeer(ctx, scenario, name) {
  if (name === 'pushpin' && !pushpinInstalled()) {
    const note = 'Pushpin not installed: skipped (bench/install-pushpin.sh installs it)';
    ctx.log(`${scenario} pushpin: ${note}`);
    return { name, skipped: note };
  }
  if (name === 'nchan' && !nchanInstalled()) {
    const note = 'Nchan (nginx + libnginx-mod-nchan) not installed: skipped (bench/install-nchan.sh installs it)';
    ctx.log(`${scenario} nchan: ${note}`);
    return { name, skipped: note };
  }
  return null;
}

// ------------------------------------------------------------------------------------------------
// 1. Idle subscribers with heartbeats
// ------------------------------------------------------------------------------------------------

/** @param {Ctx} ctx */
export async function idle(ctx) {
  const N = ctx.opts.idle ?? (ctx.quick ? 300 : 100_000);
  const heartbeat = ctx.quick ? 500 : 10_000;
  const procs = ctx.opts.workers ?? Math.max(1, Math.ceil(N / 16_000));
  const starters = [
    ['quicksilver', () => startQuicksilver({ procs, heartbeat, transport: ctx.opts.transport, needFanout: false, tag: `${ctx.tag}i`, dir: ctx.dir, log: ctx.log, nodeArgs: [...(ctx.opts.hubNodeArgs ?? []), ...(ctx.opts.heapSnapshot ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${ctx.opts.heapSnapshot}`] : [])] })],
    ['bare', () => startBare({ procs, heartbeat })],
    ['bare-http', () => startBare({ procs, heartbeat, mode: 'http' })],
    // nginx workers summed (master included), pings as often as the hub's heartbeat.
    ['nchan', () => startNchan({ procs, heartbeat })],
  ];
  const results = [];
  for (const [name, start] of starters) {
    if (ctx.opts.targets && !ctx.opts.targets.includes(name)) continue;
    if (ctx.quick && !ctx.opts.targets && name === 'nchan') continue;
    const missing = missingPeer(ctx, 'idle', name);
    if (missing) {
      results.push(missing);
      continue;
    }
    results.push(
      await withTarget(ctx, `idle ${name}`, start, async (target, cleanup) => {
        await sleep(ctx.quick ? 300 : 1500);
        const pids0 = target.pids();
        const rssBefore = totalRss(pids0);
        const fleet = new Fleet(Fleet.sizeFor(N));
        cleanup.push(() => fleet.stop());
        ctx.log(`idle ${name}: connecting ${N.toLocaleString('en-US')} subscribers (${target.procs} process${target.procs > 1 ? 'es' : ''}, ${target.topology}); hub RSS before ${(rssBefore / 1048576).toFixed(1)} MiB`);
        const c = await fleet.connect({
          target,
          count: N,
          path: target.subscribePath(TOPIC),
          track: false,
          progress: (l) => ctx.log(`idle ${name}: ${l}, hub RSS ${(totalRss(target.pids()) / 1048576).toFixed(0)} MiB`),
        });
        ctx.log(`idle ${name}: ${c.connected.toLocaleString('en-US')} connected in ${c.seconds.toFixed(1)} s (${c.failed} failed${c.errors.length ? `: ${c.errors[0]}` : ''}); holding ${((heartbeat + 2000) / 1000).toFixed(0)} s for heartbeats`);
        await sleep(heartbeat + (ctx.quick ? 600 : 2000));
        const st = await fleet.stats();
        const pids = target.pids();
        const rssAfter = totalRss(pids);
        const live = st.live;
        const perSub = live > 0 ? (rssAfter - rssBefore) / live : null;
        const r = {
          subscribers: live,
          requested: N,
          failed: c.failed,
          connectSeconds: Math.round(c.seconds * 10) / 10,
          connectPerSecond: Math.round(c.connected / c.seconds),
          processes: pids.length,
          rssBefore,
          rssAfter,
          rssPerSubscriber: perSub === null ? null : Math.round(perSub),
          heartbeatsPerSubscriber: live > 0 ? Math.round((st.comments / live) * 10) / 10 : 0,
          heartbeatOk: live > 0 && st.comments >= 2 * live,
          peerClosed: st.peerClosed,
          errors: c.errors,
        };
        if (ctx.opts.heapSnapshot && name === 'quicksilver') await heapSnapshots(ctx, pids);
        ctx.log(`idle ${name}: ${live.toLocaleString('en-US')} live, hub RSS ${(rssAfter / 1048576).toFixed(1)} MiB over ${pids.length} processes → ${(perSub ?? 0) / 1024 > 0 ? ((perSub ?? 0) / 1024).toFixed(2) : '–'} KB per subscriber, ${r.heartbeatsPerSubscriber} comments/subscriber`);
        await fleet.closeAll();
        return r;
      }),
    );
  }
  return { subscribers: N, heartbeatMs: heartbeat, results };
}

/** Asks every hub process for a heap snapshot (--heap-snapshot DIR) and waits for the files. */
async function heapSnapshots(ctx, pids) {
  const { readdirSync, statSync, mkdirSync } = await import('node:fs');
  mkdirSync(ctx.opts.heapSnapshot, { recursive: true });
  const count = () => readdirSync(ctx.opts.heapSnapshot).filter((f) => f.endsWith('.heapsnapshot'));
  const before = count().length;
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGUSR2');
    } catch {
      // gone
    }
  }
  ctx.log(`idle quicksilver: heap snapshots requested from ${pids.length} processes into ${ctx.opts.heapSnapshot}`);
  let last = -1;
  for (let i = 0; i < 240; i++) {
    await sleep(1000);
    const files = count();
    const size = files.reduce((a, f) => a + statSync(path.join(ctx.opts.heapSnapshot, f)).size, 0);
    if (files.length >= before + pids.length && size > 0 && size === last) break;
    last = size;
  }
}

// ------------------------------------------------------------------------------------------------
// 2. Broadcast fan-out
// ------------------------------------------------------------------------------------------------

/** @param {Ctx} ctx */
export async function broadcast(ctx) {
  const N = ctx.opts.subscribers ?? (ctx.quick ? 200 : 10_000);
  const rates = ctx.opts.rates ?? (ctx.quick ? [10, 40] : [5, 10, 20, 50, 100, 200, 400]);
  const stageMs = ctx.opts.stageMs ?? (ctx.quick ? 500 : 4000);
  const procs = ctx.opts.workers ?? 1;
  const starters = [
    ['quicksilver', () => startQuicksilver({ procs, heartbeat: 40_000, transport: ctx.opts.transport, tag: `${ctx.tag}b`, dir: ctx.dir, log: ctx.log, nodeArgs: ctx.opts.hubNodeArgs })],
    ['bare', () => startBare({ procs })],
    // The same without write coalescing: shows what batching frames per event-loop turn is worth.
    ['bare-uncoalesced', () => startBare({ procs, coalesce: false })],
    ['pushpin', () => startPushpin({ messageRate: ctx.opts.pushpinRate ?? 1_000_000 })],
    ['nchan', () => startNchan({ procs })],
  ];
  const results = [];
  const notes = [];
  for (const [name, start] of starters) {
    if (ctx.opts.targets && !ctx.opts.targets.includes(name)) continue;
    // --quick proves the harness: the peers' paths are exercised by the latency and reconnect
    // scenarios (Nchan) or not at all (Pushpin, slow to start), as before Pushpin was installed.
    if (ctx.quick && !ctx.opts.targets && (name === 'bare-uncoalesced' || name === 'nchan')) continue;
    if (ctx.quick && !ctx.opts.targets && name === 'pushpin') {
      results.push({ name, skipped: 'Pushpin is skipped in --quick (name it in --targets to run it)' });
      continue;
    }
    const missing = missingPeer(ctx, 'broadcast', name);
    if (missing) {
      results.push(missing);
      continue;
    }
    results.push(
      await withTarget(ctx, `broadcast ${name}`, start, async (target, cleanup) => {
        const fleet = new Fleet(Fleet.sizeFor(N, 2));
        const pub = new Publisher();
        cleanup.push(() => fleet.stop(), () => pub.stop());
        const idPrefix = `urn:qsbench:${ctx.tag}:b:`;
        const pubBase = { endpoints: target.pubEndpoints, format: target.pubFormat, ...target.pubExtra, topic: TOPIC, idPrefix, pad: 'x'.repeat(ctx.opts.payload ?? 64), connections: 8 };
        const c = await fleet.connect({ target, count: N, path: target.subscribePath(TOPIC), track: true, progress: (l) => ctx.log(`broadcast ${name}: ${l}`) });
        ctx.log(`broadcast ${name}: ${c.connected.toLocaleString('en-US')} subscribers in ${c.seconds.toFixed(1)} s (${c.failed} failed${c.errors.length ? `: ${c.errors[0]}` : ''})`);
        if (c.connected === 0) throw new Error(`no subscriber could connect: ${c.errors.join(' | ')}`);
        await sleep(ctx.quick ? 200 : 500);
        // Warm-up: a few updates everyone must get before measuring.
        let seq = 0;
        const warm = await pub.publish({ ...pubBase, rate: 20, count: 5, startSeq: seq });
        seq = warm.nextSeq;
        await waitEvents(fleet, 5 * c.connected, { stallMs: 3000, maxMs: 15000, hist: false });
        const stages = [];
        for (const rate of rates) {
          await fleet.reset();
          const pids = target.pids();
          const cpu0 = totalCpu(pids);
          const g0 = totalCpu(fleet.pids());
          const r = await pub.publish({ ...pubBase, rate, duration: stageMs, startSeq: seq });
          seq = r.nextSeq;
          const okUpdates = Math.round(r.ok / target.pubEndpoints.length);
          const live = (await fleet.stats()).live;
          const expected = okUpdates * live;
          const st = await waitEvents(fleet, expected, { stallMs: 2000, maxMs: stageMs + 15000 });
          const cpu1 = totalCpu(target.pids());
          const g1 = totalCpu(fleet.pids());
          const elapsed = Math.max(1, st.lastEventAt - r.firstAt);
          const lat = latencyOf(/** @type {any} */ (st.hist));
          const rttH = mergeHistograms([r.rtt]);
          const stage = {
            rate,
            published: r.sent,
            publishFailed: r.failed,
            publishRttMs: latencyOf(rttH),
            publisherBehindMs: Math.round(r.maxBehindMs),
            subscribers: live,
            expected,
            delivered: st.events,
            deliveriesPerSecond: Math.round((st.events / elapsed) * 1000),
            offeredPerSecond: rate * live,
            drainMs: Math.round(st.lastEventAt - r.lastAt),
            latencyMs: lat,
            gaps: st.gaps,
            dups: st.dups,
            cut: st.peerClosed,
            hubCpuCores: Math.round(((cpu1 - cpu0) / elapsed) * 100) / 100,
            generatorCpuCores: Math.round(((g1 - g0) / elapsed) * 100) / 100,
          };
          stage.sustained = stage.delivered >= expected * 0.999 && stage.drainMs <= 1000 && stage.cut === 0 && r.failed === 0 && r.maxBehindMs < 500;
          stages.push(stage);
          ctx.log(
            `broadcast ${name}: ${rate}/s × ${live.toLocaleString('en-US')} → ${stage.deliveriesPerSecond.toLocaleString('en-US')} deliveries/s, p50 ${lat.p50} ms, p99 ${lat.p99} ms, max ${lat.max} ms, hub ${stage.hubCpuCores} cores, generators ${stage.generatorCpuCores}${stage.sustained ? '' : ' — saturated, stopping'}${stage.gaps || stage.dups ? `, ${stage.gaps} gaps, ${stage.dups} dups` : ''}`,
          );
          if (!stage.sustained) break;
        }
        await fleet.closeAll();
        const best = stages.reduce((a, s) => Math.max(a, s.deliveriesPerSecond), 0);
        const bestSustained = stages.filter((s) => s.sustained).reduce((a, s) => Math.max(a, s.deliveriesPerSecond), 0);
        return { subscribers: c.connected, maxDeliveriesPerSecond: best, maxSustainedDeliveriesPerSecond: bestSustained, stages };
      }),
    );
  }
  return { subscribers: N, rates, stageMs, notes, results };
}

// ------------------------------------------------------------------------------------------------
// 2b. Publish-to-receive latency as an application sees it
// ------------------------------------------------------------------------------------------------

/**
 * The publishers of the latency scenario.
 * - sequential: what an application does: Node's fetch (undici, keep-alive), one request at a
 *   time, a token signed for each request, the hub choosing the id; a fixed rate.
 * - pool: the broadcast scenario's publisher: 8 keep-alive raw HTTP/1.1 connections, one token
 *   for the whole run (the hub's verified-token cache answers), ids chosen by the publisher, up
 *   to 8 requests in flight; the same fixed rate.
 */
const PUBLISHERS = {
  sequential: { client: 'fetch', hubIds: true },
  pool: { client: 'raw', connections: 8 },
  // Diagnostic variants (not run by default), to take the two apart:
  // the sequential fetch publisher with one token for the whole run (the hub's cache answers)…
  'sequential-onetoken': { client: 'fetch', hubIds: true, oneToken: true },
  // …and the pool with one connection (one request in flight, like the sequential one).
  'pool-1': { client: 'raw', connections: 1 },
};
const DEFAULT_PUBLISHERS = ['sequential', 'pool'];

/** @param {Ctx} ctx */
export async function latency(ctx) {
  const N = ctx.opts.latencySubscribers ?? ctx.opts.subscribers ?? (ctx.quick ? 200 : 10_000);
  const rates = ctx.opts.latencyRates ?? (ctx.quick ? [50] : [5, 10, 20, 50]);
  const count = ctx.opts.latencyUpdates ?? (ctx.quick ? 6 : 100);
  const publishers = ctx.opts.publishers ?? DEFAULT_PUBLISHERS;
  for (const p of publishers) if (!(p in PUBLISHERS)) throw new Error(`unknown publisher ${p} (expected ${Object.keys(PUBLISHERS).join(', ')})`);
  const hubArgs = { heartbeat: 40_000, dir: ctx.dir, log: ctx.log, nodeArgs: ctx.opts.hubNodeArgs };
  const starters = [
    // What the outside probe ran: one process, the in-memory transport.
    ['quicksilver', () => startQuicksilver({ ...hubArgs, procs: 1, transport: 'memory', tag: `${ctx.tag}l1` })],
    // One process with the default store: separates the store's cost from the cluster's.
    ['quicksilver-lmdb', () => startQuicksilver({ ...hubArgs, procs: 1, transport: 'lmdb', tag: `${ctx.tag}l2` })],
    // A plain `quicksilver`: one worker per core and the LMDB store.
    ['quicksilver-default', () => startQuicksilver({ ...hubArgs, defaults: true, transport: 'lmdb', tag: `${ctx.tag}l3` })],
    ['bare', () => startBare({ procs: 1 })],
    ['bare-uncoalesced', () => startBare({ procs: 1, coalesce: false })],
    // Diagnostic (only when named in --targets): the same, its 200 sent before the fan-out.
    ['bare-uncoalesced-ackfirst', () => startBare({ procs: 1, coalesce: false, ackFirst: true })],
    ['nchan', () => startNchan({})],
    ['pushpin', () => startPushpin({ messageRate: ctx.opts.pushpinRate ?? 1_000_000 })],
  ];
  const results = [];
  for (const [name, start] of starters) {
    if (ctx.opts.targets ? !ctx.opts.targets.includes(name) : name === 'bare-uncoalesced-ackfirst') continue;
    // --quick: the new variants (default configuration, one write per frame) and Nchan's frames.
    if (ctx.quick && !ctx.opts.targets && (name === 'quicksilver-lmdb' || name === 'bare' || name === 'pushpin')) continue;
    const missing = missingPeer(ctx, 'latency', name);
    if (missing) {
      results.push(missing);
      continue;
    }
    results.push(
      await withTarget(ctx, `latency ${name}`, start, async (target, cleanup) => {
        const fleet = new Fleet(Fleet.sizeFor(N, 2));
        const pub = new Publisher();
        cleanup.push(() => fleet.stop(), () => pub.stop());
        const idPrefix = `urn:qsbench:${ctx.tag}:l:`;
        const pubBase = { endpoints: target.pubEndpoints, format: target.pubFormat, ...target.pubExtra, topic: TOPIC, idPrefix, pad: 'x'.repeat(ctx.opts.payload ?? 64), jwtKey: JWT_KEY };
        const c = await fleet.connect({ target, count: N, path: target.subscribePath(TOPIC), track: true, progress: (l) => ctx.log(`latency ${name}: ${l}`) });
        ctx.log(`latency ${name}: ${c.connected.toLocaleString('en-US')} subscribers in ${c.seconds.toFixed(1)} s (${c.failed} failed${c.errors.length ? `: ${c.errors[0]}` : ''}), ${target.label}`);
        if (c.connected === 0) throw new Error(`no subscriber could connect: ${c.errors.join(' | ')}`);
        await sleep(ctx.quick ? 200 : 500);
        let seq = 0;
        // Warm-up, not measured: the publish path runs once per update, so it needs a few dozen
        // requests to be compiled (JIT) like the fan-out loop is after one; both publishers.
        const warmCount = ctx.quick ? 3 : 40;
        let warmed = 0;
        for (const p of publishers) {
          const warm = await pub.publish({ ...pubBase, ...PUBLISHERS[p], rate: ctx.quick ? 50 : 40, count: warmCount, startSeq: seq });
          seq = warm.nextSeq;
          warmed += Math.round(warm.ok / target.pubEndpoints.length);
          await waitEvents(fleet, warmed * c.connected, { stallMs: 3000, maxMs: 20000, hist: false });
        }
        const stages = [];
        for (const publisher of publishers) {
          for (const rate of rates) {
            await fleet.reset();
            const pids = target.pids();
            const cpu0 = totalCpu(pids);
            const r = await pub.publish({ ...pubBase, ...PUBLISHERS[publisher], rate, count, startSeq: seq });
            seq = r.nextSeq;
            const okUpdates = Math.round(r.ok / target.pubEndpoints.length);
            const live = (await fleet.stats()).live;
            const expected = okUpdates * live;
            const st = await waitEvents(fleet, expected, { stallMs: 2000, maxMs: (count / rate) * 1000 + 15000 });
            const elapsed = Math.max(1, st.lastEventAt - r.firstAt);
            const lat = latencyOf(/** @type {any} */ (st.hist));
            const stage = {
              publisher,
              rate,
              published: r.sent,
              publishFailed: r.failed,
              // What the publisher achieved: a sequential one falls behind the rate when each
              // answer takes longer than the interval (the server then paces it).
              achievedRate: Math.round(r.perSecond * 10) / 10,
              publishRttMs: latencyOf(mergeHistograms([r.rtt])),
              publisherBehindMs: Math.round(r.maxBehindMs),
              subscribers: live,
              expected,
              delivered: st.events,
              deliveriesPerSecond: Math.round((st.events / elapsed) * 1000),
              drainMs: Math.round(st.lastEventAt - r.lastAt),
              latencyMs: lat,
              gaps: st.gaps,
              dups: st.dups,
              cut: st.peerClosed,
              hubCpuCores: Math.round(((totalCpu(target.pids()) - cpu0) / elapsed) * 100) / 100,
            };
            stage.sustained = stage.delivered >= expected * 0.999 && stage.drainMs <= 1000 && stage.cut === 0 && r.failed === 0 && r.maxBehindMs < 500;
            stages.push(stage);
            ctx.log(
              `latency ${name}: ${publisher} ${rate}/s × ${count} (achieved ${stage.achievedRate}/s) → p50 ${lat.p50} ms, p99 ${lat.p99} ms, max ${lat.max} ms; POST p50 ${stage.publishRttMs.p50} ms p99 ${stage.publishRttMs.p99} ms, publisher ${stage.publisherBehindMs} ms behind at worst; hub ${stage.hubCpuCores} cores${stage.sustained ? '' : ' — not sustained, next publisher'}${stage.gaps || stage.dups ? `, ${stage.gaps} gaps, ${stage.dups} dups` : ''}`,
            );
            if (!stage.sustained) break;
          }
        }
        await fleet.closeAll();
        return { subscribers: c.connected, stages };
      }),
    );
  }
  return { subscribers: N, rates, updatesPerRate: count, publishers, results };
}

// ------------------------------------------------------------------------------------------------
// 3. Targeted private fan-out
// ------------------------------------------------------------------------------------------------

/** @param {Ctx} ctx */
export async function targeted(ctx) {
  const sizes = ctx.opts.sizes ?? (ctx.quick ? [50, 200] : [1000, 10_000, 100_000]);
  const max = Math.max(...sizes);
  const procs = ctx.opts.workers ?? Math.max(1, Math.ceil(max / 16_000));
  const rate = ctx.quick ? 50 : 200;
  const duration = ctx.quick ? 300 : 5000;
  const starters = [
    // The realistic shape: every subscriber uses the same URI template selector, its token lets
    // it read only its own topic, updates are private.
    ['quicksilver', 'template selector https://bench.example/users/{id}, token grants users/<own id>, private updates', {
      start: () => startQuicksilver({ procs, heartbeat: 0, anonymous: false, transport: ctx.opts.transport, tag: `${ctx.tag}t`, dir: ctx.dir, log: ctx.log, nodeArgs: ctx.opts.hubNodeArgs }),
      path: (t) => t.subscribePath(`${USERS}{id}`),
      token: { key: JWT_KEY, template: `${USERS}%I%` },
      private: true,
    }],
    // Same tokens and private updates, but each subscriber selects its own exact topic.
    ['quicksilver-exact', 'exact selector users/<own id>, token grants users/<own id>, private updates', {
      start: () => startQuicksilver({ procs, heartbeat: 0, anonymous: false, transport: ctx.opts.transport, tag: `${ctx.tag}e`, dir: ctx.dir, log: ctx.log, nodeArgs: ctx.opts.hubNodeArgs }),
      path: (t) => t.subscribePath(`${USERS}%I%`),
      token: { key: JWT_KEY, template: `${USERS}%I%` },
      private: true,
    }],
    ['bare', 'exact topic per subscriber, one hash lookup per publish', {
      start: () => startBare({ procs, heartbeat: 0 }),
      path: (t) => t.subscribePath(`${USERS}%I%`),
      token: null,
      private: false,
    }],
  ];
  const results = [];
  for (const [name, shape, s] of starters) {
    if (ctx.opts.targets && !ctx.opts.targets.includes(name)) continue;
    if (ctx.quick && !ctx.opts.targets && name === 'quicksilver-exact') continue;
    results.push(
      await withTarget(ctx, `targeted ${name}`, s.start, async (target, cleanup) => {
        const fleet = new Fleet(Fleet.sizeFor(max));
        const pub = new Publisher();
        cleanup.push(() => fleet.stop(), () => pub.stop());
        const steps = [];
        let connected = 0;
        let seq = 0;
        for (const size of sizes) {
          const c = await fleet.connect({ target, count: size - connected, startIndex: connected, path: s.path(target), token: s.token, track: false, progress: (l) => ctx.log(`targeted ${name}: ${l}`) });
          connected = size;
          const live = (await fleet.stats()).live;
          ctx.log(`targeted ${name}: ${live.toLocaleString('en-US')} subscribers (+${c.connected} in ${c.seconds.toFixed(1)} s${c.failed ? `, ${c.failed} failed: ${c.errors[0]}` : ''})`);
          await sleep(ctx.quick ? 150 : 1500);
          // CPU the hub burns doing nothing at this size, to subtract from the publish window.
          const idleMs = ctx.quick ? 250 : 3000;
          const i0 = totalCpu(target.pids());
          const it0 = nowMs();
          await sleep(idleMs);
          const idleRate = (totalCpu(target.pids()) - i0) / (nowMs() - it0);
          await fleet.reset();
          const cpu0 = totalCpu(target.pids());
          const w0 = nowMs();
          const r = await pub.publish({
            endpoints: target.pubEndpoints,
            format: target.pubFormat,
            ...target.pubExtra,
            topic: `${USERS}%K%`,
            keyspace: size,
            private: s.private,
            idPrefix: `urn:qsbench:${ctx.tag}:t:`,
            pad: 'x'.repeat(64),
            rate,
            duration,
            startSeq: seq,
            connections: 8,
          });
          seq = r.nextSeq;
          const okUpdates = Math.round(r.ok / target.pubEndpoints.length);
          const st = await waitEvents(fleet, okUpdates, { stallMs: 2000, maxMs: 20000 });
          const window = nowMs() - w0;
          const cpu = totalCpu(target.pids()) - cpu0;
          const costUs = Math.max(0, ((cpu - idleRate * window) / Math.max(1, r.sent)) * 1000);
          const step = {
            subscribers: live,
            published: r.sent,
            publishFailed: r.failed,
            delivered: st.events,
            hubCpuUsPerPublish: Math.round(costUs),
            idleCpuCores: Math.round(idleRate * 1000) / 1000,
            publishRttMs: latencyOf(mergeHistograms([r.rtt])),
            latencyMs: latencyOf(/** @type {any} */ (st.hist)),
          };
          steps.push(step);
          ctx.log(`targeted ${name}: ${live.toLocaleString('en-US')} subscribers → ${step.hubCpuUsPerPublish} µs hub CPU per publish, publish RTT p50 ${step.publishRttMs.p50} ms, delivery p50 ${step.latencyMs.p50} ms p99 ${step.latencyMs.p99} ms (${st.events}/${okUpdates} delivered)`);
        }
        await fleet.closeAll();
        const first = steps[0];
        const last = steps[steps.length - 1];
        return {
          shape,
          steps,
          growthCpu: first && last && first.hubCpuUsPerPublish > 0 ? Math.round((last.hubCpuUsPerPublish / first.hubCpuUsPerPublish) * 100) / 100 : null,
          growthLatencyP50: first && last && first.latencyMs.p50 ? Math.round((last.latencyMs.p50 / first.latencyMs.p50) * 100) / 100 : null,
        };
      }),
    );
  }
  return { sizes, rate, durationMs: duration, results };
}

// ------------------------------------------------------------------------------------------------
// 4. Publish throughput per transport
// ------------------------------------------------------------------------------------------------

/** @param {Ctx} ctx */
export async function publish(ctx) {
  const transports = ctx.opts.transports ?? ['memory', 'lmdb', 'redis', 'postgres', 'nats'];
  const duration = ctx.quick ? 300 : 5000;
  // 1 connection: a strictly sequential publisher (the next request leaves when the last is answered).
  const levels = ctx.opts.publishConnections ? [ctx.opts.publishConnections] : ctx.quick ? [16] : [1, 16, 64];
  const results = [];
  const run = (name, start, kind, connections) =>
    withTarget(ctx, `publish ${name}`, start, async (target, cleanup) => {
      const fleet = new Fleet(1);
      const pub = new Publisher();
      cleanup.push(() => fleet.stop(), () => pub.stop());
      const topic = 'https://bench.example/publish';
      await fleet.connect({ target, count: 1, path: target.subscribePath(topic), track: true });
      await sleep(300);
      const base = { endpoints: target.pubEndpoints, format: target.pubFormat, ...target.pubExtra, topic, idPrefix: `urn:qsbench:${ctx.tag}:p${kind}:`, pad: 'x'.repeat(64), rate: 0, connections };
      let seq = 0;
      if (!ctx.quick) {
        // Warm-up (JIT, connection pools, caches), not measured.
        const w = await pub.publish({ ...base, duration: 1500, startSeq: seq });
        seq = w.nextSeq;
        await waitEvents(fleet, w.ok, { stallMs: 3000, maxMs: 15000, hist: false });
        await fleet.reset();
      }
      const r = await pub.publish({ ...base, duration, startSeq: seq });
      const st = await waitEvents(fleet, r.ok, { stallMs: 3000, maxMs: 15000 });
      const res = {
        transport: kind,
        published: r.sent,
        ok: r.ok,
        publishFailed: r.failed,
        statusCounts: r.statusCounts,
        connections,
        publishesPerSecond: Math.round((r.ok / r.elapsedMs) * 1000),
        rttMs: latencyOf(mergeHistograms([r.rtt])),
        delivered: st.events,
        gaps: st.gaps,
        dups: st.dups,
        deliveryLatencyMs: latencyOf(/** @type {any} */ (st.hist)),
      };
      ctx.log(`publish ${name}: ${res.publishesPerSecond.toLocaleString('en-US')} publishes/s (${connections} connections), RTT p50 ${res.rttMs.p50} ms p99 ${res.rttMs.p99} ms, ${st.events}/${r.ok} delivered${r.failed ? `, ${r.failed} failed ${JSON.stringify(r.statusCounts)}` : ''}`);
      await fleet.closeAll();
      return res;
    });
  for (const connections of levels) {
    for (const kind of transports) {
      const tag = `${ctx.tag}p${kind}${connections}`;
      const r = await run(`quicksilver ${kind}`, () => startQuicksilver({ procs: 1, transport: kind, tag, dir: ctx.dir, log: ctx.log, nodeArgs: ctx.opts.hubNodeArgs }), kind, connections);
      results.push({ ...r, transport: kind, connections });
      await cleanupTransport(kind, tag);
    }
    if (transports.includes('lmdb')) {
      // What a plain `quicksilver` runs: one worker per core, the primary owning the LMDB store.
      const tag = `${ctx.tag}pdef${connections}`;
      const r = await run('quicksilver default', () => startQuicksilver({ defaults: true, transport: 'lmdb', tag, dir: ctx.dir, log: ctx.log, nodeArgs: ctx.opts.hubNodeArgs }), 'lmdb-default', connections);
      results.push({ ...r, transport: 'lmdb, default (workers = cores)', name: 'default', connections });
      await cleanupTransport('lmdb', tag);
    }
    // The HTTP path's ceiling: plain node:http reading the same form body and answering 200.
    results.push({ ...(await run('node:http form', () => startBare({ mode: 'http', form: true }), 'http-form', connections)), transport: 'none: node:http form handler', name: 'bare-http-form', connections });
    results.push({ ...(await run('bare', () => startBare({}), 'none', connections)), transport: 'none (ceiling)', name: 'bare', connections });
  }
  return { durationMs: duration, connections: levels, results };
}

// ------------------------------------------------------------------------------------------------
// 5. Reconnect storm
// ------------------------------------------------------------------------------------------------

/** @param {Ctx} ctx */
export async function reconnect(ctx) {
  const N = ctx.opts.reconnectSubscribers ?? (ctx.quick ? 200 : 10_000);
  const missed = ctx.quick ? 20 : 100;
  const procs = ctx.opts.workers ?? 1;
  const starters = [
    ['quicksilver', () => startQuicksilver({ procs, heartbeat: 40_000, transport: ctx.opts.transport, tag: `${ctx.tag}r`, dir: ctx.dir, log: ctx.log, nodeArgs: ctx.opts.hubNodeArgs })],
    ['bare', () => startBare({ procs })],
    // Nchan keeps 10 messages per channel by default: its buffer is raised so that the missed
    // updates are still there (the hub keeps 100,000 by default, the bare broadcaster 100,000).
    ['nchan', () => startNchan({ procs, bufferLength: Math.max(1000, missed * 2) })],
  ];
  const results = [];
  for (const [name, start] of starters) {
    if (ctx.opts.targets && !ctx.opts.targets.includes(name)) continue;
    const missing = missingPeer(ctx, 'reconnect', name);
    if (missing) {
      results.push(missing);
      continue;
    }
    results.push(
      await withTarget(ctx, `reconnect ${name}`, start, async (target, cleanup) => {
        const fleet = new Fleet(Fleet.sizeFor(N, 2));
        const pub = new Publisher();
        cleanup.push(() => fleet.stop(), () => pub.stop());
        const idPrefix = `urn:qsbench:${ctx.tag}:r:`;
        const pubBase = { endpoints: target.pubEndpoints, format: target.pubFormat, ...target.pubExtra, topic: TOPIC, idPrefix, pad: 'x'.repeat(64) };
        const c = await fleet.connect({ target, count: N, path: target.subscribePath(TOPIC), track: true, progress: (l) => ctx.log(`reconnect ${name}: ${l}`) });
        if (c.connected < N) ctx.log(`reconnect ${name}: only ${c.connected}/${N} connected: ${c.errors[0] ?? ''}`);
        await sleep(ctx.quick ? 200 : 500);
        let seq = 0;
        const a = await pub.publish({ ...pubBase, rate: 50, count: 5, startSeq: seq, connections: 1 });
        seq = a.nextSeq;
        await waitEvents(fleet, 5 * c.connected, { stallMs: 3000, maxMs: 20000, hist: false });
        ctx.log(`reconnect ${name}: ${c.connected.toLocaleString('en-US')} subscribers up to date; dropping them all, publishing ${missed} updates`);
        await fleet.drop();
        await sleep(ctx.quick ? 400 : 1000);
        const b = await pub.publish({ ...pubBase, rate: 0, count: missed, startSeq: seq, connections: 1 });
        seq = b.nextSeq;
        const last = seq - 1;
        await fleet.reset();
        const t0 = nowMs();
        const rc = await fleet.reconnect({ target: last, idPrefix });
        let st = await fleet.stats();
        const deadline = Date.now() + 60_000;
        while (st.catchUpPending > 0 && Date.now() < deadline) {
          await sleep(50);
          st = await fleet.stats();
        }
        const caughtUp = st.catchUpPending === 0;
        const seconds = caughtUp ? (st.caughtUpAt - t0) / 1000 : null;
        const reconnectSeconds = (nowMs() - t0) / 1000;
        // One live update after the storm: replay and live stream must be stitched without a dup.
        const c2 = await pub.publish({ ...pubBase, rate: 0, count: 1, startSeq: seq, connections: 1 });
        seq = c2.nextSeq;
        const expected = rc.connected * (missed + 1);
        const st2 = await waitEvents(fleet, expected, { stallMs: 3000, maxMs: 15000 });
        const r = {
          subscribers: c.connected,
          missed,
          reconnected: rc.connected,
          reconnectFailed: rc.failed,
          caughtUp,
          catchUpSeconds: seconds === null ? null : Math.round(seconds * 1000) / 1000,
          pendingAfterTimeout: st.catchUpPending,
          delivered: st2.events,
          expected,
          gaps: st2.gaps,
          dups: st2.dups,
          latencyMs: latencyOf(/** @type {any} */ (st2.hist)),
          errors: rc.errors,
        };
        ctx.log(`reconnect ${name}: ${rc.connected.toLocaleString('en-US')} reconnected, all caught up in ${seconds?.toFixed(2) ?? `— (${st.catchUpPending} still behind after ${reconnectSeconds.toFixed(0)} s)`} s, ${st2.gaps} gaps, ${st2.dups} duplicates, ${st2.events}/${expected} events`);
        await fleet.closeAll();
        return r;
      }),
    );
  }
  return { subscribers: N, missed, results };
}

export const SCENARIOS = { idle, broadcast, latency, targeted, publish, reconnect };

export function scratchDir() {
  return mkdtempSync(path.join(os.tmpdir(), 'qs-bench-'));
}

export function removeScratch(dir) {
  rmSync(dir, { recursive: true, force: true });
}
