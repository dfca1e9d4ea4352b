import { canPublish } from '../auth/index.js';
import { authenticate, isAuthProblem } from './authenticate.js';
import { sendAuthProblem } from './auth-response.js';
import type { HubContext } from './context.js';
import { originAllowed } from './cors.js';
import { decodeUtf8, getAll, getFirst, has, parseForm } from './form.js';
import { BodyTooLargeError, clientIp, header, hubUrl, isHttp2, origin, readBody, send, type Request, type Response } from './http-util.js';
import { isReservedTopic } from '../core/reserved-topic.js';
import { hasForbiddenCharacter } from '../core/topic-matcher.js';
import { TransportUnavailableError, type Transport } from '../core/transport.js';
import { idProblem, typeProblem } from '../core/update.js';

/** Origin of a cookie-authenticated publish request, from Origin or else Referer. */
function requestOrigin(req: Request): string | undefined {
  const o = header(req, 'origin');
  if (o && o !== 'null') return o;
  const referer = header(req, 'referer');
  if (!referer) return undefined;
  try {
    return new URL(referer).origin;
  } catch {
    return undefined;
  }
}

function versionOfToken(req: Request): 7 | 8 {
  // Only the token tells a publish request's protocol: RFC 9068 tokens carry typ at+jwt.
  const auth = header(req, 'authorization');
  const token = auth?.replace(/^bearer\s+/i, '');
  if (!token) return 7;
  const dot = token.indexOf('.');
  if (dot <= 0) return 7;
  try {
    const h = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString()) as { typ?: unknown };
    return typeof h.typ === 'string' && /^(application\/)?at\+jwt$/i.test(h.typ) ? 8 : 7;
  } catch {
    return 7;
  }
}

/**
 * An answer given before the body was read: on HTTP/1.1 the connection closes after it, rather
 * than node:http reading (and discarding) however much body an unauthenticated caller sends.
 */
function closeIfUnread(req: Request, res: Response): void {
  const hasBody = (header(req, 'content-length') ?? '0') !== '0' || header(req, 'transfer-encoding') !== undefined;
  if (hasBody && !isHttp2(req) && !res.headersSent) res.setHeader('Connection', 'close');
}

/**
 * The 503 body: whether the update was certainly not stored, or may have been, in which case the
 * id to retry with (the hub's own when the publisher sent none) and whether that retry is safe.
 */
function unavailableMessage(transport: Transport, err: TransportUnavailableError): string {
  const head = `Service Unavailable: the ${transport.name} transport`;
  if (err.stored === 'no') return `${head} cannot store updates right now (${err.message}); the update was not stored: retry later\n`;
  const id = err.updateId === undefined ? '' : ` (id: ${JSON.stringify(err.updateId)})`;
  const window = transport.dedupeWindow ?? 0;
  const retry = window > 0
    ? `retry with the same id is safe${id}: an id stored within the last ${window / 1000} s is not stored again`
    : `retrying stores it again unless it was not stored, as deduplication is off (dedupe_window=0)${id}`;
  return `${head} did not confirm the update (${err.message}); outcome unknown, it may have been stored: ${retry}\n`;
}

/** POST /.well-known/mercure */
export async function handlePublish(ctx: HubContext, req: Request, res: Response, query: string): Promise<void> {
  const opts = ctx.options;
  // Authentication first, as the reference hub does: a caller without a valid token learns
  // nothing about what the hub would have thought of its form.
  const queryFields = parseForm(query);
  const queryToken = 'error' in queryFields ? undefined : getFirst(queryFields, 'authorization');
  const auth = await authenticate(ctx, req, 'publisher', queryToken);
  if (isAuthProblem(auth) || auth.grants === null) {
    closeIfUnread(req, res);
    // Without verified grants only the token's header tells the protocol (read only then: a
    // verified token, usually from the cache, carries its version).
    sendAuthProblem(res, isAuthProblem(auth) ? auth : { kind: 'missing' }, versionOfToken(req), origin(req, opts.trustProxy));
    return;
  }
  const version = auth.grants.version;
  if (auth.source === 'cookie') {
    // Cookies ride along on cross-site requests: only listed origins may publish with one. A
    // request that does not say where it comes from is malformed (draft-08: 400 invalid_request).
    const from = requestOrigin(req);
    const message = !from
      ? 'publishing with a cookie requires an Origin or Referer header'
      : !originAllowed(opts.publishOrigins, from)
        ? `origin ${from} is not allowed to publish (publish_origins)`
        : null;
    if (message) {
      closeIfUnread(req, res);
      sendAuthProblem(res, { kind: 'invalid_request', message }, version, origin(req, opts.trustProxy));
      return;
    }
  }

  if (ctx.publishRate.enabled) {
    const key = auth.grants.subject ? `sub:${auth.grants.subject}` : `ip:${clientIp(req, opts.trustProxy)}`;
    const wait = ctx.publishRate.take(key);
    if (wait > 0) {
      ctx.hub.metrics.countLimited('publish_rate');
      ctx.log.warn({ key, limit: 'publish_rate' }, 'publish refused: rate limit');
      closeIfUnread(req, res);
      send(res, 429, `Too Many Requests: publish rate limit reached for this ${key.startsWith('sub:') ? 'token subject' : 'address'}; retry in ${wait}s\n`, { 'Retry-After': String(wait) });
      return;
    }
  }

  let body: Buffer;
  try {
    body = await readBody(req, opts.maxBodySize);
  } catch (err) {
    if (err instanceof BodyTooLargeError) {
      ctx.hub.metrics.countLimited('body_size');
      ctx.log.warn({ limit: opts.maxBodySize }, 'publish refused: body too large');
      send(res, 413, `Request body too large: ${err.message}\n`, isHttp2(req) ? {} : { Connection: 'close' });
      return;
    }
    throw err;
  }

  const contentType = header(req, 'content-type')?.split(';')[0]?.trim().toLowerCase();
  if (contentType !== 'application/x-www-form-urlencoded') {
    send(res, 400, `Invalid request: Content-Type must be application/x-www-form-urlencoded, got ${contentType ?? 'none'}\n`);
    return;
  }
  const text = decodeUtf8(body);
  if (text === null) {
    send(res, 400, 'Invalid request body: not valid UTF-8\n');
    return;
  }
  const form = parseForm(text);
  if ('error' in form) {
    send(res, 400, `Invalid request body: ${form.error}\n`);
    return;
  }

  const topics = getAll(form, 'topic');
  if (topics.length === 0) {
    send(res, 400, 'Missing "topic" parameter\n');
    return;
  }
  if (topics.length > opts.maxTopics) {
    ctx.hub.metrics.countLimited('topics');
    send(res, 400, `Too many "topic" parameters: ${topics.length}, at most ${opts.maxTopics} allowed\n`);
    return;
  }
  const hub = opts.publicUrl ?? hubUrl(req, opts.trustProxy);
  for (const t of topics) {
    if (version === 8) {
      if (t === '*') {
        send(res, 400, 'Invalid "topic": "*" is reserved for the wildcard matcher\n');
        return;
      }
      if (hasForbiddenCharacter(t)) {
        send(res, 400, 'Invalid "topic": contains a control or format character\n');
        return;
      }
    }
    if (isReservedTopic(t, hub) || (version === 7 && t.includes('/.well-known/mercure'))) {
      // The reserved namespace carries the hub's own events: forging them must be impossible.
      send(res, version === 8 ? 400 : 403, `Invalid "topic": ${t} is in the hub's reserved namespace /.well-known/mercure\n`);
      return;
    }
  }

  const id = getFirst(form, 'id');
  const badId = id ? idProblem(id) : null;
  if (badId) {
    send(res, 400, `Invalid "id" parameter: ${badId}\n`);
    return;
  }
  const type = getFirst(form, 'type');
  const badType = type ? (typeProblem(type) ?? (type === 'mercure' ? '"mercure" is reserved for events generated by the hub' : null)) : null;
  if (badType) {
    send(res, 400, `Invalid "type" parameter: ${badType}\n`);
    return;
  }
  const retryRaw = getFirst(form, 'retry');
  let retry: number | undefined;
  if (retryRaw !== undefined && retryRaw !== '') {
    if (!/^[0-9]+$/.test(retryRaw) || !Number.isSafeInteger(Number(retryRaw))) {
      send(res, 400, 'Invalid "retry" parameter: must be a non-negative integer (milliseconds)\n');
      return;
    }
    retry = Number(retryRaw);
  }

  if (!canPublish(auth.grants, topics)) {
    const denied = topics.filter((t) => !canPublish(auth.grants!, [t]));
    sendAuthProblem(
      res,
      { kind: 'insufficient_scope', message: `the token does not grant publishing to ${denied.slice(0, 3).join(', ')}${denied.length > 3 ? ', …' : ''}` },
      version,
      origin(req, opts.trustProxy),
    );
    return;
  }

  try {
    const update = await ctx.hub.publish({
      topics,
      data: getFirst(form, 'data'),
      private: has(form, 'private'),
      id: id || undefined,
      type: type || undefined,
      retry,
    });
    ctx.hub.metrics.updatesPublished++;
    ctx.log.debug({ id: update.id, topics: update.topics, private: update.private }, 'update published');
    send(res, 200, update.id);
  } catch (err) {
    if (err instanceof TransportUnavailableError) {
      ctx.hub.metrics.publishFailures++;
      ctx.log.error({ err: err.message, transport: ctx.hub.transport.name, stored: err.stored, id: err.updateId }, 'publish refused: transport unavailable');
      send(res, 503, unavailableMessage(ctx.hub.transport, err), { 'Retry-After': '1' });
      return;
    }
    ctx.log.error({ err }, 'publish failed');
    send(res, 500, 'Internal Server Error: the update could not be dispatched\n');
  }
}
