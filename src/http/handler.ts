/**
 * http/: the thin HTTP layer. It owns request routing (`createHub`), publish, subscribe, the
 * subscriptions API, CORS, authentication responses, the raw-socket subscribe path, protective
 * limits, and the UI and demo handlers. It turns requests into calls on core/ and writes the
 * answers; it may import core/, auth/, transports/ (the default in-memory one), observability/ and
 * util/, never server/, config/ or the CLI. This file builds a hub's request handler.
 */
import type { ServerResponse } from 'node:http';
import { Authorizer } from '../auth/index.js';
import type { HubContext, ResolvedOptions } from './context.js';
import { applyCors } from './cors.js';
import { Hub, type PublishInput } from '../core/hub.js';
import { ConnectionLimiter, RateLimiter } from './limits.js';
import { createLogger, redactUrl } from '../observability/logger.js';
import type { HubOptions } from './options.js';
import { handlePublish } from './publish.js';
import { RESOURCE_METADATA_PATH, resourceMetadata } from './resource-metadata.js';
import { retryFrame } from '../core/sse.js';
import { handleSubscribe } from './subscribe.js';
import { handleSubscriptions } from './subscriptions-api.js';
import { HUB_PATH, SUBSCRIPTIONS_PATH } from '../core/subscription.js';
import { MemoryTransport } from '../transports/memory.js';
import { createUiHandler } from './ui.js';
import { traced } from '../observability/tracing.js';
import { hostProblem } from './header-value.js';
import { hubUrl, send, sendJson, type Request, type Response } from './http-util.js';
import type { Update } from '../core/update.js';
import { WebhookRunner } from '../webhooks/index.js';
import { handleWebhooks, WEBHOOKS_PATH } from './webhooks-api.js';

export type NextFunction = (err?: unknown) => void;
export type RequestHandler = (req: Request, res: Response, next?: NextFunction) => void;

export interface QuicksilverHub {
  /**
   * Serves the hub's routes (`/.well-known/mercure…`, health, metrics). Other paths go to `next`
   * when given (Express/Connect), else get a 404. Mount it in node:http, http2, Express, Fastify.
   */
  readonly handler: RequestHandler;
  /** The core, for programmatic use and tests. */
  readonly hub: Hub;
  /** Resolves once the transport is started; the handler waits for it too. */
  readonly ready: Promise<void>;
  /** Publishes from the same process, bypassing HTTP and tokens. */
  publish(update: PublishInput): Promise<Update>;
  /** Prometheus exposition text. */
  metrics(): string;
  /**
   * Graceful shutdown: refuses new subscribers, tells connected ones to come back after
   * `retryMs` (their browsers reconnect with Last-Event-ID), and closes the transport.
   */
  close(options?: { retryMs?: number }): Promise<void>;
}

/** The hub's path before the reference hub's 0.8, still in the 2019 tutorials and talks. */
const LEGACY_HUB_PATH = '/hub';
const LEGACY_HUB_PATH_HINT =
  `Not Found: the hub is at ${HUB_PATH} (/hub is its path before Mercure 0.8, which old tutorials use;` +
  ' the legacy_hub_path directive, --legacy-hub-path or LEGACY_HUB_PATH=1 serves it at /hub too)\n';

const SECURITY_HEADERS: Record<string, string> = {
  'X-Frame-Options': 'DENY',
  'X-Content-Type-Options': 'nosniff',
  'X-XSS-Protection': '1; mode=block',
  'Content-Security-Policy': "default-src 'self'",
};

function resolveOptions(o: HubOptions): ResolvedOptions {
  const publisherConfigured = Boolean(
    o.publisher?.key || o.publisher?.jwksUrl || o.issuers?.some((i) => i.publisher),
  );
  const subscriberConfigured = Boolean(
    o.subscriber?.key || o.subscriber?.jwksUrl || publisherConfigured || o.issuers?.some((i) => i.subscriber),
  );
  return {
    anonymous: o.anonymous ?? false,
    corsOrigins: o.corsOrigins ?? [],
    publishOrigins: o.publishOrigins ?? [],
    cookieName: o.cookieName ?? 'mercureAuthorization',
    subscriptions: o.subscriptions ?? false,
    heartbeat: o.heartbeat ?? 40_000,
    writeTimeout: o.writeTimeout ?? 600_000,
    dispatchTimeout: o.dispatchTimeout ?? 5_000,
    subscriberBufferSize: o.subscriberBufferSize ?? 1_000,
    maxBodySize: o.maxBodySize ?? 1024 * 1024,
    maxTopics: o.maxTopics ?? 1_000,
    maxMatchers: 100,
    trustProxy: o.trustProxy ?? false,
    publicUrl: o.publicUrl,
    resourceIdentifier: o.resourceIdentifier,
    authorizationServers: o.authorizationServers ?? [],
    publishEnabled: publisherConfigured,
    subscriberKey: subscriberConfigured,
    ui: (o.ui ?? false) || (o.demo ?? false),
    demo: o.demo ?? false,
  };
}

/**
 * What a hub built by the worker cluster shares with the other workers (see cluster.ts); not
 * needed otherwise.
 */
export interface HubInternals {
  /** Connection limits kept together with the other workers' (default: this hub's own). */
  connections?: ConnectionLimiter | undefined;
  /** Publish rate limits kept together with the other workers' (default: this hub's own). */
  publishRate?: RateLimiter | undefined;
}

/** Creates a hub and the request handler that serves it. */
export function createHub(options: HubOptions = {}, internals: HubInternals = {}): QuicksilverHub {
  const opts = resolveOptions(options);
  const log = options.logger ?? createLogger('info');
  const transport = options.transport ?? new MemoryTransport();
  const hub = new Hub({
    transport,
    logger: log,
    subscriptions: opts.subscriptions,
    heartbeat: opts.heartbeat,
    dispatchTimeout: opts.dispatchTimeout,
  });
  const authorizer = new Authorizer({
    publisher: options.publisher,
    subscriber: options.subscriber ?? options.publisher,
    issuers: options.issuers,
    trustedIssuers: options.trustedIssuers,
    resourceIdentifier: options.resourceIdentifier,
    baseUrl: options.publicUrl ?? `http://localhost${HUB_PATH}`,
    cacheSize: options.tokenCacheSize ?? 10_000,
    logger: log,
  });
  const ctx: HubContext = {
    hub,
    authorizer,
    options: opts,
    log,
    draining: false,
    connections: internals.connections ?? new ConnectionLimiter(options.maxConnectionsPerIp ?? 0, options.maxConnections ?? 0),
    publishRate: internals.publishRate ?? new RateLimiter(options.publishRateLimit ?? 0, options.publishBurst || undefined),
  };
  // Webhooks tail history on their own: nothing of theirs runs in the dispatch path. Built once
  // the transport is started (a cluster worker learns only then whether the primary keeps webhook state).
  let webhooks: WebhookRunner | null = null;
  const startWebhooks = (o: NonNullable<HubOptions['webhooks']>): void => {
    try {
      webhooks = new WebhookRunner(o, {
        transport,
        authorizer,
        audience: options.resourceIdentifier ?? options.publicUrl ?? `http://localhost${HUB_PATH}`,
        baseUrl: options.publicUrl ?? `http://localhost${HUB_PATH}`,
        anonymous: opts.anonymous,
        log,
        updatesSeen: () => hub.metrics.updatesTotal,
      });
      const runner = webhooks;
      hub.metrics.addSource(() => runner.metrics());
      runner.start();
    } catch (err) {
      throw new Error(`webhooks: ${(err as Error).message}`);
    }
  };
  const ready = Promise.all([hub.start(), authorizer.ready()]).then(() => {
    if (options.webhooks) startWebhooks(options.webhooks);
  });
  ready.catch((err: unknown) => log.error({ err }, 'transport failed to start'));
  // The debugging UI (/.well-known/mercure/ui/) and, with demo, its insecure echo endpoint.
  const ui = opts.ui
    ? createUiHandler({ ui: opts.ui, demo: opts.demo, cookieName: opts.cookieName, devKey: options.devKey, devKeyAlg: options.devKeyAlg, trustProxy: opts.trustProxy })
    : null;

  const handle = async (req: Request, res: Response, next?: NextFunction): Promise<void> => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    const method = req.method ?? 'GET';
    if (path === LEGACY_HUB_PATH && options.legacyHubPath) path = HUB_PATH;

    const isHubPath = path === HUB_PATH || path.startsWith(HUB_PATH + '/');
    const badHost = hostProblem(req.headers, opts.trustProxy);
    if (badHost) {
      send(res, 400, `Bad Request: ${badHost}\n`);
      return;
    }
    if (path === '/healthz' || path === '/healthz/live' || path === '/livez') {
      send(res, 200, 'ok\n');
      return;
    }
    if (path === '/healthz/ready' || path === '/readyz') {
      const h = transport.health();
      if (ctx.draining) sendJson(res, 503, { ready: false, reason: 'shutting down' });
      else if (!h.ready) sendJson(res, 503, { ready: false, transport: transport.name, reason: h.reason });
      else sendJson(res, 200, { ready: true, transport: transport.name });
      return;
    }
    if (path === '/metrics' && options.metrics !== false) {
      send(res, 200, hub.metrics.render(), { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
      return;
    }
    if (path === RESOURCE_METADATA_PATH && (method === 'GET' || method === 'HEAD')) {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      if (applyCors(req, res, opts.corsOrigins)) return;
      sendJson(res, 200, resourceMetadata({
        resource: opts.resourceIdentifier ?? hubUrl(req, opts.trustProxy),
        authorizationServers: opts.authorizationServers,
        subscriptions: opts.subscriptions,
        cookie: true,
      }));
      return;
    }
    if (!isHubPath) {
      if (next) next();
      else if (path === '/' && opts.ui && (method === 'GET' || method === 'HEAD')) {
        // A hub that owns its server sends visitors of / to the UI, as the reference's dev Caddyfile does.
        send(res, 302, '', { Location: `${HUB_PATH}/ui/` });
      } else if (path === LEGACY_HUB_PATH) {
        send(res, 404, LEGACY_HUB_PATH_HINT);
      } else send(res, 404, 'Not Found\n');
      return;
    }

    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    if (applyCors(req, res, opts.corsOrigins)) return;
    if (ui?.(req, res, path, query)) return;
    await ready;

    if (path === HUB_PATH) {
      if (method === 'POST') {
        if (!opts.publishEnabled) {
          send(res, 405, 'Method Not Allowed: publishing is disabled (no publisher key configured)\n', { Allow: 'GET, HEAD, QUERY' });
          return;
        }
        await traced(options.tracer, 'mercure.publish', { 'http.request.method': method }, () => res.statusCode, () =>
          handlePublish(ctx, req, res, query),
        );
        return;
      }
      if (method === 'GET' || method === 'HEAD' || method === 'QUERY') {
        if (!opts.subscriberKey && !opts.anonymous) {
          send(res, 405, 'Method Not Allowed: subscribing is disabled (no subscriber key and anonymous off)\n', { Allow: 'POST' });
          return;
        }
        // The span covers authorization, replay and the first bytes, not the stream's whole life.
        await traced(options.tracer, 'mercure.subscribe', { 'http.request.method': method }, () => res.statusCode, () =>
          handleSubscribe(ctx, req, res, query),
        );
        return;
      }
      send(res, 405, `Method Not Allowed: ${method}\n`, { Allow: 'GET, HEAD, POST, QUERY, OPTIONS' });
      return;
    }
    if (path === SUBSCRIPTIONS_PATH || path.startsWith(SUBSCRIPTIONS_PATH + '/')) {
      if (!opts.subscriptions) {
        send(res, 404, 'Not Found: the subscriptions API is disabled (enable "subscriptions")\n');
        return;
      }
      if (method !== 'GET' && method !== 'HEAD') {
        send(res, 405, `Method Not Allowed: ${method}\n`, { Allow: 'GET, HEAD' });
        return;
      }
      await traced(options.tracer, 'mercure.subscriptions', { 'url.path': path }, () => res.statusCode, () =>
        handleSubscriptions(ctx, req, res, path, query),
      );
      return;
    }
    if (path === WEBHOOKS_PATH || path.startsWith(WEBHOOKS_PATH + '/')) {
      await handleWebhooks(ctx, webhooks, req, res, path);
      return;
    }
    if (next) next();
    else send(res, 404, 'Not Found\n');
  };

  const handler: RequestHandler = (req, res, next) => {
    handle(req, res, next).catch((err: unknown) => {
      log.error({ err, url: redactUrl(req.url ?? '') }, 'request failed');
      if (!res.headersSent) send(res, 500, 'Internal Server Error\n');
      else (res as ServerResponse).end();
    });
  };

  return {
    handler,
    hub,
    ready,
    publish: async (u) => {
      await ready;
      return hub.publish(u);
    },
    metrics: () => hub.metrics.render(),
    close: async (o = {}) => {
      ctx.draining = true;
      // Leases given back first: another process takes the webhooks over without waiting for them to expire.
      await webhooks?.close();
      // A retry hint drawn per subscriber, so that a hub's whole audience does not come back at once.
      await hub.close(() => retryFrame(o.retryMs ?? 1000 + Math.floor(Math.random() * 4000)));
      authorizer.close();
    },
  };
}
