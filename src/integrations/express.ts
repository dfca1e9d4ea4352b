/**
 * Express (and Connect / node:http) middleware: the Mercure discovery `Link` header and the
 * subscriber authorization cookie, per request.
 *
 * ```ts
 * import { mercure } from 'quicksilver/express';
 *
 * app.use(hub.handler);                                   // an embedded hub, if any
 * app.get('/books/:id', mercure({
 *   hubUrl: 'https://hub.example.com/.well-known/mercure',
 *   key: process.env.MERCURE_SUBSCRIBER_KEY,
 *   authorize: (req) => req.user ? { subscribe: [`https://example.com/users/${req.user.id}/{+any}`] } : null,
 * }), (req, res) => res.json(book));
 * ```
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { checkMercureOptions, mercureHeaders, requestOrigin, type MercureOptions } from './common.js';

export type { MercureGrant, MercureOptions, MercureRequestState } from './common.js';

/** The response as the middleware uses it: node:http's, with Express's `locals` when there. */
export type MercureResponse = ServerResponse & { locals?: Record<string, unknown> };

/** An Express / Connect middleware. */
export type MercureMiddleware<Req extends IncomingMessage = IncomingMessage> = (req: Req, res: MercureResponse, next: (err?: unknown) => void) => void;

function appendHeader(res: ServerResponse, name: 'Link' | 'Set-Cookie', value: string): void {
  const existing = res.getHeader(name);
  const list = existing === undefined ? [] : Array.isArray(existing) ? existing.map(String) : [String(existing)];
  if (name === 'Set-Cookie') res.setHeader(name, [...list, value]);
  else res.setHeader(name, list.length > 0 ? `${list.join(', ')}, ${value}` : value);
}

/**
 * Adds `Link: <hub>; rel="mercure"` (with `last-event-id` and `rel="self"` when configured) and,
 * when `authorize` grants topics for the request, sets the `mercureAuthorization` cookie with a
 * freshly minted subscriber token (HttpOnly, SameSite=Strict, scoped to the hub's path, `Max-Age`
 * = the token's lifetime). Exposes `res.locals.mercure` ({@link MercureRequestState}) to templates
 * (on a plain node:http response too).
 *
 * Type the request for your callbacks with the type parameter: `mercure<Request>({ … })`.
 */
export function mercure<Req extends IncomingMessage = IncomingMessage>(options: MercureOptions<Req>): MercureMiddleware<Req> {
  checkMercureOptions(options);
  return (req, res, next) => {
    mercureHeaders(req, { headers: req.headers, origin: requestOrigin(req) }, options).then(
      ({ link, setCookie, state }) => {
        if (res.headersSent) {
          next(new Error('mercure: the response headers were already sent'));
          return;
        }
        if (link !== undefined) appendHeader(res, 'Link', link);
        if (setCookie !== undefined) appendHeader(res, 'Set-Cookie', setCookie);
        (res.locals ??= {}).mercure = state;
        next();
      },
      (err: unknown) => next(err),
    );
  };
}
