// Proves the benchmark harness works end to end (`node bench/run.mjs --quick`): it exits 0 and
// writes a JSON result with every scenario's keys. Nothing here judges speed.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = mkdtempSync(path.join(os.tmpdir(), 'qs-bench-test-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

interface Entry {
  name: string;
  skipped?: string;
  failed?: string;
  [k: string]: unknown;
}
interface Scenario {
  error?: string;
  results: Entry[];
  [k: string]: unknown;
}

function run(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bench/run.mjs'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('close', (code) => resolve({ code, output }));
  });
}

const get = (s: Scenario, name: string): Entry => {
  const e = s.results.find((r) => r.name === name);
  if (!e) throw new Error(`no result for ${name}`);
  if (e.skipped || e.failed) throw new Error(`${name}: ${e.skipped ?? e.failed}`);
  return e;
};

describe('benchmark harness (--quick)', () => {
  it('runs every scenario and writes the JSON, text and SVG results', { timeout: 240_000 }, async () => {
    if (!existsSync(path.join(ROOT, 'dist/cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' });
    const { code, output } = await run(['--quick', '--out', out, '--max-minutes', '3']);
    expect(code, output.slice(-4000)).toBe(0);

    const files = readdirSync(out);
    const json = files.find((f) => f.endsWith('.json'));
    expect(json, files.join(', ')).toBeDefined();
    expect(files.some((f) => f.endsWith('.svg'))).toBe(true);
    expect(files.some((f) => f.endsWith('.txt'))).toBe(true);
    const svg = readFileSync(path.join(out, files.find((f) => f.endsWith('.svg'))!), 'utf8');
    expect(svg).toMatch(/^<\?xml[\s\S]*<svg[\s\S]*<\/svg>\s*$/);

    const res = JSON.parse(readFileSync(path.join(out, json!), 'utf8')) as {
      meta: { quick: boolean; machine: { cores: number; node: string } };
      scenarios: Record<string, Scenario>;
      targets: { id: string; met: boolean | null }[];
    };
    expect(res.meta.quick).toBe(true);
    expect(res.meta.machine.cores).toBeGreaterThan(0);
    for (const name of ['idle', 'broadcast', 'latency', 'targeted', 'publish', 'reconnect']) {
      expect(res.scenarios[name], name).toBeDefined();
      expect(res.scenarios[name]!.error, name).toBeUndefined();
    }
    const { idle, broadcast, latency, targeted, publish, reconnect } = res.scenarios as Record<string, Scenario>;

    for (const name of ['quicksilver', 'bare', 'bare-http']) {
      expect(get(idle!, name)).toMatchObject({ subscribers: expect.any(Number), rssBefore: expect.any(Number), rssAfter: expect.any(Number), rssPerSubscriber: expect.any(Number) });
    }
    for (const name of ['quicksilver', 'bare']) {
      const b = get(broadcast!, name) as Entry & { stages: Record<string, unknown>[] };
      expect(b.maxDeliveriesPerSecond).toEqual(expect.any(Number));
      expect(b.stages.length).toBeGreaterThan(0);
      expect(b.stages[0]).toMatchObject({ rate: expect.any(Number), deliveriesPerSecond: expect.any(Number), latencyMs: { p50: expect.any(Number), p99: expect.any(Number), max: expect.any(Number) } });
    }
    // Pushpin is optional: measured when installed, else reported as skipped with a note.
    const pushpin = broadcast!.results.find((r) => r.name === 'pushpin');
    expect(pushpin).toBeDefined();
    if (pushpin!.skipped) expect(pushpin!.skipped).toMatch(/pushpin/i);

    // Latency: both publishers (sequential fetch with a token per request, and the pool), p50 and
    // p99, for --workers 1, the default configuration and the per-frame bare broadcaster (--quick
    // leaves the coalescing one to the broadcast scenario).
    for (const name of ['quicksilver', 'quicksilver-default', 'bare-uncoalesced']) {
      const l = get(latency!, name) as Entry & { stages: Record<string, unknown>[] };
      for (const publisher of ['sequential', 'pool']) {
        const st = l.stages.find((x) => x.publisher === publisher);
        expect(st, `${name} ${publisher}`).toMatchObject({ rate: expect.any(Number), published: expect.any(Number), publishFailed: 0, latencyMs: { p50: expect.any(Number), p99: expect.any(Number) } });
        expect(st!.delivered, `${name} ${publisher}`).toBe(st!.expected);
      }
    }
    // Nchan is optional like Pushpin; when installed its frames parse and its ids resume.
    const nchan = latency!.results.find((r) => r.name === 'nchan');
    expect(nchan).toBeDefined();
    if (nchan!.skipped) expect(nchan!.skipped).toMatch(/nchan/i);
    else {
      const l = nchan as Entry & { stages: { delivered: number; expected: number }[] };
      expect(l.stages.length).toBeGreaterThan(0);
      expect(l.stages[0]!.delivered).toBe(l.stages[0]!.expected);
      expect(get(reconnect!, 'nchan')).toMatchObject({ caughtUp: true, gaps: 0, dups: 0 });
    }

    for (const name of ['quicksilver', 'bare']) {
      const t = get(targeted!, name) as Entry & { steps: Record<string, unknown>[] };
      expect(t.steps.length).toBeGreaterThan(1);
      expect(t.steps[0]).toMatchObject({ subscribers: expect.any(Number), hubCpuUsPerPublish: expect.any(Number), latencyMs: { p50: expect.any(Number) } });
    }

    const transports = publish!.results.map((r) => r.transport);
    expect(transports).toEqual(expect.arrayContaining(['memory', 'lmdb', 'redis', 'postgres', 'nats']));
    for (const kind of ['memory', 'lmdb']) {
      const p = publish!.results.find((r) => r.transport === kind)!;
      expect(p.skipped ?? p.failed).toBeUndefined();
      expect(p).toMatchObject({ publishesPerSecond: expect.any(Number), rttMs: { p50: expect.any(Number), p99: expect.any(Number) } });
    }

    for (const name of ['quicksilver', 'bare']) {
      expect(get(reconnect!, name)).toMatchObject({ reconnected: expect.any(Number), caughtUp: expect.any(Boolean), gaps: expect.any(Number), dups: expect.any(Number) });
    }

    expect(res.targets.map((t) => t.id)).toEqual(
      expect.arrayContaining(['idle-count', 'idle-rss', 'idle-rss-vs-nchan', 'broadcast-throughput', 'broadcast-p99', 'broadcast-vs-nchan', 'latency-vs-bare', 'latency-vs-nchan', 'targeted-growth', 'publish-embedded', 'reconnect']),
    );
    // Quick mode judges no target.
    expect(res.targets.every((t) => t.met === null)).toBe(true);
  });
});
