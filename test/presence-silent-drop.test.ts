/**
 * Presence must clear when a subscriber vanishes without a FIN or RST (a dead Wi-Fi, a pulled
 * cable, a NAT that forgot the flow): the reference hub keeps such users "active" until a write
 * happens to fail. Quicksilver heartbeats idle streams and turns TCP keepalive on, so the kernel
 * gives up on the connection (retransmission timeout on the unacknowledged heartbeat, or
 * keepalive probes), the socket errors, and the hub ends the subscription: an `active: false`
 * subscription event, gone from the subscriptions API, one subscriber fewer in /metrics.
 *
 * This is tested for real, with Linux network namespaces: the hub runs in one namespace and three
 * subscribers in three others, each behind its own veth pair. Two clients then vanish, from inside
 * their namespaces: one has its link taken down (the hub's end of the veth loses carrier), the
 * other has its address removed (the hub's link stays up, and its packets reach a host that drops
 * them without a word, like a peer gone off the network). No FIN, no RST, and the client processes
 * stay alive, never learning about it. The third client's link stays up all along: it must stay
 * listed (the hub must not drop subscribers for no reason).
 *
 * The kernel's timings are per-namespace sysctls, set in the hub's namespace the way an operator
 * would in production: `net.ipv4.tcp_retries2=3` (ETIMEDOUT after about 3 s of unacknowledged
 * retransmissions, instead of about 15 minutes with the default 15) and
 * `net.ipv4.tcp_keepalive_{time,intvl,probes}=1,1,3`. With heartbeats every second, the
 * retransmission timeout is what fires: keepalive never probes while data is unacknowledged.
 *
 * Needs root and `ip netns`; skipped with a warning otherwise, unless CI is set (then it fails).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildStar, deleteNamespaces, ip, type Line, NsFetcher, NsProcess, netnsUnavailable, type SubscriptionEvent, subscriptionEvents } from './netns-process.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const FIXTURES = join(ROOT, 'test', 'fixtures');
const CLI = join(ROOT, 'dist', 'cli.js');

/** The drop must be detected within this (the issue's "about 15 s"). */
const DETECTION_BUDGET_MS = 15_000;
/** How long every link stays up and idle in the control case: as long as detection takes here. */
const CONTROL_IDLE_MS = 8_000;

const unavailable = netnsUnavailable();
const skip = unavailable !== null && !process.env.CI;
if (skip) {
  console.warn(`presence-silent-drop: SKIPPED (${unavailable}); needs root and Linux network namespaces. Set CI=1 to make this a failure.`);
}

const tag = randomBytes(3).toString('hex');
const octet = randomBytes(1)[0]!;
const NS_HUB = `qs-hub-${tag}`;

type DropMode = 'link' | 'address' | 'none';
interface Client {
  name: string;
  /** How the client vanishes: its link taken down, its address removed, or not at all (control). */
  drop: DropMode;
  ns: string;
  /** veth ends (names limited to 15 characters) and addresses, a /30 of 10.231.<octet>.0/24. */
  hubDev: string;
  dev: string;
  hubAddr: string;
  addr: string;
  proc?: NsProcess;
  id?: string;
}
// The hub listens on the first client link's address; the others reach it through their own link.
const CLIENTS: Client[] = (
  [
    ['client (link down)', 'link', 'cli'],
    ['client (address removed)', 'address', 'cla'],
    ['control client', 'none', 'ctl'],
  ] as const
).map(([name, drop, short], i) => ({
  name,
  drop,
  ns: `qs-${short}-${tag}`,
  hubDev: `qsh${tag}${short}`,
  dev: `qs${short}${tag}`,
  hubAddr: `10.231.${octet}.${4 * i + 1}`,
  addr: `10.231.${octet}.${4 * i + 2}`,
}));
const HUB_ADDR = CLIENTS[0]!.hubAddr;

const JWT_KEY = randomBytes(32).toString('hex');
const SUBSCRIPTIONS_TEMPLATE = '/.well-known/mercure/subscriptions{/topic}{/subscriber}';
const TOPIC = 'https://example.com/presence';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const heartbeats = (p: NsProcess, from = 0): number => p.lines.slice(from).filter((l) => l.t === 'heartbeat').length;
const streamEnds = (p: NsProcess): Line[] => p.lines.filter((l) => l.t === 'end' || l.t === 'error');

describe.skipIf(skip)('presence clears when a subscriber silently drops (network namespaces)', () => {
  const procs: NsProcess[] = [];
  const namespaces: string[] = [];
  let hub: NsProcess;
  let watcher: NsProcess;
  let api: NsFetcher;
  const dropped = CLIENTS.filter((c) => c.drop !== 'none');
  const control = CLIENTS.find((c) => c.drop === 'none')!;

  /** Subscription events received by the watcher. */
  const events = (from = 0): SubscriptionEvent[] => subscriptionEvents(watcher, from);

  // Last resort if the worker exits without running afterAll.
  const onExit = (): void => {
    for (const p of procs) p.killNow();
    deleteNamespaces(namespaces);
  };

  beforeAll(async () => {
    if (unavailable) throw new Error(`network namespaces unavailable (${unavailable}) and CI is set: failing instead of skipping`);
    process.once('exit', onExit);

    // The hub under test is the built CLI.
    // `npm test` builds dist/ before running the tests; building here would race other files using it.
    if (!existsSync(CLI)) throw new Error('dist/cli.js is missing: run `npm run build` first');

    buildStar(NS_HUB, CLIENTS, namespaces);
    // What an operator tunes in production, here for the hub's namespace only.
    ip(
      'netns', 'exec', NS_HUB, 'sysctl', '-q', '-w',
      'net.ipv4.tcp_retries2=3',
      'net.ipv4.tcp_keepalive_time=1',
      'net.ipv4.tcp_keepalive_intvl=1',
      'net.ipv4.tcp_keepalive_probes=3',
    );

    hub = new NsProcess('hub', NS_HUB, [
      CLI,
      '--jwt-key', JWT_KEY,
      '--anonymous',
      '--subscriptions',
      '--heartbeat', '1s',
      '--transport-url', 'memory://',
      '--addr', `${HUB_ADDR}:0`,
      '--log-format', 'json',
      '--log-level', 'debug',
    ]);
    procs.push(hub);
    const ready = await hub.waitFor((l) => l.msg === 'Quicksilver hub ready', 10_000, '"Quicksilver hub ready" log line');
    const base = String(ready.url);
    expect(base).toMatch(new RegExp(`^http://${HUB_ADDR.replace(/\./g, '\\.')}:\\d+$`));

    const token = await new SignJWT({ mercure: { subscribe: [SUBSCRIPTIONS_TEMPLATE] } })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(JWT_KEY));
    const hubUrl = `${base}/.well-known/mercure`;

    const fetcher = new NsProcess('fetcher', NS_HUB, [join(FIXTURES, 'netns-fetch.mjs')], { QS_TOKEN: token });
    procs.push(fetcher);
    api = new NsFetcher(fetcher, base);

    watcher = new NsProcess('watcher', NS_HUB, [join(FIXTURES, 'netns-subscriber.mjs'), `${hubUrl}?topic=${encodeURIComponent(SUBSCRIPTIONS_TEMPLATE)}`], { QS_TOKEN: token });
    procs.push(watcher);
    expect((await watcher.waitFor((l) => l.t === 'open', 5000, 'watcher stream')).status).toBe(200);
    const eventFor = (topic: string) => (l: Line): boolean =>
      l.t === 'event' && typeof l.data === 'string' && (JSON.parse(l.data) as { topic?: string }).topic === topic;
    // The watcher is told about its own subscription first (held until its headers are out).
    await watcher.waitFor(eventFor(SUBSCRIPTIONS_TEMPLATE), 5000, "the watcher's own subscription event");

    // One client at a time, so that each `active: true` event tells the client's subscriber id.
    for (const c of CLIENTS) {
      const from = watcher.lines.length;
      c.proc = new NsProcess(c.name, c.ns, [join(FIXTURES, 'netns-subscriber.mjs'), `${hubUrl}?topic=${encodeURIComponent(TOPIC)}`]);
      procs.push(c.proc);
      expect((await c.proc.waitFor((l) => l.t === 'open', 5000, 'stream')).status).toBe(200);
      const ev = await watcher.waitFor(eventFor(TOPIC), 5000, `subscription event for ${c.name}`, from);
      const d = JSON.parse(ev.data as string) as { subscriber: string; topic: string; active: boolean };
      expect(d).toMatchObject({ topic: TOPIC, active: true });
      expect(d.subscriber).toMatch(/^urn:uuid:/);
      c.id = d.subscriber;
    }

    // All listed by the API, and counted.
    const listed = await api.subscriptions();
    for (const c of CLIENTS) expect(listed).toContainEqual(expect.objectContaining({ subscriber: c.id, topic: TOPIC, active: true }));
    expect(await api.connected()).toBe(1 + CLIENTS.length); // the watcher too
  }, 30_000);

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()));
    deleteNamespaces(namespaces);
    process.removeListener('exit', onExit);
  });

  it('control: subscribers on live links stay listed while idle (heartbeats flowing)', async () => {
    const from = CLIENTS.map((c) => c.proc!.lines.length);
    await sleep(CONTROL_IDLE_MS);

    const listed = await api.subscriptions();
    for (const c of CLIENTS) expect(listed).toContainEqual(expect.objectContaining({ subscriber: c.id, active: true }));
    expect(events().filter((e) => !e.active)).toEqual([]);
    expect(await api.connected()).toBe(1 + CLIENTS.length);
    // The streams are alive end to end: heartbeats reach every client (1 s interval, 1 s sweep).
    const counts = CLIENTS.map((c, i) => heartbeats(c.proc!, from[i]));
    for (const n of counts) expect(n).toBeGreaterThanOrEqual(2);
    for (const c of CLIENTS) expect(streamEnds(c.proc!)).toEqual([]);
    console.log(
      `presence-silent-drop: control: all ${CLIENTS.length} subscribers still listed after ${CONTROL_IDLE_MS} ms idle on live links ` +
        `(heartbeats received: ${CLIENTS.map((c, i) => `${c.name} ${counts[i]}`).join(', ')})`,
    );
  }, CONTROL_IDLE_MS + 10_000);

  it('clients that silently vanish are removed within 15 s (API, active:false event, metrics); the control stays', async () => {
    const hubLogFrom = hub.lines.length;
    const watcherFrom = watcher.lines.length;
    const t0 = performance.now();
    // Inside each client's namespace, nothing the client could notice and no FIN or RST:
    // - link down: the hub's end of the veth loses carrier, its packets are dropped locally;
    // - address removed: the hub's link stays up, its packets reach a host that silently discards them.
    for (const c of dropped) {
      if (c.drop === 'link') ip('-n', c.ns, 'link', 'set', c.dev, 'down');
      else ip('-n', c.ns, 'addr', 'del', `${c.addr}/30`, 'dev', c.dev);
    }

    const waits = dropped.map((c) => {
      const event = watcher.waitFor(
        (l) => {
          if (l.t !== 'event' || typeof l.data !== 'string') return false;
          const d = JSON.parse(l.data) as { subscriber?: string; active?: boolean };
          return d.subscriber === c.id && d.active === false;
        },
        DETECTION_BUDGET_MS,
        `"active: false" subscription event for ${c.name} ${c.id}`,
        watcherFrom,
      );
      // The hub's own account of when and why it let go.
      const log = hub.waitFor((l) => l.subscriber === c.id && l.msg === 'subscriber disconnected', DETECTION_BUDGET_MS, `disconnect log line for ${c.name}`, hubLogFrom);
      event.catch(() => {});
      log.catch(() => {});
      return { event, log };
    });

    // Poll the subscriptions API (from the hub's namespace) until every dropped client is gone.
    const goneAt = new Map<string, number>();
    while (goneAt.size < dropped.length && performance.now() - t0 < DETECTION_BUDGET_MS) {
      const listed = await api.subscriptions();
      const now = performance.now();
      for (const c of dropped) if (!goneAt.has(c.id!) && !listed.some((s) => s.subscriber === c.id)) goneAt.set(c.id!, now);
      await sleep(200);
    }
    for (const c of dropped) {
      expect(goneAt.has(c.id!), `${c.name} (${c.id}) still listed ${DETECTION_BUDGET_MS} ms after it vanished`).toBe(true);
    }

    const ms = (t: number): string => `${Math.round(t - t0)} ms`;
    const report: string[] = [];
    for (const [i, c] of dropped.entries()) {
      const ev = await waits[i]!.event;
      const log = await waits[i]!.log;
      expect(JSON.parse(ev.data as string)).toMatchObject({ subscriber: c.id, topic: TOPIC, active: false });
      report.push(`${c.name}: hub disconnect ${ms(log.at)} (reason "${String(log.reason)}"), active:false event ${ms(ev.at)}, gone from the API ${ms(goneAt.get(c.id!)!)}`);
    }
    expect(await api.connected()).toBe(1 + CLIENTS.length - dropped.length); // the watcher and the control

    // Only the dead peers went: the control client, on a live link all along, is still listed,
    // still gets heartbeats, and no other subscription ended.
    expect(await api.subscriptions()).toContainEqual(expect.objectContaining({ subscriber: control.id, active: true }));
    expect(events(watcherFrom).filter((e) => !e.active).map((e) => e.subscriber).sort()).toEqual(dropped.map((c) => c.id).sort());
    await control.proc!.waitFor((l) => l.t === 'heartbeat', 3000, 'heartbeat after the drops', control.proc!.lines.length);
    expect(streamEnds(control.proc!)).toEqual([]);

    // The drops really were silent: the client processes are alive and their streams never ended.
    for (const c of dropped) {
      expect(c.proc!.alive).toBe(true);
      expect(streamEnds(c.proc!)).toEqual([]);
    }
    console.log(`presence-silent-drop: detection after the drop (tcp_retries2=3, heartbeat 1 s):\n  ${report.join('\n  ')}`);
  }, DETECTION_BUDGET_MS + 10_000);
});
