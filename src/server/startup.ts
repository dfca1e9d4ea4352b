import type { Config } from '../config/index.js';
import type { Logger } from '../observability/logger.js';
import type { HubOptions } from '../http/options.js';
import type { ServeOptions } from './server.js';
import { loadOpenTelemetryTracer } from '../observability/tracing.js';

/**
 * What the single-process CLI and every cluster worker build a hub from, so that both start the
 * same hub. Returns a message instead when an option cannot be honoured (tracing without its
 * package).
 */
export async function hubOptionsFromConfig(
  config: Config,
  version: string,
): Promise<Omit<HubOptions, 'transport' | 'logger'> | string> {
  let tracer: HubOptions['tracer'];
  if (config.tracing) {
    const loaded = await loadOpenTelemetryTracer(version);
    if (typeof loaded === 'string') return loaded;
    tracer = loaded;
  }
  const { devKey, devKeyAlg } = demoTokenKey(config);
  return { ...config.hub, metrics: config.metrics, devKey, devKeyAlg, tracer };
}

/**
 * The key the demo UI signs its short-lived all-access token with: the hub's own, when one HMAC
 * key verifies both publishers and subscribers (`DEMO=1 JWT_KEY=...`, as the tutorials run it).
 * Otherwise none, and the page says how to mint one.
 */
function demoTokenKey(config: Config): { devKey?: string; devKeyAlg?: string } {
  const { demo, publisher, subscriber } = config.hub;
  if (!demo || !publisher?.key || publisher.jwksUrl) return {};
  const alg = publisher.algorithm ?? 'HS256';
  if (!alg.startsWith('HS')) return {};
  if (subscriber && (subscriber.jwksUrl || subscriber.key !== publisher.key || (subscriber.algorithm ?? 'HS256') !== alg)) return {};
  return { devKey: publisher.key, devKeyAlg: alg };
}

/** Says where the debugging UI is, when it is on: a browser is where most people start. */
export function logUiUrl(log: Logger, config: Config, url: string): void {
  if (!config.hub.ui && !config.hub.demo) return;
  const ui = `${url}/.well-known/mercure/ui/`;
  log.info({ ui }, `debugging UI at ${ui}${config.hub.demo ? ' (demo mode: insecure, never in production)' : ''}`);
}

export function serveOptionsFromConfig(config: Config, logger: Logger): ServeOptions {
  return {
    addr: config.server.addr,
    certFile: config.server.certFile,
    keyFile: config.server.keyFile,
    h2c: config.server.h2c,
    shutdownTimeout: config.server.shutdownTimeout,
    headersTimeout: config.server.readHeaderTimeout,
    requestTimeout: config.server.readTimeout,
    h2PingInterval: config.server.h2PingInterval,
    h2PingTimeout: config.server.h2PingTimeout,
    logger,
  };
}

/**
 * SIGTERM/SIGINT run `close` once and exit 0 (1 if it fails); a second signal exits at once,
 * after `onSecond` (the cluster primary kills its workers there).
 */
export function exitOnSignals(log: Logger, message: string, close: () => Promise<void>, onSecond?: () => void): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      onSecond?.();
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, message);
    close().then(
      () => {
        log.info({}, 'bye');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
