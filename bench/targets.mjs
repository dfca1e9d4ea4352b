// The systems under test, started as separate processes: the Quicksilver hub (one process, its
// own --workers cluster, or independent shards), the bare broadcaster (the ceiling) and Pushpin.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { BENCH_DIR, ROOT, freePort, nowMs, processTree, signJwt, sleep, spawnTracked, stopChild, waitHttp, waitTcp } from './lib.mjs';

export const JWT_KEY = 'quicksilver-benchmark-key-0123456789abcdef';
export const PUBLISHER_TOKEN = signJwt({ mercure: { publish: ['*'] } }, JWT_KEY);
export const HUB_PATH = '/.well-known/mercure';

/**
 * @typedef {object} Target
 * @property {string} name
 * @property {string} label
 * @property {'single'|'cluster'|'shards'} topology
 * @property {number} procs                 hub processes (workers or shards)
 * @property {{host:string,port:number}[]} subEndpoints
 * @property {{host:string,port:number}[]} pubEndpoints   every update is POSTed to each
 * @property {'mercure'|'bare'|'pushpin'} pubFormat
 * @property {Record<string, unknown>} pubExtra             extra publish arguments (token, channel)
 * @property {(topic: string) => string} subscribePath
 * @property {() => number[]} pids
 * @property {() => Promise<void>} stop
 * @property {string[]} notes
 */

const ep = (port) => ({ host: '127.0.0.1', port });

/** BENCH_PRELOAD=<file>: a diagnostic module (bench/hub-timeline.mjs) loaded into the hub and the bare broadcaster. */
const PRELOAD = process.env.BENCH_PRELOAD ? ['--import', path.resolve(process.env.BENCH_PRELOAD)] : [];

// ------------------------------------------------------------------------------------------------
// Quicksilver
// ------------------------------------------------------------------------------------------------

/** Directory holding the hub's build (dist/cli.js): this checkout, or another one (--hub-dir). */
let hubDir = ROOT;
export function setHubDir(dir) {
  hubDir = dir;
}

/** Starts one hub process (which may fork its own workers). */
export async function startHubProcess({ port, transport, heartbeat, anonymous = true, workers, nodeArgs = [], env = {}, timeout = 20000, defaults = false }) {
  const args = [
    ...PRELOAD,
    ...nodeArgs,
    path.join(hubDir, 'dist/cli.js'),
    '--addr', `127.0.0.1:${port}`,
    '--jwt-key', JWT_KEY,
    '--transport-url', transport,
    '--log-level', 'warn',
    // defaults: what a plain `quicksilver` does (its own heartbeat and write timeout).
    ...(defaults ? [] : ['--heartbeat', `${heartbeat}ms`, '--write-timeout', '0s']),
  ];
  if (anonymous) args.push('--anonymous');
  if (workers !== undefined) args.push('--workers', String(workers));
  const proc = spawnTracked(process.execPath, args, { cwd: hubDir, env: { ...process.env, ...env, LOG_FORMAT: 'json' } });
  try {
    await waitHttp(port, { path: '/healthz', timeout, alive: proc.alive });
  } catch (err) {
    await stopChild(proc.child, 500);
    throw new Error(`${/** @type {Error} */ (err).message}\n${proc.tail.slice(-8).join('\n')}`);
  }
  return proc;
}

/** Transport URL with a unique name so that runs never share state. */
export function transportUrl(kind, tag, dir) {
  switch (kind) {
    case 'memory':
      return 'memory://';
    case 'lmdb':
      return `lmdb://${path.join(dir, `hub-${tag}.lmdb`)}`;
    case 'redis':
      return `redis://127.0.0.1:6379?stream=qsbench_${tag}`;
    case 'postgres':
      return `postgres://postgres@127.0.0.1:5432/test?table=qsbench_${tag}`;
    case 'nats':
      return `nats://127.0.0.1:4222?stream=QSBENCH_${tag}&subject=qsbench.${tag}`;
    default:
      throw new Error(`unknown transport ${kind}`);
  }
}

let clusterProbe = /** @type {null | { workers: boolean, fanout: boolean, reason: string }} */ (null);

/**
 * Whether `quicksilver --workers N` runs a cluster here, and whether an update published to one
 * worker reaches subscribers held by the others. Probed once per run.
 */
export async function probeCluster(log) {
  if (clusterProbe) return clusterProbe;
  const port = await freePort();
  let proc;
  try {
    proc = await startHubProcess({ port, transport: 'memory://', heartbeat: 40000, workers: 2, timeout: 10000 });
  } catch (err) {
    clusterProbe = { workers: false, fanout: false, reason: `--workers 2 failed: ${String(/** @type {Error} */ (err).message).split('\n').slice(0, 3).join(' | ')}` };
    log(`cluster probe: ${clusterProbe.reason}`);
    return clusterProbe;
  }
  try {
    await sleep(700);
    const tree = processTree(/** @type {number} */ (proc.child.pid));
    if (tree.length < 3) {
      clusterProbe = { workers: false, fanout: false, reason: `--workers 2 was accepted but started ${tree.length - 1} worker process(es)` };
      return clusterProbe;
    }
    // Eight subscribers spread round-robin over the workers, one update: all eight must get it.
    const topic = 'https://bench.example/probe';
    const socks = [];
    let got = 0;
    for (let i = 0; i < 8; i++) {
      const s = net.connect({ host: '127.0.0.1', port });
      let seen = false;
      s.on('data', (d) => {
        if (!seen && d.toString('latin1').includes('data: probe')) {
          seen = true;
          got++;
        }
      });
      s.on('error', () => undefined);
      s.write(`GET ${HUB_PATH}?topic=${encodeURIComponent(topic)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      socks.push(s);
    }
    await sleep(800);
    const body = `topic=${encodeURIComponent(topic)}&data=probe`;
    await new Promise((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: HUB_PATH, headers: { Authorization: `Bearer ${PUBLISHER_TOKEN}`, 'Content-Type': 'application/x-www-form-urlencoded' } }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', resolve);
      req.end(body);
    });
    const deadline = Date.now() + 3000;
    while (got < 8 && Date.now() < deadline) await sleep(50);
    for (const s of socks) s.destroy();
    clusterProbe = got === 8
      ? { workers: true, fanout: true, reason: `--workers works (${tree.length - 1} worker processes; an update reached subscribers on every worker)` }
      : { workers: true, fanout: false, reason: `--workers starts workers but only ${got}/8 subscribers spread over them got a published update` };
    return clusterProbe;
  } finally {
    await stopChild(proc.child, 3000);
    log(`cluster probe: ${clusterProbe?.reason}`);
  }
}

/**
 * Starts Quicksilver with `procs` processes: one process, its --workers cluster when that works
 * (and fans out across workers if `needFanout`), else `procs` independent shards, each update
 * then being published to every shard (the same total work a cluster does).
 * @returns {Promise<Target>}
 */
export async function startQuicksilver({ procs = 1, transport = 'memory', heartbeat = 40000, anonymous = true, needFanout = true, nodeArgs = [], tag, dir, log, defaults = false }) {
  const notes = [];
  const url = transportUrl(transport, tag, dir);
  /** @type {{ child: import('node:child_process').ChildProcess }[]} */
  const started = [];
  let topology = /** @type {Target['topology']} */ ('single');
  const ports = [];
  if (defaults) {
    // The configuration a plain `quicksilver` runs: no --workers (one worker per core), the
    // LMDB store (here in the scratch directory instead of ./.quicksilver/), default heartbeat
    // and write timeout.
    const port = await freePort();
    const proc = await startHubProcess({ port, transport: url, heartbeat, anonymous, nodeArgs, defaults: true });
    started.push(proc);
    ports.push(port);
    await sleep(500);
    const workers = processTree(/** @type {number} */ (proc.child.pid)).length - 1;
    procs = Math.max(1, workers);
    topology = workers > 0 ? 'cluster' : 'single';
  } else if (procs > 1) {
    const probe = await probeCluster(log);
    if (probe.workers && (probe.fanout || !needFanout)) {
      topology = 'cluster';
      const port = await freePort();
      started.push(await startHubProcess({ port, transport: url, heartbeat, anonymous, workers: procs, nodeArgs }));
      ports.push(port);
    } else {
      topology = 'shards';
      notes.push(`cluster mode unusable (${probe.reason}): ${procs} independent hub processes instead, subscribers spread over them, each update published to every one`);
      for (let i = 0; i < procs; i++) {
        const port = await freePort();
        const shardUrl = transport === 'lmdb' ? transportUrl('lmdb', `${tag}-s${i}`, dir) : url;
        started.push(await startHubProcess({ port, transport: shardUrl, heartbeat, anonymous, workers: 1, nodeArgs }));
        ports.push(port);
      }
    }
  } else {
    const port = await freePort();
    started.push(await startHubProcess({ port, transport: url, heartbeat, anonymous, workers: 1, nodeArgs }));
    ports.push(port);
  }
  const roots = started.map((p) => /** @type {number} */ (p.child.pid));
  return {
    name: 'quicksilver',
    label: `Quicksilver (${transport}${topology === 'single' ? '' : `, ${procs} ${topology === 'cluster' ? 'workers' : 'shards'}`}${defaults ? ', default configuration' : ''})`,
    topology,
    procs,
    transport,
    transportUrl: url,
    subEndpoints: ports.map(ep),
    pubEndpoints: topology === 'shards' ? ports.map(ep) : [ep(ports[0])],
    pubFormat: 'mercure',
    pubExtra: { token: PUBLISHER_TOKEN },
    subscribePath: (topic) => `${HUB_PATH}?topic=${encodeURIComponent(topic).replaceAll('%25I%25', '%I%')}`,
    pids: () => roots.flatMap((r) => processTree(r)),
    stop: async () => {
      await Promise.all(started.map((p) => stopChild(p.child, 5000)));
    },
    notes,
  };
}

// ------------------------------------------------------------------------------------------------
// Bare broadcaster (the ceiling)
// ------------------------------------------------------------------------------------------------

/** @returns {Promise<Target>} */
export async function startBare({ procs = 1, mode = 'net', heartbeat = 40000, coalesce = true, ackFirst = false, form = false, nodeArgs = [] }) {
  const port = await freePort();
  const proc = spawnTracked(process.execPath, [...PRELOAD, ...nodeArgs, path.join(BENCH_DIR, 'bare.mjs'), '--port', String(port), '--procs', String(procs), '--mode', mode, '--heartbeat', String(heartbeat), ...(coalesce ? [] : ['--no-coalesce']), ...(ackFirst ? ['--ack-first'] : [])]);
  await waitHttp(port, { path: '/healthz', alive: proc.alive });
  if (procs > 1) await sleep(300 * procs); // every worker listening
  const root = /** @type {number} */ (proc.child.pid);
  return {
    name: mode === 'net' ? (coalesce ? 'bare' : ackFirst ? 'bare-uncoalesced-ackfirst' : 'bare-uncoalesced') : form ? 'bare-http-form' : 'bare-http',
    label: `${mode === 'net' ? 'bare node:net broadcaster' : 'plain node:http SSE server'}${coalesce ? '' : `, one write per frame, 200 sent ${ackFirst ? 'before' : 'after'} the fan-out`}${procs > 1 ? ` (${procs} processes)` : ''}`,
    topology: procs > 1 ? 'cluster' : 'single',
    procs,
    subEndpoints: [ep(port)],
    pubEndpoints: [ep(port)],
    // form: publishes are the hub's own form POSTs to /.well-known/mercure (node:http, mode http).
    pubFormat: form ? 'mercure' : 'bare',
    pubExtra: {},
    subscribePath: (topic) => `/sub?topic=${encodeURIComponent(topic).replaceAll('%25I%25', '%I%')}`,
    pids: () => processTree(root),
    stop: () => stopChild(proc.child, 2000),
    notes: [],
  };
}

// ------------------------------------------------------------------------------------------------
// Pushpin (peer): HTTP streaming with GRIP
// ------------------------------------------------------------------------------------------------

export function pushpinInstalled() {
  try {
    return execFileSync('pushpin', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** Ports Pushpin's handler always binds (5560–5563): another instance there would clash. */
async function portBusy(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** @returns {Promise<Target>} */
export async function startPushpin({ messageRate = 1_000_000, channel = 'bench' } = {}) {
  const version = pushpinInstalled();
  if (!version) throw new Error('pushpin is not installed (bench/install-pushpin.sh installs it)');
  if (await portBusy(5561)) throw new Error('port 5561 is taken (another Pushpin running?)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qs-pushpin-'));
  mkdirSync(path.join(dir, 'run'));
  mkdirSync(path.join(dir, 'log'));
  // The GRIP origin: every request becomes a held stream on the channel.
  const origin = http.createServer((req, res) => {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      'Grip-Hold': 'stream',
      'Grip-Channel': channel,
    });
    res.end(':\n');
  });
  origin.keepAliveTimeout = 60_000;
  const originPort = await new Promise((resolve) => origin.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => resolve(/** @type {net.AddressInfo} */ (origin.address()).port)));
  const httpPort = await freePort();
  const base = readFileSync('/etc/pushpin/pushpin.conf', 'utf8');
  const set = (text, key, value) => {
    const re = new RegExp(`^${key}=.*$`, 'm');
    return re.test(text) ? text.replace(re, `${key}=${value}`) : text;
  };
  let conf = base;
  conf = set(conf, 'rundir', path.join(dir, 'run'));
  conf = set(conf, 'logdir', path.join(dir, 'log'));
  conf = set(conf, 'http_port', String(httpPort));
  conf = set(conf, 'routesfile', path.join(dir, 'routes'));
  conf = set(conf, 'client_maxconn', '19000');
  conf = set(conf, 'log_level', '1');
  // Pushpin throttles fan-out to message_rate messages/s (2500 by default) and queues up to
  // message_hwm: both are raised so that the hardware is the limit, not the default setting.
  conf = set(conf, 'message_rate', String(messageRate));
  conf = set(conf, 'message_hwm', '10000000');
  conf = set(conf, 'stats_connection_ttl', '600');
  // The proxy reaches the origin through zurl: run our own zurl and point the proxy at it (the
  // package's defaults expect a system-wide zurl under /var/run/zurl).
  conf = set(conf, 'services', 'condure,zurl,pushpin-proxy,pushpin-handler');
  conf = conf.replace(
    /^\[proxy\]$/m,
    '[proxy]\nzurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out',
  );
  writeFileSync(path.join(dir, 'pushpin.conf'), conf);
  writeFileSync(path.join(dir, 'routes'), `* 127.0.0.1:${originPort}\n`);
  const proc = spawnTracked('pushpin', ['--config', path.join(dir, 'pushpin.conf'), '--merge-output'], { cwd: dir });
  try {
    await waitTcp(httpPort, 20000, proc.alive);
    await waitTcp(5561, 20000, proc.alive);
  } catch (err) {
    await stopChild(proc.child, 1000);
    origin.close();
    throw new Error(`pushpin did not start: ${/** @type {Error} */ (err).message}\n${proc.tail.slice(-5).join('\n')}`);
  }
  await sleep(500);
  const root = /** @type {number} */ (proc.child.pid);
  return {
    name: 'pushpin',
    label: `Pushpin ${version.replace(/^pushpin\s*/i, '')} (GRIP HTTP streaming, message_rate=${messageRate})`,
    topology: 'single',
    procs: 1,
    subEndpoints: [ep(httpPort)],
    pubEndpoints: [ep(5561)],
    pubFormat: 'pushpin',
    pubExtra: { channel },
    // Pushpin's proxy answers 502 to part of a burst of new streams: open them more gently.
    connectConcurrency: 32,
    subscribePath: () => '/stream',
    pids: () => processTree(root),
    stop: async () => {
      await stopChild(proc.child, 3000);
      origin.closeAllConnections?.();
      origin.close();
      rmSync(dir, { recursive: true, force: true });
    },
    notes: [],
  };
}

// ------------------------------------------------------------------------------------------------
// Nchan (peer): nginx's pub/sub module, EventSource subscribers, HTTP publisher
// ------------------------------------------------------------------------------------------------

const NCHAN_MODULES = ['/usr/lib/nginx/modules/ngx_nchan_module.so', '/usr/share/nginx/modules/ngx_nchan_module.so'];

/** "nginx x.y.z, nchan a.b.c" when nginx and the Nchan module are installed, else null. */
export function nchanInstalled() {
  if (!NCHAN_MODULES.some((m) => existsSync(m))) return null;
  // `nginx -v` prints "nginx version: nginx/1.22.1" on stderr.
  const v = spawnSync('nginx', ['-v'], { encoding: 'utf8' });
  const nginx = /nginx version:\s*(\S+)/.exec(`${v.stderr ?? ''}${v.stdout ?? ''}`)?.[1];
  if (!nginx) return null;
  const q = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'libnginx-mod-nchan'], { encoding: 'utf8' });
  const pkg = String(q.stdout ?? '').trim().replace(/^\d+:/, '').replace(/\+.*$/, '');
  return `${nginx}, nchan ${/^\d/.test(pkg) ? pkg : '(version unknown)'}`;
}

/**
 * Starts nginx with the Nchan module as a child of the benchmark: `daemon off`, its own prefix,
 * pid file, logs and temp paths under a temporary directory, a free port; nothing of the system's
 * nginx configuration is read or touched.
 *
 * Configuration: Nchan's and nginx's defaults, except the limits that would otherwise be what is
 * measured: worker_connections and worker_rlimit_nofile (so that every subscriber fits),
 * worker_processes = max(cores, processes needed for the subscriber count) as Debian's own
 * `worker_processes auto` plus what the fd limit requires, `reuseport` so that connections spread
 * evenly over the workers (none runs out of descriptors), nchan_message_buffer_length only when
 * asked (the reconnect scenario: Nchan keeps 10 messages per channel by default), and
 * `access_log off` (the hub is run with --log-level warn: neither logs each request). Pings
 * (`nchan_eventsource_ping_interval`, off by default) are enabled only when a heartbeat is asked
 * for, as a comment line like the hub's heartbeat.
 * @param {{ procs?: number, heartbeat?: number, bufferLength?: number, channel?: string }} [o]
 * @returns {Promise<Target>}
 */
export async function startNchan({ procs = 1, heartbeat = 0, bufferLength, channel = 'bench' } = {}) {
  const version = nchanInstalled();
  if (!version) throw new Error('nginx with the Nchan module is not installed (bench/install-nchan.sh installs it)');
  const mod = /** @type {string} */ (NCHAN_MODULES.find((m) => existsSync(m)));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qs-nchan-'));
  for (const d of ['logs', 'tmp']) mkdirSync(path.join(dir, d));
  const port = await freePort();
  const workers = Math.max(os.availableParallelism(), procs);
  const pings = heartbeat > 0 ? `\n      nchan_eventsource_ping_interval ${Math.max(1, Math.round(heartbeat / 1000))};\n      nchan_eventsource_ping_event "";\n      nchan_eventsource_ping_comment "hb";` : '';
  const buffer = bufferLength ? `\n      nchan_message_buffer_length ${bufferLength};` : '';
  const conf = `# generated by bench/targets.mjs (startNchan)
load_module ${mod};
daemon off;
worker_processes ${workers};
worker_rlimit_nofile 20000;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events {
  worker_connections 19500;
}
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    location = /healthz {
      return 200 "ok";
    }
    location = /pub {
      nchan_publisher;
      nchan_channel_id $arg_id;${buffer}
    }
    location = /sub {
      nchan_subscriber eventsource;
      nchan_channel_id $arg_id;${pings}
    }
  }
}
`;
  writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const proc = spawnTracked('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'logs', 'error.log')], { cwd: dir });
  try {
    await waitHttp(port, { path: '/healthz', timeout: 15000, alive: proc.alive });
  } catch (err) {
    await stopChild(proc.child, 1000);
    let log = '';
    try {
      log = readFileSync(path.join(dir, 'logs', 'error.log'), 'utf8').split('\n').slice(-5).join('\n');
    } catch {
      // no log
    }
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`nginx (nchan) did not start: ${/** @type {Error} */ (err).message}\n${proc.tail.slice(-5).join('\n')}\n${log}`);
  }
  await sleep(300);
  const root = /** @type {number} */ (proc.child.pid);
  return {
    name: 'nchan',
    label: `Nchan (${version}, ${workers} nginx workers${bufferLength ? `, message buffer ${bufferLength}` : ''})`,
    topology: workers > 1 ? 'cluster' : 'single',
    procs: workers,
    subEndpoints: [ep(port)],
    pubEndpoints: [ep(port)],
    pubFormat: 'nchan',
    pubExtra: { channel, pubPath: '/pub' },
    // Nchan's ids are its own ("<time>:<tag>"): reconnects send back the last id received.
    keepIds: true,
    subscribePath: () => `/sub?id=${channel}`,
    pids: () => processTree(root),
    stop: async () => {
      // SIGTERM is nginx's fast shutdown; the master reaps its workers.
      await stopChild(proc.child, 3000);
      rmSync(dir, { recursive: true, force: true });
    },
    notes: [],
  };
}

// ------------------------------------------------------------------------------------------------
// Cleanup of server transports' state
// ------------------------------------------------------------------------------------------------

/** Best effort: deletes what a benchmark hub created in Redis, PostgreSQL and NATS. */
export async function cleanupTransport(kind, tag) {
  try {
    if (kind === 'redis') {
      const { Redis } = await import('ioredis');
      const r = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true, maxRetriesPerRequest: 1 });
      await r.connect();
      const keys = await r.keys(`qsbench_${tag}*`);
      if (keys.length) await r.del(...keys);
      await r.quit();
    } else if (kind === 'postgres') {
      const pg = (await import('pg')).default;
      const c = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
      await c.connect();
      for (const t of [`qsbench_${tag}_subscriptions`, `qsbench_${tag}_nodes`, `qsbench_${tag}`]) await c.query(`DROP TABLE IF EXISTS ${t} CASCADE`);
      await c.end();
    } else if (kind === 'nats') {
      const { connect } = await import('nats');
      const nc = await connect({ servers: '127.0.0.1:4222', timeout: 2000 });
      const jsm = await nc.jetstreamManager();
      for await (const s of jsm.streams.list()) if (s.config.name.includes(`QSBENCH_${tag}`)) await jsm.streams.delete(s.config.name);
      await nc.close();
    }
  } catch {
    // a missing service or nothing to delete
  }
}

export { nowMs, existsSync };
