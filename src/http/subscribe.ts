import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import { randomUUID } from 'node:crypto';
import { authenticate, isAuthProblem } from './authenticate.js';
import { sendAuthProblem } from './auth-response.js';
import type { HubContext } from './context.js';
import { decodeUtf8, getFirst, parseForm, type FormFields } from './form.js';
import {
  BodyTooLargeError,
  clientIp,
  header,
  hubUrl,
  isHttp2,
  origin,
  readBody,
  send,
  type Request,
  type Response,
} from './http-util.js';
import { fromHeaderBytes, headerValue } from './header-value.js';
import { RawResponse } from './raw-http.js';
import { COMMENT, retryFrame } from '../core/sse.js';
import { Subscriber, type SubscriberSink } from '../core/subscriber.js';
import {
  hasForbiddenCharacter,
  isMatcherType,
  MatcherError,
  selectorMatcher,
  typedMatcher,
  type Matcher,
} from '../core/topic-matcher.js';
import type { SubscriptionRecord } from '../core/transport.js';

interface ParsedSubscription {
  version: 7 | 8;
  matchers: Matcher[];
  /** The matcher parameters as sent, for presence records. */
  params: Array<{ kind: SubscriptionRecord['kind']; value: string }>;
}

/** Reads `topic=` (draft-07) or `match…=` (draft-08) parameters; a string is an error to answer with 400. */
function parseSubscription(fields: FormFields, ctx: HubContext, base: string): ParsedSubscription | string {
  const topics: string[] = [];
  const params: ParsedSubscription['params'] = [];
  for (const [name, value] of fields) {
    if (name === 'topic') {
      topics.push(value);
    } else if (name.length >= 5 && name.slice(0, 5).toLowerCase() === 'match') {
      // The whole `match` prefix is reserved: a misspelt matcher type must fail loudly.
      const type = name === 'match' ? 'exact' : name.startsWith('match_') ? name.slice(6) : '';
      if (!isMatcherType(type)) {
        return `Unsupported matcher parameter "${name}": use match, match_exact or match_urlpattern`;
      }
      params.push({ kind: type, value });
    }
  }
  if (topics.length > 0 && params.length > 0) {
    return 'A request cannot mix draft-07 "topic" and draft-08 "match" parameters';
  }
  if (topics.length === 0 && params.length === 0) {
    return 'Missing "topic" parameter (or "match" / "match_urlpattern" for draft-08 subscribers)';
  }
  if (topics.length > 0) {
    if (topics.length > ctx.options.maxTopics) {
      return `Too many "topic" parameters: ${topics.length}, at most ${ctx.options.maxTopics} allowed`;
    }
    return {
      version: 7,
      matchers: topics.map((t) => selectorMatcher(t)),
      params: topics.map((t) => ({ kind: 'selector' as const, value: t })),
    };
  }
  if (params.length > ctx.options.maxMatchers) {
    return `Too many matcher parameters: ${params.length}, at most ${ctx.options.maxMatchers} allowed`;
  }
  const matchers: Matcher[] = [];
  for (const p of params) {
    if (hasForbiddenCharacter(p.value)) return `Invalid matcher "${p.kind}": contains a control or format character`;
    try {
      matchers.push(typedMatcher(p.kind as 'exact' | 'urlpattern', p.value, ctx.options.publicUrl ?? base));
    } catch (err) {
      if (err instanceof MatcherError) return `Invalid ${p.kind} matcher ${JSON.stringify(p.value.slice(0, 200))}: ${err.message}`;
      throw err;
    }
  }
  return { version: 8, matchers, params };
}

/**
 * Browsers send Last-Event-ID as UTF-8 bytes while Node reads header values as latin1: undo that,
 * or a non-ASCII id would never be found and the replay silently skipped.
 */
function headerUtf8(value: string | undefined): string | undefined {
  return value === undefined ? value : fromHeaderBytes(value);
}

const STREAM_HEADERS: Record<string, string> = {
  'Content-Type': 'text/event-stream',
  // no-transform keeps compression middleware and proxies from buffering the stream.
  'Cache-Control': 'private, no-cache, no-store, must-revalidate, max-age=0, no-transform',
  Pragma: 'no-cache',
  Expire: '0',
  Expires: '0',
  'X-Accel-Buffering': 'no',
};

function sinkFor(res: Response): SubscriberSink {
  return {
    write: (chunk) => (res as ServerResponse).write(chunk),
    end: () => res.end(),
    destroy: () => {
      if ('stream' in res) (res as Http2ServerResponse).stream.destroy();
      else (res as ServerResponse).destroy();
    },
  };
}

/** GET/HEAD/QUERY /.well-known/mercure */
export async function handleSubscribe(ctx: HubContext, req: Request, res: Response, query: string): Promise<void> {
  const opts = ctx.options;
  const base = origin(req, opts.trustProxy);
  if (ctx.draining) {
    // EventSource treats any non-200 answer as final: a draining hub answers with an empty
    // stream and a retry hint instead, so browsers come back (to this node or another).
    (res as ServerResponse).writeHead(200, { ...STREAM_HEADERS });
    res.end(retryFrame(1000 + Math.floor(Math.random() * 2000)));
    return;
  }
  let fields = parseForm(query);
  if ('error' in fields) {
    send(res, 400, `Invalid query string: ${fields.error}\n`);
    return;
  }
  if (req.method === 'QUERY') {
    // QUERY carries matcher lists too long for a URL in a form body; the two are merged.
    let body: Buffer;
    try {
      body = await readBody(req, opts.maxBodySize);
    } catch (err) {
      if (err instanceof BodyTooLargeError) {
        send(res, 413, `Request body too large: ${err.message}\n`);
        return;
      }
      throw err;
    }
    const text = decodeUtf8(body);
    const bodyFields = text === null ? { error: 'not valid UTF-8' } : parseForm(text);
    if ('error' in bodyFields) {
      send(res, 400, `Invalid request body: ${bodyFields.error}\n`);
      return;
    }
    fields = [...fields, ...bodyFields];
  }

  const parsed = parseSubscription(fields, ctx, hubUrl(req, opts.trustProxy));
  if (typeof parsed === 'string') {
    send(res, 400, parsed + '\n');
    return;
  }
  const { version } = parsed;

  // Tokens in URLs end up in logs: only draft-07, which defined the parameter, may use one.
  const queryToken = version === 7 ? getFirst(fields, 'authorization') : undefined;
  const auth = await authenticate(ctx, req, 'subscriber', queryToken);
  if (isAuthProblem(auth)) {
    sendAuthProblem(res, auth, version, base);
    return;
  }
  if (auth.grants === null && !opts.anonymous) {
    sendAuthProblem(res, { kind: 'missing' }, version, base);
    return;
  }

  const lastEventId =
    headerUtf8(header(req, 'last-event-id')) ??
    getFirst(fields, version === 8 ? 'last_event_id' : 'lastEventID') ??
    getFirst(fields, version === 8 ? 'lastEventID' : 'last_event_id') ??
    getFirst(fields, 'Last-Event-ID');

  const now = Date.now();
  let deadline = 0;
  if (opts.writeTimeout > 0) {
    // Randomised to 80–100 % so that clients connected together do not all reconnect together.
    deadline = now + Math.floor(opts.writeTimeout * (0.8 + 0.2 * Math.random()));
  }
  const exp = auth.grants?.expiresAt;
  if (exp !== undefined && (deadline === 0 || exp < deadline)) deadline = exp;

  const ip = clientIp(req, opts.trustProxy);
  if (ctx.connections.enabled) {
    const verdict = ctx.connections.acquire(ip);
    if (verdict !== 'ok') {
      ctx.hub.metrics.countLimited(verdict === 'per_ip' ? 'connections_per_ip' : 'connections');
      ctx.log.warn({ ip, limit: verdict }, 'subscription refused: connection limit');
      send(res, 429, `Too Many Requests: ${verdict === 'per_ip' ? 'too many connections from this address' : 'the hub is at its connection limit'}\n`, { 'Retry-After': '5' });
      return;
    }
    res.once('close', () => ctx.connections.release(ip));
  }

  // randomUUID() builds its string piece by piece; a copy is one flat string, not a tree of
  // sixteen that every subscriber would keep.
  const id = Buffer.from(`urn:uuid:${randomUUID()}`, 'latin1').toString('latin1');
  const raw = (res as unknown) instanceof RawResponse ? (res as unknown as RawResponse) : null;
  const sub = new Subscriber({
    id,
    version,
    matchers: parsed.matchers,
    grants: auth.grants,
    sink: raw ?? sinkFor(res),
    bufferSize: opts.subscriberBufferSize,
    deadline,
    remoteAddress: ip,
  });

  const headers: Record<string, string> = { ...STREAM_HEADERS };
  if (!isHttp2(req)) headers.Connection = 'keep-alive';

  if (req.method === 'HEAD') {
    (res as ServerResponse).writeHead(200, headers);
    res.end();
    return;
  }

  // A peer that vanishes without a FIN is found by keepalive probes (and the next heartbeat).
  try {
    req.socket?.setKeepAlive?.(true, 15_000);
    req.socket?.setNoDelay?.(true);
  } catch {
    // HTTP/2 session sockets may refuse per-stream socket options.
  }
  // A peer the kernel gave up on (keepalive, retransmission timeout) errors on the socket, not on
  // the response: listen there so it is counted as a failure, not as a client leaving.
  if (raw) {
    // The raw response forwards its socket's events to the subscriber: no closures per stream.
    raw.attach(sub);
  } else {
    const socket = isHttp2(req) ? undefined : req.socket;
    const onSocketError = (): void => sub.close('error');
    socket?.once('error', onSocketError);
    res.on('close', () => {
      socket?.off('error', onSocketError);
      sub.close('client');
    });
    res.on('error', () => sub.close('error'));
    res.on('drain', () => sub.drain());
  }

  const records: SubscriptionRecord[] | undefined = opts.subscriptions
    ? parsed.params.map((p) => ({
        subscriber: id,
        kind: p.kind,
        match: p.value,
        payload: auth.grants?.payloadFor(p.value),
      }))
    : undefined;

  const { cursor, resume } = await ctx.hub.connect(sub, { lastEventId, records });
  if (sub.closed) return;
  // As UTF-8 bytes, which is also what an EventSource sends back on its next reconnection.
  if (cursor !== undefined) headers[version === 8 ? 'Mercure-Last-Event-ID' : 'Last-Event-ID'] = headerValue(cursor);
  (res as ServerResponse).writeHead(200, headers);
  sub.write(COMMENT);
  resume();
  ctx.log.debug({ subscriber: id, version, matchers: parsed.params.length, anonymous: auth.grants === null }, 'subscriber connected');
}
