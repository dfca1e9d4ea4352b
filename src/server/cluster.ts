import cluster, { type Worker } from 'node:cluster';
import type { ServerResponse } from 'node:http';
import { DEV_KEY, type Config } from '../config/index.js';
import { defaultWorkerCount } from '../config/cpus.js';
import { devBanner } from './dev-banner.js';
import { createHub, type QuicksilverHub, type RequestHandler } from '../http/handler.js';
import { send as sendHttp } from '../http/http-util.js';
import { ConnectionLimiter, RateLimiter } from '../http/limits.js';
import { exitOnSignals, hubOptionsFromConfig, logUiUrl, serveOptionsFromConfig } from './startup.js';
import type { Logger } from '../observability/logger.js';
import { serve, type RunningServer } from './server.js';
import { startAcmeFromConfig } from './acme.js';
import { shareCertificates, workerCertificates } from './acme-cluster.js';
import { ClusterPrimaryRelay, ClusterWorkerTransport, clusterOps, workerPort } from '../transports/cluster/index.js';
import { createTransport } from '../transports/index.js';

/*
 * `--workers N`: one primary process and N worker processes sharing the listening port
 * (node:cluster; connections are handed out round-robin by the primary on Linux and macOS).
 *
 * The primary owns the real transport (an LMDB store can only be open in one process) and does
 * not serve HTTP: it relays the transport to the workers over IPC (see transports/cluster.ts),
 * restarts workers that die, and drains them on SIGTERM/SIGINT. Each worker runs a complete hub
 * with a ClusterWorkerTransport: every update reaches every worker's subscribers once, in order,
 * and history, lastEventId and the subscriptions API see the whole cluster.
 *
 * With `worker_header` (`--worker-header`, `QUICKSILVER_WORKER_HEADER=1`) every HTTP response
 * carries `X-Quicksilver-Worker: <pid>`, naming the worker process that answered, for debugging
 * load spreading. Off by default: process ids tell the world about the host.
 *
 * What the hub reports and enforces is the whole cluster's, wherever a request lands:
 * `GET /metrics` on any worker answers the merged metrics of every worker (the worker asks the
 * primary, which collects each worker's snapshot; `?worker=self` gives the answering worker's
 * own), and the connection and publish-rate limits count every worker's connections and
 * publishes (see limits.ts).
 *
 * If the primary dies (even with SIGKILL), its IPC channels close and node:cluster ends each
 * worker at once (a worker's 'disconnect' without a prior `worker.disconnect()` exits it): no
 * orphan keeps serving subscribers that no longer get updates.
 */

/** Set in the environment of the worker processes forked by {@link runCluster}. */
export const WORKER_ENV = 'QUICKSILVER_CLUSTER_WORKER';
/** Response header naming the worker process (its pid) that answered, in cluster mode with `worker_header`. */
export const WORKER_HEADER = 'X-Quicksilver-Worker';

/** `--workers auto` and the CLI's default: one worker per core the process may use. */
export function defaultWorkers(): number {
  return defaultWorkerCount();
}

/** Content type of the Prometheus text format, as the single-process hub serves it. */
const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** True in a worker process forked by {@link runCluster}: the CLI must then call runCluster too. */
export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === '1';
}

/**
 * Why the cluster could not start. `unavailable`: something outside the configuration (the
 * address in use, a backend down) that a retry may fix, as opposed to a configuration the hub
 * refuses; the CLI exits 69 or 2 accordingly, as a single process does.
 */
export class ClusterStartError extends Error {
  override readonly name = 'ClusterStartError';
  constructor(message: string, readonly unavailable: boolean) {
    super(message);
  }
}

export interface ClusterOptions {
  logger: Logger;
  /** Shown in the ready line. */
  version?: string | undefined;
  /**
   * Install SIGTERM/SIGINT handlers that drain the cluster and exit the process (0 when clean,
   * 1 on a second signal or a failure). Default true.
   */
  handleSignals?: boolean | undefined;
}

export interface RunningCluster {
  readonly url: string;
  readonly workers: number;
  /** Pids of the live workers. */
  pids(): number[];
  /** Prometheus text for the whole hub: what `GET /metrics` answers on any worker. */
  metrics(): Promise<string>;
  /** Drains the workers (SIGTERM, then SIGKILL after the shutdown timeout) and closes the transport. */
  close(): Promise<void>;
}

/**
 * Runs the hub as a cluster of `config.workers` processes. Call it in the primary (it forks the
 * workers, re-running this same script with the same arguments) and in every worker
 * ({@link isClusterWorker}), where it starts one hub and never resolves.
 *
 * In the primary, resolves once every worker listens (after logging `Quicksilver hub ready`
 * once), or rejects with a one-line reason if the transport cannot be opened or a worker fails
 * before the cluster is up (every worker is then stopped and the transport closed).
 */
export async function runCluster(config: Config, options: ClusterOptions): Promise<RunningCluster> {
  if (cluster.isWorker) return runWorker(config, options);
  return runPrimary(config, options);
}

interface Slot {
  readonly index: number;
  worker: Worker | null;
  relayKey: number;
  startedAt: number;
  listening: boolean;
  /** Consecutive crashes of short-lived workers in this slot (drives the restart backoff). */
  failures: number;
  timer: NodeJS.Timeout | null;
  fatal: string | null;
  /** The fatal reason is an unavailable resource (see ClusterStartError). */
  unavailable: boolean;
}

/** A worker that lived at least this long is considered healthy: its restart backoff resets. */
const HEALTHY_AFTER = 30_000;
const BACKOFF_MIN = 100;
const BACKOFF_MAX = 30_000;

async function runPrimary(config: Config, options: ClusterOptions): Promise<RunningCluster> {
  const log = options.logger;
  const count = Math.max(1, config.workers ?? defaultWorkers());
  let restarts = 0;
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({
    index,
    worker: null,
    relayKey: 0,
    startedAt: 0,
    listening: false,
    failures: 0,
    timer: null,
    fatal: null,
    unavailable: false,
  }));
  let transport;
  try {
    transport = await createTransport(config.transportUrl, log);
  } catch (err) {
    throw new Error(`transport: ${(err as Error).message}`);
  }
  const relay = new ClusterPrimaryRelay(transport, {
    logger: log,
    // A worker whose event loop is blocked stops reading: restart it before the backlog of
    // updates queued for it exhausts the primary's memory.
    onStuck: (key) => {
      const slot = slots.find((s) => s.relayKey === key);
      if (slot?.worker && !slot.worker.isDead()) {
        slot.fatal = 'stopped reading its IPC channel';
        slot.worker.process.kill('SIGKILL');
      }
    },
    clusterMetrics: () => ({ workers: count, restarts }),
  });
  try {
    await relay.start();
  } catch (err) {
    await transport.close().catch(() => {});
    throw new ClusterStartError(`could not start: ${(err as Error).message}`, true);
  }

  // The primary owns ACME (its HTTP listener, orders, renewals); workers serve its certificates.
  let acme: Awaited<ReturnType<typeof startAcmeFromConfig>>;
  try {
    acme = await startAcmeFromConfig(config, log);
  } catch (err) {
    await relay.close().catch(() => {});
    throw new ClusterStartError((err as Error).message, true);
  }

  // Workers re-run this script with the same arguments, writing to the same stdout/stderr.
  cluster.setupPrimary({ silent: false });

  let url = '';
  let up = false;
  let stopping = false;
  let startupFailed: ((err: Error) => void) | null = null;
  let allListening: (() => void) | null = null;
  const exits = new Set<Promise<void>>();

  const fork = (slot: Slot): void => {
    slot.timer = null;
    slot.listening = false;
    slot.fatal = null;
    slot.unavailable = false;
    const worker = cluster.fork({ [WORKER_ENV]: '1', QUICKSILVER_WORKER_INDEX: String(slot.index) });
    slot.worker = worker;
    slot.startedAt = Date.now();
    slot.relayKey = relay.attach(workerPort(worker));
    if (acme) shareCertificates(acme.slot, worker);
    let exited!: () => void;
    const exit = new Promise<void>((r) => (exited = r));
    exits.add(exit);
    worker.on('message', (m: unknown) => {
      for (const op of clusterOps(m) ?? []) {
        if (op.t === 'ready') {
          slot.listening = true;
          url ||= (op as unknown as { url: string }).url;
          log.debug({ worker: worker.id, workerPid: worker.process.pid }, 'worker listening');
          if (!up && slots.every((s) => s.listening)) allListening?.();
        } else if (op.t === 'fatal') {
          const f = op as unknown as { m: string; u?: boolean };
          slot.fatal = f.m;
          slot.unavailable = f.u === true;
        }
      }
    });
    let gone = false;
    // Without a listener, an IPC error on this worker would crash the primary. A worker that
    // could not even be spawned (EACCES, EAGAIN, ENOMEM) never emits 'exit': treat it as one,
    // or startup would wait forever with nothing listening.
    worker.on('error', (err: NodeJS.ErrnoException) => {
      if (typeof err.syscall === 'string' && err.syscall.startsWith('spawn')) {
        slot.fatal ??= `cannot start a worker process: ${err.message}`;
        // Out of processes or memory may pass (exit 69: a supervisor retries); a binary this
        // user may not execute will not.
        slot.unavailable = err.code !== 'EACCES' && err.code !== 'ENOENT';
        onExit(null, null);
      } else {
        log.warn({ err, worker: worker.id }, 'worker IPC error');
      }
    });
    const onExit = (code: number | null, signal: string | null): void => {
      if (gone) return;
      gone = true;
      relay.detach(slot.relayKey);
      if (slot.worker === worker) slot.worker = null;
      exits.delete(exit);
      exited();
      if (stopping) {
        log.debug({ worker: worker.id, workerPid: worker.process.pid, code, signal }, 'worker stopped');
        return;
      }
      if (!up) {
        startupFailed?.(new ClusterStartError(slot.fatal ?? `worker ${worker.id} exited during startup (${signal ?? `code ${code}`})`, slot.unavailable));
        return;
      }
      const lived = Date.now() - slot.startedAt;
      slot.failures = lived >= HEALTHY_AFTER ? 1 : slot.failures + 1;
      const delay = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (slot.failures - 1));
      log.warn(
        { worker: worker.id, workerPid: worker.process.pid, code, signal, reason: slot.fatal ?? undefined, restartIn: delay },
        'worker exited unexpectedly: restarting it',
      );
      slot.timer = setTimeout(() => {
        if (stopping) return;
        restarts++;
        fork(slot);
        log.info({ worker: slot.worker?.id, workerPid: slot.worker?.process.pid }, 'worker restarted');
      }, delay);
    };
    worker.on('exit', onExit);
  };

  const live = (): Worker[] => slots.flatMap((s) => (s.worker && !s.worker.isDead() ? [s.worker] : []));

  /** SIGTERM to every worker, SIGKILL to those still there after the shutdown timeout. */
  const stopWorkers = async (): Promise<void> => {
    stopping = true;
    for (const s of slots) if (s.timer) clearTimeout(s.timer);
    for (const w of live()) w.process.kill('SIGTERM');
    const grace = config.server.shutdownTimeout + 5000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), grace)));
    if (await Promise.race([Promise.all([...exits]).then(() => false), timedOut])) {
      const stuck = live();
      log.warn({ workers: stuck.map((w) => w.process.pid) }, 'workers still running after the shutdown timeout: killing them');
      for (const w of stuck) w.process.kill('SIGKILL');
      await Promise.all([...exits]);
    }
    clearTimeout(timer);
  };

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await stopWorkers();
      await acme?.close();
      await relay.close();
    })();
    return closing;
  };

  const started = new Promise<void>((resolve, reject) => {
    allListening = resolve;
    startupFailed = reject;
  });
  for (const slot of slots) fork(slot);
  try {
    await started;
    // TLS-ALPN-01 is answered by the workers' listeners: the first order waits for them.
    await acme?.ready().catch((err: unknown) => Promise.reject(new ClusterStartError((err as Error).message, true)));
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
  up = true;
  startupFailed = null;
  allListening = null;

  log.info({ url, transport: transport.name, version: options.version, workers: count }, 'Quicksilver hub ready');
  logUiUrl(log, config, url);
  if (config.dev) process.stdout.write((await devBanner(url, config.hub.publisher?.key ?? DEV_KEY)) + '\n');

  if (options.handleSignals ?? true) {
    exitOnSignals(log, 'shutting down: draining workers', close, () => {
      for (const w of live()) w.process.kill('SIGKILL');
    });
  }

  return {
    url,
    workers: count,
    pids: () => live().flatMap((w) => (w.process.pid === undefined ? [] : [w.process.pid])),
    metrics: () => relay.metrics(),
    close,
  };
}

/**
 * `GET /metrics` answers the whole hub's metrics; `/metrics?worker=self` this worker's own (which
 * the hub's handler renders, as in a single process).
 */
function wantsHubMetrics(url: string): boolean {
  const q = url.indexOf('?');
  if ((q < 0 ? url : url.slice(0, q)) !== '/metrics') return false;
  return q < 0 || new URLSearchParams(url.slice(q + 1)).get('worker') !== 'self';
}

function send(op: { t: string; [k: string]: unknown }): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    try {
      process.send({ qs: [op] }, undefined, {}, () => resolve());
    } catch {
      resolve();
    }
  });
}

async function runWorker(config: Config, options: ClusterOptions): Promise<never> {
  const log = options.logger.child?.({ worker: cluster.worker?.id }) ?? options.logger;
  const fatal = async (message: string, unavailable = false): Promise<never> => {
    log.error({}, message);
    await send({ t: 'fatal', m: message, u: unavailable });
    process.exit(1);
  };

  let server: RunningServer | null = null;
  let draining = false;
  const drain = (code: number): void => {
    if (draining) return;
    draining = true;
    const done = (): never => process.exit(code);
    // Before it listens, a worker has nothing to drain.
    if (!server) done();
    else server.close().then(done, (err: unknown) => {
      log.error({ err }, 'unclean shutdown');
      process.exit(1);
    });
  };
  // The primary escalates (SIGKILL) if draining takes too long; further signals are ignored,
  // since a Ctrl-C reaches the workers and the primary (which forwards SIGTERM) alike.
  process.on('SIGTERM', () => drain(0));
  process.on('SIGINT', () => drain(0));

  const hubOptions = await hubOptionsFromConfig(config, options.version ?? '');
  if (typeof hubOptions === 'string') return fatal(hubOptions);
  // The limits are the hub's: each worker counts the others' connections and publishes too.
  const connections = new ConnectionLimiter(hubOptions.maxConnectionsPerIp ?? 0, hubOptions.maxConnections ?? 0);
  const publishRate = new RateLimiter(hubOptions.publishRateLimit ?? 0, hubOptions.publishBurst || undefined);
  let hub: QuicksilverHub | null = null;
  const transport = new ClusterWorkerTransport({
    logger: log,
    onPrimaryLost: () => drain(1),
    metrics: () => hub?.hub.metrics.snapshot() ?? null,
    onPeerLimits: (conns, takes) => {
      connections.applyPeers(conns);
      publishRate.applyPeers(takes);
    },
  });
  if (connections.enabled) connections.onChange = (ip, delta) => transport.shareConnection(ip, delta);
  if (publishRate.enabled) publishRate.onTake = (key) => transport.shareTake(key);
  hub = createHub({ ...hubOptions, transport, logger: log }, { connections, publishRate });
  try {
    await hub.ready;
  } catch (err) {
    return fatal(`could not start: ${(err as Error).message}`, true);
  }
  const pid = String(process.pid);
  const local = hub;
  const inner = local.handler;
  const handler: RequestHandler = (req, res, next) => {
    if (config.workerHeader) (res as ServerResponse).setHeader(WORKER_HEADER, pid);
    if (config.metrics && wantsHubMetrics(req.url ?? '/')) {
      transport.metrics(local.hub.metrics.snapshot()).then(
        (text) => sendHttp(res, 200, text, { 'Content-Type': METRICS_CONTENT_TYPE }),
        (err: unknown) => sendHttp(res, 503, `metrics unavailable: ${(err as Error).message}\n`),
      );
      return;
    }
    inner(req, res, next);
  };
  const tagged: QuicksilverHub = { ...local, handler };
  try {
    const certificates = config.server.acme ? await workerCertificates() : undefined;
    server = await serve(tagged, { ...serveOptionsFromConfig(config, log), certificates });
  } catch (err) {
    return fatal(`cannot listen on ${config.server.addr}: ${(err as Error).message}`, true);
  }
  await send({ t: 'ready', url: server.url });
  return new Promise<never>(() => {});
}
