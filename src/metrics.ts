/**
 * A tiny Prometheus registry. Hand-rolled because the hot path only bumps numbers: no labels
 * lookup, no allocation per update. Names follow the reference hub where it has one.
 */
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

  constructor(
    private readonly gauges: {
      historySize: () => number;
      transportReady: () => boolean;
      subscriptions: () => number;
    },
  ) {}

  countDisconnect(reason: string): void {
    this.disconnects.set(reason, (this.disconnects.get(reason) ?? 0) + 1);
  }

  countLimited(limit: string): void {
    this.limited.set(limit, (this.limited.get(limit) ?? 0) + 1);
  }

  render(): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, lines: string[]): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    metric('mercure_subscribers_connected', 'gauge', 'The current number of running subscribers.', [
      `mercure_subscribers_connected ${this.connected7 + this.connected8}`,
    ]);
    metric('mercure_subscribers_total', 'counter', 'Total number of handled subscribers.', [
      `mercure_subscribers_total ${this.subscribersTotal}`,
    ]);
    metric('mercure_updates_total', 'counter', 'Total number of handled updates.', [
      `mercure_updates_total ${this.updatesTotal}`,
    ]);
    metric('quicksilver_subscribers_connected_by_protocol', 'gauge', 'Connected subscribers by protocol version.', [
      `quicksilver_subscribers_connected_by_protocol{version="7"} ${this.connected7}`,
      `quicksilver_subscribers_connected_by_protocol{version="8"} ${this.connected8}`,
    ]);
    metric('quicksilver_subscriptions_active', 'gauge', 'Active subscriptions (matchers) on this node.', [
      `quicksilver_subscriptions_active ${this.gauges.subscriptions()}`,
    ]);
    metric('quicksilver_updates_published_total', 'counter', 'Updates accepted by this node\'s publish endpoint.', [
      `quicksilver_updates_published_total ${this.updatesPublished}`,
    ]);
    metric('quicksilver_deliveries_total', 'counter', 'Events written to subscribers.', [
      `quicksilver_deliveries_total ${this.deliveries}`,
    ]);
    metric('quicksilver_publish_failures_total', 'counter', 'Publishes refused because the transport was unavailable.', [
      `quicksilver_publish_failures_total ${this.publishFailures}`,
    ]);
    metric('quicksilver_subscriber_disconnects_total', 'counter', 'Subscribers disconnected, by reason.',
      [...this.disconnects].map(([r, n]) => `quicksilver_subscriber_disconnects_total{reason="${r}"} ${n}`));
    metric('quicksilver_requests_limited_total', 'counter', 'Requests refused by a protective limit.',
      [...this.limited].map(([r, n]) => `quicksilver_requests_limited_total{limit="${r}"} ${n}`));
    metric('quicksilver_history_size', 'gauge', 'Updates kept in history.', [
      `quicksilver_history_size ${this.gauges.historySize()}`,
    ]);
    metric('quicksilver_transport_ready', 'gauge', '1 when the transport accepts publishes.', [
      `quicksilver_transport_ready ${this.gauges.transportReady() ? 1 : 0}`,
    ]);
    histogram(out, 'quicksilver_dispatch_duration_seconds', 'Time to route one update to local subscribers.', this.dispatchSeconds);
    histogram(out, 'quicksilver_publish_duration_seconds', 'Time from publish request to transport acknowledgement.', this.publishSeconds);
    histogram(out, 'quicksilver_transport_lag_seconds', 'Time from dispatch until the transport delivers the update back for fan-out.', this.transportLagSeconds);
    const mem = process.memoryUsage();
    metric('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', [`process_resident_memory_bytes ${mem.rss}`]);
    metric('nodejs_heap_used_bytes', 'gauge', 'V8 heap used in bytes.', [`nodejs_heap_used_bytes ${mem.heapUsed}`]);
    return out.join('\n') + '\n';
  }
}

function histogram(out: string[], name: string, help: string, h: Histogram): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
  let cumulative = 0;
  for (let i = 0; i < h.buckets.length; i++) {
    cumulative += h.counts[i]!;
    out.push(`${name}_bucket{le="${h.buckets[i]}"} ${cumulative}`);
  }
  out.push(`${name}_bucket{le="+Inf"} ${h.count}`, `${name}_sum ${h.sum}`, `${name}_count ${h.count}`);
}
