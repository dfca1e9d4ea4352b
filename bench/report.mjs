// Turns the results into the terminal table, the target checklist and an SVG chart (own code).
import { fmtBytes, fmtNum, ratio } from './lib.mjs';

const find = (list, name) => list?.find((r) => r.name === name && !r.skipped && !r.failed);

// ------------------------------------------------------------------------------------------------
// Targets of the issue, checked against the measurements
// ------------------------------------------------------------------------------------------------

/** @returns {{ id: string, target: string, measured: string, met: boolean | null }[]} */
export function evaluateTargets(res) {
  const out = [];
  const s = res.scenarios;
  const quick = res.meta.quick;
  const add = (id, target, measured, met) => out.push({ id, target, measured, met: quick ? null : met });

  if (s.idle) {
    const q = find(s.idle.results, 'quicksilver');
    const bare = find(s.idle.results, 'bare');
    add('idle-count', '≥100k idle subscribers on one machine (several workers)', q ? `${fmtNum(q.subscribers)} live over ${q.processes} processes (${q.topology ?? ''})` : 'not measured', !!q && q.subscribers >= 100_000 && q.heartbeatOk);
    add('idle-rss', '≤4 KB hub RSS per added subscriber', q ? `${fmtBytes(q.rssPerSubscriber)} (bare node:net ${fmtBytes(bare?.rssPerSubscriber)}, node:http ${fmtBytes(find(s.idle.results, 'bare-http')?.rssPerSubscriber)})` : 'not measured', !!q && q.rssPerSubscriber !== null && q.rssPerSubscriber <= 4096);
    const nc = find(s.idle.results, 'nchan');
    const r = ratio(q?.rssPerSubscriber, nc?.rssPerSubscriber);
    add('idle-rss-vs-nchan', 'RSS per idle subscriber within 1.5× Nchan (nginx workers summed)', q && nc ? `${fmtBytes(q.rssPerSubscriber)} vs Nchan ${fmtBytes(nc.rssPerSubscriber)} = ${r}×` : 'Nchan not measured', q && nc && r !== null ? r <= 1.5 : null);
  }
  if (s.broadcast) {
    const q = find(s.broadcast.results, 'quicksilver');
    const bare = find(s.broadcast.results, 'bare');
    const pp = find(s.broadcast.results, 'pushpin');
    if (q && bare) {
      const r = ratio(q.maxDeliveriesPerSecond, bare.maxDeliveriesPerSecond);
      add('broadcast-throughput', 'broadcast deliveries/s ≥70 % of the bare broadcaster', `${fmtNum(q.maxDeliveriesPerSecond)}/s vs ${fmtNum(bare.maxDeliveriesPerSecond)}/s = ${pct(r)}`, r !== null && r >= 0.7);
      add('broadcast-vs-pushpin', 'broadcast deliveries/s above Pushpin', pp ? `${fmtNum(q.maxDeliveriesPerSecond)}/s vs Pushpin ${fmtNum(pp.maxDeliveriesPerSecond)}/s` : 'Pushpin not measured', pp ? q.maxDeliveriesPerSecond > pp.maxDeliveriesPerSecond : null);
      const nc = find(s.broadcast.results, 'nchan');
      add('broadcast-vs-nchan', 'broadcast deliveries/s above Nchan', nc ? `${fmtNum(q.maxDeliveriesPerSecond)}/s vs Nchan ${fmtNum(nc.maxDeliveriesPerSecond)}/s` : 'Nchan not measured', nc ? q.maxDeliveriesPerSecond > nc.maxDeliveriesPerSecond : null);
      const pairs = latencyPairs(q, bare);
      const worst = pairs.reduce((a, p) => (p.ratio !== null && (a === null || p.ratio > a.ratio) ? p : a), null);
      add(
        'broadcast-p99',
        'p99 latency ≤1.3× the bare broadcaster at the same rate',
        pairs.length ? pairs.map((p) => `${p.rate}/s: ${p.q} vs ${p.b} ms (${p.ratio}×)`).join('; ') : 'no rate sustained by both',
        worst ? worst.ratio <= 1.3 : null,
      );
    }
  }
  if (s.latency) {
    // Every Quicksilver configuration, the sequential publisher (what an application does),
    // every rate both sustained: p50 and p99 against both bare broadcasters.
    const hubs = (s.latency.results ?? []).filter((r) => r.name.startsWith('quicksilver') && !r.skipped && !r.failed);
    const parts = [];
    let worst = null;
    for (const q of hubs) {
      let w50 = null;
      let w99 = null;
      for (const ref of ['bare', 'bare-uncoalesced']) {
        const b = find(s.latency.results, ref);
        if (!b) continue;
        for (const p of latencyPairsBy(q, b, 'sequential')) {
          const where = `${p.rate}/s vs ${ref === 'bare' ? 'bare' : 'bare/frame'}`;
          if (p.p50Ratio !== null && (w50 === null || p.p50Ratio > w50.r)) w50 = { r: p.p50Ratio, where };
          if (p.p99Ratio !== null && (w99 === null || p.p99Ratio > w99.r)) w99 = { r: p.p99Ratio, where };
        }
      }
      if (!w50 || !w99) continue;
      worst = Math.max(worst ?? 0, w50.r, w99.r);
      parts.push(`${q.name}: worst p50 ${w50.r}× (${w50.where}), worst p99 ${w99.r}× (${w99.where})`);
    }
    add('latency-vs-bare', 'p50 and p99 ≤1.3× both bare broadcasters at every rate (sequential fetch publisher), --workers 1 and default configuration', parts.length ? parts.join('; ') : 'no rate sustained by both', worst === null ? null : worst <= 1.3);
    const nc = find(s.latency.results, 'nchan');
    const q1 = hubs.find((r) => r.name === 'quicksilver');
    if (q1 && nc) {
      const pairs = latencyPairsBy(q1, nc, 'sequential');
      add('latency-vs-nchan', 'p99 below Nchan at the same rate (sequential publisher, --workers 1)', pairs.length ? pairs.map((p) => `${p.rate}/s: ${p.q99} vs ${p.b99} ms`).join('; ') : 'no rate sustained by both', pairs.length ? pairs.every((p) => p.q99 < p.b99) : null);
    } else add('latency-vs-nchan', 'p99 below Nchan at the same rate (sequential publisher, --workers 1)', 'Nchan not measured', null);
  }
  if (s.targeted) {
    const q = find(s.targeted.results, 'quicksilver');
    if (q) {
      const a = q.steps[0];
      const b = q.steps[q.steps.length - 1];
      add('targeted-growth', 'targeted publish cost grows ≤1.5× from 1k to 100k subscribers', `${fmtNum(a?.hubCpuUsPerPublish)} µs → ${fmtNum(b?.hubCpuUsPerPublish)} µs hub CPU per publish (${q.growthCpu}×) from ${fmtNum(a?.subscribers)} to ${fmtNum(b?.subscribers)}; delivery p50 ${a?.latencyMs.p50} → ${b?.latencyMs.p50} ms`, q.growthCpu !== null && q.growthCpu <= 1.5 && (b?.subscribers ?? 0) >= 100_000);
    }
  }
  if (s.publish) {
    const ls = s.publish.results.filter((r) => r.transport === 'lmdb' && !r.skipped && !r.failed);
    const l = ls.reduce((a, r) => (!a || r.publishesPerSecond > a.publishesPerSecond ? r : a), null);
    add('publish-embedded', 'publish throughput ≥10k/s on the embedded store (LMDB)', ls.length ? ls.map((r) => `${fmtNum(r.publishesPerSecond)}/s with ${r.connections} connections`).join(', ') : 'not measured', !!l && l.publishesPerSecond >= 10_000);
    const at = (transport, connections) => s.publish.results.find((r) => r.transport === transport && r.connections === connections && !r.skipped && !r.failed);
    const l16 = at('lmdb', 16);
    const l1 = at('lmdb', 1);
    add('publish-lmdb-group', 'LMDB group commit: ≥20k/s with 16 publishers, ≥2k/s strictly sequential', `${l16 ? fmtNum(l16.publishesPerSecond) : '–'}/s with 16, ${l1 ? fmtNum(l1.publishesPerSecond) : '–'}/s sequential`, l16 && l1 ? l16.publishesPerSecond >= 20_000 && l1.publishesPerSecond >= 2_000 : null);
    const m16 = at('memory', 16);
    const h16 = at('none: node:http form handler', 16);
    add('publish-http-path', 'HTTP publish path (memory://) ≥50 % of a node:http handler reading the same form (16 connections)', m16 && h16 ? `${fmtNum(m16.publishesPerSecond)}/s vs ${fmtNum(h16.publishesPerSecond)}/s (${pct(m16.publishesPerSecond / h16.publishesPerSecond)})` : 'not measured', m16 && h16 ? m16.publishesPerSecond >= 0.5 * h16.publishesPerSecond : null);
    const cl = s.publish.results.filter((r) => r.transport.startsWith('lmdb, default') && !r.skipped && !r.failed);
    add('publish-cluster', 'publish throughput with the default workers ≥ --workers 1 (LMDB, each connection count)', cl.length ? cl.map((r) => `${r.connections}: ${fmtNum(r.publishesPerSecond)} vs ${fmtNum(at('lmdb', r.connections)?.publishesPerSecond ?? NaN)}/s`).join('; ') : 'not measured', cl.length ? cl.every((r) => r.publishesPerSecond >= (at('lmdb', r.connections)?.publishesPerSecond ?? Infinity)) : null);
  }
  if (s.reconnect) {
    const q = find(s.reconnect.results, 'quicksilver');
    add('reconnect', 'reconnect storm (10k × 100 missed) caught up in ≤5 s, zero gaps/duplicates', q ? `${q.catchUpSeconds ?? '—'} s for ${fmtNum(q.reconnected)} subscribers × ${q.missed}, ${q.gaps} gaps, ${q.dups} dups` : 'not measured', !!q && q.caughtUp && q.catchUpSeconds <= 5 && q.gaps === 0 && q.dups === 0 && q.subscribers >= 10_000);
  }
  return out;
}

const pct = (r) => (r === null ? '–' : `${Math.round(r * 1000) / 10} %`);

/** p50 and p99 of a latency-scenario target against a reference, per rate both sustained. */
function latencyPairsBy(q, ref, publisher) {
  const out = [];
  for (const sq of q.stages) {
    if (sq.publisher !== publisher || !sq.sustained) continue;
    const sb = ref.stages.find((x) => x.publisher === publisher && x.rate === sq.rate);
    if (!sb || !sb.sustained) continue;
    out.push({ rate: sq.rate, q50: sq.latencyMs.p50, q99: sq.latencyMs.p99, b50: sb.latencyMs.p50, b99: sb.latencyMs.p99, p50Ratio: ratio(sq.latencyMs.p50, sb.latencyMs.p50), p99Ratio: ratio(sq.latencyMs.p99, sb.latencyMs.p99) });
  }
  return out;
}

/** p99 at each rate both sustained. */
function latencyPairs(q, bare) {
  const out = [];
  for (const sq of q.stages) {
    const sb = bare.stages.find((x) => x.rate === sq.rate);
    if (!sb || !sq.sustained || !sb.sustained) continue;
    out.push({ rate: sq.rate, q: sq.latencyMs.p99, b: sb.latencyMs.p99, ratio: ratio(sq.latencyMs.p99, sb.latencyMs.p99) });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Terminal tables
// ------------------------------------------------------------------------------------------------

function table(headers, rows) {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells) => cells.map((c, i) => String(c ?? '').padEnd(w[i])).join('  ');
  return [line(headers), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

const skippedRow = (r, width) => [r.name, `${r.skipped ? 'skipped' : 'failed'}: ${(r.skipped ?? r.failed ?? '').slice(0, 90)}`, ...new Array(width - 2).fill('')];

export function renderTables(res) {
  const s = res.scenarios;
  const parts = [];
  if (s.idle) {
    const bare = find(s.idle.results, 'bare');
    const nc = find(s.idle.results, 'nchan');
    parts.push(`IDLE — ${fmtNum(s.idle.subscribers)} subscribers, heartbeat every ${s.idle.heartbeatMs / 1000} s (RSS summed over every process of the target)`);
    parts.push(
      table(
        ['target', 'live', 'procs', 'connect/s', 'RSS before', 'RSS after', 'RSS/sub', '× bare', '× nchan', 'comments/sub'],
        s.idle.results.map((r) =>
          r.skipped || r.failed
            ? skippedRow(r, 10)
            : [r.name, fmtNum(r.subscribers), `${r.processes} ${r.topology}`, fmtNum(r.connectPerSecond), fmtBytes(r.rssBefore), fmtBytes(r.rssAfter), fmtBytes(r.rssPerSubscriber), ratio(r.rssPerSubscriber, bare?.rssPerSubscriber) ?? '–', ratio(r.rssPerSubscriber, nc?.rssPerSubscriber) ?? '–', r.heartbeatsPerSubscriber],
        ),
      ),
    );
  }
  if (s.broadcast) {
    const bare = find(s.broadcast.results, 'bare');
    const pp = find(s.broadcast.results, 'pushpin');
    const nc = find(s.broadcast.results, 'nchan');
    parts.push(`BROADCAST — ${fmtNum(s.broadcast.subscribers)} subscribers on one topic, ${s.broadcast.stageMs / 1000} s per rate (pool publisher: 8 raw keep-alive connections, one token)`);
    const rows = [];
    for (const r of s.broadcast.results) {
      if (r.skipped || r.failed) {
        rows.push(skippedRow(r, 13));
        continue;
      }
      for (const st of r.stages) {
        const b = bare?.stages.find((x) => x.rate === st.rate);
        const p = pp?.stages.find((x) => x.rate === st.rate);
        const n = nc?.stages.find((x) => x.rate === st.rate);
        rows.push([
          r.name,
          `${st.rate}/s`,
          fmtNum(st.deliveriesPerSecond),
          ratio(st.deliveriesPerSecond, b?.deliveriesPerSecond) ?? '–',
          ratio(st.deliveriesPerSecond, p?.deliveriesPerSecond) ?? '–',
          ratio(st.deliveriesPerSecond, n?.deliveriesPerSecond) ?? '–',
          st.latencyMs.p50,
          st.latencyMs.p99,
          ratio(st.latencyMs.p50, b?.latencyMs.p50) ?? '–',
          ratio(st.latencyMs.p99, b?.latencyMs.p99) ?? '–',
          st.latencyMs.max,
          st.hubCpuCores,
          st.sustained ? 'yes' : `NO (${st.delivered < st.expected ? `${fmtNum(st.expected - st.delivered)} missing, ` : ''}drain ${st.drainMs} ms${st.cut ? `, ${st.cut} cut` : ''})`,
        ]);
      }
    }
    parts.push(table(['target', 'rate', 'deliveries/s', '× bare', '× pushpin', '× nchan', 'p50 ms', 'p99 ms', 'p50 × bare', 'p99 × bare', 'max ms', 'cores', 'sustained'], rows));
    parts.push(
      table(
        ['target', 'max deliveries/s', '× bare', '× pushpin', '× nchan'],
        s.broadcast.results.filter((r) => !r.skipped && !r.failed).map((r) => [r.name, fmtNum(r.maxDeliveriesPerSecond), ratio(r.maxDeliveriesPerSecond, bare?.maxDeliveriesPerSecond) ?? '–', ratio(r.maxDeliveriesPerSecond, pp?.maxDeliveriesPerSecond) ?? '–', ratio(r.maxDeliveriesPerSecond, nc?.maxDeliveriesPerSecond) ?? '–']),
      ),
    );
  }
  if (s.latency) {
    const ref = (name) => find(s.latency.results, name);
    const bare = ref('bare');
    const perFrame = ref('bare-uncoalesced');
    const nc = ref('nchan');
    parts.push(
      `LATENCY — ${fmtNum(s.latency.subscribers)} subscribers on one topic, ${s.latency.updatesPerRate} updates per rate and publisher; publishers: sequential = fetch (undici, keep-alive), one request at a time, a fresh HS256 token per request, hub-assigned ids; pool = 8 raw keep-alive connections, one token. Ratios compare the same publisher at the same rate; bare = coalescing bare broadcaster, bare/frame = one write per frame`,
    );
    const rows = [];
    for (const r of s.latency.results) {
      if (r.skipped || r.failed) {
        rows.push(skippedRow(r, 17));
        continue;
      }
      for (const st of r.stages) {
        const same = (t) => t?.stages.find((x) => x.publisher === st.publisher && x.rate === st.rate);
        const b = same(bare);
        const f = same(perFrame);
        const n = same(nc);
        rows.push([
          r.name,
          st.publisher,
          `${st.rate}/s`,
          st.achievedRate ?? '–',
          st.latencyMs.p50,
          st.latencyMs.p99,
          st.latencyMs.max,
          ratio(st.latencyMs.p50, b?.latencyMs.p50) ?? '–',
          ratio(st.latencyMs.p99, b?.latencyMs.p99) ?? '–',
          ratio(st.latencyMs.p50, f?.latencyMs.p50) ?? '–',
          ratio(st.latencyMs.p99, f?.latencyMs.p99) ?? '–',
          ratio(st.latencyMs.p50, n?.latencyMs.p50) ?? '–',
          ratio(st.latencyMs.p99, n?.latencyMs.p99) ?? '–',
          st.publishRttMs.p50,
          st.publisherBehindMs,
          st.hubCpuCores,
          st.sustained ? 'yes' : `NO (${st.delivered < st.expected ? `${fmtNum(st.expected - st.delivered)} missing, ` : ''}drain ${st.drainMs} ms, behind ${st.publisherBehindMs} ms${st.cut ? `, ${st.cut} cut` : ''})`,
        ]);
      }
    }
    parts.push(table(['target', 'publisher', 'rate', 'sent/s', 'p50 ms', 'p99 ms', 'max ms', 'p50×bare', 'p99×bare', 'p50×bare/frame', 'p99×bare/frame', 'p50×nchan', 'p99×nchan', 'POST p50 ms', 'behind ms', 'cores', 'sustained'], rows));
    const labels = s.latency.results.filter((r) => r.label).map((r) => `${r.name}: ${r.label}`);
    if (labels.length) parts.push(labels.join('\n'));
  }
  if (s.targeted) {
    const bare = find(s.targeted.results, 'bare');
    parts.push(`TARGETED — private updates to one subscriber each, ${s.targeted.rate}/s for ${s.targeted.durationMs / 1000} s per size`);
    const rows = [];
    for (const r of s.targeted.results) {
      if (r.skipped || r.failed) {
        rows.push(skippedRow(r, 9));
        continue;
      }
      for (const st of r.steps) {
        const b = bare?.steps.find((x) => x.subscribers === st.subscribers) ?? bare?.steps[r.steps.indexOf(st)];
        rows.push([r.name, fmtNum(st.subscribers), fmtNum(st.hubCpuUsPerPublish), ratio(st.hubCpuUsPerPublish, b?.hubCpuUsPerPublish) ?? '–', st.publishRttMs.p50, st.latencyMs.p50, st.latencyMs.p99, `${fmtNum(st.delivered)}/${fmtNum(st.published)}`, r.steps.indexOf(st) === r.steps.length - 1 ? `${r.growthCpu}×` : '']);
      }
    }
    parts.push(table(['target', 'subscribers', 'CPU µs/publish', '× bare', 'POST p50 ms', 'deliv p50 ms', 'deliv p99 ms', 'delivered', 'growth'], rows));
  }
  if (s.publish) {
    parts.push(`PUBLISH — closed loop over ${[s.publish.connections].flat().join(' / ')} keep-alive connections, ${s.publish.durationMs / 1000} s, JWT on every request, 1 subscriber`);
    parts.push(
      table(
        ['transport', 'conns', 'publishes/s', '× bare', '× node:http', 'RTT p50 ms', 'RTT p99 ms', 'RTT max ms', 'delivered', 'failed'],
        s.publish.results.map((r) => {
          const bare = s.publish.results.find((b) => b.transport === 'none (ceiling)' && b.connections === r.connections && !b.skipped && !b.failed);
          const http = s.publish.results.find((b) => b.transport === 'none: node:http form handler' && b.connections === r.connections && !b.skipped && !b.failed);
          return r.skipped || r.failed
            ? [r.transport, r.connections, `${r.skipped ? 'skipped' : 'failed'}: ${(r.skipped ?? r.failed).slice(0, 80)}`, '', '', '', '', '', '', '']
            : [r.transport, r.connections, fmtNum(r.publishesPerSecond), ratio(r.publishesPerSecond, bare?.publishesPerSecond) ?? '–', ratio(r.publishesPerSecond, http?.publishesPerSecond) ?? '–', r.rttMs.p50, r.rttMs.p99, r.rttMs.max, `${fmtNum(r.delivered)}/${fmtNum(r.ok)}`, r.publishFailed];
        }),
      ),
    );
  }
  if (s.reconnect) {
    const bare = find(s.reconnect.results, 'bare');
    parts.push(`RECONNECT — ${fmtNum(s.reconnect.subscribers)} subscribers reconnect with Last-Event-ID after missing ${s.reconnect.missed} updates`);
    parts.push(
      table(
        ['target', 'reconnected', 'caught up in', '× bare', '× nchan', 'gaps', 'dups', 'delivered', 'p50 ms', 'p99 ms'],
        s.reconnect.results.map((r) =>
          r.skipped || r.failed
            ? skippedRow(r, 10)
            : [r.name, fmtNum(r.reconnected), r.catchUpSeconds === null ? 'NOT caught up' : `${r.catchUpSeconds} s`, ratio(r.catchUpSeconds, bare?.catchUpSeconds) ?? '–', ratio(r.catchUpSeconds, find(s.reconnect.results, 'nchan')?.catchUpSeconds) ?? '–', r.gaps, r.dups, `${fmtNum(r.delivered)}/${fmtNum(r.expected)}`, r.latencyMs.p50, r.latencyMs.p99],
        ),
      ),
    );
  }
  const loads = Object.entries(s).map(([k, v]) => `${k} ${v.foreignCores ?? '–'}`);
  parts.push(`MACHINE — ${res.meta.machine.cores} cores, ${res.meta.machine.memGiB} GiB, Node ${res.meta.machine.node}, kernel ${res.meta.machine.kernel}; CPU used by other processes (cores): before ${res.meta.foreignCoresBefore}, ${loads.join(', ')}`);
  const targets = res.targets ?? [];
  if (targets.length) {
    parts.push('TARGETS');
    parts.push(table(['', 'target', 'measured'], targets.map((t) => [t.met === null ? 'n/a' : t.met ? 'MET' : 'MISSED', t.target, t.measured])));
    if (res.meta.quick) parts.push('(--quick: small counts, no target is judged)');
  }
  return parts.join('\n\n');
}

// ------------------------------------------------------------------------------------------------
// SVG chart
// ------------------------------------------------------------------------------------------------

const COLORS = { quicksilver: '#7b2ff7', 'quicksilver-exact': '#c77dff', 'quicksilver-lmdb': '#9d4edd', 'quicksilver-default': '#5a189a', bare: '#2b2d42', 'bare-uncoalesced': '#6c757d', 'bare-http': '#8d99ae', pushpin: '#ef8354', nchan: '#2a9d8f' };
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceTicks(min, max, log) {
  if (log) {
    const out = [];
    for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) out.push(10 ** e);
    return out;
  }
  const span = max - min || 1;
  const step = 10 ** Math.floor(Math.log10(span / 4));
  const mult = [1, 2, 5, 10].find((m) => span / (step * m) <= 6) ?? 10;
  const s = step * mult;
  const out = [];
  for (let v = Math.floor(min / s) * s; ; v += s) {
    out.push(v);
    if (v >= max - 1e-9) break;
  }
  return out;
}

const short = (v) => (v >= 1e6 ? `${+(v / 1e6).toFixed(1)}M` : v >= 1e3 ? `${+(v / 1e3).toFixed(1)}k` : `${+v.toFixed(2)}`);

/**
 * One panel: lines (points joined) or bars, at (x0, y0) of size w × h.
 * @param {{ title: string, xLabel: string, yLabel: string, xLog?: boolean, yLog?: boolean, series: { name: string, points: [number, number][] }[], bars?: boolean }} c
 */
function panel(c, x0, y0, w, h) {
  const m = { l: 64, r: 14, t: 30, b: 44 };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  const out = [`<g transform="translate(${x0},${y0})">`, `<text x="${w / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(c.title)}</text>`];
  const pts = c.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]) && (!c.yLog || p[1] > 0));
  if (pts.length === 0) {
    out.push(`<text x="${w / 2}" y="${h / 2}" text-anchor="middle" fill="#888">no data</text></g>`);
    return out.join('');
  }
  if (c.bars) {
    const cats = c.series.map((s) => s.name);
    const vmax = Math.max(...pts.map((p) => p[1])) * 1.1;
    const yt = niceTicks(0, vmax, false);
    const top = yt[yt.length - 1];
    const Y = (v) => m.t + ph - (v / top) * ph;
    for (const t of yt) out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${Y(t)}" y2="${Y(t)}" stroke="#eee"/><text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end" font-size="11">${short(t)}</text>`);
    const bw = pw / cats.length;
    c.series.forEach((s, i) => {
      const v = s.points[0]?.[1] ?? 0;
      out.push(`<rect x="${m.l + i * bw + bw * 0.15}" y="${Y(v)}" width="${bw * 0.7}" height="${m.t + ph - Y(v)}" fill="${s.color ?? '#7b2ff7'}"/>`);
      out.push(`<text x="${m.l + i * bw + bw / 2}" y="${Y(v) - 4}" text-anchor="middle" font-size="11">${short(v)}</text>`);
      out.push(`<text x="${m.l + i * bw + bw / 2}" y="${m.t + ph + 16}" text-anchor="middle" font-size="11">${esc(s.name)}</text>`);
    });
    out.push(`<text transform="translate(14,${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(c.yLabel)}</text>`);
    out.push('</g>');
    return out.join('');
  }
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const [xmin, xmax] = [Math.min(...xs), Math.max(...xs)];
  const [ymin, ymax] = [c.yLog ? Math.min(...ys) : 0, Math.max(...ys)];
  const xt = niceTicks(xmin, xmax, !!c.xLog);
  const yt = niceTicks(ymin, ymax * (c.yLog ? 1 : 1.05), !!c.yLog);
  const [xa, xb] = [c.xLog ? xt[0] : Math.min(xt[0], xmin), xt[xt.length - 1]];
  const [ya, yb] = [yt[0], yt[yt.length - 1]];
  const f = (v, a, b, log) => (log ? (Math.log10(v) - Math.log10(a)) / (Math.log10(b) - Math.log10(a) || 1) : (v - a) / (b - a || 1));
  const X = (v) => m.l + f(v, xa, xb, c.xLog) * pw;
  const Y = (v) => m.t + ph - f(v, ya, yb, c.yLog) * ph;
  for (const t of yt) out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${Y(t)}" y2="${Y(t)}" stroke="#eee"/><text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end" font-size="11">${short(t)}</text>`);
  for (const t of xt) out.push(`<line x1="${X(t)}" x2="${X(t)}" y1="${m.t}" y2="${m.t + ph}" stroke="#f4f4f4"/><text x="${X(t)}" y="${m.t + ph + 16}" text-anchor="middle" font-size="11">${short(t)}</text>`);
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  c.series.forEach((s, i) => {
    const p = s.points.filter((q) => Number.isFinite(q[1]) && (!c.yLog || q[1] > 0));
    if (!p.length) return;
    const color = s.color ?? COLORS[s.name] ?? '#555';
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${p.map((q) => `${X(q[0]).toFixed(1)},${Y(q[1]).toFixed(1)}`).join(' ')}"${s.dashed ? ' stroke-dasharray="5,4"' : ''}/>`);
    for (const q of p) out.push(`<circle cx="${X(q[0]).toFixed(1)}" cy="${Y(q[1]).toFixed(1)}" r="3" fill="${color}"/>`);
    out.push(`<rect x="${m.l + 8}" y="${m.t + 8 + i * 16}" width="10" height="10" fill="${color}"/><text x="${m.l + 22}" y="${m.t + 17 + i * 16}" font-size="11">${esc(s.name)}</text>`);
  });
  out.push(`<text x="${m.l + pw / 2}" y="${h - 8}" text-anchor="middle" font-size="12">${esc(c.xLabel)}</text>`);
  out.push(`<text transform="translate(14,${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(c.yLabel)}</text>`);
  out.push('</g>');
  return out.join('');
}

export function renderSvg(res) {
  const s = res.scenarios;
  const panels = [];
  const ok = (list) => (list ?? []).filter((r) => !r.skipped && !r.failed);
  if (s.broadcast) {
    const rs = ok(s.broadcast.results);
    panels.push({ title: `Broadcast: deliveries/s (${fmtNum(s.broadcast.subscribers)} subscribers)`, xLabel: 'publishes/s offered', yLabel: 'deliveries/s', xLog: true, series: rs.map((r) => ({ name: r.name, points: r.stages.map((x) => [x.rate, x.deliveriesPerSecond]) })) });
    panels.push({ title: 'Broadcast: publish→receive latency (p99 solid, p50 dashed)', xLabel: 'publishes/s offered', yLabel: 'ms (log)', xLog: true, yLog: true, series: rs.flatMap((r) => [{ name: `${r.name} p99`, color: COLORS[r.name], points: r.stages.map((x) => [x.rate, x.latencyMs.p99]) }, { name: `${r.name} p50`, color: COLORS[r.name], dashed: true, points: r.stages.map((x) => [x.rate, x.latencyMs.p50]) }]) });
  }
  if (s.latency) {
    const rs = ok(s.latency.results);
    panels.push({ title: 'Latency, sequential fetch publisher (p99 solid, p50 dashed)', xLabel: 'publishes/s', yLabel: 'ms (log)', xLog: true, yLog: true, series: rs.flatMap((r) => { const st = r.stages.filter((x) => x.publisher === 'sequential'); return [{ name: `${r.name} p99`, color: COLORS[r.name], points: st.map((x) => [x.rate, x.latencyMs.p99]) }, { name: `${r.name} p50`, color: COLORS[r.name], dashed: true, points: st.map((x) => [x.rate, x.latencyMs.p50]) }]; }) });
  }
  if (s.targeted) {
    const rs = ok(s.targeted.results);
    panels.push({ title: 'Targeted private fan-out: hub CPU per publish', xLabel: 'connected subscribers', yLabel: 'µs CPU / publish', xLog: true, series: rs.map((r) => ({ name: r.name, points: r.steps.map((x) => [x.subscribers, x.hubCpuUsPerPublish]) })) });
  }
  if (s.publish) {
    const rs = ok(s.publish.results);
    const top = Math.max(...rs.map((r) => r.connections));
    panels.push({ title: `Publish throughput (HTTP + JWT), ${top} connections`, xLabel: '', yLabel: 'publishes/s', bars: true, series: rs.filter((r) => r.connections === top).map((r) => ({ name: r.name === 'bare' ? 'bare' : r.transport, color: r.name === 'bare' ? COLORS.bare : COLORS.quicksilver, points: [[0, r.publishesPerSecond]] })) });
  }
  if (s.idle) {
    const rs = ok(s.idle.results);
    panels.push({ title: `Idle: RSS per subscriber (${fmtNum(s.idle.subscribers)} subscribers)`, xLabel: '', yLabel: 'bytes / subscriber', bars: true, series: rs.map((r) => ({ name: r.name, color: COLORS[r.name], points: [[0, r.rssPerSubscriber ?? 0]] })) });
  }
  if (s.reconnect) {
    const rs = ok(s.reconnect.results);
    panels.push({ title: `Reconnect storm: time to catch up (${fmtNum(s.reconnect.subscribers)} × ${s.reconnect.missed})`, xLabel: '', yLabel: 'seconds', bars: true, series: rs.map((r) => ({ name: r.name, color: COLORS[r.name], points: [[0, r.catchUpSeconds ?? 0]] })) });
  }
  const W = 560;
  const H = 330;
  const cols = 2;
  const rows = Math.ceil(panels.length / cols);
  const head = 40;
  const body = panels.map((p, i) => panel(p, (i % cols) * W, head + Math.floor(i / cols) * H, W, H)).join('\n');
  const title = `Quicksilver benchmark — ${res.meta.date} — ${res.meta.machine.cores} cores, Node ${res.meta.machine.node}${res.meta.quick ? ' (quick mode)' : ''}`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${cols * W}" height="${head + rows * H}" viewBox="0 0 ${cols * W} ${head + rows * H}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${(cols * W) / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>
${body}
</svg>
`;
}
