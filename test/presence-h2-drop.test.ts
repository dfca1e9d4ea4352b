/**
 * Presence must clear when an HTTP/2 peer vanishes without a FIN or RST, as it does for HTTP/1.1
 * (presence-silent-drop.test.ts). An h2 event stream only ever writes, and its writes to a dead
 * peer are retransmitted for about 15 minutes with Linux defaults: the hub PINGs every session it
 * has read nothing from for `--h2-ping-interval`, and closes the session when the PING is not
 * acknowledged within `--h2-ping-timeout`, which ends every stream (subscription) it carried.
 *
 * Tested for real, over h2c and over TLS HTTP/2 (a self-signed certificate made here with
 * openssl): the hub runs in one network namespace and three HTTP/2 clients in three others, each
 * behind its own veth pair. One client (two streams on its session) has its link taken down, one
 * has its address removed (its packets reach a host that discards them without a word); neither
 * process learns about it. The third, idle on a live link, must stay listed: its PINGs are
 * answered. The hub's namespace keeps the kernel's default TCP timings (tcp_retries2=15, keepalive
 * after 2 h), so the PINGs are the only thing that can find the drop within seconds; a third hub
 * with PINGs off shows exactly that: the dropped clients stay listed.
 *
 * Needs root and `ip netns`; skipped with a warning otherwise, unless CI is set (then it fails).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildStar, deleteNamespaces, ip, type Line, NsFetcher, NsProcess, netnsUnavailable, type SubscriptionEvent, subscriptionEvents } from './netns-process.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const FIXTURES = join(ROOT, 'test', 'fixtures');
const CLI = join(ROOT, 'dist', 'cli.js');

const PING_INTERVAL_MS = 2_000;
const PING_TIMEOUT_MS = 1_000;
/**
 * An idle session is pinged every interval, so a drop is found at most interval + timeout after
 * it happens; the slack is the subscription event's way to the watcher and process scheduling.
 */
const SLACK_MS = 750;
const DETECTION_BUDGET_MS = PING_INTERVAL_MS + PING_TIMEOUT_MS + SLACK_MS;
/** The control idles for four intervals: three PINGs at least, each of which could have closed it. */
const CONTROL_IDLE_MS = 4 * PING_INTERVAL_MS;

const unavailable = netnsUnavailable();
const skip = unavailable !== null && !process.env.CI;
if (skip) {
  console.warn(`presence-h2-drop: SKIPPED (${unavailable}); needs root and Linux network namespaces. Set CI=1 to make this a failure.`);
}

const JWT_KEY = randomBytes(32).toString('hex');
const SUBSCRIPTIONS_TEMPLATE = '/.well-known/mercure/subscriptions{/topic}{/subscriber}';
const TOPIC = 'https://example.com/presence-h2';

type DropMode = 'link' | 'address' | 'none';
interface Client {
  name: string;
  drop: DropMode;
  streams: number;
  ns: string;
  hubDev: string;
  dev: string;
  hubAddr: string;
  addr: string;
  proc?: NsProcess;
  ids: string[];
}

interface Scenario {
  label: string;
  tls: boolean;
  pings: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const count = (p: NsProcess, t: string, from = 0): number => p.lines.slice(from).filter((l) => l.t === t).length;
const sessionEnds = (p: NsProcess): Line[] => p.lines.filter((l) => ['end', 'error', 'goaway', 'close', 'session-error'].includes(String(l.t)));

function scenario(sc: Scenario, netIndex: number): void {
  describe.skipIf(skip)(`presence over HTTP/2 (${sc.label}) when a peer silently drops (network namespaces)`, () => {
    const tag = randomBytes(3).toString('hex');
    const octet = randomBytes(1)[0]!;
    const NS_HUB = `qs-h2hub-${tag}`;
    const clients: Client[] = (
      [
        ['client (link down, 2 streams)', 'link', 2, 'cli'],
        ['client (address removed)', 'address', 1, 'cla'],
        ['control client', 'none', 1, 'ctl'],
      ] as const
    ).map(([name, drop, streams, short], i) => ({
      name,
      drop,
      streams,
      ns: `qs-h2${short}-${tag}`,
      hubDev: `qh${tag}${short}`,
      dev: `q${short}${tag}`,
      hubAddr: `10.${232 + netIndex}.${octet}.${4 * i + 1}`,
      addr: `10.${232 + netIndex}.${octet}.${4 * i + 2}`,
      ids: [],
    }));
    const HUB_ADDR = clients[0]!.hubAddr;
    const dropped = clients.filter((c) => c.drop !== 'none');
    const control = clients.find((c) => c.drop === 'none')!;
    const totalStreams = clients.reduce((n, c) => n + c.streams, 0);

    const procs: NsProcess[] = [];
    const namespaces: string[] = [];
    let certDir: string | undefined;
    let hub: NsProcess;
    let watcher: NsProcess;
    let api: NsFetcher;

    const events = (from = 0): SubscriptionEvent[] => subscriptionEvents(watcher, from);

    const onExit = (): void => {
      for (const p of procs) p.killNow();
      deleteNamespaces(namespaces);
    };

    beforeAll(async () => {
      if (unavailable) throw new Error(`network namespaces unavailable (${unavailable}) and CI is set: failing instead of skipping`);
      process.once('exit', onExit);
      if (!existsSync(CLI)) throw new Error('dist/cli.js is missing: run `npm run build` first');

      buildStar(NS_HUB, clients, namespaces);
      // The kernel's defaults, stated: only the PINGs can find a silent peer within the budget.
      const sysctl = ip('netns', 'exec', NS_HUB, 'sysctl', '-n', 'net.ipv4.tcp_retries2', 'net.ipv4.tcp_keepalive_time').split('\n');
      expect(Number(sysctl[0])).toBeGreaterThanOrEqual(8);
      expect(Number(sysctl[1])).toBeGreaterThanOrEqual(600);

      const env: Record<string, string> = {};
      const listen: string[] = ['--h2c'];
      if (sc.tls) {
        certDir = mkdtempSync(join(tmpdir(), 'qs-h2drop-'));
        execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
          '-subj', '/CN=qs-h2-drop', '-addext', `subjectAltName=IP:${HUB_ADDR}`,
          '-keyout', join(certDir, 'key.pem'), '-out', join(certDir, 'cert.pem')], { stdio: 'ignore' });
        listen.splice(0, 1, '--cert-file', join(certDir, 'cert.pem'), '--key-file', join(certDir, 'key.pem'));
        // The h2 clients trust it through QS_CA, the fetcher (undici) through the extra CA store.
        env.QS_CA = join(certDir, 'cert.pem');
        env.NODE_EXTRA_CA_CERTS = join(certDir, 'cert.pem');
      }
      const pings = sc.pings ? ['--h2-ping-interval', `${PING_INTERVAL_MS}ms`, '--h2-ping-timeout', `${PING_TIMEOUT_MS}ms`] : ['--h2-ping-interval', '0s'];
      hub = new NsProcess('hub', NS_HUB, [
        CLI, '--workers', '1', '--jwt-key', JWT_KEY, '--anonymous', '--subscriptions',
        '--heartbeat', '1s', '--transport-url', 'memory://', '--addr', `${HUB_ADDR}:0`,
        '--log-format', 'json', '--log-level', 'debug', ...listen, ...pings,
      ]);
      procs.push(hub);
      const ready = await hub.waitFor((l) => l.msg === 'Quicksilver hub ready', 10_000, '"Quicksilver hub ready" log line');
      const base = String(ready.url);
      expect(base).toMatch(new RegExp(`^${sc.tls ? 'https' : 'http'}://${HUB_ADDR.replace(/\./g, '\\.')}:\\d+$`));

      const token = await new SignJWT({ mercure: { subscribe: [SUBSCRIPTIONS_TEMPLATE] } })
        .setProtectedHeader({ alg: 'HS256' })
        .sign(new TextEncoder().encode(JWT_KEY));
      const hubUrl = `${base}/.well-known/mercure`;

      const fetcher = new NsProcess('fetcher', NS_HUB, [join(FIXTURES, 'netns-fetch.mjs')], { ...env, QS_TOKEN: token });
      procs.push(fetcher);
      api = new NsFetcher(fetcher, base);

      // The watcher is itself an idle HTTP/2 session (on the hub's own host): it must survive too.
      watcher = new NsProcess('watcher', NS_HUB, [join(FIXTURES, 'netns-h2-subscriber.mjs'), `${hubUrl}?topic=${encodeURIComponent(SUBSCRIPTIONS_TEMPLATE)}`], { ...env, QS_TOKEN: token });
      procs.push(watcher);
      expect((await watcher.waitFor((l) => l.t === 'open', 5000, 'watcher stream')).status).toBe(200);
      const eventFor = (topic: string) => (l: Line): boolean =>
        l.t === 'event' && typeof l.data === 'string' && (JSON.parse(l.data) as { topic?: string }).topic === topic;
      await watcher.waitFor(eventFor(SUBSCRIPTIONS_TEMPLATE), 5000, "the watcher's own subscription event");

      // One client at a time, so that its `active: true` events tell its streams' subscriber ids.
      for (const c of clients) {
        const from = watcher.lines.length;
        c.proc = new NsProcess(c.name, c.ns, [join(FIXTURES, 'netns-h2-subscriber.mjs'), `${hubUrl}?topic=${encodeURIComponent(TOPIC)}`, String(c.streams)], env);
        procs.push(c.proc);
        for (let s = 0; s < c.streams; s++) {
          expect((await c.proc.waitFor((l) => l.t === 'open' && l.stream === s, 5000, `stream ${s}`)).status).toBe(200);
        }
        let at = from;
        for (let s = 0; s < c.streams; s++) {
          const ev = await watcher.waitFor(eventFor(TOPIC), 5000, `subscription event ${s + 1} for ${c.name}`, at);
          at = watcher.lines.indexOf(ev) + 1;
          const d = JSON.parse(ev.data as string) as { subscriber: string; active: boolean };
          expect(d).toMatchObject({ topic: TOPIC, active: true });
          c.ids.push(d.subscriber);
        }
      }
      const listed = await api.subscriptions();
      for (const id of clients.flatMap((c) => c.ids)) expect(listed).toContainEqual(expect.objectContaining({ subscriber: id, topic: TOPIC, active: true }));
      expect(await api.connected()).toBe(1 + totalStreams);
    }, 30_000);

    afterAll(async () => {
      await Promise.all(procs.map((p) => p.kill()));
      deleteNamespaces(namespaces);
      if (certDir) rmSync(certDir, { recursive: true, force: true });
      process.removeListener('exit', onExit);
    });

    it(`control: idle sessions on live links stay open and listed (${sc.pings ? 'their PINGs answered' : 'no PINGs sent'})`, async () => {
      const from = [watcher, ...clients.map((c) => c.proc!)].map((p) => p.lines.length);
      await sleep(CONTROL_IDLE_MS);

      const listed = await api.subscriptions();
      for (const id of clients.flatMap((c) => c.ids)) expect(listed).toContainEqual(expect.objectContaining({ subscriber: id, active: true }));
      expect(events().filter((e) => !e.active)).toEqual([]);
      expect(await api.connected()).toBe(1 + totalStreams);
      const peers = [watcher, ...clients.map((c) => c.proc!)];
      const pings = peers.map((p, i) => count(p, 'ping', from[i]));
      const beats = peers.map((p, i) => count(p, 'heartbeat', from[i]));
      for (const [i, p] of peers.entries()) {
        // The PING rule is "nothing read for an interval": an idle peer is pinged every interval.
        if (sc.pings) expect(pings[i], `PINGs received by ${p.name}`).toBeGreaterThanOrEqual(CONTROL_IDLE_MS / PING_INTERVAL_MS - 1);
        else expect(pings[i], `PINGs received by ${p.name}`).toBe(0);
        expect(beats[i], `heartbeats received by ${p.name}`).toBeGreaterThanOrEqual(2);
        expect(sessionEnds(p)).toEqual([]);
      }
      expect(hub.lines.filter((l) => String(l.msg).includes('PING not acknowledged'))).toEqual([]);
      console.log(
        `presence-h2-drop (${sc.label}): control: all ${totalStreams + 1} streams still listed after ${CONTROL_IDLE_MS} ms idle; ` +
          `PINGs received: ${peers.map((p, i) => `${p.name} ${pings[i]}`).join(', ')}`,
      );
    }, CONTROL_IDLE_MS + 10_000);

    const dropTitle = sc.pings
      ? `peers that silently vanish are removed within ping interval + timeout (${PING_INTERVAL_MS} + ${PING_TIMEOUT_MS} ms): active:false events, API, metrics; the control stays`
      : 'with PINGs off, vanished peers stay listed past that budget (nothing else finds them in time)';
    it(dropTitle, async () => {
      const hubLogFrom = hub.lines.length;
      const watcherFrom = watcher.lines.length;
      const t0 = performance.now();
      for (const c of dropped) {
        if (c.drop === 'link') ip('-n', c.ns, 'link', 'set', c.dev, 'down');
        else ip('-n', c.ns, 'addr', 'del', `${c.addr}/30`, 'dev', c.dev);
      }
      const ids = dropped.flatMap((c) => c.ids);
      const ms = (t: number): string => `${Math.round(t - t0)} ms`;

      if (!sc.pings) {
        await sleep(DETECTION_BUDGET_MS + 2_000);
        const listed = await api.subscriptions();
        for (const id of ids) expect(listed).toContainEqual(expect.objectContaining({ subscriber: id, active: true }));
        expect(events(watcherFrom).filter((e) => !e.active)).toEqual([]);
        expect(await api.connected()).toBe(1 + totalStreams);
        console.log(`presence-h2-drop (${sc.label}): ${ids.length} dropped streams still listed ${ms(performance.now())} after the drop`);
        return;
      }

      const inactive = ids.map((id) =>
        watcher.waitFor(
          (l) => {
            if (l.t !== 'event' || typeof l.data !== 'string') return false;
            const d = JSON.parse(l.data) as { subscriber?: string; active?: boolean };
            return d.subscriber === id && d.active === false;
          },
          DETECTION_BUDGET_MS + 5_000,
          `"active: false" subscription event for ${id}`,
          watcherFrom,
        ),
      );
      for (const p of inactive) p.catch(() => {});
      const goneAt = new Map<string, number>();
      while (goneAt.size < ids.length && performance.now() - t0 < DETECTION_BUDGET_MS + 5_000) {
        const listed = await api.subscriptions();
        const now = performance.now();
        for (const id of ids) if (!goneAt.has(id) && !listed.some((s) => s.subscriber === id)) goneAt.set(id, now);
        await sleep(100);
      }
      const evs = await Promise.all(inactive);
      const closes = hub.lines.slice(hubLogFrom).filter((l) => String(l.msg).includes('PING not acknowledged'));
      const report = dropped.map((c) => {
        const at = c.ids.map((id) => ms(evs[ids.indexOf(id)]!.at)).join(' / ');
        const gone = c.ids.map((id) => (goneAt.has(id) ? ms(goneAt.get(id)!) : 'never')).join(' / ');
        const log = closes.find((l) => l.remoteAddress === c.addr || l.remoteAddress === `::ffff:${c.addr}`);
        return `${c.name}: session closed ${log ? ms(log.at) : '?'} (waited ${String(log?.waitedMs)} ms for the ack), active:false ${at}, gone from the API ${gone}`;
      });
      console.log(`presence-h2-drop (${sc.label}): detection after the drop (PING every ${PING_INTERVAL_MS} ms of silence, ack timeout ${PING_TIMEOUT_MS} ms):\n  ${report.join('\n  ')}`);

      for (const [i, id] of ids.entries()) {
        expect(JSON.parse(evs[i]!.data as string)).toMatchObject({ subscriber: id, topic: TOPIC, active: false });
        expect(evs[i]!.at - t0, `active:false for ${id}`).toBeLessThanOrEqual(DETECTION_BUDGET_MS);
        expect(goneAt.has(id), `${id} still listed`).toBe(true);
      }
      // One session closed per vanished peer, each by its unanswered PING.
      expect(closes).toHaveLength(dropped.length);
      for (const c of dropped) expect(closes.some((l) => String(l.remoteAddress).endsWith(c.addr)), `PING close logged for ${c.name}`).toBe(true);
      expect(await api.connected()).toBe(1 + totalStreams - ids.length);

      // Only the dead peers went: the control is listed, still pinged, its stream never ended.
      const ctlFrom = control.proc!.lines.length;
      expect(await api.subscriptions()).toContainEqual(expect.objectContaining({ subscriber: control.ids[0], active: true }));
      expect(events(watcherFrom).filter((e) => !e.active).map((e) => e.subscriber).sort()).toEqual([...ids].sort());
      await control.proc!.waitFor((l) => l.t === 'ping', PING_INTERVAL_MS * 2 + 1000, 'PING after the drops', ctlFrom);
      expect(sessionEnds(control.proc!)).toEqual([]);
      // The drops were silent: the client processes are alive and never saw their streams end.
      for (const c of dropped) {
        expect(c.proc!.alive).toBe(true);
        expect(sessionEnds(c.proc!)).toEqual([]);
      }
    }, DETECTION_BUDGET_MS + 20_000);
  });
}

scenario({ label: 'h2c', tls: false, pings: true }, 0);
scenario({ label: 'TLS', tls: true, pings: true }, 1);
scenario({ label: 'h2c, PINGs off', tls: false, pings: false }, 2);
