/**
 * A tiny Prometheus registry. Hand-rolled because the hot path only bumps numbers: no labels
 * lookup, no allocation per update. Names follow the reference hub where it has one.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

const DISPATCH_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: readonly number[] = DISPATCH_BUCKETS) {
    this.counts = new Array(buckets.length).fill(0);
  }
  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) {
      if (seconds <= this.buckets[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

/** How often the event-loop delay monitor samples, in ms. */
const LOOP_DELAY_RESOLUTION_MS = 10;

/**
 * The process's event-loop delay monitor, shared by every {@link Metrics} of the process (the
 * delay is the process's, not a hub's). Started with the first Metrics; its timer does not keep
 * the process alive.
 */
let loopDelay: IntervalHistogram | null = null;

function loopDelayMonitor(): IntervalHistogram {
  if (!loopDelay) {
    loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    loopDelay.enable();
  }
  return loopDelay;
}

/**
 * The event-loop delay since the previous call, in seconds, and a fresh interval for the next.
 * The monitor's samples are the time between its timer's runs, so the sampling period is taken
 * off: an idle loop reads 0, a loop blocked for 200 ms about 0.2. No sample yet reads 0.
 */
function takeLoopDelay(h: IntervalHistogram): { p99: number; max: number } {
  const beyond = (ns: number): number => Math.max(0, ns / 1e9 - LOOP_DELAY_RESOLUTION_MS / 1000);
  const taken = h.count > 0 ? { p99: beyond(h.percentile(99)), max: beyond(h.max) } : { p99: 0, max: 0 };
  h.reset();
  return taken;
}

/**
 * Adds this process's own footprint (memory, handles, event-loop delay) to a merged snapshot: a
 * cluster primary has no Metrics of its own, but it is part of the hub.
 */
export function addProcessFootprint(merged: MetricsSnapshot): void {
  const mem = process.memoryUsage();
  const delay = takeLoopDelay(loopDelayMonitor());
  merged.residentMemoryBytes += mem.rss;
  merged.heapUsedBytes += mem.heapUsed;
  merged.activeHandles += process.getActiveResourcesInfo().length;
  merged.eventLoopDelayP99Seconds = Math.max(merged.eventLoopDelayP99Seconds, delay.p99);
  merged.eventLoopDelayMaxSeconds = Math.max(merged.eventLoopDelayMaxSeconds, delay.max);
}

/**
 * Labelled series contributed from outside the hub core (the webhooks): `labels` is the text
 * between the braces (`webhook="orders"`). Merged across processes by name and labels.
 */
export interface ExtraSeries {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  samples: Array<[labels: string, value: number]>;
}

export class Metrics {
  /** Subscribers that ever connected. */
  subscribersTotal = 0;
  /** Subscribers connected now, by protocol version. */
  connected7 = 0;
  connected8 = 0;
  /** Updates published through this node's HTTP endpoint. */
  updatesPublished = 0;
  /** Updates received from the transport and dispatched to local subscribers. */
  updatesTotal = 0;
  /** Events written to subscribers (one per subscriber per update). */
  deliveries = 0;
  /** Publishes refused because the transport was unavailable. */
  publishFailures = 0;
  /** Subscribers cut off, by reason. */
  readonly disconnects = new Map<string, number>();
  /** Requests refused by a limit (body size, topics, rate, connections). */
  readonly limited = new Map<string, number>();
  readonly dispatchSeconds = new Histogram();
  readonly publishSeconds = new Histogram();
  /** From dispatch to the transport handing the update back for fan-out (this node's updates). */
  readonly transportLagSeconds = new Histogram();

  private readonly loopDelay = loopDelayMonitor();

  constructor(
    private readonly gauges: {
      historySize: () => number;
      transportReady: () => boolean;
      subscriptions: () => number;
    },
  ) {}

  private readonly sources: Array<() => ExtraSeries[]> = [];

  /** Adds series rendered after the hub's own (taken at every scrape). */
  addSource(source: () => ExtraSeries[]): void {
    this.sources.push(source);
  }

  countDisconnect(reason: string): void {
    this.disconnects.set(reason, (this.disconnects.get(reason) ?? 0) + 1);
  }

  countLimited(limit: string): void {
    this.limited.set(limit, (this.limited.get(limit) ?? 0) + 1);
  }

  /**
   * The numbers as plain JSON, for a cluster worker to send over IPC: the primary merges the
   * snapshots of every worker ({@link mergeSnapshots}) and renders them with the same code as a
   * single process ({@link renderSnapshot}). Taking one starts a new event-loop delay interval.
   */
  snapshot(): MetricsSnapshot {
    const mem = process.memoryUsage();
    const delay = takeLoopDelay(this.loopDelay);
    return {
      subscribersTotal: this.subscribersTotal,
      connected7: this.connected7,
      connected8: this.connected8,
      updatesPublished: this.updatesPublished,
      updatesTotal: this.updatesTotal,
      deliveries: this.deliveries,
      publishFailures: this.publishFailures,
      subscriptions: this.gauges.subscriptions(),
      disconnects: [...this.disconnects],
      limited: [...this.limited],
      historySize: this.gauges.historySize(),
      transportReady: this.gauges.transportReady(),
      dispatchSeconds: histogramSnapshot(this.dispatchSeconds),
      publishSeconds: histogramSnapshot(this.publishSeconds),
      transportLagSeconds: histogramSnapshot(this.transportLagSeconds),
      residentMemoryBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      activeHandles: process.getActiveResourcesInfo().length,
      eventLoopDelayP99Seconds: delay.p99,
      eventLoopDelayMaxSeconds: delay.max,
      ...(this.sources.length > 0 ? { extra: this.sources.flatMap((f) => f()) } : {}),
    };
  }

  render(): string {
    return renderSnapshot(this.snapshot());
  }
}

/** A histogram as plain JSON: `counts[i]` observations fell in `(buckets[i-1], buckets[i]]` (not cumulative). */
export interface HistogramSnapshot {
  buckets: number[];
  counts: number[];
  sum: number;
  count: number;
}

/**
 * Everything {@link Metrics.render} shows, as plain JSON (it crosses the cluster's IPC channel).
 * Label maps are `[label, value]` pairs in first-seen order, so that rendering keeps the order
 * a single process shows.
 */
export interface MetricsSnapshot {
  subscribersTotal: number;
  connected7: number;
  connected8: number;
  updatesPublished: number;
  updatesTotal: number;
  deliveries: number;
  publishFailures: number;
  subscriptions: number;
  disconnects: Array<[reason: string, count: number]>;
  limited: Array<[limit: string, count: number]>;
  historySize: number;
  transportReady: boolean;
  dispatchSeconds: HistogramSnapshot;
  publishSeconds: HistogramSnapshot;
  transportLagSeconds: HistogramSnapshot;
  residentMemoryBytes: number;
  heapUsedBytes: number;
  /** Handles, requests and timers keeping the event loop alive (process.getActiveResourcesInfo()). */
  activeHandles: number;
  /** Event-loop delay since the previous snapshot: 99th percentile and largest, in seconds. */
  eventLoopDelayP99Seconds: number;
  eventLoopDelayMaxSeconds: number;
  extra?: ExtraSeries[];
}

/** What only a cluster's primary knows: how many workers there are and how many took part in a scrape. */
export interface ClusterMetrics {
  /** Worker processes the cluster runs (`--workers`). */
  workers: number;
  /** Workers whose numbers are in this scrape (the others were restarting or did not answer in time). */
  answered: number;
  /** Workers restarted after an unexpected exit since the primary started. */
  restarts: number;
}

function histogramSnapshot(h: Histogram): HistogramSnapshot {
  return { buckets: [...h.buckets], counts: [...h.counts], sum: h.sum, count: h.count };
}

function sameBuckets(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function mergeHistograms(parts: readonly HistogramSnapshot[]): HistogramSnapshot {
  const first = parts[0];
  if (!first) return histogramSnapshot(new Histogram());
  // Every process runs the same code, so the layouts agree; workers of another version (a
  // rolling restart of the primary is not possible, but be safe) are merged on the union of bounds.
  const bounds = parts.every((p) => sameBuckets(p.buckets, first.buckets))
    ? [...first.buckets]
    : [...new Set(parts.flatMap((p) => p.buckets))].sort((a, b) => a - b);
  const counts = new Array<number>(bounds.length).fill(0);
  let sum = 0;
  let count = 0;
  for (const p of parts) {
    for (let i = 0; i < p.buckets.length; i++) {
      const j = bounds.indexOf(p.buckets[i]!);
      counts[j] = counts[j]! + p.counts[i]!;
    }
    sum += p.sum;
    count += p.count;
  }
  return { buckets: bounds, counts, sum, count };
}

function mergeLabelled(parts: ReadonlyArray<ReadonlyArray<readonly [string, number]>>): Array<[string, number]> {
  const merged = new Map<string, number>();
  for (const p of parts) for (const [k, v] of p) merged.set(k, (merged.get(k) ?? 0) + v);
  return [...merged];
}

/**
 * The metrics of several processes as those of one hub: counters, gauges and histograms (bucket
 * by bucket) are summed, except the event-loop delays, which are the worst process's.
 * `historySize` and `transportReady` describe one shared transport, not something each process
 * holds: they are taken from `shared` (the cluster primary's transport); without it the largest
 * history and "all ready" are used.
 */
export function mergeSnapshots(
  parts: readonly MetricsSnapshot[],
  shared?: Partial<Pick<MetricsSnapshot, 'historySize' | 'transportReady' | 'updatesTotal'>>,
): MetricsSnapshot {
  const sum = (f: (s: MetricsSnapshot) => number): number => parts.reduce((n, s) => n + f(s), 0);
  return {
    subscribersTotal: sum((s) => s.subscribersTotal),
    connected7: sum((s) => s.connected7),
    connected8: sum((s) => s.connected8),
    updatesPublished: sum((s) => s.updatesPublished),
    updatesTotal: shared?.updatesTotal ?? sum((s) => s.updatesTotal),
    deliveries: sum((s) => s.deliveries),
    publishFailures: sum((s) => s.publishFailures),
    subscriptions: sum((s) => s.subscriptions),
    disconnects: mergeLabelled(parts.map((s) => s.disconnects)),
    limited: mergeLabelled(parts.map((s) => s.limited)),
    historySize: shared?.historySize ?? Math.max(0, ...parts.map((s) => s.historySize)),
    transportReady: shared?.transportReady ?? parts.every((s) => s.transportReady),
    dispatchSeconds: mergeHistograms(parts.map((s) => s.dispatchSeconds)),
    publishSeconds: mergeHistograms(parts.map((s) => s.publishSeconds)),
    transportLagSeconds: mergeHistograms(parts.map((s) => s.transportLagSeconds)),
    residentMemoryBytes: sum((s) => s.residentMemoryBytes),
    heapUsedBytes: sum((s) => s.heapUsedBytes),
    activeHandles: sum((s) => s.activeHandles),
    eventLoopDelayP99Seconds: Math.max(0, ...parts.map((s) => s.eventLoopDelayP99Seconds)),
    eventLoopDelayMaxSeconds: Math.max(0, ...parts.map((s) => s.eventLoopDelayMaxSeconds)),
    ...(parts.some((p) => p.extra) ? { extra: mergeExtra(parts.flatMap((p) => p.extra ?? [])) } : {}),
  };
}

function mergeExtra(series: readonly ExtraSeries[]): ExtraSeries[] {
  const byName = new Map<string, ExtraSeries>();
  for (const x of series) {
    const into = byName.get(x.name) ?? { ...x, samples: [] };
    byName.set(x.name, into);
    for (const [labels, v] of x.samples) {
      const same = into.samples.find((p) => p[0] === labels);
      if (same) same[1] += v;
      else into.samples.push([labels, v]);
    }
  }
  return [...byName.values()];
}

/**
 * Prometheus text for a snapshot: what `GET /metrics` answers. A single process renders its own
 * snapshot; a cluster renders the merged one, followed by the `cluster` gauges.
 */
export function renderSnapshot(s: MetricsSnapshot, cluster?: ClusterMetrics): string {
  const out: string[] = [];
  const metric = (name: string, type: string, help: string, lines: string[]): void => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
  };
  metric('mercure_subscribers_connected', 'gauge', 'The current number of running subscribers.', [
    `mercure_subscribers_connected ${s.connected7 + s.connected8}`,
  ]);
  metric('mercure_subscribers_total', 'counter', 'Total number of handled subscribers.', [
    `mercure_subscribers_total ${s.subscribersTotal}`,
  ]);
  metric('mercure_updates_total', 'counter', 'Total number of handled updates.', [
    `mercure_updates_total ${s.updatesTotal}`,
  ]);
  metric('quicksilver_subscribers_connected_by_protocol', 'gauge', 'Connected subscribers by protocol version.', [
    `quicksilver_subscribers_connected_by_protocol{version="7"} ${s.connected7}`,
    `quicksilver_subscribers_connected_by_protocol{version="8"} ${s.connected8}`,
  ]);
  metric('quicksilver_subscriptions_active', 'gauge', 'Active subscriptions (matchers) on this node.', [
    `quicksilver_subscriptions_active ${s.subscriptions}`,
  ]);
  metric('quicksilver_updates_published_total', 'counter', 'Updates accepted by this node\'s publish endpoint.', [
    `quicksilver_updates_published_total ${s.updatesPublished}`,
  ]);
  metric('quicksilver_deliveries_total', 'counter', 'Events written to subscribers.', [
    `quicksilver_deliveries_total ${s.deliveries}`,
  ]);
  metric('quicksilver_publish_failures_total', 'counter', 'Publishes refused because the transport was unavailable.', [
    `quicksilver_publish_failures_total ${s.publishFailures}`,
  ]);
  metric('quicksilver_subscriber_disconnects_total', 'counter', 'Subscribers disconnected, by reason.',
    s.disconnects.map(([r, n]) => `quicksilver_subscriber_disconnects_total{reason="${r}"} ${n}`));
  metric('quicksilver_requests_limited_total', 'counter', 'Requests refused by a protective limit.',
    s.limited.map(([r, n]) => `quicksilver_requests_limited_total{limit="${r}"} ${n}`));
  metric('quicksilver_history_size', 'gauge', 'Updates kept in history.', [
    `quicksilver_history_size ${s.historySize}`,
  ]);
  metric('quicksilver_transport_ready', 'gauge', '1 when the transport accepts publishes.', [
    `quicksilver_transport_ready ${s.transportReady ? 1 : 0}`,
  ]);
  histogram(out, 'quicksilver_dispatch_duration_seconds', 'Time to route one update to local subscribers.', s.dispatchSeconds);
  histogram(out, 'quicksilver_publish_duration_seconds', 'Time from publish request to transport acknowledgement.', s.publishSeconds);
  histogram(out, 'quicksilver_transport_lag_seconds', 'Time from dispatch until the transport delivers the update back for fan-out.', s.transportLagSeconds);
  metric('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', [`process_resident_memory_bytes ${s.residentMemoryBytes}`]);
  metric('nodejs_heap_used_bytes', 'gauge', 'V8 heap used in bytes.', [`nodejs_heap_used_bytes ${s.heapUsedBytes}`]);
  metric('nodejs_active_handles', 'gauge', 'Handles, requests and timers keeping the event loop alive (sockets, servers, timers: process.getActiveResourcesInfo()).', [
    `nodejs_active_handles ${s.activeHandles}`,
  ]);
  metric('nodejs_eventloop_delay_p99_seconds', 'gauge', `99th percentile of the event-loop delay beyond the ${LOOP_DELAY_RESOLUTION_MS} ms sampling period (perf_hooks.monitorEventLoopDelay), since the previous scrape: each scrape resets it. A cluster shows its worst process.`, [
    `nodejs_eventloop_delay_p99_seconds ${s.eventLoopDelayP99Seconds}`,
  ]);
  metric('nodejs_eventloop_delay_max_seconds', 'gauge', `Largest event-loop delay beyond the ${LOOP_DELAY_RESOLUTION_MS} ms sampling period since the previous scrape (reset at each scrape). A cluster shows its worst process.`, [
    `nodejs_eventloop_delay_max_seconds ${s.eventLoopDelayMaxSeconds}`,
  ]);
  for (const x of s.extra ?? []) metric(x.name, x.type, x.help, x.samples.map(([labels, v]) => `${x.name}{${labels}} ${v}`));
  if (cluster) {
    metric('quicksilver_workers', 'gauge', 'Worker processes the hub runs (--workers).', [`quicksilver_workers ${cluster.workers}`]);
    metric('quicksilver_metrics_workers_answered', 'gauge', 'Workers whose numbers this scrape includes (fewer than quicksilver_workers: one was restarting or did not answer within 1 s).', [
      `quicksilver_metrics_workers_answered ${cluster.answered}`,
    ]);
    metric('quicksilver_worker_restarts_total', 'counter', 'Workers restarted after an unexpected exit.', [
      `quicksilver_worker_restarts_total ${cluster.restarts}`,
    ]);
  }
  return out.join('\n') + '\n';
}

function histogram(out: string[], name: string, help: string, h: HistogramSnapshot): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
  let cumulative = 0;
  for (let i = 0; i < h.buckets.length; i++) {
    cumulative += h.counts[i]!;
    out.push(`${name}_bucket{le="${h.buckets[i]}"} ${cumulative}`);
  }
  out.push(`${name}_bucket{le="+Inf"} ${h.count}`, `${name}_sum ${h.sum}`, `${name}_count ${h.count}`);
}
