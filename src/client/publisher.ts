/**
 * Publishing to any Mercure hub over HTTP: the TypeScript counterpart of symfony/mercure's
 * `HubInterface::publish()`. Uses only `fetch`, so it runs in Node ≥ 20, Deno, Bun and browsers.
 */
import { bearerChallenge } from './bearer-challenge.js';
import { resolveToken, type TokenSource } from './token-source.js';
import { Update, type UpdateInit } from './update.js';

export { InvalidUpdateError, Update } from './update.js';
export type { UpdateInit, UpdateOptions } from './update.js';
export type { TokenFactory, TokenSource } from './token-source.js';
export { TokenError } from './token-source.js';

/** Why a publish failed. */
export type PublishErrorKind =
  /** 401: no token, or the hub refused it (bad signature, expired, wrong key…). */
  | 'unauthorized'
  /** 403: a valid token that does not grant publishing to the update's topics. */
  | 'forbidden'
  /** 400 and other 4xx: the hub refused the request itself (reserved topic, bad id, wrong URL…). */
  | 'bad_request'
  /** 413: the update exceeds the hub's size limits. */
  | 'too_large'
  /** 503 (the hub cannot store updates right now) and 429. */
  | 'unavailable'
  /** Other 5xx. */
  | 'server_error'
  /** No answer: connection refused, DNS failure, reset, timeout. */
  | 'network';

export interface PublishErrorInit {
  kind: PublishErrorKind;
  hubUrl: string;
  status?: number | undefined;
  hubMessage?: string | undefined;
  authError?: string | undefined;
  attempts?: number | undefined;
  timedOut?: boolean | undefined;
  retryAfter?: number | undefined;
  /** Replaces the generic advice for the kind. */
  hint?: string | undefined;
  cause?: unknown;
}

const HINTS: Record<PublishErrorKind, string> = {
  unauthorized: "check that the publisher token is signed with the hub's publisher key, has not expired and (draft-08) has the hub as audience",
  forbidden: "grant every topic of the update in the token (draft-07 mercure.publish, draft-08 authorization_details with the publish action)",
  bad_request: 'the hub refused the request',
  too_large: "the update exceeds the hub's size limits",
  unavailable: 'the hub cannot accept updates right now; retry later',
  server_error: 'the hub failed',
  network: 'the hub could not be reached',
};

/** A publish that failed: `kind` says why, `status` and `hubMessage` are the hub's answer. */
export class PublishError extends Error {
  override readonly name = 'PublishError';
  readonly kind: PublishErrorKind;
  /** The hub's HTTP status; undefined for network errors. */
  readonly status: number | undefined;
  /** The hub's explanation (response body, or the bearer challenge's `error_description`). */
  readonly hubMessage: string;
  /** The RFC 6750 error code of the `WWW-Authenticate` challenge (`invalid_token`, `insufficient_scope`…). */
  readonly authError: string | undefined;
  readonly hubUrl: string;
  /** Requests made, retries included. */
  readonly attempts: number;
  /** The request was abandoned after `timeout` ms. */
  readonly timedOut: boolean;
  /** For `unavailable`: how long the hub asked to wait (ms), when it said so. */
  readonly retryAfter: number | undefined;

  constructor(init: PublishErrorInit) {
    const hubMessage = (init.hubMessage ?? '').trim();
    const head = init.status !== undefined ? `${init.status}` : init.timedOut ? 'timeout' : 'network error';
    super(
      `Publishing to ${init.hubUrl} failed (${head}${(init.attempts ?? 1) > 1 ? `, after ${init.attempts} attempts` : ''}): ` +
        (hubMessage ? `${hubMessage}${/[.!?]$/.test(hubMessage) ? '' : '.'} ` : '') +
        `${(init.hint ?? HINTS[init.kind]).replace(/^./, (c) => c.toUpperCase())}.`,
      init.cause !== undefined ? { cause: init.cause } : undefined,
    );
    this.kind = init.kind;
    this.status = init.status;
    this.hubMessage = hubMessage;
    this.authError = init.authError;
    this.hubUrl = init.hubUrl;
    this.attempts = init.attempts ?? 1;
    this.timedOut = init.timedOut ?? false;
    this.retryAfter = init.retryAfter;
  }
}

/** The status → kind mapping. */
export function publishErrorKind(status: number): PublishErrorKind {
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 413) return 'too_large';
  if (status === 503 || status === 429) return 'unavailable';
  if (status >= 500) return 'server_error';
  return 'bad_request';
}

export interface PublishOptions {
  /** Aborts the publish (and its retries); the promise rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

/** What application code depends on: `Publisher`, and the test doubles of `quicksilver/testing`. */
export interface MercurePublisher {
  /** Publishes an update; resolves to the id the hub assigned. */
  publish(update: Update | UpdateInit, options?: PublishOptions): Promise<string>;
}

export interface PublisherOptions {
  /** The hub URL, e.g. `https://hub.example.com/.well-known/mercure`. */
  hubUrl: string | URL;
  /** The publisher token: a JWT, a function returning one, or a `TokenFactory`; resolved per request. */
  token?: TokenSource | undefined;
  /** Default: the global fetch. */
  fetch?: typeof fetch | undefined;
  /** Extra attempts for failures that are safe to retry. Default 3. */
  retries?: number | undefined;
  /** Per-attempt timeout in ms; 0 disables. Default 10 000. */
  timeout?: number | undefined;
  /** First backoff delay in ms (doubled each retry, jittered). Default 200. */
  retryDelay?: number | undefined;
  /** Longest wait between attempts in ms; a longer `Retry-After` is not waited for. Default 30 000. */
  maxRetryDelay?: number | undefined;
  /** Extra request headers. */
  headers?: Record<string, string> | undefined;
}

// Errors raised before any byte of the request left: retrying cannot publish twice.
const NOT_SENT = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN',
  'ENETDOWN', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT',
]);

function errorCodes(err: unknown, depth = 0): string[] {
  if (!err || typeof err !== 'object' || depth > 5) return [];
  const codes: string[] = [];
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') codes.push(code);
  codes.push(...errorCodes((err as { cause?: unknown }).cause, depth + 1));
  const inner = (err as { errors?: unknown }).errors;
  if (Array.isArray(inner)) for (const e of inner) codes.push(...errorCodes(e, depth + 1));
  return codes;
}

/** True when the error proves the request never reached the hub. */
function notSent(err: unknown): boolean {
  const codes = errorCodes(err);
  return codes.length > 0 && codes.every((c) => NOT_SENT.has(c));
}

function describeNetworkError(err: unknown): string {
  const codes = errorCodes(err);
  let inner: unknown = err;
  while (inner && typeof inner === 'object' && (inner as { cause?: unknown }).cause) inner = (inner as { cause?: unknown }).cause;
  const msg = inner instanceof Error ? inner.message : String(inner);
  return codes.length > 0 && !msg.includes(codes[0]!) ? `${codes[0]}: ${msg}` : msg;
}

/** Retry-After (delta-seconds or HTTP-date) in ms. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const date = Date.parse(v);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** `headers` minus the names given (case-insensitively): the client's own values win. */
function withoutHeaders(headers: Record<string, string>, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (!names.includes(k.toLowerCase())) out[k] = v;
  return out;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Publishes updates to a Mercure hub (any implementation: Quicksilver, the reference hub…).
 *
 * Retries connection failures, `503 Service Unavailable` (honouring `Retry-After`), timeouts and
 * connections lost mid-request, always with the same id: when retries are on and the update has
 * no `id`, one is generated (`urn:uuid:…`), so a hub with a dedupe window (Quicksilver's default)
 * stores a retried update once, and subscribers of any hub can tell a repeat by its id. With
 * `retries: 0` and no id, the hub assigns the id. 4xx answers are never retried.
 */
export class Publisher implements MercurePublisher {
  readonly hubUrl: string;
  private readonly token: TokenSource | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly retries: number;
  private readonly timeout: number;
  private readonly retryDelay: number;
  private readonly maxRetryDelay: number;
  private readonly headers: Record<string, string>;

  constructor(options: PublisherOptions) {
    let url: URL;
    try {
      url = new URL(String(options.hubUrl));
    } catch {
      throw new TypeError(`Invalid hub URL ${JSON.stringify(String(options.hubUrl))}: an absolute URL such as https://hub.example.com/.well-known/mercure`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`Invalid hub URL ${url.href}: http or https only`);
    this.hubUrl = url.href;
    this.token = options.token;
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('No fetch implementation: pass `fetch` in the options');
    this.fetchImpl = f.bind(globalThis) as typeof fetch;
    this.retries = Math.max(0, Math.floor(options.retries ?? 3));
    this.timeout = Math.max(0, options.timeout ?? 10_000);
    this.retryDelay = Math.max(0, options.retryDelay ?? 200);
    this.maxRetryDelay = Math.max(0, options.maxRetryDelay ?? 30_000);
    this.headers = { ...options.headers };
  }

  async publish(input: Update | UpdateInit, options: PublishOptions = {}): Promise<string> {
    const update = Update.from(input);
    const form = update.toForm();
    // A publisher that may retry names its update: a hub that got the first attempt (its answer
    // lost, or a 503 "outcome unknown") then stores the retry once (Quicksilver's dedupe window),
    // and subscribers of any hub can tell the two apart.
    if (update.id === undefined && this.retries > 0) form.append('id', `urn:uuid:${globalThis.crypto.randomUUID()}`);
    const body = form.toString();
    const signal = options.signal;
    const idempotent = form.has('id');
    let attempt = 0;
    for (;;) {
      attempt++;
      signal?.throwIfAborted();
      const outcome = await this.attempt(body, attempt, signal);
      if (typeof outcome === 'string') return outcome;
      const { error, retryable, wait } = outcome;
      const canRetry = attempt <= this.retries && (retryable === 'always' || (retryable === 'idempotent' && idempotent));
      if (!canRetry) throw error;
      const backoff = this.retryDelay * 2 ** (attempt - 1);
      const delay = wait ?? Math.min(this.maxRetryDelay, backoff * (0.5 + Math.random() / 2));
      if (delay > this.maxRetryDelay) throw error;
      await sleep(delay, signal);
    }
  }

  /** One request: the id, or the error with whether it may be retried. */
  private async attempt(
    body: string,
    attempt: number,
    signal: AbortSignal | undefined,
  ): Promise<string | { error: PublishError; retryable: 'always' | 'idempotent' | 'never'; wait?: number | undefined }> {
    const token = await resolveToken(this.token);
    const controller = new AbortController();
    let timedOut = false;
    const timer = this.timeout > 0 ? setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`no answer within ${this.timeout} ms`));
    }, this.timeout) : undefined;
    const onAbort = () => controller.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      let res: Response;
      try {
        res = await this.fetchImpl(this.hubUrl, {
          method: 'POST',
          headers: {
            ...withoutHeaders(this.headers, token !== undefined ? ['content-type', 'authorization'] : ['content-type']),
            'Content-Type': 'application/x-www-form-urlencoded',
            ...(token !== undefined ? { Authorization: `Bearer ${token}` } : {}),
          },
          body,
          signal: controller.signal,
          cache: 'no-store',
        });
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (timedOut) {
          return {
            error: new PublishError({ kind: 'network', hubUrl: this.hubUrl, timedOut: true, attempts: attempt, hubMessage: `No answer within ${this.timeout} ms.`, cause: err }),
            retryable: 'idempotent',
          };
        }
        return {
          error: new PublishError({ kind: 'network', hubUrl: this.hubUrl, attempts: attempt, hubMessage: describeNetworkError(err), cause: err }),
          retryable: notSent(err) ? 'always' : 'idempotent',
        };
      }
      let text: string;
      try {
        text = await res.text();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (res.ok) {
          // Published, but the id was lost with the connection.
          return {
            error: new PublishError({ kind: 'network', hubUrl: this.hubUrl, attempts: attempt, timedOut, status: undefined, hubMessage: `The hub accepted the update (${res.status}) but its answer was cut: ${describeNetworkError(err)}`, cause: err }),
            retryable: 'idempotent',
          };
        }
        text = '';
      }
      if (res.ok) return text.replace(/[\r\n]+$/, '');
      const kind = publishErrorKind(res.status);
      const challenge = bearerChallenge(res.headers.get('www-authenticate'));
      const retryAfter = parseRetryAfter(res.headers.get('retry-after'));
      let hubMessage = text.trim().slice(0, 1000);
      if (!hubMessage || /^<(!doctype|html)/i.test(hubMessage)) hubMessage = challenge.description ?? `${res.status} ${res.statusText}`.trim();
      if (kind === 'unauthorized' && typeof this.token === 'object') this.token.invalidate?.();
      const error = new PublishError({
        kind,
        hubUrl: this.hubUrl,
        status: res.status,
        hubMessage,
        authError: challenge.error,
        attempts: attempt,
        retryAfter: kind === 'unavailable' ? retryAfter : undefined,
        hint: kind === 'unauthorized' && token === undefined ? 'no token was sent: pass the publisher token in the `token` option' : undefined,
      });
      return { error, retryable: res.status === 503 ? 'always' : 'never', wait: res.status === 503 ? retryAfter : undefined };
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}
