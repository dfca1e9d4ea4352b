import { DEV_KEY, type Config } from '../config/index.js';
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
  // The UI's config.json hands out an all-access token only for the well-known dev key (and only with demo).
  const devKey = config.hub.publisher?.key === DEV_KEY ? DEV_KEY : undefined;
  return { ...config.hub, metrics: config.metrics, devKey, tracer };
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
