/**
 * The public shape of a loaded configuration. Its own file so that the internal model
 * (settings.ts) and the parsers can name `LogFormat` without importing index.ts.
 */
import type { HubOptions } from '../http/options.js';
import type { LogLevel } from '../observability/logger.js';

export type LogFormat = 'json' | 'pretty';

export interface ServerConfig {
  /**
   * Listen address: `host:port`, `:port` (all interfaces) or `[ipv6]:port`; port 0 picks a free
   * port. Default `:3000`, or `localhost:3000` with `--dev`. Use `parseAddr` to split it.
   */
  addr: string;
  /** PEM certificate chain (absolute path). With `keyFile`: HTTPS + HTTP/2 (ALPN h2, http/1.1). */
  certFile?: string;
  /** PEM private key of `certFile` (absolute path). */
  keyFile?: string;
  /** Cleartext HTTP/2 (prior knowledge) alongside HTTP/1.1. Ignored (false) with TLS. Default false. */
  h2c: boolean;
  /** Trust `X-Forwarded-*` / `Forwarded` headers from the proxy in front. Default false. */
  trustProxy: boolean;
  /**
   * Longest time to receive a whole request, headers and body, in ms (legacy `READ_TIMEOUT`);
   * 0 = no limit. Default 30 000. Event streams are responses: this never cuts them.
   */
  readTimeout?: number;
  /** Longest time to receive the request headers, in ms (at most `readTimeout`). Default 10 000. */
  readHeaderTimeout?: number;
  /** How long to drain connections on SIGTERM/SIGINT before closing them, in ms. Default 10 000. */
  shutdownTimeout: number;
  /**
   * HTTP/2: PING a session nothing was read from for this long, in ms; 0 = never. Undefined = the
   * server's default (30 000). How subscriptions of an h2 peer that silently vanished end.
   */
  h2PingInterval?: number;
  /** HTTP/2: close a session whose PING is not acknowledged within this, in ms. Default 15 000. */
  h2PingTimeout?: number;
  /** Automatic HTTPS: certificates from an ACME CA instead of `certFile`/`keyFile` (docs/acme.md). */
  acme?: AcmeConfig;
}

export interface AcmeConfig {
  /** Names on the certificate (the first is its subject), lower-case, no wildcard. */
  domains: string[];
  /** Account contact, for the CA's expiry notices. */
  email?: string;
  /** Directory URL. Default Let's Encrypt production. */
  directoryUrl: string;
  /** Extra CA (PEM file, absolute) trusted for the directory's own HTTPS: a test CA. */
  caRoot?: string;
  /** Storage directory (absolute): account key and certificates. Default `./.quicksilver/acme`. */
  dir: string;
  /** Listen address for HTTP-01 and the HTTP → HTTPS redirect (default `:80`); undefined = off. */
  httpAddr?: string;
  /** Renew this long before expiry, in ms; default: at two thirds of the lifetime. */
  renewBefore?: number;
}

export interface Config {
  /** Hub options, ready for the hub (add a `transport` built from `transportUrl` and a `logger`). */
  hub: Omit<HubOptions, 'transport' | 'logger'>;
  /**
   * Transport URL. Default `DEFAULT_TRANSPORT_URL` (embedded LMDB store). Legacy `null` and `local://...` map to `memory://`;
   * `bolt://...` and other schemes are kept as given (the transport factory validates them).
   */
  transportUrl: string;
  server: ServerConfig;
  /** Default `info`; `debug` with `DEBUG=1`, `GLOBAL_OPTIONS=debug` or `--debug`. */
  logLevel: LogLevel;
  /** Default `json`. */
  logFormat: LogFormat;
  /** Prometheus metrics endpoint. Default true. */
  metrics: boolean;
  /** OpenTelemetry spans through `@opentelemetry/api` (an SDK must be registered). Default false. */
  tracing: boolean;
  /** `--dev` was given. */
  dev: boolean;
  /**
   * Worker processes (`--workers n|auto`, directive `workers`, `QUICKSILVER_WORKERS`); undefined
   * when not set, which the CLI takes as one per core (`defaultWorkerCount` in cpus.ts). 1 = a single
   * process, without a cluster primary.
   */
  workers?: number;
  /**
   * Cluster mode: name the worker that answered (its pid) in an `X-Quicksilver-Worker` response
   * header, for debugging how load spreads (`worker_header`, `--worker-header`,
   * `QUICKSILVER_WORKER_HEADER=1`). Default false: pids are nobody else's business.
   */
  workerHeader?: boolean;
}

export type ConfigResult =
  | { ok: true; config: Config; warnings: string[] }
  | { ok: false; errors: string[] };

export interface ConfigInput {
  /** The environment (e.g. `process.env`). Empty values count as unset. */
  env: Record<string, string | undefined>;
  /** Command-line arguments without the node binary and script (`process.argv.slice(2)`). */
  argv: readonly string[];
  /** Directory relative paths given in the environment or flags are resolved against. */
  cwd?: string;
}
