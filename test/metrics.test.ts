import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { addProcessFootprint, Metrics, mergeSnapshots, renderSnapshot, type MetricsSnapshot } from '../src/observability/metrics.js';

const gauges = { historySize: () => 0, transportReady: () => true, subscriptions: () => 0 };

/** A Prometheus sample's value, or NaN when absent. */
function sample(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

const block = (ms: number): void => {
  const end = Date.now() + ms;
  while (Date.now() < end);
};

describe('process metrics', () => {
  it('count the handles keeping the loop alive: one more per open socket', async () => {
    const m = new Metrics(gauges);
    const before = m.snapshot().activeHandles;
    const server = net.createServer((s) => s.on('error', () => undefined));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    const client = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => client.once('connect', resolve));
    // The server, the client socket and the accepted one.
    expect(m.snapshot().activeHandles).toBeGreaterThanOrEqual(before + 3);
    expect(sample(m.render(), 'nodejs_active_handles')).toBeGreaterThanOrEqual(before + 3);
    client.destroy();
    await new Promise((resolve) => server.close(resolve));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(m.snapshot().activeHandles).toBeLessThanOrEqual(before + 1);
  });

  it('measure the event-loop delay since the previous snapshot, without the sampling period', async () => {
    const m = new Metrics(gauges);
    await new Promise((resolve) => setTimeout(resolve, 100));
    m.snapshot();
    // The loop is blocked in a later turn than the snapshot's, as a slow request would block it.
    await new Promise((resolve) => setTimeout(resolve, 30));
    block(150);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const blocked = m.snapshot();
    expect(blocked.eventLoopDelayMaxSeconds).toBeGreaterThanOrEqual(0.12);
    expect(blocked.eventLoopDelayMaxSeconds).toBeLessThan(1);
    expect(blocked.eventLoopDelayP99Seconds).toBeLessThanOrEqual(blocked.eventLoopDelayMaxSeconds);
    // The snapshot started a new interval: the block is not seen again.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const text = m.render();
    expect(sample(text, 'nodejs_eventloop_delay_max_seconds')).toBeLessThan(0.1);
    expect(sample(text, 'nodejs_eventloop_delay_p99_seconds')).toBeGreaterThanOrEqual(0);
  });

  it('merge as one hub: handles summed, event-loop delays the worst process\'s', () => {
    const m = new Metrics(gauges);
    const part = (handles: number, p99: number, max: number): MetricsSnapshot => ({
      ...m.snapshot(),
      activeHandles: handles,
      eventLoopDelayP99Seconds: p99,
      eventLoopDelayMaxSeconds: max,
    });
    const merged = mergeSnapshots([part(10, 0.002, 0.03), part(25, 0.004, 0.01), part(5, 0.001, 0.002)]);
    expect(merged.activeHandles).toBe(40);
    expect(merged.eventLoopDelayP99Seconds).toBe(0.004);
    expect(merged.eventLoopDelayMaxSeconds).toBe(0.03);
    const text = renderSnapshot(merged);
    expect(sample(text, 'nodejs_active_handles')).toBe(40);
    expect(sample(text, 'nodejs_eventloop_delay_p99_seconds')).toBe(0.004);
    expect(sample(text, 'nodejs_eventloop_delay_max_seconds')).toBe(0.03);
    expect(text).toMatch(/^# TYPE nodejs_eventloop_delay_max_seconds gauge$/m);
  });

  it('a cluster primary adds its own memory, handles and event-loop delay to the merged numbers', async () => {
    const m = new Metrics(gauges);
    const merged = mergeSnapshots([{ ...m.snapshot(), activeHandles: 7, eventLoopDelayMaxSeconds: 0.001, eventLoopDelayP99Seconds: 0.001 }]);
    const rss = merged.residentMemoryBytes;
    const server = net.createServer().listen(0);
    await new Promise((resolve) => server.once('listening', resolve));
    await new Promise((resolve) => setTimeout(resolve, 30));
    block(120);
    await new Promise((resolve) => setTimeout(resolve, 50));
    addProcessFootprint(merged);
    server.close();
    expect(merged.activeHandles).toBeGreaterThanOrEqual(8);
    expect(merged.residentMemoryBytes).toBeGreaterThan(rss);
    expect(merged.eventLoopDelayMaxSeconds).toBeGreaterThanOrEqual(0.09);
  });
});
