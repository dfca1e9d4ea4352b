/**
 * What a webhook is, wherever it was declared (configuration or HTTP API), and the checks that
 * make one usable: a name that fits in keys, labels and URL paths, an http(s) callback URL, at
 * least one selector compiled with the hub's own matchers, a secret.
 */
import { MatcherError, selectorMatcher, typedMatcher, type Matcher } from '../core/topic-matcher.js';
import type { WebhookSelector } from '../core/webhook-store.js';

export type { WebhookRegistration, WebhookSelector } from '../core/webhook-store.js';

export interface WebhookDefinition {
  /** 1–64 characters of letters, digits, `.`, `_` and `-`. */
  readonly name: string;
  readonly url: string;
  readonly selectors: readonly WebhookSelector[];
  /** Subscriber token (verified as an SSE subscriber's would be); absent = public updates only. */
  readonly token?: string | undefined;
  /** HMAC-SHA256 key for the Webhook-Signature header; at least 16 characters. */
  readonly secret: string;
  /** Most updates per POST; 1 (default) sends one update per request. */
  readonly batch?: number | undefined;
}

export const MAX_BATCH = 100;
export const MAX_SELECTORS = 100;
export const MIN_SECRET_LENGTH = 16;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Why a definition is unusable, or null. `baseUrl` resolves relative URL patterns. */
export function definitionProblem(d: WebhookDefinition, baseUrl: string): string | null {
  if (typeof d.name !== 'string' || !NAME.test(d.name)) return 'name must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit';
  if (typeof d.url !== 'string') return 'url is required';
  let url: URL;
  try {
    url = new URL(d.url);
  } catch {
    return `url '${d.url}' is not an absolute URL`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `url must be http:// or https://`;
  if (!Array.isArray(d.selectors) || d.selectors.length === 0) return 'at least one topic or match selector is required';
  if (d.selectors.length > MAX_SELECTORS) return `at most ${MAX_SELECTORS} selectors`;
  for (const s of d.selectors) {
    if (typeof s?.value !== 'string' || s.value === '') return 'selectors must be non-empty strings';
    try {
      compileSelector(s, baseUrl);
    } catch (err) {
      if (err instanceof MatcherError) return `${s.type === 'topic' ? 'topic' : `match_${s.type}`} '${s.value}': ${err.message}`;
      throw err;
    }
  }
  if (typeof d.secret !== 'string' || d.secret.length < MIN_SECRET_LENGTH) return `secret must be at least ${MIN_SECRET_LENGTH} characters`;
  if (d.token !== undefined && typeof d.token !== 'string') return 'token must be a string';
  if (d.batch !== undefined && (!Number.isInteger(d.batch) || d.batch < 1 || d.batch > MAX_BATCH)) return `batch must be an integer from 1 to ${MAX_BATCH}`;
  return null;
}

export function compileSelector(s: WebhookSelector, baseUrl: string): Matcher {
  return s.type === 'topic' ? selectorMatcher(s.value) : typedMatcher(s.type, s.value, baseUrl);
}

/** A webhook's selectors as matchers: an update is for it when one of its topics matches one. */
export function compileSelectors(selectors: readonly WebhookSelector[], baseUrl: string): readonly Matcher[] {
  return selectors.map((s) => compileSelector(s, baseUrl));
}

export function selects(matchers: readonly Matcher[], topics: readonly string[]): boolean {
  return topics.some((t) => matchers.some((m) => m.matches(t)));
}
