/**
 * Auto-published REST resources, in the spirit of API Platform's `mercure: true`: every change of
 * a resource is published as its new JSON representation, with the resource IRI as canonical
 * topic; a deletion is published as `{"@id": iri}`.
 *
 * ```ts
 * import { autoPublish, publishResource, publishDeletion } from 'quicksilver/resource';
 *
 * await publishResource(publisher, { iri: '/books/1', baseUrl: 'https://example.com', data: book });
 * await publishDeletion(publisher, '/books/1', { baseUrl: 'https://example.com' });
 *
 * // Or let an Express router publish what its successful POST/PUT/PATCH/DELETE responses say:
 * app.use('/books', autoPublish({ publisher, baseUrl: 'https://example.com' }), booksRouter);
 * ```
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { MercurePublisher } from '../client/publisher.js';

/** How a resource change is published. */
export interface ResourcePublishOptions {
  /**
   * The resource IRI: absolute (`https://example.com/books/1`) or as the API writes it
   * (`/books/1`, resolved against `baseUrl` for the topic).
   */
  iri: string;
  /** Makes the topic absolute: `new URL(iri, baseUrl)`. Recommended for relative IRIs. */
  baseUrl?: string | URL | undefined;
  /** Alternate topics (e.g. `https://example.com/users/42/books/1`), after the canonical one. */
  topics?: readonly string[] | undefined;
  /** Only subscribers authorized for one of the topics receive it. */
  private?: boolean | undefined;
  /** SSE `event` type. */
  type?: string | undefined;
  /** SSE `retry`. */
  retry?: number | undefined;
  /** The update id (default: the hub's). */
  updateId?: string | undefined;
}

/** The canonical topic of a resource: its IRI, resolved against `baseUrl` when given. */
export function resourceTopic(iri: string, baseUrl?: string | URL): string {
  if (typeof iri !== 'string' || iri === '') throw new TypeError('The resource IRI is empty');
  return baseUrl === undefined ? iri : new URL(iri, baseUrl).href;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

function topicsOf(options: ResourcePublishOptions): string[] {
  return [resourceTopic(options.iri, options.baseUrl), ...(options.topics ?? [])];
}

/**
 * Publishes the new state of a resource (after a create or an update): `data` as JSON (a string
 * is sent as is), with `"@id": iri` added first when it is an object without one. Resolves to the
 * update id.
 */
export function publishResource(publisher: MercurePublisher, options: ResourcePublishOptions & { data: unknown }): Promise<string> {
  let data: string;
  if (typeof options.data === 'string') data = options.data;
  else if (isPlainObject(options.data) && !('@id' in options.data)) data = JSON.stringify({ '@id': options.iri, ...options.data });
  else data = JSON.stringify(options.data);
  if (data === undefined) throw new TypeError('publishResource: `data` cannot be serialized as JSON');
  return publisher.publish({
    topics: topicsOf(options),
    data,
    private: options.private,
    type: options.type,
    retry: options.retry,
    id: options.updateId,
  });
}

/** Publishes the deletion of a resource: `{"@id": iri}` on its topic(s). Resolves to the update id. */
export function publishDeletion(publisher: MercurePublisher, iri: string, options: Omit<ResourcePublishOptions, 'iri'> = {}): Promise<string> {
  return publisher.publish({
    topics: topicsOf({ ...options, iri }),
    data: JSON.stringify({ '@id': iri }),
    private: options.private,
    type: options.type,
    retry: options.retry,
    id: options.updateId,
  });
}

/** What `autoPublish` decided to publish for a response. */
export interface ResourceChange {
  kind: 'write' | 'delete';
  /** The resource IRI (as the API writes it). */
  iri: string;
  /** The JSON response body (writes), or undefined (deletes). */
  body: unknown;
}

/** The request as `autoPublish` reads it (node:http; Express adds `originalUrl`). */
export type AutoPublishRequest = IncomingMessage & { originalUrl?: string };

export interface AutoPublishOptions<Req extends AutoPublishRequest = AutoPublishRequest> {
  publisher: MercurePublisher;
  /** Resolves relative IRIs into topics: a URL, or a function of the request. Default: the request's origin. */
  baseUrl?: string | URL | ((req: Req) => string | URL) | undefined;
  /**
   * The IRI of the resource a successful request changed. Default: the body's `@id`; for `POST`,
   * else the `Location` header; for `PUT`/`PATCH`/`DELETE`, else the request path.
   * Return undefined to publish nothing.
   */
  iri?: ((req: Req, body: unknown) => string | undefined) | undefined;
  /** Alternate topics of a change. */
  topics?: ((change: ResourceChange, req: Req) => readonly string[]) | undefined;
  /** Publish privately (a boolean, or per change). Default false. */
  private?: boolean | ((change: ResourceChange, req: Req) => boolean) | undefined;
  /** Which methods publish. Default `POST`, `PUT`, `PATCH`, `DELETE`. */
  methods?: readonly string[] | undefined;
  /**
   * Hold the response until the hub accepted the update (default true): a client that got its
   * 201 can count on subscribers being notified. false publishes after the response is sent.
   * Either way a failed publish never fails the request: it goes to `onError`.
   */
  waitForHub?: boolean | undefined;
  /** A publish failed. Default: `console.error`. */
  onError?: ((err: unknown, change: ResourceChange, req: Req) => void) | undefined;
}

const DEFAULT_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE'];

function requestPath(req: AutoPublishRequest): string {
  const url = req.originalUrl ?? req.url ?? '/';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

function defaultOrigin(req: AutoPublishRequest): string {
  const proto = typeof (req as { protocol?: unknown }).protocol === 'string'
    ? (req as unknown as { protocol: string }).protocol
    : (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  return `${proto}://${req.headers.host ?? 'localhost'}`;
}

function isJson(res: ServerResponse): boolean {
  const type = String(res.getHeader('content-type') ?? '');
  return /^application\/([\w.+-]*\+)?json\b|^application\/json/i.test(type);
}

function parseBody(chunk: unknown, encoding: unknown): unknown {
  let text: string;
  if (typeof chunk === 'string') text = chunk;
  else if (chunk instanceof Uint8Array) text = Buffer.from(chunk).toString(typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  else return undefined;
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Express / Connect middleware (also usable from node:http) that publishes what successful
 * writes return: on a 2xx answer to `POST`, `PUT` or `PATCH` with a JSON body, the body is
 * published on the resource's IRI (see {@link publishResource}); on a 2xx `DELETE`,
 * `{"@id": iri}` (see {@link publishDeletion}). Errors (4xx, 5xx, a thrown handler) publish
 * nothing. The body is read from the final `res.end()` (what `res.json()`/`res.send()` do).
 */
export function autoPublish<Req extends AutoPublishRequest = AutoPublishRequest>(
  options: AutoPublishOptions<Req>,
): (req: Req, res: ServerResponse, next: (err?: unknown) => void) => void {
  if (!options || typeof options.publisher?.publish !== 'function') throw new TypeError('autoPublish: `publisher` is required');
  const methods = new Set((options.methods ?? DEFAULT_METHODS).map((m) => m.toUpperCase()));
  const onError = options.onError ?? ((err: unknown, change: ResourceChange) => console.error(`autoPublish: publishing ${change.iri} failed:`, err));
  return (req, res, next) => {
    const method = (req.method ?? 'GET').toUpperCase();
    if (!methods.has(method)) {
      next();
      return;
    }
    const end = res.end;
    let done = false;
    const changeOf = (chunk: unknown, encoding: unknown): ResourceChange | undefined => {
      if (res.statusCode < 200 || res.statusCode > 299) return undefined;
      if (method === 'DELETE') {
        const iri = options.iri ? options.iri(req, undefined) : requestPath(req);
        return iri ? { kind: 'delete', iri, body: undefined } : undefined;
      }
      if (!isJson(res)) return undefined;
      const body = parseBody(chunk, encoding);
      if (body === undefined) return undefined;
      let iri: string | undefined;
      if (options.iri) iri = options.iri(req, body);
      else {
        const id = isPlainObject(body) && typeof body['@id'] === 'string' ? body['@id'] : undefined;
        const location = res.getHeader('location');
        iri = id ?? (method === 'POST' ? (typeof location === 'string' ? location : undefined) : requestPath(req));
      }
      return iri ? { kind: 'write', iri, body } : undefined;
    };
    const report = (err: unknown, change: ResourceChange): void => {
      try {
        onError(err, change, req);
      } catch {
        // An error handler that throws must not take the response down.
      }
    };
    const publish = async (change: ResourceChange): Promise<void> => {
      try {
        const base = typeof options.baseUrl === 'function' ? options.baseUrl(req) : options.baseUrl ?? defaultOrigin(req);
        const common = {
          baseUrl: base,
          topics: options.topics?.(change, req),
          private: typeof options.private === 'function' ? options.private(change, req) : options.private,
        };
        if (change.kind === 'delete') await publishDeletion(options.publisher, change.iri, common);
        else await publishResource(options.publisher, { ...common, iri: change.iri, data: change.body });
      } catch (err) {
        report(err, change);
      }
    };
    res.end = function (this: ServerResponse, ...args: unknown[]): ServerResponse {
      if (done) return end.apply(this, args as Parameters<typeof end>);
      done = true;
      res.end = end;
      const [chunk, encoding] = typeof args[0] === 'function' ? [undefined, undefined] : [args[0], args[1]];
      let change: ResourceChange | undefined;
      try {
        change = changeOf(chunk, encoding);
      } catch (err) {
        change = undefined;
        report(err, { kind: method === 'DELETE' ? 'delete' : 'write', iri: requestPath(req), body: undefined });
      }
      if (!change) return end.apply(this, args as Parameters<typeof end>);
      if (options.waitForHub === false) {
        const out = end.apply(this, args as Parameters<typeof end>);
        void publish(change);
        return out;
      }
      void publish(change).then(() => end.apply(this, args as Parameters<typeof end>));
      return this;
    } as typeof res.end;
    next();
  };
}
