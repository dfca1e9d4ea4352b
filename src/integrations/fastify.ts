/**
 * Fastify plugins: `mercure` adds the discovery `Link` header and the subscriber authorization
 * cookie to the routes of its scope; `mercureHub` mounts a Quicksilver hub in the app.
 *
 * ```ts
 * import Fastify from 'fastify';
 * import { mercure, mercureHub } from 'quicksilver/fastify';
 *
 * const app = Fastify();
 * await app.register(mercureHub, { hub: { publisher: { key }, anonymous: true } });
 * await app.register(mercure, { hubUrl: '/.well-known/mercure', key, authorize: (req) => … });
 * app.get('/books/:id', async () => book);
 * ```
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, HTTPMethods, onRequestHookHandler } from 'fastify';
import { createHub, type QuicksilverHub } from '../http/handler.js';
import type { HubOptions } from '../http/options.js';
import { checkMercureOptions, mercureHeaders, type MercureOptions, type MercureRequestState } from './common.js';

export type { MercureGrant, MercureOptions, MercureRequestState } from './common.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the `mercure` plugin / hook: the hub URL and the subscriber token of this request. */
    mercure: MercureRequestState | null;
  }
  interface FastifyInstance {
    /** Set by the `mercureHub` plugin: the mounted hub (publish in-process, metrics, close). */
    quicksilver: QuicksilverHub;
  }
}

/** Registers a plugin in its parent's scope (what the `fastify-plugin` package does). */
function unencapsulated<T>(plugin: T, name: string): T {
  const p = plugin as Record<symbol, unknown>;
  p[Symbol.for('skip-override')] = true;
  p[Symbol.for('fastify.display-name')] = name;
  return plugin;
}

function requestInfo(request: FastifyRequest): { headers: FastifyRequest['headers']; origin: string } {
  return { headers: request.headers, origin: `${request.protocol}://${request.host}` };
}

/**
 * The `onRequest` hook behind the `mercure` plugin, for a single route:
 * `app.get('/books/:id', { onRequest: mercureHook({ … }) }, handler)`.
 */
export function mercureHook(options: MercureOptions<FastifyRequest>): onRequestHookHandler {
  checkMercureOptions(options);
  return async function mercureOnRequest(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const { link, setCookie, state } = await mercureHeaders(request, requestInfo(request), options);
    if (link !== undefined) {
      const existing = reply.getHeader('link');
      const list = existing === undefined ? [] : Array.isArray(existing) ? existing.map(String) : [String(existing)];
      reply.header('link', list.length > 0 ? `${list.join(', ')}, ${link}` : link);
    }
    // Fastify appends set-cookie values.
    if (setCookie !== undefined) reply.header('set-cookie', setCookie);
    request.mercure = state;
  };
}

/**
 * Adds the discovery `Link` header (and, with `authorize`, the subscriber cookie) to every route of
 * the scope it is registered in: register it at the root for the whole app, or inside an
 * encapsulated plugin for some routes. `request.mercure` carries the hub URL and token.
 */
export const mercure: FastifyPluginAsync<MercureOptions<FastifyRequest>> = unencapsulated(async (fastify, options) => {
  const hook = mercureHook(options);
  if (!fastify.hasRequestDecorator('mercure')) fastify.decorateRequest('mercure', null);
  fastify.addHook('onRequest', hook);
}, 'quicksilver-mercure');

export interface MercureHubPluginOptions {
  /** A hub made with `createHub()`, or the options to make one. */
  hub: QuicksilverHub | HubOptions;
  /** Also serve `/healthz`, `/healthz/live`, `/livez`, `/healthz/ready`, `/readyz`. Default false. */
  health?: boolean | undefined;
  /** Also serve the Prometheus `/metrics`. Default false. */
  metrics?: boolean | undefined;
  /**
   * End the hub's streams (subscribers are told to reconnect) when Fastify closes. Default true:
   * open event streams would otherwise keep `fastify.close()` waiting.
   */
  closeHub?: boolean | undefined;
}

const HUB_METHODS: readonly string[] = ['GET', 'HEAD', 'POST', 'OPTIONS', 'QUERY'];

function isHub(v: QuicksilverHub | HubOptions): v is QuicksilverHub {
  return typeof (v as QuicksilverHub).handler === 'function' && typeof (v as QuicksilverHub).publish === 'function';
}

/**
 * Mounts a Quicksilver hub: `/.well-known/mercure` (subscribe, publish, subscriptions API, UI) and
 * the protected-resource metadata, optionally health and metrics. The hub reads the raw request,
 * so its routes live in their own scope where Fastify leaves bodies unparsed: the app's own
 * content-type parsers are untouched. `fastify.quicksilver` is the hub.
 */
export const mercureHub: FastifyPluginAsync<MercureHubPluginOptions> = unencapsulated(async (fastify, options) => {
  if (!options?.hub) throw new TypeError('mercureHub: the `hub` option is required (a createHub() result or hub options)');
  const hub = isHub(options.hub) ? options.hub : createHub(options.hub);
  fastify.decorate('quicksilver', hub);
  if (options.closeHub !== false) {
    fastify.addHook('preClose', async () => {
      await hub.close();
    });
  }
  const methods = HUB_METHODS.filter((m) => fastify.supportedMethods.includes(m)) as HTTPMethods[];
  const paths = ['/.well-known/mercure', '/.well-known/mercure/*', '/.well-known/oauth-protected-resource/.well-known/mercure'];
  if (options.health) paths.push('/healthz', '/healthz/live', '/livez', '/healthz/ready', '/readyz');
  if (options.metrics) paths.push('/metrics');
  await fastify.register(async (scope: FastifyInstance) => {
    // The hub parses its own bodies from the raw stream: no Fastify parser may consume them.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    for (const url of paths) {
      scope.route({
        method: methods,
        url,
        exposeHeadRoute: false,
        handler: (request, reply) => {
          reply.hijack();
          hub.handler(request.raw, reply.raw);
        },
      });
    }
  });
}, 'quicksilver-hub');
