import { canSubscribe } from '../auth/index.js';
import { authenticate, isAuthProblem } from './authenticate.js';
import { sendAuthProblem } from './auth-response.js';
import type { HubContext } from './context.js';
import { headerValue } from './header-value.js';
import { header, hubUrl, origin, send, type Request, type Response } from './http-util.js';
import { subscriptionDocument, SUBSCRIPTIONS_PATH } from '../core/subscription.js';
import type { SubscriptionRecord } from '../core/transport.js';

type Route =
  | { version: 7 | 8 | null; scope: 'all' }
  | { version: 7; scope: 'selector'; topic: string; subscriber?: string }
  | { version: 8; scope: 'matcher'; type: string; match: string; subscriber?: string };

function decode(segment: string): string | null {
  try {
    return decodeURIComponent(segment.replace(/\+/g, '%20'));
  } catch {
    return null;
  }
}

/**
 * Draft-07 paths are `/subscriptions/{topic}[/{subscriber}]`, draft-08 ones
 * `/subscriptions/{match_type}/{match}[/{subscriber}]`; the matcher type and the shape of the
 * subscriber id (a URN) tell them apart.
 */
function route(path: string): Route | null {
  if (path === SUBSCRIPTIONS_PATH || path === SUBSCRIPTIONS_PATH + '/') return { version: null, scope: 'all' };
  const rest = path.slice(SUBSCRIPTIONS_PATH.length + 1).split('/');
  const parts = rest.map(decode);
  if (parts.some((p) => p === null)) return null;
  const [a, b, c] = parts as string[];
  if (rest.length === 1) return { version: 7, scope: 'selector', topic: a! };
  if (rest.length === 2) {
    if ((a === 'exact' || a === 'urlpattern') && !/^urn:/i.test(b!)) {
      return { version: 8, scope: 'matcher', type: a, match: b! };
    }
    return { version: 7, scope: 'selector', topic: a!, subscriber: b! };
  }
  if (rest.length === 3 && (a === 'exact' || a === 'urlpattern')) {
    return { version: 8, scope: 'matcher', type: a, match: b!, subscriber: c! };
  }
  return null;
}

/**
 * The Link `last-event-id` parameter: a quoted-string for printable ASCII, else RFC 8187's
 * `last-event-id*=UTF-8''…` as RFC 8288 §3 asks (and as the client's linkHeader writes it).
 */
function lastEventIdParam(id: string): string {
  if (/^[\x20-\x7e]*$/.test(id)) return `last-event-id="${id.replace(/["\\]/g, '\\$&')}"`;
  const enc = encodeURIComponent(id).replace(/['()*!]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  return `last-event-id*=UTF-8''${enc}`;
}

/** GET /.well-known/mercure/subscriptions[...] */
export async function handleSubscriptions(
  ctx: HubContext,
  req: Request,
  res: Response,
  path: string,
  query: string,
): Promise<void> {
  const base = origin(req, ctx.options.trustProxy);
  const r = route(path);
  if (!r) {
    send(res, 404, 'Not Found: unknown subscriptions resource\n');
    return;
  }
  const auth = await authenticate(ctx, req, 'subscriber', undefined);
  let version: 7 | 8 = r.version ?? 7;
  if (isAuthProblem(auth)) {
    sendAuthProblem(res, auth, version, base);
    return;
  }
  if (r.version === null && auth.grants) version = auth.grants.version;
  // The API is open only on a hub that verifies no subscriber tokens at all.
  if (ctx.options.subscriberKey) {
    if (!auth.grants) {
      sendAuthProblem(res, { kind: 'missing' }, version, base);
      return;
    }
    const candidates = [path];
    if (version === 7 && query) candidates.push(`${path}?${query}`);
    if (!candidates.some((c) => canSubscribe(auth.grants, [c]))) {
      sendAuthProblem(res, { kind: 'insufficient_scope', message: `the token's subscribe grants do not match ${path}` }, version, base);
      return;
    }
  }

  const lastEventId = await ctx.hub.lastEventId();
  const all = await ctx.hub.listSubscriptions();
  let selected: SubscriptionRecord[];
  if (r.scope === 'all') selected = all;
  else if (r.scope === 'selector') selected = all.filter((s) => s.kind === 'selector' && s.match === r.topic);
  else selected = all.filter((s) => s.kind === r.type && s.match === r.match);

  // The id as UTF-8 bytes (see header-value.ts). An id may hold `"` or `\`: escaped, it cannot
  // end the quoted value early (the ETag stays opaque; If-None-Match compares it byte for byte).
  const idBytes = headerValue(lastEventId);
  const quoted = `"${idBytes.replace(/["\\]/g, '\\$&')}"`;
  const etag = version === 8 ? quoted : idBytes;
  const headers: Record<string, string> = {
    'Content-Type': version === 8 ? 'application/json' : 'application/ld+json',
    ETag: etag,
    'Cache-Control': 'must-revalidate',
    Link: `<${hubUrl(req, ctx.options.trustProxy)}>; rel="mercure"${version === 8 ? `; ${lastEventIdParam(lastEventId)}; type="mercure"; content-type="application/json"` : ''}`,
  };
  if (header(req, 'if-none-match') === etag) {
    res.writeHead(304, headers);
    res.end();
    return;
  }

  if ('subscriber' in r && r.subscriber !== undefined) {
    const one = selected.find((s) => s.subscriber === r.subscriber);
    if (!one) {
      send(res, 404, 'Not Found: no such active subscription\n');
      return;
    }
    const doc = subscriptionDocument(one, true);
    const body = version === 8 ? doc : { '@context': 'https://mercure.rocks/', ...doc, lastEventID: lastEventId };
    send(res, 200, JSON.stringify(body, null, 2), headers);
    return;
  }
  const id = path;
  const docs = selected.map((s) => subscriptionDocument(s, true));
  const body =
    version === 8
      ? { id, type: 'subscriptions', subscriptions: docs }
      : { '@context': 'https://mercure.rocks/', id, type: 'Subscriptions', lastEventID: lastEventId, subscriptions: docs };
  send(res, 200, JSON.stringify(body, null, 2), headers);
}
