/**
 * Why a subscription connection failed: the error kinds, the error the subscription reports,
 * and how a hub's refusal (status, body, `WWW-Authenticate`, `Retry-After`) becomes one.
 */
import { bearerChallenge } from './bearer-challenge.js';

/** Why a connection failed. */
export type SubscribeErrorKind =
  | 'unauthorized' // 401
  | 'forbidden' // 403
  | 'bad_request' // other 4xx: the hub refused the subscription itself
  | 'unavailable' // 429, 503
  | 'server_error' // other 5xx
  | 'bad_response' // not an event stream (or 204: the server asked not to reconnect)
  | 'network' // fetch failed, or the connection dropped mid-stream
  | 'timeout' // inactivityTimeout reached
  | 'token' // the token provider failed
  | 'retries_exhausted'; // maxRetries consecutive failures

export class SubscribeError extends Error {
  override readonly name = 'SubscribeError';
  readonly kind: SubscribeErrorKind;
  readonly status: number | undefined;
  /** The hub's explanation (response body or `WWW-Authenticate` error_description). */
  readonly hubMessage: string;
  /** RFC 6750 error code of the `WWW-Authenticate` challenge, if any. */
  readonly authError: string | undefined;
  /** True when the subscription stops because of it; false when it reconnects. */
  readonly fatal: boolean;
  /** For non-fatal errors: the delay before the next attempt, in ms. */
  readonly retryIn: number | undefined;

  constructor(init: {
    kind: SubscribeErrorKind;
    message: string;
    status?: number | undefined;
    hubMessage?: string | undefined;
    authError?: string | undefined;
    fatal: boolean;
    retryIn?: number | undefined;
    cause?: unknown;
  }) {
    super(init.message, init.cause !== undefined ? { cause: init.cause } : undefined);
    this.kind = init.kind;
    this.status = init.status;
    this.hubMessage = init.hubMessage ?? '';
    this.authError = init.authError;
    this.fatal = init.fatal;
    this.retryIn = init.retryIn;
  }

  /** The same error, marked as (non-)fatal. */
  with(fields: { fatal: boolean; retryIn?: number | undefined }): SubscribeError {
    return new SubscribeError({
      kind: this.kind,
      message: this.message,
      status: this.status,
      hubMessage: this.hubMessage,
      authError: this.authError,
      cause: this.cause,
      fatal: fields.fatal,
      retryIn: fields.retryIn,
    });
  }
}

function kindOf(status: number): SubscribeErrorKind {
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 429 || status === 503) return 'unavailable';
  if (status >= 500) return 'server_error';
  return 'bad_request';
}

/** The error for a hub's non-200 answer; transient statuses (5xx, 429, 408) are not fatal. */
export async function refusal(res: Response, url: string): Promise<SubscribeError> {
  let body = '';
  try {
    body = (await res.text()).trim().slice(0, 1000);
  } catch {
    // The message is a nicety.
  }
  const challenge = bearerChallenge(res.headers.get('www-authenticate'));
  if (!body || /^<(!doctype|html)/i.test(body)) body = challenge.description ?? res.statusText;
  const kind = res.status === 204 ? 'bad_response' : kindOf(res.status);
  const transient = res.status >= 500 || res.status === 429 || res.status === 408;
  const hint =
    kind === 'unauthorized' ? ' (check the subscriber token; anonymous subscribers must be allowed by the hub)'
    : kind === 'forbidden' ? ' (the token does not grant this subscription)'
    : res.status === 204 ? ' (the server asked not to reconnect)'
    : '';
  const retryAfter = res.headers.get('retry-after');
  return new SubscribeError({
    kind,
    status: res.status,
    hubMessage: body,
    authError: challenge.error,
    message: `Subscribing to ${url} failed (${res.status})${body ? `: ${body}` : ''}${hint}`,
    fatal: !transient,
    retryIn: retryAfter && /^\d+$/.test(retryAfter.trim()) ? Number(retryAfter.trim()) * 1000 : undefined,
  });
}

/** An error and its causes, with their codes (`ECONNREFUSED`...), for a message. */
export function describe(err: unknown): string {
  let e: unknown = err;
  const parts: string[] = [];
  for (let i = 0; i < 4 && e; i++) {
    if (e instanceof Error) {
      const code = (e as { code?: unknown }).code;
      parts.push(typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message);
      e = (e as { cause?: unknown }).cause;
    } else {
      parts.push(String(e));
      break;
    }
  }
  return parts.join(': ');
}
